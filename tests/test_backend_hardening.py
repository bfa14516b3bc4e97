"""Hardening of the backend integration: the Redis webhook buffer's and the event stream buffer's
bookkeeping and byte bound, the durability of the event stream and the push hook, the check of ``[events] namespaces``, and app
error messages cut like disconnect reasons. Real redis-server, real hubs, real backends."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import orjson
import pytest
from redis.asyncio import Redis

from realtime.backend.events import Event, EventBus
from realtime.backend.options import StreamOptions
from realtime.backend.queues import MAX_QUEUED_BYTES
from realtime.backend.redis_queue import FIELD, RedisQueue, consumer_name
from realtime.backend.stream import EventStream
from realtime.config import ConfigError, load_settings
from realtime.metrics import Metrics

from .helpers import unique_prefix, until
from .redis_server import RedisServer


async def blocked(admin: Redis, n: int) -> bool:
    """Whether ``n`` clients wait on the paused server (their write is sent, not yet run)."""
    info = await admin.info("clients")
    return int(info["blocked_clients"]) >= n


async def written(admin: Redis, key: str) -> list[str]:
    entries: Any = await admin.xrange(key)
    return [Event.from_dict(orjson.loads(fields[FIELD])).id for _, fields in entries]


async def test_an_event_being_appended_is_never_the_one_dropped(redis_server: RedisServer) -> None:
    """Events put while a round trip is in flight and the buffer is full drop the oldest *waiting*
    event: the one being written is not counted dropped (its publish waits for it), and every event
    is written or counted dropped."""
    admin, redis = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    key = f"{unique_prefix()}:wh:{{q}}"
    dropped: list[int] = []
    queue = RedisQueue(
        redis, key, consumer_name("n"), limit=3, reclaim_after=30, on_drop=dropped.append, endpoint="test"
    )
    bus = EventBus("n")
    events = [bus.event("message.published", data={"i": i}) for i in range(6)]
    try:
        await redis.ping()
        await admin.client_pause(30_000, all=False)  # writes wait: the first round trip stays in flight
        queue.start()
        queue.put(events[0])
        first = asyncio.create_task(queue.settle())
        await until(lambda: blocked(admin, 1), what="the first append in flight")
        for event in events[1:]:
            queue.put(event)
        await admin.ping()  # a round trip: a settled wait would have finished by now
        assert sum(dropped) == 3
        assert not first.done(), "the publish of an event still being written was answered"
        await admin.client_unpause()
        await asyncio.wait_for(queue.settle(), 10)
        await first
        ids = await written(admin, key)
        assert ids == [events[0].id, events[4].id, events[5].id]
        assert len(ids) + sum(dropped) == len(events)
    finally:
        await admin.client_unpause()
        await queue.close()
        await admin.aclose()
        await redis.aclose()


async def test_the_event_stream_settles_a_publish_once_its_event_is_appended(redis_server: RedisServer) -> None:
    """``EventBus.settle`` (what a publish awaits) waits for the ``[events]`` stream too: while Redis
    holds the write, the wait goes on; once it ran, the event is in the stream."""
    admin, redis = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    stream = EventStream(redis, unique_prefix(), StreamOptions(stream=True), Metrics())
    bus = EventBus("n")
    bus.add_sink(stream)
    try:
        await redis.ping()
        await admin.client_pause(30_000, all=False)
        bus.fire("message.published", channel="news", data={"offset": 1})
        settled = asyncio.create_task(bus.settle(30))
        await until(lambda: blocked(admin, 1), what="the append in flight")
        await admin.ping()
        assert not settled.done(), "a publish was answered before its event reached the stream"
        await admin.client_unpause()
        await asyncio.wait_for(settled, 10)
        entries: Any = await admin.xrange(stream.key)
        assert [json.loads(fields[b"event"])["data"] for _, fields in entries] == [{"offset": 1}]
    finally:
        await admin.client_unpause()
        await stream.close()
        await admin.aclose()
        await redis.aclose()


#: Big publications: more of them than :data:`MAX_QUEUED_BYTES` holds, far fewer than the count bound.
BIG = 1024 * 1024
MANY = MAX_QUEUED_BYTES // BIG + 8


def big_events() -> list[Event]:
    data = "x" * BIG
    return [
        Event(f"{i:032x}", "message.published", 0, "n", "chat:l", "chat", data={"data": data}, size=BIG)
        for i in range(MANY)
    ]


async def stream_written(admin: Redis, key: str) -> list[str]:
    entries: Any = await admin.xrange(key)
    return [json.loads(fields[b"event"])["id"] for _, fields in entries]


async def test_the_redis_webhook_buffer_is_bounded_in_bytes(redis_server: RedisServer) -> None:
    """While Redis holds a write, big publications beyond the byte bound drop the oldest *waiting*
    ones (counted), never the one being written: what reaches Redis fits the bound."""
    admin, redis = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    key = f"{unique_prefix()}:wh:{{q}}"
    dropped: list[int] = []
    queue = RedisQueue(
        redis, key, consumer_name("n"), limit=10_000, reclaim_after=30, on_drop=dropped.append, endpoint="test"
    )
    events = big_events()
    try:
        await redis.ping()
        await admin.client_pause(30_000, all=False)
        queue.start()
        queue.put(events[0])
        await until(lambda: blocked(admin, 1), what="the first append in flight")
        for event in events[1:]:
            queue.put(event)
        assert sum(dropped) == MANY - MAX_QUEUED_BYTES // BIG
        await admin.client_unpause()
        await asyncio.wait_for(queue.settle(), 30)
        ids = await written(admin, key)
        kept = MAX_QUEUED_BYTES // BIG
        assert ids == [events[0].id] + [event.id for event in events[-(kept - 1) :]]
        assert len(ids) + sum(dropped) == MANY
    finally:
        await admin.client_unpause()
        await queue.close()
        await admin.aclose()
        await redis.aclose()


async def test_the_redis_webhook_buffer_stays_bounded_in_bytes_with_redis_down(redis_server: RedisServer) -> None:
    """With redis-server stopped, the round trips that fail go back to the buffer, the oldest beyond the
    byte bound dropped and counted; once Redis is back, the newest that fit are appended."""
    redis = Redis.from_url(redis_server.url)
    key = f"{unique_prefix()}:wh:{{q}}"
    dropped: list[int] = []
    queue = RedisQueue(
        redis, key, consumer_name("n"), limit=10_000, reclaim_after=30, on_drop=dropped.append, endpoint="test"
    )
    events = big_events()
    kept = MAX_QUEUED_BYTES // BIG
    try:
        await redis.ping()
        queue.start()
        await asyncio.to_thread(redis_server.stop)
        for event in events:
            queue.put(event)
        await until(lambda: sum(dropped) == MANY - kept, what="the drops beyond the byte bound")
        await asyncio.to_thread(redis_server.start)
        await asyncio.wait_for(queue.settle(), 30)
        admin = Redis.from_url(redis_server.url)
        try:
            ids = await written(admin, key)
        finally:
            await admin.aclose()
        assert ids == [event.id for event in events[-kept:]]
        assert len(ids) + sum(dropped) == MANY
    finally:
        await queue.close()
        await redis.aclose()


async def test_the_event_stream_buffer_is_bounded_in_bytes(redis_server: RedisServer) -> None:
    """The ``[events]`` stream's buffer: the same byte bound, the event being written never dropped."""
    admin, redis = Redis.from_url(redis_server.url), Redis.from_url(redis_server.url)
    metrics = Metrics()
    stream = EventStream(redis, unique_prefix(), StreamOptions(stream=True), metrics)
    events = big_events()
    kept = MAX_QUEUED_BYTES // BIG
    try:
        await redis.ping()
        await admin.client_pause(30_000, all=False)
        stream.put(events[0])
        await until(lambda: blocked(admin, 1), what="the first append in flight")
        for event in events[1:]:
            stream.put(event)
        assert stream.dropped == MANY - kept
        await admin.client_unpause()
        await asyncio.wait_for(stream.settle(), 30)
        ids = await stream_written(admin, stream.key)
        assert ids == [events[0].id] + [event.id for event in events[-(kept - 1) :]]
        assert len(ids) + stream.dropped == MANY
    finally:
        await admin.client_unpause()
        await stream.close()
        await admin.aclose()
        await redis.aclose()


