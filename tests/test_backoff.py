"""The reconnect delay generator, without sockets or clocks."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

import pytest

from protocol.backoff import backoff


def take(n: int, delays: Iterator[float]) -> list[float]:
    return list(itertools.islice(delays, n))


def test_ceiling_doubles_up_to_max() -> None:
    # rng() == 1.0 exposes the ceiling of each attempt.
    delays = take(8, backoff(0.1, 1.0, 2.0, rng=lambda: 1.0))
    assert delays == pytest.approx([0.1, 0.2, 0.4, 0.8, 1.0, 1.0, 1.0, 1.0])


def test_full_jitter_scales_ceiling() -> None:
    delays = take(4, backoff(1.0, 100.0, 3.0, rng=lambda: 0.5))
    assert delays == pytest.approx([0.5, 1.5, 4.5, 13.5])


def test_zero_rng_means_immediate_retry() -> None:
    assert take(5, backoff(rng=lambda: 0.0)) == [0.0] * 5


def test_random_delays_stay_within_bounds() -> None:
    rng = random.Random(1234)
    delays = take(1000, backoff(0.05, 2.0, 2.0, rng=rng.random))
    ceilings = take(1000, backoff(0.05, 2.0, 2.0, rng=lambda: 1.0))
    assert all(0.0 <= d < c for d, c in zip(delays, ceilings))
    # Full jitter: late attempts spread over the whole [0, max) range.
    late = delays[100:]
    assert min(late) < 0.2 and max(late) > 1.8


def test_factor_one_is_constant_ceiling() -> None:
    assert take(3, backoff(0.5, 0.5, 1.0, rng=lambda: 1.0)) == [0.5, 0.5, 0.5]


def test_endless() -> None:
    delays = backoff(0.01, 0.02)
    for _ in range(10_000):
        next(delays)


@pytest.mark.parametrize(
    ("min_delay", "max_delay", "factor"),
    [(0.0, 1.0, 2.0), (-1.0, 1.0, 2.0), (1.0, 0.5, 2.0), (0.1, 1.0, 0.5), (float("nan"), 1.0, 2.0)],
)
def test_rejects_bad_bounds(min_delay: float, max_delay: float, factor: float) -> None:
    # Raised at the call, not at the first next().
    with pytest.raises(ValueError):
        backoff(min_delay, max_delay, factor)
