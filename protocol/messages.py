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

from .limits import PROTOCOL_VERSION as PROTOCOL_VERSION  # re-exported: its home is protocol.limits


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
    """First command on a connection. ``token`` authenticates (a JWT, or what the connect proxy takes).

    ``data`` (msgpack value or None): the app's own credentials, handed to the connect proxy.
    """

    id: int
    token: str | None = None
    name: str | None = None  # client SDK name, e.g. "swift"
    version: str | None = None  # client SDK version
    data: bytes | None = None


@dataclass(frozen=True, slots=True)
class Subscribe:
    """Subscribe to ``channel``; with ``since``, recover what was missed after it."""

    id: int
    channel: str
    since: StreamPosition | None = None
    #: Subscription token, for namespaces that require one.
    token: str | None = None
    #: Live channels: the last state version the client holds; the result then
    #: carries only the keys changed after it.
    version: int | None = None


@dataclass(frozen=True, slots=True)
class Unsubscribe:
    id: int
    channel: str


@dataclass(frozen=True, slots=True)
class Publish:
    """Publish ``data`` (msgpack-encoded value) to ``channel``.

    ``key`` makes the send idempotent in chat channels: a retry with the same
    key within the namespace's window returns the first send's result instead
    of posting twice.
    """

    id: int
    channel: str
    data: bytes
    key: str | None = None


@dataclass(frozen=True, slots=True)
class Ping:
    """Application-level ping for clients that cannot see WebSocket pings."""

    id: int


@dataclass(frozen=True, slots=True)
class Refresh:
    """A new connection token for a live connection, sent before the current one expires."""

    id: int
    token: str


@dataclass(frozen=True, slots=True)
class History:
    """A page of a channel's history, oldest first.

    Without ``before``/``after``: the newest ``limit`` publications. With
    ``before``: the ``limit`` publications just before that offset; with
    ``after``: the ``limit`` just after it.
    """

    id: int
    channel: str
    limit: int | None = None
    before: int | None = None
    after: int | None = None


@dataclass(frozen=True, slots=True)
class Typing:
    """The user is typing (``typing=True``) or stopped, in a chat channel. Never stored."""

    id: int
    channel: str
    typing: bool = True


@dataclass(frozen=True, slots=True)
class Read:
    """The user has read ``channel`` up to ``offset``; receipts never move backwards."""

    id: int
    channel: str
    offset: int


@dataclass(frozen=True, slots=True)
class Receipts:
    """Who has read ``channel`` up to where."""

    id: int
    channel: str


@dataclass(frozen=True, slots=True)
class PresenceQuery:
    """Who is in ``channel`` (wire name ``presence``)."""

    id: int
    channel: str


@dataclass(frozen=True, slots=True)
class PresenceStatsQuery:
    """How many connections and unique users are in ``channel`` (wire name ``presence_stats``)."""

    id: int
    channel: str


@dataclass(frozen=True, slots=True)
class StateSet:
    """Set one key of a live channel (``value`` is msgpack; msgpack nil deletes the key).

    With ``version``, the write applies only if the key's version (the state
    version that last changed it; 0 = the key does not exist) still equals it,
    else error CONFLICT.
    """

    id: int
    channel: str
    key: str
    value: bytes
    version: int | None = None


@dataclass(frozen=True, slots=True)
class StatePatch:
    """Apply a JSON Merge Patch (RFC 7386, as msgpack) to one key of a live channel."""

    id: int
    channel: str
    key: str
    patch: bytes
    version: int | None = None


@dataclass(frozen=True, slots=True)
class StatusQuery:
    """Online status and last seen time of ``users`` (wire name ``status``)."""

    id: int
    users: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class Rpc:
    """Call ``method`` of the app's backend with ``data`` (msgpack value); the answer is the reply."""

    id: int
    method: str
    data: bytes = b"\xc0"  # msgpack nil: no data


Command: TypeAlias = (
    Connect
    | Subscribe
    | Unsubscribe
    | Publish
    | Ping
    | Refresh
    | History
    | Typing
    | Read
    | Receipts
    | PresenceQuery
    | PresenceStatsQuery
    | StateSet
    | StatePatch
    | StatusQuery
    | Rpc
)

# --- pushes -----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Publication:
    """One message in a channel, as delivered to subscribers and kept in history."""

    channel: str
    data: bytes  # msgpack-encoded value
    offset: int
    epoch: str
    info: ClientInfo | None = None
    #: Chat channels: the message id and the server's time (ms since the Unix epoch).
    mid: str = ""
    time: int = 0


@dataclass(frozen=True, slots=True)
class Disconnect:
    """Sent just before the server closes the socket with the same ``code``.

    ``retry_after`` (milliseconds, with 4008 and 4009): reconnect no sooner than that.
    """

    code: int
    reason: str
    reconnect: bool
    retry_after: int | None = None


@dataclass(frozen=True, slots=True)
class Join:
    """``user`` came into ``channel`` (their first device). ``info`` is msgpack or None."""

    channel: str
    user: str
    info: bytes | None = None


@dataclass(frozen=True, slots=True)
class Leave:
    """``user`` left ``channel`` (their last device, after the presence grace window)."""

    channel: str
    user: str


