"""GET /metrics: scraped over real HTTP after real traffic, parsed with prometheus_client's parser.

Every metric of docs/deploy.md ("Metrics") is asserted here, by value.
"""

from __future__ import annotations

import asyncio
import socket

import aiohttp
import msgpack  # type: ignore[import-untyped]
import pytest
from prometheus_client.parser import text_string_to_metric_families
from redis.asyncio import Redis

from protocol import Command, Connect, MsgpackCodec, Publish, Refresh, Subscribe, codec_for
from protocol.codec import JSON_SUBPROTOCOL
from protocol.codes import CloseCode, ErrorCode
from protocol.messages import Join, Ping, Publication, Reply, StateSet, Typing
from realtime.auth import ApiKey
from realtime.config import Settings
from realtime.connection import Connection
from realtime.engines.memory import MemoryEngine
from realtime.hub import Hub
from realtime.metrics import Metrics
from realtime.namespaces import Namespace

from .helpers import HubFactory, RunningHub, closed_code, make_token, namespaces, until, user
from .redis_server import RedisServer
from .wsclient import RawClient

SCRAPER = ApiKey("prometheus", "scraper-secret", frozenset({"metrics"}))
PUBLISHER = ApiKey("backend", "backend-secret", frozenset({"publish"}))
FEED = Namespace(name="feed", subscribe="anyone", publish="clients")

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def parse(text: str) -> Samples:
    return {
        (s.name, frozenset(s.labels.items())): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples[name, frozenset(labels.items())]


async def scrape(hub: RunningHub, key: ApiKey | None = SCRAPER) -> Samples:
    headers = {"Authorization": f"apikey {key.key}"} if key else {}
    async with aiohttp.ClientSession() as http, http.get(hub.http_url + "/metrics", headers=headers) as resp:
        assert resp.status == 200, await resp.text()
        assert resp.content_type == "text/plain"
        return parse(await resp.text())


@pytest.fixture
async def hub(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory(api_keys=(SCRAPER, PUBLISHER), namespaces=namespaces(FEED))


async def test_counts_and_gauges_after_real_traffic(hub: RunningHub) -> None:
    a = await RawClient.open(hub.url)  # msgpack
    b = await RawClient.open(hub.url, subprotocol=JSON_SUBPROTOCOL)
    await a.subscribe("room")
    await b.subscribe("room")
    for i in range(3):
        await a.publish("room", i)
    pubs = [[await c.publication() for _ in range(3)] for c in (a, b)]
    await b.publish("feed:x", "nobody listens")
    assert (await a.command(Publish(0, "nope:x", msgpack.packb(1)))).error.code == ErrorCode.UNKNOWN_CHANNEL  # type: ignore[union-attr]
    assert (await a.command(Subscribe(0, "room"))).error.code == ErrorCode.ALREADY_SUBSCRIBED  # type: ignore[union-attr]
    bad = await RawClient.open(hub.url, connect_first=False)
    await bad.send(Connect(1, token="not-a-token"))
    assert await closed_code(bad) == CloseCode.UNAUTHORIZED
    await b.close()
    await until(lambda: sum(hub.hub.disconnects.values()) == 2, what="both closes seen by the hub")

    m = await scrape(hub)
    assert value(m, "realtime_connections", codec="msgpack") == 1
    assert value(m, "realtime_connections", codec="json") == 0
    assert value(m, "realtime_subscriptions") == 1
    assert value(m, "realtime_channels") == 1
    assert value(m, "realtime_users") == 0  # anonymous connections have no user
    assert value(m, "realtime_disconnects_total", code="4501") == 1
    assert value(m, "realtime_disconnects_total", code="1000") == 1
    assert value(m, "realtime_disconnects_total", code="4002") == 0
    received = {"connect": 3, "subscribe": 3, "publish": 5, "ping": 0, "invalid": 0}
    for kind, n in received.items():
        assert value(m, "realtime_messages_received_total", type=kind) == n, kind
    assert value(m, "realtime_publications_total", namespace="default") == 3
    assert value(m, "realtime_publications_total", namespace="feed") == 1
    # Each publication once per subscriber; its bytes are the payload each one was sent.
    pub_bytes = sum(len(c.codec.encode(p)) for c, got in zip((a, b), pubs) for p in got)
    assert value(m, "realtime_messages_sent_total", type="pub") == 6
    assert value(m, "realtime_sent_bytes_total", type="pub") == pub_bytes
    assert value(m, "realtime_messages_sent_total", type="reply") == 7 + 3  # a: 7 commands, b: 3
    assert value(m, "realtime_messages_sent_total", type="disconnect") == 1  # to the bad token
    assert value(m, "realtime_messages_sent_total", type="event") == 0
    # b's three frames (connect, subscribe, publish; ids 1, 2, 3), as the JSON codec wrote them.
    json = codec_for(JSON_SUBPROTOCOL)
    frames: list[Command] = [
        Connect(1, name="test"),
        Subscribe(2, "room"),
        Publish(3, "feed:x", msgpack.packb("nobody listens")),
    ]
    assert value(m, "realtime_frames_received_total", codec="json") == 3
    assert value(m, "realtime_received_bytes_total", codec="json") == sum(len(json.encode_command(c)) for c in frames)
    assert value(m, "realtime_errors_total", code=str(int(ErrorCode.UNKNOWN_CHANNEL)), via="ws") == 1
    assert value(m, "realtime_errors_total", code=str(int(ErrorCode.ALREADY_SUBSCRIBED)), via="ws") == 1
    assert value(m, "realtime_errors_total", code=str(int(ErrorCode.INTERNAL)), via="ws") == 0
    assert value(m, "realtime_auth_failures_total", kind="connect") == 1
    assert value(m, "realtime_auth_failures_total", kind="api") == 0
    # One sample per loop iteration that wrote publications: one per publish here (each awaited its reply);
    # the feed publication had no subscriber to write to.
    assert value(m, "realtime_publication_write_seconds_count") == 3
    assert value(m, "realtime_publication_write_seconds_sum") > 0
    assert value(m, "realtime_publication_write_seconds_bucket", le="+Inf") == 3
    assert value(m, "realtime_engine_ready") == 1
    assert value(m, "realtime_redis_reconnects_total") == 0
    assert value(m, "realtime_redis_probe_failures_total") == 0
    assert value(m, "realtime_queued_bytes") == 0
    await a.close()


async def test_invalid_commands_and_events_are_counted(hub_factory: HubFactory) -> None:
    lobby = Namespace(name="lobby", presence=True, join_leave=True)
    hub = await hub_factory(api_keys=(SCRAPER,), namespaces=namespaces(lobby))
    a = await user(hub, "alice", "lobby:1")
    await a.send_raw(msgpack.packb({"id": 5, "cmd": "no-such-command"}))
    assert (await a.reply(5)).error.code == ErrorCode.UNKNOWN_COMMAND  # type: ignore[union-attr]
    b = await user(hub, "bob", "lobby:1")
    # Join events: alice's to alice; bob's to both.
    joins = [await a.next_push(), await a.next_push(), await b.next_push()]
    assert [(type(j), getattr(j, "user", "")) for j in joins] == [(Join, "alice"), (Join, "bob"), (Join, "bob")]
    m = await scrape(hub)
    assert value(m, "realtime_messages_received_total", type="invalid") == 1
    assert value(m, "realtime_errors_total", code=str(int(ErrorCode.UNKNOWN_COMMAND)), via="ws") == 1
    assert value(m, "realtime_messages_sent_total", type="event") == 3
    assert value(m, "realtime_sent_bytes_total", type="event") == sum(len(a.codec.encode(j)) for j in joins)
    assert value(m, "realtime_users") == 2
    await a.close()
    await b.close()


async def test_server_unsubscribe_is_counted(hub: RunningHub) -> None:
    a = await RawClient.open(hub.url)
    await a.subscribe("room")
    conn = next(iter(hub.hub.connections.values()))
    hub.hub.server_unsubscribe(conn, "room")
    push = await a.next_push()
    m = await scrape(hub)
    assert value(m, "realtime_messages_sent_total", type="unsub") == 1
    assert value(m, "realtime_sent_bytes_total", type="unsub") == len(a.codec.encode(push))
    await a.close()


async def test_refused_tokens_are_auth_failures_but_expired_ones_are_not(hub: RunningHub) -> None:
    expired = await RawClient.open(hub.url, connect_first=False)
    await expired.send(Connect(1, token=make_token("alice", ttl=-60)))
    assert (await expired.reply(1)).error.code == ErrorCode.TOKEN_EXPIRED  # type: ignore[union-attr]
    alice = await user(hub, "alice")
    await alice.send(Refresh(alice.next_id(), make_token("alice", secret="another-secret-that-is-long-enough!!")))
    assert await closed_code(alice) == CloseCode.UNAUTHORIZED
    m = await scrape(hub)
    assert value(m, "realtime_auth_failures_total", kind="refresh") == 1
    assert value(m, "realtime_auth_failures_total", kind="connect") == 0
    assert value(m, "realtime_errors_total", code=str(int(ErrorCode.TOKEN_EXPIRED)), via="ws") == 1
    assert value(m, "realtime_messages_received_total", type="refresh") == 1
    await expired.close()


async def test_the_main_port_needs_an_api_key_with_the_metrics_scope(hub: RunningHub) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(hub.http_url + "/metrics") as resp:
            assert resp.status == 401
            assert await resp.json() == {"code": ErrorCode.UNAUTHORIZED, "message": "API key required"}
        headers = {"Authorization": f"apikey {PUBLISHER.key}"}
        async with http.get(hub.http_url + "/metrics", headers=headers) as resp:
            assert resp.status == 403
            assert (await resp.json())["code"] == ErrorCode.PERMISSION_DENIED
        headers = {"Authorization": f"Bearer {SCRAPER.key}"}  # Prometheus' authorization: credentials
        async with http.get(hub.http_url + "/metrics", headers=headers) as resp:
            assert resp.status == 200
    m = await scrape(hub)
    assert value(m, "realtime_auth_failures_total", kind="api") == 1  # no key; the publish-only key is not a failure
    assert value(m, "realtime_errors_total", code=str(int(ErrorCode.UNAUTHORIZED)), via="api") == 1
    assert value(m, "realtime_errors_total", code=str(int(ErrorCode.PERMISSION_DENIED)), via="api") == 1


async def test_metrics_port_serves_metrics_without_a_key_and_nothing_else(hub_factory: HubFactory) -> None:
    hub = await hub_factory(metrics_port=0)
    port = hub.server.metrics_port
    assert port and port != hub.port
    async with await RawClient.open(hub.url):
        async with aiohttp.ClientSession() as http:
            async with http.get(f"http://127.0.0.1:{port}/metrics") as resp:
                assert resp.status == 200
                assert value(parse(await resp.text()), "realtime_connections", codec="msgpack") == 1
            accept = {"Accept": "application/openmetrics-text; version=1.0.0"}
            async with http.get(f"http://127.0.0.1:{port}/metrics", headers=accept) as resp:
                assert resp.status == 200
                assert resp.content_type == "application/openmetrics-text"
            for path in ("/healthz", "/api/publish", "/ws"):
                async with http.get(f"http://127.0.0.1:{port}{path}") as resp:
                    assert resp.status == 404, path
            async with http.get(hub.http_url + "/metrics") as resp:
                assert resp.status == 401  # the main port still wants a key
    await hub.stop()
    with pytest.raises(aiohttp.ClientConnectionError):
        async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics"):
            pass


async def test_each_app_has_its_own_registry(hub_factory: HubFactory) -> None:
    one = await hub_factory(api_keys=(SCRAPER,))
    two = await hub_factory(api_keys=(SCRAPER,))
    async with await RawClient.open(one.url) as c:
        await c.publish("x", 1)
        m1, m2 = await scrape(one), await scrape(two)
    assert value(m1, "realtime_connections", codec="msgpack") == 1
    assert value(m2, "realtime_connections", codec="msgpack") == 0
    assert value(m1, "realtime_publications_total", namespace="default") == 1
    assert value(m2, "realtime_publications_total", namespace="default") == 0


async def test_api_publications_count_and_rate_limit_and_quota_hits(hub: RunningHub) -> None:
    headers = {"Authorization": f"apikey {PUBLISHER.key}"}
    async with aiohttp.ClientSession() as http:
        body = {"channel": "feed:news", "data": 1}
        async with http.post(hub.http_url + "/api/publish", json=body, headers=headers) as resp:
            assert resp.status == 200
    m = await scrape(hub)
    assert value(m, "realtime_publications_total", namespace="feed") == 1


async def test_rate_limit_and_quota_refusals_are_counted_by_kind(hub_factory: HubFactory) -> None:
    """docs/deploy.md names the kinds: real refusals of each, and upgrades refused with 4009."""
    budget = await hub_factory(api_keys=(SCRAPER,), command_rate=1.0, command_burst=3)
    async with await user(budget, "alice") as alice:  # connect took one token
        await alice.send(*(Ping(alice.next_id()) for _ in range(4)))
        codes = [(await alice.recv()).error for _ in range(4)]  # type: ignore[union-attr]
        assert [e.code if e else None for e in codes] == [
            None,
            None,
            ErrorCode.TOO_MANY_REQUESTS,
            ErrorCode.TOO_MANY_REQUESTS,
        ]
    assert value(await scrape(budget), "realtime_rate_limited_total", kind="commands") == 2

    chat = Namespace(
        name="chat", kind="chat", subscribe="anyone", publish="clients", typing_interval=60, typing_timeout=60
    )
    live = Namespace(name="live", kind="live", subscribe="anyone", client_write=True, max_state_keys=1)
    few = Namespace(name="few", subscribe="anyone", max_channels=1)
    hub = await hub_factory(
        api_keys=(SCRAPER,),
        namespaces=namespaces(chat, live, few),
        command_rate=0,
        max_subscriptions=3,
        max_connections_per_address=2,
    )
    async with await user(hub, "bob", "chat:1", "few:1") as bob:
        assert (await bob.command(Typing(0, "chat:1"))).error is None
        assert (await bob.command(Typing(0, "chat:1"))).error.code == ErrorCode.TOO_MANY_REQUESTS  # type: ignore[union-attr]
        assert (await bob.command(StateSet(0, "live:1", "a", msgpack.packb(1)))).error is None
        assert (await bob.command(StateSet(0, "live:1", "b", msgpack.packb(2)))).error.code == ErrorCode.LIMIT_EXCEEDED  # type: ignore[union-attr]
        async with await user(hub, "carol", "few:1") as carol:
            assert (await carol.command(Subscribe(0, "few:2"))).error.code == ErrorCode.LIMIT_EXCEEDED  # type: ignore[union-attr]
            assert (await bob.command(Subscribe(0, "live:1"))).error is None
            assert (await bob.command(Subscribe(0, "chat:2"))).error.code == ErrorCode.LIMIT_EXCEEDED  # type: ignore[union-attr]
            refused = await RawClient.open(hub.url, connect_first=False)
            assert await closed_code(refused) == CloseCode.TOO_MANY_CONNECTIONS
    m = await scrape(hub)
    assert value(m, "realtime_rate_limited_total", kind="typing") == 1
    assert value(m, "realtime_quota_exceeded_total", kind="state") == 1
    assert value(m, "realtime_quota_exceeded_total", kind="channels") == 1
    assert value(m, "realtime_quota_exceeded_total", kind="subscriptions") == 1
    assert value(m, "realtime_disconnects_total", code="4009") == 1


async def test_queued_bytes_of_a_client_that_stops_reading(hub: RunningHub) -> None:
    slow = await RawClient.open(hub.url, max_queue=1)
    pub = await RawClient.open(hub.url)
    try:
        await slow.subscribe("firehose")
        slow.ws.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn = next(iter(hub.hub.connections.values()))  # the first to connect
        conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        slow.ws.transport.pause_reading()
        blob = "x" * 16000
        while conn.queued_bytes == 0:  # until the kernel's buffers are full and the hub holds the rest
            await pub.publish("firehose", blob)
        held = conn.queued_bytes
        m = await scrape(hub)
        assert value(m, "realtime_queued_bytes") == held  # the publisher's queue is empty
        assert value(m, "realtime_queued_bytes_max") == held
    finally:
        slow.ws.transport.abort()
        await pub.close()


async def test_redis_reconnects_are_counted(hub_factory: HubFactory, redis_server: RedisServer) -> None:
    hub = await hub_factory(api_keys=(SCRAPER,), redis=redis_server.url)
    async with await RawClient.open(hub.url) as c:
        await c.subscribe("r")
        assert value(await scrape(hub), "realtime_redis_reconnects_total") == 0
        redis = Redis.from_url(redis_server.url)
        try:
            await redis.client_kill_filter(_type="pubsub")
        finally:
            await redis.aclose()

        async def reconnected() -> bool:
            m = await scrape(hub)
            return value(m, "realtime_redis_reconnects_total") == 1 and value(m, "realtime_engine_ready") == 1

        await until(reconnected, what="the reconnect counted")
        await c.publish("r", 1)
        assert isinstance(await c.publication(), Publication)
        await asyncio.to_thread(redis_server.stop)

        async def unready() -> bool:
            return value(await scrape(hub), "realtime_engine_ready") == 0

        await until(unready, what="the engine unready")
        await asyncio.to_thread(redis_server.start)

        async def back() -> bool:
            m = await scrape(hub)
            return value(m, "realtime_redis_reconnects_total") == 2 and value(m, "realtime_engine_ready") == 1

        await until(back, what="the second reconnect counted")


async def test_a_reply_is_counted_once(hub: RunningHub) -> None:
    """Replies (and their errors) are counted where they are queued: once each."""
    a = await RawClient.open(hub.url)
    ids = [a.next_id() for _ in range(3)]
    await a.send(*(Subscribe(i, "nope:x") for i in ids))
    replies: list[Reply] = [await a.reply(i) for i in ids]
    assert all(r.error is not None and r.error.code == ErrorCode.UNKNOWN_CHANNEL for r in replies)
    m = await scrape(hub)
    assert value(m, "realtime_messages_sent_total", type="reply") == 1 + 3
    assert value(m, "realtime_errors_total", code=str(int(ErrorCode.UNKNOWN_CHANNEL)), via="ws") == 3
    assert value(m, "realtime_frames_received_total", codec="msgpack") == 2
    await a.close()


def test_a_connection_has_slots_not_an_instance_dict() -> None:
    """Fan-out reads a connection's attributes once per subscriber: as slots they stay cheap however
    many there are (an instance dict past 30 keys stopped sharing them: fan-out 10-14% dearer
    under callgrind, scripts/bench_inprocess.py)."""
    conn = Connection(Hub(Settings(), MemoryEngine()), None, None, MsgpackCodec(), "test")  # type: ignore[arg-type]
    assert not hasattr(conn, "__dict__")
    with pytest.raises(AttributeError):
        conn.unplanned = 1  # type: ignore[attr-defined]


def test_latency_buckets_are_cumulative_and_inclusive() -> None:
    metrics = Metrics()
    for seconds in (0.0001, 0.0002, 0.3, 3.0):  # on a bound, between two, and above them all
        metrics.latency.observe(seconds)
    body, content_type = metrics.render(None)
    assert content_type.startswith("text/plain")
    m = parse(body.decode())
    name = "realtime_publication_write_seconds"
    assert value(m, name + "_bucket", le="0.0001") == 1
    assert value(m, name + "_bucket", le="0.00025") == 2
    assert value(m, name + "_bucket", le="0.25") == 2
    assert value(m, name + "_bucket", le="0.5") == 3
    assert value(m, name + "_bucket", le="2.5") == 3
    assert value(m, name + "_bucket", le="+Inf") == value(m, name + "_count") == 4
    assert value(m, name + "_sum") == pytest.approx(3.3003)


async def test_codes_a_client_closes_with_share_one_series(hub: RunningHub) -> None:
    """A client picks its close code (3000-65535): each one a series would let it grow the
    exposition (and the scraper's series) by tens of thousands; they count under ``other``."""
    for code in (3000, 4321, 4999, 3999, 1001):
        client = await RawClient.open(hub.url)
        await client.ws.close(code=code)
    await until(lambda: sum(hub.hub.disconnects.values()) == 5, what="the five closes seen by the hub")
    m = await scrape(hub)
    assert value(m, "realtime_disconnects_total", code="other") == 4
    assert value(m, "realtime_disconnects_total", code="1001") == 1
    codes = {dict(labels)["code"] for name, labels in m if name == "realtime_disconnects_total"}
    assert not codes & {"3000", "4321", "4999", "3999"}


async def test_metrics_are_served_only_to_allowed_hosts(hub_factory: HubFactory) -> None:
    """A DNS-rebinding page (Host: its own name) reads neither the keyless metrics port on
    loopback nor the main port's /metrics."""
    hub = await hub_factory(metrics_port=0, api_keys=(SCRAPER,))
    keyless = f"http://127.0.0.1:{hub.server.metrics_port}/metrics"
    auth = {"Authorization": f"apikey {SCRAPER.key}"}
    async with aiohttp.ClientSession() as http:
        for url, headers in ((keyless, {}), (hub.http_url + "/metrics", auth)):
            async with http.get(url, headers={**headers, "Host": "evil.example"}) as resp:
                assert resp.status == 421, url
                assert await resp.json() == {"code": ErrorCode.BAD_REQUEST, "message": "host not allowed"}
            async with http.get(url, headers={**headers, "Host": "localhost"}) as resp:
                assert resp.status == 200, url
