"""The Python client SDK: one reconnecting connection to a realtime hub.

Usage::

    async with Client("ws://localhost:8000/ws", token) as client:
        sub = await client.subscribe("chat:1")
        await client.publish("chat:1", {"text": "hi"})
        async for pub in sub:
            print(pub.offset, pub.data)

The client keeps one WebSocket open. When it drops (network loss, hub restart,
a close code outside 4500-4999, or a Disconnect push with ``reconnect=True``),
it reconnects with exponential backoff and full jitter
(:func:`realtime.backoff.backoff`), then resubscribes every channel with
``since`` = the last position it saw, so the hub sends what was missed; those
publications come out of the subscription's iterator first, in order, with
nothing delivered twice. When the hub says not to come back (close code
4500-4999 or ``Disconnect(reconnect=False)``), the client stops: pending and
later calls raise :class:`ConnectionClosed`.

Each subscription buffers publications in an **unbounded** queue. The reader
task must never wait on a slow consumer, or the replies and pushes for every
other subscription would stall behind it; the hub already bounds what it sends
per client and disconnects clients it cannot keep up with. Keep iterating each
subscription you hold (``len(sub)`` tells what is waiting), or unsubscribe.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import msgpack  # type: ignore[import-untyped, unused-ignore]
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from protocol import codec_for, messages as m
from protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, Codec
from protocol.codes import CloseCode, ErrorCode, should_reconnect
from protocol.errors import ProtocolError, RealtimeError
from protocol.messages import ClientInfo, StreamPosition

from . import __version__
from .backoff import backoff

__all__ = [
    "Client",
    "ClientError",
    "ClientInfo",
    "CommandTimeout",
    "ConnectionClosed",
    "ConnectionLost",
    "Publication",
    "ReplyError",
    "StreamPosition",
    "Subscription",
]

log = logging.getLogger("realtime.client")

_SUBPROTOCOLS: Final = {"msgpack": MSGPACK_SUBPROTOCOL, "json": JSON_SUBPROTOCOL}
_ABNORMAL: Final = 1006  # WebSocket: closed without a close frame
#: Connect refusals that mean a bad token: close code 4501 rather than 4500.
_AUTH_ERRORS: Final = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED, ErrorCode.PERMISSION_DENIED})

_R = TypeVar("_R", bound=m.Result)


# --- errors -----------------------------------------------------------------


class ClientError(RealtimeError):
    """Root of the errors the client SDK raises."""


class ReplyError(ClientError):
    """The hub refused a command; ``code`` is an :class:`ErrorCode` (a plain int if unknown)."""

    def __init__(self, code: int, message: str = "") -> None:
        try:
            self.code: ErrorCode | int = ErrorCode(code)
        except ValueError:
            self.code = code
        name = self.code.name.lower().replace("_", " ") if isinstance(self.code, ErrorCode) else ""
        super().__init__(message or name or f"error {code}")

    @property
    def message(self) -> str:
        return str(self)

    @property
    def temporary(self) -> bool:
        """True when the same command may succeed if retried later."""
        return isinstance(self.code, ErrorCode) and self.code.temporary


class ConnectionClosed(ClientError):
    """The client stopped for good; every pending and later call raises this.

    ``code`` is the hub's close code (4500-4999: do not reconnect), 1000 after
    :meth:`Client.close`, or 1006 when the first connection could not be made.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionLost(ClientError):
    """The connection dropped while this command waited for its reply.

    The hub may or may not have run it; the client is reconnecting on its own.
    Only :meth:`Client.publish` raises this: the other commands are retried.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection lost: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class CommandTimeout(ClientError, TimeoutError):
    """No reply (or no connection to send on) within ``command_timeout``."""


# --- publications and subscriptions ----------------------------------------


@dataclass(frozen=True, slots=True)
class Publication:
    """One message of a channel: ``data`` is the publisher's value, unpacked."""

    channel: str
    data: Any
    offset: int
    epoch: str
    info: ClientInfo | None = None

    @property
    def position(self) -> StreamPosition:
        return StreamPosition(self.offset, self.epoch)


class _End:
    """Queue marker: the iterator stops, raising ``error`` if set."""

    __slots__ = ("error",)

    def __init__(self, error: ClientError | None) -> None:
        self.error = error


