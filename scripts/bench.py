"""Whole-hub benchmarks: starts the hubs (and Redis) itself, drives them with ``realtime loadtest``.

Run from the repository root::

    python scripts/bench.py --baseline 73d8fb0 --repeat 3 --write-docs --json bench.json   # the full table
    python scripts/bench.py --quick                       # tiny sizes: proves the harness, measures nothing
    python scripts/bench.py --only fanout-1k,pair-1k      # some runs only (names: --list)
    python scripts/bench.py --big ...                     # also 100,000 idle connections on one hub

Every run starts its topology afresh from a source tree (``--tree``, default this checkout): one node on the
memory engine, two nodes on a private redis-server, or two nodes on a private 3-master Redis Cluster (free
ports and temporary directories, never the Redis on 6379). A hub is ``python -m realtime serve --config FILE
--port P --log-level warning`` with ``PYTHONPATH`` and the working directory set to its tree. Its config
allows anonymous clients (or, for the JWT runs, sets ``token_secret``), turns off the per-connection budgets
(``command_rate = 0``, ``receive_rate = 0``: the publisher is one WebSocket client sending as fast as the hub
absorbs) and the per-address and connect-rate limits (the generator connects from loopback), and keeps
history on the benchmark's channels. Only the settings the tree knows are written: an older tree's loader
refuses unknown keys, so the script asks each tree for its ``Settings`` fields and namespace options first.

With ``--baseline REV`` the script checks REV out into a temporary worktree (``git worktree add --detach``,
removed at the end) and runs both trees in the same run, interleaved: base, new, base, new... for each run,
``--repeat`` times. On a shared machine only such same-run ratios mean anything. The load generator always
comes from this checkout; only the hub differs.

Where the machine has two cores or more, the hubs and Redis are pinned to the first and the generator to
the others (``os.sched_setaffinity``). For each run the script samples the CPU time (utime + stime, from
``/proc``) of the hub core's processes and of the generator's process tree every 0.25 s and prints the
share of a core each side used while the figure was measured (the publishing phase; the connect phase of
``idle``): near 100 % is the side that set the pace.

Figures (sizes of the full table; ``--quick`` shrinks them): fan-out 1->1,000 with 20 publishes in flight;
1->5,000 and 1->10,000 with 4 in flight acknowledged by the slowest subscriber (``--ack delivery``); two
nodes on one Redis, 1->1,000 split 500/500 with the publisher a client of node A, and its ratio to the
single node of the same tree in the same run (and the same on a Redis Cluster); connections/s with a JWT
verified on each and the p99 connect time at 10,000, and the RSS per idle connection (one subscription each):
the hub's VmRSS while ``idle`` holds them minus before, divided by their number; p99 publish->deliver at
1,000 subscribers and 50 messages/s; a storm of 10,000 clients on two nodes when node B is SIGKILLed (time to
full recovery, anything lost); with ``--big``, 100,000 idle connections held by one hub (the file
descriptor limit is raised for hub and generator, source addresses spread over 127.0.0.0/8).

Output: a line per run as it ends, then the table (figure, new, base, new/base, target, met?). Each figure is
the median over the repeats, with the range; the ratio is the median of the per-repeat ratios, each repeat's
base and new having run back to back. ``--write-docs`` writes it all to docs/benchmarks.md with the machine,
the versions, the commits and the command; ``--json FILE`` writes every run's raw result. The script stops
everything it started on exit, on Ctrl-C and on SIGTERM, and is bounded in time (``--max-minutes``).
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_plan import FULL, QUICK, Run, Sample, plan, rows
from bench_procs import (
    JWT_SECRET,
    REPO,
    RUNNING,
    SAMPLE_INTERVAL,
    BenchError,
    Cores,
    CpuMeter,
    HubProcess,
    Stack,
    Tree,
    child_setup,
    git,
    load_tree,
    nofile_hard,
    on_cores,
    raise_nofile,
    rss_kib,
    stop_process,
    tree_env,
)
from bench_report import figure, machine, markdown, table

#: Seconds the generator gets beyond its own --timeout before it is killed.
GENERATOR_GRACE = 20.0
#: File descriptors a hub needs beyond its connections (listening sockets, Redis, logs...).
FD_MARGIN = 256


# --- one run ----------------------------------------------------------------------------------


class RssProbe:
    """Reads a hub's VmRSS before a run and again once ``count`` connections and channels are up."""

    SETTLE = 0.5  # seconds the count must hold before the reading

    def __init__(self, hub: HubProcess, count: int) -> None:
        self.hub, self.count = hub, count
        self.before = rss_kib(hub.pid)
        self.held: int | None = None
        self._reached: float | None = None

    def tick(self) -> None:
        if self.held is not None:
            return
        try:
            health = self.hub.health()
        except (OSError, ValueError):
            return
        if health.get("connections", 0) < self.count or health.get("channels", 0) < self.count:
            self._reached = None
            return
        now = time.monotonic()
        if self._reached is None:
            self._reached = now
        elif now - self._reached >= self.SETTLE:
            self.held = rss_kib(self.hub.pid)


