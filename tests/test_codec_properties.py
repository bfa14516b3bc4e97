"""Property-based tests of both codecs (hypothesis), on bytes only.

Three families of properties:

* any bytes (and any text, for JSON) decode to messages or to a typed
  :class:`ProtocolError`, never another exception, on the server side
  (``decode_commands``) and on the client side (``decode_messages``);
* every valid message, built from strategies that follow the field rules
  (protocol/limits.py, the channel name rules of protocol/fields.py), encodes
  and decodes to an equal message in both codecs, alone and several to a frame;
* structure-aware fuzz: maps that are almost commands (wrong field types,
  missing and extra fields, the widest integers, nesting past
  MAX_DATA_DEPTH, non-string map keys, NaN and infinities in JSON) give a
  command or a ProtocolError in its place, and a command the server decoded
  encodes and decodes back to itself.

The run size is the hypothesis profile's (tests/conftest.py): 200 examples a
test by default, ``HYPOTHESIS_PROFILE=thorough`` for a long run by hand.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Callable
from typing import Any, get_args

import msgpack  # type: ignore[import-untyped]
import orjson
import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from protocol import (
    CODECS,
    MAX_CHANNEL_LENGTH,
    MAX_COMMANDS_PER_FRAME,
    MAX_DATA_DEPTH,
    MAX_ID,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_OFFSET,
    MAX_STATE_KEY_LENGTH,
    MAX_STATUS_USERS,
    ClientInfo,
    Codec,
    Command,
    Connect,
    ConnectResult,
    Disconnect,
    EmptyResult,
    Error,
    ErrorCode,
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
    ProtocolError,
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
    check_channel,
    msgpack_to_json,
)
from protocol.fields import CHANNEL_FORBIDDEN
from protocol.wire import COMMANDS, PUSHES, RESULT_OF, too_deep
from tests.helpers import client_roundtrip, pack, server_roundtrip

BOTH = pytest.mark.parametrize("codec", list(CODECS.values()), ids=list(CODECS))
MSGPACK = MsgpackCodec()
JSON = JsonCodec()
INT64_MIN = -(2**63)

# --- strategies: fields ------------------------------------------------------------

#: Any string msgpack and JSON can carry (no lone surrogates).
texts = st.text(st.characters(codec="utf-8"), max_size=12)
nonempty = st.text(st.characters(codec="utf-8"), min_size=1, max_size=12)
_FORBIDDEN = "".join(chr(c) for lo, hi in CHANNEL_FORBIDDEN for c in range(lo, hi + 1))
#: Valid channel names: 1..MAX_CHANNEL_LENGTH code points, none of the forbidden ones.
channels = st.text(st.characters(codec="utf-8", exclude_characters=_FORBIDDEN), min_size=1, max_size=16)
#: Up to the longest: costlier to draw, so used where a name's length matters.
long_channels = st.text(
    st.characters(codec="utf-8", exclude_characters=_FORBIDDEN), min_size=1, max_size=MAX_CHANNEL_LENGTH
)
ids = st.integers(1, MAX_ID)
uints = st.integers(0, MAX_OFFSET)
#: What both codecs carry as an integer: msgpack's int64 and uint64 ranges.
ints = st.integers(INT64_MIN, MAX_OFFSET)
floats = st.floats(allow_nan=False, allow_infinity=False)
state_keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=24)  # the longest: an @example
idempotency_keys = st.text(st.characters(codec="utf-8"), min_size=1, max_size=MAX_IDEMPOTENCY_KEY_LENGTH)


def optional(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
    return st.none() | strategy


# --- strategies: data values ---------------------------------------------------------

_scalars = st.none() | st.booleans() | ints | floats | texts
#: Values that mean the same in MessagePack and JSON (string keys, no bin), within the depth limit.


def containers(keys: st.SearchStrategy[Any], size: int = 4) -> Callable[[st.SearchStrategy[Any]], Any]:
    """Arrays and maps (with ``keys``) of a recursive strategy's inner values.

    A named function, not a lambda: hypothesis reads a lambda's source to describe
    it and warns when it cannot find the argument used.
    """

    def extend(inner: st.SearchStrategy[Any]) -> st.SearchStrategy[Any]:
        return st.lists(inner, max_size=size) | st.dictionaries(keys, inner, max_size=size)

    return extend


def within_depth(value: object) -> bool:
    return not too_deep(value)


values = st.recursive(_scalars, containers(texts), max_leaves=12).filter(within_depth)
#: MessagePack-only values as well: bin, and bin map keys (a client's maps need str or bin keys).
msgpack_values = st.recursive(
    _scalars | st.binary(max_size=12), containers(texts | st.binary(max_size=6)), max_leaves=12
).filter(within_depth)
maps = st.dictionaries(texts, values, max_size=4)


def data_of(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes]:
    """``data`` as messages hold it: the msgpack encoding of a value."""
    return strategy.map(pack)


#: An optional msgpack value where nil means "none" (info, a state entry's value): never nil itself.
def info_of(strategy: st.SearchStrategy[Any]) -> st.SearchStrategy[bytes | None]:
    return st.none() | data_of(strategy.filter(is_not_none))


def is_not_none(value: object) -> bool:
    return value is not None


# --- strategies: commands ----------------------------------------------------------------


def commands(data: st.SearchStrategy[Any] = values) -> st.SearchStrategy[Command]:
    """Every command, each field within its rules."""
    positions = st.builds(StreamPosition, uints, texts)
    no_before_and_after = st.one_of(
        st.builds(History, ids, channels, optional(uints), optional(uints)),
        st.builds(History, ids, channels, optional(uints), after=optional(uints)),
    )
    return st.one_of(
        st.builds(Connect, ids, optional(texts), optional(texts), optional(texts)),
        st.builds(Subscribe, ids, channels, optional(positions), optional(texts), optional(uints)),
        st.builds(Unsubscribe, ids, channels),
        st.builds(Publish, ids, channels, data_of(data), optional(idempotency_keys)),
        st.builds(Ping, ids),
        st.builds(Refresh, ids, texts),
        no_before_and_after,
        st.builds(Typing, ids, channels, st.booleans()),
        st.builds(Read, ids, channels, uints),
        st.builds(Receipts, ids, channels),
        st.builds(PresenceQuery, ids, channels),
        st.builds(PresenceStatsQuery, ids, channels),
        st.builds(StateSet, ids, channels, state_keys, data_of(data), optional(uints)),
        st.builds(StatePatch, ids, channels, state_keys, data_of(maps), optional(uints)),
        st.builds(StatusQuery, ids, st.lists(nonempty, min_size=1, max_size=8).map(tuple)),  # the most: an @example
    )


def _renumber(commands: list[Command]) -> list[Command]:
    """Distinct ids, as a frame needs (a repeated id is DUPLICATE_ID)."""
    return [dataclasses.replace(c, id=i + 1) for i, c in enumerate(commands)]


# --- strategies: pushes and replies --------------------------------------------------------

user_statuses = st.builds(UserStatus, texts, st.booleans(), ints)
client_infos = st.builds(ClientInfo, texts, texts, info_of(values))


def publications(data: st.SearchStrategy[Any] = values) -> st.SearchStrategy[Publication]:
    # ``time`` travels only with a ``mid`` (chat): without one it is 0.
    return st.one_of(
        st.builds(Publication, texts, data_of(data), uints, texts, optional(client_infos)),
        st.builds(Publication, texts, data_of(data), uints, texts, optional(client_infos), nonempty, ints),
    )


pubs = st.lists(publications(), max_size=3).map(tuple)
state_entries = st.builds(StateEntry, texts, info_of(values), uints)
state_changes = st.one_of(
    st.builds(StateChange, texts, texts, uints, value=data_of(values)),
    st.builds(StateChange, texts, texts, uints, patch=data_of(maps)),
)
pushes: st.SearchStrategy[ServerMessage] = st.one_of(
    publications(),
    st.builds(Disconnect, ints, texts, st.booleans()),
    st.builds(Join, texts, texts, info_of(values)),
    st.builds(Leave, texts, texts),
    st.builds(TypingNotice, texts, texts, st.booleans(), floats),
    st.builds(ReadNotice, texts, texts, uints),
    state_changes,
    st.builds(StatusNotice, texts, user_statuses),
    st.builds(Unsubscribed, texts, texts),
)
results = st.one_of(
    st.builds(ConnectResult, texts, texts, floats, texts, ints),
    st.builds(
        SubscribeResult,
        uints,
        texts,
        st.booleans(),
        st.booleans(),
        pubs,
        uints,
        st.lists(state_entries, max_size=3).map(tuple),
        optional(user_statuses),
    ),
    st.builds(PublishResult, uints, texts),
    st.builds(PublishResult, uints, texts, nonempty, ints),
    st.just(EmptyResult()),
    st.builds(RefreshResult, ints),
    st.builds(HistoryResult, pubs, uints, texts),
    st.builds(ReadResult, uints),
    st.builds(ReceiptsResult, st.dictionaries(texts, uints, max_size=4)),
    st.builds(PresenceResult, st.dictionaries(texts, st.builds(PresenceMember, texts, info_of(values)), max_size=4)),
    st.builds(PresenceStatsResult, uints, uints),
    st.builds(StateResult, uints),
    st.builds(StatusResult, st.lists(user_statuses, max_size=4).map(tuple)),
)
replies = st.one_of(
    st.builds(Reply, ids, results),
    st.builds(Reply, st.integers(0, MAX_ID), error=st.builds(Error, ints, texts)),
)
server_messages = pushes | replies


def _renumber_replies(messages: list[ServerMessage]) -> list[ServerMessage]:
    """Distinct reply ids: a client awaits one reply per command id."""
    out: list[ServerMessage] = []
    for i, m in enumerate(messages):
        out.append(dataclasses.replace(m, id=i + 1) if isinstance(m, Reply) else m)
    return out


# --- round trips ---------------------------------------------------------------------------


@BOTH
@given(command=commands())
@example(command=StatusQuery(MAX_ID, tuple(f"user{i}" for i in range(MAX_STATUS_USERS))))
@example(command=StateSet(1, "a", "k" * MAX_STATE_KEY_LENGTH, pack(None), MAX_OFFSET))
@example(command=StatePatch(1, "a", "é" * MAX_STATE_KEY_LENGTH, pack({"a": None}), 0))
def test_every_command_roundtrips(codec: Codec, command: Command) -> None:
    assert client_roundtrip(codec, command) == [command]


@given(command=commands(msgpack_values))
def test_every_command_roundtrips_msgpack_with_bin(command: Command) -> None:
    assert client_roundtrip(MSGPACK, command) == [command]


@BOTH
@given(channel=long_channels, id=ids)
def test_every_channel_name_roundtrips(codec: Codec, channel: str, id: int) -> None:
    commands: list[Command] = [Subscribe(id, channel), Publish(id % MAX_ID + 1, channel, pack(None))]
    assert client_roundtrip(codec, *commands) == commands


@BOTH
@given(frame=st.lists(commands(), min_size=1, max_size=8).map(_renumber))
@example(frame=[Ping(i) for i in range(1, MAX_COMMANDS_PER_FRAME + 1)])
def test_frames_of_several_commands_roundtrip(codec: Codec, frame: list[Command]) -> None:
    assert client_roundtrip(codec, *frame) == frame


@BOTH
@given(message=server_messages)
def test_every_server_message_roundtrips(codec: Codec, message: ServerMessage) -> None:
    assert server_roundtrip(codec, message) == [message]


@given(message=publications(msgpack_values) | st.builds(Join, texts, texts, info_of(msgpack_values)))
def test_server_messages_roundtrip_msgpack_with_bin(message: ServerMessage) -> None:
    assert server_roundtrip(MSGPACK, message) == [message]


@BOTH
@given(frame=st.lists(server_messages, min_size=1, max_size=6).map(_renumber_replies))
def test_frames_of_several_server_messages_roundtrip(codec: Codec, frame: list[ServerMessage]) -> None:
    assert server_roundtrip(codec, *frame) == frame


@given(message=server_messages)
def test_a_relayed_message_transcodes_to_the_json_encoding(message: ServerMessage) -> None:
    """What a node relays as MessagePack becomes the same JSON bytes the JSON codec makes."""
    assert JSON.from_msgpack(MSGPACK.encode(message)) == JSON.encode(message)


#: Any msgpack value a node could hold: bin, and keys of every type (server-side data may have them).
relayed_values = st.recursive(
    _scalars | st.binary(max_size=12),
    containers(texts | st.binary(max_size=6) | ints | st.booleans() | st.none()),
    max_leaves=12,
)


@given(value=relayed_values)
def test_any_msgpack_value_transcodes_to_json(value: object) -> None:
    assert isinstance(orjson.loads(msgpack_to_json(pack(value))), type(_json_kind(value)))


def _json_kind(value: object) -> object:
    """What JSON makes of a value's type: bin is a base64 string, any map an object."""
    return "" if isinstance(value, bytes) else value


