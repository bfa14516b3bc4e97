"""The event stream: the events a backend chose (``[events]``), appended to a Redis Stream it pulls from.

One stream per deployment, key :func:`stream_key` (``<redis_prefix>:events:stream``); every node
appends the events it emits (each event is emitted by one node: ``realtime.backend.events``). One
entry per event, with one field, ``event``: the event's JSON (:meth:`Event.to_dict`, the body a
webhook carries), so a consumer in any language parses one value. The stream keeps about
``maxlen`` entries (``XADD MAXLEN ~``). A backend reads it with consumer groups of its own
(``realtime.backend.consumer.EventConsumer`` in Python); the hub never reads it.

The stream is a single key, and no command touches two keys: a Redis Cluster puts it on one
shard without a hash tag. ``put`` never waits: events queue here (at most ``buffer``) and one task
appends them, in pipelines; while Redis is unreachable they wait, the oldest dropped beyond
``buffer`` (counted in ``realtime_event_stream_events_total{outcome="dropped"}``, logged).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections import deque
from typing import TYPE_CHECKING, Any, Final

from ..feature import Feature
from ..metrics import Metrics
from .events import ALL, Event
from .options import StreamOptions

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

log = logging.getLogger("realtime.events")

#: The entry field holding the event's JSON.
FIELD: Final = "event"
#: Entries appended per round trip.
PIPELINE: Final = 500
#: Seconds between attempts while Redis refuses, doubling up to :data:`MAX_BACKOFF`.
BACKOFF: Final = 0.1
MAX_BACKOFF: Final = 5.0
#: Seconds :meth:`EventStream.close` spends appending what is still queued.
CLOSE_FLUSH: Final = 2.0


def stream_key(prefix: str) -> str:
    """The stream's Redis key: ``<prefix>:events:stream`` (``rt:events:stream`` by default)."""
    return f"{prefix}:events:stream"


def entry(event: Event) -> dict[str, str]:
    """The stream entry of ``event``: ``{"event": <its JSON>}``."""
    return {FIELD: json.dumps(event.to_dict(), separators=(",", ":"), ensure_ascii=False)}


class EventStream(Feature):
    """A sink of the hub's :class:`~realtime.backend.events.EventBus`: ``hub.events.add_sink(stream)``,
    and a feature (``hub.use(stream)``) for its :meth:`close` on shutdown (appends what is queued,
    for up to :data:`CLOSE_FLUSH` seconds)."""

    def __init__(self, redis: Redis | RedisCluster, prefix: str, options: StreamOptions, metrics: Metrics) -> None:
        self.redis = redis
        self.metrics = metrics
        self.key = stream_key(prefix)
        self.options = options
        self._all = ALL in options.on
        self._names = frozenset(options.on)
        self._namespaces = frozenset(options.namespaces)
        self._queue: deque[Event] = deque()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Events dropped because Redis did not take them before ``buffer`` more arrived.
        self.dropped = 0
        #: Events appended by this node.
        self.appended = 0

    def wants(self, name: str, namespace: str) -> bool:
        if not (self._all or name in self._names):
            return False
        # Events of no channel (user.online, connection.closed) have no namespace to filter on.
        return not self._namespaces or not namespace or namespace in self._namespaces

    def put(self, event: Event) -> None:
        if self._closed:
            return
        if len(self._queue) >= self.options.buffer:
            self._queue.popleft()
            self.dropped += 1
            self.metrics.event_stream("dropped")
            if self.dropped == 1 or self.dropped % 1000 == 0:
                log.warning("event stream: %d events dropped (Redis did not take them in time)", self.dropped)
        self._queue.append(event)
        self._drained.clear()
        self._ready.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    async def _run(self) -> None:
        backoff = BACKOFF
        while True:
            await self._ready.wait()
            try:
                await self._append()
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                log.warning("event stream: appending to %s failed (%s); retrying in %.1fs", self.key, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, MAX_BACKOFF)
                continue
            backoff = BACKOFF
            if not self._queue:
                self._ready.clear()
                self._drained.set()

    async def _append(self) -> None:
        """Append up to :data:`PIPELINE` queued events in one round trip; they leave the queue once
        Redis took them (a failed round trip may have appended some: they are appended again, and a
        consumer deduplicates by the event's ``id``)."""
        batch = [self._queue[i] for i in range(min(PIPELINE, len(self._queue)))]
        if not batch:
            return
        pipe: Any = self.redis.pipeline(transaction=False)
        for event in batch:
            pipe.xadd(self.key, entry(event), maxlen=self.options.maxlen, approximate=True)
        await pipe.execute()
        for _ in batch:
            if self._queue and self._queue[0] is _:
                self._queue.popleft()
        self.appended += len(batch)
        self.metrics.event_stream("appended", len(batch))

    async def close(self) -> None:
        """Stop taking events; append what is queued (bounded in time), then stop the task."""
        self._closed = True
        task, self._task = self._task, None
        if task is None:
            return
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._drained.wait(), CLOSE_FLUSH)
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        if self._queue:
            log.warning("event stream: %d events not appended at shutdown", len(self._queue))
