"""The broker contract (``realtime.engines.broker``): offsets, epochs, history, delivery,
events, control, idempotent publish and direct publishing; memory, Redis and Redis Cluster."""

from __future__ import annotations

import asyncio
import time

import msgpack  # type: ignore[import-untyped]
import pytest
import redis.exceptions
from redis.crc import key_slot

from protocol.messages import ClientInfo, Publication, StreamPosition
from realtime.engines.base import Engine, HistoryOptions, Idempotency
from realtime.engines.memory import MemoryEngine
from realtime.engines.presence import PresenceCounts, PresenceEntry
from realtime.engines.redis import RedisEngine

from .helpers import KEEP, MS, WAIT, Nodes, Recorder, recorder, unique_prefix
from .redis_cluster import LocalCluster
from .redis_server import RedisServer

# --- every engine ----------------------------------------------------------------------


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


async def test_history_is_bounded_by_bytes_keeping_the_newest(engine: Engine) -> None:
    bounded = HistoryOptions(size=10, ttl=60, max_bytes=3500)
    for i in range(6):
        await engine.publish("kb", bytes([i]) * 1000, history=bounded)
    page = await engine.history("kb")
    assert [p.offset for p in page.publications] == [4, 5, 6]  # 3 x ~1000 bytes fit in 3500
    await engine.publish("kb", b"\x07" * 5000, history=bounded)  # alone over the bound: still kept
    assert [p.offset for p in (await engine.history("kb")).publications] == [7]
    for i in range(3):
        await engine.publish("kb", bytes([i]) * 1000, history=bounded)
    assert [p.offset for p in (await engine.history("kb")).publications] == [8, 9, 10]


async def test_a_history_read_is_bounded_by_bytes(engine: Engine) -> None:
    for i in range(8):
        await engine.publish("rb", bytes([i]) * 1000, history=KEEP)
    epoch = (await engine.history("rb", limit=0)).position.epoch
    forward = await engine.history("rb", since=StreamPosition(0, epoch), max_bytes=3500)
    assert [p.offset for p in forward.publications] == [1, 2, 3] and forward.truncated
    backward = await engine.history("rb", before=8, reverse=True, max_bytes=3500)
    assert [p.offset for p in backward.publications] == [7, 6, 5] and backward.truncated
    one = await engine.history("rb", since=StreamPosition(7, epoch), max_bytes=10)  # the first is always read
    assert [p.offset for p in one.publications] == [8] and not one.truncated
    first = await engine.history("rb", max_bytes=10)
    assert [p.offset for p in first.publications] == [1] and first.truncated
    whole = await engine.history("rb", since=StreamPosition(2, epoch), max_bytes=100_000)
    assert [p.offset for p in whole.publications] == [3, 4, 5, 6, 7, 8] and not whole.truncated
    counted = await engine.history("rb", limit=2, max_bytes=100_000)
    assert len(counted.publications) == 2 and not counted.truncated  # a limit reached is no truncation


async def test_reads_of_an_unknown_channel_create_no_state(engine: Engine) -> None:
    """history, recovery and position reads of never-published channels leave the engine as it was."""
    before = await _stored(engine)
    for i in range(50):
        name = f"never:{i}"
        assert (await engine.history(name, limit=0)).position == StreamPosition(0, "")
        assert (await engine.history(name, since=StreamPosition(0, ""))).publications == []
        assert (await engine.history(name, limit=10, reverse=True, max_bytes=100)).publications == []
    assert await _stored(engine) == before
    pos = await engine.publish("never:0", b"\x00", history=KEEP)
    assert pos.offset == 1 and pos.epoch  # the first publish starts the stream


async def _stored(engine: Engine) -> int:
    """How many things the engine holds: streams (memory), keys under the prefix (Redis)."""
    if isinstance(engine, MemoryEngine):
        return len(engine._streams) + len(engine._state) + len(engine._receipts) + len(engine._presence)
    assert isinstance(engine, RedisEngine)
    if engine.cluster:
        return len([k async for k in engine.redis.scan_iter(match=engine.prefix + ":*")])
    return len(await engine.redis.keys(engine.prefix + ":*"))


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


async def test_events_reach_subscribed_nodes(engine: Engine, delivered: Recorder) -> None:
    await engine.subscribe("e")
    await engine.broadcast("e", b"\x81")
    await engine.broadcast("other", b"\x82")
    await engine.control(b"\x83")
    await delivered.until(lambda: bool(delivered.events and delivered.controls))
    assert delivered.events == [("e", b"\x81")]
    assert delivered.controls == [b"\x83"]


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


# --- idempotent publish ------------------------------------------------------------------


async def test_idempotent_replay_returns_the_first_result_and_publishes_nothing(
    engine: Engine, delivered: Recorder
) -> None:
    await engine.subscribe("i")
    key = Idempotency("k", ttl=60)
    first = await engine.publish("i", b"\x01", history=KEEP, mid="m1", time=1000, idempotency=key)
    assert (first.offset, first.mid, first.time, first.replayed) == (1, "m1", 1000, False)
    again = await engine.publish("i", b"\x02", history=KEEP, mid="m2", time=2000, idempotency=key)
    assert again.replayed
    assert (again.offset, again.epoch, again.mid, again.time) == (first.offset, first.epoch, "m1", 1000)
    assert again.position == first.position
    await delivered.until(lambda: len(delivered.pubs) == 1)
    after = await engine.publish("i", b"\x03", history=KEEP)  # a marker: anything before it has arrived
    await delivered.until(lambda: len(delivered.pubs) == 2)
    assert [(p.data, p.offset) for p in delivered.pubs] == [(b"\x01", 1), (b"\x03", 2)]
    assert after.offset == 2
    page = await engine.history("i")
    assert [(p.data, p.mid) for p in page.publications] == [(b"\x01", "m1"), (b"\x03", "")]


