"""`realtime loadtest chat`: the documented hub and command at tiny sizes, the room layout, usage errors.

No test here asserts a speed: the machine is shared and the sizes are tiny.
"""

from __future__ import annotations

import argparse
import asyncio
import json
from pathlib import Path
from typing import Any

from realtime.loadtest.chat import Layout, rooms
from realtime.loadtest.workers import Pool

from .helpers import RunningHub
from .loadtest_docs import hub_settings, secret
from .redis_server import RedisServer
from .test_loadtest import check_contract, doc_example, loadtest, loadtest_process


async def test_every_member_gets_every_message_once_in_order(hub_factory: Any, tmp_path: Path) -> None:
    hub: RunningHub = await hub_factory(**hub_settings(tmp_path))
    out = tmp_path / "chat.json"
    args = doc_example(
        "chat", hub, users="12", room_min="2", room_max="5", message_rate="3", duration="1.5",
        typing_lead="0.1", read_delay="0.1", procs="2", json=str(out),
    )  # fmt: skip
    code, stdout, stderr = await loadtest(*args)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    check_contract(report, "chat")
    extra = report["extra"]
    assert report["connected"] == 12 and extra["users"] == 12
    assert report["sent"] == extra["messages"] > 0
    assert report["delivered"] == extra["expected_deliveries"] > report["sent"]
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    assert report["errors"] == {} and report["close_codes"] == {}
    assert report["latency_ms"]["count"] == report["delivered"]
    assert extra["typing_sent"] > 0 and extra["typing_pushes"] > 0 and extra["typing_throttled"] == 0
    assert extra["reads_sent"] > 0 and extra["read_pushes"] > 0
    assert "typing pushes" in stdout


async def test_without_typing_and_reads_only_messages_go(hub_factory: Any, tmp_path: Path) -> None:
    hub: RunningHub = await hub_factory(**hub_settings(tmp_path))
    out = tmp_path / "chat.json"
    code, _, stderr = await loadtest(
        "chat", "--url", hub.url, "--jwt-secret", secret(), "--users", "6", "--room-min", "3", "--room-max", "3",
        "--message-rate", "4", "--duration", "1", "--no-typing", "--no-reads", "--json", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert report["extra"]["rooms"] == 2 and report["delivered"] == 3 * report["sent"] > 0
    assert report["lost"] == 0 and report["errors"] == {}
    assert report["extra"]["typing_sent"] == report["extra"]["reads_sent"] == 0


def test_rooms_cover_every_user_within_the_sizes() -> None:
    for users, lo, hi in ((10_000, 2, 20), (7, 2, 3), (5, 5, 5), (3, 2, 20)):
        starts = rooms(users, lo, hi, seed=7)
        assert starts == rooms(users, lo, hi, seed=7)  # every process computes the same rooms
        sizes = [b - a for a, b in zip(starts, [*starts[1:], users], strict=True)]
        assert sum(sizes) == users and starts[0] == 0
        assert all(lo <= s for s in sizes) and all(s <= hi for s in sizes[:-1])
        assert sizes[-1] < hi + lo  # a short last room joined the one before it
    layout = Layout(argparse.Namespace(users=7, room_min=2, room_max=3, seed=7, namespace="chat", room_prefix="r"))
    assert [i for r in range(len(layout.starts)) for i in layout.members(r)] == list(range(7))
    assert all(layout.room(i) == r for r in range(len(layout.starts)) for i in layout.members(r))
    assert layout.channel(1) == "chat:r1"


async def test_chat_usage_errors_exit_2() -> None:
    url = "ws://127.0.0.1:9/ws"
    assert (await loadtest_process("chat", "--url", url, "--users", "4"))[0] == 2  # no --jwt-secret
    code, _, stderr = await loadtest_process(
        "chat", "--url", url, "--jwt-secret", "s", "--room-min", "5", "--room-max", "3"
    )
    assert code == 2 and "--room-min" in stderr
    assert (await loadtest_process("chat", "--url", url, "--jwt-secret", "s", "--message-rate", "0"))[0] == 2


async def test_chat_across_two_nodes_on_one_redis(hub_factory: Any, redis_server: RedisServer, tmp_path: Path) -> None:
    settings = {**hub_settings(tmp_path), "redis": redis_server.url, "redis_prefix": "ltchat"}
    hubs: list[RunningHub] = [await hub_factory(**settings) for _ in range(2)]
    out = tmp_path / "chat.json"
    code, _, stderr = await loadtest(
        "chat", "--url", hubs[0].url, "--url", hubs[1].url, "--jwt-secret", secret(), "--users", "8",
        "--room-min", "4", "--room-max", "4", "--message-rate", "3", "--duration", "1", "--typing-lead", "0.1",
        "--read-delay", "0.1", "--json", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert report["delivered"] == 4 * report["sent"] > 0  # members of a room sit on both nodes
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    assert report["errors"] == {} and report["extra"]["typing_pushes"] > 0


async def test_a_request_larger_than_a_pipe_reaches_a_worker_whole() -> None:
    # The controller sends chat's "finish" every sender's count: at 10,000s of users more than a
    # pipe holds, so the worker reads it in pieces.
    args = argparse.Namespace(
        url=["ws://127.0.0.1:9/ws"], procs=1, timeout=30.0, source_addresses=1, jwt_secret="s", concurrency=1,
        users=2, room_min=2, room_max=2, seed=1, namespace="chat", room_prefix="r",
    )  # fmt: skip
    pool = Pool("chat", args, 2)
    try:
        last = {i: i for i in range(1_000_000)}  # about 5 MB pickled
        for _ in range(5):
            assert await asyncio.wait_for(pool.ask(0, "finish", last), 30) == 0
    finally:
        await pool.stop()
