"""One contract for every engine: each test runs against each implementation.

The ``engine`` fixture gives a memory engine and a Redis engine (on a private
redis-server, with a key prefix of its own per test); the tests at the end
cover what only the Redis engine can get wrong (several nodes, TTLs kept by
Redis, data loss, direct publishing).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest
import redis.exceptions
from redis.crc import key_slot

from protocol.messages import ClientInfo, Publication, StateEntry, StreamPosition
from realtime.engines import redis as redis_engine
from realtime.engines.base import (
    Engine,
    EngineUnavailable,
    HistoryOptions,
    PresenceCounts,
    PresenceEntry,
    VersionConflict,
)
from realtime.engines.memory import MemoryEngine
from realtime.engines.redis import RedisEngine

from .conftest import MS
from .redis_cluster import LocalCluster, redis_cluster  # noqa: F401  (a fixture)
from .redis_server import RedisServer

KEEP = HistoryOptions(size=10, ttl=60)
#: Longest wait for something another task or Redis delivers.
WAIT = 5000 * MS


class Recorder:
    """The node side: collects what the engine delivers; :meth:`until` awaits a condition."""

    def __init__(self) -> None:
        self.pubs: list[Publication] = []
        self.events: list[tuple[str, bytes]] = []
        self.controls: list[bytes] = []
        self.resyncs = 0
        self.arrived = asyncio.Event()
        self._changed = asyncio.Event()

    def _note(self) -> None:
        self._changed.set()

    def on_publication(self, pub: Publication) -> None:
        self.pubs.append(pub)
        self.arrived.set()
        self._note()

    def on_event(self, channel: str, event: bytes) -> None:
        self.events.append((channel, event))
        self._note()

    def on_control(self, message: bytes) -> None:
        self.controls.append(message)
        self._note()

    def on_resync(self) -> None:
        self.resyncs += 1
        self._note()

    async def until(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def delivered() -> Recorder:
    return Recorder()


def unique_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def engine(request: pytest.FixtureRequest, delivered: Recorder) -> AsyncIterator[Engine]:
    eng: Engine
    if request.param == "memory":
        eng = MemoryEngine()
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        eng = RedisEngine(server.url, prefix=unique_prefix())
    else:
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        eng = RedisEngine(cluster.url, prefix=unique_prefix(), cluster=True)
    await eng.start(delivered)
    yield eng
    await eng.close()


async def test_offsets_increase_per_channel(engine: Engine) -> None:
    a = [await engine.publish("a", b"\x01") for _ in range(3)]
    b = await engine.publish("b", b"\x02")
    assert [p.offset for p in a] == [1, 2, 3]
    assert len({p.epoch for p in a}) == 1
    assert b.offset == 1


async def test_subscribed_channels_are_delivered(engine: Engine, delivered: Recorder) -> None:
    await engine.subscribe("on")
    info = ClientInfo("u1", "c1", b"\x80")
    pos = await engine.publish("on", b"\xa1x", info=info)
    await engine.publish("off", b"\xa1y")
    async with asyncio.timeout(WAIT):
        await delivered.arrived.wait()
    assert delivered.pubs == [Publication("on", b"\xa1x", pos.offset, pos.epoch, info)]
    await engine.unsubscribe("on")
    await engine.publish("on", b"\xa1z")
    assert len(delivered.pubs) == 1


async def test_history_since_limit_reverse(engine: Engine) -> None:
    positions = [await engine.publish("h", bytes([i]), history=KEEP) for i in range(5)]
    epoch = positions[0].epoch
    page = await engine.history("h")
    assert [p.data for p in page.publications] == [bytes([i]) for i in range(5)]
    assert page.position == StreamPosition(5, epoch)
    since = await engine.history("h", since=StreamPosition(2, epoch))
    assert [p.offset for p in since.publications] == [3, 4, 5]
    newest = await engine.history("h", limit=2, reverse=True)
    assert [p.offset for p in newest.publications] == [5, 4]
    before = await engine.history("h", before=4, limit=2, reverse=True)
    assert [p.offset for p in before.publications] == [3, 2]
    empty = await engine.history("h", limit=0)
    assert empty.publications == [] and empty.position.offset == 5
    other_epoch = await engine.history("h", since=StreamPosition(2, "elsewhere"))
    assert other_epoch.publications == []


async def test_history_is_bounded_by_size(engine: Engine) -> None:
    for i in range(15):
        await engine.publish("s", bytes([i]), history=KEEP)
    page = await engine.history("s")
    assert [p.offset for p in page.publications] == list(range(6, 16))


async def test_no_history_still_assigns_offsets(engine: Engine) -> None:
    await engine.publish("n", b"\x00")
    pos = await engine.publish("n", b"\x00")
    page = await engine.history("n")
    assert page.publications == [] and page.position.offset == pos.offset == 2


async def test_remove_history_keeps_position(engine: Engine) -> None:
    pos = [await engine.publish("r", b"\x00", history=KEEP) for _ in range(3)][-1]
    await engine.remove_history("r")
    page = await engine.history("r")
    assert page.publications == [] and page.position == pos


async def test_presence_members_and_stats(engine: Engine) -> None:
    alice = PresenceEntry("alice", b"\x01")
    assert await engine.presence_add("p", "c1", alice, ttl=30) is True
    assert await engine.presence_add("p", "c2", alice, ttl=30) is False  # second device: no join
    assert await engine.presence_add("p", "c3", PresenceEntry("bob"), ttl=30) is True
    assert await engine.presence("p") == {"c1": alice, "c2": alice, "c3": PresenceEntry("bob")}
    assert await engine.presence_stats("p") == PresenceCounts(clients=3, users=2)
    assert await engine.presence_remove("p", "c1", "alice", grace=1) == 0  # c2 still here
    leave = await engine.presence_remove("p", "c2", "alice", grace=1)  # last device
    assert leave
    assert await engine.presence_settle("p", "alice", leave) is True
    assert await engine.presence_settle("p", "alice", leave) is False  # once
    assert await engine.presence_stats("p") == PresenceCounts(1, 1)
    assert await engine.presence("empty") == {}
    assert await engine.presence_remove("p", "nobody", "x", grace=1) == 0


async def test_presence_comeback_within_grace_is_no_leave_and_no_join(engine: Engine) -> None:
    alice = PresenceEntry("alice")
    assert await engine.presence_add("g", "phone-1", alice, ttl=30) is True
    leave = await engine.presence_remove("g", "phone-1", "alice", grace=5)
    assert leave
    # The phone reconnects (new connection id) before the grace window ends.
    assert await engine.presence_add("g", "phone-2", alice, ttl=30) is False
    assert await engine.presence_settle("g", "alice", leave) is False
    assert await engine.presence_stats("g") == PresenceCounts(1, 1)


async def test_a_stale_settle_leaves_a_newer_pending_leave_alone(engine: Engine) -> None:
    """Node A's grace timer (of a leave the user came back from) runs out while the user's
    newer leave, from node B, is pending: that one is B's to settle, after its own grace."""
    alice = PresenceEntry("alice")
    assert await engine.presence_add("f", "phone-1", alice, ttl=30) is True
    first = await engine.presence_remove("f", "phone-1", "alice", grace=5)  # drops on A
    assert await engine.presence_add("f", "phone-2", alice, ttl=30) is False  # back on B
    second = await engine.presence_remove("f", "phone-2", "alice", grace=5)  # drops on B
    assert first and second and first != second
    assert await engine.presence_settle("f", "alice", first) is False  # A's timer: not its leave
    assert await engine.presence_add("f", "phone-3", alice, ttl=30) is False  # back within B's window
    assert await engine.presence_settle("f", "alice", second) is False
    third = await engine.presence_remove("f", "phone-3", "alice", grace=5)
    assert await engine.presence_settle("f", "alice", third) is True


