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
busiest second of each side: near 100 % of a core is the side that set the pace.

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
import ctypes
import dataclasses
import datetime
import functools
import importlib.metadata
import json
import os
import platform
import resource
import shlex
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
#: HS256 secret of the JWT runs, given to the hubs (token_secret) and to the generator (--jwt-secret).
JWT_SECRET = "bench-secret-bench-secret-bench-secret"
#: The channel of the fan-out runs: in the default namespace, which the config opens with history.
CHANNEL = "bench"
PAYLOAD = 64
#: Seconds between two CPU readings of the hub core's processes and of the generator.
SAMPLE_INTERVAL = 0.25
#: The span over which the busiest stretch of a run is measured, in seconds.
BUSY_WINDOW = 1.0
#: Seconds a hub has to answer /readyz after it was started.
HUB_START_TIMEOUT = 30.0
#: Seconds a process has to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
#: Seconds the generator gets beyond its own --timeout before it is killed.
GENERATOR_GRACE = 20.0
#: File descriptors a hub needs beyond its connections (listening sockets, Redis, logs...).
FD_MARGIN = 256
#: What a hub's config asks for, when its tree knows the setting (baseline trees lack some).
HUB_SETTINGS: dict[str, object] = {
    "command_rate": 0,  # the publisher is one client sending as fast as the hub absorbs
    "receive_rate": 0,
    "max_connections": 0,
    "max_connections_per_address": 0,  # every client comes from loopback
    "max_connects_per_second": 0,
    "max_pending_per_address": 0,
    "max_connections_per_user": 0,
    "drain_window": 0,  # nothing is left connected when a run's hubs are stopped
    "history_size": 100,
    "history_ttl": 300,
}
#: Options of the namespaces the generator uses: open to anyone, clients publish, with history.
NAMESPACE_OPTIONS: dict[str, object] = {
    "subscribe": "anyone",
    "publish": "clients",
    "history_size": 100,
    "history_ttl": 300,
}
#: Namespaces declared besides the default one (channels "bench:..."), for a generator that names its channels so.
EXTRA_NAMESPACES = ("bench",)
#: Printed on the ASCII-only terminal of some CI logs too.
ARROW = "\u2192"


class BenchError(Exception):
    """A run cannot go on (a hub or Redis not starting, the generator failing)."""


#: How to stop what is running now: each run stops its own, and the script's exit stops what a
#: second Ctrl-C may have left (Redis has no PR_SET_PDEATHSIG to die with the script).
RUNNING: set[Callable[[], None]] = set()


# --- sizes and the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How big each run is; :data:`FULL` for the table, :data:`QUICK` to check the harness."""

    room: int  # subscribers of the 1->N fan-out, the two-node and the latency runs
    big_rooms: tuple[int, int]  # the two big rooms, 4 in flight acknowledged by the slowest
    idle: int  # idle connections for connects/s and RSS
    big_idle: int  # --big: idle connections held by one hub
    storm: int  # clients of the storm
    duration: float  # seconds of publishing per fan-out run
    hold: float  # seconds the idle runs hold their connections
    latency_rate: float  # publishes/s of the latency run
    source_addresses: int  # --big: client addresses 127.0.0.1..127.0.0.N
    max_minutes: float  # default bound of the whole benchmark


FULL = Sizes(
    room=1000,
    big_rooms=(5000, 10_000),
    idle=10_000,
    big_idle=100_000,
    storm=10_000,
    duration=10.0,
    hold=5.0,
    latency_rate=50.0,
    source_addresses=16,
    max_minutes=120.0,
)
QUICK = Sizes(
    room=20,
    big_rooms=(30, 40),
    idle=40,
    big_idle=100,
    storm=20,
    duration=1.0,
    hold=1.0,
    latency_rate=50.0,
    source_addresses=2,
    max_minutes=10.0,
)


class Topology:
    """The hubs of a run: one node on the memory engine, or two nodes sharing a Redis."""

    SINGLE = "one node (memory engine)"
    PAIR = "two nodes + one redis-server"
    CLUSTER = "two nodes + a 3-master Redis Cluster"


