"""Faults on the Redis side and of hub nodes, with real processes throughout.

* Redis restarted mid-stream, with and without persistence: nodes keep their
  WebSocket clients, publishes fail with a temporary error meanwhile, and
  afterwards clients get what they missed (AOF on) or are told to recover and
  learn that they could not (AOF off); nothing arrives twice. The nodes reach
  Redis through a TCP proxy that keeps refusing them for a moment after Redis
  is back, so that something can be published that they miss.
* Redis unreachable when a node starts (``python -m realtime serve``).
* A node SIGKILLed: its users leave presence within the presence TTL, and a
  Python client behind a small load balancer reconnects to another node and
  recovers.
"""

from __future__ import annotations

import asyncio
import logging
import os
import re
import signal
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped]
import pytest
from redis.asyncio import Redis

from protocol.codes import ErrorCode
from protocol.messages import Join, Leave, Publish, StreamPosition, Subscribe, SubscribeResult, Unsubscribed
from realtime.auth import ApiKey
from realtime.client import Client
from realtime.engines.redis import RedisEngine
from realtime.publisher import ApiError, Publisher

from .helpers import REDIS_WAIT, TEST_SECRET, HubFactory, Proxy, RunningHub, make_token, until
from .redis_server import RedisServer
from .wsclient import RawClient, value

#: Every test here runs against real redis-server processes.
pytestmark = pytest.mark.redis

API = ApiKey("backend", "faults-api-secret", frozenset({"*"}))
HISTORY = (100, 300)  # the default namespace's history: size, ttl (the Settings defaults)


async def get(url: str) -> tuple[int, dict[str, Any]]:
    async with aiohttp.ClientSession() as s, s.get(url) as r:
        return r.status, await r.json()


async def readyz(hub_url: str) -> int:
    return (await get(hub_url + "/readyz"))[0]


async def wait_ready(*hub_urls: str, ready: bool = True) -> None:
    deadline = time.monotonic() + REDIS_WAIT
    for url in hub_urls:
        while (await readyz(url) == 200) != ready:
            assert time.monotonic() < deadline, f"{url} /readyz did not turn {'ready' if ready else 'not ready'}"
            await asyncio.sleep(0.02)


# --- Redis restarted mid-stream --------------------------------------------------


@pytest.mark.parametrize("persistence", [True, False], ids=["aof", "no-persistence"])
async def test_redis_restarted_mid_stream(persistence: bool, hub_factory: HubFactory) -> None:
    server = RedisServer(None, *(("--appendonly", "yes", "--appendfsync", "always") if persistence else ()))
    server.start()
    proxy = Proxy(server.port)
    await proxy.start()
    direct = Redis(host="127.0.0.1", port=server.port)
    hubs: list[RunningHub] = []
    clients: list[RawClient] = []
    try:
        url = f"redis://127.0.0.1:{proxy.port}/0"
        hubs = [await hub_factory(redis=url, redis_prefix="faults", api_keys=(API,)) for _ in range(2)]
        subs = [await RawClient.open(h.url) for h in hubs]
        pub = await RawClient.open(hubs[0].url)
        clients = [*subs, pub]
        for s in subs:
            await s.subscribe("feed")
        for i in (1, 2, 3):
            await pub.publish("feed", i)
        for s in subs:
            got = [await s.publication() for _ in range(3)]
            assert [(p.offset, value(p)) for p in got] == [(1, 1), (2, 2), (3, 3)]
        epoch = got[0].epoch

        proxy.refusing = True  # from now until heal(), the nodes cannot reach Redis
        await asyncio.to_thread(server.stop)
        await wait_ready(*(h.http_url for h in hubs), ready=False)
        for h in hubs:
            status, body = await get(h.http_url + "/readyz")
            assert status == 503 and body["status"] == "not ready" and "Redis" in body["reason"]
            assert (await get(h.http_url + "/healthz"))[0] == 200
        reply = await pub.command(Publish(0, "feed", msgpack.packb("lost")))
        assert reply.error is not None and reply.error.code == ErrorCode.NOT_AVAILABLE
        assert ErrorCode(reply.error.code).temporary
        async with Publisher(hubs[1].http_url, API.key) as api:
            with pytest.raises(ApiError) as info:
                await api.publish("feed", "lost too")
            assert info.value.temporary

        await asyncio.to_thread(server.start)
        engine = hubs[0].hub.engine
        assert isinstance(engine, RedisEngine)
        if persistence:  # Redis is back but the nodes do not know yet: they miss these
            for i in (4, 5):
                await direct.fcall("realtime_publish", 1, engine.base("feed"), msgpack.packb(i), *HISTORY)
        proxy.heal()
        await wait_ready(*(h.http_url for h in hubs))
        # The WebSocket clients are the same ones: the nodes kept them through the outage.
        if persistence:
            for s in subs:
                got = [await s.publication() for _ in range(2)]
                assert [(p.offset, p.epoch, value(p)) for p in got] == [(4, epoch, 4), (5, epoch, 5)]
            await pub.publish("feed", 6)
            for s in subs:
                p = await s.publication()
                assert (p.offset, value(p)) == (6, 6)  # the next one, nothing twice
        else:
            for s in subs:
                assert await s.next_push() == Unsubscribed("feed", "recover")
                reply = await s.command(Subscribe(0, "feed", since=StreamPosition(3, epoch)))
                assert isinstance(reply.result, SubscribeResult)
                assert not reply.result.recovered and reply.result.epoch != epoch
            await pub.publish("feed", "new")
            for s in subs:
                p = await s.publication()
                assert (p.offset, value(p)) == (1, "new")
        for _ in subs:  # a marker comes next: nothing else was queued
            await pub.publish("feed", "marker")
        for s in subs:
            assert value(await s.publication()) == "marker"
    finally:
        for c in clients:
            await c.close()
        for h in hubs:
            await h.stop()
        await direct.aclose()
        await proxy.close()
        server.cleanup()


