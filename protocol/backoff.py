"""Reconnect delays: exponential backoff with full jitter, as a pure generator.

Attempt ``n`` (from 0) waits a uniformly random time in
``[0, min(max_delay, min_delay * factor ** n))``. Full jitter spreads the clients
that a hub restart disconnects at once, so they do not come back in waves
(see "Exponential Backoff And Jitter", AWS Architecture Blog, 2015).

Create one generator per outage and call ``next()`` before each attempt; make a
new one after a successful connection to start again from ``min_delay``. When the
hub refused the last attempt with retry advice, wait :func:`after_advice` instead.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator


def backoff(
    min_delay: float = 0.05,
    max_delay: float = 20.0,
    factor: float = 2.0,
    *,
    rng: Callable[[], float] = random.random,
) -> Iterator[float]:
    """Return an endless iterator of delays, in seconds, before each reconnect attempt.

    ``rng`` returns a float in ``[0, 1)``; pass a fixed one to make delays
    deterministic in tests. Raises :class:`ValueError` on bad bounds.
    """
    if not min_delay > 0:
        raise ValueError(f"min_delay must be > 0, got {min_delay!r}")
    if not max_delay >= min_delay:
        raise ValueError(f"max_delay must be >= min_delay, got {max_delay!r} < {min_delay!r}")
    if not factor >= 1:
        raise ValueError(f"factor must be >= 1, got {factor!r}")
    return _full_jitter(min_delay, max_delay, factor, rng)


def _full_jitter(min_delay: float, max_delay: float, factor: float, rng: Callable[[], float]) -> Iterator[float]:
    ceiling = min_delay
    while True:
        yield rng() * ceiling
        ceiling = min(max_delay, ceiling * factor)


#: A refused client waits its advice times 1 to 1 + this (uniformly): clients told the same
#: advice at the same moment come back spread over that much more time.
ADVICE_JITTER = 0.5


def after_advice(delay: float, retry_after: float | None, *, rng: Callable[[], float] = random.random) -> float:
    """The wait before the next attempt: the backoff ``delay``, but at least the hub's advice.

    ``retry_after`` (seconds) comes with a refusal (close code 4008 or 4009 with the
    Disconnect push's ``retry_after``, or an HTTP 503's ``Retry-After``); the wait is
    then ``retry_after`` plus a random part of up to ``ADVICE_JITTER`` times it.
    """
    if retry_after is None or retry_after <= 0:
        return delay
    return max(delay, retry_after * (1 + ADVICE_JITTER * rng()))
