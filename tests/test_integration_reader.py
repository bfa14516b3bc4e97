"""docs/integration.md read by a backend developer: docs/examples/backend.mjs, written from the docs alone
(node:http, no framework), against a real hub process configured from the docs' TOML examples and driven
by the Python SDK: the connect, subscribe and publish proxies, rpc, webhooks (signatures, dedup by id) and
the offline push hook."""

from __future__ import annotations

import asyncio
import json
import os
import re
import shutil
import tomllib
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from realtime.client import Client, ConnectionClosed, ReplyError

from .helpers import start_serve

ROOT = Path(__file__).resolve().parent.parent
BACKEND = ROOT / "docs" / "examples" / "backend.mjs"
SECRET = "a-long-random-secret"


@pytest.fixture(autouse=True)
def _node() -> None:
    """The example backend is JavaScript: a missing node fails with what to install (CI must run this, never skip)."""
    if shutil.which("node") is None:
        pytest.fail("the example backend needs Node.js: apt-get install nodejs", pytrace=False)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return json.dumps(value)  # strings and numbers are written alike


def hub_toml(backend: str) -> str:
    """The [backend], proxy, webhook and push examples of docs/integration.md as written there, merged into
    one file (each repeats [backend]; two set [namespaces.chat]), with their URLs on the backend."""
    text = (ROOT / "docs" / "integration.md").read_text()
    merged: dict[str, Any] = {}
    for block in re.findall(r"```toml\n(.*?)```", text, re.S):
        if "redis" in block:
            continue  # the event stream example: Redis engine only
        block = block.replace("http://127.0.0.1:9000", backend).replace("https://backend.example", backend)
        for key, value in tomllib.loads(block).items():
            if isinstance(value, dict):
                for name, table in value.items():  # [namespaces.chat] twice: one table
                    target = merged.setdefault(key, {})
                    if isinstance(table, dict):
                        target.setdefault(name, {}).update(table)
                    else:
                        target[name] = table
            else:
                merged[key] = value
    merged["backend"]["secrets"] = [SECRET]
    lines: list[str] = []
    for key, value in merged.items():
        if key == "webhooks":
            for rule in value:
                lines += ["[[webhooks]]", *(f"{k} = {toml_value(v)}" for k, v in rule.items())]
            continue
        nested = {k: v for k, v in value.items() if isinstance(v, dict)}
        lines += [f"[{key}]", *(f"{k} = {toml_value(v)}" for k, v in value.items() if k not in nested)]
        for name, table in nested.items():
            lines += [f"[{key}.{name}]", *(f"{k} = {toml_value(v)}" for k, v in table.items())]
    return "\n".join(lines) + "\n"


