"""Malformed input gives typed errors with the right code and id, on bytes only."""

from __future__ import annotations

from typing import Any

import msgpack  # type: ignore[import-untyped]
import orjson
import pytest

from protocol import (
    CODECS,
    MAX_CHANNEL_LENGTH,
    MAX_COMMANDS_PER_FRAME,
    MAX_DATA_DEPTH,
    MAX_ID,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_STATE_KEY_LENGTH,
    MAX_STATUS_USERS,
    Codec,
    Connect,
    ErrorCode,
    History,
    JsonCodec,
    MsgpackCodec,
    Ping,
    ProtocolError,
    Publication,
    Publish,
    Reply,
    StatePatch,
    StateSet,
    StatusQuery,
    Subscribe,
    Typing,
    msgpack_to_json,
)
from protocol.wire import too_deep
from tests.helpers import pack

BOTH = pytest.mark.parametrize("codec", list(CODECS.values()), ids=list(CODECS))
MSGPACK = MsgpackCodec()
JSON = JsonCodec()
PING = pack({"id": 1, "cmd": "ping"})
JPING = b'{"id":1,"cmd":"ping"}'


def frame(codec: Codec, *maps: object) -> bytes:
    """A frame holding ``maps``, serialised the way ``codec`` reads them."""
    parts = [pack(m) if codec.binary else orjson.dumps(m) for m in maps]
    return codec.separator.join(parts)


def frame_error(codec: Codec, data: bytes) -> ProtocolError:
    with pytest.raises(ProtocolError) as info:
        codec.decode_commands(data)
    assert info.value.id == 0
    assert info.value.code == ErrorCode.BAD_REQUEST
    return info.value


def command_error(codec: Codec, m: dict[str, Any]) -> ProtocolError:
    [result] = codec.decode_commands(frame(codec, m))
    assert isinstance(result, ProtocolError), result
    return result


def nested(depth: int) -> object:
    value: object = 1
    for _ in range(depth):
        value = [value]
    return value


# --- frames refused as a whole ------------------------------------------------------

#: A publish command whose last bytes are its data value: append one.
DATA_AT_END = pack({"id": 1, "cmd": "publish", "channel": "a", "data": 0})[:-1]


MSGPACK_BAD_FRAMES = {
    "empty": b"",
    "truncated": PING[:-1],
    "truncated second": PING + PING[:-3],
    "truncated header": b"\xdf\x00",
    "header longer than frame": b"\xdf\xff\xff\xff\xff",
    "reserved byte": b"\xc1",
    "trailing reserved byte": PING + b"\xc1",
    "trailing int": PING + b"\x01",
    "top-level int": b"\x01",
    "top-level array": pack([{"id": 1, "cmd": "ping"}]),
    "top-level str": pack("ping"),
    "top-level nil after map": PING + b"\xc0",
    "invalid utf-8": b"\x82\xa2id\x01\xa3cmd\xa4p\xffng",
    "int map key": pack({"id": 1, "cmd": "publish", "channel": "a", "data": {1: 2}}),
    "ext type": pack({"id": 1, "cmd": "publish", "channel": "a", "data": msgpack.ExtType(5, b"x")}),
    "empty ext": DATA_AT_END + b"\xc7\x00\x05",
    "timestamp": pack({"id": 1, "cmd": "publish", "channel": "a", "data": msgpack.Timestamp(1, 0)}),
    "nested beyond msgpack's stack": DATA_AT_END + b"\x91" * 2000 + b"\x01",
    "too many commands": PING * (MAX_COMMANDS_PER_FRAME + 1),
}


@pytest.mark.parametrize("data", MSGPACK_BAD_FRAMES.values(), ids=MSGPACK_BAD_FRAMES.keys())
def test_msgpack_bad_frame(data: bytes) -> None:
    frame_error(MSGPACK, data)


