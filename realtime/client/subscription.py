"""A channel subscription: its publications, events, live state and status, as the client feeds them."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from typing import Any, Generic, Protocol, TypeVar

from protocol import messages as m

from .errors import ClientError
from .events import Event, Joined, Left, ReadReceipt, StatusChanged, TypingChanged
from .live_state import LiveState
from .values import Message, StreamPosition, UserStatus, message_of, unpack_info

__all__ = ["Subscription", "SubscriptionOwner"]

log = logging.getLogger("realtime.client")

_T = TypeVar("_T")


class SubscriptionOwner(Protocol):
    """What a subscription needs of the client that made it (the client's side of the seam)."""

    async def _unsubscribe(self, sub: Subscription) -> None: ...

    def _unrecovered(self, sub: Subscription, why: str) -> None: ...


class _End:
    """Queue marker: the iterator stops, raising ``error`` if set."""

    __slots__ = ("error",)

    def __init__(self, error: ClientError | None) -> None:
        self.error = error


class _Stream(Generic[_T]):
    """An unbounded queue that ends once; iterating it yields items, then ends as told."""

    __slots__ = ("_ended", "_queue")

    def __init__(self) -> None:
        self._queue: asyncio.Queue[_T | _End] = asyncio.Queue()
        self._ended = False

    def __len__(self) -> int:
        return self._queue.qsize() - self._ended  # the end marker stays queued once put

    def __aiter__(self) -> _Stream[_T]:
        return self

    async def __anext__(self) -> _T:
        item = await self._queue.get()
        if not isinstance(item, _End):
            return item
        self._queue.put_nowait(item)  # every later call ends the same way
        if item.error is not None:
            raise item.error
        raise StopAsyncIteration

    def put(self, item: _T) -> None:
        if not self._ended:
            self._queue.put_nowait(item)

    def end(self, error: ClientError | None) -> None:
        if not self._ended:
            self._ended = True
            self._queue.put_nowait(_End(error))


class Subscription:
    """A channel subscription; iterate it (``async for pub in sub``), then :meth:`unsubscribe`.

    ``position`` is the last stream position seen (a publication's, or the
    stream's position when the hub confirmed the subscription); it is what a
    resubscribe passes as ``since``. ``recovered`` tells whether the latest
    resubscribe got back everything missed; when it did not, the client also
    calls ``on_unrecovered(sub)`` and the app should reload the channel's state.

    Live channels: ``state`` is a read-only view of key -> value, ``version``
    the state version it is complete up to, :meth:`key_version` what a
    conditional write of a key expects. Status channels: ``status`` is the
    user's current :class:`UserStatus`. With ``events=True`` at subscribe,
    :meth:`events` yields the channel's :data:`Event` objects.

    Iteration ends (``StopAsyncIteration``) after :meth:`unsubscribe` or
    :meth:`Client.close`, once queued publications are out. It raises
    :class:`ConnectionClosed` when the hub stopped the client,
    :class:`Unsubscribed` when the hub unsubscribed it, and :class:`ReplyError`
    when the hub refused a resubscribe.
    """

    def __init__(
        self,
        client: SubscriptionOwner,
        channel: str,
        *,
        events: bool = False,
        token: str | None = None,
        get_token: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        self.channel = channel
        self.position: StreamPosition | None = None
        self.recovered = True
        #: Status channels: the user's status, from the subscribe reply then each push.
        self.status: UserStatus | None = None
        self._client = client
        self._pubs: _Stream[Message] = _Stream()
        self._events: _Stream[Event] | None = _Stream() if events else None
        self._live_state = LiveState(channel)
        #: Confirmed once by the hub: from then on the client resubscribes it itself.
        self._live = False
        self._ended = False
        #: Pushes of the channel that came while a (re)subscribe waited for its reply.
        self._held: list[m.Push] | None = None
        #: The connection a gap resubscribe runs on, while it runs (compared by identity only).
        self._resyncing: object | None = None
        #: The subscription token sent with each (re)subscribe; ``_get_token`` renews it before
        #: every resubscribe and after a TOKEN_EXPIRED reply.
        self._token = token
        self._get_token = get_token

    def __repr__(self) -> str:
        return f"<Subscription {self.channel!r} position={self.position} version={self.version}>"

    def __len__(self) -> int:
        """Publications received and not yet taken from the iterator."""
        return len(self._pubs)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Message:
        return await self._pubs.__anext__()

    def events(self) -> AsyncIterator[Event]:
        """The channel's events, in order; it ends when the publications' iterator does.

        Needs ``client.subscribe(channel, events=True)`` (RuntimeError otherwise):
        events are buffered from the subscribe on, so none is missed.
        """
        if self._events is None:
            raise RuntimeError(f"subscribe to {self.channel!r} with events=True to receive its events")
        return self._events

    @property
    def version(self) -> int:
        """Live channels: every change up to this state version is in ``state``."""
        return self._live_state.version

    @property
    def state(self) -> Mapping[str, Any]:
        """Live channels: a read-only view of key -> value."""
        return self._live_state.state

    def key_version(self, key: str) -> int:
        """The version that set ``key`` (0 when absent): pass it as ``version`` for a conditional write."""
        return self._live_state.key_version(key)

    async def unsubscribe(self) -> None:
        """Stop receiving this channel; iteration ends after what is already queued."""
        await self._client._unsubscribe(self)

    # --- used by the client ------------------------------------------------

    def _hold(self) -> None:
        if self._held is None:
            self._held = []

    def _on_push(self, push: m.Push) -> bool:
        """Take one push of this channel; True when it shows a gap to heal (a publication
        past the next offset, or a live state change past the next version)."""
        if self._held is not None:
            self._held.append(push)
            return False
        return self._handle(push)

    def _on_subscribed(
        self, result: m.SubscribeResult, since: StreamPosition | None, version: int | None = None
    ) -> bool:
        """Deliver recovered publications, apply the state, then what was held; go live.

        ``version`` is what the subscribe asked for. Returns True when there is
        a gap to heal (a held publication past the next offset, a held patch
        beyond the snapshot).
        """
        first = not self._live
        gap = False
        for pub in result.publications:
            gap |= not self._deliver(pub)
        top = StreamPosition(result.offset, result.epoch)
        pos = self.position
        if pos is None or pos.epoch != top.epoch or pos.offset < top.offset:
            self.position = top
        for change in self._live_state.apply_snapshot(
            result.version, result.state, version, announce=not first, full=result.full
        ):
            self._emit(change)
        if result.status is not None:
            if not first and result.status != self.status:
                self._emit(StatusChanged(self.channel, result.status))
            self.status = result.status
        held, self._held = self._held or [], None
        for push in held:  # after a gap, publications are not delivered: the resubscribe brings them
            if isinstance(push, m.Publication):
                # Pushes from before an epoch change are stale; a stream that had not started gets its first.
                if push.epoch == top.epoch or _unstarted(top):
                    gap |= not self._deliver(push)
            elif self._handle(push):
                gap = True
        self._live = True
        if since is not None:
            self.recovered = result.recovered
        return gap

    def _handle(self, push: m.Push) -> bool:
        if isinstance(push, m.Publication):
            return not self._deliver(push)
        elif isinstance(push, m.StateChange):
            changes = self._live_state.apply(push)
            if changes is None:
                return True  # a change was missed: resubscribe with the version
            for change in changes:
                self._emit(change)
        elif isinstance(push, m.StatusNotice):
            if push.status != self.status:  # a resubscribe reply may have announced it already
                self.status = push.status
                self._emit(StatusChanged(push.channel, push.status))
        elif isinstance(push, m.Join):
            self._emit(Joined(push.channel, push.user, unpack_info(push.info)))
        elif isinstance(push, m.Leave):
            self._emit(Left(push.channel, push.user))
        elif isinstance(push, m.TypingNotice):
            self._emit(TypingChanged(push.channel, push.user, push.typing, push.timeout))
        elif isinstance(push, m.ReadNotice):
            self._emit(ReadReceipt(push.channel, push.user, push.offset))
        return False

    def _deliver(self, pub: m.Publication) -> bool:
        """Hand ``pub`` to the app unless it was delivered already; False when it comes after a gap
        (an offset beyond the next one of the same epoch): it is not delivered, and the caller
        resubscribes from the position, which recovers what was missed or says it cannot."""
        pos = self.position
        if pos is not None and (pub.epoch == pos.epoch or _unstarted(pos)):
            if pub.epoch == pos.epoch and pub.offset <= pos.offset:
                return True  # already delivered
            if pub.offset != pos.offset + 1:  # (a stream that had not started begins at 1)
                log.info("channel %r: offset %d after %d, resubscribing", self.channel, pub.offset, pos.offset)
                return False
        self.position = StreamPosition(pub.offset, pub.epoch)
        if pos is not None and pub.epoch != pos.epoch and not _unstarted(pos):
            # The stream restarted: what it held is gone. (Offset 0 of epoch "": the stream
            # had not started, and its first publication brings its epoch.)
            self.recovered = False
            self._client._unrecovered(self, f"the stream restarted (epoch {pos.epoch} -> {pub.epoch})")
        publication = message_of(pub)
        if publication is not None:
            self._pubs.put(publication)
        return True

    def _emit(self, event: Event) -> None:
        if self._events is not None:
            self._events.put(event)

    def _end(self, error: ClientError | None) -> None:
        if not self._ended:
            self._ended = True
            self._held = None
            self._pubs.end(error)
            if self._events is not None:
                self._events.end(error)


def _unstarted(pos: StreamPosition) -> bool:
    """Offset 0 of epoch "": a stream nothing was published to yet (protocol.md, recovery)."""
    return pos.offset == 0 and not pos.epoch