class Setup:
    def __init__(self, url: str, backend: str, hub_log: bytes) -> None:
        self.url = url
        self.backend = backend
        self.hub_log = hub_log

    async def log(self) -> dict[str, Any]:
        async with aiohttp.ClientSession() as http, http.get(f"{self.backend}/log") as response:
            result: dict[str, Any] = await response.json()
            return result

    async def wait_log(self, done: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        """The backend's log once ``done`` holds for it (polled: the backend is another process)."""
        async with asyncio.timeout(10):
            for _ in range(1000):
                log = await self.log()
                if done(log):
                    return log
                await asyncio.sleep(0.02)
        raise AssertionError("the backend never saw it")


async def stop(proc: asyncio.subprocess.Process) -> None:
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


@pytest.fixture
async def setup(tmp_path: Path) -> AsyncIterator[Setup]:
    backend = await asyncio.create_subprocess_exec(
        "node",
        str(BACKEND),
        stdout=asyncio.subprocess.PIPE,
        env={**os.environ, "REALTIME_SECRET": SECRET, "LOSE_FIRST_WEBHOOK_ANSWER": "1"},
    )
    hub: asyncio.subprocess.Process | None = None
    try:
        assert backend.stdout is not None
        async with asyncio.timeout(15):
            line = await backend.stdout.readline()
        m = re.fullmatch(rb"backend on (\d+)\n", line)
        assert m, line
        base = f"http://127.0.0.1:{int(m.group(1))}"
        config = tmp_path / "hub.toml"
        config.write_text(hub_toml(base))
        lines: list[bytes] = []
        hub, port = await start_serve("--config", str(config), lines=lines)
        yield Setup(f"ws://127.0.0.1:{port}/ws", base, b"".join(lines))
    finally:
        if hub is not None:
            await stop(hub)
        await stop(backend)


async def test_a_backend_written_from_the_docs(setup: Setup) -> None:
    # A hub whose connections all come through the connect proxy does not warn that it refuses them all.
    assert b"will be refused" not in setup.hub_log

    # Connect proxy: the connect's data carries the app's credentials; an `error` is close 4501, final,
    # with the error's message as the reason.
    with pytest.raises(ConnectionClosed) as refused:
        async with Client(setup.url, data={"user": "alice", "password": "wrong"}):
            pass
    assert (refused.value.code, refused.value.reason) == (4501, "bad credentials")

    async with Client(setup.url, codec="json", data={"user": "alice", "password": "pw-alice"}) as alice:
        # Subscribe proxy: the app's error code and message reach the client as they are.
        with pytest.raises(ReplyError) as denied:
            await alice.subscribe("chat:secret")
        assert denied.value.code == 1403
        room = await alice.subscribe("chat:#alice,bob")

        # Publish proxy: the result's data is published instead of the client's; an error refuses it.
        sent = await alice.publish("chat:#alice,bob", {"text": "hello bob"})
        message = await anext(aiter(room))
        assert message.data == {"text": "hello bob", "checked": True}
        with pytest.raises(ReplyError) as bad_word:
            await alice.publish("chat:#alice,bob", {"text": "darn it"})
        assert bad_word.value.code == 1400

        # RPC: the result's data is the reply; an error is the app's code.
        assert await alice.rpc("profile", {"id": 7}) == {"name": "Bob", "id": 7}
        with pytest.raises(ReplyError) as no_method:
            await alice.rpc("nope", 1)
        assert no_method.value.code == 1404
        await room.unsubscribe()

    log = await setup.wait_log(
        lambda log: len(log["push"]) == 1 and any(e["name"] == "channel.vacated" for e in log["events"])
    )
    assert log["badSignatures"] == 0
    # Every request carries client, user ("" before a proxied connect), node and remote, and its own fields.
    first = log["connect"][0]
    assert first["user"] == "" and first["remote"] == "127.0.0.1" and first["node"]
    assert first["name"] == "python" and first["headers"] == {} and "token" not in first
    assert first["data"] == {"user": "alice", "password": "wrong"}
    assert [s["channel"] for s in log["subscribe"]] == ["chat:secret", "chat:#alice,bob"]
    assert all(s["user"] == "alice" for s in log["subscribe"] + log["publish"] + log["rpc"])
    assert log["publish"][0]["data"] == {"text": "hello bob"}
    assert log["rpc"][0]["method"] == "profile" and log["rpc"][0]["data"] == {"id": 7}

    # Webhooks: the first POST was taken but answered 503, so it came again with the same Realtime-Id
    # (its first event's id) and the same events, which the backend dropped by id.
    assert log["duplicates"] == 1
    assert log["webhookIds"][0] == log["webhookIds"][1] == log["events"][0]["id"]
    names = [e["name"] for e in log["events"]]
    assert names == ["channel.occupied", "message.published", "channel.vacated"]
    published = log["events"][1]
    assert published["user"] == "alice" and published["data"]["data"] == {"text": "hello bob", "checked": True}
    assert published["data"]["offset"] == sent.offset and published["data"]["mid"] == sent.mid

    # Offline push: bob, named by the channel and connected nowhere, gets the message, with its preview.
    (request,) = log["push"]
    (notification,) = request["notifications"]
    assert notification["user"] == "bob" and notification["sender"] == "alice"
    assert notification["channel"] == "chat:#alice,bob" and notification["preview"] == "hello bob"
    assert (notification["mid"], notification["offset"]) == (sent.mid, sent.offset)
    assert notification["unread"] == 1  # no read receipt: every message of the channel, this one included
