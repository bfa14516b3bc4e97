"""Several hub nodes sharing one Redis (or one Redis Cluster), end to end.

Three in-process hubs, each with its own RedisEngine and so its own pub/sub
connection, on free ports. Every test runs against a private redis-server and
against the session's 3-master cluster (with a key prefix of its own).
Whatever the path a publication takes in (a client on any node, the HTTP API
of any node, ``FCALL`` straight into Redis), every subscriber on every node
gets it once, in offset order.
"""

from __future__ import annotations

import asyncio
import json
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import RedisCluster

from protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from protocol.messages import History, HistoryResult, Join, Leave, PresenceQuery, PresenceResult, Publication
from realtime.auth import ApiKey
from realtime.engines.redis import RedisEngine
from realtime.namespaces import Namespace
from realtime.publisher import Publisher

from .helpers import MS, HubFactory, RunningHub, make_token, namespaces
from .redis_cluster import LocalCluster
from .redis_server import RedisServer
from .wsclient import RawClient, value

API = ApiKey("backend", "multinode-api-secret", frozenset({"*"}))
GRACE = 300 * MS
NAMESPACES = namespaces(
    Namespace(name="room", presence=True, join_leave=True, presence_grace=GRACE, subscribe="anyone", publish="clients"),
    Namespace(name="chat", kind="chat", subscribe="anyone", publish="clients", history_size=100, history_ttl=300),
)

Nodes = Callable[..., Awaitable[list[RunningHub]]]


class Backend:
    """Where the nodes' Redis is: a URL, and whether it is a cluster."""

    def __init__(self, url: str, cluster: bool) -> None:
        self.url = url
        self.cluster = cluster
        self.prefix = f"t{secrets.token_hex(4)}"

    def client(self) -> Redis | RedisCluster:
        if self.cluster:
            return RedisCluster.from_url(self.url)
        return Redis.from_url(self.url)


@pytest.fixture(
    params=[pytest.param("redis", marks=pytest.mark.redis), pytest.param("cluster", marks=pytest.mark.redis)]
)
def backend(request: pytest.FixtureRequest) -> Backend:
    if request.param == "cluster":
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        return Backend(cluster.url, True)
    server: RedisServer = request.getfixturevalue("redis_server")
    return Backend(server.url, False)


@pytest.fixture
def nodes(backend: Backend, hub_factory: HubFactory) -> Nodes:  # Redis stops after the hubs
    """``await nodes(n)``: n hubs on one Redis, ready (listener connected, Function library loaded)."""

    async def make(n: int = 3, **overrides: Any) -> list[RunningHub]:
        options: dict[str, Any] = {
            "redis": backend.url,
            "redis_cluster": backend.cluster,
            "redis_prefix": backend.prefix,
            "api_keys": (API,),
            "namespaces": NAMESPACES,
            **overrides,
        }
        hubs = [await hub_factory(**options) for _ in range(n)]
        for hub in hubs:
            engine = hub.hub.engine
            assert isinstance(engine, RedisEngine) and engine.ready
            await engine.library_loaded()
        return hubs

    return make


@pytest.fixture
async def redis_client(backend: Backend) -> AsyncIterator[Redis | RedisCluster]:
    client = backend.client()
    yield client
    await client.aclose()


async def collect(client: RawClient, n: int) -> list[Publication]:
    return [await client.publication() for _ in range(n)]


async def nothing_more(client: RawClient, channel: str, publisher: RawClient) -> None:
    """Whatever ``client`` was sent on ``channel`` before a marker has been read: the next is the marker."""
    await publisher.publish(channel, "marker")
    pub = await client.publication()
    assert value(pub) == "marker", value(pub)


async def test_a_publication_on_any_node_reaches_every_node_once_in_order(nodes: Nodes) -> None:
    hubs = await nodes(3)
    subs = [await RawClient.open(h.url) for h in hubs for _ in range(2)]
    pubs = [await RawClient.open(h.url) for h in hubs]
    try:
        for s in subs:
            await s.subscribe("news")
        for i in range(30):
            await pubs[i % 3].publish("news", i)  # round robin over the nodes
        for s in subs:
            got = await collect(s, 30)
            assert [value(p) for p in got] == list(range(30))
            assert [p.offset for p in got] == list(range(1, 31))
            assert len({p.epoch for p in got}) == 1
        for s in subs:
            await nothing_more(s, "news", pubs[0])
    finally:
        for c in [*subs, *pubs]:
            await c.close()


