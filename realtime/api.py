"""The server API: HTTP routes under ``/api/`` for backend services.

``setup_api(app, hub, presence=..., live=...)`` mounts them (the composition
root, ``realtime.server.create_app``, does; the presence and live routes use
the features it built, through the Protocols :class:`PresenceQueries` and
:class:`LiveStates`);
backends call them with :class:`realtime.publisher.Publisher` or any HTTP
client. realtime/openapi.json (installed with the package) describes every route and is served as
``GET /api/openapi.json``; a test keeps the two in step.

* Requests: POST bodies are a JSON object, or a MessagePack map with
  ``Content-Type: application/msgpack``; GET takes query parameters. A body
  may be :data:`MAX_BODY` bytes (or twice ``max_frame_size`` if that is
  larger), and ``data``/``value``/``patch``, packed to MessagePack, at most
  ``max_frame_size``: what the server publishes is never bigger than what a
  client may send.
* Compression: a body may have ``Content-Encoding: gzip`` (or ``x-gzip``) or
  ``deflate`` (zlib, or raw deflate); any other encoding, or more than one, is
  415 with ``Accept-Encoding: gzip, deflate``. The body limit holds for the
  body as sent and as expanded: expansion stops at the limit (413, the rest
  never expanded); a body that does not decompress is 400. The API expands it
  itself (:data:`HANDLER_ARGS` turns aiohttp's decompression off), after
  authentication, :data:`INFLATE_CHUNK` bytes at a time with the event loop
  running between.
* Order: authentication (401, 403), then the body's type and encoding (415)
  and Content-Length (413), then the body. A request refused before its body
  is read to its end is answered with ``Connection: close`` and its connection
  closed, the rest of the body left unread (aiohttp would otherwise drain it).
* Responses: MessagePack when ``Accept`` asks for ``application/msgpack`` (or
  when the request body was MessagePack and ``Accept`` names no type), JSON
  otherwise. In JSON, MessagePack binary values inside data become base64.
* Auth: ``Authorization: apikey <key>`` (or ``Bearer <key>``), a key of
  ``Settings.api_keys`` (:func:`realtime.auth.find_api_key`) allowing the
  route's scope. Only ``/api/openapi.json`` needs no key.
* Errors: a 4xx/5xx status with ``{"code": int, "message": str}``, ``code``
  an :class:`~protocol.codes.ErrorCode` (:data:`STATUS` maps it to the HTTP
  status). Unexpected failures are logged and answered 500 INTERNAL, without
  details. aiohttp's own errors under ``/api`` (404, 405, 413...) are turned
  into this map by :func:`api_middleware`; a request aiohttp cannot parse (a
  malformed request line or header) is answered by aiohttp before any route
  or middleware runs, in text (400, ``Connection: close``).
* Logs: a client's fault is one INFO line without a traceback or a header
  value: a body that does not decompress, a client that leaves mid-body, a
  malformed request (:class:`realtime.logs.HttpClientErrors`).
"""

from __future__ import annotations

import asyncio
import logging
import math
import re
import time
import zlib
from collections.abc import Awaitable, Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final, Protocol

import msgpack  # type: ignore[import-untyped]  # no stubs
import orjson
from aiohttp import web
from multidict import MultiMapping

from protocol.codes import CLOSE_REASONS, CloseCode, ErrorCode
from protocol.errors import CommandError, ProtocolError
from protocol.fields import keep_pairs
from protocol.json_codec import load_value, msgpack_to_json
from protocol.limits import MAX_IDEMPOTENCY_KEY_LENGTH, MAX_OFFSET, MAX_STATE_KEY_LENGTH, MAX_STATUS_USERS
from protocol.messages import (
    PresenceMember,
    PresenceStatsResult,
    Publication,
    PublishResult,
    StateEntry,
    UserStatus,
)
from protocol.wire import check_channel, pack_data

from . import audit
from .auth import ApiKey, find_api_key
from .engines.errors import EngineError, client_error
from .feature import namespace_of
from .hub import Hub
from .logs import ApiCaller, bound, install_http_log_filter, safe
from .namespaces import Namespace

__all__ = [
    "API",
    "ENCODINGS",
    "HANDLER_ARGS",
    "MAX_BODY",
    "MAX_BROADCAST_CHANNELS",
    "OPENAPI_FILE",
    "ROUTES",
    "STATUS",
    "Api",
    "guarded",
    "setup_api",
]

log = logging.getLogger("realtime.api")

