"""The in-memory engine: one process, no Redis. State dies with the process.

Each start draws a fresh epoch per channel stream, so clients that recover
across a restart of a memory-engine hub learn that continuity broke. A
stream's history expires after its TTL; its position (epoch and offset) is
kept for ``meta_ttl`` after the last publish, then forgotten, so channels
used once do not accumulate.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import secrets
from collections import deque
from dataclasses import dataclass, field
from time import monotonic as _now

from protocol.messages import ClientInfo, Publication, StateEntry, StreamPosition

from .base import Engine
from .broker import HistoryOptions, HistorySlice, Idempotency, PublicationHandler, Published
from .errors import VersionConflict
from .presence import PresenceCounts, PresenceEntry


def new_epoch() -> str:
    return secrets.token_hex(4)


@dataclass(slots=True)
class _Stream:
    epoch: str
    offset: int = 0
    publications: deque[Publication] = field(default_factory=deque)
    expires: float = 0.0  # monotonic time the history expires at, 0 = never
    touched: float = 0.0  # monotonic time of the last publish


class MemoryEngine(Engine):
    name = "memory"
    retries_publishes = False  # one process, no connection to lose: a publish runs once

    def __init__(self, *, meta_ttl: float = 86400.0, sweep_interval: float = 60.0) -> None:
        self.meta_ttl = meta_ttl
        self.sweep_interval = sweep_interval
        self._sweeper: asyncio.Task[None] | None = None
        self._handler: PublicationHandler | None = None
        self._subscribed: set[str] = set()
        self._streams: dict[str, _Stream] = {}
        self._presence: dict[str, _Presence] = {}
        self._leaves = itertools.count(1)  # pending leave tokens
        self._kv: dict[str, tuple[bytes, float]] = {}  # key -> (value, expiry or 0)
        #: (channel, idempotency key) -> (the first publish's result, expiry)
        self._done: dict[tuple[str, str], tuple[Published, float]] = {}
        self._receipts: dict[str, dict[str, int]] = {}
        self._state: dict[str, _State] = {}

    async def start(self, handler: PublicationHandler) -> None:
        self._handler = handler
        self._sweeper = asyncio.create_task(self._sweep_forever())

    async def close(self) -> None:
        self._handler = None
        self._subscribed.clear()
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        while True:
            await asyncio.sleep(self.sweep_interval)
            self.sweep()

    def sweep(self, now: float | None = None) -> None:
        """Forget streams idle for longer than ``meta_ttl``; drop expired history, kv values
        and idempotency records."""
        now = _now() if now is None else now
        for channel, stream in list(self._streams.items()):
            if stream.touched + self.meta_ttl < now:
                del self._streams[channel]
                self._receipts.pop(channel, None)  # offsets of a forgotten epoch
            elif stream.expires and stream.expires < now:
                stream.publications.clear()
                stream.expires = 0.0
        for key, (_, expires) in list(self._kv.items()):
            if expires and expires <= now:
                del self._kv[key]
        for done, (_, expires) in list(self._done.items()):
            if expires <= now:
                del self._done[done]

    def _stream(self, channel: str) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            # A new epoch: offsets start again, and receipts of the old ones mean nothing (as on Redis).
            stream = self._streams[channel] = _Stream(new_epoch(), touched=_now())
            self._receipts.pop(channel, None)
        elif stream.expires and stream.expires < _now():
            stream.publications.clear()
            stream.expires = 0.0
        return stream

    async def _publish(
        self,
        channel: str,
        data: bytes,
        info: ClientInfo | None,
        history: HistoryOptions,
        mid: str,
        time: int,
        idempotency: Idempotency | None,
    ) -> Published:
        # No await in here: one step, as the Redis script is.
        if idempotency is not None:
            done = self._done.get((channel, idempotency.key))
            if done is not None and done[1] > _now():
                return done[0]
        stream = self._stream(channel)
        stream.offset += 1
        stream.touched = _now()
        pub = Publication(channel, data, stream.offset, stream.epoch, info, mid, time)
        if history.size > 0:
            pubs = stream.publications
            pubs.append(pub)
            while len(pubs) > history.size:
                pubs.popleft()
            if history.ttl > 0:
                stream.expires = _now() + history.ttl
        if self._handler is not None and channel in self._subscribed:
            self._handler.on_publication(pub)
        if idempotency is not None:
            replay = Published(stream.offset, stream.epoch, mid, time, replayed=True)
            self._done[channel, idempotency.key] = (replay, _now() + idempotency.ttl)
        return Published(stream.offset, stream.epoch, mid, time)

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        before: int | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> HistorySlice:
        stream = self._stream(channel)
        position = StreamPosition(stream.offset, stream.epoch)
        if limit == 0:
            return HistorySlice([], position)
        pubs: list[Publication] = list(stream.publications)
        if since is not None:
            if since.epoch != stream.epoch:
                pubs = []
            else:
                pubs = [p for p in pubs if p.offset > since.offset]
        if before is not None:
            pubs = [p for p in pubs if p.offset < before]
        if reverse:
            pubs.reverse()
        if limit is not None:
            pubs = pubs[:limit]
        return HistorySlice(pubs, position)

    async def remove_history(self, channel: str) -> None:
        stream = self._streams.get(channel)
        if stream is not None:
            stream.publications.clear()

    # --- events ----------------------------------------------------------

    async def broadcast(self, channel: str, event: bytes) -> None:
        if self._handler is not None and channel in self._subscribed:
            self._handler.on_event(channel, event)

    async def control(self, message: bytes) -> None:
        if self._handler is not None:
            self._handler.on_control(message)

    # --- presence --------------------------------------------------------
    # One process: a connection's presence ends with it, so ttl is not needed here.

    async def presence_add(self, channel: str, client: str, entry: PresenceEntry, *, ttl: float) -> bool:
        p = self._presence.get(channel)
        if p is None:
            p = self._presence[channel] = _Presence()
        p.clients[client] = entry
        devices = p.users.setdefault(entry.user, set())
        devices.add(client)
        if len(devices) > 1:
            return False
        # The user's first connection: a join, unless their leave is still pending.
        return p.leaving.pop(entry.user, None) is None

    async def presence_remove(self, channel: str, client: str, user: str, *, grace: float) -> int:
        p = self._presence.get(channel)
        if p is None or p.clients.pop(client, None) is None:
            return 0
        devices = p.users.get(user)
        if devices is not None:
            devices.discard(client)
            if devices:
                return 0
            del p.users[user]
        leave = p.leaving[user] = next(self._leaves)
        return leave

    async def presence_settle(self, channel: str, user: str, leave: int) -> bool:
        p = self._presence.get(channel)
        if p is None or user in p.users or p.leaving.get(user) != leave:
            return False
        del p.leaving[user]
        if not p.clients and not p.leaving:
            del self._presence[channel]
        return True

    async def presence_expire(self, channel: str) -> list[str]:
        return []  # entries live exactly as long as their connections in this process

    async def presence(self, channel: str) -> dict[str, PresenceEntry]:
        p = self._presence.get(channel)
        return dict(p.clients) if p is not None else {}

    async def presence_stats(self, channel: str) -> PresenceCounts:
        p = self._presence.get(channel)
        return PresenceCounts(len(p.clients), len(p.users)) if p is not None else PresenceCounts(0, 0)

    # --- small values ----------------------------------------------------

    async def kv_get(self, key: str) -> bytes | None:
        item = self._kv.get(key)
        if item is None:
            return None
        value, expires = item
        if expires and expires <= _now():
            del self._kv[key]
            return None
        return value

    async def kv_set(self, key: str, value: bytes, *, ttl: float = 0.0, only_if_absent: bool = False) -> bool:
        if only_if_absent and await self.kv_get(key) is not None:
            return False
        self._kv[key] = (value, _now() + ttl if ttl > 0 else 0.0)
        return True

    # --- receipts ----------------------------------------------------------

    async def receipt_raise(self, channel: str, user: str, offset: int) -> tuple[int, bool]:
        receipts = self._receipts.setdefault(channel, {})
        had = receipts.get(user)
        if had is not None and had >= offset:
            return had, False
        receipts[user] = offset
        return offset, True

    async def receipts(self, channel: str) -> dict[str, int]:
        return dict(self._receipts.get(channel, {}))

    # --- live state ------------------------------------------------------

    async def state_set(
        self, channel: str, key: str, value: bytes | None, *, expected_version: int | None = None
    ) -> StateEntry:
        state = self._state.get(channel)
        if state is None:
            state = self._state[channel] = _State()
        current = state.entries.get(key)
        if expected_version is not None:
            have = current.version if current is not None and current.value is not None else 0
            if have != expected_version:
                raise VersionConflict(current or StateEntry(key, None, 0))
        state.version += 1
        entry = state.entries[key] = StateEntry(key, value, state.version)
        return entry

    async def state_get(self, channel: str, key: str) -> StateEntry:
        state = self._state.get(channel)
        entry = state.entries.get(key) if state is not None else None
        return entry if entry is not None else StateEntry(key, None, 0)

    async def state_since(self, channel: str, version: int = 0) -> tuple[list[StateEntry], int]:
        state = self._state.get(channel)
        if state is None:
            return [], 0
        if version <= 0:
            return [e for e in state.entries.values() if e.value is not None], state.version
        return [e for e in state.entries.values() if e.version > version], state.version


@dataclass(slots=True)
class _Presence:
    clients: dict[str, PresenceEntry] = field(default_factory=dict)
    users: dict[str, set[str]] = field(default_factory=dict)  # user -> their client ids
    leaving: dict[str, int] = field(default_factory=dict)  # user -> their pending leave's token


@dataclass(slots=True)
class _State:
    version: int = 0
    # Deleted keys stay as entries with value None so catching-up clients learn of them.
    entries: dict[str, StateEntry] = field(default_factory=dict)
