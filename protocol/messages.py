"""Protocol v1 messages: one frozen dataclass per message type.

Three families travel on a connection:

* commands, client -> server, each with a positive integer ``id``;
* replies, server -> client, exactly one per command, carrying the same ``id``
  and either a result or an :class:`Error`;
* pushes, server -> client, unsolicited (:class:`Publication`, :class:`Disconnect`).

``data`` of a publication is opaque to the hub. Inside the hub and between nodes
it is kept as the MessagePack encoding of the client's value (``bytes``), so the
binary codec can embed it into outgoing frames without decoding it again; the
JSON codec transcodes it once per message, never once per subscriber.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TypeAlias

PROTOCOL_VERSION = 1


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a channel's stream is: the last ``offset`` assigned within ``epoch``.

    The epoch changes when the stream's continuity is lost (history dropped,
    engine restarted without persistence); offsets are only comparable within
    one epoch.
    """

    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who published: the user id, the connection id, and opaque info (msgpack bytes)."""

    user: str
    client: str
    info: bytes | None = None


# --- commands ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Connect:
    """First command on a connection. ``token`` authenticates (JWT from issue 3 on)."""

    id: int
    token: str | None = None
    name: str | None = None  # client SDK name, e.g. "swift"
    version: str | None = None  # client SDK version


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Subscribe to ``channel``; with ``since``, recover what was missed after it."""

    id: int
    channel: str
    since: StreamPosition | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: int
    channel: str


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``data`` (msgpack-encoded value) to ``channel``."""

    id: int
    channel: str
    data: bytes


@dataclass(frozen=True, slots=True)
class Ping:
    """Application-level ping for clients that cannot see WebSocket pings."""

    id: int


Command: TypeAlias = Connect | Subscribe | Unsubscribe | Publish | Ping

# --- pushes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publication:
    """One message in a channel, as delivered to subscribers and kept in history."""

    channel: str
    data: bytes  # msgpack-encoded value
    offset: int
    epoch: str
    info: ClientInfo | None = None


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Sent just before the server closes the socket with the same ``code``."""

    code: int
    reason: str
    reconnect: bool


Push: TypeAlias = Publication | Disconnect

# --- replies ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Error:
    """A command failed; ``code`` is one of :class:`protocol.codes.ErrorCode`."""

    code: int
    message: str


@dataclass(frozen=True, slots=True)
class ConnectResult:
    client: str  # connection id assigned by the hub
    version: str  # hub version
    ping: float  # seconds between server pings; a client may use 2x as its dead-peer timeout
    user: str = ""  # authenticated user id, "" for anonymous


@dataclass(frozen=True, slots=True)
class SubscribeResult:
    """Where the stream stands, and what the client missed when it asked to recover.

    ``recovered`` is true only when ``publications`` is exactly everything after
    the requested position; otherwise the app must reload its state.
    """

    offset: int
    epoch: str
    recoverable: bool = False  # the channel keeps history, so a later recovery can work
    recovered: bool = False
    publications: tuple[Publication, ...] = field(default_factory=tuple)


@dataclass(frozen=True, slots=True)
class PublishResult:
    offset: int
    epoch: str


@dataclass(frozen=True, slots=True)
class EmptyResult:
    """The result of unsubscribe and ping."""


Result: TypeAlias = ConnectResult | SubscribeResult | PublishResult | EmptyResult


@dataclass(frozen=True, slots=True)
class Reply:
    """The one answer to command ``id``: exactly one of ``result`` and ``error`` is set.

    ``id`` is 0 when the command's id could not be read (a frame that does not
    decode, a command without a valid id): the error still reaches the client.
    """

    id: int
    result: Result | None = None
    error: Error | None = None


ServerMessage: TypeAlias = Reply | Push