JSON_BAD_FRAMES = {
    "empty": b"",
    "blank lines only": b"\n \n\r\n",
    "truncated": JPING[:-1],
    "trailing garbage": JPING + b"x",
    "two objects on a line": JPING + JPING,
    "bad second line": JPING + b"\n{",
    "not json": b"ping",
    "top-level array": b'[{"id":1,"cmd":"ping"}]',
    "top-level string": b'"ping"',
    "invalid utf-8": b'{"id":1,"cmd":"p\xffng"}',
    "lone surrogate": b'{"id":1,"cmd":"publish","channel":"a","data":"\\ud800"}',
    "NaN": b'{"id":1,"cmd":"publish","channel":"a","data":NaN}',
    "infinite number": b'{"id":1,"cmd":"publish","channel":"a","data":1e999}',
    "huge id": b'{"id":123456789012345678901234567890,"cmd":"ping"}',
    "int above uint64": b'{"id":1,"cmd":"publish","channel":"a","data":[18446744073709551616]}',
    "int below int64": b'{"id":1,"cmd":"publish","channel":"a","data":{"n":-9223372036854775809}}',
    "nested beyond orjson's limit": b'{"id":1,"cmd":"publish","channel":"a","data":' + b"[" * 2000 + b"]" * 2000 + b"}",
    "pretty-printed": b'{\n"id":1,\n"cmd":"ping"\n}',
    "too many commands": b"\n".join([JPING] * (MAX_COMMANDS_PER_FRAME + 1)),
}


@pytest.mark.parametrize("data", JSON_BAD_FRAMES.values(), ids=JSON_BAD_FRAMES.keys())
def test_json_bad_frame(data: bytes) -> None:
    frame_error(JSON, data)


def test_bad_frame_reasons_are_specific_and_short() -> None:
    assert str(frame_error(MSGPACK, PING[:-1])) == "truncated msgpack"
    assert str(frame_error(MSGPACK, b"\xc1")) == "invalid msgpack"
    assert str(frame_error(MSGPACK, MSGPACK_BAD_FRAMES["invalid utf-8"])) == "invalid UTF-8 in a string"
    assert str(frame_error(MSGPACK, MSGPACK_BAD_FRAMES["int map key"])) == "map keys must be strings"
    assert str(frame_error(MSGPACK, MSGPACK_BAD_FRAMES["ext type"])) == "msgpack ext types are not allowed"
    assert str(frame_error(MSGPACK, MSGPACK_BAD_FRAMES["empty ext"])) == "msgpack ext types are not allowed"
    assert str(frame_error(MSGPACK, MSGPACK_BAD_FRAMES["timestamp"])) == "msgpack ext types are not allowed"
    assert str(frame_error(MSGPACK, MSGPACK_BAD_FRAMES["nested beyond msgpack's stack"])) == "msgpack nested too deeply"
    assert str(frame_error(MSGPACK, b"\x01")) == "every message must be a map"
    assert str(frame_error(MSGPACK, b"")) == "empty frame"
    assert str(frame_error(MSGPACK, PING * 101)) == "more than 100 messages in a frame"
    assert str(frame_error(JSON, b"{")) == "invalid JSON"
    assert str(frame_error(JSON, JSON_BAD_FRAMES["invalid utf-8"])) == "invalid UTF-8"
    assert str(frame_error(JSON, JSON_BAD_FRAMES["nested beyond orjson's limit"])) == "JSON nested too deeply"
    assert str(frame_error(JSON, JSON_BAD_FRAMES["huge id"])) == "integer out of 64-bit range"


@BOTH
def test_nothing_in_a_bad_frame_runs(codec: Codec) -> None:
    good = frame(codec, {"id": 1, "cmd": "publish", "channel": "a", "data": 1})
    frame_error(codec, codec.separator.join([good, good.replace(b"publish", b"publis\xff")]))
    frame_error(codec, codec.separator.join([good, frame(codec, 7)]))


