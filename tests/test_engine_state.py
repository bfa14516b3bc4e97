"""The live-state contract (``realtime.engines.state``); memory, Redis and Redis Cluster."""

from __future__ import annotations

import pytest

from protocol.messages import StateEntry
from realtime.engines.base import Engine, VersionConflict

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
