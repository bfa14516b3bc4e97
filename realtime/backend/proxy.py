"""Proxies: the app's backend decides connects, refreshes, subscribes and publishes, and answers rpc.

:class:`Proxies` is a feature (``rpc`` command, refresh timers) and the collaborator
:class:`realtime.commands.Commands` asks at its decision points (:class:`BackendProxy`). Every
request is a signed POST (:class:`~realtime.backend.http.BackendClient`) carrying the connection
id (``client``), ``user``, ``node`` and ``remote`` address; docs/integration.md ("Proxies", "RPC")
gives the bodies. The backend answers one of::

    {"result": {...}}                              allowed; what the result holds depends on the call
    {"error": {"code": int, "message": str}}       refused: a typed error for the client
    {"disconnect": {"code": 4000-4999, "reason": str}}   refused: the connection ends with that code

and the hub maps what cannot be an answer (timeout, connection refused, 5xx, a body that is not one
of those, the endpoint's breaker open) to a temporary refusal: close 4008 with ``retry_after`` for a
connect, error 108 NOT_AVAILABLE with ``retry_after`` for a command. An error ``code`` in the app's
range (:data:`APP_CODES`) reaches the client as it is; any other becomes PERMISSION_DENIED (a
connect: close 4501).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Protocol

import msgpack  # type: ignore[import-untyped]  # no stubs

from protocol.codes import CloseCode, ErrorCode
from protocol.errors import CommandError, DisconnectError, RealtimeError
from protocol.messages import Connect, Error, Publish, Result, Rpc, RpcResult, Subscribe

from ..auth import Identity
from ..feature import Feature, Handler
from ..namespaces import user_id_problem
from .http import Answer, BackendClient, Failure, Outcome

if TYPE_CHECKING:
    from ..config import Settings
    from ..connection import Connection
    from ..namespaces import Namespace

log = logging.getLogger("realtime.backend")

#: Error codes the app's backend may give its refusals; the client gets them as they are.
APP_CODES = range(1000, 65536)
#: Close codes the backend may end a connection with (4500-4999: the client must not reconnect).
DISCONNECT_CODES = range(4000, 5000)
#: Seconds a client is told to wait when the backend failed and its breaker is not open.
RETRY_AFTER = 1.0
#: Seconds between refresh attempts while the backend fails (the token grace window bounds them).
REFRESH_RETRY = 1.0
#: Latest ``expires`` a backend may give (the last second of year 9999): replies carry it as an int64.
MAX_EXPIRES = 253_402_300_799
_NIL = b"\xc0"


class AppError(CommandError):
    """A refusal with the app's own code (:data:`APP_CODES`), as its backend gave it.

    Counted as PERMISSION_DENIED (audit); the client gets ``app_code``."""

    def __init__(self, app_code: int, message: str) -> None:
        super().__init__(ErrorCode.PERMISSION_DENIED, message)
        self.app_code = app_code

    def to_error(self) -> Error:
        return Error(self.app_code, self.message)


class BackendAnswerError(RealtimeError):
    """The backend answered, but not with one of the documented bodies."""


class ProxyHost(Protocol):
    """What the proxies use of the hub."""

    @property
    def settings(self) -> Settings: ...


def unpack(data: bytes) -> Any:
    """A client's msgpack value as a Python value for the request body."""
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


def pack(value: Any) -> bytes:
    try:
        return msgpack.packb(value, use_bin_type=True)  # type: ignore[no-any-return]
    except (TypeError, ValueError, OverflowError):
        raise BackendAnswerError("value cannot be packed") from None


