"""The hub: this node's connections, their subscriptions, and what features plug into.

The engine calls :meth:`Hub.on_publication` once per publication of a channel
this node listens to; ``realtime.continuity`` keeps each channel's order and
``realtime.subscriptions`` hands the same encoded :class:`Outgoing` to every
local subscriber (a channel's publications of one loop iteration as one
batch). Writes are flushed once per loop iteration for every connection that
got something.

The hub knows its features only as :class:`~realtime.feature.Feature`: the
composition root (``realtime.server``) plugs them in with :meth:`Hub.use`, and
they use the hub through :class:`~realtime.feature.HubServices`.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Coroutine, Iterable, Mapping
from typing import Any, TypeVar

import msgpack  # type: ignore[import-untyped]

from protocol.codec import Codec
from protocol.codes import CloseCode, ErrorCode
from protocol.errors import CommandError, DisconnectError
from protocol.limits import MAX_HISTORY_PAGE, RECOVER
from protocol.messages import (
    ClientInfo,
    Command,
    Connect,
    HistoryResult,
    Publication,
    Publish,
    PublishResult,
    Result,
    ServerMessage,
    StreamPosition,
    Unsubscribed,
)

from .auth import Identity, TokenVerifier
from .backend.events import Event, EventBus, json_value, now_ms
from .config import Settings
from .connection import Connection
from .continuity import Continuity
from .engines.base import Engine, HistoryOptions
from .feature import EVENTS, EventHook, Feature, Handler, PublishHook
from .frames import Outgoing
from .logs import CLIENT_NAME_LIMIT, log_failure, safe
from .metrics import Metrics, NodeSnapshot, codec_label, disconnect_key
from .namespaces import Namespace, resolve
from .publish_ids import publish_idempotency
from .revocations import RevocationFile, RevocationFileError
from .subscriptions import Channel, SubEvent, Subscriptions, SubState
from .timers import TimerWheel

F = TypeVar("F", bound=Feature)
K = TypeVar("K")
V = TypeVar("V")

#: Connections of one user held in a tuple (each connect and end copies it); more in a set.
FEW_DEVICES = 8

log = logging.getLogger("realtime.hub")
#: The event of every publication, in namespaces a sink selects.
PUBLISHED = "message.published"
#: Seconds a publish waits for its event to reach the durable webhook queues before answering.
EVENT_SETTLE = 2.0
#: The event of a connection the hub closed.
CLOSED = "connection.closed"


def revoked_key(user: str) -> str:
    """The key-value key of ``user``'s revocation time."""
    return f"revoked:{user}"