def test_reasons_never_echo_the_payload() -> None:
    secret = "sk_live_0123456789"
    for m in (
        {"id": 1, "cmd": secret},
        {"id": secret, "cmd": "ping"},
        {"id": 1, "cmd": "subscribe", "channel": secret + " x"},
        {"id": 1, "cmd": "publish", "channel": "a", "data": nested(MAX_DATA_DEPTH + 1), secret: 1},
    ):
        for codec in (MSGPACK, JSON):
            assert secret not in str(command_error(codec, m))


# --- commands refused one by one -------------------------------------------------------


@BOTH
@pytest.mark.parametrize("id", [None, "1", 1.0, True, False, 0, -1, MAX_ID + 1, [1], {"n": 1}], ids=repr)
def test_invalid_id(codec: Codec, id: object) -> None:
    m: dict[str, Any] = {"cmd": "ping"} if id is None else {"id": id, "cmd": "ping"}
    err = command_error(codec, m)
    assert (err.code, err.id) == (ErrorCode.BAD_REQUEST, 0)


@BOTH
def test_unknown_command(codec: Codec) -> None:
    err = command_error(codec, {"id": 9, "cmd": "presences"})
    assert (err.code, err.id, str(err)) == (ErrorCode.UNKNOWN_COMMAND, 9, "unknown command")


