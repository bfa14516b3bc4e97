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
from time import time as _wall

from protocol.messages import ClientInfo, Publication, StateEntry, StreamPosition

from .base import Engine
from .broker import HistoryOptions, HistorySlice, Idempotency, PublicationHandler, Published, stored_size
from .errors import StateLimitExceeded, VersionConflict
from .presence import PresenceCounts, PresenceEntry
from .state import NO_LIMITS, StateLimits, StateSlice, StateWrite


def new_epoch() -> str:
    return secrets.token_hex(4)


@dataclass(slots=True)
class _Stream:
    epoch: str
    offset: int = 0
    publications: deque[Publication] = field(default_factory=deque)
    bytes: int = 0  # stored_size() of the publications
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
                stream.bytes = 0
                stream.expires = 0.0
        for key, (_, expires) in list(self._kv.items()):
            if expires and expires <= now:
                del self._kv[key]
        for done, (_, expires) in list(self._done.items()):
            if expires <= now:
                del self._done[done]
        wall = _wall()
        for state in self._state.values():
            if state.ends and state.ends <= wall:
                state.forget()

    def _stream(self, channel: str) -> _Stream:
        """The channel's stream, made by a publish (never by a read: see :meth:`_existing`)."""
        stream = self._existing(channel)
        if stream is None:
            # A new epoch: offsets start again, and receipts of the old ones mean nothing (as on Redis).
            stream = self._streams[channel] = _Stream(new_epoch(), touched=_now())
            self._receipts.pop(channel, None)
        return stream

    def _existing(self, channel: str) -> _Stream | None:
        stream = self._streams.get(channel)
        if stream is not None and stream.expires and stream.expires < _now():
            stream.publications.clear()
            stream.bytes = 0
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
            stream.bytes += stored_size(pub)
            limit = history.max_bytes
            while len(pubs) > history.size or (limit and stream.bytes > limit and len(pubs) > 1):
                stream.bytes -= stored_size(pubs.popleft())
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
        max_bytes: int = 0,
    ) -> HistorySlice:
        stream = self._existing(channel)
        if stream is None:
            return HistorySlice([], StreamPosition(0, ""))
        position = StreamPosition(stream.offset, stream.epoch)
        if limit == 0 or (since is not None and since.epoch and since.epoch != stream.epoch):
            return HistorySlice([], position)
        stored = stream.publications
        walk = reversed(stored) if reverse else iter(stored)
        pubs: list[Publication] = []
        size, truncated = 0, False
        for p in walk:  # references only: what the slice holds is bounded by limit and max_bytes
            if since is not None and p.offset <= since.offset:
                if reverse:
                    break
                continue
            if before is not None and p.offset >= before:
                if reverse:
                    continue
                break
            if limit is not None and len(pubs) >= limit:
                break
            size += stored_size(p)
            if max_bytes and pubs and size > max_bytes:
                truncated = True
                break
            pubs.append(p)
        return HistorySlice(pubs, position, truncated)

    async def remove_history(self, channel: str) -> None:
        stream = self._streams.get(channel)
        if stream is not None:
            stream.publications.clear()
            stream.bytes = 0

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
        devices = p.users.get(entry.user)
        if devices is not None and devices != client:
            if isinstance(devices, str):
                p.users[entry.user] = {devices, client}
            else:
                devices.add(client)
            return False
        p.users[entry.user] = client
        # The user's first connection: a join, unless their leave is still pending.
        return p.leaving.pop(entry.user, None) is None

    async def presence_remove(self, channel: str, client: str, user: str, *, grace: float) -> int:
        p = self._presence.get(channel)
        if p is None or p.clients.pop(client, None) is None:
            return 0
        devices = p.users.get(user)
        if devices is not None:
            if isinstance(devices, str):
                if devices != client:
                    return 0
            else:
                devices.discard(client)
                if len(devices) > 1:
                    return 0
                if devices:  # one left: held as its id again
                    p.users[user] = next(iter(devices))
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
        return self._kv_value(key)

    def _kv_value(self, key: str) -> bytes | None:
        item = self._kv.get(key)
        if item is None:
            return None
        value, expires = item
        if expires and expires <= _now():
            del self._kv[key]
            return None
        return value

    async def kv_set(self, key: str, value: bytes, *, ttl: float = 0.0, only_if_absent: bool = False) -> bool:
        if only_if_absent and self._kv_value(key) is not None:
            return False
        self._kv[key] = (value, _now() + ttl if ttl > 0 else 0.0)
        return True

    async def kv_set_max(self, key: str, value: float) -> float:
        stored = self._kv_value(key)  # read and write in one step: no await between them
        if stored is not None and float(stored) >= value:
            return float(stored)
        self._kv[key] = (repr(value).encode(), 0.0)
        return value

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
    # The rules are in state.py's docstring; the Redis scripts do the same steps.

    async def state_write(
        self,
        channel: str,
        key: str,
        value: bytes | None,
        *,
        expected_version: int | None = None,
        limits: StateLimits = NO_LIMITS,
        now: float | None = None,
    ) -> StateWrite:
        now = _wall() if now is None else now
        state = self._state.get(channel)
        if state is None:
            state = _State()
        due = state.due(now)
        current = state.entries.get(key)
        live = current is not None and current.value is not None and key not in due
        if expected_version is not None:
            have = current.version if current is not None and live else 0
            if have != expected_version:
                shown = StateEntry(key, current.value if live else None, current.version) if current else None
                raise VersionConflict(shown or StateEntry(key, None, 0))
        if value is not None:
            keys = state.live - len(due) + (0 if live else 1)
            size = state.live_bytes - sum(_size(k, state.entries[k].value) for k in due) + _size(key, value)
            if live:
                size -= _size(key, current.value if current is not None else None)
            if limits.max_keys and keys > limits.max_keys:
                raise StateLimitExceeded("keys", limits.max_keys)
            if limits.max_bytes and size > limits.max_bytes:
                raise StateLimitExceeded("bytes", limits.max_bytes)
        self._state[channel] = state
        expired = tuple(state.put(k, None, now, 0.0) for k in due)
        entry = state.put(key, value, now, limits.ttl)
        state.compact(limits)
        state.ends = now + limits.ttl if limits.ttl > 0 else 0.0
        return StateWrite(entry, expired)

    async def state_expire(
        self, channel: str, limits: StateLimits = NO_LIMITS, *, now: float | None = None
    ) -> tuple[StateEntry, ...]:
        state = self._state.get(channel)
        if state is None:
            return ()
        now = _wall() if now is None else now
        expired = tuple(state.put(k, None, now, 0.0) for k in state.due(now))
        if expired:
            state.compact(limits)
        return expired

    async def state_get(self, channel: str, key: str, *, now: float | None = None) -> StateEntry:
        state = self._state.get(channel)
        entry = state.entries.get(key) if state is not None else None
        if entry is None:
            return StateEntry(key, None, 0)
        assert state is not None
        if entry.value is not None and state.expired(key, _wall() if now is None else now):
            return StateEntry(key, None, entry.version)
        return entry

    async def state_read(self, channel: str, version: int = 0, *, now: float | None = None) -> StateSlice:
        state = self._state.get(channel)
        if state is None:
            return StateSlice([], 0, version <= 0)
        now = _wall() if now is None else now
        full = version <= 0 or (version <= state.version and (version < state.floor or bool(state.due(now))))
        if full:
            entries = [e for e in state.entries.values() if e.value is not None and not state.expired(e.key, now)]
            return StateSlice(entries, state.version, True)
        return StateSlice([e for e in state.entries.values() if e.version > version], state.version, False)