PREFIX: Final = "/api"
#: The OpenAPI document, kept in the repository and served as is.
OPENAPI_FILE: Final = Path(__file__).resolve().parent / "openapi.json"
#: How far ahead of now a revoke's ``before`` may be, in seconds (clock skew between a backend and the hub).
MAX_REVOKE_AHEAD: Final = 300
#: Largest request body, in bytes (twice ``max_frame_size`` when that is larger).
MAX_BODY: Final = 1024 * 1024
#: Most channels one broadcast may name.
MAX_BROADCAST_CHANNELS: Final = 100
#: Longest user id accepted, in characters.
MAX_USER_LENGTH: Final = 255
# Idempotency keys, live state keys and users per status query: the protocol's limits (protocol.limits).

JSON: Final = "application/json"
MSGPACK: Final = "application/msgpack"
_MSGPACK_TYPES: Final = frozenset({MSGPACK, "application/x-msgpack", "application/vnd.msgpack"})
#: The Content-Encodings a request body may have (besides none, or identity); others are 415.
ENCODINGS: Final = ("gzip", "deflate")
_ENCODINGS: Final[Mapping[str, str]] = {"gzip": "gzip", "x-gzip": "gzip", "deflate": "deflate"}
#: Most bytes a compressed body expands to in one step, before the limit is checked and the loop runs others.
INFLATE_CHUNK: Final = 64 * 1024
#: Options of aiohttp's request handler the API needs (``create_app`` passes them as the
#: application's ``handler_args``): bodies reach :func:`_read_body` as sent, which decompresses
#: them itself, after authentication and within the body limit, instead of aiohttp decompressing
#: whatever arrives (a key or not) as it is read or drained.
HANDLER_ARGS: Final[Mapping[str, object]] = {"auto_decompress": False}

#: HTTP status of each error code (unlisted codes: 400).
STATUS: Final[Mapping[ErrorCode, int]] = {
    ErrorCode.INTERNAL: 500,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.UNKNOWN_CHANNEL: 404,
    ErrorCode.PERMISSION_DENIED: 403,
    ErrorCode.UNKNOWN_COMMAND: 404,
    ErrorCode.ALREADY_SUBSCRIBED: 409,
    ErrorCode.LIMIT_EXCEEDED: 413,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.NOT_AVAILABLE: 503,
    ErrorCode.TOKEN_EXPIRED: 401,
    ErrorCode.TOO_MANY_REQUESTS: 429,
    ErrorCode.UNRECOVERABLE_POSITION: 409,
    ErrorCode.NOT_SUBSCRIBED: 409,
    ErrorCode.DUPLICATE_ID: 409,
    ErrorCode.ALREADY_CONNECTED: 409,
    ErrorCode.CONFLICT: 409,
    ErrorCode.OUTCOME_UNKNOWN: 503,
}


class ApiRefusal(CommandError):
    """A refusal with an HTTP status of its own (415, 405...), not the one :data:`STATUS` gives its code."""

    def __init__(self, status: int, code: ErrorCode, message: str, headers: Mapping[str, str] | None = None) -> None:
        super().__init__(code, message)
        self.status = status
        self.headers = dict(headers or {})


def _bad(message: str) -> CommandError:
    return CommandError(ErrorCode.BAD_REQUEST, message)


class UnreadableBody(CommandError):
    """A body that cannot be read as sent (does not decompress, a broken chunked encoding): 400, and
    a line in the log at INFO, since it is the client's fault, not the hub's."""

    def __init__(self, message: str) -> None:
        super().__init__(ErrorCode.BAD_REQUEST, message)


# --- values in responses ---------------------------------------------------------


class Data:
    """A msgpack value inside a response: native in MessagePack, transcoded in JSON."""

    __slots__ = ("packed",)

    def __init__(self, packed: bytes) -> None:
        self.packed = packed


def _json_default(value: object) -> object:
    if isinstance(value, Data):
        return orjson.Fragment(msgpack_to_json(value.packed))
    raise TypeError


_packer = msgpack.Packer()
_pack: Callable[[object], bytes] = _packer.pack


def _emit(value: object, out: list[bytes]) -> None:
    """Append the msgpack of ``value``, each :class:`Data` copied as stored (never decoded:
    a map of the server side may hold keys a dict would merge, such as 1 and true)."""
    if isinstance(value, Data):
        out.append(value.packed)
    elif isinstance(value, dict):
        out.append(_packer.pack_map_header(len(value)))
        for k, v in value.items():
            out.append(_pack(k))
            _emit(v, out)
    elif isinstance(value, list | tuple):
        out.append(_packer.pack_array_header(len(value)))
        for v in value:
            _emit(v, out)
    else:
        out.append(_pack(value))


def render(payload: object, fmt: str) -> bytes:
    """The response body of ``payload`` (dicts, lists, scalars and :class:`Data`) in ``fmt``."""
    if fmt == MSGPACK:
        out: list[bytes] = []
        _emit(payload, out)
        return b"".join(out)
    return orjson.dumps(payload, default=_json_default)


