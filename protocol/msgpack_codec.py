"""The MessagePack codec (subprotocol ``realtime.v1.msgpack``, binary frames).

A frame is one or more concatenated MessagePack maps. ``bytes`` fields (data,
value, patch, info) travel as the msgpack bytes the messages already hold:
:meth:`MsgpackCodec.encode` splices them into the output without decoding them,
so a publication costs one short byte join, done once per node and written
unchanged to every subscriber.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs

from .errors import ProtocolError
from .limits import MAX_COMMANDS_PER_FRAME, MSGPACK_SUBPROTOCOL
from .messages import (
    Command,
    Connect,
    HistoryResult,
    Join,
    PresenceResult,
    Publication,
    Publish,
    Reply,
    Rpc,
    RpcResult,
    ServerMessage,
    StateChange,
    StatePatch,
    StateSet,
    SubscribeResult,
)
from .wire import NO_RESULTS, Expected, Map, command_to_map, commands_from_maps, message_to_map, messages_from_maps

__all__ = ["MsgpackCodec"]

_packer = msgpack.Packer()
_pack: Callable[[object], bytes] = _packer.pack  # autoreset: returns the bytes of one value


class _ExtRefused(ValueError):
    pass


def _refuse_ext(code: int, data: bytes) -> object:
    raise _ExtRefused


def _describe(exc: Exception) -> str:
    """A short reason for a decode failure, never quoting the peer's bytes."""
    if isinstance(exc, msgpack.StackError):
        return "msgpack nested too deeply"
    if isinstance(exc, msgpack.FormatError):
        return "invalid msgpack"
    if isinstance(exc, UnicodeDecodeError):
        return "invalid UTF-8 in a string"
    if isinstance(exc, _ExtRefused) or "max_ext_len" in str(exc):
        return "msgpack ext types are not allowed"
    text = str(exc)
    if "map key" in text:
        return "map keys must be strings"
    if "incomplete" in text or "exceeds max_" in text:
        return "truncated msgpack"
    return "invalid msgpack"


# The server side uses strict map keys (str or bin only, against hash flooding)
# and refuses ext types (max_ext_len=0 also catches timestamps, which skip
# ext_hook); the client side trusts the server more.
_SERVER_OPTIONS: dict[str, Any] = {"raw": False, "ext_hook": _refuse_ext, "max_ext_len": 0}
_CLIENT_OPTIONS: dict[str, Any] = {"raw": False, "strict_map_key": False}
_unpackb_server = partial(msgpack.unpackb, **_SERVER_OPTIONS)
_unpackb_client = partial(msgpack.unpackb, **_CLIENT_OPTIONS)


def _unpack_all(frame: bytes, server: bool) -> list[object]:
    """Every top-level value of ``frame``, or ProtocolError if any byte is wrong."""
    if not frame:
        raise ProtocolError("empty frame")
    try:
        # One message per frame is the common case: unpackb is the fastest path.
        return [(_unpackb_server if server else _unpackb_client)(frame)]
    except msgpack.ExtraData as extra:
        values = [extra.unpacked]
        rest = extra.extra
    except (ValueError, TypeError) as exc:
        raise ProtocolError(_describe(exc)) from None
    # max_buffer_size also caps every length in a header: no huge preallocation.
    options = _SERVER_OPTIONS if server else _CLIENT_OPTIONS
    unpacker = msgpack.Unpacker(None, max_buffer_size=len(rest), **options)
    unpacker.feed(rest)
    try:
        for value in unpacker:
            values.append(value)
            if server and len(values) > MAX_COMMANDS_PER_FRAME:
                raise ProtocolError(f"more than {MAX_COMMANDS_PER_FRAME} messages in a frame")
    except ProtocolError:
        raise
    except (ValueError, TypeError) as exc:
        raise ProtocolError(_describe(exc)) from None
    if unpacker.tell() != len(rest):
        raise ProtocolError("truncated msgpack")
    return values


class _Raw:
    """One msgpack value, already encoded: :func:`_splice` copies it into the output."""

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data


_WALK = frozenset((_Raw, dict, list))  # what _emit looks into; it packs the rest in one call


def _emit(value: Any, out: list[bytes]) -> None:
    """Append the msgpack encoding of ``value`` to ``out``, copying each _Raw's bytes."""
    t = type(value)
    if t is _Raw:
        out.append(value.data)
    elif t is dict:
        out.append(_packer.pack_map_header(len(value)))
        for k, v in value.items():
            out.append(_pack(k))
            if type(v) in _WALK:
                _emit(v, out)
            else:
                out.append(_pack(v))
    elif t is list:
        out.append(_packer.pack_array_header(len(value)))
        for v in value:
            if type(v) in _WALK:
                _emit(v, out)
            else:
                out.append(_pack(v))
    else:
        out.append(_pack(value))


def _splice(value: Map) -> bytes:
    """Pack a map that holds :class:`_Raw` values, copying their bytes unchanged."""
    out: list[bytes] = []
    _emit(value, out)
    return b"".join(out)


def _always(message: object) -> bool:
    return True