# --- real processes -----------------------------------------------------------------

LISTENING = re.compile(r"listening on ws://[\d.]+:(\d+)/ws")
#: Seconds presence entries live in these tests (the refresh runs every third of it).
PRESENCE_TTL = 2.0
CONFIG = f"""
token_secret = "{TEST_SECRET}"
allow_anonymous = true
drain_window = 0
[namespaces.default]
subscribe = "anyone"
publish = "clients"
[namespaces.room]
presence = true
join_leave = true
presence_grace = 0.2
subscribe = "anyone"
publish = "clients"
"""


class Node:
    """``realtime serve`` in a child process; its log lines are collected as they come."""

    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc
        self.lines: list[str] = []
        self.port = 0
        self._listening = asyncio.Event()
        self._reader = asyncio.create_task(self._read())

    @classmethod
    async def start(cls, redis_url: str, config: Path) -> Node:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "realtime",
            "serve",
            "--port",
            "0",
            "--redis",
            redis_url,
            "--config",
            str(config),
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "REALTIME_PRESENCE_TTL": str(PRESENCE_TTL)},
        )
        node = cls(proc)
        try:
            async with asyncio.timeout(20):
                await node._listening.wait()
        except TimeoutError:
            node.kill()
            raise AssertionError("the node did not start listening:\n" + node.log()) from None
        return node

    async def _read(self) -> None:
        assert self.proc.stderr is not None
        while line := await self.proc.stderr.readline():
            text = line.decode(errors="replace").rstrip()
            self.lines.append(text)
            if not self._listening.is_set() and (m := LISTENING.search(text)):
                self.port = int(m.group(1))
                self._listening.set()

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}/ws"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        return "\n".join(self.lines)

    def kill(self) -> None:
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)

    async def close(self) -> None:
        if self.proc.returncode is None:
            self.proc.terminate()
            try:
                async with asyncio.timeout(10):
                    await self.proc.wait()
            except TimeoutError:
                self.kill()
        await self.proc.wait()
        await self._reader


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "realtime.toml"
    path.write_text(CONFIG)
    return path


@pytest.fixture
async def started() -> AsyncIterator[list[Node]]:
    """Nodes a test starts, stopped after it."""
    nodes: list[Node] = []
    yield nodes
    for node in nodes:
        await node.close()


