"""Subscriptions of this node's connections, and local fan-out.

Everything that changes the state of a (connection, channel) subscription lives
here, in the spirit of h11's ``_state.py``: the states and the events are
enums, the legal transitions are the table :data:`TRANSITIONS`, and
:meth:`Subscriptions.transition` is the one place that performs them (an
illegal one raises :class:`IllegalTransition`, naming the state). A
connection's ``channels`` maps each channel it is subscribed to, or
subscribing to, to its state; no other code writes it.

    state     event            next      what it means
    --------  ---------------  --------  ------------------------------------------------
    (none)    BEGIN            JOINING   subscribe command in flight: publications wait
    JOINING   REPLIED          LIVE      the reply went out: the waiting ones follow it
    JOINING   REPLIED_AHEAD    AHEAD     the reply carried history this node has not
                                         delivered yet: skip up to its position
    AHEAD     CAUGHT_UP        LIVE      a publication past that position arrived
    any       LEAVE            (none)    unsubscribed by the client or the server, closed

Fan-out is the hot path: a publication is encoded once per codec in use on the
channel and the same bytes go to every live subscriber. Per subscriber the work
is one ``Connection.send`` per loop turn, not per publication: the channel's
publications of one turn join one batch (:meth:`~realtime.frames.Outgoing.open_batch`) (one frame),
queued once to each subscriber. The hub closes the turn's batches before it
flushes (:meth:`Subscriptions.close_batches`), and any change of the channel's
subscribers closes the channel's batches at once.
"""

from __future__ import annotations

import asyncio
import enum
from collections import Counter
from collections.abc import Mapping
from typing import Final, Generic, Protocol, TypeVar

from protocol.codec import Codec
from protocol.messages import Publication, StreamPosition

from .frames import Outgoing
from .metrics import Tally
from .namespaces import namespace_of


class SubState(enum.Enum):
    """Where one connection's subscription to one channel stands."""

    JOINING = "joining"
    AHEAD = "ahead"
    LIVE = "live"


class SubEvent(enum.Enum):
    BEGIN = "begin"
    REPLIED = "replied"
    REPLIED_AHEAD = "replied ahead"
    CAUGHT_UP = "caught up"
    LEAVE = "leave"


#: (state, event) -> next state; None is "not subscribed". Pairs not listed are illegal.
TRANSITIONS: Final[Mapping[tuple[SubState | None, SubEvent], SubState | None]] = {
    (None, SubEvent.BEGIN): SubState.JOINING,
    (SubState.JOINING, SubEvent.REPLIED): SubState.LIVE,
    (SubState.JOINING, SubEvent.REPLIED_AHEAD): SubState.AHEAD,
    (SubState.AHEAD, SubEvent.CAUGHT_UP): SubState.LIVE,
    (SubState.JOINING, SubEvent.LEAVE): None,
    (SubState.AHEAD, SubEvent.LEAVE): None,
    (SubState.LIVE, SubEvent.LEAVE): None,
}


class IllegalTransition(RuntimeError):
    """A subscription was asked to make a move the table does not allow (a bug in the hub)."""

    def __init__(self, channel: str, state: SubState | None, event: SubEvent) -> None:
        name = "not subscribed" if state is None else state.value
        super().__init__(f"subscription to {channel!r}: cannot {event.value} while {name}")
        self.state = state
        self.event = event


class Subscriber(Protocol):
    """What subscriptions need of a connection (``realtime.connection.Connection``)."""

    @property
    def codec(self) -> Codec: ...

    @property
    def channels(self) -> dict[str, SubState]:
        """Channel -> where the subscription stands; written only by :meth:`Subscriptions.transition`."""

    def send(self, out: Outgoing) -> None: ...


C = TypeVar("C", bound=Subscriber)


