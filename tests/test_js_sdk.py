"""The JavaScript SDK's own suites (clients/js), run from here so that ``python -m pytest`` runs every test.

``npm test`` builds the SDK and runs its Node tests; ``npm run test:browser`` drives Debian's chromium
(playwright-core, no browser download) through a connect/subscribe/publish/recover round trip. Both start
hubs from this checkout with this interpreter (``REALTIME_PYTHON``), and redis-server processes, so they
are marked ``redis``. A missing node or chromium fails with what to install: CI must run them, never skip.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

JS = Path(__file__).resolve().parent.parent / "clients" / "js"

#: Bounds of each npm command, in seconds; the per-test timeout (pytest-timeout) sits above them so that
#: the process group is killed here and its output shown.
NPM_CI_TIMEOUT = 300
TEST_TIMEOUT = 600
BROWSER_TIMEOUT = 300

pytestmark = pytest.mark.redis


def _node() -> str:
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        pytest.fail(
            "the JS SDK tests need Node 20+ and npm: apt-get install nodejs npm (then .ci/run's npm install -g node@20 where Debian's is older)",
            pytrace=False,
        )
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True).stdout.strip()
    found = re.match(r"v(\d+)\.", version)
    if found is None or int(found.group(1)) < 20:
        pytest.fail(
            f"the JS SDK tests need Node 20+ (node --test options), found {version}: npm install -g node@20",
            pytrace=False,
        )
    return npm


def _run(npm: str, *args: str, timeout: float) -> None:
    """Runs ``npm args`` in clients/js; fails with the tail of its output unless it exits 0 in time."""
    env = {**os.environ, "REALTIME_PYTHON": sys.executable}
    # A session of its own: on timeout the whole group (hubs, redis-servers, chromium) is killed.
    process = subprocess.Popen(
        [npm, *args],
        cwd=JS,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        errors="replace",
        start_new_session=True,
    )
    try:
        output, _ = process.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        output, _ = process.communicate()
        pytest.fail(f"npm {' '.join(args)} did not finish in {timeout:.0f} s; its output ends:\n{_tail(output)}")
    assert process.returncode == 0, (
        f"npm {' '.join(args)} exited with {process.returncode}; its output ends:\n{_tail(output)}"
    )


def _tail(output: str, lines: int = 80) -> str:
    return "\n".join(output.splitlines()[-lines:])


@pytest.fixture(scope="module")
def npm() -> str:
    """npm, after ``npm ci`` where node_modules is missing or older than package-lock.json."""
    npm = _node()
    lock, installed = JS / "package-lock.json", JS / "node_modules" / ".package-lock.json"
    if not installed.exists() or lock.stat().st_mtime > installed.stat().st_mtime:
        _run(npm, "ci", "--no-audit", "--no-fund", timeout=NPM_CI_TIMEOUT)
    return npm


@pytest.mark.timeout(NPM_CI_TIMEOUT + TEST_TIMEOUT + 30)
def test_node_suite(npm: str) -> None:
    _run(npm, "test", timeout=TEST_TIMEOUT)


@pytest.fixture(scope="module")
def chromium() -> str:
    """The chromium playwright-core drives, checked before ``npm ci`` spends time."""
    chromium = os.environ.get("CHROMIUM", "/usr/bin/chromium")
    if not os.access(chromium, os.X_OK):
        pytest.fail(
            f"the JS browser test needs chromium at {chromium} ($CHROMIUM): apt-get install chromium", pytrace=False
        )
    return chromium


@pytest.mark.timeout(NPM_CI_TIMEOUT + BROWSER_TIMEOUT + 30)
def test_browser_suite(chromium: str, npm: str) -> None:
    _run(npm, "run", "test:browser", timeout=BROWSER_TIMEOUT)


def test_js_hub_harness_starts_from_quickstart() -> None:
    """clients/js/test/hub.mjs's QUICKSTART is quickstart.toml as an object, so JS tests run the documented hub."""
    import json
    import tomllib

    _node()
    script = "import('./test/hub.mjs').then((m) => console.log(JSON.stringify(m.QUICKSTART)))"
    out = subprocess.run(["node", "-e", script], cwd=JS, capture_output=True, text=True, timeout=60, check=True)
    harness = json.loads(out.stdout)
    quickstart = tomllib.loads((JS.parent.parent / "quickstart.toml").read_text())
    # The harness picks a free port and drains fast; everything else is quickstart's.
    quickstart.pop("port")
    harness.pop("drain_window")
    assert harness == quickstart
