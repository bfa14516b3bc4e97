"""The event stream: the events a backend chose (``[events]``), appended to a Redis Stream it pulls from.

One stream per deployment, key :func:`stream_key` (``<redis_prefix>:events:stream``); every node
appends the events it emits (each event is emitted by one node: ``realtime.backend.events``). One
entry per event, with one field, ``event``: the event's JSON (:meth:`Event.to_dict`, the body a
webhook carries), so a consumer in any language parses one value. The stream keeps about
``maxlen`` entries (``XADD MAXLEN ~``). A backend reads it with consumer groups of its own
(``realtime.backend.consumer.EventConsumer`` in Python); the hub never reads it.

The stream is a single key, and no command touches two keys: a Redis Cluster puts it on one
shard without a hash tag. ``put`` never waits: events queue here (at most ``buffer`` events and
:data:`~realtime.backend.queues.MAX_QUEUED_BYTES` of payload) and one task appends them, in
pipelines; while Redis is unreachable they wait, the oldest dropped beyond either bound (counted in
``realtime_event_stream_events_total{outcome="dropped"}``, logged).
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
from .queues import MAX_QUEUED_BYTES, Warner

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
        #: Events waiting, as (serial, event, payload bytes), oldest first.
        self._queue: deque[tuple[int, Event, int]] = deque()
        self._bytes = 0  # the payload bytes (:attr:`Event.size`) of the queue and the round trip
        self._put = 0  # events taken so far: the serial of the last one
        self._progress = asyncio.Event()
        self._ready = asyncio.Event()
        self._drained = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False
        #: Events dropped because Redis did not take them before ``buffer`` more (or their bytes) arrived.
        self.dropped = 0
        #: Events appended by this node.
        self.appended = 0
        #: The events of the round trip in progress (out of the queue until it failed).
        self._sending: list[tuple[int, Event, int]] = []
        self._warn_dropped = Warner("event stream: events dropped, Redis did not take them in time", log)

    def wants(self, name: str, namespace: str) -> bool:
        if not (self._all or name in self._names):
            return False
        # Events of no channel (user.online, connection.closed) have no namespace to filter on.
        return not self._namespaces or not namespace or namespace in self._namespaces

    def put(self, event: Event) -> None:
        if self._closed:
            return
        self._put += 1
        size = event.size
        # The oldest waiting events go; those of a round trip in progress may be in the stream already
        # (dropping one would count an event a backend gets), so with none waiting, this one (unless alone).
        dropped = 0
        while self._over(1, size) and self._queue:
            self._bytes -= self._queue.popleft()[2]
            dropped += 1
        if dropped:
            self._drop(dropped)
        if self._sending and self._over(1, size):
            self._drop(1)
            return
        self._queue.append((self._put, event, size))
        self._bytes += size
        self._drained.clear()
        self._ready.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    def _over(self, n: int, size: int) -> bool:
        """Whether ``n`` more events of ``size`` bytes would exceed ``buffer`` or the bytes."""
        count = len(self._queue) + len(self._sending) + n
        return count > self.options.buffer or self._bytes + size > MAX_QUEUED_BYTES

    def _oldest(self) -> int:
        """The serial of the oldest event neither appended nor dropped (the round trip's come first)."""
        if self._sending:
            return self._sending[0][0]
        return self._queue[0][0] if self._queue else self._put + 1

    async def settle(self) -> None:
        """Until every event taken so far is appended (or dropped): the hub answers a publish only
        then (``EventBus.settle``), so a node killed right after its answer has not lost the event."""
        target = self._put
        while self._oldest() <= target and not self._closed:
            self._progress.clear()
            await self._progress.wait()

    def _drop(self, n: int) -> None:
        self._progress.set()
        self.dropped += n
        self.metrics.event_stream("dropped", n)
        self._warn_dropped(f": {n} now, {self.dropped} so far")

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
        """Append up to :data:`PIPELINE` queued events in one round trip. A round trip that fails goes
        back to the front of the queue (it may have appended some: they are appended again, and a
        consumer deduplicates by the event's ``id``), the oldest dropped beyond ``buffer`` or the bytes."""
        batch = self._sending = [self._queue.popleft() for _ in range(min(PIPELINE, len(self._queue)))]
        if not batch:
            return
        try:
            pipe: Any = self.redis.pipeline(transaction=False)
            for _, event, _ in batch:
                pipe.xadd(self.key, entry(event), maxlen=self.options.maxlen, approximate=True)
            await pipe.execute()
        except BaseException:
            self._sending = []
            self._queue.extendleft(reversed(batch))
            overflow = 0
            while len(self._queue) > 1 and self._over(0, 0):
                self._bytes -= self._queue.popleft()[2]
                overflow += 1
            if overflow:
                self._drop(overflow)
            raise
        finally:
            self._sending = []
        self._bytes -= sum(size for _, _, size in batch)
        self._progress.set()
        self.appended += len(batch)
        self.metrics.event_stream("appended", len(batch))

    async def close(self) -> None:
        """Stop taking events; append what is queued (bounded in time), then stop the task."""
        self._closed = True
        self._progress.set()  # settle waits no more
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
