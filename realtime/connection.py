"""One client connection: its outgoing queue, its subscriptions, its lifecycle.

Only the aiohttp handler task reads from the socket (:meth:`Connection.run`);
writes come from anywhere on the loop through :meth:`Connection.send`, which
queues already-framed bytes and lets the hub flush every dirty connection once
per loop iteration, so a burst of messages for one client leaves in one frame.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import time
from typing import TYPE_CHECKING, Protocol

from aiohttp import WSMsgType, web

from protocol.codec import Codec
from protocol.codes import CloseCode, ErrorCode
from protocol.errors import CommandError, DisconnectError, ProtocolError
from protocol.messages import ClientInfo, Command, Connect, Error, Reply, Result

from .auth import ANONYMOUS, Identity
from .engines.errors import EngineUnavailable, outage_code
from .frames import Outgoing, coalesce
from .subscriptions import SubState

if TYPE_CHECKING:
    from .config import Settings

log = logging.getLogger("realtime.connection")

#: Seconds the closing handshake may take before the socket is aborted.
CLOSE_TIMEOUT = 2.0


class ConnectionHost(Protocol):
    """What a connection needs of the node that owns it (the hub)."""

    @property
    def settings(self) -> Settings: ...

    def mark_dirty(self, conn: Connection) -> None:
        """``conn`` has messages queued: flush it at the end of this loop iteration."""

    async def run_command(self, conn: Connection, command: Command) -> Result | None:
        """Run one command of ``conn``: the result for its reply, or None if the handler replied."""


class Connection:
    """Created by the server's WebSocket handler once the handshake is done; call :meth:`run`."""

    def __init__(
        self,
        hub: ConnectionHost,
        ws: web.WebSocketResponse,
        transport: asyncio.Transport,
        codec: Codec,
        remote: str,
    ) -> None:
        self.hub = hub
        self.ws = ws
        self.transport = transport
        self.codec = codec
        self.remote = remote
        self.id = secrets.token_urlsafe(12)
        self.identity = ANONYMOUS
        self.user = ""
        #: Publisher info attached to what this connection publishes.
        self.info = ClientInfo("", self.id)
        self._expiry: asyncio.TimerHandle | None = None
        self.connected = False  # the connect command succeeded
        self.closed = False  # no more writes: closing or closed
        self.close_code = 0
        self.close_reason = ""
        #: Channels this connection is subscribed to (or subscribing), and where each stands;
        #: written only by ``realtime.subscriptions.Subscriptions.transition``.
        self.channels: dict[str, SubState] = {}
        self._pending: list[Outgoing] = []
        self._pending_bytes = 0
        self._dirty = False
        self._max_queue = hub.settings.max_queue_bytes
        self._close_task: asyncio.Task[None] | None = None

    def authenticate(self, identity: Identity) -> None:
        """Adopt a verified identity (connect or refresh) and watch its expiry.

        A token past ``exp`` plus the grace window, not refreshed, ends the
        connection with TOKEN_EXPIRED (the client refreshes, then reconnects).
        """
        self.identity = identity
        self.user = identity.user
        self.info = ClientInfo(identity.user, self.id, identity.info)
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if identity.expires is not None and not self.closed:  # closed while the token was checked
            delay = identity.expires - time.time() + self.hub.settings.token_grace
            self._expiry = asyncio.get_running_loop().call_later(
                max(0.0, delay), self.close, DisconnectError(CloseCode.TOKEN_EXPIRED)
            )

    # --- writing -------------------------------------------------------------

    def send(self, out: Outgoing) -> None:
        """Queue one message; it leaves at the end of this loop iteration.

        Hot path: called once per subscriber per publication.
        """
        if self.closed:
            return
        self._pending.append(out)
        self._pending_bytes += len(out.payload)
        if not self._dirty:
            self._dirty = True
            self.hub.mark_dirty(self)

    def reply(self, id: int, result: Result | None = None, error: Error | None = None) -> None:
        codec = self.codec
        self.send(Outgoing(codec.encode(Reply(id, result, error)), codec.binary))

    def flush(self) -> None:
        """Write what is queued, coalesced; disconnect the client if it cannot keep up."""
        self._dirty = False
        pending = self._pending
        if not pending or self.closed:
            return
        transport = self.transport
        if transport.is_closing():
            pending.clear()
            return
        backlog = transport.get_write_buffer_size() + self._pending_bytes
        if backlog > self._max_queue:
            pending.clear()
            self._pending_bytes = 0
            self.close(DisconnectError(CloseCode.SLOW))
            return
        for frame in coalesce(pending, self.codec.separator):
            transport.write(frame)
        pending.clear()
        self._pending_bytes = 0

    # --- closing ---------------------------------------------------------

    def close(self, err: DisconnectError) -> None:
        """Send a Disconnect push and close with its code; returns at once, idempotent."""
        if self.closed:
            return
        if self._expiry is not None:
            self._expiry.cancel()
        # Whatever is queued goes first (e.g. the reply that caused this), unless slow.
        if err.code != CloseCode.SLOW:
            self.flush()
            if self.closed:  # that flush overflowed the queue and closed us as SLOW
                return
        self.closed = True
        self.close_code = int(err.code)
        self.close_reason = err.reason
        self._pending.clear()
        if not self.transport.is_closing():
            self.transport.write(Outgoing(self.codec.encode(err.to_push()), self.codec.binary).frame())
        self._close_task = asyncio.ensure_future(self._close_socket(err))

    async def _close_socket(self, err: DisconnectError) -> None:
        try:
            async with asyncio.timeout(CLOSE_TIMEOUT):
                await self.ws.close(code=int(err.code), message=err.reason.encode()[:120])
        except (TimeoutError, ConnectionError):
            pass
        finally:
            if not self.transport.is_closing():
                self.transport.abort()
            elif self.transport.get_write_buffer_size():
                # A peer that does not read would keep the buffer (and us) forever.
                self.transport.abort()

    async def wait_closed(self) -> None:
        if self._close_task is not None:
            await asyncio.shield(self._close_task)

    # --- reading ---------------------------------------------------------

    async def run(self) -> None:
        """Read frames until the socket closes; every frame's commands run in order."""
        ws = self.ws
        # The connect timeout runs until a connect succeeds, not just until the first
        # frame: a refused connect must not leave an unauthenticated socket open.
        deadline = time.monotonic() + self.hub.settings.connect_timeout
        while True:
            try:
                remaining = deadline - time.monotonic()
                if not self.connected and remaining <= 0:
                    raise TimeoutError
                msg = await ws.receive(None if self.connected else remaining)
            except TimeoutError:
                self.close(DisconnectError(CloseCode.CONNECT_TIMEOUT))
                return
            if msg.type is WSMsgType.BINARY or msg.type is WSMsgType.TEXT:
                data = msg.data
                await self.handle_frame(data if isinstance(data, bytes) else data.encode())
                if self.closed:
                    return
            elif msg.type is WSMsgType.ERROR:
                self._note_end(ws.close_code or 1006, _describe(ws.exception()))
                return
            else:  # CLOSE, CLOSING, CLOSED
                self._note_end(ws.close_code or 1000, "client closed")
                return

    def _note_end(self, code: int, reason: str) -> None:
        if self._expiry is not None:
            self._expiry.cancel()
        if not self.close_code:
            self.close_code = code
            self.close_reason = reason
        self.closed = True

    async def handle_frame(self, frame: bytes) -> None:
        try:
            items = self.codec.decode_commands(frame)
        except ProtocolError as exc:
            if not self.connected:
                self.close(DisconnectError(CloseCode.BAD_REQUEST, exc.message))
            else:
                self.reply(0, error=exc.to_error())
            return
        for item in items:
            if self.closed:
                return
            if isinstance(item, ProtocolError):
                if not self.connected:
                    self.close(DisconnectError(CloseCode.BAD_REQUEST, item.message))
                    return
                self.reply(item.id, error=item.to_error())
                continue
            await self.execute(item)

    async def execute(self, command: Command) -> None:
        """Run one command and send its one reply."""
        if not self.connected and not isinstance(command, Connect):
            self.close(DisconnectError(CloseCode.BAD_REQUEST, "connect first"))
            return
        try:
            result = await self.hub.run_command(self, command)
            if result is not None:  # inside the try: a result that cannot be encoded is an INTERNAL error
                self.reply(command.id, result)
        except CommandError as exc:
            self.reply(command.id, error=exc.to_error())
        except EngineUnavailable as exc:  # the one place engine outages become client errors
            self.reply(command.id, error=Error(outage_code(exc), str(exc)))
        except DisconnectError as exc:
            self.close(exc)
        except Exception:
            log.exception("command %s failed on connection %s", type(command).__name__, self.id)
            self.reply(command.id, error=Error(ErrorCode.INTERNAL, "internal error"))


def _describe(exc: BaseException | None) -> str:
    if exc is None:
        return "connection error"
    if isinstance(exc, (TimeoutError, asyncio.TimeoutError)):
        return "no pong"
    return type(exc).__name__
