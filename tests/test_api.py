"""The server API end to end: a real hub on a free port, the Publisher, raw HTTP, WebSocket clients.

Every route runs through :class:`realtime.publisher.Publisher` in both formats
and through raw aiohttp requests in JSON and MessagePack; errors are checked
for their HTTP status and ``{code, message}`` body; schemathesis checks the
running API against realtime/openapi.json.
"""

from __future__ import annotations

import asyncio
import io
import json
import time
from collections.abc import AsyncIterator
from typing import Any, Literal
from urllib.parse import urlencode

import aiohttp
import hypothesis
import hypothesis.errors
import msgpack  # type: ignore[import-untyped]
import orjson
import pytest
import schemathesis
from schemathesis import GenerationMode
from schemathesis.core.result import Ok

from protocol.codes import CloseCode, ErrorCode
from protocol.messages import Connect, Disconnect, Unsubscribed, UserStatus
from realtime.api import OPENAPI_FILE, OPENAPI_PATH, ROUTES
from realtime.auth import ApiKey
from realtime.namespaces import Namespace
from realtime.publisher import (
    ApiError,
    ApiUnreachable,
    PresenceMember,
    PresenceStats,
    Publisher,
    Sender,
    Sent,
    StreamPosition,
)

from .helpers import HubFactory, RunningHub, closed_code, make_token, namespaces
from .redis_server import RedisServer
from .wsclient import RawClient, value

ALL = ApiKey("backend", "all-scopes-secret", frozenset({"*"}))
PUBLISH_ONLY = ApiKey("publisher", "publish-only-secret", frozenset({"publish"}))
#: Small enough to test the data limit with small bodies.
MAX_FRAME = 8192
NAMESPACES = namespaces(
    Namespace(name="chat", kind="chat", subscribe="anyone"),
    Namespace(name="room", subscribe="anyone", presence=True),
    Namespace(name="live", kind="live", subscribe="anyone"),
)
FORMATS = ("msgpack", "json")
Format = Literal["msgpack", "json"]


@pytest.fixture
async def api(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory(api_keys=(ALL, PUBLISH_ONLY), namespaces=NAMESPACES, max_frame_size=MAX_FRAME)


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    async with aiohttp.ClientSession() as s:
        yield s


def auth(key: ApiKey = ALL, scheme: str = "apikey") -> dict[str, str]:
    return {"Authorization": f"{scheme} {key.key}"}


async def call(
    session: aiohttp.ClientSession,
    hub: RunningHub,
    method: str,
    path: str,
    body: Any = None,
    *,
    fmt: Format = "json",
    headers: dict[str, str] | None = None,
    params: Any = None,
) -> tuple[int, Any]:
    """A raw request; returns (status, decoded body), checking the response has the request's type."""
    h = {**auth(), **(headers or {})}
    data = None
    if body is not None:
        data = msgpack.packb(body) if fmt == "msgpack" else orjson.dumps(body)
        h.setdefault("Content-Type", f"application/{fmt}")
    elif fmt == "msgpack":
        h.setdefault("Accept", "application/msgpack")
    async with session.request(method, hub.http_url + path, data=data, headers=h, params=params) as r:
        raw = await r.read()
        assert r.content_type == f"application/{fmt}"
        decoded = msgpack.unpackb(raw, strict_map_key=False) if fmt == "msgpack" else orjson.loads(raw)
        return r.status, decoded


def assert_error(status: int, body: Any, want_status: int, want_code: ErrorCode) -> None:
    assert (status, body.get("code")) == (want_status, want_code), body
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) == {"code", "message"}


# --- publishing ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_publish_reaches_websocket_subscribers(api: RunningHub, fmt: Format) -> None:
    async with await RawClient.open(api.url) as sub, Publisher(api.http_url, ALL.key, format=fmt) as pub:
        await sub.subscribe("news")
        result = await pub.publish("news", {"title": "hello", "n": [1, 2.5, None]})
        assert result == Sent(1, result.epoch)
        got = await sub.publication()
        assert (got.channel, value(got), got.offset, got.epoch) == (
            "news",
            {"title": "hello", "n": [1, 2.5, None]},
            1,
            result.epoch,
        )
        assert got.info is None  # the server API publishes as nobody


@pytest.mark.parametrize("fmt", FORMATS)
async def test_raw_publish(api: RunningHub, session: aiohttp.ClientSession, fmt: Format) -> None:
    status, body = await call(session, api, "POST", "/api/publish", {"channel": "news", "data": "x"}, fmt=fmt)
    assert status == 200 and body["offset"] == 1 and isinstance(body["epoch"], str)
    # Chat channels: a message id and time; the same key gives the same message.
    status, first = await call(
        session, api, "POST", "/api/publish", {"channel": "chat:1", "data": {"t": "hi"}, "key": "k1"}, fmt=fmt
    )
    assert status == 200 and first["mid"] and first["time"] > 0
    status, again = await call(
        session, api, "POST", "/api/publish", {"channel": "chat:1", "data": {"t": "hi"}, "key": "k1"}, fmt=fmt
    )
    assert (status, again) == (200, first)


