"""One contract for every engine: each test runs against each implementation.

The Redis engine joins the ``engine`` fixture's parameters when it lands; the
tests stay as they are.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator

import pytest

from protocol.messages import ClientInfo, Publication, StreamPosition
from realtime.engines.base import Engine, HistoryOptions, StateEntry, VersionConflict
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


async def test_presence(engine: Engine) -> None:
    await engine.presence_add("p", "c1", b"\x01", ttl=30)
    await engine.presence_add("p", "c2", b"\x02", ttl=30)
    assert await engine.presence("p") == {"c1": b"\x01", "c2": b"\x02"}
    await engine.presence_remove("p", "c1")
    assert await engine.presence("p") == {"c2": b"\x02"}
    assert await engine.presence("empty") == {}


async def test_state_versions(engine: Engine) -> None:
    assert await engine.state_get("live", "k") == StateEntry(None, 0)
    first = await engine.state_set("live", "k", b"\x01")
    second = await engine.state_set("live", "k", b"\x02", expected_version=1)
    assert (first.version, second.version) == (1, 2)
    with pytest.raises(VersionConflict) as info:
        await engine.state_set("live", "k", b"\x03", expected_version=1)
    assert info.value.current == StateEntry(b"\x02", 2)
    assert await engine.state_all("live") == {"k": StateEntry(b"\x02", 2)}
    await engine.state_set("live", "k", None)
    assert await engine.state_all("live") == {}


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