#: Whether a message's map holds msgpack bytes (a _Raw) for :func:`_splice`, by
#: type; any other map packs in one C call (where a _Raw would raise TypeError).
_HOLDS_BYTES: dict[type, Callable[[Any], bool]] = {
    Join: lambda join: join.info is not None,
    StateChange: _always,
    SubscribeResult: lambda result: bool(result.publications or result.state),
    HistoryResult: _always,  # publications, even none, are one spliced array
    PresenceResult: _always,
    Publish: _always,
    StateSet: _always,
    StatePatch: _always,
    Connect: lambda connect: connect.data is not None,
    Rpc: _always,
    RpcResult: _always,
}


# Constant pieces, packed once. Key order follows wire.publication_to_map.
_K = {k: _pack(k) for k in ("id", "cmd", "channel", "data", "offset", "epoch", "info", "user", "client", "mid", "time")}
_PUB_HEAD = {  # (push, has info, has mid) -> map header + leading keys up to the channel value
    (push, info, mid): bytes((0x80 | (4 + push + info + 2 * mid),))
    + (_pack("push") + _pack("pub") if push else b"")
    + _K["channel"]
    for push in (False, True)
    for info in (False, True)
    for mid in (False, True)
}
_PLAIN_HEAD = {push: _PUB_HEAD[push, False, False] for push in (False, True)}  # by push
_INFO_HEAD = {push: _PUB_HEAD[push, True, False] for push in (False, True)}
_INFO2 = _K["info"] + b"\x82" + _K["user"]
_INFO3 = _K["info"] + b"\x83" + _K["user"]
_PUB_TAIL = (_K["data"], _K["offset"], _K["epoch"])
_PUBLISH_HEAD = b"\x84" + _K["id"]
_PUBLISH_MID = _K["cmd"] + _pack("publish") + _K["channel"]


def _publication(pub: Publication, push: bool = True) -> bytes:
    info = pub.info
    k_data, k_offset, k_epoch = _PUB_TAIL
    if pub.mid:
        return _chat_publication(pub, push)
    if info is None:
        return b"".join(
            (
                _PLAIN_HEAD[push],
                _pack(pub.channel),
                k_data,
                pub.data,
                k_offset,
                _pack(pub.offset),
                k_epoch,
                _pack(pub.epoch),
            )
        )
    parts = [
        _INFO_HEAD[push], _pack(pub.channel), k_data, pub.data, k_offset, _pack(pub.offset), k_epoch, _pack(pub.epoch),
        _INFO2 if info.info is None else _INFO3, _pack(info.user), _K["client"], _pack(info.client),
    ]  # fmt: skip
    if info.info is not None:
        parts += (_K["info"], info.info)
    return b"".join(parts)


def _chat_publication(pub: Publication, push: bool) -> bytes:
    """A publication with ``mid`` and ``time`` (chat channels)."""
    info = pub.info
    k_data, k_offset, k_epoch = _PUB_TAIL
    parts = [
        _PUB_HEAD[push, info is not None, True], _pack(pub.channel),
        k_data, pub.data, k_offset, _pack(pub.offset), k_epoch, _pack(pub.epoch),
        _K["mid"], _pack(pub.mid), _K["time"], _pack(pub.time),
    ]  # fmt: skip
    if info is not None:
        parts += (_INFO2 if info.info is None else _INFO3, _pack(info.user), _K["client"], _pack(info.client))
        if info.info is not None:
            parts += (_K["info"], info.info)
    return b"".join(parts)


def _raw_publications(pubs: tuple[Publication, ...]) -> _Raw:
    """The array of publications inside a result, encoded at once."""
    return _Raw(_packer.pack_array_header(len(pubs)) + b"".join([_publication(p, False) for p in pubs]))


class MsgpackCodec:
    """Protocol v1 over binary frames of concatenated MessagePack maps."""

    name: str = MSGPACK_SUBPROTOCOL
    binary: bool = True
    separator: bytes = b""

    def decode_commands(self, frame: bytes) -> list[Command | ProtocolError]:
        return commands_from_maps(_unpack_all(frame, server=True))

    def encode(self, message: ServerMessage) -> bytes:
        """Encode one reply or push; its ``bytes`` fields must each be one valid msgpack value."""
        if type(message) is Publication:
            return _publication(message)
        m = message_to_map(message, _Raw, _raw_publications)
        inner = message.result if type(message) is Reply else message
        holds_bytes = _HOLDS_BYTES.get(type(inner))
        return _splice(m) if holds_bytes is not None and holds_bytes(inner) else _pack(m)

    def from_msgpack(self, message: bytes) -> bytes:
        """``message`` itself: it already is this codec's encoding."""
        return message

    def encode_command(self, command: Command) -> bytes:
        if type(command) is Publish and command.key is None:
            return b"".join(
                (_PUBLISH_HEAD, _pack(command.id), _PUBLISH_MID, _pack(command.channel), _K["data"], command.data)
            )
        m = command_to_map(command, _Raw)
        holds_bytes = _HOLDS_BYTES.get(type(command))
        return _splice(m) if holds_bytes is not None and holds_bytes(command) else _pack(m)

    def decode_messages(self, frame: bytes, expected: Expected = NO_RESULTS) -> list[ServerMessage]:
        return messages_from_maps(_unpack_all(frame, server=False), expected)
