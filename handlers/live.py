"""Live data: keyed state in namespaces of kind "live", a snapshot on subscribe, then deltas.

Each channel holds keys with msgpack values. Every change bumps the channel's
state *version* (the engine assigns it atomically); a key's version is the
channel version that last set it.

Subscribing returns ``SubscribeResult.version`` and ``state``: every key, or,
with ``Subscribe.version``, only the keys changed after it (deleted keys as
entries with ``value=None``). A result whose version is below the one asked for
is a full snapshot: the state was reset (a memory engine restarted), so the
client replaces everything it holds.

Clients write with ``state_set`` (``value``; msgpack nil deletes the key) and
``state_patch`` (a merge patch) when the namespace has ``client_write`` and
they may subscribe to the channel (PERMISSION_DENIED otherwise). Either
command on a channel whose namespace is not "live" is a client bug:
BAD_REQUEST; an unknown namespace is UNKNOWN_CHANNEL. With ``version``, the
write applies only if the key's version still equals it (0: the key does not
exist), else CONFLICT. A patch without ``version`` is applied to the current
value with a bounded retry; under heavy contention it fails with CONFLICT too.
The reply is ``StateResult(version)``.

Bounds (LIMIT_EXCEEDED, nothing written): a value, or a patch's result, is at
most ``max_message_size``, by default ``max_frame_size`` (what one frame can
carry, so no key grows patch by patch); a channel's state is at most
``max_state_keys`` keys and ``max_state_bytes`` bytes, by default
``max_queue_bytes`` / :data:`STATE_SHARE_OF_QUEUE`, so that a snapshot fits
any subscriber's queue. Keys expire after ``state_ttl``; tombstones are
compacted. The engine applies these atomically (``StateLimits``; the rules are
in ``realtime/engines/state.py``); a write returns the keys it found expired,
and their deletions are broadcast before the write's change. Each node also
sweeps the live channels it has subscribers for, every tenth of the shortest
``state_ttl`` (at most :data:`SWEEP_MAX` seconds), so subscribers learn of an
expiry without waiting for a write. A subscribe with
``version`` that the engine answers in full (the changes since it cannot be
told) carries ``full=True``, as does a reset.

Deltas: every change reaches subscribers as a ``StateChange`` push with the
new channel version and either the full ``value`` (nil = deleted) or a
``patch``, whichever is smaller. Patches are JSON Merge Patches (RFC 7386)
applied to msgpack-decoded values (``protocol.merge_patch``): a map patch
merges member by member, nil removes a member, anything else replaces; arrays
are replaced whole. Limitation: a map member cannot be *set* to nil by a
patch, so such changes travel as full values. A client keeps its channel
version ``held`` and each key's version, and on a ``StateChange`` of version v:

* ``patch``: v == held + 1: apply it if v is above the key's version (two
  nodes' pushes may cross: a newer full value of the key can come first) and
  set held = v. v <= held: already included, ignore. Otherwise it missed a
  change: unsubscribe and subscribe again with ``version=held``, which returns
  only what changed.
* ``value``: apply it if v is above the key's version (else it is stale),
  regardless of ``held``; set held = v only if v == held + 1.

Conflation: in a namespace with ``max_rate > 0`` every node delivers each key
at most ``max_rate`` times per second, always as a full value of the latest
change, never a backlog (:class:`_Conflater`, a hub event hook: done once per
node and channel, not per subscriber). Versions then skip, which is why full
values apply regardless. Writers send full values there, as the conflater
would have to rebuild them anyway.

For the HTTP API: :meth:`Live.set_value`, :meth:`Live.patch_value` and
:meth:`Live.get` (same semantics, no permission checks).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

import msgpack  # type: ignore[import-untyped]  # no stubs

from protocol import merge_patch
from protocol.codes import ErrorCode
from protocol.errors import CommandError, ProtocolError
from protocol.fields import keep_pairs, pack_value
from protocol.messages import (
    StateChange,
    StateEntry,
    StatePatch,
    StateResult,
    StateSet,
    Subscribe,
)
from realtime.auth import check_subscribe
from realtime.engines.errors import StateLimitExceeded, VersionConflict
from realtime.engines.state import StateLimits
from realtime.logs import log_failure

from .base import EVENTS, EventHook, Feature, Handler, HubServices, namespace_of

if TYPE_CHECKING:
    from realtime.connection import Connection
    from realtime.namespaces import Namespace

__all__ = ["NIL", "Live"]

log = logging.getLogger("realtime.live")

#: msgpack nil: as a value it deletes the key.
NIL = b"\xc0"
#: Attempts of a read-modify-write (patch, or set with a diff) before giving up.
MAX_ATTEMPTS = 5
#: Values shorter than this are sent whole: a patch could save only a few bytes.
DIFF_MIN_BYTES = 32
#: Above any channel version: ``state_since(channel, ABOVE_ALL)`` returns only the version.
ABOVE_ALL = 2**63
#: A channel's state is at most ``max_queue_bytes`` divided by this by default: a snapshot's
#: JSON may be up to six times its MessagePack bytes (``false`` -> ``false,``, control
#: characters -> ``\u0001``), plus each entry's framing, and must still fit a client's queue.
STATE_SHARE_OF_QUEUE = 8
#: Most seconds between two sweeps for expired keys (see :meth:`Live._sweep_forever`).
SWEEP_MAX = 60.0

# keep_pairs: a map of the server side's with keys a dict would merge (1 and true) stays as sent;
# merge patches treat it as a value, replaced whole.
_unpack: Callable[[bytes], Any] = partial(
    msgpack.unpackb, raw=False, strict_map_key=False, object_pairs_hook=keep_pairs
)
_pack: Callable[[object], bytes] = pack_value
#: First bytes of a msgpack map (fixmap, map16, map32): only maps can have a smaller patch.
_MAP_HEADS = frozenset(range(0x80, 0x90)) | {0xDE, 0xDF}


def _key_version(entry: StateEntry) -> int:
    """The version a conditional write expects for this entry (0 when deleted or never set)."""
    return entry.version if entry.value is not None else 0


def _conflict(entry: StateEntry) -> CommandError:
    return CommandError(ErrorCode.CONFLICT, f"the key's version is {_key_version(entry)}")


class Live(Feature):
    """The live-data feature; the composition root plugs it into the hub."""

    name = "live"

    def __init__(self, hub: HubServices) -> None:
        self.hub = hub
        #: Namespace name -> the conflater of a live namespace with ``max_rate > 0``.
        self._conflaters = {
            ns.name: _Conflater(hub, ns.max_rate)
            for ns in hub.settings.namespaces.values()
            if ns.kind == "live" and ns.max_rate > 0
        }
        #: Seconds between two sweeps for expired keys: a tenth of the shortest state_ttl, at most a minute.
        ttls = [ns.state_ttl for ns in hub.settings.namespaces.values() if ns.kind == "live" and ns.state_ttl > 0]
        self._sweep_interval = min([SWEEP_MAX, *(ttl / 10 for ttl in ttls)]) if ttls else 0.0
        self._sweeper: asyncio.Task[None] | None = None
        self._closed = False

    def commands(self) -> Mapping[type, Handler]:
        return {StateSet: self._state_set, StatePatch: self._state_patch}

    def event_hooks(self) -> Mapping[str, EventHook]:
        return {name: conflater.take for name, conflater in self._conflaters.items()}

    async def close(self) -> None:
        self._closed = True
        for conflater in self._conflaters.values():
            conflater.close()
        if self._sweeper is not None:
            self._sweeper.cancel()
            await asyncio.gather(self._sweeper, return_exceptions=True)
            self._sweeper = None

    async def _sweep_forever(self) -> None:
        """Delete expired keys of the live channels subscribed here, and tell their subscribers
        (without it they would learn only with the channel's next write)."""
        while True:
            await asyncio.sleep(self._sweep_interval)
            for channel in self.hub.local_channels():
                ns = self.hub.namespace(channel)
                if ns is None or ns.kind != "live" or ns.state_ttl <= 0:
                    continue
                try:
                    for gone in await self.hub.engine.state_expire(channel, self._limits(ns)):
                        await self.hub.broadcast(channel, _full(channel, gone))
                except Exception:  # an engine outage: the next sweep, or the next write, does it
                    log_failure(log, "expired live keys not deleted")

    def on_resync(self) -> None:
        """State changes are pushed at most once: some may be lost, or the state may have
        been reset (Redis restarted empty). Subscribers resubscribe with their version and
        get what changed since, or a full snapshot when the state went back."""
        for channel in self.hub.local_channels():
            ns = self.hub.namespace(channel)
            if ns is not None and ns.kind == "live":
                self.hub.ask_to_resubscribe(channel)

    # --- subscribe -------------------------------------------------------------

    async def on_subscribe(self, conn: Connection, ns: Namespace, cmd: Subscribe, fields: dict[str, Any]) -> None:
        if ns.kind != "live":
            return
        if self._sweeper is None and self._sweep_interval and not self._closed:
            self._sweeper = asyncio.create_task(self._sweep_forever())
        engine = self.hub.engine
        read = await engine.state_read(cmd.channel, cmd.version or 0)
        if cmd.version and read.version < cmd.version:  # state reset: a full snapshot instead
            read = await engine.state_read(cmd.channel, 0)
        fields["version"] = read.version
        fields["state"] = tuple(read.entries)
        if cmd.version and read.full:
            fields["full"] = True  # replace, do not merge: deletions since cmd.version are not listed

    # --- client commands ---------------------------------------------------------

    async def _state_set(self, conn: Connection, cmd: StateSet) -> StateResult:
        ns = self._writable(conn, cmd.channel)
        value = None if cmd.value == NIL else cmd.value
        return StateResult(await self._set(ns, cmd.channel, cmd.key, value, cmd.version))

    async def _state_patch(self, conn: Connection, cmd: StatePatch) -> StateResult:
        ns = self._writable(conn, cmd.channel)
        return StateResult(await self._patch(ns, cmd.channel, cmd.key, _unpack(cmd.patch), cmd.version))

    def _writable(self, conn: Connection, channel: str) -> Namespace:
        ns = self._live(channel)
        if not ns.client_write:
            raise CommandError(ErrorCode.PERMISSION_DENIED, "clients may not write here")
        if channel not in conn.channels:  # subscribed: the right was checked then (tokens too)
            check_subscribe(conn.identity, channel, ns, None, self.hub.verifier)
        return ns

    def _live(self, channel: str) -> Namespace:
        return namespace_of(self.hub, channel, "live")

    # --- the API (HTTP) ------------------------------------------------------------

    async def set_value(
        self, channel: str, key: str, value: bytes | None, *, expected_version: int | None = None
    ) -> int:
        """Set ``key`` to ``value`` (msgpack; None or nil deletes) and return the new version.

        Raises CommandError: CONFLICT (``expected_version`` is stale),
        LIMIT_EXCEEDED, UNKNOWN_CHANNEL, BAD_REQUEST (not a live channel).
        """
        return await self._set(self._live(channel), channel, key, None if value == NIL else value, expected_version)

    async def patch_value(self, channel: str, key: str, patch: bytes, *, expected_version: int | None = None) -> int:
        """Apply merge ``patch`` (msgpack) to ``key`` and return the new version; errors as :meth:`set_value`,
        plus BAD_REQUEST when ``patch`` is not one msgpack value."""
        ns = self._live(channel)
        try:
            decoded = _unpack(patch)
        except (ValueError, TypeError):  # msgpack's errors all derive from these
            raise CommandError(ErrorCode.BAD_REQUEST, "the patch is not msgpack") from None
        return await self._patch(ns, channel, key, decoded, expected_version)

    async def get(self, channel: str, key: str | None = None) -> tuple[list[StateEntry], int]:
        """Every existing key (or just ``key``, if it exists) and the channel's version."""
        self._live(channel)
        engine = self.hub.engine
        if key is None:
            return await engine.state_since(channel, 0)
        entry = await engine.state_get(channel, key)
        _, version = await engine.state_since(channel, ABOVE_ALL)
        return ([entry] if entry.value is not None else []), version

    # --- writes ----------------------------------------------------------------------

    async def _set(self, ns: Namespace, channel: str, key: str, value: bytes | None, expected: int | None) -> int:
        self._check_size(ns, value)
        engine = self.hub.engine
        if value is None or ns.max_rate > 0 or len(value) < DIFF_MIN_BYTES or value[0] not in _MAP_HEADS:
            try:
                entry = await self._write(ns, channel, key, value, expected)
            except VersionConflict as exc:
                raise _conflict(exc.current) from None
            await self.hub.broadcast(channel, _full(channel, entry))
            return entry.version
        # A patch must be against the exact previous value: read, then write only if unchanged.
        for _ in range(MAX_ATTEMPTS):
            old = await engine.state_get(channel, key)
            have = _key_version(old)
            if expected is not None and have != expected:
                raise _conflict(old)
            try:
                entry = await self._write(ns, channel, key, value, have)
            except VersionConflict as exc:
                if expected is not None:
                    raise _conflict(exc.current) from None
                continue
            await self.hub.broadcast(channel, _delta(channel, entry, old.value))
            return entry.version
        # The key changes too fast to diff against: write it, and send it whole.
        entry = await self._write(ns, channel, key, value, None)
        await self.hub.broadcast(channel, _full(channel, entry))
        return entry.version

    async def _patch(self, ns: Namespace, channel: str, key: str, patch: Any, expected: int | None) -> int:
        engine = self.hub.engine
        patch_bytes = _pack(patch)  # normalised: what subscribers apply is what was applied here
        for _ in range(MAX_ATTEMPTS):
            old = await engine.state_get(channel, key)
            have = _key_version(old)
            if expected is not None and have != expected:
                raise _conflict(old)
            new = merge_patch.apply(None if old.value is None else _unpack(old.value), patch)
            value = None if new is None else _pack(new)
            self._check_size(ns, value)
            try:
                entry = await self._write(ns, channel, key, value, have)
            except VersionConflict as exc:
                if expected is not None:
                    raise _conflict(exc.current) from None
                continue
            if value is None or ns.max_rate > 0 or len(patch_bytes) >= len(value):
                push = _full(channel, entry)
            else:
                push = StateChange(channel, key, entry.version, patch=patch_bytes)
            await self.hub.broadcast(channel, push)
            return entry.version
        raise CommandError(ErrorCode.CONFLICT, "the key changed during every attempt to patch it: retry")

    async def _write(
        self, ns: Namespace, channel: str, key: str, value: bytes | None, expected: int | None
    ) -> StateEntry:
        """One engine write under the namespace's limits; tells subscribers of the keys it expired."""
        try:
            write = await self.hub.engine.state_write(
                channel, key, value, expected_version=expected, limits=self._limits(ns)
            )
        except StateLimitExceeded as exc:
            self.hub.metrics.quota_exceeded("state")
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, str(exc)) from None
        for gone in write.expired:  # their versions come before the write's
            await self.hub.broadcast(channel, _full(channel, gone))
        return write.entry

    def _limits(self, ns: Namespace) -> StateLimits:
        max_bytes = ns.max_state_bytes
        if max_bytes is None:
            max_bytes = self.hub.settings.max_queue_bytes // STATE_SHARE_OF_QUEUE
        return StateLimits(max_bytes, ns.max_state_keys, ns.state_ttl)

    def _check_size(self, ns: Namespace, value: bytes | None) -> None:
        """A value (or a patch's result) is at most ``max_message_size``, by default ``max_frame_size``:
        what one frame can carry, so that no key grows without bound patch by patch."""
        limit = ns.max_message_size if ns.max_message_size is not None else self.hub.settings.max_frame_size
        if value is not None and len(value) > limit:
            self.hub.metrics.quota_exceeded("state")
            raise CommandError(ErrorCode.LIMIT_EXCEEDED, f"value larger than {limit} bytes")


