"""scripts/bench_inprocess.py runs and delivers every publication to every subscriber."""

from __future__ import annotations

from .helpers import load_script


async def test_every_publication_reaches_every_subscriber() -> None:
    bench = load_script("bench_inprocess")
    before = bench.CountingTransport.writes
    per_publish = await bench.run(subscribers=20, publishes=5, payload=64)
    assert per_publish > 0
    assert bench.CountingTransport.writes - before == 20 * 5  # one write per subscriber per publication
