"""scripts/bench_inprocess.py runs and delivers every publication to every subscriber."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def load_bench() -> Any:
    spec = importlib.util.spec_from_file_location("bench_inprocess", ROOT / "scripts" / "bench_inprocess.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_inprocess"] = module
    spec.loader.exec_module(module)
    return module


async def test_every_publication_reaches_every_subscriber() -> None:
    bench = load_bench()
    before = bench.CountingTransport.writes
    per_publish = await bench.run(subscribers=20, publishes=5, payload=64)
    assert per_publish > 0
    assert bench.CountingTransport.writes - before == 20 * 5  # one write per subscriber per publication
