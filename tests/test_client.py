"""The client SDK end to end against a real in-process hub, plus its pure dedupe logic."""

from __future__ import annotations

import asyncio
import socket
import time
from typing import Any

import msgpack  # type: ignore[import-untyped, unused-ignore]
import pytest

from protocol import messages as m
from protocol.codes import CloseCode, ErrorCode
from protocol.errors import RealtimeError
from realtime.client import (
    Client,
    ClientError,
    CommandTimeout,
    ConnectionClosed,
    ReplyError,
    StreamPosition,
    Subscription,
)

from .helpers import MS, WAIT, HubFactory, RunningHub, fast, kick, make_token, spy, take

CODECS = ["msgpack", "json"]


# --- subscribe, publish, receive --------------------------------------------


@pytest.mark.parametrize("codec", CODECS)
async def test_publications_arrive_in_order(hub: RunningHub, codec: Any) -> None:
    other: Any = "json" if codec == "msgpack" else "msgpack"
    async with fast(hub.url, codec=codec) as sub_client, fast(hub.url, codec=other) as pub_client:
        assert sub_client.connected and sub_client.client_id and sub_client.server_ping > 0
        sub = await sub_client.subscribe("news")
        start = sub.position
        assert start is not None and start.offset == 0
        values = [{"n": i, "text": "é" * i, "tags": ["a", i], "ok": i % 2 == 0, "none": None} for i in range(20)]
        positions = [await pub_client.publish("news", v) for v in values]
        assert [p.offset for p in positions] == list(range(1, 21))
        # A never-published channel stands at offset 0 of epoch "" (reads create no stream);
        # its first publication starts one epoch that every later one shares.
        assert start.epoch == "" and len({p.epoch for p in positions}) == 1

        got = await take(sub, 20)
        assert [p.data for p in got] == values
        assert [p.position for p in got] == positions
        assert all(p.channel == "news" and p.info is not None and p.info.client == pub_client.client_id for p in got)
        assert sub.position == positions[-1]
        assert len(sub) == 0


async def test_scalar_values_and_ping(hub: RunningHub) -> None:
    async with fast(hub.url) as client:
        sub = await client.subscribe("scalars")
        for value in [1, "two", 3.5, None, [1, 2], {"k": {"deep": [True]}}]:
            await client.publish("scalars", value)
            assert (await take(sub, 1))[0].data == value
        assert await client.ping() >= 0.0


async def test_unsubscribe_ends_iteration(hub: RunningHub) -> None:
    async with fast(hub.url) as client:
        sub = await client.subscribe("room")
        with pytest.raises(ValueError):
            await client.subscribe("room")
        await client.publish("room", "kept")
        await take(sub, 1)
        await client.publish("room", "queued")
        await client.ping()  # the publication is in the queue before we unsubscribe
        assert len(sub) == 1
        await sub.unsubscribe()
        await client.publish("room", "after")
        assert [p.data for p in await take(sub, 1)] == ["queued"]
        with pytest.raises(StopAsyncIteration):
            await anext(sub)
        assert client.subscriptions() == {}
        # Subscribing again works and starts from the stream's current position.
        again = await client.subscribe("room")
        assert again.position is not None and again.position.offset == 3


async def test_error_reply_raises_typed_error(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_subscriptions=1)
    async with fast(hub.url) as client:
        await client.subscribe("a")
        with pytest.raises(ReplyError) as info:
            await client.subscribe("b")
        assert info.value.code is ErrorCode.LIMIT_EXCEEDED
        assert not info.value.temporary
        assert isinstance(info.value, ClientError) and isinstance(info.value, RealtimeError)
        assert list(client.subscriptions()) == ["a"]  # the refused one is not kept
        await client.ping()  # the connection goes on


# --- reconnect and recovery ---------------------------------------------------


async def test_recovery_after_connection_drop(hub: RunningHub) -> None:
    codec = spy()
    unrecovered: list[Subscription] = []
    async with (
        fast(hub.url, codec=codec, on_unrecovered=unrecovered.append) as client,
        fast(hub.url) as publisher,
    ):
        sub = await client.subscribe("feed")
        first = await publisher.publish("feed", 1)
        assert [p.data for p in await take(sub, 1)] == [1]
        old_id = client.client_id

        # Drop the client and keep it out (the hub refuses new sockets while closing)
        # so that what is published now can only reach it through recovery.
        hub.hub.closing = True
        kick(hub, client, CloseCode.FORCE_RECONNECT)
        missed = [await publisher.publish("feed", n) for n in (2, 3)]
        hub.hub.closing = False

        await client.ping()  # waits for the reconnect
        assert client.client_id != old_id
        live = await publisher.publish("feed", 4)
        got = await take(sub, 3)
        assert [p.data for p in got] == [2, 3, 4]
        assert [p.position for p in got] == [*missed, live]

        # The resubscribe passed the last position seen, and the hub recovered from it.
        assert [s.since for s in codec.subscribes("feed")] == [None, first]
        result = codec.subscribe_results()[-1]
        assert result.recovered and [p.offset for p in result.publications] == [2, 3]
        assert sub.recovered and not unrecovered
        ids = [c.id for c in codec.sent]
        assert ids == sorted(set(ids))  # ids increase across connections


async def test_reconnect_after_hub_restart(hub: RunningHub) -> None:
    codec = spy("json")
    unrecovered: list[Subscription] = []
    async with (
        fast(hub.url, codec=codec, on_unrecovered=unrecovered.append) as client,
        fast(hub.url) as publisher,
    ):
        sub = await client.subscribe("feed")
        before = await publisher.publish("feed", "before")
        await take(sub, 1)

        await hub.stop()
        await hub.start()

        # The publisher's command waits for its own reconnect; the client's ping for its.
        await client.ping()
        after = await publisher.publish("feed", "after")
        assert [p.data for p in await take(sub, 1)] == ["after"]

        assert [s.since for s in codec.subscribes("feed")] == [None, before]
        # A restarted memory engine starts a new epoch: the gap cannot be recovered.
        assert after.epoch != before.epoch
        assert not sub.recovered and unrecovered == [sub]
        assert sub.position == after


