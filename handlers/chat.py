"""Chat channels: message ids, server time and sender; idempotent sends; typing; read receipts.

The hub calls :meth:`Chat.publish` for every publish to a channel of a
namespace with ``kind = "chat"`` (client and server API alike) and dispatches
the :class:`~protocol.messages.Typing`, :class:`~protocol.messages.Read` and
:class:`~protocol.messages.Receipts` commands here (:meth:`Chat.commands`).
History pages are the core ``History`` command; they carry the ``mid`` and
``time`` given here because the engine keeps them with each publication.

Decisions, in one place:

* **Message ids** are ULIDs (26 characters of Crockford base32: 48 bits of
  milliseconds, 80 bits of randomness). They sort as text in time order, need
  no coordination between nodes (80 random bits per millisecond per node), and
  stay unique across epochs, unlike offsets, which restart when a stream loses
  continuity. Within one node they strictly increase even when the clock steps
  back; the message's ``time`` is the millisecond inside its ``mid``. The
  channel's order is its offsets; ids of messages sent within a few
  milliseconds on different nodes may sort the other way round.
* **Sender**: ``info`` comes from the hub (the authenticated connection's
  :class:`~protocol.messages.ClientInfo`); ``data`` is opaque and never read,
  so a client cannot forge it. Server API publishes pass ``info=None``: a
  message without sender is a message from the server (a system message); a
  backend that posts on a user's behalf passes that user's ``ClientInfo``.
* **Idempotent sends**: the hub gives every send a publish id
  (``realtime.publish_ids``: the client's ``key`` scoped to the channel and the
  sender, or one it makes) as one engine idempotency key of the channel. The
  engine's publish checks it and stores the result (a ``key``'s for
  ``ns.idempotency_window`` seconds; 0 turns ids off) in the same atomic step: a retry that finds a result gets it and publishes nothing. A
  retry on the node where the first send is still in flight (e.g. from before
  a reconnect) waits for it, at most :data:`IN_FLIGHT_WAIT` seconds, then gets
  NOT_AVAILABLE, a temporary error: retry with the same key. Waiting hides the
  common race (a reconnect retries at once) from the app; the bound keeps a
  stuck engine from holding commands. Across nodes the engine decides: the
  first publish to reach it posts, the other gets its result. A failed send
  stores nothing, so the retry posts.
* **Commands outside chat namespaces** get BAD_REQUEST: the channel exists,
  the command does not apply to it (an unconfigured namespace is still
  UNKNOWN_CHANNEL). Anonymous connections get PERMISSION_DENIED (typing and
  receipts belong to a user), then unsubscribed ones NOT_SUBSCRIBED.
* **Typing** needs the right to publish in the channel (PERMISSION_DENIED
  otherwise: who cannot send is not typing a message). ``typing=True`` is rate
  limited per user and channel across nodes with an engine kv claim that lives
  ``ns.typing_interval`` seconds (TOO_MANY_REQUESTS, with that as
  ``retry_after``). Whether the user's indicator is on is a second kv value
  (on any node: the ``True`` may have come through another one);
  ``typing=False`` is broadcast only when it turns the indicator off, so
  repeated stops cost a kv read and reach nobody. The node that took a
  ``typing=True`` keeps the timer that broadcasts the ``False`` after
  ``ns.typing_timeout``, and sends it at once when the connection that was
  typing leaves the channel. Known limit: a user typing on two devices
  attached to two nodes may see the first node's timeout clear the indicator
  early, until the next notice.
* **Read receipts** never move backwards: a receipt behind the stored one is
  refused with CONFLICT; an equal one succeeds and is not announced again (the
  engine stores and tells whether it moved in one step; the first one was
  announced), and pushed at most once per ``ns.typing_interval`` per user and
  channel (the same kv claim as typing): a later one within it is pushed, the
  latest, when it ends. Reads need only the subscription, not the right to publish. The
  offset is checked against the stream's current offset only; receipts carry
  no epoch.
"""

from __future__ import annotations

import asyncio
import hashlib
import heapq
import logging
import operator
import secrets
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING

import msgpack  # type: ignore[import-untyped]

