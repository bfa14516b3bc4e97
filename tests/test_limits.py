"""Connection limits and admission control: per node, per address, per user, connects per second.

Real hubs on port 0 and real clients: the raw protocol client reads the refusal (the Disconnect
push with its retry advice, then the close frame), and the Python SDK is shown to wait the advice.
"""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import pytest
from websockets.exceptions import ConnectionClosed as WsConnectionClosed

from protocol.backoff import ADVICE_JITTER, after_advice
from protocol.codes import CloseCode
from protocol.errors import DisconnectError
from protocol.messages import Connect, Disconnect
from realtime.admission import (
    FULL_RETRY_AFTER,
    MIN_RETRY_AFTER,
    OVER_LIMIT_RETRY_AFTER,
    ConnectRate,
    TrustedProxies,
    address_key,
)
from realtime.client import Client
from realtime.server import ADMISSION

from .helpers import WAIT, HubFactory, RunningHub, make_token, until
from .wsclient import RawClient


async def refusal(hub: RunningHub, token: str | None = None, **kwargs: Any) -> tuple[Disconnect, int]:
    """Open a WebSocket and send connect; return the Disconnect push and the close code it got."""
    client = await RawClient.open(hub.url, connect_first=False, **kwargs)
    try:
        await client.send(Connect(client.next_id(), token=token, name="test"))
    except WsConnectionClosed:
        pass  # refused at the upgrade: the push and the close may come before the connect goes out
    push = await client.disconnect_push()
    with pytest.raises(WsConnectionClosed):
        async with asyncio.timeout(WAIT):
            await client.ws.recv()
    assert client.ws.close_code is not None
    return push, client.ws.close_code


# --- the pure parts ----------------------------------------------------------------


def test_ipv6_addresses_count_by_their_64() -> None:
    assert address_key("2001:db8:1:2:aaaa::1") == address_key("2001:db8:1:2:ffff:1:2:3") == "2001:db8:1:2::/64"
    assert address_key("2001:db8:1:3::1") == "2001:db8:1:3::/64"
    assert address_key("::ffff:192.0.2.7") == "192.0.2.7"  # IPv4-mapped: the IPv4 address
    assert address_key("192.0.2.7") == "192.0.2.7"
    assert address_key("-") == "-"


def test_x_forwarded_for_is_read_only_from_trusted_proxies() -> None:
    proxies = TrustedProxies(["10.0.0.0/8"])
    assert proxies.client_address("10.0.0.5", ["203.0.113.9"]) == "203.0.113.9"
    # The rightmost untrusted hop: what the client wrote before it may be forged.
    assert proxies.client_address("10.0.0.5", ["1.1.1.1, 203.0.113.9, 10.0.0.7"]) == "203.0.113.9"
    assert proxies.client_address("10.0.0.5", ["1.1.1.1", "203.0.113.9"]) == "203.0.113.9"  # two headers
    assert proxies.client_address("198.51.100.1", ["203.0.113.9"]) == "198.51.100.1"  # not a proxy
    assert proxies.client_address("10.0.0.5", []) == "10.0.0.5"
    assert proxies.client_address("10.0.0.5", ["garbage, 10.0.0.7"]) == "10.0.0.7"  # stops at garbage
    assert proxies.trusted("::ffff:10.1.2.3")
    assert not TrustedProxies([]).trusted("10.0.0.5")
    assert TrustedProxies([]).client_address("10.0.0.5", ["203.0.113.9"]) == "10.0.0.5"


def test_the_connect_bucket_admits_its_rate_and_spreads_the_refused() -> None:
    now = [100.0]
    rate = ConnectRate(10.0, clock=lambda: now[0])
    assert [rate.take() for _ in range(10)] == [None] * 10  # one second's worth at once
    waits = [rate.take() for _ in range(30)]
    assert all(w is not None for w in waits)
    advised = [w for w in waits if w is not None]
    assert advised[0] == pytest.approx(MIN_RETRY_AFTER)
    # Each refused client is told to come 1/rate later than the one before it.
    assert all(b - a == pytest.approx(0.1) for a, b in itertools.pairwise(advised))
    now[0] += 0.25  # refills 2.5 tokens
    assert rate.take() is None and rate.take() is None and rate.take() is not None


def test_a_past_storm_does_not_push_the_line_into_the_future() -> None:
    """10,000 refused upgrades (a flood) placed the line 1,000 s ahead: minutes after the flood
    ended, the clients of an honest reconnect storm were all told 60 s instead of being spread.
    The line reaches no further than the longest advice."""
    now = [100.0]
    rate = ConnectRate(10.0, clock=lambda: now[0])
    for _ in range(10_010):
        rate.take()
    now[0] += 120.0  # the flood is over; the bucket is full again
    assert [rate.take() for _ in range(10)] == [None] * 10
    assert rate.take() == pytest.approx(MIN_RETRY_AFTER)