def _full(channel: str, entry: StateEntry) -> StateChange:
    return StateChange(channel, entry.key, entry.version, value=NIL if entry.value is None else entry.value)


def _delta(channel: str, entry: StateEntry, old: bytes | None) -> StateChange:
    """The change from ``old`` to ``entry.value``: a merge patch if smaller, else the full value."""
    new = entry.value
    if old is None or new is None:
        return _full(channel, entry)
    try:
        patch = _pack(merge_patch.diff(_unpack(old), _unpack(new)))
    except merge_patch.Inexpressible:
        return _full(channel, entry)
    if len(patch) >= len(new):
        return _full(channel, entry)
    return StateChange(channel, entry.key, entry.version, patch=patch)


# --- conflation ------------------------------------------------------------------------


@dataclass(slots=True)
class _Slot:
    """One key being conflated: its window's timer and the latest change held back."""

    timer: asyncio.TimerHandle
    version: int = 0  # of the change held back; 0 = nothing held
    event: bytes | None = None  # its msgpack push, or None: a patch, fetch the full value


class _Conflater:
    """A hub event hook for one live namespace with ``max_rate > 0``.

    A key's first change passes at once and opens a window of ``1/max_rate``
    seconds; changes within the window replace each other, and the latest is
    delivered (as a full value) when the window ends, opening the next. A
    window with nothing held closes and the key is forgotten. Everything is per
    node and channel: local subscribers share one delivery.
    """

    def __init__(self, hub: HubServices, max_rate: float) -> None:
        self.hub = hub
        self.interval = 1.0 / max_rate
        self._slots: dict[tuple[str, str], _Slot] = {}

    def take(self, channel: str, event: bytes) -> bool:
        """The hook: True when the event was taken (held back, or will be released later)."""
        try:
            messages = EVENTS.decode_messages(event)
        except ProtocolError:
            return False
        if len(messages) != 1 or type(change := messages[0]) is not StateChange:
            return False
        slot = self._slots.get((channel, change.key))
        if slot is None:
            timer = asyncio.get_running_loop().call_later(self.interval, self._release, channel, change.key)
            self._slots[channel, change.key] = _Slot(timer)
            if change.patch is None:
                return False  # the hub delivers it now
            self.hub.spawn(self._fetch(channel, change.key))
            return True
        if change.version > slot.version:
            slot.version = change.version
            slot.event = event if change.patch is None else None
        return True

    def _release(self, channel: str, key: str) -> None:
        slot = self._slots[channel, key]
        if not slot.version:
            del self._slots[channel, key]
            return
        if slot.event is not None:
            self.hub.deliver_event(channel, slot.event)
        else:
            self.hub.spawn(self._fetch(channel, key))
        slot.version, slot.event = 0, None
        slot.timer = asyncio.get_running_loop().call_later(self.interval, self._release, channel, key)

    async def _fetch(self, channel: str, key: str) -> None:
        """Deliver the key's current full value (when all that is held is a patch)."""
        entry = await self.hub.engine.state_get(channel, key)
        self.hub.deliver_event(channel, EVENTS.encode(_full(channel, entry)))

    def close(self) -> None:
        for slot in self._slots.values():
            slot.timer.cancel()
        self._slots.clear()
