"""The report of scripts/bench.py: each figure's medians and ratio, whether its target is met, the tables,
the machine and versions, and docs/benchmarks.md.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import os
import platform
import statistics
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_plan import SATURATED, Row, Sample
from bench_procs import BUSY_WINDOW, MEDIAN_SPAN, SAMPLE_INTERVAL, Cores, nofile_hard

# --- the table --------------------------------------------------------------------------------


@dataclass
class Figure:
    """One row of the table, computed."""

    row: Row
    new: list[float]
    base: list[float]
    ratios: list[float]
    met: bool | None
    why: str

    @property
    def new_median(self) -> float | None:
        return statistics.median(self.new) if self.new else None

    @property
    def base_median(self) -> float | None:
        return statistics.median(self.base) if self.base else None

    @property
    def ratio(self) -> float | None:
        return statistics.median(self.ratios) if self.ratios else None

    def as_dict(self) -> dict[str, Any]:
        return {
            "key": self.row.key,
            "title": self.row.title,
            "unit": self.row.unit,
            "new": self.new_median,
            "new_values": self.new,
            "base": self.base_median,
            "base_values": self.base,
            "ratio": self.ratio,
            "target": self.row.target.text,
            "met": self.met,
            "why": self.why,
        }


def by_run(samples: list[Sample], tree: str) -> dict[str, list[Sample]]:
    out: dict[str, list[Sample]] = {}
    for s in samples:
        if s.tree == tree:
            out.setdefault(s.run, []).append(s)
    for group in out.values():
        group.sort(key=lambda s: s.repeat)
    return out


def figure(row: Row, samples: list[Sample], has_base: bool) -> Figure:
    new_by_run, base_by_run = by_run(samples, "new"), by_run(samples, "base")
    new_raw = row.values(new_by_run)
    base_raw = row.values(base_by_run) if has_base else []
    new = [v for v in new_raw if v is not None]
    base = [v for v in base_raw if v is not None]
    ratios = [a / b for a, b in zip(new_raw, base_raw) if a is not None and b]
    fig = Figure(row, new, base, ratios, None, "")
    fig.met, fig.why = judge(fig, [s for r in row.runs for s in new_by_run.get(r, [])])
    return fig


def judge(fig: Figure, new_samples: list[Sample]) -> tuple[bool | None, str]:
    """Whether the new tree met the row's target: (None, why) when it cannot be told."""
    target = fig.row.target
    if not fig.new:
        failed = [s.error.splitlines()[0] for s in new_samples if s.error]
        return None, failed[0] if failed else "no result"
    if target.kind == "report":
        return None, ""
    if target.kind == "storm":
        return storm_judgement(new_samples)
    losses = [s.integrity for s in new_samples if s.ok and any(s.integrity)]
    if losses:
        lost, dup, ooo = (sum(x[i] for x in losses) for i in range(3))
        return False, f"not clean: lost {lost}, duplicated {dup}, out of order {ooo}"
    troubles = [t for s in new_samples if s.ok and target.clean and (t := troubles_of(s))]
    if troubles:
        return False, f"not clean: {troubles[0]}"
    if target.saturated:
        hub = statistics.median(s.hub_busy for s in new_samples if s.ok)
        gen = statistics.median(s.generator_busy for s in new_samples if s.ok)
        if hub < SATURATED:
            return False, f"hub core {hub:.0%} busy, generator {gen:.0%}: the hub is not the saturated side"
    value = fig.ratio if target.kind.startswith("ratio") else fig.new_median
    if value is None:
        return None, "no baseline in this run"
    if target.kind.endswith("min"):
        return value >= target.value, ""
    return value <= target.value, ""


def troubles_of(sample: Sample) -> str:
    """The errors and close codes a run's clients met, as "kind: n, ...", or ""."""
    r = sample.result
    counts = {**(r.get("errors") or {}), **{f"close {k}": v for k, v in (r.get("close_codes") or {}).items()}}
    return ", ".join(f"{k}: {v}" for k, v in sorted(counts.items()) if v)


def storm_judgement(samples: list[Sample]) -> tuple[bool, str]:
    """Every storm run: every client back (``still_down`` 0), every resubscribe recovered, nothing lost."""
    problems: list[str] = []
    for s in samples:
        extra = s.result.get("extra") or {}
        lost, dup, ooo = s.integrity
        if not s.ok:
            problems.append("a run failed")
        elif extra.get("recovery_s") is None or extra.get("still_down"):
            problems.append(f"{extra.get('still_down')} clients still down")
        elif extra.get("not_recovered") or lost or dup or ooo:
            problems.append(f"{extra.get('not_recovered')} not recovered, lost {lost}, dup {dup}, out of order {ooo}")
    return not problems, "; ".join(problems)


def fmt(value: float | None, unit: str) -> str:
    if value is None:
        return "-"
    if unit in ("deliveries/s", "connects/s"):
        return f"{value / 1000:,.1f}k" if value >= 10_000 else f"{value:,.0f}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit in ("ms", "KiB", "s"):
        return f"{value:,.1f}"
    return f"{value:,.0f}"


def cell(values: list[float], unit: str) -> str:
    if not values:
        return "-"
    mid = fmt(statistics.median(values), unit)
    if len(values) == 1:
        return mid
    return f"{mid} ({fmt(min(values), unit)}-{fmt(max(values), unit)})"


def cell_text(text: str) -> str:
    """The first line of ``text``, safe in a markdown table cell."""
    return (text.splitlines() or [""])[0].replace("|", "/")


