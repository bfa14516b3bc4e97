"""The :class:`Client`: one reconnecting connection to a hub, its subscriptions and its commands.

See the package's docstring (:mod:`realtime.client`) for what is retried and when.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import random
import time
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping
from ssl import SSLContext
from types import TracebackType
from typing import Any, Final, Literal, TypeVar

import msgpack  # type: ignore[import-untyped, unused-ignore]
from websockets.asyncio.client import connect
from websockets.exceptions import InvalidStatus, WebSocketException
from websockets.typing import Subprotocol

from protocol import codec_for
from protocol import messages as m
from protocol.backoff import after_advice, backoff
from protocol.codec import Codec
from protocol.codes import CloseCode, ErrorCode
from protocol.errors import RealtimeError
from protocol.limits import JSON_SUBPROTOCOL, MAX_HISTORY_PAGE, MAX_ID, MAX_STATUS_USERS, MSGPACK_SUBPROTOCOL, RECOVER
from realtime import __version__  # the package root holds only the version

from .connection import ABNORMAL, Connection
from .errors import ClientError, CommandTimeout, ConnectionClosed, ConnectionLost, ReplyError, TokenError, Unsubscribed
from .subscription import Subscription
from .values import (
    HistoryPage,
    PresenceMember,
    PresenceStats,
    Sent,
    StreamPosition,
    UserStatus,
    message_of,
    new_publish_id,
    unpack,
    unpack_info,
)

__all__ = ["Client"]

log = logging.getLogger("realtime.client")

_SUBPROTOCOLS: Final = {"msgpack": MSGPACK_SUBPROTOCOL, "json": JSON_SUBPROTOCOL}
#: Connect refusals that mean a bad token: close code 4501 rather than 4500.
_AUTH_ERRORS: Final = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED, ErrorCode.PERMISSION_DENIED})
#: Seconds at least between two token refreshes of one connection; refreshes that make no
#: headway back off from it up to ``_REFRESH_MAX_BACKOFF``.
_REFRESH_GAP: Final = 1.0
_REFRESH_MAX_BACKOFF: Final = 60.0
#: Sends of one publish a signed-in client makes while the hub answers OUTCOME_UNKNOWN,
#: and the seconds it waits before the second one (growing by as much each time).
PUBLISH_ATTEMPTS: Final = 3
PUBLISH_RETRY_DELAY: Final = 0.2

#: Seconds to wait at least after a refusal that came without its advice (protocol.md, Disconnect).
_REFUSAL_FLOOR: Final = {int(CloseCode.OVERLOADED): 1.0, int(CloseCode.TOO_MANY_CONNECTIONS): 30.0}

_R = TypeVar("_R", bound=m.Result)
_T = TypeVar("_T")


class Client:
    """A reconnecting connection to a hub; ``async with Client(url) as client:``.

    Entering connects (WebSocket handshake, then the Connect command) and raises
    :class:`ConnectionClosed` if that fails; after that, drops are handled by
    reconnecting. Then call :meth:`subscribe`, :meth:`publish`, :meth:`history`,
    :meth:`typing`, :meth:`read`, :meth:`receipts`, :meth:`presence`,
    :meth:`presence_stats`, :meth:`status`, :meth:`state_set`,
    :meth:`state_patch`, :meth:`ping`. Commands issued while reconnecting wait
    up to ``command_timeout`` for the connection, then raise
    :class:`CommandTimeout`; which ones are retried after a drop is in the
    module's docstring.

    ``codec`` is "msgpack" (binary frames) or "json" (text frames), or a codec
    object. ``on_unrecovered(sub)`` is called when a resubscribe could not get
    back everything missed (see :attr:`Subscription.recovered`). Reconnect
    delays come from :func:`protocol.backoff.backoff` with ``min_backoff`` and
    ``max_backoff``, or from ``reconnect_delays()``; a finite iterator limits
    the attempts. ``ping_interval`` and ``ping_timeout`` drive WebSocket
    keepalive pings that detect a dead hub.

    **Refusals with advice.** When the hub refuses a connection and says when to
    come back (close code 4008 OVERLOADED or 4009 TOO_MANY_CONNECTIONS with the
    Disconnect push's ``retry_after``, or an HTTP 503 with ``Retry-After``), the
    next attempt waits at least that long, plus up to half as much again at
    random (:func:`protocol.backoff.after_advice`), so a refused storm comes back
    spread out; ``on_refused(code, seconds)`` is called with the code (or 503)
    and the advice. :meth:`connect` keeps trying while the hub refuses with
    advice (``reconnect_delays`` bounds it), and raises on any other failure.
    ``ssl`` is the context for ``wss://`` URLs (a context trusting your CA).
    ``data`` (any value) goes with every ``connect``: the app's own credentials,
    for a hub whose connect proxy asks the app's backend who the client is.

    ``refresh_token()`` (async, returns a new connection token) keeps a
    connection whose token expires alive: the client calls it shortly before
    ``exp`` and sends the new token with a Refresh command, and again when a
    reconnect finds the token expired (if it raises then, the reconnect is
    tried again with backoff).
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
        on_refused: Callable[[int, float], object] | None = None,
        ssl: SSLContext | None = None,
        data: Any = None,
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
        #: The app's own credentials, sent in every ``connect`` for a hub with a connect proxy.
        self.data = data
        self.name = name
        self.version = version
        self.command_timeout = command_timeout
        self.on_unrecovered = on_unrecovered
        self.refresh_token = refresh_token
        self.on_refused = on_refused
        #: Seconds the hub advised to wait before the next attempt (the last refusal's), or None.
        self._advice: float | None = None
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
        if ssl is not None:
            self._connect_options["ssl"] = ssl
        #: Counts every command sent; _next_id maps it onto the protocol's ids 1..2**32-1.
        self._ids = itertools.count(1)
        self._subs: dict[str, Subscription] = {}
        self._conn: Connection | None = None
        #: Set while a connection is ready for commands, and once the client has stopped.
        self._ready = asyncio.Event()
        self._stopped: ConnectionClosed | None = None
        self._run_task: asyncio.Task[None] | None = None
        #: Gap resubscribes of live channels, and Unsubscribes of abandoned Subscribes, in flight.
        self._tasks: set[asyncio.Task[None]] = set()
        #: Calls of subscriptions' get_token in flight: close() cancels them.
        self._fetches: set[asyncio.Future[str]] = set()

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
        delays: Iterator[float] | None = None
        while True:
            try:
                conn = await self._open()
                break
            except ConnectionClosed as exc:
                self._stop(exc)
                raise
            except (OSError, WebSocketException, TimeoutError, RealtimeError) as exc:
                # Refused with advice: the hub is up and said when to come back.
                delay = None
                if self._note_refusal(exc):
                    delays = delays or self._delays()
                    delay = next(delays, None)
                if delay is None:
                    closed = ConnectionClosed(ABNORMAL, f"cannot connect: {exc}")
                    self._stop(closed)
                    raise closed from exc
                await asyncio.sleep(self._wait(delay))
        self._run_task = asyncio.create_task(self._run(conn), name="realtime-client")

    def _note_refusal(self, exc: BaseException) -> bool:
        """Note the retry advice of a refused attempt, if ``exc`` is one; tell on_refused."""
        code, advice = 0, None
        if isinstance(exc, ConnectionLost):
            # A refusal whose push was lost (only its close frame came): the protocol's floor.
            code, advice = exc.code, exc.retry_after or _REFUSAL_FLOOR.get(exc.code)
        elif isinstance(exc, InvalidStatus) and exc.response.status_code == 503:
            code, advice = 503, _retry_after_header(exc.response.headers.get("Retry-After"))
        if advice is None:
            return False
        self._advice = advice
        log.info("the hub refused the connection (%s): retrying after at least %.1f s", code, advice)
        if self.on_refused is not None:
            try:
                self.on_refused(code, advice)
            except Exception:
                log.exception("on_refused failed")
        return True

    def _wait(self, delay: float) -> float:
        """The backoff ``delay``, or the last refusal's advice (with jitter) if that is longer."""
        advice, self._advice = self._advice, None
        return after_advice(delay, advice)

    async def close(self) -> None:
        """Close the connection and stop; subscriptions end, calls raise ConnectionClosed."""
        conn = self._conn
        self._stop(ConnectionClosed(1000, "client closed"), by_app=True)
        task, self._run_task = self._run_task, None
        tasks: list[asyncio.Future[Any]] = [*self._tasks, *self._fetches, *([task] if task is not None else [])]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)  # raises CancelledError only if we are cancelled
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

    def _on_end(self, conn: Connection) -> None:
        """The reader of ``conn`` is ending: leave the ready state, or stop for good."""
        if conn is not self._conn:
            return  # still opening: _open decides, or already replaced
        if not conn.reconnect:
            self._stop(ConnectionClosed(conn.close_code, conn.close_reason))
        elif self._stopped is None:
            self._conn = None
            self._ready.clear()

    async def _open(self) -> Connection:
        """Handshake, Connect, resubscribe: return a connection ready for commands."""
        ws = await connect(self.url, subprotocols=[Subprotocol(self._codec.name)], **self._connect_options)
        if ws.subprotocol != self._codec.name:
            await ws.close(1002, "subprotocol not accepted")
            raise ConnectionClosed(1002, f"the hub did not accept subprotocol {self._codec.name}")
        conn = Connection(ws, self._codec, self._on_push, self._on_end)
        try:
            async with asyncio.timeout(self.command_timeout):
                result = await self._connect_on(conn)
                self.client_id, self.user, self.server_ping = result.client, result.user, result.ping
                later = await self._resubscribe(conn)
            if result.expires and self.refresh_token is not None:
                conn.refresher = asyncio.create_task(self._keep_token(conn, result.expires))
            if self._stopped is not None:  # close() ran meanwhile: nothing may outlive it
                raise self._stopped
            if conn.reader.done():
                # It ended while opening: _on_end ignored it (not current yet), so its
                # close code decides here whether to come back.
                raise ConnectionLost(conn.close_code, conn.close_reason)
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
        for sub in later:
            self._start_resync(conn, sub)
        log.info("connected to %s as %s", self.url, self.client_id)
        return conn

    async def _connect_on(self, conn: Connection) -> m.ConnectResult:
        """Send Connect; an expired token is renewed once through ``refresh_token``."""
        try:
            result = await conn.call(
                m.Connect(self._next_id(conn), self.token, self.name, self.version, self._connect_data()),
                m.ConnectResult,
            )
        except ReplyError as exc:
            if exc.code != ErrorCode.TOKEN_EXPIRED or self.refresh_token is None:
                raise
            try:
                self.token = await self.refresh_token()
            except Exception as error:
                # The app's callback (its auth service may be briefly down): a ClientError
                # makes _reconnect try again with backoff instead of stopping the client.
                log.exception("refresh_token failed; the connection will be tried again")
                raise ClientError(f"refresh_token failed: {error!r}") from error
            result = await conn.call(
                m.Connect(self._next_id(conn), self.token, self.name, self.version, self._connect_data()),
                m.ConnectResult,
            )
        return result

    def _next_id(self, conn: Connection) -> int:
        """A command id for ``conn``: 1..2**32-1 (the protocol's range), none still in flight there."""
        while True:
            command_id = (next(self._ids) - 1) % MAX_ID + 1
            if command_id not in conn.in_flight:
                return command_id

    async def _keep_token(self, conn: Connection, expires: int) -> None:
        """Refresh the token before it expires, for as long as this connection lives.

        Refreshes are at least ``_REFRESH_GAP`` apart, and back off while they do
        not push the expiry to a time that leaves room for a scheduled one (the
        app's refresh_token() returns the same token, or the hub's clock is
        behind ours): such a token is refreshed again, but never in a tight loop.
        """
        assert self.refresh_token is not None
        stalled: Iterator[float] | None = None  # backoff delays while refreshes make no headway
        first = True
        while expires:
            remaining = expires - time.time()
            # A tenth of the time left, at most a minute, at least a second, before exp.
            wait = remaining - max(1.0, min(60.0, remaining / 10))
            if stalled is not None:
                wait = max(wait, _REFRESH_GAP + next(stalled))
            elif not first:
                wait = max(wait, _REFRESH_GAP)
            first = False
            await asyncio.sleep(max(0.0, wait))
            try:
                self.token = await self.refresh_token()
                result = await conn.call(m.Refresh(self._next_id(conn), self.token), m.RefreshResult)
            except ClientError:
                return  # the connection ended; the next one starts its own refresher
            except Exception:
                log.exception("refresh_token failed; the hub will disconnect when the token expires")
                return
            # Headway: a later expiry, far enough off that the next refresh waits for its schedule.
            ahead = result.expires - time.time()
            if result.expires > expires and ahead - max(1.0, min(60.0, ahead / 10)) >= _REFRESH_GAP:
                stalled = None
            elif stalled is None:
                stalled = backoff(_REFRESH_GAP, _REFRESH_MAX_BACKOFF)
            expires = result.expires

    async def _resubscribe(self, conn: Connection) -> list[Subscription]:
        """Subscribe again to every live channel, from its last position.

        Returns the subscriptions with a ``get_token``: they resubscribe once the
        connection is ready (:meth:`_resync`), so that a slow or failing token
        backend holds up neither the connection nor the other channels.
        """
        subs = [sub for sub in self._subs.values() if sub._live]
        for sub in subs:
            sub._held = None  # pushes of the ended connection: this reply supersedes them
        later = [sub for sub in subs if sub._get_token is not None]
        subs = [sub for sub in subs if sub._get_token is None]
        outcomes = await asyncio.gather(*(self._subscribe_on(conn, sub) for sub in subs), return_exceptions=True)
        for sub, outcome in zip(subs, outcomes):
            if isinstance(outcome, ReplyError) and not outcome.temporary:
                self._refused(sub, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome  # the connection failed: try again from scratch
            elif outcome:
                self._start_resync(conn, sub)
        return later

    def _refused(self, sub: Subscription, error: ReplyError | TokenError) -> None:
        """The hub refused to resubscribe ``sub`` (or its token could not be had, to the last
        delay): drop it, ending its iterators with ``error``."""
        log.warning("resubscribe to %r refused: %s", sub.channel, error)
        if self._subs.get(sub.channel) is sub:
            del self._subs[sub.channel]
        sub._end(error)

    async def _subscribe_on(self, conn: Connection, sub: Subscription) -> bool:
        """Subscribe ``sub`` on ``conn`` (again: from its position and live version).

        Returns True if its state has a gap to heal. A subscription the app
        dropped meanwhile is left unsubscribed on the hub. With a ``get_token``,
        a fresh subscription token is fetched first (unless this is the first
        subscribe and a token was given), and once more after a TOKEN_EXPIRED
        reply; its failure raises :class:`TokenError`.
        """
        channel = sub.channel
        fetch = sub._get_token is not None and (sub._live or sub._token is None)
        renewed = False
        while True:
            if fetch:
                await self._sub_token(sub)
            while True:
                if self._subs.get(channel) is not sub:
                    return False  # dropped: whoever holds the channel now sends its own Subscribe
                prev = conn.owners.get(channel)
                if prev is None or prev is sub:
                    break
                await self._release(conn, prev)  # a Subscribe given up on: undo it first, in order
            since = sub.position if sub._live else None
            version = sub.version if sub._live and sub.version else None
            sub._hold()
            command = m.Subscribe(self._next_id(conn), channel, since, sub._token, version)
            conn.owners[channel] = sub  # no await between this and the send: the order holds
            try:
                result = await conn.call(command, m.SubscribeResult)
                break
            except ReplyError as exc:
                if conn.owners.get(channel) is sub:
                    del conn.owners[channel]  # refused: the hub did not subscribe it
                if exc.code == ErrorCode.TOKEN_EXPIRED and sub._get_token is not None and not renewed:
                    fetch = renewed = True  # one more try, with a fresh token
                    continue
                raise
            except ClientError:
                raise  # the connection is gone, and the hub's subscription with it
            except BaseException:  # timed out or cancelled: the hub may subscribe it all the same
                if self._stopped is None:
                    self._spawn(self._release_quietly(conn, sub), "realtime-client-release")
                raise
        if self._subs.get(channel) is not sub:  # dropped while it was in flight
            try:
                await self._release(conn, sub)
            except ReplyError:
                pass  # the hub would not unsubscribe it: nothing more to try
            return False
        gap = sub._on_subscribed(result, since, version)
        if since is not None and not result.recovered:
            self._unrecovered(sub, f"publications since {since} could not be recovered")
        return gap

    async def _sub_token(self, sub: Subscription) -> None:
        """A fresh subscription token for ``sub`` from its ``get_token``; :meth:`close` cancels the call.

        Raises :class:`TokenError` when the app's callback fails, and the client's
        :class:`ConnectionClosed` when close() cancelled it.
        """
        assert sub._get_token is not None
        fetch = asyncio.ensure_future(sub._get_token())
        self._fetches.add(fetch)
        try:
            token = await fetch
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if self._stopped is not None and not (task is not None and task.cancelling()):
                raise self._stopped from None  # close() cancelled it, not our caller
            raise
        except Exception as error:
            raise TokenError(sub.channel, repr(error)) from error
        finally:
            self._fetches.discard(fetch)
        if not isinstance(token, str):
            raise TokenError(sub.channel, f"it returned {type(token).__name__}, not a str")
        sub._token = token

    def _unrecovered(self, sub: Subscription, why: str) -> None:
        """``sub`` missed publications for good: tell the app, which reloads the channel."""
        log.info("channel %r: %s", sub.channel, why)
        if self.on_unrecovered is not None:
            try:
                self.on_unrecovered(sub)
            except Exception:
                log.exception("on_unrecovered callback failed")

    async def _release(self, conn: Connection, sub: Subscription) -> None:
        """Unsubscribe ``sub``'s channel on ``conn`` if the hub's subscription there is ``sub``'s.

        Raises ConnectionLost (or ConnectionClosed) when ``conn`` is gone, and
        ReplyError unless the hub had no subscription (its Subscribe failed).
        """
        channel = sub.channel
        if conn.owners.get(channel) is not sub:
            return  # released already, or never subscribed here
        del conn.owners[channel]  # and the send below happens before any await: in order
        try:
            await conn.call(m.Unsubscribe(self._next_id(conn), channel), m.EmptyResult)
        except ReplyError as exc:
            if exc.code != ErrorCode.NOT_SUBSCRIBED:
                raise

    async def _release_quietly(self, conn: Connection, sub: Subscription) -> None:
        """:meth:`_release` for a Subscribe whose caller gave up (timed out or cancelled)."""
        try:
            await self._release(conn, sub)
        except ClientError:
            pass  # gone with the connection, or refused: nothing more to try

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` in a task that :meth:`close` cancels."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_resync(self, conn: Connection, sub: Subscription) -> None:
        """A channel missed a publication or a live state change on ``conn``: resubscribe it
        there from its position and version."""
        if sub._resyncing is conn or sub._ended:
            return
        sub._resyncing = conn
        sub._hold()  # pushes wait for the fresh state from now on
        self._spawn(self._resync(conn, sub), "realtime-client-resync")

    async def _resync(self, conn: Connection, sub: Subscription) -> None:
        """Unsubscribe, then subscribe from ``sub``'s position and version, until it has no gap.

        If ``conn`` drops meanwhile, the reconnect resubscribes ``sub`` the same way.
        """
        log.info("channel %r: resubscribing from %s, version %d", sub.channel, sub.position, sub.version)
        delays: Iterator[float] | None = None
        try:
            while self._subs.get(sub.channel) is sub:
                await self._release(conn, sub)
                try:
                    if not await self._subscribe_on(conn, sub):
                        return
                except ReplyError as exc:
                    delays = delays or self._delays()
                    delay = next(delays, None) if exc.temporary else None
                    if delay is None:
                        raise
                    await asyncio.sleep(max(delay, exc.retry_after))
                except TokenError as exc:
                    # The app's token backend may be briefly down: ask again, with backoff.
                    log.warning("%s; trying again", exc)
                    delays = delays or self._delays()
                    delay = next(delays, None)
                    if delay is None:
                        raise
                    await asyncio.sleep(delay)
                if conn.reader.done():
                    return  # the reconnect resubscribes it
        except (ReplyError, TokenError) as exc:
            self._refused(sub, exc)
        except ClientError:
            pass  # the connection ended: the reconnect resubscribes it
        finally:
            if sub._resyncing is conn:
                sub._resyncing = None

    async def _run(self, conn: Connection) -> None:
        """Watch the connection; reconnect with backoff until told to stop."""
        try:
            while True:
                await asyncio.wait([conn.reader])  # _on_end has run: stopped, or not ready
                await conn.close()
                if self._stopped is not None:
                    return
                log.info("connection lost (%s %s), reconnecting", conn.close_code, conn.close_reason)
                self._note_refusal(ConnectionLost(conn.close_code, conn.close_reason, retry_after=conn.retry_after))
                new = await self._reconnect()
                if new is None:
                    return
                conn = new
        except Exception:  # a bug: stop rather than hang every caller
            log.exception("the client failed")
            self._stop(ConnectionClosed(1011, "client error"))

    async def _reconnect(self) -> Connection | None:
        """Try until connected (return it) or told to stop, or out of delays (return None)."""
        for attempt, delay in enumerate(self._delays()):
            await asyncio.sleep(self._wait(delay))
            try:
                return await self._open()
            except ConnectionClosed as exc:
                self._stop(exc)
                return None
            except (OSError, WebSocketException, TimeoutError, RealtimeError) as exc:
                self._note_refusal(exc)
                log.log(logging.DEBUG if attempt else logging.INFO, "reconnect failed (%s), retrying", exc)
        self._stop(ConnectionClosed(ABNORMAL, "gave up reconnecting"))
        return None

    def _on_push(self, conn: Connection, push: m.Push) -> None:
        channel = getattr(push, "channel", None)
        sub = self._subs.get(channel) if isinstance(channel, str) else None
        if sub is None:
            return
        if isinstance(push, m.Unsubscribed):
            if push.reason == RECOVER:  # the hub lost continuity: come back from our position
                self._start_resync(conn, sub)
                return
            del self._subs[sub.channel]
            sub._end(Unsubscribed(push.channel, push.reason))
        elif sub._on_push(push):
            self._start_resync(conn, sub)

    # --- commands ----------------------------------------------------------

    async def _request(
        self, make: Callable[[int], m.Command], kind: type[_R], *, retry: bool = True, when_busy: bool = True
    ) -> _R:
        """Run one command on the current connection, waiting for one if needed.

        With ``retry``, a command whose connection dropped before the reply is
        sent again on the next connection (safe for idempotent commands). With
        ``when_busy``, one refused with TOO_MANY_REQUESTS is sent again after the
        hub's ``retry_after``.
        """

        async def call(conn: Connection) -> _R:
            return await conn.call(make(self._next_id(conn)), kind)

        return (await self._on_connection(call, retry=retry, when_busy=when_busy))[1]

    async def _on_connection(
        self, call: Callable[[Connection], Awaitable[_T]], *, retry: bool = True, when_busy: bool = True
    ) -> tuple[Connection, _T]:
        """Run ``call`` on the current connection, waiting for one if needed; also return the connection.

        With ``retry``, ConnectionLost runs ``call`` again on the next connection.
        With ``when_busy``, a TOO_MANY_REQUESTS refusal with a ``retry_after`` (the
        hub ran nothing) runs ``call`` again after that wait plus jitter (up to as
        much again), if it ends within ``command_timeout``; otherwise the
        ReplyError is raised.
        """
        if self._run_task is None and self._stopped is None:
            raise RuntimeError("call connect() first, or use 'async with Client(...)'")
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.command_timeout) as scope:
                while True:
                    await self._ready.wait()
                    if self._stopped is not None:
                        raise self._stopped
                    conn = self._conn
                    assert conn is not None  # ready and not stopped
                    try:
                        return conn, await call(conn)
                    except ReplyError as exc:
                        if not (when_busy and exc.code == ErrorCode.TOO_MANY_REQUESTS and exc.retry_after > 0):
                            raise
                        # The hub already spaces the advice of commands refused together (each
                        # is told when a token is there for it); the jitter adds slack.
                        wait = exc.retry_after * (1.0 + random.random())
                        deadline = scope.when()
                        if deadline is not None and loop.time() + wait >= deadline:
                            raise
                        await asyncio.sleep(wait)
                    except ConnectionLost:
                        if not retry:
                            raise
                        if self._conn is conn:
                            # Its reader has ended, so _on_end should have taken it out (_open
                            # never publishes an ended one); do it now rather than retry on it
                            # without ever yielding.
                            self._on_end(conn)
                        # The ready state is clear until the next connection (or the stop).
        except TimeoutError:
            raise CommandTimeout(f"no reply within {self.command_timeout}s") from None

    async def subscribe(
        self,
        channel: str,
        *,
        events: bool = False,
        token: str | None = None,
        get_token: Callable[[], Awaitable[str]] | None = None,
    ) -> Subscription:
        """Subscribe to ``channel``; iterate the returned :class:`Subscription`.

        With ``events=True`` the subscription also queues the channel's
        :data:`Event` objects for ``sub.events()``. In a live channel,
        ``sub.state`` holds the snapshot when this returns; in a status
        channel, ``sub.status`` the user's status.

        Channels of namespaces with ``subscribe = "token"`` need a subscription
        token (a JWT from the app's backend with ``sub`` = the user and
        ``channel`` = the channel): pass ``token``, sent with every
        (re)subscribe, or ``get_token`` (async, returns a token), called
        before this subscribe (unless ``token`` is given too), before every
        resubscribe (reconnects, a hub's "recover" unsubscribe, a live gap),
        and once more when the hub answers TOKEN_EXPIRED, so the subscription
        outlives any one token. When ``get_token`` fails on a resubscribe, it
        is called again with the reconnect backoff while the connection lives;
        :meth:`close` cancels a call in flight.

        Raises :class:`ReplyError` if the hub refuses (PERMISSION_DENIED
        without a valid token, TOKEN_EXPIRED for an expired one),
        :class:`TokenError` if ``get_token`` fails, ``ValueError`` if this
        client is already subscribed to ``channel``.
        """
        if self._stopped is not None:
            raise self._stopped
        if channel in self._subs:
            raise ValueError(f"already subscribed to {channel!r}")
        sub = Subscription(self, channel, events=events, token=token, get_token=get_token)
        self._subs[channel] = sub
        try:
            # A timeout or cancellation here leaves _subscribe_on to unsubscribe it on the hub.
            conn, gap = await self._on_connection(lambda conn: self._subscribe_on(conn, sub))
        except BaseException:
            if self._subs.get(channel) is sub:
                del self._subs[channel]
            raise
        if gap:
            self._start_resync(conn, sub)
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.channel) is not sub:
            sub._end(None)
            return
        del self._subs[sub.channel]
        sub._end(None)
        conn = self._conn
        if conn is None or not self.connected:
            # The hub forgets it with the connection; one still opening gets the
            # Unsubscribe when its resubscribe of ``sub`` is answered (_subscribe_on).
            return
        try:
            async with asyncio.timeout(self.command_timeout):
                await self._release(conn, sub)  # also when its (re)subscribe is still in flight
        except (ConnectionLost, ConnectionClosed):
            pass  # the hub drops subscriptions with the connection
        except TimeoutError:
            raise CommandTimeout(f"no reply within {self.command_timeout}s") from None

    async def publish(self, channel: str, data: Any, *, key: str | None = None) -> Sent:
        """Publish ``data`` (any MessagePack-serializable value); returns its position.

        The result is a :class:`StreamPosition` with, in chat channels, the
        message id and time (:class:`Sent`). ``key`` (1..64 characters) is the
        publish id, a fresh random one when None: the hub stores a publish at
        most once per id and sender, and answers a repeat within its window
        (``publish_id_window``; chat: the namespace's ``idempotency_window``)
        with the first publish's result.

        With a ``key`` of the app's, a signed-in client resends on its own with
        it: on the next connection when the connection drops before the reply,
        and, up to :data:`PUBLISH_ATTEMPTS` times, when the hub answers
        OUTCOME_UNKNOWN (it could not learn whether the publish was stored).
        Without one (or as an anonymous user, whose ids do not outlive the
        connection) a drop raises :class:`ConnectionLost` and the publication
        may or may not exist. Every error of a publish carries its id as
        ``error.key``: publish again with ``key=error.key`` to make sure the
        message is stored once.
        """
        payload = msgpack.packb(data)
        signed_in = key is not None and bool(self.user)
        key = key or new_publish_id()
        attempt = 1
        while True:
            try:
                result = await self._request(
                    lambda id: m.Publish(id, channel, payload, key), m.PublishResult, retry=signed_in
                )
                return Sent(result.offset, result.epoch, result.mid, result.time)
            except ClientError as exc:
                exc.key = key
                unknown = isinstance(exc, ReplyError) and exc.code == ErrorCode.OUTCOME_UNKNOWN
                if not (unknown and signed_in) or attempt >= PUBLISH_ATTEMPTS:
                    raise
            await asyncio.sleep(PUBLISH_RETRY_DELAY * attempt)
            attempt += 1

    async def history(
        self, channel: str, *, limit: int | None = None, before: int | None = None, after: int | None = None
    ) -> HistoryPage:
        """A page of ``channel``'s history, oldest first, with the stream's position now.

        Without ``before``/``after``: the newest ``limit`` publications; with
        ``before`` (an offset): the ``limit`` just before it; with ``after``:
        the ``limit`` just after it. The hub caps a page at 100. Subscribers
        may read; others need the right to subscribe. A hub reply that stopped at
        its byte budget (``truncated``) is followed by the next one here, until
        ``limit`` publications are in or history ends, so each reply stays small.
        """
        if before is not None and after is not None:
            raise ValueError("pass before or after, not both")
        want = MAX_HISTORY_PAGE if limit is None or limit <= 0 else min(limit, MAX_HISTORY_PAGE)
        pubs: list[m.Publication] = []
        while True:
            command = functools.partial(m.History, channel=channel, limit=want - len(pubs), before=before, after=after)
            result = await self._request(command, m.HistoryResult)
            got = result.publications
            if after is None:
                pubs[:0] = got
            else:
                pubs.extend(got)
            if not (result.truncated and got and len(pubs) < want):
                break
            if after is None:  # the newest came first: page on towards older ones
                before = got[0].offset
            else:
                after = got[-1].offset
        messages = (message_of(pub) for pub in pubs)
        return HistoryPage((p for p in messages if p is not None), StreamPosition(result.offset, result.epoch))

    async def typing(self, channel: str, typing: bool = True) -> None:
        """Tell a chat channel's subscribers that this user is typing (or, ``typing=False``, stopped).

        Subscribers get a :class:`TypingChanged` event; ``True`` lapses after the
        namespace's ``typing_timeout``. Sending faster than its
        ``typing_interval`` raises :class:`ReplyError` TOO_MANY_REQUESTS (a
        temporary error, with ``retry_after``), as does the hub's command budget:
        unlike other commands, typing is not resent later. Needs a user, a
        subscription to the channel and the right to publish there.
        """
        # A stale notice is worth nothing: its TOO_MANY_REQUESTS goes to the app, not resent later.
        await self._request(lambda id: m.Typing(id, channel, typing), m.EmptyResult, retry=False, when_busy=False)

    async def read(self, channel: str, offset: int) -> int:
        """Mark a chat channel read up to ``offset``; returns the receipt the hub now holds.

        Subscribers get a :class:`ReadReceipt` event. A receipt never moves
        backwards: an offset below the stored one raises :class:`ReplyError`
        CONFLICT (the same offset again succeeds).
        """
        return (await self._request(lambda id: m.Read(id, channel, offset), m.ReadResult)).offset

    async def receipts(self, channel: str) -> dict[str, int]:
        """Who has read a chat channel up to where: user -> offset."""
        return dict((await self._request(lambda id: m.Receipts(id, channel), m.ReceiptsResult)).receipts)

    async def presence(self, channel: str) -> dict[str, PresenceMember]:
        """Who is in ``channel``: connection id -> :class:`PresenceMember` (the namespace needs presence)."""
        result = await self._request(lambda id: m.PresenceQuery(id, channel), m.PresenceResult)
        return {
            client: PresenceMember(member.user, unpack_info(member.info)) for client, member in result.clients.items()
        }

    async def presence_stats(self, channel: str) -> PresenceStats:
        """How many connections and unique users are in ``channel``, without listing them."""
        result = await self._request(lambda id: m.PresenceStatsQuery(id, channel), m.PresenceStatsResult)
        return PresenceStats(result.clients, result.users)

    async def status(self, *users: str) -> list[UserStatus]:
        """Online status and last seen time of ``users``, in the same order.

        Any number of users: the hub takes 100 per command, so more are asked
        in several. To follow one user's changes, subscribe to their status
        channel (``status:alice``): ``sub.status`` and :class:`StatusChanged`.
        """
        found: list[UserStatus] = []
        for i in range(0, len(users), MAX_STATUS_USERS):
            make = functools.partial(_status_query, users=users[i : i + MAX_STATUS_USERS])
            found.extend((await self._request(make, m.StatusResult)).users)
        return found

    async def rpc(self, method: str, data: Any = None) -> Any:
        """Call ``method`` of the app's backend with ``data`` (any value); returns its answer.

        The backend's refusals raise :class:`ReplyError` with the app's own code (1000 and
        up) or PERMISSION_DENIED; a backend that could not answer, NOT_AVAILABLE (the call may
        or may not have run). Never sent again after a reconnect (see :class:`ConnectionLost`):
        the app decides which calls are safe to repeat.
        """
        payload = msgpack.packb(data)
        result = await self._request(lambda id: m.Rpc(id, method, payload), m.RpcResult, retry=False)
        return unpack(result.data)

    def _connect_data(self) -> bytes | None:
        return None if self.data is None else msgpack.packb(self.data)

    async def state_set(self, channel: str, key: str, value: Any, *, version: int | None = None) -> int:
        """Set ``key`` of a live channel to ``value`` (None deletes it); returns the channel's new version.

        With ``version``, the write applies only if the key was last set at
        that version (0: the key does not exist; ``sub.key_version(key)``),
        else :class:`ReplyError` CONFLICT. Not retried across reconnects (see
        :class:`ConnectionLost`). Needs ``client_write`` in the namespace.
        """
        payload = msgpack.packb(value)
        result = await self._request(
            lambda id: m.StateSet(id, channel, key, payload, version), m.StateResult, retry=False
        )
        return result.version

    async def state_patch(self, channel: str, key: str, patch: Mapping[str, Any], *, version: int | None = None) -> int:
        """Apply a JSON Merge Patch (RFC 7386: None removes a member) to ``key``; returns the new version.

        ``version`` and errors as :meth:`state_set`.
        """
        if not isinstance(patch, Mapping):
            raise TypeError(f"a merge patch is a mapping, not {type(patch).__name__}")
        payload = msgpack.packb(dict(patch))
        result = await self._request(
            lambda id: m.StatePatch(id, channel, key, payload, version), m.StateResult, retry=False
        )
        return result.version

    async def ping(self) -> float:
        """Round trip to the hub through the protocol; returns seconds. Waits for a connection."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._request(m.Ping, m.EmptyResult)
        return loop.time() - start

    def subscriptions(self) -> dict[str, Subscription]:
        """The current subscriptions by channel (a copy)."""
        return dict(self._subs)


def _retry_after_header(value: str | None) -> float | None:
    """An HTTP Retry-After in seconds (the HTTP-date form is not used by the hub), or None."""
    try:
        seconds = float(value) if value is not None else None
    except ValueError:
        return None
    return seconds if seconds is not None and 0 < seconds < 86400 else None


def _status_query(id: int, users: tuple[str, ...]) -> m.StatusQuery:
    return m.StatusQuery(id, users)