async def test_redis_unreachable_when_a_node_starts(config: Path, started: list[Node]) -> None:
    server = RedisServer()  # not running yet
    try:
        node = await Node.start(server.url, config)
        started.append(node)
        assert f"cannot reach Redis at 127.0.0.1:{server.port}" in node.log()
        assert (await get(node.http_url + "/healthz"))[0] == 200
        status, body = await get(node.http_url + "/readyz")
        assert status == 503 and body["engine"] == "redis"
        async with await RawClient.open(node.url) as c:  # clients connect; channels wait for Redis
            reply = await c.command(Subscribe(0, "news"))
            assert reply.error is not None and reply.error.code == ErrorCode.NOT_AVAILABLE
        await asyncio.to_thread(server.start)
        await wait_ready(node.http_url)
        async with await RawClient.open(node.url) as c:
            await c.subscribe("news")
            await c.publish("news", "up")
            assert value(await c.publication()) == "up"
        assert "failed attempts" in node.log()
        assert node.log().count("cannot reach Redis") == 1  # one line per outage, not per attempt
    finally:
        server.cleanup()


async def test_one_function_library_warning_per_outage(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """The loader retries quietly once it has said Redis is unreachable, and says when it got through."""
    import realtime.engines.redis as redis_engine

    monkeypatch.setattr(redis_engine, "LOAD_RETRY", 0.01)
    caplog.set_level(logging.INFO, "realtime.engines.redis")
    server = RedisServer()  # not running yet
    engine = RedisEngine(server.url, connect_timeout=0.1)
    try:
        await engine.start(_NoHandler())
        await until(lambda: "Function library" in caplog.text)
        await asyncio.sleep(0.2)  # about twenty more attempts
        await asyncio.to_thread(server.start)
        await until(lambda: "Function library loaded after" in caplog.text)
        warnings = [r for r in caplog.records if r.levelno >= logging.WARNING and "Function library" in r.getMessage()]
        assert len(warnings) == 1
    finally:
        await engine.close()
        server.cleanup()


class _NoHandler:
    """The engine's deliveries go nowhere: only its start-up is under test."""

    def on_publication(self, *args: object) -> None: ...
    def on_event(self, *args: object) -> None: ...
    def on_control(self, *args: object) -> None: ...
    def on_resync(self) -> None: ...


async def test_a_killed_node(redis_server: RedisServer, config: Path, started: list[Node]) -> None:
    a = await Node.start(redis_server.url, config)
    b = await Node.start(redis_server.url, config)
    started.extend((a, b))
    balancer = Proxy(a.port, b.port)  # new connections go to a while it is up, then to b
    await balancer.start()
    room = "room:k"
    bob = await RawClient.open(b.url, token=make_token("bob"))
    dave = await RawClient.open(a.url, token=make_token("dave"))
    alice = Client(f"ws://127.0.0.1:{balancer.port}/ws", make_token("alice"), min_backoff=0.05, max_backoff=0.5)
    try:
        await bob.subscribe(room)
        assert await bob.next_push() == Join(room, "bob")
        await dave.subscribe(room)
        assert await bob.next_push() == Join(room, "dave")
        await alice.connect()
        feed = await alice.subscribe("feed")
        for i in (1, 2):
            await bob.publish("feed", i)
        assert [(await feed.__anext__()).data for _ in range(2)] == [1, 2]

        a.kill()
        killed = time.monotonic()
        for i in (3, 4):  # published while alice is away
            await bob.publish("feed", i)
        # dave's node died without a word: his entry expires and node b announces his leave.
        assert await bob.next_push(timeout=4 * PRESENCE_TTL) == Leave(room, "dave")
        assert time.monotonic() - killed < PRESENCE_TTL * 4 / 3 + 1.0
        # alice reconnected through the balancer to node b and recovered 3 and 4.
        async with asyncio.timeout(REDIS_WAIT):
            assert [(await feed.__anext__()).data for _ in range(2)] == [3, 4]
        assert feed.recovered
        await bob.publish("feed", 5)
        async with asyncio.timeout(REDIS_WAIT):
            p = await feed.__anext__()
        assert (p.offset, p.data) == (5, 5)
        assert len(feed) == 0  # nothing twice
        assert balancer.connections >= 2
    finally:
        await alice.close()
        for c in (bob, dave):
            await c.close()
        await balancer.close()