@dataclass(frozen=True)
class Run:
    """One invocation of the generator against a fresh topology; several figures may come from it."""

    key: str
    topology: str
    scenario: str
    flags: tuple[str, ...]
    #: Seconds the generator may take (its --timeout).
    budget: float
    #: Clients: the hub needs this many file descriptors (and the generator, over its processes).
    clients: int
    jwt: bool = False
    #: idle runs: read the hub's RSS once this many connections (and channels) are up.
    rss_at: int = 0
    #: storm: pass node B's pid to the generator (--kill-pid).
    kill_node_b: bool = False
    source_addresses: int = 1


def plan(sizes: Sizes, big: bool) -> list[Run]:
    """Every run of the table, in the order they run."""
    dur = ("--duration", f"{sizes.duration:g}")
    common = ("--channel", CHANNEL, "--payload", str(PAYLOAD))

    def fanout(n: int, window: int, ack: str, rate: float = 0) -> tuple[str, ...]:
        flags = ("--subscribers", str(n), *common, "--window", str(window), "--ack", ack, "--rate", f"{rate:g}")
        return (*flags, *dur)

    def budget(clients: int, seconds: float) -> float:
        return 30.0 + seconds + clients / 500  # connecting at 500/s at worst, then the run, then margin

    room, (five, ten) = sizes.room, sizes.big_rooms
    runs = [
        Run("fanout-1k", Topology.SINGLE, "fanout", fanout(room, 20, "reply"), budget(room, sizes.duration), room),
        Run("fanout-5k", Topology.SINGLE, "fanout", fanout(five, 4, "delivery"), budget(five, sizes.duration), five),
        Run("fanout-10k", Topology.SINGLE, "fanout", fanout(ten, 4, "delivery"), budget(ten, sizes.duration), ten),
        Run("pair-1k", Topology.PAIR, "fanout", fanout(room, 20, "reply"), budget(room, sizes.duration), room),
        Run("cluster-1k", Topology.CLUSTER, "fanout", fanout(room, 20, "reply"), budget(room, sizes.duration), room),
        Run(
            "idle-10k",
            Topology.SINGLE,
            "idle",
            ("--connections", str(sizes.idle), "--hold", f"{sizes.hold:g}"),
            budget(sizes.idle, sizes.hold),
            sizes.idle,
            jwt=True,
            rss_at=sizes.idle,
        ),
        Run(
            "latency-1k",
            Topology.SINGLE,
            "fanout",
            fanout(room, 20, "reply", sizes.latency_rate),
            budget(room, sizes.duration),
            room,
        ),
        Run(
            "storm-10k",
            Topology.PAIR,
            "storm",
            ("--clients", str(sizes.storm), *common),
            budget(sizes.storm, 60.0),
            sizes.storm,
            kill_node_b=True,
        ),
    ]
    if big:
        runs.append(
            Run(
                "idle-100k",
                Topology.SINGLE,
                "idle",
                ("--connections", str(sizes.big_idle), "--hold", f"{sizes.hold:g}"),
                budget(sizes.big_idle, sizes.hold),
                sizes.big_idle,
                rss_at=sizes.big_idle,
                source_addresses=sizes.source_addresses,
            )
        )
    return runs


# --- targets and rows of the table -----------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """What issue 11 asks of a figure: ``kind`` is ratio_min/ratio_max (new/base), min/max (new), or report."""

    kind: str
    value: float = 0.0
    text: str = "reported"
    #: The hub core, not the generator, must be the saturated side (busiest second >= SATURATED).
    saturated: bool = False


#: A side whose busiest second used at least this share of a core set the pace.
SATURATED = 0.9


@dataclass(frozen=True)
class Row:
    """One figure of the table: how to read it from a tree's samples, and its target."""

    key: str
    title: str
    unit: str
    runs: tuple[str, ...]  # the runs it reads (their losses count against it)
    values: Callable[[dict[str, list[Sample]]], list[float | None]]
    target: Target
    #: The figure is better when higher (deliveries/s) or lower (latency, memory).
    higher_is_better: bool = True


def result_value(run: str, *path: str) -> Callable[[dict[str, list[Sample]]], list[float | None]]:
    """Per-repeat values of a field of the generator's JSON (``latency_ms``, ``p99`` ...)."""

    def values(samples: dict[str, list[Sample]]) -> list[float | None]:
        out: list[float | None] = []
        for sample in samples.get(run, []):
            value: Any = sample.result
            for part in path:
                value = value.get(part) if isinstance(value, dict) else None
            out.append(float(value) if isinstance(value, int | float) and sample.ok else None)
        return out

    return values


