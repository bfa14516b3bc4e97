"""Reading the event stream from a Python backend: consumer groups, acks, and reclaiming what a dead worker held.

::

    async with EventConsumer("redis://127.0.0.1:6379/0", group="billing", consumer="worker-1") as events:
        async for event in events:
            ...  # event.name, event.channel, event.user, event.data
            await event.ack()

Each group gets every event once; the consumers of one group share them (Redis Streams' consumer
groups). The group is created when missing, reading from the oldest entry the stream still holds
(``start="$"``: only new ones). An event not acked stays pending; when it has been pending for
``claim_after`` seconds (its worker died, or is stuck) another consumer of the group takes it over
(``XAUTOCLAIM``) and gets it again: delivery is at least once, so a handler deduplicates by
``event.id``. A restarted consumer of the same name gets its own pending events first. Reads are
bounded: ``count`` entries per read, blocking at most ``block`` seconds.

Imports ``redis`` (redis-py), which a backend installs with the hub's package; nothing of the hub
but :class:`~realtime.backend.events.Event`.
"""

from __future__ import annotations

import json
import logging
import time
from collections import deque
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from .events import Event
from .stream import FIELD, stream_key

log = logging.getLogger("realtime.consumer")


@dataclass(frozen=True, slots=True)
class Received:
    """One event as a consumer got it: :attr:`event`, and :meth:`ack` once it is handled.

    The event's fields read through (``received.name`` is ``received.event.name``)."""

    event: Event
    #: The stream entry's id (``<ms>-<seq>``).
    entry_id: str
    consumer: EventConsumer

    async def ack(self) -> None:
        """Done with it: the group will not deliver it again (``XACK``)."""
        await self.consumer.ack(self.entry_id)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.event, name)


class EventConsumer:
    """``async for`` the events of one consumer group; ``aclose`` (or ``async with``) when done.

    ``redis`` is a URL or a redis-py client (not closed here when given); ``prefix`` is the hub's
    ``redis_prefix``. With a Redis Cluster, pass a ``redis.asyncio.RedisCluster`` client.
    """

    def __init__(
        self,
        redis: str | Redis | Any,
        *,
        group: str,
        consumer: str,
        prefix: str = "rt",
        start: str = "0",
        count: int = 100,
        block: float = 1.0,
        claim_after: float = 60.0,
    ) -> None:
        self.redis = Redis.from_url(redis) if isinstance(redis, str) else redis
        self._owned = isinstance(redis, str)
        self.key = stream_key(prefix)
        self.group = group
        self.consumer = consumer
        self.start = start
        self.count = count
        self.block_ms = max(1, int(block * 1000))
        self.claim_ms = int(claim_after * 1000)
        self._ready = False
        self._own_pending = True  # first: what this consumer name held before a restart
        self._next_claim = 0.0
        self._buffer: deque[Received] = deque()

    async def __aenter__(self) -> EventConsumer:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owned:
            await self.redis.aclose()

    def __aiter__(self) -> AsyncIterator[Received]:
        return self

    async def __anext__(self) -> Received:
        """The next event: one of this consumer's pending ones, one reclaimed from a dead consumer, or a new one."""
        while not self._buffer:
            await self.fetch()
        return self._buffer.popleft()

    async def fetch(self) -> list[Received]:
        """One bounded round: queue and return what one read brought (possibly nothing after ``block``)."""
        await self._ensure_group()
        got: list[Received] = []
        if self._own_pending:
            got = await self._read("0", block=False)
            self._own_pending = bool(got)  # until this consumer's backlog is through
        if not got and time.monotonic() >= self._next_claim:
            got = await self._claim()
            if not got:  # nothing idle now: look again in a while
                self._next_claim = time.monotonic() + self.claim_ms / 2000
        if not got:
            got = await self._read(">", block=True)
        self._buffer.extend(got)
        return got

    async def ack(self, *entry_ids: str) -> int:
        """Ack entries by id; returns how many were pending."""
        return int(await self.redis.xack(self.key, self.group, *entry_ids))

    async def _ensure_group(self) -> None:
        if self._ready:
            return
        try:
            await self.redis.xgroup_create(self.key, self.group, id=self.start, mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._ready = True

    async def _read(self, position: str, *, block: bool) -> list[Received]:
        try:
            reply: Any = await self.redis.xreadgroup(
                self.group,
                self.consumer,
                {self.key: position},
                count=self.count,
                block=self.block_ms if block else None,
            )
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            self._ready = False  # the stream or group was deleted: make it again
            await self._ensure_group()
            return []
        entries = [item for _, items in reply or [] for item in items]
        return await self._decode(entries)

    async def _claim(self) -> list[Received]:
        reply = await self.redis.xautoclaim(
            self.key, self.group, self.consumer, self.claim_ms, start_id="0-0", count=self.count
        )
        # [next start, entries, ids of entries trimmed away while pending (Redis 7)]
        if len(reply) > 2 and reply[2]:
            await self.ack(*[_text(i) for i in reply[2]])  # gone from the stream: nothing to deliver
        return await self._decode(reply[1])

    async def _decode(self, entries: list[Any]) -> list[Received]:
        out: list[Received] = []
        bad: list[str] = []
        for raw_id, fields in entries:
            entry_id = _text(raw_id)
            try:
                raw = fields.get(FIELD.encode(), fields.get(FIELD))  # either client decoding
                event = Event.from_dict(json.loads(raw))
            except (AttributeError, TypeError, KeyError, ValueError):
                # Trimmed while pending (no fields), or not an event: acked, never delivered forever.
                log.warning("event stream entry %s is not an event: acked and skipped", entry_id)
                bad.append(entry_id)
                continue
            out.append(Received(event, entry_id, self))
        if bad:
            await self.ack(*bad)
        return out


def _text(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value


__all__ = ["EventConsumer", "Received"]