def generator_argv(run: Run, urls: list[str], out: Path, procs: int, kill_pid: int | None) -> list[str]:
    argv = [sys.executable, "-m", "realtime", "loadtest", run.scenario]
    for url in urls:
        argv += ["--url", url]
    argv += ["--procs", str(procs), "--json", str(out), "--quiet", "--timeout", f"{run.budget:g}"]
    if run.source_addresses > 1:
        argv += ["--source-addresses", str(run.source_addresses)]
    if run.jwt:
        argv += ["--jwt-secret", JWT_SECRET]
    if kill_pid is not None:
        argv += ["--kill-pid", str(kill_pid)]
    return [*argv, *run.flags]


def run_once(run: Run, tree: Tree, repeat: int, opts: Options, stop_by: float) -> Sample:
    """Start ``run``'s topology from ``tree``, drive it with the generator, stop it all."""
    sample = Sample(run.key, tree.label, repeat)
    stack = Stack(tree, run.topology, jwt=run.jwt, cores=opts.cores, workdir=opts.workdir)
    try:
        stack.start()
        with Generator(run, stack, opts) as generator:
            generator.wait(min(generator.started + run.budget + GENERATOR_GRACE, stop_by))
        generator.fill(sample)
        sample.hub_log_lines = sum(len(h.log_tail(10**6).splitlines()) for h in stack.hubs)
        sample.ok = True
    except BenchError as exc:
        sample.error = str(exc)
        logs = "\n".join(h.log_tail(10) for h in stack.hubs)
        if logs.strip():
            sample.error += "\nhub log:\n" + logs
    finally:
        stack.stop()
    return sample