def sample_value(run: str, name: str) -> Callable[[dict[str, list[Sample]]], list[float | None]]:
    """Per-repeat values of something this script measured (``rss_kib_per_connection`` ...)."""

    def values(samples: dict[str, list[Sample]]) -> list[float | None]:
        return [getattr(s, name) if s.ok else None for s in samples.get(run, [])]

    return values


def ratio_of(
    a: Callable[[dict[str, list[Sample]]], list[float | None]],
    b: Callable[[dict[str, list[Sample]]], list[float | None]],
) -> Callable[[dict[str, list[Sample]]], list[float | None]]:
    """Per-repeat a/b of one tree (two nodes / one node of the same repeat)."""

    def values(samples: dict[str, list[Sample]]) -> list[float | None]:
        return [x / y if x is not None and y else None for x, y in zip(a(samples), b(samples))]

    return values


def rows(sizes: Sizes, big: bool) -> list[Row]:
    room, (five, ten) = f"{sizes.room:,}", sizes.big_rooms
    fan1 = result_value("fanout-1k", "deliveries_per_s")
    pair = result_value("pair-1k", "deliveries_per_s")
    cluster = result_value("cluster-1k", "deliveries_per_s")
    out = [
        Row(
            "fanout-1k",
            f"fan-out 1{ARROW}{room}, 20 in flight",
            "deliveries/s",
            ("fanout-1k",),
            fan1,
            Target("ratio_min", 1.0, "not below base (>= 1.0x)"),
        ),
        Row(
            "fanout-5k",
            f"fan-out 1{ARROW}{five:,}, 4 in flight acked by the slowest",
            "deliveries/s",
            ("fanout-5k",),
            result_value("fanout-5k", "deliveries_per_s"),
            Target("ratio_min", 1.6, ">= 1.6x base, hub saturated", saturated=True),
        ),
        Row(
            "fanout-10k",
            f"fan-out 1{ARROW}{ten:,}, 4 in flight acked by the slowest",
            "deliveries/s",
            ("fanout-10k",),
            result_value("fanout-10k", "deliveries_per_s"),
            Target("ratio_min", 1.6, ">= 1.6x base, hub saturated", saturated=True),
        ),
        Row(
            "pair-1k",
            f"two nodes + one Redis, 1{ARROW}{room} split, 20 in flight",
            "deliveries/s",
            ("pair-1k",),
            pair,
            Target("report"),
        ),
        Row(
            "pair-vs-single",
            "two nodes + one Redis / one node (same tree, same run)",
            "x",
            ("pair-1k", "fanout-1k"),
            ratio_of(pair, fan1),
            Target("min", 0.8, ">= 0.8x one node"),
        ),
        Row(
            "cluster-1k",
            f"two nodes + 3-master Cluster, 1{ARROW}{room} split, 20 in flight",
            "deliveries/s",
            ("cluster-1k",),
            cluster,
            Target("report"),
        ),
        Row(
            "cluster-vs-single",
            "two nodes + Cluster / one node (same tree, same run)",
            "x",
            ("cluster-1k", "fanout-1k"),
            ratio_of(cluster, fan1),
            Target("report"),
        ),
        Row(
            "connects",
            f"new connections/s, JWT verified on each, {sizes.idle:,} idle",
            "connects/s",
            ("idle-10k",),
            result_value("idle-10k", "connect", "per_s"),
            Target("ratio_min", 1.5, ">= 1.5x base"),
        ),
        Row(
            "connect-p99",
            f"p99 connect (open {ARROW} connect reply), {sizes.idle:,} connecting",
            "ms",
            ("idle-10k",),
            result_value("idle-10k", "connect", "latency_ms", "p99"),
            Target("report"),
            higher_is_better=False,
        ),
        Row(
            "rss",
            f"RSS per idle connection (one subscription each) at {sizes.idle:,}",
            "KiB",
            ("idle-10k",),
            sample_value("idle-10k", "rss_kib_per_connection"),
            Target("max", 12.0, "<= 12 KiB"),
            higher_is_better=False,
        ),
        Row(
            "latency-p99",
            f"p99 publish {ARROW} deliver, {room} subscribers at {sizes.latency_rate:g} msg/s",
            "ms",
            ("latency-1k",),
            result_value("latency-1k", "latency_ms", "p99"),
            Target("ratio_max", 1.0, "not worse than base (<= 1.0x)"),
            higher_is_better=False,
        ),
        Row(
            "storm-recovery",
            f"storm: {sizes.storm:,} clients on two nodes, node B SIGKILLed: time to full recovery",
            "s",
            ("storm-10k",),
            result_value("storm-10k", "extra", "recovery_s"),
            Target("report", text="every client back, nothing lost"),
            higher_is_better=False,
        ),
        Row(
            "storm-lost",
            "storm: publications lost",
            "",
            ("storm-10k",),
            result_value("storm-10k", "lost"),
            Target("max", 0.0, "0"),
            higher_is_better=False,
        ),
    ]
    if big:
        out.append(
            Row(
                "idle-100k",
                f"idle connections held by one hub (of {sizes.big_idle:,})",
                "connections",
                ("idle-100k",),
                result_value("idle-100k", "connected"),
                Target("min", float(sizes.big_idle), f"all {sizes.big_idle:,}"),
            )
        )
        out.append(
            Row(
                "rss-100k",
                f"RSS per idle connection at {sizes.big_idle:,}",
                "KiB",
                ("idle-100k",),
                sample_value("idle-100k", "rss_kib_per_connection"),
                Target("max", 12.0, "<= 12 KiB"),
                higher_is_better=False,
            )
        )
    return out


