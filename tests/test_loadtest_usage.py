"""`realtime loadtest` as its users meet it: flags it refuses up front, and notes that name the fix
when the hub is misconfigured or not there. Tiny runs; no speed asserted."""

from __future__ import annotations

import asyncio
import signal
from pathlib import Path
from typing import Any

import pytest

from realtime.cli import build_parser, main
from realtime.loadtest.clients import gather_bounded
from realtime.loadtest.workers import Pool

from .helpers import RunningHub
from .test_loadtest import LOADTEST_SETTINGS, loadtest, loadtest_process

URL = "ws://127.0.0.1:1/ws"


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["idle", "--url", URL, "--json", "/nonexistent-dir/out.json"], "no directory"),
        (["idle", "--url", URL, "--json", "/"], "is a directory"),
        (["idle", "--url", URL, "--hub-pid", "9999999"], "no such process"),
        (["ramp", "--url", URL, "--step-duration", "5", "--timeout", "5"], "leaves no step within --timeout"),
        (["fanout", "--url", URL, "--window", "10001"], "from 1 to 10,000"),  # built in one go, past --timeout
        (["live", "--url", URL, "--window", "100000000"], "from 1 to 10,000"),
        (["idle", "--url", URL, "--connections", "10000001"], "from 1 to 10,000,000"),
        (["chat", "--url", URL, "--jwt-secret", "s", "--users", "1e9"], "from 1 to 10,000,000"),
        (["ramp", "--url", URL, "--rate", "0"], "expected a number above 0"),  # a rate, not seconds
    ],
)
def test_flags_that_cannot_work_exit_2_before_the_run(
    args: list[str], says: str, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["loadtest", *args]) == 2
    assert says in capsys.readouterr().err


def test_a_value_over_a_bound_says_the_bound(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["loadtest", "fanout", "--url", URL, "--duration", "1e9"]) == 2
    assert "below 10,000,000" in capsys.readouterr().err


async def test_a_wrong_secret_is_named_as_such(hub_factory: Any) -> None:
    hub: RunningHub = await hub_factory(**{**LOADTEST_SETTINGS, "allow_anonymous": False})
    secret = "not-the-hubs-secret-but-long-enough-for-hs256"
    code, _, stderr = await loadtest("idle", "--url", hub.url, "--connections", "2", "--jwt-secret", secret)
    assert code == 1
    assert "--jwt-secret must be the hub's token_secret" in stderr
    assert "the hub wants a token" not in stderr  # that note is for runs without --jwt-secret


async def test_a_wrong_path_names_the_hubs_path(hub_factory: Any) -> None:
    hub: RunningHub = await hub_factory(**LOADTEST_SETTINGS)
    code, stdout, stderr = await loadtest("idle", "--url", hub.url.replace("/ws", "/nope"), "--connections", "1")
    assert code == 1
    assert "404" in stdout and "at /ws" in stderr


async def test_wss_to_a_plain_hub_names_tls(hub_factory: Any) -> None:
    hub: RunningHub = await hub_factory(**LOADTEST_SETTINGS)
    code, _, stderr = await loadtest("idle", "--url", hub.url.replace("ws://", "wss://"), "--connections", "1")
    assert code == 1
    assert "TLS handshake failed" in stderr


async def test_a_payload_over_the_frame_size_names_it(hub_factory: Any) -> None:
    hub: RunningHub = await hub_factory(**{**LOADTEST_SETTINGS, "max_frame_size": 1024})
    argv = ["fanout", "--url", hub.url, "--subscribers", "1", "--payload", "2000", "--duration", "0.5"]
    code, stdout, stderr = await loadtest(*argv)
    assert code == 1
    assert "1009" in stdout and "lower --payload" in stderr


async def test_a_hub_down_is_named(unused_tcp_port: int) -> None:
    code, _, stderr = await loadtest("idle", "--url", f"ws://127.0.0.1:{unused_tcp_port}/ws", "--connections", "1")
    assert code == 1
    assert "nothing listens at that host and port" in stderr


async def test_a_ramp_left_no_time_for_a_step_exits_1(hub_factory: Any) -> None:
    hub: RunningHub = await hub_factory(**LOADTEST_SETTINGS)
    argv = ["ramp", "--url", hub.url, "--step", "1", "--step-duration", "1", "--timeout", "1.01", "--quiet"]
    code, _, stderr = await loadtest_process(*argv)  # starting the worker alone takes more than 10 ms
    assert code == 1
    assert "left no time" in stderr


async def test_workers_start_with_ctrl_c_ignored() -> None:
    """Ctrl-C goes to the whole process group; the controller stops the workers, which must not
    die of it themselves (with a traceback) even while they are still importing."""
    args = build_parser().parse_args(["loadtest", "idle", "--url", URL, "--connections", "1"])
    before = signal.getsignal(signal.SIGINT)
    pool = Pool("idle", args, 1)
    assert signal.getsignal(signal.SIGINT) is before  # ours is as it was
    try:
        status = Path(f"/proc/{pool.handles[0].process.pid}/status").read_text()
        ignored = int(next(line for line in status.splitlines() if line.startswith("SigIgn:")).split()[1], 16)
        assert ignored & (1 << (2 - 1))  # SIGINT is signal 2
    finally:
        await asyncio.wait_for(pool.stop(), 30)


async def test_gather_bounded_runs_in_order_with_only_limit_tasks() -> None:
    """Connecting a million clients must not make a million tasks up front (memory, and a loop held
    past --timeout while they are made)."""
    started: list[int] = []
    running, most, tasks = 0, 0, 0
    baseline = len(asyncio.all_tasks())

    async def make(i: int) -> None:
        nonlocal running, most, tasks
        started.append(i)
        running += 1
        most = max(most, running)
        tasks = max(tasks, len(asyncio.all_tasks()) - baseline)
        await asyncio.sleep(0)
        running -= 1

    await gather_bounded(range(1000), 7, make)
    assert started == list(range(1000))
    assert most == 7 and tasks <= 7
