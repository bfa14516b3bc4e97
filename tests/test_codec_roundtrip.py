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
    MAX_OFFSET,
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
    JsonCodec,
    MsgpackCodec,
    Ping,
    Publication,
    Publish,
    PublishResult,
    Reply,
    ServerMessage,
    StreamPosition,
    Subscribe,
    SubscribeResult,
    Unsubscribe,
    codec_for,
    msgpack_to_json,
)
from tests.helpers import EXAMPLES, client_roundtrip, encode_example, pack, server_roundtrip

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

SERVER_MESSAGES: list[ServerMessage] = [
    PUB,
    Publication("chat:lobby", pack({"text": "hi"}), 42, "Xq3v", INFO),
    Publication("chat:lobby", pack([1, 2]), MAX_OFFSET, "Xq3v", INFO_EXTRA),
    Publication("c" * 255, pack(None), 0, ""),
    Disconnect(4001, "shutdown", True),
    Disconnect(4500, "bad request", False),
    Reply(1, ConnectResult("c0ffee", "0.1.0", 25.0, "alice")),
    Reply(1, ConnectResult("c0ffee", "0.1.0", 0.5)),
    Reply(2, SubscribeResult(41, "Xq3v")),
    Reply(2, SubscribeResult(41, "Xq3v", recoverable=True, recovered=True)),
    Reply(2, SubscribeResult(44, "Xq3v", True, True, (PUB, Publication("chat:lobby", pack(1), 43, "Xq3v", INFO)))),
    Reply(2, SubscribeResult(60, "Xq3v", True, True, tuple(Publication("a", pack(i), i, "e") for i in range(20)))),
    Reply(3, PublishResult(42, "Xq3v")),
    Reply(MAX_ID, EmptyResult()),
    Reply(0, error=Error(107, "bad request")),
    Reply(7, error=Error(103, "permission denied")),
]

COMMANDS: list[Command] = [
    Connect(1),
    Connect(1, token="abc.def.ghi", name="kotlin", version="1.0"),
    Connect(1, token=""),
    Subscribe(2, "chat:lobby"),
    Subscribe(2, "chat:lobby", StreamPosition(0, "")),
    Subscribe(2, "chat:lobby", StreamPosition(MAX_OFFSET, "Xq3v")),
    Unsubscribe(3, "chat:lobby"),
    *(Publish(4, "chat:lobby", pack(v)) for v in VALUES),
    Ping(MAX_ID),
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
    assert MSGPACK.decode_messages(b"".join(pack(m) for m in future)) == [Reply(3, PublishResult(1, "e"))]
    assert JSON.decode_messages(b"\n".join(orjson.dumps(m) for m in future)) == [Reply(3, PublishResult(1, "e"))]


# --- client -> server ------------------------------------------------------------


@BOTH
@pytest.mark.parametrize("command", COMMANDS, ids=repr)
def test_command_roundtrip(codec: Codec, command: Command) -> None:
    assert client_roundtrip(codec, command) == [command]


@BOTH
def test_commands_share_a_frame(codec: Codec) -> None:
    commands: list[Command] = [Connect(1, token="t"), Subscribe(2, "a"), Publish(3, "a", pack("x")), Unsubscribe(4, "a"), Ping(5)]
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
    assert msgpack.unpackb(command.data) == [MAX_OFFSET, -(2**63), "123456789012345678901234567890", 1234567890123456789012.5]


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
    assert orjson.loads(msgpack_to_json(data)) == {"1": "a", "2.5": "b", "false": "c", "null": "d", "s": {"3": ["/w=="]}}
    assert orjson.loads(JSON.encode(Publication("a", data, 1, "e")))["data"]["s"] == {"3": ["/w=="]}


def test_json_client_publish_transcodes_bin() -> None:
    assert JSON.encode_command(Publish(1, "a", pack(b"\x01"))) == b'{"id":1,"cmd":"publish","channel":"a","data":"AQ=="}'


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
    if isinstance(message, (Connect, Subscribe, Unsubscribe, Publish, Ping)):
        assert MSGPACK.decode_commands(bytes.fromhex(docs[name, "msgpack"])) == [message]
    else:
        assert MSGPACK.decode_messages(bytes.fromhex(docs[name, "msgpack"])) == [message]
