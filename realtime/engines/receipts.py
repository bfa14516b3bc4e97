"""The read-receipt role: per channel, how far each user has read."""

from __future__ import annotations

import abc


class ReceiptStore(abc.ABC):
    @abc.abstractmethod
    async def receipt_raise(self, channel: str, user: str, offset: int) -> tuple[int, bool]:
        """Raise the user's receipt in ``channel`` to ``offset``; never lowers it.

        Returns the stored offset (greater than ``offset`` when it was already ahead)
        and whether this call moved it (False for an offset at or below the stored one),
        in one atomic step: only a receipt that moved is worth announcing.
        """

    async def receipt_set(self, channel: str, user: str, offset: int) -> int:
        """:meth:`receipt_raise`, returning only the stored offset."""
        return (await self.receipt_raise(channel, user, offset))[0]

    @abc.abstractmethod
    async def receipts(self, channel: str) -> dict[str, int]:
        """User -> offset read up to."""