async def test_kv(engine: Engine) -> None:
    assert await engine.kv_get("k") is None
    assert await engine.kv_set("k", b"1") is True
    assert await engine.kv_set("k", b"2", only_if_absent=True) is False
    assert await engine.kv_get("k") == b"1"
    assert await engine.kv_set("t", b"x", ttl=0.05) is True
    await asyncio.sleep(0.1)  # expiry is time itself: nothing to await instead
    assert await engine.kv_get("t") is None
    assert await engine.kv_set("t", b"y", only_if_absent=True) is True


async def test_receipts_never_move_backwards(engine: Engine) -> None:
    assert await engine.receipt_set("c", "alice", 5) == 5
    assert await engine.receipt_set("c", "alice", 3) == 5
    assert await engine.receipt_set("c", "bob", 1) == 1
    assert await engine.receipt_set("c", "alice", 9) == 9
    assert await engine.receipts("c") == {"alice": 9, "bob": 1}
    assert await engine.receipts("none") == {}


async def test_events_reach_subscribed_nodes(engine: Engine, delivered: Recorder) -> None:
    await engine.subscribe("e")
    await engine.broadcast("e", b"\x81")
    await engine.broadcast("other", b"\x82")
    await engine.control(b"\x83")
    await delivered.until(lambda: bool(delivered.events and delivered.controls))
    assert delivered.events == [("e", b"\x81")]
    assert delivered.controls == [b"\x83"]