class Generator:
    """``realtime loadtest`` against a started stack, on the generator cores, with both sides' CPU
    sampled (and the hub's RSS read for the idle runs) while it runs."""

    def __init__(self, run: Run, stack: Stack, opts: Options) -> None:
        self.run, self.stack = run, stack
        self.out = stack.dir / "result.json"
        self.log = stack.dir / "generator.log"
        kill_pid = stack.hubs[1].pid if run.kill_node_b else None
        procs = generator_procs(run, opts.procs)
        self.argv = generator_argv(run, [h.url for h in stack.hubs], self.out, procs, kill_pid)
        self.cores = opts.cores.generator
        self.rss = RssProbe(stack.hubs[0], run.rss_at) if run.rss_at else None
        self.hub_cpu = CpuMeter([h.pid for h in stack.hubs] + stack.redis_pids)
        self.redis_cpu = CpuMeter(stack.redis_pids)
        self.gen_cpu: CpuMeter | None = None
        self.proc: subprocess.Popen[bytes] | None = None
        self.started = self.result_at = 0.0

    def __enter__(self) -> Generator:
        self.started = time.monotonic()
        with self.log.open("wb") as sink, on_cores(self.cores):
            self.proc = subprocess.Popen(
                self.argv,
                cwd=REPO,  # the generator always comes from this checkout
                env=tree_env(REPO),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                preexec_fn=child_setup,
                start_new_session=True,  # its worker processes are in its group
            )
        RUNNING.add(self.stop)
        self.gen_cpu = CpuMeter([self.proc.pid], tree=True)
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        if self.proc is not None:
            stop_process(self.proc, group=True)
        RUNNING.discard(self.stop)

    def wait(self, deadline: float) -> None:
        """Sample until the generator exits; note when its JSON appears (the measured phase just ended)."""
        assert self.proc is not None and self.gen_cpu is not None
        meters = (self.hub_cpu, self.redis_cpu, self.gen_cpu)
        while True:
            for meter in meters:
                meter.sample()
            if self.rss is not None:
                self.rss.tick()
            if not self.result_at and self.out.exists():
                self.result_at = time.monotonic()
            if self.proc.poll() is not None:
                break
            if time.monotonic() > deadline:
                self.stop()
                raise BenchError(f"the generator did not finish within {deadline - self.started:.0f}s")
            time.sleep(SAMPLE_INTERVAL)
        for meter in meters:
            meter.sample()
        if self.proc.returncode != 0 or not self.out.exists():
            output = _tail(self.log.read_text(errors="replace"), 15)
            raise BenchError(f"the generator exited with {self.proc.returncode}:\n{output}")

    def phase(self, result: dict[str, Any]) -> tuple[float, float]:
        """When the measured phase ran: the ``elapsed_s`` before the JSON appeared (its connect
        phase alone for ``idle``), give or take the workers' teardown and one sampling interval."""
        end = self.result_at or time.monotonic()
        start = end - float(result.get("elapsed_s") or 0.0)
        if self.run.scenario == "idle":
            end = start + float((result.get("extra") or {}).get("connect_s") or 0.0)
        return start, end

    def fill(self, sample: Sample) -> None:
        assert self.gen_cpu is not None
        sample.result = result = json.loads(self.out.read_text())
        sample.wall_s = time.monotonic() - self.started
        start, end = self.phase(result)
        sample.phase_s = end - start
        sample.hub_cpu_s, sample.redis_cpu_s = self.hub_cpu.cpu_s, self.redis_cpu.cpu_s
        sample.hub_busy = self.hub_cpu.busy(start, end)
        sample.generator_cpu_s = float((result.get("generator") or {}).get("cpu_s") or self.gen_cpu.cpu_s)
        sample.generator_busy = self.gen_cpu.busy(start, end)
        if self.rss is not None:
            sample.rss_before_kib, sample.rss_held_kib = self.rss.before, self.rss.held
            if self.rss.held is not None:
                sample.rss_kib_per_connection = (self.rss.held - self.rss.before) / self.run.rss_at


def _tail(text: str, lines: int) -> str:
    return "\n".join(text.splitlines()[-lines:])


# --- the whole benchmark ----------------------------------------------------------------------


@dataclass
class Options:
    cores: Cores
    procs: int
    workdir: Path


def describe_sample(s: Sample, index: int, total: int) -> str:
    head = f"[{index}/{total}] {s.run} {s.tree} #{s.repeat + 1}:"
    if not s.ok:
        return f"{head} FAILED: {s.error}"
    r = s.result
    parts = []
    if r.get("deliveries_per_s"):
        parts.append(f"{r['deliveries_per_s']:,.0f} deliveries/s")
    lat = r.get("latency_ms") or {}
    if lat.get("count"):
        parts.append(f"p99 {lat.get('p99', 0):.1f} ms")
    conn = r.get("connect") or {}
    if conn:
        parts.append(f"{conn.get('per_s', 0):,.0f} connects/s, p99 connect {conn['latency_ms'].get('p99', 0):.1f} ms")
    if s.rss_kib_per_connection is not None:
        parts.append(f"{s.rss_kib_per_connection:.1f} KiB/conn")
    extra = r.get("extra") or {}
    if "recovery_s" in extra:
        parts.append(f"recovered in {extra['recovery_s']:.1f} s")
    lost, dup, ooo = s.integrity
    parts.append(f"connected {r.get('connected', 0):,}, lost {lost}, dup {dup}, out of order {ooo}")
    parts.append(f"busy while measured: hub core {s.hub_busy:.0%}, generator {s.generator_busy:.0%}")
    return f"{head} " + "; ".join(parts)


