"""A client of the server API (``realtime.api``) for Python backends.

Usage::

    async with Publisher("http://127.0.0.1:8000", api_key) as pub:
        await pub.publish("news", {"title": "hello"})
        page = await pub.history("news", limit=10)
        await pub.disconnect("alice")

Bodies travel as MessagePack by default (``format="json"`` for JSON); values
(``data``, state values) are any MessagePack-serializable Python values and
come back unpacked, in the :mod:`realtime.client.values` types that
:mod:`realtime.client` returns too. A refusal raises :class:`ApiError` with
the HTTP status and the hub's :class:`~protocol.codes.ErrorCode`; a network
failure or a timeout raises :class:`ApiUnreachable`.

Every ``publish`` and ``broadcast`` carries a publish id (``key``; a fresh
random one when none is given), so a resend is safe: the hub answers a repeat
of the id with the first result. With ``retries`` the publisher resends a
publish itself, with the same id, after ApiUnreachable or a temporary error
(OUTCOME_UNKNOWN, NOT_AVAILABLE...); other calls are never retried. When a
publish still fails, the error's ``key`` is the id to send it again with.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Final, Literal

import aiohttp
import msgpack  # type: ignore[import-untyped]  # no stubs
import orjson

from protocol.codes import ErrorCode
from protocol.errors import RealtimeError
from protocol.limits import MAX_STATUS_USERS

from .client.errors import CodedError
from .client.values import (
    HistoryPage,
    Message,
    PresenceMember,
    PresenceStats,
    Sender,
    Sent,
    StreamPosition,
    UserStatus,
    new_publish_id,
)

__all__ = [
    "ApiError",
    "ApiUnreachable",
    "HistoryPage",
    "Member",
    "Message",
    "PresenceMember",
    "PresenceStats",
    "Publisher",
    "PublisherError",
    "Sender",
    "Sent",
    "StateItem",
    "StateSnapshot",
    "StreamPosition",
    "UserStatus",
    "new_publish_id",
]

_JSON: Final = "application/json"
_MSGPACK: Final = "application/msgpack"


# --- errors -----------------------------------------------------------------------


class PublisherError(RealtimeError):
    """Root of the errors :class:`Publisher` raises.

    ``key``: for a failed ``publish`` or ``broadcast``, the publish id it was sent with;
    publish again with it (``key=error.key``) to make sure it is stored once.
    """

    key: str | None = None


class ApiError(PublisherError, CodedError):
    """The API answered with an error: ``status`` (HTTP), ``code`` (an ErrorCode, or a plain int if unknown).
    ``temporary``: the same call may succeed later (500, 503, 429)."""

    def __init__(self, status: int, code: int, message: str) -> None:
        super().__init__(code, message or f"HTTP {status}")
        self.status = status

    def __repr__(self) -> str:
        return f"ApiError({self.status}, {int(self.code)}, {self.message!r})"


class ApiUnreachable(PublisherError):
    """No answer: the connection failed or the call timed out. The call may or may not have happened."""


# --- results ----------------------------------------------------------------------


#: The name this module gave :class:`PresenceMember` first.
Member = PresenceMember


@dataclass(frozen=True, slots=True)
class StateItem:
    key: str
    #: The value, unpacked; None for a deleted key.
    value: Any
    version: int


@dataclass(frozen=True, slots=True)
class StateSnapshot:
    """A live channel's entries and its state version."""

    version: int
    state: tuple[StateItem, ...]

    def values(self) -> dict[str, Any]:
        """Key -> value of the keys that exist."""
        return {item.key: item.value for item in self.state if item.value is not None}


def _publish_result(m: Mapping[str, Any]) -> Sent:
    return Sent(m["offset"], m["epoch"], m.get("mid", ""), m.get("time", 0))


def _publication(m: Mapping[str, Any]) -> Message:
    info = m.get("info")
    sender = None if info is None else Sender(info["user"], info["client"], info.get("info"))
    return Message(m["channel"], m["data"], m["offset"], m["epoch"], sender, m.get("mid", ""), m.get("time", 0))


# --- the client -------------------------------------------------------------------


