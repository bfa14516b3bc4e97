"""JSON Merge Patch (RFC 7386) on msgpack-decoded values: :func:`apply` and :func:`diff`.

Live channels (``handlers.live``) send a key's change as a merge patch when it
is smaller than the new value. Values are msgpack, decoded with
``msgpack.unpackb(raw=False)``: maps may have ``bytes`` keys next to ``str``
keys, and values include ``bytes``, which JSON libraries (``jsonpatch``,
``json-merge-patch``) do not handle; their JSON round trip would also turn
``bytes`` into text. RFC 7386 is twenty lines, so it is written here rather
than bent out of a JSON library.

Semantics, from the RFC: a patch that is not a map replaces the target; a map
patch merges key by key, nil removing a key. Limitation: since nil inside a
patch means "remove", no patch can set a map member to nil. :func:`diff`
raises :class:`Inexpressible` then, and callers send the full value instead.
Arrays are replaced whole, never merged. Pure: no I/O.
"""

from __future__ import annotations

from typing import Any

__all__ = ["Inexpressible", "apply", "diff"]


class Inexpressible(ValueError):
    """No merge patch turns the old value into the new one (a map member is nil)."""


def apply(target: Any, patch: Any) -> Any:
    """The result of applying merge ``patch`` to ``target`` (RFC 7386 section 2).

    Neither argument is modified; untouched sub-values are shared with ``target``.
    """
    if type(patch) is not dict:
        return patch
    result = dict(target) if type(target) is dict else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = apply(result.get(key), value)
    return result


def diff(old: Any, new: Any) -> Any:
    """A merge patch that turns ``old`` into ``new``: ``apply(old, diff(old, new)) == new``.

    Only changed members are in it (recursively for maps). Equality is strict,
    as msgpack sees it: ``1``, ``1.0`` and ``True`` differ. Raises
    :class:`Inexpressible` when ``new`` has a nil map member the patch would
    have to set.
    """
    if type(new) is not dict:
        return new
    if type(old) is not dict:
        old = {}  # a map patch applied to a non-map starts from an empty map
    patch: dict[Any, Any] = {}
    for key in old:
        if key not in new:
            patch[key] = None
    for key, value in new.items():
        if key in old and same(old[key], value):
            continue
        if value is None:
            raise Inexpressible("a merge patch cannot set a map member to nil")
        patch[key] = diff(old.get(key), value)
    return patch


def same(a: Any, b: Any) -> bool:
    """Strict equality of decoded msgpack values: types must match too (``1 != 1.0 != True``)."""
    if type(a) is not type(b):
        return False
    if type(a) is dict:
        return len(a) == len(b) and all(k in b and same(v, b[k]) for k, v in a.items())
    if type(a) is list:
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b))
    return bool(a == b)
