"""Subscription tokens in the client SDK (``subscribe(channel, token=..., get_token=...)``), against real hubs.

Channels of a ``subscribe = "token"`` namespace need a JWT with ``sub`` (the
user) and ``channel``; these tests sign them as an app's backend would, and
drop connections for real (the hub kicks them, or restarts) to see fresh
tokens fetched on every resubscribe.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

import pytest

from protocol import messages as m
from protocol.codes import CloseCode, ErrorCode
from realtime.client import Client, ConnectionClosed, ReplyError, Subscription, TokenError
from realtime.namespaces import Namespace

from .helpers import WAIT, HubFactory, RunningHub, fast, kick, make_token, namespaces, spy, take, until

VIP = Namespace(name="vip", subscribe="token", publish="clients", history_size=100, history_ttl=300)
CHANNEL = "vip:lounge"


@pytest.fixture
async def hub(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory(namespaces=namespaces(VIP))


def user(hub: RunningHub, name: str, **options: object) -> Client:
    return fast(hub.url, token=make_token(name), **options)


def sub_token(user: str, channel: str = CHANNEL, ttl: float = 3600) -> str:
    return make_token(user, channel=channel, ttl=ttl)


class Tokens:
    """A ``get_token`` that hands out ``plan``'s tokens (or raises its exceptions) in turn, then fresh ones."""

    def __init__(self, user: str, *plan: str | Exception) -> None:
        self.user = user
        self.plan = list(plan)
        self.calls = 0
        self.given: list[str] = []

    async def __call__(self) -> str:
        self.calls += 1
        step = self.plan.pop(0) if self.plan else sub_token(self.user)
        if isinstance(step, Exception):
            raise step
        self.given.append(step)
        return step


async def reconnected(hub: RunningHub, client: Client, *, while_away: Callable[[], Awaitable[object]]) -> None:
    """Kick ``client`` and keep it out while ``while_away`` runs (publications it can only recover)."""
    old = client.client_id
    hub.hub.closing = True  # the hub refuses new sockets while closing
    kick(hub, client, CloseCode.FORCE_RECONNECT)
    await while_away()
    hub.hub.closing = False
    await until(lambda: client.connected and client.client_id != old, WAIT, "the reconnect")


async def test_no_token_is_refused(hub: RunningHub) -> None:
    async with user(hub, "alice") as alice:
        with pytest.raises(ReplyError) as caught:
            await alice.subscribe(CHANNEL)
        assert caught.value.code == ErrorCode.PERMISSION_DENIED
        assert alice.subscriptions() == {}
        # A token for another channel is no better.
        with pytest.raises(ReplyError) as caught:
            await alice.subscribe(CHANNEL, token=sub_token("alice", "vip:other"))
        assert caught.value.code == ErrorCode.PERMISSION_DENIED


async def test_token_subscribes_and_is_sent_again_on_reconnect(hub: RunningHub) -> None:
    codec = spy()
    token = sub_token("alice")
    async with user(hub, "alice", codec=codec) as alice, user(hub, "bob") as bob:
        sub = await alice.subscribe(CHANNEL, token=token)
        await bob.subscribe(CHANNEL, token=sub_token("bob"))
        await bob.publish(CHANNEL, "one")
        assert [m.data for m in await take(sub, 1)] == ["one"]

        await reconnected(hub, alice, while_away=lambda: bob.publish(CHANNEL, "two"))
        assert [m.data for m in await take(sub, 1)] == ["two"]
        assert [s.token for s in codec.subscribes(CHANNEL)] == [token, token]


async def test_expired_static_token_ends_the_subscription_on_resubscribe(hub: RunningHub) -> None:
    token = sub_token("alice", ttl=1)
    expires = int(time.time()) + 1
    async with user(hub, "alice") as alice:
        sub = await alice.subscribe(CHANNEL, token=token)
        await until(lambda: time.time() >= expires + 1, 3 * WAIT, "the token's expiry")
        kick(hub, alice, CloseCode.FORCE_RECONNECT)
        with pytest.raises(ReplyError) as caught:
            async with asyncio.timeout(WAIT):
                await anext(sub)
        assert caught.value.code == ErrorCode.TOKEN_EXPIRED
        assert alice.subscriptions() == {}