class Subscription:
    """A channel subscription; iterate it (``async for pub in sub``), then :meth:`unsubscribe`.

    ``position`` is the last stream position seen (a publication's, or the
    stream's position when the hub confirmed the subscription); it is what a
    resubscribe passes as ``since``. ``recovered`` tells whether the latest
    resubscribe got back everything missed; when it did not, the client also
    calls ``on_unrecovered(sub)`` and the app should reload the channel's state.

    Iteration ends (``StopAsyncIteration``) after :meth:`unsubscribe` or
    :meth:`Client.close`, once queued publications are out. It raises
    :class:`ConnectionClosed` when the hub stopped the client, and
    :class:`ReplyError` when the hub refused a resubscribe.
    """

    def __init__(self, client: Client, channel: str) -> None:
        self.channel = channel
        self.position: StreamPosition | None = None
        self.recovered = True
        self._client = client
        self._queue: asyncio.Queue[Publication | _End] = asyncio.Queue()
        #: Confirmed once by the hub: from then on the client resubscribes it itself.
        self._live = False
        self._ended = False
        #: Publications pushed while a (re)subscribe waits for its reply.
        self._held: list[m.Publication] | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.channel!r} position={self.position}>"

    def __len__(self) -> int:
        """Publications received and not yet taken from the iterator."""
        return self._queue.qsize() - self._ended  # the end marker stays queued once put

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Publication:
        item = await self._queue.get()
        if isinstance(item, Publication):
            return item
        self._queue.put_nowait(item)  # every later call ends the same way
        if item.error is not None:
            raise item.error
        raise StopAsyncIteration

    async def unsubscribe(self) -> None:
        """Stop receiving this channel; iteration ends after what is already queued."""
        await self._client._unsubscribe(self)

    # --- used by the client ------------------------------------------------

    def _hold(self) -> None:
        if self._held is None:
            self._held = []

    def _on_push(self, pub: m.Publication) -> None:
        if self._held is not None:
            self._held.append(pub)
        else:
            self._deliver(pub)

    def _on_subscribed(self, result: m.SubscribeResult, since: StreamPosition | None) -> None:
        """Deliver recovered publications, then those held during the subscribe; go live."""
        for pub in result.publications:
            self._deliver(pub)
        top = StreamPosition(result.offset, result.epoch)
        pos = self.position
        if pos is None or pos.epoch != top.epoch or pos.offset < top.offset:
            self.position = top
        held, self._held = self._held or [], None
        for pub in held:
            if pub.epoch == top.epoch:  # pushes from before an epoch change are stale
                self._deliver(pub)
        self._live = True
        if since is not None:
            self.recovered = result.recovered

    def _deliver(self, pub: m.Publication) -> None:
        pos = self.position
        if pos is not None and pub.epoch == pos.epoch and pub.offset <= pos.offset:
            return  # already delivered
        self.position = StreamPosition(pub.offset, pub.epoch)
        try:
            data = msgpack.unpackb(pub.data, strict_map_key=False)
        except Exception:  # another publisher's bytes: skip them, keep the stream
            log.warning("channel %r offset %d: data is not MessagePack, skipped", pub.channel, pub.offset)
            return
        self._queue.put_nowait(Publication(pub.channel, data, pub.offset, pub.epoch, pub.info))

    def _end(self, error: ClientError | None) -> None:
        if not self._ended:
            self._ended = True
            self._held = None
            self._queue.put_nowait(_End(error))


# --- one WebSocket connection ----------------------------------------------