async def test_idempotency_key_expires_after_its_ttl(engine: Engine) -> None:
    key = Idempotency("k", ttl=0.05)
    first = await engine.publish("e", b"\x01", idempotency=key)
    assert (await engine.publish("e", b"\x01", idempotency=key)).replayed
    await asyncio.sleep(100 * MS)  # expiry is time itself
    later = await engine.publish("e", b"\x01", idempotency=key)
    assert not later.replayed and later.offset == first.offset + 1


async def test_idempotency_keys_are_per_channel_and_per_key(engine: Engine) -> None:
    key = Idempotency("k", ttl=60)
    first = await engine.publish("a", b"\x01", idempotency=key)
    elsewhere = await engine.publish("b", b"\x01", idempotency=key)
    assert not elsewhere.replayed and elsewhere.offset == 1
    other = await engine.publish("a", b"\x01", idempotency=Idempotency("k2", ttl=60))
    assert not other.replayed and other.offset == first.offset + 1
    plain = await engine.publish("a", b"\x01")  # without a key: always published
    assert plain.offset == first.offset + 2


async def test_concurrent_publishes_with_one_key_publish_once(engine: Engine) -> None:
    key = Idempotency("k", ttl=60)
    results = await asyncio.gather(*(engine.publish("c", bytes([i]), mid=f"m{i}", idempotency=key) for i in range(8)))
    assert sum(not r.replayed for r in results) == 1
    assert {(r.offset, r.epoch, r.mid, r.time) for r in results} == {(1, results[0].epoch, results[0].mid, 0)}
    assert (await engine.history("c", limit=0)).position.offset == 1


def test_an_idempotency_key_needs_a_key_and_a_ttl() -> None:
    for bad in (("", 1.0), ("k", 0.0), ("k", -1.0)):
        with pytest.raises(ValueError):
            Idempotency(*bad)


# --- the memory engine -------------------------------------------------------------------


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


# --- what only the Redis engine can get wrong ---------------------------------------------


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


async def test_reads_of_a_new_channel_write_no_key(nodes: Nodes) -> None:
    eng = await nodes()
    assert (await eng.history("fresh", limit=0)).position == StreamPosition(0, "")
    assert (await eng.history("fresh", since=StreamPosition(0, ""))).publications == []
    assert await eng.redis.keys(eng.prefix + "*") == []
    pos = await eng.publish("fresh", b"\x00", history=KEEP)
    assert pos.offset == 1 and pos.epoch


async def test_keys_of_a_channel_share_a_slot_and_expire(nodes: Nodes) -> None:
    eng = await nodes(meta_ttl=3600)
    for name in ("plain", "br{ace}s"):
        await eng.publish(name, b"\x00", history=HistoryOptions(size=5, ttl=30))
        await eng.receipt_set(name, "u", 1)
        await eng.presence_add(name, "c", PresenceEntry("u"), ttl=30)
        await eng.state_set(name, "k", b"\x01")
        keys = [k.decode() if isinstance(k, bytes) else k for k in await eng.redis.keys(eng.base(name) + "*")]
        assert {k.rsplit(":", 1)[1] for k in keys} == {"s", "m", "r", "pc", "pe", "pu", "sv", "sz", "sn", "sm"}
        assert len({key_slot(k.encode()) for k in keys} | {key_slot(eng.pubsub_channel(name).encode())}) == 1
        ttls = {k.rsplit(":", 1)[1]: await eng.redis.pttl(k) for k in keys}
        assert 0 < ttls["s"] <= 30_000 and 30_000 < ttls["m"] <= 3_600_000 and 0 < ttls["r"] <= 3_600_000
        assert 60_000 < ttls["pc"] <= 90_000
        assert ttls["sv"] == ttls["sz"] == ttls["sn"] == ttls["sm"] == -1  # no ttl: live state is kept until deleted


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


async def test_nodes_racing_with_one_key_publish_once(nodes: Nodes) -> None:
    a, b = await nodes(), await nodes()
    key = Idempotency("k", ttl=60)
    results = await asyncio.gather(*(eng.publish("race", b"\x01", idempotency=key) for eng in (a, b) * 10))
    assert sum(not r.replayed for r in results) == 1
    assert len({(r.offset, r.epoch) for r in results}) == 1
    assert (await a.history("race", limit=0)).position.offset == 1


async def test_idempotency_key_lives_in_the_channel_slot_with_its_ttl(nodes: Nodes) -> None:
    eng = await nodes()
    for name in ("room", "a{b}c"):
        await eng.publish(name, b"\x01", idempotency=Idempotency("k", ttl=30))
        stored = eng.idempotency_key(name, "k")
        assert key_slot(stored.encode()) == key_slot(eng.base(name).encode())
        assert 0 < await eng.redis.pttl(stored) <= 30_000