# --- /proc, pinning and child processes ---------------------------------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def _stat_fields(pid: int) -> list[str]:
    stat = Path(f"/proc/{pid}/stat").read_text()
    return stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces


TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, *, reaped_children: bool = False) -> float:
    """utime + stime of ``pid`` (and of its children it has waited for) in seconds."""
    f = _stat_fields(pid)
    ticks = int(f[11]) + int(f[12]) + ((int(f[13]) + int(f[14])) if reaped_children else 0)
    return ticks / TICK


def children(pid: int) -> list[int]:
    """Live children of ``pid`` (needs CONFIG_PROC_CHILDREN, present in every mainstream kernel)."""
    out: list[int] = []
    with contextlib.suppress(OSError):
        for task in Path(f"/proc/{pid}/task").iterdir():
            with contextlib.suppress(OSError):
                out.extend(int(c) for c in (task / "children").read_text().split())
    return out


def tree_cpu_seconds(pid: int) -> float:
    """CPU of ``pid`` and all its descendants, live or reaped."""
    total = cpu_seconds(pid, reaped_children=True)
    for child in children(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            total += tree_cpu_seconds(child)
    return total


class CpuMeter:
    """CPU seconds of a set of processes over time; a process gone keeps its last reading."""

    def __init__(self, pids: Sequence[int], *, tree: bool = False) -> None:
        self.pids = list(pids)
        self.tree = tree
        self.last: dict[int, float] = {}
        self.samples: list[tuple[float, float]] = []

    def sample(self) -> None:
        for pid in self.pids:
            with contextlib.suppress(OSError, IndexError, ValueError):
                self.last[pid] = tree_cpu_seconds(pid) if self.tree else cpu_seconds(pid)
        self.samples.append((time.monotonic(), sum(self.last.values())))

    @property
    def cpu_s(self) -> float:
        return self.samples[-1][1] - self.samples[0][1] if len(self.samples) > 1 else 0.0

    def busiest(self, window: float = BUSY_WINDOW) -> float:
        """The largest share of a core used over any ``window`` seconds (the whole run if shorter)."""
        s = self.samples
        if len(s) < 2:
            return 0.0
        if s[-1][0] - s[0][0] <= window:
            return (s[-1][1] - s[0][1]) / (s[-1][0] - s[0][0])
        best, j = 0.0, 0
        for i in range(len(s)):
            while j < len(s) and s[j][0] - s[i][0] < window:
                j += 1
            if j == len(s):
                break
            best = max(best, (s[j][1] - s[i][1]) / (s[j][0] - s[i][0]))
        return best


@dataclass(frozen=True)
class Cores:
    """Which cores the hub side (hubs and Redis) and the generator run on; empty sets: not pinned."""

    hub: frozenset[int]
    generator: frozenset[int]

    @staticmethod
    def split() -> Cores:
        cores = sorted(os.sched_getaffinity(0))
        if len(cores) < 2:
            return Cores(frozenset(), frozenset())
        return Cores(frozenset(cores[:1]), frozenset(cores[1:]))

    def describe(self) -> str:
        if not self.hub:
            return "one core available: hubs and generator share it (not pinned)"
        gen = ",".join(map(str, sorted(self.generator)))
        return f"hubs and Redis pinned to core {min(self.hub)}, the load generator to core(s) {gen}"


@contextlib.contextmanager
def on_cores(cores: frozenset[int]) -> Iterator[None]:
    """Within the block, processes started by this (single-threaded) script inherit ``cores``."""
    if not cores:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cores)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def raise_nofile() -> None:
    """Raise the soft limit on open files to the hard limit (raising that needs CAP_SYS_RESOURCE)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else 1 << 20
    if soft != resource.RLIM_INFINITY and soft < target:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))


def nofile_hard() -> int:
    hard = resource.getrlimit(resource.RLIMIT_NOFILE)[1]
    return 1 << 30 if hard == resource.RLIM_INFINITY else int(hard)


def _child_setup() -> None:
    """In a child: every file descriptor it may have, and die with this script (PR_SET_PDEATHSIG)."""
    raise_nofile()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(proc: subprocess.Popen[bytes], *, group: bool = False) -> None:
    """SIGTERM (its process group when ``group``), then SIGKILL after :data:`STOP_TIMEOUT`."""
    if proc.poll() is not None:
        return
    for sig, wait in ((signal.SIGTERM, STOP_TIMEOUT), (signal.SIGKILL, 5.0)):
        with contextlib.suppress(ProcessLookupError, PermissionError):
            if group:
                os.killpg(proc.pid, sig)
            else:
                proc.send_signal(sig)
        try:
            proc.wait(wait)
            return
        except subprocess.TimeoutExpired:
            continue


def http_json(url: str, timeout: float = 2.0) -> Any:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return json.loads(response.read())


# --- source trees and their hubs ----------------------------------------------------------------


@dataclass(frozen=True)
class Tree:
    """A source tree of the hub: ``label`` is "new" or "base"; what its config loader knows."""

    label: str
    path: Path
    commit: str
    subject: str
    dirty: bool
    settings: frozenset[str]
    namespace_options: frozenset[str]

    def describe(self) -> str:
        extra = " + uncommitted changes" if self.dirty else ""
        return f"{self.commit[:10]}{extra} ({self.subject})"


PROBE = (
    "import dataclasses, json, realtime, realtime.config as c, realtime.namespaces as n;"
    "print(json.dumps({'file': realtime.__file__,"
    " 'settings': [f.name for f in dataclasses.fields(c.Settings)], 'namespace': list(n.OPTIONS)}))"
)


def git(*args: str, cwd: Path = REPO) -> str:
    done = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout.strip()


def tree_env(path: Path) -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(path)
    env.pop("REALTIME_CONFIG", None)  # the hub's settings come from our file only
    for name in list(env):
        if name.startswith("REALTIME_"):
            del env[name]
    return env


def load_tree(label: str, path: Path) -> Tree:
    """Ask the tree (with its own PYTHONPATH) which settings and namespace options its loader takes."""
    done = subprocess.run(
        [sys.executable, "-c", PROBE], cwd=path, env=tree_env(path), capture_output=True, text=True, timeout=60
    )
    if done.returncode != 0:
        raise BenchError(f"cannot import realtime from {path}: {done.stderr.strip()[-500:]}")
    probe = json.loads(done.stdout)
    if not Path(probe["file"]).resolve().is_relative_to(path.resolve()):
        raise BenchError(f"{path}: realtime was imported from {probe['file']}, not from the tree")
    commit = subject = ""
    dirty = False
    with contextlib.suppress(subprocess.SubprocessError, OSError):
        commit = git("rev-parse", "HEAD", cwd=path)
        subject = git("log", "-1", "--format=%s", cwd=path)
        dirty = bool(git("status", "--porcelain", "--untracked-files=no", cwd=path))
    return Tree(label, path, commit, subject, dirty, frozenset(probe["settings"]), frozenset(probe["namespace"]))


def toml_value(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return repr(value)
    return json.dumps(str(value))  # a TOML basic string: JSON's escapes are TOML's


def hub_config(tree: Tree, *, jwt: bool, redis: str | None, cluster: bool) -> str:
    """The TOML file of one hub: only the keys ``tree`` knows (an older loader refuses others)."""
    wanted: dict[str, object] = {"allow_anonymous": not jwt, **HUB_SETTINGS}
    if jwt:
        wanted["token_secret"] = JWT_SECRET
    if redis:
        wanted["redis"] = redis
        wanted["redis_cluster"] = cluster
    lines = [f"{k} = {toml_value(v)}" for k, v in wanted.items() if k in tree.settings]
    options = [f"{k} = {toml_value(v)}" for k, v in NAMESPACE_OPTIONS.items() if k in tree.namespace_options]
    for name in ("default", *EXTRA_NAMESPACES):
        lines += ["", f"[namespaces.{name}]", *options]
    return "\n".join(lines) + "\n"


@dataclass
class HubProcess:
    proc: subprocess.Popen[bytes]
    port: int
    log: Path

    @property
    def pid(self) -> int:
        return self.proc.pid

    @property
    def url(self) -> str:
        return f"ws://{HOST}:{self.port}/ws"

    def health(self) -> dict[str, Any]:
        result: dict[str, Any] = http_json(f"http://{HOST}:{self.port}/healthz")
        return result

    def log_tail(self, lines: int = 20) -> str:
        with contextlib.suppress(OSError):
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        return ""


class Stack:
    """The processes of one run (Redis, then hubs) on the hub core; :meth:`stop` ends them all."""

    def __init__(self, tree: Tree, topology: str, *, jwt: bool, cores: Cores, workdir: Path) -> None:
        self.tree, self.topology, self.jwt, self.cores = tree, topology, jwt, cores
        self.dir = Path(tempfile.mkdtemp(prefix="stack-", dir=workdir))
        self.hubs: list[HubProcess] = []
        self.redis: Any = None  # tests.redis_server.RedisServer or tests.redis_cluster.LocalCluster
        RUNNING.add(self.stop)

    @property
    def redis_pids(self) -> list[int]:
        if self.redis is None:
            return []
        servers = getattr(self.redis, "servers", [self.redis])
        return [s.proc.pid for s in servers if s.proc is not None]

    def start(self) -> None:
        with on_cores(self.cores.hub):
            url, cluster = None, self.topology == Topology.CLUSTER
            if self.topology != Topology.SINGLE:
                if str(REPO) not in sys.path:
                    sys.path.insert(0, str(REPO))  # the test suite's Redis helpers: free ports, temp dirs, never 6379
                from tests.redis_cluster import LocalCluster
                from tests.redis_server import RedisServer

                self.redis = LocalCluster() if cluster else RedisServer()
                self.redis.start()
                url = str(self.redis.url)
            for _ in range(1 if self.topology == Topology.SINGLE else 2):
                self.hubs.append(self._start_hub(url, cluster))
        for hub in self.hubs:
            self._wait_ready(hub)

    def _start_hub(self, redis: str | None, cluster: bool) -> HubProcess:
        n = len(self.hubs)
        config = self.dir / f"hub{n}.toml"
        config.write_text(hub_config(self.tree, jwt=self.jwt, redis=redis, cluster=cluster))
        port = free_port()
        log = self.dir / f"hub{n}.log"
        argv = [sys.executable, "-m", "realtime", "serve", "--config", str(config), "--port", str(port)]
        argv += ["--log-level", "warning"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                argv,
                cwd=self.tree.path,  # python -m puts the working directory first on sys.path
                env=tree_env(self.tree.path),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup,
                start_new_session=True,  # Ctrl-C reaches this script, which stops the hubs in order
            )
        return HubProcess(proc, port, log)

    def _wait_ready(self, hub: HubProcess) -> None:
        deadline = time.monotonic() + HUB_START_TIMEOUT
        while time.monotonic() < deadline:
            if hub.proc.poll() is not None:
                raise BenchError(f"hub exited with {hub.proc.returncode}:\n{hub.log_tail()}")
            with contextlib.suppress(OSError, ValueError):
                if http_json(f"http://{HOST}:{hub.port}/readyz", timeout=1.0).get("status") == "ready":
                    return
            time.sleep(0.05)
        raise BenchError(f"hub on port {hub.port} not ready after {HUB_START_TIMEOUT:g}s:\n{hub.log_tail()}")

    def stop(self) -> None:
        for hub in self.hubs:
            stop_process(hub.proc, group=True)
        if self.redis is not None:
            with contextlib.suppress(Exception):
                self.redis.cleanup()
            self.redis = None
        shutil.rmtree(self.dir, ignore_errors=True)
        RUNNING.discard(self.stop)


# --- one run ----------------------------------------------------------------------------------


@dataclass
class Sample:
    """One run of one tree: the generator's JSON and what this script measured beside it."""

    run: str
    tree: str
    repeat: int
    ok: bool = False
    error: str = ""
    result: dict[str, Any] = field(default_factory=dict)
    wall_s: float = 0.0
    hub_cpu_s: float = 0.0  # hubs and Redis: the hub core
    hub_busiest: float = 0.0  # share of a core in the hub core's busiest second
    redis_cpu_s: float = 0.0
    generator_cpu_s: float = 0.0
    generator_busiest: float = 0.0
    rss_before_kib: int | None = None
    rss_held_kib: int | None = None
    rss_kib_per_connection: float | None = None
    hub_log_lines: int = 0

    @property
    def integrity(self) -> tuple[int, int, int]:
        r = self.result
        return int(r.get("lost", 0) or 0), int(r.get("duplicated", 0) or 0), int(r.get("out_of_order", 0) or 0)


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
    generator: subprocess.Popen[bytes] | None = None
    try:
        stack.start()
        out = stack.dir / "result.json"
        kill_pid = stack.hubs[1].pid if run.kill_node_b else None
        argv = generator_argv(run, [h.url for h in stack.hubs], out, opts.procs, kill_pid)
        probe = RssProbe(stack.hubs[0], run.rss_at) if run.rss_at else None
        hub_cpu = CpuMeter([h.pid for h in stack.hubs] + stack.redis_pids)
        redis_cpu = CpuMeter(stack.redis_pids)
        log = stack.dir / "generator.log"
        started = time.monotonic()
        with log.open("wb") as sink, on_cores(opts.cores.generator):
            generator = subprocess.Popen(
                argv,
                cwd=REPO,  # the generator always comes from this checkout
                env=tree_env(REPO),
                stdin=subprocess.DEVNULL,
                stdout=sink,
                stderr=subprocess.STDOUT,
                preexec_fn=_child_setup,
                start_new_session=True,
            )
        stop_generator = functools.partial(stop_process, generator, group=True)
        RUNNING.add(stop_generator)
        gen_cpu = CpuMeter([generator.pid], tree=True)
        deadline = min(started + run.budget + GENERATOR_GRACE, stop_by)
        while True:
            for meter in (hub_cpu, redis_cpu, gen_cpu):
                meter.sample()
            if probe is not None:
                probe.tick()
            if generator.poll() is not None:
                break
            if time.monotonic() > deadline:
                stop_process(generator, group=True)
                raise BenchError(f"the generator did not finish within {deadline - started:.0f}s")
            time.sleep(SAMPLE_INTERVAL)
        sample.wall_s = time.monotonic() - started
        for meter in (hub_cpu, redis_cpu):
            meter.sample()
        text = log.read_text(errors="replace")
        if generator.returncode != 0 or not out.exists():
            raise BenchError(f"the generator exited with {generator.returncode}:\n{_tail(text, 15)}")
        sample.result = json.loads(out.read_text())
        sample.hub_cpu_s, sample.hub_busiest = hub_cpu.cpu_s, hub_cpu.busiest()
        sample.redis_cpu_s = redis_cpu.cpu_s
        gen = sample.result.get("generator") or {}
        sample.generator_cpu_s = float(gen.get("cpu_s") or gen_cpu.cpu_s)
        sample.generator_busiest = gen_cpu.busiest()
        if probe is not None:
            sample.rss_before_kib, sample.rss_held_kib = probe.before, probe.held
            if probe.held is not None and run.rss_at:
                sample.rss_kib_per_connection = (probe.held - probe.before) / run.rss_at
        sample.hub_log_lines = sum(len(h.log_tail(10**6).splitlines()) for h in stack.hubs)
        sample.ok = True
    except BenchError as exc:
        sample.error = str(exc)
        logs = "\n".join(h.log_tail(10) for h in stack.hubs)
        if logs.strip():
            sample.error += "\nhub log:\n" + logs
    finally:
        if generator is not None:
            stop_process(generator, group=True)
            RUNNING.discard(stop_generator)
        stack.stop()
    return sample


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
    parts.append(f"hub core {s.hub_busiest:.0%} busiest, generator {s.generator_busiest:.0%}")
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


