"""Auth and namespaces end to end: tokens, refresh, expiry, revocation, channel rules."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt
import pytest

from protocol.codes import CloseCode, ErrorCode
from protocol.errors import DisconnectError
from protocol.messages import (
    Connect,
    ConnectResult,
    Disconnect,
    Ping,
    Publish,
    Refresh,
    RefreshResult,
    Subscribe,
    Unsubscribed,
)
from realtime.namespaces import Namespace

from .helpers import TEST_SECRET, HubFactory, RunningHub, closed_code, make_token, namespaces
from .wsclient import RawClient, value

NAMESPACES = namespaces(
    Namespace(name="room", subscribe="authenticated", publish="clients"),
    Namespace(name="user", subscribe="user", publish="server"),
    Namespace(name="vip", subscribe="token", publish="clients"),
    Namespace(name="news", subscribe="anyone", publish="server"),
)


@pytest.fixture
async def hub(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory(namespaces=NAMESPACES, allow_anonymous=False)


async def test_token_sets_user_and_expiry(hub: RunningHub) -> None:
    token = make_token("alice", ttl=600, info={"name": "Alice"})
    async with await RawClient.open(hub.url, connect_first=False) as c:
        reply = await c.command(Connect(0, token=token))
        result = reply.result
        assert isinstance(result, ConnectResult)
        assert result.user == "alice"
        assert abs(result.expires - (time.time() + 600)) < 5
        await c.subscribe("room:1")
        await c.publish("room:1", "hi")
        pub = await c.publication()
        assert pub.info is not None and pub.info.user == "alice"
        assert pub.info.info is not None and value(pub) == "hi"


@pytest.mark.parametrize(
    "token",
    [None, "not-a-jwt", jwt.encode({"sub": "alice"}, "another-secret-that-is-long-enough-!!", algorithm="HS256")],
)
async def test_missing_or_bad_token_closes_4501(hub: RunningHub, token: str | None) -> None:
    async with await RawClient.open(hub.url, connect_first=False) as c:
        await c.send(Connect(1, token=token))
        push = await c.disconnect_push()
        assert push.code == CloseCode.UNAUTHORIZED and not push.reconnect
        assert await closed_code(c) == CloseCode.UNAUTHORIZED


async def test_a_time_claim_past_year_9999_is_refused(hub: RunningHub) -> None:
    """A well-signed token with an absurd ``exp`` is a bad token, not an internal error."""
    async with await RawClient.open(hub.url, connect_first=False) as c:
        await c.send(Connect(c.next_id(), token=make_token("alice", ttl=None, exp=2**64)))
        assert await closed_code(c) == CloseCode.UNAUTHORIZED


async def test_expired_token_at_connect_is_an_error_and_a_fresh_one_works(hub: RunningHub) -> None:
    expired = jwt.encode({"sub": "alice", "exp": int(time.time()) - 10}, TEST_SECRET, algorithm="HS256")
    async with await RawClient.open(hub.url, connect_first=False) as c:
        err = (await c.command(Connect(0, token=expired))).error
        assert err is not None and err.code == ErrorCode.TOKEN_EXPIRED
        ok = await c.command(Connect(0, token=make_token("alice")))
        assert isinstance(ok.result, ConnectResult) and ok.result.user == "alice"


async def test_unrefreshed_token_disconnects_after_grace(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=NAMESPACES, token_grace=0.2)
    token = jwt.encode({"sub": "alice", "exp": time.time() + 0.3}, TEST_SECRET, algorithm="HS256")
    async with await RawClient.open(hub.url, token=token) as c:
        push = await c.disconnect_push()
        assert push == Disconnect(CloseCode.TOKEN_EXPIRED, "token expired", True)
        assert await closed_code(c) == CloseCode.TOKEN_EXPIRED


async def test_a_token_past_exp_works_and_refreshes_within_the_grace(hub_factory: HubFactory) -> None:
    """protocol.md, refresh: past ``exp`` the connection goes on for ``token_grace``, and a refresh
    within it keeps the connection (4007 comes only ``token_grace`` after ``exp``)."""
    hub = await hub_factory(namespaces=NAMESPACES, token_grace=30)
    exp = time.time() + 0.2
    token = jwt.encode({"sub": "alice", "exp": exp}, TEST_SECRET, algorithm="HS256")
    async with await RawClient.open(hub.url, token=token) as c:
        await asyncio.sleep(max(0.0, exp - time.time()) + 0.1)  # wall-clock expiry: no event to await
        assert time.time() > exp
        assert (await c.command(Ping(0))).error is None  # expired, within the grace: still served
        reply = await c.command(Refresh(0, make_token("alice", ttl=60)))
        assert isinstance(reply.result, RefreshResult) and reply.result.expires > time.time() + 30
        await c.subscribe("room:1")
        assert c.ws.close_code is None


async def test_refresh_keeps_the_connection(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=NAMESPACES, token_grace=0.2)
    token = jwt.encode({"sub": "alice", "exp": time.time() + 0.3}, TEST_SECRET, algorithm="HS256")
    async with await RawClient.open(hub.url, token=token) as c:
        reply = await c.command(Refresh(0, make_token("alice", ttl=60)))
        assert isinstance(reply.result, RefreshResult) and reply.result.expires > time.time() + 30
        other = await c.command(Refresh(0, make_token("mallory")))
        assert other.error is not None and other.error.code == ErrorCode.PERMISSION_DENIED
        # Well past the first token's expiry and grace, the connection still works.
        await c.subscribe("room:1")
        await c.publish("room:1", "still here")
        assert value(await c.publication(timeout=2)) == "still here"


async def test_channel_rules(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url, token=make_token("alice")) as alice:
        await alice.subscribe("user:#alice")
        for channel, code in [
            ("user:#bob", ErrorCode.PERMISSION_DENIED),  # another user's channel
            ("vip:lounge", ErrorCode.PERMISSION_DENIED),  # needs a subscription token
            ("nowhere:x", ErrorCode.UNKNOWN_CHANNEL),
        ]:
            err = (await alice.command(Subscribe(0, channel))).error
            assert err is not None and err.code == code, channel
        sub_token = make_token("alice", channel="vip:lounge")
        await alice.subscribe("vip:lounge", token=sub_token)
        wrong = await alice.command(Subscribe(0, "vip:other", token=sub_token))
        assert wrong.error is not None and wrong.error.code == ErrorCode.PERMISSION_DENIED
        # Server-only namespaces refuse client publishes.
        await alice.subscribe("news:today")
        denied = await alice.command(Publish(0, "news:today", b"\xa1x"))
        assert denied.error is not None and denied.error.code == ErrorCode.PERMISSION_DENIED


async def test_grants_in_the_token(hub: RunningHub) -> None:
    token = make_token("alice", channels=["user:#bob"])
    async with await RawClient.open(hub.url, token=token) as alice:
        await alice.subscribe("user:#bob")


async def test_revocation_disconnects_and_refuses_old_tokens(hub: RunningHub) -> None:
    old = make_token("alice")
    async with await RawClient.open(hub.url, token=old) as c:
        await hub.hub.revoke("alice", time.time() + 1)
        push = await c.disconnect_push()
        assert push.code == CloseCode.UNAUTHORIZED and not push.reconnect
    async with await RawClient.open(hub.url, connect_first=False) as again:
        await again.send(Connect(1, token=old))
        assert (await again.disconnect_push()).code == CloseCode.UNAUTHORIZED
    fresh = jwt.encode({"sub": "alice", "iat": int(time.time()) + 5}, TEST_SECRET, algorithm="HS256")
    async with await RawClient.open(hub.url, token=fresh):
        pass


async def test_server_unsubscribes_a_user(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url, token=make_token("alice")) as alice:
        await alice.subscribe("room:1")
        await hub.hub.control("unsubscribe", user="alice", channel="room:1")
        push = await alice.next_push()
        assert isinstance(push, Unsubscribed) and push.channel == "room:1"
        assert "room:1" not in next(iter(hub.hub.connections.values())).channels


async def test_disconnect_user_control(hub: RunningHub) -> None:
    async with (
        await RawClient.open(hub.url, token=make_token("alice")) as a1,
        await RawClient.open(hub.url, token=make_token("alice")) as a2,
        await RawClient.open(hub.url, token=make_token("bob")) as bob,
    ):
        await hub.hub.control("disconnect", user="alice", code=int(CloseCode.FORCE_RECONNECT), reason="bye")
        for c in (a1, a2):
            push = await c.disconnect_push()
            assert push.code == CloseCode.FORCE_RECONNECT and push.reconnect
        await bob.subscribe("room:1")  # bob is untouched


async def test_a_refresh_that_lands_after_the_close_sets_no_expiry_timer(hub: RunningHub) -> None:
    """A refresh still checking its token (a revocation lookup) when the connection is
    closed must not keep the closed connection alive on a timer until the token expires."""
    async with await RawClient.open(hub.url, token=make_token("alice")) as c:
        await c.subscribe("room:1")
        conn = next(iter(hub.hub.connections.values()))
        identity = conn.identity
        conn.close(DisconnectError(CloseCode.FORCE_DISCONNECT))
        conn.authenticate(identity)  # what the refresh does once its check returns
        assert conn._expiry is None
        assert await closed_code(c) == CloseCode.FORCE_DISCONNECT


async def test_a_revocation_during_the_connects_own_check_still_disconnects(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The revocation lands while the connect reads the user's revocation time (an engine
    round trip): the connect read the old value, but the revocation's disconnect reaches it."""
    engine = hub.hub.engine
    original = engine.kv_get
    reading, gate = asyncio.Event(), asyncio.Event()

    async def late_kv_get(key: str) -> bytes | None:
        value: bytes | None = await original(key)  # read before the revocation is stored...
        if key == "revoked:alice":
            reading.set()
            await gate.wait()  # ...and answered after it
        return value

    monkeypatch.setattr(engine, "kv_get", late_kv_get)
    async with await RawClient.open(hub.url, connect_first=False) as c:
        await c.send(Connect(c.next_id(), token=make_token("alice")))
        await asyncio.wait_for(reading.wait(), 5)
        await hub.hub.revoke("alice", time.time() + 1)
        gate.set()
        push = await c.disconnect_push()
        assert push.code == CloseCode.UNAUTHORIZED
        assert await closed_code(c) == CloseCode.UNAUTHORIZED
    async with asyncio.timeout(5):
        while hub.hub.connections:
            await asyncio.sleep(0.01)
    assert "alice" not in hub.hub.users