def _size(key: str, value: bytes | None) -> int:
    """What an entry counts against ``max_bytes``: its key's UTF-8 bytes, plus its value's."""
    return len(key.encode()) + (0 if value is None else len(value))


@dataclass(slots=True)
class _Presence:
    clients: dict[str, PresenceEntry] = field(default_factory=dict)
    #: User -> their client id, or a set of two or more (most users have one connection here,
    #: and a str shared with ``clients`` costs nothing where a set is 216 bytes).
    users: dict[str, str | set[str]] = field(default_factory=dict)
    leaving: dict[str, int] = field(default_factory=dict)  # user -> their pending leave's token


@dataclass(slots=True)
class _State:
    """One channel's live state (see state.py for the rules)."""

    version: int = 0
    # Deleted keys stay as entries with value None (tombstones) so catching-up clients learn of them.
    entries: dict[str, StateEntry] = field(default_factory=dict)
    expires: dict[str, float] = field(default_factory=dict)  # live key -> Unix time it expires at
    live: int = 0  # live keys
    live_bytes: int = 0
    tomb_bytes: int = 0
    floor: int = 0  # a read since a version below it is full (the newest compacted tombstone's version)
    ends: float = 0.0  # Unix time every key has expired by (the last write + ttl); 0: never

    def expired(self, key: str, now: float) -> bool:
        expires = self.expires.get(key)
        return expires is not None and expires <= now

    def due(self, now: float) -> list[str]:
        """Live keys expired at ``now``, soonest first (then by key, as Redis sorts ties)."""
        return sorted((k for k, at in self.expires.items() if at <= now), key=lambda k: (self.expires[k], k))

    def put(self, key: str, value: bytes | None, now: float, ttl: float) -> StateEntry:
        old = self.entries.get(key)
        if old is not None:
            if old.value is None:
                self.tomb_bytes -= _size(key, None)
            else:
                self.live -= 1
                self.live_bytes -= _size(key, old.value)
            del self.entries[key]  # re-inserted last: the dict stays in version order
        self.expires.pop(key, None)
        self.version += 1
        entry = self.entries[key] = StateEntry(key, value, self.version)
        if value is None:
            self.tomb_bytes += _size(key, None)
        else:
            self.live += 1
            self.live_bytes += _size(key, value)
            if ttl > 0:
                self.expires[key] = now + ttl
        return entry

    def compact(self, limits: StateLimits) -> None:
        """Drop the oldest tombstones while there are too many, or the state is too large."""
        tombs = len(self.entries) - self.live
        if not tombs or not (
            (limits.max_keys and tombs > limits.max_keys)
            or (limits.max_bytes and self.live_bytes + self.tomb_bytes > limits.max_bytes)
        ):
            return
        for key, entry in list(self.entries.items()):  # oldest first
            over_keys = limits.max_keys and tombs > limits.max_keys
            over_bytes = limits.max_bytes and self.live_bytes + self.tomb_bytes > limits.max_bytes
            if tombs <= 0 or not (over_keys or over_bytes):
                return
            if entry.value is None:
                del self.entries[key]
                self.tomb_bytes -= _size(key, None)
                self.floor = max(self.floor, entry.version)
                tombs -= 1

    def forget(self) -> None:
        """Every key has expired: drop them all. The version stays, and every change up to it
        counts as compacted (the floor is above it), so any read since a version is full."""
        self.entries.clear()
        self.expires.clear()
        self.live = self.live_bytes = self.tomb_bytes = 0
        self.floor = self.version + 1
        self.ends = 0.0
