"""`realtime loadtest presence`: the documented hub and command at tiny sizes, pauses within and beyond
the grace, each way of going to the background, usage errors.

No test here asserts a speed: the machine is shared and the sizes are tiny.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from .helpers import RunningHub
from .loadtest_docs import hub_settings, secret
from .redis_server import RedisServer
from .test_loadtest import check_contract, doc_example, loadtest, loadtest_process

CLEAN = ("flaps", "missed_leaves", "join_mismatches", "pushed_state_mismatches", "presence_list_mismatches")


async def test_pauses_within_the_grace_make_no_leaves(hub_factory: Any, tmp_path: Path) -> None:
    hub: RunningHub = await hub_factory(**hub_settings(tmp_path, presence={"presence_grace": 1.5}))
    out = tmp_path / "presence.json"
    args = doc_example(
        "presence", hub, devices="12", room_size="6", observers="2", churn_rate="8", background_s="0.2",
        grace="1.5", duration="1.5", procs="2", json=str(out),
    )  # fmt: skip
    code, stdout, stderr = await loadtest(*args)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    check_contract(report, "presence")
    extra = report["extra"]
    assert report["connected"] == 12 + 2 * 2 and extra["channels"] == 2
    assert extra["backgrounds"] > 0 and extra["resume_failures"] == 0
    assert report["connect"]["count"] == 12 + 2 * 2 + extra["backgrounds"]  # reconnects included
    assert report["connect"]["per_s"] == 0 and extra["first_connects_per_s"] > 0
    assert extra["long_absences"] == 0 and extra["leaves_seen"] <= extra["borderline_absences"]
    assert all(extra[name] == 0 for name in CLEAN), extra
    assert (report["lost"], report["duplicated"]) == (0, 0)
    assert report["errors"] == {} and report["close_codes"] == {}
    assert "presence list mismatches" in stdout


@pytest.mark.parametrize("background", ["close", "drop", "silent"])
async def test_pauses_beyond_the_grace_make_one_leave_and_one_join(
    hub_factory: Any, tmp_path: Path, background: str
) -> None:
    hub: RunningHub = await hub_factory(**hub_settings(tmp_path, presence={"presence_grace": 0.3}))
    out = tmp_path / "presence.json"
    args = doc_example(
        "presence", hub, devices="6", room_size="6", observers="1", churn_rate="6", background_s="1.2",
        grace="0.3", duration="1.0", procs="1", background=background, json=str(out),
    )  # fmt: skip
    code, _, stderr = await loadtest(*args)
    assert code == 0, stderr
    report = json.loads(out.read_text())
    extra = report["extra"]
    assert extra["backgrounds"] > 0 and extra["short_absences"] == 0
    if background == "silent":  # the hub saw less of the absence than the device: either is right
        assert extra["borderline_absences"] == extra["backgrounds"]
    else:
        assert extra["long_absences"] > 0 and extra["leaves_seen"] >= extra["long_absences"]
    assert all(extra[name] == 0 for name in CLEAN), extra
    assert (report["lost"], report["duplicated"]) == (0, 0)
    assert report["errors"] == {} and report["close_codes"] == {}
    assert report["connected"] == 6 + 1


async def test_presence_needs_a_token() -> None:
    code, _, stderr = await loadtest_process("presence", "--url", "ws://127.0.0.1:9/ws", "--devices", "2")
    assert code == 2 and "--jwt-secret" in stderr


async def test_presence_across_two_nodes_on_one_redis(
    hub_factory: Any, redis_server: RedisServer, tmp_path: Path
) -> None:
    settings = {
        **hub_settings(tmp_path, presence={"presence_grace": 0.3}),
        "redis": redis_server.url,
        "redis_prefix": "ltpresence",
    }
    hubs: list[RunningHub] = [await hub_factory(**settings) for _ in range(2)]
    out = tmp_path / "presence.json"
    code, _, stderr = await loadtest(
        "presence", "--url", hubs[0].url, "--url", hubs[1].url, "--jwt-secret", secret(), "--devices", "6",
        "--room-size", "6", "--observers", "2", "--churn-rate", "6", "--background-s", "1.2", "--grace", "0.3",
        "--duration", "1", "--background", "drop", "--json", str(out), "--quiet",
    )  # fmt: skip
    assert code == 0, stderr
    report = json.loads(out.read_text())
    extra = report["extra"]
    assert extra["long_absences"] > 0 and extra["leaves_seen"] >= 2 * extra["long_absences"]  # two observers
    assert all(extra[name] == 0 for name in CLEAN), extra
    assert (report["lost"], report["duplicated"]) == (0, 0) and report["errors"] == {}