async def test_the_event_stream_buffer_stays_bounded_in_bytes_with_redis_down(redis_server: RedisServer) -> None:
    """With redis-server stopped, failed round trips go back, the oldest beyond the bytes dropped."""
    redis = Redis.from_url(redis_server.url)
    stream = EventStream(redis, unique_prefix(), StreamOptions(stream=True), Metrics())
    events = big_events()
    kept = MAX_QUEUED_BYTES // BIG
    try:
        await redis.ping()
        await asyncio.to_thread(redis_server.stop)
        for event in events:
            stream.put(event)
        await until(lambda: stream.dropped == MANY - kept, what="the drops beyond the byte bound")
        await asyncio.to_thread(redis_server.start)
        await asyncio.wait_for(stream.settle(), 30)
        admin = Redis.from_url(redis_server.url)
        try:
            ids = await stream_written(admin, stream.key)
        finally:
            await admin.aclose()
        assert ids == [event.id for event in events[-kept:]]
        assert len(ids) + stream.dropped == MANY
    finally:
        await stream.close()
        await redis.aclose()


@pytest.mark.parametrize(
    ("names", "message"),
    [
        ('["chta"]', "no namespace 'chta' (did you mean 'chat'?)"),
        ('["chat", "room"]', "no namespace 'room'"),
    ],
)
def test_event_stream_namespaces_must_be_declared(tmp_path: Path, names: str, message: str) -> None:
    """Like the webhook rules': a namespace not declared would select nothing, silently."""
    config = tmp_path / "hub.toml"
    config.write_text(
        f'redis = "redis://127.0.0.1:1/0"\n[events]\nstream = true\nnamespaces = {names}\n'
        '[namespaces.chat]\nkind = "chat"\n'
    )
    with pytest.raises(ConfigError) as info:
        load_settings(env={}, config_file=config)
    assert str(info.value).startswith(f"invalid setting events.namespaces (from {config}): {message}")
    assert "\n" not in str(info.value)


def test_event_stream_namespaces_may_name_the_default_one(tmp_path: Path) -> None:
    config = tmp_path / "hub.toml"
    config.write_text('redis = "redis://127.0.0.1:1/0"\n[events]\nstream = true\nnamespaces = ["default"]\n')
    assert load_settings(env={}, config_file=config).events.namespaces == ("default",)
