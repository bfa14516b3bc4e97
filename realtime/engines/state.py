"""The live-state role: a channel's keyed values, each change bumping the channel's version."""

from __future__ import annotations

import abc

from protocol.messages import StateEntry


class StateStore(abc.ABC):
    @abc.abstractmethod
    async def state_set(
        self, channel: str, key: str, value: bytes | None, *, expected_version: int | None = None
    ) -> StateEntry:
        """Set (``None`` deletes) one key and bump the channel's state version.

        The entry's version is the channel's new version. With
        ``expected_version``, raises :class:`~.errors.VersionConflict` unless the
        key's current version equals it (0 = the key does not exist).
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
