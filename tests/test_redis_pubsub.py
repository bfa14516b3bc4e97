"""The Redis pub/sub listener alone, against real redis-server processes.

A small TCP proxy stands between the listener and Redis where a test needs a
connection that stays open but goes silent: no fake Redis, a real socket
whose peer stops answering (as after a failover behind a NAT or a load
balancer), which only the liveness probe can notice.
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import shutil
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from redis.asyncio import Redis
from redis.asyncio.cluster import NodesManager, RedisCluster
from redis.asyncio.sentinel import MasterNotFoundError, Sentinel
from redis.crc import key_slot

from realtime.engines.errors import EngineUnavailable
from realtime.engines.redis_pubsub import RedisPubSub

from .helpers import REDIS_WAIT, Proxy, until
from .redis_cluster import LocalCluster, command
from .redis_server import RedisServer, free_port

#: Every test here runs against real redis-server processes.
pytestmark = pytest.mark.redis


class Recorder:
    """A listener with its callbacks recorded."""

    def __init__(self, client: Redis | RedisCluster, *, sharded: bool = False, probe_interval: float = 5.0) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.reconnects = 0
        self.listener = RedisPubSub(
            client,
            sharded=sharded,
            on_message=lambda channel, data: self.messages.append((channel, data)),
            on_reconnect=self.on_reconnect,
            name="test",
            probe_interval=probe_interval,
        )

    def on_reconnect(self) -> None:
        self.reconnects += 1

    def data(self, channel: str) -> list[bytes]:
        return [d for c, d in self.messages if c == channel]

    async def ready(self, timeout: float = REDIS_WAIT) -> None:
        await until(lambda: self.listener.ready, timeout, "the listener to be ready")


@pytest.fixture
async def client(redis_server: RedisServer) -> AsyncIterator[Redis]:
    r = Redis.from_url(redis_server.url)
    yield r
    await r.aclose()


@pytest.fixture
async def recorders() -> AsyncIterator[Callable[..., Awaitable[Recorder]]]:
    """Started listeners, closed after the test."""
    made: list[Recorder] = []

    async def make(client: Redis | RedisCluster, **kwargs: Any) -> Recorder:
        rec = Recorder(client, **kwargs)
        await rec.listener.start()
        made.append(rec)
        return rec

    yield make
    for rec in made:
        await rec.listener.close()


Make = Callable[..., Awaitable[Recorder]]


def prefix() -> str:
    return f"t{secrets.token_hex(3)}:"


async def test_subscribe_and_receive_in_order(client: Redis, recorders: Make) -> None:
    rec = await recorders(client)
    await rec.ready()
    await rec.listener.subscribe("a", "b")
    for i in range(200):
        await client.publish("a" if i % 2 else "b", b"%d" % i)
    await until(lambda: len(rec.messages) == 200)
    assert rec.data("a") == [b"%d" % i for i in range(1, 200, 2)]
    assert rec.data("b") == [b"%d" % i for i in range(0, 200, 2)]
    assert rec.listener.channels == {"a", "b"}
    assert rec.reconnects == 0
    # One pub/sub connection, named after the listener.
    names = [c["name"] for c in await client.client_list() if c["name"].startswith("test")]
    assert names == ["test:pubsub"]


async def test_concurrent_subscribes_coalesce(client: Redis, recorders: Make) -> None:
    rec = await recorders(client)
    await rec.ready()
    await client.config_resetstat()
    channels = [f"c{i}" for i in range(1000)]
    await asyncio.gather(*(rec.listener.subscribe(c) for c in channels))
    stats = await client.info("commandstats")
    # 1000 channels in one batch: two SUBSCRIBE commands of at most 512 channels.
    assert stats["cmdstat_subscribe"]["calls"] == 2
    assert (await client.pubsub_numsub("c0", "c999")) == [(b"c0", 1), (b"c999", 1)]
    async with client.pipeline(transaction=False) as pipe:
        for c in channels:
            pipe.publish(c, c.encode())
        await pipe.execute()
    await until(lambda: len(rec.messages) == 1000)
    assert rec.messages == [(c, c.encode()) for c in channels]


async def test_unsubscribe(client: Redis, recorders: Make) -> None:
    rec = await recorders(client)
    await rec.ready()
    await rec.listener.subscribe("keep", "drop")
    await rec.listener.unsubscribe("drop")
    assert await client.publish("drop", b"x") == 0
    assert await client.publish("keep", b"y") == 1
    await until(lambda: len(rec.messages) == 1)
    assert rec.messages == [("keep", b"y")]
    # Unsubscribing what was never subscribed is harmless.
    await rec.listener.unsubscribe("never")
    assert rec.listener.channels == {"keep"}


async def test_channels_given_before_start_are_subscribed_on_connect(client: Redis) -> None:
    rec = Recorder(client)
    await rec.listener.subscribe("early")  # returns at once: nothing to connect to yet
    await rec.listener.start()
    try:
        await rec.ready()
        assert await client.publish("early", b"1") == 1
        await until(lambda: rec.messages == [("early", b"1")])
    finally:
        await rec.listener.close()


async def test_reconnects_after_a_restart_and_resubscribes(
    redis_server: RedisServer, client: Redis, recorders: Make
) -> None:
    rec = await recorders(client)
    await rec.ready()
    await rec.listener.subscribe("x", "y")
    await redis_server.restart()
    await until(lambda: rec.reconnects == 1, what="on_reconnect")
    assert rec.listener.ready
    assert await client.publish("x", b"after") == 1
    assert await client.publish("y", b"after") == 1
    await until(lambda: len(rec.messages) == 2)
    assert sorted(rec.messages) == [("x", b"after"), ("y", b"after")]


async def test_subscribe_while_down_is_a_temporary_error(
    redis_server: RedisServer, client: Redis, recorders: Make
) -> None:
    rec = await recorders(client)
    await rec.ready()
    await rec.listener.subscribe("kept")
    await asyncio.to_thread(redis_server.stop)
    await until(lambda: not rec.listener.ready, what="not ready")
    with pytest.raises(EngineUnavailable):
        await rec.listener.subscribe("new")
    assert rec.listener.channels == {"kept"}
    await asyncio.to_thread(redis_server.start)
    await until(lambda: rec.reconnects == 1, what="on_reconnect")
    assert await client.publish("kept", b"1") == 1
    assert await client.publish("new", b"1") == 0


async def test_a_connection_killed_by_redis_is_reopened(client: Redis, recorders: Make) -> None:
    """As when Redis drops a subscriber whose output buffer overflowed."""
    rec = await recorders(client)
    await rec.ready()
    await rec.listener.subscribe("k")
    await client.client_kill_filter(_type="pubsub")
    await until(lambda: rec.reconnects == 1, what="on_reconnect")
    assert rec.listener.reconnects == 1 and rec.listener.probe_failures == 0
    assert await client.publish("k", b"1") == 1
    await until(lambda: rec.messages == [("k", b"1")])


async def _numsub(client: Redis, channel: str, count: int) -> bool:
    return bool(await client.pubsub_numsub(channel) == [(channel.encode(), count)])


async def test_an_unsubscribe_during_a_reconnection_is_not_lost(client: Redis, recorders: Make) -> None:
    """The reconnection subscribes the channels wanted when it began; one left while it waits
    for Redis to confirm must be unsubscribed once connected, or Redis keeps sending it."""
    rec = await recorders(client)
    await rec.ready()
    listener = rec.listener
    await listener.subscribe("held", "dropped")
    assert (await client.pubsub_numsub("dropped")) == [(b"dropped", 1)]
    await client.client_kill_filter(_type="pubsub")
    # The new connection is open and its subscriptions are sent, not yet confirmed...
    deadline = time.monotonic() + REDIS_WAIT
    while not (listener._links and not listener._connected):
        assert time.monotonic() < deadline, "the listener did not reconnect"
        await asyncio.sleep(0)
    # ...when the last local client of "dropped" leaves.
    await listener.unsubscribe("dropped")
    await until(lambda: rec.reconnects == 1, what="on_reconnect")
    assert listener.channels == {"held"}
    await until(lambda: _numsub(client, "dropped", 0), what="Redis to stop sending the channel unsubscribed meanwhile")
    assert await client.publish("held", b"1") == 1
    await until(lambda: rec.messages == [("held", b"1")])
    assert listener.ready


async def test_the_probe_detects_a_silent_connection(
    redis_server: RedisServer, client: Redis, recorders: Make, caplog: pytest.LogCaptureFixture
) -> None:
    proxy = Proxy(redis_server.port)
    await proxy.start()
    via_proxy = Redis(host="127.0.0.1", port=proxy.port)
    try:
        rec = await recorders(via_proxy, probe_interval=0.2)
        await rec.ready()
        await rec.listener.subscribe("s")
        assert await client.publish("s", b"before") == 1
        await until(lambda: rec.messages == [("s", b"before")])
        opened = proxy.connections
        proxy.silence()  # the pub/sub socket (and the pool's) stay open, but nothing passes
        await until(lambda: not rec.listener.ready, timeout=2.0, what="not ready")
        await asyncio.sleep(0.5)
        assert not rec.listener.ready and rec.reconnects == 0
        proxy.heal()
        await until(lambda: rec.reconnects == 1, what="on_reconnect")
        assert rec.listener.ready
        assert proxy.connections > opened  # it reopened through the proxy
        assert await client.publish("s", b"after") >= 1
        await until(lambda: rec.data("s") == [b"before", b"after"])
        assert any("not even the liveness probe (stuck)" in r.getMessage() for r in caplog.records)
        # What /metrics reports: the probe that failed (at least one check found it out), one reconnection.
        assert rec.listener.probe_failures >= 1 and rec.listener.reconnects == 1
    finally:
        await via_proxy.aclose()
        await proxy.close()


async def test_a_connection_behind_is_kept(
    redis_server: RedisServer, client: Redis, recorders: Make, caplog: pytest.LogCaptureFixture
) -> None:
    """A backlog delays the probe, but messages keep coming: that is not a dead connection."""
    proxy = Proxy(redis_server.port)
    await proxy.start()
    via_proxy = Redis(host="127.0.0.1", port=proxy.port)
    try:
        rec = await recorders(via_proxy, probe_interval=0.3)
        await rec.ready()
        await rec.listener.subscribe("busy")
        proxy.rate = 30_000  # bytes/s from Redis to the node: 60 kB take two seconds
        async with client.pipeline(transaction=False) as pipe:
            for i in range(600):
                pipe.publish("busy", b"%04d" % i + b"x" * 60)
            await pipe.execute()
        await until(lambda: not rec.listener.ready, what="not ready")
        await until(lambda: any("is behind" in r.getMessage() for r in caplog.records), what="the warning")
        proxy.rate = 0
        await until(lambda: len(rec.messages) == 600, what="every message")
        await rec.ready()
        assert [d[:4] for d in rec.data("busy")] == [b"%04d" % i for i in range(600)]
        assert rec.reconnects == 0 and rec.listener.reconnects == 0
        assert rec.listener.probe_failures >= 1  # late probes count as failures, even when the link is kept
        assert proxy.connections == 2  # the pub/sub connection and the client's: none reopened
    finally:
        await via_proxy.aclose()
        await proxy.close()


async def test_unreachable_at_start_then_started(caplog: pytest.LogCaptureFixture, recorders: Make) -> None:
    server = RedisServer()  # not started yet
    client = Redis.from_url(server.url)
    try:
        caplog.set_level(logging.INFO, "realtime.redis")
        rec = await recorders(client)
        await asyncio.sleep(1.0)  # several attempts fail meanwhile
        assert not rec.listener.ready
        with pytest.raises(EngineUnavailable):
            await rec.listener.subscribe("c")
        cannot = [r for r in caplog.records if "cannot reach Redis" in r.getMessage()]
        assert len(cannot) == 1  # one line per failure streak
        assert f"127.0.0.1:{server.port}" in cannot[0].getMessage()
        await asyncio.to_thread(server.start)
        await rec.ready()
        await rec.listener.subscribe("c")
        assert await client.publish("c", b"1") == 1
        await until(lambda: rec.messages == [("c", b"1")])
        assert rec.reconnects == 0  # the first connection: nothing was lost
        assert any("failed attempts" in r.getMessage() for r in caplog.records)
    finally:
        await client.aclose()
        server.cleanup()


async def test_the_message_handler_failing_does_not_stop_delivery(client: Redis) -> None:
    got: list[bytes] = []

    def on_message(channel: str, data: bytes) -> None:
        if data == b"bad":
            raise ValueError("boom")
        got.append(data)

    listener = RedisPubSub(client, sharded=False, on_message=on_message, on_reconnect=lambda: None)
    await listener.start()
    try:
        await until(lambda: listener.ready)
        await listener.subscribe("h")
        for data in (b"1", b"bad", b"2"):
            await client.publish("h", data)
        await until(lambda: got == [b"1", b"2"])
        assert listener.ready
    finally:
        await listener.close()


async def test_close_is_idempotent_and_refuses_later_subscribes(client: Redis) -> None:
    listener = RedisPubSub(client, sharded=False, on_message=lambda c, d: None, on_reconnect=lambda: None)
    await listener.start()
    await until(lambda: listener.ready)
    await listener.close()
    await listener.close()
    assert not listener.ready
    with pytest.raises(EngineUnavailable):
        await listener.subscribe("x")
    assert [c for c in await client.client_list() if c["name"] == "rt:pubsub"] == []


# --- Sentinel ----------------------------------------------------------------


async def test_a_sentinel_managed_primary_and_its_failover(recorders: Make) -> None:
    """The listener takes a Sentinel client as is: when the primary dies and the sentinel promotes
    the replica, it reconnects to the new primary, resubscribes and calls on_reconnect."""
    primary = RedisServer(None, "--repl-diskless-sync-delay", "0")  # the replica syncs at once
    replica = RedisServer(None, "--replicaof", "127.0.0.1", str(primary.port))
    sentinel_port = free_port()
    conf = primary.dir / "sentinel.conf"
    conf.write_text(
        f"port {sentinel_port}\nbind 127.0.0.1\n"
        f"sentinel monitor main 127.0.0.1 {primary.port} 1\n"
        "sentinel down-after-milliseconds main 500\nsentinel failover-timeout main 5000\n"
    )
    sentinel_proc: subprocess.Popen[bytes] | None = None
    sentinel = Sentinel([("127.0.0.1", sentinel_port)])  # type: ignore[no-untyped-call]
    client = sentinel.master_for("main")
    new_primary = Redis(host="127.0.0.1", port=replica.port)
    try:
        primary.start()
        replica.start()
        sentinel_proc = subprocess.Popen(
            [shutil.which("redis-server") or "redis-server", str(conf), "--sentinel"], stdout=subprocess.DEVNULL
        )
        await until(lambda: str(replica.port) in _quiet(command, sentinel_port, "sentinel", "replicas", "main"))
        rec = await recorders(client, probe_interval=0.5)
        await rec.ready()
        await rec.listener.subscribe("s")
        await client.publish("s", b"1")
        await until(lambda: rec.data("s") == [b"1"])

        await asyncio.to_thread(primary.kill)
        await until(lambda: rec.reconnects == 1, timeout=20, what="on_reconnect after the failover")

        async def names_the_replica() -> bool:
            # Right after its switch the sentinel may answer without a master in a good state for a
            # moment (MasterNotFoundError under CI): its view is awaited, the listener is under test.
            try:
                return bool((await sentinel.discover_master("main"))[1] == replica.port)
            except MasterNotFoundError:
                return False

        await until(names_the_replica, timeout=20, what="the sentinel to name the promoted replica")
        assert await new_primary.publish("s", b"2") == 1
        await until(lambda: rec.data("s") == [b"1", b"2"])
        assert rec.listener.ready
    finally:
        await new_primary.aclose()
        await client.aclose()
        for sentinel_client in sentinel.sentinels:
            await sentinel_client.aclose()
        if sentinel_proc is not None:
            sentinel_proc.kill()
            sentinel_proc.wait()
        primary.cleanup()
        replica.cleanup()


def _quiet(fn: Callable[..., str], *args: Any) -> str:
    """``fn(*args)``, or "" when it fails (a process still starting)."""
    try:
        return fn(*args)
    except Exception:
        return ""


# --- Redis Cluster ---------------------------------------------------------


@pytest.fixture
async def cluster_client(redis_cluster: LocalCluster) -> AsyncIterator[RedisCluster]:
    rc = RedisCluster.from_url(redis_cluster.url)
    await rc.initialize()
    yield rc
    await rc.aclose()


async def test_sharded_pubsub_on_a_cluster(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, recorders: Make
) -> None:
    rec = await recorders(cluster_client, sharded=True)
    await rec.ready()
    p = prefix()
    channels = [f"{p}{i}" for i in range(300)]
    assert len({redis_cluster.owner_of(key_slot(c.encode())) for c in channels}) == 3
    await asyncio.gather(*(rec.listener.subscribe(c) for c in channels))
    for c in channels:
        assert await cluster_client.spublish(c, c.encode()) == 1
    await until(lambda: len(rec.messages) == 300)
    assert sorted(rec.messages) == sorted((c, c.encode()) for c in channels)
    # One pub/sub connection per primary.
    for port in redis_cluster.ports:
        assert command(port, "client", "list").count("name=test:pubsub") == 1
    await rec.listener.unsubscribe(*channels)
    assert await cluster_client.spublish(channels[0], b"x") == 0


async def test_a_moved_slot_is_followed(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, recorders: Make
) -> None:
    rec = await recorders(cluster_client, sharded=True)
    await rec.ready()
    channel = prefix() + "moving"
    slot = key_slot(channel.encode())
    home = redis_cluster.owner_of(slot)
    await rec.listener.subscribe(channel)
    await cluster_client.spublish(channel, b"1")
    await until(lambda: rec.data(channel) == [b"1"])
    elsewhere = next(p for p in redis_cluster.ports if p != home)
    try:
        await asyncio.to_thread(redis_cluster.move_slot, slot, elsewhere)
        # The old owner unsubscribed us; the listener subscribes at the new owner and resyncs.
        await until(lambda: rec.reconnects == 1, what="on_reconnect")
        assert rec.listener.ready
        out = command(elsewhere, "spublish", channel, "2")
        assert out.strip() == "1"
        await until(lambda: rec.data(channel) == [b"1", b"2"])
    finally:
        await asyncio.to_thread(redis_cluster.move_slot, slot, home)
    await until(lambda: rec.reconnects == 2, what="on_reconnect after moving back")
    assert command(home, "spublish", channel, "3").strip() == "1"
    await until(lambda: rec.data(channel) == [b"1", b"2", b"3"])


async def test_classic_pubsub_on_a_cluster(cluster_client: RedisCluster, recorders: Make) -> None:
    rec = await recorders(cluster_client, sharded=False)
    await rec.ready()
    channel = prefix() + "classic"
    await rec.listener.subscribe(channel)
    await cluster_client.publish(channel, b"1")
    await until(lambda: rec.messages == [(channel, b"1")])


async def _shardnumsub(port: int, channel: str, count: int) -> bool:
    out = await asyncio.to_thread(command, port, "pubsub", "shardnumsub", channel)
    return out.split()[-1] == str(count)


def _probe_slots(listener: RedisPubSub) -> set[int]:
    return {key_slot(link.probe_channel.encode()) for link in listener._links.values()}


async def test_an_unsubscribe_while_a_moved_channel_is_rerouted_is_not_lost(
    redis_cluster: LocalCluster,
    cluster_client: RedisCluster,
    recorders: Make,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A channel whose slot moved is subscribed at its new primary once the listener has the new
    slot table; a channel left while it asks for the table must not be subscribed there."""
    rec = await recorders(cluster_client, sharded=True)
    await rec.ready()
    listener = rec.listener
    probes = _probe_slots(listener)
    channel = next(c for c in (prefix() + "leaving" for _ in range(1000)) if key_slot(c.encode()) not in probes)
    slot = key_slot(channel.encode())
    home = redis_cluster.owner_of(slot)
    elsewhere = next(p for p in redis_cluster.ports if p != home)
    await listener.subscribe(channel)
    manager = cluster_client.nodes_manager
    initialize = NodesManager.initialize
    left = asyncio.Event()

    async def initialize_then_leave(self: NodesManager) -> None:
        await initialize(self)
        if self is manager and not left.is_set():
            # The listener's reroute asked for the slot table: the last local client leaves meanwhile.
            left.set()
            await listener.unsubscribe(channel)

    monkeypatch.setattr(NodesManager, "initialize", initialize_then_leave)  # it has __slots__
    try:
        await asyncio.to_thread(redis_cluster.move_slot, slot, elsewhere)
        await until(lambda: rec.reconnects == 1, what="the reroute")
        assert left.is_set()
        assert listener.channels == frozenset()
        await until(
            lambda: _shardnumsub(elsewhere, channel, 0), what="the channel left during the reroute to be unsubscribed"
        )
        assert listener.ready
    finally:
        monkeypatch.undo()
        await asyncio.to_thread(redis_cluster.move_slot, slot, home)


