"""Round trips of every message through both codecs, on bytes only."""

from __future__ import annotations

import re
from pathlib import Path

import msgpack  # type: ignore[import-untyped]
import orjson
import pytest

from protocol import (
    CODECS,
    JSON_SUBPROTOCOL,
    MAX_COMMANDS_PER_FRAME,
    MAX_ID,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_OFFSET,
    MAX_STATE_KEY_LENGTH,
    MAX_STATUS_USERS,
    MSGPACK_SUBPROTOCOL,
    SUBPROTOCOLS,
    ClientInfo,
    Codec,
    Command,
    Connect,
    ConnectResult,
    Disconnect,
    EmptyResult,
    Error,
    History,
    HistoryResult,
    Join,
    JsonCodec,
    Leave,
    MsgpackCodec,
    Ping,
    PresenceMember,
    PresenceQuery,
    PresenceResult,
    PresenceStatsQuery,
    PresenceStatsResult,
    Publication,
    Publish,
    PublishResult,
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
    codec_for,
    msgpack_to_json,
)
from protocol.errors import ProtocolError
from protocol.wire import RESULTS, result_from_map, result_to_map
from tests.helpers import EXAMPLES, client_roundtrip, encode_example, expected_results, pack, server_roundtrip

BOTH = pytest.mark.parametrize("codec", list(CODECS.values()), ids=list(CODECS))
MSGPACK = MsgpackCodec()
JSON = JsonCodec()

# Values that mean the same in JSON and msgpack (no bin, string keys only).
VALUES: list[object] = [
    None,
    True,
    0,
    -1,
    2**63 - 1,
    -(2**63),
    MAX_OFFSET,
    1.5,
    "",
    "héllo ✓ 😀",
    [],
    {},
    [1, "two", None, [3.25]],
    {"text": "hi", "n": 1, "nested": {"a": [1, {"b": False}]}},
]

INFO = ClientInfo("alice", "c0ffee")
INFO_EXTRA = ClientInfo("alice", "c0ffee", pack({"role": "admin"}))
PUB = Publication("chat:lobby", pack({"text": "hi"}), 42, "Xq3v")

CHAT_PUB = Publication("chat:lobby", pack({"text": "hi"}), 42, "Xq3v", INFO, mid="01HV7Z", time=1767225600123)
ALICE = UserStatus("alice", True)
BOB = UserStatus("bob", False, 1767225600000)
DELETED = pack(None)  # a state value of nil: the key was deleted

