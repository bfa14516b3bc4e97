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
from collections.abc import Awaitable, Callable, Coroutine, Iterable
from typing import Any

import msgpack  # type: ignore[import-untyped]

from handlers.base import Feature
from protocol.codec import Codec
from protocol.codes import CloseCode, ErrorCode
from protocol.errors import CommandError, DisconnectError
from protocol.messages import (
    ClientInfo,
    Connect,
    HistoryResult,
    Publication,
    PublishResult,
    ServerMessage,
    StreamPosition,
    Unsubscribed,
)
from protocol.msgpack_codec import MsgpackCodec

from .auth import Identity, TokenVerifier
from .commands import Commands
from .config import Settings
from .connection import Connection
from .engines.base import Engine, HistoryOptions
from .frames import Outgoing
from .logs import log_failure
from .namespaces import Namespace, resolve

#: The reason of an ``unsub`` push that asks the client to resubscribe from its position.
RECOVER = "recover"
#: Most publications one history page returns.
MAX_HISTORY_PAGE = 100
#: Events cross nodes as msgpack server messages; this codec makes them.
EVENTS = MsgpackCodec()

log = logging.getLogger("realtime.hub")


class _Channel:
    """Local subscribers of one channel, by codec, and those still subscribing."""

    __slots__ = ("ahead", "epoch", "joining", "offset", "ready", "repairing", "subscribers")

    def __init__(self) -> None:
        #: The last publication this node delivered on the channel ("" = none yet).
        self.epoch = ""
        self.offset = 0
        #: Publications held back while a gap is filled from history.
        self.repairing: list[Publication] | None = None
        self.subscribers: dict[Codec, set[Connection]] = {}
        #: Connections whose subscribe reply is not out yet: their publications wait here.
        self.joining: dict[Connection, list[Outgoing]] = {}
        #: Subscribers whose reply carried publications this node has not delivered yet
        #: (its live delivery lags history): they go live after that position.
        self.ahead: dict[Connection, StreamPosition] = {}
        #: Resolved once the engine subscription for this node is in place.
        self.ready: asyncio.Future[None] | None = None

    def empty(self) -> bool:
        return not self.joining and not self.ahead and not any(self.subscribers.values())

    def members(self) -> list[Connection]:
        """Every connection subscribed and live (or about to be), for server-side unsubscribes."""
        return [conn for conns in self.subscribers.values() for conn in conns] + list(self.ahead)


