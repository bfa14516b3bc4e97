"""The signature checks of docs/integration.md, in Python and JavaScript, run against real signed deliveries."""

from __future__ import annotations

import asyncio
import base64
import json
import re
import shutil
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest

from realtime.backend.options import PushOptions, StreamOptions
from realtime.backend.rules import WebhookRule
from realtime.config import Settings, load_settings

from .backend_app import BACKEND_SECRET, Backend, Delivery, doc_block
from .helpers import HubFactory, namespaces, user

#: Runs the documented JavaScript ``verify`` on the delivery given as JSON on stdin.
ROOT = Path(__file__).resolve().parent.parent
JS_HARNESS = """
let input = "";
process.stdin.on("data", (chunk) => (input += chunk));
process.stdin.on("end", () => {
  const d = JSON.parse(input);
  const body = Buffer.from(d.body, "base64");
  const headers = d.headers;
  const tampered = Buffer.concat([body, Buffer.from(" ")]);
  const stale = { ...headers, "realtime-timestamp": String(Number(headers["realtime-timestamp"]) - 3600) };
  console.log(JSON.stringify([
    verify(d.secret, headers, body),
    verify("another-secret-of-sufficient-length", headers, body),
    verify(d.secret, headers, tampered),
    verify(d.secret, stale, body),
  ]));
});
"""


@pytest.fixture
async def delivery(hub_factory: HubFactory) -> AsyncIterator[Delivery]:
    """A real webhook POST, as the backend received it."""
    backend = await Backend().start()
    try:
        hub = await hub_factory(
            namespaces=namespaces(),
            backend_secrets=(BACKEND_SECRET, "an-older-secret-still-accepted"),
            webhooks=(WebhookRule(backend.url, ("message.published",)),),
        )
        alice = await user(hub, "alice", "news")
        await alice.publish("news", {"text": "signed"})
        await backend.wait_for("message.published")
        await alice.close()
        yield backend.deliveries[0]
    finally:
        await backend.stop()


#: Every TOML example of docs/integration.md.
TOML_BLOCKS: list[str] = re.findall(r"```toml\n(.*?)```", (ROOT / "docs" / "integration.md").read_text(), re.S)


def load_example(block: str, tmp_path: Path) -> Settings:
    """``block`` as a whole hub config file: with the chat namespace it names when it does not declare it."""
    path = tmp_path / "hub.toml"
    extra = "" if "[namespaces.chat]" in block else '\n[namespaces.chat]\nkind = "chat"\n'
    path.write_text(block + extra)
    return load_settings(env={}, config_file=path)


@pytest.mark.parametrize("block", TOML_BLOCKS, ids=[f"block{i}" for i in range(len(TOML_BLOCKS))])
def test_every_toml_example_loads(block: str, tmp_path: Path) -> None:
    settings = load_example(block, tmp_path)
    assert "chat" in settings.namespaces


def example(header: str) -> str:
    """The TOML example holding ``header`` (a table header such as ``[push]``)."""
    (block,) = [b for b in TOML_BLOCKS if re.search(rf"^{re.escape(header)}$", b, re.M)]
    return block


def test_the_toml_examples_say_what_the_text_says(tmp_path: Path) -> None:
    assert len(TOML_BLOCKS) >= 3  # webhooks, event stream, offline push
    hooks = load_example(example("[[webhooks]]"), tmp_path)
    (rule,) = hooks.webhooks
    assert rule.on == ("channel.occupied", "channel.vacated", "message.published") and rule.namespaces == ("chat",)
    assert hooks.backend.timeout == 2.0 and hooks.backend.format == "json"
    stream = load_example(example("[events]"), tmp_path).events
    assert stream == StreamOptions(True, ("message.published", "user.offline"), ("chat",), 100_000)
    pushing = load_example(example("[push]"), tmp_path)
    assert pushing.push == PushOptions("http://127.0.0.1:9000/realtime/push", interval=30.0, batch=100, delay=0.1)
    chat = pushing.namespaces["chat"]
    assert chat.push and chat.presence and chat.push_preview == "text"
    assert (chat.push_text_field, chat.push_preview_length) == ("text", 100)


def headers_of(d: Delivery) -> dict[str, str]:
    return {"Realtime-Id": d.id, "Realtime-Timestamp": d.timestamp, "Realtime-Signature": d.signature}


def python_verify() -> Callable[..., bool]:
    scope: dict[str, Any] = {}
    exec(compile(doc_block("verify-signature", "python"), "<integration.md>", "exec"), scope)
    return scope["verify"]  # type: ignore[no-any-return]


def test_the_python_example_verifies_a_real_delivery(delivery: Delivery) -> None:
    verify = python_verify()
    headers = headers_of(delivery)
    assert delivery.signature.count("v1=") == 2  # one entry per secret
    assert verify(BACKEND_SECRET.encode(), headers, delivery.body)
    assert verify(b"an-older-secret-still-accepted", headers, delivery.body)
    assert not verify(b"another-secret-of-sufficient-length", headers, delivery.body)
    assert not verify(BACKEND_SECRET.encode(), headers, delivery.body + b" ")
    stale = {**headers, "Realtime-Timestamp": str(int(delivery.timestamp) - 3600)}
    assert not verify(BACKEND_SECRET.encode(), stale, delivery.body)


async def test_the_javascript_example_verifies_a_real_delivery(delivery: Delivery, tmp_path: Path) -> None:
    node = shutil.which("node")
    assert node is not None, "Node.js runs the JavaScript example"
    script = tmp_path / "verify.js"
    script.write_text(doc_block("verify-signature", "js") + JS_HARNESS)
    given = {
        "secret": BACKEND_SECRET,
        "headers": {k.lower(): v for k, v in headers_of(delivery).items()},
        "body": base64.b64encode(delivery.body).decode(),
    }
    proc = await asyncio.create_subprocess_exec(
        node, str(script), stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE
    )
    out, _ = await asyncio.wait_for(proc.communicate(json.dumps(given).encode()), 30)
    assert proc.returncode == 0
    assert json.loads(out) == [True, False, False, False]