class Proxies(Feature):
    """The proxies configured in ``settings``; ``node`` is this node's name in requests."""

    def __init__(self, host: ProxyHost, client: BackendClient, node: str) -> None:
        self.settings = host.settings
        self.client = client
        self.node = node
        self._refreshing: dict[str, asyncio.TimerHandle | asyncio.Task[None]] = {}
        self._tasks: set[asyncio.Task[None]] = set()

    def commands(self) -> Mapping[type, Handler]:
        return {Rpc: self.rpc}

    # --- requests --------------------------------------------------------------------

    def _body(self, conn: Connection, **fields: Any) -> dict[str, Any]:
        return {"client": conn.id, "user": conn.user, "node": self.node, "remote": conn.remote, **fields}

    async def _call(self, url: str, body: dict[str, Any], timeout: float | None = None) -> Outcome:
        try:
            return await self.client.post(url, body, timeout=timeout)
        except (TypeError, ValueError):  # data the body's format cannot carry (bytes in JSON)
            raise CommandError(ErrorCode.BAD_REQUEST, f"data cannot be sent as {self.client.format}") from None

    @staticmethod
    def _answer(outcome: Outcome, what: str) -> dict[str, Any]:
        """The ``result`` map of an allowing answer; raise the refusal or failure as client errors.

        Failures and malformed answers: NOT_AVAILABLE (temporary) with retry advice.
        """
        if isinstance(outcome, Failure):
            log.warning("%s proxy failed: %s", what, outcome.reason + (f" {outcome.status}" if outcome.status else ""))
            raise CommandError(
                ErrorCode.NOT_AVAILABLE, "backend unavailable", retry_after=outcome.retry_after or RETRY_AFTER
            )
        try:
            return _result(outcome)
        except BackendAnswerError as exc:
            log.warning("%s proxy answered badly: %s", what, exc)
            raise CommandError(ErrorCode.NOT_AVAILABLE, "backend unavailable", retry_after=RETRY_AFTER) from None

    # --- connect and refresh ------------------------------------------------------------

    def handles_connect(self, cmd: Connect, has_token_key: bool) -> bool:
        """Whether the connect proxy decides this connect: it is configured, and the connect
        carries no token, or a token the hub cannot verify (no token key: the app's own session
        token). With a token key configured, a token is a JWT and is verified as ever."""
        return bool(self.settings.proxy_connect) and (not cmd.token or not has_token_key)

    async def connect(self, conn: Connection, cmd: Connect) -> Identity:
        """Ask the backend who this connection is; raise DisconnectError when it may not connect."""
        body = self._body(conn, name=cmd.name or "", version=cmd.version or "", headers=conn.proxy_headers)
        if cmd.token:
            body["token"] = cmd.token
        if cmd.data is not None:
            body["data"] = unpack(cmd.data)
        try:
            result = self._answer(await self._call(self.settings.proxy_connect, body), "connect")
        except CommandError as exc:
            if exc.code == ErrorCode.NOT_AVAILABLE:
                raise DisconnectError(
                    CloseCode.OVERLOADED, "backend unavailable", retry_after=exc.retry_after
                ) from None
            raise DisconnectError(CloseCode.UNAUTHORIZED, exc.message) from None
        try:
            return _identity(result, None)
        except BackendAnswerError as exc:
            log.warning("connect proxy answered badly: %s", exc)
            raise DisconnectError(CloseCode.OVERLOADED, "backend unavailable", retry_after=RETRY_AFTER) from None

    async def on_connect(self, conn: Connection) -> None:
        self._schedule_refresh(conn)

    async def on_disconnect(self, conn: Connection) -> None:
        pending = self._refreshing.pop(conn.id, None)
        if pending is not None:
            pending.cancel()

    def _schedule_refresh(self, conn: Connection, delay: float | None = None) -> None:
        """Call the refresh proxy when the connection's identity expires (proxied ones only)."""
        expires = conn.identity.expires
        if not (self.settings.proxy_refresh and conn.proxied and expires is not None) or conn.closed:
            return
        if delay is None:
            delay = max(0.0, expires - time.time())
        loop = asyncio.get_running_loop()
        self._refreshing[conn.id] = loop.call_later(delay, self._start_refresh, conn)

    def _start_refresh(self, conn: Connection) -> None:
        task = asyncio.ensure_future(self._refresh(conn))
        self._refreshing[conn.id] = task
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _refresh(self, conn: Connection) -> None:
        """Extend the connection, or end it as the backend says. While the backend fails it is
        asked again every :data:`REFRESH_RETRY` seconds; the connection's own expiry (``exp``
        plus ``token_grace``) ends it when no answer came in time."""
        if conn.closed:
            return
        try:
            result = self._answer(await self._call(self.settings.proxy_refresh, self._body(conn)), "refresh")
            identity = _identity(result, conn.user)
        except DisconnectError as exc:
            conn.close(exc)
            return
        except CommandError as exc:
            if exc.code == ErrorCode.NOT_AVAILABLE:
                self._schedule_refresh(conn, REFRESH_RETRY)
            else:
                conn.close(DisconnectError(CloseCode.UNAUTHORIZED, exc.message))
            return
        except BackendAnswerError as exc:
            log.warning("refresh proxy answered badly: %s", exc)
            self._schedule_refresh(conn, REFRESH_RETRY)
            return
        if conn.closed:
            return
        if identity.expires is not None and identity.expires <= time.time():
            conn.close(DisconnectError(CloseCode.TOKEN_EXPIRED, "expired by the backend"))
            return
        conn.authenticate(identity)
        self._schedule_refresh(conn)

    # --- subscribe and publish -----------------------------------------------------------

    async def subscribe(self, conn: Connection, ns: Namespace, cmd: Subscribe) -> bytes | None:
        """Ask the namespace's subscribe proxy; the subscription's info (msgpack; None: the
        connection's own), or raise the refusal."""
        body = self._body(conn, channel=cmd.channel)
        if cmd.token is not None:
            body["token"] = cmd.token
        result = self._answer(await self._call(ns.subscribe_proxy, body, ns.proxy_timeout), "subscribe")
        if result.get("info") is None:
            return None
        try:
            return pack(result["info"])
        except BackendAnswerError:
            raise CommandError(ErrorCode.NOT_AVAILABLE, "backend unavailable", retry_after=RETRY_AFTER) from None

    async def publish(self, conn: Connection, ns: Namespace, cmd: Publish) -> bytes:
        """Ask the namespace's publish proxy; the data to publish (the backend may rewrite it)."""
        body = self._body(conn, channel=cmd.channel, data=unpack(cmd.data), key=cmd.key)
        result = self._answer(await self._call(ns.publish_proxy, body, ns.proxy_timeout), "publish")
        if "data" not in result:
            return cmd.data
        try:
            return pack(result["data"])
        except BackendAnswerError:
            raise CommandError(ErrorCode.NOT_AVAILABLE, "backend unavailable", retry_after=RETRY_AFTER) from None

    # --- rpc ---------------------------------------------------------------------------

    async def rpc(self, conn: Connection, cmd: Rpc) -> Result:
        if not self.settings.proxy_rpc:
            raise CommandError(ErrorCode.UNKNOWN_COMMAND, "rpc is not configured")
        body = self._body(conn, method=cmd.method, data=unpack(cmd.data))
        result = self._answer(await self._call(self.settings.proxy_rpc, body), "rpc")
        try:
            return RpcResult(pack(result.get("data")) if "data" in result else _NIL)
        except BackendAnswerError:
            raise CommandError(ErrorCode.NOT_AVAILABLE, "backend unavailable", retry_after=RETRY_AFTER) from None

    async def close(self) -> None:
        for pending in self._refreshing.values():
            pending.cancel()
        self._refreshing.clear()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


