"""Where a webhook endpoint's events wait for delivery: in memory (one process) or in a Redis Stream.

Both queues have the same four calls: ``put`` (synchronous: the event bus calls it on the hot path),
``take`` (the next events to deliver, waiting a little when there are none), ``keep`` (still working
on these: while a delivery is retried) and ``done`` (delivered or given up: forget them).

* :class:`MemoryQueue`: a deque bounded in events and payload bytes; when full the oldest events are
  dropped and counted.
* :class:`RedisQueue` (``redis_queue.py``): a Redis Stream per endpoint and one consumer group shared
  by every node, so each event is delivered by one node, and survives a node's restart.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Protocol

from .events import Event

log = logging.getLogger("realtime.webhooks")

#: Most payload bytes (:attr:`Event.size`) one memory queue holds, besides its count: 10,000 events
#: of 64 KiB would otherwise take gigabytes as Python values.
MAX_QUEUED_BYTES = 32 * 1024 * 1024
#: Seconds between two "queue full" warnings of one endpoint (the drops in between are summed).
WARN_EVERY = 10.0


class Queue(Protocol):
    def put(self, event: Event) -> None:
        """Queue ``event``; never waits, never raises (a full queue drops the oldest, counted)."""

    async def take(self, n: int) -> list[tuple[str, Event]]:
        """Up to ``n`` events as (entry id, event), oldest first; [] after a short wait with none."""

    async def keep(self, ids: Sequence[str]) -> None:
        """Still delivering these (a retry is coming): no other node may take them over."""

    async def done(self, ids: Sequence[str]) -> None:
        """Delivered or given up: never hand these out again."""

    async def close(self) -> None: ...


class Warner:
    """Logs a recurring problem at most once per :data:`WARN_EVERY` seconds, with how often it happened."""

    def __init__(self, what: str, logger: logging.Logger = log) -> None:
        self.what = what
        self.log = logger
        self._last = -WARN_EVERY
        self._count = 0

    def __call__(self, detail: str = "") -> None:
        self._count += 1
        now = time.monotonic()
        if now - self._last >= WARN_EVERY:
            self.log.warning("%s (%d times since the last warning)%s", self.what, self._count, detail)
            self._last, self._count = now, 0


class MemoryQueue:
    """A bounded in-memory queue of one endpoint: events wait here until delivered (lost on restart)."""

    def __init__(self, limit: int, on_drop: Callable[[int], None], endpoint: str) -> None:
        self._events: deque[Event] = deque()
        self._limit = limit
        self._on_drop = on_drop
        self._ready = asyncio.Event()
        self._warn = Warner(f"webhook queue of {endpoint} is full: dropped its oldest event")
        self._serial = 0
        self._bytes = 0  # the payload bytes of the events held

    def __len__(self) -> int:
        return len(self._events)

    def put(self, event: Event) -> None:
        events = self._events
        dropped = 0
        while events and (len(events) >= self._limit or self._bytes + event.size > MAX_QUEUED_BYTES):
            self._bytes -= events.popleft().size
            dropped += 1
        if dropped:
            self._on_drop(dropped)
            self._warn()
        events.append(event)
        self._bytes += event.size
        self._ready.set()

    async def take(self, n: int, wait: float = 1.0) -> list[tuple[str, Event]]:
        if not self._events:
            self._ready.clear()
            try:
                async with asyncio.timeout(wait):
                    await self._ready.wait()
            except TimeoutError:
                return []
        taken = []
        for _ in range(min(n, len(self._events))):
            self._serial += 1
            event = self._events.popleft()
            self._bytes -= event.size
            taken.append((str(self._serial), event))
        return taken

    async def keep(self, ids: Sequence[str]) -> None:
        """Nothing to do: taken events are this process's alone."""

    async def done(self, ids: Sequence[str]) -> None:
        """Nothing to do: :meth:`take` removed them."""

    async def close(self) -> None:
        self._events.clear()
        self._bytes = 0


__all__ = ["MemoryQueue", "Queue", "Warner"]
