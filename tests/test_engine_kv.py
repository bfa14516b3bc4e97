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


async def test_kv_set_max_keeps_the_largest(engine: Engine) -> None:
    assert await engine.kv_set_max("m", 1767229200.25) == 1767229200.25
    assert await engine.kv_set_max("m", 5.0) == 1767229200.25  # lower: changes nothing
    assert await engine.kv_get("m") == b"1767229200.25"
    assert await engine.kv_set_max("m", 1767229300.0) == 1767229300.0
    assert float(await engine.kv_get("m") or b"0") == 1767229300.0


async def test_concurrent_kv_set_max_leave_the_largest(engine: Engine) -> None:
    values = [float(v) for v in (7, 3, 42, 9, 41, 0, 12)]
    stored = await asyncio.gather(*(engine.kv_set_max("c", v) for v in values))
    assert max(stored) == 42.0
    assert await engine.kv_get("c") == b"42.0"
