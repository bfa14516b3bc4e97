"""The read-receipt role: per channel, how far each user has read."""

from __future__ import annotations

import abc


class ReceiptStore(abc.ABC):
    @abc.abstractmethod
    async def receipt_set(self, channel: str, user: str, offset: int) -> int:
        """Raise the user's receipt in ``channel`` to ``offset``; never lowers it.
        Returns the stored offset (greater than ``offset`` when it was already ahead)."""

    @abc.abstractmethod
    async def receipts(self, channel: str) -> dict[str, int]:
        """User -> offset read up to."""
