"""docs/integration.md, "Proxies" and "RPC": every request body shown is what the hub sends (the same
keys, values of the same types), and every answer shown does what the text says, against a real hub."""

from __future__ import annotations

import json
import re
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs
import pytest

from protocol.messages import Connect, ConnectResult, Ping, Publish, Rpc, RpcResult, Subscribe
from realtime.namespaces import Namespace

from .helpers import HubFactory, namespaces, unpack
from .proxy_backend import BACKEND_SECRET, Backend, Reply
from .wsclient import RawClient, value

DOC = Path(__file__).resolve().parent.parent / "docs" / "integration.md"
EXAMPLE = re.compile(r"<!-- proxy-example: (\w+) (request|answer) -->\n```json\n(.*?)\n```", re.S)


def examples() -> dict[tuple[str, str], Any]:
    found = {(name, kind): json.loads(body) for name, kind, body in EXAMPLE.findall(DOC.read_text())}
    assert len(found) == 10, sorted(found)
    return found


def same_shape(sent: dict[str, Any], shown: dict[str, Any]) -> None:
    assert sorted(sent) == sorted(shown)
    for key, shown_value in shown.items():
        assert type(sent[key]) is type(shown_value), key


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    await b.start()
    yield b
    await b.stop()


async def test_the_documented_bodies_are_what_the_hub_sends_and_takes(
    hub_factory: HubFactory, backend: Backend
) -> None:
    doc = examples()
    connect_answer = doc["connect", "answer"]
    connect_answer["result"]["expires"] = int(time.time()) + 1  # due at once: the refresh proxy is asked
    refresh_answer = doc["refresh", "answer"]
    refresh_answer["result"]["expires"] = int(time.time()) + 3600
    for name in ("connect", "refresh", "subscribe", "publish", "rpc"):
        backend.on(f"/{name}", Reply(doc[name, "answer"]))
    hub = await hub_factory(
        token_secret=None,  # no token key: the connect's token is the app's session token
        backend_secrets=(BACKEND_SECRET,),
        proxy_connect=backend.url("/connect"),
        proxy_refresh=backend.url("/refresh"),
        proxy_rpc=backend.url("/rpc"),
        proxy_headers=("Cookie",),
        namespaces=namespaces(
            Namespace(
                name="chat",
                kind="chat",
                subscribe="anyone",
                subscribe_proxy=backend.url("/subscribe"),
                publish_proxy=backend.url("/publish"),
            )
        ),
    )
    shown_connect = doc["connect", "request"]
    headers = {"Cookie": shown_connect["headers"]["Cookie"]}
    async with await RawClient.open(hub.url, connect_first=False, additional_headers=headers) as c:
        connect = Connect(0, shown_connect["token"], "swift", "1.2.0", msgpack.packb(shown_connect["data"]))
        result = (await c.command(connect)).result
        assert isinstance(result, ConnectResult) and result.user == "alice"
        same_shape(backend.calls("/connect")[0].body, shown_connect)
        assert backend.calls("/connect")[0].body["headers"] == headers
        (refresh,) = await backend.wait_calls("/refresh", 1)
        same_shape(refresh.body, doc["refresh", "request"])

        assert (await c.command(Subscribe(0, "chat:lobby"))).error is None
        same_shape(backend.calls("/subscribe")[0].body, doc["subscribe", "request"])

        shown = doc["publish", "request"]
        assert (await c.command(Publish(0, "chat:lobby", msgpack.packb(shown["data"]), key="k1"))).error is None
        same_shape(backend.calls("/publish")[0].body, shown)
        pub = await c.publication()
        assert value(pub) == doc["publish", "answer"]["result"]["data"]
        # The subscription's info (the subscribe answer's) rides on what the connection publishes there.
        assert pub.info is not None and unpack(pub.info.info or b"") == doc["subscribe", "answer"]["result"]["info"]

        shown = doc["rpc", "request"]
        reply = await c.command(Rpc(0, shown["method"], msgpack.packb(shown["data"])))
        assert isinstance(reply.result, RpcResult)
        assert unpack(reply.result.data) == doc["rpc", "answer"]["result"]["data"]
        same_shape(backend.calls("/rpc")[0].body, shown)
        assert (await c.command(Ping(0))).error is None