async def test_state_versions(engine: Engine) -> None:
    assert await engine.state_get("live", "k") == StateEntry("k", None, 0)
    first = await engine.state_set("live", "k", b"\x01", expected_version=0)
    other = await engine.state_set("live", "j", b"\x05")
    second = await engine.state_set("live", "k", b"\x02", expected_version=1)
    assert (first.version, other.version, second.version) == (1, 2, 3)
    with pytest.raises(VersionConflict) as info:
        await engine.state_set("live", "k", b"\x03", expected_version=1)
    assert info.value.current == StateEntry("k", b"\x02", 3)
    entries, version = await engine.state_since("live")
    assert version == 3 and sorted(entries, key=lambda e: e.key) == [
        StateEntry("j", b"\x05", 2),
        StateEntry("k", b"\x02", 3),
    ]
    deleted = await engine.state_set("live", "j", None)
    assert deleted.version == 4
    changed, version = await engine.state_since("live", 3)
    assert version == 4 and changed == [StateEntry("j", None, 4)]
    current, _ = await engine.state_since("live")
    assert current == [StateEntry("k", b"\x02", 3)]
    assert await engine.state_since("nothing", 0) == ([], 0)


async def test_memory_streams_are_forgotten_after_meta_ttl() -> None:
    eng = MemoryEngine(meta_ttl=10)
    await eng.start(Recorder())
    try:
        pos = await eng.publish("old", b"\x00", history=KEEP)
        eng.sweep(now=time.monotonic() + 5)
        assert (await eng.history("old")).position == pos
        eng.sweep(now=time.monotonic() + 3600)
        fresh = await eng.history("old")
        assert fresh.position.offset == 0 and fresh.position.epoch != pos.epoch
    finally:
        await eng.close()


async def test_kv_fractional_ttl_rounds_up_to_a_millisecond(engine: Engine) -> None:
    assert await engine.kv_set("f", b"x", ttl=0.0004) is True  # 0.4 ms: stored, for at least 1 ms
    await asyncio.sleep(20 * MS)  # expiry is time itself
    assert await engine.kv_get("f") is None


async def test_state_tombstones_keep_their_version(engine: Engine) -> None:
    await engine.state_set("ts", "a", b"\x01")
    await engine.state_set("ts", "b", b"\x02")
    gone = await engine.state_set("ts", "a", None)
    assert gone == StateEntry("a", None, 3)
    assert await engine.state_get("ts", "a") == StateEntry("a", None, 3)
    # A deleted key counts as absent for conditional writes...
    with pytest.raises(VersionConflict) as info:
        await engine.state_set("ts", "a", b"\x03", expected_version=3)
    assert info.value.current == StateEntry("a", None, 3)
    back = await engine.state_set("ts", "a", b"\x04", expected_version=0)
    assert back == StateEntry("a", b"\x04", 4)
    await engine.state_set("ts", "b", None)
    # ...and a client at version 2 learns of both changes, the deletion included.
    changed, version = await engine.state_since("ts", 2)
    assert version == 5
    assert changed == [StateEntry("a", b"\x04", 4), StateEntry("b", None, 5)]
    assert await engine.state_since("ts", 0) == ([StateEntry("a", b"\x04", 4)], 5)
    assert await engine.state_since("ts", 2**63) == ([], 5)  # the version alone (live.py's ABOVE_ALL)


@pytest.mark.parametrize("name", ["a{b}c", "{x}", "}{", "ns:{user}"])
async def test_channel_names_with_braces(engine: Engine, name: str) -> None:
    pos = await engine.publish(name, b"\x01", history=KEEP)
    assert (await engine.publish("b", b"\x02", history=KEEP)).offset == 1  # no key shared with "b"
    page = await engine.history(name)
    assert [(p.channel, p.data, p.offset) for p in page.publications] == [(name, b"\x01", 1)]
    assert page.position == pos
    assert await engine.presence_add(name, "c1", PresenceEntry("u"), ttl=30) is True
    assert await engine.presence_stats(name) == PresenceCounts(1, 1)
    assert await engine.receipt_set(name, "u", 1) == 1
    assert (await engine.state_set(name, "k", b"\x01")).version == 1