def test_after_advice_waits_at_least_the_advice_with_jitter() -> None:
    assert after_advice(0.3, None) == 0.3
    assert after_advice(0.3, 2.0, rng=lambda: 0.0) == 2.0
    assert after_advice(0.3, 2.0, rng=lambda: 0.999) == pytest.approx(2.0 * (1 + ADVICE_JITTER * 0.999))
    assert after_advice(9.0, 2.0, rng=lambda: 0.5) == 9.0  # the backoff is longer already


def test_disconnect_error_carries_the_advice_in_milliseconds() -> None:
    push = DisconnectError(CloseCode.OVERLOADED, retry_after=1.2345).to_push()
    assert push == Disconnect(4008, "overloaded", True, 1235)
    assert DisconnectError(CloseCode.SHUTDOWN).to_push().retry_after is None


# --- refusals on the wire ----------------------------------------------------------


async def test_a_node_at_max_connections_refuses_with_4008_and_advice(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_connections=2)
    admission = hub.server.app[ADMISSION] if hub.server.app else None
    assert admission is not None
    held = [await RawClient.open(hub.url), await RawClient.open(hub.url)]
    push, code = await refusal(hub)
    assert code == 4008
    assert push == Disconnect(4008, "this node is at its connection limit", True, round(FULL_RETRY_AFTER * 1000))
    assert admission.refused_upgrades == {4008: 1}
    assert len(hub.server.hub.connections) == 2  # the refused one was never a client

    await held[0].close()
    await until(lambda: admission.connections == 1, WAIT, "a place to free")
    async with await RawClient.open(hub.url) as again:  # the freed place
        assert (await again.subscribe("c")).error is None
    await held[1].close()


async def test_max_connections_per_address_refuses_with_4009(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_connections_per_address=2)
    held = [await RawClient.open(hub.url), await RawClient.open(hub.url)]
    push, code = await refusal(hub)
    assert code == 4009 and push.code == 4009 and push.reconnect
    assert push.retry_after == round(OVER_LIMIT_RETRY_AFTER * 1000)
    for client in held:
        await client.close()


async def test_max_connections_per_user_refuses_the_connect_with_4009(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_connections_per_user=2)
    alice = make_token("alice")
    held = [await RawClient.open(hub.url, token=alice) for _ in range(2)]
    push, code = await refusal(hub, token=alice)
    assert code == 4009
    assert push == Disconnect(4009, "too many connections for this user", True, round(OVER_LIMIT_RETRY_AFTER * 1000))
    async with await RawClient.open(hub.url, token=make_token("bob")):  # another user: admitted
        pass
    anonymous = [await RawClient.open(hub.url) for _ in range(3)]  # not counted as one user
    await held[0].close()
    await until(lambda: len(hub.server.hub.users.get("alice", ())) == 1, WAIT, "alice's first connection to end")
    async with await RawClient.open(hub.url, token=alice) as again:
        assert (await again.subscribe("c")).error is None
    for client in [held[1], *anonymous]:
        await client.close()


async def test_trusted_proxies_count_clients_by_x_forwarded_for(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_connections_per_address=1, trusted_proxies=("127.0.0.1",))
    first = await RawClient.open(hub.url, additional_headers={"X-Forwarded-For": "203.0.113.1"})
    second = await RawClient.open(hub.url, additional_headers={"X-Forwarded-For": "203.0.113.2"})
    remotes = {conn.remote for conn in hub.server.hub.connections.values()}
    assert remotes == {"203.0.113.1", "203.0.113.2"}
    push, code = await refusal(hub, additional_headers={"X-Forwarded-For": "198.51.100.9, 203.0.113.1"})
    assert code == 4009 and push.code == 4009
    await first.close()
    await second.close()


async def test_x_forwarded_for_is_ignored_without_trusted_proxies(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_connections_per_address=1)
    first = await RawClient.open(hub.url, additional_headers={"X-Forwarded-For": "203.0.113.1"})
    assert [conn.remote for conn in hub.server.hub.connections.values()] == ["127.0.0.1"]
    _, code = await refusal(hub, additional_headers={"X-Forwarded-For": "203.0.113.2"})
    assert code == 4009
    await first.close()


