"""Sockets before they authenticate: the pending caps and the handshake timeout.

Every TCP connection the hub accepts is *pending* until its WebSocket
``connect`` command succeeds (it is then a client, watched by its heartbeat) or
it closes. Plain HTTP connections (the API, /healthz, /readyz) stay pending
for as long as they are open; ``http_idle_timeout`` closes idle ones.

* **Caps.** At most ``max_pending_per_address`` pending sockets per remote
  address and ``max_pending`` per node (0: no limit). A socket over a cap is
  answered at once, without reading anything, with ``503`` and the JSON error
  map ``{"code": 110, "message": ...}`` (TOO_MANY_REQUESTS, retry with backoff)
  and closed; it never reaches aiohttp, so it holds its descriptor for one
  loop iteration only. (A client that had already sent its request may see a
  connection reset instead of the 503.)
* **Handshake timeout.** A socket that has not sent a complete request head
  within ``handshake_timeout`` seconds of being accepted (a slowloris, or a
  socket that sends nothing) is closed. Between requests of a keep-alive
  connection aiohttp's keep-alive timeout (``http_idle_timeout``) applies.

:class:`Admission` is owned by the application (``create_app``); the server's
site wraps each accepted socket's aiohttp protocol in a :class:`Gate`
(:meth:`Admission.protocol_factory`); a middleware reports each request head
(:meth:`Admission.request_started`) and the :class:`AuthenticatedHook` feature
reports a successful connect (:meth:`Admission.authenticated`).
"""

from __future__ import annotations

import asyncio
import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, cast

from protocol.codes import ErrorCode

from .feature import Feature

if TYPE_CHECKING:
    from .config import Settings
    from .connection import Connection

log = logging.getLogger("realtime.admission")

_OVER_CAP = ErrorCode.TOO_MANY_REQUESTS


def _refusal(message: str) -> bytes:
    """A complete HTTP/1.1 503 response carrying the JSON error map, then close."""
    body = json.dumps({"code": int(_OVER_CAP), "message": message}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode() + body


PER_ADDRESS_REFUSAL = _refusal("too many unauthenticated connections from this address")
NODE_REFUSAL = _refusal("too many unauthenticated connections on this node")


class Admission:
    """Counts pending sockets per remote address and per node, and times their handshake."""

    def __init__(self, settings: Settings) -> None:
        self.max_pending = settings.max_pending
        self.max_pending_per_address = settings.max_pending_per_address
        self.handshake_timeout = settings.handshake_timeout
        #: Pending sockets on this node, and per remote address (addresses with none are dropped).
        self.pending = 0
        self._by_address: dict[str, int] = {}
        self._gates: dict[asyncio.BaseTransport, Gate] = {}
        #: Sockets refused over a cap, and closed by the handshake timeout (for operators and tests).
        self.refused = 0
        self.timed_out = 0

    def pending_from(self, address: str) -> int:
        return self._by_address.get(address, 0)

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wrap a protocol factory (aiohttp's server) so that each socket passes the gate first."""
        return lambda: Gate(self, inner())

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        """A complete request head arrived on ``transport``: stop its handshake timer."""
        gate = self._gates.get(transport) if transport is not None else None
        if gate is not None:
            gate.got_request()

    def authenticated(self, transport: asyncio.BaseTransport | None) -> None:
        """The WebSocket on ``transport`` completed its connect: it no longer counts as pending."""
        gate = self._gates.get(transport) if transport is not None else None
        if gate is not None:
            gate.got_request()
            self._release(gate)

    # -- called by Gate

    def _admit(self, gate: Gate) -> bytes | None:
        """Count ``gate``'s socket in, or return the refusal to send it."""
        address = gate.address
        if self.max_pending and self.pending >= self.max_pending:
            self.refused += 1
            return NODE_REFUSAL
        if self.max_pending_per_address and self._by_address.get(address, 0) >= self.max_pending_per_address:
            self.refused += 1
            return PER_ADDRESS_REFUSAL
        self.pending += 1
        self._by_address[address] = self._by_address.get(address, 0) + 1
        assert gate.transport is not None
        self._gates[gate.transport] = gate
        return None

    def _release(self, gate: Gate) -> None:
        assert gate.transport is not None
        if self._gates.pop(gate.transport, None) is None:
            return  # authenticated before, or never admitted
        self.pending -= 1
        left = self._by_address[gate.address] - 1
        if left:
            self._by_address[gate.address] = left
        else:
            del self._by_address[gate.address]


class Gate(asyncio.Protocol):
    """One accepted socket: admitted (or refused) before aiohttp's protocol sees it.

    Every protocol event is passed on to ``inner``; reads go straight to it.
    """

    def __init__(self, admission: Admission, inner: asyncio.Protocol) -> None:
        self._admission = admission
        self._inner = inner
        self._admitted = False
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.address = "-"
        # Reads bypass the gate (event loops look the method up on the protocol, some once, at
        # creation): a refused socket is closed before its first read, so it never gets here.
        self.data_received = inner.data_received  # type: ignore[method-assign]

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        peer = transport.get_extra_info("peername")
        self.address = str(peer[0]) if isinstance(peer, (tuple, list)) and peer else str(peer or "-")
        refusal = self._admission._admit(self)
        if refusal is not None:
            log.debug("refused a connection from %s: too many pending", self.address)
            # uvloop's transports are not asyncio.WriteTransport subclasses, but write like one.
            writer = cast(asyncio.WriteTransport, transport)
            try:
                writer.write(refusal)
            finally:
                writer.close()
            return
        self._admitted = True
        loop = asyncio.get_running_loop()
        self._timer = loop.call_later(self._admission.handshake_timeout, self._handshake_expired)
        self._inner.connection_made(transport)

    def got_request(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None

    def _handshake_expired(self) -> None:
        self._timer = None
        if self.transport is not None and not self.transport.is_closing():
            self._admission.timed_out += 1
            log.debug("closed a connection from %s: no request head within the handshake timeout", self.address)
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.got_request()
        if self._admitted:
            self._admission._release(self)
            self._inner.connection_lost(exc)

    def __getattr__(self, name: str) -> object:
        # Transparent to whoever asks the transport for its protocol (``transport.get_protocol()``):
        # e.g. the connection reads aiohttp's ``writing_paused`` to bound what the transport holds.
        return getattr(self._inner, name)

    def data_received(self, data: bytes) -> None:  # replaced per instance in __init__
        self._inner.data_received(data)

    def eof_received(self) -> bool | None:
        return self._inner.eof_received() if self._admitted else None

    def pause_writing(self) -> None:
        if self._admitted:
            self._inner.pause_writing()

    def resume_writing(self) -> None:
        if self._admitted:
            self._inner.resume_writing()


class AuthenticatedHook(Feature):
    """Tells the admission when a WebSocket's connect succeeded (plugged in last, by the composition root)."""

    def __init__(self, admission: Admission) -> None:
        self._admission = admission

    async def on_connect(self, conn: Connection) -> None:
        self._admission.authenticated(conn.transport)


__all__ = ["NODE_REFUSAL", "PER_ADDRESS_REFUSAL", "Admission", "AuthenticatedHook", "Gate"]
