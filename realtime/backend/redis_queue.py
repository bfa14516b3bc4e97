"""A webhook endpoint's queue in Redis: a Stream, and one consumer group that every node reads.

* ``put`` buffers the event (bounded in events and in payload bytes, :data:`MAX_QUEUED_BYTES`) and a task of this node appends it: ``XADD key MAXLEN ~ max_queued``
  (the Stream keeps about that many; beyond, Redis trims the oldest);
* ``take`` reads new entries for this node with ``XREADGROUP`` (each entry goes to one consumer of the
  group, so to one node), and first, every ``reclaim_after / 4`` seconds, takes over with ``XAUTOCLAIM``
  the entries another consumer has held unacknowledged for ``reclaim_after`` seconds (a node that died
  or was restarted: its consumer name dies with it);
* ``keep`` resets the idle time of entries this consumer still holds (``XCLAIM ... JUSTID``, only when it
  still owns them) while their delivery is retried, so no other node takes a delivery in progress;
* ``done`` acknowledges and deletes them (``XACK``, ``XDEL``).

Keys: ``{prefix}:wh:{<digest of the url>}``: one key per call and a hash tag, so a Redis Cluster serves
it (the endpoint's whole queue lives on one shard).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import os
import secrets
import time
from collections import deque
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError, ResponseError

from .events import Event
from .queues import MAX_QUEUED_BYTES, Warner

log = logging.getLogger("realtime.webhooks")

GROUP = "webhooks"
#: The field of a Stream entry holding the event (its JSON body, :meth:`Event.to_dict`).
FIELD = b"e"
#: Most events appended per round trip.
APPEND_BATCH = 500
#: Seconds ``take`` blocks in XREADGROUP when nothing is new.
BLOCK = 1.0
#: Seconds between two attempts to reach Redis after a failure.
RETRY_PAUSE = 0.5

#: Reset the idle time of the entries this consumer still owns (others it no longer owns stay as they are).
KEEP = """
local kept = 0
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    kept = kept + 1
  end
end
return kept
"""


def stream_key(prefix: str, url: str) -> str:
    """The Redis key of ``url``'s queue: the digest in braces is its hash tag (one Cluster slot)."""
    return f"{prefix}:wh:{{{hashlib.sha256(url.encode()).hexdigest()[:24]}}}"


def consumer_name(node: str) -> str:
    """This process's consumer: unique, so a restarted node's old entries are reclaimed, not re-read."""
    return f"{node}:{os.getpid()}:{secrets.token_hex(4)}"