async def test_every_api_key_shares_one_publish_id_scope(api: RunningHub, session: aiohttp.ClientSession) -> None:
    """docs/guide.md: a backend that resends with the same id under another API key (a rotated key,
    another of its services) still publishes once."""
    body = {"channel": "news", "data": "once", "key": "rotated-1"}
    status, first = await call(session, api, "POST", "/api/publish", body)
    assert status == 200
    status, again = await call(session, api, "POST", "/api/publish", body, headers=auth(PUBLISH_ONLY))
    assert (status, again) == (200, first)
    status, page = await call(session, api, "GET", "/api/history", params={"channel": "news"})
    assert status == 200 and [p["data"] for p in page["publications"]] == ["once"]


async def test_response_type_follows_accept(api: RunningHub, session: aiohttp.ClientSession) -> None:
    body = orjson.dumps({"channel": "news", "data": 1})
    headers = {**auth(), "Content-Type": "application/json", "Accept": "application/msgpack"}
    async with session.post(api.http_url + "/api/publish", data=body, headers=headers) as r:
        assert r.content_type == "application/msgpack"
        assert msgpack.unpackb(await r.read())["offset"] == 1
    headers = {**auth(), "Content-Type": "application/msgpack", "Accept": "application/json"}
    async with session.post(
        api.http_url + "/api/publish", data=msgpack.packb({"channel": "news", "data": 2}), headers=headers
    ) as r:
        assert r.content_type == "application/json"
        assert (await r.json())["offset"] == 2
    # No Content-Type at all: JSON.
    async with session.post(
        api.http_url + "/api/publish", data=body, headers=auth(), skip_auto_headers=["Content-Type"]
    ) as r:
        assert r.status == 200 and r.content_type == "application/json"


@pytest.mark.parametrize("fmt", FORMATS)
async def test_broadcast(api: RunningHub, session: aiohttp.ClientSession, fmt: Format) -> None:
    async with await RawClient.open(api.url) as sub:
        await sub.subscribe("a")
        await sub.subscribe("b")
        status, body = await call(
            session, api, "POST", "/api/broadcast", {"channels": ["a", "nope:x", "b"], "data": [7]}, fmt=fmt
        )
        assert status == 200
        ok_a, bad, ok_b = body["results"]
        assert (ok_a["channel"], ok_a["offset"], ok_b["channel"], ok_b["offset"]) == ("a", 1, "b", 1)
        assert bad == {
            "channel": "nope:x",
            "error": {"code": ErrorCode.UNKNOWN_CHANNEL, "message": "unknown namespace"},
        }
        got = sorted((p.channel, value(p)) for p in [await sub.publication(), await sub.publication()])
        assert got == [("a", [7]), ("b", [7])]
    async with Publisher(api.http_url, ALL.key, format=fmt) as pub:
        results = await pub.broadcast(["a", "nope:y"], 1)
        assert results["a"] == Sent(2, ok_a["epoch"])
        err = results["nope:y"]
        assert isinstance(err, ApiError) and err.code == ErrorCode.UNKNOWN_CHANNEL


# --- history ------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_history(api: RunningHub, session: aiohttp.ClientSession, fmt: Format) -> None:
    async with await RawClient.open(api.url) as ws:
        await ws.publish("h", {"from": "ws"})  # a client publication carries its sender
    async with Publisher(api.http_url, ALL.key, format=fmt) as pub:
        for i in range(2, 6):
            await pub.publish("h", i)
        async with Publisher(api.http_url, ALL.key) as binary:  # bytes have no JSON form to send
            await binary.publish("h", b"\x00\xff")
        page = await pub.history("h")
        assert [p.data for p in page[1:5]] == [2, 3, 4, 5]
        assert page.position == StreamPosition(6, page[0].epoch) and [p.offset for p in page] == [1, 2, 3, 4, 5, 6]
        first = page[0]
        assert first.data == {"from": "ws"} and first.info == Sender("", ws.client_id)
        assert page[1].info is None
        # Binary data: kept in MessagePack, base64 in JSON.
        assert page[5].data == (b"\x00\xff" if fmt == "msgpack" else "AP8=")
        assert [p.offset for p in await pub.history("h", limit=2)] == [5, 6]
        assert [p.offset for p in await pub.history("h", limit=2, before=5)] == [3, 4]
        assert [p.offset for p in await pub.history("h", after=4)] == [5, 6]
        empty = await pub.history("never")
        assert (empty, empty.position.offset) == ([], 0)
    status, body = await call(session, api, "GET", "/api/history", fmt=fmt, params={"channel": "h", "limit": "1"})
    assert status == 200 and body["offset"] == 6 and len(body["publications"]) == 1
    assert set(body["publications"][0]) == {"channel", "data", "offset", "epoch"}
    # Chat publications carry mid and time.
    await call(session, api, "POST", "/api/publish", {"channel": "chat:h", "data": "m"}, fmt=fmt)
    status, body = await call(session, api, "GET", "/api/history", fmt=fmt, params={"channel": "chat:h"})
    assert status == 200 and body["publications"][0]["mid"] and body["publications"][0]["time"] > 0