class Hub:
    """Create with settings and an engine, plug the features in with :meth:`use`;
    :meth:`start` before serving, :meth:`close` after. ``realtime.server`` does all three."""

    def __init__(
        self, settings: Settings, engine: Engine, metrics: Metrics | None = None, events: EventBus | None = None
    ) -> None:
        self.settings = settings
        self.engine = engine
        self.metrics = metrics or Metrics(settings.namespaces)
        #: What happens here that the app's backend may hear of (webhooks, the event stream, push).
        self.events = events or EventBus()
        self.verifier = TokenVerifier.from_settings(settings)
        #: Times every connection's deadlines (pings, connect deadline, token expiry).
        self.timers = TimerWheel()
        #: Where revocations outlive the process on the memory engine (``revocations_file``), or None.
        self.revocation_file = RevocationFile(settings.revocations_file) if settings.revocations_file else None
        #: In the order they were plugged in: the order of their hooks.
        self.features: list[Feature] = []
        #: Command type -> handler, from every feature.
        self.handlers: dict[type, Handler] = {}
        #: Namespace kind -> its publish, and namespace name -> its event hook, from the features.
        self._publishers: dict[str, PublishHook] = {}
        self._event_hooks: dict[str, EventHook] = {}
        self.connections: dict[str, Connection] = {}
        #: Connected users -> their connections on this node: a tuple of up to
        #: :data:`FEW_DEVICES` (most users have one; a 1-tuple is 48 bytes, a set 216), a set beyond.
        self.users: dict[str, tuple[Connection, ...] | set[Connection]] = {}
        self._history: dict[str, HistoryOptions] = {}
        self._tasks: set[asyncio.Task[None]] = set()
        self.closing = False
        #: Finished connections by close code, for operators and tests.
        self.disconnects: Counter[int] = Counter()
        self.subscriptions = Subscriptions[Connection](self.metrics.sent)
        self.continuity = Continuity(self.subscriptions, engine, self.ask_to_recover, self.spawn)
        self._dirty: list[Connection] = []
        #: When the oldest publication waiting for this loop iteration's flush arrived (0: none), for
        #: the latency histogram: one sample per flush, not one per publication or subscriber.
        self._since = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None

    def use(self, *features: Feature) -> None:
        """Plug features in: their commands, publish and event hooks, and lifecycle hooks.

        A command type, namespace kind or namespace name belongs to one feature: a second
        claim is a wiring mistake, refused with ValueError rather than silently replacing it.
        """
        for feature in features:
            _claim(self.handlers, feature.commands(), feature, "command")
            _claim(self._publishers, feature.publishers(), feature, "publish hook of namespace kind")
            _claim(self._event_hooks, feature.event_hooks(), feature, "event hook of namespace")
            self.features.append(feature)

    def feature(self, kind: type[F]) -> F:
        """The plugged-in feature of type ``kind`` (for tests and tools)."""
        for feature in self.features:
            if isinstance(feature, kind):
                return feature
        raise LookupError(f"no {kind.__name__} feature is plugged in")

    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        await self.engine.start(self)
        if self.revocation_file is not None:  # before serving: no revoked token may slip in meanwhile
            for user, before in (await self.revocation_file.load()).items():
                await self.engine.kv_set_max(revoked_key(user), before)

    # --- connections -----------------------------------------------------

    def add(self, conn: Connection) -> None:
        self.connections[conn.id] = conn

    def track_user(self, conn: Connection, user: str) -> None:
        """Count ``conn`` among ``user``'s connections: control messages for the user reach it."""
        devices = self.users.get(user, ())
        if isinstance(devices, set):
            devices.add(conn)
        elif conn not in devices:
            self.users[user] = (*devices, conn) if len(devices) < FEW_DEVICES else {*devices, conn}

    def untrack_user(self, conn: Connection, user: str) -> None:
        devices = self.users.get(user)
        if devices is None:
            return
        if isinstance(devices, set):
            devices.discard(conn)
        elif conn in devices:
            devices = tuple(c for c in devices if c is not conn)
            self.users[user] = devices
        if not devices:
            del self.users[user]

    def connection_ready(self, conn: Connection, cmd: Connect) -> None:
        """The connect command succeeded: the one log line of a connection's opening."""
        if conn.user:
            self.track_user(conn, conn.user)
        log.info(
            "connection open id=%s user=%s remote=%s codec=%s client=%s/%s",
            conn.id,
            safe(conn.user or "-"),
            safe(conn.remote),
            conn.codec.name,
            safe(cmd.name or "-", CLIENT_NAME_LIMIT),  # the client's own words: escaped, cut short
            safe(cmd.version or "-", CLIENT_NAME_LIMIT),
        )

    def closed_by_server(self, conn: Connection) -> None:
        """Emit ``connection.closed`` (a connected connection the hub closes: its code and reason)."""
        events = self.events
        if events.sinks and events.wants(CLOSED):
            data = {"code": conn.close_code, "reason": conn.close_reason}
            events.emit(events.event(CLOSED, user=conn.user, client=conn.id, data=data))

    async def remove(self, conn: Connection) -> None:
        """Forget a finished connection and drop its subscriptions."""
        self.connections.pop(conn.id, None)
        conn.closed = True
        if conn.user:
            self.untrack_user(conn, conn.user)
        self.disconnects[disconnect_key(conn.close_code)] += 1  # bounded labels: a client picks its code
        log.info(
            "connection closed id=%s user=%s code=%s reason=%s",
            conn.id,
            safe(conn.user or "-"),
            conn.close_code,
            safe(conn.close_reason),
        )
        for channel in list(conn.channels):
            await self.unsubscribe(conn, channel)
        if conn.connected:
            for feature in self.features:
                await feature.on_disconnect(conn)

    async def run_command(self, conn: Connection, command: Command) -> Result | None:
        """Run one command with the handler its type is registered with."""
        handler = self.handlers.get(type(command))
        if handler is None:
            raise CommandError(ErrorCode.UNKNOWN_COMMAND)
        return await handler(conn, command)

    def pipelined(self, command: Command) -> bool:
        """Whether a connected client's ``command`` may start before its earlier commands replied:
        a publish, where the engine keeps concurrent publishes in order and no feature owns the
        namespace's publishes (a feature's publish may wait on other things before the engine) nor
        asks a publish proxy first (its answers may come in any order)."""
        if type(command) is not Publish or not self.engine.pipelines_publishes:
            return False
        ns = self.namespace(command.channel)
        return ns is not None and ns.kind not in self._publishers and not ns.publish_proxy

    # --- writes ----------------------------------------------------------

    def mark_dirty(self, conn: Connection) -> None:
        if not self._dirty:
            assert self._loop is not None
            self._loop.call_soon(self._flush)
        self._dirty.append(conn)

    def _flush(self) -> None:
        self.subscriptions.close_batches()  # this turn's publications are all in; frames are final
        dirty, self._dirty = self._dirty, []
        for conn in dirty:
            conn.flush()
        since, self._since = self._since, 0.0
        if since:
            self.metrics.latency.observe(time.perf_counter() - since)

    # --- fan-out and continuity -------------------------------------------

    def on_publication(self, pub: Publication) -> None:
        """Deliver a publication of the engine to local subscribers, once and in order."""
        if not self._since:
            self._since = time.perf_counter()
        self.continuity.on_publication(pub)
        if not self._dirty:  # nothing to write (held back, or no one live): no sample
            self._since = 0.0

    def ask_to_recover(self, channel: str) -> bool:
        """Tell the channel's local subscribers to resubscribe from their position
        (where the channel keeps history; elsewhere there is nothing to recover).

        Returns whether it asked; they receive nothing more of the channel from now.
        """
        ns = self.namespace(channel)
        if (
            channel not in self.subscriptions.channels
            or ns is None
            or not ns.recovery
            or self.history_options(ns).size == 0
        ):
            return False
        self.ask_to_resubscribe(channel)
        return True

    def ask_to_resubscribe(self, channel: str) -> None:
        """Tell every local subscriber of ``channel`` to subscribe again from where it is
        (an ``unsub`` push with reason :data:`RECOVER`); they receive nothing more of it until then."""
        ch = self.subscriptions.channels.get(channel)
        if ch is not None:
            for conn in ch.members():
                self.server_unsubscribe(conn, channel, RECOVER)

    def on_resync(self) -> None:
        """The engine's delivery was interrupted (its pub/sub reconnected): check every channel."""
        self.continuity.on_resync()
        for feature in self.features:
            feature.on_resync()

    def on_event(self, channel: str, event: bytes) -> None:
        """An ephemeral push (msgpack server message) for the channel's local subscribers.

        A feature may hold events of its namespaces back (live data conflates
        fast-changing keys) with an event hook (:meth:`Feature.event_hooks`), keyed
        by namespace name: a hook that returns True has taken the event.
        """
        ch = self.subscriptions.channels.get(channel)
        if ch is None:
            return
        if self._event_hooks:
            hook = self._event_hooks.get(channel.partition(":")[0] if ":" in channel else "")
            if hook is not None and hook(channel, event):
                return
        self.subscriptions.deliver_event(ch, event)

    def deliver_event(self, channel: str, event: bytes) -> None:
        """Hand an event to the channel's local subscribers now (hooks use it to release events)."""
        ch = self.subscriptions.channels.get(channel)
        if ch is not None:
            self.subscriptions.deliver_event(ch, event)

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
        if channel not in conn.channels:
            return
        self.subscriptions.transition(conn, channel, SubEvent.LEAVE)
        conn.channel_info.pop(channel, None)
        out = Outgoing(conn.codec.encode(Unsubscribed(channel, reason)), conn.codec.binary)
        self.metrics.sent["unsub"].add(1, len(out))
        conn.send(out)
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
            options = self._history[ns.name] = HistoryOptions(size, ttl, ns.history_max_bytes)
        return options

    @property
    def reply_budget(self) -> int:
        """Most bytes of publications one history page or recovery reply carries: never more
        than a quarter of the client's queue, so that one reply cannot make it SLOW."""
        return min(self.settings.history_reply_bytes, self.settings.max_queue_bytes // 4)

    async def publish(
        self,
        channel: str,
        data: bytes,
        ns: Namespace,
        *,
        info: ClientInfo | None = None,
        key: str | None = None,
    ) -> PublishResult:
        """Publish from a client or the server API; a feature may own its namespace kind's publishes.

        Every publish reaches the engine with an id (``key``, scoped to the sender, or one made
        here; :mod:`realtime.publish_ids`): a repeat of ``key`` gets the first result, and the
        engine's own retries never store a publish twice. An engine that lost the answer
        raises :class:`~realtime.engines.errors.OutcomeUnknown` (OUTCOME_UNKNOWN: repeat with
        the same key), never EngineUnavailable, which means "not published".
        """
        if ns.max_message_size is not None and len(data) > ns.max_message_size:
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, f"data is larger than {ns.max_message_size} bytes")
        hook = self._publishers.get(ns.kind)
        if hook is not None:
            result = await hook(channel, data, ns, info=info, key=key)
            self.metrics.published(ns.name)
            if self.events.sinks and self.events.wants(PUBLISHED, ns.name):
                self._published_event(channel, data, ns, info, result)
                await self.events.settle(EVENT_SETTLE)
            return result
        idempotency = publish_idempotency(
            info, key, self.settings.publish_id_window, generate=self.engine.retries_publishes
        )
        history = self.history_options(ns)
        if idempotency is None:
            pos = await self.engine.publish(channel, data, info=info, history=history)
        else:
            pos = (
                await self.engine.publish(channel, data, info=info, history=history, idempotency=idempotency)
            ).position
        self.metrics.published(ns.name)
        result = PublishResult(pos.offset, pos.epoch)
        if self.events.sinks and self.events.wants(PUBLISHED, ns.name):
            self._published_event(channel, data, ns, info, result)
            await self.events.settle(EVENT_SETTLE)
        return result

    def _published_event(
        self, channel: str, data: bytes, ns: Namespace, info: ClientInfo | None, result: PublishResult
    ) -> None:
        """Emit ``message.published``. Its id is made of the channel and the position: a publish
        repeated with its publish id (answered with the first one's result) emits the same id."""
        events = self.events
        digest = hashlib.sha256(f"{channel}\0{result.epoch}\0{result.offset}".encode()).hexdigest()[:32]
        fields: dict[str, Any] = {"offset": result.offset, "epoch": result.epoch, "data": json_value(data)}
        if result.mid:
            fields["mid"] = result.mid
            fields["time"] = result.time
        fields["info"] = json_value(info.info) if info is not None and info.info is not None else None
        user, client = (info.user, info.client) if info is not None else ("", "")
        now = result.time or now_ms()
        size = len(data) + (len(info.info) if info is not None and info.info is not None else 0)
        events.emit(Event(digest, PUBLISHED, now, events.node, channel, ns.name, user, client, fields, size))

    async def history_page(
        self, channel: str, limit: int | None, before: int | None, after: int | None, codec: Codec | None = None
    ) -> HistoryResult:
        """A page of history, oldest first: the newest, or just before/after an offset.

        For a client (``codec``), the page also stops at :attr:`reply_budget` bytes as
        that codec encodes them (``truncated``): it holds the newest publications that
        fit, or with ``after`` the oldest, and the client pages on from there.
        """
        n = MAX_HISTORY_PAGE if limit is None or limit <= 0 else min(limit, MAX_HISTORY_PAGE)
        budget = self.reply_budget if codec is not None else 0
        if after is not None:
            position = (await self.engine.history(channel, limit=0)).position
            since = StreamPosition(after, position.epoch)
            page = await self.engine.history(channel, since=since, limit=n, max_bytes=budget)
            pubs, cut = fit(page.publications, codec, budget)
        else:
            page = await self.engine.history(channel, before=before, limit=n, reverse=True, max_bytes=budget)
            pubs, cut = fit(page.publications, codec, budget)
            pubs.reverse()
        return HistoryResult(tuple(pubs), page.position.offset, page.position.epoch, page.truncated or cut)

    # --- revocation ------------------------------------------------------

    async def revoked(self, identity: Identity) -> bool:
        """Whether the user's tokens issued before a revocation time include this one."""
        raw = await self.engine.kv_get(revoked_key(identity.user))
        if raw is None:
            return False
        return identity.issued_at is None or identity.issued_at < float(raw)

    async def revoke(self, user: str, before: float) -> None:
        """Refuse the user's tokens issued before ``before`` (Unix seconds) and disconnect them.

        The revocation time only grows: a revoke with an earlier ``before`` than one already
        in force changes nothing (``kv_set_max``, atomic across nodes). With ``revocations_file``
        the time is on disk before this returns; when it cannot be written the revocation is in
        force on this process but this raises NOT_AVAILABLE, so the caller retries.
        """
        stored = await self.engine.kv_set_max(revoked_key(user), before)
        await self.control("disconnect", user=user, code=int(CloseCode.UNAUTHORIZED), reason="token revoked")
        if self.revocation_file is not None:
            try:
                await self.revocation_file.record(user, stored)
            except RevocationFileError as exc:
                log.error("%s", exc)
                raise CommandError(ErrorCode.NOT_AVAILABLE, "the revocation could not be stored: retry") from None

    # --- subscriptions ---------------------------------------------------

    async def begin_subscribe(self, conn: Connection, channel: str) -> None:
        """Start delivering ``channel`` to ``conn``, held back until :meth:`end_subscribe`.

        Publications that arrive between this call and ``end_subscribe`` wait so
        that the subscribe reply (with any recovered publications) goes first.
        """
        subs = self.subscriptions
        subs.transition(conn, channel, SubEvent.BEGIN)
        ch = subs.channels[channel]
        if ch.ready is None:
            assert self._loop is not None
            ch.ready = self._loop.create_future()
            try:
                await self.engine.subscribe(channel)
            except BaseException as exc:
                ready, ch.ready = ch.ready, None
                ready.set_exception(exc)
                ready.exception()  # retrieved: waiters get it via await below
                if conn.channels.get(channel) is SubState.JOINING:
                    subs.transition(conn, channel, SubEvent.LEAVE)
                    conn.channel_info.pop(channel, None)
                subs.drop_if_empty(channel, ch)
                raise
            ch.ready.set_result(None)
        else:
            try:
                await asyncio.shield(ch.ready)
            except BaseException:
                if conn.channels.get(channel) is SubState.JOINING:
                    subs.transition(conn, channel, SubEvent.LEAVE)
                    conn.channel_info.pop(channel, None)
                raise
        if conn.channels.get(channel) is not SubState.JOINING:
            # Unsubscribed (by the server, or the connection closed) while the engine
            # subscribed: the unsubscribe could not release the channel then; do it now.
            await self._release(channel, ch)
            raise CommandError(ErrorCode.NOT_SUBSCRIBED, "unsubscribed while subscribing")

    def end_subscribe(self, conn: Connection, channel: str, position: StreamPosition | None) -> None:
        """Deliver what waited (minus what ``position`` says was already sent) and go live."""
        if conn.channels.get(channel) is not SubState.JOINING:
            return  # left meanwhile
        ch = self.subscriptions.channels[channel]
        ahead = position is not None and bool(ch.epoch) and position.epoch == ch.epoch and position.offset > ch.offset
        if position is not None and not ch.epoch and position.epoch:
            if ch.members():
                # They hold a stream that had not started (offset 0 of epoch ""): they need
                # every publication of this epoch, and this reply may be ahead of them.
                ch.epoch = position.epoch
                ahead = position.offset > ch.offset
            else:
                ch.epoch, ch.offset = position.epoch, position.offset  # continuity starts here
        # The reply may have read history ahead of this node's live delivery: the
        # publications up to ``position`` would reach the client twice.
        event = SubEvent.REPLIED_AHEAD if ahead else SubEvent.REPLIED
        waiting = self.subscriptions.transition(conn, channel, event, position)
        sent = self.metrics.sent
        for out in waiting:
            # (Events carry no epoch; the reply's may be "", a stream that has not started.)
            if not out.epoch or position is None or out.epoch != position.epoch or out.offset > position.offset:
                sent["pub" if out.epoch else "event"].add(1, len(out))
                conn.send(out)

    async def unsubscribe(self, conn: Connection, channel: str) -> None:
        """Stop delivering ``channel`` to ``conn``; features learn of it (presence leaves)."""
        if channel in conn.channels:
            self.subscriptions.transition(conn, channel, SubEvent.LEAVE)
            conn.channel_info.pop(channel, None)
            await self._detached(conn, channel)

    async def _detached(self, conn: Connection, channel: str) -> None:
        """The rest of an unsubscribe: the node's engine subscription, then the features."""
        ch = self.subscriptions.channels.get(channel)
        if ch is not None:
            await self._release(channel, ch)
        ns = self.namespace(channel)
        if ns is not None:
            for feature in self.features:
                await feature.on_unsubscribe(conn, ns, channel)

    async def _release(self, channel: str, ch: Channel[Connection]) -> None:
        if ch.ready is not None and not ch.ready.done():
            return  # the subscriber in flight will find it empty and stay subscribed: harmless
        if self.subscriptions.drop_if_empty(channel, ch) and ch.ready is not None:
            try:
                await self.engine.unsubscribe(channel)
            except Exception:
                log_failure(log, "engine unsubscribe of a channel failed")

    def snapshot(self) -> NodeSnapshot:
        """What a metrics scrape reads: gauges from the node's own structures (one pass over connections)."""
        by_codec: Counter[str] = Counter()
        subscriptions = queued = largest = 0
        for conn in self.connections.values():
            by_codec[conn.codec.name] += 1
            subscriptions += len(conn.channels)
            waiting = conn.queued_bytes
            queued += waiting
            largest = max(largest, waiting)
        return NodeSnapshot(
            {codec_label(name): n for name, n in by_codec.items()},
            subscriptions,
            len(self.subscriptions.channels),
            len(self.users),
            queued,
            largest,
            self.disconnects.copy(),
            self.engine.ready,
            self.engine.delivery_health,
        )

    def channel_count(self) -> int:
        return len(self.subscriptions.channels)

    def local_channels(self) -> list[str]:
        """Channels with subscribers on this node."""
        return list(self.subscriptions.channels)

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


def fit(pubs: list[Publication], codec: Codec | None, budget: int) -> tuple[list[Publication], bool]:
    """The first of ``pubs`` whose encodings by ``codec`` fit in ``budget`` bytes (at least one),
    and whether any was left out. The engine read them bounded by their stored size; a
    JSON encoding may be larger (base64, escapes), so the reply is measured as it will be sent."""
    if codec is None or not budget:
        return pubs, False
    total = 0
    for i, pub in enumerate(pubs):
        total += len(codec.encode(pub))
        if i and total > budget:
            return pubs[:i], True
    return pubs, False


def _claim(mine: dict[K, V], theirs: Mapping[K, V], feature: Feature, what: str) -> None:
    """Add ``theirs`` to ``mine``, refusing a key another feature claimed first."""
    for key in theirs:
        if key in mine:
            name = getattr(key, "__name__", key)
            raise ValueError(f"{type(feature).__name__}: the {what} {name} is taken already")
    mine.update(theirs)


async def _wait_all(aws: Iterable[Awaitable[None]]) -> None:
    tasks = [asyncio.ensure_future(a) for a in aws]
    if tasks:
        await asyncio.wait(tasks)