async def test_get_token_fetches_a_fresh_token_for_every_resubscribe(hub: RunningHub) -> None:
    codec = spy()
    short = sub_token("alice", ttl=1)
    expires = int(time.time()) + 1
    tokens = Tokens("alice", short)
    unrecovered: list[Subscription] = []
    async with (
        user(hub, "alice", codec=codec, on_unrecovered=unrecovered.append) as alice,
        user(hub, "bob") as bob,
    ):
        sub = await alice.subscribe(CHANNEL, get_token=tokens)
        assert tokens.calls == 1
        await bob.subscribe(CHANNEL, token=sub_token("bob"))
        first = await bob.publish(CHANNEL, 1)
        assert [m.data for m in await take(sub, 1)] == [1]

        # The first token expires; a reconnect gets a fresh one and recovers what was missed.
        await until(lambda: time.time() >= expires + 1, 3 * WAIT, "the token's expiry")
        await reconnected(hub, alice, while_away=lambda: bob.publish(CHANNEL, 2))
        assert [m.data for m in await take(sub, 1)] == [2]
        assert tokens.calls == 2
        subscribes = codec.subscribes(CHANNEL)
        assert [s.token for s in subscribes] == tokens.given
        assert subscribes[1].since == first
        assert sub.recovered and unrecovered == []

        # A hub restart (a fresh memory engine): fetched again, subscribed again.
        await hub.stop()
        await hub.start()
        # Answered (the fresh engine cannot recover what the channel held), so subscribed on the hub
        # before bob publishes: the token fetched is not yet the subscribe answered.
        await until(lambda: tokens.calls == 3 and alice.connected and unrecovered == [sub], WAIT, "the resubscribe")
        await bob.publish(CHANNEL, 3)
        assert [m.data for m in await take(sub, 1)] == [3]
        assert [s.token for s in codec.subscribes(CHANNEL)] == tokens.given


async def test_token_expired_reply_fetches_once_more(hub: RunningHub) -> None:
    codec = spy()
    expired = sub_token("alice", ttl=-10)
    # The first subscribe's token and the first resubscribe's are expired: each gets one more.
    tokens = Tokens("alice", expired, sub_token("alice"), expired)
    async with user(hub, "alice", codec=codec) as alice, user(hub, "bob") as bob:
        sub = await alice.subscribe(CHANNEL, get_token=tokens)
        assert tokens.calls == 2
        await bob.subscribe(CHANNEL, token=sub_token("bob"))

        await reconnected(hub, alice, while_away=lambda: bob.publish(CHANNEL, "missed"))
        assert [m.data for m in await take(sub, 1)] == ["missed"]
        assert tokens.calls == 4
        assert [s.token for s in codec.subscribes(CHANNEL)] == tokens.given
        refused = [r.error.code for r in codec.received if isinstance(r, m.Reply) and r.error is not None]
        assert refused == [ErrorCode.TOKEN_EXPIRED, ErrorCode.TOKEN_EXPIRED]


async def test_token_expired_twice_is_raised(hub: RunningHub) -> None:
    expired = sub_token("alice", ttl=-10)
    tokens = Tokens("alice", expired, expired)
    async with user(hub, "alice") as alice:
        with pytest.raises(ReplyError) as caught:
            await alice.subscribe(CHANNEL, get_token=tokens)
        assert caught.value.code == ErrorCode.TOKEN_EXPIRED
        assert tokens.calls == 2  # once more after the first 109, not again
        assert alice.subscriptions() == {}


async def test_get_token_failing_on_resubscribe_is_retried(hub: RunningHub) -> None:
    tokens = Tokens("alice", sub_token("alice"), OSError("auth service down"), ValueError("bad reply"))
    async with user(hub, "alice") as alice, user(hub, "bob") as bob:
        sub = await alice.subscribe(CHANNEL, get_token=tokens)
        await bob.subscribe(CHANNEL, token=sub_token("bob"))

        await reconnected(hub, alice, while_away=lambda: bob.publish(CHANNEL, "missed"))
        assert [m.data for m in await take(sub, 1)] == ["missed"]
        assert tokens.calls == 4  # two failures, then a token
        assert alice.subscriptions() == {CHANNEL: sub}
        await bob.publish(CHANNEL, "live")
        assert [m.data for m in await take(sub, 1)] == ["live"]


async def test_get_token_failing_on_first_subscribe_raises(hub: RunningHub) -> None:
    async def broken() -> str:
        raise OSError("auth service down")

    async def not_a_string() -> str:
        return 42  # type: ignore[return-value]

    async with user(hub, "alice") as alice:
        with pytest.raises(TokenError) as caught:
            await alice.subscribe(CHANNEL, get_token=broken)
        assert isinstance(caught.value.__cause__, OSError)
        assert caught.value.channel == CHANNEL
        with pytest.raises(TokenError, match="int, not a str"):
            await alice.subscribe(CHANNEL, get_token=not_a_string)
        assert alice.subscriptions() == {}
        # A given token is used first; get_token only renews it.
        tokens = Tokens("alice")
        await alice.subscribe(CHANNEL, token=sub_token("alice"), get_token=tokens)
        assert tokens.calls == 0


async def test_close_cancels_get_token(hub: RunningHub) -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def never() -> str:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        raise AssertionError("unreachable")

    async with user(hub, "alice") as alice:
        pending = asyncio.create_task(alice.subscribe(CHANNEL, get_token=never))
        async with asyncio.timeout(WAIT):
            await started.wait()
        await alice.close()
        with pytest.raises(ConnectionClosed):
            async with asyncio.timeout(WAIT):
                await pending
        assert cancelled.is_set()
