"""Publish ids: a repeat gets the first result on every channel kind and path; under Redis
connection cuts every publish is stored at most once (exactly once when it succeeded); a
publish whose outcome the hub cannot learn answers OUTCOME_UNKNOWN, never NOT_AVAILABLE."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import os
import signal
import time
from collections import Counter
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped]
import pytest
from redis.asyncio import Redis

from protocol import Publish, PublishResult
from protocol.codes import ErrorCode
from realtime.auth import ApiKey
from realtime.config import Settings
from realtime.engines.broker import Idempotency
from realtime.engines.errors import EngineUnavailable, OutcomeUnknown
from realtime.engines.memory import MemoryEngine
from realtime.engines.redis import RedisEngine
from realtime.namespaces import Namespace
from realtime.publish_ids import GENERATED_TTL, publish_idempotency, scoped_id
from realtime.publisher import ApiError, ApiUnreachable, Publisher
from realtime.server import WS_PATH, HubServer

from .helpers import TEST_SECRET, HubFactory, Proxy, make_token, namespaces, result, unique_prefix
from .redis_server import RedisServer
from .wsclient import RawClient

API = ApiKey("test", "k" * 32, frozenset({"publish", "history"}))
CHAT = Namespace("chat", kind="chat", subscribe="anyone", publish="clients", history_size=1000, history_ttl=600)
PLAIN = Namespace("feed", subscribe="anyone", publish="clients", history_size=1000, history_ttl=600)
#: A fault loop never runs longer than this (seconds).
FAULT_TIME = 2.0


def hub_settings(**overrides: Any) -> Settings:
    base = Settings(
        host="127.0.0.1",
        port=0,
        drain_window=0.0,
        allow_anonymous=True,
        token_secret=TEST_SECRET,
        namespaces=namespaces(CHAT, PLAIN),
        api_keys=(API,),
    )
    return dataclasses.replace(base, **overrides)


@contextlib.asynccontextmanager
async def served(engine: RedisEngine | None = None, **overrides: Any) -> AsyncIterator[HubServer]:
    server = HubServer(hub_settings(**overrides), engine)
    await server.start()
    try:
        yield server
    finally:
        await server.stop(0.0)


def http(server: HubServer) -> str:
    return f"http://127.0.0.1:{server.port}"


def ws(server: HubServer) -> str:
    return f"ws://127.0.0.1:{server.port}{WS_PATH}"


# --- scoping ---------------------------------------------------------------------


def test_ids_are_scoped_per_sender_and_generated_ones_live_briefly() -> None:
    from protocol.messages import ClientInfo

    alice, bob, anon = ClientInfo("alice", "c1"), ClientInfo("bob", "c2"), ClientInfo("", "c3")
    assert scoped_id(alice, "k") == scoped_id(ClientInfo("alice", "another device"), "k")
    assert len({scoped_id(alice, "k"), scoped_id(bob, "k"), scoped_id(anon, "k"), scoped_id(None, "k")}) == 4
    given = publish_idempotency(alice, "k", 300.0)
    assert given is not None and given.ttl == 300.0
    made, other = publish_idempotency(alice, None, 300.0), publish_idempotency(alice, None, 300.0)
    assert made is not None and other is not None and made.key != other.key and made.ttl == GENERATED_TTL
    assert publish_idempotency(alice, "k", 0.0) is None  # window 0: ids off


# --- a repeat gets the first result, on every path and channel kind --------------------


@pytest.fixture(params=["memory", pytest.param("redis", marks=pytest.mark.redis)])
async def any_hub(request: pytest.FixtureRequest, hub_factory: HubFactory) -> Any:
    overrides: dict[str, Any] = {"namespaces": namespaces(CHAT, PLAIN), "api_keys": (API,)}
    if request.param == "redis":
        server: RedisServer = request.getfixturevalue("redis_server")
        overrides.update(redis=server.url, redis_prefix=unique_prefix())
    return await hub_factory(**overrides)


@pytest.mark.parametrize("channel", ["plain", "feed:1", "chat:room"])
async def test_a_repeated_publish_id_returns_the_first_result(any_hub: Any, channel: str) -> None:
    alice = await RawClient.open(any_hub.url, token=make_token("alice"))
    async with alice, Publisher(any_hub.http_url, API.key) as pub:
        first = result(await alice.command(Publish(0, channel, msgpack.packb(1), "ws-1")), PublishResult)
        again = result(await alice.command(Publish(0, channel, msgpack.packb(2), "ws-1")), PublishResult)
        assert again == first
        other = result(await alice.command(Publish(0, channel, msgpack.packb(3), "ws-2")), PublishResult)
        assert other.offset == first.offset + 1
        sent = await pub.publish(channel, "a", key="api-1")
        assert await pub.publish(channel, "b", key="api-1") == sent
        assert sent.offset == other.offset + 1
        wide = await pub.broadcast([channel, "plain2"], "c", key="api-2")
        assert await pub.broadcast([channel, "plain2"], "d", key="api-2") == wide
        page = await pub.history(channel)
        assert [m.data for m in page] == [1, 3, "a", "c"]
        # Without an id each publish is a new one.
        one, two = await pub.publish(channel, "x"), await pub.publish(channel, "x")
        assert two.offset == one.offset + 1


async def test_ids_are_off_with_a_window_of_zero(hub_factory: HubFactory) -> None:
    hub = await hub_factory(publish_id_window=0.0, api_keys=(API,))
    async with Publisher(hub.http_url, API.key) as pub:
        first = await pub.publish("plain", 1, key="same")
        assert (await pub.publish("plain", 2, key="same")).offset == first.offset + 1


async def test_fcall_takes_a_publish_id(redis_server: RedisServer) -> None:
    engine = RedisEngine(redis_server.url, prefix=unique_prefix())
    direct = Redis.from_url(redis_server.url)
    try:
        await engine.load_library()
        base = engine.base("fc")
        args = (msgpack.packb("m"), 10, 60, "", "", "", "", 0)
        first = await direct.fcall("realtime_publish", 1, base, *args, "id-1")
        again = await direct.fcall("realtime_publish", 1, base, *args, "id-1", 30)
        assert first == [1, again[1]] and again[0] == 1 and again[-1] == 1
        assert 0 < await direct.pttl(base + ":i:f:id-1") <= 300_000
        later = await direct.fcall("realtime_publish_json", 1, base, b'"j"', 10, 60, "", "", "", "", 0, "id-2", 5)
        assert later[0] == 2 and 0 < await direct.pttl(base + ":i:f:id-2") <= 5000
        assert (await engine.history("fc")).position.offset == 2
    finally:
        await direct.aclose()
        await engine.close()


# --- under Redis connection cuts: at most once, exactly once when it succeeded ------------


async def publish_under_faults(server: HubServer, cut: Any, n: int = 60) -> tuple[dict[int, int], dict[str, int]]:
    """Publish ``n`` numbered messages (HTTP, with retries) while ``cut()`` runs in a loop;
    return the stored count of each number and the outcome counts."""
    outcomes: Counter[str] = Counter()
    succeeded: set[int] = set()
    stop = asyncio.Event()

    async def cutter() -> None:
        deadline = time.monotonic() + FAULT_TIME
        while not stop.is_set() and time.monotonic() < deadline:
            with contextlib.suppress(Exception):
                await cut()
            await asyncio.sleep(0.01)

    async def one(pub: Publisher, i: int) -> None:
        try:
            await pub.publish("feed:cut", {"n": i})
        except ApiError as exc:
            outcomes[f"status-{exc.status}"] += 1
            outcomes[ErrorCode(exc.code).name] += 1
        except ApiUnreachable:
            outcomes["unreachable"] += 1
        else:
            succeeded.add(i)
            outcomes["ok"] += 1

    task = asyncio.create_task(cutter())
    async with Publisher(http(server), API.key, retries=2, retry_delay=0.05) as pub:
        for start in range(0, n, 10):
            await asyncio.gather(*(one(pub, i) for i in range(start, start + 10)))
        stop.set()
        await task
        page_counts: Counter[int] = Counter()
        deadline = time.monotonic() + 10
        while True:
            try:
                page = await pub.history("feed:cut", limit=100)
                break
            except ApiError:
                assert time.monotonic() < deadline
                await asyncio.sleep(0.05)
        for message in page:
            page_counts[message.data["n"]] += 1
    assert all(page_counts[i] == 1 for i in succeeded), "a success is stored exactly once"
    return dict(page_counts), dict(outcomes)


async def test_client_kill_loop_stores_every_publish_at_most_once(redis_server: RedisServer) -> None:
    admin = Redis.from_url(redis_server.url)
    try:
        async with served(redis=redis_server.url, redis_prefix=unique_prefix()) as server:
            stored, outcomes = await publish_under_faults(
                server, lambda: admin.client_kill_filter(_type="normal", skipme=True)
            )
    finally:
        await admin.aclose()
    assert max(stored.values()) == 1, f"a publish stored twice: {outcomes}"
    assert "status-500" not in outcomes and outcomes.get("ok", 0) > 0


async def test_dropping_proxy_stores_every_publish_at_most_once(redis_server: RedisServer) -> None:
    proxy = Proxy(redis_server.port)
    await proxy.start()
    try:
        async with served(redis=f"redis://127.0.0.1:{proxy.port}/0", redis_prefix=unique_prefix()) as server:

            async def cut() -> None:
                proxy.drop()

            stored, outcomes = await publish_under_faults(server, cut)
    finally:
        await proxy.close()
    assert max(stored.values()) == 1, f"a publish stored twice: {outcomes}"
    assert "status-500" not in outcomes and outcomes.get("ok", 0) > 0


# --- outcome unknown ------------------------------------------------------------------


@contextlib.contextmanager
def stopped(server: RedisServer) -> Any:
    """SIGSTOP the redis-server process (a stall: connections stay open, nothing answers)."""
    assert server.proc is not None
    os.kill(server.proc.pid, signal.SIGSTOP)
    try:
        yield
    finally:
        os.kill(server.proc.pid, signal.SIGCONT)


async def test_a_stalled_redis_answers_outcome_unknown_and_a_repeat_tells_the_truth(
    redis_server: RedisServer,
) -> None:
    engine = RedisEngine(redis_server.url, prefix=unique_prefix(), socket_timeout=0.3, publish_retry_time=0.5)
    await engine.start(_Quiet())
    try:
        await engine.publish("s", b"\x00")
        key = Idempotency("stalled", 60)
        with stopped(redis_server):
            with pytest.raises(OutcomeUnknown):
                await engine.publish("s", b"\x01", idempotency=key)
        # Redis ran the queued attempts when it woke: the repeat replays the one stored.
        again = await engine.publish("s", b"\x01", idempotency=key)
        assert again.replayed and again.offset == 2
        assert [p.data for p in (await engine.history("s")).publications] == []  # no history kept
        assert (await engine.history("s", limit=0)).position.offset == 2
    finally:
        await engine.close()


async def test_the_hub_answers_outcome_unknown_never_not_available_for_a_stall(redis_server: RedisServer) -> None:
    engine = RedisEngine(redis_server.url, prefix=unique_prefix(), socket_timeout=0.3, publish_retry_time=0.5)
    async with served(engine) as server:
        alice = await RawClient.open(ws(server), token=make_token("alice"))
        async with alice, aiohttp.ClientSession() as session:
            await alice.publish("feed:s", 0)
            with stopped(redis_server):
                reply = await alice.command(Publish(0, "feed:s", msgpack.packb(1), "k1"))
                async with session.post(
                    http(server) + "/api/publish",
                    json={"channel": "feed:s", "data": 2, "key": "k2"},
                    headers={"Authorization": f"apikey {API.key}"},
                ) as response:
                    status, body = response.status, await response.json()
            assert reply.error is not None and reply.error.code == ErrorCode.OUTCOME_UNKNOWN
            assert ErrorCode(reply.error.code).temporary
            # The second found no connection that answers a PING: it sent nothing, and says so.
            assert status == 503 and body["code"] in (ErrorCode.OUTCOME_UNKNOWN, ErrorCode.NOT_AVAILABLE)
            async with Publisher(http(server), API.key) as pub:
                before = [m.data for m in await pub.history("feed:s")]
                if body["code"] == ErrorCode.NOT_AVAILABLE:
                    assert 2 not in before, "NOT_AVAILABLE for a publish that was stored"
                # Following the advice stores nothing twice.
                again = await alice.command(Publish(0, "feed:s", msgpack.packb(1), "k1"))
                assert again.result is not None
                await pub.publish("feed:s", 2, key="k2")
                assert [m.data for m in await pub.history("feed:s")] == [0, 1, 2]


async def test_redis_refusing_connections_is_not_available(redis_server: RedisServer) -> None:
    engine = RedisEngine(redis_server.url, prefix=unique_prefix(), socket_timeout=0.3, publish_retry_time=0.3)
    await engine.start(_Quiet())
    try:
        await engine.publish("r", b"\x00")
        redis_server.stop()
        await asyncio.sleep(0.2)  # the pooled connection's end of stream arrives: nothing can be in flight
        with pytest.raises(EngineUnavailable) as info:
            await engine.publish("r", b"\x01", idempotency=Idempotency("r1", 60))
        assert not isinstance(info.value, OutcomeUnknown)
    finally:
        await engine.close()


class _Quiet:
    def on_publication(self, pub: Any) -> None:
        pass

    def on_event(self, channel: str, event: bytes) -> None:
        pass

    def on_control(self, message: bytes) -> None:
        pass

    def on_resync(self) -> None:
        pass


async def test_the_fcall_publish_id_example_of_redis_md_replays(redis_server: RedisServer) -> None:
    import shlex
    from pathlib import Path

    doc = (Path(__file__).resolve().parent.parent / "docs" / "redis.md").read_text()
    line = next(x for x in doc.splitlines() if x.startswith("$ redis-cli FCALL") and "order-42" in x)
    args = shlex.split(line)[2:]
    engine = RedisEngine(redis_server.url)  # the default prefix, as the example
    direct = Redis.from_url(redis_server.url)
    try:
        await engine.load_library()
        first = await direct.execute_command(*args)  # type: ignore[no-untyped-call]
        again = await direct.execute_command(*args)  # type: ignore[no-untyped-call]
        assert len(first) == 2 and again[:2] == first and again[-1] == 1
        assert (await engine.history("news", limit=0)).position.offset == 1
    finally:
        await direct.aclose()
        await engine.close()


async def test_the_sdk_sends_a_fresh_publish_id_with_every_publish(hub_factory: HubFactory) -> None:
    from protocol import messages as pm
    from realtime.client import Client

    from .helpers import spy

    hub = await hub_factory()
    codec = spy()
    async with Client(hub.url, token=make_token("alice"), codec=codec) as alice:  # type: ignore[arg-type]
        one, two = await alice.publish("plain", 1), await alice.publish("plain", 1)
        again = await alice.publish("plain", 2, key="mine")
        assert await alice.publish("plain", 3, key="mine") == again and two.offset == one.offset + 1
    keys = [c.key for c in codec.sent if isinstance(c, pm.Publish)]
    assert keys[2:] == ["mine", "mine"] and len(set(keys[:2])) == 2
    assert all(k and 1 <= len(k) <= 64 for k in keys)


async def test_the_publisher_example_of_guide_md_publishes_once(hub_factory: HubFactory) -> None:
    """docs/guide.md "Publishing exactly once": its example, run twice, stores one publication."""
    guide = (Path(__file__).resolve().parent.parent / "docs" / "guide.md").read_text()
    section = guide[guide.index("## Publishing exactly once") :]
    code = section[
        section.index("```python\n") + len("```python\n") : section.index("```\n", section.index("```python"))
    ]
    hub = await hub_factory(
        namespaces=namespaces(Namespace("news", subscribe="anyone", history_size=10, history_ttl=60)), api_keys=(API,)
    )
    body = "".join(f"    {line}\n" for line in code.splitlines())
    scope: dict[str, Any] = {"Publisher": Publisher, "ApiError": ApiError, "url": hub.http_url, "api_key": API.key}
    exec(f"async def example():\n{body}", scope)  # the documented lines, as written
    for _ in range(2):
        await scope["example"]()
    async with Publisher(hub.http_url, API.key) as pub:
        page = await pub.history("news", limit=10)
    assert [p.data for p in page] == [{"title": "hello"}]


async def test_the_memory_engine_keeps_no_generated_ids(hub_factory: HubFactory) -> None:
    """It never sends a publish twice, so a publish without an id costs it no id record
    (one anonymous client publishing fast would otherwise grow the hub by ~500 B a publish)."""
    hub = await hub_factory(namespaces=namespaces(CHAT, PLAIN))
    engine = hub.hub.engine
    assert isinstance(engine, MemoryEngine) and not engine.retries_publishes
    async with await RawClient.open(hub.url) as client:
        for channel in ("feed:a", "chat:a"):
            for n in range(3):
                result(await client.command(Publish(0, channel, msgpack.packb(n))), PublishResult)
        assert engine._done == {}
        result(await client.command(Publish(0, "feed:a", msgpack.packb(9), "mine")), PublishResult)
        assert len(engine._done) == 1  # a given id is kept: the client may repeat it
