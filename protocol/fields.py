"""How one field of a message travels: readers, writers, and message tables.

:mod:`protocol.wire` describes most messages as a :class:`Spec`: the message
class and its :class:`Field` s, each a wire key with a :class:`Kind` (check a
wire value and turn it into the attribute, and back). :meth:`Spec.read` builds
a message from a decoded map; :meth:`Spec.write` fills a map from a message.

Readers take ``(value, where, id)`` and raise :class:`ProtocolError` with
``where`` (e.g. ``"history.limit"``) and the command ``id`` (0 on the client
side), never echoing the value.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

import msgpack  # type: ignore[import-untyped]  # no stubs

from .errors import ProtocolError
from .limits import MAX_CHANNEL_LENGTH, MAX_DATA_DEPTH, MAX_OFFSET

Map = dict[str, Any]
#: Turns a message's msgpack ``bytes`` (data, value, patch, info) into what the
#: codec puts in the map: a raw fragment that the serialiser splices in as is.
DataOut = Callable[[bytes], object]
#: ``(wire value, where, id) -> attribute value``; raises ProtocolError.
Reader = Callable[[Any, str, int], Any]
#: ``(attribute value, data) -> wire value``.
Writer = Callable[[Any, DataOut], object]

T_co = TypeVar("T_co", covariant=True)

_packer = msgpack.Packer()
_pack: Callable[[object], bytes] = _packer.pack  # one C call, holds the GIL


# --- data ------------------------------------------------------------------------


class Pairs:
    """A msgpack map with a key that is not a string, kept as its pairs in order.

    Only the server side may publish such maps. A dict would merge keys that Python
    holds equal and msgpack does not (``1``, ``1.0`` and ``true``; ``0`` and ``false``),
    so ``{1: "a", true: "b"}`` would reach subscribers as ``{1: "b"}``: data is
    relayed as sent instead (docs/protocol.md, "data values").
    """

    __slots__ = ("items",)

    def __init__(self, items: list[tuple[Any, Any]]) -> None:
        self.items = items

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Pairs) and _same_pairs(self.items, other.items)

    def __repr__(self) -> str:
        return f"Pairs({self.items!r})"


def _same_pairs(a: list[tuple[Any, Any]], b: list[tuple[Any, Any]]) -> bool:
    return len(a) == len(b) and all(type(x[0]) is type(y[0]) and x == y for x, y in zip(a, b, strict=True))


def keep_pairs(pairs: list[tuple[Any, Any]]) -> dict[Any, Any] | Pairs:
    """``object_pairs_hook`` for msgpack from the server side: a dict while every key is a
    string (the common case), else the map's :class:`Pairs` as sent."""
    for key, _ in pairs:
        if type(key) is not str and type(key) is not bytes:
            return Pairs(pairs)
    return dict(pairs)


def _emit(value: Any, out: list[bytes]) -> None:
    t = type(value)
    if t is Pairs:
        out.append(_packer.pack_map_header(len(value.items)))
        for k, v in value.items:
            out.append(_pack(k))
            _emit(v, out)
    elif t is dict:
        out.append(_packer.pack_map_header(len(value)))
        for k, v in value.items():
            out.append(_pack(k))
            _emit(v, out)
    elif t is list or t is tuple:
        out.append(_packer.pack_array_header(len(value)))
        for v in value:
            _emit(v, out)
    else:
        out.append(_pack(value))


def pack_value(value: object) -> bytes:
    """Pack a decoded value, its :class:`Pairs` as sent; TypeError for what msgpack cannot hold."""
    try:
        return _pack(value)  # the common case: no Pairs inside
    except TypeError:
        out: list[bytes] = []
        _emit(value, out)
        return b"".join(out)


_CONTAINERS = frozenset((dict, list, tuple, Pairs))


def too_deep(value: object, limit: int = MAX_DATA_DEPTH) -> bool:
    """Whether ``value`` nests containers more than ``limit`` levels deep.

    A scalar has depth 0 and ``{"a": [1]}`` depth 2, as has ``{[1]: "a"}`` (a key nests
    as a value does). Only descends into containers: a scalar costs one type check.
    """
    return type(value) in _CONTAINERS and _exceeds(value, limit)


def _exceeds(container: Any, budget: int) -> bool:
    if budget <= 0:
        return True
    t = type(container)
    if t is Pairs:  # its keys count too: an array or a map may be a key, as deep as any value
        container = [item for pair in container.items for item in pair]
    for item in container.values() if t is dict else container:
        if type(item) in _CONTAINERS and _exceeds(item, budget - 1):
            return True
    return False


def pack_data(value: object, where: str, id: int) -> bytes:
    """Check a decoded value from a client (depth) and pack it into msgpack bytes."""
    if too_deep(value):
        raise ProtocolError(f"{where} is nested too deeply", id=id)
    try:
        return pack_value(value)
    except (TypeError, ValueError, OverflowError):  # cannot happen for decoded values
        raise ProtocolError(f"{where} cannot be encoded", id=id) from None


