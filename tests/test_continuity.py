"""The hub keeps each channel's order even when the engine loses or repeats a delivery.

The Redis engine's pub/sub is at-most-once; these tests make the memory engine
skip or repeat a delivery (by calling the hub's handler directly, the one
thing a fault test could not aim at precisely) and check that subscribers
still get every publication once, in order.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs
import pytest

from protocol.messages import Publication, StreamPosition, Subscribe, SubscribeResult, Unsubscribe, Unsubscribed
from realtime.client import Client
from realtime.engines.memory import MemoryEngine
from realtime.frames import Outgoing

from .helpers import HubFactory, RunningHub
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


def hold_the_first_repair_read(hub: RunningHub, monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the node's first repair read of history wait (a slow engine read, as with Redis):
    returns (repairing: the read began, gate: set it to let the read go on)."""
    engine = hub.hub.engine
    original = engine.history
    repairing, gate = asyncio.Event(), asyncio.Event()

    async def history(channel: str, **kwargs: Any) -> Any:
        if kwargs.get("since") is not None and not repairing.is_set():  # the node's repair read
            repairing.set()
            await gate.wait()
        return await original(channel, **kwargs)

    monkeypatch.setattr(engine, "history", history)
    return repairing, gate


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
        # Nothing past the gap first: it would move the client's position beyond it,
        # and its resubscribe from there would look complete.
        assert await sub.next_push() == Unsubscribed("feed", "recover")


async def test_python_client_learns_an_unfillable_gap_was_not_recovered(hub_factory: HubFactory) -> None:
    hub = await hub_factory(history_size=1)
    unrecovered = asyncio.Event()
    async with Client(hub.url, on_unrecovered=lambda sub: unrecovered.set()) as client:
        async with await RawClient.open(hub.url) as pub:
            sub = await client.subscribe("feed")
            await pub.publish("feed", 1)
            async with asyncio.timeout(5):
                assert (await anext(aiter(sub))).offset == 1
            for n in (2, 3, 4):
                await publish_unseen(hub, "feed", n)
            await pub.publish("feed", 5)
            await asyncio.wait_for(unrecovered.wait(), 5)
            assert not sub.recovered
            assert len(sub) == 0  # not even 5: the app reloads the channel instead


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
        hub.hub.ask_to_recover("feed")  # as after a gap history could not fill
        await pub.publish("feed", 3)
        async with asyncio.timeout(5):
            rest = [await anext(aiter(sub)), await anext(aiter(sub))]
        assert [(p.offset, p.data) for p in [first, *rest]] == [(1, 1), (2, 2), (3, 3)]
        assert sub.recovered