class Channel(Generic[C]):
    """This node's side of one channel: its subscribers by state, and its delivery position."""

    __slots__ = ("ahead", "batches", "epoch", "joining", "offset", "ready", "repairing", "subscribers")

    def __init__(self) -> None:
        #: The last publication this node delivered on the channel ("" = none yet).
        self.epoch = ""
        self.offset = 0
        #: Publications held back while a gap is filled from history (``realtime.continuity``).
        self.repairing: list[Publication] | None = None
        #: LIVE subscribers, by codec: one encoding per codec.
        self.subscribers: dict[Codec, set[C]] = {}
        #: JOINING subscribers and what waits for them, in order.
        self.joining: dict[C, list[Outgoing]] = {}
        #: AHEAD subscribers and the position their reply carried them to.
        self.ahead: dict[C, StreamPosition] = {}
        #: Resolved once the engine subscription for this node is in place.
        self.ready: asyncio.Future[None] | None = None
        #: This loop turn's batch per codec, queued to every LIVE subscriber of that codec, or None.
        self.batches: dict[Codec, Outgoing] | None = None

    def close_batches(self) -> None:
        """What is published from now on is queued anew (the subscribers changed, or the turn ended)."""
        batches = self.batches
        if batches is not None:
            self.batches = None
            for batch in batches.values():
                batch.close()

    def empty(self) -> bool:
        return not self.joining and not self.ahead and not any(self.subscribers.values())

    def members(self) -> list[C]:
        """Every connection LIVE or AHEAD on the channel (for server-side unsubscribes)."""
        return [conn for conns in self.subscribers.values() for conn in conns] + list(self.ahead)


