"""The Python client SDK: one reconnecting connection to a realtime hub.

Usage::

    async with Client("ws://localhost:8000/ws", token) as client:
        sub = await client.subscribe("chat:1", events=True)
        sent = await client.publish("chat:1", {"text": "hi"}, key="msg-1")
        async for pub in sub:
            print(pub.offset, pub.mid, pub.data)

The client keeps one WebSocket open. When it drops (network loss, hub restart,
a close code outside 4500-4999, or a Disconnect push with ``reconnect=True``),
it reconnects with exponential backoff and full jitter
(:func:`protocol.backoff.backoff`), then resubscribes every channel with
``since`` = the last position it saw, so the hub sends what was missed; those
publications come out of the subscription's iterator first, in order, with
nothing delivered twice. When the hub says not to come back (close code
4500-4999 or ``Disconnect(reconnect=False)``), the client stops: pending and
later calls raise :class:`ConnectionClosed`.

**Commands.** Each method of :class:`Client` sends one command and returns a
typed result (the values of :mod:`realtime.values`, which
:mod:`realtime.publisher` returns too); while reconnecting it waits for the
connection (at most ``command_timeout``, then :class:`CommandTimeout`), and a
refusal raises :class:`ReplyError` with the hub's :class:`ErrorCode`. Reads
and idempotent marks (``subscribe``, ``history``, ``read``, ``receipts``,
``presence``, ``presence_stats``, ``status``, ``ping``) are sent again on the
next connection when one drops before the reply. Writes are not: ``publish``
without a key, ``typing``, ``state_set`` and ``state_patch`` raise
:class:`ConnectionLost` instead, since the hub may or may not have run them.
``publish`` *with* a key is retried, by an authenticated user: in chat
channels the hub answers the retry with the first send's result (other
namespaces ignore keys, so pass one only in chat channels).

**Channel events.** ``async for pub in sub`` yields publications only. Joins,
leaves, typing notices, read receipts, status and live-state changes are
:data:`Event` objects (:class:`Join`, :class:`Leave`, :class:`Typing`,
:class:`Read`, :class:`StatusChanged`, :class:`StateChanged`), read with
``async for event in sub.events()`` from a subscription made with
``subscribe(channel, events=True)``. Events are opt-in so that a subscription
nobody reads events from does not buffer them forever; ``sub.state`` and
``sub.status`` are kept up to date either way. When the hub unsubscribes the
client (wire push ``unsub``), both iterators end by raising
:class:`Unsubscribed`, once what was queued is out.

**Live channels.** ``sub.state`` (key -> value) and ``sub.version`` follow the
client rules of ``handlers/live.py``: the subscribe snapshot, then each state
push (a merge patch applied only at ``version + 1``, a full value whenever it
is newer than the key's). A gap (a patch beyond ``version + 1``) makes the
client resubscribe the channel with ``version`` on its own, which returns only
what changed; so does every reconnect. Changes reach the app as
:class:`StateChanged` events.

Each subscription buffers publications (and, with ``events=True``, events) in
**unbounded** queues. The reader task must never wait on a slow consumer, or
the replies and pushes for every other subscription would stall behind it; the
hub already bounds what it sends per client and disconnects clients it cannot
keep up with. Keep iterating each subscription you hold (``len(sub)`` tells
what is waiting), or unsubscribe.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Coroutine, Iterator, Mapping
from dataclasses import dataclass
from types import MappingProxyType, TracebackType
from typing import Any, Final, Generic, Literal, TypeAlias, TypeVar

import msgpack  # type: ignore[import-untyped, unused-ignore]
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed as WsConnectionClosed
from websockets.exceptions import WebSocketException
from websockets.typing import Subprotocol

from protocol import codec_for, merge_patch
from protocol import messages as m
from protocol.backoff import backoff
from protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL, Codec
from protocol.codes import CloseCode, ErrorCode, should_reconnect
from protocol.errors import ProtocolError, RealtimeError
from protocol.messages import ClientInfo

from . import __version__
from .values import (
    HistoryPage,
    PresenceMember,
    PresenceStats,
    Publication,
    PublishResult,
    Sender,
    StreamPosition,
    UserStatus,
)

__all__ = [
    "Client",
    "ClientError",
    "ClientInfo",
    "CommandTimeout",
    "ConnectionClosed",
    "ConnectionLost",
    "Event",
    "HistoryPage",
    "Join",
    "Leave",
    "PresenceMember",
    "PresenceStats",
    "Publication",
    "PublishResult",
    "Read",
    "ReplyError",
    "Sender",
    "StateChanged",
    "StatusChanged",
    "StreamPosition",
    "Subscription",
    "Typing",
    "Unsubscribed",
    "UserStatus",
]

log = logging.getLogger("realtime.client")

_SUBPROTOCOLS: Final = {"msgpack": MSGPACK_SUBPROTOCOL, "json": JSON_SUBPROTOCOL}
_ABNORMAL: Final = 1006
#: The reason of an ``unsub`` push asking to resubscribe from the last position.
RECOVER: Final = "recover"  # WebSocket: closed without a close frame
#: Connect refusals that mean a bad token: close code 4501 rather than 4500.
_AUTH_ERRORS: Final = frozenset({ErrorCode.UNAUTHORIZED, ErrorCode.TOKEN_EXPIRED, ErrorCode.PERMISSION_DENIED})
#: Users per status command (the hub's limit); :meth:`Client.status` sends larger lists in parts.
_STATUS_BATCH: Final = 100
#: Full values applied ahead of a live subscription's version, kept to close the gap later.
_MAX_AHEAD: Final = 256
#: The largest command id (protocol.md: a uint32, 1..2**32-1); ids wrap around after it.
_MAX_ID: Final = 2**32 - 1
#: Seconds at least between two token refreshes of one connection; refreshes that make no
#: headway back off from it up to ``_REFRESH_MAX_BACKOFF``.
_REFRESH_GAP: Final = 1.0
_REFRESH_MAX_BACKOFF: Final = 60.0

_R = TypeVar("_R", bound=m.Result)
_T = TypeVar("_T")


def _unpack(data: bytes) -> Any:
    return msgpack.unpackb(data, strict_map_key=False)


def _info(data: bytes | None) -> Any:
    """Opaque user info (msgpack) as a value; None when absent or unreadable."""
    if data is None:
        return None
    try:
        return _unpack(data)
    except Exception:
        log.warning("user info is not MessagePack, ignored")
        return None


# --- errors -----------------------------------------------------------------


class ClientError(RealtimeError):
    """Root of the errors the client SDK raises."""


class ReplyError(ClientError):
    """The hub refused a command; ``code`` is an :class:`ErrorCode` (a plain int if unknown)."""

    def __init__(self, code: int, message: str = "") -> None:
        try:
            self.code: ErrorCode | int = ErrorCode(code)
        except ValueError:
            self.code = code
        name = self.code.name.lower().replace("_", " ") if isinstance(self.code, ErrorCode) else ""
        super().__init__(message or name or f"error {code}")

    @property
    def message(self) -> str:
        return str(self)

    @property
    def temporary(self) -> bool:
        """True when the same command may succeed if retried later."""
        return isinstance(self.code, ErrorCode) and self.code.temporary


class ConnectionClosed(ClientError):
    """The client stopped for good; every pending and later call raises this.

    ``code`` is the hub's close code (4500-4999: do not reconnect), 1000 after
    :meth:`Client.close`, or 1006 when the first connection could not be made.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection closed: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class ConnectionLost(ClientError):
    """The connection dropped while this command waited for its reply.

    The hub may or may not have run it; the client is reconnecting on its own.
    Only writes raise this (``publish`` without a key, ``typing``,
    ``state_set``, ``state_patch``): the other commands are retried.
    """

    def __init__(self, code: int, reason: str = "") -> None:
        super().__init__(f"connection lost: {code} {reason}".rstrip())
        self.code = code
        self.reason = reason