# --- what only the Redis engine can get wrong ---------------------------------------------


class Node:
    """A started Redis engine and what it delivered."""

    def __init__(self, engine: RedisEngine) -> None:
        self.engine = engine
        self.recorder = Recorder()


Nodes = Callable[..., Awaitable[RedisEngine]]
#: Engine -> its node, for the tests' eyes.
_NODES: dict[int, Node] = {}


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[Nodes]:
    """Make started Redis engines sharing one Redis and one prefix (nodes of one deployment)."""
    prefix = unique_prefix()
    made: list[RedisEngine] = []

    async def start(**options: Any) -> RedisEngine:
        eng = RedisEngine(redis_server.url, prefix=prefix, **options)
        made.append(eng)
        node = _NODES[id(eng)] = Node(eng)
        await eng.start(node.recorder)
        return eng

    yield start
    for eng in made:
        await eng.close()
        _NODES.pop(id(eng), None)


def recorder(eng: RedisEngine) -> Recorder:
    return _NODES[id(eng)].recorder


async def test_concurrent_publishers_never_repeat_offsets(nodes: Nodes) -> None:
    a, b = await nodes(), await nodes()
    n = 200
    results = await asyncio.gather(
        *(
            eng.publish("race", bytes([i % 256]), history=HistoryOptions(size=n, ttl=60))
            for i in range(n)
            for eng in (a, b)
        )
    )
    assert sorted(p.offset for p in results) == list(range(1, 2 * n + 1))
    assert len({p.epoch for p in results}) == 1
    page = await a.history("race")
    assert [p.offset for p in page.publications] == list(range(n + 1, 2 * n + 1))  # bounded by size


async def test_every_node_receives_in_offset_order(nodes: Nodes) -> None:
    a, b = await nodes(), await nodes()
    await a.subscribe("fan")
    await b.subscribe("fan")
    await asyncio.gather(*(eng.publish("fan", b"\x00") for _ in range(50) for eng in (a, b)))
    for eng in (a, b):
        rec = recorder(eng)
        await rec.until(lambda: len(rec.pubs) == 100)
        assert [p.offset for p in rec.pubs] == list(range(1, 101))


async def test_epoch_changes_when_the_position_is_lost(nodes: Nodes) -> None:
    eng = await nodes()
    first = [await eng.publish("lost", b"\x01", history=KEEP) for _ in range(3)][-1]
    await eng.receipt_set("lost", "alice", 3)
    await eng.redis.delete(eng.base("lost") + ":m")  # as after a restart without persistence
    after = await eng.publish("lost", b"\x02", history=KEEP)
    assert after.offset == 1 and after.epoch != first.epoch
    page = await eng.history("lost")
    assert [(p.offset, p.epoch) for p in page.publications] == [(1, after.epoch)]  # old entries went
    assert (await eng.history("lost", since=first)).publications == []
    assert await eng.receipts("lost") == {}  # receipts counted offsets of the lost epoch


async def test_memory_engine_forgets_receipts_with_the_epoch() -> None:
    """As on Redis (above): a stream forgotten after meta_ttl starts a new epoch, and
    receipts counted in the old one's offsets would refuse reads of the new messages."""
    eng = MemoryEngine(meta_ttl=10)
    old = [await eng.publish("c", b"\x00", history=KEEP) for _ in range(3)][-1]
    assert await eng.receipt_set("c", "alice", 3) == 3
    eng.sweep(now=time.monotonic() + 3600)
    new = await eng.publish("c", b"\x01", history=KEEP)
    assert new.offset == 1 and new.epoch != old.epoch
    assert await eng.receipts("c") == {}
    assert await eng.receipt_set("c", "alice", 1) == 1


async def test_reading_a_new_channel_fixes_its_epoch(nodes: Nodes) -> None:
    eng = await nodes()
    read = (await eng.history("fresh", limit=0)).position
    pos = await eng.publish("fresh", b"\x00", history=KEEP)
    assert read.offset == 0 and pos == StreamPosition(1, read.epoch)


