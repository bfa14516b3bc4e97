"""The client's live-state rules on their own: no hub, no sockets, no event loop."""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped, unused-ignore]

from protocol.messages import StateChange, StateEntry
from realtime.client import StateChanged
from realtime.client.live_state import MAX_AHEAD, LiveState

CH = "live:doc"


def pack(value: object) -> bytes:
    data: bytes = msgpack.packb(value)
    return data


def entry(key: str, value: object, version: int) -> StateEntry:
    return StateEntry(key, None if value is None else pack(value), version)


def full(key: str, value: object, version: int) -> StateChange:
    return StateChange(CH, key, version, value=pack(value))


def patch(key: str, p: dict[str, object], version: int) -> StateChange:
    return StateChange(CH, key, version, patch=pack(p))


def test_the_first_snapshot_fills_the_state_without_events() -> None:
    s = LiveState(CH)
    assert s.apply_snapshot(3, [entry("a", 1, 2), entry("b", {"x": 1}, 3)], None, announce=False) == []
    assert dict(s.state) == {"a": 1, "b": {"x": 1}}
    assert s.version == 3
    assert s.key_version("a") == 2 and s.key_version("b") == 3 and s.key_version("zzz") == 0


def test_a_patch_applies_at_the_next_version_only() -> None:
    s = LiveState(CH)
    s.apply_snapshot(1, [entry("k", {"n": 1, "t": "x"}, 1)], None)
    assert s.apply(patch("k", {"n": 2, "t": None}, 2)) == [StateChanged(CH, "k", {"n": 2}, 2)]
    assert s.state["k"] == {"n": 2} and s.version == 2
    assert s.apply(patch("k", {"n": 9}, 2)) == []  # already included
    assert s.apply(patch("k", {"n": 9}, 4)) is None  # version 3 was missed: a gap
    assert s.state["k"] == {"n": 2} and s.version == 2


def test_a_full_value_applies_whenever_it_is_newer_than_the_key() -> None:
    s = LiveState(CH)
    s.apply_snapshot(1, [entry("k", 1, 1)], None)
    assert s.apply(full("other", "v", 3)) == [StateChanged(CH, "other", "v", 3)]
    assert s.version == 1  # version 2 is still missing
    assert s.apply(full("other", "old", 2)) == []  # older than the key
    assert s.apply(full("k", 2, 2)) == [StateChanged(CH, "k", 2, 2)]
    assert s.version == 3  # 2 closes the gap up to 3, applied ahead


def test_a_patch_after_a_newer_full_value_of_its_key_only_advances_the_version() -> None:
    s = LiveState(CH)
    s.apply_snapshot(1, [entry("k", {"a": 1}, 1)], None)
    s.apply(full("k", {"b": 2}, 3))
    assert s.apply(patch("k", {"c": 3}, 2)) == []
    assert s.state["k"] == {"b": 2} and s.version == 3


def test_deletes_and_stale_pushes_cannot_resurrect_a_key() -> None:
    s = LiveState(CH)
    s.apply_snapshot(1, [entry("k", 1, 1)], None)
    assert s.apply(StateChange(CH, "k", 2, value=None)) == [StateChanged(CH, "k", None, 2)]
    assert "k" not in s.state and s.key_version("k") == 0
    assert s.apply(full("k", "stale", 2)) == []
    assert "k" not in s.state


def test_a_resubscribe_snapshot_with_the_version_applies_only_newer_keys() -> None:
    s = LiveState(CH)
    s.apply_snapshot(2, [entry("a", 1, 1), entry("b", 1, 2)], None)
    changes = s.apply_snapshot(5, [entry("b", 2, 4), entry("c", None, 5)], 2)
    assert changes == [StateChanged(CH, "b", 2, 4), StateChanged(CH, "c", None, 5)]
    assert dict(s.state) == {"a": 1, "b": 2} and s.version == 5


def test_a_snapshot_below_the_asked_version_replaces_the_state_and_announces_the_difference() -> None:
    s = LiveState(CH)
    s.apply_snapshot(7, [entry("a", 1, 1), entry("b", {"x": 1}, 7)], None)
    changes = s.apply_snapshot(2, [entry("b", {"x": 1}, 2), entry("c", 3, 2)], 7, announce=True)
    assert changes == [StateChanged(CH, "c", 3, 2), StateChanged(CH, "a", None, 2)]  # b is the same value
    assert dict(s.state) == {"b": {"x": 1}, "c": 3} and s.version == 2


def test_a_full_snapshot_replaces_the_state_and_announces_the_difference() -> None:
    """``full``: the hub could not tell the changes (deletions compacted, keys expired), so every key came."""
    s = LiveState("c")
    s.apply_snapshot(7, [entry("a", 1, 1), entry("b", {"x": 1}, 7)], None)
    changes = s.apply_snapshot(12, [entry("b", {"x": 1}, 7), entry("c", 3, 11)], 7, full=True)
    assert sorted(changes, key=lambda c: c.key) == [StateChanged("c", "a", None, 12), StateChanged("c", "c", 3, 11)]
    assert dict(s.state) == {"b": {"x": 1}, "c": 3} and s.version == 12


def test_a_push_that_is_not_msgpack_is_a_gap() -> None:
    s = LiveState(CH)
    s.apply_snapshot(1, [], None)
    assert s.apply(StateChange(CH, "k", 2, value=b"\xc1")) is None
    assert s.version == 1


def test_versions_applied_ahead_are_bounded() -> None:
    s = LiveState(CH)
    s.apply_snapshot(1, [], None)
    for v in range(3, 3 + MAX_AHEAD + 10):
        s.apply(full(f"k{v}", v, v))
    assert s.version == 1
    s.apply(full("k2", 2, 2))
    assert s.version == 2  # the oldest versions ahead were forgotten: the gap stays for a resubscribe
