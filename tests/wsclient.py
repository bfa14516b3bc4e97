"""A thin test client over the websockets library: raw frames in, decoded messages out.

Tests use it to speak the protocol directly (malformed frames included); the
product's own :mod:`realtime.client` is tested separately.
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections import deque
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs
from websockets.asyncio.client import ClientConnection, connect

from protocol import codec_for
from protocol.codec import Codec
from protocol.errors import ProtocolError
from protocol.messages import (
    Command,
    Connect,
    ConnectResult,
    Disconnect,
    Publication,
    Publish,
    Reply,
    Result,
    ServerMessage,
    Subscribe,
)
from protocol.wire import RESULT_OF

TIMEOUT = 5.0


class RawClient:
    def __init__(self, ws: ClientConnection, codec: Codec) -> None:
        self.ws = ws
        self.codec = codec
        self.ids = itertools.count(1)
        self.frames = 0  # frames received
        self.client_id = ""  # from the connect result
        self._inbox: deque[ServerMessage] = deque()
        self.pushes: deque[ServerMessage] = deque()  # pushes seen while waiting for replies
        self.expected: dict[int, type[Result]] = {}  # id -> result type, of commands sent and not answered

    @classmethod
    async def open(
        cls,
        url: str,
        *,
        subprotocol: str | None = None,
        connect_first: bool = True,
        token: str | None = None,
        **kwargs: Any,
    ) -> RawClient:
        """Open a connection and, unless ``connect_first=False``, send connect (with ``token``)."""
        ws = await connect(
            url,
            subprotocols=[subprotocol] if subprotocol else None,  # type: ignore[list-item]
            compression=None,
            open_timeout=TIMEOUT,
            **kwargs,
        )
        client = cls(ws, codec_for(ws.subprotocol))
        if connect_first:
            reply = await client.command(Connect(0, token=token, name="test"))
            assert reply.error is None, reply.error
            assert isinstance(reply.result, ConnectResult)
            client.client_id = reply.result.client
        return client

    async def close(self) -> None:
        await self.ws.close()

    async def __aenter__(self) -> RawClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- sending ---------------------------------------------------------

    def next_id(self) -> int:
        return next(self.ids)

    async def send(self, *commands: Command) -> None:
        """Send commands in one frame."""
        parts = [self.codec.encode_command(c) for c in commands]
        await self.send_raw(self.codec.separator.join(parts))

    async def send_raw(self, frame: bytes) -> None:
        """Send a frame as is; the replies to the commands the hub reads in it are expected."""
        try:
            commands = self.codec.decode_commands(frame)
        except ProtocolError:
            commands = []  # the hub refuses the frame as a whole: an error reply, no result
        for command in commands:
            if not isinstance(command, ProtocolError):
                self.expected[command.id] = RESULT_OF[type(command)]
        if self.codec.binary:
            await self.ws.send(frame)
        else:
            await self.ws.send(frame, text=True)

    async def command(self, cmd: Command) -> Reply:
        """Send one command (its id replaced by a fresh one) and wait for its reply."""
        cmd = type(cmd)(**{**_fields(cmd), "id": self.next_id()})
        await self.send(cmd)
        return await self.reply(cmd.id)

    async def subscribe(self, channel: str, **kwargs: Any) -> Reply:
        reply = await self.command(Subscribe(0, channel, **kwargs))
        assert reply.error is None, reply.error
        return reply

    async def publish(self, channel: str, value: Any) -> Reply:
        reply = await self.command(Publish(0, channel, msgpack.packb(value)))
        assert reply.error is None, reply.error
        return reply

    # --- receiving -------------------------------------------------------

    async def recv(self, timeout: float = TIMEOUT) -> ServerMessage:
        while not self._inbox:
            async with asyncio.timeout(timeout):
                frame = await self.ws.recv()
            self.frames += 1
            data = frame if isinstance(frame, bytes) else frame.encode()
            messages = self.codec.decode_messages(data, self.expected)
            for message in messages:
                if isinstance(message, Reply):
                    self.expected.pop(message.id, None)
            self._inbox.extend(messages)
        return self._inbox.popleft()

    async def reply(self, id: int, timeout: float = TIMEOUT) -> Reply:
        while True:
            msg = await self.recv(timeout)
            if isinstance(msg, Reply) and msg.id == id:
                return msg
            self.pushes.append(msg)

    async def next_push(self, timeout: float = TIMEOUT) -> ServerMessage:
        if self.pushes:
            return self.pushes.popleft()
        return await self.recv(timeout)

    async def publication(self, timeout: float = TIMEOUT) -> Publication:
        msg = await self.next_push(timeout)
        assert isinstance(msg, Publication), msg
        return msg

    async def disconnect_push(self, timeout: float = TIMEOUT) -> Disconnect:
        while True:
            msg = await self.next_push(timeout)
            if isinstance(msg, Disconnect):
                return msg


def _fields(cmd: Command) -> dict[str, Any]:
    return {name: getattr(cmd, name) for name in cmd.__dataclass_fields__}


def value(pub: Publication) -> Any:
    return msgpack.unpackb(pub.data)


# --- raw frames over a plain socket ---------------------------------------------

UPGRADE = (
    b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    b"Sec-WebSocket-Protocol: realtime.v1.msgpack\r\n\r\n"
)
OP_TEXT, OP_BINARY, OP_CLOSE, OP_PING, OP_PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def client_frame(opcode: int, payload: bytes, *, masked: bool = True, mask: bytes = b"\x12\x34\x56\x78") -> bytes:
    """One final client frame; ``masked=False`` breaks RFC 6455 section 5.1 on purpose."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, n | (0x80 if masked else 0)))
    elif n < 65536:
        head = bytes((0x80 | opcode, 126 | (0x80 if masked else 0))) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 127 | (0x80 if masked else 0))) + n.to_bytes(8, "big")
    if not masked:
        return head + payload
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return head + mask + body


