"""Proxies and rpc end to end: a hub in this process, the app's backend a real aiohttp server.

Connect, refresh, subscribe, publish and rpc proxies allowing, refusing, timing out, failing with
500, and unreachable; the circuit breaker opening and letting one trial through; signatures the
backend verifies; JSON and MessagePack bodies; the hub serving on after every failure.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs
import pytest

from protocol.codes import CloseCode, ErrorCode
from protocol.messages import (
    Connect,
    ConnectResult,
    Disconnect,
    Join,
    Ping,
    PresenceQuery,
    PresenceResult,
    Publish,
    Rpc,
    RpcResult,
    Subscribe,
    Unsubscribe,
)
from realtime.backend.signing import ID_HEADER
from realtime.client import Client, ReplyError
from realtime.namespaces import Namespace

from .helpers import HubFactory, RunningHub, closed_code, make_token, namespaces, unpack
from .proxy_backend import BACKEND_SECRET, Backend, Reply, closed_port
from .redis_server import RedisServer
from .wsclient import RawClient, value

ALLOW_ALICE = Reply({"result": {"user": "alice", "info": {"name": "Alice"}, "channels": ["granted:*"]}})


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    await b.start()
    yield b
    await b.stop()


def ns(backend: Backend) -> Any:
    return namespaces(
        Namespace(name="room", subscribe="anyone", publish="clients", subscribe_proxy=backend.url("/subscribe")),
        Namespace(
            name="chat", kind="chat", subscribe="anyone", publish="server", publish_proxy=backend.url("/publish")
        ),
        Namespace(name="feed", subscribe="anyone", publish="server", publish_proxy=backend.url("/publish")),
        Namespace(name="granted", subscribe="token", subscribe_proxy=backend.url("/subscribe")),
        Namespace(
            name="lobby",
            subscribe="anyone",
            publish="clients",
            presence=True,
            join_leave=True,
            subscribe_proxy=backend.url("/subscribe"),
        ),
    )


#: The backend timeout of tests where the backend hangs: short, yet far above a real answer's time even on
#: a loaded CI machine (0.2 s once timed out a connect proxy call answered at once).
HANG_TIMEOUT = 1.5


async def proxied_hub(hub_factory: HubFactory, backend: Backend, **overrides: Any) -> RunningHub:
    settings: dict[str, Any] = {
        "backend_secrets": (BACKEND_SECRET,),
        # Far above any answer's time, even on a loaded CI machine: a test of timeouts sets its own.
        "backend_timeout": 5.0,
        "proxy_connect": backend.url("/connect"),
        "proxy_refresh": backend.url("/refresh"),
        "proxy_rpc": backend.url("/rpc"),
        "proxy_headers": ("Cookie", "Authorization"),
        "namespaces": ns(backend),
        **overrides,
    }
    return await hub_factory(**settings)


async def connect(hub: RunningHub, data: Any = None, **kwargs: Any) -> RawClient:
    """A connection let in by the connect proxy (which must allow it)."""
    client = await RawClient.open(hub.url, connect_first=False, **kwargs)
    reply = await client.command(Connect(0, data=None if data is None else msgpack.packb(data)))
    assert isinstance(reply.result, ConnectResult), reply
    client.client_id = reply.result.client
    return client


async def still_serving(hub: RunningHub) -> None:
    """The hub took the failures in its stride: a JWT connection works."""
    async with await RawClient.open(hub.url, token=make_token("zed")) as c:
        assert (await c.command(Ping(0))).error is None


# --- connect ---------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_connect_proxy_lets_in_who_the_backend_names(hub_factory: HubFactory, backend: Backend, fmt: str) -> None:
    expires = int(time.time()) + 3600
    backend.on(
        "/connect",
        Reply({"result": {"user": "alice", "info": {"name": "Alice"}, "expires": expires}}, format=fmt),
    )
    hub = await proxied_hub(hub_factory, backend, backend_format=fmt)
    headers = {"Cookie": "sid=s3cr3t", "X-Other": "not passed"}
    client = await RawClient.open(hub.url, connect_first=False, additional_headers=headers)
    async with client:
        reply = await client.command(Connect(0, name="test", data=msgpack.packb({"session": "s1"})))
        result = reply.result
        assert isinstance(result, ConnectResult) and result.user == "alice" and result.expires == expires
        (request,) = backend.calls("/connect")
        assert request.headers["Content-Type"] == f"application/{fmt}"
        assert backend.verified(request, time.time()) and request.headers[ID_HEADER]
        body = request.body
        assert body["client"] == result.client and body["user"] == "" and body["remote"] == "127.0.0.1"
        assert body["node"] and body["name"] == "test" and body["data"] == {"session": "s1"}
        assert body["headers"] == {"Cookie": "sid=s3cr3t"}
        await client.command(Subscribe(0, "chat:1"))
        # The connection publishes under the backend's user and info.
        backend.on("/publish", Reply({"result": {}}))
        assert (await client.command(Publish(0, "chat:1", msgpack.packb("hi")))).error is None
        pub = await client.publication()
        assert pub.info is not None and pub.info.user == "alice" and unpack(pub.info.info or b"") == {"name": "Alice"}


async def test_a_jwt_is_verified_by_the_hub_without_the_backend(hub_factory: HubFactory, backend: Backend) -> None:
    hub = await proxied_hub(hub_factory, backend)
    async with await RawClient.open(hub.url, token=make_token("bob")) as c:
        assert (await c.command(Ping(0))).error is None
    assert backend.calls("/connect") == []


async def test_without_a_token_key_a_token_is_the_apps_session_for_the_backend(
    hub_factory: HubFactory, backend: Backend
) -> None:
    backend.on("/connect", lambda body: ALLOW_ALICE if body.get("token") == "opaque-session" else Reply({}, 500))
    hub = await proxied_hub(hub_factory, backend, token_secret=None)
    async with await RawClient.open(hub.url, token="opaque-session") as c:
        assert (await c.command(Ping(0))).error is None
    assert backend.calls("/connect")[0].body["token"] == "opaque-session"


@pytest.mark.parametrize(
    ("answer", "code"),
    [
        (Reply({"error": {"code": 1401, "message": "no session"}}), CloseCode.UNAUTHORIZED),
        (Reply({"disconnect": {"code": 4555, "reason": "banned"}}), 4555),
        (Reply({"result": {"user": "a,b"}}), CloseCode.OVERLOADED),  # not a usable user id: a bad answer
    ],
)
async def test_connect_proxy_refusals_close_the_connection(
    hub_factory: HubFactory, backend: Backend, answer: Reply, code: int
) -> None:
    backend.on("/connect", answer)
    hub = await proxied_hub(hub_factory, backend)
    async with await RawClient.open(hub.url, connect_first=False) as c:
        await c.send(Connect(c.next_id()))
        push = await c.disconnect_push()
        assert push.code == code
        assert await closed_code(c) == code
    await still_serving(hub)


@pytest.mark.parametrize("failure", ["timeout", "500", "down"])
async def test_a_failing_backend_is_a_temporary_refusal_with_advice(
    hub_factory: HubFactory, backend: Backend, failure: str
) -> None:
    url = backend.url("/connect") if failure != "down" else f"http://127.0.0.1:{closed_port()}/connect"
    backend.on("/connect", Reply(hang=True) if failure == "timeout" else Reply({"oops": 1}, status=500))
    hub = await proxied_hub(hub_factory, backend, proxy_connect=url, backend_timeout=HANG_TIMEOUT)
    async with await RawClient.open(hub.url, connect_first=False) as c:
        await c.send(Connect(c.next_id()))
        push = await c.disconnect_push()
        assert push.code == CloseCode.OVERLOADED and push.reconnect and push.reason == "backend unavailable"
        assert push.retry_after is not None and push.retry_after >= 1000
    await still_serving(hub)


async def test_the_breaker_fails_fast_then_lets_one_trial_through(hub_factory: HubFactory, backend: Backend) -> None:
    backend.on("/connect", Reply({}, status=503))
    hub = await proxied_hub(hub_factory, backend, backend_breaker_failures=2, backend_breaker_cooldown=0.3)

    async def attempt() -> int:
        """The close code of a refused connect, 0 for one let in."""
        async with await RawClient.open(hub.url, connect_first=False) as c:
            await c.send(Connect(c.next_id()))
            message = await c.recv()
            return message.code if isinstance(message, Disconnect) else 0

    assert [await attempt(), await attempt()] == [CloseCode.OVERLOADED] * 2
    assert len(backend.calls("/connect")) == 2
    assert await attempt() == CloseCode.OVERLOADED  # open: refused without a request
    assert len(backend.calls("/connect")) == 2
    backend.on("/connect", ALLOW_ALICE)
    for _ in range(100):  # the cool-down passes: the trial goes through and closes the breaker
        if await attempt() == 0:
            break
        await asyncio.sleep(0.05)  # time itself must pass: no event to wait for
    assert len(backend.calls("/connect")) == 3
    async with await connect(hub):
        pass
    assert len(backend.calls("/connect")) == 4


# --- refresh ---------------------------------------------------------------------------


async def test_refresh_proxy_extends_a_proxied_connection(hub_factory: HubFactory, backend: Backend) -> None:
    first = int(time.time()) + 1
    backend.on("/connect", Reply({"result": {"user": "alice", "expires": first}}))
    backend.on("/refresh", Reply({"result": {"expires": int(time.time()) + 3600}}))
    hub = await proxied_hub(hub_factory, backend, token_grace=0.3)
    async with await connect(hub) as c:
        (request,) = await backend.wait_calls("/refresh", 1)
        assert request.body["user"] == "alice" and request.body["client"] == c.client_id
        assert backend.verified(request, time.time())
        # Past the first expiry and its grace (the connection would be closed by now), it serves on.
        for _ in range(40):
            if time.time() > first + 0.6:
                break
            await asyncio.sleep(0.1)  # time itself must pass: no event to wait for
        assert (await c.command(Ping(0))).error is None
        assert len(backend.calls("/refresh")) == 1


async def test_refresh_proxy_can_end_the_session(hub_factory: HubFactory, backend: Backend) -> None:
    backend.on("/connect", Reply({"result": {"user": "alice", "expires": int(time.time()) + 2}}))
    backend.on("/refresh", Reply({"disconnect": {"code": 4502, "reason": "logged out"}}))
    hub = await proxied_hub(hub_factory, backend)
    async with await connect(hub) as c:
        push = await c.disconnect_push()
        assert (push.code, push.reason, push.reconnect) == (4502, "logged out", False)
    await still_serving(hub)


# --- subscribe ---------------------------------------------------------------------------


async def test_subscribe_proxy_allows_and_refuses(hub_factory: HubFactory, backend: Backend) -> None:
    backend.on("/connect", ALLOW_ALICE)

    def decide(body: Any) -> Reply:
        if body["channel"] == "room:open":
            return Reply({"result": {}})
        if body["channel"] == "room:app":
            return Reply({"error": {"code": 1403, "message": "members only"}})
        if body["channel"] == "room:hang":
            return Reply(hang=True)
        if body["channel"] == "room:500":
            return Reply({}, status=500)
        return Reply({"error": {"code": 7, "message": "no"}})

    backend.on("/subscribe", decide)
    hub = await proxied_hub(hub_factory, backend, backend_timeout=HANG_TIMEOUT)
    async with await connect(hub) as c:
        assert (await c.command(Subscribe(0, "room:open"))).error is None
        (request,) = backend.calls("/subscribe")
        assert request.body["channel"] == "room:open" and request.body["user"] == "alice"
        errors = {}
        for channel in ("room:app", "room:other", "room:hang", "room:500"):
            error = (await c.command(Subscribe(0, channel))).error
            assert error is not None
            errors[channel] = (error.code, error.message)
        assert errors["room:app"] == (1403, "members only")  # the app's code, as it is
        assert errors["room:other"] == (ErrorCode.PERMISSION_DENIED, "no")
        assert errors["room:hang"][0] == errors["room:500"][0] == ErrorCode.NOT_AVAILABLE
        # A grant of the connection lets a channel in without asking.
        calls = len(backend.calls("/subscribe"))
        assert (await c.command(Subscribe(0, "granted:x"))).error is None
        assert len(backend.calls("/subscribe")) == calls
        assert (await c.command(Ping(0))).error is None


async def subscription_info(hub: RunningHub, backend: Backend) -> None:
    """The subscribe proxy's ``info`` stands for the connection's in that channel only: presence,
    the join and the connection's publications there; not in a channel subscribed without it,
    and not after the subscription ended."""

    def decide(body: Any) -> Reply:
        if body["channel"] == "lobby:1":
            return Reply({"result": {"info": {"role": "host", "seat": 3}}})
        return Reply({"result": {}})

    backend.on("/subscribe", decide)
    async with await connect(hub) as c:
        for channel, info in (("lobby:1", {"role": "host", "seat": 3}), ("lobby:2", {"name": "Alice"})):
            await c.subscribe(channel)
            join = await c.next_push()
            assert isinstance(join, Join) and join.channel == channel and join.user == "alice"
            assert unpack(join.info or b"") == info
            presence = (await c.command(PresenceQuery(0, channel))).result
            assert isinstance(presence, PresenceResult)
            assert unpack(presence.clients[c.client_id].info or b"") == info
            await c.publish(channel, "hi")
            pub = await c.publication()
            assert pub.info is not None and pub.info.user == "alice" and pub.info.client == c.client_id
            assert unpack(pub.info.info or b"") == info
        # Unsubscribed, then subscribed without info (no join: alice left within the grace window),
        # the connection publishes there under its own info again.
        assert (await c.command(Unsubscribe(0, "lobby:1"))).error is None
        backend.on("/subscribe", Reply({"result": {}}))
        await c.subscribe("lobby:1")
        await c.publish("lobby:1", "again")
        pub = await c.publication()
        assert pub.info is not None and unpack(pub.info.info or b"") == {"name": "Alice"}


async def test_subscribe_proxy_info_memory(hub_factory: HubFactory, backend: Backend) -> None:
    backend.on("/connect", ALLOW_ALICE)
    await subscription_info(await proxied_hub(hub_factory, backend), backend)


@pytest.mark.redis
async def test_subscribe_proxy_info_redis(hub_factory: HubFactory, backend: Backend, redis_server: RedisServer) -> None:
    backend.on("/connect", ALLOW_ALICE)
    hub = await proxied_hub(hub_factory, backend, redis=redis_server.url, backend_format="msgpack")
    await subscription_info(hub, backend)


async def test_subscribe_proxy_info_that_cannot_be_packed_is_a_temporary_refusal(
    hub_factory: HubFactory, backend: Backend
) -> None:
    backend.on("/connect", ALLOW_ALICE)
    backend.on("/subscribe", Reply({"result": {"info": 2**70}}))
    hub = await proxied_hub(hub_factory, backend)
    async with await connect(hub) as c:
        error = (await c.command(Subscribe(0, "lobby:1"))).error
        assert error is not None and error.code == ErrorCode.NOT_AVAILABLE
        assert (await c.command(Ping(0))).error is None


# --- publish ---------------------------------------------------------------------------


async def publish_proxy_rewrites_and_refuses(hub: RunningHub, backend: Backend) -> None:
    def decide(body: Any) -> Reply:
        text = body["data"]["text"]
        if text == "spam":
            return Reply({"error": {"code": 1422, "message": "spam"}})
        if text == "keep":
            return Reply({"result": {}})
        return Reply({"result": {"data": {"text": text.upper(), "checked": True}}})

    backend.on("/publish", decide)
    async with await connect(hub) as c:
        await c.subscribe("chat:1")
        assert (await c.command(Publish(0, "chat:1", msgpack.packb({"text": "hi"}), key="k1"))).error is None
        assert value(await c.publication()) == {"text": "HI", "checked": True}
        assert (await c.command(Publish(0, "chat:1", msgpack.packb({"text": "keep"})))).error is None
        assert value(await c.publication()) == {"text": "keep"}
        error = (await c.command(Publish(0, "chat:1", msgpack.packb({"text": "spam"})))).error
        assert error is not None and (error.code, error.message) == (1422, "spam")
        # A retry with the same key: the backend sees the key again, the hub stores nothing twice.
        first = (await c.command(Publish(0, "chat:1", msgpack.packb({"text": "hi"}), key="k1"))).result
        assert first is not None
        calls = backend.calls("/publish")
        assert [r.body["key"] for r in calls] == ["k1", None, None, "k1"]
        assert calls[0].body["channel"] == "chat:1" and calls[0].body["user"] == "alice"
        assert all(backend.verified(r, time.time()) for r in calls)
        await c.subscribe("feed:1")
        assert (await c.command(Publish(0, "feed:1", msgpack.packb({"text": "x"})))).error is None
        assert value(await c.publication()) == {"text": "X", "checked": True}
        history = await c.command(Subscribe(0, "chat:2"))
        assert history.error is None
        assert (await c.command(Ping(0))).error is None


async def test_publish_proxy_memory(hub_factory: HubFactory, backend: Backend) -> None:
    backend.on("/connect", ALLOW_ALICE)
    await publish_proxy_rewrites_and_refuses(await proxied_hub(hub_factory, backend), backend)


@pytest.mark.redis
async def test_publish_proxy_redis(hub_factory: HubFactory, backend: Backend, redis_server: RedisServer) -> None:
    backend.on("/connect", ALLOW_ALICE)
    hub = await proxied_hub(hub_factory, backend, redis=redis_server.url, backend_format="msgpack")
    await publish_proxy_rewrites_and_refuses(hub, backend)


async def test_a_failing_publish_proxy_publishes_nothing(hub_factory: HubFactory, backend: Backend) -> None:
    backend.on("/connect", ALLOW_ALICE)
    backend.on("/publish", Reply({}, status=500))
    hub = await proxied_hub(hub_factory, backend)
    async with await connect(hub) as c:
        await c.subscribe("chat:1")
        error = (await c.command(Publish(0, "chat:1", msgpack.packb({"text": "hi"})))).error
        assert error is not None and error.code == ErrorCode.NOT_AVAILABLE and error.retry_after >= 1000
        backend.on("/publish", Reply({"result": {}}))
        assert (await c.command(Publish(0, "chat:1", msgpack.packb({"text": "again"})))).error is None
        assert value(await c.publication()) == {"text": "again"}  # the first was never published


# --- rpc -------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["json", "msgpack"])
async def test_rpc_answers_errors_and_failures(hub_factory: HubFactory, backend: Backend, fmt: str) -> None:
    backend.on("/connect", ALLOW_ALICE)

    def answer(body: Any) -> Reply:
        if body["method"] == "profile":
            return Reply({"result": {"data": {"id": body["data"]["id"], "name": "Bob"}}}, format=fmt)
        if body["method"] == "nothing":
            return Reply({"result": {}}, format=fmt)
        if body["method"] == "hang":
            return Reply(hang=True)
        if body["method"] == "fail":
            return Reply({}, status=500)
        return Reply({"error": {"code": 1404, "message": "no such method"}}, format=fmt)

    backend.on("/rpc", answer)
    hub = await proxied_hub(hub_factory, backend, backend_format=fmt, backend_timeout=HANG_TIMEOUT)
    async with await connect(hub) as c:
        reply = await c.command(Rpc(0, "profile", msgpack.packb({"id": 7})))
        assert isinstance(reply.result, RpcResult) and unpack(reply.result.data) == {"id": 7, "name": "Bob"}
        (request,) = backend.calls("/rpc")
        assert request.body == {
            "client": c.client_id,
            "user": "alice",
            "node": request.body["node"],
            "remote": "127.0.0.1",
            "method": "profile",
            "data": {"id": 7},
        }
        assert backend.verified(request, time.time())
        reply = await c.command(Rpc(0, "nothing"))
        assert isinstance(reply.result, RpcResult) and unpack(reply.result.data) is None
        error = (await c.command(Rpc(0, "missing"))).error
        assert error is not None and (error.code, error.message) == (1404, "no such method")
        for method in ("hang", "fail"):
            error = (await c.command(Rpc(0, method))).error
            assert error is not None and error.code == ErrorCode.NOT_AVAILABLE
        assert (await c.command(Ping(0))).error is None


async def test_rpc_without_an_endpoint_is_an_unknown_command(hub_factory: HubFactory, backend: Backend) -> None:
    hub = await proxied_hub(hub_factory, backend, proxy_rpc="")
    async with await RawClient.open(hub.url, token=make_token("bob")) as c:
        error = (await c.command(Rpc(0, "profile"))).error
        assert error is not None and error.code == ErrorCode.UNKNOWN_COMMAND


# --- the Python SDK ----------------------------------------------------------------------


async def test_python_sdk_connects_with_app_data_and_calls_rpc(hub_factory: HubFactory, backend: Backend) -> None:
    backend.on("/connect", lambda body: ALLOW_ALICE if body.get("data") == {"session": "s1"} else Reply({}, 500))
    backend.on(
        "/rpc",
        lambda body: (
            Reply({"result": {"data": [body["method"], body["data"]]}})
            if body["method"] == "echo"
            else Reply({"error": {"code": 1404, "message": "no such method"}})
        ),
    )
    hub = await proxied_hub(hub_factory, backend)
    async with Client(hub.url, data={"session": "s1"}) as client:
        assert client.user == "alice"
        assert await client.rpc("echo", {"n": 1}) == ["echo", {"n": 1}]
        assert await client.rpc("echo") == ["echo", None]
        with pytest.raises(ReplyError) as info:
            await client.rpc("other")
        assert (info.value.code, str(info.value.message)) == (1404, "no such method")


async def test_a_failing_refresh_proxy_is_asked_again_until_the_grace_runs_out(
    hub_factory: HubFactory, backend: Backend
) -> None:
    backend.on("/connect", Reply({"result": {"user": "alice", "expires": int(time.time()) + 2}}))
    backend.on("/refresh", Reply({}, status=500))
    hub = await proxied_hub(hub_factory, backend, token_grace=1.5)
    async with await connect(hub) as c:
        await backend.wait_calls("/refresh", 2)  # asked again after the failure
        push = await c.disconnect_push()
        assert (push.code, push.reconnect) == (CloseCode.TOKEN_EXPIRED, True)
    await still_serving(hub)