from protocol.codes import ErrorCode
from protocol.errors import CommandError
from protocol.limits import MAX_PRESENCE_REPLY
from protocol.messages import (
    ClientInfo,
    EmptyResult,
    PublishResult,
    Read,
    ReadNotice,
    ReadResult,
    Receipts,
    ReceiptsResult,
    Result,
    Typing,
    TypingNotice,
)
from realtime.auth import check_publish
from realtime.engines.broker import Idempotency
from realtime.engines.errors import EngineUnavailable
from realtime.logs import log_failure
from realtime.publish_ids import publish_idempotency

from .base import Feature, Handler, HubServices, PublishHook, namespace_of

if TYPE_CHECKING:
    from realtime.connection import Connection
    from realtime.namespaces import Namespace

log = logging.getLogger("realtime.chat")

#: Seconds a retry waits for a send with the same key that is still in flight on this node.
IN_FLIGHT_WAIT = 2.0

_CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ"


def _base32(n: int, length: int) -> str:
    chars = []
    for _ in range(length):
        chars.append(_CROCKFORD[n & 31])
        n >>= 5
    return "".join(reversed(chars))


class MessageIds:
    """ULIDs, strictly increasing on this node: call :meth:`new` once per message."""

    def __init__(self) -> None:
        self._ms = 0
        self._random = 0

    def new(self, now_ms: int | None = None) -> tuple[str, int]:
        """A fresh id and the millisecond it carries (the message's ``time``)."""
        ms = int(time.time() * 1000) if now_ms is None else now_ms
        if ms > self._ms:
            self._ms, self._random = ms, secrets.randbits(80)
        else:  # same millisecond, or the clock stepped back: keep increasing
            self._random += 1
            if self._random >> 80:
                self._ms, self._random = self._ms + 1, secrets.randbits(80)
        return _base32(self._ms, 10) + _base32(self._random, 16), self._ms


@dataclass(slots=True)
class _Typing:
    """A typing indicator this node will expire: who sent the last ``typing=True``."""

    client: str
    timer: asyncio.TimerHandle


