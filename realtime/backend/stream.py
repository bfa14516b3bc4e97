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

import json
import logging
from typing import TYPE_CHECKING, Final

from ..feature import Feature
from ..metrics import Metrics
from .appender import StreamAppender
from .events import ALL, Event
from .options import StreamOptions
from .queues import Warner

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
        #: Events dropped because Redis did not take them before ``buffer`` more (or their bytes) arrived.
        self.dropped = 0
        #: Events appended by this node.
        self.appended = 0
        self._warn_dropped = Warner("event stream: events dropped, Redis did not take them in time", log)
        self._appender = StreamAppender(
            redis,
            self.key,
            entry,
            limit=options.buffer,
            maxlen=options.maxlen,
            batch=PIPELINE,
            pauses=(BACKOFF, MAX_BACKOFF),
            on_drop=self._drop,
            on_failure=lambda exc, pause: log.warning(
                "event stream: appending to %s failed (%s); retrying in %.1fs", self.key, exc, pause
            ),
            on_appended=self._appended,
        )

    def wants(self, name: str, namespace: str) -> bool:
        if not (self._all or name in self._names):
            return False
        # Events of no channel (user.online, connection.closed) have no namespace to filter on.
        return not self._namespaces or not namespace or namespace in self._namespaces

    def put(self, event: Event) -> None:
        self._appender.put(event)

    @property
    def _queue(self) -> bool:
        """Whether events wait to be appended (or are being appended)."""
        return self._appender.pending

    async def settle(self) -> None:
        """Until every event taken so far is appended (or dropped): the hub answers a publish only
        then (``EventBus.settle``), so a node killed right after its answer has not lost the event."""
        await self._appender.settle()

    def _drop(self, n: int) -> None:
        self.dropped += n
        self.metrics.event_stream("dropped", n)
        self._warn_dropped(f": {n} now, {self.dropped} so far")

    def _appended(self, n: int) -> None:
        self.appended += n
        self.metrics.event_stream("appended", n)

    async def close(self) -> None:
        """Stop taking events; append what is queued (bounded in time), then stop the task."""
        await self._appender.close(flush=CLOSE_FLUSH)
        if waiting := len(self._appender.waiting):
            log.warning("event stream: %d events not appended at shutdown", waiting)
