"""Outgoing messages, encoded once and framed once, shared by every recipient.

The hub writes WebSocket frames straight to each connection's transport
instead of going through a per-connection ``send_*`` coroutine: a publication
to N subscribers is then one encode, one frame header, and N
``transport.write`` calls of the same ``bytes`` object. Frames are unmasked and
uncompressed (RFC 6455 section 5.2 server frames), so their bytes do not depend
on the connection; the connection's permessage-deflate is off for this reason
(compressing per subscriber would cost a deflate per recipient).
"""

from __future__ import annotations

import struct

OP_TEXT = 0x1
OP_BINARY = 0x2

#: Coalesced frames stay below this size (unless one message alone is larger),
#: so clients with a 1 MiB default frame limit (websockets, OkHttp) accept them.
MAX_COALESCED_FRAME = 256 * 1024

_H16 = struct.Struct("!BBH")
_H64 = struct.Struct("!BBQ")


def frame_header(opcode: int, length: int) -> bytes:
    """Header of a final, unmasked server frame carrying ``length`` payload bytes."""
    first = 0x80 | opcode
    if length < 126:
        return bytes((first, length))
    if length < 65536:
        return _H16.pack(first, 126, length)
    return _H64.pack(first, 127, length)


class Outgoing:
    """One encoded server message for one codec, with its WebSocket frame built on first use.

    ``offset`` and ``epoch`` are set for publications so a connection that is
    still subscribing can drop what its recovery already delivered.
    """

    __slots__ = ("_frame", "epoch", "offset", "opcode", "payload")

    def __init__(self, payload: bytes, binary: bool, offset: int = 0, epoch: str = "") -> None:
        self.payload = payload
        self.opcode = OP_BINARY if binary else OP_TEXT
        self.offset = offset
        self.epoch = epoch
        self._frame: bytes | None = None

    def frame(self) -> bytes:
        frame = self._frame
        if frame is None:
            frame = self._frame = frame_header(self.opcode, len(self.payload)) + self.payload
        return frame

    def __len__(self) -> int:
        return len(self.payload)


def coalesce(pending: list[Outgoing], separator: bytes) -> list[bytes]:
    """Frames carrying every message of ``pending`` in order, as few as the size cap allows."""
    if len(pending) == 1:
        return [pending[0].frame()]
    opcode = pending[0].opcode
    frames: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for out in pending:
        n = len(out.payload) + len(separator)
        if parts and size + n > MAX_COALESCED_FRAME:
            body = separator.join(parts)
            frames.append(frame_header(opcode, len(body)) + body)
            parts, size = [], 0
        parts.append(out.payload)
        size += n
    body = separator.join(parts)
    frames.append(frame_header(opcode, len(body)) + body)
    return frames
