"""Decoded maps <-> message classes: the part of protocol v1 both codecs share.

A codec turns frame bytes into plain values (dicts, lists, str, int...) and
hands each top-level value to this module, which validates it and builds the
message; on the way out it builds the map and the codec serialises it. The
codecs differ only in raw (de)serialisation and in how they carry ``data``.

Server side: :func:`commands_from_maps`, then :func:`message_to_map`.
Client side: :func:`command_to_map`, then :func:`messages_from_maps`.

``data`` values arrive decoded; :func:`pack_data` checks their depth and packs
them into the msgpack ``bytes`` the message classes carry.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs

from .codec import MAX_CHANNEL_LENGTH, MAX_DATA_DEPTH
from .codes import ErrorCode
from .errors import ProtocolError
from .messages import (
    ClientInfo,
    Command,
    Connect,
    ConnectResult,
    Disconnect,
    EmptyResult,
    Error,
    Ping,
    Publication,
    Publish,
    PublishResult,
    Reply,
    Result,
    ServerMessage,
    StreamPosition,
    Subscribe,
    SubscribeResult,
    Unsubscribe,
)

#: Command ids are 1..MAX_ID (uint32); replies use 0 when the id was unreadable.
MAX_ID = 2**32 - 1
#: Offsets are uint64.
MAX_OFFSET = 2**64 - 1

Map = dict[str, Any]
#: Turns a message's msgpack ``data`` bytes into what the codec puts in the map.
DataOut = Callable[[bytes], object]

_CONTAINERS = frozenset((dict, list, tuple))
_pack: Callable[[object], bytes] = msgpack.Packer().pack  # one C call, holds the GIL


# --- data --------------------------------------------------------------------


def too_deep(value: object, limit: int = MAX_DATA_DEPTH) -> bool:
    """Whether ``value`` nests containers more than ``limit`` levels deep.

    A scalar has depth 0 and ``{"a": [1]}`` depth 2. Only descends into
    containers: a scalar costs one type check.
    """
    return type(value) in _CONTAINERS and _exceeds(value, limit)


def _exceeds(container: Any, budget: int) -> bool:
    if budget <= 0:
        return True
    for item in container.values() if type(container) is dict else container:
        if type(item) in _CONTAINERS and _exceeds(item, budget - 1):
            return True
    return False


def pack_data(value: object, where: str, id: int) -> bytes:
    """Check a decoded ``data`` value and pack it into msgpack bytes."""
    if too_deep(value):
        raise ProtocolError(f"{where} is nested too deeply", id=id)
    try:
        return _pack(value)
    except (TypeError, ValueError, OverflowError):  # cannot happen for decoded values
        raise ProtocolError(f"{where} cannot be encoded", id=id) from None


# --- field readers (server side: errors carry the command id) ----------------


def check_channel(channel: object, where: str = "channel", id: int = 0) -> str:
    """Return ``channel`` if it is a valid channel name, else raise ProtocolError (BAD_REQUEST).

    1..MAX_CHANNEL_LENGTH characters, no whitespace, control or format characters.
    """
    if type(channel) is not str:
        raise ProtocolError(f"{where} must be a string", id=id)
    if not channel:
        raise ProtocolError(f"{where} must not be empty", id=id)
    if len(channel) > MAX_CHANNEL_LENGTH:
        raise ProtocolError(f"{where} is longer than {MAX_CHANNEL_LENGTH} characters", id=id)
    # isprintable() is False for control, format and separator characters
    # (every whitespace character but " "), so this forbids all whitespace.
    if not channel.isprintable() or " " in channel:
        raise ProtocolError(f"{where} must not contain whitespace or control characters", id=id)
    return channel


def _opt_str(m: Map, key: str, cmd: str, id: int) -> str | None:
    value = m.get(key)
    if value is None or value.__class__ is str:
        return value
    raise ProtocolError(f"{cmd}.{key} must be a string", id=id)


def _channel(m: Map, cmd: str, id: int) -> str:
    if "channel" not in m:
        raise ProtocolError(f"{cmd}.channel is required", id=id)
    return check_channel(m["channel"], f"{cmd}.channel", id)


def _connect(m: Map, id: int) -> Connect:
    return Connect(
        id,
        token=_opt_str(m, "token", "connect", id),
        name=_opt_str(m, "name", "connect", id),
        version=_opt_str(m, "version", "connect", id),
    )


def _subscribe(m: Map, id: int) -> Subscribe:
    channel = _channel(m, "subscribe", id)
    offset = m.get("offset")
    epoch = m.get("epoch")
    if offset is None and epoch is None:
        return Subscribe(id, channel)
    if offset is None or epoch is None:
        raise ProtocolError("subscribe.offset and subscribe.epoch go together", id=id)
    if offset.__class__ is not int or not 0 <= offset <= MAX_OFFSET:
        raise ProtocolError("subscribe.offset must be an unsigned integer", id=id)
    if epoch.__class__ is not str:
        raise ProtocolError("subscribe.epoch must be a string", id=id)
    return Subscribe(id, channel, StreamPosition(offset, epoch))


def _unsubscribe(m: Map, id: int) -> Unsubscribe:
    return Unsubscribe(id, _channel(m, "unsubscribe", id))


def _publish(m: Map, id: int) -> Publish:
    channel = _channel(m, "publish", id)
    if "data" not in m:
        raise ProtocolError("publish.data is required", id=id)
    return Publish(id, channel, pack_data(m["data"], "publish.data", id))


def _ping(m: Map, id: int) -> Ping:
    return Ping(id)


_PARSERS: dict[str, Callable[[Map, int], Command]] = {
    "connect": _connect,
    "subscribe": _subscribe,
    "unsubscribe": _unsubscribe,
    "publish": _publish,
    "ping": _ping,
}


def command_from_map(m: Map, seen: set[int] | None = None) -> Command:
    """Build one command from a decoded map; raise :class:`ProtocolError` if invalid.

    ``seen`` collects the ids of a frame so a repeated one is refused with
    ``DUPLICATE_ID``. Unknown keys are ignored.
    """
    id = m.get("id")
    if id.__class__ is not int or not 0 < id <= MAX_ID:
        raise ProtocolError(f"id must be an integer 1..{MAX_ID}")
    if seen is not None:
        if id in seen:
            raise ProtocolError("id repeats in the frame", id=id, code=ErrorCode.DUPLICATE_ID)
        seen.add(id)
    cmd = m.get("cmd")
    if cmd.__class__ is not str:
        raise ProtocolError("cmd is required" if cmd is None else "cmd must be a string", id=id)
    parse = _PARSERS.get(cmd)
    if parse is None:
        raise ProtocolError("unknown command", id=id, code=ErrorCode.UNKNOWN_COMMAND)
    return parse(m, id)


def commands_from_maps(values: Iterable[object]) -> list[Command | ProtocolError]:
    """Turn a frame's decoded top-level values into commands, in order.

    Raises :class:`ProtocolError` (id 0) if any value is not a map: the frame is
    refused as a whole. A map that is not a valid command becomes a
    :class:`ProtocolError` in its place.
    """
    values = list(values)
    for value in values:
        if value.__class__ is not dict:
            raise ProtocolError("every message must be a map")
    out: list[Command | ProtocolError] = []
    seen: set[int] = set()
    for value in values:
        try:
            out.append(command_from_map(value, seen))  # type: ignore[arg-type]  # checked above
        except ProtocolError as exc:
            out.append(exc)
    return out


# --- server messages -> maps --------------------------------------------------


def publication_to_map(pub: Publication, data: DataOut, push: bool = True) -> Map:
    """The map of a publication push (``push=False``: inside a SubscribeResult)."""
    m: Map = {"push": "pub"} if push else {}
    m["channel"] = pub.channel
    m["data"] = data(pub.data)
    m["offset"] = pub.offset
    m["epoch"] = pub.epoch
    info = pub.info
    if info is not None:
        im: Map = {"user": info.user, "client": info.client}
        if info.info is not None:
            im["info"] = data(info.info)
        m["info"] = im
    return m


def result_to_map(result: Result, data: DataOut) -> Map:
    if isinstance(result, PublishResult):
        return {"offset": result.offset, "epoch": result.epoch}
    if isinstance(result, SubscribeResult):
        m: Map = {
            "offset": result.offset,
            "epoch": result.epoch,
            "recoverable": result.recoverable,
            "recovered": result.recovered,
        }
        if result.publications:
            m["publications"] = [publication_to_map(p, data, push=False) for p in result.publications]
        return m
    if isinstance(result, ConnectResult):
        return {"client": result.client, "version": result.version, "ping": result.ping, "user": result.user}
    if isinstance(result, EmptyResult):
        return {}
    raise TypeError(f"not a result: {type(result).__name__}")


def message_to_map(message: ServerMessage, data: DataOut) -> Map:
    """The map of a reply or push; ``data`` converts embedded msgpack values."""
    if isinstance(message, Publication):
        return publication_to_map(message, data)
    if isinstance(message, Reply):
        if (message.result is None) == (message.error is None):
            raise ValueError("a Reply needs exactly one of result and error")
        if message.error is not None:
            return {"id": message.id, "error": {"code": message.error.code, "message": message.error.message}}
        assert message.result is not None
        return {"id": message.id, "result": result_to_map(message.result, data)}
    if isinstance(message, Disconnect):
        return {"push": "disconnect", "code": message.code, "reason": message.reason, "reconnect": message.reconnect}
    raise TypeError(f"not a server message: {type(message).__name__}")


# --- client side ----------------------------------------------------------------


def command_to_map(command: Command, data: DataOut) -> Map:
    """The map of a command, for a client to send."""
    if isinstance(command, Publish):
        return {"id": command.id, "cmd": "publish", "channel": command.channel, "data": data(command.data)}
    if isinstance(command, Subscribe):
        m: Map = {"id": command.id, "cmd": "subscribe", "channel": command.channel}
        if command.since is not None:
            m["offset"] = command.since.offset
            m["epoch"] = command.since.epoch
        return m
    if isinstance(command, Unsubscribe):
        return {"id": command.id, "cmd": "unsubscribe", "channel": command.channel}
    if isinstance(command, Ping):
        return {"id": command.id, "cmd": "ping"}
    if isinstance(command, Connect):
        m = {"id": command.id, "cmd": "connect"}
        for key in ("token", "name", "version"):
            if (value := getattr(command, key)) is not None:
                m[key] = value
        return m
    raise TypeError(f"not a command: {type(command).__name__}")


def _get(m: Map, key: str, kind: type[object] | tuple[type[object], ...], where: str) -> Any:
    value = m.get(key)
    if not isinstance(value, kind) or (isinstance(value, bool) and kind is not bool):
        raise ProtocolError(f"{where}.{key} has the wrong type")
    return value


def _client_data(m: Map, key: str, where: str) -> bytes:
    # No depth limit here: the server already enforced its own on what it relays.
    if key not in m:
        raise ProtocolError(f"{where}.{key} is missing")
    try:
        return _pack(m[key])
    except (TypeError, ValueError, OverflowError):
        raise ProtocolError(f"{where}.{key} cannot be encoded") from None


def publication_from_map(m: Map) -> Publication:
    info = None
    im = m.get("info")
    if im is not None:
        if not isinstance(im, dict):
            raise ProtocolError("pub.info must be a map")
        extra = _client_data(im, "info", "pub.info") if im.get("info") is not None else None
        info = ClientInfo(_get(im, "user", str, "pub.info"), _get(im, "client", str, "pub.info"), extra)
    return Publication(
        channel=_get(m, "channel", str, "pub"),
        data=_client_data(m, "data", "pub"),
        offset=_get(m, "offset", int, "pub"),
        epoch=_get(m, "epoch", str, "pub"),
        info=info,
    )


def result_from_map(m: Map) -> Result:
    """Guess a result's type from its keys; a client SDK knows it from its command."""
    if "client" in m:
        ping = _get(m, "ping", (int, float), "result")
        return ConnectResult(
            _get(m, "client", str, "result"), _get(m, "version", str, "result"), float(ping), _get(m, "user", str, "result")
        )
    if "recovered" in m:
        pubs = m.get("publications", [])
        if not isinstance(pubs, list) or not all(isinstance(p, dict) for p in pubs):
            raise ProtocolError("result.publications must be a list of maps")
        return SubscribeResult(
            _get(m, "offset", int, "result"),
            _get(m, "epoch", str, "result"),
            _get(m, "recoverable", bool, "result"),
            _get(m, "recovered", bool, "result"),
            tuple(publication_from_map(p) for p in pubs),
        )
    if "offset" in m:
        return PublishResult(_get(m, "offset", int, "result"), _get(m, "epoch", str, "result"))
    return EmptyResult()


def message_from_map(m: Map) -> ServerMessage | None:
    """Build a reply or push; None for a push type this client does not know."""
    push = m.get("push")
    if push is not None:
        if push == "pub":
            return publication_from_map(m)
        if push == "disconnect":
            return Disconnect(_get(m, "code", int, "disconnect"), _get(m, "reason", str, "disconnect"), _get(m, "reconnect", bool, "disconnect"))
        return None  # newer server: ignore unknown pushes
    id = _get(m, "id", int, "reply")
    if not 0 <= id <= MAX_ID:
        raise ProtocolError("reply.id is out of range")
    if "error" in m:
        em = _get(m, "error", dict, "reply")
        return Reply(id, error=Error(_get(em, "code", int, "error"), _get(em, "message", str, "error")))
    return Reply(id, result=result_from_map(_get(m, "result", dict, "reply")))


def messages_from_maps(values: Iterable[object]) -> list[ServerMessage]:
    """Turn a server frame's decoded values into messages; raise :class:`ProtocolError` on garbage."""
    out: list[ServerMessage] = []
    for value in values:
        if not isinstance(value, dict):
            raise ProtocolError("every message must be a map")
        message = message_from_map(value)
        if message is not None:
            out.append(message)
    return out
