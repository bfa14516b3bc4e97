"""What a load test counts: HDR latency histograms, delivery accounting, errors and close codes.

Every worker process keeps one :class:`Stats`; the controller asks each for
:meth:`Stats.to_wire` (plain values and encoded histograms, cheap to pickle)
and folds them together with :meth:`Stats.merge`. :meth:`Stats.summary` is the
contract's JSON shape (see :mod:`realtime.loadtest`).

Delivery accounting has two grains:

* :class:`OffsetTracker`, for a client that decodes its publications: each
  channel's offsets must follow one another, so a skipped offset is *lost*, an
  offset seen before is *duplicated*, and a skipped offset arriving later is
  *out of order* (and no longer lost). A new epoch restarts the stream.
* :func:`count_shortfall`, for counting clients (they see how many
  publications came, not which): fewer than expected are lost, more are
  duplicated.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from hdrh.histogram import HdrHistogram  # type: ignore[import-untyped]  # no stubs

#: Histograms hold microseconds from 1 µs to 10 minutes, at 3 significant digits.
LOWEST_US = 1
HIGHEST_US = 600_000_000
DIGITS = 3
PERCENTILES = {"p50": 50.0, "p90": 90.0, "p99": 99.0, "p99_9": 99.9}


class Latency:
    """An HDR histogram of durations, recorded in nanoseconds, kept in microseconds, reported in ms."""

    __slots__ = ("hist",)

    def __init__(self) -> None:
        self.hist = HdrHistogram(LOWEST_US, HIGHEST_US, DIGITS)

    def record_ns(self, ns: int) -> None:
        us = ns // 1000
        self.hist.record_value(LOWEST_US if us < LOWEST_US else HIGHEST_US if us > HIGHEST_US else us)

    @property
    def count(self) -> int:
        return int(self.hist.get_total_count())

    def percentile_ms(self, percentile: float) -> float:
        return round(self.hist.get_value_at_percentile(percentile) / 1000, 3) if self.count else 0.0

    def summary(self) -> dict[str, float]:
        """``{"count", "p50", "p90", "p99", "p99_9", "max"}``, in milliseconds (all 0 when empty)."""
        out: dict[str, float] = {"count": self.count}
        for name, percentile in PERCENTILES.items():
            out[name] = self.percentile_ms(percentile)
        out["max"] = round(self.hist.get_max_value() / 1000, 3) if self.count else 0.0
        return out

    def encode(self) -> bytes:
        return bytes(self.hist.encode())

    def add_encoded(self, encoded: bytes) -> None:
        if encoded:
            self.hist.decode_and_add(encoded)

    def add(self, other: Latency) -> None:
        self.hist.add(other.hist)


@dataclass
class Stats:
    """Counters of one process (or, merged, of the whole run)."""

    connected: int = 0  # open and ready now (a gauge: merged by summing)
    connects: int = 0  # successful connects so far, reconnects included
    sent: int = 0  # publications sent (acknowledged by the hub)
    delivered: int = 0  # publications received by clients
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    errors: Counter[str] = field(default_factory=Counter)
    close_codes: Counter[int] = field(default_factory=Counter)
    #: Scenario counters, summed across processes (e.g. "recovered", "not_recovered").
    counters: Counter[str] = field(default_factory=Counter)
    #: Scenario maxima across processes (e.g. "recovery_s").
    maxima: dict[str, float] = field(default_factory=dict)
    latency: Latency = field(default_factory=Latency)  # publish -> deliver
    connect_latency: Latency = field(default_factory=Latency)  # dial -> connect reply
    cpu_s: float = 0.0  # this process's CPU (user + sys), set when reported

    def error(self, kind: str, n: int = 1) -> None:
        self.errors[kind] += n

    def closed(self, code: int) -> None:
        self.close_codes[code] += 1

    def maximum(self, name: str, value: float) -> None:
        if value > self.maxima.get(name, float("-inf")):
            self.maxima[name] = value

    _SUMS = ("connected", "connects", "sent", "delivered", "lost", "duplicated", "out_of_order", "cpu_s")

    def to_wire(self) -> dict[str, Any]:
        """Plain values for a pipe; :meth:`from_wire` reads them back."""
        wire: dict[str, Any] = {name: getattr(self, name) for name in self._SUMS}
        wire.update(
            errors=dict(self.errors),
            close_codes=dict(self.close_codes),
            counters=dict(self.counters),
            maxima=dict(self.maxima),
            latency=self.latency.encode() if self.latency.count else b"",
            connect_latency=self.connect_latency.encode() if self.connect_latency.count else b"",
        )
        return wire

    @classmethod
    def from_wire(cls, wire: dict[str, Any]) -> Stats:
        stats = cls(**{name: wire[name] for name in cls._SUMS})
        stats.errors.update(wire["errors"])
        stats.close_codes.update(wire["close_codes"])
        stats.counters.update(wire["counters"])
        stats.maxima.update(wire["maxima"])
        stats.latency.add_encoded(wire["latency"])
        stats.connect_latency.add_encoded(wire["connect_latency"])
        return stats

    def merge(self, other: Stats) -> None:
        """Add ``other`` into this one (counters summed, maxima kept, histograms added)."""
        for name in self._SUMS:
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.errors.update(other.errors)
        self.close_codes.update(other.close_codes)
        self.counters.update(other.counters)
        for name, value in other.maxima.items():
            self.maximum(name, value)
        self.latency.add(other.latency)
        self.connect_latency.add(other.connect_latency)

    @classmethod
    def merged(cls, parts: list[Stats]) -> Stats:
        total = cls()
        for part in parts:
            total.merge(part)
        return total


def count_shortfall(stats: Stats, received: int, expected: int) -> None:
    """Account a counting client that received ``received`` publications of ``expected``."""
    if received < expected:
        stats.lost += expected - received
    elif received > expected:
        stats.duplicated += received - expected


class OffsetTracker:
    """The offsets of one channel as one client sees them; counts go to ``stats``.

    Start it at the subscribe reply's position (:meth:`reset`), feed it every
    publication's offset and epoch (:meth:`observe`), and at the end call
    :meth:`finish` with the last offset published, to count the publications
    that never came at all.
    """

    __slots__ = ("epoch", "missing", "offset", "stats")

    #: Most skipped offsets remembered per channel, to tell out-of-order from duplicated.
    MAX_MISSING = 100_000

    def __init__(self, stats: Stats, offset: int = 0, epoch: str = "") -> None:
        self.stats = stats
        self.offset = offset
        self.epoch = epoch
        self.missing: set[int] = set()

    def reset(self, offset: int, epoch: str) -> None:
        """Where the stream stands (a subscribe reply): what was missing before is forgotten."""
        self.offset, self.epoch = offset, epoch
        self.missing.clear()

    def observe(self, offset: int, epoch: str) -> bool:
        """One publication; returns whether it is new (neither duplicated nor of an old position)."""
        if epoch != self.epoch:
            if self.epoch and self.offset:  # a restarted stream: what was missing is gone for good
                self.stats.counters["epoch_changes"] += 1
                self.missing.clear()
                self.offset = 0
            self.epoch = epoch
        last = self.offset
        if offset == last + 1:
            self.offset = offset
            return True
        if offset > last:
            self.stats.lost += offset - last - 1
            if len(self.missing) + offset - last - 1 <= self.MAX_MISSING:
                self.missing.update(range(last + 1, offset))
            self.offset = offset
            return True
        if offset in self.missing:
            self.missing.discard(offset)
            self.stats.lost -= 1
            self.stats.out_of_order += 1
            return True
        self.stats.duplicated += 1
        return False

    def finish(self, last_offset: int) -> None:
        """Count publications up to ``last_offset`` (of this epoch) that never arrived."""
        if last_offset > self.offset:
            self.stats.lost += last_offset - self.offset
            self.offset = last_offset