@BOTH
@pytest.mark.parametrize(
    ("m", "reason"),
    [
        ({}, "cmd is required"),
        ({"cmd": 1}, "cmd must be a string"),
        ({"cmd": "subscribe"}, "subscribe.channel is required"),
        ({"cmd": "subscribe", "channel": 1}, "subscribe.channel must be a string"),
        ({"cmd": "subscribe", "channel": ""}, "subscribe.channel must not be empty"),
        (
            {"cmd": "subscribe", "channel": "a" * (MAX_CHANNEL_LENGTH + 1)},
            "subscribe.channel is longer than 255 characters",
        ),
        ({"cmd": "subscribe", "channel": "a", "offset": 1}, "subscribe.offset and subscribe.epoch go together"),
        ({"cmd": "subscribe", "channel": "a", "epoch": "e"}, "subscribe.offset and subscribe.epoch go together"),
        (
            {"cmd": "subscribe", "channel": "a", "offset": -1, "epoch": "e"},
            "subscribe.offset must be an unsigned integer",
        ),
        (
            {"cmd": "subscribe", "channel": "a", "offset": True, "epoch": "e"},
            "subscribe.offset must be an unsigned integer",
        ),
        (
            {"cmd": "subscribe", "channel": "a", "offset": 1.0, "epoch": "e"},
            "subscribe.offset must be an unsigned integer",
        ),
        (
            {"cmd": "subscribe", "channel": "a", "offset": "1", "epoch": "e"},
            "subscribe.offset must be an unsigned integer",
        ),
        ({"cmd": "subscribe", "channel": "a", "offset": 1, "epoch": 1}, "subscribe.epoch must be a string"),
        ({"cmd": "unsubscribe"}, "unsubscribe.channel is required"),
        ({"cmd": "unsubscribe", "channel": ["a"]}, "unsubscribe.channel must be a string"),
        ({"cmd": "publish", "data": 1}, "publish.channel is required"),
        ({"cmd": "publish", "channel": None, "data": 1}, "publish.channel must be a string"),
        ({"cmd": "publish", "channel": "a"}, "publish.data is required"),
        ({"cmd": "publish", "channel": "a", "data": nested(MAX_DATA_DEPTH + 1)}, "publish.data is nested too deeply"),
        ({"cmd": "connect", "token": 1}, "connect.token must be a string"),
        ({"cmd": "connect", "name": {}}, "connect.name must be a string"),
        ({"cmd": "connect", "version": 1.0}, "connect.version must be a string"),
        # new fields of publish and subscribe
        ({"cmd": "publish", "channel": "a", "data": 1, "key": 1}, "publish.key must be a string"),
        ({"cmd": "publish", "channel": "a", "data": 1, "key": ""}, "publish.key must not be empty"),
        ({"cmd": "publish", "channel": "a", "data": 1, "key": "k" * 65}, "publish.key is longer than 64 characters"),
        ({"cmd": "subscribe", "channel": "a", "token": 1}, "subscribe.token must be a string"),
        ({"cmd": "subscribe", "channel": "a", "version": -1}, "subscribe.version must be an unsigned integer"),
        ({"cmd": "subscribe", "channel": "a", "version": True}, "subscribe.version must be an unsigned integer"),
        ({"cmd": "subscribe", "channel": "a", "version": "1"}, "subscribe.version must be an unsigned integer"),
        ({"cmd": "subscribe", "channel": "a", "version": 1.0}, "subscribe.version must be an unsigned integer"),
        # refresh
        ({"cmd": "refresh"}, "refresh.token is required"),
        ({"cmd": "refresh", "token": None}, "refresh.token must be a string"),
        ({"cmd": "refresh", "token": ["t"]}, "refresh.token must be a string"),
        # history
        ({"cmd": "history"}, "history.channel is required"),
        ({"cmd": "history", "channel": "a b"}, "history.channel must not contain whitespace or control characters"),
        ({"cmd": "history", "channel": "a", "limit": -1}, "history.limit must be an unsigned integer"),
        ({"cmd": "history", "channel": "a", "limit": "10"}, "history.limit must be an unsigned integer"),
        ({"cmd": "history", "channel": "a", "before": True}, "history.before must be an unsigned integer"),
        ({"cmd": "history", "channel": "a", "after": 1.5}, "history.after must be an unsigned integer"),
        (
            {"cmd": "history", "channel": "a", "before": 9, "after": 1},
            "history.before and history.after exclude each other",
        ),
        (
            {"cmd": "history", "channel": "a", "before": 0, "after": 0},
            "history.before and history.after exclude each other",
        ),
        # typing
        ({"cmd": "typing"}, "typing.channel is required"),
        ({"cmd": "typing", "channel": "a", "typing": "yes"}, "typing.typing must be a boolean"),
        ({"cmd": "typing", "channel": "a", "typing": 1}, "typing.typing must be a boolean"),
        # read
        ({"cmd": "read", "channel": "a"}, "read.offset is required"),
        ({"cmd": "read", "offset": 1}, "read.channel is required"),
        ({"cmd": "read", "channel": "a", "offset": None}, "read.offset must be an unsigned integer"),
        ({"cmd": "read", "channel": "a", "offset": -1}, "read.offset must be an unsigned integer"),
        ({"cmd": "read", "channel": "a", "offset": False}, "read.offset must be an unsigned integer"),
        # receipts, presence, presence_stats
        ({"cmd": "receipts"}, "receipts.channel is required"),
        ({"cmd": "receipts", "channel": ""}, "receipts.channel must not be empty"),
        ({"cmd": "presence"}, "presence.channel is required"),
        ({"cmd": "presence", "channel": 7}, "presence.channel must be a string"),
        ({"cmd": "presence_stats"}, "presence_stats.channel is required"),
        ({"cmd": "presence_stats", "channel": "a" * 256}, "presence_stats.channel is longer than 255 characters"),
        # state_set
        ({"cmd": "state_set", "key": "k", "value": 1}, "state_set.channel is required"),
        ({"cmd": "state_set", "channel": "a", "value": 1}, "state_set.key is required"),
        ({"cmd": "state_set", "channel": "a", "key": 1, "value": 1}, "state_set.key must be a string"),
        ({"cmd": "state_set", "channel": "a", "key": "", "value": 1}, "state_set.key must not be empty"),
        (
            {"cmd": "state_set", "channel": "a", "key": "k" * 256, "value": 1},
            "state_set.key is longer than 255 characters",
        ),
        ({"cmd": "state_set", "channel": "a", "key": "k"}, "state_set.value is required"),
        (
            {"cmd": "state_set", "channel": "a", "key": "k", "value": nested(MAX_DATA_DEPTH + 1)},
            "state_set.value is nested too deeply",
        ),
        (
            {"cmd": "state_set", "channel": "a", "key": "k", "value": 1, "version": -1},
            "state_set.version must be an unsigned integer",
        ),
        (
            {"cmd": "state_set", "channel": "a", "key": "k", "value": 1, "version": "3"},
            "state_set.version must be an unsigned integer",
        ),
        # state_patch
        ({"cmd": "state_patch", "channel": "a", "key": "k"}, "state_patch.patch is required"),
        ({"cmd": "state_patch", "channel": "a", "key": "k", "patch": None}, "state_patch.patch must be a map"),
        ({"cmd": "state_patch", "channel": "a", "key": "k", "patch": [1]}, "state_patch.patch must be a map"),
        ({"cmd": "state_patch", "channel": "a", "key": "k", "patch": "x"}, "state_patch.patch must be a map"),
        (
            {"cmd": "state_patch", "channel": "a", "key": "k", "patch": {"a": nested(MAX_DATA_DEPTH)}},
            "state_patch.patch is nested too deeply",
        ),
        ({"cmd": "state_patch", "channel": "a", "patch": {}}, "state_patch.key is required"),
        (
            {"cmd": "state_patch", "channel": "a", "key": "k" * 256, "patch": {}},
            "state_patch.key is longer than 255 characters",
        ),
        (
            {"cmd": "state_patch", "channel": "a", "key": "k", "patch": {}, "version": 1.0},
            "state_patch.version must be an unsigned integer",
        ),
        # status
        ({"cmd": "status"}, "status.users is required"),
        ({"cmd": "status", "users": None}, "status.users must be an array"),
        ({"cmd": "status", "users": "alice"}, "status.users must be an array"),
        ({"cmd": "status", "users": {"alice": 1}}, "status.users must be an array"),
        ({"cmd": "status", "users": []}, "status.users must not be empty"),
        ({"cmd": "status", "users": ["u"] * 101}, "status.users must hold at most 100 items"),
        ({"cmd": "status", "users": ["alice", 1]}, "status.users[] must be a string"),
        ({"cmd": "status", "users": ["alice", ""]}, "status.users[] must not be empty"),
    ],
    ids=lambda v: v if isinstance(v, str) else "",
)
def test_bad_request_keeps_the_id(codec: Codec, m: dict[str, Any], reason: str) -> None:
    err = command_error(codec, {"id": 5, **m})
    assert (err.code, err.id, str(err)) == (ErrorCode.BAD_REQUEST, 5, reason)


