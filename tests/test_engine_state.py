"""The live-state contract (``realtime.engines.state``); memory, Redis and Redis Cluster."""

from __future__ import annotations

import time

import pytest

from protocol.messages import StateEntry
from realtime.engines.base import Engine, VersionConflict
from realtime.engines.errors import StateLimitExceeded
from realtime.engines.memory import MemoryEngine
from realtime.engines.state import StateLimits, StateSlice, StateWrite

from .helpers import Nodes

# --- every engine ----------------------------------------------------------------------


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


# --- bounds: sizes, keys, tombstones, expiry (rules in realtime/engines/state.py) -------------

T0 = 1_800_000_000.0  # a Unix time for the tests' clocks


async def test_state_limits_refuse_and_change_nothing(engine: Engine) -> None:
    limits = StateLimits(max_bytes=10, max_keys=2)
    assert (await engine.state_write("q", "a", b"12345", limits=limits)).entry.version == 1  # 1 + 5 bytes
    with pytest.raises(StateLimitExceeded) as info:
        await engine.state_write("q", "b", b"12345", limits=limits)  # 6 + 6 > 10
    assert (info.value.what, info.value.limit) == ("bytes", 10)
    assert (await engine.state_write("q", "b", b"12", limits=limits)).entry.version == 2  # 6 + 3
    with pytest.raises(StateLimitExceeded) as info:
        await engine.state_write("q", "c", b"", limits=limits)
    assert (info.value.what, info.value.limit) == ("keys", 2)
    # Replacing a value counts the new one instead of the old; a delete is never refused.
    assert (await engine.state_write("q", "a", b"123456", limits=limits)).entry.version == 3  # 7 + 3
    with pytest.raises(StateLimitExceeded):
        await engine.state_write("q", "a", b"1234567", limits=limits)
    assert (await engine.state_write("q", "a", None, limits=limits)).entry.version == 4
    assert await engine.state_since("q") == ([StateEntry("b", b"12", 2)], 4)
    # A key's size is its UTF-8 bytes: "é" is 2.
    assert (await engine.state_write("q", "é", b"1234", limits=limits)).entry.version == 5  # 3 + 2 + 5 = 10
    with pytest.raises(StateLimitExceeded):
        await engine.state_write("q2", "éé", b"1234567", limits=limits)  # 4 + 7 > 10
    assert await engine.state_read("q2") == StateSlice([], 0, True)  # a refused write creates nothing


async def test_tombstones_are_compacted_and_raise_the_floor(engine: Engine) -> None:
    """The finding: deleted keys left tombstones for ever (5,000 returned to one subscribe)."""
    limits = StateLimits(max_keys=3)
    for i in range(10):
        await engine.state_write("t", f"k{i}", b"\x01", limits=limits)
        await engine.state_write("t", f"k{i}", None, limits=limits)  # version 2i + 2
    changed = await engine.state_read("t", 17)
    assert changed == StateSlice([StateEntry("k8", None, 18), StateEntry("k9", None, 20)], 20, False)
    # Tombstones up to version 14 (k6's) were dropped: a client at 13 may have missed that deletion.
    assert await engine.state_read("t", 14) == StateSlice(
        [StateEntry(f"k{i}", None, 2 * i + 2) for i in (7, 8, 9)], 20, False
    )
    assert await engine.state_read("t", 13) == StateSlice([], 20, True)
    assert await engine.state_since("t", 13) == ([], 20)


async def test_tombstones_make_room_before_a_write_is_refused(engine: Engine) -> None:
    limits = StateLimits(max_bytes=12)
    for key in ("aaaa", "bbbb"):
        await engine.state_write("r", key, b"", limits=limits)
        await engine.state_write("r", key, None, limits=limits)  # 8 bytes of tombstones
    await engine.state_write("r", "cccc", b"1234", limits=limits)  # 8 more: aaaa's tombstone goes
    assert await engine.state_read("r", 3) == StateSlice(
        [StateEntry("bbbb", None, 4), StateEntry("cccc", b"1234", 5)], 5, False
    )
    assert (await engine.state_read("r", 1)).full


