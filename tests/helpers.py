"""Round-trip helpers and the worked examples of docs/protocol.md.

``python -m tests.helpers`` prints the examples' JSON and msgpack hex in the
form docs/protocol.md uses; tests/test_codec_roundtrip.py checks that the docs
hold exactly these bytes.
"""

from __future__ import annotations

import msgpack  # type: ignore[import-untyped]

from protocol import (
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
    Publication,
    Publish,
    PublishResult,
    Read,
    ReadNotice,
    ReadResult,
    Refresh,
    RefreshResult,
    Reply,
    Result,
    ServerMessage,
    StateChange,
    StateResult,
    StateSet,
    StatusQuery,
    StatusResult,
    StreamPosition,
    Subscribe,
    SubscribeResult,
    Typing,
    TypingNotice,
    UserStatus,
)


def pack(value: object) -> bytes:
    """``data`` as the hub holds it: the msgpack encoding of a value."""
    result: bytes = msgpack.packb(value)
    return result


def server_roundtrip(codec: Codec, *messages: ServerMessage) -> list[ServerMessage]:
    """Encode messages on the server, in one frame, and decode them as a client would."""
    frame = codec.separator.join(codec.encode(m) for m in messages)
    return codec.decode_messages(frame, expected_results(*messages))


def expected_results(*messages: object) -> dict[int, type[Result]]:
    """What a client that sent the commands these replies answer expects: id -> result type."""
    return {m.id: type(m.result) for m in messages if isinstance(m, Reply) and m.result is not None}


def client_roundtrip(codec: Codec, *commands: Command) -> list[object]:
    """Encode commands on the client, in one frame, and decode them as the server would."""
    frame = codec.separator.join(codec.encode_command(c) for c in commands)
    return list(codec.decode_commands(frame))


_HI = pack({"text": "hi"})
_PUB = Publication("chat:lobby", _HI, 42, "Xq3v", ClientInfo("alice", "c0ffee"))
_CHAT_PUB = Publication("chat:lobby", _HI, 42, "Xq3v", ClientInfo("alice", "c0ffee"), mid="01HV7Z", time=1767225600123)

#: name -> the message; docs/protocol.md shows each in JSON and as msgpack hex.
EXAMPLES: dict[str, Command | ServerMessage] = {
    "connect": Connect(1, token="abc.def.ghi", name="swift", version="1.2.0"),
    "connect-reply": Reply(1, ConnectResult("c0ffee", "0.1.0", 25.0, "alice", expires=1767225600)),
    "subscribe": Subscribe(2, "chat:lobby"),
    "subscribe-reply": Reply(2, SubscribeResult(41, "Xq3v", recoverable=True)),
    "publish": Publish(3, "chat:lobby", _HI),
    "publish-reply": Reply(3, PublishResult(42, "Xq3v")),
    "publication": _PUB,
    "resubscribe": Subscribe(4, "chat:lobby", StreamPosition(41, "Xq3v")),
    "resubscribe-reply": Reply(
        4,
        SubscribeResult(42, "Xq3v", recoverable=True, recovered=True, publications=(_PUB,)),
    ),
    "ping": Ping(5),
    "ping-reply": Reply(5, EmptyResult()),
    "error-reply": Reply(6, error=Error(103, "permission denied")),
    "disconnect": Disconnect(4001, "shutdown", True),
    "refresh": Refresh(7, "jkl.mno.pqr"),
    "refresh-reply": Reply(7, RefreshResult(1767229200)),
    "history": History(8, "chat:lobby", limit=1, before=43),
    "history-reply": Reply(8, HistoryResult((_CHAT_PUB,), 43, "Xq3v")),
    "typing": Typing(9, "chat:lobby"),
    "typing-push": TypingNotice("chat:lobby", "alice", True, 6.0),
    "read": Read(10, "chat:lobby", 42),
    "read-reply": Reply(10, ReadResult(42)),
    "read-push": ReadNotice("chat:lobby", "bob", 42),
    "state-set": StateSet(11, "match:7", "score", pack({"home": 1, "away": 0}), version=3),
    "state-set-reply": Reply(11, StateResult(4)),
    "state-push": StateChange("match:7", "score", 5, patch=pack({"away": 1})),
    "join": Join("chat:lobby", "bob", pack({"name": "Bob"})),
    "leave": Leave("chat:lobby", "bob"),
    "status": StatusQuery(12, ("alice", "bob")),
    "status-reply": Reply(12, StatusResult((UserStatus("alice", True), UserStatus("bob", False, 1767225600000)))),
}


def encode_example(codec: Codec, message: Command | ServerMessage) -> bytes:
    if isinstance(message, Command):
        return codec.encode_command(message)
    return codec.encode(message)


def hex_lines(data: bytes, per_line: int = 16) -> str:
    """Bytes as lowercase hex, space-separated, ``per_line`` bytes a line."""
    return "\n".join(data[i : i + per_line].hex(" ") for i in range(0, len(data), per_line))


def main() -> None:
    for name, message in EXAMPLES.items():
        print(f"<!-- example: {name} json -->\n```json")
        print(encode_example(JsonCodec(), message).decode())
        print(f"```\n<!-- example: {name} msgpack -->\n```text")
        print(hex_lines(encode_example(MsgpackCodec(), message)))
        print("```\n")


if __name__ == "__main__":
    main()