async def test_keys_of_a_channel_share_a_slot_and_expire(nodes: Nodes) -> None:
    eng = await nodes(meta_ttl=3600)
    for name in ("plain", "br{ace}s"):
        await eng.publish(name, b"\x00", history=HistoryOptions(size=5, ttl=30))
        await eng.receipt_set(name, "u", 1)
        await eng.presence_add(name, "c", PresenceEntry("u"), ttl=30)
        await eng.state_set(name, "k", b"\x01")
        keys = [k.decode() if isinstance(k, bytes) else k for k in await eng.redis.keys(eng.base(name) + "*")]
        assert {k.rsplit(":", 1)[1] for k in keys} == {"s", "m", "r", "pc", "pe", "pu", "sv", "sz", "sn"}
        assert len({key_slot(k.encode()) for k in keys} | {key_slot(eng.pubsub_channel(name).encode())}) == 1
        ttls = {k.rsplit(":", 1)[1]: await eng.redis.pttl(k) for k in keys}
        assert 0 < ttls["s"] <= 30_000 and 30_000 < ttls["m"] <= 3_600_000 and 0 < ttls["r"] <= 3_600_000
        assert 60_000 < ttls["pc"] <= 90_000
        assert ttls["sv"] == ttls["sz"] == ttls["sn"] == -1  # live state is kept until deleted


async def test_presence_entries_expire_and_each_leave_is_announced_once(
    nodes: Nodes,
) -> None:
    a, b = await nodes(), await nodes()
    assert await a.presence_add("room", "dying-1", PresenceEntry("alice", b"\x01"), ttl=0.05) is True
    assert await a.presence_add("room", "dying-2", PresenceEntry("alice"), ttl=0.05) is False
    assert await a.presence_add("room", "dying-3", PresenceEntry("carol"), ttl=0.05) is True
    assert await b.presence_add("room", "alive", PresenceEntry("bob"), ttl=30) is True
    assert await b.presence_stats("room") == PresenceCounts(4, 3)
    await asyncio.sleep(100 * MS)  # a's node died: its entries' time runs out
    assert await b.presence("room") == {"alive": PresenceEntry("bob")}
    assert await b.presence_stats("room") == PresenceCounts(1, 1)
    sweeps = await asyncio.gather(a.presence_expire("room"), b.presence_expire("room"))
    assert sorted(sweeps[0] + sweeps[1]) == ["alice", "carol"]  # once, whoever sweeps
    assert await b.presence_expire("room") == []


async def test_a_user_back_before_the_sweep_is_no_leave_and_no_join(nodes: Nodes) -> None:
    eng = await nodes()
    assert await eng.presence_add("room", "old", PresenceEntry("alice"), ttl=0.02) is True
    await asyncio.sleep(50 * MS)
    assert await eng.presence_stats("room") == PresenceCounts(0, 0)  # expired, leave not announced yet
    assert await eng.presence_add("room", "new", PresenceEntry("alice"), ttl=30) is False
    assert await eng.presence_expire("room") == []