class Chat(Feature):
    """The chat feature: the hub calls :meth:`publish` for chat channels (:meth:`publishers`)."""

    name = "chat"

    def __init__(self, hub: HubServices) -> None:
        self.hub = hub
        self.ids = MessageIds()
        #: (channel, user) -> the indicator this node expires.
        self._typing: dict[tuple[str, str], _Typing] = {}
        #: (channel, user) -> the latest receipt this node pushes when the user's read interval ends.
        self._reads: dict[tuple[str, str], int] = {}
        self._read_timers: dict[tuple[str, str], asyncio.TimerHandle] = {}
        #: (channel, idempotency key) -> result of a keyed send in flight on this node (retries here await it).
        self._inflight: dict[tuple[str, str], asyncio.Future[PublishResult]] = {}

    def commands(self) -> Mapping[type, Handler]:
        return {Typing: self.typing, Read: self.read, Receipts: self.receipts}

    def publishers(self) -> Mapping[str, PublishHook]:
        return {"chat": self.publish}

    # --- sending -------------------------------------------------------------

    async def publish(
        self, channel: str, data: bytes, ns: Namespace, *, info: ClientInfo | None, key: str | None
    ) -> PublishResult:
        """Post ``data`` with an id, the server time and ``info`` as sender; once per publish id."""
        idempotency = publish_idempotency(info, key, ns.idempotency_window, generate=self.hub.engine.retries_publishes)
        if idempotency is None:  # ids are off here (idempotency_window = 0), or none given and none needed
            return await self._post(channel, data, ns, info)
        slot = (channel, idempotency.key)
        local = self._inflight.get(slot)
        if local is not None:
            return await _await_inflight(local)
        fut: asyncio.Future[PublishResult] = asyncio.get_running_loop().create_future()
        self._inflight[slot] = fut
        try:
            result = await self._post(channel, data, ns, info, idempotency)
        except BaseException as exc:
            fut.set_exception(_for_waiters(exc))
            fut.exception()  # retrieved: waiters, if any, get it too
            raise
        else:
            fut.set_result(result)
            return result
        finally:
            if self._inflight.get(slot) is fut:
                del self._inflight[slot]

    async def _post(
        self,
        channel: str,
        data: bytes,
        ns: Namespace,
        info: ClientInfo | None,
        idempotency: Idempotency | None = None,
    ) -> PublishResult:
        mid, ms = self.ids.new()
        history = self.hub.history_options(ns)
        if idempotency is None:
            pos = await self.hub.engine.publish(channel, data, info=info, history=history, mid=mid, time=ms)
            return PublishResult(pos.offset, pos.epoch, mid, ms)
        # A replay carries the first send's offset, epoch, mid and time.
        done = await self.hub.engine.publish(
            channel, data, info=info, history=history, mid=mid, time=ms, idempotency=idempotency
        )
        return PublishResult(done.offset, done.epoch, done.mid, done.time)

    # --- commands ------------------------------------------------------------

    def _check(self, conn: Connection, channel: str) -> Namespace:
        """The chat namespace of ``channel``, if ``conn`` may use chat commands there."""
        ns = namespace_of(self.hub, channel, "chat")
        if not conn.user:
            raise CommandError(ErrorCode.PERMISSION_DENIED, "anonymous connections cannot do this")
        if channel not in conn.channels:
            raise CommandError(ErrorCode.NOT_SUBSCRIBED)
        return ns

    async def typing(self, conn: Connection, cmd: Typing) -> Result:
        ns = self._check(conn, cmd.channel)
        # Typing announces a message to come: only those who may send one may type.
        check_publish(conn.identity, cmd.channel, ns, subscribed=True)
        slot = (cmd.channel, conn.user)
        engine = self.hub.engine
        shown = _typing_shown(cmd.channel, conn.user)
        if cmd.typing:
            if ns.typing_interval > 0 and not await engine.kv_set(
                _typing_slot(cmd.channel, conn.user), b"1", ttl=ns.typing_interval, only_if_absent=True
            ):
                self.hub.metrics.rate_limited("typing")
                raise CommandError(
                    ErrorCode.TOO_MANY_REQUESTS, "typing notices come too often", retry_after=ns.typing_interval
                )
            await engine.kv_set(shown, b"1", ttl=ns.typing_timeout)
            self._stop_timer(slot)
            timer = asyncio.get_running_loop().call_later(ns.typing_timeout, self._expire, slot, ns.typing_timeout)
            self._typing[slot] = _Typing(conn.id, timer)
        else:
            self._stop_timer(slot)
            if await engine.kv_get(shown) != b"1":
                return EmptyResult()  # no indicator to clear: a repeated stop tells nobody anything
            await engine.kv_set(shown, b"0", ttl=ns.typing_timeout)
        await self.hub.broadcast(cmd.channel, TypingNotice(cmd.channel, conn.user, cmd.typing, ns.typing_timeout))
        return EmptyResult()

    async def read(self, conn: Connection, cmd: Read) -> Result:
        ns = self._check(conn, cmd.channel)
        if cmd.offset < 0:
            raise CommandError(ErrorCode.BAD_REQUEST, "offset must not be negative")
        engine = self.hub.engine
        current = (await engine.history(cmd.channel, limit=0)).position.offset
        if cmd.offset > current:
            raise CommandError(ErrorCode.BAD_REQUEST, f"offset is past the channel's offset {current}")
        stored, moved = await engine.receipt_raise(cmd.channel, conn.user, cmd.offset)
        if stored > cmd.offset:
            raise CommandError(ErrorCode.CONFLICT, f"already read up to {stored}")
        if moved:  # the same receipt again was announced when it was stored
            await self._announce_read(cmd.channel, conn.user, stored, ns)
        return ReadResult(stored)

    async def _announce_read(self, channel: str, user: str, offset: int, ns: Namespace) -> None:
        """Push a receipt that moved: at once, or, within ``typing_interval`` of the user's last
        pushed one in the channel (an engine kv claim, across nodes), once when this node's
        wait ends, carrying the latest. A reader stepping through a long history one offset
        at a time pushes a notice per interval, not one per message."""
        slot = (channel, user)
        waiting = self._reads.get(slot)
        if waiting is not None:  # this node pushes the user's latest receipt when its wait ends
            self._reads[slot] = max(waiting, offset)
            return
        if ns.typing_interval <= 0 or await self.hub.engine.kv_set(
            _read_slot(channel, user), b"1", ttl=ns.typing_interval, only_if_absent=True
        ):
            await self.hub.broadcast(channel, ReadNotice(channel, user, offset))
            return
        if slot in self._reads:  # another connection of the user got here meanwhile
            self._reads[slot] = max(self._reads[slot], offset)
            return
        self._reads[slot] = offset
        loop = asyncio.get_running_loop()
        self._read_timers[slot] = loop.call_later(ns.typing_interval, self._push_read, slot)

    def _push_read(self, slot: tuple[str, str]) -> None:
        self._read_timers.pop(slot, None)
        offset = self._reads.pop(slot, None)
        if offset is not None:
            channel, user = slot
            self.hub.spawn(self.hub.broadcast(channel, ReadNotice(channel, user, offset)))

    async def receipts(self, conn: Connection, cmd: Receipts) -> Result:
        self._check(conn, cmd.channel)
        receipts = await self.hub.engine.receipts(cmd.channel)
        if len(receipts) <= MAX_PRESENCE_REPLY:
            return ReceiptsResult(receipts)
        # Bounded whatever the room's size: the users who have read furthest, and the flag.
        furthest = heapq.nlargest(MAX_PRESENCE_REPLY, receipts.items(), key=operator.itemgetter(1))
        return ReceiptsResult(dict(furthest), True)

    # --- typing indicators ---------------------------------------------------

    def _stop_timer(self, slot: tuple[str, str]) -> _Typing | None:
        entry = self._typing.pop(slot, None)
        if entry is not None:
            entry.timer.cancel()
        return entry

    def _expire(self, slot: tuple[str, str], timeout: float) -> None:
        """No new typing=True within the timeout: tell everyone the user stopped."""
        self._typing.pop(slot, None)
        channel, user = slot
        self.hub.spawn(self.hub.broadcast(channel, TypingNotice(channel, user, False, timeout)))

    async def on_unsubscribe(self, conn: Connection, ns: Namespace, channel: str) -> None:
        """The connection that was typing left (or disconnected): the indicator goes now."""
        slot = (channel, conn.user)
        entry = self._typing.get(slot)
        if entry is None or entry.client != conn.id:
            return
        self._stop_timer(slot)
        try:
            await self.hub.engine.kv_set(_typing_shown(channel, conn.user), b"0", ttl=ns.typing_timeout)
            await self.hub.broadcast(channel, TypingNotice(channel, conn.user, False, ns.typing_timeout))
        except Exception:
            log_failure(log, "typing stop on leave could not be broadcast")

    async def close(self) -> None:
        for entry in self._typing.values():
            entry.timer.cancel()
        self._typing.clear()
        for timer in self._read_timers.values():
            timer.cancel()
        self._read_timers.clear()
        self._reads.clear()