def _data_or_none(packed: bytes | None) -> Data | None:
    return None if packed is None else Data(packed)


def publication_map(pub: Publication) -> dict[str, object]:
    """A publication as the history route returns it."""
    m: dict[str, object] = {"channel": pub.channel, "data": Data(pub.data), "offset": pub.offset, "epoch": pub.epoch}
    if pub.mid:
        m["mid"] = pub.mid
        m["time"] = pub.time
    if pub.info is not None:
        info: dict[str, object] = {"user": pub.info.user, "client": pub.info.client}
        if pub.info.info is not None:
            info["info"] = Data(pub.info.info)
        m["info"] = info
    return m


def _publish_map(result: PublishResult) -> dict[str, object]:
    m: dict[str, object] = {"offset": result.offset, "epoch": result.epoch}
    if result.mid:
        m["mid"] = result.mid
        m["time"] = result.time
    return m


def _error_map(exc: CommandError) -> dict[str, object]:
    return {"code": int(exc.code), "message": exc.message}


def refusal(exc: Exception) -> CommandError:
    """The client error for a request that failed with ``exc``: the one place the API
    turns engine errors (an outage: 503, NOT_AVAILABLE, or OUTCOME_UNKNOWN when a publish may have
    happened) and unexpected failures (INTERNAL) into them."""
    if isinstance(exc, CommandError):
        return exc
    if isinstance(exc, EngineError):
        return client_error(exc)
    return CommandError(ErrorCode.INTERNAL)


# --- reading requests ------------------------------------------------------------

Body = dict[str, Any]
Query = MultiMapping[str]


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValueError("msgpack ext types are not allowed")


def _content_type(request: web.Request) -> str:
    """The request body's type: JSON or MSGPACK (JSON without a Content-Type); 415 otherwise."""
    if not request.headers.get("Content-Type", "").strip():
        return JSON
    ctype = request.content_type.lower()
    if ctype in _MSGPACK_TYPES:
        return MSGPACK
    if ctype == JSON or ctype.endswith("+json"):
        return JSON
    raise ApiRefusal(415, ErrorCode.BAD_REQUEST, "expected a body of type application/json or application/msgpack")


def response_format(request: web.Request) -> str:
    """MSGPACK or JSON: what ``Accept`` names alone, else the request body's type, else JSON."""
    accept = request.headers.get("Accept", "").lower()
    msgpack_ok = any(t in accept for t in _MSGPACK_TYPES)
    json_ok = JSON in accept
    if msgpack_ok != json_ok:
        return MSGPACK if msgpack_ok else JSON
    if (
        request.method == "POST"
        and request.headers.get("Content-Type", "").split(";")[0].strip().lower() in _MSGPACK_TYPES
    ):
        return MSGPACK
    return JSON


def _content_encoding(request: web.Request) -> str:
    """The body's Content-Encoding: "identity", "gzip" or "deflate"; 415 for any other (or several)."""
    names = [n.strip().lower() for n in request.headers.getall("Content-Encoding", []) for n in n.split(",")]
    names = [n for n in names if n and n != "identity"]
    if not names:
        return "identity"
    if len(names) == 1 and names[0] in _ENCODINGS:
        return _ENCODINGS[names[0]]
    raise ApiRefusal(
        415,
        ErrorCode.BAD_REQUEST,
        "unsupported Content-Encoding: use gzip or deflate, or none",
        {"Accept-Encoding": ", ".join(ENCODINGS)},
    )


class ClientGone(Exception):
    """The client closed the connection before its request body was complete: nobody to answer."""


class _Inflater:
    """Decompresses a gzip or deflate body a bounded piece at a time: :meth:`feed` yields at most
    :data:`INFLATE_CHUNK` bytes per piece, so that the caller can count each piece against its
    limit (stopping there, the rest never expanded) and give the loop a turn between pieces."""

    def __init__(self, encoding: str) -> None:
        self.encoding = encoding
        self._z: Any = None  # made on the first byte: deflate is zlib-wrapped (RFC 9110) or raw (seen in the wild)

    def _start(self, first: int) -> Any:
        if self.encoding == "gzip":
            return zlib.decompressobj(16 + zlib.MAX_WBITS)
        return zlib.decompressobj(zlib.MAX_WBITS if first & 0x0F == 8 else -zlib.MAX_WBITS)

    def feed(self, data: bytes) -> Iterator[bytes]:
        pending = False  # a full piece came out: more output may wait inside zlib, with no input left
        while data or pending:
            if self._z is None:
                self._z = self._start(data[0])
            elif self._z.eof:
                if not data:
                    return  # the stream ended exactly at a full piece
                if self.encoding != "gzip":
                    raise zlib.error("data after the end of the deflate stream")
                self._z = self._start(data[0])  # gzip: another member follows
            piece = self._z.decompress(data, INFLATE_CHUNK)
            pending = len(piece) == INFLATE_CHUNK
            data = self._z.unused_data if self._z.eof else self._z.unconsumed_tail
            yield piece  # even empty (a gzip member ended): the caller gives the loop a turn per piece

    def finish(self) -> None:
        """Raises ``zlib.error`` when the stream is truncated."""
        if self._z is None or not self._z.eof:
            raise zlib.error("truncated stream")


