"""The event stream ([events]) on a real redis-server and a real hub, read with the EventConsumer helper."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from realtime.backend.consumer import EventConsumer, Received
from realtime.backend.options import StreamOptions
from realtime.backend.stream import stream_key
from realtime.config import ConfigError, load_settings

from .helpers import HubFactory, RunningHub, unique_prefix
from .redis_server import RedisServer


async def stream_hub(hub_factory: HubFactory, server: RedisServer, **options: Any) -> RunningHub:
    prefix = unique_prefix()
    return await hub_factory(redis=server.url, redis_prefix=prefix, events=StreamOptions(stream=True, **options))


def fire(hub: RunningHub, n: int, name: str = "user.online", namespace: str = "") -> list[str]:
    """Emit ``n`` events on the hub's bus; their ids."""
    ids = []
    for i in range(n):
        event = hub.hub.events.event(
            name, user=f"u{i}", namespace=namespace, channel=f"{namespace}:c" if namespace else ""
        )
        hub.hub.events.emit(event)
        ids.append(event.id)
    return ids


async def take(consumer: EventConsumer, n: int) -> list[Received]:
    """``n`` events, in at most ``n + 20`` bounded reads."""
    got: list[Received] = []
    for _ in range(n + 20):
        if len(got) >= n:
            break
        got.extend(await consumer.fetch())
    assert len(got) >= n, got
    return got


async def test_events_appear_as_one_json_field(hub_factory: HubFactory, redis_server: RedisServer) -> None:
    hub = await stream_hub(hub_factory, redis_server)
    ids = fire(hub, 3)
    prefix = hub.hub.settings.redis_prefix
    async with EventConsumer(redis_server.url, group="billing", consumer="w1", prefix=prefix, block=0.1) as events:
        got = await take(events, 3)
        assert [r.event.id for r in got] == ids
        assert [r.user for r in got] == ["u0", "u1", "u2"]  # fields read through
        assert got[0].name == "user.online" and got[0].node == hub.hub.events.node
    r = Redis.from_url(redis_server.url)
    try:
        entries: Any = await r.xrange(stream_key(prefix))
        assert len(entries) == 3
        fields = entries[0][1]
        assert list(fields) == [b"event"]
        body = json.loads(fields[b"event"])
        assert set(body) == {"id", "name", "time", "node", "channel", "namespace", "user", "client", "data"}
        assert body["id"] == ids[0]
    finally:
        await r.aclose()


async def test_selection_by_name_and_namespace(hub_factory: HubFactory, redis_server: RedisServer) -> None:
    hub = await stream_hub(hub_factory, redis_server, on=("presence.join",), namespaces=("chat",))
    fire(hub, 1, "user.online")  # not selected by name
    fire(hub, 1, "presence.join", "other")  # not this namespace
    wanted = fire(hub, 2, "presence.join", "chat")
    prefix = hub.hub.settings.redis_prefix
    async with EventConsumer(redis_server.url, group="g", consumer="w", prefix=prefix, block=0.1) as events:
        got = await take(events, 2)
        assert [r.event.id for r in got] == wanted
        assert await events.fetch() == []  # nothing else: one bounded read comes back empty


async def test_two_consumers_of_a_group_split_the_events(hub_factory: HubFactory, redis_server: RedisServer) -> None:
    hub = await stream_hub(hub_factory, redis_server)
    ids = fire(hub, 20)
    prefix = hub.hub.settings.redis_prefix
    options: Any = {"group": "billing", "prefix": prefix, "count": 10, "block": 0.1}
    async with (
        EventConsumer(redis_server.url, consumer="a", **options) as a,
        EventConsumer(redis_server.url, consumer="b", **options) as b,
        EventConsumer(redis_server.url, consumer="c", **{**options, "group": "audit"}) as other,
    ):
        first = await take(a, 10)
        second = await take(b, 10)
        seen_a, seen_b = {r.event.id for r in first}, {r.event.id for r in second}
        assert seen_a and seen_b and not seen_a & seen_b
        assert seen_a | seen_b == set(ids)
        # Another group gets every event again.
        assert {r.event.id for r in await take(other, 20)} == set(ids)


async def test_a_dead_consumers_entries_are_reclaimed_and_acks_stick(
    hub_factory: HubFactory, redis_server: RedisServer
) -> None:
    hub = await stream_hub(hub_factory, redis_server)
    ids = fire(hub, 4)
    prefix = hub.hub.settings.redis_prefix
    dead = EventConsumer(redis_server.url, group="g", consumer="dead", prefix=prefix, block=0.1)
    held = await take(dead, 4)
    await held[0].ack()  # one acked before it died
    await dead.aclose()
    # claim_after=0: whatever another consumer holds unacked is taken over at once.
    async with EventConsumer(
        redis_server.url, group="g", consumer="live", prefix=prefix, claim_after=0, block=0.1
    ) as live:
        reclaimed = await take(live, 3)
        assert [r.event.id for r in reclaimed] == ids[1:]
        for received in reclaimed:
            await received.ack()
        r = Redis.from_url(redis_server.url)
        try:
            pending = await r.xpending(stream_key(prefix), "g")
            assert pending["pending"] == 0
        finally:
            await r.aclose()
        assert await live.fetch() == []  # nothing pending to claim, nothing new


async def test_a_restarted_consumer_gets_its_own_pending_events_first(
    hub_factory: HubFactory, redis_server: RedisServer
) -> None:
    hub = await stream_hub(hub_factory, redis_server)
    ids = fire(hub, 2)
    prefix = hub.hub.settings.redis_prefix
    async with EventConsumer(redis_server.url, group="g", consumer="w", prefix=prefix, block=0.1) as first:
        await take(first, 2)  # not acked: the worker "crashed"
    async with EventConsumer(redis_server.url, group="g", consumer="w", prefix=prefix, block=0.1) as again:
        assert [r.event.id for r in await take(again, 2)] == ids


def test_the_memory_engine_refuses_the_event_stream(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text("[events]\nstream = true\n")
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, config_file=config)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith("invalid setting events.stream=true") and "set redis" in message


@pytest.mark.parametrize(
    ("table", "words"),
    [
        ("[events]\nstreem = true\n", "unknown setting 'events.streem'"),
        ('[events]\non = ["user.onlien"]\n', "invalid setting events.on=user.onlien"),
        ("[events]\nmaxlen = 0\n", "invalid setting events.maxlen=0"),
    ],
)
def test_bad_event_settings_are_refused(tmp_path: Path, table: str, words: str) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(f'redis = "redis://127.0.0.1:1/0"\n{table}')
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, config_file=config)
    assert words in str(info.value)


def test_event_settings_are_read(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text(
        'redis = "redis://127.0.0.1:1/0"\n[events]\nstream = true\non = ["message.published"]\n'
        'namespaces = ["chat"]\nmaxlen = 5000\n'
    )
    settings = load_settings(env={}, config_file=config)
    assert settings.events == StreamOptions(True, ("message.published",), ("chat",), 5000)