async def test_pending_leaves_lapse(nodes: Nodes, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(redis_engine, "LEAVE_MIN", 0.02)
    eng = await nodes()
    assert await eng.presence_add("room", "c1", PresenceEntry("alice"), ttl=30) is True
    leave = await eng.presence_remove("room", "c1", "alice", grace=0.01)
    assert leave
    assert await eng.redis.zcard(eng.base("room") + ":pl") == 1
    await asyncio.sleep(60 * MS)  # the marker lives max(3 x grace, LEAVE_MIN)
    assert await eng.presence_settle("room", "alice", leave) is False
    assert await eng.presence_add("room", "c2", PresenceEntry("alice"), ttl=30) is True


async def test_direct_publish_through_fcall(nodes: Nodes) -> None:
    eng = await nodes()
    rec = recorder(eng)
    await eng.load_library()  # start() loads it in the background; make sure it is there
    await eng.subscribe("news")
    first = await eng.publish("news", b"\xa2hi", history=KEEP)
    r = eng.redis
    key = eng.base("news")
    offset, epoch = await r.fcall("realtime_publish", 1, key, b"\x81\xa1a\x01", "10", "60")
    assert (offset, epoch.decode()) == (2, first.epoch)
    reply = await r.fcall(
        "realtime_publish_json",
        1,
        key,
        '{"text": "hello", "n": [1, 2.5, null]}',
        "10",
        "60",
        "backend",
        "",
        '{"role": "bot"}',
        "m-1",
        "1700000000000",
    )
    assert reply[0] == 3
    await rec.until(lambda: len(rec.pubs) == 3)
    assert [p.offset for p in rec.pubs] == [1, 2, 3]
    assert rec.pubs[1].data == b"\x81\xa1a\x01"
    third = rec.pubs[2]
    assert msgpack.unpackb(third.data) == {"text": "hello", "n": [1, 2.5, None]}
    assert third.info == ClientInfo("backend", "", msgpack.packb({"role": "bot"}))
    assert (third.mid, third.time) == ("m-1", 1_700_000_000_000)
    page = await eng.history("news")
    assert page.publications == rec.pubs  # history holds what was delivered


async def test_fcall_rejects_bad_arguments(nodes: Nodes) -> None:
    eng = await nodes()
    await eng.load_library()
    with pytest.raises(redis.exceptions.ResponseError, match="non-negative"):
        await eng.redis.fcall("realtime_publish", 1, eng.base("x"), b"\x01", "-1")
    with pytest.raises(redis.exceptions.ResponseError):
        await eng.redis.fcall("realtime_publish_json", 1, eng.base("x"), "{not json")
    assert (await eng.history("x", limit=0)).position.offset == 0


async def test_unreachable_redis_is_a_temporary_error(
    nodes: Nodes, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    eng = await nodes(socket_timeout=0.5)
    await eng.publish("up", b"\x00")
    await asyncio.to_thread(redis_server.kill)
    for call in (
        eng.publish("up", b"\x00"),
        eng.history("up"),
        eng.kv_get("k"),
        eng.presence_stats("up"),
        eng.state_since("up"),
    ):
        with pytest.raises(EngineUnavailable):
            await call
    warnings = [r for r in caplog.records if r.name == "realtime.engines.redis"]
    assert warnings and all(r.exc_info is None for r in warnings)
    assert len(warnings) <= 2  # one line a second at most
    await asyncio.to_thread(redis_server.start)
    await eng.publish("up", b"\x00")  # and back once Redis is


async def test_after_redis_restarts_nodes_resync_and_functions_return(nodes: Nodes, redis_server: RedisServer) -> None:
    eng = await nodes()
    rec = recorder(eng)
    await eng.library_loaded()
    before = await eng.publish("news", b"\x01", history=KEEP)
    await eng.subscribe("news")
    await redis_server.restart()  # no persistence: data and functions are gone
    await rec.until(lambda: rec.resyncs == 1)
    assert eng.ready
    await eng.library_loaded()
    offset, epoch = await eng.redis.fcall("realtime_publish", 1, eng.base("news"), b"\x02", "10", "60")
    assert offset == 1 and epoch.decode() != before.epoch  # a new epoch: continuity visibly broke
    await rec.until(lambda: len(rec.pubs) == 1)  # and the subscription came back
    assert (rec.pubs[0].offset, rec.pubs[0].data) == (1, b"\x02")


async def test_cluster_direct_publish_reaches_every_shard(redis_cluster: LocalCluster) -> None:
    eng = RedisEngine(redis_cluster.url, prefix=unique_prefix(), cluster=True)
    rec = Recorder()
    await eng.start(rec)
    try:
        await eng.library_loaded()  # on every primary
        names = [f"shard-{i}" for i in range(12)]
        assert len({redis_cluster.owner_of(key_slot(eng.base(n).encode())) for n in names}) == 3
        for name in names:
            await eng.subscribe(name)
            await eng.publish(name, b"\x01", history=KEEP)
            offset, _ = await eng.redis.fcall("realtime_publish", 1, eng.base(name), b"\x02", "10", "60")
            assert offset == 2
        await rec.until(lambda: len(rec.pubs) == 2 * len(names))
        assert sorted((p.channel, p.offset) for p in rec.pubs) == sorted((n, o) for n in names for o in (1, 2))
    finally:
        await eng.close()


async def test_a_node_starts_while_redis_is_down(redis_server: RedisServer) -> None:
    await asyncio.to_thread(redis_server.stop)
    eng = RedisEngine(redis_server.url, prefix=unique_prefix(), connect_timeout=100 * MS)
    rec = Recorder()
    try:
        async with asyncio.timeout(WAIT):
            await eng.start(rec)  # gives up waiting after connect_timeout
        assert not eng.ready
        with pytest.raises(EngineUnavailable):
            await eng.subscribe("later")
        await asyncio.to_thread(redis_server.start)
        async with asyncio.timeout(WAIT):
            while not eng.ready:  # the listener has no event for its first connection
                await asyncio.sleep(10 * MS)
        await eng.library_loaded()
        await eng.subscribe("later")
        await eng.control(b"\x80")  # the control channel was subscribed with the first connection
        await eng.publish("later", b"\x01")
        await rec.until(lambda: len(rec.pubs) == 1 and len(rec.controls) == 1)
        assert rec.resyncs == 0  # a first connection, nothing to resync
    finally:
        await eng.close()