class CommandTimeout(ClientError, TimeoutError):
    """No reply (or no connection to send on) within ``command_timeout``."""


class Unsubscribed(ClientError):
    """The hub unsubscribed this client from ``channel`` (an API call of the app's backend).

    Raised by the subscription's iterators once queued items are out; the
    client does not resubscribe the channel. Subscribe again if it should.
    """

    def __init__(self, channel: str, reason: str = "") -> None:
        super().__init__(f"unsubscribed from {channel!r} by the hub: {reason}".rstrip(": "))
        self.channel = channel
        self.reason = reason


# --- channel events -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Join:
    """``user`` came into ``channel`` (their first device); ``info`` is their info, unpacked."""

    channel: str
    user: str
    info: Any = None


@dataclass(frozen=True, slots=True)
class Leave:
    """``user`` left ``channel`` (their last device, after the presence grace window)."""

    channel: str
    user: str


@dataclass(frozen=True, slots=True)
class Typing:
    """``user`` is typing in ``channel`` (or stopped); ``typing=True`` lapses after ``timeout`` s."""

    channel: str
    user: str
    typing: bool
    timeout: float


@dataclass(frozen=True, slots=True)
class Read:
    """``user`` has read ``channel`` up to ``offset``."""

    channel: str
    user: str
    offset: int


@dataclass(frozen=True, slots=True)
class StatusChanged:
    """The user of status channel ``channel`` came online or went offline (``sub.status`` too)."""

    channel: str
    status: UserStatus


@dataclass(frozen=True, slots=True)
class StateChanged:
    """Key ``key`` of live channel ``channel`` is now ``value`` (None: deleted), set at ``version``.

    ``sub.state`` already holds the new value when the event comes out.
    """

    channel: str
    key: str
    value: Any
    version: int


Event: TypeAlias = Join | Leave | Typing | Read | StatusChanged | StateChanged


