"""Shared fixtures: real hubs on free ports, redis-server processes, cleaned up after each test.

Helpers (tokens, test hubs, waits, clients) live in tests/helpers.py. A test that starts a
redis-server (through the ``redis_server`` or ``redis_cluster`` fixture, or by itself) is marked
``redis``, so ``python -m pytest -m "not redis"`` runs the in-process part alone; a test that
starts one without the marker fails.
"""

from __future__ import annotations

import dataclasses
import gc
import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from hypothesis import settings

from realtime.config import Settings
from realtime.engines.base import Engine
from realtime.engines.memory import MemoryEngine
from realtime.engines.redis import RedisEngine

from . import redis_server as redis_processes
from .helpers import RECORDERS, TEST_SECRET, HubFactory, Nodes, Recorder, RunningHub, namespaces, unique_prefix
from .redis_cluster import LocalCluster
from .redis_server import RedisServer

#: Fixtures that start redis-server processes: a test that uses one (directly or through
#: another fixture) is marked ``redis``.
REDIS_FIXTURES = frozenset({"redis_server", "redis_cluster"})

# Property tests (tests/test_codec_properties.py) stay bounded: 200 examples a test, no deadline (a
# shared CI machine's pauses are not failures), no example database written into the work tree.
# HYPOTHESIS_PROFILE=thorough runs many more by hand.
settings.register_profile("realtime", max_examples=200, deadline=None, database=None, print_blob=True)
settings.register_profile("thorough", parent=settings.get_profile("realtime"), max_examples=5000)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "realtime"))


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if REDIS_FIXTURES.intersection(getattr(item, "fixturenames", ())):
            item.add_marker(pytest.mark.redis)


@pytest.fixture(autouse=True, scope="module")
def _frozen_heap() -> Iterator[None]:
    """After each module, what outlived it (pytest's reports, modules, session fixtures) is frozen.

    The tests, their hubs and their backends share one event loop, and a full collection of the
    whole run's heap (near 700,000 objects by the end) stopped it for up to 0.5 s: long enough to
    time out a backend call a test expected answered. Frozen objects are never scanned again, so
    a collection scans what the current module made, as the hub's own ``gc.freeze`` does at start.
    """
    yield
    gc.collect()
    gc.freeze()


@pytest.hookimpl(tryfirst=True)
def pytest_runtest_setup(item: pytest.Item) -> None:
    # Before the test's fixtures are set up: they may start Redis too.
    redis_processes.allowed = item.get_closest_marker("redis") is not None


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


@pytest.fixture(scope="session")
def redis_cluster() -> Iterator[LocalCluster]:
    """A 3-master Redis Cluster shared by the session (``.url`` names one node); forming one takes
    seconds. Tests keep to their own channel and key prefix, and a test that moves slots puts them back."""
    cluster = LocalCluster()
    try:
        cluster.start()
        yield cluster
    finally:
        cluster.cleanup()


@pytest.fixture
def delivered() -> Recorder:
    return Recorder()


@pytest.fixture(
    params=[
        "memory",
        pytest.param("redis", marks=pytest.mark.redis),
        pytest.param("redis-cluster", marks=pytest.mark.redis),
    ]
)
async def engine(request: pytest.FixtureRequest, delivered: Recorder) -> AsyncIterator[Engine]:
    """Each engine under the contract: memory, Redis and Redis Cluster (a key prefix of its own per test)."""
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


@pytest.fixture
async def nodes(redis_server: RedisServer) -> AsyncIterator[Nodes]:
    """Make started Redis engines sharing one Redis and one prefix (nodes of one deployment);
    ``recorder(engine)`` is what each delivered."""
    prefix = unique_prefix()
    made: list[RedisEngine] = []

    async def start(**options: Any) -> RedisEngine:
        eng = RedisEngine(redis_server.url, prefix=prefix, **options)
        made.append(eng)
        rec = RECORDERS[id(eng)] = Recorder()
        await eng.start(rec)
        return eng

    yield start
    for eng in made:
        await eng.close()
        RECORDERS.pop(id(eng), None)
