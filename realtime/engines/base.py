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

from protocol.messages import ClientInfo, Publication, StreamPosition


class PublicationHandler(Protocol):
    """The node side of the engine: receives publications for channels it subscribed to."""

    def on_publication(self, pub: Publication) -> None:
        """Called once per publication, in offset order per channel. Must not block."""


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
class StateEntry:
    """A keyed value of a channel's live state; ``version`` grows by one per change."""

    value: bytes | None
    version: int


@dataclass(slots=True)
class EngineStats:
    """Counters an operator may want; engines fill what they know."""

    channels: int = 0
    extra: dict[str, int] = field(default_factory=dict)


class Engine(abc.ABC):
    """One interface, a memory and a Redis implementation."""

    name: str

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
        limit: int | None = None,
        reverse: bool = False,
    ) -> HistoryPage:
        """Read history: with ``since``, the publications after it (same epoch only).

        ``reverse`` returns newest first. ``limit=0`` returns only the position.
        """

    @abc.abstractmethod
    async def remove_history(self, channel: str) -> None:
        """Drop the channel's history (offsets continue, the epoch stays)."""

    # --- presence --------------------------------------------------------

    @abc.abstractmethod
    async def presence_add(self, channel: str, client: str, info: bytes, *, ttl: float) -> None:
        """Record (or refresh) ``client`` as present in ``channel`` for ``ttl`` seconds."""

    @abc.abstractmethod
    async def presence_remove(self, channel: str, client: str) -> None: ...

    @abc.abstractmethod
    async def presence(self, channel: str) -> dict[str, bytes]:
        """Map of client id -> info bytes of everyone present."""

    # --- keyed live state ------------------------------------------------

    @abc.abstractmethod
    async def state_set(
        self, channel: str, key: str, value: bytes | None, *, expected_version: int | None = None
    ) -> StateEntry:
        """Set (``None`` deletes) one key; returns the new entry. With ``expected_version``,
        raises :class:`VersionConflict` when the stored version differs."""

    @abc.abstractmethod
    async def state_get(self, channel: str, key: str) -> StateEntry:
        """The key's value and version (``value=None, version=0`` when never set)."""

    @abc.abstractmethod
    async def state_all(self, channel: str) -> dict[str, StateEntry]: ...


class VersionConflict(Exception):
    """A conditional state update found another version than expected."""

    def __init__(self, current: StateEntry) -> None:
        super().__init__(f"version is {current.version}")
        self.current = current
