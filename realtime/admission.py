"""Admission: sockets before they authenticate, and the limits on WebSocket connections.

Every TCP connection the hub accepts is *pending* until its WebSocket
``connect`` command succeeds (it is then a client, watched by its heartbeat) or
it closes. A plain HTTP connection (the API, /healthz, /readyz) is pending
until its first request has been answered: a keep-alive connection that
then waits for more requests does not hold a place (``http_idle_timeout``
closes it when idle). If it then upgrades to a WebSocket, it is pending again
until its ``connect``, under the same caps (over one, the upgrade is refused
with 4008, since the 503 is past).

* **Caps.** At most ``max_pending_per_address`` pending sockets per remote
  address (an IPv6 address counts by its /64, see :func:`address_key`; the
  trusted proxies are exempt) and ``max_pending`` per node (0: no limit). A socket over a cap is
  answered at once, without reading anything, with ``503`` and the JSON error
  map ``{"code": 110, "message": ...}`` (TOO_MANY_REQUESTS, retry with backoff)
  and closed; it never reaches aiohttp, so it holds its descriptor for one
  loop iteration only. (A client that had already sent its request may see a
  connection reset instead of the 503.)
* **Handshake timeout.** A socket that has not sent a complete request head
  within ``handshake_timeout`` seconds of being accepted (a slowloris, or a
  socket that sends nothing) is closed. Between requests of a keep-alive
  connection aiohttp's keep-alive timeout (``http_idle_timeout``) applies.
* **Connection limits** (:meth:`Admission.admit_upgrade`, at each WebSocket
  upgrade): ``max_connections`` per node, ``max_connects_per_second`` (a
  token bucket) and ``max_connecting`` (connections upgraded whose connect is
  not answered yet: the storm bound, see :class:`ConnectingLine`) refuse with
  4008 OVERLOADED, ``max_connections_per_address``
  with 4009 TOO_MANY_CONNECTIONS; the upgrade is accepted and answered with
  the Disconnect push, which carries retry advice, then the close frame, so
  that every client (browsers too, which see no HTTP status) can honour it.
  The per-user limit is checked by the connect command.

:class:`Admission` is owned by the application (``create_app``); the server's
site wraps each accepted socket's aiohttp protocol in a :class:`Gate`
(:meth:`Admission.protocol_factory`); a middleware reports each request head
(:meth:`Admission.request_started`) and each answered request
(:meth:`Admission.request_done`), and the :class:`AuthenticatedHook` feature
reports a successful connect (:meth:`Admission.authenticated`).
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
import logging
import math
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

from protocol.codes import CloseCode, ErrorCode
from protocol.errors import DisconnectError

from .feature import Feature

if TYPE_CHECKING:
    from .config import Settings
    from .connection import Connection

log = logging.getLogger("realtime.admission")

_OVER_CAP = ErrorCode.TOO_MANY_REQUESTS
#: Seconds a client refused over a pending cap is told to wait (the 503's Retry-After).
PENDING_RETRY_AFTER = 1
#: Retry advice, in seconds, of the connection limits: the least a refused client waits, when
#: the node is full, when a user or an address is over its limit, and the most ever advised.
MIN_RETRY_AFTER = 1.0
FULL_RETRY_AFTER = 5.0
OVER_LIMIT_RETRY_AFTER = 30.0
MAX_RETRY_AFTER = 60.0


def _refusal(message: str) -> bytes:
    """A complete HTTP/1.1 503 response carrying the JSON error map, then close."""
    body = json.dumps({"code": int(_OVER_CAP), "message": message}, separators=(",", ":")).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\n"
        "Content-Type: application/json; charset=utf-8\r\n"
        f"Content-Length: {len(body)}\r\n"
        f"Retry-After: {PENDING_RETRY_AFTER}\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode() + body


def address_key(address: str) -> str:
    """What a remote address is counted under: an IPv4 address as itself, an IPv6 one by its /64.

    One IPv6 host usually holds a whole /64, so counting single addresses would let it
    take every place; an IPv4-mapped IPv6 address counts as its IPv4 address.
    """
    if ":" not in address:
        return address  # IPv4 (or "-"): as is, without parsing on the common path
    try:
        ip = ipaddress.IPv6Address(address)
    except ValueError:
        return address
    mapped = ip.ipv4_mapped
    if mapped is not None:
        return str(mapped)
    return str(ipaddress.IPv6Network((int(ip) >> 64 << 64, 64)))


class TrustedProxies:
    """The proxies whose X-Forwarded-For the hub believes (``trusted_proxies``)."""

    def __init__(self, networks: Iterable[str]) -> None:
        self._networks = tuple(ipaddress.ip_network(n, strict=False) for n in networks)

    def trusted(self, address: str) -> bool:
        if not self._networks:
            return False
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
            ip = ip.ipv4_mapped
        return any(ip in network for network in self._networks)

    def client_address(self, peer: str, forwarded_for: Iterable[str]) -> str:
        """The client's address: ``peer``, or, when ``peer`` is a trusted proxy, the rightmost
        address of the X-Forwarded-For headers that is not a trusted proxy.

        Each proxy appends the address it was reached from, so everything right of the first
        untrusted hop was written by trusted proxies and everything left of it may be forged.
        """
        if not self.trusted(peer):
            return peer
        client = peer
        hops = [hop.strip() for header in forwarded_for for hop in header.split(",")]
        for hop in reversed(hops):
            try:
                ipaddress.ip_address(hop)
            except ValueError:
                break  # garbage: stop at the last hop a trusted proxy vouched for
            client = hop
            if not self.trusted(hop):
                break
        return client


class ConnectRate:
    """A token bucket of WebSocket upgrades: ``rate`` per second, holding one second's worth.

    A refused upgrade gets a place in a virtual line, ``1 / rate`` seconds after the one
    refused before it: the advice spreads a storm of refused clients over the seconds the
    bucket needs to admit them, instead of sending them all back at once.
    """

    def __init__(self, rate: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.rate = rate
        self.capacity = max(1.0, rate)
        self._clock = clock
        self._tokens = self.capacity
        self._stamp = clock()
        self._line = 0.0  # when the last refused client was told to come back

    def take(self) -> float | None:
        """Admit one upgrade (None), or return the seconds the refused one should wait."""
        now = self._clock()
        self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
        self._stamp = now
        if self._tokens >= 1:
            self._tokens -= 1
            return None
        # Never further than the longest advice: a flood's refusals must not leave the line (and
        # so the advice of an honest storm long after it) far in the future.
        self._line = min(max(self._line + 1 / self.rate, now + MIN_RETRY_AFTER), now + MAX_RETRY_AFTER)
        return self._line - now


class ConnectingLine:
    """Retry advice for upgrades refused over ``max_connecting``: a place in a virtual line.

    A storm of reconnecting clients (a node died, its clients all come here) is more than a
    node can connect within their connect timeouts; taken all at once, every connect waits
    behind the others and most time out, then retry together. Refused instead, each client
    is told to come back one client's share of a second after the one refused before it, at
    the rate this node completed connects in the last full second (at least ``floor`` a
    second: a node hit by a storm out of quiet has no such history), so the storm returns at
    about the rate the node takes it. The SDK adds up to half the advice at random.
    """

    def __init__(self, floor: float, clock: Callable[[], float] = time.monotonic) -> None:
        self.floor = max(1.0, floor)
        self._clock = clock
        self._second = math.floor(clock())
        self._count = 0  # connects completed in the current second
        self._rate = 0.0  # ... in the one before
        self._line = 0.0  # when the last refused client was told to come back

    def _roll(self, now: float) -> None:
        second = math.floor(now)
        if second != self._second:
            self._rate = float(self._count) if second == self._second + 1 else 0.0
            self._count = 0
            self._second = second

    def completed(self) -> None:
        """A connect was answered: count it towards this second's rate."""
        self._roll(self._clock())
        self._count += 1

    def advice(self) -> float:
        """The seconds the next refused client should wait."""
        now = self._clock()
        self._roll(now)
        rate = max(self._rate, self.floor)
        self._line = min(max(self._line + 1 / rate, now + MIN_RETRY_AFTER), now + MAX_RETRY_AFTER)
        return self._line - now


