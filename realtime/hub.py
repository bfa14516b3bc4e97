"""The hub: connections of this node, channel -> local subscribers, fan-out.

The engine calls :meth:`Hub.on_publication` once per publication of a channel
this node listens to; the hub encodes it once per codec in use on that channel
and hands the same :class:`Outgoing` to every local subscriber. Writes are
flushed once per loop iteration for every connection that got something.
"""

from __future__ import annotations

import asyncio
import logging
from collections import Counter
from collections.abc import Awaitable, Iterable

from protocol.codec import Codec
from protocol.codes import CloseCode
from protocol.errors import DisconnectError
from protocol.messages import Connect, Publication, StreamPosition

from .commands import Commands
from .config import Settings
from .connection import Connection
from .engines.base import Engine
from .frames import Outgoing

log = logging.getLogger("realtime.hub")


class _Channel:
    """Local subscribers of one channel, by codec, and those still subscribing."""

    __slots__ = ("subscribers", "joining", "ready")

    def __init__(self) -> None:
        self.subscribers: dict[Codec, set[Connection]] = {}
        #: Connections whose subscribe reply is not out yet: their publications wait here.
        self.joining: dict[Connection, list[Outgoing]] = {}
        #: Resolved once the engine subscription for this node is in place.
        self.ready: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return not self.joining and not any(self.subscribers.values())


class Hub:
    """Create with settings and an engine; :meth:`start` before serving, :meth:`shutdown` after."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.commands = Commands(self)
        self.connections: dict[str, Connection] = {}
        self.closing = False
        #: Finished connections by close code, for operators and tests.
        self.disconnects: Counter[int] = Counter()
        self._channels: dict[str, _Channel] = {}
        self._dirty: list[Connection] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.engine.start(self)

    # --- connections -----------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def connection_ready(self, conn: Connection, cmd: Connect) -> None:
        """The connect command succeeded: the one log line of a connection's opening."""
        log.info(
            "connection open id=%s user=%s remote=%s codec=%s client=%s/%s",
            conn.id, conn.user or "-", conn.remote, conn.codec.name, cmd.name or "-", cmd.version or "-",
        )

    async def remove(self, conn: Connection) -> None:
        """Forget a finished connection and drop its subscriptions."""
        self.connections.pop(conn.id, None)
        conn.closed = True
        self.disconnects[conn.close_code] += 1
        log.info(
            "connection closed id=%s user=%s code=%s reason=%s",
            conn.id, conn.user or "-", conn.close_code, conn.close_reason,
        )
        for channel in list(conn.channels):
            await self.unsubscribe(conn, channel)

    # --- writes ----------------------------------------------------------

    def mark_dirty(self, conn: Connection) -> None:
        if not self._dirty:
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        self._dirty.append(conn)

    def _flush(self) -> None:
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()

    # --- fan-out ---------------------------------------------------------

    def on_publication(self, pub: Publication) -> None:
        ch = self._channels.get(pub.channel)
        if ch is None:
            return
        encoded: dict[Codec, Outgoing] = {}
        for codec, conns in ch.subscribers.items():
            if conns:
                out = encoded[codec] = Outgoing(codec.encode(pub), codec.binary, pub.offset, pub.epoch)
                for conn in conns:
                    conn.send(out)
        for conn, waiting in ch.joining.items():
            out_ = encoded.get(conn.codec)
            if out_ is None:
                out_ = encoded[conn.codec] = Outgoing(
                    conn.codec.encode(pub), conn.codec.binary, pub.offset, pub.epoch
                )
            waiting.append(out_)

    # --- subscriptions ---------------------------------------------------

    async def begin_subscribe(self, conn: Connection, channel: str) -> None:
        """Start delivering ``channel`` to ``conn``, held back until :meth:`end_subscribe`.

        Publications that arrive between this call and ``end_subscribe`` wait so
        that the subscribe reply (with any recovered publications) goes first.
        """
        ch = self._channels.get(channel)
        if ch is None:
            ch = self._channels[channel] = _Channel()
        conn.channels.add(channel)
        ch.joining[conn] = []
        if ch.ready is None:
            assert self._loop is not None
            ch.ready = self._loop.create_future()
            try:
                await self.engine.subscribe(channel)
            except BaseException as exc:
                ready, ch.ready = ch.ready, None
                ready.set_exception(exc)
                ready.exception()  # retrieved: waiters get it via await below
                ch.joining.pop(conn, None)
                conn.channels.discard(channel)
                self._drop_if_empty(channel, ch)
                raise
            ch.ready.set_result(None)
        else:
            try:
                await asyncio.shield(ch.ready)
            except BaseException:
                ch.joining.pop(conn, None)
                conn.channels.discard(channel)
                raise

    def end_subscribe(self, conn: Connection, channel: str, position: StreamPosition | None) -> None:
        """Deliver what waited (minus what ``position`` says was already sent) and go live."""
        ch = self._channels.get(channel)
        if ch is None:
            return
        waiting = ch.joining.pop(conn, None)
        if waiting is None:
            return
        for out in waiting:
            if position is None or out.epoch != position.epoch or out.offset > position.offset:
                conn.send(out)
        ch.subscribers.setdefault(conn.codec, set()).add(conn)

    async def unsubscribe(self, conn: Connection, channel: str) -> None:
        conn.channels.discard(channel)
        ch = self._channels.get(channel)
        if ch is None:
            return
        ch.joining.pop(conn, None)
        subs = ch.subscribers.get(conn.codec)
        if subs is not None:
            subs.discard(conn)
        await self._release(channel, ch)

    def _drop_if_empty(self, channel: str, ch: _Channel) -> bool:
        if ch.empty() and self._channels.get(channel) is ch:
            del self._channels[channel]
            return True
        return False

    async def _release(self, channel: str, ch: _Channel) -> None:
        if ch.ready is not None and not ch.ready.done():
            return  # the subscriber in flight will find it empty and stay subscribed: harmless
        if self._drop_if_empty(channel, ch) and ch.ready is not None:
            try:
                await self.engine.unsubscribe(channel)
            except Exception:
                log.warning("engine unsubscribe of a channel failed", exc_info=True)

    def channel_count(self) -> int:
        return len(self._channels)

    # --- shutdown --------------------------------------------------------

    async def drain(self, window: float) -> None:
        """Disconnect every client with reconnect advice, spread over ``window`` seconds.

        Spreading keeps a restart of a node with many clients from turning into
        a reconnect storm against the other nodes.
        """
        self.closing = True
        conns = list(self.connections.values())
        if not conns:
            return
        steps = max(1, min(len(conns), int(window * 20)))
        per_step = -(-len(conns) // steps)
        delay = window / steps
        for i in range(0, len(conns), per_step):
            if i:
                await asyncio.sleep(delay)
            for conn in conns[i : i + per_step]:
                conn.close(DisconnectError(CloseCode.SHUTDOWN))
        await _wait_all(c.wait_closed() for c in conns)

    async def close(self) -> None:
        await self.engine.close()


async def _wait_all(aws: Iterable[Awaitable[None]]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    if tasks:
        await asyncio.wait(tasks)