def test_both_sdks_return_the_same_values() -> None:
    import realtime.client
    import realtime.publisher

    for name in (
        "Message",
        "Sender",
        "HistoryPage",
        "Sent",
        "PresenceMember",
        "PresenceStats",
        "UserStatus",
    ):
        assert getattr(realtime.client, name) is getattr(realtime.publisher, name)
    assert realtime.publisher.Member is PresenceMember


# --- presence and status --------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_presence_and_status(api: RunningHub, session: aiohttp.ClientSession, fmt: Format) -> None:
    token = make_token("alice", info={"name": "Alice"})
    async with await RawClient.open(api.url, token=token) as alice, await RawClient.open(api.url) as anon:
        await alice.subscribe("room:1")
        await anon.subscribe("room:1")
        async with Publisher(api.http_url, ALL.key, format=fmt) as pub:
            members = await pub.presence("room:1")
            assert members == {
                alice.client_id: PresenceMember("alice", {"name": "Alice"}),
                anon.client_id: PresenceMember(""),
            }
            assert await pub.presence_stats("room:1") == PresenceStats(2, 2)
            statuses = await pub.status(["alice", "bob", "alice"])
            assert [(s.user, s.online) for s in statuses] == [("alice", True), ("bob", False), ("alice", True)]
            assert statuses[1] == UserStatus("bob", False, 0)
            with pytest.raises(ApiError) as info:
                await pub.presence("news")  # the default namespace keeps no presence
            assert (info.value.status, info.value.code) == (400, ErrorCode.BAD_REQUEST)
        status, body = await call(session, api, "GET", "/api/presence", fmt=fmt, params={"channel": "room:1"})
        assert status == 200 and body["presence"][alice.client_id] == {"user": "alice", "info": {"name": "Alice"}}
        status, body = await call(session, api, "GET", "/api/presence_stats", fmt=fmt, params={"channel": "room:1"})
        assert (status, body) == (200, {"clients": 2, "users": 2})
        status, body = await call(
            session, api, "GET", "/api/status", fmt=fmt, params=[("user", "alice"), ("user", "zed")]
        )
        assert status == 200
        assert body["users"] == [
            {"user": "alice", "online": True, "last_seen": 0},
            {"user": "zed", "online": False, "last_seen": 0},
        ]


# --- live state ---------------------------------------------------------------------


@pytest.mark.parametrize("fmt", FORMATS)
async def test_state(api: RunningHub, session: aiohttp.ClientSession, fmt: Format) -> None:
    async with Publisher(api.http_url, ALL.key, format=fmt) as pub:
        v1 = await pub.state_set("live:1", "score", {"home": 0, "away": 0})
        v2 = await pub.state_patch("live:1", "score", {"home": 1})
        assert v2 == v1 + 1
        snap = await pub.state_get("live:1")
        assert snap.version == v2 and snap.values() == {"score": {"home": 1, "away": 0}}
        with pytest.raises(ApiError) as info:
            await pub.state_set("live:1", "score", 5, version=v1)  # stale
        assert (info.value.status, info.value.code) == (409, ErrorCode.CONFLICT)
        v3 = await pub.state_set("live:1", "clock", "12:00", version=0)
        one = await pub.state_get("live:1", "clock")
        assert [(i.key, i.value, i.version) for i in one.state] == [("clock", "12:00", v3)]
        await pub.state_set("live:1", "clock", None)  # deletes
        assert (await pub.state_get("live:1")).values() == {"score": {"home": 1, "away": 0}}
        with pytest.raises(ApiError) as info:
            await pub.state_set("news", "k", 1)  # not a live channel
        assert (info.value.status, info.value.code) == (400, ErrorCode.BAD_REQUEST)
    status, body = await call(
        session, api, "POST", "/api/state/set", {"channel": "live:2", "key": "k", "value": [1]}, fmt=fmt
    )
    assert status == 200 and body["version"] >= 1
    status, body = await call(
        session,
        api,
        "POST",
        "/api/state/patch",
        {"channel": "live:2", "key": "m", "patch": {"a": 1}, "version": 0},
        fmt=fmt,
    )
    assert status == 200
    status, body = await call(session, api, "GET", "/api/state", fmt=fmt, params={"channel": "live:2"})
    assert status == 200 and {e["key"]: e["value"] for e in body["state"]} == {"k": [1], "m": {"a": 1}}
    status, body = await call(
        session,
        api,
        "POST",
        "/api/state/patch",
        {"channel": "live:2", "key": "m", "patch": {"a": 2}, "version": 0},
        fmt=fmt,
    )
    assert_error(status, body, 409, ErrorCode.CONFLICT)