def table(figures: list[Figure]) -> str:
    lines = ["| figure | unit | new | base | new/base | target | met? |", "|---|---|---:|---:|---:|---|---|"]
    for f in figures:
        met = {True: "yes", False: "**no**", None: "-"}[f.met]
        if f.why:
            met += f" ({cell_text(f.why)})"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        row = [f.row.title, f.row.unit, cell(f.new, f.row.unit), cell(f.base, f.row.unit), ratio, f.row.target.text]
        lines.append("| " + " | ".join([*row, met]) + " |")
    return "\n".join(lines)


def cpu_table(samples: list[Sample]) -> str:
    lines = [
        "| run | tree | # | measured s | hub core busy | generator busy | hub core CPU s (Redis part) | generator CPU s"
        " | connected | lost | dup | out of order | errors / close codes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in samples:
        if not s.ok:
            lines.append(f"| {s.run} | {s.tree} | {s.repeat + 1} | failed: {cell_text(s.error)} |")
            continue
        lost, dup, ooo = s.integrity
        err = troubles_of(s) or "-"
        lines.append(
            f"| {s.run} | {s.tree} | {s.repeat + 1} | {s.phase_s:.1f} | {s.hub_busy:.0%} | {s.generator_busy:.0%}"
            f" | {s.hub_cpu_s:.1f}{f' ({s.redis_cpu_s:.1f})' if s.redis_cpu_s else ''} | {s.generator_cpu_s:.1f}"
            f" | {s.result.get('connected', 0):,}"
            f" | {lost} | {dup} | {ooo} | {err} |"
        )
    return "\n".join(lines)


# --- the machine and the documents ------------------------------------------------------------


def machine(cores: Cores, procs: int, load_at_start: float) -> dict[str, str]:
    model = "unknown"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    redis = "not found"
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        redis = subprocess.run(["redis-server", "--version"], capture_output=True, text=True, timeout=10).stdout.strip()

    def version(name: str) -> str:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            return "not installed"

    return {
        "cores": f"{os.cpu_count()} ({model}), {len(os.sched_getaffinity(0))} available to this run",
        "pinning": f"{cores.describe()}; {procs} generator process(es)",
        "load average (1 min)": f"{load_at_start:.2f} at the start, {os.getloadavg()[0]:.2f} at the end"
        " (other work on the machine moves absolute figures, not same-run ratios)",
        "kernel": f"{platform.system()} {platform.release()} {platform.machine()}",
        "python": platform.python_version(),
        "libraries": ", ".join(f"{n} {version(n)}" for n in ("aiohttp", "uvloop", "msgpack", "redis", "hiredis")),
        "redis-server": redis,
        "open files": f"hard limit {nofile_hard():,}",
        "date": datetime.datetime.now(datetime.UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }


def markdown(report: dict[str, Any], figures: list[Figure], samples: list[Sample]) -> str:
    m = report["machine"]
    trees = report["trees"]
    out = [
        "# Benchmarks",
        "",
        "Written by `scripts/bench.py`: run it again rather than editing this page. It starts the hubs (and a",
        "private Redis) itself, drives them with `realtime loadtest` (always from the newer checkout) over",
        "loopback, and runs the baseline and the new tree in the same run, interleaved, so that the ratios",
        "compare like with like on a machine whose absolute speed varies. Each figure is the median of the",
        "repeats (range in brackets); new/base is the median of the per-repeat ratios. 64-byte payloads.",
        "",
        "## Machine",
        "",
        *(f"- {k}: {v}" for k, v in m.items()),
        "",
        "## Trees",
        "",
        *(f"- {t['label']}: {t['describe']}" for t in trees),
        "",
        "## To reproduce",
        "",
        "```sh",
        report["command"],
        "```",
        "",
        f"Sizes: {report['sizes_name']}; {report['repeat']} repeat(s); {report['elapsed_min']:.1f} minutes in all.",
        "",
        "## Results",
        "",
        table(figures),
        "",
        "Targets are those of issue 11, against the baseline of the same run. A target is not met when the",
        "run lost, duplicated or reordered anything; the big rooms' target also needs the hub core to be the",
        f"saturated side (at {SATURATED:.0%} of a core or more while the figure was measured).",
        "",
        "## Which side was busy, and integrity, run by run",
        "",
        "CPU time (utime + stime from /proc, sampled every",
        f"{SAMPLE_INTERVAL:g} s) of the hub core's processes (hubs and Redis) and of the generator's process tree, as a",
        "share of one core while the figure was measured: the publishing phase of a fan-out (the connect phase",
        f"of an idle run), cut in {BUSY_WINDOW:g}-second slices, the median slice (the mean for a phase under",
        f"{MEDIAN_SPAN:g} s). A side near 100 % set the pace. CPU seconds are over the whole run, connects included.",
        "",
        cpu_table(samples),
        "",
        "## What each run is",
        "",
        *(
            f"- `{r['key']}` ({r['topology']}): `realtime loadtest {r['scenario']} {r['flags']}`"
            for r in report["runs"]
        ),
        "",
        "RSS per connection is the hub's VmRSS (from /proc) once every connection and its channel are up, minus",
        "its VmRSS before the first connection, divided by the number of connections. The idle run's clients",
        "each present a JWT (HS256) that the hub verifies, and subscribe to one channel of their own.",
        "",
    ]
    return "\n".join(out)
