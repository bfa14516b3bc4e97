"""The key-value contract (``realtime.engines.kv``); memory, Redis and Redis Cluster."""

from __future__ import annotations

import asyncio

from realtime.engines.base import Engine

from .helpers import MS

# --- every engine ----------------------------------------------------------------------


async def test_kv(engine: Engine) -> None:
    assert await engine.kv_get("k") is None
    assert await engine.kv_set("k", b"1") is True
    assert await engine.kv_set("k", b"2", only_if_absent=True) is False
    assert await engine.kv_get("k") == b"1"
    assert await engine.kv_set("t", b"x", ttl=0.05) is True
    await asyncio.sleep(0.1)  # expiry is time itself: nothing to await instead
    assert await engine.kv_get("t") is None
    assert await engine.kv_set("t", b"y", only_if_absent=True) is True


async def test_kv_fractional_ttl_rounds_up_to_a_millisecond(engine: Engine) -> None:
    assert await engine.kv_set("f", b"x", ttl=0.0004) is True  # 0.4 ms: stored, for at least 1 ms
    await asyncio.sleep(20 * MS)  # expiry is time itself
    assert await engine.kv_get("f") is None