@dataclass(frozen=True, slots=True)
class TypingNotice:
    """``user`` is typing in ``channel``, or stopped; it lapses after ``timeout`` seconds."""

    channel: str
    user: str
    typing: bool
    timeout: float


@dataclass(frozen=True, slots=True)
class ReadNotice:
    """``user`` has read ``channel`` up to ``offset``."""

    channel: str
    user: str
    offset: int


@dataclass(frozen=True, slots=True)
class StateChange:
    """A key of a live channel changed; the channel's state is now at ``version``.

    Exactly one of ``value`` (the full new value, msgpack; nil = deleted) and
    ``patch`` (a JSON Merge Patch, msgpack, against the value at ``version - 1``)
    is set. A client that holds version ``version - 1`` applies a patch; any
    other version means it missed a change and must resubscribe for a fresh
    snapshot. A full ``value`` applies whatever the client holds.
    """

    channel: str
    key: str
    version: int
    value: bytes | None = None
    patch: bytes | None = None


@dataclass(frozen=True, slots=True)
class UserStatus:
    """A user's status: online on any device, or offline since ``last_seen`` (ms)."""

    user: str
    online: bool
    last_seen: int = 0


@dataclass(frozen=True, slots=True)
class StatusNotice:
    """A status change pushed to subscribers of a status channel."""

    channel: str
    status: UserStatus


@dataclass(frozen=True, slots=True)
class Unsubscribed:
    """The server unsubscribed this connection from ``channel`` (wire push ``unsub``)."""

    channel: str
    reason: str


Push: TypeAlias = (
    Publication | Disconnect | Join | Leave | TypingNotice | ReadNotice | StateChange | StatusNotice | Unsubscribed
)

# --- replies ----------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Error:
    """A command failed; ``code`` is one of :class:`protocol.codes.ErrorCode`.

    ``retry_after``: milliseconds to wait before sending the command again (0: no advice);
    given with TOO_MANY_REQUESTS.
    """

    code: int
    message: str
    retry_after: int = 0


@dataclass(frozen=True, slots=True)
class ConnectResult:
    client: str  # connection id assigned by the hub
    version: str  # hub version
    ping: float  # seconds between server pings; a client may use 2x as its dead-peer timeout
    user: str = ""  # authenticated user id, "" for anonymous
    expires: int = 0  # when the token expires (Unix seconds); 0 = never


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
    #: Live channels: the state version, and the keys (all, or those changed
    #: after the requested version) with their values and versions.
    version: int = 0
    state: tuple[StateEntry, ...] = field(default_factory=tuple)
    #: Status channels: the user's current status.
    status: UserStatus | None = None
    #: Live channels: ``state`` is every key although a version was asked for (the changes
    #: since it cannot be told): the client replaces what it holds.
    full: bool = False


@dataclass(frozen=True, slots=True)
class StateEntry:
    """One key of a live channel: value (msgpack; None = deleted) and the version that set it."""

    key: str
    value: bytes | None
    version: int


@dataclass(frozen=True, slots=True)
class PublishResult:
    offset: int
    epoch: str
    #: Chat channels: the message id and server time given to the message.
    mid: str = ""
    time: int = 0


@dataclass(frozen=True, slots=True)
class RefreshResult:
    expires: int  # Unix seconds; 0 = never


@dataclass(frozen=True, slots=True)
class HistoryResult:
    publications: tuple[Publication, ...]
    offset: int  # the stream's current position
    epoch: str
    #: The page stopped at the hub's byte budget before ``limit``: more publications follow
    #: in the direction of travel (page on from the page's oldest, or with ``after``, newest).
    truncated: bool = False


@dataclass(frozen=True, slots=True)
class ReadResult:
    offset: int  # the stored receipt


@dataclass(frozen=True, slots=True)
class ReceiptsResult:
    receipts: dict[str, int]  # user -> offset read up to
    truncated: bool | None = None  # True: more users than MAX_PRESENCE_REPLY; the furthest read are listed


@dataclass(frozen=True, slots=True)
class PresenceMember:
    user: str
    info: bytes | None = None  # msgpack


@dataclass(frozen=True, slots=True)
class PresenceResult:
    clients: dict[str, PresenceMember]  # connection id -> member
    truncated: bool | None = None  # True: more than MAX_PRESENCE_REPLY present; presence_stats counts them all


@dataclass(frozen=True, slots=True)
class PresenceStatsResult:
    clients: int
    users: int


@dataclass(frozen=True, slots=True)
class StateResult:
    version: int  # the channel's state version after the write


@dataclass(frozen=True, slots=True)
class StatusResult:
    users: tuple[UserStatus, ...]


@dataclass(frozen=True, slots=True)
class RpcResult:
    data: bytes  # msgpack value: the backend's answer


@dataclass(frozen=True, slots=True)
class EmptyResult:
    """The result of unsubscribe and ping."""


Result: TypeAlias = (
    ConnectResult
    | SubscribeResult
    | PublishResult
    | EmptyResult
    | RefreshResult
    | HistoryResult
    | ReadResult
    | ReceiptsResult
    | PresenceResult
    | PresenceStatsResult
    | StateResult
    | StatusResult
    | RpcResult
)


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