async def test_recovery_during_a_gap_repair_repeats_nothing(hub: RunningHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """A client recovers while the node is still filling a gap from history (a slow engine
    read, as with Redis): its reply carries the gap; the repair must not send it again."""

    async with await RawClient.open(hub.url) as alice, await RawClient.open(hub.url) as pub:
        await alice.subscribe("feed")
        await pub.publish("feed", 1)
        first = await alice.publication()
        repairing, gate = hold_the_first_repair_read(hub, monkeypatch)
        await publish_unseen(hub, "feed", 2)
        await pub.publish("feed", 3)  # a gap at 2: the repair starts and waits on the engine
        await asyncio.wait_for(repairing.wait(), 5)
        async with await RawClient.open(hub.url) as bob:
            reply = await bob.command(Subscribe(0, "feed", since=StreamPosition(first.offset, first.epoch)))
            result = reply.result
            assert isinstance(result, SubscribeResult) and result.recovered
            assert [p.offset for p in result.publications] == [2, 3]
            gate.set()
            await pub.publish("feed", 4)
            assert (await bob.publication()).offset == 4
            assert [(await alice.publication()).offset for _ in range(3)] == [2, 3, 4]


async def test_recovery_ahead_of_the_nodes_delivery_repeats_nothing(hub: RunningHub) -> None:
    """The engine's live delivery lags its history (on Redis, history is read with a command
    while publications come on the pub/sub socket): a client recovering then gets offset 1 in
    its reply, and the node's late delivery of 1 must not reach it again."""
    engine = hub.hub.engine
    assert isinstance(engine, MemoryEngine)
    real = engine._handler
    assert real is not None
    late: list[Publication] = []

    class Lagging:
        def on_publication(self, pub: Publication) -> None:
            late.append(pub)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    async with await RawClient.open(hub.url) as alice, await RawClient.open(hub.url) as bob:
        await alice.subscribe("feed")
        start = (await bob.subscribe("feed")).result
        assert isinstance(start, SubscribeResult)
        assert (await bob.command(Unsubscribe(0, "feed"))).error is None
        engine._handler = Lagging()
        try:
            await alice.publish("feed", 1)
            reply = await bob.command(Subscribe(0, "feed", since=StreamPosition(start.offset, start.epoch)))
        finally:
            engine._handler = real
        result = reply.result
        assert isinstance(result, SubscribeResult) and result.recovered
        assert [p.offset for p in result.publications] == [1]
        assert [p.offset for p in late] == [1]
        real.on_publication(late[0])  # the late delivery
        await alice.publish("feed", 2)
        assert (await bob.publication()).offset == 2
        assert [(await alice.publication()).offset for _ in range(2)] == [1, 2]


async def test_python_client_reports_a_restarted_stream(hub: RunningHub) -> None:
    """protocol.md, recovery step 5: a live publication of another epoch is like
    ``recovered: false``; a fresh channel's first publication is not."""
    unrecovered: list[str] = []
    async with Client(hub.url, on_unrecovered=lambda sub: unrecovered.append(sub.channel)) as client:
        async with await RawClient.open(hub.url) as pub:
            sub = await client.subscribe("feed")
            await pub.publish("feed", 1)
            async with asyncio.timeout(5):
                await anext(aiter(sub))
            assert sub.recovered and unrecovered == []
            hub.hub.on_publication(Publication("feed", msgpack.packb(1), 1, "restarted"))  # as after a Redis restart
            async with asyncio.timeout(5):
                again = await anext(aiter(sub))
            assert (again.offset, again.data) == (1, 1)
            assert not sub.recovered and unrecovered == ["feed"]


async def test_unfillable_gap_does_not_drop_publications_a_joining_subscriber_needs(
    hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Live subscribers are asked to recover from a gap the node cannot fill; a subscribe in
    flight, whose reply carries its own position, still gets what follows that position."""
    hub = await hub_factory(history_size=1)
    engine = hub.hub.engine
    assert isinstance(engine, MemoryEngine)
    original = engine.history
    read, gate = asyncio.Event(), asyncio.Event()

    async def history(channel: str, **kwargs: Any) -> Any:
        result = await original(channel, **kwargs)
        if kwargs.get("limit") == 0 and not read.is_set():  # bob's subscribe: its position is taken
            read.set()
            await gate.wait()  # ...and its reply is slow to come back (a Redis round trip)
        return result

    async with await RawClient.open(hub.url) as alice, await RawClient.open(hub.url) as pub:
        await alice.subscribe("feed")
        await pub.publish("feed", 1)
        assert (await alice.publication()).offset == 1
        await publish_unseen(hub, "feed", 2)
        await publish_unseen(hub, "feed", 3)  # history keeps only 3: 2 is lost for good
        monkeypatch.setattr(engine, "history", history)
        async with await RawClient.open(hub.url) as bob:
            await bob.send(Subscribe(7, "feed"))
            await asyncio.wait_for(read.wait(), 5)  # bob's position: offset 3
            await pub.publish("feed", 4)  # a gap at 2 the node cannot fill
            assert await alice.next_push() == Unsubscribed("feed", "recover")
            gate.set()
            reply = await bob.reply(7)
            result = reply.result
            assert isinstance(result, SubscribeResult)
            assert result.offset == 3
            await pub.publish("feed", 5)
            assert (await bob.publication()).offset == 4
            assert (await bob.publication()).offset == 5


async def test_python_client_heals_a_gap_it_is_handed(hub: RunningHub) -> None:
    """protocol.md recovery step 4: a publication past the next offset is not delivered; the client
    resubscribes from its position and gets what it missed, in order, recovered."""
    async with Client(hub.url) as client, await RawClient.open(hub.url) as pub:
        sub = await client.subscribe("feed")
        await pub.publish("feed", 1)
        async with asyncio.timeout(5):
            first = await anext(aiter(sub))
        await publish_unseen(hub, "feed", 2)
        await publish_unseen(hub, "feed", 3)
        conn = hub.hub.connections[client.client_id]
        codec = conn.codec
        gap = Publication("feed", msgpack.packb(3), 3, first.epoch)  # as if the node had lost offset 2
        conn.send(Outgoing(codec.encode(gap), codec.binary, gap.offset, gap.epoch))
        async with asyncio.timeout(5):
            rest = [await anext(aiter(sub)), await anext(aiter(sub))]
        assert [(p.offset, p.data) for p in [first, *rest]] == [(1, 1), (2, 2), (3, 3)]
        assert sub.recovered


async def test_a_late_copy_held_during_a_repair_is_no_gap(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    """A publication that arrives (again) while the repair reads history, and that the repair then
    delivers from history, is a copy when the repair looks at what it held: not a sign of loss.
    (It used to make the node declare a loss and ask every subscriber to recover.)"""

    async with await RawClient.open(hub.url) as alice, await RawClient.open(hub.url) as pub:
        await alice.subscribe("feed")
        await pub.publish("feed", 1)
        first = await alice.publication()
        repairing, gate = hold_the_first_repair_read(hub, monkeypatch)
        await publish_unseen(hub, "feed", 2)
        await pub.publish("feed", 3)  # a gap at 2: the repair starts and waits on the engine
        await asyncio.wait_for(repairing.wait(), 5)
        hub.hub.on_publication(Publication("feed", msgpack.packb(3), 3, first.epoch))  # a late copy of 3
        gate.set()
        assert [(await alice.publication()).offset for _ in range(2)] == [2, 3]
        await pub.publish("feed", 4)
        assert (await alice.publication()).offset == 4  # not an unsub asking it to recover
    assert not [r for r in caplog.records if "are lost" in r.getMessage()]