@given(data=st.binary(max_size=256))
@example(data=b"\x91" * 255 + b"\xc0")  # 255 arrays deep: one more than orjson writes
@example(data=b"\x81\x01" * 255 + b"\xc0")  # and maps with an int key: the slow path
@example(data=b"\x91" * 600 + b"\xc0")  # was a RecursionError
@example(data=b"\x81\x01" * 1000 + b"\xc0")  # was a RecursionError
def test_the_relay_transcoder_gives_json_or_a_value_error(data: bytes) -> None:
    """``from_msgpack`` turns any bytes into JSON text or raises ValueError, as documented."""
    try:
        text = JSON.from_msgpack(data)
    except ValueError:
        return
    orjson.loads(text)


# --- any input: messages or a typed error ------------------------------------------------------


def decode_commands_or_typed_error(codec: Codec, frame: bytes) -> list[Command]:
    """Decode as the hub does; fail on anything but commands and typed errors.

    Returns the commands that decoded. Each error in a command's place carries
    a documented code and an id the reply may use.
    """
    try:
        items = codec.decode_commands(frame)
    except ProtocolError as exc:
        assert (exc.code, exc.id) == (ErrorCode.BAD_REQUEST, 0)
        return []
    assert 0 < len(items) <= MAX_COMMANDS_PER_FRAME
    out: list[Command] = []
    for item in items:
        if isinstance(item, ProtocolError):
            assert isinstance(item.code, ErrorCode)
            assert 0 <= item.id <= MAX_ID
            assert item.message
        else:
            assert type(item) in RESULT_OF
            out.append(item)
    return out