PER_ADDRESS_REFUSAL = _refusal("too many unauthenticated connections from this address")
NODE_REFUSAL = _refusal("too many unauthenticated connections on this node")


class Admission:
    """Counts pending sockets per remote address and per node, and times their handshake."""

    def __init__(self, settings: Settings) -> None:
        self.max_pending = settings.max_pending
        self.max_pending_per_address = settings.max_pending_per_address
        self.handshake_timeout = settings.handshake_timeout
        self.max_connections = settings.max_connections
        self.max_connections_per_address = settings.max_connections_per_address
        self.proxies = TrustedProxies(settings.trusted_proxies)
        self._rate = ConnectRate(settings.max_connects_per_second) if settings.max_connects_per_second else None
        self.max_connecting = settings.max_connecting
        # At least half the bound a second: a node that can hold that many connects in flight
        # completes about that many a second (one core: 1,000-2,000 with a JWT each).
        self._line = ConnectingLine(settings.max_connecting / 2)
        #: WebSocket connections upgraded on this node whose connect is not answered yet.
        self.connecting = 0  #: Pending sockets on this node, and per address key (keys with none are dropped).
        self.pending = 0
        self._by_address: dict[str, int] = {}
        self._gates: dict[asyncio.BaseTransport, Gate] = {}
        #: WebSocket connections on this node (upgraded, not yet ended), and per client address
        #: key (keys with none are dropped).
        self.connections = 0
        self._upgraded: dict[str, int] = {}
        #: Sockets refused over a cap, and closed by the handshake timeout (for operators and tests).
        self.refused = 0
        self.timed_out = 0
        #: Upgrades refused by the connection limits, by close code.
        self.refused_upgrades: dict[int, int] = {}

    def pending_from(self, address: str) -> int:
        return self._by_address.get(address_key(address), 0)

    # -- WebSocket upgrades

    def admit_upgrade(self, address: str, transport: asyncio.BaseTransport | None = None) -> DisconnectError | None:
        """Count a WebSocket upgrade from client ``address`` on ``transport`` in, or return its refusal.

        Admitted, the caller calls :meth:`upgrade_ended` when the connection ends; it counts
        as connecting until :meth:`authenticated` (or its socket closes).
        """
        refusal = None
        key = address_key(address)
        gate = self._gates.get(transport) if transport is not None else None
        readmit = None
        if gate is None and transport is not None:
            # A keep-alive socket whose earlier request was answered (and let go of its pending
            # place): as a WebSocket it is pending again until its connect, under the same caps,
            # or it would escape max_pending and max_connecting by asking /healthz first.
            readmit = _released_gate(transport)
        if readmit is not None and self._over_pending(readmit):
            refusal = DisconnectError(
                CloseCode.OVERLOADED, "too many unauthenticated connections", retry_after=self._line.advice()
            )
        elif self.max_connections and self.connections >= self.max_connections:
            refusal = DisconnectError(
                CloseCode.OVERLOADED, "this node is at its connection limit", retry_after=FULL_RETRY_AFTER
            )
        elif self.max_connections_per_address and self._upgraded.get(key, 0) >= self.max_connections_per_address:
            refusal = DisconnectError(
                CloseCode.TOO_MANY_CONNECTIONS,
                "too many connections from this address",
                retry_after=OVER_LIMIT_RETRY_AFTER,
            )
        elif self._rate is not None:
            wait = self._rate.take()
            if wait is not None:
                refusal = DisconnectError(CloseCode.OVERLOADED, "too many connects", retry_after=wait)
        if refusal is None and self.max_connecting and self.connecting >= self.max_connecting:
            refusal = DisconnectError(
                CloseCode.OVERLOADED, "too many connects in progress", retry_after=self._line.advice()
            )
        if refusal is not None:
            self.refused_upgrades[refusal.code] = self.refused_upgrades.get(refusal.code, 0) + 1
            log.debug("refused a WebSocket from %s: %s", address, refusal.reason)
            return refusal
        self.connections += 1
        self._upgraded[key] = self._upgraded.get(key, 0) + 1
        if readmit is not None:
            self._count_in(readmit)
            gate = readmit
        if gate is not None:  # pending until its connect: counted out by _release
            gate.connecting = True
            self.connecting += 1
        return None

    def upgrade_ended(self, address: str) -> None:
        """The WebSocket admitted by :meth:`admit_upgrade` for ``address`` ended."""
        self.connections -= 1
        _count_out(self._upgraded, address_key(address))

    def protocol_factory(self, inner: Callable[[], asyncio.Protocol]) -> Callable[[], asyncio.Protocol]:
        """Wrap a protocol factory (aiohttp's server) so that each socket passes the gate first."""
        return lambda: Gate(self, inner())

    def request_started(self, transport: asyncio.BaseTransport | None) -> None:
        """A complete request head arrived on ``transport``: stop its handshake timer."""
        gate = self._gates.get(transport) if transport is not None else None
        if gate is not None:
            gate.got_request()

    def authenticated(self, transport: asyncio.BaseTransport | None, connected: bool = False) -> None:
        """The WebSocket on ``transport`` completed its connect (``connected``), or the request
        on it was answered: it no longer counts as pending."""
        gate = self._gates.get(transport) if transport is not None else None
        if gate is not None:
            if connected and gate.connecting:
                self._line.completed()
            gate.got_request()
            self._release(gate)

    def request_done(self, transport: asyncio.BaseTransport | None) -> None:
        """A request on ``transport`` was answered: a keep-alive connection then waits for its
        next request without holding a pending place (a WebSocket's handler returns only
        when it ends, so this never releases one early)."""
        self.authenticated(transport)

    # -- called by Gate

    def _admit(self, gate: Gate) -> bytes | None:
        """Count ``gate``'s socket in, or return the refusal to send it."""
        gate.key = address_key(gate.address)
        over = self._over_pending(gate)
        if over is not None:
            self.refused += 1
            return over
        self._count_in(gate)
        return None

    def _over_pending(self, gate: Gate) -> bytes | None:
        """The refusal of one more pending socket like ``gate``'s, None while the caps allow it."""
        if self.max_pending and self.pending >= self.max_pending:
            return NODE_REFUSAL
        if (
            self.max_pending_per_address
            and self._by_address.get(gate.key, 0) >= self.max_pending_per_address
            and not self.proxies.trusted(gate.address)
        ):
            return PER_ADDRESS_REFUSAL
        return None

    def _count_in(self, gate: Gate) -> None:
        self.pending += 1
        self._by_address[gate.key] = self._by_address.get(gate.key, 0) + 1
        assert gate.transport is not None
        self._gates[gate.transport] = gate

    def _release(self, gate: Gate) -> None:
        assert gate.transport is not None
        if self._gates.pop(gate.transport, None) is None:
            return  # authenticated before, or never admitted
        self.pending -= 1
        _count_out(self._by_address, gate.key)
        if gate.connecting:
            gate.connecting = False
            self.connecting -= 1


