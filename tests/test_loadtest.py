"""`realtime loadtest`: its accounting, its report's shape, tiny runs against a real hub, its usage errors.

No test here asserts a speed: the machine is shared and the sizes are tiny.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import shlex
import sys
from pathlib import Path
from typing import Any

import pytest

from realtime.cli import build_parser
from realtime.engines.redis import RedisEngine
from realtime.loadtest.clients import Client
from realtime.loadtest.runner import execute, usage_error
from realtime.loadtest.stats import Latency, OffsetTracker, Stats, count_shortfall
from realtime.loadtest.wsclient import Target, open_client, parse_url

from .helpers import TEST_SECRET, RunningHub, start_serve
from .redis_server import RedisServer

#: What a hub under load test needs (docs/loadtest.md): no command budget, no per-address limits.
LOADTEST_SETTINGS: dict[str, Any] = {
    "command_rate": 0.0,
    "receive_rate": 0,
    "max_connections_per_address": 0,
    "max_connects_per_second": 0.0,
    "history_size": 100,
    "history_ttl": 300.0,
}
LATENCY_KEYS = {"count", "p50", "p90", "p99", "p99_9", "max"}
CONTRACT_KEYS = {
    "scenario",
    "urls",
    "params",
    "elapsed_s",
    "connected",
    "sent",
    "delivered",
    "deliveries_per_s",
    "latency_ms",
    "connect",
    "lost",
    "duplicated",
    "out_of_order",
    "errors",
    "close_codes",
    "generator",
    "extra",
}


# --- accounting, fed directly ---------------------------------------------------------


def test_tracker_counts_lost_duplicated_and_out_of_order() -> None:
    stats = Stats()
    tracker = OffsetTracker(stats)
    tracker.reset(0, "")
    for offset in (1, 2, 5, 3, 3, 6, 6):  # 3 and 4 skipped; 3 comes late, then again; 6 twice
        tracker.observe(offset, "E")
    tracker.finish(8)  # 7 and 8 never came
    assert (stats.lost, stats.duplicated, stats.out_of_order) == (1 + 2, 2, 1)


def test_tracker_starts_at_the_subscribe_position_and_follows_a_new_epoch() -> None:
    stats = Stats()
    tracker = OffsetTracker(stats)
    tracker.reset(41, "A")
    tracker.observe(42, "A")
    tracker.observe(1, "B")  # the stream restarted: not a duplicate
    tracker.observe(2, "B")
    assert (stats.lost, stats.duplicated, stats.out_of_order) == (0, 0, 0)
    assert stats.counters["epoch_changes"] == 1


def test_counting_clients_are_checked_by_count() -> None:
    stats = Stats()
    count_shortfall(stats, 8, 10)
    count_shortfall(stats, 12, 10)
    count_shortfall(stats, 10, 10)
    assert (stats.lost, stats.duplicated) == (2, 2)


def test_stats_merge_across_processes_through_the_wire() -> None:
    a, b = Stats(), Stats()
    for ms in range(1, 101):
        a.latency.record_ns(ms * 1_000_000)
    b.latency.record_ns(500 * 1_000_000)
    a.error("connect closed 4008")
    b.error("connect closed 4008")
    b.closed(4002)
    a.delivered, b.delivered = 10, 5
    merged = Stats.merged([Stats.from_wire(a.to_wire()), Stats.from_wire(b.to_wire())])
    assert merged.delivered == 15
    assert merged.errors == {"connect closed 4008": 2}
    assert merged.close_codes == {4002: 1}
    summary = merged.latency.summary()
    assert set(summary) == LATENCY_KEYS
    assert summary["count"] == 101
    assert 50 <= summary["p50"] <= 52 and 499 <= summary["max"] <= 501


def test_an_empty_histogram_reports_zeros() -> None:
    assert Latency().summary() == dict.fromkeys(LATENCY_KEYS, 0)


# --- accounting on a real hub's offsets -----------------------------------------------


class Recorder(Client):
    def __init__(self, target: Target, stats: Stats) -> None:
        super().__init__(target, stats)
        self.tracker = OffsetTracker(stats)
        self.arrived = asyncio.Event()

    def on_push(self, message: dict[str, Any]) -> None:
        if message.get("push") == "pub":
            self.tracker.observe(message["offset"], message["epoch"])
            self.arrived.set()


async def test_tracker_on_a_real_hub_sees_what_a_resubscribe_skips_and_repeats(hub_factory: Any) -> None:
    hub: RunningHub = await hub_factory(**LOADTEST_SETTINGS)
    target = parse_url(hub.url)
    stats = Stats()
    reader = await open_client(lambda: Recorder(target, stats), target)
    writer = await open_client(lambda: Client(target, Stats()), target)
    for client in (reader, writer):
        await client.command({"cmd": "connect"})
    start = await reader.command({"cmd": "subscribe", "channel": "acc"})
    reader.tracker.reset(start["offset"], start["epoch"])

    async def publish(n: int) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for _ in range(n):
            result = await writer.command({"cmd": "publish", "channel": "acc", "data": b"x"})
        return result

    await publish(2)  # offsets 1, 2 arrive
    async with asyncio.timeout(5):
        while reader.tracker.offset < 2:
            reader.arrived.clear()
            await reader.arrived.wait()
    epoch = reader.tracker.epoch
    await reader.command({"cmd": "unsubscribe", "channel": "acc"})
    await publish(2)  # 3, 4 published while away
    await reader.command({"cmd": "subscribe", "channel": "acc"})  # no recovery: 3, 4 skipped
    last = await publish(1)  # 5
    async with asyncio.timeout(5):
        while reader.tracker.offset < 5:
            reader.arrived.clear()
            await reader.arrived.wait()
    assert (stats.lost, stats.duplicated, stats.out_of_order) == (2, 0, 0)
    await reader.command({"cmd": "unsubscribe", "channel": "acc"})
    # Recover from offset 2: 3 and 4 come late (out of order), 5 again (duplicated).
    recovered = await reader.command({"cmd": "subscribe", "channel": "acc", "offset": 2, "epoch": epoch})
    assert recovered["recovered"] is True
    for pub in recovered["publications"]:
        reader.tracker.observe(pub["offset"], epoch)
    reader.tracker.finish(last["offset"])
    assert (stats.lost, stats.duplicated, stats.out_of_order) == (0, 1, 2)
    reader.close()
    writer.close()


# --- the command against a real hub ---------------------------------------------------


async def loadtest(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """``realtime loadtest ARGS`` run on this loop (its workers are processes of their own), so the
    in-process hubs of ``hub_factory`` serve it; (exit status, stdout, stderr)."""
    parsed = build_parser().parse_args(["loadtest", *args])
    assert usage_error(parsed) is None
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        async with asyncio.timeout(timeout):
            code = await execute(parsed)
    return code, out.getvalue(), err.getvalue()


async def loadtest_process(*args: str, timeout: float = 30.0) -> tuple[int, str, str]:
    """``python -m realtime loadtest ARGS`` as a process of its own; (exit status, stdout, stderr)."""
    root = Path(__file__).resolve().parent.parent
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "realtime",
        "loadtest",
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONPATH": str(root)},
        cwd=root,
    )
    try:
        async with asyncio.timeout(timeout):
            out, err = await proc.communicate()
    except TimeoutError:
        proc.kill()
        await proc.wait()
        raise
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


DOCS = Path(__file__).resolve().parent.parent / "docs" / "loadtest.md"


def doc_examples() -> list[list[str]]:
    """Every ``$ realtime loadtest ...`` command of docs/loadtest.md, as arguments after ``realtime``."""
    return [
        shlex.split(line[2:])[1:] for line in DOCS.read_text().splitlines() if line.startswith("$ realtime loadtest")
    ]


def doc_example(scenario: str, hub: RunningHub, having: str = "", **shrink: str) -> list[str]:
    """The docs' first example of ``scenario`` (with the flag ``having``, if given), pointed at ``hub``,
    with flags replaced or added by ``shrink`` (``subscribers="6"`` sets ``--subscribers 6``), and --quiet."""
    argv = next(a for a in doc_examples() if a[1] == scenario and (not having or having in a))[1:]
    out: list[str] = []
    flags = {"--" + name.replace("_", "-"): value for name, value in shrink.items()}
    i = 0
    while i < len(argv):
        flag = argv[i]
        takes_value = i + 1 < len(argv) and not argv[i + 1].startswith("--")
        if flag == "--url":
            pass
        elif flag in flags:
            out += [flag, flags.pop(flag)]
        else:
            out += argv[i : i + 1 + takes_value]
        i += 1 + takes_value
    for flag, value in flags.items():
        out += [flag, value] if value else [flag]
    return [scenario, "--url", hub.url, *out[1:], "--quiet"]


def test_every_doc_example_is_a_valid_command() -> None:
    examples = doc_examples()
    assert {a[1] for a in examples} >= {"fanout", "idle", "storm", "ramp"}
    for argv in examples:
        args = build_parser().parse_args(argv)
        assert usage_error(args) is None, argv


def check_contract(report: dict[str, Any], scenario: str) -> None:
    assert set(report) == CONTRACT_KEYS
    assert report["scenario"] == scenario
    assert set(report["latency_ms"]) == LATENCY_KEYS
    assert set(report["generator"]) == {"procs", "cpu_s", "cores_busy"}
    if report["connect"] is not None:
        assert set(report["connect"]) == {"count", "per_s", "latency_ms"}
        assert set(report["connect"]["latency_ms"]) == LATENCY_KEYS


async def test_fanout_run_delivers_everything(hub_factory: Any, tmp_path: Path) -> None:
    hub: RunningHub = await hub_factory(**LOADTEST_SETTINGS)
    out = tmp_path / "fanout.json"
    argv = doc_example("fanout", hub, "--ack", subscribers="6", samplers="3", duration="0.5", json=str(out))
    assert argv[argv.index("--ack") + 1] == "delivery" and "--procs" in argv  # the docs' throughput example
    code, stdout, stderr = await loadtest(*argv)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    check_contract(report, "fanout")
    assert report["sent"] > 0 and report["connected"] == 6  # the publisher closed at the end
    assert report["delivered"] == 6 * report["sent"]
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    assert report["errors"] == {} and report["close_codes"] == {}
    assert report["latency_ms"]["count"] == 3 * report["sent"]
    assert "deliveries/s" in stdout and "lost" in stdout


async def test_idle_run_connects_every_client_with_a_token(hub_factory: Any, tmp_path: Path) -> None:
    hub: RunningHub = await hub_factory(**{**LOADTEST_SETTINGS, "allow_anonymous": False})
    out = tmp_path / "idle.json"
    argv = doc_example("idle", hub, connections="10", hold="0.1", jwt_secret=TEST_SECRET, json=str(out))
    extra = ["--url", hub.url, "--source-addresses", "3", "--hub-pid", str(os.getpid())]  # the hub runs here
    code, _, stderr = await loadtest(*argv, *extra)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    check_contract(report, "idle")
    assert report["connected"] == 10 and report["connect"]["count"] == 10
    assert report["params"]["jwt_secret"] == "(set)"  # the secret is not written out
    assert set(report["extra"]["hubs"][str(os.getpid())]) == {"cpu_s", "cores_busy", "rss_kib"}
    assert "rss_per_connection_kib" in report["extra"]


async def test_the_run_stops_at_its_timeout(hub_factory: Any, tmp_path: Path) -> None:
    hub: RunningHub = await hub_factory(**LOADTEST_SETTINGS)
    out = tmp_path / "late.json"
    code, _, stderr = await loadtest(
        "idle", "--url", hub.url, "--connections", "2", "--hold", "60", "--timeout", "1", "--json", str(out), "--quiet"
    )
    assert code == 1
    assert "passed --timeout 1s" in stderr
    report = json.loads(out.read_text())  # what it had is still reported
    assert report["errors"] == {"run timeout": 1}


async def test_storm_every_client_reconnects_and_recovers(hub_factory: Any, tmp_path: Path) -> None:
    hub: RunningHub = await hub_factory(**LOADTEST_SETTINGS)
    out = tmp_path / "storm.json"
    argv = doc_example(
        "storm", hub, clients="8", channels="2", rate="40", drop_after="1.1", duration="0.1", json=str(out)
    )
    argv.remove("--quiet")
    code, _, stderr = await loadtest(*argv)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    check_contract(report, "storm")
    extra = report["extra"]
    assert extra["dropped"] == 8 and extra["reconnected"] == 8 and extra["still_down"] == 0
    assert extra["recovered"] == 8 and extra["not_recovered"] == 0
    assert extra["recovery_s"] > 0
    assert report["sent"] > 0 and report["delivered"] == 4 * report["sent"]  # 4 clients per channel
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    assert report["close_codes"] == {}  # the drops were ours
    assert "connected 9  sent " in stderr  # the live line, once a second: the clients and the publisher


async def test_ramp_reports_the_knee(hub_factory: Any, tmp_path: Path) -> None:
    hub: RunningHub = await hub_factory(**LOADTEST_SETTINGS)
    out = tmp_path / "ramp.json"
    argv = doc_example(
        "ramp", hub, step="3", step_duration="0.5", max_connections="6", rate="20", sample_every="2",
        p99_budget_ms="5000", procs="1", json=str(out),
    )  # fmt: skip
    code, _, stderr = await loadtest(*argv)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    check_contract(report, "ramp")
    extra = report["extra"]
    assert extra["knee"] == 6 and extra["broke"] == "max connections reached"
    assert [step["connections"] for step in extra["steps"]] == [3, 6]
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)


def test_a_ramp_step_breaks_on_latency_errors_or_missing_connections() -> None:
    from realtime.loadtest.ramp import Ramp

    args = argparse.Namespace(p99_budget_ms=50.0, error_budget=1)
    good = {"p99_ms": 20.0, "errors": 1, "connections": 100, "samples": 10}
    assert Ramp._broken(args, good, 100) is None
    assert "p99" in str(Ramp._broken(args, {**good, "p99_ms": 51.0}, 100))
    assert "errors" in str(Ramp._broken(args, {**good, "errors": 2}, 100))
    assert "connections" in str(Ramp._broken(args, {**good, "connections": 98}, 100))
    assert "nothing delivered" in str(Ramp._broken(args, {**good, "samples": 0}, 100))


async def test_refusals_are_explained(hub_factory: Any) -> None:
    hub: RunningHub = await hub_factory(**{**LOADTEST_SETTINGS, "max_connections_per_address": 2})
    code, stdout, stderr = await loadtest("idle", "--url", hub.url, "--connections", "4", "--hold", "0", "--quiet")
    assert code == 0, stderr
    assert "4009" in stdout
    assert "max_connections_per_address = 0" in stderr


async def test_an_unreachable_hub_exits_1(unused_tcp_port: int) -> None:
    code, _, stderr = await loadtest_process(
        "fanout", "--url", f"ws://127.0.0.1:{unused_tcp_port}/ws", "--subscribers", "1", "--quiet"
    )
    assert code == 1
    assert "could not connect" in stderr


@pytest.mark.parametrize(
    "args",
    [
        [],  # no scenario
        ["fanout"],  # no --url
        ["fanout", "--url", "http://127.0.0.1:1/ws"],  # not a WebSocket URL
        ["fanout", "--url", "ws://127.0.0.1:1/ws", "--payload", "4"],
        ["fanout", "--url", "ws://127.0.0.1:1/ws", "--ack", "never"],
        ["fanout", "--url", "ws://127.0.0.1:1/ws", "--publish-via", "redis"],  # no --redis
        ["idle", "--url", "ws://127.0.0.1:1/ws", "--connections", "0"],
        ["idle", "--url", "ws://example.com/ws", "--source-addresses", "4"],
        ["storm", "--url", "ws://127.0.0.1:1/ws", "--kill-pid", "1"],  # nowhere to reconnect to
        ["nosuch", "--url", "ws://127.0.0.1:1/ws"],
    ],
)
def test_usage_errors_exit_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    from realtime.cli import main

    assert main(["loadtest", *args]) == 2


async def test_fanout_across_two_nodes_publishing_through_redis(
    hub_factory: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    """A cluster: subscribers round-robin over two nodes of one Redis, a backend publishing with FCALL."""
    hubs: list[RunningHub] = [
        await hub_factory(**LOADTEST_SETTINGS, redis=redis_server.url, redis_prefix="lt") for _ in range(2)
    ]
    for hub in hubs:
        engine = hub.hub.engine
        assert isinstance(engine, RedisEngine)
        await engine.library_loaded()
    out = tmp_path / "redis.json"
    code, _, stderr = await loadtest(
        "fanout", "--url", hubs[0].url, "--url", hubs[1].url, "--subscribers", "4", "--duration", "0.5",
        "--publish-via", "redis", "--redis", redis_server.url, "--redis-prefix", "lt", "--json", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert report["sent"] > 0 and report["delivered"] == 4 * report["sent"]
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    redis = report["extra"]["redis"]  # the hubs' pub/sub connections, watched
    assert redis["pubsub_connections"] == {"redis": 2} and redis["replaced"] == {}


async def test_storm_after_a_node_is_killed_moves_its_clients_to_the_other(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """Two hub processes on one Redis; one is SIGKILLed: its clients reconnect to the other and recover."""
    config = tmp_path / "hub.toml"
    config.write_text(
        "allow_anonymous = true\ncommand_rate = 0\nreceive_rate = 0\n"
        '[namespaces.default]\nsubscribe = "anyone"\npublish = "clients"\nhistory_size = 100\nhistory_ttl = 300\n'
    )
    nodes = [await start_serve("--config", str(config), "--redis", redis_server.url) for _ in range(2)]
    try:
        urls = [f"ws://127.0.0.1:{port}/ws" for _, port in nodes]
        out = tmp_path / "kill.json"
        code, _, stderr = await loadtest(
            "storm", "--url", urls[0], "--url", urls[1], "--clients", "6", "--channels", "2", "--rate", "40",
            "--drop-after", "0.5", "--duration", "0.3", "--kill-pid", str(nodes[1][0].pid), "--json", str(out),
            "--quiet",
        )  # fmt: skip
        assert code == 0, stderr
        report = json.loads(out.read_text())
        extra = report["extra"]
        assert extra["dropped"] == 3 and extra["reconnected"] == 3 and extra["still_down"] == 0
        assert extra["recovered"] == 3 and extra["recovery_s"] > 0
        assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
        assert report["close_codes"] == {"1006": 3}  # the killed node sent no close frame
    finally:
        for proc, _ in nodes:
            if proc.returncode is None:
                proc.kill()
            await proc.wait()
