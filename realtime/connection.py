"""One client connection: its outgoing queue, its subscriptions, its lifecycle.

Only the aiohttp handler task reads from the socket (:meth:`Connection.run`);
writes come from anywhere on the loop through :meth:`Connection.send`, which
queues already-framed bytes and lets the hub flush every dirty connection once
per loop iteration, so a burst of messages for one client leaves in one frame.

The transport holds at most about :data:`WRITE_BUFFER` bytes of a connection's
frames; what does not fit waits in the connection's own queue, which is what
gets dropped when the client is too slow (4002), so the Disconnect push and the
close frame follow at most that much.

**Heartbeat, connect deadline and token expiry.** One entry per connection in
the hub's :class:`~realtime.timers.TimerWheel` (no ``TimerHandle`` of its own),
filed again from its own callback, drives all three (instead of aiohttp's
``heartbeat=``, whose pong timeout ends in 1006 without a Disconnect push, and
whose receive timeout restarts on every ping or pong). Received bytes only
store a float (``ClientFrames.last_seen``), so the timer is never moved per
read; it fires twice per ``ping_interval`` (the ping, then the pong deadline).

**Commands run in order, publishes overlap.** Where the engine can keep their
order (``Engine.pipelines_publishes``: one Redis), a plain publish (no feature
owns its namespace's publishes) is started and the next command is read and
started at once, so a client with 20 publishes in flight keeps 20 in Redis, not
one. What each kind of command waits for:

=====================  ===========================================================
command                starts when
=====================  ===========================================================
pipelined publish      at once: the engine receives it after the connection's
                       earlier publishes; at most :data:`MAX_IN_FLIGHT` at a time
                       (the next one waits for the oldest, and no frame is read)
any other command      every earlier command has replied (so it sees what they
                       did: a publish after a subscribe sees the subscription,
                       and a subscribe after a publish reads history after it)
refusal, bad command   every earlier command has replied
=====================  ===========================================================

Replies leave in command order: a finished publish's reply waits for the
replies of the commands before it. A publish that ends the connection
(DisconnectError) closes it in its turn, after the earlier replies. When the
socket closes, publishes in flight are let finish (they were sent), their
replies dropped; a cancelled connection task cancels them (one not yet sent is
not published).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Protocol

from aiohttp import WSMsgType, web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.http import WebSocketError, WebSocketWriter
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from protocol.codec import Codec
from protocol.codes import CloseCode, ErrorCode
from protocol.errors import CommandError, DisconnectError, ProtocolError
from protocol.messages import ClientInfo, Command, Connect, Error, Reply, Result

from . import audit
from .auth import ANONYMOUS, Identity
from .engines.errors import EngineError, EngineUnavailable, client_error
from .frames import PING_FRAME, ClientFrames, Outgoing, coalesce
from .metrics import Metrics
from .subscriptions import SubState
from .timers import TimerWheel

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("realtime.connection")

#: Seconds the closing handshake may take before the socket is aborted (at most
#: half a ping interval: as long as a peer has to answer a ping).
CLOSE_TIMEOUT = 2.0
#: Bytes of one connection's frames the transport may hold; the rest waits in the
#: connection's queue (asyncio's default high-water mark, set explicitly).
WRITE_BUFFER = 64 * 1024
#: A frame's commands give the loop a turn at least this often (other clients' pings,
#: publications); more often when their replies fill the transport.
YIELD_EVERY = 8
#: Most pipelined commands of one connection in flight; the next waits for the oldest
#: (and no frame is read meanwhile), so a slow engine bounds what one client queues.
MAX_IN_FLIGHT = 32


def _close_reason(reason: str) -> bytes:
    """``reason`` for a close frame: at most 120 bytes, cut on a character (it must be UTF-8;
    the app's backend chooses some reasons)."""
    return reason.encode()[:120].decode(errors="ignore").encode()


def close_timeout(ping_interval: float) -> float:
    """Seconds the closing handshake may take before the socket is aborted."""
    return min(CLOSE_TIMEOUT, ping_interval / 2)


#: The path the hub serves WebSockets on (routed by realtime.server).
WS_PATH = "/ws"


class UpgradedRequest:
    """What a WebSocketResponse reads of its request once upgraded: the transport (to close it after
    the closing handshake), through the protocol as ``BaseRequest.transport`` does, and the method
    and path its ``repr`` shows. Holds none of the request's head (its headers and URL, ~2 KiB a
    connection): every upgrade the hub serves is a GET of :data:`WS_PATH`."""

    __slots__ = ("protocol",)
    method = "GET"
    path = WS_PATH

    def __init__(self, protocol: RequestHandler) -> None:
        self.protocol = protocol

    @property
    def transport(self) -> asyncio.Transport | None:
        return self.protocol.transport


class HubWebSocket(web.WebSocketResponse):
    """aiohttp's ``WebSocketResponse`` with its frame parser behind :class:`~realtime.frames.ClientFrames`.

    The parser is wrapped where aiohttp installs it, before any byte reaches it
    (bytes that came with the upgrade request included), so no unmasked frame
    slips through and ``frames.last_seen`` counts from the upgrade.
    """

    frames: ClientFrames | None = None
    _detached = False

    def detach(self, protocol: RequestHandler) -> None:
        """The handler returns while the WebSocket stays open (``realtime.server.hand_over``):
        aiohttp's ``write_eof`` after a handler, which closes a WebSocket, does nothing, and the
        request is let go for an :class:`UpgradedRequest` (what aiohttp still reads of it)."""
        self._detached = True
        self._req = UpgradedRequest(protocol)  # type: ignore[assignment]

    async def write_eof(self) -> None:  # type: ignore[override]
        if not self._detached:
            await super().write_eof()

    def _post_start(self, request: BaseRequest, protocol: str | None, writer: WebSocketWriter) -> None:
        handler = request.protocol
        # Bytes that arrived with the upgrade: aiohttp feeds them to the parser it installs; we
        # feed them through the guard instead.
        tail, handler._message_tail = handler._message_tail, b""
        super()._post_start(request, protocol, writer)
        assert handler._payload_parser is not None and self._reader is not None
        clock = asyncio.get_running_loop().time
        frames = self.frames = ClientFrames(handler._payload_parser, self._reader, clock)
        handler._payload_parser = frames
        if tail:
            frames.feed_data(tail)


#: A connection is flooding when its refused commands come faster than this many times its
#: ``command_rate`` (beyond a ``command_burst`` of them): clients that honour ``retry_after``,
#: even several commands waiting at once, stay far below it.
FLOOD_FACTOR = 10.0


class CommandBudget:
    """A token bucket over one connection's commands: ``rate`` a second on average, ``burst`` at once.

    O(1) float math per command, nothing allocated. A refused command costs no token
    (so commands waiting on the advice are not pushed further away by each other's
    retries), but counts as a *strike*; strikes drain at ``FLOOD_FACTOR * rate`` a
    second, and more than ``burst`` of them is a flood (:meth:`flooding`).

    Refused commands wait in a virtual line: each is told to come back when a token will be
    there for it, ``1 / rate`` after the one refused before it (``line``), not all at the next
    token, which the first of them to come back would take, the others being refused again.
    """

    __slots__ = ("burst", "line", "rate", "stamp", "strikes", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.strikes = 0.0
        self.stamp = now
        self.line = now  # when the token of the last refused command will be there

    def take(self, now: float) -> float:
        """Spend one token: 0.0 when the command may run, else the seconds until one is there for it."""
        refill = (now - self.stamp) * self.rate
        self.stamp = now
        if self.strikes:
            strikes = self.strikes - refill * FLOOD_FACTOR
            self.strikes = strikes if strikes > 0.0 else 0.0
        tokens = self.tokens + refill
        if tokens > self.burst:
            tokens = self.burst
        if tokens >= 1.0:
            self.tokens = tokens - 1.0
            return 0.0
        self.tokens = tokens
        self.strikes += 1.0
        # The next token, or the one after those promised to the commands refused before.
        line = self.line + 1.0 / self.rate
        first = now + (1.0 - tokens) / self.rate
        self.line = line if line > first else first
        return self.line - now

    def flooding(self) -> bool:
        """More refused commands than the advice explains: close the connection (4010)."""
        return self.strikes > self.burst


class ReceiveBudget:
    """A token bucket over the bytes one connection sends: ``rate`` a second after ``burst``.

    A frame over it is not refused: :meth:`take` says how long to wait before decoding it,
    and so before reading the next one, which slows the client through TCP's own
    back-pressure. Decoding costs the hub per byte (64 KiB of tiny msgpack values take
    milliseconds), which the command budget, a token per command, does not see.
    """

    __slots__ = ("burst", "rate", "stamp", "tokens")

    def __init__(self, rate: float, burst: int, now: float) -> None:
        self.rate = rate
        self.burst = float(burst)
        self.tokens = float(burst)
        self.stamp = now

    def take(self, size: int, now: float) -> float:
        """Spend ``size`` bytes: the seconds to wait before decoding them (0.0: at once). The
        bucket may go below zero by one frame; the wait brings it back."""
        tokens = self.tokens + (now - self.stamp) * self.rate
        if tokens > self.burst:
            tokens = self.burst
        tokens -= size
        self.tokens = tokens
        self.stamp = now
        return -tokens / self.rate if tokens < 0.0 else 0.0


class ConnectionHost(Protocol):
    """What a connection needs of the node that owns it (the hub)."""

    @property
    def settings(self) -> Settings: ...

    @property
    def metrics(self) -> Metrics: ...

    def mark_dirty(self, conn: Connection) -> None:
        """``conn`` has messages queued: flush it at the end of this loop iteration."""

    async def run_command(self, conn: Connection, command: Command) -> Result | None:
        """Run one command of ``conn``: the result for its reply, or None if the handler replied."""

    @property
    def timers(self) -> TimerWheel:
        """The wheel that times every connection's deadlines."""

    def pipelined(self, command: Command) -> bool:
        """Whether ``command`` (of a connected client) may start before the earlier ones replied."""

    def closed_by_server(self, conn: Connection) -> None:
        """The hub is closing connected ``conn`` (its ``close_code`` and ``close_reason`` are set)."""


class _InFlight:
    """A pipelined command: its task, and what it will send in its turn."""

    __slots__ = ("close", "replies", "task")

    def __init__(self) -> None:
        self.replies: list[Outgoing] = []
        self.close: DisconnectError | None = None
        self.task: asyncio.Future[None] | None = None


class Connection:
    """Created by the server's WebSocket handler once the handshake is done; call :meth:`run`."""

    # Slots: fan-out reads these attributes once per subscriber, and a slot read stays cheap
    # however many there are (an instance dict past 30 keys stops sharing them between
    # connections: fan-out got 14% dearer under callgrind); and each connection is smaller.
    __slots__ = (
        "__weakref__",
        "_budget",
        "_close_task",
        "_connect_deadline",
        "_dirty",
        "_drain_task",
        "_expiry",
        "_frames",
        "_in_flight",
        "_in_frame",
        "_intake",
        "_max_queue",
        "_next_ping",
        "_pending",
        "_pending_bytes",
        "_ping_sent",
        "_writer",
        "audit_records",
        "channel_info",
        "channels",
        "close_code",
        "close_reason",
        "closed",
        "codec",
        "connected",
        "hub",
        "id",
        "identity",
        "info",
        "proxied",
        "proxy_headers",
        "remote",
        "timer_slot",
        "transport",
        "user",
        "ws",
    )

    def __init__(
        self,
        hub: ConnectionHost,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        codec: Codec,
        remote: str,
        writer: AbstractStreamWriter | None = None,
        frames: ClientFrames | None = None,
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.transport = transport
        self.codec = codec
        self.remote = remote
        self._writer = writer  # its drain() waits until the transport has room again
        self._frames = frames  # when the peer last sent anything
        self.id = secrets.token_urlsafe(12)
        self.identity = ANONYMOUS
        self.proxied = False  # the connect proxy let it in (the refresh proxy extends it)
        #: Headers of the upgrade for the connect proxy (the ``proxy_headers`` allow-list).
        self.proxy_headers: dict[str, str] = {}
        self.user = ""
        #: Publisher info attached to what this connection publishes.
        self.info = ClientInfo("", self.id)
        #: Loop time at which its token (plus the grace window) expires; None: never.
        self._expiry: float | None = None
        self.connected = False  # the connect command succeeded
        self.closed = False  # no more writes: closing or closed
        self.close_code = 0
        self.close_reason = ""
        #: Channels this connection is subscribed to (or subscribing), and where each stands;
        #: written only by ``realtime.subscriptions.Subscriptions.transition``.
        self.channels: dict[str, SubState] = {}
        #: Channel -> the info (msgpack) the subscribe proxy gave this subscription: it stands
        #: for ``identity.info`` in that channel's presence, joins and publications.
        self.channel_info: dict[str, bytes] = {}
        self._pending: list[Outgoing] = []
        self._pending_bytes = 0
        self._dirty = False
        self._max_queue = hub.settings.max_queue_bytes
        self._close_task: asyncio.Task[None] | None = None
        self._drain_task: asyncio.Task[None] | None = None
        # The clock (see the module's docstring), started by run(): the wheel slot it is filed
        # under (None: not filed, or being called back).
        self.timer_slot: int | None = None
        self._connect_deadline = 0.0
        self._next_ping = 0.0
        self._ping_sent: float | None = None  # loop time of the ping not answered yet
        self._in_frame = False  # run() is running a frame's commands
        #: Pipelined commands not replied yet, oldest first (see the module's docstring); made
        #: by the first one (most connections never publish).
        self._in_flight: deque[_InFlight] | None = None
        #: Refusals written to the audit log for it (realtime.audit caps them per connection).
        self.audit_records = 0
        settings = hub.settings
        self._budget = (
            CommandBudget(settings.command_rate, settings.command_burst, time.monotonic())
            if settings.command_rate > 0
            else None
        )
        self._intake = (
            ReceiveBudget(settings.receive_rate, settings.receive_burst, time.monotonic())
            if settings.receive_rate > 0
            else None
        )

    def authenticate(self, identity: Identity) -> None:
        """Adopt a verified identity (connect or refresh) and watch its expiry.

        A token past ``exp`` plus the grace window, not refreshed, ends the
        connection with TOKEN_EXPIRED (the client refreshes, then reconnects).
        """
        self.identity = identity
        self.user = identity.user
        self.info = ClientInfo(identity.user, self.id, identity.info)
        self._expiry = None
        if identity.expires is not None and not self.closed:  # closed while the token was checked
            delay = identity.expires - time.time() + self.hub.settings.token_grace
            loop = asyncio.get_running_loop()
            now = loop.time()
            self._expiry = now + max(0.0, delay)
            if self.timer_slot is not None:  # the clock runs: file it by its new next deadline
                self._arm(now)

    # --- writing -------------------------------------------------------------

    def send(self, out: Outgoing) -> None:
        """Queue one message; it leaves at the end of this loop iteration.

        Hot path: called once per subscriber per publication (once per burst of a
        channel's publications, which join one batch: :meth:`~realtime.frames.Outgoing.open_batch`).
        """
        if self.closed:
            return
        pending = self._pending
        if pending:
            last = pending[-1]
            if last.open:  # a batch: what joins it later would overtake ``out``; take a copy
                pending[-1] = last.detach(self)
        size = self._pending_bytes + out.size
        if size > self._max_queue:
            # Over the bound now, not at the next flush: the backlog never grows past it.
            self.close(DisconnectError(CloseCode.SLOW))  # drops the backlog
            return
        pending.append(out)
        self._pending_bytes = size
        if not self._dirty:
            self._dirty = True
            self.hub.mark_dirty(self)

    @property
    def queued_bytes(self) -> int:
        """Bytes waiting for the client: in this connection's queue and in its transport's buffer."""
        return sum(out.size for out in self._pending) + self.transport.get_write_buffer_size()

    def reply(self, id: int, result: Result | None = None, error: Error | None = None) -> None:
        self.send(self._encode_reply(id, result, error))

    def _encode_reply(self, id: int, result: Result | None, error: Error | None) -> Outgoing:
        codec = self.codec
        out = Outgoing(codec.encode(Reply(id, result, error)), codec.binary)
        self.hub.metrics.replied(len(out.payload), error)
        return out

    def flush(self) -> None:
        """Write what is queued, coalesced; disconnect the client if it cannot keep up.

        The client's backlog is what the transport holds plus what waits here; over
        ``max_queue_bytes`` it is closed as SLOW. The transport gets frames while it
        holds less than :data:`WRITE_BUFFER`; the rest waits here until it drains.
        """
        self._dirty = False
        pending = self._pending
        if not pending or self.closed:
            return
        transport = self.transport
        if transport.is_closing() or self.ws.closed:  # no data after aiohttp's close frame (1002, 1009)
            pending.clear()
            self._pending_bytes = 0
            return
        # Batches queued here may have grown since (publications joined them): count again.
        single = pending[0] if len(pending) == 1 else None
        if single is not None:
            size = single.size
        else:
            size = 0
            for out in pending:
                size += out.size
        buffered = transport.get_write_buffer_size()
        if buffered + size > self._max_queue:
            self.close(DisconnectError(CloseCode.SLOW))  # drops the backlog
            return
        if self._drain_task is None and size <= WRITE_BUFFER - buffered:  # the hot path: all fits
            if single is not None:
                transport.write(single.frame())
            else:
                transport.writelines(coalesce(pending, self.codec.separator))
            pending.clear()
            self._pending_bytes = 0
            return
        self._pending_bytes = size
        if self._drain_task is not None:
            return  # the transport is full: the drain flushes again
        self._write(bounded=True)

    def _write(self, bounded: bool) -> None:
        """Hand queued messages to the transport: all of them, or (``bounded``) until it is full."""
        pending, transport, separator = self._pending, self.transport, self.codec.separator
        if not bounded or self._pending_bytes <= WRITE_BUFFER - transport.get_write_buffer_size():
            transport.writelines(coalesce(pending, separator))
            pending.clear()
            self._pending_bytes = 0
            return
        protocol = transport.get_protocol()
        start, count = 0, len(pending)
        while start < count and not getattr(protocol, "writing_paused", False):
            room = WRITE_BUFFER - transport.get_write_buffer_size()
            stop, size = start, 0
            while stop < count and (stop == start or size < room):  # at least one message
                size += pending[stop].size
                stop += 1
            transport.writelines(coalesce(pending[start:stop], separator))
            self._pending_bytes -= size
            start = stop
        del pending[:start]
        if pending and self._writer is not None:
            self._drain_task = asyncio.ensure_future(self._drain(self._writer))

    async def _drain(self, writer: AbstractStreamWriter) -> None:
        try:
            await writer.drain()
        except Exception:  # the connection is gone; run() ends and cleans up
            return
        finally:
            self._drain_task = None
        self.flush()

    # --- closing ---------------------------------------------------------

    def close(self, err: DisconnectError) -> None:
        """Send a Disconnect push and close with its code; returns at once, idempotent.

        What is queued goes first (e.g. the reply that caused this), unless the
        close is SLOW: then the queue is dropped (it stops counting against the
        hub), and the push and the close frame follow at most the
        :data:`WRITE_BUFFER` bytes the transport holds.
        """
        if self.closed:
            return
        self._stop_clock()
        if err.code != CloseCode.SLOW:
            self.flush()
            if self.closed:  # that flush overflowed the queue and closed us as SLOW
                return
            if self._pending:  # waiting for the transport to drain: hand it everything now
                self._write(bounded=False)
        self.closed = True
        self.close_code = int(err.code)
        self.close_reason = err.reason
        audit.disconnected(self, err)
        if self.connected:
            self.hub.closed_by_server(self)
        self._pending.clear()
        self._pending_bytes = 0
        # A drain task left running ends when the transport drains or is lost (cancelling it
        # would cancel aiohttp's drain waiter, which the close below shares).
        if not self.transport.is_closing():
            push = Outgoing(self.codec.encode(err.to_push()), self.codec.binary)
            self.hub.metrics.sent["disconnect"].add(1, len(push.payload))
            self.transport.write(push.frame())
        self._close_task = asyncio.ensure_future(self._close_socket(err))

    async def _close_socket(self, err: DisconnectError) -> None:
        transport = self.transport
        try:
            async with asyncio.timeout(close_timeout(self.hub.settings.ping_interval)):
                # No high-water mark: aiohttp's drain after the close frame then waits until every
                # byte (the push and the close frame included) has left the transport.
                if not transport.is_closing():
                    transport.set_write_buffer_limits(high=0)
                await self.ws.close(code=int(err.code), message=_close_reason(err.reason))
        except (TimeoutError, ConnectionError):
            pass
        finally:
            if not transport.is_closing():
                transport.abort()
            elif transport.get_write_buffer_size():
                # A peer that does not read would keep the buffer (and us) forever.
                transport.abort()

    async def wait_closed(self) -> None:
        if self._close_task is not None:
            await asyncio.shield(self._close_task)

    # --- reading ---------------------------------------------------------

    async def run(self) -> None:
        """Read frames until the socket closes; every frame's commands run in order."""
        ws = self.ws
        self._start_clock()
        try:
            while True:
                msg = await ws.receive()
                if msg.type is WSMsgType.BINARY or msg.type is WSMsgType.TEXT:
                    data = msg.data
                    intake = self._intake
                    if intake is not None and (wait := intake.take(len(data), time.monotonic())):
                        self.hub.metrics.rate_limited("bytes")
                        await asyncio.sleep(wait)  # at most max_frame_size / receive_rate
                        if self.closed:
                            break
                    self._in_frame = True
                    try:
                        await self.handle_frame(data if isinstance(data, bytes) else data.encode())
                    finally:
                        self._in_frame = False
                    if self._frames is not None and self._frames.failing:
                        # aiohttp closes at the bad frame that follows: the replies leave first, those
                        # of pipelined commands too. (Not after every frame: replies leave with the
                        # loop's one flush, coalesced.)
                        await self._settle(0)
                        if self._pending:
                            self.flush()
                    if not self.connected and not self.closed and self._past_connect_deadline():
                        # The deadline passed while this frame ran (a slow, refused connect).
                        self.close(DisconnectError(CloseCode.CONNECT_TIMEOUT))
                    if self.closed:
                        return
                elif msg.type is WSMsgType.ERROR:
                    exc = msg.data
                    code = exc.code if isinstance(exc, WebSocketError) else ws.close_code or 1006
                    self._note_end(code, _describe(exc))
                    return
                else:  # CLOSE, CLOSING, CLOSED
                    self._note_end(ws.close_code or 1000, "client closed")
                    return
        except asyncio.CancelledError:
            for entry in self._in_flight or ():
                assert entry.task is not None
                entry.task.cancel()
            raise
        finally:
            self._stop_clock()
            if self._in_flight:
                # Sent to the engine: let them finish, as a command in progress always did.
                await self._settle(0)

    # --- the clock: connect deadline and heartbeat -----------------------------

    def _start_clock(self) -> None:
        settings = self.hub.settings
        now = asyncio.get_running_loop().time()
        opened = now if self._frames is None else self._frames.opened  # the upgrade
        self._connect_deadline = opened + settings.connect_timeout
        self._next_ping = opened + settings.ping_interval
        self.transport.set_write_buffer_limits(high=WRITE_BUFFER)
        self._arm(now)

    def _stop_clock(self) -> None:
        self.timer_slot = None  # TimerWheel.cancel: its entry is skipped when its slot fires
        self._expiry = None

    def _past_connect_deadline(self) -> bool:
        return asyncio.get_running_loop().time() >= self._connect_deadline

    def _arm(self, now: float) -> None:
        when = self._next_ping
        if self._ping_sent is not None:
            when = min(when, self._ping_sent + self.hub.settings.ping_interval / 2)
        if not self.connected and self._connect_deadline > now:  # once past, run() checks it
            when = min(when, self._connect_deadline)
        if self._expiry is not None:
            when = min(when, self._expiry)
        self.hub.timers.schedule(self, when)

    def on_timer(self) -> None:
        """The connection's one timer: token expiry, connect deadline, pong deadline, next ping."""
        if self.closed:
            return
        now = asyncio.get_running_loop().time()
        if self._expiry is not None and now >= self._expiry:
            # Past exp plus the grace window, not refreshed: the client refreshes, then reconnects.
            self.close(DisconnectError(CloseCode.TOKEN_EXPIRED))
            return
        if not self.connected and now >= self._connect_deadline and not self._in_frame:
            # Whatever arrived meanwhile (pings, pongs, refused connects): no connect, no connection.
            # (A frame being run is let finish: run() checks the deadline after it.)
            self.close(DisconnectError(CloseCode.CONNECT_TIMEOUT))
            return
        interval = self.hub.settings.ping_interval
        sent = self._ping_sent
        if sent is not None:
            if self._frames is None or self._frames.last_seen >= sent:
                self._ping_sent = None  # answered: a pong, or any other bytes
            elif now >= sent + interval / 2:
                self.close(DisconnectError(CloseCode.STALE))
                return
        if now >= self._next_ping and not self.transport.is_closing():
            self.transport.write(PING_FRAME)
            self._ping_sent = now
            self._next_ping = now + interval
        self._arm(now)

    def _note_end(self, code: int, reason: str) -> None:
        self._stop_clock()
        if not self.close_code:
            self.close_code = code
            self.close_reason = reason
        self.closed = True

    async def handle_frame(self, frame: bytes) -> None:
        budget = self._budget
        self.hub.metrics.frame(self.codec.name, len(frame))
        try:
            items = self.codec.decode_commands(frame)
        except ProtocolError as exc:
            self.hub.metrics.invalid_command()
            await self._settle(0)  # its error reply follows the earlier replies
            if self.closed:
                return
            if not self.connected:
                self.close(DisconnectError(CloseCode.BAD_REQUEST, exc.message))
            elif budget is not None and (wait := budget.take(time.monotonic())):
                self._refuse(exc, budget, wait)  # a frame that does not decode costs one token
            else:
                self.reply(0, error=exc.to_error())
            return
        for n, item in enumerate(items):
            if self.closed:
                return
            if n:
                await self._between_commands(n)
                if self.closed:
                    return
            if budget is not None and (wait := budget.take(time.monotonic())):
                if self._in_flight:
                    await self._settle(0)
                    if self.closed:
                        return
                self._refuse(item, budget, wait)
                continue
            if self.connected and not isinstance(item, ProtocolError) and self.hub.pipelined(item):
                await self._start(item)
                continue
            if self._in_flight:
                await self._settle(0)  # every other command (and refusal) waits for the earlier replies
                if self.closed:
                    return
            if isinstance(item, ProtocolError):
                self.hub.metrics.invalid_command()
                if not self.connected:
                    self.close(DisconnectError(CloseCode.BAD_REQUEST, item.message))
                    return
                self.reply(item.id, error=item.to_error())
                continue
            await self.execute(item)

    async def _between_commands(self, n: int) -> None:
        """Let the loop run between a frame's commands, so that one frame cannot hold it.

        Replies that filled the transport are waited out first: a frame's next command
        runs only once the client has read its earlier replies (memory stays bounded,
        and a reading client is never made SLOW by its own frame). Otherwise the loop
        gets a turn every :data:`YIELD_EVERY` commands (so replies still coalesce).
        """
        if self._pending_bytes > WRITE_BUFFER:
            self.flush()
        while self._drain_task is not None and not self.closed:
            await asyncio.shield(self._drain_task)
        if n % YIELD_EVERY == 0:
            await asyncio.sleep(0)

    def _refuse(self, item: Command | ProtocolError, budget: CommandBudget, wait: float) -> None:
        """Over the command budget: TOO_MANY_REQUESTS with the wait, or 4010 for a flood."""
        self.hub.metrics.rate_limited("commands")
        if budget.flooding():
            self.close(DisconnectError(CloseCode.TOO_MANY_REQUESTS))
            return
        error = CommandError(ErrorCode.TOO_MANY_REQUESTS, "too many commands", retry_after=wait)
        self.reply(item.id, error=error.to_error())

    # --- pipelined commands ------------------------------------------------

    async def _start(self, command: Command) -> None:
        """Start a pipelined command; it replies in its turn (:meth:`_release`)."""
        in_flight = self._in_flight
        if in_flight is None:
            in_flight = self._in_flight = deque()
        elif len(in_flight) >= MAX_IN_FLIGHT:
            await self._settle(MAX_IN_FLIGHT - 1)
            if self.closed:
                return
        entry = _InFlight()
        # Tasks start in creation order and this one reaches the engine before it first
        # waits: the engine receives the connection's publishes in command order.
        entry.task = task = asyncio.ensure_future(self.execute(command, entry))
        in_flight.append(entry)
        task.add_done_callback(self._release)

    def _release(self, _: object = None) -> None:
        """Send the replies of the oldest finished commands, up to the first one still running."""
        in_flight = self._in_flight
        while in_flight:
            entry = in_flight[0]
            assert entry.task is not None
            if not entry.task.done():
                return
            in_flight.popleft()
            for out in entry.replies:
                self.send(out)
            if entry.close is not None:
                self.close(entry.close)

    async def _settle(self, keep: int) -> None:
        """Wait until at most ``keep`` pipelined commands are in flight, their replies sent."""
        in_flight = self._in_flight
        while in_flight is not None and len(in_flight) > keep:
            task = in_flight[0].task
            assert task is not None
            await asyncio.wait((task,))
            self._release()

    async def execute(self, command: Command, entry: _InFlight | None = None) -> None:
        """Run one command and send its one reply (into ``entry`` when pipelined)."""
        self.hub.metrics.command(type(command))
        if not self.connected and not isinstance(command, Connect):
            self.close(DisconnectError(CloseCode.BAD_REQUEST, "connect first"))
            return
        answer: Callable[[int, Result | None, Error | None], None] = (
            self.reply if entry is None else self._answer(entry)
        )
        try:
            result = await self.hub.run_command(self, command)
            if result is not None:  # inside the try: a result that cannot be encoded is an INTERNAL error
                answer(command.id, result, None)
        except CommandError as exc:
            answer(command.id, None, exc.to_error())
            audit.refused(self, command, exc)  # an audit record when it refused a right
        except EngineError as exc:  # the one place engine errors become client errors here
            if not isinstance(exc, EngineUnavailable):
                log.error("command %s failed on connection %s: %r", type(command).__name__, self.id, exc)
            answer(command.id, None, client_error(exc).to_error())
        except DisconnectError as exc:
            audit.refused(self, command, exc)
            if entry is None:
                self.close(exc)
            else:
                entry.close = exc
        except Exception:
            log.exception("command %s failed on connection %s", type(command).__name__, self.id)
            answer(command.id, None, Error(ErrorCode.INTERNAL, "internal error"))

    def _answer(self, entry: _InFlight) -> Callable[[int, Result | None, Error | None], None]:
        def answer(id: int, result: Result | None, error: Error | None) -> None:
            entry.replies.append(self._encode_reply(id, result, error))

        return answer


def _describe(exc: object) -> str:
    if isinstance(exc, WebSocketError):
        return str(exc) or type(exc).__name__
    if isinstance(exc, BaseException):
        return type(exc).__name__
    return "connection error"
