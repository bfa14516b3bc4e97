"""The engine interface: everything hub nodes must share.

A node keeps its own connections and local fan-out (``realtime.hub``); the
engine carries what crosses nodes: publications with their offsets, the
channels a node listens to, history, presence and keyed state. The memory
engine serves one process; the Redis engine (same interface, same contract
tests) serves many. Payloads are ``bytes`` throughout: the engine never looks
inside them.

Call :meth:`Engine.start` with the node's :class:`PublicationHandler` before
anything else and :meth:`Engine.close` last.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass, field
from typing import Protocol

from protocol.messages import ClientInfo, Publication, StateEntry, StreamPosition


class PublicationHandler(Protocol):
    """The node side of the engine: receives what is published to channels it subscribed to."""

    def on_publication(self, pub: Publication) -> None:
        """Called once per publication, in offset order per channel. Must not block."""

    def on_event(self, channel: str, event: bytes) -> None:
        """An ephemeral push for the channel's subscribers (join, typing, state change...),
        as the msgpack encoding of a server message. Must not block."""

    def on_control(self, message: bytes) -> None:
        """A message for every node (disconnect a user, ...), msgpack. Must not block."""

    def on_resync(self) -> None:
        """Deliveries may have been lost (the engine's subscription connection was
        re-established): the node checks each channel's continuity against history."""


@dataclass(frozen=True, slots=True)
class HistoryOptions:
    """How much of a channel's stream to keep: ``size`` publications for ``ttl`` seconds.

    ``size == 0`` keeps no history; offsets are still assigned.
    """

    size: int = 0
    ttl: float = 0.0


@dataclass(frozen=True, slots=True)
class HistoryPage:
    """Publications read from history, and the stream's current position."""

    publications: list[Publication]
    position: StreamPosition


@dataclass(frozen=True, slots=True)
class PresenceStats:
    clients: int
    users: int


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """One connection present in a channel: its user and info (msgpack or None)."""

    user: str
    info: bytes | None = None