# --- users ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("reconnect", "code"), [(False, CloseCode.FORCE_DISCONNECT), (True, CloseCode.FORCE_RECONNECT)]
)
async def test_disconnect_closes_every_socket_of_the_user(api: RunningHub, reconnect: bool, code: CloseCode) -> None:
    phone = await RawClient.open(api.url, token=make_token("alice"))
    laptop = await RawClient.open(api.url, token=make_token("alice"))
    bob = await RawClient.open(api.url, token=make_token("bob"))
    try:
        async with Publisher(api.http_url, ALL.key) as pub:
            await pub.disconnect("alice", reconnect=reconnect)
        for client in (phone, laptop):
            push = await client.disconnect_push()
            assert push == Disconnect(code, push.reason, reconnect)
            assert await closed_code(client) == code
        await bob.subscribe("still-here")  # bob is unaffected
    finally:
        for c in (phone, laptop, bob):
            await c.close()


@pytest.mark.parametrize("fmt", FORMATS)
async def test_unsubscribe_user(api: RunningHub, session: aiohttp.ClientSession, fmt: Format) -> None:
    async with await RawClient.open(api.url, token=make_token("alice")) as alice:
        await alice.subscribe("news")
        await alice.subscribe("other")
        status, body = await call(
            session, api, "POST", "/api/unsubscribe", {"user": "alice", "channel": "news"}, fmt=fmt
        )
        assert (status, body) == (200, {})
        push = await alice.next_push()
        assert isinstance(push, Unsubscribed) and push.channel == "news"
        async with Publisher(api.http_url, ALL.key, format=fmt) as pub:
            await pub.publish("news", "gone")
            await pub.publish("other", "here")
        got = await alice.publication()
        assert (got.channel, value(got)) == ("other", "here")  # nothing more came on news


async def test_revoke_refuses_older_tokens(api: RunningHub) -> None:
    now = time.time()
    old = make_token("alice", iat=int(now) - 100)
    async with await RawClient.open(api.url, token=old) as alice:
        async with Publisher(api.http_url, ALL.key) as pub:
            await pub.revoke("alice", before=now - 10)
        assert await closed_code(alice) == CloseCode.UNAUTHORIZED
    refused = await RawClient.open(api.url, connect_first=False)
    async with refused:
        await refused.send(Connect(1, token=old))
        assert await closed_code(refused) == CloseCode.UNAUTHORIZED
    async with await RawClient.open(api.url, token=make_token("alice")):  # issued after: accepted
        pass
    # Without `before`: every token issued until now.
    async with Publisher(api.http_url, ALL.key, format="json") as pub:
        await pub.revoke("bob")
    refused = await RawClient.open(api.url, connect_first=False)
    async with refused:
        await refused.send(Connect(1, token=make_token("bob", iat=int(time.time()) - 1)))
        assert await closed_code(refused) == CloseCode.UNAUTHORIZED
    # A `before` far ahead (milliseconds for seconds) is refused, not stored for ever.
    async with aiohttp.ClientSession() as session:
        body = {"user": "carol", "before": time.time() * 1000}
        status, answer = await call(session, api, "POST", "/api/revoke", body)
        assert status == 400 and "ahead of now" in answer["message"]
        status, _ = await call(session, api, "POST", "/api/revoke", {"user": "carol", "before": time.time() + 60})
        assert status == 200
    async with await RawClient.open(api.url, token=make_token("carol", iat=int(time.time()) + 300)):
        pass  # issued after the revocation: carol is not locked out


# --- auth -------------------------------------------------------------------------------


async def test_api_keys_and_scopes(api: RunningHub, session: aiohttp.ClientSession) -> None:
    body = {"channel": "news", "data": 1}
    for headers in (
        {},
        {"Authorization": "apikey wrong"},
        {"Authorization": "Basic " + ALL.key},
        {"Authorization": "apikey"},
    ):
        async with session.post(api.http_url + "/api/publish", json=body, headers=headers) as r:
            assert r.content_type == "application/json"
            assert_error(r.status, await r.json(), 401, ErrorCode.UNAUTHORIZED)
    status, _ = await call(session, api, "POST", "/api/publish", body, headers=auth(ALL, "Bearer"))
    assert status == 200
    status, _ = await call(session, api, "POST", "/api/publish", body, headers=auth(PUBLISH_ONLY, "APIKEY"))
    assert status == 200
    status, err = await call(
        session, api, "GET", "/api/history", params={"channel": "news"}, headers=auth(PUBLISH_ONLY)
    )
    assert_error(status, err, 403, ErrorCode.PERMISSION_DENIED)
    status, err = await call(
        session, api, "POST", "/api/revoke", {"user": "a"}, fmt="msgpack", headers=auth(PUBLISH_ONLY)
    )
    assert_error(status, err, 403, ErrorCode.PERMISSION_DENIED)
    async with Publisher(api.http_url, "nope") as pub:
        with pytest.raises(ApiError) as info:
            await pub.publish("news", 1)
        assert (info.value.status, info.value.code, info.value.temporary) == (401, ErrorCode.UNAUTHORIZED, False)
    # The document needs no key.
    async with session.get(api.http_url + OPENAPI_PATH) as r:
        assert r.status == 200 and (await r.json())["openapi"].startswith("3.1")


