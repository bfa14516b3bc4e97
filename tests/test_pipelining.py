"""A connection's commands in flight together: replies in command order, publications in offset order.

Every test runs on the memory engine, on one private redis-server (where publishes are
pipelined: ``Engine.pipelines_publishes``) and on the session's Redis Cluster (where they
are not), so the rules of ``realtime.connection`` hold whichever engine runs them.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import redis.exceptions as rex
from redis.asyncio import Redis
from redis.commands.core import AsyncScript

from protocol.codes import ErrorCode
from protocol.messages import (
    Command,
    Connect,
    EmptyResult,
    Ping,
    Publication,
    Publish,
    PublishResult,
    Reply,
    Subscribe,
    SubscribeResult,
    Unsubscribe,
)
from realtime.connection import MAX_IN_FLIGHT
from realtime.engines.broker import HistoryOptions, Idempotency
from realtime.engines.errors import EngineError, EngineUnavailable
from realtime.engines.redis import REFUSED, RedisEngine
from realtime.engines.redis_publish import PublishPipeline, _Call
from realtime.namespaces import Namespace, Namespaces

from .helpers import MS, HubFactory, Recorder, RunningHub, make_token, unique_prefix, until
from .redis_cluster import LocalCluster
from .redis_server import RedisServer
from .wsclient import RawClient, RawSocket, value

#: Publishing here needs a subscription (a "token" namespace): what a publish may do depends on
#: the subscribe commands before it.
VIP = Namespace(name="vip", subscribe="token", publish="clients", history_size=100, history_ttl=300)
OPEN = Namespace(subscribe="anyone", publish="clients", history_size=100, history_ttl=300)

Hubs = Callable[..., Awaitable[RunningHub]]


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
def make_hub(request: pytest.FixtureRequest, hub_factory: HubFactory) -> Hubs:
    """``await make_hub()``: a hub on the engine under test (a key prefix of its own)."""
    options: dict[str, Any] = {"namespaces": Namespaces([OPEN, VIP]), "command_rate": 0, "receive_rate": 0}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        options.update(redis=server.url, redis_prefix=unique_prefix())
    elif request.param == "redis-cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        options.update(redis=cluster.url, redis_cluster=True, redis_prefix=unique_prefix())

    async def make(**overrides: Any) -> RunningHub:
        running = await hub_factory(**{**options, **overrides})
        engine = running.hub.engine
        if isinstance(engine, RedisEngine):
            await engine.library_loaded()
        return running

    return make


def publish(id: int, channel: str, v: Any) -> Publish:
    return Publish(id, channel, msgpack.packb(v))


async def replies(client: RawClient, n: int) -> list[Reply]:
    """The next ``n`` replies in the order they came (pushes set aside)."""
    got: list[Reply] = []
    while len(got) < n:
        msg = await client.recv()
        if isinstance(msg, Reply):
            got.append(msg)
        else:
            client.pushes.append(msg)
    return got


async def publications(client: RawClient, n: int) -> list[Publication]:
    return [await client.publication() for _ in range(n)]


async def test_pipelined_publishes_reply_in_command_order_with_offsets_in_order(make_hub: Hubs) -> None:
    running = await make_hub()
    async with await RawClient.open(running.url) as sub, await RawClient.open(running.url) as pub:
        await sub.subscribe("news")
        # 60 in one frame, then 60 in frames of one, none awaited.
        await pub.send(*(publish(i, "news", i) for i in range(1, 61)))
        for i in range(61, 121):
            await pub.send(publish(i, "news", i))
        got = await replies(pub, 120)
        assert [r.id for r in got] == list(range(1, 121))
        offsets = [r.result.offset for r in got if isinstance(r.result, PublishResult)]
        assert len(offsets) == 120
        assert offsets == list(range(offsets[0], offsets[0] + 120)), "offsets follow the command order"
        delivered = await publications(sub, 120)
        assert [value(p) for p in delivered] == list(range(1, 121))
        assert [p.offset for p in delivered] == offsets
    engine = running.hub.engine
    if isinstance(engine, RedisEngine) and engine.pipelines_publishes:
        pipeline = engine._pipeline
        assert pipeline is not None
        assert pipeline.calls >= 120 > pipeline.pipelines, "publishes shared round trips"


@pytest.mark.parametrize("one_frame", [True, False], ids=["one frame", "a frame each"])
async def test_publishes_see_the_subscribes_and_unsubscribes_before_them(make_hub: Hubs, one_frame: bool) -> None:
    running = await make_hub()
    channel = "vip:room"
    token = make_token("alice")
    grant = make_token("alice", channel=channel)
    async with await RawClient.open(running.url, token=token) as alice:
        commands: list[Command] = [
            publish(1, channel, "before"),  # not subscribed yet: refused
            Subscribe(2, channel, token=grant),
            publish(3, channel, "a"),
            publish(4, channel, "b"),
            Unsubscribe(5, channel),
            publish(6, channel, "after"),  # refused again
            Subscribe(7, channel, token=grant),
            publish(8, channel, "c"),
        ]
        if one_frame:
            await alice.send(*commands)
        else:
            for command in commands:
                await alice.send(command)
        got = await replies(alice, len(commands))
        assert [r.id for r in got] == [c.id for c in commands]
        assert got[0].error is not None and got[0].error.code == ErrorCode.PERMISSION_DENIED
        assert isinstance(got[1].result, SubscribeResult)
        a, b = got[2].result, got[3].result
        assert isinstance(a, PublishResult) and isinstance(b, PublishResult) and b.offset == a.offset + 1
        assert isinstance(got[4].result, EmptyResult)
        assert got[5].error is not None and got[5].error.code == ErrorCode.PERMISSION_DENIED
        resubscribed = got[6].result
        assert isinstance(resubscribed, SubscribeResult) and resubscribed.offset >= b.offset
        c = got[7].result
        assert isinstance(c, PublishResult) and c.offset == b.offset + 1
        # The second subscription is live: "c" reaches alice, after any of "a", "b" delivered in time.
        seen: list[Any] = []
        while "c" not in seen:
            seen.append(value(await alice.publication()))
        assert seen[-1] == "c" and set(seen) <= {"a", "b", "c"} and seen == sorted(seen)


async def test_a_subscribe_after_publishes_reads_history_after_them(make_hub: Hubs) -> None:
    running = await make_hub()
    async with await RawClient.open(running.url) as client:
        publishes = [publish(i, "feed", i) for i in range(1, 21)]
        await client.send(*publishes, Subscribe(21, "feed"))
        got = await replies(client, 21)
        assert [r.id for r in got] == list(range(1, 22))
        last = got[19].result
        sub = got[20].result
        assert isinstance(last, PublishResult) and isinstance(sub, SubscribeResult)
        assert sub.offset == last.offset, "the subscribe ran after every publish before it"


async def test_a_connected_client_gone_mid_pipeline_publishes_a_prefix_in_order(make_hub: Hubs) -> None:
    running = await make_hub()
    hub = running.hub
    async with await RawClient.open(running.url) as sub:
        await sub.subscribe("drop")
        raw = await RawSocket.open(running.port)
        raw.send(Connect(1, name="raw"))
        await raw.reply()
        raw.send(*(publish(i, "drop", i) for i in range(2, 42)))
        raw.close()  # publishes in flight: they were sent, and finish; their replies go nowhere
        await until(lambda: len(hub.connections) == 1, what="the publisher's connection gone")
        async with await RawClient.open(running.url) as late:
            await late.publish("drop", "marker")
        seen: list[Any] = []
        while "marker" not in seen:
            seen.append(value(await sub.publication()))
        assert seen[:-1] == list(range(2, 2 + len(seen) - 1)), "what was published is a prefix, in order"
    for conn in hub.connections.values():
        assert not conn._in_flight


@pytest.mark.redis
async def test_a_stalled_redis_holds_at_most_max_in_flight_per_connection(
    redis_server: RedisServer, hub_factory: HubFactory
) -> None:
    running = await hub_factory(
        redis=redis_server.url,
        redis_prefix=unique_prefix(),
        command_rate=0,
        receive_rate=0,
        namespaces=Namespaces([OPEN]),
    )
    engine = running.hub.engine
    assert isinstance(engine, RedisEngine) and engine.pipelines_publishes
    await engine.library_loaded()
    admin = Redis.from_url(redis_server.url)
    try:
        async with await RawClient.open(running.url) as client:
            await client.publish("slow", "warm")  # the pipeline's connection exists and is proven
            conn = next(c for c in running.hub.connections.values() if c.id == client.client_id)
            await admin.client_pause(600, all=True)
            n = MAX_IN_FLIGHT * 3
            await client.send(*(publish(i, "slow", i) for i in range(100, 100 + n)))
            await until(lambda: len(conn._in_flight) == MAX_IN_FLIGHT, what="the pipeline full")
            await asyncio.sleep(100 * MS)
            assert len(conn._in_flight) == MAX_IN_FLIGHT, "no more than the bound while Redis stalls"
            got = await replies(client, n)
            assert [r.id for r in got] == list(range(100, 100 + n))
            offsets = [r.result.offset for r in got if isinstance(r.result, PublishResult)]
            assert offsets == list(range(offsets[0], offsets[0] + n))
    finally:
        await admin.aclose()


@pytest.mark.redis
async def test_publishes_keep_their_submit_order_through_connection_kills(redis_server: RedisServer) -> None:
    """The engine's pipeline: publishes started in an order are stored in that order, retries
    included (a failed call goes back to the head of the queue), each at most once."""
    engine = RedisEngine(redis_server.url, prefix=unique_prefix(), publish_retry_time=10.0)
    admin = Redis.from_url(redis_server.url)
    history = HistoryOptions(1000, 300)

    async def one(i: int) -> bool:
        try:
            await engine.publish("kills", msgpack.packb(i), history=history, idempotency=Idempotency(f"k{i}", 60))
        except EngineError:
            return False
        return True

    try:
        await engine.start(Recorder())
        sent: list[asyncio.Task[bool]] = []
        for i in range(400):
            sent.append(asyncio.ensure_future(one(i)))  # started in order, none awaited
            if i % 40 == 39:
                await asyncio.sleep(0)
                await admin.client_kill_filter(_type="normal", skipme=True)
        ok = await asyncio.gather(*sent)
        pipeline = engine._pipeline
        assert pipeline is not None and pipeline.calls > 400, "some calls were sent again"
        assert pipeline.calls > pipeline.pipelines
        stored = [msgpack.unpackb(p.data) for p in (await engine.history("kills", limit=1000)).publications]
        assert stored == sorted(stored), "stored in submit order"
        assert len(stored) == len(set(stored)), "each at most once"
        assert {i for i, good in enumerate(ok) if good} <= set(stored), "a success is stored"
        assert sum(ok) > 0
    finally:
        await admin.aclose()
        await engine.close()


async def test_publishes_in_flight_reply_before_the_1002_of_an_unmasked_frame(make_hub: Hubs) -> None:
    running = await make_hub()
    peer = await RawSocket.open(running.port)
    try:
        peer.send(Connect(1, name="raw"))
        await peer.reply()
        publishes = [publish(i, "masks", i) for i in range(2, 12)]
        # One write: masked publishes, then an unmasked frame.
        peer.writer.write(peer.frame_of(*publishes) + peer.frame_of(Ping(12), masked=False))
        got: list[Reply] = []
        while len(got) < len(publishes):
            for message in await peer.messages(pong=True):
                assert isinstance(message, Reply), message
                got.append(message)
        assert [r.id for r in got] == [p.id for p in publishes]
        assert all(isinstance(r.result, PublishResult) for r in got)
        assert await peer.close_frame() == 1002
    finally:
        peer.close()


class _LoadingThenRunning:
    """A pooled connection whose first reply is a refusal (LOADING) and whose others ran.

    A fake, because a real Redis cannot be made to refuse one script of a pipeline and run the
    next one on demand (LOADING, OOM and READONLY hold for every call of a pipeline in a test)."""

    def __init__(self, replies: int) -> None:
        self.replies = [rex.BusyLoadingError("LOADING"), *range(1, replies)]

    def pack_commands(self, commands: list[tuple[Any, ...]]) -> list[bytes]:
        return [b""]

    async def send_packed_command(self, packed: list[bytes]) -> None:
        return None

    async def read_response(self) -> Any:
        reply = self.replies.pop(0)
        if isinstance(reply, Exception):
            raise reply
        return reply


async def test_a_refused_publish_is_not_retried_after_a_later_one_of_its_pipeline_ran() -> None:
    """Retried, the refused publish would be stored after the later ones: out of command order."""
    pipeline = PublishPipeline(
        Redis(),
        AsyncScript(Redis(), "return 1"),
        is_outage=lambda exc: False,
        warn=lambda op, exc: None,
        refused=REFUSED,
        attempts=4,
        retry_time=3.0,
        backoff=0.01,
    )
    calls = [_Call([], [], retry=True, deadline=time.monotonic() + 3, delay=0.01) for _ in range(3)]
    failed: list[tuple[_Call, BaseException, bool]] = []
    missing = await pipeline._pipeline(_LoadingThenRunning(3), calls, "EVALSHA", failed)
    assert not missing and not failed  # nothing to send again
    with pytest.raises(EngineUnavailable):
        calls[0].future.result()  # not published: the client may retry it, knowing the order
    assert [call.future.result() for call in calls[1:]] == [1, 2]