def assert_decoded_commands_are_valid(codec: Codec, commands: list[Command]) -> None:
    """A command the server decoded is within the rules: it encodes and decodes to itself."""
    for command in commands:
        assert 0 < command.id <= MAX_ID
        channel = getattr(command, "channel", None)
        if channel is not None:
            check_channel(channel)
        for name in ("data", "value", "patch"):
            blob = getattr(command, name, None)
            if blob is not None:
                assert not too_deep(msgpack.unpackb(blob, strict_map_key=False))
        assert client_roundtrip(codec, command) == [command]


@BOTH
@given(frame=st.binary(max_size=512))
@example(frame=b"")
@example(frame=b"\xc1")
@example(frame=b"\x91" * 2000)
@example(frame=b"[" * 2000)
def test_any_bytes_decode_to_commands_or_a_typed_error(codec: Codec, frame: bytes) -> None:
    decoded = decode_commands_or_typed_error(codec, frame)
    assert_decoded_commands_are_valid(codec, decoded)


#: Any text, lone surrogates included (they make invalid UTF-8).
any_text = st.text(st.characters(exclude_categories=()), max_size=256)


@given(text=any_text)
@example(text='{"id":1,"cmd":"ping"}\n' * (MAX_COMMANDS_PER_FRAME + 1))
@example(text='{"id":1,"cmd":"ping","x":"\\ud800"}')
def test_any_text_decodes_to_commands_or_a_typed_error(text: str) -> None:
    frame = text.encode("utf-8", "surrogatepass")  # a lone surrogate makes invalid UTF-8: still typed
    assert_decoded_commands_are_valid(JSON, decode_commands_or_typed_error(JSON, frame))


