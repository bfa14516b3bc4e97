"""The broker role: publications with offsets, epochs and history, delivery to nodes.

A node keeps its own connections and local fan-out (``realtime.hub``); the
broker carries what crosses nodes: each channel's stream of publications
(offsets that never repeat within an epoch, bounded history), ephemeral
events, and control messages for every node. Payloads are ``bytes``
throughout: the broker never looks inside them.

Call :meth:`Broker.start` with the node's :class:`PublicationHandler` before
anything else and :meth:`Broker.close` last.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass
from typing import Protocol, overload

from protocol.messages import ClientInfo, Publication, StreamPosition


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
    """How much of a channel's stream to keep: ``size`` publications for ``ttl`` seconds,
    and (``max_bytes`` > 0) at most that many bytes of them, the newest one always kept.

    ``size == 0`` keeps no history; offsets are still assigned. Bytes are counted by
    :func:`stored_size` (the Redis engine counts its stored message, a few bytes more).
    """

    size: int = 0
    ttl: float = 0.0
    max_bytes: int = 0


@dataclass(frozen=True, slots=True)
class HistorySlice:
    """Publications read from history, and the stream's current position.

    ``truncated``: the read stopped at its ``max_bytes`` while more publications
    matched (a ``limit`` reached is not a truncation). A channel nothing was ever
    published to (or whose position was forgotten) stands at offset 0 of epoch ``""``.
    """

    publications: list[Publication]
    position: StreamPosition
    truncated: bool = False


def stored_size(pub: Publication) -> int:
    """The bytes a publication weighs against history byte bounds: its data and info."""
    info = pub.info
    return len(pub.data) + (len(info.info or b"") + len(info.user) + len(info.client) if info is not None else 0)


@dataclass(frozen=True, slots=True)
class Idempotency:
    """Publish at most once per ``key`` in the channel for ``ttl`` seconds.

    The key is scoped to the channel (another channel's same key is another
    key); the caller scopes it further (per sender, say) by what it puts in it.
    """

    key: str
    ttl: float

    def __post_init__(self) -> None:
        if not self.key or self.ttl <= 0:
            raise ValueError("an idempotency key needs a non-empty key and a ttl > 0")


@dataclass(frozen=True, slots=True)
class Published:
    """What an idempotent publish returns: the publication's place and id.

    ``replayed`` is True when the key already held a result: nothing was
    published, and these are the first publish's offset, epoch, mid and time.
    """

    offset: int
    epoch: str
    mid: str = ""
    time: int = 0
    replayed: bool = False

    @property
    def position(self) -> StreamPosition:
        return StreamPosition(self.offset, self.epoch)


@dataclass(frozen=True, slots=True)
class DeliveryHealth:
    """The engine's delivery troubles on this node since it started (for metrics); none in memory."""

    #: Times the subscription connections were reopened after a loss.
    reconnects: int = 0
    #: Liveness probes not back within their interval.
    probe_failures: int = 0


class Broker(abc.ABC):
    """Streams of publications shared by every node; memory and Redis implementations."""

    name: str

    @property
    def ready(self) -> bool:
        """Whether the engine can serve now (``/readyz``); the memory engine always can."""
        return True

    @property
    def delivery_health(self) -> DeliveryHealth:
        """Counts of the engine's delivery troubles (metrics); the memory engine has none."""
        return DeliveryHealth()

    #: Whether the engine may send one publish more than once (it retries after a lost answer):
    #: then a publish without an id needs one (``realtime.publish_ids``). The memory engine never does.
    retries_publishes = True
    #: Whether publishes started one after another without awaiting each other (each one's
    #: call made before the next) take effect in that order, and are worth overlapping: then
    #: a connection may pipeline its publishes (``realtime.connection``). Off for engines whose
    #: publish never waits (the memory engine: nothing to overlap) or cannot keep the order.
    pipelines_publishes = False

    @abc.abstractmethod
    async def start(self, handler: PublicationHandler) -> None:
        """Begin delivering publications of subscribed channels to ``handler``."""

    @abc.abstractmethod
    async def close(self) -> None:
        """Stop delivering and release resources; idempotent."""

    # --- publications ----------------------------------------------------

    @overload
    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        info: ClientInfo | None = None,
        history: HistoryOptions = HistoryOptions(),
        mid: str = "",
        time: int = 0,
        idempotency: None = None,
    ) -> StreamPosition: ...

    @overload
    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        info: ClientInfo | None = None,
        history: HistoryOptions = HistoryOptions(),
        mid: str = "",
        time: int = 0,
        idempotency: Idempotency,
    ) -> Published: ...

    async def publish(
        self,
        channel: str,
        data: bytes,
        *,
        info: ClientInfo | None = None,
        history: HistoryOptions = HistoryOptions(),
        mid: str = "",
        time: int = 0,
        idempotency: Idempotency | None = None,
    ) -> StreamPosition | Published:
        """Assign the next offset of ``channel``, keep it in history, deliver it to every node.

        Offsets of one channel never repeat or go backwards within an epoch,
        whichever node publishes. With ``idempotency``, in the same atomic step:
        when its key holds a result, nothing is published and that result comes
        back (``replayed``); otherwise the new result is stored under the key
        for its ttl. Without, the position is returned.
        """
        published = await self._publish(channel, data, info, history, mid, time, idempotency)
        return published if idempotency is not None else published.position

    @abc.abstractmethod
    async def _publish(
        self,
        channel: str,
        data: bytes,
        info: ClientInfo | None,
        history: HistoryOptions,
        mid: str,
        time: int,
        idempotency: Idempotency | None,
    ) -> Published:
        """The atomic publish step each engine implements (see :meth:`publish`)."""

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
        max_bytes: int = 0,
    ) -> HistorySlice:
        """Read history: with ``since``, the publications after it (same epoch only);
        with ``before``, those with a smaller offset.

        ``reverse`` walks from the newest, so ``limit`` keeps the newest ones; the
        slice is returned newest first then. ``limit=0`` returns only the position.
        ``max_bytes`` > 0 stops the read before the publication that would take the
        slice's :func:`stored_size` total over it (the first one is always read), and
        marks the slice ``truncated``: a read costs memory in proportion to it, not
        to the history. A read never creates state: an unknown channel stands at
        offset 0 of epoch ``""``.
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
