"""The JSON codec (subprotocol ``realtime.v1.json``, text frames), built on orjson.

A frame is one or more compact JSON objects, one per line; blank lines are
ignored. ``bytes`` fields (data, value, patch, info) inside the hub are msgpack,
so they are transcoded here: JSON -> msgpack once per incoming command,
msgpack -> JSON once per outgoing message (never once per subscriber).
MessagePack binary values become base64 strings and non-string map keys become
strings: JSON has neither. :meth:`JsonCodec.from_msgpack` transcodes a whole
message the MessagePack codec encoded, by the same rules.
"""

from __future__ import annotations

import re
from base64 import b64encode
from collections.abc import Callable

import msgpack  # type: ignore[import-untyped]  # no stubs
import orjson

from .errors import ProtocolError
from .fields import too_deep
from .limits import JSON_SUBPROTOCOL, MAX_COMMANDS_PER_FRAME, MAX_OFFSET
from .messages import Command, Publication, ServerMessage
from .wire import (
    NO_RESULTS,
    Expected,
    command_to_map,
    commands_from_maps,
    message_to_map,
    messages_from_maps,
    publication_to_map,
)

__all__ = ["JsonCodec", "msgpack_to_json"]

_INT64_MIN = -(2**63)
#: The deepest nesting orjson writes (it refuses more with a TypeError); msgpack reads up to 1024.
_JSON_DEPTH = 254
# orjson reads integer literals beyond 64 bits as floats, silently; such a literal
# has at least 19 digits, so a cheap search finds the rare lines worth a closer look.
_LONG_DIGITS = re.compile(rb"\d{19}")
_TOKENS = re.compile(rb'"(?:[^"\\]|\\.)*"|(?<![\w.+\-])(-?\d{19,})(?![\w.])')


def _describe(exc: orjson.JSONDecodeError) -> str:
    text = str(exc)
    if "UTF-8" in text or "surrogate" in text:
        return "invalid UTF-8"
    if "depth" in text or "recursion" in text:
        return "JSON nested too deeply"
    return "invalid JSON"


def _check_integers(line: bytes) -> None:
    for match in _TOKENS.finditer(line):
        digits = match.group(1)
        if digits is not None and not _INT64_MIN <= int(digits) <= MAX_OFFSET:
            raise ProtocolError("integer out of 64-bit range")


def load_value(text: bytes) -> object:
    """One JSON document (an HTTP body, say) as the codec reads it: integers beyond
    64 bits are a ProtocolError, never silently turned into floats."""
    try:
        value = orjson.loads(text)
    except orjson.JSONDecodeError as exc:
        raise ProtocolError(_describe(exc)) from None
    if _LONG_DIGITS.search(text) is not None:
        _check_integers(text)
    return value


def _load_lines(frame: bytes, limit: int | None) -> list[object]:
    """Every JSON value of ``frame``, one per non-blank line, or ProtocolError."""
    values: list[object] = []
    for line in frame.split(b"\n") if b"\n" in frame else (frame,):
        if not line or line.isspace():
            continue
        if limit is not None and len(values) == limit:
            raise ProtocolError(f"more than {limit} messages in a frame")
        values.append(load_value(line))
    if not values:
        raise ProtocolError("empty frame")
    return values


# --- msgpack -> JSON ------------------------------------------------------------


def _base64(value: object) -> str:
    if isinstance(value, bytes):
        return b64encode(value).decode("ascii")
    raise TypeError


def _key(key: object) -> str:
    if isinstance(key, str):
        return key
    if isinstance(key, bytes):
        return _base64(key)
    # 1 -> "1", true -> "true", null -> "null"; an array or a map key -> its JSON text
    return orjson.dumps(key, default=_base64).decode()


def _json_object(pairs: list[tuple[object, object]]) -> dict[str, object]:
    """``object_pairs_hook``: a map's pairs in order, keys as JSON strings; two keys that
    become one string keep the last (a dict first would already have merged 1 and true)."""
    return {_key(k): v for k, v in pairs}


def _refuse_ext(code: int, data: bytes) -> object:
    raise ValueError("msgpack ext types have no JSON form")


_UNPACK_OPTIONS: dict[str, object] = {
    "raw": False,
    "strict_map_key": False,
    "ext_hook": _refuse_ext,
    "max_ext_len": 0,  # also refuses timestamps, which skip ext_hook
}


def msgpack_to_json(data: bytes) -> bytes:
    """The JSON text of one msgpack value: bin -> base64, non-string keys -> strings.

    Raises ValueError if ``data`` is not one valid msgpack value without ext types, or
    nests more than JSON can be written with (254 levels; data from clients holds 32).
    """
    try:
        value = msgpack.unpackb(data, **_UNPACK_OPTIONS)
    except TypeError:
        pass  # an array or a map as a map key, which no dict holds: the pairs below take it
    except ValueError as exc:
        raise ValueError(f"not one msgpack value: {exc}") from None
    else:
        try:  # fast path: string keys only (bin values handled by default=)
            return orjson.dumps(value, default=_base64)
        except TypeError:
            pass
    # A key that is not a string: decode again, keeping each map's pairs as sent.
    try:
        value = msgpack.unpackb(data, object_pairs_hook=_json_object, **_UNPACK_OPTIONS)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not one msgpack value: {exc}") from None
    if too_deep(value, _JSON_DEPTH):
        raise ValueError("msgpack value nested too deeply for JSON")
    return orjson.dumps(value, default=_base64)


def _fragment(data: bytes) -> orjson.Fragment:
    return orjson.Fragment(msgpack_to_json(data))


_dumps: Callable[[object], bytes] = orjson.dumps


class JsonCodec:
    """Protocol v1 over text frames of JSON objects, one per line."""

    name: str = JSON_SUBPROTOCOL
    binary: bool = False
    separator: bytes = b"\n"

    def decode_commands(self, frame: bytes) -> list[Command | ProtocolError]:
        return commands_from_maps(_load_lines(frame, MAX_COMMANDS_PER_FRAME))

    def encode(self, message: ServerMessage) -> bytes:
        """Encode one reply or push; its ``bytes`` fields must each be one valid msgpack value."""
        if type(message) is Publication:  # the hot path
            return _dumps(publication_to_map(message, _fragment))
        return _dumps(message_to_map(message, _fragment))

    def from_msgpack(self, message: bytes) -> bytes:
        """The JSON encoding of a message that :class:`MsgpackCodec` encoded: one transcode.

        Gives the same bytes as :meth:`encode` of the message. Raises ValueError
        if ``message`` is not one msgpack value without ext types.
        """
        return msgpack_to_json(message)

    def encode_command(self, command: Command) -> bytes:
        return _dumps(command_to_map(command, _fragment))

    def decode_messages(self, frame: bytes, expected: Expected = NO_RESULTS) -> list[ServerMessage]:
        return messages_from_maps(_load_lines(frame, None), expected)