async def test_keys_expire_after_their_ttl(engine: Engine) -> None:
    limits = StateLimits(ttl=60.0)
    await engine.state_write("e", "old", b"\x01", limits=limits, now=T0)
    await engine.state_write("e", "new", b"\x02", limits=limits, now=T0 + 30)
    await engine.state_write("e", "kept", b"\x03", now=T0 + 30)  # written without a ttl: never expires
    assert await engine.state_get("e", "old", now=T0 + 59) == StateEntry("old", b"\x01", 1)
    # Past its ttl a key is gone for readers at once...
    assert await engine.state_get("e", "old", now=T0 + 60) == StateEntry("old", None, 1)
    snapshot = await engine.state_read("e", 0, now=T0 + 60)
    assert sorted(snapshot.entries, key=lambda e: e.key) == [
        StateEntry("kept", b"\x03", 3),
        StateEntry("new", b"\x02", 2),
    ]
    # ...and the changes since any version cannot say so: the answer is every key.
    assert (await engine.state_read("e", 3, now=T0 + 60)).full
    # The next write deletes it first, with a version of its own, and says so.
    with pytest.raises(VersionConflict) as info:
        await engine.state_write("e", "old", b"\x09", expected_version=1, limits=limits, now=T0 + 61)
    assert info.value.current == StateEntry("old", None, 1)  # expired counts as absent: expect 0
    write = await engine.state_write("e", "other", b"\x04", limits=limits, now=T0 + 61)
    assert write == StateWrite(StateEntry("other", b"\x04", 5), (StateEntry("old", None, 4),))
    assert await engine.state_read("e", 3, now=T0 + 61) == StateSlice(
        [StateEntry("old", None, 4), StateEntry("other", b"\x04", 5)], 5, False
    )
    # Writing a key again restarts its ttl.
    await engine.state_write("e", "new", b"\x05", limits=limits, now=T0 + 80)
    assert await engine.state_get("e", "new", now=T0 + 139) == StateEntry("new", b"\x05", 6)


async def test_expired_keys_are_deleted_without_a_write(engine: Engine) -> None:
    limits = StateLimits(max_keys=1, ttl=10.0)
    await engine.state_write("y", "a", b"\x01", limits=limits, now=T0)
    await engine.state_write("y", "b", None, limits=limits, now=T0)  # a tombstone at 2
    assert await engine.state_expire("y", limits, now=T0 + 9) == ()
    assert await engine.state_expire("y", limits, now=T0 + 10) == (StateEntry("a", None, 3),)
    assert await engine.state_expire("y", limits, now=T0 + 11) == ()
    # b's tombstone was compacted (one tombstone at most): a client at version 1 gets everything.
    assert await engine.state_read("y", 2, now=T0 + 11) == StateSlice([StateEntry("a", None, 3)], 3, False)
    assert await engine.state_read("y", 1, now=T0 + 11) == StateSlice([], 3, True)
    assert await engine.state_expire("nothing", limits) == ()
    assert await engine.state_read("nothing") == StateSlice([], 0, True)  # and nothing was created


async def test_an_expired_key_does_not_count_against_the_limits(engine: Engine) -> None:
    limits = StateLimits(max_keys=1, ttl=10.0)
    await engine.state_write("x", "a", b"\x01", limits=limits, now=T0)
    with pytest.raises(StateLimitExceeded):
        await engine.state_write("x", "b", b"\x02", limits=limits, now=T0 + 5)
    write = await engine.state_write("x", "b", b"\x02", limits=limits, now=T0 + 10)
    assert write.expired == (StateEntry("a", None, 2),) and write.entry == StateEntry("b", b"\x02", 3)


# --- a whole channel's expiry ----------------------------------------------------------------


async def test_memory_engine_forgets_a_channel_whose_keys_all_expired() -> None:
    eng = MemoryEngine()
    limits = StateLimits(ttl=60.0)
    await eng.state_write("w", "a", b"\x01", limits=limits)
    await eng.state_write("w", "b", None, limits=limits)
    eng.sweep()
    assert (await eng.state_read("w", 1)).entries == [StateEntry("b", None, 2)]  # not yet
    eng._state["w"].ends = time.time() - 1  # as if the last write were a minute ago
    eng.sweep()
    assert eng._state["w"].entries == {}
    # The version stays; a client at any version gets the (empty) full state.
    assert await eng.state_read("w", 2) == StateSlice([], 2, True)
    assert (await eng.state_write("w", "c", b"\x03", limits=limits)).entry.version == 3
    assert await eng.state_read("w", 2) == StateSlice([StateEntry("c", b"\x03", 3)], 3, True)
    assert await eng.state_read("w", 3) == StateSlice([], 3, False)


@pytest.mark.redis
async def test_redis_state_keys_expire_with_the_ttl_but_not_the_version(nodes: Nodes) -> None:
    eng = await nodes()
    await eng.state_write("w", "a", b"\x01", limits=StateLimits(ttl=60.0))
    await eng.state_write("w", "b", None, limits=StateLimits(ttl=60.0))
    sv, sz, sn, se, sm, st = eng._state_keys("w")
    ttls = {k.rsplit(":", 1)[1]: await eng.redis.pttl(k) for k in (sv, sz, se, sm, st)}
    assert all(50_000 < ttl <= 60_000 for ttl in ttls.values()), ttls
    assert await eng.redis.pttl(sn) == -1
    await eng.redis.delete(sv, sz, se, sm, st)  # what Redis does a minute later
    assert await eng.state_read("w", 2) == StateSlice([], 2, True)
    assert (await eng.state_write("w", "c", b"\x03", limits=StateLimits(ttl=60.0))).entry.version == 3
    assert await eng.state_read("w", 2) == StateSlice([StateEntry("c", b"\x03", 3)], 3, True)
    assert await eng.state_read("w", 3) == StateSlice([], 3, False)
    await eng.state_write("w", "c", b"\x04")  # without a ttl, the keys are kept for ever again
    assert await eng.redis.pttl(sv) == -1 and await eng.redis.pttl(sm) == -1
