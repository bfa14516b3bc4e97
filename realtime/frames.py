"""Outgoing messages, encoded once and framed once, shared by every recipient.

The hub writes WebSocket frames straight to each connection's transport
instead of going through a per-connection ``send_*`` coroutine: a publication
to N subscribers is then one encode, one frame header, and N
``transport.write`` calls of the same ``bytes`` object. Frames are unmasked and
uncompressed (RFC 6455 section 5.2 server frames), so their bytes do not depend
on the connection; the connection's permessage-deflate is off for this reason
(compressing per subscriber would cost a deflate per recipient).

The other way, :class:`ClientFrames` stands in front of aiohttp's frame parser:
it refuses unmasked client frames (RFC 6455 section 5.1) and notes when the
peer last sent anything, for the hub's own heartbeat.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from typing import Protocol

from aiohttp.http import WebSocketError, WSCloseCode

OP_TEXT = 0x1
OP_BINARY = 0x2
OP_CLOSE = 0x8
OP_PING = 0x9
OP_PONG = 0xA

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


#: The hub's heartbeat ping: final, unmasked, no payload (any bytes from the peer answer it).
PING_FRAME = frame_header(OP_PING, 0)


class Recipient(Protocol):
    """Who a batch is queued to (``realtime.connection.Connection``)."""

    def send(self, out: Outgoing) -> None: ...


class Outgoing:
    """One encoded server message for one codec, with its WebSocket frame built on first use.

    ``offset`` and ``epoch`` are set for publications so a connection that is
    still subscribing can drop what its recovery already delivered. ``size`` is
    the payload's length: what the message adds to a connection's backlog.

    **Batches.** Fan-out queues a *batch* (:meth:`open_batch`) once per subscriber; the
    channel's next publications of the same loop turn join it in O(1) (:meth:`add`)
    instead of being queued once more per subscriber, and every subscriber writes
    the same frame, built once: a burst of k publications to N subscribers costs
    N + k queue operations and one join, not N * k and N joins. A batch is
    ``open`` while every subscriber holding it holds it last in its queue and none
    has written it. A subscriber that gets another message first (its reply to a
    publish, a push of another channel) queues a copy of what joined so far
    instead (:meth:`detach`) and gets the batch's later publications one by one, so
    nothing overtakes that message. The batch closes for good (:meth:`close`) when
    its frame is built, the channel's subscribers change, or the loop turn ends; the
    channel's next publication starts a new one. (One class for both, so that the
    hot path's attribute reads stay monomorphic.)
    """

    __slots__ = (
        "_copy",
        "_frame",
        "_members",
        "_parts",
        "_separator",
        "detached",
        "epoch",
        "offset",
        "opcode",
        "open",
        "payload",
        "size",
    )

    # Set on batches only (:meth:`open_batch`).
    _separator: bytes
    _members: int
    #: The last copy :meth:`detach` made: shared by every member detaching before the next join.
    _copy: Outgoing | None
    #: Subscribers of a batch that took a copy (:meth:`detach`): what joins later is sent to them apart.
    detached: list[Recipient] | None

    def __init__(self, payload: bytes, binary: bool, offset: int = 0, epoch: str = "") -> None:
        self.payload = payload
        self.size = len(payload)
        self.opcode = OP_BINARY if binary else OP_TEXT
        self.offset = offset
        self.epoch = epoch
        self._frame: bytes | None = None
        self.open = False
        self._parts: list[bytes] | None = None

    def open_batch(self, separator: bytes, members: int) -> None:
        """Make this message, about to be queued to ``members`` subscribers, a batch that the
        channel's later publications may join (joined with ``separator``, the codec's)."""
        self.open = True
        self._separator = separator
        self._members = members
        self.detached = None
        self._copy = None

    def frame(self) -> bytes:
        frame = self._frame
        if frame is None:
            if self.open:
                self.close()
            frame = self._frame = frame_header(self.opcode, len(self.payload)) + self.payload
        return frame

    def body(self) -> bytes:
        """The payload, as coalesced with other messages (a batch closes)."""
        if self.open:
            self.close()
        return self.payload

    def __len__(self) -> int:
        return self.size

    # --- batches ---------------------------------------------------------------

    def add(self, out: Outgoing) -> bool:
        """Join ``out`` (a later publication of the channel) to this batch; False when it is
        closed or would exceed :data:`MAX_COALESCED_FRAME` (queue a new batch then). The
        caller sends ``out`` to :attr:`detached` itself."""
        if not self.open:
            return False
        size = self.size + len(self._separator) + out.size
        if size > MAX_COALESCED_FRAME:
            self.close()
            return False
        parts = self._parts
        if parts is None:
            parts = self._parts = [self.payload]
        parts.append(out.payload)
        self.size = size
        self.offset = out.offset
        return True

    def detach(self, recipient: Recipient) -> Outgoing:
        """What joined this open batch so far, for ``recipient`` to queue instead of it (it is
        getting another message): the batch's later publications go to it one by one. The
        last member to detach closes the batch and keeps it (no copy)."""
        self._members -= 1
        if not self._members:
            self.close()
            return self
        if self.detached is None:
            self.detached = [recipient]
        else:
            self.detached.append(recipient)
        copy = self._copy
        if copy is None or copy.size != self.size:  # one copy per state of the batch (size grows per join)
            parts = self._parts
            payload = self.payload if parts is None else self._separator.join(parts)
            copy = self._copy = Outgoing(payload, self.opcode == OP_BINARY, self.offset, self.epoch)
        return copy

    def close(self) -> None:
        """No more messages join this batch: its payload is final."""
        if self.open:
            self.open = False
            self.detached = None
            self._copy = None
            if self._parts is not None:
                self.payload = self._separator.join(self._parts)
                self._parts = None


def coalesce(pending: list[Outgoing], separator: bytes) -> list[bytes]:
    """Frames carrying every message of ``pending`` in order, as few as the size cap allows."""
    if len(pending) == 1:
        return [pending[0].frame()]
    opcode = pending[0].opcode
    frames: list[bytes] = []
    parts: list[bytes] = []
    size = 0
    for out in pending:
        body = out.body()
        n = len(body) + len(separator)
        if parts and size + n > MAX_COALESCED_FRAME:
            joined = separator.join(parts)
            frames.append(frame_header(opcode, len(joined)) + joined)
            parts, size = [], 0
        parts.append(body)
        size += n
    joined = separator.join(parts)
    frames.append(frame_header(opcode, len(joined)) + joined)
    return frames


# --- client frames -----------------------------------------------------------------


class FrameParser(Protocol):
    """What aiohttp's web protocol calls on the parser of an upgraded connection."""

    def feed_data(self, data: bytes) -> tuple[bool, bytes]: ...

    def feed_eof(self) -> None: ...