async def test_unreachable(api: RunningHub) -> None:
    async with Publisher("http://127.0.0.1:1", ALL.key, timeout=2) as pub:
        with pytest.raises(ApiUnreachable):
            await pub.publish("news", 1)


# --- malformed requests -----------------------------------------------------------------

BAD_BODIES: list[tuple[str, str, Any, int, ErrorCode]] = [
    # (path, format, body, status, code)
    ("/api/publish", "json", {"data": 1}, 400, ErrorCode.BAD_REQUEST),
    ("/api/publish", "json", {"channel": "news"}, 400, ErrorCode.BAD_REQUEST),
    ("/api/publish", "msgpack", {"channel": 5, "data": 1}, 400, ErrorCode.BAD_REQUEST),
    ("/api/publish", "json", {"channel": "has space", "data": 1}, 400, ErrorCode.BAD_REQUEST),
    ("/api/publish", "json", {"channel": "x" * 256, "data": 1}, 400, ErrorCode.BAD_REQUEST),
    ("/api/publish", "json", {"channel": "news", "data": 1, "key": 5}, 400, ErrorCode.BAD_REQUEST),
    ("/api/publish", "json", [1, 2], 400, ErrorCode.BAD_REQUEST),
    (
        "/api/publish",
        "json",
        {"channel": "news", "data": [[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]]},
        400,
        ErrorCode.BAD_REQUEST,
    ),
    ("/api/publish", "msgpack", {"channel": "news", "data": "x" * MAX_FRAME}, 413, ErrorCode.LIMIT_EXCEEDED),
    ("/api/publish", "json", {"channel": "nope:1", "data": 1}, 404, ErrorCode.UNKNOWN_CHANNEL),
    ("/api/broadcast", "json", {"channels": [], "data": 1}, 400, ErrorCode.BAD_REQUEST),
    ("/api/broadcast", "json", {"channels": "news", "data": 1}, 400, ErrorCode.BAD_REQUEST),
    ("/api/broadcast", "json", {"channels": ["a", "a"], "data": 1}, 400, ErrorCode.BAD_REQUEST),
    ("/api/broadcast", "json", {"channels": [f"c{i}" for i in range(101)], "data": 1}, 400, ErrorCode.BAD_REQUEST),
    ("/api/broadcast", "msgpack", {"channels": ["a", ""], "data": 1}, 400, ErrorCode.BAD_REQUEST),
    ("/api/disconnect", "json", {"user": ""}, 400, ErrorCode.BAD_REQUEST),
    ("/api/disconnect", "json", {"user": "a", "reconnect": "yes"}, 400, ErrorCode.BAD_REQUEST),
    ("/api/unsubscribe", "json", {"user": "a"}, 400, ErrorCode.BAD_REQUEST),
    ("/api/unsubscribe", "json", {"user": "a", "channel": "nope:1"}, 404, ErrorCode.UNKNOWN_CHANNEL),
    ("/api/revoke", "json", {"user": "a", "before": -1}, 400, ErrorCode.BAD_REQUEST),
    ("/api/revoke", "json", {"user": "a", "before": True}, 400, ErrorCode.BAD_REQUEST),
    ("/api/revoke", "json", {"user": ["a"]}, 400, ErrorCode.BAD_REQUEST),
    ("/api/state/set", "json", {"channel": "live:1", "key": "k"}, 400, ErrorCode.BAD_REQUEST),
    ("/api/state/set", "json", {"channel": "live:1", "key": "", "value": 1}, 400, ErrorCode.BAD_REQUEST),
    (
        "/api/state/set",
        "json",
        {"channel": "live:1", "key": "k", "value": 1, "version": -1},
        400,
        ErrorCode.BAD_REQUEST,
    ),
    (
        "/api/state/set",
        "json",
        {"channel": "live:1", "key": "k", "value": 1, "version": 1.5},
        400,
        ErrorCode.BAD_REQUEST,
    ),
    ("/api/state/set", "msgpack", {"channel": "nope:1", "key": "k", "value": 1}, 404, ErrorCode.UNKNOWN_CHANNEL),
    ("/api/state/patch", "json", {"channel": "live:1", "key": "k", "patch": [1]}, 400, ErrorCode.BAD_REQUEST),
]


@pytest.mark.parametrize(("path", "fmt", "body", "status", "code"), BAD_BODIES)
async def test_malformed_bodies(
    api: RunningHub, session: aiohttp.ClientSession, path: str, fmt: Format, body: Any, status: int, code: ErrorCode
) -> None:
    got_status, got = await call(session, api, "POST", path, body, fmt=fmt)
    assert_error(got_status, got, status, code)