async def _read_body(request: web.Request, limit: int, timeout: float) -> Body:
    """The body as a map; 400 when it is not one, 413 past ``limit`` bytes (compressed or
    expanded), 415 of another type or Content-Encoding, 408 when it is not all there within
    ``timeout`` seconds. Called after authentication: nothing of the body is read, nor
    decompressed, before; the expanded size counts as it is produced."""
    try:
        async with asyncio.timeout(timeout):
            return await _read_body_in_time(request, limit)
    except TimeoutError:
        # A body that trickles or stalls would hold the request (and its memory) until the
        # client gave up: aiohttp's own timeouts do not cover a request whose head has arrived.
        raise ApiRefusal(408, ErrorCode.BAD_REQUEST, f"the body was not complete within {timeout:g} s") from None


async def _read_body_in_time(request: web.Request, limit: int) -> Body:
    ctype = _content_type(request)
    encoding = _content_encoding(request)
    too_large = CommandError(ErrorCode.LIMIT_EXCEEDED, f"request body larger than {limit} bytes")
    if request.content_length is not None and request.content_length > limit:
        raise too_large
    inflater = None if encoding == "identity" else _Inflater(encoding)
    chunks: list[bytes] = []
    size = received = 0
    try:
        async for chunk in request.content.iter_any():
            received += len(chunk)
            if received > limit:
                raise too_large
            if inflater is None:
                size += len(chunk)
                chunks.append(chunk)
                continue
            for piece in inflater.feed(chunk):
                size += len(piece)
                if size > limit:  # the rest is never expanded
                    raise CommandError(
                        ErrorCode.LIMIT_EXCEEDED, f"request body larger than {limit} bytes once decompressed"
                    )
                chunks.append(piece)
                await asyncio.sleep(0)  # a piece at a time: other requests and sockets go between
        if inflater is not None and received:
            inflater.finish()
    except zlib.error:
        raise UnreadableBody(f"the body could not be decompressed ({encoding})") from None
    except ConnectionError:  # the client left mid-body (aiohttp sets this on the payload)
        raise ClientGone(f"the client left after {received} bytes of the body") from None
    except web.RequestPayloadError:  # e.g. a malformed chunked encoding
        raise UnreadableBody("the body could not be read") from None
    raw = b"".join(chunks)
    if not raw.strip():
        raise _bad("a request body is required")
    try:
        if ctype == MSGPACK:
            # Data may be any MessagePack value, maps with integer keys included: keep_pairs keeps
            # such a map's pairs as sent (a dict would merge 1 and true).
            body = msgpack.unpackb(
                raw, raw=False, strict_map_key=False, ext_hook=_refuse_ext, max_ext_len=0, object_pairs_hook=keep_pairs
            )
        else:
            body = load_value(raw)
    except ProtocolError as exc:  # its message never echoes the body
        raise _bad(f"the body is not valid JSON: {exc.message}") from None
    except Exception:  # msgpack raises several types; never echo the body
        raise _bad("the body is not valid MessagePack" if ctype == MSGPACK else "the body is not valid JSON") from None
    if not isinstance(body, dict):
        raise _bad("the body must be an object (a map)")
    return body


def _present(body: Body, name: str) -> bool:
    return body.get(name) is not None


def _required(body: Body, name: str) -> Any:
    if name not in body:
        raise _bad(f"{name} is required")
    return body[name]


def _channel(body: Body) -> str:
    return check_channel(_required(body, "channel"), "channel")


def _text(value: object, name: str, longest: int) -> str:
    if not isinstance(value, str):
        raise _bad(f"{name} must be a string")
    if not value:
        raise _bad(f"{name} must not be empty")
    if len(value) > longest:
        raise _bad(f"{name} is longer than {longest} characters")
    return value


def _uint(value: object, name: str) -> int:
    if type(value) is not int or not 0 <= value <= MAX_OFFSET:
        raise _bad(f"{name} must be an unsigned integer")
    return value


def _optional_uint(body: Body, name: str) -> int | None:
    return _uint(body[name], name) if _present(body, name) else None