class RawSocket:
    """A WebSocket peer written by hand over ``asyncio.open_connection``: it sends exactly the
    bytes a test asks for (unmasked frames, no pong) and shows every frame the hub sends
    (pings and close frames included), so tests can see what a misbehaving phone sees."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self.codec = codec_for("realtime.v1.msgpack")
        self.bytes_read = 0  # bytes of frames read, headers included
        self.expected: dict[int, type[Result]] = {}  # id -> result type, of commands sent and not answered

    @classmethod
    async def open(cls, port: int, *, first: bytes = b"", rcvbuf: int = 0, limit: int = 2**16) -> RawSocket:
        """Connect and upgrade (``first``: bytes sent together with the upgrade request);
        ``rcvbuf``: a small socket receive buffer, so a peer that stops reading backs up quickly."""
        loop = asyncio.get_running_loop()
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        if rcvbuf:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, rcvbuf)
        sock.setblocking(False)
        await loop.sock_connect(sock, ("127.0.0.1", port))
        reader, writer = await asyncio.open_connection(sock=sock, limit=limit)
        return await cls.upgrade(reader, writer, first=first)

    @classmethod
    async def upgrade(
        cls, reader: asyncio.StreamReader, writer: asyncio.StreamWriter, *, first: bytes = b""
    ) -> RawSocket:
        """Upgrade an open HTTP connection (a fresh one, or one kept alive after a request)."""
        writer.write(UPGRADE + first)
        async with asyncio.timeout(TIMEOUT):
            head = await reader.readuntil(b"\r\n\r\n")
        assert head.startswith(b"HTTP/1.1 101"), head
        return cls(reader, writer)

    def send_frame(self, opcode: int, payload: bytes = b"", *, masked: bool = True) -> None:
        self.writer.write(client_frame(opcode, payload, masked=masked))

    def frame_of(self, *commands: Command, masked: bool = True) -> bytes:
        """A binary frame of ``commands``, whose replies are then expected."""
        for command in commands:
            self.expected[command.id] = RESULT_OF[type(command)]
        return client_frame(OP_BINARY, b"".join(self.codec.encode_command(c) for c in commands), masked=masked)

    def send(self, *commands: Command, masked: bool = True) -> None:
        """Commands in one binary frame."""
        self.writer.write(self.frame_of(*commands, masked=masked))

    async def frame(self, timeout: float = TIMEOUT) -> tuple[int, bytes]:
        """The hub's next frame, (opcode, payload); IncompleteReadError at EOF."""
        async with asyncio.timeout(timeout):
            first, second = await self.reader.readexactly(2)
            assert not second & 0x80, "the hub masked a frame"
            n, size = second & 0x7F, 2
            if n == 126:
                n, size = int.from_bytes(await self.reader.readexactly(2), "big"), 4
            elif n == 127:
                n, size = int.from_bytes(await self.reader.readexactly(8), "big"), 10
            payload = await self.reader.readexactly(n)
        self.bytes_read += size + n
        return first & 0x0F, payload

    async def messages(self, timeout: float = TIMEOUT, *, pong: bool = False) -> list[ServerMessage]:
        """The messages of the next data frame, skipping pings (answered with a pong if ``pong``)."""
        while True:
            opcode, payload = await self.frame(timeout)
            if opcode == OP_PING:
                if pong:
                    self.send_frame(OP_PONG, payload)
                continue
            assert opcode in (OP_BINARY, OP_TEXT), (opcode, payload)
            messages = self.codec.decode_messages(payload, self.expected)
            for message in messages:
                if isinstance(message, Reply):
                    self.expected.pop(message.id, None)
            return messages

    async def reply(self, timeout: float = TIMEOUT) -> Reply:
        (msg,) = await self.messages(timeout, pong=True)
        assert isinstance(msg, Reply), msg
        return msg

    async def close_frame(self, timeout: float = TIMEOUT) -> int:
        """Read until the hub's close frame (pings, and pongs to a peer's pings, skipped; data frames must
        not come) and return its code: a hub may answer a ping it read before it closed."""
        while True:
            opcode, payload = await self.frame(timeout)
            if opcode in (OP_PING, OP_PONG):
                continue
            assert opcode == OP_CLOSE, (opcode, payload)
            return int.from_bytes(payload[:2], "big")

    async def eof(self, timeout: float = TIMEOUT) -> None:
        """Wait until the hub closes the TCP connection."""
        async with asyncio.timeout(timeout):
            while await self.reader.read(65536):
                pass

    def close(self) -> None:
        self.writer.transport.abort()
