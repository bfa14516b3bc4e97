"""Decoded maps <-> message classes: the part of protocol v1 both codecs share.

A codec turns frame bytes into plain values (dicts, lists, str, int...) and
hands each top-level value to this module, which validates it and builds the
message; on the way out it builds the map and the codec serialises it. The
codecs differ only in raw (de)serialisation and in how they carry ``bytes``
fields (data, value, patch, info: msgpack values inside the hub).

Server side: :func:`commands_from_maps`, then :func:`message_to_map`.
Client side: :func:`command_to_map`, then :func:`messages_from_maps`, told the
result type each pending command id expects (:data:`RESULT_OF`): a reply does
not carry its result's type.

Publish, subscribe and publications are written out by hand (publish decode
and publication encode are the hot paths); every other message is a row of a
table (:data:`COMMANDS`, :data:`PUSHES`, :data:`RESULTS`) of
:class:`~protocol.fields.Spec` s.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from types import MappingProxyType
from typing import Any

from .codes import ErrorCode
from .errors import ProtocolError
from .fields import (
    BOOL,
    CHANNEL,
    INT,
    NUMBER,
    RELAYED,
    RELAYED_OR_NIL,
    STR,
    UINT,
    VALUE,
    DataOut,
    Field,
    Kind,
    Map,
    Spec,
    check_channel,
    dict_of,
    list_of,
    map_of,
    opt,
    pack_data,
    read_map,
    read_str,
    read_uint,
    text,
    too_deep,
)
from .limits import (
    MAX_ID,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_OFFSET,
    MAX_RPC_METHOD_LENGTH,
    MAX_STATE_KEY_LENGTH,
    MAX_STATUS_USERS,
)
from .messages import (
    ClientInfo,
    Command,
    Connect,
    ConnectResult,
    Disconnect,
    EmptyResult,
    Error,
    History,
    HistoryResult,
    Join,
    Leave,
    Ping,
    PresenceMember,
    PresenceQuery,
    PresenceResult,
    PresenceStatsQuery,
    PresenceStatsResult,
    Publication,
    Publish,
    PublishResult,
    Push,
    Read,
    ReadNotice,
    ReadResult,
    Receipts,
    ReceiptsResult,
    Refresh,
    RefreshResult,
    Reply,
    Result,
    Rpc,
    RpcResult,
    ServerMessage,
    StateChange,
    StateEntry,
    StatePatch,
    StateResult,
    StateSet,
    StatusNotice,
    StatusQuery,
    StatusResult,
    StreamPosition,
    Subscribe,
    SubscribeResult,
    Typing,
    TypingNotice,
    Unsubscribe,
    Unsubscribed,
    UserStatus,
)

__all__ = [
    "COMMANDS",
    "COMMAND_NAMES",
    "MAX_ID",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_OFFSET",
    "MAX_STATE_KEY_LENGTH",
    "MAX_STATUS_USERS",
    "NO_RESULTS",
    "PUSHES",
    "RESULTS",
    "RESULT_OF",
    "DataOut",
    "Expected",
    "Map",
    "PubOut",
    "check_channel",
    "command_from_map",
    "command_to_map",
    "commands_from_maps",
    "message_from_map",
    "message_to_map",
    "messages_from_maps",
    "pack_data",
    "publication_from_map",
    "publication_to_map",
    "result_from_map",
    "result_to_map",
    "too_deep",
]

#: Turns the publications inside a result into what the codec puts in the map
#: (the MessagePack codec splices a pre-encoded array).
PubOut = Callable[[tuple[Publication, ...]], object]


# --- commands ------------------------------------------------------------------


def _before_or_after(attrs: dict[str, Any], where: str, id: int) -> None:
    if "before" in attrs and "after" in attrs:
        raise ProtocolError(f"{where}.before and {where}.after exclude each other", id=id)


_CHANNEL = Field("channel", CHANNEL)
_STATE_KEY = Field("key", Kind(text(MAX_STATE_KEY_LENGTH)))
_VERSION = opt("version", UINT)
_PATCH = Kind(lambda v, where, id: pack_data(read_map(v, where, id), where, id), VALUE.write)  # a map value
_USERS = list_of(Kind(text()), shortest=1, longest=MAX_STATUS_USERS)
_read_idempotency_key = text(MAX_IDEMPOTENCY_KEY_LENGTH)

#: The commands but publish and subscribe (written out below), by ``cmd``.
COMMANDS: dict[str, Spec[Command]] = {
    "connect": Spec(Connect, (opt("token", STR), opt("name", STR), opt("version", STR), opt("data", VALUE))),
    "unsubscribe": Spec(Unsubscribe, (_CHANNEL,)),
    "ping": Spec(Ping, ()),
    "refresh": Spec(Refresh, (Field("token", STR),)),
    "history": Spec(History, (_CHANNEL, opt("limit", UINT), opt("before", UINT), opt("after", UINT)), _before_or_after),
    "typing": Spec(Typing, (_CHANNEL, opt("typing", BOOL))),
    "read": Spec(Read, (_CHANNEL, Field("offset", UINT))),
    "receipts": Spec(Receipts, (_CHANNEL,)),
    "presence": Spec(PresenceQuery, (_CHANNEL,)),
    "presence_stats": Spec(PresenceStatsQuery, (_CHANNEL,)),
    # value: a required key whose nil is a value (it deletes the key)
    "state_set": Spec(StateSet, (_CHANNEL, _STATE_KEY, Field("value", VALUE), _VERSION)),
    "state_patch": Spec(StatePatch, (_CHANNEL, _STATE_KEY, Field("patch", _PATCH), _VERSION)),
    "status": Spec(StatusQuery, (Field("users", _USERS),)),
    # data: any value, nil included; absent is nil
    "rpc": Spec(
        Rpc, (Field("method", Kind(text(MAX_RPC_METHOD_LENGTH))), Field("data", VALUE, optional=True, nil=True))
    ),
}
_COMMAND_NAMES: dict[object, str] = {spec.make: name for name, spec in COMMANDS.items()}


def _channel(m: Map, cmd: str, id: int) -> str:
    if "channel" not in m:
        raise ProtocolError(f"{cmd}.channel is required", id=id)
    return check_channel(m["channel"], f"{cmd}.channel", id)


def _publish(m: Map, id: int) -> Publish:
    channel = _channel(m, "publish", id)
    if "data" not in m:
        raise ProtocolError("publish.data is required", id=id)
    key = m.get("key")
    if key is not None:
        key = _read_idempotency_key(key, "publish.key", id)
    return Publish(id, channel, pack_data(m["data"], "publish.data", id), key)


def _subscribe(m: Map, id: int) -> Subscribe:
    channel = _channel(m, "subscribe", id)
    offset = m.get("offset")
    epoch = m.get("epoch")
    since = None
    if offset is not None or epoch is not None:
        if offset is None or epoch is None:
            raise ProtocolError("subscribe.offset and subscribe.epoch go together", id=id)
        since = StreamPosition(read_uint(offset, "subscribe.offset", id), read_str(epoch, "subscribe.epoch", id))
    token = m.get("token")
    version = m.get("version")
    return Subscribe(
        id,
        channel,
        since,
        None if token is None else read_str(token, "subscribe.token", id),
        None if version is None else read_uint(version, "subscribe.version", id),
    )


_PARSERS: dict[str, Callable[[Map, int], Command]] = {"publish": _publish, "subscribe": _subscribe}
#: Every command type's ``cmd`` name (metrics label commands with it).
COMMAND_NAMES: Mapping[type, str] = MappingProxyType({**_COMMAND_NAMES, Publish: "publish", Subscribe: "subscribe"})  # type: ignore[dict-item]


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
    if parse is not None:
        return parse(m, id)
    spec = COMMANDS.get(cmd)
    if spec is None:
        raise ProtocolError("unknown command", id=id, code=ErrorCode.UNKNOWN_COMMAND)
    return spec.read(m, cmd, id, (id,))


def commands_from_maps(values: Iterable[object]) -> list[Command | ProtocolError]:
    """Turn a frame's decoded top-level values into commands, in order.

    Raises :class:`ProtocolError` (id 0) if any value is not a map: the frame is
    refused as a whole. A map that is not a valid command becomes a
    :class:`ProtocolError` in its place.
    """
    if values.__class__ is not list:
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


def command_to_map(command: Command, data: DataOut) -> Map:
    """The map of a command, for a client to send."""
    if type(command) is Publish:
        m: Map = {"id": command.id, "cmd": "publish", "channel": command.channel, "data": data(command.data)}
        if command.key is not None:
            m["key"] = command.key
        return m
    if type(command) is Subscribe:
        m = {"id": command.id, "cmd": "subscribe", "channel": command.channel}
        if command.since is not None:
            m["offset"] = command.since.offset
            m["epoch"] = command.since.epoch
        if command.token is not None:
            m["token"] = command.token
        if command.version is not None:
            m["version"] = command.version
        return m
    name = _COMMAND_NAMES.get(type(command))
    if name is None:
        raise TypeError(f"not a command: {type(command).__name__}")
    return COMMANDS[name].write(command, data, {"id": command.id, "cmd": name})


# --- pushes and results: shared parts ------------------------------------------------

_USER = Field("user", STR)
USER_STATUS: Spec[UserStatus] = Spec(UserStatus, (_USER, Field("online", BOOL), Field("last_seen", INT)))
STATE_ENTRY: Spec[StateEntry] = Spec(
    StateEntry, (Field("key", STR), Field("value", RELAYED_OR_NIL), Field("version", UINT))
)
CLIENT_INFO: Spec[ClientInfo] = Spec(ClientInfo, (_USER, Field("client", STR), opt("info", RELAYED)))
#: Reads a publication map (a push, or inside a result); publication_to_map writes one.
PUBLICATION: Spec[Publication] = Spec(
    Publication,
    (
        Field("channel", STR),
        Field("data", RELAYED),
        Field("offset", UINT),
        Field("epoch", STR),
        opt("mid", STR),
        opt("time", INT),
        opt("info", map_of(CLIENT_INFO)),
    ),
)
_PUBLICATIONS = list_of(map_of(PUBLICATION))  # read only: written through a PubOut


def publication_to_map(pub: Publication, data: DataOut, push: bool = True) -> Map:
    """The map of a publication push (``push=False``: inside a result).

    Keys in this order; the MessagePack codec splices the same map by hand.
    """
    if push:
        m: Map = {
            "push": "pub",
            "channel": pub.channel,
            "data": data(pub.data),
            "offset": pub.offset,
            "epoch": pub.epoch,
        }
    else:
        m = {"channel": pub.channel, "data": data(pub.data), "offset": pub.offset, "epoch": pub.epoch}
    if pub.mid:
        m["mid"] = pub.mid
        m["time"] = pub.time
    info = pub.info
    if info is not None:
        im: Map = {"user": info.user, "client": info.client}
        if info.info is not None:
            im["info"] = data(info.info)
        m["info"] = im
    return m


def publication_from_map(m: Map) -> Publication:
    return PUBLICATION.read(m, "pub")


# --- pushes ----------------------------------------------------------------------------


def _value_or_patch(attrs: dict[str, Any], where: str, id: int) -> None:
    if ("value" in attrs) == ("patch" in attrs):
        raise ProtocolError(f"{where} needs exactly one of value and patch", id=id)


_PUSH_CHANNEL = Field("channel", STR)

#: Pushes by ``push`` name: clients read them all with these specs, and the
#: server writes all but ``pub`` (written by hand) with them. ``status`` is
#: apart: its map is flat, a channel and the fields of a UserStatus.
PUSHES: dict[str, Spec[Push]] = {
    "pub": PUBLICATION,
    "disconnect": Spec(
        Disconnect, (Field("code", INT), Field("reason", STR), Field("reconnect", BOOL), opt("retry_after", UINT))
    ),
    "join": Spec(Join, (_PUSH_CHANNEL, _USER, opt("info", RELAYED))),
    "leave": Spec(Leave, (_PUSH_CHANNEL, _USER)),
    "typing": Spec(TypingNotice, (_PUSH_CHANNEL, _USER, Field("typing", BOOL), Field("timeout", NUMBER))),
    "read": Spec(ReadNotice, (_PUSH_CHANNEL, _USER, Field("offset", UINT))),
    "unsub": Spec(Unsubscribed, (_PUSH_CHANNEL, Field("reason", STR))),
    "state": Spec(
        StateChange,
        (
            _PUSH_CHANNEL,
            Field("key", STR),
            Field("version", UINT),
            Field("value", RELAYED, optional=True, nil=True),
            opt("patch", RELAYED),
        ),
        _value_or_patch,
    ),
}
_PUSH_NAMES: dict[object, str] = {spec.make: name for name, spec in PUSHES.items()}


def _status_notice_to_map(notice: StatusNotice, data: DataOut) -> Map:
    return USER_STATUS.write(notice.status, data, {"push": "status", "channel": notice.channel})


def _status_notice_from_map(m: Map) -> StatusNotice:
    return StatusNotice(read_str(m.get("channel"), "status.channel", 0), USER_STATUS.read(m, "status"))


# --- results ---------------------------------------------------------------------------

#: How each result but EmptyResult reads and writes, by type. A reply does not
#: say its result's type: the client, which knows what each of its command ids
#: asked, tells :func:`result_from_map` (:data:`RESULT_OF` maps each command to it).
RESULTS: dict[type[Result], Spec[Result]] = {
    ConnectResult: Spec(
        ConnectResult,
        (Field("client", STR), Field("version", STR), Field("ping", NUMBER), _USER, opt("expires", INT)),
    ),
    SubscribeResult: Spec(
        SubscribeResult,
        (
            Field("offset", UINT),
            Field("epoch", STR),
            Field("recoverable", BOOL),
            Field("recovered", BOOL),
            opt("publications", _PUBLICATIONS),
            opt("version", UINT),
            opt("state", list_of(map_of(STATE_ENTRY))),
            opt("full", BOOL),
            opt("status", map_of(USER_STATUS)),
        ),
    ),
    HistoryResult: Spec(
        HistoryResult,
        (
            Field("publications", _PUBLICATIONS),
            Field("offset", UINT),
            Field("epoch", STR),
            opt("truncated", BOOL),
        ),
    ),
    PublishResult: Spec(PublishResult, (Field("offset", UINT), Field("epoch", STR), opt("mid", STR), opt("time", INT))),
    RefreshResult: Spec(RefreshResult, (Field("expires", INT),)),
    ReadResult: Spec(ReadResult, (Field("read", UINT, attr="offset"),)),
    ReceiptsResult: Spec(ReceiptsResult, (Field("receipts", dict_of(UINT)), opt("truncated", BOOL))),
    PresenceResult: Spec(
        PresenceResult,
        (
            Field("presence", dict_of(map_of(Spec(PresenceMember, (_USER, opt("info", RELAYED))))), attr="clients"),
            opt("truncated", BOOL),
        ),
    ),
    PresenceStatsResult: Spec(PresenceStatsResult, (Field("clients", UINT), Field("users", UINT))),
    StateResult: Spec(StateResult, (Field("version", UINT),)),
    StatusResult: Spec(StatusResult, (Field("users", list_of(map_of(USER_STATUS))),)),
    RpcResult: Spec(RpcResult, (Field("data", RELAYED),)),
}
#: The result type each command's reply carries.
RESULT_OF: dict[type[Command], type[Result]] = {
    Connect: ConnectResult,
    Subscribe: SubscribeResult,
    Unsubscribe: EmptyResult,
    Publish: PublishResult,
    Ping: EmptyResult,
    Refresh: RefreshResult,
    History: HistoryResult,
    Typing: EmptyResult,
    Read: ReadResult,
    Receipts: ReceiptsResult,
    PresenceQuery: PresenceResult,
    PresenceStatsQuery: PresenceStatsResult,
    StateSet: StateResult,
    StatePatch: StateResult,
    StatusQuery: StatusResult,
    Rpc: RpcResult,
}
#: What a decode expects: command id -> the result type of its reply.
Expected = Mapping[int, type[Result]]
#: Expect no result reply (pushes and error replies decode without one).
NO_RESULTS: Expected = MappingProxyType({})


def _publications(pubs: tuple[Publication, ...], data: DataOut, pub: PubOut | None) -> object:
    if pub is None:
        return [publication_to_map(p, data, push=False) for p in pubs]
    return pub(pubs)


def _subscribe_result_to_map(result: SubscribeResult, data: DataOut, pub: PubOut | None) -> Map:
    m: Map = {
        "offset": result.offset,
        "epoch": result.epoch,
        "recoverable": result.recoverable,
        "recovered": result.recovered,
    }
    if result.publications:
        m["publications"] = _publications(result.publications, data, pub)
    if result.version or result.state:
        m["version"] = result.version
        m["state"] = [STATE_ENTRY.write(e, data, {}) for e in result.state]
    if result.full:
        m["full"] = True
    if result.status is not None:
        m["status"] = USER_STATUS.write(result.status, data, {})
    return m


def _publish_result_to_map(result: PublishResult, data: DataOut, pub: PubOut | None) -> Map:
    m: Map = {"offset": result.offset, "epoch": result.epoch}
    if result.mid:
        m["mid"] = result.mid
        m["time"] = result.time
    return m


def _history_result_to_map(result: HistoryResult, data: DataOut, pub: PubOut | None) -> Map:
    m: Map = {
        "publications": _publications(result.publications, data, pub),
        "offset": result.offset,
        "epoch": result.epoch,
    }
    if result.truncated:
        m["truncated"] = True
    return m


_ResultWriter = Callable[[Any, DataOut, "PubOut | None"], Map]


def _spec_writer(spec: Spec[Result]) -> _ResultWriter:
    return lambda result, data, pub: spec.write(result, data, {})


_RESULT_WRITERS: dict[object, _ResultWriter] = {
    **{kind: _spec_writer(spec) for kind, spec in RESULTS.items()},
    # groups of keys that come together, and publications a codec may splice
    SubscribeResult: _subscribe_result_to_map,
    PublishResult: _publish_result_to_map,
    HistoryResult: _history_result_to_map,
    EmptyResult: lambda result, data, pub: {},
}


def result_to_map(result: Result, data: DataOut, pub: PubOut | None = None) -> Map:
    """The map of a result; ``pub`` writes the publications inside it."""
    writer = _RESULT_WRITERS.get(type(result))
    if writer is None:
        raise TypeError(f"not a result: {type(result).__name__}")
    return writer(result, data, pub)


def result_from_map(m: Map, kind: type[Result]) -> Result:
    """Read a result of type ``kind``; raise :class:`ProtocolError` if ``m`` is not one.

    Unknown keys are ignored (a newer hub may add some), so any map is an EmptyResult.
    """
    if kind is EmptyResult:
        return EmptyResult()
    spec = RESULTS.get(kind)
    if spec is None:
        raise TypeError(f"not a result type: {kind!r}")
    return spec.read(m, "result")


# --- server messages -------------------------------------------------------------------


def message_to_map(message: ServerMessage, data: DataOut, pub: PubOut | None = None) -> Map:
    """The map of a reply or push; ``data`` converts embedded msgpack values.

    ``pub`` writes publications inside results (default: their maps).
    Raises TypeError for a non-message, ValueError for a Reply without exactly
    one of result and error.
    """
    if type(message) is Publication:
        return publication_to_map(message, data)
    if type(message) is Reply:
        if (message.result is None) == (message.error is None):
            raise ValueError("a Reply needs exactly one of result and error")
        if message.error is not None:
            err = message.error
            em: Map = {"code": err.code, "message": err.message}
            if err.retry_after:
                em["retry_after"] = err.retry_after
            return {"id": message.id, "error": em}
        assert message.result is not None
        return {"id": message.id, "result": result_to_map(message.result, data, pub)}
    if type(message) is StatusNotice:
        return _status_notice_to_map(message, data)
    if type(message) is StateChange and (message.value is None) == (message.patch is None):
        raise ValueError("a StateChange needs exactly one of value and patch")
    name = _PUSH_NAMES.get(type(message))
    if name is None:
        raise TypeError(f"not a server message: {type(message).__name__}")
    return PUSHES[name].write(message, data, {"push": name})


def message_from_map(m: Map, expected: Expected = NO_RESULTS) -> ServerMessage | None:
    """Build a reply or push; None for a push type this client does not know.

    A reply's result is read as the type ``expected`` gives for its id: a
    result of another type, or for an id missing there, is a ProtocolError.
    """
    push = m.get("push")
    if push is not None:
        if push == "status":
            return _status_notice_from_map(m)
        spec = PUSHES.get(push) if push.__class__ is str else None
        return None if spec is None else spec.read(m, push)  # newer server: ignore unknown pushes
    id = read_uint(m.get("id"), "reply.id", 0)
    if id > MAX_ID:
        raise ProtocolError("reply.id is out of range")
    if "error" in m:
        em = read_map(m["error"], "reply.error", 0)
        code, message = INT.read(em.get("code"), "error.code", 0), read_str(em.get("message"), "error.message", 0)
        retry = em.get("retry_after")
        return Reply(id, error=Error(code, message, 0 if retry is None else read_uint(retry, "error.retry_after", 0)))
    result = read_map(m.get("result"), "reply.result", 0)
    kind = expected.get(id)
    if kind is None:
        raise ProtocolError("reply.id answers no command that awaits a result")
    return Reply(id, result=result_from_map(result, kind))


def messages_from_maps(values: Iterable[object], expected: Expected = NO_RESULTS) -> list[ServerMessage]:
    """Turn a server frame's decoded values into messages; raise :class:`ProtocolError` on garbage.

    ``expected`` gives the result type of each command id a reply may answer.
    """
    out: list[ServerMessage] = []
    for value in values:
        if value.__class__ is not dict:
            raise ProtocolError("every message must be a map")
        message = message_from_map(value, expected)
        if message is not None:
            out.append(message)
    return out
