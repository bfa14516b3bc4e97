"""Protocol v1 of the realtime hub: messages, codes, errors and the two codecs.

Pure: bytes in, typed messages out; no sockets, no asyncio. Pick a codec with
:func:`codec_for` from the negotiated WebSocket subprotocol, then call
``decode_commands``/``encode`` (server) or ``encode_command``/``decode_messages``
(client), and ``from_msgpack`` to turn a message that crossed nodes as
MessagePack into the client's codec. The wire format is described in
docs/protocol.md.
"""

from __future__ import annotations

from .codec import Codec
from .codes import CLOSE_REASONS, CloseCode, ErrorCode, should_reconnect
from .errors import CommandError, DisconnectError, ProtocolError, RealtimeError
from .json_codec import JsonCodec, msgpack_to_json
from .limits import (
    JSON_SUBPROTOCOL,
    MAX_CHANNEL_LENGTH,
    MAX_COMMANDS_PER_FRAME,
    MAX_DATA_DEPTH,
    MAX_HISTORY_PAGE,
    MAX_ID,
    MAX_IDEMPOTENCY_KEY_LENGTH,
    MAX_OFFSET,
    MAX_STATE_KEY_LENGTH,
    MAX_STATUS_USERS,
    MSGPACK_SUBPROTOCOL,
    PROTOCOL_VERSION,
    RECOVER,
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
from .msgpack_codec import MsgpackCodec
from .wire import NO_RESULTS, RESULT_OF, Expected, check_channel

#: One stateless instance of each codec, by subprotocol name, in the server's
#: order of preference (offer them in this order in the WebSocket handshake).
CODECS: dict[str, Codec] = {
    MSGPACK_SUBPROTOCOL: MsgpackCodec(),
    JSON_SUBPROTOCOL: JsonCodec(),
}
#: The subprotocols the hub speaks, preferred first.
SUBPROTOCOLS: tuple[str, ...] = tuple(CODECS)


def codec_for(subprotocol: str | None) -> Codec:
    """The codec for a negotiated subprotocol; MessagePack when none was negotiated.

    Raises ValueError for a name that is not in :data:`SUBPROTOCOLS`.
    """
    if subprotocol is None:
        return CODECS[MSGPACK_SUBPROTOCOL]
    try:
        return CODECS[subprotocol]
    except KeyError:
        raise ValueError(f"unknown subprotocol {subprotocol!r}") from None


__all__ = [
    "CLOSE_REASONS",
    "CODECS",
    "JSON_SUBPROTOCOL",
    "MAX_CHANNEL_LENGTH",
    "MAX_COMMANDS_PER_FRAME",
    "MAX_DATA_DEPTH",
    "MAX_HISTORY_PAGE",
    "MAX_ID",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_OFFSET",
    "MAX_STATE_KEY_LENGTH",
    "MAX_STATUS_USERS",
    "MSGPACK_SUBPROTOCOL",
    "NO_RESULTS",
    "PROTOCOL_VERSION",
    "RECOVER",
    "RESULT_OF",
    "SUBPROTOCOLS",
    "ClientInfo",
    "CloseCode",
    "Codec",
    "Command",
    "CommandError",
    "Connect",
    "ConnectResult",
    "Disconnect",
    "DisconnectError",
    "EmptyResult",
    "Error",
    "ErrorCode",
    "Expected",
    "History",
    "HistoryResult",
    "Join",
    "JsonCodec",
    "Leave",
    "MsgpackCodec",
    "Ping",
    "PresenceMember",
    "PresenceQuery",
    "PresenceResult",
    "PresenceStatsQuery",
    "PresenceStatsResult",
    "ProtocolError",
    "Publication",
    "Publish",
    "PublishResult",
    "Push",
    "Read",
    "ReadNotice",
    "ReadResult",
    "RealtimeError",
    "Receipts",
    "ReceiptsResult",
    "Refresh",
    "RefreshResult",
    "Reply",
    "Result",
    "Rpc",
    "RpcResult",
    "ServerMessage",
    "StateChange",
    "StateEntry",
    "StatePatch",
    "StateResult",
    "StateSet",
    "StatusNotice",
    "StatusQuery",
    "StatusResult",
    "StreamPosition",
    "Subscribe",
    "SubscribeResult",
    "Typing",
    "TypingNotice",
    "Unsubscribe",
    "Unsubscribed",
    "UserStatus",
    "check_channel",
    "codec_for",
    "msgpack_to_json",
    "should_reconnect",
]