def _bool(body: Body, name: str, default: bool) -> bool:
    if not _present(body, name):
        return default
    value = body[name]
    if type(value) is not bool:
        raise _bad(f"{name} must be a boolean")
    return value


def _publish_id(body: Body) -> str | None:
    """The publish id (``key``) of a publish or broadcast body, if given: 1..64 characters."""
    return _text(body["key"], "key", MAX_IDEMPOTENCY_KEY_LENGTH) if _present(body, "key") else None


def _query_value(query: Query, name: str, *, required: bool = True) -> str | None:
    values = query.getall(name, [])
    if len(values) > 1:
        raise _bad(f"{name} is given more than once")
    if not values:
        if required:
            raise _bad(f"{name} is required")
        return None
    return values[0]


def _query_channel(query: Query) -> str:
    return check_channel(_query_value(query, "channel"), "channel")


_DIGITS = re.compile(r"[0-9]{1,20}")


def _query_uint(query: Query, name: str) -> int | None:
    text = _query_value(query, name, required=False)
    if text is None:
        return None
    if not _DIGITS.fullmatch(text) or int(text) > MAX_OFFSET:
        raise _bad(f"{name} must be an unsigned integer")
    return int(text)


# --- the routes ------------------------------------------------------------------

Handler = Callable[["Api", Any], Awaitable[object]]


@dataclass(frozen=True, slots=True)
class Route:
    method: str
    path: str
    #: The API key scope it needs (realtime.auth.SCOPES).
    scope: str
    handler: Handler


class PresenceQueries(Protocol):
    """What the presence routes read (the presence feature provides it)."""

    async def members(self, channel: str) -> dict[str, PresenceMember]: ...

    async def stats(self, channel: str) -> PresenceStatsResult: ...

    async def status(self, users: Sequence[str]) -> list[UserStatus]: ...


class LiveStates(Protocol):
    """What the live state routes read and write (the live-data feature provides it)."""

    async def set_value(
        self, channel: str, key: str, value: bytes | None, *, expected_version: int | None = None
    ) -> int: ...

    async def patch_value(
        self, channel: str, key: str, patch: bytes, *, expected_version: int | None = None
    ) -> int: ...

    async def get(self, channel: str, key: str | None = None) -> tuple[list[StateEntry], int]: ...


