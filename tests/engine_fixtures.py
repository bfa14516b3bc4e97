"""What the engine contract tests share: the engines under test and what they deliver.

``engine`` gives a memory engine, a Redis engine (on a private redis-server,
with a key prefix of its own per test) and a Redis Cluster engine; ``nodes``
makes several started Redis engines of one deployment. Test modules import
the fixtures they use (and ``redis_cluster``, which ``engine`` asks for).
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest

from protocol.messages import Publication
from realtime.engines.base import Engine, HistoryOptions
from realtime.engines.memory import MemoryEngine
from realtime.engines.redis import RedisEngine

from .conftest import MS
from .redis_cluster import LocalCluster, redis_cluster  # noqa: F401  (a fixture)
from .redis_server import RedisServer

KEEP = HistoryOptions(size=10, ttl=60)


#: Longest wait for something another task or Redis delivers.
WAIT = 5000 * MS


class Recorder:
    """The node side: collects what the engine delivers; :meth:`until` awaits a condition."""

    def __init__(self) -> None:
        self.pubs: list[Publication] = []
        self.events: list[tuple[str, bytes]] = []
        self.controls: list[bytes] = []
        self.resyncs = 0
        self.arrived = asyncio.Event()
        self._changed = asyncio.Event()

    def _note(self) -> None:
        self._changed.set()

    def on_publication(self, pub: Publication) -> None:
        self.pubs.append(pub)
        self.arrived.set()
        self._note()

    def on_event(self, channel: str, event: bytes) -> None:
        self.events.append((channel, event))
        self._note()

    def on_control(self, message: bytes) -> None:
        self.controls.append(message)
        self._note()

    def on_resync(self) -> None:
        self.resyncs += 1
        self._note()

    async def until(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


@pytest.fixture
def delivered() -> Recorder:
    return Recorder()


def unique_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


@pytest.fixture(params=["memory", "redis", "redis-cluster"])
async def engine(request: pytest.FixtureRequest, delivered: Recorder) -> AsyncIterator[Engine]:
    eng: Engine
    if request.param == "memory":
        eng = MemoryEngine()
    elif request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        eng = RedisEngine(server.url, prefix=unique_prefix())
    else:
        cluster: LocalCluster = request.getfixturevalue("redis_cluster")
        eng = RedisEngine(cluster.url, prefix=unique_prefix(), cluster=True)
    await eng.start(delivered)
    yield eng
    await eng.close()


class Node:
    """A started Redis engine and what it delivered."""

    def __init__(self, engine: RedisEngine) -> None:
        self.engine = engine
        self.recorder = Recorder()


Nodes = Callable[..., Awaitable[RedisEngine]]


#: Engine -> its node, for the tests' eyes.
_NODES: dict[int, Node] = {}


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[Nodes]:
    """Make started Redis engines sharing one Redis and one prefix (nodes of one deployment)."""
    prefix = unique_prefix()
    made: list[RedisEngine] = []

    async def start(**options: Any) -> RedisEngine:
        eng = RedisEngine(redis_server.url, prefix=prefix, **options)
        made.append(eng)
        node = _NODES[id(eng)] = Node(eng)
        await eng.start(node.recorder)
        return eng

    yield start
    for eng in made:
        await eng.close()
        _NODES.pop(id(eng), None)


def recorder(eng: RedisEngine) -> Recorder:
    return _NODES[id(eng)].recorder