async def test_connects_over_the_rate_are_refused_with_growing_advice(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_connects_per_second=2)
    held = [await RawClient.open(hub.url, connect_first=False) for _ in range(2)]  # the bucket's burst
    first, code = await refusal(hub)
    second, _ = await refusal(hub)
    assert code == 4008 and first.reason == "too many connects"
    assert first.retry_after is not None and second.retry_after is not None
    assert first.retry_after >= MIN_RETRY_AFTER * 1000
    assert second.retry_after > first.retry_after  # the next one in line comes later
    for client in held:
        await client.close()


# --- a storm of SDK clients ------------------------------------------------------


class Attempts:
    """What one SDK client saw: each refusal (when, advice) and when it got in."""

    def __init__(self) -> None:
        self.refusals: list[tuple[float, float, int]] = []
        self.connected_at = 0.0

    def on_refused(self, code: int, advice: float) -> None:
        self.refusals.append((time.monotonic(), advice, code))

    def assert_waited(self, until_time: float | None = None) -> None:
        """Each attempt after a refusal came at least the advice later."""
        times = [t for t, _, _ in self.refusals] + ([until_time] if until_time is not None else [])
        for (refused_at, advice, _), next_attempt in zip(self.refusals, times[1:]):
            assert next_attempt - refused_at >= advice


async def test_a_storm_of_clients_is_shed_with_advice_and_all_get_in(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_connects_per_second=10)
    admission = hub.server.app[ADMISSION] if hub.server.app else None
    assert admission is not None
    count = 30
    attempts = [Attempts() for _ in range(count)]
    clients = [
        Client(hub.url, make_token(f"user{i}"), on_refused=attempts[i].on_refused, command_timeout=30)
        for i in range(count)
    ]

    async def connect(i: int) -> None:
        await clients[i].connect()
        attempts[i].connected_at = time.monotonic()

    # A connect storm: all at once, against a node that takes 10 a second.
    async with asyncio.timeout(60):
        await asyncio.gather(*(connect(i) for i in range(count)))
    refused = [a for a in attempts if a.refusals]
    assert refused, "some clients were refused"
    assert all(code == 4008 for a in refused for _, _, code in a.refusals)
    for a in attempts:
        a.assert_waited(a.connected_at)
    assert all(c.connected for c in clients)
    assert len(hub.server.hub.connections) == count  # none lost
    first_storm = admission.refused_upgrades.get(4008, 0)
    assert first_storm == sum(len(a.refusals) for a in attempts)

    # A reconnect storm: the hub sends every client away at once; they come back through the bucket.
    for a in attempts:
        a.refusals.clear()
    subs = [await c.subscribe(f"c{i}") for i, c in enumerate(clients)]
    for conn in list(hub.server.hub.connections.values()):
        conn.close(DisconnectError(CloseCode.FORCE_RECONNECT))
    await until(lambda: admission.refused_upgrades.get(4008, 0) > first_storm, 20, "refusals in the reconnect storm")
    await until(lambda: all(c.connected for c in clients) and len(hub.server.hub.connections) == count, 60, "all back")
    for a in attempts:
        a.assert_waited()
    assert not any(c.closed for c in clients)
    assert all(sub.channel in c.subscriptions() for sub, c in zip(subs, clients))
    await asyncio.gather(*(c.close() for c in clients))


async def test_the_sdk_honours_the_retry_after_of_a_503_before_the_upgrade(hub_factory: HubFactory) -> None:
    """Over a pending cap the hub answers 503 with Retry-After before any upgrade: the SDK waits it."""
    hub = await hub_factory(max_pending_per_address=1, handshake_timeout=10.0)
    admission = hub.server.app[ADMISSION] if hub.server.app else None
    assert admission is not None
    held = await asyncio.open_connection("127.0.0.1", hub.port)  # takes the address's one place
    await until(lambda: admission.pending_from("127.0.0.1") == 1, WAIT, "the held socket counted")
    attempts = Attempts()
    twice = asyncio.Event()

    def on_refused(code: int, advice: float) -> None:
        attempts.on_refused(code, advice)
        if len(attempts.refusals) == 2:
            twice.set()

    client = Client(hub.url, make_token("alice"), on_refused=on_refused)
    connecting = asyncio.create_task(client.connect())
    async with asyncio.timeout(WAIT):
        await twice.wait()
    held[1].close()  # the place frees: the next attempt gets in
    async with asyncio.timeout(WAIT):
        await connecting
    assert [(advice, code) for _, advice, code in attempts.refusals] == [(1.0, 503), (1.0, 503)]
    attempts.assert_waited()  # the second attempt came at least 1 s after the first was refused
    assert client.connected
    await client.close()