def decode_messages_or_typed_error(codec: Codec, frame: bytes) -> None:
    expected = {1: ConnectResult, 2: SubscribeResult, 3: HistoryResult, 4: EmptyResult, 5: PresenceResult}
    try:
        messages = codec.decode_messages(frame, expected)
    except ProtocolError:
        return
    for message in messages:
        assert isinstance(message, (Reply, *PUSH_TYPES))


PUSH_TYPES = get_args(Push)


@BOTH
@given(frame=st.binary(max_size=512))
@example(frame=b"\x81\xa4push\xa6status")
def test_a_client_decodes_any_bytes_to_messages_or_a_typed_error(codec: Codec, frame: bytes) -> None:
    decode_messages_or_typed_error(codec, frame)


@given(text=any_text)
def test_a_client_decodes_any_text_to_messages_or_a_typed_error(text: str) -> None:
    decode_messages_or_typed_error(JSON, text.encode("utf-8", "surrogatepass"))


# --- structure-aware fuzz ------------------------------------------------------------------

#: Every key any command or server message reads, so that fuzzed maps hit real fields.
FIELD_KEYS = sorted(
    {f.key for spec in COMMANDS.values() for f in spec.fields}
    | {"channel", "data", "key", "offset", "epoch", "token", "version", "result", "error", "push"}
    | {"code", "message", "reason", "user", "online", "last_seen", "publications", "state", "status"}
    | {"client", "ping", "expires", "recoverable", "recovered", "presence", "receipts", "read", "clients", "users"}
    | {"typing", "timeout", "patch", "value", "mid", "time", "info"}
)
COMMAND_NAMES = sorted({*COMMANDS, "publish", "subscribe"})