async def test_concurrent_publishes_from_every_node_keep_one_order(nodes: Nodes) -> None:
    hubs = await nodes(3)
    subs = [await RawClient.open(h.url) for h in hubs]
    pubs = [await RawClient.open(h.url) for h in hubs]
    try:
        for s in subs:
            await s.subscribe("race")

        async def burst(n: int, client: RawClient) -> None:
            for i in range(20):
                await client.publish("race", f"{n}-{i}")

        await asyncio.gather(*(burst(n, p) for n, p in enumerate(pubs)))
        orders = [[(p.offset, value(p)) for p in await collect(s, 60)] for s in subs]
        assert orders[0] == orders[1] == orders[2]
        assert [offset for offset, _ in orders[0]] == list(range(1, 61))
    finally:
        for c in [*subs, *pubs]:
            await c.close()


async def test_http_api_on_any_node(nodes: Nodes) -> None:
    hubs = await nodes(3)
    subs = [await RawClient.open(h.url) for h in hubs]
    try:
        for s in subs:
            await s.subscribe("api")
        for i, hub in enumerate(hubs):
            async with Publisher(hub.http_url, API.key) as pub:
                result = await pub.publish("api", {"via": i})
                assert result.offset == i + 1
        for s in subs:
            got = await collect(s, 3)
            assert [(p.offset, value(p)) for p in got] == [(i + 1, {"via": i}) for i in range(3)]
        # History and presence through the API of another node see the same channel.
        async with Publisher(hubs[2].http_url, API.key) as pub:
            page = await pub.history("api", limit=10)
            assert [p.data for p in page] == [{"via": i} for i in range(3)]
    finally:
        for c in subs:
            await c.close()


async def test_publishing_straight_into_redis(nodes: Nodes, redis_client: Redis | RedisCluster) -> None:
    hubs = await nodes(3)
    engine = hubs[0].hub.engine
    assert isinstance(engine, RedisEngine)
    subs = [await RawClient.open(h.url) for h in hubs]
    try:
        for s in subs:
            await s.subscribe("direct")
        await subs[0].publish("direct", "from a client")
        stem = engine.base("direct")
        reply = await redis_client.fcall("realtime_publish_json", 1, stem, json.dumps({"text": "hi"}), 100, 300)
        assert reply[0] == 2
        await subs[1].publish("direct", "from a client again")
        for s in subs:
            got = await collect(s, 3)
            assert [(p.offset, value(p)) for p in got] == [
                (1, "from a client"),
                (2, {"text": "hi"}),
                (3, "from a client again"),
            ]
            assert got[1].info is None
            await nothing_more(s, "direct", subs[2])
    finally:
        for c in subs:
            await c.close()


async def test_msgpack_published_straight_into_redis_keeps_every_key(
    nodes: Nodes, redis_client: Redis | RedisCluster
) -> None:
    """``{1: "a", true: "b"}`` (keys Python holds equal) reaches a MessagePack subscriber as sent
    and a JSON one as ``{"1": "a", "true": "b"}`` (docs/protocol.md, "data values")."""
    (hub,) = await nodes(1)
    engine = hub.hub.engine
    assert isinstance(engine, RedisEngine)
    one_and_true = b"\x82\x01\xa1a\xc3\xa1b"
    async with (
        await RawClient.open(hub.url, subprotocol=MSGPACK_SUBPROTOCOL) as mp,
        await RawClient.open(hub.url, subprotocol=JSON_SUBPROTOCOL) as js,
    ):
        await mp.subscribe("keys")
        await js.subscribe("keys")
        assert (await redis_client.fcall("realtime_publish", 1, engine.base("keys"), one_and_true))[0] == 1
        # Raw frames: the test client's own decoder would merge the keys.
        assert one_and_true in await asyncio.wait_for(mp.ws.recv(), 5)
        got = await asyncio.wait_for(js.ws.recv(), 5)
        assert isinstance(got, str) and json.loads(got)["data"] == {"1": "a", "true": "b"}


async def test_presence_across_nodes(nodes: Nodes) -> None:
    hubs = await nodes(3)
    room = "room:x"
    bob = await RawClient.open(hubs[0].url, token=make_token("bob"))
    alice = await RawClient.open(hubs[1].url, token=make_token("alice"))
    carol = await RawClient.open(hubs[2].url, token=make_token("carol"))
    try:
        await bob.subscribe(room)
        assert await bob.next_push() == Join(room, "bob")
        await alice.subscribe(room)
        assert await bob.next_push() == Join(room, "alice")  # once, though three nodes listen
        assert await alice.next_push() == Join(room, "alice")
        reply = await carol.command(PresenceQuery(0, room))
        assert isinstance(reply.result, PresenceResult)
        assert {m.user for m in reply.result.clients.values()} == {"bob", "alice"}
        await alice.close()
        assert await bob.next_push() == Leave(room, "alice")
        await bob.publish(room, "marker")
        assert value(await bob.publication()) == "marker"  # no second leave
    finally:
        for c in (bob, alice, carol):
            await c.close()


