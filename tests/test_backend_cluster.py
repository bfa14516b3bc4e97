"""The app's backend in the loop on a Redis Cluster (three masters): the publish proxy and the
subscribe proxy's info, the event stream read with the EventConsumer helper, and the offline push hook."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiohttp import web
from redis.asyncio import RedisCluster

from realtime.backend.consumer import EventConsumer, Received
from realtime.backend.options import StreamOptions

from .helpers import HubFactory, RunningHub, unique_prefix, until, user
from .proxy_backend import Backend
from .redis_cluster import LocalCluster
from .test_proxies import ALLOW_ALICE, proxied_hub, publish_proxy_rewrites_and_refuses, subscription_info
from .test_push_hook import ROOM, idle, push_hub, send
from .test_push_hook import Backend as PushBackend

pytestmark = pytest.mark.redis


def cluster(redis_cluster: LocalCluster) -> dict[str, Any]:
    return {"redis": redis_cluster.url, "redis_cluster": True, "redis_prefix": unique_prefix()}


def on_cluster(hub: RunningHub) -> RunningHub:
    """The hub, checked to run on a cluster client (not a single Redis)."""
    assert isinstance(getattr(hub.hub.engine, "redis", None), RedisCluster)
    return hub


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    b = Backend()
    await b.start()
    yield b
    await b.stop()


@pytest.fixture
async def push_backend() -> AsyncIterator[PushBackend]:
    b = PushBackend()
    app = web.Application()
    app.router.add_post("/push", b.handle)
    b.runner = web.AppRunner(app)
    await b.runner.setup()
    await web.TCPSite(b.runner, "127.0.0.1", b.port).start()
    yield b
    await b.runner.cleanup()


async def test_publish_proxy_on_a_cluster(
    hub_factory: HubFactory, backend: Backend, redis_cluster: LocalCluster
) -> None:
    backend.on("/connect", ALLOW_ALICE)
    hub = await proxied_hub(hub_factory, backend, backend_format="msgpack", **cluster(redis_cluster))
    await publish_proxy_rewrites_and_refuses(on_cluster(hub), backend)


async def test_subscribe_proxy_info_on_a_cluster(
    hub_factory: HubFactory, backend: Backend, redis_cluster: LocalCluster
) -> None:
    backend.on("/connect", ALLOW_ALICE)
    await subscription_info(on_cluster(await proxied_hub(hub_factory, backend, **cluster(redis_cluster))), backend)


async def take(consumer: EventConsumer, n: int) -> list[Received]:
    """``n`` events, in at most ``n + 20`` bounded reads."""
    got: list[Received] = []
    for _ in range(n + 20):
        if len(got) >= n:
            break
        got.extend(await consumer.fetch())
    assert len(got) >= n, got
    return got


async def test_event_stream_on_a_cluster(hub_factory: HubFactory, redis_cluster: LocalCluster) -> None:
    options = StreamOptions(stream=True, on=("user.online",))
    hub = on_cluster(await hub_factory(**cluster(redis_cluster), events=options))
    users = [await user(hub, f"u{i}") for i in range(3)]  # each comes online: one event each
    prefix = hub.hub.settings.redis_prefix
    client = RedisCluster.from_url(redis_cluster.url)
    try:
        async with EventConsumer(client, group="billing", consumer="w1", prefix=prefix, block=0.1) as events:
            got = await take(events, 3)
            assert [(r.name, r.user) for r in got] == [("user.online", f"u{i}") for i in range(3)]
            assert len({r.event.id for r in got}) == 3
            assert await events.ack(*(r.entry_id for r in got)) == 3
        # Acked: a restarted consumer of the group has nothing pending, and nothing new arrived.
        async with EventConsumer(client, group="billing", consumer="w1", prefix=prefix, block=0.1) as again:
            assert await again.fetch() == []
    finally:
        await client.aclose()
        for u in users:
            await u.close()


async def test_offline_push_on_a_cluster(
    hub_factory: HubFactory, push_backend: PushBackend, redis_cluster: LocalCluster
) -> None:
    hub = on_cluster(await push_hub(hub_factory, push_backend, cluster(redis_cluster), interval=3600.0))
    alice = await user(hub, "alice", ROOM)
    bob = await user(hub, "bob", ROOM)  # reading the room: no push
    try:
        await send(hub, alice, {"text": "one"})
        await send(hub, alice, {"text": "two"})  # within the window: collapsed
        await until(lambda: idle(hub), what="the requests")
        # One push per offline member (the room's users but the sender and bob, who reads it).
        assert sorted((n["user"], n["channel"], n["offset"]) for n in push_backend.notifications) == [
            ("carol", ROOM, 1),
            ("dave", ROOM, 1),
        ]
    finally:
        await alice.close()
        await bob.close()
