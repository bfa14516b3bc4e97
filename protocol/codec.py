"""The codec interface and the choice of codec by WebSocket subprotocol.

A codec turns one WebSocket frame into commands (server side) or server
messages (client side), and one message into bytes. Several messages may share
a frame: concatenated for MessagePack (the format is self-delimiting), one per
line for JSON. A sender builds such a frame with ``codec.separator.join(parts)``.
A message that crossed nodes as MessagePack becomes any codec's bytes with
``codec.from_msgpack``.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

from .errors import ProtocolError
from .limits import JSON_SUBPROTOCOL, MAX_CHANNEL_LENGTH, MAX_COMMANDS_PER_FRAME, MAX_DATA_DEPTH, MSGPACK_SUBPROTOCOL
from .messages import Command, ServerMessage

if TYPE_CHECKING:
    from .wire import Expected

# Re-exported: their home is protocol.limits.
__all__ = [
    "JSON_SUBPROTOCOL",
    "MAX_CHANNEL_LENGTH",
    "MAX_COMMANDS_PER_FRAME",
    "MAX_DATA_DEPTH",
    "MSGPACK_SUBPROTOCOL",
    "Codec",
]


class Codec(Protocol):
    name: str  # the WebSocket subprotocol
    binary: bool  # frames are binary (True) or text (False)
    separator: bytes  # between messages in one frame

    # server side
    def decode_commands(self, frame: bytes) -> list[Command | ProtocolError]:
        """Decode a frame into commands, in order.

        Raises :class:`ProtocolError` (``id=0``) when the frame as a whole is not
        valid: nothing in it runs. A command that decodes but is invalid on its
        own (unknown command, wrong field types, duplicate id) comes back as a
        :class:`ProtocolError` in its place, carrying its id when readable, and the
        others still run.
        """
        ...

    def encode(self, message: ServerMessage) -> bytes:
        """Encode one reply or push (no separator)."""
        ...

    def from_msgpack(self, message: bytes) -> bytes:
        """This codec's encoding of a message, given its MessagePack encoding.

        ``message`` is what ``MsgpackCodec().encode`` made of one reply or push,
        e.g. an event relayed between nodes: the MessagePack codec returns it
        unchanged (the same object), the JSON codec transcodes it once, by the
        rules it applies to ``data``. Raises ValueError if ``message`` is not
        one msgpack value.
        """
        ...

    # client side
    def encode_command(self, command: Command) -> bytes: ...

    def decode_messages(self, frame: bytes, expected: Expected = ...) -> list[ServerMessage]:
        """Decode a frame from the server; raises :class:`ProtocolError` on garbage.

        ``expected`` maps the id of each command awaiting its reply to the
        result type it awaits (:data:`protocol.wire.RESULT_OF`); a reply's
        result is read as that type, and one of another type, or for an id not
        there, is a ProtocolError. By default no result is expected: pushes
        and error replies only.
        """
        ...