class Api:
    """The state of the routes: the hub, the features they serve, the limits; one per app, under :data:`API`."""

    def __init__(self, hub: Hub, presence: PresenceQueries, live: LiveStates) -> None:
        self.hub = hub
        self.presence_queries = presence
        self.live_states = live
        self.settings = hub.settings
        self.max_body = max(MAX_BODY, 2 * self.settings.max_frame_size)
        self.max_data = self.settings.max_frame_size
        try:
            self.openapi: bytes | None = OPENAPI_FILE.read_bytes()
        except OSError:  # installed without the repository's docs/
            self.openapi = None

    # --- helpers ---------------------------------------------------------

    def namespace(self, channel: str) -> Namespace:
        return namespace_of(self.hub, channel)

    def pack(self, value: object, name: str) -> bytes:
        """Check depth and pack once; 413 past ``max_frame_size``."""
        packed = pack_data(value, name, 0)
        if len(packed) > self.max_data:
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, f"{name} is larger than {self.max_data} bytes packed")
        return packed

    def authenticate(self, request: web.Request, scope: str) -> ApiKey:
        scheme, _, secret = request.headers.get("Authorization", "").strip().partition(" ")
        secret = secret.strip()
        if scheme.lower() not in ("apikey", "bearer") or not secret:
            self.hub.metrics.auth_failed("api")
            raise ApiRefusal(401, ErrorCode.UNAUTHORIZED, "API key required", {"WWW-Authenticate": "apikey"})
        key = find_api_key(self.settings.api_keys, secret)
        if key is None:
            self.hub.metrics.auth_failed("api")
            raise ApiRefusal(401, ErrorCode.UNAUTHORIZED, "invalid API key", {"WWW-Authenticate": "apikey"})
        audit.key_used(key.name)  # named in what is logged from now on, a refusal of its scope included
        if not key.allows(scope):
            raise CommandError(ErrorCode.PERMISSION_DENIED, f"the API key does not allow {scope}")
        return key

    # --- publications ----------------------------------------------------

    async def publish(self, body: Body) -> object:
        channel = _channel(body)
        data = self.pack(_required(body, "data"), "data")
        key = _publish_id(body)
        ns = self.namespace(channel)
        return _publish_map(await self.hub.publish(channel, data, ns, info=None, key=key))

    async def broadcast(self, body: Body) -> object:
        channels = _required(body, "channels")
        if not isinstance(channels, list) or not 1 <= len(channels) <= MAX_BROADCAST_CHANNELS:
            raise _bad(f"channels must be a list of 1..{MAX_BROADCAST_CHANNELS} channels")
        for i, channel in enumerate(channels):
            check_channel(channel, f"channels[{i}]")
        if len(set(channels)) != len(channels):
            raise _bad("channels must not repeat")
        data = self.pack(_required(body, "data"), "data")
        key = _publish_id(body)
        results = await asyncio.gather(*(self._publish_one(c, data, key) for c in channels))
        return {"results": results}

    async def _publish_one(self, channel: str, data: bytes, key: str | None) -> dict[str, object]:
        try:
            result = await self.hub.publish(channel, data, self.namespace(channel), info=None, key=key)
        except (CommandError, EngineError) as exc:
            return {"channel": channel, "error": _error_map(refusal(exc))}
        except Exception as exc:
            log.exception("broadcast to a channel failed")
            return {"channel": channel, "error": _error_map(refusal(exc))}
        return {"channel": channel, **_publish_map(result)}

    async def history(self, query: Query) -> object:
        channel = _query_channel(query)
        limit, before, after = (_query_uint(query, name) for name in ("limit", "before", "after"))
        if before is not None and after is not None:
            raise _bad("before and after exclude each other")
        self.namespace(channel)
        page = await self.hub.history_page(channel, limit, before, after)
        return {
            "publications": [publication_map(p) for p in page.publications],
            "offset": page.offset,
            "epoch": page.epoch,
        }

    # --- presence and users ----------------------------------------------

    def presence_channel(self, query: Query) -> str:
        channel = _query_channel(query)
        if not self.namespace(channel).presence:
            # A request that cannot work with this configuration, not an outage: 400, not 503.
            raise _bad("this namespace keeps no presence")
        return channel

    async def presence(self, query: Query) -> object:
        channel = self.presence_channel(query)
        members = await self.presence_queries.members(channel)
        out: dict[str, object] = {}
        for client, member in members.items():
            m: dict[str, object] = {"user": member.user}
            if member.info is not None:
                m["info"] = Data(member.info)
            out[client] = m
        return {"presence": out}

    async def presence_stats(self, query: Query) -> object:
        channel = self.presence_channel(query)
        stats = await self.presence_queries.stats(channel)
        return {"clients": stats.clients, "users": stats.users}

    async def status(self, query: Query) -> object:
        users = query.getall("user", [])
        if not 1 <= len(users) <= MAX_STATUS_USERS:
            raise _bad(f"give 1..{MAX_STATUS_USERS} user parameters")
        for user in users:
            _text(user, "user", MAX_USER_LENGTH)
        statuses = await self.presence_queries.status(list(users))
        return {"users": [{"user": s.user, "online": s.online, "last_seen": s.last_seen} for s in statuses]}

    async def disconnect(self, body: Body) -> object:
        user = _text(_required(body, "user"), "user", MAX_USER_LENGTH)
        code = CloseCode.FORCE_RECONNECT if _bool(body, "reconnect", False) else CloseCode.FORCE_DISCONNECT
        audit.target(user=user, reconnect=code == CloseCode.FORCE_RECONNECT)
        await self.hub.control("disconnect", user=user, code=int(code), reason=CLOSE_REASONS[code])
        return {}

    async def unsubscribe(self, body: Body) -> object:
        user = _text(_required(body, "user"), "user", MAX_USER_LENGTH)
        channel = _channel(body)
        self.namespace(channel)
        audit.target(user=user, channel=channel)
        await self.hub.control("unsubscribe", user=user, channel=channel)
        return {}

    async def revoke(self, body: Body) -> object:
        user = _text(_required(body, "user"), "user", MAX_USER_LENGTH)
        before = time.time()
        if _present(body, "before"):
            value = body["before"]
            if type(value) not in (int, float) or not math.isfinite(value) or value < 0:
                raise _bad("before must be a number of seconds since the epoch, >= 0")
            if value > before + MAX_REVOKE_AHEAD:
                # A revocation time never moves back: milliseconds sent for seconds would lock the
                # user out for good. Revoking covers tokens issued already, give or take clock skew.
                raise _bad(f"before is more than {MAX_REVOKE_AHEAD} s ahead of now (seconds, not milliseconds?)")
            before = float(value)
        audit.target(user=user)
        await self.hub.revoke(user, before)
        audit.revoked(user, before)
        return {}

    # --- live state ------------------------------------------------------

    def _state_target(self, body: Body) -> tuple[str, str, int | None]:
        channel = _channel(body)
        key = _text(_required(body, "key"), "key", MAX_STATE_KEY_LENGTH)
        return channel, key, _optional_uint(body, "version")

    async def state_set(self, body: Body) -> object:
        channel, key, version = self._state_target(body)
        raw = _required(body, "value")
        value = None if raw is None else self.pack(raw, "value")  # null deletes the key
        self.namespace(channel)
        live = self.live_states
        return {"version": await live.set_value(channel, key, value, expected_version=version)}

    async def state_patch(self, body: Body) -> object:
        channel, key, version = self._state_target(body)
        patch = _required(body, "patch")
        if not isinstance(patch, dict):
            raise _bad("patch must be an object (a map with string keys)")
        packed = self.pack(patch, "patch")
        self.namespace(channel)
        live = self.live_states
        return {"version": await live.patch_value(channel, key, packed, expected_version=version)}

    async def state_get(self, query: Query) -> object:
        channel = _query_channel(query)
        key = _query_value(query, "key", required=False)
        if key is not None:
            _text(key, "key", MAX_STATE_KEY_LENGTH)
        self.namespace(channel)
        entries, version = await self.live_states.get(channel, key)
        state = [{"key": e.key, "value": _data_or_none(e.value), "version": e.version} for e in entries]
        return {"version": version, "state": state}