#: The widest integers each format holds, and their neighbours.
_edge_ints = st.sampled_from([0, 1, -1, MAX_ID, MAX_ID + 1, MAX_OFFSET, MAX_OFFSET - 1, INT64_MIN, INT64_MIN + 1])
_wild_scalars = (
    st.none()
    | st.booleans()
    | ints
    | _edge_ints
    | st.floats()  # NaN and the infinities included
    | texts
    | st.binary(max_size=8)
)
wild_values = st.recursive(_wild_scalars, containers(texts, 3), max_leaves=6)


def nested(depth: int, leaf: object = 0) -> object:
    """A value ``depth`` containers deep, alternating maps and arrays."""
    value = leaf
    for i in range(depth):
        value = {"k": value} if i % 2 else [value]
    return value


@st.composite
def almost_commands(draw: st.DrawFn) -> dict[Any, Any]:
    """A map that is a command with some fields missing, extra, or of the wrong type."""
    m: dict[Any, Any] = {}
    if draw(st.integers(0, 9)):  # mostly a valid id and cmd, so the fields are read
        m["id"] = draw(ids | _edge_ints)
    if draw(st.integers(0, 9)):
        m["cmd"] = draw(st.sampled_from(COMMAND_NAMES) | texts)
    for key in draw(st.lists(st.sampled_from(FIELD_KEYS), max_size=4)):
        m[key] = draw(
            st.one_of(
                wild_values,
                channels,
                uints,
                st.integers(MAX_DATA_DEPTH - 2, MAX_DATA_DEPTH + 2).map(nested),
                st.dictionaries(texts, wild_values, max_size=3),
            )
        )
    for key in draw(st.lists(texts, max_size=2)):  # unknown keys are ignored
        m[key] = draw(wild_values)
    return m


@given(maps=st.lists(almost_commands(), min_size=1, max_size=3))
@example(maps=[{"id": 1, "cmd": "publish", "channel": "a", "data": nested(MAX_DATA_DEPTH + 1)}])
@example(maps=[{"id": 1, "cmd": "state_patch", "channel": "a", "key": "k", "patch": nested(MAX_DATA_DEPTH)}])
@example(maps=[{"id": MAX_OFFSET, "cmd": "ping"}, {"id": INT64_MIN, "cmd": "ping"}])
@example(maps=[{"id": 1, "cmd": "history", "channel": "a", "before": 1, "after": 2}])
def test_msgpack_almost_commands_give_commands_or_typed_errors(maps: list[dict[Any, Any]]) -> None:
    frame = b"".join(pack(m) for m in maps)
    assert_decoded_commands_are_valid(MSGPACK, decode_commands_or_typed_error(MSGPACK, frame))


@given(maps=st.lists(almost_commands(), min_size=1, max_size=3))
@example(maps=[{"id": 1, "cmd": "publish", "channel": "a", "data": float("nan")}])
@example(maps=[{"id": 1, "cmd": "publish", "channel": "a", "data": [float("inf"), float("-inf")]}])
@example(maps=[{"id": 1, "cmd": "read", "channel": "a", "offset": 2**64}])
@example(maps=[{"id": 2**70, "cmd": "ping"}])
@example(maps=[{"id": 1, "cmd": "publish", "channel": "a", "data": -(2**63) - 1}])
def test_json_almost_commands_give_commands_or_typed_errors(maps: list[dict[Any, Any]]) -> None:
    # The standard library writes what orjson would not: NaN, Infinity, integers past 64 bits.
    lines = [json.dumps(m, default=lambda b: b.hex(), allow_nan=True) for m in maps]
    decoded = decode_commands_or_typed_error(JSON, "\n".join(lines).encode())
    assert_decoded_commands_are_valid(JSON, decoded)


@st.composite
def almost_server_messages(draw: st.DrawFn) -> dict[Any, Any]:
    """A map that is a push or a reply with some fields missing, extra, or of the wrong type."""
    m: dict[Any, Any] = {}
    if draw(st.booleans()):
        m["push"] = draw(st.sampled_from([*PUSHES, "status"]) | texts)
    else:
        m["id"] = draw(st.integers(1, 5) | _edge_ints)
        m["result" if draw(st.booleans()) else "error"] = draw(
            st.dictionaries(st.sampled_from(FIELD_KEYS), wild_values | uints | texts, max_size=4)
        )
    for key in draw(st.lists(st.sampled_from(FIELD_KEYS), max_size=4)):
        m[key] = draw(st.one_of(wild_values, uints, texts, st.lists(st.dictionaries(texts, _wild_scalars), max_size=2)))
    return m


