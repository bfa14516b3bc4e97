"""The live-state role: a channel's keyed values, each change bumping the channel's version.

Bounds, the same on every engine (the hub passes them with each write, from the
namespace; docs/guide.md states the rule for users):

* a channel's **size** is the sum, over its entries, of the key's UTF-8 bytes
  plus the value's bytes; a deleted key (a tombstone) counts its key's bytes;
* a write that would leave more than ``max_keys`` live keys, or live keys
  larger than ``max_bytes`` together, is refused (:class:`StateLimitExceeded`)
  and changes nothing; deletes are never refused;
* tombstones are compacted, oldest first, while there are more than
  ``max_keys`` of them or the size is over ``max_bytes``. The version of the
  newest dropped tombstone is the channel's **floor**: a client that asks for
  the changes since a version below it gets every key instead (``full``), as
  the deletions it missed can no longer be told;
* with ``ttl``, a key not written for ``ttl`` seconds is **expired**: reads no
  longer return it, and the next write deletes it (a tombstone with a version
  of its own, before the write's) and returns it in ``StateWrite.expired``, so
  the hub tells subscribers. While a channel holds an expired key not yet
  deleted, the changes since any version are answered in full. A channel not
  written for ``ttl`` loses all its entries (its version counter stays, and
  everything below it counts as compacted), so abandoned channels cost nothing.
"""

from __future__ import annotations

import abc
from dataclasses import dataclass

from protocol.messages import StateEntry


@dataclass(frozen=True, slots=True)
class StateLimits:
    """The bounds of one channel's state (0: none); see the module's docstring."""

    max_bytes: int = 0
    max_keys: int = 0
    #: Seconds a key lives after its last write; 0: for ever.
    ttl: float = 0.0


#: No bounds: what :meth:`StateStore.state_set` writes with.
NO_LIMITS = StateLimits()


@dataclass(frozen=True, slots=True)
class StateWrite:
    """A write's entry, and the keys found expired and deleted first (oldest expiry first)."""

    entry: StateEntry
    expired: tuple[StateEntry, ...] = ()


@dataclass(frozen=True, slots=True)
class StateSlice:
    """What a read returns: ``entries`` up to the channel's ``version``.

    ``full``: ``entries`` are every live key, not the changes after the version
    asked for (none was asked, or the changes could not be told: tombstones
    compacted past it, or a key expired and not deleted yet). A client then
    replaces what it holds.
    """

    entries: list[StateEntry]
    version: int
    full: bool


class StateStore(abc.ABC):
    @abc.abstractmethod
    async def state_write(
        self,
        channel: str,
        key: str,
        value: bytes | None,
        *,
        expected_version: int | None = None,
        limits: StateLimits = NO_LIMITS,
        now: float | None = None,
    ) -> StateWrite:
        """Set (``None`` deletes) one key and bump the channel's state version, in one atomic step.

        The entry's version is the channel's new version. With
        ``expected_version``, raises :class:`~.errors.VersionConflict` unless the
        key's current version equals it (0 = the key does not exist, or
        expired). Over ``limits``: :class:`~.errors.StateLimitExceeded`. ``now``:
        Unix seconds (default: the clock), for expiry.
        """

    @abc.abstractmethod
    async def state_expire(
        self, channel: str, limits: StateLimits = NO_LIMITS, *, now: float | None = None
    ) -> tuple[StateEntry, ...]:
        """Delete the channel's expired keys, as a write would first, in one atomic step, and
        compact its tombstones within ``limits``; returns the deletions (oldest expiry first).
        The hub calls it now and then for channels with subscribers, to tell them."""

    @abc.abstractmethod
    async def state_get(self, channel: str, key: str, *, now: float | None = None) -> StateEntry:
        """The key's value and version (``value=None``: deleted or expired; ``version=0``: never set)."""

    @abc.abstractmethod
    async def state_read(self, channel: str, version: int = 0, *, now: float | None = None) -> StateSlice:
        """Every live key (``version`` 0), or the entries changed after ``version`` (deleted
        keys with ``value=None``), or every live key when those cannot be told (``full``).
        A ``version`` above the channel's gets no entries, only the version."""

    async def state_set(
        self, channel: str, key: str, value: bytes | None, *, expected_version: int | None = None
    ) -> StateEntry:
        """:meth:`state_write` without limits, returning the entry."""
        return (await self.state_write(channel, key, value, expected_version=expected_version)).entry

    async def state_since(self, channel: str, version: int = 0) -> tuple[list[StateEntry], int]:
        """:meth:`state_read`'s entries and version."""
        read = await self.state_read(channel, version)
        return read.entries, read.version