def skip_reason(run: Run, procs: int) -> str:
    """Why this machine cannot run ``run`` (file descriptors), or ""."""
    hard = nofile_hard()
    if run.clients + FD_MARGIN > hard:
        return (
            f"the open-files hard limit is {hard:,} and a hub needs {run.clients + FD_MARGIN:,} (raise it: ulimit -Hn)"
        )
    if run.clients // max(procs, 1) + FD_MARGIN > hard:
        return f"the open-files hard limit is {hard:,}: use more generator processes (--procs)"
    return ""


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
    losses = [s.integrity for s in new_samples if s.ok and any(s.integrity)]
    if losses and fig.row.key != "storm-lost":
        lost, dup, ooo = (sum(x[i] for x in losses) for i in range(3))
        return False, f"not clean: lost {lost}, duplicated {dup}, out of order {ooo}"
    if target.saturated:
        busiest = statistics.median(s.hub_busiest for s in new_samples if s.ok)
        gen = statistics.median(s.generator_busiest for s in new_samples if s.ok)
        if busiest < SATURATED:
            return False, f"hub core {busiest:.0%} busy at most (generator {gen:.0%}): not the saturated side"
    value = fig.ratio if target.kind.startswith("ratio") else fig.new_median
    if value is None:
        return None, "no baseline in this run"
    if target.kind.endswith("min"):
        return value >= target.value, ""
    return value <= target.value, ""


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