class Publisher:
    """Calls the server API of the hub at ``url`` with ``api_key``.

    Use it as an async context manager, or call :meth:`close` when done. A
    ``session`` passed in is used as is and left open.
    """

    def __init__(
        self,
        url: str,
        api_key: str,
        *,
        format: Literal["msgpack", "json"] = "msgpack",
        timeout: float = 10.0,
        session: aiohttp.ClientSession | None = None,
        retries: int = 0,
        retry_delay: float = 0.2,
    ) -> None:
        if retries < 0:
            raise ValueError("retries must be >= 0")
        self.retries = retries
        self.retry_delay = retry_delay
        if format not in ("msgpack", "json"):
            raise ValueError("format must be 'msgpack' or 'json'")
        self.url = url.rstrip("/")
        self.format = format
        self._type = _MSGPACK if format == "msgpack" else _JSON
        self._headers = {"Authorization": f"apikey {api_key}", "Accept": self._type}
        self._timeout = aiohttp.ClientTimeout(total=timeout)
        self._session = session
        self._own_session = session is None

    def __repr__(self) -> str:
        return f"Publisher({self.url!r}, format={self.format!r})"  # never the key

    async def __aenter__(self) -> Publisher:
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def close(self) -> None:
        if self._own_session and self._session is not None:
            await self._session.close()
        self._session = None

    # --- publications ----------------------------------------------------

    async def publish(self, channel: str, data: Any, *, key: str | None = None) -> Sent:
        """Publish ``data`` to ``channel``; returns its offset and epoch (and mid/time on chat channels).

        ``key`` is the publish id (1..64 characters), a fresh random one when None: the hub
        stores the publish at most once per id (within its ``publish_id_window``) and answers a
        repeat with the first result. Resent with the same id up to ``retries`` times.
        """
        body: dict[str, Any] = {"channel": channel, "data": data, "key": key or new_publish_id()}
        return _publish_result(await self._post_retried("/api/publish", body))

    async def broadcast(
        self, channels: Sequence[str], data: Any, *, key: str | None = None
    ) -> dict[str, Sent | ApiError]:
        """Publish ``data`` to each channel (1..100); each gets its result or its own error.

        ``key`` is the publish id of every one of these publishes (each channel keeps its own),
        a fresh one when None; resending the broadcast with it publishes only what is missing.
        """
        body = {"channels": list(channels), "data": data, "key": key or new_publish_id()}
        m = await self._post_retried("/api/broadcast", body)
        out: dict[str, Sent | ApiError] = {}
        for item in m["results"]:
            error = item.get("error")
            if error is None:
                out[item["channel"]] = _publish_result(item)
            else:
                failed = ApiError(200, error["code"], error["message"])
                failed.key = body["key"]
                out[item["channel"]] = failed
        return out

    async def _post_retried(self, path: str, body: dict[str, Any]) -> Any:
        """POST a publish, resent with the same id after a temporary failure, ``retries`` times."""
        attempt = 0
        uncertain = False  # an earlier send may have been stored
        while True:
            try:
                return await self._post(path, body)
            except (ApiUnreachable, ApiError) as exc:
                exc.key = body["key"]
                if uncertain and isinstance(exc, ApiError) and exc.code == ErrorCode.NOT_AVAILABLE:
                    # This send was not stored, but an earlier one may have been: not "failed".
                    unknown = ApiError(503, ErrorCode.OUTCOME_UNKNOWN, "outcome unknown: retry with the same id")
                    unknown.key = body["key"]
                    exc = unknown
                uncertain = uncertain or isinstance(exc, ApiUnreachable) or exc.code != ErrorCode.NOT_AVAILABLE
                if attempt >= self.retries or (isinstance(exc, ApiError) and not exc.temporary):
                    raise exc from None
            attempt += 1
            await asyncio.sleep(self.retry_delay * attempt)

    async def history(
        self, channel: str, *, limit: int | None = None, before: int | None = None, after: int | None = None
    ) -> HistoryPage:
        """A page of at most ``limit`` publications, oldest first: the newest, or just before/after an offset.

        The hub caps a page at :data:`~protocol.limits.MAX_HISTORY_PAGE`.
        """
        params = [("channel", channel)]
        params += [
            (name, str(v)) for name, v in (("limit", limit), ("before", before), ("after", after)) if v is not None
        ]
        m = await self._get("/api/history", params)
        return HistoryPage((_publication(p) for p in m["publications"]), StreamPosition(m["offset"], m["epoch"]))

    # --- presence and users ----------------------------------------------

    async def presence(self, channel: str) -> dict[str, PresenceMember]:
        """Connection id -> member, for every connection present in ``channel``."""
        m = await self._get("/api/presence", [("channel", channel)])
        return {client: PresenceMember(v["user"], v.get("info")) for client, v in m["presence"].items()}

    async def presence_stats(self, channel: str) -> PresenceStats:
        m = await self._get("/api/presence_stats", [("channel", channel)])
        return PresenceStats(m["clients"], m["users"])

    async def status(self, users: Iterable[str]) -> list[UserStatus]:
        """Online status of ``users``, in order: at least one; more than the hub takes per query are asked in parts."""
        names = list(users)
        found: list[UserStatus] = []
        for i in range(0, max(len(names), 1), MAX_STATUS_USERS):  # an empty list: one query, which the hub refuses
            m = await self._get("/api/status", [("user", user) for user in names[i : i + MAX_STATUS_USERS]])
            found += (UserStatus(s["user"], s["online"], s["last_seen"]) for s in m["users"])
        return found

    async def disconnect(self, user: str, *, reconnect: bool = False) -> None:
        """Close the user's connections on every node; with ``reconnect`` their clients come back."""
        await self._post("/api/disconnect", {"user": user, "reconnect": reconnect})

    async def unsubscribe(self, user: str, channel: str) -> None:
        """Unsubscribe the user's connections from ``channel`` on every node."""
        await self._post("/api/unsubscribe", {"user": user, "channel": channel})

    async def revoke(self, user: str, *, before: float | None = None) -> None:
        """Refuse the user's tokens issued before ``before`` (Unix seconds; default now) and disconnect them."""
        body: dict[str, Any] = {"user": user}
        if before is not None:
            body["before"] = before
        await self._post("/api/revoke", body)

    # --- live state ------------------------------------------------------

    async def state_set(self, channel: str, key: str, value: Any, *, version: int | None = None) -> int:
        """Set ``key`` (``None`` deletes it); with ``version``, only if the key is at that version
        (else :class:`ApiError` CONFLICT). Returns the channel's new state version."""
        body: dict[str, Any] = {"channel": channel, "key": key, "value": value}
        if version is not None:
            body["version"] = version
        result: int = (await self._post("/api/state/set", body))["version"]
        return result

    async def state_patch(self, channel: str, key: str, patch: Mapping[str, Any], *, version: int | None = None) -> int:
        """Merge ``patch`` into the value of ``key``; returns the channel's new state version."""
        body: dict[str, Any] = {"channel": channel, "key": key, "patch": dict(patch)}
        if version is not None:
            body["version"] = version
        result: int = (await self._post("/api/state/patch", body))["version"]
        return result

    async def state_get(self, channel: str, key: str | None = None) -> StateSnapshot:
        """One key's entry, or every key's, with the channel's state version."""
        params = [("channel", channel)] + ([("key", key)] if key is not None else [])
        m = await self._get("/api/state", params)
        return StateSnapshot(m["version"], tuple(StateItem(e["key"], e["value"], e["version"]) for e in m["state"]))

    # --- transport -------------------------------------------------------

    def _open(self) -> aiohttp.ClientSession:
        if self._session is None:
            self._session = aiohttp.ClientSession()
            self._own_session = True
        return self._session

    async def _post(self, path: str, body: Mapping[str, Any]) -> Any:
        if self._type == _MSGPACK:
            payload: bytes = msgpack.packb(body)
        else:
            payload = orjson.dumps(body)
        return await self._call("POST", path, data=payload, headers={**self._headers, "Content-Type": self._type})

    async def _get(self, path: str, params: list[tuple[str, str]]) -> Any:
        return await self._call("GET", path, params=params, headers=self._headers)

    async def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        session = self._open()
        try:
            async with session.request(method, self.url + path, timeout=self._timeout, **kwargs) as response:
                raw = await response.read()
                status = response.status
                ctype = response.content_type
        except (TimeoutError, aiohttp.ClientError) as exc:
            raise ApiUnreachable(f"{method} {path}: {exc or type(exc).__name__}") from exc
        try:
            m = msgpack.unpackb(raw, raw=False, strict_map_key=False) if ctype == _MSGPACK else orjson.loads(raw)
        except Exception:
            m = None
        if not 200 <= status < 300:
            if isinstance(m, dict) and isinstance(m.get("code"), int) and isinstance(m.get("message"), str):
                raise ApiError(status, m["code"], m["message"])
            code = ErrorCode.INTERNAL if status >= 500 else ErrorCode.BAD_REQUEST
            raise ApiError(status, code, f"HTTP {status} without an API error body")
        if not isinstance(m, dict):
            raise ApiError(status, ErrorCode.INTERNAL, "the response is not an API result")
        return m