#: Characters of a backend's error message that reach the client (a disconnect reason: 100).
MAX_ERROR_MESSAGE = 200


def _result(answer: Answer) -> dict[str, Any]:
    """The ``result`` of an answer; the refusal it carries raised as a client error."""
    body = answer.body
    if "disconnect" in body:
        d = body["disconnect"]
        code, reason = (d.get("code"), d.get("reason", "")) if isinstance(d, dict) else (None, None)
        if type(code) is not int or code not in DISCONNECT_CODES or not isinstance(reason, str):
            raise BackendAnswerError("disconnect needs a code 4000..4999 and a reason string")
        raise DisconnectError(code, reason[:100] or "disconnected by the backend")
    if "error" in body:
        e = body["error"]
        code, message = (e.get("code"), e.get("message", "")) if isinstance(e, dict) else (None, None)
        if type(code) is not int or not isinstance(message, str):
            raise BackendAnswerError("error needs an integer code and a message string")
        # An error message is short and for humans (protocol.md): a backend's long one is cut, so
        # that a refusal cannot cost the client (or the logs) up to an answer's whole size.
        message = message[:MAX_ERROR_MESSAGE] or "refused by the backend"
        if code in APP_CODES:
            raise AppError(code, message)
        raise CommandError(ErrorCode.PERMISSION_DENIED, message)
    result = body.get("result")
    if not isinstance(result, dict):
        raise BackendAnswerError("expected one of result, error and disconnect")
    return result


def _identity(result: Mapping[str, Any], user: str | None) -> Identity:
    """The identity a connect (``user`` None) or refresh (the connection's user) result gives."""
    if user is None:
        user = result.get("user", "")
        if not isinstance(user, str):
            raise BackendAnswerError("user must be a string")
        problem = user and user_id_problem(user)
        if problem:
            raise BackendAnswerError(f"user is not a usable user id: {problem}")
    expires = result.get("expires")
    if expires is not None and (
        isinstance(expires, bool) or not isinstance(expires, (int, float)) or not 0 <= expires <= MAX_EXPIRES
    ):
        raise BackendAnswerError("expires must be a Unix time")
    channels = result.get("channels", [])
    if not isinstance(channels, list) or not all(isinstance(c, str) for c in channels):
        raise BackendAnswerError("channels must be a list of strings")
    info = result.get("info")
    return Identity(
        user=user,
        info=None if info is None else pack(info),
        channels=tuple(channels),
        expires=None if not expires else float(expires),
        issued_at=time.time(),
    )