@BOTH
@pytest.mark.parametrize(
    "channel",
    ["a b", "a\tb", "a\nb", "a\rb", "\x00", "a\x7f", "a\u00a0b", "a\u200bb", "a\u2028b", "a\u3000b", "\ufeffa"],
    ids=repr,
)
def test_channel_without_whitespace_or_control_characters(codec: Codec, channel: str) -> None:
    err = command_error(codec, {"id": 5, "cmd": "subscribe", "channel": channel})
    assert (err.code, err.id, str(err)) == (
        ErrorCode.BAD_REQUEST,
        5,
        "subscribe.channel must not contain whitespace or control characters",
    )


@BOTH
def test_new_fields_at_their_limits(codec: Codec) -> None:
    maps = [
        {"id": 1, "cmd": "publish", "channel": "a", "data": 1, "key": "é" * MAX_IDEMPOTENCY_KEY_LENGTH},
        {"id": 2, "cmd": "state_set", "channel": "a", "key": "é" * MAX_STATE_KEY_LENGTH, "value": None},
        {"id": 3, "cmd": "status", "users": ["u"] * MAX_STATUS_USERS},
        {"id": 4, "cmd": "history", "channel": "a", "before": 5, "after": None},
        {"id": 5, "cmd": "typing", "channel": "a", "typing": None},
        {"id": 6, "cmd": "state_patch", "channel": "a", "key": "k", "patch": {"a": nested(MAX_DATA_DEPTH - 1)}},
        {"id": 7, "cmd": "state_set", "channel": "a", "key": "k", "value": nested(MAX_DATA_DEPTH), "version": None},
    ]
    assert codec.decode_commands(frame(codec, *maps)) == [
        Publish(1, "a", pack(1), "é" * MAX_IDEMPOTENCY_KEY_LENGTH),
        StateSet(2, "a", "é" * MAX_STATE_KEY_LENGTH, b"\xc0"),  # nil: delete the key
        StatusQuery(3, ("u",) * MAX_STATUS_USERS),
        History(4, "a", before=5),
        Typing(5, "a", True),
        StatePatch(6, "a", "k", pack({"a": nested(MAX_DATA_DEPTH - 1)})),
        StateSet(7, "a", "k", pack(nested(MAX_DATA_DEPTH))),
    ]