SERVER_MESSAGES: list[ServerMessage] = [
    PUB,
    Publication("chat:lobby", pack({"text": "hi"}), 42, "Xq3v", INFO),
    Publication("chat:lobby", pack([1, 2]), MAX_OFFSET, "Xq3v", INFO_EXTRA),
    Publication("c" * 255, pack(None), 0, ""),
    CHAT_PUB,
    Publication("chat:lobby", pack("x"), 1, "e", mid="m", time=0),
    Publication("chat:lobby", pack("x"), 1, "e", INFO_EXTRA, mid="m", time=-1),
    Disconnect(4001, "shutdown", True),
    Disconnect(4500, "bad request", False),
    Disconnect(4008, "overloaded", True, 2500),
    Join("chat:lobby", "bob"),
    Join("chat:lobby", "bob", pack({"name": "Bob", "devices": 2})),
    Leave("chat:lobby", "bob"),
    TypingNotice("chat:lobby", "alice", True, 6.0),
    TypingNotice("chat:lobby", "alice", False, 0.5),
    ReadNotice("chat:lobby", "bob", MAX_OFFSET),
    StateChange("match:7", "score", 5, value=pack({"home": 1, "away": 1})),
    StateChange("match:7", "score", 6, value=DELETED),
    StateChange("match:7", "k" * 255, MAX_OFFSET, patch=pack({"away": None, "sets": [6, 4]})),
    StatusNotice("status:bob", BOB),
    StatusNotice("status:alice", ALICE),
    Unsubscribed("chat:lobby", "unsubscribed by the server"),
    Reply(1, ConnectResult("c0ffee", "0.1.0", 25.0, "alice")),
    Reply(1, ConnectResult("c0ffee", "0.1.0", 0.5)),
    Reply(1, ConnectResult("c0ffee", "0.1.0", 25.0, "alice", expires=1767229200)),
    Reply(2, SubscribeResult(41, "Xq3v")),
    Reply(2, SubscribeResult(41, "Xq3v", recoverable=True, recovered=True)),
    Reply(2, SubscribeResult(44, "Xq3v", True, True, (PUB, Publication("chat:lobby", pack(1), 43, "Xq3v", INFO)))),
    Reply(2, SubscribeResult(60, "Xq3v", True, True, tuple(Publication("a", pack(i), i, "e") for i in range(20)))),
    Reply(2, SubscribeResult(42, "Xq3v", True, True, (CHAT_PUB,))),
    Reply(2, SubscribeResult(0, "e", version=3)),
    Reply(
        2,
        SubscribeResult(
            0, "e", version=9, state=(StateEntry("score", pack({"home": 2}), 9), StateEntry("old", None, 8))
        ),
    ),
    Reply(2, SubscribeResult(0, "e", state=(StateEntry("a", pack([]), 0),))),
    Reply(2, SubscribeResult(0, "e", version=12, state=(StateEntry("a", pack(1), 11),), full=True)),
    Reply(5, error=Error(110, "too many commands", retry_after=1500)),
    Reply(2, SubscribeResult(0, "e", status=BOB)),
    Reply(2, SubscribeResult(7, "e", True, False, (PUB,), 4, (StateEntry("x", pack(1), 4),), ALICE)),
    Reply(3, PublishResult(42, "Xq3v")),
    Reply(3, PublishResult(42, "Xq3v", mid="01HV7Z", time=1767225600123)),
    Reply(3, PublishResult(42, "Xq3v", mid="m", time=0)),
    Reply(4, RefreshResult(1767229200)),
    Reply(15, RpcResult(pack({"name": "Bob"}))),
    Reply(15, RpcResult(pack(None))),
    Reply(4, RefreshResult(0)),
    Reply(5, HistoryResult((), 0, "")),
    Reply(5, HistoryResult((PUB, CHAT_PUB), 43, "Xq3v")),
    Reply(5, HistoryResult((PUB,), 43, "Xq3v", truncated=True)),
    Reply(6, ReadResult(0)),
    Reply(6, ReadResult(MAX_OFFSET)),
    Reply(7, ReceiptsResult({})),
    Reply(7, ReceiptsResult({"alice": 42, "bob": 40})),
    Reply(8, PresenceResult({})),
    Reply(
        8, PresenceResult({"c0ffee": PresenceMember("alice"), "d00d": PresenceMember("bob", pack({"device": "ios"}))})
    ),
    Reply(9, PresenceStatsResult(0, 0)),
    Reply(9, PresenceStatsResult(3, 2)),
    Reply(10, StateResult(0)),
    Reply(10, StateResult(MAX_OFFSET)),
    Reply(11, StatusResult(())),
    Reply(11, StatusResult((ALICE, BOB))),
    Reply(MAX_ID, EmptyResult()),
    Reply(0, error=Error(107, "bad request")),
    Reply(7, error=Error(103, "permission denied")),
    Reply(7, error=Error(115, "conflict")),
]