def table(figures: list[Figure]) -> str:
    lines = ["| figure | unit | new | base | new/base | target | met? |", "|---|---|---:|---:|---:|---|---|"]
    for f in figures:
        met = {True: "yes", False: "**no**", None: "-"}[f.met]
        if f.why:
            met += f" ({f.why})"
        ratio = f"{f.ratio:.2f}x" if f.ratio is not None else "-"
        row = [f.row.title, f.row.unit, cell(f.new, f.row.unit), cell(f.base, f.row.unit), ratio, f.row.target.text]
        lines.append("| " + " | ".join([*row, met]) + " |")
    return "\n".join(lines)


def cpu_table(samples: list[Sample]) -> str:
    lines = [
        "| run | tree | # | hub core busiest 1 s | generator busiest 1 s | hub+Redis CPU s | generator CPU s"
        " | connected | lost | dup | out of order | errors / close codes |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in samples:
        if not s.ok:
            lines.append(f"| {s.run} | {s.tree} | {s.repeat + 1} | failed: {s.error.splitlines()[0]} |")
            continue
        lost, dup, ooo = s.integrity
        errors = {**(s.result.get("errors") or {}), **(s.result.get("close_codes") or {})}
        err = ", ".join(f"{k}: {v}" for k, v in sorted(errors.items()) if v) or "-"
        lines.append(
            f"| {s.run} | {s.tree} | {s.repeat + 1} | {s.hub_busiest:.0%} | {s.generator_busiest:.0%}"
            f" | {s.hub_cpu_s:.1f} | {s.generator_cpu_s:.1f} | {s.result.get('connected', 0):,}"
            f" | {lost} | {dup} | {ooo} | {err} |"
        )
    return "\n".join(lines)


# --- the machine and the documents ------------------------------------------------------------


def machine(cores: Cores) -> dict[str, str]:
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
        "pinning": cores.describe(),
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
        f"saturated side (its busiest second at {SATURATED:.0%} of a core or more).",
        "",
        "## Which side was busy, and integrity, run by run",
        "",
        "The hub core's processes (hubs and Redis) and the generator's process tree, sampled every",
        f"{SAMPLE_INTERVAL:g} s from /proc (utime + stime); the busiest {BUSY_WINDOW:g} s of each run, as a share of",
        "one core. A side near 100 % set the pace.",
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
    started = time.monotonic()
    stop_by = started + 60 * (args.max_minutes or sizes.max_minutes)
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
        skipped = {r.key: why for r in runs if (why := skip_reason(r, procs))}
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
            "machine": machine(cores),
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


if __name__ == "__main__":
    sys.exit(main())
