"""What scripts/bench.py runs and what it asks of each figure: sizes, runs, rows of the table, targets.

Pure data and small functions: no processes. :func:`plan` gives the runs (one generator invocation
each, on a fresh topology), :func:`rows` the figures read from their :class:`Sample` s, each with its
target from issue 11.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

#: The channel of the fan-out runs: in the default namespace, which the hubs' config opens with history.
CHANNEL = "bench"
PAYLOAD = 64
ARROW = "\u2192"
#: Seconds the storm runs before its drop (the generator's default --drop-after).
STORM_DROP_AFTER = 2.0


# --- sizes and the plan ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Sizes:
    """How big each run is; :data:`FULL` for the table, :data:`QUICK` to check the harness."""

    room: int  # subscribers of the 1->N fan-out, the two-node and the latency runs
    big_rooms: tuple[int, int]  # the two big rooms, 4 in flight acknowledged by the slowest
    idle: int  # idle connections for connects/s and RSS
    big_idle: int  # --big: idle connections held by one hub
    storm: int  # clients of the storm
    recovery_timeout: float  # seconds the storm's clients have to come back
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
    recovery_timeout=60.0,
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
    recovery_timeout=15.0,
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
    recovery = f"{sizes.recovery_timeout:g}"
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
            ("--clients", str(sizes.storm), "--payload", str(PAYLOAD), *dur, "--recovery-timeout", recovery),
            budget(sizes.storm, STORM_DROP_AFTER + sizes.recovery_timeout + sizes.duration),
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
    #: The hub core, not the generator, must be the saturated side (busy >= SATURATED while measured).
    saturated: bool = False
    #: Errors and close codes met by the clients count against the figure (not in a storm, which closes them).
    clean: bool = True


#: A side that used at least this share of a core while the figure was measured set the pace.
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
            Target("storm", text="every client back and recovered, nothing lost"),
            higher_is_better=False,
        ),
        Row(
            "storm-lost",
            "storm: publications lost",
            "",
            ("storm-10k",),
            result_value("storm-10k", "lost"),
            Target("max", 0.0, "0", clean=False),
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


# --- what a run gave ---------------------------------------------------------------------------


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
    phase_s: float = 0.0  # seconds of the measured phase (publishing; connecting for idle)
    hub_busy: float = 0.0  # share of a core the hub core's processes used in the measured phase
    redis_cpu_s: float = 0.0
    generator_cpu_s: float = 0.0
    generator_busy: float = 0.0  # the same for the generator's processes
    rss_before_kib: int | None = None
    rss_held_kib: int | None = None
    rss_kib_per_connection: float | None = None
    hub_log_lines: int = 0

    @property
    def integrity(self) -> tuple[int, int, int]:
        r = self.result
        return int(r.get("lost", 0) or 0), int(r.get("duplicated", 0) or 0), int(r.get("out_of_order", 0) or 0)
