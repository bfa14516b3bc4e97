"""The MessagePack codec (subprotocol ``realtime.v1.msgpack``, binary frames).

A frame is one or more concatenated MessagePack maps. ``data`` travels as the
msgpack bytes the messages already hold: :meth:`MsgpackCodec.encode` splices
them into the output without decoding them, so a publication costs one short
byte join, done once per node and written unchanged to every subscriber.
"""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs

from .codec import MAX_COMMANDS_PER_FRAME, MSGPACK_SUBPROTOCOL
from .errors import ProtocolError
from .messages import Command, Publication, Publish, Reply, ServerMessage, SubscribeResult
from .wire import command_to_map, commands_from_maps, message_to_map, messages_from_maps

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


def _unpack_data(data: bytes) -> object:
    return msgpack.unpackb(data, raw=False, strict_map_key=False)


# Constant pieces, packed once. Key order follows docs/protocol.md.
_K = {k: _pack(k) for k in ("id", "cmd", "channel", "data", "offset", "epoch", "info", "user", "client", "result")}
_PUB_HEAD = {  # (push, has info) -> map header + leading keys up to the channel value
    (True, False): b"\x85" + _pack("push") + _pack("pub") + _K["channel"],
    (True, True): b"\x86" + _pack("push") + _pack("pub") + _K["channel"],
    (False, False): b"\x84" + _K["channel"],
    (False, True): b"\x85" + _K["channel"],
}
_INFO2 = _K["info"] + b"\x82" + _K["user"]
_INFO3 = _K["info"] + b"\x83" + _K["user"]
_PUB_TAIL = (_K["data"], _K["offset"], _K["epoch"])
_SUB_HEAD = b"\x82" + _K["id"]
_SUB_RESULT = _K["result"] + b"\x85" + _K["offset"]
_SUB_FLAGS = {
    (r, v): _pack("recoverable") + _pack(r) + _pack("recovered") + _pack(v) + _pack("publications")
    for r in (False, True)
    for v in (False, True)
}
_PUBLISH_HEAD = b"\x84" + _K["id"]
_PUBLISH_MID = _K["cmd"] + _pack("publish") + _K["channel"]


def _publication(pub: Publication, push: bool = True) -> bytes:
    info = pub.info
    k_data, k_offset, k_epoch = _PUB_TAIL
    if info is None:
        return b"".join(
            (_PUB_HEAD[push, False], _pack(pub.channel), k_data, pub.data, k_offset, _pack(pub.offset), k_epoch, _pack(pub.epoch))
        )
    parts = [
        _PUB_HEAD[push, True], _pack(pub.channel), k_data, pub.data, k_offset, _pack(pub.offset), k_epoch, _pack(pub.epoch),
        _INFO2 if info.info is None else _INFO3, _pack(info.user), _K["client"], _pack(info.client),
    ]  # fmt: skip
    if info.info is not None:
        parts += (_K["info"], info.info)
    return b"".join(parts)


def _subscribe_reply(id: int, result: SubscribeResult) -> bytes:
    pubs = result.publications
    parts = [
        _SUB_HEAD, _pack(id), _SUB_RESULT, _pack(result.offset), _K["epoch"], _pack(result.epoch),
        _SUB_FLAGS[result.recoverable, result.recovered], _packer.pack_array_header(len(pubs)),
    ]  # fmt: skip
    parts += [_publication(p, push=False) for p in pubs]
    return b"".join(parts)


class MsgpackCodec:
    """Protocol v1 over binary frames of concatenated MessagePack maps."""

    name: str = MSGPACK_SUBPROTOCOL
    binary: bool = True
    separator: bytes = b""

    def decode_commands(self, frame: bytes) -> list[Command | ProtocolError]:
        return commands_from_maps(_unpack_all(frame, server=True))

    def encode(self, message: ServerMessage) -> bytes:
        """Encode one reply or push; ``data`` bytes must each be one valid msgpack value."""
        if type(message) is Publication:
            return _publication(message)
        if type(message) is Reply:
            result = message.result
            if type(result) is SubscribeResult and result.publications:
                return _subscribe_reply(message.id, result)
        return _pack(message_to_map(message, _unpack_data))

    def encode_command(self, command: Command) -> bytes:
        if type(command) is Publish:
            return b"".join((_PUBLISH_HEAD, _pack(command.id), _PUBLISH_MID, _pack(command.channel), _K["data"], command.data))
        return _pack(command_to_map(command, _unpack_data))

    def decode_messages(self, frame: bytes) -> list[ServerMessage]:
        return messages_from_maps(_unpack_all(frame, server=False))
