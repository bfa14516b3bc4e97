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
from collections.abc import Callable, Sequence
from typing import Any

import orjson
from redis.asyncio import Redis, RedisCluster
from redis.exceptions import RedisError, ResponseError

from .appender import StreamAppender
from .events import Event
from .queues import Warner

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
        self._warn_full = Warner(f"webhook events of {endpoint} not yet in Redis: dropped the oldest")
        self._warn_redis = Warner(f"webhook queue of {endpoint}: Redis failed")

        def dropped(n: int) -> None:
            on_drop(n)
            self._warn_full()

        self._appender = StreamAppender(
            redis,
            key,
            lambda event: {FIELD: orjson.dumps(event.to_dict())},
            limit=limit,
            maxlen=limit,
            batch=APPEND_BATCH,
            pauses=(RETRY_PAUSE, RETRY_PAUSE),
            on_drop=dropped,
            on_failure=lambda exc, _pause: self._warn_redis(f": {exc}"),
        )
        self._group_ready = False
        self._keep = redis.register_script(KEEP)

    def start(self) -> None:
        """Nothing to start: the appender's task starts with the first event."""

    # --- put: buffer, then append (realtime.backend.appender) ---------------------------------

    def put(self, event: Event) -> None:
        self._appender.put(event)

    async def settle(self) -> None:
        """Until every event put so far is appended to the Stream (or dropped): a publish is answered
        only then, so a node killed right after its answer has not lost the event."""
        await self._appender.settle()

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
        await self._appender.close(flush=1.0)


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
