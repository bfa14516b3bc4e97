"""scripts/abuse.py runs every scenario against a hub of its own and reports on it.

The counts are small: the drill must pass whatever the hub's limits are. What
holds on every version is asserted: the hub survives, the well-behaved clients
lose nothing, and the report names what was tried.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from .helpers import ROOT, load_script

SMALL = [
    "--seconds", "3", "--flood-frames", "30", "--oversize", "2", "--malformed", "40",
    "--amplify-pubs", "4", "--amplify-size", "20000", "--amplify-frames", "4", "--amplify-commands", "4",
    "--read-channels", "300", "--notices", "50", "--slow-readers", "2", "--slow-pushes", "30",
    "--slow-size", "20000", "--conn-flood", "10", "--hold", "0.5", "--clients", "2", "--rate", "50",
    "--settle", "5",
]  # fmt: skip


def test_the_drill_reports_every_scenario_and_honest_clients_lose_nothing(tmp_path: Path) -> None:
    out = tmp_path / "report.json"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    done = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "abuse.py"), "--spawn", "--json", str(out), *SMALL],
        capture_output=True,
        text=True,
        timeout=50,
        env=env,
        cwd=tmp_path,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    report = json.loads(out.read_text(encoding="utf-8"))
    assert report["ok"] is True
    assert list(report["scenarios"]) == list(load_script("abuse").SCENARIOS)
    for name, scenario in report["scenarios"].items():
        assert scenario["connections"] >= 1, name
        assert "failed" not in scenario["notes"] and "skipped" not in scenario["notes"], (name, scenario["notes"])
    # The hub survived, and its memory was sampled.
    hub = report["hub"]
    assert hub["spawned"] is True and hub["alive"] is True
    assert 0 < hub["rss_start_kb"] <= hub["rss_peak_kb"] <= hub["vm_hwm_kb"]
    # The well-behaved clients got every acknowledged number, once, in order, and their pings were answered.
    clients = report["clients"]
    assert clients["acked"] > 0
    assert len(clients["delivered"]) == 2 and all(n >= clients["acked"] for n in clients["delivered"])
    assert (clients["lost"], clients["duplicated"], clients["reordered"]) == (0, 0, 0)
    assert clients["pings"] > 0 and clients["ping_failures"] == 0
    # The human summary says the same.
    assert "OK" in done.stdout.splitlines()[-1]


def test_the_drill_refuses_unknown_scenarios() -> None:
    abuse = load_script("abuse")
    with pytest.raises(SystemExit) as exc:
        abuse.parse_args(["--spawn", "--scenarios", "flood,nope"])
    assert exc.value.code == 2
