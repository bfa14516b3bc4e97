"""A subscribe still waiting on the engine when the server unsubscribes the client,
or the client leaves: nothing of it may outlive the subscription.

The memory engine answers at once; a slow engine call (what every Redis round
trip is) is made by making that one call wait on an event.
"""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import pytest
from redis.asyncio import Redis

from handlers.presence import Presence
from protocol.codes import ErrorCode
from protocol.errors import CommandError
from protocol.messages import Subscribe, Unsubscribed
from protocol.msgpack_codec import MsgpackCodec
from realtime.connection import Connection
from realtime.engines.memory import MemoryEngine
from realtime.engines.redis import RedisEngine
from realtime.namespaces import Namespace

from .helpers import HubFactory, RunningHub, make_token, namespaces
from .redis_server import RedisServer
from .wsclient import RawClient

ROOM = Namespace(name="room", subscribe="anyone", publish="clients", presence=True)


async def wait_until_closed(hub: RunningHub) -> None:
    async with asyncio.timeout(5):
        while hub.hub.connections:
            await asyncio.sleep(0.01)


async def test_server_unsubscribe_while_the_subscribe_reads_history(
    hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The client is told (an ``unsub`` push, then NOT_SUBSCRIBED for its subscribe) and no
    presence entry is left behind once it disconnects."""
    hub = await hub_factory(namespaces=namespaces(ROOM))
    engine = hub.hub.engine
    original = engine.history
    reading, gate = asyncio.Event(), asyncio.Event()

    async def slow_history(channel: str, **kwargs: Any) -> Any:
        if channel == "room:x":
            reading.set()
            await gate.wait()
        return await original(channel, **kwargs)

    monkeypatch.setattr(engine, "history", slow_history)
    alice = await RawClient.open(hub.url, token=make_token("alice"))
    await alice.send(Subscribe(7, "room:x"))
    await asyncio.wait_for(reading.wait(), 5)
    await hub.hub.control("unsubscribe", user="alice", channel="room:x")
    gate.set()
    reply = await alice.reply(7)
    assert reply.error is not None and reply.error.code == ErrorCode.NOT_SUBSCRIBED
    assert Unsubscribed("room:x", "unsubscribed by the server") in alice.pushes
    await alice.close()
    await wait_until_closed(hub)
    assert await hub.hub.feature(Presence).members("room:x") == {}
    assert hub.hub.local_channels() == []


async def test_server_unsubscribe_while_the_node_subscribes_the_engine(
    hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The node drops the channel, and its engine subscription, once the engine answers."""
    hub = await hub_factory(namespaces=namespaces(ROOM))
    engine = hub.hub.engine
    assert isinstance(engine, MemoryEngine)
    original = engine.subscribe
    subscribing, gate = asyncio.Event(), asyncio.Event()

    async def slow_subscribe(channel: str) -> None:
        subscribing.set()
        await gate.wait()
        await original(channel)

    monkeypatch.setattr(engine, "subscribe", slow_subscribe)
    alice = await RawClient.open(hub.url, token=make_token("alice"))
    await alice.send(Subscribe(7, "room:x"))
    await asyncio.wait_for(subscribing.wait(), 5)
    await hub.hub.control("unsubscribe", user="alice", channel="room:x")
    gate.set()
    reply = await alice.reply(7)
    assert reply.error is not None and reply.error.code == ErrorCode.NOT_SUBSCRIBED
    assert hub.hub.local_channels() == []
    assert "room:x" not in engine._subscribed
    assert (await alice.command(Subscribe(0, "room:x"))).error is None  # and it can come back
    await alice.close()


async def test_last_client_leaving_while_redis_confirms_the_subscription(
    redis_server: RedisServer, hub_factory: HubFactory
) -> None:
    """The node unsubscribes the channel in Redis instead of receiving it for nobody."""
    running = await hub_factory(redis=redis_server.url, redis_prefix="r" + uuid.uuid4().hex[:8])
    hub = running.hub
    engine = hub.engine
    assert isinstance(engine, RedisEngine)
    conn = Connection(hub, None, None, MsgpackCodec(), "test")  # type: ignore[arg-type]  # never written to
    task = asyncio.create_task(hub.begin_subscribe(conn, "leak"))
    await asyncio.sleep(0)  # begin_subscribe now waits for Redis to confirm the subscription
    assert not task.done()
    await hub.unsubscribe(conn, "leak")  # the client went away meanwhile
    with pytest.raises(CommandError) as info:
        await task
    assert info.value.code == ErrorCode.NOT_SUBSCRIBED
    assert hub.local_channels() == []
    name = engine.pubsub_channel("leak")
    redis = Redis.from_url(redis_server.url)
    try:
        async with asyncio.timeout(5):
            while await redis.pubsub_numsub(name) != [(name.encode(), 0)]:
                await asyncio.sleep(0.01)
    finally:
        await redis.aclose()
