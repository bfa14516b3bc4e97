"""The processes of scripts/bench.py: source trees, hub configs, hubs and Redis, cores, CPU and RSS from /proc.

A :class:`Stack` starts one run's topology (Redis first, then the hubs, all on the hub core) from a
:class:`Tree` and stops it; :class:`CpuMeter` samples processes' CPU time; :func:`on_cores` pins what is
started inside it.
"""

from __future__ import annotations

import contextlib
import ctypes
import itertools
import json
import os
import random
import resource
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
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bench_plan import Topology

REPO = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
#: HS256 secret of the JWT runs, given to the hubs (token_secret) and to the generator (--jwt-secret).
JWT_SECRET = "bench-secret-bench-secret-bench-secret"
#: Seconds between two CPU readings of the hub core's processes and of the generator.
SAMPLE_INTERVAL = 0.25
#: Seconds in each slice of a run's measured phase whose CPU share is taken.
BUSY_WINDOW = 1.0
#: A phase at least this long is summed up by the median of its slices, a shorter one by its mean.
MEDIAN_SPAN = 3.0
#: Seconds a hub has to answer /readyz after it was started.
HUB_START_TIMEOUT = 30.0
#: Ports tried for a hub whose port was taken between choosing it and binding it.
PORT_ATTEMPTS = 3
#: Seconds a process has to exit after SIGTERM before it is killed.
STOP_TIMEOUT = 10.0
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


class BenchError(Exception):
    """A run cannot go on (a hub or Redis not starting, the generator failing)."""


#: How to stop what is running now: each run stops its own, and the script's exit stops what a
#: second Ctrl-C may have left (Redis has no PR_SET_PDEATHSIG to die with the script).
RUNNING: set[Callable[[], None]] = set()


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

    def at(self, t: float) -> float:
        """Cumulative CPU seconds at time ``t``, interpolated between the readings around it."""
        s = self.samples
        if not s:
            return 0.0
        if t <= s[0][0]:
            return s[0][1]
        for (t0, c0), (t1, c1) in itertools.pairwise(s):
            if t <= t1:
                return c0 + (c1 - c0) * (t - t0) / (t1 - t0) if t1 > t0 else c1
        return s[-1][1]

    def busy(self, start: float, end: float) -> float:
        """Share of a core used from ``start`` to ``end``: the median of its seconds when it spans
        at least :data:`MEDIAN_SPAN` of them (a second of start-up or teardown at either end does
        not move it), else the mean over the span."""
        if end - start < BUSY_WINDOW / 4:
            return 0.0
        if end - start < MEDIAN_SPAN:
            return (self.at(end) - self.at(start)) / (end - start)
        edges = [start + i * BUSY_WINDOW for i in range(int((end - start) / BUSY_WINDOW) + 1)]
        return statistics.median((self.at(b) - self.at(a)) / (b - a) for a, b in itertools.pairwise(edges))


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


def child_setup() -> None:
    """In a child: every file descriptor it may have, and die with this script (PR_SET_PDEATHSIG)."""
    raise_nofile()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGKILL)


def free_port() -> int:
    """A free port below the ephemeral range when there is room: the kernel hands ephemeral ports to
    outgoing connections (the generator's, other load on the machine), which could take it before the
    hub binds it."""
    low = 32768
    with contextlib.suppress(OSError, ValueError):
        low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    for _ in range(100 if low > 11000 else 0):
        port = random.randrange(10000, low)
        with socket.socket() as sock:
            try:
                sock.bind((HOST, port))
            except OSError:
                continue
            return port
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port = int(sock.getsockname()[1])
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
    """The environment of a process running ``path``'s code: its PYTHONPATH, and no REALTIME_* variable
    (a hub's settings come from its config file alone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("REALTIME_")}
    env["PYTHONPATH"] = str(path)
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
            for n in range(1 if self.topology == Topology.SINGLE else 2):
                self.hubs.append(self._start_hub(n, url, cluster))
        for n in range(len(self.hubs)):
            for attempt in range(PORT_ATTEMPTS):
                try:
                    self._wait_ready(self.hubs[n])
                    break
                except BenchError:
                    if "already in use" not in self.hubs[n].log_tail() or attempt == PORT_ATTEMPTS - 1:
                        raise
                with on_cores(self.cores.hub):  # its port was taken meanwhile: another one
                    self.hubs[n] = self._start_hub(n, url, cluster)

    def _start_hub(self, n: int, redis: str | None, cluster: bool) -> HubProcess:
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
                preexec_fn=child_setup,
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