def _released_gate(transport: asyncio.BaseTransport) -> Gate | None:
    """``transport``'s gate when it was admitted and has since let go of its pending place."""
    gate = transport.get_protocol()
    return gate if isinstance(gate, Gate) and gate._admitted and not transport.is_closing() else None


def _count_out(counts: dict[str, int], key: str) -> None:
    """One less under ``key``; a key with none left is dropped (the maps hold live addresses only)."""
    left = counts.get(key, 0) - 1
    if left > 0:
        counts[key] = left
    else:
        counts.pop(key, None)


class Gate(asyncio.Protocol):
    """One accepted socket: admitted (or refused) before aiohttp's protocol sees it.

    Every protocol event is passed on to ``inner``; reads go straight to it.
    """

    # One per connection for its whole life: no instance dict (memory per connection).
    __slots__ = (
        "_admission",
        "_admitted",
        "_inner",
        "_timer",
        "address",
        "connecting",
        "data_received",
        "key",
        "transport",
    )

    def __init__(self, admission: Admission, inner: asyncio.Protocol) -> None:
        self._admission = admission
        self._inner = inner
        self._admitted = False
        self._timer: asyncio.TimerHandle | None = None
        self.transport: asyncio.BaseTransport | None = None
        self.address = "-"
        self.key = "-"  # what the address is counted under (address_key)
        self.connecting = False  # upgraded, its connect not answered yet (Admission.connecting)
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
        self._admission.authenticated(conn.transport, connected=True)


__all__ = [
    "NODE_REFUSAL",
    "PER_ADDRESS_REFUSAL",
    "Admission",
    "AuthenticatedHook",
    "ConnectRate",
    "ConnectingLine",
    "Gate",
    "TrustedProxies",
    "address_key",
]
