"""The Python blocks of README.md and docs/guide.md run as they stand against a quick-start hub."""

from __future__ import annotations

import asyncio
import contextlib
import io
import re
import textwrap
import uuid
from pathlib import Path
from typing import Any

import pytest

from realtime.client import Client
from realtime.config import load_settings
from realtime.publisher import ApiError, Publisher

from .helpers import HubFactory, RunningHub, make_token

ROOT = Path(__file__).resolve().parent.parent
QUICK = load_settings(env={}, config_file=ROOT / "quickstart.toml")


@pytest.fixture
async def hub(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory(**{f: getattr(QUICK, f) for f in QUICK.__dataclass_fields__ if f not in ("host", "port")})


def python_blocks(doc: str) -> list[str]:
    return re.findall(r"```python\n(.*?)```", (ROOT / doc).read_text(), re.S)


async def run_block(block: str, names: dict[str, Any]) -> str:
    """Run ``block`` as the body of an async function that sees ``names``; what it printed."""
    source = "async def _block():\n" + textwrap.indent(block, "    ")
    scope = dict(names)
    exec(compile(source, "<doc block>", "exec"), scope)
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        async with asyncio.timeout(20):
            await scope["_block"]()
    return out.getvalue()


def token(user: str) -> str:
    assert QUICK.token_secret is not None
    return make_token(user, secret=QUICK.token_secret, info={"name": user})


async def test_readme_features_block(hub: RunningHub) -> None:
    [block] = [b for b in python_blocks("README.md") if 'token("alice")' in b]
    out = await run_block(block, {"Client": Client, "url": hub.url, "token": token, "uuid": uuid})
    lines = out.splitlines()
    assert lines[0].startswith("{'text': 'hi alice'} bob 01")
    assert "'clients': 2" in lines[1] or "clients=2" in lines[1]
    assert lines[2].startswith("Joined(")
    assert lines[3] == "{'home': 1, 'away': 0, 'minute': 12} 2"


async def test_guide_publisher_block(hub: RunningHub) -> None:
    [block] = python_blocks("docs/guide.md")
    names = {"Publisher": Publisher, "ApiError": ApiError, "url": hub.http_url, "api_key": "quickstart-key"}
    assert await run_block(block, names) == ""
    async with Publisher(hub.http_url, "quickstart-key") as pub:
        history = await pub.history("news")
    assert [p.data for p in history] == [{"title": "hello"}]