class _Connection:
    """One open WebSocket: a reader task resolves reply futures by id and routes pushes."""

    def __init__(
        self,
        ws: ClientConnection,
        codec: Codec,
        on_push: Callable[[m.Publication], None],
        on_end: Callable[[_Connection], None],
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.disconnect: m.Disconnect | None = None
        self.close_code = _ABNORMAL
        self.close_reason = ""
        self._on_push = on_push
        self._on_end = on_end
        self._futures: dict[int, asyncio.Future[m.Result]] = {}
        self._lost: ClientError | None = None
        self.reader = asyncio.create_task(self._read(), name="realtime-client-reader")
        self.refresher: asyncio.Task[None] | None = None

    @property
    def reconnect(self) -> bool:
        """Whether the client should come back after this connection ended."""
        if self.disconnect is not None:
            return self.disconnect.reconnect
        return should_reconnect(self.close_code)

    async def call(self, command: m.Command) -> m.Result:
        """Send one command, return its result; raises ReplyError or ConnectionLost."""
        if self._lost is not None:
            raise self._lost
        future: asyncio.Future[m.Result] = asyncio.get_running_loop().create_future()
        self._futures[command.id] = future
        try:
            try:
                await self.ws.send(self.codec.encode_command(command), text=not self.codec.binary)
            except WsConnectionClosed:
                await asyncio.wait([self.reader])  # it ends too, and fails the futures
                raise self._lost or ConnectionLost(self.close_code, self.close_reason) from None
            return await future
        finally:
            self._futures.pop(command.id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved, even when the send failed first

    def fail(self, error: ClientError) -> None:
        """Make waiting and later calls raise ``error``."""
        self._lost = error
        for future in self._futures.values():
            if not future.done():
                future.set_exception(error)
        self._futures.clear()

    async def close(self) -> None:
        """Close the socket and wait for the reader to end."""
        if self.refresher is not None:
            self.refresher.cancel()
        try:
            await self.ws.close()
            await asyncio.wait([self.reader])  # ends once the socket is closed
        finally:
            self.reader.cancel()

    async def _read(self) -> None:
        ws = self.ws
        try:
            while True:
                frame = await ws.recv(decode=False)
                for message in self.codec.decode_messages(frame):
                    self._dispatch(message)
        except WsConnectionClosed as exc:
            if exc.rcvd is not None:
                self.close_code, self.close_reason = exc.rcvd.code, exc.rcvd.reason
        except ProtocolError as exc:
            log.warning("closing the connection: the hub sent an invalid frame (%s)", exc)
            self.close_code, self.close_reason = 1002, "invalid frame"
            await ws.close(1002, "invalid frame")
        except Exception:
            log.exception("closing the connection: the client failed to handle a frame")
            self.close_code, self.close_reason = 1011, "client error"
            await ws.close(1011, "client error")
        finally:
            if self.disconnect is not None:
                self.close_code, self.close_reason = self.disconnect.code, self.disconnect.reason
            self._on_end(self)  # first, so callers woken below see the client's new state
            if self._lost is None:
                self.fail(ConnectionLost(self.close_code, self.close_reason))

    def _dispatch(self, message: m.ServerMessage) -> None:
        if isinstance(message, m.Publication):
            self._on_push(message)
        elif isinstance(message, m.Reply):
            future = self._futures.get(message.id)
            if future is None or future.done():
                if message.error is not None:  # id 0: the hub could not read a command
                    log.warning("error reply to no pending command: %s %s", message.error.code, message.error.message)
                return
            if message.error is not None:
                future.set_exception(ReplyError(message.error.code, message.error.message))
            elif message.result is None:
                future.set_exception(ProtocolError("reply without result or error"))
            else:
                future.set_result(message.result)
        elif isinstance(message, m.Disconnect):
            self.disconnect = message  # the close frame follows


def _expect(result: m.Result, kind: type[_R]) -> _R:
    if not isinstance(result, kind):
        raise ProtocolError(f"expected {kind.__name__}, got {type(result).__name__}")
    return result


# --- the client -------------------------------------------------------------


class Client:
    """A reconnecting connection to a hub; ``async with Client(url) as client:``.

    Entering connects (WebSocket handshake, then the Connect command) and raises
    :class:`ConnectionClosed` if that fails; after that, drops are handled by
    reconnecting. Then call :meth:`subscribe`, :meth:`publish`, :meth:`ping`.
    Commands issued while reconnecting wait up to ``command_timeout`` for the
    connection, then raise :class:`CommandTimeout`.

    ``codec`` is "msgpack" (binary frames) or "json" (text frames), or a codec
    object. ``on_unrecovered(sub)`` is called when a resubscribe could not get
    back everything missed (see :attr:`Subscription.recovered`). Reconnect
    delays come from :func:`realtime.backoff.backoff` with ``min_backoff`` and
    ``max_backoff``, or from ``reconnect_delays()``; a finite iterator limits
    the attempts. ``ping_interval`` and ``ping_timeout`` drive WebSocket
    keepalive pings that detect a dead hub.

    ``refresh_token()`` (async, returns a new connection token) keeps a
    connection whose token expires alive: the client calls it shortly before
    ``exp`` and sends the new token with a Refresh command, and again when a
    reconnect finds the token expired.
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        codec: Literal["msgpack", "json"] | Codec = "msgpack",
        name: str = "python",
        version: str = __version__,
        min_backoff: float = 0.05,
        max_backoff: float = 20.0,
        reconnect_delays: Callable[[], Iterator[float]] | None = None,
        command_timeout: float = 10.0,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        max_size: int | None = 2**20,
        on_unrecovered: Callable[[Subscription], object] | None = None,
        refresh_token: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        if isinstance(codec, str):
            if codec not in _SUBPROTOCOLS:
                raise ValueError(f"codec must be 'msgpack' or 'json', got {codec!r}")
            self._codec = codec_for(_SUBPROTOCOLS[codec])
        else:
            self._codec = codec
        backoff(min_backoff, max_backoff)  # validates the bounds now
        self.url = url
        self.token = token
        self.name = name
        self.version = version
        self.command_timeout = command_timeout
        self.on_unrecovered = on_unrecovered
        self.refresh_token = refresh_token
        #: Set by each successful Connect: the connection id, the user, the hub's ping interval.
        self.client_id = ""
        self.user = ""
        self.server_ping = 0.0
        self._delays = reconnect_delays or (lambda: backoff(min_backoff, max_backoff))
        self._connect_options: dict[str, Any] = {
            "open_timeout": open_timeout,
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "max_size": max_size,
            "compression": None,  # the hub shares uncompressed frames between subscribers
            "user_agent_header": f"realtime-python/{__version__}",
        }
        self._ids = itertools.count(1)
        self._subs: dict[str, Subscription] = {}
        self._conn: _Connection | None = None
        #: Set while a connection is ready for commands, and once the client has stopped.
        self._ready = asyncio.Event()
        self._stopped: ConnectionClosed | None = None
        self._run_task: asyncio.Task[None] | None = None

    def __repr__(self) -> str:
        state = "closed" if self._stopped else "connected" if self.connected else "connecting"
        return f"<Client {self.url} {state}>"

    @property
    def connected(self) -> bool:
        """True while a connection is open and ready for commands."""
        return self._conn is not None and self._ready.is_set() and self._stopped is None

    @property
    def closed(self) -> bool:
        """True once the client has stopped (see :class:`ConnectionClosed`)."""
        return self._stopped is not None

    # --- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the first connection; then use the client until :meth:`close`.

        ``async with`` calls this. Raises :class:`ConnectionClosed` (with the
        cause chained) if the hub cannot be reached or refuses the Connect.
        """
        if self._run_task is not None or self._stopped is not None:
            raise RuntimeError("connect() may be called once")
        try:
            conn = await self._open()
        except ConnectionClosed as exc:
            self._stop(exc)
            raise
        except (OSError, WebSocketException, TimeoutError, RealtimeError) as exc:
            closed = ConnectionClosed(_ABNORMAL, f"cannot connect: {exc}")
            self._stop(closed)
            raise closed from exc
        self._run_task = asyncio.create_task(self._run(conn), name="realtime-client")

    async def close(self) -> None:
        """Close the connection and stop; subscriptions end, calls raise ConnectionClosed."""
        conn = self._conn
        self._stop(ConnectionClosed(1000, "client closed"), by_app=True)
        task, self._run_task = self._run_task, None
        if task is not None:
            task.cancel()
            await asyncio.wait([task])  # raises CancelledError only if we are cancelled
        if conn is not None:
            await conn.close()

    def _stop(self, error: ConnectionClosed, *, by_app: bool = False) -> None:
        """Enter the final state: wake waiters, fail calls, end iterators (idempotent)."""
        if self._stopped is not None:
            return
        self._stopped = error
        self._ready.set()  # waiters wake up and find the client stopped
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(error)
        for sub in self._subs.values():
            sub._end(None if by_app else error)
        self._subs.clear()
        if not by_app:
            log.info("client stopped: %s %s", error.code, error.reason)

    def _on_end(self, conn: _Connection) -> None:
        """The reader of ``conn`` is ending: leave the ready state, or stop for good."""
        if conn is not self._conn:
            return  # still opening: _open decides, or already replaced
        if not conn.reconnect:
            self._stop(ConnectionClosed(conn.close_code, conn.close_reason))
        elif self._stopped is None:
            self._conn = None
            self._ready.clear()

    async def _open(self) -> _Connection:
        """Handshake, Connect, resubscribe: return a connection ready for commands."""
        ws = await connect(self.url, subprotocols=[Subprotocol(self._codec.name)], **self._connect_options)
        if ws.subprotocol != self._codec.name:
            await ws.close(1002, "subprotocol not accepted")
            raise ConnectionClosed(1002, f"the hub did not accept subprotocol {self._codec.name}")
        conn = _Connection(ws, self._codec, self._on_push, self._on_end)
        try:
            async with asyncio.timeout(self.command_timeout):
                result = await self._connect_on(conn)
                self.client_id, self.user, self.server_ping = result.client, result.user, result.ping
                await self._resubscribe(conn)
            if result.expires and self.refresh_token is not None:
                conn.refresher = asyncio.create_task(self._keep_token(conn, result.expires))
        except ReplyError as exc:
            await conn.close()
            if exc.temporary:
                raise
            code = CloseCode.UNAUTHORIZED if exc.code in _AUTH_ERRORS else CloseCode.BAD_REQUEST
            raise ConnectionClosed(code, exc.message) from exc
        except ConnectionLost as exc:
            await conn.close()
            if not conn.reconnect:
                raise ConnectionClosed(conn.close_code, conn.close_reason) from exc
            raise
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._ready.set()
        log.info("connected to %s as %s", self.url, self.client_id)
        return conn

    async def _connect_on(self, conn: _Connection) -> m.ConnectResult:
        """Send Connect; an expired token is renewed once through ``refresh_token``."""
        try:
            result = await conn.call(m.Connect(next(self._ids), self.token, self.name, self.version))
        except ReplyError as exc:
            if exc.code != ErrorCode.TOKEN_EXPIRED or self.refresh_token is None:
                raise
            self.token = await self.refresh_token()
            result = await conn.call(m.Connect(next(self._ids), self.token, self.name, self.version))
        return _expect(result, m.ConnectResult)

    async def _keep_token(self, conn: _Connection, expires: int) -> None:
        """Refresh the token before it expires, for as long as this connection lives."""
        assert self.refresh_token is not None
        while expires:
            remaining = expires - time.time()
            # A tenth of the time left, at most a minute, at least a second, before exp.
            await asyncio.sleep(max(0.0, remaining - max(1.0, min(60.0, remaining / 10))))
            try:
                self.token = await self.refresh_token()
                result = _expect(await conn.call(m.Refresh(next(self._ids), self.token)), m.RefreshResult)
            except ClientError:
                return  # the connection ended; the next one starts its own refresher
            except Exception:
                log.exception("refresh_token failed; the hub will disconnect when the token expires")
                return
            expires = result.expires

    async def _resubscribe(self, conn: _Connection) -> None:
        """Subscribe again to every live channel, from its last position."""
        subs = [sub for sub in self._subs.values() if sub._live]
        outcomes = await asyncio.gather(*(self._subscribe_on(conn, sub) for sub in subs), return_exceptions=True)
        for sub, outcome in zip(subs, outcomes):
            if isinstance(outcome, ReplyError) and not outcome.temporary:
                log.warning("resubscribe to %r refused: %s", sub.channel, outcome)
                self._subs.pop(sub.channel, None)
                sub._end(outcome)
            elif isinstance(outcome, BaseException):
                raise outcome  # the connection failed: try again from scratch

    async def _subscribe_on(self, conn: _Connection, sub: Subscription) -> None:
        since = sub.position if sub._live else None
        sub._hold()
        result = _expect(await conn.call(m.Subscribe(next(self._ids), sub.channel, since)), m.SubscribeResult)
        if self._subs.get(sub.channel) is not sub:
            await self._forget(conn, sub.channel)  # unsubscribed meanwhile
            return
        sub._on_subscribed(result, since)
        if since is not None and not result.recovered:
            log.info("channel %r: publications since %s could not be recovered", sub.channel, since)
            if self.on_unrecovered is not None:
                try:
                    self.on_unrecovered(sub)
                except Exception:
                    log.exception("on_unrecovered callback failed")

    async def _run(self, conn: _Connection) -> None:
        """Watch the connection; reconnect with backoff until told to stop."""
        try:
            while True:
                await asyncio.wait([conn.reader])  # _on_end has run: stopped, or not ready
                await conn.close()
                if self._stopped is not None:
                    return
                log.info("connection lost (%s %s), reconnecting", conn.close_code, conn.close_reason)
                new = await self._reconnect()
                if new is None:
                    return
                conn = new
        except Exception:  # a bug: stop rather than hang every caller
            log.exception("the client failed")
            self._stop(ConnectionClosed(1011, "client error"))

    async def _reconnect(self) -> _Connection | None:
        """Try until connected (return it) or told to stop, or out of delays (return None)."""
        for attempt, delay in enumerate(self._delays()):
            await asyncio.sleep(delay)
            try:
                return await self._open()
            except ConnectionClosed as exc:
                self._stop(exc)
                return None
            except (OSError, WebSocketException, TimeoutError, RealtimeError) as exc:
                log.log(logging.DEBUG if attempt else logging.INFO, "reconnect failed (%s), retrying", exc)
        self._stop(ConnectionClosed(_ABNORMAL, "gave up reconnecting"))
        return None

    def _on_push(self, pub: m.Publication) -> None:
        sub = self._subs.get(pub.channel)
        if sub is not None:
            sub._on_push(pub)

    # --- commands ----------------------------------------------------------

    async def _request(self, make: Callable[[int], m.Command], kind: type[_R], *, retry: bool = True) -> _R:
        """Run one command on the current connection, waiting for one if needed.

        With ``retry``, a command whose connection dropped before the reply is
        sent again on the next connection (safe for idempotent commands).
        """
        if self._run_task is None and self._stopped is None:
            raise RuntimeError("call connect() first, or use 'async with Client(...)'")
        try:
            async with asyncio.timeout(self.command_timeout):
                while True:
                    await self._ready.wait()
                    if self._stopped is not None:
                        raise self._stopped
                    conn = self._conn
                    assert conn is not None  # ready and not stopped
                    try:
                        result = await conn.call(make(next(self._ids)))
                    except ConnectionLost:
                        if not retry:
                            raise
                        continue  # _on_end has cleared the ready state
                    return _expect(result, kind)
        except TimeoutError:
            raise CommandTimeout(f"no reply within {self.command_timeout}s") from None

    async def subscribe(self, channel: str) -> Subscription:
        """Subscribe to ``channel``; iterate the returned :class:`Subscription`.

        Raises :class:`ReplyError` if the hub refuses, ``ValueError`` if this
        client is already subscribed to ``channel``.
        """
        if self._stopped is not None:
            raise self._stopped
        if channel in self._subs:
            raise ValueError(f"already subscribed to {channel!r}")
        sub = self._subs[channel] = Subscription(self, channel)

        def command(id: int) -> m.Subscribe:
            sub._hold()
            return m.Subscribe(id, channel)

        try:
            result = await self._request(command, m.SubscribeResult)
        except BaseException:
            if self._subs.get(channel) is sub:
                del self._subs[channel]
            raise
        if self._subs.get(channel) is sub:
            sub._on_subscribed(result, None)
        elif (conn := self._conn) is not None:
            await self._forget(conn, channel)  # unsubscribed meanwhile
        return sub

    async def _forget(self, conn: _Connection, channel: str) -> None:
        """Unsubscribe on the hub a channel the app dropped while its subscribe was in flight."""
        if channel not in self._subs:
            try:
                await conn.call(m.Unsubscribe(next(self._ids), channel))
            except ClientError:
                pass  # gone with the connection, or never there

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.channel) is not sub:
            sub._end(None)
            return
        del self._subs[sub.channel]
        sub._end(None)
        if not sub._live or not self.connected:
            return  # the hub forgets it with the connection, or never had it
        try:
            await self._request(lambda id: m.Unsubscribe(id, sub.channel), m.EmptyResult, retry=False)
        except (ConnectionLost, ConnectionClosed):
            pass  # the hub drops subscriptions with the connection
        except ReplyError as exc:
            if exc.code != ErrorCode.NOT_SUBSCRIBED:
                raise

    async def publish(self, channel: str, data: Any) -> StreamPosition:
        """Publish ``data`` (any MessagePack-serializable value); returns its position.

        Not retried across reconnects: if the connection drops before the reply,
        raises :class:`ConnectionLost` and the publication may or may not exist.
        """
        payload = msgpack.packb(data)
        result = await self._request(lambda id: m.Publish(id, channel, payload), m.PublishResult, retry=False)
        return StreamPosition(result.offset, result.epoch)

    async def ping(self) -> float:
        """Round trip to the hub through the protocol; returns seconds. Waits for a connection."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._request(m.Ping, m.EmptyResult)
        return loop.time() - start

    def subscriptions(self) -> dict[str, Subscription]:
        """The current subscriptions by channel (a copy)."""
        return dict(self._subs)

