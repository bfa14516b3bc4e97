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
import secrets
import time
from collections import deque
from dataclasses import dataclass, field

from protocol.messages import ClientInfo, Publication, StreamPosition

from .base import (
    Engine,
    HistoryOptions,
    HistoryPage,
    PublicationHandler,
    StateEntry,
    VersionConflict,
)


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

    def __init__(self, *, meta_ttl: float = 86400.0, sweep_interval: float = 60.0) -> None:
        self.meta_ttl = meta_ttl
        self.sweep_interval = sweep_interval
        self._sweeper: asyncio.Task[None] | None = None
        self._handler: PublicationHandler | None = None
        self._subscribed: set[str] = set()
        self._streams: dict[str, _Stream] = {}
        self._presence: dict[str, dict[str, bytes]] = {}
        self._state: dict[str, dict[str, StateEntry]] = {}

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
        """Forget streams idle for longer than ``meta_ttl``; drop expired history."""
        now = time.monotonic() if now is None else now
        for channel, stream in list(self._streams.items()):
            if stream.touched + self.meta_ttl < now:
                del self._streams[channel]
            elif stream.expires and stream.expires < now:
                stream.publications.clear()
                stream.expires = 0.0

    def _stream(self, channel: str) -> _Stream:
        stream = self._streams.get(channel)
        if stream is None:
            stream = self._streams[channel] = _Stream(new_epoch(), touched=time.monotonic())
        elif stream.expires and stream.expires < time.monotonic():
            stream.publications.clear()
            stream.expires = 0.0
        return stream

    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        info: ClientInfo | None = None,
        history: HistoryOptions = HistoryOptions(),
    ) -> StreamPosition:
        stream = self._stream(channel)
        stream.offset += 1
        stream.touched = time.monotonic()
        pub = Publication(channel, data, stream.offset, stream.epoch, info)
        if history.size > 0:
            pubs = stream.publications
            pubs.append(pub)
            while len(pubs) > history.size:
                pubs.popleft()
            if history.ttl > 0:
                stream.expires = time.monotonic() + history.ttl
        if self._handler is not None and channel in self._subscribed:
            self._handler.on_publication(pub)
        return StreamPosition(stream.offset, stream.epoch)

    async def subscribe(self, channel: str) -> None:
        self._subscribed.add(channel)

    async def unsubscribe(self, channel: str) -> None:
        self._subscribed.discard(channel)

    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> HistoryPage:
        stream = self._stream(channel)
        position = StreamPosition(stream.offset, stream.epoch)
        if limit == 0:
            return HistoryPage([], position)
        pubs: list[Publication] = list(stream.publications)
        if since is not None:
            if since.epoch != stream.epoch:
                pubs = []
            else:
                pubs = [p for p in pubs if p.offset > since.offset]
        if reverse:
            pubs.reverse()
        if limit is not None:
            pubs = pubs[:limit]
        return HistoryPage(pubs, position)

    async def remove_history(self, channel: str) -> None:
        stream = self._streams.get(channel)
        if stream is not None:
            stream.publications.clear()

    async def presence_add(self, channel: str, client: str, info: bytes, *, ttl: float) -> None:
        # One process: a connection's presence ends with it, so ttl is not needed here.
        self._presence.setdefault(channel, {})[client] = info

    async def presence_remove(self, channel: str, client: str) -> None:
        members = self._presence.get(channel)
        if members is not None:
            members.pop(client, None)
            if not members:
                del self._presence[channel]

    async def presence(self, channel: str) -> dict[str, bytes]:
        return dict(self._presence.get(channel, {}))

    async def state_set(
        self, channel: str, key: str, value: bytes | None, *, expected_version: int | None = None
    ) -> StateEntry:
        entries = self._state.setdefault(channel, {})
        current = entries.get(key, StateEntry(None, 0))
        if expected_version is not None and expected_version != current.version:
            raise VersionConflict(current)
        entry = StateEntry(value, current.version + 1)
        entries[key] = entry
        return entry

    async def state_get(self, channel: str, key: str) -> StateEntry:
        return self._state.get(channel, {}).get(key, StateEntry(None, 0))

    async def state_all(self, channel: str) -> dict[str, StateEntry]:
        return {k: e for k, e in self._state.get(channel, {}).items() if e.value is not None}
