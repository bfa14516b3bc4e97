"""The read-receipt contract (``realtime.engines.receipts``); memory, Redis and Redis Cluster."""

from __future__ import annotations

import time

from realtime.engines.base import Engine
from realtime.engines.memory import MemoryEngine

from .helpers import KEEP

# --- every engine ----------------------------------------------------------------------


async def test_receipts_never_move_backwards(engine: Engine) -> None:
    assert await engine.receipt_set("c", "alice", 5) == 5
    assert await engine.receipt_set("c", "alice", 3) == 5
    assert await engine.receipt_set("c", "bob", 1) == 1
    assert await engine.receipt_set("c", "alice", 9) == 9
    assert await engine.receipts("c") == {"alice": 9, "bob": 1}
    assert await engine.receipts("none") == {}


async def test_receipt_raise_tells_whether_it_moved(engine: Engine) -> None:
    """Chat announces a receipt only when it moved: a repeat, or one behind, is not news."""
    assert await engine.receipt_raise("c", "alice", 2) == (2, True)
    assert await engine.receipt_raise("c", "alice", 2) == (2, False)
    assert await engine.receipt_raise("c", "alice", 1) == (2, False)
    assert await engine.receipt_raise("c", "alice", 3) == (3, True)
    assert await engine.receipt_raise("c", "bob", 0) == (0, True)  # a first receipt, even at 0
    assert await engine.receipt_raise("c", "bob", 0) == (0, False)


# --- the memory engine -------------------------------------------------------------------


async def test_memory_engine_forgets_receipts_with_the_epoch() -> None:
    """As on Redis (see test_engine_broker.py): a stream forgotten after meta_ttl starts a new epoch, and
    receipts counted in the old one's offsets would refuse reads of the new messages."""
    eng = MemoryEngine(meta_ttl=10)
    old = [await eng.publish("c", b"\x00", history=KEEP) for _ in range(3)][-1]
    assert await eng.receipt_set("c", "alice", 3) == 3
    eng.sweep(now=time.monotonic() + 3600)
    new = await eng.publish("c", b"\x01", history=KEEP)
    assert new.offset == 1 and new.epoch != old.epoch
    assert await eng.receipts("c") == {}
    assert await eng.receipt_set("c", "alice", 1) == 1
