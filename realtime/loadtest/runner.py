"""The ``realtime loadtest`` command: its parser, then one run from start to the summary and ``--json``."""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

import uvloop

from .flags import common_arguments
from .procinfo import own_cpu_seconds, raise_nofile
from .registry import SCENARIOS, load
from .report import hints, json_report, summary_table
from .run import Run
from .scenario import Outcome, Scenario
from .stats import Stats
from .workers import Pool
from .wsclient import LoadtestError, Target, parse_url


def scenario_class(name: str) -> type[Scenario]:
    found: type[Scenario] = load(name)
    return found


def add_parser(commands: Any) -> argparse.ArgumentParser:
    """Add ``loadtest`` and its scenario subcommands to the ``realtime`` subparsers."""
    loadtest: argparse.ArgumentParser = commands.add_parser(
        "loadtest",
        help="simulate many mobile clients against a running hub or cluster (see docs/loadtest.md)",
        description="Simulate many mobile clients against hubs you run, then print what they saw."
        " The hub needs command_rate = 0, receive_rate = 0 and no per-address limits: see docs/loadtest.md.",
    )
    scenarios = loadtest.add_subparsers(dest="scenario", metavar="SCENARIO")
    common = common_arguments()
    for name in SCENARIOS:
        cls = scenario_class(name)
        sub = scenarios.add_parser(name, parents=[common], help=cls.help, description=cls.help)
        cls.add_arguments(sub)
        sub.set_defaults(_usage=sub.error)
    loadtest.set_defaults(_help=loadtest.print_help)
    return loadtest


def usage_error(args: argparse.Namespace) -> str | None:
    """What is wrong with the flags beyond what argparse checks, or None."""
    targets: list[Target] = []
    for url in args.url:
        try:
            targets.append(parse_url(url))
        except ValueError as exc:
            return str(exc)
    if args.source_addresses > 1 and not all(t.loopback for t in targets):
        return "--source-addresses needs loopback URLs (127.x.x.x or localhost)"
    if args.source_addresses > 254:
        return "--source-addresses is at most 254"
    for pid in args.hub_pid:
        if not _process_exists(pid):
            return f"--hub-pid {pid}: no such process on this machine"
    if args.json:
        problem = _unwritable(args.json)
        if problem is not None:
            return f"--json {args.json}: {problem}"  # said now, not after the run, whose figures would be lost
    return scenario_class(args.scenario).check(args)


def _process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's: there, but its /proc may still be readable
        return True
    return True


def _unwritable(path: str) -> str | None:
    """Why the results could not be written to ``path``, or None."""
    target = Path(path)
    if target.is_dir():
        return "is a directory"
    folder = target.parent
    if not folder.is_dir():
        return f"no directory {str(folder)!r}"
    if not os.access(target if target.exists() else folder, os.W_OK):
        return "not writable"
    return None


def main(args: argparse.Namespace) -> int:
    """Run the scenario ``args.scenario``; the exit status (0 done, 1 could not run, 2 usage)."""
    if getattr(args, "scenario", None) is None:
        args._help(sys.stderr)
        return 2
    problem = usage_error(args)
    if problem is not None:
        try:
            args._usage(problem)  # prints the usage and the problem, then exits 2
        except SystemExit:
            return 2
    raise_nofile()
    # SIGTERM takes the Ctrl-C path: the runner cancels the run and the workers are stopped.
    previous = signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    try:
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            return runner.run(execute(args))
    except KeyboardInterrupt:
        print("realtime loadtest: interrupted", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, previous)


async def execute(args: argparse.Namespace) -> int:
    """Start the workers, drive the scenario, stop the workers, report; the exit status."""
    scenario = scenario_class(args.scenario)()
    run = Run(args, Pool(args.scenario, args, scenario.clients(args)))
    code = 0
    outcome: Outcome | None = None
    failure: str | None = None
    progress: asyncio.Task[None] | None = None
    cpu0 = 0.0
    hubs0: dict[int, tuple[float, int]] = {}
    try:
        async with asyncio.timeout(run.remaining()):
            first = await run.pool.snap(timeout=60.0)  # the workers are up
            cpu0 = sum(s.cpu_s for s in first) + own_cpu_seconds()
            run.started = time.monotonic()
            hubs0 = run.hub_readings()
            if not args.quiet:
                progress = asyncio.create_task(run.progress())
            outcome = await scenario.drive(run)
            await run.snapshot()  # the connected gauge before the workers close their clients
            hubs = _hub_figures(hubs0, run.hub_readings(), time.monotonic() - run.started)
            if hubs:
                outcome.extra["hubs"] = hubs
    except TimeoutError:
        failure = f"the run passed --timeout {args.timeout:g}s"
        run.stats.error("run timeout")
        code = 1
    except LoadtestError as exc:
        failure = str(exc)
        code = 1
    finally:
        if progress is not None:
            progress.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await progress
        run.clear_line()
        final = await run.pool.stop()
    elapsed = time.monotonic() - run.started
    if outcome is None:
        outcome = Outcome(elapsed_s=elapsed)
    total = Stats.merged(final)
    total.connected = sum(s.connected for s in run.worker_stats)
    run.stats.cpu_s = own_cpu_seconds()
    total.merge(run.stats)
    total.cpu_s = max(0.0, total.cpu_s - cpu0)
    report = json_report(args, outcome, total, procs=len(run.pool), wall_s=elapsed)
    print(summary_table(report), flush=True)
    for hint in hints(total, signed=bool(args.jwt_secret)):
        print(f"note: {hint}", file=sys.stderr)
    if failure is not None:
        print(f"realtime loadtest: {failure}", file=sys.stderr)
    if args.json:
        with open(args.json, "w") as out:
            json.dump(report, out, indent=1)
            out.write("\n")
    return code


def _hub_figures(
    before: dict[int, tuple[float, int]], after: dict[int, tuple[float, int]], seconds: float
) -> dict[str, dict[str, float]]:
    """Per --hub-pid: its CPU over the run, as seconds and cores busy, and its RSS at the end."""
    figures: dict[str, dict[str, float]] = {}
    for pid, (cpu, rss) in after.items():
        if pid in before:
            used = cpu - before[pid][0]
            figures[str(pid)] = {
                "cpu_s": round(used, 3),
                "cores_busy": round(used / seconds, 2) if seconds > 0 else 0.0,
                "rss_kib": rss,
            }
    return figures