class Subscriptions(Generic[C]):
    """Every subscription of this node's connections, by channel; the only writer of their states."""

    def __init__(self, sent: Mapping[str, Tally] | None = None) -> None:
        self.channels: dict[str, Channel[C]] = {}
        #: Namespace name -> how many of ``channels`` are in it (the namespace's max_channels quota).
        self.per_namespace: Counter[str] = Counter()
        # Messages sent by fan-out, counted once per codec per publication or event (metrics).
        self._pubs = Tally() if sent is None else sent["pub"]
        self._events = Tally() if sent is None else sent["event"]
        #: Channels with batches opened this loop turn (:meth:`close_batches`).
        self._batched: list[Channel[C]] = []

    def channel(self, name: str) -> Channel[C]:
        """The channel's node state, made on first use."""
        ch = self.channels.get(name)
        if ch is None:
            ch = self.channels[name] = Channel()
            self.per_namespace[namespace_of(name)] += 1
        return ch

    def drop_if_empty(self, name: str, ch: Channel[C]) -> bool:
        """Forget ``ch`` when nobody is subscribed to it; True if it was forgotten."""
        if ch.empty() and self.channels.get(name) is ch:
            del self.channels[name]
            ns = namespace_of(name)
            self.per_namespace[ns] -= 1
            if not self.per_namespace[ns]:
                del self.per_namespace[ns]
            return True
        return False

    # --- the one writer --------------------------------------------------

    def transition(self, conn: C, name: str, event: SubEvent, position: StreamPosition | None = None) -> list[Outgoing]:
        """Move ``conn``'s subscription to ``name`` by ``event`` (the table above).

        ``position`` is the AHEAD position (REPLIED_AHEAD). Returns the messages
        that waited while JOINING, when leaving that state, for the caller to send
        or drop; an empty list otherwise.
        """
        state = conn.channels.get(name)
        try:
            new = TRANSITIONS[state, event]
        except KeyError:
            raise IllegalTransition(name, state, event) from None
        waiting: list[Outgoing] = []
        ch = self.channels.get(name)
        if ch is None:
            if event is not SubEvent.BEGIN and event is not SubEvent.LEAVE:
                raise IllegalTransition(name, state, event)
            ch = self.channel(name) if new is not None else None
        if ch is not None:
            if ch.batches is not None:  # a batch must not reach a leaver, nor miss a newcomer
                ch.close_batches()
            if state is SubState.JOINING:
                waiting = ch.joining.pop(conn, waiting)
            elif state is SubState.AHEAD:
                ch.ahead.pop(conn, None)
            elif state is SubState.LIVE:
                live = ch.subscribers.get(conn.codec)
                if live is not None:
                    live.discard(conn)
            if new is SubState.JOINING:
                ch.joining[conn] = []
            elif new is SubState.AHEAD:
                assert position is not None
                ch.ahead[conn] = position
            elif new is SubState.LIVE:
                ch.subscribers.setdefault(conn.codec, set()).add(conn)
        if new is None:
            del conn.channels[name]
        else:
            conn.channels[name] = new
        return waiting

    # --- fan-out ---------------------------------------------------------

    def fan_out(self, ch: Channel[C], pub: Publication) -> None:
        """Deliver ``pub`` to the channel's subscribers: encoded once per codec, and joined
        to the codec's batch of this loop turn when it has one (no per-subscriber work)."""
        encoded: dict[Codec, Outgoing] = {}
        newcomers = bool(ch.joining or ch.ahead)
        for codec, conns in ch.subscribers.items():
            if conns:
                out = encoded[codec] = Outgoing(codec.encode(pub), codec.binary, pub.offset, pub.epoch)
                size = out.size
                batches = ch.batches
                batch = None if batches is None else batches.get(codec)
                if batch is not None and batch.add(out):
                    if batch.detached:
                        for detached in batch.detached:
                            detached.send(out)
                else:
                    if not newcomers and len(conns) > 1:  # (newcomers queue ``out`` itself: it must not grow)
                        out.open_batch(codec.separator, len(conns))
                        if batches is None:
                            batches = ch.batches = {}
                            self._batched.append(ch)
                        batches[codec] = out
                    for conn in conns:
                        conn.send(out)
                self._pubs.add(len(conns), len(conns) * size)
        if newcomers:
            self.fan_out_to_newcomers(ch, pub, encoded)

    def close_batches(self) -> None:
        """End the loop turn's batches (the hub, before it flushes): their frames are built
        from what joined them, and the next publications start new ones."""
        batched, self._batched = self._batched, []
        for ch in batched:
            ch.close_batches()

    def fan_out_to_newcomers(self, ch: Channel[C], pub: Publication, encoded: dict[Codec, Outgoing]) -> None:
        """Queue ``pub`` for subscribes still in flight; deliver it to AHEAD subscribers
        only if it is newer than what their reply carried, and make them LIVE then."""

        def out_for(codec: Codec) -> Outgoing:
            out = encoded.get(codec)
            if out is None:
                out = encoded[codec] = Outgoing(codec.encode(pub), codec.binary, pub.offset, pub.epoch)
            return out

        for conn, waiting in ch.joining.items():
            waiting.append(out_for(conn.codec))
        for conn, seen in list(ch.ahead.items()):
            if pub.epoch != seen.epoch or pub.offset > seen.offset:
                out = out_for(conn.codec)
                self._pubs.add(1, len(out.payload))
                conn.send(out)
                self.transition(conn, pub.channel, SubEvent.CAUGHT_UP)

    def deliver_event(self, ch: Channel[C], event: bytes) -> None:
        """Hand an event (msgpack server message) to everyone subscribed, joining included."""
        encoded: dict[Codec, Outgoing] = {}

        def out_for(codec: Codec) -> Outgoing:
            out = encoded.get(codec)
            if out is None:
                out = encoded[codec] = Outgoing(codec.from_msgpack(event), codec.binary)
            return out

        for codec, conns in ch.subscribers.items():
            if conns:
                out = out_for(codec)
                for conn in conns:
                    conn.send(out)
                self._events.add(len(conns), len(conns) * len(out.payload))
        for conn, waiting in ch.joining.items():
            waiting.append(out_for(conn.codec))
        for conn in ch.ahead:  # subscribed: events are not ordered by offset
            out = out_for(conn.codec)
            self._events.add(1, len(out.payload))
            conn.send(out)