def pack_relayed(value: object, where: str, id: int = 0) -> bytes:
    """Pack a value the server sent (client side): no depth limit, the server enforced its own."""
    try:
        return _pack(value)
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(f"{where} cannot be encoded", id=id) from None


# --- scalar readers ----------------------------------------------------------------


#: The code points a channel name must not contain (inclusive ranges), the protocol's own list
#: (docs/protocol.md, "Channel names"): fixed, so that every Python version (whatever its Unicode
#: tables: private-use, unassigned and new emoji code points are allowed) and every SDK agree.
CHANNEL_FORBIDDEN: tuple[tuple[int, int], ...] = (
    (0x0000, 0x0020),  # C0 controls (tab, newlines...) and space
    (0x007F, 0x00A0),  # DEL, C1 controls (NEL...), no-break space
    (0x00AD, 0x00AD),  # soft hyphen
    (0x061C, 0x061C),  # Arabic letter mark
    (0x1680, 0x1680),  # Ogham space mark
    (0x180E, 0x180E),  # Mongolian vowel separator
    (0x2000, 0x200B),  # en quad .. hair space, zero-width space
    (0x200E, 0x200F),  # left-to-right and right-to-left marks
    (0x2028, 0x202F),  # line and paragraph separators, bidi embeddings and overrides, narrow no-break space
    (0x205F, 0x206F),  # medium mathematical space, word joiner, invisible operators, bidi isolates
    (0x3000, 0x3000),  # ideographic space
    (0xD800, 0xDFFF),  # surrogates (not Unicode scalar values: a lone one reaches us from a JSON escape)
    (0xFEFF, 0xFEFF),  # zero-width no-break space (BOM)
    (0xFFF9, 0xFFFB),  # interlinear annotation controls
)
_CHANNEL_FORBIDDEN = re.compile(
    "["
    + "".join(re.escape(chr(lo)) + ("-" + re.escape(chr(hi)) if hi > lo else "") for lo, hi in CHANNEL_FORBIDDEN)
    + "]"
)


def check_channel(channel: object, where: str = "channel", id: int = 0) -> str:
    """Return ``channel`` if it is a valid channel name, else raise ProtocolError (BAD_REQUEST).

    1..MAX_CHANNEL_LENGTH code points, none of them in :data:`CHANNEL_FORBIDDEN`
    (controls, whitespace, surrogates and a few invisible format characters).
    No Unicode database is consulted, so the answer is the same on every Python.
    """
    if type(channel) is not str:
        raise ProtocolError(f"{where} must be a string", id=id)
    if not channel:
        raise ProtocolError(f"{where} must not be empty", id=id)
    if len(channel) > MAX_CHANNEL_LENGTH:
        raise ProtocolError(f"{where} is longer than {MAX_CHANNEL_LENGTH} characters", id=id)
    if _CHANNEL_FORBIDDEN.search(channel) is not None:
        raise ProtocolError(f"{where} must not contain whitespace or control characters", id=id)
    return channel


def read_str(value: Any, where: str, id: int) -> str:
    if value.__class__ is str:
        return value
    raise ProtocolError(f"{where} must be a string", id=id)


def read_uint(value: Any, where: str, id: int) -> int:
    """An integer 0..2⁶⁴-1 (``bool`` is not an integer here)."""
    if value.__class__ is int and 0 <= value <= MAX_OFFSET:
        return value
    raise ProtocolError(f"{where} must be an unsigned integer", id=id)


def read_int(value: Any, where: str, id: int) -> int:
    if value.__class__ is int:
        return value
    raise ProtocolError(f"{where} must be an integer", id=id)


def read_bool(value: Any, where: str, id: int) -> bool:
    if value.__class__ is bool:
        return value
    raise ProtocolError(f"{where} must be a boolean", id=id)


def read_number(value: Any, where: str, id: int) -> float:
    if value.__class__ is float or value.__class__ is int:
        return float(value)
    raise ProtocolError(f"{where} must be a number", id=id)


def read_map(value: Any, where: str, id: int) -> Map:
    if value.__class__ is dict:
        return value
    raise ProtocolError(f"{where} must be a map", id=id)


def text(longest: int | None = None) -> Reader:
    """A reader of non-empty strings, of at most ``longest`` characters."""

    def read(value: Any, where: str, id: int) -> str:
        s = read_str(value, where, id)
        if not s:
            raise ProtocolError(f"{where} must not be empty", id=id)
        if longest is not None and len(s) > longest:
            raise ProtocolError(f"{where} is longer than {longest} characters", id=id)
        return s

    return read


# --- kinds -------------------------------------------------------------------------