@given(maps=st.lists(almost_server_messages(), min_size=1, max_size=3), codec=st.sampled_from(list(CODECS.values())))
def test_almost_server_messages_give_messages_or_a_typed_error(maps: list[dict[Any, Any]], codec: Codec) -> None:
    if codec.binary:
        frame = b"".join(pack(m) for m in maps)
    else:
        frame = "\n".join(json.dumps(m, default=lambda b: b.hex(), allow_nan=True) for m in maps).encode()
    decode_messages_or_typed_error(codec, frame)


@given(
    command=st.sampled_from(["publish", "state_set"]),
    depth=st.integers(0, 3 * MAX_DATA_DEPTH),
    codec=st.sampled_from(list(CODECS.values())),
)
@example(command="publish", depth=MAX_DATA_DEPTH, codec=MSGPACK)
@example(command="publish", depth=MAX_DATA_DEPTH + 1, codec=MSGPACK)
@example(command="state_set", depth=MAX_DATA_DEPTH + 1, codec=JSON)
def test_data_deeper_than_the_limit_is_refused_with_the_command_id(command: str, depth: int, codec: Codec) -> None:
    field = "data" if command == "publish" else "value"
    m = {"id": 7, "cmd": command, "channel": "a", "key": "k", field: nested(depth)}
    [item] = codec.decode_commands(pack(m) if codec.binary else orjson.dumps(m))
    if depth > MAX_DATA_DEPTH:
        assert isinstance(item, ProtocolError)
        assert (item.code, item.id) == (ErrorCode.BAD_REQUEST, 7)
    else:
        assert not isinstance(item, ProtocolError)


@BOTH
@given(depth=st.integers(MAX_DATA_DEPTH, 5000))
@example(depth=100_000)
def test_any_nesting_is_a_typed_error_not_a_crash(codec: Codec, depth: int) -> None:
    """Far past the limit: the frame's parser or the depth check refuses it, never a RecursionError."""
    if codec.binary:
        head = b"".join(pack(x) for x in ("id", 1, "cmd", "publish", "channel", "a", "data"))
        frame = b"\x84" + head + b"\x91" * depth + b"\xc0"  # data: [[[...nil...]]]
    else:
        frame = b'{"id":1,"cmd":"publish","channel":"a","data":' + b"[" * depth + b"]" * depth + b"}"
    decode_commands_or_typed_error(codec, frame)


@given(
    key=st.one_of(st.integers(INT64_MIN, MAX_OFFSET), st.floats(), st.booleans(), st.none()),
    where=st.sampled_from(["top", "data", "value"]),
)
def test_msgpack_non_string_map_keys_are_a_typed_error(key: object, where: str) -> None:
    inner = {key: 1}
    if where == "top":
        m: dict[Any, Any] = {"id": 1, "cmd": "ping", **inner}
    elif where == "data":
        m = {"id": 1, "cmd": "publish", "channel": "a", "data": inner}
    else:
        m = {"id": 1, "cmd": "state_set", "channel": "a", "key": "k", "value": [inner]}
    frame = msgpack.packb(m)
    with pytest.raises(ProtocolError) as info:
        MSGPACK.decode_commands(frame)
    assert (info.value.code, info.value.id, info.value.message) == (
        ErrorCode.BAD_REQUEST,
        0,
        "map keys must be strings",
    )


@pytest.mark.parametrize("literal", [b"NaN", b"-NaN", b"Infinity", b"-Infinity", b"1e400", b"-1e400", b"nan"])
def test_json_nan_and_infinities_are_a_typed_error(literal: bytes) -> None:
    frame = b'{"id":1,"cmd":"publish","channel":"a","data":[' + literal + b"]}"
    with pytest.raises(ProtocolError) as info:
        JSON.decode_commands(frame)
    assert (info.value.code, info.value.id) == (ErrorCode.BAD_REQUEST, 0)


@given(channel=channels | long_channels)
def test_the_channel_strategy_meets_the_rules(channel: str) -> None:
    """The generator stays inside the rules it claims (one drifting outside would prove nothing)."""
    assert check_channel(channel) == channel
    assert len(channel) <= MAX_CHANNEL_LENGTH
