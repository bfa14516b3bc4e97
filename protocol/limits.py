"""Every wire limit and constant that the codecs, the hub, the server API and the SDKs share.

One home, so that a limit the wire enforces and a limit a server module or an
SDK checks cannot drift apart. Plain values only: this module imports nothing.
docs/protocol.md states the same numbers.
"""

from __future__ import annotations

from typing import Final

__all__ = [
    "JSON_SUBPROTOCOL",
    "MAX_CHANNEL_LENGTH",
    "MAX_COMMANDS_PER_FRAME",
    "MAX_DATA_DEPTH",
    "MAX_HISTORY_PAGE",
    "MAX_ID",
    "MAX_IDEMPOTENCY_KEY_LENGTH",
    "MAX_OFFSET",
    "MAX_PRESENCE_REPLY",
    "MAX_RPC_METHOD_LENGTH",
    "MAX_STATE_KEY_LENGTH",
    "MAX_STATUS_USERS",
    "MSGPACK_SUBPROTOCOL",
    "PROTOCOL_VERSION",
    "RECOVER",
]

#: The protocol version these codecs speak.
PROTOCOL_VERSION: Final = 1
#: The WebSocket subprotocols of protocol v1, one per codec.
MSGPACK_SUBPROTOCOL: Final = "realtime.v1.msgpack"
JSON_SUBPROTOCOL: Final = "realtime.v1.json"

#: Command ids are 1..MAX_ID (uint32); replies use 0 when the id was unreadable.
MAX_ID: Final = 2**32 - 1
#: Offsets, versions and limits are uint64.
MAX_OFFSET: Final = 2**64 - 1
#: Longest channel name, in characters.
MAX_CHANNEL_LENGTH: Final = 255
#: Longest ``publish.key`` (idempotency key), in characters.
MAX_IDEMPOTENCY_KEY_LENGTH: Final = 64
#: Longest key of a live channel's state, in characters.
MAX_STATE_KEY_LENGTH: Final = 255
#: Longest ``rpc.method``, in characters.
MAX_RPC_METHOD_LENGTH: Final = 255
#: Most users one ``status`` command (or server API status query) may ask about.
MAX_STATUS_USERS: Final = 100
#: Deepest nesting accepted inside ``data`` (a map or array inside a map counts 2).
MAX_DATA_DEPTH: Final = 32
#: Most commands one frame may carry.
MAX_COMMANDS_PER_FRAME: Final = 100
#: Most entries one ``presence`` or ``receipts`` reply lists (more: the reply says ``truncated``):
#: a room of any size cannot make one reply larger than a client's queue.
MAX_PRESENCE_REPLY: Final = 1000
#: Most publications one history page returns (a larger ``limit`` is capped).
MAX_HISTORY_PAGE: Final = 100

#: The reason of an ``unsub`` push that asks the client to resubscribe from its position.
RECOVER: Final = "recover"
