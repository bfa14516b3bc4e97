"""A run as its scenario sees it: the flags, the worker pool, the merged stats, the live line."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import sys
import time
from collections.abc import Callable

from .procinfo import cpu_seconds, own_cpu_seconds, rss_kib
from .stats import Stats
from .workers import Pool
from .wsclient import LoadtestError, parse_url

#: Seconds between two live progress lines.
PROGRESS_INTERVAL = 1.0


class Run:
    """What a scenario's :meth:`~realtime.loadtest.scenario.Scenario.drive` works with.

    ``args`` are the flags, ``targets`` the parsed URLs, ``pool`` the worker
    processes (:class:`~realtime.loadtest.workers.Pool`), ``stats`` the
    controller's own counts (its publisher's ``sent``, say), ``deadline`` the
    ``time.monotonic()`` by which everything must end (``--timeout``).
    :meth:`snapshot` merges every process's stats; :meth:`note` prints a line
    on stderr unless ``--quiet``; ``status``, if set, adds text to the live line.
    """

    def __init__(self, args: argparse.Namespace, pool: Pool) -> None:
        self.args = args
        self.pool = pool
        self.targets = [parse_url(url) for url in args.url]
        self.stats = Stats()
        self.started = time.monotonic()
        self.deadline: float = self.started + float(args.timeout)
        self.status: Callable[[], str] | None = None
        self.worker_stats: list[Stats] = []  # from the last snapshot
        self._tty = sys.stderr.isatty()

    def remaining(self) -> float:
        """Seconds left before ``deadline`` (0 when passed)."""
        return max(0.0, self.deadline - time.monotonic())

    def hub_readings(self) -> dict[int, tuple[float, int]]:
        """``--hub-pid`` processes: pid -> (CPU seconds so far, RSS in KiB); a pid gone is left out."""
        readings: dict[int, tuple[float, int]] = {}
        for pid in self.args.hub_pid:
            with contextlib.suppress(OSError, ValueError, IndexError):
                user, system = cpu_seconds(pid)
                readings[pid] = (user + system, rss_kib(pid))
        return readings

    def note(self, text: str) -> None:
        if not self.args.quiet:
            self.clear_line()
            print(text, file=sys.stderr, flush=True)

    async def snapshot(self) -> Stats:
        """Every process's stats so far, merged (the controller's included)."""
        with contextlib.suppress(LoadtestError, TimeoutError):
            self.worker_stats = await self.pool.snap()
        total = Stats.merged(self.worker_stats)
        self.stats.cpu_s = own_cpu_seconds()
        total.merge(self.stats)
        return total

    async def progress(self) -> None:
        """Print the live line every second until cancelled."""
        while True:
            await asyncio.sleep(PROGRESS_INTERVAL)
            stats = await self.snapshot()
            elapsed = time.monotonic() - self.started
            errors = sum(stats.errors.values())
            line = (
                f"{elapsed:6.1f}s  connected {stats.connected:,}  sent {stats.sent:,}  received {stats.delivered:,}"
                f"  p99 {stats.latency.percentile_ms(99.0):.1f} ms  errors {errors:,}"
            )
            if self.status is not None:
                line += "  " + self.status()
            if self._tty:
                print("\r\x1b[K" + line, end="", file=sys.stderr, flush=True)
            else:
                print(line, file=sys.stderr, flush=True)

    def clear_line(self) -> None:
        if self._tty and not self.args.quiet:
            print("\r\x1b[K", end="", file=sys.stderr, flush=True)
