"""The presence role: who is connected to a channel, across nodes, with joins and leaves announced once."""

from __future__ import annotations

import abc
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class PresenceEntry:
    """One connection present in a channel: its user and info (msgpack or None)."""

    user: str
    info: bytes | None = None


@dataclass(frozen=True, slots=True)
class PresenceCounts:
    """Connections and unique users present in a channel."""

    clients: int
    users: int


class PresenceStore(abc.ABC):
    @abc.abstractmethod
    async def presence_add(self, channel: str, client: str, entry: PresenceEntry, *, ttl: float) -> bool:
        """Record (or refresh) ``client`` in ``channel`` for ``ttl`` seconds.

        Returns True when this makes the user present: their first connection
        here, and no leave of theirs is pending (:meth:`presence_remove`). The
        caller announces a join then.
        """

    @abc.abstractmethod
    async def presence_remove(self, channel: str, client: str, user: str, *, grace: float) -> int:
        """Remove ``client``. Returns 0, or when it was the user's last connection
        here a token naming their leave, now pending: pass it to
        :meth:`presence_settle` after ``grace``."""

    @abc.abstractmethod
    async def presence_settle(self, channel: str, user: str, leave: int) -> bool:
        """True (once) when the pending leave ``leave`` stands: the user did not come
        back. The caller announces the leave then. A leave the user has since come
        back from, and left again (a newer token, another node's), is not this one."""

    @abc.abstractmethod
    async def presence_expire(self, channel: str) -> list[str]:
        """Drop entries whose TTL ran out (their node died without a word) and return,
        once, the users who are no longer present at all: the caller announces their leave."""

    @abc.abstractmethod
    async def presence(self, channel: str) -> dict[str, PresenceEntry]:
        """Map of client id -> entry of every connection present."""

    @abc.abstractmethod
    async def presence_stats(self, channel: str) -> PresenceCounts:
        """Connection and unique-user counts, without listing members."""