COMMANDS: list[Command] = [
    Connect(1),
    Connect(1, token="abc.def.ghi", name="kotlin", version="1.0"),
    Connect(1, token=""),
    Subscribe(2, "chat:lobby"),
    Subscribe(2, "chat:lobby", StreamPosition(0, "")),
    Subscribe(2, "chat:lobby", StreamPosition(MAX_OFFSET, "Xq3v")),
    Subscribe(2, "chat:lobby", token="sub.token"),
    Subscribe(2, "match:7", version=0),
    Subscribe(2, "match:7", StreamPosition(4, "e"), token="", version=MAX_OFFSET),
    Unsubscribe(3, "chat:lobby"),
    *(Publish(4, "chat:lobby", pack(v)) for v in VALUES),
    Publish(4, "chat:lobby", pack("hi"), key="k"),
    Publish(4, "chat:lobby", pack({"text": "hi"}), key="é" * MAX_IDEMPOTENCY_KEY_LENGTH),
    Ping(MAX_ID),
    Refresh(5, "jkl.mno.pqr"),
    Refresh(5, ""),
    History(6, "chat:lobby"),
    History(6, "chat:lobby", limit=0),
    History(6, "chat:lobby", limit=50, before=MAX_OFFSET),
    History(6, "chat:lobby", limit=50, after=0),
    Typing(7, "chat:lobby"),
    Typing(7, "chat:lobby", typing=False),
    Read(8, "chat:lobby", 0),
    Read(8, "chat:lobby", MAX_OFFSET),
    Receipts(9, "chat:lobby"),
    PresenceQuery(10, "chat:lobby"),
    PresenceStatsQuery(11, "chat:lobby"),
    *(StateSet(12, "match:7", "score", pack(v)) for v in VALUES),
    StateSet(12, "match:7", "k" * MAX_STATE_KEY_LENGTH, pack({"home": 1}), version=0),
    StateSet(12, "match:7", "score", DELETED, version=MAX_OFFSET),
    StatePatch(13, "match:7", "score", pack({})),
    StatePatch(13, "match:7", "score", pack({"away": 1, "gone": None}), version=4),
    StatusQuery(14, ("alice",)),
    Rpc(15, "profile", pack({"id": 7})),
    Rpc(15, "m" * 255),
    Connect(16, data=pack({"session": "s1"})),
    StatusQuery(14, tuple(f"user{i}" for i in range(MAX_STATUS_USERS))),
]


# --- server -> client ------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=repr)
def test_server_message_roundtrip(codec: Codec, message: ServerMessage) -> None:
    assert server_roundtrip(codec, message) == [message]


@BOTH
def test_server_messages_share_a_frame(codec: Codec) -> None:
    assert server_roundtrip(codec, *SERVER_MESSAGES) == SERVER_MESSAGES


@BOTH
@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_publication_data_values(codec: Codec, value: object) -> None:
    pub = Publication("ch", pack(value), 1, "e")
    [back] = codec.decode_messages(codec.encode(pub))
    assert isinstance(back, Publication)
    assert msgpack.unpackb(back.data) == value


def test_msgpack_publication_embeds_data_bytes() -> None:
    data = pack({"text": "x" * 64})
    encoded = MSGPACK.encode(Publication("ch", data, 1, "e", INFO_EXTRA))
    assert data in encoded
    assert INFO_EXTRA.info is not None and INFO_EXTRA.info in encoded
    # The spliced map is the same value msgpack itself would produce.
    assert msgpack.unpackb(encoded) == {
        "push": "pub",
        "channel": "ch",
        "data": {"text": "x" * 64},
        "offset": 1,
        "epoch": "e",
        "info": {"user": "alice", "client": "c0ffee", "info": {"role": "admin"}},
    }


def test_json_text_is_one_compact_line() -> None:
    for message in SERVER_MESSAGES:
        text = JSON.encode(message)
        assert b"\n" not in text
        assert isinstance(orjson.loads(text), dict)


def test_unknown_push_and_keys_are_ignored_by_clients() -> None:
    future = [{"push": "presence", "channel": "x"}, {"id": 3, "result": {"offset": 1, "epoch": "e", "new": 1}}]
    sent = {3: PublishResult}
    assert MSGPACK.decode_messages(b"".join(pack(m) for m in future), sent) == [Reply(3, PublishResult(1, "e"))]
    assert JSON.decode_messages(b"\n".join(orjson.dumps(m) for m in future), sent) == [Reply(3, PublishResult(1, "e"))]


def test_msgpack_splices_every_bytes_field() -> None:
    """data, value, patch and info reach MessagePack frames as the same bytes."""
    blobs = [pack({"blob": i, "text": "x" * 40}) for i in range(6)]
    messages: list[ServerMessage] = [
        Join("ch", "bob", blobs[0]),
        StateChange("ch", "k", 1, value=blobs[1]),
        StateChange("ch", "k", 1, patch=blobs[2]),
        Reply(1, SubscribeResult(1, "e", True, True, (CHAT_PUB,), 2, (StateEntry("k", blobs[3], 2),))),
        Reply(1, HistoryResult((Publication("ch", blobs[4], 1, "e", INFO_EXTRA, mid="m", time=1),), 1, "e")),
        Reply(1, PresenceResult({"c": PresenceMember("bob", blobs[5])})),
    ]
    for blob, message in zip(blobs, messages):
        assert blob in MSGPACK.encode(message)