BAD_QUERIES: list[tuple[str, Any, int, ErrorCode]] = [
    ("/api/history", {}, 400, ErrorCode.BAD_REQUEST),
    ("/api/history", {"channel": ""}, 400, ErrorCode.BAD_REQUEST),
    ("/api/history", {"channel": "a\tb"}, 400, ErrorCode.BAD_REQUEST),
    ("/api/history", {"channel": "news", "limit": "ten"}, 400, ErrorCode.BAD_REQUEST),
    ("/api/history", {"channel": "news", "limit": "-1"}, 400, ErrorCode.BAD_REQUEST),
    ("/api/history", {"channel": "news", "before": str(2**64)}, 400, ErrorCode.BAD_REQUEST),
    ("/api/history", {"channel": "news", "before": "1", "after": "1"}, 400, ErrorCode.BAD_REQUEST),
    ("/api/history", [("channel", "news"), ("channel", "other")], 400, ErrorCode.BAD_REQUEST),
    ("/api/history", {"channel": "nope:1"}, 404, ErrorCode.UNKNOWN_CHANNEL),
    ("/api/presence", {"channel": "nope:1"}, 404, ErrorCode.UNKNOWN_CHANNEL),
    ("/api/presence_stats", {"channel": "news"}, 400, ErrorCode.BAD_REQUEST),
    ("/api/status", {}, 400, ErrorCode.BAD_REQUEST),
    ("/api/status", [("user", str(i)) for i in range(101)], 400, ErrorCode.BAD_REQUEST),
    ("/api/status", {"user": ""}, 400, ErrorCode.BAD_REQUEST),
    ("/api/state", {"channel": "live:1", "key": ""}, 400, ErrorCode.BAD_REQUEST),
    ("/api/state", {"channel": "nope:1"}, 404, ErrorCode.UNKNOWN_CHANNEL),
]


@pytest.mark.parametrize(("path", "params", "status", "code"), BAD_QUERIES)
@pytest.mark.parametrize("fmt", FORMATS)
async def test_malformed_queries(
    api: RunningHub, session: aiohttp.ClientSession, fmt: Format, path: str, params: Any, status: int, code: ErrorCode
) -> None:
    got_status, got = await call(session, api, "GET", path, fmt=fmt, params=params)
    assert_error(got_status, got, status, code)


@pytest.mark.parametrize(
    ("content_type", "raw", "status"),
    [
        ("application/json", b"{", 400),
        ("application/json", b"", 400),
        ("application/json", b'{"channel": "news", "data": 1e999}', 400),
        ("application/msgpack", b"\xc1", 400),
        ("application/msgpack", msgpack.packb({"channel": "news", "data": 1}) + b"\x00", 400),
        ("application/msgpack", msgpack.packb({"channel": "news", "data": msgpack.ExtType(1, b"x")}), 400),
        ("text/plain", b'{"channel": "news", "data": 1}', 415),
        ("application/x-www-form-urlencoded", b"channel=news&data=1", 415),
    ],
)
async def test_undecodable_bodies(
    api: RunningHub, session: aiohttp.ClientSession, content_type: str, raw: bytes, status: int
) -> None:
    async with session.post(
        api.http_url + "/api/publish", data=raw, headers={**auth(), "Content-Type": content_type}
    ) as r:
        body = orjson.loads(await r.read()) if r.content_type == "application/json" else msgpack.unpackb(await r.read())
        assert_error(r.status, body, status, ErrorCode.BAD_REQUEST)


async def test_namespace_message_size_limits_api_publications(
    hub_factory: HubFactory, session: aiohttp.ClientSession
) -> None:
    """``max_message_size`` holds for the server API as for clients; a broadcast reports it per channel."""
    small = Namespace(name="small", subscribe="anyone", max_message_size=16)
    hub = await hub_factory(api_keys=(ALL,), namespaces=namespaces(small))
    status, body = await call(session, hub, "POST", "/api/publish", {"channel": "small:1", "data": "x" * 100})
    assert_error(status, body, 413, ErrorCode.LIMIT_EXCEEDED)
    status, body = await call(
        session, hub, "POST", "/api/broadcast", {"channels": ["small:1", "news"], "data": "x" * 100}
    )
    assert status == 200
    assert body["results"][0]["error"]["code"] == ErrorCode.LIMIT_EXCEEDED and "offset" in body["results"][1]
    status, body = await call(session, hub, "POST", "/api/publish", {"channel": "small:1", "data": "fits"})
    assert status == 200 and body["offset"] == 1


async def test_oversize_body(api: RunningHub, session: aiohttp.ClientSession) -> None:
    big = io.BytesIO(orjson.dumps({"channel": "news", "data": "x" * (1024 * 1024)}))
    async with session.post(
        api.http_url + "/api/publish", data=big, headers={**auth(), "Content-Type": "application/json"}
    ) as r:
        assert_error(r.status, await r.json(), 413, ErrorCode.LIMIT_EXCEEDED)

    async def chunks() -> AsyncIterator[bytes]:  # no Content-Length: the limit applies while reading
        yield b'{"channel": "news", "data": "'
        for _ in range(17):
            yield b"x" * 65536
        yield b'"}'

    async with session.post(
        api.http_url + "/api/publish", data=chunks(), headers={**auth(), "Content-Type": "application/json"}
    ) as r:
        assert_error(r.status, await r.json(), 413, ErrorCode.LIMIT_EXCEEDED)
    # The hub still answers.
    status, _ = await call(session, api, "POST", "/api/publish", {"channel": "news", "data": 1})
    assert status == 200