# --- subscriptions ----------------------------------------------------------------


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

    def __init__(self, client: Client, channel: str, *, events: bool = False) -> None:
        self.channel = channel
        self.position: StreamPosition | None = None
        self.recovered = True
        #: Live channels: every change up to this state version is in ``state``.
        self.version = 0
        #: Status channels: the user's status, from the subscribe reply then each push.
        self.status: UserStatus | None = None
        self._client = client
        self._pubs: _Stream[Publication] = _Stream()
        self._events: _Stream[Event] | None = _Stream() if events else None
        self._values: dict[str, Any] = {}
        #: Key -> the version that last set it (deleted keys too, while a stale push could resurrect them).
        self._key_versions: dict[str, int] = {}
        #: Versions above ``version`` whose full values were applied out of order.
        self._ahead: set[int] = set()
        self.state: Mapping[str, Any] = MappingProxyType(self._values)
        #: Confirmed once by the hub: from then on the client resubscribes it itself.
        self._live = False
        self._ended = False
        #: Pushes of the channel that came while a (re)subscribe waited for its reply.
        self._held: list[m.Push] | None = None
        #: The connection a gap resubscribe runs on, while it runs.
        self._resyncing: _Connection | None = None

    def __repr__(self) -> str:
        return f"<Subscription {self.channel!r} position={self.position} version={self.version}>"

    def __len__(self) -> int:
        """Publications received and not yet taken from the iterator."""
        return len(self._pubs)

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> Publication:
        return await self._pubs.__anext__()

    def events(self) -> AsyncIterator[Event]:
        """The channel's events, in order; it ends when the publications' iterator does.

        Needs ``client.subscribe(channel, events=True)`` (RuntimeError otherwise):
        events are buffered from the subscribe on, so none is missed.
        """
        if self._events is None:
            raise RuntimeError(f"subscribe to {self.channel!r} with events=True to receive its events")
        return self._events

    def key_version(self, key: str) -> int:
        """The version that set ``key`` (0 when absent): pass it as ``version`` for a conditional write."""
        return self._key_versions.get(key, 0) if key in self._values else 0

    async def unsubscribe(self) -> None:
        """Stop receiving this channel; iteration ends after what is already queued."""
        await self._client._unsubscribe(self)

    # --- used by the client ------------------------------------------------

    def _hold(self) -> None:
        if self._held is None:
            self._held = []

    def _on_push(self, push: m.Push) -> bool:
        """Take one push of this channel; True when the live state has a gap to heal."""
        if self._held is not None:
            self._held.append(push)
            return False
        return self._handle(push)

    def _on_subscribed(
        self, result: m.SubscribeResult, since: StreamPosition | None, version: int | None = None
    ) -> bool:
        """Deliver recovered publications, apply the state, then what was held; go live.

        ``version`` is what the subscribe asked for. Returns True when the
        live state has a gap to heal (a held patch beyond the snapshot).
        """
        first = not self._live
        for pub in result.publications:
            self._deliver(pub)
        top = StreamPosition(result.offset, result.epoch)
        pos = self.position
        if pos is None or pos.epoch != top.epoch or pos.offset < top.offset:
            self.position = top
        self._apply_snapshot(result, version, announce=not first)
        if result.status is not None:
            if not first and result.status != self.status:
                self._emit(StatusChanged(self.channel, result.status))
            self.status = result.status
        held, self._held = self._held or [], None
        gap = False
        for push in held:
            if isinstance(push, m.Publication):
                if push.epoch == top.epoch:  # pushes from before an epoch change are stale
                    self._deliver(push)
            elif self._handle(push):
                gap = True
        self._live = True
        if since is not None:
            self.recovered = result.recovered
        return gap

    def _handle(self, push: m.Push) -> bool:
        if isinstance(push, m.Publication):
            self._deliver(push)
        elif isinstance(push, m.StateChange):
            return self._on_state(push)
        elif isinstance(push, m.StatusNotice):
            if push.status != self.status:  # a resubscribe reply may have announced it already
                self.status = push.status
                self._emit(StatusChanged(push.channel, push.status))
        elif isinstance(push, m.Join):
            self._emit(Join(push.channel, push.user, _info(push.info)))
        elif isinstance(push, m.Leave):
            self._emit(Leave(push.channel, push.user))
        elif isinstance(push, m.TypingNotice):
            self._emit(Typing(push.channel, push.user, push.typing, push.timeout))
        elif isinstance(push, m.ReadNotice):
            self._emit(Read(push.channel, push.user, push.offset))
        return False

    def _deliver(self, pub: m.Publication) -> None:
        pos = self.position
        if pos is not None and pub.epoch == pos.epoch and pub.offset <= pos.offset:
            return  # already delivered
        self.position = StreamPosition(pub.offset, pub.epoch)
        if pos is not None and pub.epoch != pos.epoch:  # the stream restarted: what it held is gone
            self.recovered = False
            self._client._unrecovered(self, f"the stream restarted (epoch {pos.epoch} -> {pub.epoch})")
        publication = _publication(pub)
        if publication is not None:
            self._pubs.put(publication)

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

    # --- live state (the client rules of handlers/live.py) ---------------------

    def _apply_snapshot(self, result: m.SubscribeResult, asked: int | None, *, announce: bool) -> None:
        """A subscribe reply's state: all keys, or (``asked``) those changed after ``asked``."""
        entries = [(e.key, None if e.value is None else _unpack(e.value), e.version) for e in result.state]
        if asked is None or result.version < asked:  # everything (after a reset of the hub's state)
            old = dict(self._values)
            self._values.clear()
            self._key_versions.clear()
            self._ahead.clear()  # versions of the old state: the new one has not reached them
            for key, value, version in entries:
                if value is not None:
                    self._values[key] = value
                    self._key_versions[key] = version
                    if announce and not (key in old and merge_patch.same(old[key], value)):
                        self._emit(StateChanged(self.channel, key, value, version))
            for key in old.keys() - self._values.keys():
                if announce:
                    self._emit(StateChanged(self.channel, key, None, result.version))
        else:
            for key, value, version in entries:
                if version > self._key_versions.get(key, 0):
                    self._put(key, value, version)
        self.version = result.version  # the snapshot is complete up to its version
        ahead, self._ahead = self._ahead, set()
        for v in sorted(x for x in ahead if x > self.version):
            self._advance(v)
        for key in [k for k in self._key_versions if k not in self._values]:
            del self._key_versions[key]  # nothing older than the snapshot can resurrect a key

    def _on_state(self, change: m.StateChange) -> bool:
        """Apply one state push; True when a change was missed (resubscribe with ``version``)."""
        v, key = change.version, change.key
        try:
            if change.patch is not None:
                if v <= self.version:
                    return False  # already included
                if v != self.version + 1:
                    return True  # a change in between was missed
                if self._key_versions.get(key, 0) >= v:
                    self._advance(v)  # a newer full value of the key came first
                    return False
                value = merge_patch.apply(self._values.get(key), _unpack(change.patch))
            else:
                if v <= self.version or v <= self._key_versions.get(key, 0):
                    return False  # stale
                value = None if change.value is None else _unpack(change.value)
        except Exception:
            log.warning("channel %r: state change %d of %r is not MessagePack; resubscribing", change.channel, v, key)
            return True
        self._put(key, value, v)
        self._advance(v)
        if value is None and v <= self.version:
            self._key_versions.pop(key, None)  # the delete is below the version: no push can undo it
        return False

    def _put(self, key: str, value: Any, version: int) -> None:
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value
        self._key_versions[key] = version
        self._emit(StateChanged(self.channel, key, value, version))

    def _advance(self, v: int) -> None:
        """Change ``v`` is applied: move the version up through every change applied so far."""
        if v == self.version + 1:
            self.version = v
            while self.version + 1 in self._ahead:
                self._ahead.remove(self.version + 1)
                self.version += 1
        elif v > self.version:
            self._ahead.add(v)
            if len(self._ahead) > _MAX_AHEAD:  # conflated keys skip versions: forget the oldest
                self._ahead.remove(min(self._ahead))


def _publication(pub: m.Publication) -> Publication | None:
    """The SDK's publication, ``data`` and the sender's info unpacked; None (logged) when ``data`` is not MessagePack."""
    try:
        data = _unpack(pub.data)
    except Exception:  # another publisher's bytes: skip them, keep the stream
        log.warning("channel %r offset %d: data is not MessagePack, skipped", pub.channel, pub.offset)
        return None
    sender = None if pub.info is None else Sender(pub.info.user, pub.info.client, _info(pub.info.info))
    return Publication(pub.channel, data, pub.offset, pub.epoch, sender, pub.mid, pub.time)


# --- one WebSocket connection ----------------------------------------------