@BOTH
def test_longest_channel(codec: Codec) -> None:
    m = {"id": 5, "cmd": "subscribe", "channel": "é" * MAX_CHANNEL_LENGTH}
    assert codec.decode_commands(frame(codec, m)) == [Subscribe(5, "é" * MAX_CHANNEL_LENGTH)]


@BOTH
def test_data_depth_limit(codec: Codec) -> None:
    deepest = nested(MAX_DATA_DEPTH)
    ok = {"id": 1, "cmd": "publish", "channel": "a", "data": {"k": nested(MAX_DATA_DEPTH - 1)}}
    result = codec.decode_commands(frame(codec, {"id": 2, "cmd": "publish", "channel": "a", "data": deepest}, ok))
    assert result == [Publish(2, "a", pack(deepest)), Publish(1, "a", pack(ok["data"]))]


def test_too_deep() -> None:
    assert not too_deep(1)
    assert not too_deep({}, 1)
    assert too_deep({}, 0)
    assert not too_deep({"a": [1]}, 2)
    assert too_deep({"a": [1]}, 1)
    assert too_deep({"a": 1, "b": {"c": [[]]}}, 3)
    assert not too_deep([1, "x", [2, [3]], {"d": None}], 3)
    assert too_deep([1, "x", [2, [3]], {"d": [None]}], 2)


@BOTH
def test_duplicate_id(codec: Codec) -> None:
    result = codec.decode_commands(
        frame(
            codec,
            {"id": 1, "cmd": "ping"},
            {"id": 2, "cmd": "nope"},
            {"id": 1, "cmd": "ping"},
            {"id": 2, "cmd": "ping"},
            {"id": 3, "cmd": "ping"},
        )
    )
    assert result[0] == Ping(1)
    assert result[4] == Ping(3)
    codes = [(e.code, e.id) for e in result[1:4] if isinstance(e, ProtocolError)]
    assert codes == [(ErrorCode.UNKNOWN_COMMAND, 2), (ErrorCode.DUPLICATE_ID, 1), (ErrorCode.DUPLICATE_ID, 2)]


@BOTH
def test_one_bad_command_and_one_good(codec: Codec) -> None:
    bad, good = codec.decode_commands(
        frame(codec, {"id": 1, "cmd": "subscribe", "channel": 7}, {"id": 2, "cmd": "connect", "token": "t"})
    )
    assert isinstance(bad, ProtocolError) and (bad.code, bad.id) == (ErrorCode.BAD_REQUEST, 1)
    assert good == Connect(2, token="t")
    assert bad.to_error().code == 107


# --- client side --------------------------------------------------------------------


