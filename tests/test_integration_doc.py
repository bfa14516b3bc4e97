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

from realtime.backend.rules import WebhookRule
from realtime.config import load_settings

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


def test_the_toml_example_loads(tmp_path: Path) -> None:
    [block] = re.findall(r"```toml\n(.*?)```", (ROOT / "docs" / "integration.md").read_text(), re.S)
    path = tmp_path / "hub.toml"
    path.write_text(block + '[namespaces.chat]\nkind = "chat"\n')
    settings = load_settings(env={}, config_file=path)
    (rule,) = settings.webhooks
    assert rule.on == ("channel.occupied", "channel.vacated", "message.published") and rule.namespaces == ("chat",)
    assert settings.backend.timeout == 2.0 and settings.backend.format == "json"


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