class _Connection:
    """One open WebSocket: a reader task resolves reply futures by id and routes pushes."""

    def __init__(
        self,
        ws: ClientConnection,
        codec: Codec,
        on_push: Callable[[_Connection, m.Push], None],
        on_end: Callable[[_Connection], None],
    ) -> None:
        self.ws = ws
        self.codec = codec
        self.disconnect: m.Disconnect | None = None
        self.close_code = _ABNORMAL
        self.close_reason = ""
        self._on_push = on_push
        self._on_end = on_end
        self._futures: dict[int, asyncio.Future[m.Result]] = {}
        #: The ids of the commands waiting for their reply here.
        self.in_flight: Mapping[int, object] = self._futures
        self._lost: ClientError | None = None
        #: Channel -> the Subscription whose Subscribe was the last one sent here with no
        #: Unsubscribe sent after it: the hub's subscription is (or will be) that one's. The
        #: hub runs a connection's commands in order, so send order is what counts.
        self.owners: dict[str, Subscription] = {}
        self.reader = asyncio.create_task(self._read(), name="realtime-client-reader")
        self.refresher: asyncio.Task[None] | None = None

    @property
    def reconnect(self) -> bool:
        """Whether the client should come back after this connection ended."""
        if self.disconnect is not None:
            return self.disconnect.reconnect
        return should_reconnect(self.close_code)

    async def call(self, command: m.Command) -> m.Result:
        """Send one command, return its result; raises ReplyError or ConnectionLost."""
        if self._lost is not None:
            raise self._lost
        future: asyncio.Future[m.Result] = asyncio.get_running_loop().create_future()
        self._futures[command.id] = future
        try:
            try:
                await self.ws.send(self.codec.encode_command(command), text=not self.codec.binary)
            except WsConnectionClosed:
                await asyncio.wait([self.reader])  # it ends too, and fails the futures
                raise self._lost or ConnectionLost(self.close_code, self.close_reason) from None
            return await future
        finally:
            self._futures.pop(command.id, None)
            if future.done() and not future.cancelled():
                future.exception()  # retrieved, even when the send failed first

    def fail(self, error: ClientError) -> None:
        """Make waiting and later calls raise ``error``."""
        self._lost = error
        for future in self._futures.values():
            if not future.done():
                future.set_exception(error)
        self._futures.clear()

    async def close(self) -> None:
        """Close the socket and wait for the reader to end."""
        if self.refresher is not None:
            self.refresher.cancel()
        try:
            await self.ws.close()
            await asyncio.wait([self.reader])  # ends once the socket is closed
        finally:
            self.reader.cancel()

    async def _read(self) -> None:
        ws = self.ws
        try:
            while True:
                frame = await ws.recv(decode=False)
                for message in self.codec.decode_messages(frame):
                    self._dispatch(message)
        except WsConnectionClosed as exc:
            if exc.rcvd is not None:
                self.close_code, self.close_reason = exc.rcvd.code, exc.rcvd.reason
        except ProtocolError as exc:
            log.warning("closing the connection: the hub sent an invalid frame (%s)", exc)
            self.close_code, self.close_reason = 1002, "invalid frame"
            await ws.close(1002, "invalid frame")
        except Exception:
            log.exception("closing the connection: the client failed to handle a frame")
            self.close_code, self.close_reason = 1011, "client error"
            await ws.close(1011, "client error")
        finally:
            if self.disconnect is not None:
                self.close_code, self.close_reason = self.disconnect.code, self.disconnect.reason
            self._on_end(self)  # first, so callers woken below see the client's new state
            if self._lost is None:
                self.fail(ConnectionLost(self.close_code, self.close_reason))

    def _dispatch(self, message: m.ServerMessage) -> None:
        if isinstance(message, m.Reply):
            future = self._futures.get(message.id)
            if future is None or future.done():
                if message.error is not None:  # id 0: the hub could not read a command
                    log.warning("error reply to no pending command: %s %s", message.error.code, message.error.message)
                return
            if message.error is not None:
                future.set_exception(ReplyError(message.error.code, message.error.message))
            elif message.result is None:
                future.set_exception(ProtocolError("reply without result or error"))
            else:
                future.set_result(message.result)
        elif isinstance(message, m.Disconnect):
            self.disconnect = message  # the close frame follows
        else:
            self._on_push(self, message)


def _expect(result: m.Result, kind: type[_R]) -> _R:
    if not isinstance(result, kind):
        raise ProtocolError(f"expected {kind.__name__}, got {type(result).__name__}")
    return result


# --- the client -------------------------------------------------------------


