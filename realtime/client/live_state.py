"""The client rules of a live channel's state (see ``handlers/live.py`` and docs/protocol.md).

A :class:`LiveState` holds key -> value, the version that set each key, and
the channel's ``version``: every change up to it is applied. It takes the
subscribe reply's snapshot (:meth:`LiveState.apply_snapshot`), then each state
push (:meth:`LiveState.apply`): a merge patch applies only at ``version + 1``,
a full value whenever it is newer than the key's. A patch beyond
``version + 1`` is a gap: the caller resubscribes with ``version`` and applies
the reply's snapshot, which holds only what changed.

Pure: no sockets, no asyncio; every method returns the :class:`StateChanged`
events it caused.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any, Final

from protocol import merge_patch
from protocol import messages as m

from .events import StateChanged
from .values import unpack

__all__ = ["MAX_AHEAD", "LiveState"]

log = logging.getLogger("realtime.client")

#: Full values applied ahead of the version, kept to close the gap later.
MAX_AHEAD: Final = 256


class LiveState:
    """The state of one live channel as a client holds it."""

    __slots__ = ("_ahead", "_key_versions", "_values", "channel", "state", "version")

    def __init__(self, channel: str) -> None:
        self.channel = channel
        #: Every change up to this state version is in ``state``.
        self.version = 0
        self._values: dict[str, Any] = {}
        #: Key -> the version that last set it (deleted keys too, while a stale push could resurrect them).
        self._key_versions: dict[str, int] = {}
        #: Versions above ``version`` whose full values were applied out of order.
        self._ahead: set[int] = set()
        #: A read-only view of key -> value.
        self.state: Mapping[str, Any] = MappingProxyType(self._values)

    def key_version(self, key: str) -> int:
        """The version that set ``key`` (0 when absent): what a conditional write of it expects."""
        return self._key_versions.get(key, 0) if key in self._values else 0

    def apply_snapshot(
        self,
        version: int,
        entries: Iterable[m.StateEntry],
        asked: int | None,
        *,
        announce: bool = True,
        full: bool = False,
    ) -> list[StateChanged]:
        """A subscribe reply's state at ``version``: all keys, or (``asked``) those changed after ``asked``.

        ``asked`` is the version the subscribe sent. A reply below it means the
        hub's state was reset, and ``full`` that the hub could not tell the
        changes (deletions compacted, keys expired): either way the snapshot
        replaces everything, and the changes come out only with ``announce``
        (not on the first subscribe).
        """
        decoded = [(e.key, None if e.value is None else unpack(e.value), e.version) for e in entries]
        changes: list[StateChanged] = []
        if asked is None or version < asked or full:  # everything
            old = dict(self._values)
            self._values.clear()
            self._key_versions.clear()
            self._ahead.clear()  # versions of the old state: the new one has not reached them
            for key, value, at in decoded:
                if value is not None:
                    self._values[key] = value
                    self._key_versions[key] = at
                    if announce and not (key in old and merge_patch.same(old[key], value)):
                        changes.append(StateChanged(self.channel, key, value, at))
            if announce:
                changes += (StateChanged(self.channel, key, None, version) for key in old.keys() - self._values.keys())
        else:
            for key, value, at in decoded:
                if at > self._key_versions.get(key, 0):
                    changes.append(self._put(key, value, at))
        self.version = version  # the snapshot is complete up to its version
        ahead, self._ahead = self._ahead, set()
        for v in sorted(x for x in ahead if x > self.version):
            self._advance(v)
        for key in [k for k in self._key_versions if k not in self._values]:
            del self._key_versions[key]  # nothing older than the snapshot can resurrect a key
        return changes

    def apply(self, change: m.StateChange) -> list[StateChanged] | None:
        """Apply one state push; returns its change (none if stale), or None when a change was missed.

        After None, resubscribe with ``version`` and apply the reply's snapshot.
        """
        v, key = change.version, change.key
        try:
            if change.patch is not None:
                if v <= self.version:
                    return []  # already included
                if v != self.version + 1:
                    return None  # a change in between was missed
                if self._key_versions.get(key, 0) >= v:
                    self._advance(v)  # a newer full value of the key came first
                    return []
                value = merge_patch.apply(self._values.get(key), unpack(change.patch))
            else:
                if v <= self.version or v <= self._key_versions.get(key, 0):
                    return []  # stale
                value = None if change.value is None else unpack(change.value)
        except Exception:
            log.warning("channel %r: state change %d of %r is not MessagePack; resubscribing", change.channel, v, key)
            return None
        changed = self._put(key, value, v)
        self._advance(v)
        if value is None and v <= self.version:
            self._key_versions.pop(key, None)  # the delete is below the version: no push can undo it
        return [changed]

    def _put(self, key: str, value: Any, version: int) -> StateChanged:
        if value is None:
            self._values.pop(key, None)
        else:
            self._values[key] = value
        self._key_versions[key] = version
        return StateChanged(self.channel, key, value, version)

    def _advance(self, v: int) -> None:
        """Change ``v`` is applied: move the version up through every change applied so far."""
        if v == self.version + 1:
            self.version = v
            while self.version + 1 in self._ahead:
                self._ahead.remove(self.version + 1)
                self.version += 1
        elif v > self.version:
            self._ahead.add(v)
            if len(self._ahead) > MAX_AHEAD:  # conflated keys skip versions: forget the oldest
                self._ahead.remove(min(self._ahead))