def _user_key(kind: str, channel: str, user: str) -> str:
    """A kv key of one user in one channel: ``chat:<kind>:`` and a hash of both (any names, one length)."""
    return f"chat:{kind}:" + hashlib.sha256(msgpack.packb([channel, user])).hexdigest()


def _typing_slot(channel: str, user: str) -> str:
    """The kv claim of a user's last typing=True in the channel (lives ``typing_interval``)."""
    return _user_key("typing", channel, user)


def _read_slot(channel: str, user: str) -> str:
    """The kv claim of a user's last pushed read receipt in the channel (lives ``typing_interval``)."""
    return _user_key("read", channel, user)


def _typing_shown(channel: str, user: str) -> str:
    """The kv key holding whether the user's indicator is on (b"1") in the channel, on any node."""
    return _user_key("typing-on", channel, user)


def _for_waiters(exc: BaseException) -> BaseException:
    """A fresh copy of the first send's failure for retries waiting on it (not its traceback)."""
    if isinstance(exc, CommandError):
        return CommandError(exc.code, exc.message)
    if isinstance(exc, EngineUnavailable):
        return type(exc)(str(exc))  # OutcomeUnknown stays OutcomeUnknown
    return CommandError(ErrorCode.NOT_AVAILABLE, "the first send failed: retry")


async def _await_inflight(fut: asyncio.Future[PublishResult]) -> PublishResult:
    """The result of the same send already in flight on this node, waited for at most IN_FLIGHT_WAIT."""
    try:
        return await asyncio.wait_for(asyncio.shield(fut), IN_FLIGHT_WAIT)
    except TimeoutError:
        raise CommandError(ErrorCode.NOT_AVAILABLE, "a send with this key is in progress: retry") from None
