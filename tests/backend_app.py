"""A real app backend for tests: an aiohttp app on a free port that receives the hub's webhooks.

It verifies each request's signature (realtime.backend.signing.verify) and records what it got;
``answers`` scripts its statuses (then 200), and :meth:`stop` / :meth:`start` take it down and bring
it back on the same port (deliveries meanwhile fail to connect).
"""

from __future__ import annotations

import asyncio
import re
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
import orjson
from aiohttp import web

from realtime.backend.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

from .redis_server import free_port

#: The signing secret of test backends (and of the hubs' [backend] secrets).
BACKEND_SECRET = "backend-secret-for-tests-0123456789"


@dataclass
class Delivery:
    """One POST the backend received."""

    id: str
    timestamp: str
    signature: str
    body: bytes
    content_type: str
    status: int
    verified: bool
    events: list[dict[str, Any]] = field(default_factory=list)


class Backend:
    """``await Backend().start()``; ``url`` to put in [[webhooks]]; ``deliveries``, ``events``; :meth:`stop`."""

    def __init__(self, secret: str = BACKEND_SECRET) -> None:
        self.secret = secret.encode()
        self.port = free_port()
        self.deliveries: list[Delivery] = []
        #: Statuses to answer, in order; 200 once empty.
        self.answers: deque[int] = deque()
        #: Seconds to wait before answering, in order; at once once empty.
        self.delays: deque[float] = deque()
        self._runner: web.AppRunner | None = None
        self._changed = asyncio.Event()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/realtime/events"

    @property
    def events(self) -> list[dict[str, Any]]:
        """Every event of the deliveries answered 2xx, in arrival order."""
        return [e for d in self.deliveries if 200 <= d.status < 300 for e in d.events]

    def named(self, name: str) -> list[dict[str, Any]]:
        return [e for e in self.events if e["name"] == name]

    async def receive(self, request: web.Request) -> web.Response:
        body = await request.read()
        timestamp = request.headers.get(TIMESTAMP_HEADER, "")
        signature = request.headers.get(SIGNATURE_HEADER, "")
        ok = verify([self.secret], timestamp, signature, body, now=time.time())
        content_type = request.headers.get("Content-Type", "")
        doc = msgpack.unpackb(body) if content_type == "application/msgpack" else orjson.loads(body)
        status = self.answers.popleft() if self.answers else 200
        if self.delays:
            await asyncio.sleep(self.delays.popleft())
        self.deliveries.append(
            Delivery(
                request.headers.get(ID_HEADER, ""), timestamp, signature, body, content_type, status, ok, doc["events"]
            )
        )
        self._changed.set()
        return web.Response(status=status)

    async def start(self) -> Backend:
        app = web.Application()
        app.router.add_post("/realtime/events", self.receive)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        await web.TCPSite(self._runner, "127.0.0.1", self.port).start()
        return self

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def wait_for(self, name: str, n: int = 1, timeout: float = 10.0, **match: Any) -> list[dict[str, Any]]:
        """The first ``n`` delivered events named ``name`` whose fields equal ``match``; AssertionError after ``timeout``."""
        deadline = time.monotonic() + timeout
        while True:
            found = [e for e in self.named(name) if all(e.get(k) == v for k, v in match.items())]
            if len(found) >= n:
                return found
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {n} {name} {match}: got {self.events}")
            self._changed.clear()
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                pass

    async def wait_deliveries(self, n: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while len(self.deliveries) < n:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"timed out waiting for {n} deliveries: got {len(self.deliveries)}")
            self._changed.clear()
            try:
                async with asyncio.timeout(left):
                    await self._changed.wait()
            except TimeoutError:
                pass


def doc_block(tag: str, lang: str) -> str:
    """The one code block of docs/integration.md fenced as ``lang tag``."""
    text = (Path(__file__).resolve().parent.parent / "docs" / "integration.md").read_text()
    [block] = re.findall(rf"```{lang} {tag}\n(.*?)```", text, re.S)
    return str(block)


def catalogue() -> dict[str, dict[str, Any]]:
    """docs/integration.md's event catalogue: event name -> its example body."""
    events = [orjson.loads(line) for line in doc_block("event-catalogue", "json").splitlines() if line.strip()]
    return {event["name"]: event for event in events}
