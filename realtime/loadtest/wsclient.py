"""A cheap WebSocket client over a raw asyncio transport: handshake, frame walker, replies by id.

Thousands of these run in one process, so a client does as little Python work
per message as it can. While :attr:`WSClient.decoding` is true each data frame
goes through a msgpack ``Unpacker`` and every message to :meth:`on_message`;
once a client turns it off (a counting subscriber after its subscribe reply),
only frame headers are walked (to answer pings and see close frames) and the raw
bytes go to :meth:`count_raw`, where :class:`Counter` counts publications with
``bytes.count`` of :data:`MARKER`: a message never spans frames, so frame
headers never split the marker.

Open one with :func:`open_client`; it returns once the upgrade is done.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import ipaddress
import os
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar, cast
from urllib.parse import urlsplit

import msgpack  # type: ignore[import-untyped]  # no stubs

from protocol.codec import MSGPACK_SUBPROTOCOL

WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The msgpack bytes of the pair "push": "pub", present once in every publication push.
MARKER: bytes = msgpack.packb("push") + msgpack.packb("pub")
MARKER_TAIL = len(MARKER) - 1
#: Close code when the connection ended without a close frame (RFC 6455).
ABNORMAL = 1006


class LoadtestError(Exception):
    """The load test cannot go on (hub unreachable, refused, no replies)."""


class Closed(LoadtestError):
    """The connection ended: ``code`` is the close code (1006 without a close frame), with the
    Disconnect push's ``retry_after`` advice in seconds if it had one."""

    def __init__(self, code: int, retry_after: float | None = None) -> None:
        super().__init__(f"connection closed with {code}")
        self.code = code
        self.retry_after = retry_after


class Refused(LoadtestError):
    """The hub refused a command or the connection: ``code`` is the error or close code."""

    def __init__(self, what: str, code: int, message: str = "", retry_after: float | None = None) -> None:
        super().__init__(f"{what} refused with {code} {message}".rstrip())
        self.code = code
        self.retry_after = retry_after


@dataclass(frozen=True)
class Target:
    """A hub URL split into what the handshake needs."""

    url: str
    host: str
    port: int
    path: str  # with the query string
    tls: bool

    @property
    def loopback(self) -> bool:
        try:
            return ipaddress.ip_address(self.host).is_loopback
        except ValueError:
            return self.host == "localhost"


def parse_url(url: str) -> Target:
    """``ws://`` or ``wss://`` URL -> :class:`Target`; anything else raises ValueError."""
    parts = urlsplit(url)
    if parts.scheme not in ("ws", "wss") or not parts.hostname:
        raise ValueError(f"not a ws:// or wss:// URL: {url!r}")
    tls = parts.scheme == "wss"
    path = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    return Target(url, parts.hostname, parts.port or (443 if tls else 80), path, tls)


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One final, masked client frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    return head + key + _mask(payload, key)


def count_markers(data: bytes, tail: bytes) -> tuple[int, bytes]:
    """Publications in ``data`` given the ``tail`` of the previous read; returns (count, new tail)."""
    n = data.count(MARKER)
    if tail:
        n += (tail + data[:MARKER_TAIL]).count(MARKER)
    return n, data[-MARKER_TAIL:] if len(data) >= MARKER_TAIL else (tail + data)[-MARKER_TAIL:]