async def test_reconnecting_to_another_node_within_the_grace_window(nodes: Nodes) -> None:
    hubs = await nodes(3)
    room = "room:y"
    bob = await RawClient.open(hubs[0].url, token=make_token("bob"))
    carol = await RawClient.open(hubs[0].url, token=make_token("carol"))
    before = await RawClient.open(hubs[1].url, token=make_token("alice"))
    try:
        await bob.subscribe(room)
        assert await bob.next_push() == Join(room, "bob")
        await carol.subscribe(room)
        assert await bob.next_push() == Join(room, "carol")
        await before.subscribe(room)
        assert await bob.next_push() == Join(room, "alice")
        await before.close()  # the phone's network dropped; it comes back through another node
        after = await RawClient.open(hubs[2].url, token=make_token("alice"))
        try:
            await after.subscribe(room)
            await carol.close()  # her leave settles after any leave alice's drop could cause
            assert await bob.next_push() == Leave(room, "carol")
            await bob.publish(room, "marker")
            assert value(await bob.publication()) == "marker"
        finally:
            await after.close()
    finally:
        for c in (bob, carol, before):
            await c.close()


async def test_flapping_through_three_nodes_within_the_grace_window(nodes: Nodes) -> None:
    """alice drops on A, comes back on B, drops there, comes back on C, each time within the
    grace window: no leave, no join. A's timer (of the first drop) runs out while the leave
    of B's drop is pending; that leave is B's to settle, and alice is back by then."""
    grace = 1.0
    room = "flap:1"
    ns = Namespace(
        name="flap", presence=True, join_leave=True, presence_grace=grace, subscribe="anyone", publish="clients"
    )
    a, b, c = await nodes(3, namespaces=namespaces(ns))
    bob = await RawClient.open(a.url, token=make_token("bob"))
    # carol and dave leave together with alice's drops: their leaves mark when A's and B's timers ran out.
    carol = await RawClient.open(a.url, token=make_token("carol"))
    dave = await RawClient.open(b.url, token=make_token("dave"))
    on_a = await RawClient.open(a.url, token=make_token("alice"))
    on_b: RawClient | None = None
    on_c: RawClient | None = None
    try:
        await bob.subscribe(room)
        assert await bob.next_push() == Join(room, "bob")
        for client, user in ((carol, "carol"), (dave, "dave"), (on_a, "alice")):
            await client.subscribe(room)
            assert await bob.next_push() == Join(room, user)
        await on_a.close()
        await carol.close()
        on_b = await RawClient.open(b.url, token=make_token("alice"))
        await on_b.subscribe(room)
        await asyncio.sleep(grace / 2)  # B's drop comes half a window after A's
        await on_b.close()
        await dave.close()
        assert await bob.next_push(timeout=4 * grace) == Leave(room, "carol")  # A's timers ran out
        on_c = await RawClient.open(c.url, token=make_token("alice"))
        await on_c.subscribe(room)
        assert await bob.next_push(timeout=4 * grace) == Leave(room, "dave")  # B's timers ran out
        await nothing_more(bob, room, bob)
    finally:
        for opened in (bob, carol, dave, on_a, on_b, on_c):
            if opened is not None:
                await opened.close()


async def test_chat_across_nodes(nodes: Nodes) -> None:
    hubs = await nodes(3)
    room = "chat:lobby"
    alice = await RawClient.open(hubs[0].url, token=make_token("alice"))
    bob = await RawClient.open(hubs[1].url, token=make_token("bob"))
    try:
        await alice.subscribe(room)
        await bob.subscribe(room)
        await alice.publish(room, {"text": "hi bob"})
        await bob.publish(room, {"text": "hi alice"})
        for client in (alice, bob):
            got = await collect(client, 2)
            assert [value(p)["text"] for p in got] == ["hi bob", "hi alice"]
            assert [p.info.user if p.info else None for p in got] == ["alice", "bob"]
            assert all(p.mid and p.time for p in got)
        async with await RawClient.open(hubs[2].url, token=make_token("carol")) as carol:
            reply = await carol.command(History(0, room, limit=10))
            assert isinstance(reply.result, HistoryResult)
            assert [value(p)["text"] for p in reply.result.publications] == ["hi bob", "hi alice"]
    finally:
        await alice.close()
        await bob.close()