def _as_is(value: object, data: DataOut) -> object:
    return value


def _data(value: bytes, data: DataOut) -> object:
    return data(value)


def _data_or_nil(value: bytes | None, data: DataOut) -> object:
    return None if value is None else data(value)


@dataclass(frozen=True, slots=True)
class Kind:
    """How one value travels: ``read`` checks a wire value, ``write`` makes one."""

    read: Reader
    write: Writer = _as_is


STR = Kind(read_str)
UINT = Kind(read_uint)
INT = Kind(read_int)
BOOL = Kind(read_bool)
NUMBER = Kind(read_number)
CHANNEL = Kind(check_channel)
#: Any value from a client, depth-checked (``publish.data``, ``state_set.value``).
VALUE = Kind(pack_data, _data)
#: Any value from the server (client side).
RELAYED = Kind(pack_relayed, _data)
#: Same, where nil stands for "none" (``None``) rather than for the value nil.
RELAYED_OR_NIL = Kind(lambda v, where, id: None if v is None else pack_relayed(v, where, id), _data_or_nil)


def list_of(kind: Kind, shortest: int = 0, longest: int | None = None) -> Kind:
    """An array of ``kind`` values, read into a tuple."""

    def read(value: Any, where: str, id: int) -> tuple[Any, ...]:
        if value.__class__ is not list:
            raise ProtocolError(f"{where} must be an array", id=id)
        if len(value) < shortest:
            detail = "must not be empty" if shortest == 1 else f"must hold at least {shortest} items"
            raise ProtocolError(f"{where} {detail}", id=id)
        if longest is not None and len(value) > longest:
            raise ProtocolError(f"{where} must hold at most {longest} items", id=id)
        return tuple(kind.read(item, where + "[]", id) for item in value)

    def write(value: tuple[Any, ...], data: DataOut) -> object:
        return [kind.write(item, data) for item in value]

    return Kind(read, write)


def dict_of(kind: Kind) -> Kind:
    """A map of string keys to ``kind`` values."""

    def read(value: Any, where: str, id: int) -> dict[str, Any]:
        items = read_map(value, where, id)
        for key in items:
            if key.__class__ is not str:
                raise ProtocolError(f"{where} keys must be strings", id=id)
        return {key: kind.read(item, where + "{}", id) for key, item in items.items()}

    def write(value: dict[str, Any], data: DataOut) -> object:
        return {key: kind.write(item, data) for key, item in value.items()}

    return Kind(read, write)


def map_of(spec: Spec[object]) -> Kind:
    """A map that is a whole message, e.g. a :class:`~protocol.messages.UserStatus`."""

    def read(value: Any, where: str, id: int) -> object:
        return spec.read(read_map(value, where, id), where, id)

    def write(value: object, data: DataOut) -> object:
        return spec.write(value, data, {})

    return Kind(read, write)


# --- messages ----------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Field:
    """One key of a message's map.

    A required field must be present (a reader may still accept nil). An
    ``optional`` one may be absent or nil, which gives the attribute its default,
    and is left out of the map when the attribute is None; with ``nil``, nil is
    a value for the reader and only absence gives the default.
    """

    key: str
    kind: Kind
    optional: bool = False
    attr: str = ""  # the message attribute, when it is not named like the key
    nil: bool = False


def opt(key: str, kind: Kind, attr: str = "") -> Field:
    return Field(key, kind, optional=True, attr=attr)


#: A rule across fields, given the attributes read: raises ProtocolError.
Check = Callable[[dict[str, Any], str, int], None]


@dataclass(frozen=True, slots=True)
class Spec(Generic[T_co]):
    """A message as a map: ``make(*prefix, **attributes)`` builds it from ``fields``."""

    make: Callable[..., T_co]
    fields: tuple[Field, ...]
    check: Check | None = None

    def read(self, m: Map, where: str, id: int = 0, prefix: tuple[object, ...] = ()) -> T_co:
        """Build the message from map ``m``: ``make(*prefix, **attributes)``.

        ``where`` (the command or push name) and ``id`` go into error messages.
        """
        attrs: dict[str, Any] = {}
        for f in self.fields:
            value = m.get(f.key)
            if value is None:
                if f.optional and not (f.nil and f.key in m):
                    continue
                if f.key not in m:
                    raise ProtocolError(f"{where}.{f.key} is required", id=id)
            attrs[f.attr or f.key] = f.kind.read(value, f"{where}.{f.key}", id)
        if self.check is not None:
            self.check(attrs, where, id)
        return self.make(*prefix, **attrs)

    def write(self, message: object, data: DataOut, m: Map) -> Map:
        """Add the fields of ``message`` to ``m`` and return it."""
        for f in self.fields:
            value = getattr(message, f.attr or f.key)
            if value is None and f.optional:
                continue
            m[f.key] = f.kind.write(value, data)
        return m
