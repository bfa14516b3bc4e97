"""The presence contract (``realtime.engines.presence``): members, counts, joins and leaves
announced once; memory, Redis and Redis Cluster."""

from __future__ import annotations

import asyncio

import pytest

from realtime.engines import redis as redis_engine
from realtime.engines.base import Engine
from realtime.engines.presence import PresenceCounts, PresenceEntry

from .helpers import MS, Nodes

# --- every engine ----------------------------------------------------------------------


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


# --- what only the Redis engine can get wrong ---------------------------------------------


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