def test_msgpack_chat_publication_is_the_map_msgpack_would_pack() -> None:
    assert msgpack.unpackb(MSGPACK.encode(Publication("ch", pack(1), 1, "e", INFO_EXTRA, mid="m", time=7))) == {
        "push": "pub",
        "channel": "ch",
        "data": 1,
        "offset": 1,
        "epoch": "e",
        "mid": "m",
        "time": 7,
        "info": {"user": "alice", "client": "c0ffee", "info": {"role": "admin"}},
    }


@pytest.mark.parametrize("message", SERVER_MESSAGES, ids=repr)
def test_from_msgpack(message: ServerMessage) -> None:
    """What a node relays as MessagePack becomes each codec's own bytes for the message."""
    encoded = MSGPACK.encode(message)
    assert MSGPACK.from_msgpack(encoded) is encoded
    assert JSON.from_msgpack(encoded) == JSON.encode(message)


def test_from_msgpack_follows_the_data_rules() -> None:
    data = msgpack.packb({"blob": b"\x00\xff", 1: [b"hi"]})
    assert orjson.loads(JSON.from_msgpack(MSGPACK.encode(Join("ch", "bob", data)))) == {
        "push": "join",
        "channel": "ch",
        "user": "bob",
        "info": {"blob": "AP8=", "1": ["aGk="]},
    }


def test_json_from_msgpack_needs_one_msgpack_value() -> None:
    for data in (b"", b"\xc1", PING_BYTES + b"\x01", pack(msgpack.ExtType(1, b"x"))):
        with pytest.raises(ValueError):
            JSON.from_msgpack(data)


PING_BYTES = MSGPACK.encode(Reply(1, EmptyResult()))


@pytest.mark.parametrize(
    ("m", "kind"),
    [
        ({}, EmptyResult),
        ({"later": 1}, EmptyResult),
        ({"client": "c", "version": "v", "ping": 25, "user": ""}, ConnectResult),  # without expires: an older hub
        ({"client": "c", "version": "v", "ping": 25.0, "user": "", "expires": 9}, ConnectResult),
        (
            {"offset": 1, "epoch": "e", "recoverable": False, "recovered": False, "version": 2, "state": []},
            SubscribeResult,
        ),
        ({"offset": 1, "epoch": "e", "recoverable": False, "recovered": False, "publications": []}, SubscribeResult),
        ({"publications": [], "offset": 1, "epoch": "e"}, HistoryResult),
        ({"offset": 1, "epoch": "e"}, PublishResult),
        ({"offset": 1, "epoch": "e", "mid": "m", "time": 1}, PublishResult),
        ({"expires": 0}, RefreshResult),
        ({"read": 3}, ReadResult),
        ({"receipts": {}}, ReceiptsResult),
        ({"presence": {}}, PresenceResult),
        ({"clients": 1, "users": 1}, PresenceStatsResult),
        ({"version": 3}, StateResult),
        ({"users": []}, StatusResult),
    ],
    ids=lambda v: v.__name__ if isinstance(v, type) else ",".join(v) or "{}",
)
def test_client_tells_results_apart_by_their_keys(m: dict[str, object], kind: type) -> None:
    assert type(result_from_map(m, kind)) is kind


@BOTH
def test_a_result_of_another_type_than_expected_is_a_protocol_error(codec: Codec) -> None:
    """A reply's result is read as the type its command id expects; a result of another type is refused."""
    types = set()
    for message in SERVER_MESSAGES:
        if isinstance(message, Reply) and message.result is not None:
            frame = codec.encode(message)
            types.add(type(message.result))
            for other in RESULTS:
                if other is not type(message.result) and not _also_reads_as(message.result, other):
                    with pytest.raises(ProtocolError):
                        codec.decode_messages(frame, {message.id: other})
            with pytest.raises(ProtocolError):  # an id that awaits no result
                codec.decode_messages(frame)
    assert types == set(RESULTS) | {EmptyResult}


def _also_reads_as(result: Result, other: type[Result]) -> bool:
    """Whether ``result``'s map holds every key ``other`` requires (unknown keys are ignored, so it reads as one)."""
    keys = result_to_map(result, lambda b: None)
    return all(f.key in keys for f in RESULTS[other].fields if not f.optional)