class Client:
    """A reconnecting connection to a hub; ``async with Client(url) as client:``.

    Entering connects (WebSocket handshake, then the Connect command) and raises
    :class:`ConnectionClosed` if that fails; after that, drops are handled by
    reconnecting. Then call :meth:`subscribe`, :meth:`publish`, :meth:`history`,
    :meth:`typing`, :meth:`read`, :meth:`receipts`, :meth:`presence`,
    :meth:`presence_stats`, :meth:`status`, :meth:`state_set`,
    :meth:`state_patch`, :meth:`ping`. Commands issued while reconnecting wait
    up to ``command_timeout`` for the connection, then raise
    :class:`CommandTimeout`; which ones are retried after a drop is in the
    module's docstring.

    ``codec`` is "msgpack" (binary frames) or "json" (text frames), or a codec
    object. ``on_unrecovered(sub)`` is called when a resubscribe could not get
    back everything missed (see :attr:`Subscription.recovered`). Reconnect
    delays come from :func:`protocol.backoff.backoff` with ``min_backoff`` and
    ``max_backoff``, or from ``reconnect_delays()``; a finite iterator limits
    the attempts. ``ping_interval`` and ``ping_timeout`` drive WebSocket
    keepalive pings that detect a dead hub.

    ``refresh_token()`` (async, returns a new connection token) keeps a
    connection whose token expires alive: the client calls it shortly before
    ``exp`` and sends the new token with a Refresh command, and again when a
    reconnect finds the token expired (if it raises then, the reconnect is
    tried again with backoff).
    """

    def __init__(
        self,
        url: str,
        token: str | None = None,
        *,
        codec: Literal["msgpack", "json"] | Codec = "msgpack",
        name: str = "python",
        version: str = __version__,
        min_backoff: float = 0.05,
        max_backoff: float = 20.0,
        reconnect_delays: Callable[[], Iterator[float]] | None = None,
        command_timeout: float = 10.0,
        open_timeout: float = 10.0,
        ping_interval: float | None = 20.0,
        ping_timeout: float | None = 20.0,
        max_size: int | None = 2**20,
        on_unrecovered: Callable[[Subscription], object] | None = None,
        refresh_token: Callable[[], Awaitable[str]] | None = None,
    ) -> None:
        if isinstance(codec, str):
            if codec not in _SUBPROTOCOLS:
                raise ValueError(f"codec must be 'msgpack' or 'json', got {codec!r}")
            self._codec = codec_for(_SUBPROTOCOLS[codec])
        else:
            self._codec = codec
        backoff(min_backoff, max_backoff)  # validates the bounds now
        self.url = url
        self.token = token
        self.name = name
        self.version = version
        self.command_timeout = command_timeout
        self.on_unrecovered = on_unrecovered
        self.refresh_token = refresh_token
        #: Set by each successful Connect: the connection id, the user, the hub's ping interval.
        self.client_id = ""
        self.user = ""
        self.server_ping = 0.0
        self._delays = reconnect_delays or (lambda: backoff(min_backoff, max_backoff))
        self._connect_options: dict[str, Any] = {
            "open_timeout": open_timeout,
            "ping_interval": ping_interval,
            "ping_timeout": ping_timeout,
            "max_size": max_size,
            "compression": None,  # the hub shares uncompressed frames between subscribers
            "user_agent_header": f"realtime-python/{__version__}",
        }
        #: Counts every command sent; _next_id maps it onto the protocol's ids 1..2**32-1.
        self._ids = itertools.count(1)
        self._subs: dict[str, Subscription] = {}
        self._conn: _Connection | None = None
        #: Set while a connection is ready for commands, and once the client has stopped.
        self._ready = asyncio.Event()
        self._stopped: ConnectionClosed | None = None
        self._run_task: asyncio.Task[None] | None = None
        #: Gap resubscribes of live channels, and Unsubscribes of abandoned Subscribes, in flight.
        self._tasks: set[asyncio.Task[None]] = set()

    def __repr__(self) -> str:
        state = "closed" if self._stopped else "connected" if self.connected else "connecting"
        return f"<Client {self.url} {state}>"

    @property
    def connected(self) -> bool:
        """True while a connection is open and ready for commands."""
        return self._conn is not None and self._ready.is_set() and self._stopped is None

    @property
    def closed(self) -> bool:
        """True once the client has stopped (see :class:`ConnectionClosed`)."""
        return self._stopped is not None

    # --- lifecycle ---------------------------------------------------------

    async def __aenter__(self) -> Client:
        await self.connect()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.close()

    async def connect(self) -> None:
        """Open the first connection; then use the client until :meth:`close`.

        ``async with`` calls this. Raises :class:`ConnectionClosed` (with the
        cause chained) if the hub cannot be reached or refuses the Connect.
        """
        if self._run_task is not None or self._stopped is not None:
            raise RuntimeError("connect() may be called once")
        try:
            conn = await self._open()
        except ConnectionClosed as exc:
            self._stop(exc)
            raise
        except (OSError, WebSocketException, TimeoutError, RealtimeError) as exc:
            closed = ConnectionClosed(_ABNORMAL, f"cannot connect: {exc}")
            self._stop(closed)
            raise closed from exc
        self._run_task = asyncio.create_task(self._run(conn), name="realtime-client")

    async def close(self) -> None:
        """Close the connection and stop; subscriptions end, calls raise ConnectionClosed."""
        conn = self._conn
        self._stop(ConnectionClosed(1000, "client closed"), by_app=True)
        task, self._run_task = self._run_task, None
        tasks = [*self._tasks, *([task] if task is not None else [])]
        for t in tasks:
            t.cancel()
        if tasks:
            await asyncio.wait(tasks)  # raises CancelledError only if we are cancelled
        if conn is not None:
            await conn.close()

    def _stop(self, error: ConnectionClosed, *, by_app: bool = False) -> None:
        """Enter the final state: wake waiters, fail calls, end iterators (idempotent)."""
        if self._stopped is not None:
            return
        self._stopped = error
        self._ready.set()  # waiters wake up and find the client stopped
        conn, self._conn = self._conn, None
        if conn is not None:
            conn.fail(error)
        for sub in self._subs.values():
            sub._end(None if by_app else error)
        self._subs.clear()
        if not by_app:
            log.info("client stopped: %s %s", error.code, error.reason)

    def _on_end(self, conn: _Connection) -> None:
        """The reader of ``conn`` is ending: leave the ready state, or stop for good."""
        if conn is not self._conn:
            return  # still opening: _open decides, or already replaced
        if not conn.reconnect:
            self._stop(ConnectionClosed(conn.close_code, conn.close_reason))
        elif self._stopped is None:
            self._conn = None
            self._ready.clear()

    async def _open(self) -> _Connection:
        """Handshake, Connect, resubscribe: return a connection ready for commands."""
        ws = await connect(self.url, subprotocols=[Subprotocol(self._codec.name)], **self._connect_options)
        if ws.subprotocol != self._codec.name:
            await ws.close(1002, "subprotocol not accepted")
            raise ConnectionClosed(1002, f"the hub did not accept subprotocol {self._codec.name}")
        conn = _Connection(ws, self._codec, self._on_push, self._on_end)
        try:
            async with asyncio.timeout(self.command_timeout):
                result = await self._connect_on(conn)
                self.client_id, self.user, self.server_ping = result.client, result.user, result.ping
                await self._resubscribe(conn)
            if result.expires and self.refresh_token is not None:
                conn.refresher = asyncio.create_task(self._keep_token(conn, result.expires))
            if self._stopped is not None:  # close() ran meanwhile: nothing may outlive it
                raise self._stopped
            if conn.reader.done():
                # It ended while opening: _on_end ignored it (not current yet), so its
                # close code decides here whether to come back.
                raise ConnectionLost(conn.close_code, conn.close_reason)
        except ReplyError as exc:
            await conn.close()
            if exc.temporary:
                raise
            code = CloseCode.UNAUTHORIZED if exc.code in _AUTH_ERRORS else CloseCode.BAD_REQUEST
            raise ConnectionClosed(code, exc.message) from exc
        except ConnectionLost as exc:
            await conn.close()
            if not conn.reconnect:
                raise ConnectionClosed(conn.close_code, conn.close_reason) from exc
            raise
        except BaseException:
            await conn.close()
            raise
        self._conn = conn
        self._ready.set()
        log.info("connected to %s as %s", self.url, self.client_id)
        return conn

    async def _connect_on(self, conn: _Connection) -> m.ConnectResult:
        """Send Connect; an expired token is renewed once through ``refresh_token``."""
        try:
            result = await conn.call(m.Connect(self._next_id(conn), self.token, self.name, self.version))
        except ReplyError as exc:
            if exc.code != ErrorCode.TOKEN_EXPIRED or self.refresh_token is None:
                raise
            try:
                self.token = await self.refresh_token()
            except Exception as error:
                # The app's callback (its auth service may be briefly down): a ClientError
                # makes _reconnect try again with backoff instead of stopping the client.
                log.exception("refresh_token failed; the connection will be tried again")
                raise ClientError(f"refresh_token failed: {error!r}") from error
            result = await conn.call(m.Connect(self._next_id(conn), self.token, self.name, self.version))
        return _expect(result, m.ConnectResult)

    def _next_id(self, conn: _Connection) -> int:
        """A command id for ``conn``: 1..2**32-1 (the protocol's range), none still in flight there."""
        while True:
            command_id = (next(self._ids) - 1) % _MAX_ID + 1
            if command_id not in conn.in_flight:
                return command_id

    async def _keep_token(self, conn: _Connection, expires: int) -> None:
        """Refresh the token before it expires, for as long as this connection lives.

        Refreshes are at least ``_REFRESH_GAP`` apart, and back off while they do
        not push the expiry to a time that leaves room for a scheduled one (the
        app's refresh_token() returns the same token, or the hub's clock is
        behind ours): such a token is refreshed again, but never in a tight loop.
        """
        assert self.refresh_token is not None
        stalled: Iterator[float] | None = None  # backoff delays while refreshes make no headway
        first = True
        while expires:
            remaining = expires - time.time()
            # A tenth of the time left, at most a minute, at least a second, before exp.
            wait = remaining - max(1.0, min(60.0, remaining / 10))
            if stalled is not None:
                wait = max(wait, _REFRESH_GAP + next(stalled))
            elif not first:
                wait = max(wait, _REFRESH_GAP)
            first = False
            await asyncio.sleep(max(0.0, wait))
            try:
                self.token = await self.refresh_token()
                result = _expect(await conn.call(m.Refresh(self._next_id(conn), self.token)), m.RefreshResult)
            except ClientError:
                return  # the connection ended; the next one starts its own refresher
            except Exception:
                log.exception("refresh_token failed; the hub will disconnect when the token expires")
                return
            # Headway: a later expiry, far enough off that the next refresh waits for its schedule.
            ahead = result.expires - time.time()
            if result.expires > expires and ahead - max(1.0, min(60.0, ahead / 10)) >= _REFRESH_GAP:
                stalled = None
            elif stalled is None:
                stalled = backoff(_REFRESH_GAP, _REFRESH_MAX_BACKOFF)
            expires = result.expires

    async def _resubscribe(self, conn: _Connection) -> None:
        """Subscribe again to every live channel, from its last position."""
        subs = [sub for sub in self._subs.values() if sub._live]
        for sub in subs:
            sub._held = None  # pushes of the ended connection: this reply supersedes them
        outcomes = await asyncio.gather(*(self._subscribe_on(conn, sub) for sub in subs), return_exceptions=True)
        for sub, outcome in zip(subs, outcomes):
            if isinstance(outcome, ReplyError) and not outcome.temporary:
                self._refused(sub, outcome)
            elif isinstance(outcome, BaseException):
                raise outcome  # the connection failed: try again from scratch
            elif outcome:
                self._start_resync(conn, sub)

    def _refused(self, sub: Subscription, error: ReplyError) -> None:
        """The hub refused to resubscribe ``sub``: drop it, ending its iterators with ``error``."""
        log.warning("resubscribe to %r refused: %s", sub.channel, error)
        if self._subs.get(sub.channel) is sub:
            del self._subs[sub.channel]
        sub._end(error)

    async def _subscribe_on(self, conn: _Connection, sub: Subscription) -> bool:
        """Subscribe ``sub`` on ``conn`` (again: from its position and live version).

        Returns True if its state has a gap to heal. A subscription the app
        dropped meanwhile is left unsubscribed on the hub.
        """
        channel = sub.channel
        while True:
            if self._subs.get(channel) is not sub:
                return False  # dropped: whoever holds the channel now sends its own Subscribe
            prev = conn.owners.get(channel)
            if prev is None or prev is sub:
                break
            await self._release(conn, prev)  # a Subscribe given up on: undo it first, in order
        since = sub.position if sub._live else None
        version = sub.version if sub._live and sub.version else None
        sub._hold()
        command = m.Subscribe(self._next_id(conn), channel, since, version=version)
        conn.owners[channel] = sub  # no await between this and the send: the order holds
        try:
            result = _expect(await conn.call(command), m.SubscribeResult)
        except ReplyError:
            if conn.owners.get(channel) is sub:
                del conn.owners[channel]  # refused: the hub did not subscribe it
            raise
        except ClientError:
            raise  # the connection is gone, and the hub's subscription with it
        except BaseException:  # timed out or cancelled: the hub may subscribe it all the same
            if self._stopped is None:
                self._spawn(self._release_quietly(conn, sub), "realtime-client-release")
            raise
        if self._subs.get(channel) is not sub:  # dropped while it was in flight
            try:
                await self._release(conn, sub)
            except ReplyError:
                pass  # the hub would not unsubscribe it: nothing more to try
            return False
        gap = sub._on_subscribed(result, since, version)
        if since is not None and not result.recovered:
            self._unrecovered(sub, f"publications since {since} could not be recovered")
        return gap

    def _unrecovered(self, sub: Subscription, why: str) -> None:
        """``sub`` missed publications for good: tell the app, which reloads the channel."""
        log.info("channel %r: %s", sub.channel, why)
        if self.on_unrecovered is not None:
            try:
                self.on_unrecovered(sub)
            except Exception:
                log.exception("on_unrecovered callback failed")

    async def _release(self, conn: _Connection, sub: Subscription) -> None:
        """Unsubscribe ``sub``'s channel on ``conn`` if the hub's subscription there is ``sub``'s.

        Raises ConnectionLost (or ConnectionClosed) when ``conn`` is gone, and
        ReplyError unless the hub had no subscription (its Subscribe failed).
        """
        channel = sub.channel
        if conn.owners.get(channel) is not sub:
            return  # released already, or never subscribed here
        del conn.owners[channel]  # and the send below happens before any await: in order
        try:
            await conn.call(m.Unsubscribe(self._next_id(conn), channel))
        except ReplyError as exc:
            if exc.code != ErrorCode.NOT_SUBSCRIBED:
                raise

    async def _release_quietly(self, conn: _Connection, sub: Subscription) -> None:
        """:meth:`_release` for a Subscribe whose caller gave up (timed out or cancelled)."""
        try:
            await self._release(conn, sub)
        except ClientError:
            pass  # gone with the connection, or refused: nothing more to try

    def _spawn(self, coro: Coroutine[Any, Any, None], name: str) -> None:
        """Run ``coro`` in a task that :meth:`close` cancels."""
        task = asyncio.create_task(coro, name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def _start_resync(self, conn: _Connection, sub: Subscription) -> None:
        """A live channel missed a change on ``conn``: resubscribe it there with its version."""
        if sub._resyncing is conn or sub._ended:
            return
        sub._resyncing = conn
        sub._hold()  # pushes wait for the fresh state from now on
        self._spawn(self._resync(conn, sub), "realtime-client-resync")

    async def _resync(self, conn: _Connection, sub: Subscription) -> None:
        """Unsubscribe, then subscribe with ``version`` = what ``sub`` holds, until the state has no gap.

        If ``conn`` drops meanwhile, the reconnect resubscribes ``sub`` the same way.
        """
        log.info("channel %r: a state change was missed at version %d, resubscribing", sub.channel, sub.version)
        delays: Iterator[float] | None = None
        try:
            while self._subs.get(sub.channel) is sub:
                await self._release(conn, sub)
                try:
                    if not await self._subscribe_on(conn, sub):
                        return
                except ReplyError as exc:
                    delays = delays or self._delays()
                    delay = next(delays, None) if exc.temporary else None
                    if delay is None:
                        raise
                    await asyncio.sleep(delay)
                    if conn.reader.done():
                        return  # the reconnect resubscribes it
        except ReplyError as exc:
            self._refused(sub, exc)
        except ClientError:
            pass  # the connection ended: the reconnect resubscribes it
        finally:
            if sub._resyncing is conn:
                sub._resyncing = None

    async def _run(self, conn: _Connection) -> None:
        """Watch the connection; reconnect with backoff until told to stop."""
        try:
            while True:
                await asyncio.wait([conn.reader])  # _on_end has run: stopped, or not ready
                await conn.close()
                if self._stopped is not None:
                    return
                log.info("connection lost (%s %s), reconnecting", conn.close_code, conn.close_reason)
                new = await self._reconnect()
                if new is None:
                    return
                conn = new
        except Exception:  # a bug: stop rather than hang every caller
            log.exception("the client failed")
            self._stop(ConnectionClosed(1011, "client error"))

    async def _reconnect(self) -> _Connection | None:
        """Try until connected (return it) or told to stop, or out of delays (return None)."""
        for attempt, delay in enumerate(self._delays()):
            await asyncio.sleep(delay)
            try:
                return await self._open()
            except ConnectionClosed as exc:
                self._stop(exc)
                return None
            except (OSError, WebSocketException, TimeoutError, RealtimeError) as exc:
                log.log(logging.DEBUG if attempt else logging.INFO, "reconnect failed (%s), retrying", exc)
        self._stop(ConnectionClosed(_ABNORMAL, "gave up reconnecting"))
        return None

    def _on_push(self, conn: _Connection, push: m.Push) -> None:
        channel = getattr(push, "channel", None)
        sub = self._subs.get(channel) if isinstance(channel, str) else None
        if sub is None:
            return
        if isinstance(push, m.Unsubscribed):
            if push.reason == RECOVER:  # the hub lost continuity: come back from our position
                self._start_resync(conn, sub)
                return
            del self._subs[sub.channel]
            sub._end(Unsubscribed(push.channel, push.reason))
        elif sub._on_push(push):
            self._start_resync(conn, sub)

    # --- commands ----------------------------------------------------------

    async def _request(self, make: Callable[[int], m.Command], kind: type[_R], *, retry: bool = True) -> _R:
        """Run one command on the current connection, waiting for one if needed.

        With ``retry``, a command whose connection dropped before the reply is
        sent again on the next connection (safe for idempotent commands).
        """

        async def call(conn: _Connection) -> _R:
            return _expect(await conn.call(make(self._next_id(conn))), kind)

        return (await self._on_connection(call, retry=retry))[1]

    async def _on_connection(
        self, call: Callable[[_Connection], Awaitable[_T]], *, retry: bool = True
    ) -> tuple[_Connection, _T]:
        """Run ``call`` on the current connection, waiting for one if needed; also return the connection.

        With ``retry``, ConnectionLost runs ``call`` again on the next connection.
        """
        if self._run_task is None and self._stopped is None:
            raise RuntimeError("call connect() first, or use 'async with Client(...)'")
        try:
            async with asyncio.timeout(self.command_timeout):
                while True:
                    await self._ready.wait()
                    if self._stopped is not None:
                        raise self._stopped
                    conn = self._conn
                    assert conn is not None  # ready and not stopped
                    try:
                        return conn, await call(conn)
                    except ConnectionLost:
                        if not retry:
                            raise
                        if self._conn is conn:
                            # Its reader has ended, so _on_end should have taken it out (_open
                            # never publishes an ended one); do it now rather than retry on it
                            # without ever yielding.
                            self._on_end(conn)
                        # The ready state is clear until the next connection (or the stop).
        except TimeoutError:
            raise CommandTimeout(f"no reply within {self.command_timeout}s") from None

    async def subscribe(self, channel: str, *, events: bool = False) -> Subscription:
        """Subscribe to ``channel``; iterate the returned :class:`Subscription`.

        With ``events=True`` the subscription also queues the channel's
        :data:`Event` objects for ``sub.events()``. In a live channel,
        ``sub.state`` holds the snapshot when this returns; in a status
        channel, ``sub.status`` the user's status.

        Raises :class:`ReplyError` if the hub refuses, ``ValueError`` if this
        client is already subscribed to ``channel``.
        """
        if self._stopped is not None:
            raise self._stopped
        if channel in self._subs:
            raise ValueError(f"already subscribed to {channel!r}")
        sub = self._subs[channel] = Subscription(self, channel, events=events)
        try:
            # A timeout or cancellation here leaves _subscribe_on to unsubscribe it on the hub.
            conn, gap = await self._on_connection(lambda conn: self._subscribe_on(conn, sub))
        except BaseException:
            if self._subs.get(channel) is sub:
                del self._subs[channel]
            raise
        if gap:
            self._start_resync(conn, sub)
        return sub

    async def _unsubscribe(self, sub: Subscription) -> None:
        if self._subs.get(sub.channel) is not sub:
            sub._end(None)
            return
        del self._subs[sub.channel]
        sub._end(None)
        conn = self._conn
        if conn is None or not self.connected:
            # The hub forgets it with the connection; one still opening gets the
            # Unsubscribe when its resubscribe of ``sub`` is answered (_subscribe_on).
            return
        try:
            async with asyncio.timeout(self.command_timeout):
                await self._release(conn, sub)  # also when its (re)subscribe is still in flight
        except (ConnectionLost, ConnectionClosed):
            pass  # the hub drops subscriptions with the connection
        except TimeoutError:
            raise CommandTimeout(f"no reply within {self.command_timeout}s") from None

    async def publish(self, channel: str, data: Any, *, key: str | None = None) -> PublishResult:
        """Publish ``data`` (any MessagePack-serializable value); returns its position.

        The result is a :class:`StreamPosition` with, in chat channels, the
        message id and time (:class:`PublishResult`). ``key`` (1..64
        characters) makes the send idempotent in chat channels: the hub answers
        a repeat within the namespace's ``idempotency_window`` with the first
        send's result and posts nothing.

        Without a key (or as an anonymous user, whose keys do not outlive the
        connection) it is not retried across reconnects: if the connection
        drops before the reply, it raises :class:`ConnectionLost` and the
        publication may or may not exist. With a key, the client sends it again
        on the next connection and returns the hub's answer; should the first
        send still be in flight on the hub after its wait, that answer is
        :class:`ReplyError` NOT_AVAILABLE (temporary): publish again with the
        same key. Keys are ignored outside chat channels: pass one only there.
        """
        payload = msgpack.packb(data)
        retry = key is not None and bool(self.user)
        result = await self._request(lambda id: m.Publish(id, channel, payload, key), m.PublishResult, retry=retry)
        return PublishResult(result.offset, result.epoch, result.mid, result.time)

    async def history(
        self, channel: str, *, limit: int | None = None, before: int | None = None, after: int | None = None
    ) -> HistoryPage:
        """A page of ``channel``'s history, oldest first, with the stream's position now.

        Without ``before``/``after``: the newest ``limit`` publications; with
        ``before`` (an offset): the ``limit`` just before it; with ``after``:
        the ``limit`` just after it. The hub caps a page at 100. Subscribers
        may read; others need the right to subscribe.
        """
        if before is not None and after is not None:
            raise ValueError("pass before or after, not both")
        result = await self._request(lambda id: m.History(id, channel, limit, before, after), m.HistoryResult)
        pubs = (_publication(pub) for pub in result.publications)
        return HistoryPage((p for p in pubs if p is not None), StreamPosition(result.offset, result.epoch))

    async def typing(self, channel: str, typing: bool = True) -> None:
        """Tell a chat channel's subscribers that this user is typing (or, ``typing=False``, stopped).

        Subscribers get a :class:`Typing` event; ``True`` lapses after the
        namespace's ``typing_timeout``. Sending faster than its
        ``typing_interval`` raises :class:`ReplyError` TOO_MANY_REQUESTS (a
        temporary error). Needs a user and a subscription to the channel.
        """
        await self._request(lambda id: m.Typing(id, channel, typing), m.EmptyResult, retry=False)

    async def read(self, channel: str, offset: int) -> int:
        """Mark a chat channel read up to ``offset``; returns the receipt the hub now holds.

        Subscribers get a :class:`Read` event. A receipt never moves
        backwards: an offset below the stored one raises :class:`ReplyError`
        CONFLICT (the same offset again succeeds).
        """
        return (await self._request(lambda id: m.Read(id, channel, offset), m.ReadResult)).offset

    async def receipts(self, channel: str) -> dict[str, int]:
        """Who has read a chat channel up to where: user -> offset."""
        return dict((await self._request(lambda id: m.Receipts(id, channel), m.ReceiptsResult)).receipts)

    async def presence(self, channel: str) -> dict[str, PresenceMember]:
        """Who is in ``channel``: connection id -> :class:`PresenceMember` (the namespace needs presence)."""
        result = await self._request(lambda id: m.PresenceQuery(id, channel), m.PresenceResult)
        return {client: PresenceMember(member.user, _info(member.info)) for client, member in result.clients.items()}

    async def presence_stats(self, channel: str) -> PresenceStats:
        """How many connections and unique users are in ``channel``, without listing them."""
        result = await self._request(lambda id: m.PresenceStatsQuery(id, channel), m.PresenceStatsResult)
        return PresenceStats(result.clients, result.users)

    async def status(self, *users: str) -> list[UserStatus]:
        """Online status and last seen time of ``users``, in the same order.

        Any number of users: the hub takes 100 per command, so more are asked
        in several. To follow one user's changes, subscribe to their status
        channel (``status:alice``): ``sub.status`` and :class:`StatusChanged`.
        """
        found: list[UserStatus] = []
        for i in range(0, len(users), _STATUS_BATCH):
            make = functools.partial(_status_query, users=users[i : i + _STATUS_BATCH])
            found.extend((await self._request(make, m.StatusResult)).users)
        return found

    async def state_set(self, channel: str, key: str, value: Any, *, version: int | None = None) -> int:
        """Set ``key`` of a live channel to ``value`` (None deletes it); returns the channel's new version.

        With ``version``, the write applies only if the key was last set at
        that version (0: the key does not exist; ``sub.key_version(key)``),
        else :class:`ReplyError` CONFLICT. Not retried across reconnects (see
        :class:`ConnectionLost`). Needs ``client_write`` in the namespace.
        """
        payload = msgpack.packb(value)
        result = await self._request(
            lambda id: m.StateSet(id, channel, key, payload, version), m.StateResult, retry=False
        )
        return result.version

    async def state_patch(self, channel: str, key: str, patch: Mapping[str, Any], *, version: int | None = None) -> int:
        """Apply a JSON Merge Patch (RFC 7386: None removes a member) to ``key``; returns the new version.

        ``version`` and errors as :meth:`state_set`.
        """
        if not isinstance(patch, Mapping):
            raise TypeError(f"a merge patch is a mapping, not {type(patch).__name__}")
        payload = msgpack.packb(dict(patch))
        result = await self._request(
            lambda id: m.StatePatch(id, channel, key, payload, version), m.StateResult, retry=False
        )
        return result.version

    async def ping(self) -> float:
        """Round trip to the hub through the protocol; returns seconds. Waits for a connection."""
        loop = asyncio.get_running_loop()
        start = loop.time()
        await self._request(m.Ping, m.EmptyResult)
        return loop.time() - start

    def subscriptions(self) -> dict[str, Subscription]:
        """The current subscriptions by channel (a copy)."""
        return dict(self._subs)


def _status_query(id: int, users: tuple[str, ...]) -> m.StatusQuery:
    return m.StatusQuery(id, users)
