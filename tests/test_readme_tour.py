"""The README's tour scripts run against a real hub and do what the README says."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

import pytest

from realtime.config import load_settings

from .conftest import HubFactory, RunningHub

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


@pytest.fixture
async def hub(hub_factory: HubFactory) -> RunningHub:
    """A hub configured like the README's quick start (quickstart.toml)."""
    quick = load_settings(env={}, config_file=ROOT / "quickstart.toml")
    return await hub_factory(**{f: getattr(quick, f) for f in quick.__dataclass_fields__ if f not in ("host", "port")})


async def run_script(name: str, url: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, str(SCRIPTS / name), url,
        stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT,
    )
    async with asyncio.timeout(20):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    return out.decode()


async def test_python_client_tour(hub: RunningHub) -> None:
    out = await run_script("tour_client.py", hub.url)
    assert "published at offset 1" in out
    assert "received {'text': 'hello from Python'} offset 1" in out


async def test_raw_json_tour(hub: RunningHub) -> None:
    out = await run_script("tour_raw_json.py", hub.url)
    assert '"push":"pub"' in out
    assert '"data":{"text":"hello from JSON"}' in out
    assert '"id":3,"result":{"offset":1' in out