def execute(runs: list[Run], trees: list[Tree], repeat: int, opts: Options, stop_by: float) -> list[Sample]:
    """Every run, ``repeat`` times, the trees interleaved (base, new, base, new ...)."""
    samples: list[Sample] = []
    total = len(runs) * repeat * len(trees)
    for run in runs:
        for k in range(repeat):
            for tree in trees:
                index = len(samples) + 1
                if time.monotonic() + run.budget > stop_by:
                    sample = Sample(run.key, tree.label, k, error="not run: the time bound (--max-minutes) is near")
                else:
                    sample = run_once(run, tree, k, opts, stop_by)
                samples.append(sample)
                print(describe_sample(sample, index, total), flush=True)
    return samples


def skip_reason(run: Run, scenarios: set[str]) -> str:
    """Why this machine or this generator cannot run ``run``, or ""."""
    if run.scenario not in scenarios:
        return f"this checkout's realtime loadtest has no {run.scenario!r} scenario"
    hard = nofile_hard()
    if run.clients + FD_MARGIN > hard:
        return (
            f"the open-files hard limit is {hard:,} and a hub needs {run.clients + FD_MARGIN:,} (raise it: ulimit -Hn)"
        )
    return ""


def generator_procs(run: Run, procs: int) -> int:
    """``procs``, or more when one process could not open its share of the clients' sockets."""
    room = max(nofile_hard() - FD_MARGIN, 1)
    return max(procs, -(-run.clients // room))


def generator_scenarios(names: set[str]) -> set[str]:
    """Which of ``names`` this checkout's generator offers (``realtime loadtest NAME --help`` succeeds)."""
    probes = {
        name: subprocess.Popen(
            [sys.executable, "-m", "realtime", "loadtest", name, "--help"],
            cwd=REPO,
            env=tree_env(REPO),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for name in sorted(names)
    }
    return {name for name, probe in probes.items() if probe.wait(60) == 0}


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--tree", type=Path, default=REPO, help="source tree of the hub under test (default: here)")
    parser.add_argument("--baseline", metavar="REV", help="also run the hub of this commit, interleaved")
    parser.add_argument("--repeat", type=int, default=3, help="runs of each tree per figure (default 3)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: checks the harness, measures nothing")
    parser.add_argument("--big", action="store_true", help="also 100,000 idle connections held by one hub")
    parser.add_argument("--only", metavar="RUNS", help="comma-separated run names (see --list)")
    parser.add_argument("--list", action="store_true", help="print the runs and exit")
    parser.add_argument("--procs", type=int, default=0, help="generator processes (default: one per generator core)")
    parser.add_argument("--max-minutes", type=float, help="bound of the whole benchmark (default 120; quick 10)")
    parser.add_argument(
        "--write-docs",
        nargs="?",
        const=str(REPO / "docs" / "benchmarks.md"),
        metavar="FILE",
        help="write the report (default docs/benchmarks.md)",
    )
    parser.add_argument("--json", metavar="FILE", help="write every run's result and the table as JSON")
    args = parser.parse_args(argv)
    if args.repeat < 1:
        parser.error("--repeat must be at least 1")
    return args


def _on_sigterm(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = QUICK if args.quick else FULL
    runs = plan(sizes, args.big)
    if args.only:
        wanted = {name.strip() for name in args.only.split(",") if name.strip()}
        unknown = wanted - {r.key for r in runs}
        if unknown:
            print(f"error: unknown run(s) {', '.join(sorted(unknown))}; --list names them", file=sys.stderr)
            return 2
        runs = [r for r in runs if r.key in wanted]
    if args.list:
        for r in runs:
            print(f"{r.key:12} {r.topology}: loadtest {r.scenario} {shlex.join(r.flags)}")
        return 0
    cores = Cores.split()
    procs = args.procs or max(1, len(cores.generator))
    started, load_at_start = time.monotonic(), os.getloadavg()[0]
    stop_by = started + 60 * (args.max_minutes or sizes.max_minutes)
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)
    signal.signal(signal.SIGTERM, _on_sigterm)
    signal.signal(signal.SIGINT, signal.default_int_handler)  # a background job starts with SIGINT ignored
    raise_nofile()
    workdir = Path(tempfile.mkdtemp(prefix="realtime-bench-"))
    worktree: Path | None = None
    try:
        trees = [load_tree("new", args.tree.resolve())]
        if args.baseline:
            commit = git("rev-parse", "--verify", f"{args.baseline}^{{commit}}")
            worktree = workdir / "baseline"
            git("worktree", "add", "--detach", str(worktree), commit)
            trees.insert(0, load_tree("base", worktree))
        print(f"{cores.describe()}; generator: {procs} process(es)", flush=True)
        for tree in trees:
            print(f"{tree.label}: {tree.path} at {tree.describe()}", flush=True)
        scenarios = generator_scenarios({r.scenario for r in runs})
        skipped = {r.key: why for r in runs if (why := skip_reason(r, scenarios))}
        for key, why in skipped.items():
            print(f"{key}: not run: {why}", flush=True)
        opts = Options(cores, procs, workdir)
        samples = execute([r for r in runs if r.key not in skipped], trees, args.repeat, opts, stop_by)
        samples += [
            Sample(key, t.label, k, error=f"not run: {why}")
            for key, why in skipped.items()
            for k in range(args.repeat)
            for t in trees
        ]
        has_base = len(trees) > 1
        wanted_runs = {r.key for r in runs}
        figures = [figure(row, samples, has_base) for row in rows(sizes, args.big) if set(row.runs) <= wanted_runs]
        command = shlex.join(["python", "scripts/bench.py", *(argv if argv is not None else sys.argv[1:])])
        report = {
            "command": command,
            "sizes_name": "quick (harness check, not a measurement)" if args.quick else "full",
            "sizes": dataclasses.asdict(sizes),
            "repeat": args.repeat,
            "machine": machine(cores, procs, load_at_start),
            "trees": [
                {"label": t.label, "path": str(t.path), "commit": t.commit, "dirty": t.dirty, "describe": t.describe()}
                for t in trees
            ],
            "runs": [
                {"key": r.key, "topology": r.topology, "scenario": r.scenario, "flags": shlex.join(r.flags)}
                for r in runs
            ],
            "elapsed_min": (time.monotonic() - started) / 60,
        }
        print("\n" + table(figures), flush=True)
        if args.write_docs:
            Path(args.write_docs).write_text(markdown(report, figures, samples))
            print(f"wrote {args.write_docs}", flush=True)
        if args.json:
            data = {
                **report,
                "rows": [f.as_dict() for f in figures],
                "samples": [dataclasses.asdict(s) for s in samples],
            }
            Path(args.json).write_text(json.dumps(data, indent=1) + "\n")
            print(f"wrote {args.json}", flush=True)
        return 0 if all(s.ok for s in samples if s.run not in skipped) else 1
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted: stopping what was started", file=sys.stderr)
        return 130
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # cleanup is not interrupted
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        for stop in list(RUNNING):
            stop()
        if worktree is not None:
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                git("worktree", "remove", "--force", str(worktree))
            with contextlib.suppress(subprocess.SubprocessError, OSError):
                git("worktree", "prune")
        shutil.rmtree(workdir, ignore_errors=True)
        signal.signal(signal.SIGTERM, handlers[0])
        signal.signal(signal.SIGINT, handlers[1])


if __name__ == "__main__":
    sys.exit(main())