class Hub:
    """Create with settings and an engine; :meth:`start` before serving, :meth:`shutdown` after."""

    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.verifier = TokenVerifier.from_settings(settings)
        #: Namespace name -> hook that may take a channel event instead of delivering it.
        #: Set before the features are made: they register hooks when created.
        self.event_hooks: dict[str, Callable[[str, bytes], bool]] = {}
        # The features import this module, so they are imported here, not at the top.
        from handlers.chat import Chat
        from handlers.live import Live
        from handlers.presence import Presence

        self.chat = Chat(self)
        self.presence = Presence(self)
        self.live = Live(self)
        #: In hook order.
        self.features: list[Feature] = [self.chat, self.presence, self.live]
        self.commands = Commands(self)
        self.connections: dict[str, Connection] = {}
        #: Connected users -> their connections on this node.
        self.users: dict[str, set[Connection]] = {}
        self._history: dict[str, HistoryOptions] = {}
        self._tasks: set[asyncio.Task[None]] = set()
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

    def track_user(self, conn: Connection, user: str) -> None:
        """Count ``conn`` among ``user``'s connections: control messages for the user reach it."""
        self.users.setdefault(user, set()).add(conn)

    def untrack_user(self, conn: Connection, user: str) -> None:
        devices = self.users.get(user)
        if devices is not None:
            devices.discard(conn)
            if not devices:
                del self.users[user]

    def connection_ready(self, conn: Connection, cmd: Connect) -> None:
        """The connect command succeeded: the one log line of a connection's opening."""
        if conn.user:
            self.track_user(conn, conn.user)
        log.info(
            "connection open id=%s user=%s remote=%s codec=%s client=%s/%s",
            conn.id,
            conn.user or "-",
            conn.remote,
            conn.codec.name,
            cmd.name or "-",
            cmd.version or "-",
        )

    async def remove(self, conn: Connection) -> None:
        """Forget a finished connection and drop its subscriptions."""
        self.connections.pop(conn.id, None)
        conn.closed = True
        if conn.user:
            self.untrack_user(conn, conn.user)
        self.disconnects[conn.close_code] += 1
        log.info(
            "connection closed id=%s user=%s code=%s reason=%s",
            conn.id,
            conn.user or "-",
            conn.close_code,
            conn.close_reason,
        )
        for channel in list(conn.channels):
            await self.unsubscribe(conn, channel)
        if conn.connected:
            for feature in self.features:
                await feature.on_disconnect(conn)

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
        """Deliver a publication to local subscribers, keeping the channel's order.

        Offsets arrive consecutive from a healthy engine. A duplicate (already
        delivered by a repair) is dropped; a gap (a message the engine's pub/sub
        lost) holds the channel back while the missing publications are read
        from history, so subscribers still get every publication once, in order.
        """
        ch = self._channels.get(pub.channel)
        if ch is None:
            return
        if pub.epoch == ch.epoch:
            if pub.offset <= ch.offset:
                return
            if pub.offset != ch.offset + 1 or ch.repairing is not None:
                self._hold_for_repair(ch, pub)
                return
        ch.epoch, ch.offset = pub.epoch, pub.offset
        self._fan_out(ch, pub)

    def _fan_out(self, ch: _Channel, pub: Publication) -> None:
        encoded: dict[Codec, Outgoing] = {}
        for codec, conns in ch.subscribers.items():
            if conns:
                out = encoded[codec] = Outgoing(codec.encode(pub), codec.binary, pub.offset, pub.epoch)
                for conn in conns:
                    conn.send(out)
        if ch.joining or ch.ahead:
            self._fan_out_to_newcomers(ch, pub, encoded)

    def _fan_out_to_newcomers(self, ch: _Channel, pub: Publication, encoded: dict[Codec, Outgoing]) -> None:
        """Queue ``pub`` for subscribes still in flight; deliver it to subscribers
        whose reply already carried it only if it is newer, then make them live."""

        def out_for(codec: Codec) -> Outgoing:
            out = encoded.get(codec)
            if out is None:
                out = encoded[codec] = Outgoing(codec.encode(pub), codec.binary, pub.offset, pub.epoch)
            return out

        for conn, waiting in ch.joining.items():
            waiting.append(out_for(conn.codec))
        for conn, seen in list(ch.ahead.items()):
            if pub.epoch != seen.epoch or pub.offset > seen.offset:
                del ch.ahead[conn]
                conn.send(out_for(conn.codec))
                ch.subscribers.setdefault(conn.codec, set()).add(conn)

    # --- continuity --------------------------------------------------------

    def _hold_for_repair(self, ch: _Channel, pub: Publication) -> None:
        if ch.repairing is None:
            ch.repairing = [pub]
            self.spawn(self._repair(pub.channel, ch))
        else:
            ch.repairing.append(pub)

    async def _repair(self, channel: str, ch: _Channel) -> None:
        """Fill a gap from history, then deliver what waited, in offset order.

        Runs while ``ch.repairing`` is a list; publications arriving meanwhile join it.
        """
        try:
            while True:
                held, ch.repairing = ch.repairing or [], []
                page = await self.engine.history(channel, since=StreamPosition(ch.offset, ch.epoch))
                found = {p.offset: p for p in page.publications if p.epoch == ch.epoch}
                for p in held:
                    found.setdefault(p.offset, p)
                if found and min(found) != ch.offset + 1:
                    log.warning("channel %s: publications after offset %d are lost", channel, ch.offset)
                    if self._ask_to_recover(channel):
                        # Delivering what follows the gap would move the subscribers'
                        # positions past it, and their resubscribe would look complete.
                        ch.offset = max(found)
                        for offset in sorted(found):  # subscribes in flight were not asked: they need them
                            self._fan_out_to_newcomers(ch, found[offset], {})
                        found = {}
                for offset in sorted(found):
                    if offset > ch.offset:
                        ch.offset = offset
                        self._fan_out(ch, found[offset])
                if not ch.repairing:
                    return
        finally:
            ch.repairing = None

    def _ask_to_recover(self, channel: str) -> bool:
        """Tell the channel's local subscribers to resubscribe from their position
        (where the channel keeps history; elsewhere there is nothing to recover).

        Returns whether it asked; they receive nothing more of the channel from now.
        """
        ns = self.namespace(channel)
        if channel not in self._channels or ns is None or not ns.recovery or self.history_options(ns).size == 0:
            return False
        self.ask_to_resubscribe(channel)
        return True

    def ask_to_resubscribe(self, channel: str) -> None:
        """Tell every local subscriber of ``channel`` to subscribe again from where it is
        (an ``unsub`` push with reason :data:`RECOVER`); they receive nothing more of it until then."""
        ch = self._channels.get(channel)
        if ch is not None:
            for conn in ch.members():
                self.server_unsubscribe(conn, channel, RECOVER)

    def on_resync(self) -> None:
        """The engine's delivery was interrupted (its pub/sub reconnected): check every channel."""
        for channel in list(self._channels):
            self.spawn(self._resync(channel))
        for feature in self.features:
            feature.on_resync()

    async def _resync(self, channel: str) -> None:
        ch = self._channels.get(channel)
        if ch is None or not ch.epoch:
            return
        position = (await self.engine.history(channel, limit=0)).position
        if position.epoch != ch.epoch:
            # The stream lost continuity (e.g. Redis restarted without its data).
            ch.epoch, ch.offset = position.epoch, position.offset
            self._ask_to_recover(channel)
        elif position.offset > ch.offset and ch.repairing is None:
            ch.repairing = []
            await self._repair(channel, ch)

    def on_event(self, channel: str, event: bytes) -> None:
        """An ephemeral push (msgpack server message) for the channel's local subscribers.

        A feature may hold events of its namespaces back (live data conflates
        fast-changing keys) through :attr:`event_hooks`, keyed by namespace name:
        a hook that returns True has taken the event.
        """
        ch = self._channels.get(channel)
        if ch is None:
            return
        if self.event_hooks:
            hook = self.event_hooks.get(channel.partition(":")[0] if ":" in channel else "")
            if hook is not None and hook(channel, event):
                return
        self.deliver_event(ch, event)

    def deliver_event(self, ch: _Channel | str, event: bytes) -> None:
        """Hand an event to the channel's local subscribers now (hooks use it to release events)."""
        if isinstance(ch, str):
            found = self._channels.get(ch)
            if found is None:
                return
            ch = found
        encoded: dict[Codec, Outgoing] = {}

        def out_for(codec: Codec) -> Outgoing:
            out = encoded.get(codec)
            if out is None:
                out = encoded[codec] = Outgoing(codec.from_msgpack(event), codec.binary)
            return out

        for codec, conns in ch.subscribers.items():
            if conns:
                out = out_for(codec)
                for conn in conns:
                    conn.send(out)
        for conn, waiting in ch.joining.items():
            waiting.append(out_for(conn.codec))
        for conn in ch.ahead:  # subscribed: events are not ordered by offset
            conn.send(out_for(conn.codec))

    async def broadcast(self, channel: str, push: ServerMessage) -> None:
        """Send an ephemeral push to every subscriber of ``channel`` on every node."""
        await self.engine.broadcast(channel, EVENTS.encode(push))

    def on_control(self, message: bytes) -> None:
        """A command for every node: act on this node's connections."""
        try:
            m = msgpack.unpackb(message)
            op = m["op"]
        except Exception:
            log.warning("malformed control message ignored")
            return
        conns = list(self.users.get(m.get("user", ""), ()))
        if op == "disconnect":
            code = CloseCode(m.get("code", CloseCode.FORCE_DISCONNECT))
            for conn in conns:
                conn.close(DisconnectError(code, m.get("reason", "")))
        elif op == "unsubscribe":
            channel = m.get("channel", "")
            for conn in conns:
                self.server_unsubscribe(conn, channel)

    def server_unsubscribe(self, conn: Connection, channel: str, reason: str = "unsubscribed by the server") -> None:
        """Unsubscribe ``conn`` on the server's initiative and tell the client.

        The connection receives nothing more of the channel from this call on;
        features learn of it (presence leaves) in the background. With ``reason``
        :data:`RECOVER` the client should subscribe again from its last position:
        the hub could not keep the channel's continuity.
        """
        if not self._detach(conn, channel):
            return
        conn.send(Outgoing(conn.codec.encode(Unsubscribed(channel, reason)), conn.codec.binary))
        self.spawn(self._detached(conn, channel))

    def spawn(self, coro: Coroutine[Any, Any, None]) -> None:
        """Run ``coro`` in the background, logging its failure; shutdown waits for nothing."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[None]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            log.error("background task failed", exc_info=task.exception())

    async def control(self, op: str, **fields: object) -> None:
        await self.engine.control(msgpack.packb({"op": op, **fields}))

    # --- namespaces, publishing, history ---------------------------------

    def namespace(self, channel: str) -> Namespace | None:
        return resolve(self.settings.namespaces, channel)

    def history_options(self, ns: Namespace) -> HistoryOptions:
        options = self._history.get(ns.name)
        if options is None:
            size, ttl = ns.history(self.settings.history_size, self.settings.history_ttl)
            options = self._history[ns.name] = HistoryOptions(size, ttl)
        return options

    async def publish(
        self,
        channel: str,
        data: bytes,
        ns: Namespace,
        *,
        info: ClientInfo | None = None,
        key: str | None = None,
        sender: Connection | None = None,
    ) -> PublishResult:
        """Publish from a client or the server API; chat channels go through the chat feature."""
        if ns.max_message_size is not None and len(data) > ns.max_message_size:
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, f"data is larger than {ns.max_message_size} bytes")
        if ns.kind == "chat":
            result: PublishResult = await self.chat.publish(channel, data, ns, info=info, key=key)
            return result
        pos = await self.engine.publish(channel, data, info=info, history=self.history_options(ns))
        return PublishResult(pos.offset, pos.epoch)

    async def history_page(
        self, channel: str, limit: int | None, before: int | None, after: int | None
    ) -> HistoryResult:
        """A page of history, oldest first: the newest, or just before/after an offset."""
        n = MAX_HISTORY_PAGE if limit is None or limit <= 0 else min(limit, MAX_HISTORY_PAGE)
        if after is not None:
            position = (await self.engine.history(channel, limit=0)).position
            page = await self.engine.history(channel, since=StreamPosition(after, position.epoch), limit=n)
            pubs = page.publications
        else:
            page = await self.engine.history(channel, before=before, limit=n, reverse=True)
            pubs = page.publications[::-1]
        return HistoryResult(tuple(pubs), page.position.offset, page.position.epoch)

    # --- revocation ------------------------------------------------------

    async def revoked(self, identity: Identity) -> bool:
        """Whether the user's tokens issued before a revocation time include this one."""
        raw = await self.engine.kv_get(f"revoked:{identity.user}")
        if raw is None:
            return False
        return identity.issued_at is None or identity.issued_at < float(raw)

    async def revoke(self, user: str, before: float, ttl: float = 0.0) -> None:
        """Refuse the user's tokens issued before ``before`` (Unix seconds) and disconnect them."""
        await self.engine.kv_set(f"revoked:{user}", repr(before).encode(), ttl=ttl)
        await self.control("disconnect", user=user, code=int(CloseCode.UNAUTHORIZED), reason="token revoked")

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
        if conn not in ch.joining:
            # Unsubscribed (by the server, or the connection closed) while the engine
            # subscribed: the unsubscribe could not release the channel then; do it now.
            await self._release(channel, ch)
            raise CommandError(ErrorCode.NOT_SUBSCRIBED, "unsubscribed while subscribing")

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
        if position is not None:
            if not ch.epoch:
                ch.epoch, ch.offset = position.epoch, position.offset  # continuity starts here
            elif position.epoch == ch.epoch and position.offset > ch.offset:
                # The reply read history ahead of this node's live delivery: the
                # publications up to ``position`` would reach the client twice.
                ch.ahead[conn] = position
                return
        ch.subscribers.setdefault(conn.codec, set()).add(conn)

    async def unsubscribe(self, conn: Connection, channel: str) -> None:
        """Stop delivering ``channel`` to ``conn``; features learn of it (presence leaves)."""
        if self._detach(conn, channel):
            await self._detached(conn, channel)

    def _detach(self, conn: Connection, channel: str) -> bool:
        """Stop delivering ``channel`` to ``conn`` now; False if it was not subscribed."""
        if channel not in conn.channels:
            return False
        conn.channels.discard(channel)
        ch = self._channels.get(channel)
        if ch is not None:
            ch.joining.pop(conn, None)
            ch.ahead.pop(conn, None)
            subs = ch.subscribers.get(conn.codec)
            if subs is not None:
                subs.discard(conn)
        return True

    async def _detached(self, conn: Connection, channel: str) -> None:
        """The rest of an unsubscribe: the node's engine subscription, then the features."""
        ch = self._channels.get(channel)
        if ch is not None:
            await self._release(channel, ch)
        ns = self.namespace(channel)
        if ns is not None:
            for feature in self.features:
                await feature.on_unsubscribe(conn, ns, channel)

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
                log_failure(log, "engine unsubscribe of a channel failed")

    def channel_count(self) -> int:
        return len(self._channels)

    def local_channels(self) -> list[str]:
        """Channels with subscribers on this node."""
        return list(self._channels)

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
        for task in list(self._tasks):
            task.cancel()
        for feature in self.features:
            await feature.close()
        await self.engine.close()


async def _wait_all(aws: Iterable[Awaitable[None]]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    if tasks:
        await asyncio.wait(tasks)
