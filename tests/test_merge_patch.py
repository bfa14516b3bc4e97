"""RFC 7386 on decoded msgpack values: the RFC's own examples, and diff/apply round trips."""

from __future__ import annotations

import copy
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from protocol.merge_patch import Inexpressible, apply, diff, same

# RFC 7386, Appendix A: (original, patch, result).
APPENDIX_A: list[tuple[Any, Any, Any]] = [
    ({"a": "b"}, {"a": "c"}, {"a": "c"}),
    ({"a": "b"}, {"b": "c"}, {"a": "b", "b": "c"}),
    ({"a": "b"}, {"a": None}, {}),
    ({"a": "b", "b": "c"}, {"a": None}, {"b": "c"}),
    ({"a": ["b"]}, {"a": "c"}, {"a": "c"}),
    ({"a": "c"}, {"a": ["b"]}, {"a": ["b"]}),
    ({"a": {"b": "c"}}, {"a": {"b": "d", "c": None}}, {"a": {"b": "d"}}),
    ({"a": [{"b": "c"}]}, {"a": [1]}, {"a": [1]}),
    (["a", "b"], ["c", "d"], ["c", "d"]),
    ({"a": "b"}, ["c"], ["c"]),
    ({"a": "foo"}, None, None),
    ({"a": "foo"}, "bar", "bar"),
    ({"e": None}, {"a": 1}, {"e": None, "a": 1}),
    ([1, 2], {"a": "b", "c": None}, {"a": "b"}),
    ({}, {"a": {"bb": {"ccc": None}}}, {"a": {"bb": {}}}),
]

# RFC 7386, section 3.
SECTION_3 = (
    {"title": "Goodbye!", "author": {"givenName": "John", "familyName": "Doe"}, "tags": ["example", "sample"], "content": "This will be unchanged"},
    {"title": "Hello!", "phoneNumber": "+01-123-456-7890", "author": {"familyName": None}, "tags": ["example"]},
    {"title": "Hello!", "author": {"givenName": "John"}, "tags": ["example"], "content": "This will be unchanged", "phoneNumber": "+01-123-456-7890"},
)  # fmt: skip


@pytest.mark.parametrize(("target", "patch", "result"), [*APPENDIX_A, SECTION_3])
def test_rfc_examples(target: Any, patch: Any, result: Any) -> None:
    before = copy.deepcopy(target)
    assert apply(target, patch) == result
    assert target == before  # not modified


PAIRS: list[tuple[Any, Any]] = [
    ({"a": 1, "b": {"c": [1, 2], "d": "x"}}, {"a": 1, "b": {"c": [1, 2, 3]}, "e": b"\x00\xff"}),
    ({"a": 1}, {"a": 1.0}),  # int -> float is a change
    ({"a": 1}, {"a": True}),  # int -> bool too
    ({"a": {"b": 1}}, {"a": 5}),
    ({"a": 5}, {"a": {"b": {"c": 1}}}),
    ({b"bin": 1, "str": 2}, {b"bin": 2, "str": 2}),  # bytes keys next to str keys
    ({"a": None, "b": 1}, {"a": None, "b": 2}),  # an unchanged nil member stays
    ({"a": None}, {}),
    ("scalar", {"a": [None]}),  # nil inside an array is fine: arrays are replaced whole
    ({"a": 1}, [1, 2]),
    ({"a": 1}, None),
    ({}, {}),
    ({"x": list(range(10)), "y": {"z": {"w": "deep"}}}, {"x": list(range(10)), "y": {"z": {"w": "deeper", "v": 0}}}),
]


@pytest.mark.parametrize(("old", "new"), PAIRS)
def test_diff_then_apply_round_trip(old: Any, new: Any) -> None:
    patch = diff(old, new)
    assert same(apply(old, patch), new)
    # Also through msgpack, as the hub sends it.
    wire = msgpack.unpackb(msgpack.packb(patch), raw=False, strict_map_key=False)
    assert same(apply(old, wire), new)


def test_diff_holds_only_what_changed() -> None:
    old = {"big": "x" * 1000, "n": 1, "gone": True, "nested": {"keep": 1, "change": 2}}
    new = {"big": "x" * 1000, "n": 2, "nested": {"keep": 1, "change": 3}}
    assert diff(old, new) == {"n": 2, "gone": None, "nested": {"change": 3}}
    assert diff(new, new) == {}


@pytest.mark.parametrize(("old", "new"), [({}, {"a": None}), ({"a": 1}, {"a": None}), ({"a": 1}, {"a": {"b": None}})])
def test_nil_members_cannot_be_set_by_a_patch(old: Any, new: Any) -> None:
    with pytest.raises(Inexpressible):
        diff(old, new)


def test_same_is_strict() -> None:
    assert same({"a": [1, {"b": b"x"}]}, {"a": [1, {"b": b"x"}]})
    assert not same(1, 1.0) and not same(1, True) and not same("a", b"a")
    assert not same({"a": 1}, {"a": 1, "b": 2}) and not same([1], [1, 2])
