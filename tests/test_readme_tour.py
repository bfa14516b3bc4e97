"""The README's tour scripts run against a real hub and do what the README says."""

from __future__ import annotations

import asyncio
import json
import re
import sys
from pathlib import Path

import pytest
from websockets.asyncio.client import connect

from realtime.config import load_settings

from .helpers import HubFactory, RunningHub

ROOT = Path(__file__).resolve().parent.parent
SCRIPTS = ROOT / "scripts"


@pytest.fixture
async def hub(hub_factory: HubFactory) -> RunningHub:
    """A hub configured like the README's quick start (quickstart.toml)."""
    quick = load_settings(env={}, config_file=ROOT / "quickstart.toml")
    return await hub_factory(**{f: getattr(quick, f) for f in quick.__dataclass_fields__ if f not in ("host", "port")})


async def run_script(name: str, url: str) -> str:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(SCRIPTS / name),
        url,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
        cwd=ROOT,
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


async def test_features_tour(hub: RunningHub) -> None:
    out = await run_script("tour_features.py", hub.url)
    assert "chat: {'text': 'hi alice'} from bob mid " in out
    assert "receipts: {'alice': 1}" in out
    assert "presence: join guest-" in out
    assert "live: {'home': 1, 'away': 0, 'minute': 12} version 2" in out


async def test_readme_curl_commands(hub: RunningHub) -> None:
    """Every curl line of the README's HTTP API example succeeds against a quick-start hub."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split('K="Authorization: apikey quickstart-key"', 1)[1].split("```", 1)[0]
    script = 'K="Authorization: apikey quickstart-key"\n' + block.replace("\\\n", " ")
    script = script.replace("localhost:8000", f"127.0.0.1:{hub.port}").replace("curl -s ", "curl -sf ")
    assert script.count("curl -sf") >= 7
    proc = await asyncio.create_subprocess_exec(
        "bash", "-ec", script, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    async with asyncio.timeout(20):
        out, _ = await proc.communicate()
    assert proc.returncode == 0, out.decode()
    assert b'"mid":' in out and b'"clients":' in out and b'"version":' in out


#: The values of the README's JSON transcript that differ on every run (the README says which).
_VARYING = re.compile(r'"(client|mid|version)":"[^"]*"|"epoch":"[^"]+"|"time":\d+')


def _normalised(line: str) -> str:
    return _VARYING.sub(lambda m: m[0].split(":", 1)[0] + ":*", line)


def readme_transcript() -> tuple[list[str], list[str]]:
    """The README's JSON exchange: the client's lines (``>``) and the hub's (``<``)."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("With the JSON subprotocol, one JSON object per line", 1)[1]
    block = block.split("```text\n", 1)[1].split("```", 1)[0]
    lines = block.splitlines()
    assert all(line[:2] in ("> ", "< ") for line in lines), lines
    return [x[2:] for x in lines if x[0] == ">"], [x[2:] for x in lines if x[0] == "<"]


async def test_readme_json_transcript_is_what_the_hub_sends(hub: RunningHub) -> None:
    """The README's client lines, sent as they stand, get the README's hub lines back (varying values aside)."""
    sent, expected = readme_transcript()
    assert len(sent) == 3 and len(expected) == 4
    got: list[str] = []
    async with connect(hub.url, subprotocols=["realtime.v1.json"]) as ws:  # type: ignore[list-item]
        assert ws.subprotocol == "realtime.v1.json"
        for line in sent:
            await ws.send(line)
        async with asyncio.timeout(10):
            while len(got) < len(expected):
                frame = await ws.recv()
                assert isinstance(frame, str)
                got += [line for line in frame.split("\n") if line]
    assert [_normalised(line) for line in got] == [_normalised(line) for line in expected]
    # what varies still agrees between the lines, as in the README: one connection, one message
    connected, _, pub, published = (json.loads(line) for line in got)
    assert pub["info"]["client"] == connected["result"]["client"]
    assert {k: pub[k] for k in published["result"]} == published["result"]


async def test_raw_json_tour_prints_the_readme_transcript(hub: RunningHub) -> None:
    sent, expected = readme_transcript()
    out = (await run_script("tour_raw_json.py", hub.url)).splitlines()
    assert [x[2:] for x in out if x.startswith("> ")] == sent
    assert sorted(_normalised(x[2:]) for x in out if x.startswith("< ")) == sorted(map(_normalised, expected))
