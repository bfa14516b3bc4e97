"""`realtime loadtest live`: the documented hub and command at tiny sizes (conflation), every change
delivered as patches without it, a gap healed by resubscribing on a real hub.

No test here asserts a speed: the machine is shared and the sizes are tiny.
"""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

from realtime.loadtest.clients import Client
from realtime.loadtest.context import WorkerContext, WorkerSpec
from realtime.loadtest.live import LiveRole
from realtime.loadtest.stats import Stats
from realtime.loadtest.wsclient import open_client, parse_url

from .helpers import RunningHub, make_token
from .loadtest_docs import hub_settings, secret
from .redis_server import RedisServer
from .test_loadtest import check_contract, doc_example, loadtest


async def test_every_subscriber_ends_with_the_last_version_of_every_key(hub_factory: Any, tmp_path: Path) -> None:
    hub: RunningHub = await hub_factory(**hub_settings(tmp_path))  # max_rate = 10: conflation
    out = tmp_path / "live.json"
    args = doc_example(
        "live", hub, subscribers="6", keys="3", update_rate="150", duration="1", procs="2", json=str(out)
    )
    code, stdout, stderr = await loadtest(*args)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    check_contract(report, "live")
    extra = report["extra"]
    assert report["connected"] == 6 and report["sent"] == extra["updates"] > 0
    assert extra["final_version"] == extra["updates"]  # one channel: every update a version
    assert 0 < report["delivered"] < 6 * report["sent"]  # conflated
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    assert extra["stale_keys"] == 0 and extra["resubscribes"] == 0
    assert report["errors"] == {} and report["close_codes"] == {}
    assert report["latency_ms"]["count"] > 0
    assert "final version" in stdout


async def test_without_conflation_every_change_arrives_as_a_patch(hub_factory: Any, tmp_path: Path) -> None:
    hub: RunningHub = await hub_factory(**hub_settings(tmp_path, live={"max_rate": 0.0}))
    out = tmp_path / "live.json"
    code, _, stderr = await loadtest(
        "live", "--url", hub.url, "--jwt-secret", secret(), "--subscribers", "4", "--keys", "2",
        "--update-rate", "0", "--window", "8", "--payload", "64", "--duration", "1", "--json", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert report["sent"] > 0 and report["delivered"] == 4 * report["sent"]
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    assert report["extra"]["resubscribes"] == 0 and report["errors"] == {}


async def test_a_missed_patch_is_healed_by_resubscribing(hub_factory: Any, tmp_path: Path) -> None:
    hub: RunningHub = await hub_factory(**hub_settings(tmp_path, live={"max_rate": 0.0}))
    params = {
        "url": [hub.url], "timeout": 30.0, "source_addresses": 1, "jwt_secret": secret(), "concurrency": 1,
        "channel": "live:gap",
    }  # fmt: skip
    role = LiveRole(WorkerContext(WorkerSpec("live", params, 0, 1, 0, 1), lambda _: None))
    assert await role.handle("connect", None) == 1
    follower = role.followers[0]
    target = parse_url(hub.url)
    writer = await open_client(lambda: Client(target, Stats()), target)
    await writer.command({"cmd": "connect", "token": make_token("w", secret=secret())})

    async def write(key: str, n: int) -> int:
        command = {"cmd": "state_set", "channel": "live:gap", "key": key, "value": {"n": n, "p": "x" * 40}}
        return int((await writer.command(command))["version"])

    for n in range(1, 4):
        version = await write("a", n)
    async with asyncio.timeout(5):
        while follower.held < version:
            await asyncio.sleep(0.01)
    # A patch two versions ahead: the one between was missed (as if a push were lost).
    await write("b", 1)
    role.change(follower, {"push": "state", "key": "b", "version": follower.held + 2, "patch": {"n": 2}})
    assert follower.resyncing
    async with asyncio.timeout(5):
        while follower.resyncing:
            await asyncio.sleep(0.01)
    assert role.stats.counters["resubscribes"] == 1
    assert follower.held == version + 1 and follower.state["b"][1]["n"] == 1
    assert (role.stats.lost, role.stats.duplicated, role.stats.out_of_order) == (0, 0, 0)
    writer.close()
    await role.close()


async def test_live_across_two_nodes_on_one_redis(hub_factory: Any, redis_server: RedisServer, tmp_path: Path) -> None:
    settings = {**hub_settings(tmp_path), "redis": redis_server.url, "redis_prefix": "ltlive"}
    hubs: list[RunningHub] = [await hub_factory(**settings) for _ in range(2)]
    out = tmp_path / "live.json"
    code, _, stderr = await loadtest(
        "live", "--url", hubs[0].url, "--url", hubs[1].url, "--jwt-secret", secret(), "--subscribers", "4",
        "--keys", "3", "--update-rate", "150", "--duration", "1", "--json", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    report = json.loads(out.read_text())
    assert report["sent"] > 0 and 0 < report["delivered"] < 4 * report["sent"]  # conflated on each node
    assert (report["lost"], report["duplicated"], report["out_of_order"]) == (0, 0, 0)
    assert report["errors"] == {}
