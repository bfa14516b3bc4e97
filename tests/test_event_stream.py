"""The event stream ([events]) on a real redis-server and a real hub, read with the EventConsumer helper: the
events come from real connects, subscribes, publishes and closes, so emission and stream are checked together."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from protocol.codes import CloseCode
from protocol.errors import DisconnectError
from protocol.messages import Unsubscribe
from realtime.backend.consumer import EventConsumer, Received
from realtime.backend.events import EVENT_NAMES, Event
from realtime.backend.options import StreamOptions
from realtime.backend.stream import EventStream, stream_key
from realtime.config import ConfigError, load_settings
from realtime.namespaces import Namespace

from .helpers import HubFactory, RunningHub, namespaces, unique_prefix, until, user
from .redis_server import RedisServer

CHAT = Namespace(name="chat", kind="chat", subscribe="anyone", publish="clients", presence=True, presence_grace=0.1)
OTHER = Namespace(name="other", subscribe="anyone", publish="clients", presence=True)
STATUS = Namespace(name="status", kind="status", subscribe="anyone", presence_grace=0.1)


class Emitted:
    """A sink of every event the hub emits: what the stream must hold, before its selection."""

    def __init__(self) -> None:
        self.events: list[Event] = []

    def wants(self, name: str, namespace: str) -> bool:
        return True

    def put(self, event: Event) -> None:
        self.events.append(event)

    def named(self, name: str) -> list[Event]:
        return [e for e in self.events if e.name == name]


async def stream_hub(hub_factory: HubFactory, server: RedisServer, **options: Any) -> RunningHub:
    return await hub_factory(
        namespaces=namespaces(CHAT, OTHER, STATUS),
        redis=server.url,
        redis_prefix=unique_prefix(),
        events=StreamOptions(stream=True, **options),
    )


async def appended(hub: RunningHub, n: int) -> None:
    """Wait until the node appended ``n`` events (as its metrics count them) and holds none back."""
    stream, metrics = hub.hub.feature(EventStream), hub.hub.metrics
    await until(lambda: metrics.event_stream_count("appended") >= n and not stream._queue, what=f"{n} appended")


async def publish(hub: RunningHub, n: int, channel: str = "news") -> list[int]:
    """``n`` real publishes of alice (each emits message.published before it is answered); their offsets."""
    alice = await user(hub, "alice")
    try:
        offsets = []
        for i in range(n):
            reply = await alice.publish(channel, {"n": i})
            assert reply.error is None, reply.error
            offsets.append(reply.result.offset)  # type: ignore[union-attr]
        return offsets
    finally:
        await alice.close()


def offsets(got: list[Received]) -> list[int]:
    return [r.event.data["offset"] for r in got]


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
    hub = await stream_hub(hub_factory, redis_server, on=("message.published",))
    for i in range(3):
        sender = await user(hub, f"u{i}")
        assert (await sender.publish("news", {"n": i})).error is None
        await sender.close()
    prefix = hub.hub.settings.redis_prefix
    async with EventConsumer(redis_server.url, group="billing", consumer="w1", prefix=prefix, block=0.1) as events:
        got = await take(events, 3)
        assert [r.user for r in got] == ["u0", "u1", "u2"]  # fields read through, in publish order
        assert offsets(got) == [1, 2, 3] and [r.data["data"] for r in got] == [{"n": 0}, {"n": 1}, {"n": 2}]
        assert got[0].name == "message.published" and got[0].node == hub.hub.events.node
        assert (got[0].channel, got[0].namespace) == ("news", "")
    r = Redis.from_url(redis_server.url)
    try:
        entries: Any = await r.xrange(stream_key(prefix))
        assert len(entries) == 3
        fields = entries[0][1]
        assert list(fields) == [b"event"]
        body = json.loads(fields[b"event"])
        assert set(body) == {"id", "name", "time", "node", "channel", "namespace", "user", "client", "data"}
        assert body["id"] == got[0].event.id
    finally:
        await r.aclose()


async def test_every_event_of_real_actions_reaches_the_stream(
    hub_factory: HubFactory, redis_server: RedisServer
) -> None:
    hub = await stream_hub(hub_factory, redis_server)
    prefix = hub.hub.settings.redis_prefix
    alice = await user(hub, "alice", "chat:room")  # user.online, channel.occupied, presence.join
    assert (await alice.publish("chat:room", {"text": "hi"})).error is None  # message.published
    await alice.command(Unsubscribe(alice.next_id(), "chat:room"))  # channel.vacated, presence.leave
    hub.hub.connections[alice.client_id].close(DisconnectError(CloseCode.STALE, "no pong"))  # connection.closed
    await alice.close()  # ... and user.offline after the status grace
    got: list[Received] = []
    async with EventConsumer(redis_server.url, group="g", consumer="w", prefix=prefix, block=0.1) as events:
        for _ in range(50):  # bounded reads, 0.1 s each at most
            got.extend(await events.fetch())
            if {r.name for r in got} >= set(EVENT_NAMES):
                break
    by_name = {r.name: r.event for r in got}
    assert set(by_name) == set(EVENT_NAMES)
    assert all(e.user == "alice" for e in by_name.values() if e.name != "channel.vacated")
    assert all(e.client == alice.client_id for e in by_name.values())
    assert by_name["message.published"].data["data"] == {"text": "hi"}
    assert by_name["presence.join"].channel == "chat:room" and by_name["presence.join"].namespace == "chat"
    assert by_name["connection.closed"].data == {"code": int(CloseCode.STALE), "reason": "no pong"}
    assert len({r.event.id for r in got}) == len(got)  # each once


async def test_selection_by_name_and_namespace(hub_factory: HubFactory, redis_server: RedisServer) -> None:
    hub = await stream_hub(hub_factory, redis_server, on=("presence.join",), namespaces=("chat",))
    emitted = Emitted()
    hub.hub.events.add_sink(emitted)
    alice = await user(hub, "alice", "other:x", "chat:room")  # user.online: not this name; other: not this ns
    bob = await user(hub, "bob", "chat:room")
    try:
        await until(lambda: len(emitted.named("presence.join")) == 3, what="three joins emitted")
        assert emitted.named("user.online")  # emitted, not selected
        await appended(hub, 2)
        prefix = hub.hub.settings.redis_prefix
        async with EventConsumer(redis_server.url, group="g", consumer="w", prefix=prefix, block=0.1) as events:
            got = await take(events, 2)
            assert sorted((r.name, r.user, r.channel) for r in got) == [
                ("presence.join", "alice", "chat:room"),
                ("presence.join", "bob", "chat:room"),
            ]
            assert await events.fetch() == []  # nothing else: one bounded read comes back empty
    finally:
        await alice.close()
        await bob.close()


async def test_two_consumers_of_a_group_split_the_events(hub_factory: HubFactory, redis_server: RedisServer) -> None:
    hub = await stream_hub(hub_factory, redis_server, on=("message.published",))
    sent = await publish(hub, 20)
    prefix = hub.hub.settings.redis_prefix
    options: Any = {"group": "billing", "prefix": prefix, "count": 10, "block": 0.1}
    async with (
        EventConsumer(redis_server.url, consumer="a", **options) as a,
        EventConsumer(redis_server.url, consumer="b", **options) as b,
        EventConsumer(redis_server.url, consumer="c", **{**options, "group": "audit"}) as other,
    ):
        first = await take(a, 10)
        second = await take(b, 10)
        seen_a, seen_b = set(offsets(first)), set(offsets(second))
        assert seen_a and seen_b and not seen_a & seen_b
        assert seen_a | seen_b == set(sent)
        # Another group gets every event again.
        assert set(offsets(await take(other, 20))) == set(sent)


async def test_a_dead_consumers_entries_are_reclaimed_and_acks_stick(
    hub_factory: HubFactory, redis_server: RedisServer
) -> None:
    hub = await stream_hub(hub_factory, redis_server, on=("message.published",))
    sent = await publish(hub, 4)
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
        assert offsets(reclaimed) == sent[1:]
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
    hub = await stream_hub(hub_factory, redis_server, on=("message.published",))
    sent = await publish(hub, 2)
    prefix = hub.hub.settings.redis_prefix
    async with EventConsumer(redis_server.url, group="g", consumer="w", prefix=prefix, block=0.1) as first:
        await take(first, 2)  # not acked: the worker "crashed"
    async with EventConsumer(redis_server.url, group="g", consumer="w", prefix=prefix, block=0.1) as again:
        assert offsets(await take(again, 2)) == sent


async def test_events_beyond_the_buffer_while_redis_is_down_are_dropped_and_counted(
    hub_factory: HubFactory, redis_server: RedisServer
) -> None:
    hub = await stream_hub(hub_factory, redis_server, on=("connection.closed",), buffer=2)
    clients = [await user(hub, f"u{i}") for i in range(3)]
    await asyncio.to_thread(redis_server.stop)
    for client in clients:  # the hub closes them: connection.closed, which Redis cannot take now
        hub.hub.connections[client.client_id].close(DisconnectError(CloseCode.STALE, "no pong"))
        await client.close()
    metrics = hub.hub.metrics
    assert metrics.event_stream_count("dropped") == 1  # one of the three: two fit the buffer
    await asyncio.to_thread(redis_server.start)
    await appended(hub, 2)  # the two kept, once Redis is back
    text = metrics.render(None)[0].decode()
    assert 'realtime_event_stream_events_total{outcome="appended"} 2.0' in text
    assert 'realtime_event_stream_events_total{outcome="dropped"} 1.0' in text
    prefix = hub.hub.settings.redis_prefix
    async with EventConsumer(redis_server.url, group="g", consumer="w", prefix=prefix, block=0.1) as events:
        users = [r.user for r in await take(events, 2)]
        assert len(set(users)) == 2 and users == sorted(users)  # two of u0, u1, u2, in order: the count is true
        assert await events.fetch() == []


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
        'namespaces = ["chat"]\nmaxlen = 5000\n[namespaces.chat]\nkind = "chat"\n'
    )
    settings = load_settings(env={}, config_file=config)
    assert settings.events == StreamOptions(True, ("message.published",), ("chat",), 5000)
