"""A circuit breaker per backend endpoint, so that a dead backend cannot stall every connection.

Three states, one transition function (:meth:`CircuitBreaker.record`):

* ``closed``: calls go through; ``failures`` consecutive failures (timeouts, refused connections,
  5xx answers) open it;
* ``open``: calls fail at once, without a request, for ``cooldown`` seconds;
* ``half-open``: after the cool-down, one trial call goes through (the others still fail fast);
  its success closes the breaker, its failure opens it for another cool-down.

Pure: the caller passes the clock (``now``, seconds of a monotonic clock).
"""

from __future__ import annotations

from typing import Literal

State = Literal["closed", "open", "half-open"]


class CircuitBreaker:
    """Call :meth:`allow` before a request; if it returns True, :meth:`record` its outcome."""

    __slots__ = ("_count", "_opened", "_trial", "cooldown", "failures", "state")

    def __init__(self, failures: int = 5, cooldown: float = 10.0) -> None:
        if failures < 1 or cooldown < 0:
            raise ValueError("failures must be >= 1 and cooldown >= 0")
        self.failures = failures
        self.cooldown = cooldown
        self.state: State = "closed"
        self._count = 0  # consecutive failures while closed
        self._opened = 0.0
        self._trial = False  # the half-open trial call is under way

    def allow(self, now: float) -> bool:
        """Whether a request may go out now (in half-open state: only the one trial)."""
        if self.state == "closed":
            return True
        if self.state == "open":
            if now - self._opened < self.cooldown:
                return False
            self.state = "half-open"
            self._trial = False
        if self._trial:
            return False
        self._trial = True
        return True

    def retry_after(self, now: float) -> float:
        """Seconds until the breaker lets a trial call through (0 when it lets calls through now)."""
        if self.state != "open":
            return 0.0
        return max(0.0, self.cooldown - (now - self._opened))

    def abandon(self) -> None:
        """A request :meth:`allow` let through ended without an outcome (its caller gave up):
        in half-open state another trial may go."""
        self._trial = False

    def record(self, ok: bool, now: float) -> None:
        """The outcome of a request :meth:`allow` let through."""
        if ok:
            self.state, self._count, self._trial = "closed", 0, False
            return
        if self.state == "half-open":
            self.state, self._opened, self._trial = "open", now, False
            return
        self._count += 1
        if self._count >= self.failures:
            self.state, self._opened, self._count = "open", now, 0
