"""The circuit breaker's state machine, on a clock the test turns."""

from __future__ import annotations

import pytest

from realtime.backend.breaker import CircuitBreaker


def state(b: CircuitBreaker) -> str:
    return b.state


def test_consecutive_failures_open_it_and_it_fails_fast_for_the_cooldown() -> None:
    b = CircuitBreaker(failures=3, cooldown=10.0)
    for now in (0.0, 1.0):
        assert b.allow(now)
        b.record(False, now)
    assert state(b) == "closed"
    assert b.allow(2.0)
    b.record(True, 2.0)  # a success in between starts the count again
    for now in (3.0, 4.0, 5.0):
        assert b.allow(now)
        b.record(False, now)
    assert state(b) == "open"
    assert not b.allow(14.9) and b.retry_after(14.9) == pytest.approx(0.1)


def test_half_open_lets_one_trial_through_whose_outcome_decides() -> None:
    b = CircuitBreaker(failures=1, cooldown=5.0)
    assert b.allow(0.0)
    b.record(False, 0.0)
    assert b.allow(5.0) and state(b) == "half-open"
    assert not b.allow(5.1)  # only the one trial
    b.record(False, 5.2)  # the trial failed: open for another cool-down
    assert state(b) == "open" and not b.allow(10.1)
    assert b.allow(10.25)
    b.record(True, 10.3)
    assert state(b) == "closed" and b.allow(10.4) and b.allow(10.4) and b.retry_after(10.4) == 0.0


def test_bad_parameters_are_refused() -> None:
    with pytest.raises(ValueError):
        CircuitBreaker(failures=0)
