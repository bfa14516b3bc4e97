"""One contract for every engine: each test runs against each implementation.

The Redis engine joins the ``engine`` fixture's parameters when it lands; the
tests stay as they are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from protocol.messages import ClientInfo, Publication, StateEntry, StreamPosition
from realtime.engines.base import Engine, HistoryOptions, PresenceEntry, PresenceStats, VersionConflict
from realtime.engines.memory import MemoryEngine

KEEP = HistoryOptions(size=10, ttl=60)


class Recorder:
    """The node side: collects what the engine delivers."""

    def __init__(self) -> None:
        self.pubs: list[Publication] = []
        self.arrived = asyncio.Event()

    def on_publication(self, pub: Publication) -> None:
        self.pubs.append(pub)
        self.arrived.set()

    def on_event(self, channel: str, event: bytes) -> None:
        pass

    def on_control(self, message: bytes) -> None:
        pass


@pytest.fixture
def delivered() -> Recorder:
    return Recorder()


@pytest.fixture(params=["memory"])
async def engine(request: pytest.FixtureRequest, delivered: Recorder) -> AsyncIterator[Engine]:
    eng: Engine = MemoryEngine()
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
    async with asyncio.timeout(5):
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
    assert await engine.presence_stats("p") == PresenceStats(clients=3, users=2)
    assert await engine.presence_remove("p", "c1", "alice", grace=1) is False  # c2 still here
    assert await engine.presence_remove("p", "c2", "alice", grace=1) is True  # last device
    assert await engine.presence_settle("p", "alice") is True
    assert await engine.presence_settle("p", "alice") is False  # once
    assert await engine.presence_stats("p") == PresenceStats(1, 1)
    assert await engine.presence("empty") == {}
    assert await engine.presence_remove("p", "nobody", "x", grace=1) is False


async def test_presence_comeback_within_grace_is_no_leave_and_no_join(engine: Engine) -> None:
    alice = PresenceEntry("alice")
    assert await engine.presence_add("g", "phone-1", alice, ttl=30) is True
    assert await engine.presence_remove("g", "phone-1", "alice", grace=5) is True
    # The phone reconnects (new connection id) before the grace window ends.
    assert await engine.presence_add("g", "phone-2", alice, ttl=30) is False
    assert await engine.presence_settle("g", "alice") is False
    assert await engine.presence_stats("g") == PresenceStats(1, 1)


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
    events: list[tuple[str, bytes]] = []
    controls: list[bytes] = []
    delivered.on_event = lambda ch, ev: events.append((ch, ev))  # type: ignore[method-assign]
    delivered.on_control = controls.append  # type: ignore[method-assign]
    await engine.subscribe("e")
    await engine.broadcast("e", b"\x81")
    await engine.broadcast("other", b"\x82")
    await engine.control(b"\x83")
    async with asyncio.timeout(5):
        while not (events and controls):
            await asyncio.sleep(0.001)
    assert events == [("e", b"\x81")]
    assert controls == [b"\x83"]


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
