"""Shared fixtures: real hubs on free ports, cleaned up after each test."""

from __future__ import annotations

import dataclasses
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import jwt
import pytest

from realtime.config import Settings
from realtime.namespaces import Namespace, Namespaces
from realtime.server import WS_PATH, HubServer

from .redis_server import RedisServer

#: The HS256 secret test hubs verify tokens with (see :func:`make_token`).
TEST_SECRET = "test-secret-that-is-long-enough-for-hs256!!"
#: Test hubs: anonymous clients allowed, and channels without a colon open to
#: everyone for subscribing and publishing, so protocol tests need no tokens.
OPEN_DEFAULT = Namespace(subscribe="anyone", publish="clients")


def namespaces(*extra: Namespace) -> Namespaces:
    """The open default namespace plus ``extra``."""
    return Namespaces([OPEN_DEFAULT, *extra])


def make_token(user: str, *, secret: str = TEST_SECRET, ttl: float | None = 3600, **claims: Any) -> str:
    """An HS256 connection (or, with ``channel=``, subscription) token for ``user``."""
    now = time.time()
    payload: dict[str, Any] = {"sub": user, "iat": int(now), **claims}
    if ttl is not None:
        payload.setdefault("exp", int(now + ttl))
    return jwt.encode(payload, secret, algorithm="HS256")


#: One unit of time for tests (seconds); waits are multiples of it.
MS = 0.001


class RunningHub:
    """A hub served in this process; ``stop``/``start`` restart it on the same port."""

    def __init__(self, settings: Settings) -> None:
        self.server = HubServer(settings)
        self.running = False

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hub(self):  # type: ignore[no-untyped-def]
        return self.server.hub

    async def start(self) -> None:
        if not self.running:
            # A fresh app (and a fresh memory engine) each time, as after a process restart.
            self.server = HubServer(dataclasses.replace(self.server.settings, port=self.port))
            await self.server.start()
            self.running = True

    async def stop(self, drain_window: float = 0.0) -> None:
        if self.running:
            self.running = False
            await self.server.stop(drain_window)


HubFactory = Callable[..., Awaitable[RunningHub]]


@pytest.fixture
async def hub_factory() -> AsyncIterator[HubFactory]:
    hubs: list[RunningHub] = []

    async def factory(**overrides: Any) -> RunningHub:
        base = Settings(
            host="127.0.0.1",
            port=0,
            drain_window=0.0,
            allow_anonymous=True,
            token_secret=TEST_SECRET,
            namespaces=namespaces(),
        )
        settings = dataclasses.replace(base, **overrides)
        running = RunningHub(settings)
        await running.start()
        hubs.append(running)
        return running

    yield factory
    for running in hubs:
        await running.stop()


@pytest.fixture
async def hub(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory()


@pytest.fixture
def redis_server() -> Iterator[RedisServer]:
    """A private redis-server on a free port (``.url``), stopped after the test."""
    server = RedisServer()
    server.start()
    yield server
    server.cleanup()
