"""The key-value role: small values every node shares (revocations, last seen, throttles)."""

from __future__ import annotations

import abc


class KeyValueStore(abc.ABC):
    @abc.abstractmethod
    async def kv_get(self, key: str) -> bytes | None: ...

    @abc.abstractmethod
    async def kv_set(self, key: str, value: bytes, *, ttl: float = 0.0, only_if_absent: bool = False) -> bool:
        """Store ``value`` (for ``ttl`` seconds; 0 = no expiry). With ``only_if_absent``,
        store only when no live value exists. Returns whether it was stored."""

    @abc.abstractmethod
    async def kv_set_max(self, key: str, value: float) -> float:
        """Store the number ``value`` (no expiry) unless the key holds a larger one; return the number
        it holds after. Atomic across nodes: whatever the order of concurrent calls, the largest stays.
        The key must hold only numbers written by this method (``kv_get`` reads them as ``repr`` text)."""