class WSClient(asyncio.Protocol):
    """A WebSocket client speaking the hub's msgpack subprotocol.

    :meth:`command` sends a command and awaits its reply (a dict with ``result``
    or ``error``); pushes and replies nobody awaits go to :meth:`on_push` and
    :meth:`on_reply`. ``close_code`` is the server's close code once
    :attr:`ended` is done (1006 when no close frame came); a ``disconnect``
    push's ``retry_after`` (seconds) is kept in :attr:`retry_after`.
    """

    def __init__(self, target: Target) -> None:
        loop = asyncio.get_running_loop()
        self.target = target
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None
        self.retry_after: float | None = None
        self.closing = False  # we closed it: its close code is ours, not the hub's
        self.decoding = True
        self.next_id = 1
        self._replies: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._head: bytes | None = b""  # response head until the handshake is done
        self._unpacker = msgpack.Unpacker(raw=False)
        self._remain = 0  # bytes of the current data frame still to come
        self._pending = b""  # an incomplete frame header or control frame

    # handshake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        t = self.target
        default_port = 443 if t.tls else 80
        host = t.host if t.port == default_port else f"{t.host}:{t.port}"
        transport.write(
            (
                f"GET {t.path} HTTP/1.1\r\nHost: {host}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {self._key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {MSGPACK_SUBPROTOCOL}\r\n\r\n"
            ).encode()
        )

    def _handshake(self, data: bytes) -> bytes:
        """Consume the HTTP response; returns the bytes after it (frames)."""
        assert self._head is not None
        buf = self._head + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self._head = buf
            if len(buf) > 16384:
                self._fail(LoadtestError("handshake response too long"))
            return b""
        self._head = None
        lines = buf[:end].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        accept = base64.b64encode(hashlib.sha1(self._key.encode() + WS_GUID).digest()).decode()
        status = lines[0].split(" ", 2)
        if len(status) < 2 or status[1] != "101":
            code = int(status[1]) if len(status) > 1 and status[1].isdigit() else 0
            retry = headers.get("retry-after", "")
            advice = float(retry) if retry.replace(".", "", 1).isdigit() else None
            self._fail(Refused("the upgrade", code, lines[0], advice))
        elif headers.get("sec-websocket-accept") != accept:
            self._fail(LoadtestError("bad Sec-WebSocket-Accept"))
        elif headers.get("sec-websocket-protocol") != MSGPACK_SUBPROTOCOL:
            self._fail(LoadtestError(f"subprotocol not accepted: {headers.get('sec-websocket-protocol')!r}"))
        else:
            self.opened.set_result(None)
            return buf[end + 4 :]
        return b""

    def _fail(self, exc: Exception) -> None:
        if not self.opened.done():
            self.opened.set_exception(exc)
        if self.transport is not None:
            self.transport.abort()

    # sending

    def send(self, *messages: Any) -> None:
        """Send each message msgpack-encoded in its own frame, in one write."""
        if self.transport is None or self.transport.is_closing():
            return
        self.transport.write(b"".join(client_frame(msgpack.packb(m)) for m in messages))

    def command_nowait(self, command: dict[str, Any]) -> asyncio.Future[dict[str, Any]]:
        """Send ``command`` with the next id; the future gets its reply (a dict)."""
        id = command["id"] = self.next_id
        self.next_id += 1
        future = self._replies[id] = asyncio.get_running_loop().create_future()
        self.send(command)
        return future

    async def command(self, command: dict[str, Any], timeout: float = 10.0) -> dict[str, Any]:
        """Send ``command`` and return its ``result``; raise :class:`Refused` on an error reply."""
        future = self.command_nowait(command)
        try:
            async with asyncio.timeout(timeout):
                reply = await future
        except TimeoutError:
            self._replies.pop(command["id"], None)
            raise
        return result_of(command["cmd"], reply)

    # receiving

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            data = self._handshake(data)
            if not data:
                return
        if not self.decoding:
            self.count_raw(data)
        self._walk(data)

    def _walk(self, data: bytes) -> None:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        n = len(data)
        pos = self._remain
        if pos:
            if pos >= n:
                self._remain = pos - n
                if self.decoding:
                    self._feed(data)
                return
            if self.decoding:
                self._feed(data[:pos])
        while n - pos >= 2:
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            opcode = data[pos] & 0x0F
            if opcode >= 0x8:  # control frames are short: handle them whole
                if end > n:
                    break
                self._control(opcode, data[start:end])
            elif end > n:
                if self.decoding:
                    self._feed(data[start:])
                self._remain = end - n
                return
            elif self.decoding:
                self._feed(data[start:end])
            pos = end
        self._remain = 0
        if pos < n:
            self._pending = data[pos:]

    def _feed(self, payload: bytes) -> None:
        unpacker = self._unpacker
        unpacker.feed(payload)
        for message in unpacker:
            if not isinstance(message, dict):
                continue
            if "push" in message:
                if message["push"] == "disconnect":
                    advice = message.get("retry_after")
                    self.retry_after = advice / 1000 if isinstance(advice, int) and advice > 0 else None
                self.on_push(message)
            else:
                future = self._replies.pop(message.get("id", -1), None)
                if future is not None and not future.done():
                    future.set_result(message)
                else:
                    self.on_reply(message)

    def _control(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 0x9:  # ping
            self.transport.write(client_frame(payload, 0xA))
        elif opcode == 0x8:  # close: answer and let the server close the TCP connection
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.transport.is_closing():
                self.transport.write(client_frame(payload[:2], 0x8))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = ABNORMAL
        if not self.opened.done():
            self.opened.set_exception(Closed(self.close_code))
        for future in self._replies.values():
            if not future.done():
                future.set_exception(Closed(self.close_code, self.retry_after))
        self._replies.clear()
        if not self.ended.done():
            self.ended.set_result(None)
        self.on_end()

    def close(self) -> None:
        """Close with 1000 (a normal end, not counted as the hub's close)."""
        self.closing = True
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame((1000).to_bytes(2, "big"), 0x8))
            self.transport.close()

    def abort(self) -> None:
        """Drop the TCP connection at once, as a phone losing its network does."""
        if self.transport is not None:
            self.transport.abort()

    # for subclasses

    def count_raw(self, data: bytes) -> None:
        """Called with raw stream bytes while not decoding."""

    def on_push(self, message: dict[str, Any]) -> None:
        """Called with each decoded push while decoding."""

    def on_reply(self, message: dict[str, Any]) -> None:
        """Called with a decoded reply no :meth:`command` awaits."""

    def on_end(self) -> None:
        """Called once the connection is gone."""


def result_of(cmd: str, reply: dict[str, Any]) -> dict[str, Any]:
    """The ``result`` of ``reply``, or :class:`Refused` with the error's code and advice."""
    result = reply.get("result")
    if isinstance(result, dict):
        return result
    error = reply.get("error") or {}
    advice = error.get("retry_after")
    raise Refused(cmd, int(error.get("code", 0)), str(error.get("message", "")), advice / 1000 if advice else None)


_C = TypeVar("_C", bound=WSClient)


async def open_client(
    factory: Callable[[], _C], target: Target, source: str | None = None, timeout: float = 10.0
) -> _C:
    """Connect ``factory()`` to ``target`` (from ``source`` address if given) and wait for the upgrade."""
    loop = asyncio.get_running_loop()
    client: _C | None = None
    try:
        async with asyncio.timeout(timeout):
            _, client = await loop.create_connection(
                factory,
                target.host,
                target.port,
                ssl=ssl.create_default_context() if target.tls else None,
                local_addr=(source, 0) if source else None,
            )
            await client.opened
            return client
    except BaseException:
        if client is not None:
            client.abort()
        raise


def monotonic_ns() -> int:
    """The clock publishers stamp and subscribers read (one clock for every process on Linux)."""
    return time.monotonic_ns()