#: Every route of the API but the OpenAPI document (which needs no key).
ROUTES: Final = (
    Route("POST", "/api/publish", "publish", Api.publish),
    Route("POST", "/api/broadcast", "publish", Api.broadcast),
    Route("GET", "/api/history", "history", Api.history),
    Route("GET", "/api/presence", "presence", Api.presence),
    Route("GET", "/api/presence_stats", "presence", Api.presence_stats),
    Route("GET", "/api/status", "users", Api.status),
    Route("POST", "/api/disconnect", "users", Api.disconnect),
    Route("POST", "/api/unsubscribe", "users", Api.unsubscribe),
    Route("POST", "/api/revoke", "users", Api.revoke),
    Route("POST", "/api/state/set", "state", Api.state_set),
    Route("POST", "/api/state/patch", "state", Api.state_patch),
    Route("GET", "/api/state", "state", Api.state_get),
)
OPENAPI_PATH: Final = "/api/openapi.json"

API = web.AppKey("api", Api)


def _respond(
    request: web.Request, status: int, payload: object, headers: Mapping[str, str] | None = None
) -> web.Response:
    fmt = response_format(request)
    return web.Response(status=status, body=render(payload, fmt), content_type=fmt, headers=headers)


def _status(exc: CommandError) -> int:
    return exc.status if isinstance(exc, ApiRefusal) else STATUS.get(exc.code, 400)


def _refused(request: web.Request, exc: CommandError) -> web.Response:
    request.app[API].hub.metrics.error(exc.code, "api")
    headers = exc.headers if isinstance(exc, ApiRefusal) else None
    return _respond(request, _status(exc), _error_map(exc), headers)


def _handler(route: Route) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    async def handle(request: web.Request) -> web.StreamResponse:
        caller = ApiCaller(request.remote or "-")
        with bound(caller):  # records logged while it runs name its remote address and key
            response = await _handle(route, request, caller)
        if caller.authorized:
            audit.api_call(caller, route.method, route.path, response.status)
        return response

    return handle


async def _handle(route: Route, request: web.Request, caller: ApiCaller) -> web.Response:
    api = request.app[API]
    try:
        try:
            key = api.authenticate(request, route.scope)  # before any byte of the body is read
        except CommandError as exc:
            audit.api_refused(caller, route.method, route.path, _status(exc), exc.message)
            raise
        caller.authorized = True
        params = (
            await _read_body(request, api.max_body, api.settings.http_body_timeout)
            if route.method == "POST"
            else request.query
        )
        payload = await route.handler(api, params)
    except ClientGone as exc:  # no one to answer: the response below is not delivered
        log.info("api %s %s: %s", route.method, route.path, exc)
        return _refused(request, _bad(str(exc)))
    except (CommandError, EngineError) as exc:
        if isinstance(exc, CommandError) and exc.code == ErrorCode.INTERNAL:
            log.error("api %s %s failed: %s", route.method, route.path, exc.message)
        elif isinstance(exc, UnreadableBody):
            log.info("api %s %s refused: %s", route.method, route.path, exc.message)
        return _refused(request, refusal(exc))
    except Exception as exc:
        log.exception("api %s %s failed", route.method, route.path)
        return _refused(request, refusal(exc))
    log.debug("api %s %s key=%s", route.method, route.path, safe(key.name))
    return _respond(request, 200, payload)


