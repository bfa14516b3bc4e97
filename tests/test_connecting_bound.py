"""The storm bound (``max_connecting``): connections upgraded whose connect is not answered yet.

Over it an upgrade is refused with 4008 OVERLOADED and advice that spreads the refused clients
over the seconds the node needs; the SDK honours it and every client gets in. Real hubs on port
0, the raw protocol client to read refusals, and the Python SDK for the storm.
"""

from __future__ import annotations

import asyncio
import itertools

import pytest

from protocol.codes import CloseCode
from protocol.errors import DisconnectError
from protocol.messages import Connect, Disconnect
from realtime.admission import MAX_RETRY_AFTER, MIN_RETRY_AFTER, ConnectingLine
from realtime.client import Client
from realtime.server import ADMISSION

from .helpers import HubFactory, make_token, until
from .test_admission import http_response
from .test_limits import refusal
from .wsclient import RawClient, RawSocket


async def keep_alive(port: int) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """A socket whose /healthz was answered, kept alive for its next request."""
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: localhost\r\n\r\n")
    status, _, _ = await http_response(reader)
    assert status == 200
    return reader, writer


def test_the_line_spaces_refusals_by_the_rate_connects_complete() -> None:
    now = [100.0]
    line = ConnectingLine(10.0, clock=lambda: now[0])
    # No history: at least the floor (10 a second), from the least advice up.
    waits = [line.advice() for _ in range(5)]
    assert waits[0] == MIN_RETRY_AFTER
    assert [b - a for a, b in itertools.pairwise(waits)] == pytest.approx([0.1] * 4)
    # 50 connects completed in a second: the next second's refusals are 1/50 s apart.
    now[0] = 101.0
    for _ in range(50):
        line.completed()
    now[0] = 102.0
    first, second = line.advice(), line.advice()
    assert second - first == pytest.approx(0.02)
    # Never further than the longest advice, however many are refused.
    assert max(line.advice() for _ in range(10_000)) <= MAX_RETRY_AFTER


async def test_upgrades_over_the_bound_are_refused_until_a_connect_completes(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_connecting=2)
    admission = hub.server.app[ADMISSION] if hub.server.app else None
    assert admission is not None
    held = [await RawClient.open(hub.url, connect_first=False) for _ in range(2)]  # upgraded, no connect yet
    await until(lambda: admission.connecting == 2, 5, "two connecting")
    push, code = await refusal(hub)
    assert code == CloseCode.OVERLOADED and push.reason == "too many connects in progress"
    assert push.retry_after is not None and push.retry_after >= MIN_RETRY_AFTER * 1000
    assert admission.refused_upgrades == {CloseCode.OVERLOADED: 1}
    # A connect answered frees its place: the next upgrade is taken.
    reply = await held[0].command(Connect(0, token=make_token("user0"), name="test"))
    assert reply.error is None
    await until(lambda: admission.connecting == 1, 5, "one connecting")
    third = await RawClient.open(hub.url, token=make_token("user1"))
    # A socket that leaves before connecting frees its place too.
    await held[1].close()
    await until(lambda: admission.connecting == 0, 5, "none connecting")
    assert len(hub.server.hub.connections) == 2
    for client in (held[0], third):
        await client.close()


async def test_a_storm_over_the_bound_is_shed_and_every_sdk_client_gets_in(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_connecting=5)
    admission = hub.server.app[ADMISSION] if hub.server.app else None
    assert admission is not None
    count = 20
    refusals: list[tuple[int, float]] = []
    clients = [
        Client(
            hub.url,
            make_token(f"user{i}"),
            on_refused=lambda code, advice: refusals.append((code, advice)),
            command_timeout=30,
        )
        for i in range(count)
    ]
    async with asyncio.timeout(90):
        await asyncio.gather(*(c.connect() for c in clients))
    assert all(c.connected for c in clients)
    assert refusals, "a storm of 20 against a bound of 5 is shed"
    assert all(code == CloseCode.OVERLOADED and advice >= MIN_RETRY_AFTER for code, advice in refusals)
    assert admission.refused_upgrades.get(CloseCode.OVERLOADED) == len(refusals)
    assert len(hub.server.hub.connections) == count and admission.connecting == 0

    # The hub sends everyone away at once: they come back through the bound, subscriptions kept.
    subs = [await c.subscribe(f"c{i}") for i, c in enumerate(clients)]
    before = len(refusals)
    for conn in list(hub.server.hub.connections.values()):
        conn.close(DisconnectError(CloseCode.FORCE_RECONNECT))
    await until(lambda: all(c.connected for c in clients) and len(hub.server.hub.connections) == count, 60, "all back")
    assert len(refusals) >= before
    assert all(sub.channel in c.subscriptions() for sub, c in zip(subs, clients))
    await asyncio.gather(*(c.close() for c in clients))


async def test_a_keep_alive_socket_that_upgrades_is_connecting_and_pending_again(hub_factory: HubFactory) -> None:
    # Its /healthz answered, it let go of its pending place; as a WebSocket without a connect
    # it must count again, or asking /healthz first would escape max_pending and max_connecting.
    hub = await hub_factory(max_connecting=1)
    admission = hub.server.app[ADMISSION] if hub.server.app else None
    assert admission is not None
    peer = await RawSocket.upgrade(*await keep_alive(hub.port))
    try:
        await until(lambda: admission.connecting == 1 and admission.pending == 1, 5, "the upgrade counted")
        over = await RawSocket.upgrade(*await keep_alive(hub.port))  # over max_connecting, the same way in
        try:
            (push,) = await over.messages()
            assert isinstance(push, Disconnect) and push.code == CloseCode.OVERLOADED
            assert push.reason == "too many connects in progress"
            assert await over.close_frame() == CloseCode.OVERLOADED
        finally:
            over.close()
        peer.send(Connect(1, token=make_token("alice"), name="test"))
        assert (await peer.reply()).error is None
        await until(lambda: admission.connecting == 0 and admission.pending == 0, 5, "the connect counted out")
    finally:
        peer.close()


async def test_a_keep_alive_socket_that_upgrades_over_max_pending_is_refused(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_pending=1)
    admission = hub.server.app[ADMISSION] if hub.server.app else None
    assert admission is not None
    idle = await keep_alive(hub.port)  # its /healthz came in while the place was free
    held = await RawSocket.open(hub.port)  # upgraded, no connect: the one pending place
    try:
        peer = await RawSocket.upgrade(*idle)
        try:
            (push,) = await peer.messages()  # as a WebSocket it would be a second pending socket
            assert isinstance(push, Disconnect) and push.code == CloseCode.OVERLOADED
            assert push.reason == "too many unauthenticated connections" and push.retry_after
            assert admission.pending == 1 and admission.refused_upgrades == {CloseCode.OVERLOADED: 1}
        finally:
            peer.close()
    finally:
        held.close()