# --- aud and iss (token_audience, token_issuer) --------------------------------------

AUD_CASES: list[tuple[dict[str, str], dict[str, Any], bool]] = [
    # (hub settings, claims, accepted)
    ({}, {"aud": "https://idp.example/app"}, True),  # not configured: aud not checked
    ({}, {"iss": "https://idp.example"}, True),
    ({"token_audience": "mobile"}, {"aud": "mobile"}, True),
    ({"token_audience": "mobile"}, {"aud": ["web", "mobile"]}, True),
    ({"token_audience": "mobile"}, {"aud": "web"}, False),
    ({"token_audience": "mobile"}, {}, False),
    ({"token_issuer": "https://idp.example"}, {"iss": "https://idp.example"}, True),
    ({"token_issuer": "https://idp.example"}, {"iss": "https://evil.example"}, False),
    ({"token_issuer": "https://idp.example"}, {}, False),
]


@pytest.mark.parametrize(("settings", "claims", "accepted"), AUD_CASES)
async def test_aud_and_iss_on_connect_refresh_and_subscribe(
    hub_factory: HubFactory, settings: dict[str, str], claims: dict[str, Any], accepted: bool
) -> None:
    """docs/protocol.md, Tokens: checked only when the hub is configured with them; then they
    must be in the token and match, for connect, refresh and subscription tokens alike."""
    hub = await hub_factory(namespaces=NAMESPACES, allow_anonymous=False, **settings)
    good: dict[str, Any] = {
        k: v for k, v in (("aud", settings.get("token_audience")), ("iss", settings.get("token_issuer"))) if v
    }
    if accepted:
        async with await RawClient.open(hub.url, token=make_token("alice", **claims)) as c:
            refreshed = await c.command(Refresh(0, make_token("alice", **claims)))
            assert isinstance(refreshed.result, RefreshResult)
            sub = await c.subscribe("vip:1", token=make_token("alice", channel="vip:1", **claims))
            assert sub.error is None
        return
    async with await RawClient.open(hub.url, connect_first=False) as c:
        await c.send(Connect(1, token=make_token("alice", **claims)))
        assert (await c.disconnect_push()).code == CloseCode.UNAUTHORIZED
        assert await closed_code(c) == CloseCode.UNAUTHORIZED
    # A connection with the right claims: a subscription or refresh token with these is refused.
    async with await RawClient.open(hub.url, token=make_token("alice", **good)) as c:
        sub = await c.command(Subscribe(0, "vip:2", token=make_token("alice", channel="vip:2", **claims)))
        assert sub.error is not None and sub.error.code == ErrorCode.PERMISSION_DENIED
        await c.send(Refresh(c.next_id(), make_token("alice", **claims)))
        assert (await c.disconnect_push()).code == CloseCode.UNAUTHORIZED