#: The error code of aiohttp's own HTTP errors (a status not listed: BAD_REQUEST under 500, else INTERNAL).
_HTTP_CODES: Final[Mapping[int, ErrorCode]] = {
    400: ErrorCode.BAD_REQUEST,
    401: ErrorCode.UNAUTHORIZED,
    403: ErrorCode.PERMISSION_DENIED,
    404: ErrorCode.UNKNOWN_COMMAND,
    409: ErrorCode.CONFLICT,
    413: ErrorCode.LIMIT_EXCEEDED,
    429: ErrorCode.TOO_MANY_REQUESTS,
    503: ErrorCode.NOT_AVAILABLE,
}


def _http_refusal(exc: web.HTTPException) -> ApiRefusal:
    """aiohttp's own error (a text page) as the API's JSON error map, with its status and headers."""
    code = _HTTP_CODES.get(exc.status, ErrorCode.BAD_REQUEST if exc.status < 500 else ErrorCode.INTERNAL)
    headers = {name: exc.headers[name] for name in ("Allow", "Retry-After", "WWW-Authenticate") if name in exc.headers}
    return ApiRefusal(exc.status, code, (exc.reason or "error").lower(), headers)


def _is_api(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


async def _close_unread(request: web.Request, response: web.StreamResponse) -> web.StreamResponse:
    """Send ``response`` and close the connection, leaving the rest of the body unread.

    aiohttp reads (drains) what a handler left of a body after the response, for up to
    ``lingering_time`` seconds, to keep the connection alive; for a refused request that is work
    for a client that has no right to it. The response says ``Connection: close``; once it is
    written the protocol is force-closed, which aiohttp takes as "nothing more to read".
    """
    response.force_close()
    try:
        await response.prepare(request)
        await response.write_eof()
    except ConnectionError:  # the client left already
        pass
    request.protocol.force_close()
    return response


@web.middleware
def api_middleware(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Awaitable[web.StreamResponse]:
    """For ``/api`` and ``/api/*``: every error answer is the JSON error map (aiohttp's own 404, 405,
    413... included), and a request whose body was not read to its end (refused before reading it,
    or past the limit while reading) is answered and its connection closed, the body left unread.

    Any other path gets its handler's coroutine as is: no frame of this middleware stays alive
    under a WebSocket's handler for the connection's life (memory per connection)."""
    if not _is_api(request.path):
        return handler(request)
    return _api_request(request, handler)


async def _api_request(
    request: web.Request, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> web.StreamResponse:
    try:
        response = await handler(request)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        response = _refused(request, _http_refusal(exc))
    except Exception:
        log.exception("api %s %s failed", safe(request.method), safe(request.path))
        response = _refused(request, CommandError(ErrorCode.INTERNAL))
    if not request.content.is_eof() and not response.prepared:
        return await _close_unread(request, response)
    return response


async def _openapi(request: web.Request) -> web.StreamResponse:
    document = request.app[API].openapi
    if document is None:
        return _refused(request, CommandError(ErrorCode.NOT_AVAILABLE, "the OpenAPI document is not installed"))
    return web.Response(body=document, content_type=JSON)


_KNOWN_PATHS: Final = frozenset({r.path for r in ROUTES} | {OPENAPI_PATH})


async def _fallback(request: web.Request) -> web.StreamResponse:
    """Any other method or path under /api/: a JSON 405 or 404 rather than aiohttp's text."""
    if request.path in _KNOWN_PATHS:
        allowed = sorted({r.method for r in ROUTES if r.path == request.path} or {"GET"})
        refusal = ApiRefusal(405, ErrorCode.BAD_REQUEST, "method not allowed", {"Allow": ", ".join(allowed)})
    else:
        refusal = ApiRefusal(404, ErrorCode.UNKNOWN_COMMAND, "no such API route")
    return _refused(request, refusal)


def guarded(
    scope: str, handler: Callable[[web.Request], Awaitable[web.StreamResponse]]
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """``handler`` behind an API key allowing ``scope`` (``GET /metrics`` on the main port): refusals
    are the API's (401, 403 with the JSON error map)."""

    async def handle(request: web.Request) -> web.StreamResponse:
        try:
            request.app[API].authenticate(request, scope)
        except CommandError as exc:
            return _refused(request, exc)
        return await handler(request)

    return handle


def setup_api(app: web.Application, hub: Hub, *, presence: PresenceQueries, live: LiveStates) -> None:
    """Mount the API routes on ``app``, serving ``hub`` and the presence and live-data features."""
    app[API] = Api(hub, presence, live)
    app.middlewares.append(api_middleware)
    install_http_log_filter()
    for route in ROUTES:
        app.router.add_route(route.method, route.path, _handler(route))
    app.router.add_get(OPENAPI_PATH, _openapi, allow_head=False)
    app.router.add_route("*", PREFIX + "/{tail:.*}", _fallback)