@BOTH
def test_state_change_needs_exactly_one_of_value_and_patch(codec: Codec) -> None:
    for message in (StateChange("ch", "k", 1), StateChange("ch", "k", 1, value=pack(1), patch=pack({}))):
        with pytest.raises(ValueError):
            codec.encode(message)


# --- client -> server ------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("command", COMMANDS, ids=repr)
def test_command_roundtrip(codec: Codec, command: Command) -> None:
    assert client_roundtrip(codec, command) == [command]


@BOTH
def test_commands_share_a_frame(codec: Codec) -> None:
    commands: list[Command] = [
        Connect(1, token="t"),
        Subscribe(2, "a"),
        Publish(3, "a", pack("x")),
        Unsubscribe(4, "a"),
        Ping(5),
    ]
    assert client_roundtrip(codec, *commands) == commands


@BOTH
def test_most_commands_per_frame(codec: Codec) -> None:
    commands = [Ping(i) for i in range(1, MAX_COMMANDS_PER_FRAME + 1)]
    assert client_roundtrip(codec, *commands) == commands


def test_json_frame_blank_lines_and_trailing_newline() -> None:
    frame = b'\n{"id":1,"cmd":"ping"}\r\n\n  \n{"id":2,"cmd":"ping"}\n'
    assert JSON.decode_commands(frame) == [Ping(1), Ping(2)]


@BOTH
def test_unknown_keys_in_commands_are_ignored(codec: Codec) -> None:
    m = {"id": 1, "cmd": "subscribe", "channel": "a", "later": {"x": 1}}
    frame = pack(m) if codec.binary else orjson.dumps(m)
    assert codec.decode_commands(frame) == [Subscribe(1, "a")]


@BOTH
def test_optional_fields_may_be_null(codec: Codec) -> None:
    m = {"id": 1, "cmd": "connect", "token": None, "name": None}
    s = {"id": 2, "cmd": "subscribe", "channel": "a", "offset": None, "epoch": None}
    frame = codec.separator.join(pack(x) if codec.binary else orjson.dumps(x) for x in (m, s))
    assert codec.decode_commands(frame) == [Connect(1), Subscribe(2, "a")]


def test_channel_may_hold_any_printable_text() -> None:
    for channel in ("a", "chat:lobby", "user#42", "news/fr", "頻道", "😀" * 255, "$private.x-y_z"):
        assert client_roundtrip(MSGPACK, Subscribe(1, channel)) == [Subscribe(1, channel)]


def test_json_integers_up_to_64_bits() -> None:
    frame = b'{"id":1,"cmd":"publish","channel":"a","data":[18446744073709551615,-9223372036854775808,"123456789012345678901234567890",1234567890123456789012.5]}'
    [command] = JSON.decode_commands(frame)
    assert isinstance(command, Publish)
    assert msgpack.unpackb(command.data) == [
        MAX_OFFSET,
        -(2**63),
        "123456789012345678901234567890",
        1234567890123456789012.5,
    ]


# --- across codecs ---------------------------------------------------------------


def _deliver(sender: Codec, receiver: Codec, data_frame: bytes) -> object:
    """What ``receiver``'s client gets for a publish sent by ``sender``'s client."""
    [command] = sender.decode_commands(data_frame)
    assert isinstance(command, Publish)
    pub = Publication(command.channel, command.data, 1, "e", INFO)
    [back] = receiver.decode_messages(receiver.encode(pub))
    assert isinstance(back, Publication) and back.info == INFO
    return msgpack.unpackb(back.data, strict_map_key=False)


@pytest.mark.parametrize("value", VALUES, ids=repr)
def test_json_to_msgpack_and_back(value: object) -> None:
    json_frame = orjson.dumps({"id": 1, "cmd": "publish", "channel": "a", "data": value})
    msgpack_frame = pack({"id": 1, "cmd": "publish", "channel": "a", "data": value})
    for sender, frame in ((JSON, json_frame), (MSGPACK, msgpack_frame)):
        for receiver in (JSON, MSGPACK):
            assert _deliver(sender, receiver, frame) == value