async def test_unknown_routes_and_methods(api: RunningHub, session: aiohttp.ClientSession) -> None:
    async with session.get(api.http_url + "/api/nothing", headers=auth()) as r:
        assert_error(r.status, await r.json(), 404, ErrorCode.UNKNOWN_COMMAND)
    async with session.get(api.http_url + "/api/publish", headers=auth()) as r:
        assert r.headers["Allow"] == "POST"
        assert_error(r.status, await r.json(), 405, ErrorCode.BAD_REQUEST)


# --- the OpenAPI document -----------------------------------------------------------------


async def test_every_route_is_documented_and_every_documented_route_exists(api: RunningHub) -> None:
    app = api.server.app
    assert app is not None
    served = {
        (route.method, route.resource.canonical)
        for route in app.router.routes()
        if route.resource is not None and route.resource.canonical.startswith("/api/") and route.method != "*"
    }
    document = json.loads(OPENAPI_FILE.read_text())
    documented = {(method.upper(), path) for path, item in document["paths"].items() for method in item}
    assert served == documented
    assert {(r.method, r.path) for r in ROUTES} | {("GET", OPENAPI_PATH)} == documented
    for route in ROUTES:  # each operation names its scope
        assert route.scope in document["paths"][route.path][route.method.lower()]["description"]


# --- schemathesis ----------------------------------------------------------------------------

#: Generated cases per operation and pass; the whole run stops after FUZZ_SECONDS.
FUZZ_EXAMPLES = 8
FUZZ_SECONDS = 20.0
#: Longest query string sent: aiohttp refuses request lines over 8190 bytes itself (realtime/openapi.json says so).
MAX_QUERY = 8000
#: Generated channels rarely name a configured namespace of the right kind: the
#: "pinned" pass puts one there, so that valid requests reach the success paths.
PINNED = {
    "/api/presence": "room:1",
    "/api/presence_stats": "room:1",
    "/api/state": "live:1",
    "/api/state/set": "live:1",
    "/api/state/patch": "live:1",
}


def _pin(case: schemathesis.Case[Any]) -> None:
    channel = PINNED.get(case.operation.path, "news")
    if case.query and "channel" in case.query:
        case.query["channel"] = channel
    body = case.body
    if isinstance(body, dict):
        if "channel" in body:
            body["channel"] = channel
        channels = body.get("channels")
        if isinstance(channels, list):
            body["channels"] = [f"{channel}{i}" for i in range(len(channels))]


@schemathesis.serializer("application/msgpack")
def _pack_body(ctx: schemathesis.SerializationContext, value: Any) -> bytes:
    packed: bytes = msgpack.packb(value)
    return packed


@schemathesis.deserializer("application/msgpack")
def _unpack_body(ctx: schemathesis.DeserializationContext, response: schemathesis.Response) -> Any:
    return msgpack.unpackb(response.content, strict_map_key=False)


def run_schemathesis(base_url: str, key: str) -> tuple[list[str], set[str]]:
    """Positive and negative cases for every operation; (failure reports, operations exercised).

    Runs in a thread (schemathesis calls with ``requests``) while the hub serves on the test's loop.
    """
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    schema = schemathesis.openapi.from_dict(json.loads(OPENAPI_FILE.read_text()))
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    headers = {"Authorization": f"apikey {key}"}
    stop = time.monotonic() + FUZZ_SECONDS
    failures: list[str] = []
    covered: set[str] = set()
    for result in schema.get_all_operations():
        assert isinstance(result, Ok), result.err()  # realtime/openapi.json is invalid
        operation = result.ok()
        for mode, pinned in (
            (GenerationMode.POSITIVE, False),
            (GenerationMode.POSITIVE, True),
            (GenerationMode.NEGATIVE, False),
        ):

            @hypothesis.settings(
                max_examples=FUZZ_EXAMPLES,
                derandomize=True,
                database=None,
                deadline=None,
                phases=[hypothesis.Phase.generate],  # no shrinking: report what failed as is
                suppress_health_check=list(hypothesis.HealthCheck),
            )
            @hypothesis.given(operation.as_strategy(generation_mode=mode, headers=headers))
            def check(case: schemathesis.Case[Any]) -> None:
                if time.monotonic() > stop:
                    return
                if pinned:
                    _pin(case)
                if case.query and len(urlencode(case.query, doseq=True)) > MAX_QUERY:
                    hypothesis.reject()  # past aiohttp's request line limit: refused before the API sees it
                if case.media_type == "application/msgpack":
                    try:
                        msgpack.packb(case.body)
                    except (OverflowError, TypeError, ValueError):
                        hypothesis.reject()  # not representable in MessagePack (an integer beyond 64 bits)
                response = case.call(base_url=base_url, timeout=5)
                covered.add(operation.label)
                extra = [negative_data_rejection] if mode is GenerationMode.NEGATIVE else []
                try:
                    case.validate_response(response, checks=[*checks, *extra])
                except schemathesis.errors.FailureGroup as exc:
                    failures.append(f"{operation.label} ({mode.value}{', pinned' if pinned else ''}): {exc}")

            try:
                check()
            except hypothesis.errors.Unsatisfiable:
                pass  # an operation without invalid inputs (GET /api/openapi.json) has no negative cases
    assert time.monotonic() < stop, f"schemathesis ran out of its {FUZZ_SECONDS}s: raise the cap or lower FUZZ_EXAMPLES"
    return failures, covered