@dataclass(slots=True)
class EngineStats:
    """Counters an operator may want; engines fill what they know."""

    channels: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Engine(abc.ABC):
    """One interface, a memory and a Redis implementation."""

    name: str

    @property
    def ready(self) -> bool:
        """Whether the engine can serve now (``/readyz``); the memory engine always can."""
        return True

    @abc.abstractmethod
    async def start(self, handler: PublicationHandler) -> None:
        """Begin delivering publications of subscribed channels to ``handler``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop delivering and release resources; idempotent."""

    # --- publications ----------------------------------------------------

    @abc.abstractmethod
    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        info: ClientInfo | None = None,
        history: HistoryOptions = HistoryOptions(),
        mid: str = "",
        time: int = 0,
    ) -> StreamPosition:
        """Assign the next offset of ``channel``, keep it in history, deliver it to every node.

        Offsets of one channel never repeat or go backwards within an epoch,
        whichever node publishes.
        """

    @abc.abstractmethod
    async def subscribe(self, channel: str) -> None:
        """Make this node receive the channel's publications (the hub ref-counts clients)."""

    @abc.abstractmethod
    async def unsubscribe(self, channel: str) -> None:
        """Stop receiving the channel's publications on this node."""

    # --- history ---------------------------------------------------------

    @abc.abstractmethod
    async def history(
        self,
        channel: str,
        *,
        since: StreamPosition | None = None,
        before: int | None = None,
        limit: int | None = None,
        reverse: bool = False,
    ) -> HistoryPage:
        """Read history: with ``since``, the publications after it (same epoch only);
        with ``before``, those with a smaller offset.

        ``reverse`` walks from the newest, so ``limit`` keeps the newest ones; the
        page is returned newest first then. ``limit=0`` returns only the position.
        """

    @abc.abstractmethod
    async def remove_history(self, channel: str) -> None:
        """Drop the channel's history (offsets continue, the epoch stays)."""

    # --- ephemeral events and control ---------------------------------

    @abc.abstractmethod
    async def broadcast(self, channel: str, event: bytes) -> None:
        """Deliver ``event`` to :meth:`PublicationHandler.on_event` on every node subscribed
        to ``channel``; nothing is stored and no offset is used."""

    @abc.abstractmethod
    async def control(self, message: bytes) -> None:
        """Deliver ``message`` to :meth:`PublicationHandler.on_control` on every node, this one included."""

    # --- presence --------------------------------------------------------

    @abc.abstractmethod
    async def presence_add(self, channel: str, client: str, entry: PresenceEntry, *, ttl: float) -> bool:
        """Record (or refresh) ``client`` in ``channel`` for ``ttl`` seconds.

        Returns True when this makes the user present: their first connection
        here, and no leave of theirs is pending (:meth:`presence_remove`). The
        caller announces a join then.
        """

    @abc.abstractmethod
    async def presence_remove(self, channel: str, client: str, user: str, *, grace: float) -> int:
        """Remove ``client``. Returns 0, or when it was the user's last connection
        here a token naming their leave, now pending: pass it to
        :meth:`presence_settle` after ``grace``."""

    @abc.abstractmethod
    async def presence_settle(self, channel: str, user: str, leave: int) -> bool:
        """True (once) when the pending leave ``leave`` stands: the user did not come
        back. The caller announces the leave then. A leave the user has since come
        back from, and left again (a newer token, another node's), is not this one."""

    @abc.abstractmethod
    async def presence_expire(self, channel: str) -> list[str]:
        """Drop entries whose TTL ran out (their node died without a word) and return,
        once, the users who are no longer present at all: the caller announces their leave."""

    @abc.abstractmethod
    async def presence(self, channel: str) -> dict[str, PresenceEntry]:
        """Map of client id -> entry of every connection present."""

    @abc.abstractmethod
    async def presence_stats(self, channel: str) -> PresenceStats:
        """Connection and unique-user counts, without listing members."""

    # --- small shared values -------------------------------------------

    @abc.abstractmethod
    async def kv_get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def kv_set(self, key: str, value: bytes, *, ttl: float = 0.0, only_if_absent: bool = False) -> bool:
        """Store ``value`` (for ``ttl`` seconds; 0 = no expiry). With ``only_if_absent``,
        store only when no live value exists. Returns whether it was stored."""

    # --- read receipts ---------------------------------------------------

    @abc.abstractmethod
    async def receipt_set(self, channel: str, user: str, offset: int) -> int:
        """Raise the user's receipt in ``channel`` to ``offset``; never lowers it.
        Returns the stored offset (greater than ``offset`` when it was already ahead)."""

    @abc.abstractmethod
    async def receipts(self, channel: str) -> dict[str, int]:
        """User -> offset read up to."""

    # --- keyed live state ------------------------------------------------

    @abc.abstractmethod
    async def state_set(
        self, channel: str, key: str, value: bytes | None, *, expected_version: int | None = None
    ) -> StateEntry:
        """Set (``None`` deletes) one key and bump the channel's state version.

        The entry's version is the channel's new version. With
        ``expected_version``, raises :class:`VersionConflict` unless the key's
        current version equals it (0 = the key does not exist).
        """

    @abc.abstractmethod
    async def state_get(self, channel: str, key: str) -> StateEntry:
        """The key's value and version (``value=None, version=0`` when never set)."""

    @abc.abstractmethod
    async def state_since(self, channel: str, version: int = 0) -> tuple[list[StateEntry], int]:
        """Entries changed after ``version`` and the channel's current version.

        With ``version=0``: every existing key. Otherwise deleted keys come as
        entries with ``value=None``, so a client catching up learns of them.
        """


class VersionConflict(Exception):
    """A conditional state update found another version than expected."""

    def __init__(self, current: StateEntry) -> None:
        super().__init__(f"version is {current.version}")
        self.current = current