def test_bin_becomes_base64_for_json_clients() -> None:
    value = {"blob": b"\x00\x01\xfe\xff", "list": [b"", b"hi"], b"\x07": 1}
    frame = MSGPACK.encode_command(Publish(1, "a", pack(value)))
    assert _deliver(MSGPACK, MSGPACK, frame) == value
    assert _deliver(MSGPACK, JSON, frame) == {"blob": "AAH+/w==", "list": ["", "aGk="], "Bw==": 1}


def test_non_string_keys_become_strings_for_json() -> None:
    # Only server-side data can hold such keys: clients' maps need string keys.
    data = msgpack.packb({1: "a", 2.5: "b", False: "c", None: "d", "s": {3: [b"\xff"]}})
    assert orjson.loads(msgpack_to_json(data)) == {
        "1": "a",
        "2.5": "b",
        "false": "c",
        "null": "d",
        "s": {"3": ["/w=="]},
    }
    assert orjson.loads(JSON.encode(Publication("a", data, 1, "e")))["data"]["s"] == {"3": ["/w=="]}


def test_json_client_publish_transcodes_bin() -> None:
    assert (
        JSON.encode_command(Publish(1, "a", pack(b"\x01"))) == b'{"id":1,"cmd":"publish","channel":"a","data":"AQ=="}'
    )


# --- codec choice ----------------------------------------------------------------


def test_codec_for() -> None:
    assert isinstance(codec_for(None), MsgpackCodec)
    assert isinstance(codec_for(MSGPACK_SUBPROTOCOL), MsgpackCodec)
    assert isinstance(codec_for(JSON_SUBPROTOCOL), JsonCodec)
    assert SUBPROTOCOLS == ("realtime.v1.msgpack", "realtime.v1.json")
    with pytest.raises(ValueError):
        codec_for("realtime.v2.msgpack")


def test_codec_attributes() -> None:
    assert (MSGPACK.name, MSGPACK.binary, MSGPACK.separator) == ("realtime.v1.msgpack", True, b"")
    assert (JSON.name, JSON.binary, JSON.separator) == ("realtime.v1.json", False, b"\n")


# --- docs/protocol.md holds exactly these bytes ------------------------------------

DOCS = Path(__file__).resolve().parent.parent / "docs" / "protocol.md"
_BLOCK = re.compile(r"<!-- example: ([\w-]+) (json|msgpack) -->\s*```\w*\n(.*?)```", re.S)


def _doc_examples() -> dict[tuple[str, str], str]:
    return {(m[1], m[2]): m[3] for m in _BLOCK.finditer(DOCS.read_text(encoding="utf-8"))}


def test_docs_show_every_example_and_nothing_else() -> None:
    assert set(_doc_examples()) == {(name, kind) for name in EXAMPLES for kind in ("json", "msgpack")}


@pytest.mark.parametrize("name", list(EXAMPLES))
def test_docs_examples_match_the_codecs(name: str) -> None:
    """On failure, regenerate the blocks with ``python -m tests.helpers``."""
    docs = _doc_examples()
    message = EXAMPLES[name]
    assert bytes.fromhex(docs[name, "msgpack"]) == encode_example(MSGPACK, message)
    assert docs[name, "json"].strip().encode() == encode_example(JSON, message)
    # and the bytes decode back to the example
    if isinstance(message, Command):
        assert MSGPACK.decode_commands(bytes.fromhex(docs[name, "msgpack"])) == [message]
    else:
        assert MSGPACK.decode_messages(bytes.fromhex(docs[name, "msgpack"]), expected_results(message)) == [message]


_INLINE = re.compile(r"`(\{\"(?:id|push)\".*?\})`")


def test_docs_inline_messages_are_what_the_codec_writes() -> None:
    """Messages quoted in the prose of docs/protocol.md (a next history page, the slow client's push) are exact."""
    spans = _INLINE.findall(DOCS.read_text(encoding="utf-8"))
    assert len(spans) >= 2
    for span in spans:
        frame = span.encode()
        if b'"cmd"' in frame:
            [command] = JSON.decode_commands(frame)
            assert isinstance(command, Command) and JSON.encode_command(command) == frame
        else:
            [message] = JSON.decode_messages(frame)
            assert JSON.encode(message) == frame
