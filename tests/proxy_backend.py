"""A real app backend for the proxy and rpc tests: an aiohttp server on a free loopback port
(the webhooks' receiver is tests/backend_app.py).

Each path answers with what the test set in :attr:`Backend.answers` (a function of the decoded
request body returning an :class:`Reply`), and every request is recorded (headers, raw body,
decoded body) so a test can check what the hub sent, and verify its signature as a backend would.
"""

from __future__ import annotations

import asyncio
import json
import socket
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs
from aiohttp import web

from realtime.backend.signing import ID_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify

from .backend_app import BACKEND_SECRET as BACKEND_SECRET  # one secret for every test backend


@dataclass
class Reply:
    """What a path answers: a body (``None``: empty), its status and format; ``hang``: never answer."""

    body: Any = None
    status: int = 200
    format: str = "json"
    hang: bool = False


@dataclass
class Request:
    path: str
    headers: dict[str, str]
    raw: bytes
    body: Any


Answer = Callable[[Any], Reply]


@dataclass
class Backend:
    port: int = 0
    answers: dict[str, Answer] = field(default_factory=dict)
    requests: list[Request] = field(default_factory=list)
    arrived: asyncio.Event = field(default_factory=asyncio.Event)
    _release: asyncio.Event = field(default_factory=asyncio.Event)
    _runner: web.AppRunner | None = None

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def on(self, path: str, answer: Answer | Reply) -> None:
        if isinstance(answer, Reply):
            reply = answer

            def always(body: Any) -> Reply:
                return reply

            answer = always
        self.answers[path] = answer

    def calls(self, path: str) -> list[Request]:
        return [r for r in self.requests if r.path == path]

    def verified(self, request: Request, now: float) -> bool:
        """What a backend checks: the signature over the raw body, under its secret."""
        h = request.headers
        return verify([BACKEND_SECRET.encode()], h[TIMESTAMP_HEADER], h[SIGNATURE_HEADER], request.raw, now=now)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        raw = await request.read()
        kind = request.content_type
        body = msgpack.unpackb(raw, raw=False) if kind == "application/msgpack" else json.loads(raw)
        self.requests.append(Request(request.path, dict(request.headers), raw, body))
        self.arrived.set()
        assert request.headers[ID_HEADER]
        answer = self.answers.get(request.path)
        reply = answer(body) if answer is not None else Reply(status=404)
        if reply.hang:
            await self._release.wait()
        if reply.body is None:
            return web.Response(status=reply.status)
        if reply.format == "msgpack":
            return web.Response(status=reply.status, body=msgpack.packb(reply.body), content_type="application/msgpack")
        return web.Response(status=reply.status, text=json.dumps(reply.body), content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self._handle)
        self._runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", self.port)
        await site.start()
        self.port = self._runner.addresses[0][1]

    async def stop(self) -> None:
        self._release.set()
        if self._runner is not None:
            await self._runner.cleanup()

    async def wait_calls(self, path: str, count: int, timeout: float = 5.0) -> list[Request]:
        """Wait until ``path`` got at least ``count`` requests."""
        async with asyncio.timeout(timeout):
            while len(self.calls(path)) < count:
                self.arrived.clear()
                await self.arrived.wait()
        return self.calls(path)


def closed_port() -> int:
    """A loopback port nothing listens on (connections to it are refused)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])