class RedisQueue:
    """One endpoint's queue in Redis, shared by every node (create, then :meth:`start`; :meth:`close`)."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        key: str,
        consumer: str,
        *,
        limit: int,
        reclaim_after: float,
        on_drop: Callable[[int], None],
        endpoint: str,
    ) -> None:
        self.redis = redis
        self.key = key
        self.consumer = consumer
        self._limit = limit
        self._reclaim_ms = max(1, int(reclaim_after * 1000))
        self._reclaim_every = reclaim_after / 4
        self._next_reclaim = 0.0
        self._on_drop = on_drop
        #: Events not yet in Redis, as (serial, body, payload bytes), oldest first.
        self._buffer: deque[tuple[int, bytes, int]] = deque()
        #: The events of the round trip in progress: out of the buffer, back to its front if it fails.
        self._sending: list[tuple[int, bytes, int]] = []
        self._bytes = 0  # the payload bytes (:attr:`Event.size`) of the buffer and the round trip
        self._wake = asyncio.Event()
        self._put = 0  # events put so far: the serial of the last one
        self._progress = asyncio.Event()
        self._appender: asyncio.Task[None] | None = None
        self._group_ready = False
        self._keep = redis.register_script(KEEP)
        self._warn_full = Warner(f"webhook events of {endpoint} not yet in Redis: dropped the oldest")
        self._warn_redis = Warner(f"webhook queue of {endpoint}: Redis failed")

    def start(self) -> None:
        self._appender = asyncio.create_task(self._append_forever())

    # --- put: buffer, then append ----------------------------------------------

    def put(self, event: Event) -> None:
        self._put += 1
        size = event.size
        # Redis unreachable for long: keep the newest, within the count and the bytes. The oldest
        # waiting events go; those of the round trip in progress may be in Redis already (and their
        # publishes wait for them), so with none waiting, this one (unless it is alone).
        dropped = 0
        while self._over(1, size) and self._buffer:
            self._bytes -= self._buffer.popleft()[2]
            dropped += 1
        drop_this = bool(self._sending) and self._over(1, size)
        if dropped or drop_this:
            self._progress.set()
            self._on_drop(dropped + drop_this)
            self._warn_full()
        if drop_this:
            return
        self._buffer.append((self._put, orjson.dumps(event.to_dict()), size))
        self._bytes += size
        self._wake.set()

    def _over(self, n: int, size: int) -> bool:
        """Whether ``n`` more events of ``size`` bytes would exceed the count or the bytes."""
        count = len(self._buffer) + len(self._sending) + n
        return count > self._limit or self._bytes + size > MAX_QUEUED_BYTES

    def _oldest(self) -> int:
        """The serial of the oldest event not yet appended nor dropped (the round trip's come first)."""
        if self._sending:
            return self._sending[0][0]
        return self._buffer[0][0] if self._buffer else self._put + 1

    async def settle(self) -> None:
        """Until every event put so far is appended to the Stream (or dropped): a publish is answered
        only then, so a node killed right after its answer has not lost the event."""
        target = self._put
        while self._oldest() <= target:
            self._progress.clear()
            await self._progress.wait()

    async def _append_forever(self) -> None:
        while True:
            if not self._buffer:
                self._wake.clear()
                await self._wake.wait()
            n = min(APPEND_BATCH, len(self._buffer))
            batch = self._sending = [self._buffer.popleft() for _ in range(n)]
            try:
                pipe = self.redis.pipeline(transaction=False)
                for _, body, _ in batch:
                    pipe.xadd(self.key, {FIELD: body}, maxlen=self._limit, approximate=True)
                await pipe.execute()
            except (RedisError, OSError) as exc:
                # Back to the front (some may be appended: delivered twice, the backend dedups by id),
                # the oldest beyond the limit dropped and counted.
                self._sending = []
                self._buffer.extendleft(reversed(batch))
                overflow = 0
                while len(self._buffer) > 1 and self._over(0, 0):
                    self._bytes -= self._buffer.popleft()[2]
                    overflow += 1
                if overflow:
                    self._progress.set()
                    self._on_drop(overflow)
                    self._warn_full()
                self._warn_redis(f": {exc}")
                await asyncio.sleep(RETRY_PAUSE)
                continue
            except BaseException:
                self._sending = []
                self._buffer.extendleft(reversed(batch))
                raise
            self._sending = []
            self._bytes -= sum(size for _, _, size in batch)
            self._progress.set()

    async def flush(self, timeout: float) -> None:
        """Wait (at most ``timeout`` seconds) until every buffered event is in Redis."""
        deadline = time.monotonic() + timeout
        while (self._buffer or self._sending) and time.monotonic() < deadline:
            await asyncio.sleep(0.01)

    # --- take, keep, done ----------------------------------------------------

    async def _ensure_group(self) -> None:
        if self._group_ready:
            return
        try:
            # From the start of the Stream: events appended before any node made the group are delivered.
            await self.redis.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise
        self._group_ready = True

    async def take(self, n: int) -> list[tuple[str, Event]]:
        try:
            await self._ensure_group()
            if time.monotonic() >= self._next_reclaim:
                self._next_reclaim = time.monotonic() + self._reclaim_every
                claimed = await self.redis.xautoclaim(
                    self.key, GROUP, self.consumer, self._reclaim_ms, start_id="0-0", count=n
                )
                entries = await self._read(claimed[1])
                if entries:
                    return entries
            found: Any = await self.redis.xreadgroup(
                GROUP, self.consumer, {self.key: ">"}, count=n, block=int(BLOCK * 1000)
            )
        except ResponseError as exc:
            if "NOGROUP" in str(exc):  # the Stream went (Redis restarted empty): make it again
                self._group_ready = False
                return []
            self._warn_redis(f": {exc}")
            await asyncio.sleep(RETRY_PAUSE)
            return []
        except (RedisError, OSError) as exc:
            self._warn_redis(f": {exc}")
            await asyncio.sleep(RETRY_PAUSE)
            return []
        return [entry for _, items in (found or []) for entry in await self._read(items)]

    async def _read(self, items: Any) -> list[tuple[str, Event]]:
        """The events of Stream entries; an unreadable entry is logged and acknowledged (never retried)."""
        events, bad = _entries(items)
        if bad:
            await self.done(bad)
        return events

    async def keep(self, ids: Sequence[str]) -> None:
        try:
            await self._keep(keys=[self.key], args=[GROUP, self.consumer, *ids])
        except (RedisError, OSError) as exc:
            self._warn_redis(f": {exc}")

    async def done(self, ids: Sequence[str]) -> None:
        while True:  # an entry left unacknowledged would be delivered again by another node
            try:
                pipe = self.redis.pipeline(transaction=False)
                pipe.xack(self.key, GROUP, *ids)
                pipe.xdel(self.key, *ids)
                await pipe.execute()
                return
            except (RedisError, OSError) as exc:
                self._warn_redis(f": {exc}")
                await asyncio.sleep(RETRY_PAUSE)

    async def close(self) -> None:
        if self._appender is not None:
            await self.flush(1.0)
            self._appender.cancel()
            await asyncio.gather(self._appender, return_exceptions=True)
            self._appender = None


def _entries(items: Any) -> tuple[list[tuple[str, Event]], list[str]]:
    """Stream entries -> (id, event), and the ids of unreadable ones; entries deleted meanwhile (no
    fields) are skipped (XAUTOCLAIM has dropped them from the pending list)."""
    out = []
    bad = []
    for entry_id, fields in items or []:
        raw = (fields or {}).get(FIELD)
        ident = entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)
        if raw is None:
            continue
        try:
            out.append((ident, Event.from_dict(orjson.loads(raw))))
        except (ValueError, KeyError, TypeError):
            log.error("webhook queue entry %s is not an event: skipped", ident)
            bad.append(ident)
    return out, bad


__all__ = ["GROUP", "RedisQueue", "consumer_name", "stream_key"]
