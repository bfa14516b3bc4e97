"""The hub keeps each channel's order even when the engine loses or repeats a delivery.

The Redis engine's pub/sub is at-most-once; these tests make the memory engine
skip or repeat a delivery (by calling the hub's handler directly, the one
thing a fault test could not aim at precisely) and check that subscribers
still get every publication once, in order.
"""

from __future__ import annotations

import asyncio

from protocol.messages import Publication, Unsubscribed
from realtime.client import Client
from realtime.engines.memory import MemoryEngine

from .conftest import HubFactory, RunningHub
from .wsclient import RawClient, value


async def publish_unseen(hub: RunningHub, channel: str, data: object) -> None:
    """Publish so that the engine stores it but the node never hears of it (a lost message)."""
    engine = hub.hub.engine
    assert isinstance(engine, MemoryEngine)
    handler, engine._handler = engine._handler, None
    try:
        async with await RawClient.open(hub.url) as c:
            await c.publish(channel, data)
    finally:
        engine._handler = handler


async def test_a_lost_delivery_is_filled_from_history(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as sub, await RawClient.open(hub.url) as pub:
        await sub.subscribe("feed")
        await pub.publish("feed", 1)
        await publish_unseen(hub, "feed", 2)
        await publish_unseen(hub, "feed", 3)
        await pub.publish("feed", 4)
        got = [await sub.publication() for _ in range(4)]
        assert [(p.offset, value(p)) for p in got] == [(1, 1), (2, 2), (3, 3), (4, 4)]


async def test_a_repeated_delivery_is_dropped(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as sub, await RawClient.open(hub.url) as pub:
        await sub.subscribe("feed")
        await pub.publish("feed", "a")
        first = await sub.publication()
        hub.hub.on_publication(first)  # the engine delivers it again
        await pub.publish("feed", "b")
        second = await sub.publication()
        assert (second.offset, value(second)) == (2, "b")


async def test_a_gap_history_cannot_fill_asks_clients_to_recover(hub_factory: HubFactory) -> None:
    hub = await hub_factory(history_size=1)
    async with await RawClient.open(hub.url) as sub, await RawClient.open(hub.url) as pub:
        await sub.subscribe("feed")
        await pub.publish("feed", 1)
        assert value(await sub.publication()) == 1
        for n in (2, 3, 4):
            await publish_unseen(hub, "feed", n)  # history keeps only the last one
        await pub.publish("feed", 5)
        push = await sub.next_push()
        while isinstance(push, Publication):
            push = await sub.next_push()
        assert push == Unsubscribed("feed", "recover")


async def test_resync_after_an_interruption(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as sub, await RawClient.open(hub.url) as pub:
        await sub.subscribe("feed")
        await pub.publish("feed", 1)
        assert value(await sub.publication()) == 1
        await publish_unseen(hub, "feed", 2)
        hub.hub.on_resync()  # the engine reconnected: the node checks every channel
        p = await sub.publication()
        assert (p.offset, value(p)) == (2, 2)


async def test_python_client_resubscribes_when_asked_to_recover(hub: RunningHub) -> None:
    async with Client(hub.url) as client, await RawClient.open(hub.url) as pub:
        sub = await client.subscribe("feed")
        await pub.publish("feed", 1)
        async with asyncio.timeout(5):
            first = await anext(aiter(sub))
        await publish_unseen(hub, "feed", 2)
        hub.hub._ask_to_recover("feed")  # as after a gap history could not fill
        await pub.publish("feed", 3)
        async with asyncio.timeout(5):
            rest = [await anext(aiter(sub)), await anext(aiter(sub))]
        assert [(p.offset, p.data) for p in [first, *rest]] == [(1, 1), (2, 2), (3, 3)]
        assert sub.recovered