class FrameQueue(Protocol):
    """aiohttp's queue of parsed messages, which ``receive()`` reads."""

    def set_exception(self, exc: BaseException) -> None: ...

    def exception(self) -> BaseException | None: ...


_UNPACK16 = struct.Struct("!H").unpack_from
_UNPACK64 = struct.Struct("!Q").unpack_from


class ClientFrames:
    """aiohttp's WebSocket parser behind two cheap checks on the bytes a client sends.

    * **Masks.** RFC 6455 section 5.1: a server must close the connection when a
      client frame is not masked. aiohttp's reader reads the mask bit but has no
      option to require it (its parser serves clients too, where frames must not
      be masked), so this walks the frame *headers* of the byte stream: a slice
      of at most 14 bytes and a few integer operations per frame, payloads are
      skipped unread. The frames before an unmasked one are parsed as usual; then
      aiohttp's queue gets a ``WebSocketError(1002)``, and ``receive()`` closes
      the connection with 1002 the way it does for aiohttp's own protocol errors.
    * **Activity.** ``last_seen`` is the loop time of the last bytes received (a
      frame, a pong, part of either): the hub's heartbeat reads it instead of
      rescheduling a timer per read.
    """

    __slots__ = ("_clock", "_failed", "_head", "_parser", "_queue", "_skip", "last_seen", "opened")

    def __init__(self, parser: FrameParser, queue: FrameQueue, clock: Callable[[], float]) -> None:
        self._parser = parser
        self._queue = queue
        self._clock = clock
        self.opened = self.last_seen = clock()  # the upgrade
        self._head = b""  # the start of a frame header split across reads
        self._skip = 0  # payload bytes of the current frame not received yet
        self._failed = False

    def feed_data(self, data: bytes) -> tuple[bool, bytes]:
        self.last_seen = self._clock()
        if self._failed:
            return True, b""
        if type(data) is not bytes:
            data = bytes(data)
        bad = self._unmasked_at(data)
        if bad < 0:
            return self._parser.feed_data(data)
        self._failed = True
        if bad and self._parser.feed_data(data[:bad])[0]:
            return True, b""  # the parser failed first, on a frame before the unmasked one
        self._queue.set_exception(WebSocketError(WSCloseCode.PROTOCOL_ERROR, "unmasked client frame"))
        return True, b""

    @property
    def failing(self) -> bool:
        """The client's bytes hold a protocol error (an unmasked frame, or one the parser
        refused: 1009...): aiohttp closes the connection when ``receive()`` reaches it."""
        return self._failed or self._queue.exception() is not None

    def feed_eof(self) -> None:
        self._parser.feed_eof()

    def _unmasked_at(self, data: bytes) -> int:
        """Where in ``data`` the first unmasked frame starts (0 if it started earlier), or -1."""
        pos, end = 0, len(data)
        while True:
            skip = self._skip
            if skip:
                if end - pos <= skip:
                    self._skip = skip - (end - pos)
                    return -1
                pos += skip
                self._skip = 0
            if pos >= end:
                return -1
            held = len(self._head)
            head = self._head + data[pos : pos + 14 - held] if held else data[pos : pos + 14]
            if len(head) < 2:
                self._head = head
                return -1
            second = head[1]
            if not second & 0x80:
                return max(0, pos - held)
            n = second & 0x7F
            size = 6 if n < 126 else 8 if n == 126 else 14  # header with its mask key
            if len(head) < size:
                self._head = head
                return -1
            if n == 126:
                n = _UNPACK16(head, 2)[0]
            elif n == 127:
                n = _UNPACK64(head, 2)[0]
            self._head = b""
            pos += size - held
            self._skip = n