# schemathesis drives hypothesis from inside its own strategies; in some test orders it trips one of
# hypothesis's deprecation warnings (errors under filterwarnings = error). That is the tool's use of
# its dependency, not the API under test, so this one test lets those warnings pass.
@pytest.mark.filterwarnings("ignore::hypothesis.errors.HypothesisDeprecationWarning")
async def test_schemathesis(api: RunningHub) -> None:
    """Generated requests (valid and invalid, JSON and MessagePack) find no 5xx and no off-schema response."""
    async with await RawClient.open(api.url, token=make_token("alice", info={"n": 1})) as alice:
        await alice.subscribe("room:1")  # someone present, so presence answers list a member
        failures, covered = await asyncio.to_thread(run_schemathesis, api.http_url, ALL.key)
    assert not failures, "\n\n".join(failures[:5])
    assert covered == {f"{r.method} {r.path}" for r in ROUTES} | {f"GET {OPENAPI_PATH}"}


async def test_msgpack_data_may_have_integer_map_keys(api: RunningHub) -> None:
    """Any MessagePack value is data, maps with integer keys included (the publisher sends them as they are)."""
    async with Publisher(api.http_url, ALL.key) as pub:
        assert (await pub.publish("news", {1: "one", "nested": {2: "two"}})).offset == 1
        assert (await pub.history("news"))[0].data == {1: "one", "nested": {2: "two"}}
        assert await pub.state_set("live:1", "k", {1: "one"}) >= 1


async def test_json_integers_beyond_64_bits_are_refused(api: RunningHub, session: aiohttp.ClientSession) -> None:
    """As on the WebSocket: never silently published as a float."""
    raw = b'{"channel": "news", "data": 18446744073709551616}'
    async with session.post(
        api.http_url + "/api/publish", data=raw, headers={**auth(), "Content-Type": "application/json"}
    ) as r:
        assert_error(r.status, await r.json(), 400, ErrorCode.BAD_REQUEST)
    status, body = await call(session, api, "GET", "/api/history", params={"channel": "news"})
    assert status == 200 and body["publications"] == []


@pytest.mark.parametrize("encoding", ["gzip", "deflate"])
async def test_a_body_that_does_not_decompress_is_a_400(
    api: RunningHub, session: aiohttp.ClientSession, encoding: str
) -> None:
    headers = {**auth(), "Content-Type": "application/json", "Content-Encoding": encoding}
    async with session.post(api.http_url + "/api/publish", data=b"not compressed", headers=headers) as r:
        assert_error(r.status, await r.json(), 400, ErrorCode.BAD_REQUEST)


async def test_history_after_the_largest_offset_on_redis(
    hub_factory: HubFactory, redis_server: RedisServer, session: aiohttp.ClientSession
) -> None:
    """The largest offset the document allows is an empty page, not a stream id Redis refuses."""
    hub = await hub_factory(api_keys=(ALL,), namespaces=NAMESPACES, redis=redis_server.url)
    assert (await call(session, hub, "POST", "/api/publish", {"channel": "news", "data": 1}))[0] == 200
    status, body = await call(session, hub, "GET", "/api/history", params={"channel": "news", "after": str(2**64 - 1)})
    assert status == 200 and body["publications"] == [] and body["offset"] == 1


async def test_last_seen_is_in_milliseconds_as_documented(hub_factory: HubFactory) -> None:
    status_ns = Namespace(name="status", kind="status", subscribe="authenticated", presence_grace=0)
    hub = await hub_factory(api_keys=(ALL,), namespaces=namespaces(status_ns))
    async with await RawClient.open(hub.url, token=make_token("alice")):
        pass
    async with Publisher(hub.http_url, ALL.key) as pub:
        async with asyncio.timeout(5):
            while (status := (await pub.status(["alice"]))[0]).online or not status.last_seen:
                await asyncio.sleep(0.01)
    assert abs(status.last_seen / 1000 - time.time()) < 60
    schema = orjson.loads(OPENAPI_FILE.read_bytes())["components"]["schemas"]["UserStatus"]
    assert "milliseconds" in schema["properties"]["last_seen"]["description"]
