"""scripts/bench.py at --quick sizes: it starts its own hubs and Redis, drives them with realtime loadtest, and
writes the markdown table and the JSON with one row per figure. No speed is asserted: the sizes are tiny."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from .helpers import ROOT, load_script

#: Seconds a whole quick run may take on a busy machine (it takes about 30 alone).
QUICK_BOUND = 240


def bench(tmp_path: Path, *flags: str) -> tuple[str, dict[str, Any], str]:
    """Run the script with ``flags``; its output, its JSON and its markdown."""
    out, doc = tmp_path / "bench.json", tmp_path / "benchmarks.md"
    argv = [sys.executable, "scripts/bench.py", "--quick", "--json", str(out), "--write-docs", str(doc), *flags]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    done = subprocess.run(argv, cwd=ROOT, env=env, capture_output=True, text=True, timeout=QUICK_BOUND)
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    return done.stdout, json.loads(out.read_text()), doc.read_text()


def expected_rows() -> list[str]:
    plan = load_script("bench_plan")
    return [row.key for row in plan.rows(plan.QUICK, big=False)]


@pytest.mark.redis  # the two-node runs start a redis-server and a Redis Cluster
@pytest.mark.timeout(QUICK_BOUND + 30)
def test_a_quick_run_writes_every_row_in_the_table_and_the_json(tmp_path: Path) -> None:
    stdout, report, doc = bench(tmp_path, "--repeat", "1")
    rows = {row["key"]: row for row in report["rows"]}
    assert list(rows) == expected_rows()
    plan = load_script("bench_plan")
    assert {s["run"] for s in report["samples"] if s["ok"]} == {run.key for run in plan.plan(plan.QUICK, big=False)}
    for key in ("fanout-1k", "fanout-5k", "fanout-10k", "pair-1k", "cluster-1k", "connects", "latency-p99"):
        assert rows[key]["new"] > 0, rows[key]
        assert rows[key]["base"] is None and rows[key]["ratio"] is None  # no --baseline
    assert rows["pair-vs-single"]["new"] > 0
    assert rows["rss"]["new"] is not None  # read while the idle clients held
    assert rows["storm-recovery"]["new"] is not None and rows["storm-lost"]["new"] == 0
    for sample in report["samples"]:
        if sample["ok"]:
            assert (sample["result"]["lost"], sample["result"]["duplicated"]) == (0, 0), sample
            assert sample["hub_cpu_s"] > 0 and sample["generator_cpu_s"] > 0
    assert report["trees"][0]["label"] == "new" and len(report["trees"]) == 1
    assert "| figure | unit | new | base | new/base | target | met? |" in doc
    for row in report["rows"]:
        assert f"| {row['title']} |" in doc
    assert "python scripts/bench.py --quick" in doc and "## Machine" in doc
    assert "| figure |" in stdout


@pytest.mark.redis
@pytest.mark.timeout(QUICK_BOUND + 30)
def test_the_baseline_runs_in_the_same_run_interleaved_and_its_worktree_goes(tmp_path: Path) -> None:
    _, report, doc = bench(tmp_path, "--baseline", "HEAD", "--repeat", "2", "--only", "fanout-1k")
    assert [(s["run"], s["tree"]) for s in report["samples"]] == [("fanout-1k", "base"), ("fanout-1k", "new")] * 2
    [row] = report["rows"]
    assert len(row["new_values"]) == len(row["base_values"]) == 2
    assert row["ratio"] > 0
    assert [t["label"] for t in report["trees"]] == ["base", "new"]
    assert "- base: " in doc
    base = report["trees"][0]["path"]
    listed = subprocess.run(["git", "worktree", "list"], cwd=ROOT, capture_output=True, text=True).stdout
    assert base not in listed and not Path(base).exists()  # the baseline's checkout was removed


def clamp(t: float, high: float) -> float:
    return min(max(t, 0.0), high)


def bench_procs() -> Any:
    load_script("bench_plan")  # bench_procs imports it, as a sibling in scripts/
    return load_script("bench_procs")


def test_a_hub_config_holds_only_the_settings_its_tree_knows() -> None:
    procs = bench_procs()
    old = procs.Tree(
        "base", ROOT, "", "", False, frozenset({"allow_anonymous", "history_size"}), frozenset({"subscribe"})
    )
    text = procs.hub_config(old, jwt=False, redis=None, cluster=False)
    assert "command_rate" not in text and "max_connections_per_address" not in text
    assert text.startswith("allow_anonymous = true\nhistory_size = 100\n")
    assert '[namespaces.default]\nsubscribe = "anyone"' in text
    jwt = procs.hub_config(old, jwt=True, redis="redis://x", cluster=False)
    assert "allow_anonymous = false" in jwt and "token_secret" not in jwt and "redis" not in jwt


def test_busy_is_the_median_second_of_the_measured_phase() -> None:
    procs = bench_procs()
    meter = procs.CpuMeter([])
    # one core busy from t=0 to t=10, idle before and after, and two more in the first second
    meter.samples = [(t / 4, clamp(t / 4, 10.0) + 2 * clamp(t / 4, 1.0)) for t in range(-8, 60)]
    assert meter.busy(0.0, 10.0) == pytest.approx(1.0)
    assert meter.busy(10.0, 12.0) == pytest.approx(0.0)
    assert meter.busy(0.0, 1.0) == pytest.approx(3.0)  # a short phase: the mean
