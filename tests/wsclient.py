"""A thin test client over the websockets library: raw frames in, decoded messages out.

Tests use it to speak the protocol directly (malformed frames included); the
product's own :mod:`realtime.client` is tested separately.
"""

from __future__ import annotations

import asyncio
import itertools
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