async def test_a_probe_channel_stays_subscribed_after_a_reroute(
    redis_cluster: LocalCluster, cluster_client: RedisCluster, recorders: Make
) -> None:
    """A link's probe channel is the first {pN}... hashing to one of its slots. A slot moving to a
    link can bring it a smaller N; its probes must keep going to a channel it is subscribed to,
    or they never come back: the node is torn down as stuck, or stays not ready."""
    rec = await recorders(cluster_client, sharded=True, probe_interval=0.3)
    await rec.ready()
    listener = rec.listener
    links = dict(listener._links)
    port_of = {key: int(key.rsplit(":", 1)[1]) for key in links}
    index = {key: int(link.probe_channel[2:].split("}", 1)[0]) for key, link in links.items()}
    probes = _probe_slots(listener)
    assert all(redis_cluster.owner_of(key_slot(links[k].probe_channel.encode())) == port_of[k] for k in links)
    # A tag {pI}, no link's probe, on one node, with I below another node's probe index.
    pick: tuple[int, int, int, str] | None = None
    for i in range(max(index.values())):
        slot = key_slot(b"{p%d}" % i)
        home = redis_cluster.owner_of(slot)
        target = next((k for k in links if port_of[k] != home and i < index[k]), None)
        if slot not in probes and target is not None:
            pick = (i, slot, home, target)
            break
    assert pick is not None, "no suitable slot in this cluster layout"
    i, slot, home, target = pick
    channel = f"{{p{i}}}held"
    await listener.subscribe(channel)  # the move makes the listener reroute it
    try:
        await asyncio.to_thread(redis_cluster.move_slot, slot, port_of[target])
        await until(lambda: rec.reconnects == 1, what="the reroute")
        assert listener.ready
        assert listener._links == links, "the links were reopened"
        for key, link in links.items():
            assert await _shardnumsub(port_of[key], link.probe_channel, 1), f"{link.probe_channel} not on {key}"
        # A probe sent after the reroute comes back on every link, which is kept.
        tokens = {key: link.probe_token for key, link in links.items()}
        await until(
            lambda: all(link.probe_token != tokens[k] and not link.probe_sent for k, link in links.items()),
            what="a probe round trip on every link",
        )
        assert listener._links == links
        assert rec.reconnects == 1
        assert listener.ready
        out = command(port_of[target], "spublish", channel, "moved")
        assert out.strip() == "1"
        await until(lambda: rec.data(channel) == [b"moved"])
    finally:
        await asyncio.to_thread(redis_cluster.move_slot, slot, home)