@pytest.mark.parametrize(
    "data",
    [
        b"",
        b"\xc1",
        b"\x01",
        PING[:-1],
        pack({"id": 1}),
        pack({"id": -1, "result": {}}),
        pack({"id": 1, "result": []}),
        pack({"id": 1, "error": {"code": "x", "message": "m"}}),
        pack({"push": "pub", "channel": "a", "offset": 1, "epoch": "e"}),
        pack({"push": "pub", "channel": 1, "data": 1, "offset": 1, "epoch": "e"}),
        pack({"push": "pub", "channel": "a", "data": 1, "offset": True, "epoch": "e"}),
        pack({"push": "pub", "channel": "a", "data": 1, "offset": 1, "epoch": "e", "info": []}),
        pack({"push": "disconnect", "code": 4001, "reason": "x"}),
        pack(
            {
                "id": 1,
                "result": {"offset": 1, "epoch": "e", "recoverable": True, "recovered": True, "publications": [1]},
            }
        ),
        pack({"id": 1, "result": {"client": "c", "version": "v", "ping": "25", "user": ""}}),
        pack({"push": "pub", "channel": "a", "data": 1, "offset": 1, "epoch": "e", "mid": 1, "time": 1}),
        pack({"push": "join", "channel": "a"}),
        pack({"push": "join", "channel": "a", "user": 1}),
        pack({"push": "leave", "user": "u"}),
        pack({"push": "typing", "channel": "a", "user": "u", "typing": "x", "timeout": 5}),
        pack({"push": "typing", "channel": "a", "user": "u", "typing": True, "timeout": "5"}),
        pack({"push": "read", "channel": "a", "user": "u", "offset": -1}),
        pack({"push": "state", "channel": "a", "key": "k", "version": 1}),
        pack({"push": "state", "channel": "a", "key": "k", "version": 1, "value": 1, "patch": {}}),
        pack({"push": "state", "channel": "a", "key": "k", "version": "1", "value": 1}),
        pack({"push": "status", "channel": "a", "user": "u", "last_seen": 0}),
        pack({"push": "status", "user": "u", "online": True, "last_seen": 0}),
        pack({"push": "unsub", "channel": "a"}),
        pack({"id": 1, "result": {"publications": [1], "offset": 1, "epoch": "e"}}),
        pack(
            {
                "id": 1,
                "result": {"offset": 1, "epoch": "e", "recoverable": True, "recovered": True, "state": [{"key": "k"}]},
            }
        ),
        pack({"id": 1, "result": {"offset": 1, "epoch": "e", "recoverable": True, "recovered": True, "status": []}}),
        pack({"id": 1, "result": {"expires": "soon"}}),
        pack({"id": 1, "result": {"read": None}}),
        pack({"id": 1, "result": {"receipts": {"alice": -1}}}),
        pack({"id": 1, "result": {"receipts": {1: 1}}}),
        pack({"id": 1, "result": {"presence": {"c": 1}}}),
        pack({"id": 1, "result": {"presence": {"c": {"info": 1}}}}),
        pack({"id": 1, "result": {"clients": 1}}),
        pack({"id": 1, "result": {"version": True}}),
        pack({"id": 1, "result": {"users": [{"user": "u", "online": 1, "last_seen": 0}]}}),
    ],
)
def test_msgpack_client_refuses_garbage(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        MSGPACK.decode_messages(data)


@pytest.mark.parametrize("data", [b"", b"{", b"[]", b'{"id":1}', b'{"push":"pub"}', b'{"id":1,"result":{}}x'])
def test_json_client_refuses_garbage(data: bytes) -> None:
    with pytest.raises(ProtocolError):
        JSON.decode_messages(data)


# --- our own misuse is not a ProtocolError --------------------------------------------------


@BOTH
def test_reply_needs_exactly_one_of_result_and_error(codec: Codec) -> None:
    with pytest.raises(ValueError):
        codec.encode(Reply(1))


def test_json_needs_valid_msgpack_data() -> None:
    for data in (b"", b"\xc1", b"\x01\x02", pack(msgpack.ExtType(1, b"x"))):
        with pytest.raises(ValueError):
            msgpack_to_json(data)
        with pytest.raises(ValueError):
            JSON.encode(Publication("a", data, 1, "e"))
