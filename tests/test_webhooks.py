"""Webhooks against a real backend (tests/backend_app.py): every event, signatures, retries, give-ups,
queue overflow, two nodes on one Redis (once per endpoint), a node restart, and bad rules at start."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from redis.asyncio import Redis

from protocol.codes import CloseCode
from protocol.errors import DisconnectError
from protocol.messages import Unsubscribe
from realtime.backend.events import EVENT_NAMES, Event, EventBus
from realtime.backend.redis_queue import GROUP, stream_key
from realtime.backend.rules import WebhookRule
from realtime.config import ConfigError, load_settings
from realtime.namespaces import Namespace
from realtime.publisher import Publisher

from .backend_app import BACKEND_SECRET, Backend, catalogue
from .helpers import HubFactory, RunningHub, namespaces, start_serve, unique_prefix, until, user
from .redis_cluster import LocalCluster
from .redis_server import RedisServer

CHAT = Namespace(name="chat", kind="chat", subscribe="anyone", publish="clients", presence=True, presence_grace=0.1)
STATUS = Namespace(name="status", kind="status", subscribe="anyone", presence_grace=0.1)
NAMESPACES = namespaces(CHAT, STATUS)
BACKEND: dict[str, Any] = {"backend_secrets": (BACKEND_SECRET,), "backend_timeout": 2.0}


def rule(backend: Backend, on: tuple[str, ...] = ("*",), **options: Any) -> WebhookRule:
    options.setdefault("backoff_max", 0.2)
    return WebhookRule(backend.url, on, **options)


@pytest.fixture
async def backend() -> AsyncIterator[Backend]:
    app = await Backend().start()
    yield app
    await app.stop()


async def start_hub(factory: HubFactory, *rules: WebhookRule, **overrides: Any) -> RunningHub:
    return await factory(namespaces=NAMESPACES, webhooks=rules, **{**BACKEND, **overrides})


# --- the bus ---------------------------------------------------------------------------------


class ListSink:
    def __init__(self, names: set[str]) -> None:
        self.names = names
        self.got: list[Event] = []

    def wants(self, name: str, namespace: str) -> bool:
        return name in self.names

    def put(self, event: Event) -> None:
        self.got.append(event)


def test_bus_builds_events_only_for_a_sink_that_wants_them() -> None:
    bus = EventBus("n1")
    assert not bus.wants("message.published", "chat")  # no sink: nothing to do
    sink = ListSink({"user.online"})
    bus.add_sink(sink)
    bus.fire("message.published", namespace="chat")
    bus.fire("user.online", user="alice", client="c1")
    assert [(e.name, e.user, e.client, e.node) for e in sink.got] == [("user.online", "alice", "c1", "n1")]
    event = sink.got[0]
    assert Event.from_dict(event.to_dict()) == event
    assert len(event.id) == 32


def test_a_failing_sink_breaks_neither_the_emitter_nor_the_other_sinks() -> None:
    class Broken(ListSink):
        def put(self, event: Event) -> None:
            raise RuntimeError("bug")

    bus = EventBus()
    good = ListSink({"user.online"})
    bus.add_sink(Broken({"user.online"}))
    bus.add_sink(good)
    bus.fire("user.online", user="bob")
    assert [e.user for e in good.got] == ["bob"]


# --- every event ------------------------------------------------------------------------------


async def test_every_event_reaches_the_backend_signed(hub_factory: HubFactory, backend: Backend) -> None:
    hub = await start_hub(hub_factory, rule(backend, namespaces=("chat",)))
    alice = await user(hub, "alice", "chat:room")
    occupied = (await backend.wait_for("channel.occupied"))[0]
    assert (occupied["channel"], occupied["namespace"], occupied["user"]) == ("chat:room", "chat", "alice")
    assert occupied["client"] == alice.client_id
    online = (await backend.wait_for("user.online", user="alice"))[0]
    assert online["namespace"] == "" and online["client"] == alice.client_id
    join = (await backend.wait_for("presence.join"))[0]
    assert (join["channel"], join["user"], join["data"]) == ("chat:room", "alice", {"info": None})

    reply = await alice.publish("chat:room", {"text": "hi"})
    assert reply.error is None
    published = (await backend.wait_for("message.published"))[0]
    data = published["data"]
    assert data["data"] == {"text": "hi"} and data["offset"] == 1 and data["epoch"]
    assert len(data["mid"]) == 26 and data["time"] == published["time"]
    assert (published["user"], published["client"], published["channel"]) == ("alice", alice.client_id, "chat:room")

    await alice.command(Unsubscribe(alice.next_id(), "chat:room"))
    vacated = (await backend.wait_for("channel.vacated"))[0]
    assert (vacated["channel"], vacated["client"]) == ("chat:room", alice.client_id)
    leave = (await backend.wait_for("presence.leave"))[0]
    assert (leave["channel"], leave["user"]) == ("chat:room", "alice")

    hub.hub.connections[alice.client_id].close(DisconnectError(CloseCode.STALE, "no pong"))
    closed = (await backend.wait_for("connection.closed"))[0]
    assert closed["data"] == {"code": int(CloseCode.STALE), "reason": "no pong"}
    assert closed["user"] == "alice" and closed["client"] == alice.client_id
    offline = (await backend.wait_for("user.offline", user="alice"))[0]
    assert offline["data"]["seen"] > 0

    assert {e["name"] for e in backend.events} == set(EVENT_NAMES)
    documented = catalogue()  # docs/integration.md shows each body with these fields exactly
    assert set(documented) == set(EVENT_NAMES)
    for event in backend.events:
        example = documented[event["name"]]
        assert list(event) == list(example), event["name"]
        assert set(event["data"]) <= set(example["data"]), event["name"]  # mid and time: chat only
    assert all(d.verified for d in backend.deliveries)
    assert all(d.id == d.events[0]["id"] for d in backend.deliveries)
    assert len({e["id"] for e in backend.events}) == len(backend.events)
    await alice.close()


async def test_only_the_selected_events_and_namespaces(hub_factory: HubFactory, backend: Backend) -> None:
    hub = await start_hub(hub_factory, rule(backend, ("message.published",), namespaces=("chat",)))
    alice = await user(hub, "alice", "chat:a", "news")
    assert (await alice.publish("news", {"n": 0})).error is None  # default namespace: not selected
    assert (await alice.publish("chat:a", {"n": 1})).error is None
    await backend.wait_for("message.published")
    assert [e["data"]["data"] for e in backend.events] == [{"n": 1}]  # one event, none of another name
    await alice.close()


async def test_msgpack_bodies_and_batches(hub_factory: HubFactory, backend: Backend) -> None:
    hub = await hub_factory(
        namespaces=NAMESPACES,
        **BACKEND,
        backend_format="msgpack",
        webhooks=(rule(backend, ("message.published",), max_batch=50),),
    )
    backend.answers.extend([503])  # the first POST fails: the rest queue behind it, then go in batches
    alice = await user(hub, "alice", "chat:b")
    for n in range(20):
        assert (await alice.publish("chat:b", n)).error is None
    await backend.wait_for("message.published", 20)
    assert [e["data"]["data"] for e in backend.events] == list(range(20))  # in order
    assert all(d.content_type == "application/msgpack" and d.verified for d in backend.deliveries)
    assert len(backend.deliveries) < 21  # some POSTs carried several events
    await alice.close()


# --- retries and give-ups ---------------------------------------------------------------------


@pytest.mark.parametrize("status", [500, 503, 408, 429])
async def test_retried_after_5xx_408_429_with_the_same_id(
    hub_factory: HubFactory, backend: Backend, status: int
) -> None:
    backend.answers.extend([status, status])
    hub = await start_hub(hub_factory, rule(backend, ("message.published",)))
    alice = await user(hub, "alice", "chat:c")
    await alice.publish("chat:c", "x")
    await backend.wait_for("message.published")
    assert [d.status for d in backend.deliveries] == [status, status, 200]
    assert len({d.id for d in backend.deliveries}) == 1  # one delivery, retried
    metrics = hub.hub.metrics
    await until(lambda: metrics.webhook_count(backend.url, "delivered") == 1, what="the hub to count it")
    assert metrics.webhook_count(backend.url, "retried") == 2
    await alice.close()


async def test_no_answer_in_time_is_retried_and_may_arrive_twice(hub_factory: HubFactory, backend: Backend) -> None:
    backend.delays.append(1.0)  # the first answer comes after the hub stopped waiting (timeout 0.2 s)
    hub = await start_hub(hub_factory, rule(backend, ("message.published",), timeout=0.2))
    alice = await user(hub, "alice", "chat:l")
    await alice.publish("chat:l", "once")
    await backend.wait_deliveries(2)
    await until(lambda: hub.hub.metrics.webhook_count(backend.url, "delivered") == 1, what="the retry answered")
    assert hub.hub.metrics.webhook_count(backend.url, "retried") == 1
    first, second = backend.deliveries
    assert first.events == second.events and first.id == second.id  # at least once: dedup by the event id
    await alice.close()


async def test_delivered_once_the_backend_is_up_again(hub_factory: HubFactory, backend: Backend) -> None:
    await backend.stop()
    hub = await start_hub(hub_factory, rule(backend, ("message.published",)))
    alice = await user(hub, "alice", "chat:d")
    await alice.publish("chat:d", "while down")
    await until(lambda: hub.hub.metrics.webhook_count(backend.url, "retried") >= 2, what="failed attempts")
    await backend.start()
    event = (await backend.wait_for("message.published"))[0]
    assert event["data"]["data"] == "while down"
    await alice.close()


@pytest.mark.parametrize("status", [400, 404, 410, 302])
async def test_a_final_refusal_is_given_up_counted_and_not_retried(
    hub_factory: HubFactory, backend: Backend, status: int
) -> None:
    backend.answers.append(status)
    hub = await start_hub(hub_factory, rule(backend, ("message.published",)))
    alice = await user(hub, "alice", "chat:e")
    await alice.publish("chat:e", 1)
    await alice.publish("chat:e", 2)
    await backend.wait_for("message.published")  # the second one, after the first was given up
    assert [d.status for d in backend.deliveries] == [status, 200]
    assert hub.hub.metrics.webhook_count(backend.url, "failed") == 1  # counted before the next POST
    await alice.close()


async def test_out_of_attempts_is_given_up(hub_factory: HubFactory, backend: Backend) -> None:
    backend.answers.extend([500] * 3)
    hub = await start_hub(hub_factory, rule(backend, ("message.published",), max_attempts=3))
    alice = await user(hub, "alice", "chat:f")
    await alice.publish("chat:f", 1)
    await until(lambda: hub.hub.metrics.webhook_count(backend.url, "failed") == 1, what="a give-up")
    assert [d.status for d in backend.deliveries] == [500, 500, 500]
    await alice.close()


async def test_a_full_memory_queue_drops_its_oldest_counted(hub_factory: HubFactory, backend: Backend) -> None:
    await backend.stop()  # the first event waits in retries; the others fill the queue
    hub = await start_hub(hub_factory, rule(backend, ("message.published",), max_queued=2, backoff_max=0.05))
    alice = await user(hub, "alice", "chat:g")
    for n in range(6):
        await alice.publish("chat:g", n)
    await until(lambda: hub.hub.metrics.webhook_count(backend.url, "dropped") >= 3, what="drops")
    metrics_text = hub.hub.metrics.render(None)[0].decode()
    assert f'realtime_webhook_events_total{{endpoint="{backend.url}",outcome="dropped"}}' in metrics_text
    await backend.start()
    await backend.wait_for("message.published", 3)
    assert [e["data"]["data"] for e in backend.events][-2:] == [4, 5]  # the newest were kept
    await alice.close()


# --- Redis: once per endpoint across nodes, and across a restart -------------------------------


async def test_once_per_endpoint_across_two_nodes(
    hub_factory: HubFactory, backend: Backend, redis_server: RedisServer
) -> None:
    prefix = unique_prefix()
    rules = (rule(backend, ("message.published", "channel.occupied", "channel.vacated", "user.online")),)
    a = await start_hub(hub_factory, *rules, redis=redis_server.url, redis_prefix=prefix, node_name="a")
    b = await start_hub(hub_factory, *rules, redis=redis_server.url, redis_prefix=prefix, node_name="b")
    alice = await user(a, "alice", "chat:h")
    bob = await user(b, "bob", "chat:h")
    alice_again = await user(b, "alice")  # her second device, on the other node: still one user.online
    for n in range(10):
        await alice.publish("chat:h", f"a{n}")
        await bob.publish("chat:h", f"b{n}")
    await backend.wait_for("message.published", 20)
    await alice.close()
    await bob.close()
    await backend.wait_for("channel.vacated")
    await backend.wait_for("user.online", 2)
    published = backend.named("message.published")
    assert sorted(e["data"]["data"] for e in published) == sorted(
        [f"a{n}" for n in range(10)] + [f"b{n}" for n in range(10)]
    )
    assert len({e["id"] for e in backend.events}) == len(backend.events)  # nothing twice
    assert len(backend.named("channel.occupied")) == 1  # the channel's first subscriber, of both nodes
    assert len(backend.named("channel.vacated")) == 1
    assert {e["node"] for e in published} == {"a", "b"}
    assert sorted(e["user"] for e in backend.named("user.online")) == ["alice", "bob"]
    await alice_again.close()


async def test_queued_events_survive_a_node_restart(
    hub_factory: HubFactory, backend: Backend, redis_server: RedisServer
) -> None:
    await backend.stop()
    prefix = unique_prefix()
    rules = (rule(backend, ("message.published",), reclaim_after=0.5),)
    first = await start_hub(hub_factory, *rules, redis=redis_server.url, redis_prefix=prefix)
    alice = await user(first, "alice", "chat:i")
    for n in range(3):
        await alice.publish("chat:i", n)
    await until(lambda: first.hub.metrics.webhook_count(backend.url, "retried") >= 1, what="a failed attempt")
    await alice.close()
    await first.stop()  # its consumer goes with its delivery in progress (pending, unacknowledged)
    await backend.start()
    await start_hub(hub_factory, *rules, redis=redis_server.url, redis_prefix=prefix)
    await backend.wait_for("message.published", 3)
    assert sorted(e["data"]["data"] for e in backend.events) == [0, 1, 2]
    assert len({e["id"] for e in backend.events}) == 3


# --- bad rules at start -----------------------------------------------------------------------


GOOD_TOP = """
[backend]
secrets = ["0123456789abcdef0123"]
[namespaces.chat]
kind = "chat"
"""


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            '[[webhooks]]\nurl = "http://127.0.0.1:9/e"\non = ["channel.ocupied"]',
            "invalid setting webhooks[0].on (from {path}): unknown event 'channel.ocupied' "
            "(did you mean 'channel.occupied'?)",
        ),
        (
            '[[webhooks]]\nurl = "ftp://example.com/e"\non = ["*"]',
            "invalid setting webhooks[0].url (from {path}): expected an http:// or https:// URL with a host",
        ),
        (
            '[[webhooks]]\nurl = "http://127.0.0.1:9/e"\non = []',
            'invalid setting webhooks[0].on (from {path}): name at least one event, or "*" for all',
        ),
        (
            '[[webhooks]]\nurl = "http://127.0.0.1:9/e"\non = ["*"]\nnamespaces = ["chta"]',
            "invalid setting webhooks[0].namespaces (from {path}): no namespace 'chta' (did you mean 'chat'?)",
        ),
        (
            '[[webhooks]]\nurl = "http://127.0.0.1:9/e"\non = ["*"]\nretries = 3',
            "invalid setting webhooks[0].retries (from {path}): unknown setting",
        ),
        (
            '[[webhooks]]\non = ["*"]',
            "invalid setting webhooks[0] (from {path}): missing 'url'",
        ),
        (
            '[[webhooks]]\nurl = "http://127.0.0.1:9/e"\non = ["*"]\nmax_batch = 0',
            "invalid setting webhooks[0].max_batch (from {path}): must be > 0",
        ),
        (
            '[[webhooks]]\nurl = "http://127.0.0.1:9/e"\non = ["*"]\n'
            '[[webhooks]]\nurl = "http://127.0.0.1:9/e"\non = ["*"]\nmax_batch = 5',
            "invalid setting webhooks[1] (from {path}): same url as webhooks[0] with other delivery options: "
            "make them agree",
        ),
    ],
)
def test_bad_rules_are_refused_at_start(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(GOOD_TOP + text)
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path)
    assert str(info.value) == message.format(path=path)
    assert "\n" not in str(info.value)


def test_webhooks_need_a_secret(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[[webhooks]]\nurl = "http://127.0.0.1:9/e"\non = ["*"]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path)
    assert str(info.value) == f"invalid setting webhooks[0] (from {path}): webhooks are signed: set [backend] secrets"


def test_backend_table_is_checked(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[backend]\nsecrets = ["short"]\n')
    with pytest.raises(ConfigError) as info:
        load_settings(config_file=path)
    assert "backend.secrets" in str(info.value) and "at least 16 bytes" in str(info.value)
    path.write_text('[backend]\nformat = "xml"\n')
    with pytest.raises(ConfigError, match=r"backend\.format"):
        load_settings(config_file=path)


def test_good_rules_load(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text(
        GOOD_TOP
        + "[namespaces.default]\n"
        + '[[webhooks]]\nurl = "https://backend.example/hooks"\non = ["message.published", "channel.vacated"]\n'
        + 'namespaces = ["chat", "default"]\nmax_batch = 20\n'
    )
    settings = load_settings(config_file=path)
    (only,) = settings.webhooks
    assert only.on == ("message.published", "channel.vacated") and only.namespaces == ("chat", "")
    assert only.selects("message.published", "chat") and not only.selects("message.published", "other")
    assert not only.selects("user.online", "")
    assert settings.backend.secrets == ("0123456789abcdef0123",)


async def test_the_queue_works_on_a_redis_cluster(
    hub_factory: HubFactory, backend: Backend, redis_cluster: LocalCluster
) -> None:
    backend.answers.append(500)  # one retry: the queue's keep runs on the cluster too
    rules = (rule(backend, ("message.published",)),)
    hub = await start_hub(
        hub_factory, *rules, redis=redis_cluster.url, redis_cluster=True, redis_prefix=unique_prefix()
    )
    alice = await user(hub, "alice", "chat:j")
    await alice.publish("chat:j", "clustered")
    event = (await backend.wait_for("message.published"))[0]
    assert event["data"]["data"] == "clustered"
    assert [d.status for d in backend.deliveries] == [500, 200]
    await alice.close()


async def test_queued_events_survive_a_killed_hub_process(
    tmp_path: Path, backend: Backend, redis_server: RedisServer
) -> None:
    """`realtime serve` killed with SIGKILL while its POSTs fail: another process delivers them."""
    await backend.stop()
    prefix = unique_prefix()
    config = tmp_path / "hub.toml"
    config.write_text(
        f'redis = "{redis_server.url}"\nredis_prefix = "{prefix}"\nallow_anonymous = true\n'
        '[[api_keys]]\nname = "backend"\nkey = "api-key-for-the-kill-test"\nscopes = ["publish"]\n'
        "[namespaces.default]\n"
        f'[backend]\nsecrets = ["{BACKEND_SECRET}"]\n'
        f'[[webhooks]]\nurl = "{backend.url}"\non = ["message.published"]\nreclaim_after = 0.5\nbackoff_max = 0.2\n'
    )
    first, port = await start_serve("--config", str(config))
    try:
        async with Publisher(f"http://127.0.0.1:{port}", "api-key-for-the-kill-test", format="json") as pub:
            for n in range(3):
                await pub.publish("news", n)
        redis = Redis.from_url(redis_server.url)
        key = stream_key(prefix, backend.url)
        # All three in the Stream, the first taken by the doomed process (pending), the others behind it.
        await until(lambda: _queued(redis, key, 3, 1), what="the events in the Stream")
    finally:
        first.kill()
        await first.wait()
    await backend.start()
    second, _ = await start_serve("--config", str(config))
    try:
        await backend.wait_for("message.published", 3)
        assert sorted(e["data"]["data"] for e in backend.events) == [0, 1, 2]
        assert len({e["id"] for e in backend.events}) == 3
        await until(lambda: _queued(redis, key, 0, 0), what="the entries acknowledged and deleted")
    finally:
        second.kill()
        await second.wait()
        await redis.aclose()


async def _queued(redis: Redis, key: str, entries: int, pending: int) -> bool:
    """Whether the Stream holds ``entries``, ``pending`` of them taken by a consumer and not acknowledged."""
    if await redis.xlen(key) != entries:
        return False
    return int((await redis.xpending(key, GROUP))["pending"]) == pending


async def test_an_unreadable_stream_entry_is_dropped_not_retried(
    hub_factory: HubFactory, backend: Backend, redis_server: RedisServer
) -> None:
    prefix = unique_prefix()
    redis = Redis.from_url(redis_server.url)
    key = stream_key(prefix, backend.url)
    try:
        await redis.xadd(key, {"e": b"not json"})
        hub = await start_hub(
            hub_factory, rule(backend, ("message.published",)), redis=redis_server.url, redis_prefix=prefix
        )
        alice = await user(hub, "alice", "chat:k")
        await alice.publish("chat:k", "readable")
        await backend.wait_for("message.published")
        assert [e["data"]["data"] for e in backend.events] == ["readable"]
        await until(lambda: _queued(redis, key, 0, 0), what="both entries gone")
        await alice.close()
    finally:
        await redis.aclose()