async def test_commands_wait_for_reconnect_then_time_out(hub: RunningHub) -> None:
    async with fast(hub.url, command_timeout=100 * MS) as client:
        await client.subscribe("x")
        await hub.stop()
        with pytest.raises(CommandTimeout):
            await client.ping()
        with pytest.raises(TimeoutError):  # CommandTimeout is a TimeoutError too
            await client.publish("x", 1)
        assert not client.closed  # still trying; exiting the block stops it cleanly


# --- stopping -----------------------------------------------------------------


@pytest.mark.parametrize("code", [CloseCode.FORCE_DISCONNECT, CloseCode.BAD_REQUEST])
async def test_disconnect_without_reconnect_stops(hub: RunningHub, code: CloseCode) -> None:
    async with fast(hub.url) as client:
        sub = await client.subscribe("feed")
        waiting = asyncio.create_task(anext(sub))
        await client.ping()  # the iterator is waiting now
        kick(hub, client, code)
        async with asyncio.timeout(WAIT):
            with pytest.raises(ConnectionClosed) as info:
                await waiting
        assert info.value.code == code
        assert client.closed and not client.connected
        for call in (client.ping(), client.publish("feed", 1), client.subscribe("other")):
            with pytest.raises(ConnectionClosed):
                await call
        with pytest.raises(ConnectionClosed):
            await anext(sub)


async def test_close_ends_iterators_and_commands(hub: RunningHub) -> None:
    client = fast(hub.url)
    async with client:
        sub = await client.subscribe("feed")
        waiting = asyncio.create_task(anext(sub))
        await client.ping()
    async with asyncio.timeout(WAIT):
        with pytest.raises(StopAsyncIteration):
            await waiting
    assert client.closed
    with pytest.raises(ConnectionClosed) as info:
        await client.ping()
    assert info.value.code == 1000
    await client.close()  # idempotent


async def test_first_connect_failure_raises() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with pytest.raises(ConnectionClosed) as info:
        async with fast(f"ws://127.0.0.1:{port}/ws"):
            pass
    assert info.value.code == 1006
    assert isinstance(info.value.__cause__, OSError)


async def test_bad_codec_name() -> None:
    with pytest.raises(ValueError):
        Client("ws://127.0.0.1:1/ws", codec="xml")  # type: ignore[arg-type]


# --- recovery bookkeeping, without sockets ------------------------------------


def pub(offset: int, epoch: str = "e1", channel: str = "c") -> m.Publication:
    return m.Publication(channel, msgpack.packb(offset), offset, epoch)


async def test_subscription_skips_what_it_already_delivered() -> None:
    sub = Subscription(Client("ws://unused/ws"), "c")
    sub._on_subscribed(m.SubscribeResult(3, "e1"), None)
    assert sub.position == StreamPosition(3, "e1")
    sub._on_push(pub(3))  # at or before the start: not delivered
    sub._on_push(pub(4))
    # A resubscribe: pushes that arrive before its reply are held back, then merged.
    sub._hold()
    sub._on_push(pub(6))
    sub._on_push(pub(7))
    result = m.SubscribeResult(6, "e1", True, True, (pub(3), pub(4), pub(5), pub(6)))
    sub._on_subscribed(result, StreamPosition(4, "e1"))
    sub._on_push(pub(7))  # a duplicate push
    sub._on_push(pub(8))
    assert [p.offset for p in await take(sub, len(sub))] == [4, 5, 6, 7, 8]
    assert sub.recovered and sub.position == StreamPosition(8, "e1")


async def test_subscription_after_epoch_change() -> None:
    sub = Subscription(Client("ws://unused/ws"), "c")
    sub._on_subscribed(m.SubscribeResult(5, "e1"), None)
    sub._hold()
    sub._on_push(pub(6, "e1"))  # stale: from before the new epoch
    sub._on_push(pub(1, "e2"))
    sub._on_subscribed(m.SubscribeResult(0, "e2", True, False), StreamPosition(5, "e1"))
    assert not sub.recovered
    assert [(p.offset, p.epoch) for p in await take(sub, len(sub))] == [(1, "e2")]
    assert sub.position == StreamPosition(1, "e2")


async def test_token_is_refreshed_before_it_expires(hub_factory: HubFactory) -> None:
    hub = await hub_factory(allow_anonymous=False, token_grace=0.1)
    calls: list[str] = []

    async def refresh() -> str:
        calls.append("refresh")
        return make_token("alice", ttl=60)

    short = make_token("alice", ttl=None, exp=int(time.time()) + 2)
    async with Client(hub.url, short, refresh_token=refresh, command_timeout=5) as client:
        assert client.user == "alice"
        sub = await client.subscribe("news")
        # Past the first token's expiry and grace: the refreshed connection still delivers.
        await asyncio.sleep(2.3)
        assert calls == ["refresh"]
        assert hub.hub.disconnects == {}
        await client.publish("news", "fresh")
        async with asyncio.timeout(5):
            got = await anext(aiter(sub))
        assert got.data == "fresh"


async def test_expired_token_is_renewed_on_connect(hub_factory: HubFactory) -> None:
    hub = await hub_factory(allow_anonymous=False)

    async def refresh() -> str:
        return make_token("bob")

    expired = make_token("bob", ttl=None, exp=int(time.time()) - 5)
    async with Client(hub.url, expired, refresh_token=refresh) as client:
        assert client.user == "bob"
