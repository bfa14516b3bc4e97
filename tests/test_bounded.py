"""Bounded work per client: history replies cut at a byte budget, recovery that does not fit,
the queue bound enforced as bytes are queued, a frame's commands taking turns, reads that
create no state, and the per-namespace quotas (docs/protocol.md "history", "Offsets, epochs
and recovery"; docs/guide.md "Namespaces")."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from protocol.codes import CloseCode, ErrorCode
from protocol.limits import JSON_SUBPROTOCOL, MAX_PRESENCE_REPLY, MSGPACK_SUBPROTOCOL
from protocol.messages import (
    History,
    HistoryResult,
    Ping,
    PresenceQuery,
    PresenceResult,
    PresenceStatsQuery,
    PresenceStatsResult,
    Publication,
    Receipts,
    ReceiptsResult,
    StreamPosition,
    Subscribe,
    SubscribeResult,
    Unsubscribe,
)
from realtime.engines.memory import MemoryEngine
from realtime.engines.presence import PresenceEntry
from realtime.frames import Outgoing
from realtime.namespaces import Namespace

from .helpers import WAIT, HubFactory, RunningHub, fast, kick, make_token, namespaces, result
from .wsclient import RawClient, value

BIG = 60_000  # one publication's data: 20 of them are more than max_queue_bytes (1 MiB)
CODECS = [MSGPACK_SUBPROTOCOL, JSON_SUBPROTOCOL]
#: The oldest of twenty that history keeps: history_max_bytes (1 MiB by default) holds 17.
KEPT = 4


async def poison(hub: RunningHub, channel: str, n: int = 20) -> None:
    """What one user can do to a channel: ``n`` publications of 60 kB."""
    async with await RawClient.open(hub.url) as attacker:
        for i in range(n):
            await attacker.publish(channel, f"{i:03}" + "x" * BIG)


def label(pub: Publication) -> int:
    return int(value(pub)[:3])


def encoded(client: RawClient, pubs: tuple[Publication, ...]) -> int:
    return sum(len(client.codec.encode(p)) for p in pubs)


@pytest.mark.parametrize("codec", CODECS)
async def test_a_history_page_stops_at_the_byte_budget_and_pages_on(hub: RunningHub, codec: str) -> None:
    """Twenty 60 kB publications: the default page (100) would be 1.2 MB, over the client's
    queue; it stops at the budget instead, says so, and paging with ``before`` gets the rest."""
    await poison(hub, "poisoned")
    budget = hub.hub.settings.max_queue_bytes // 4  # the default budget: a quarter of the queue
    async with await RawClient.open(hub.url, subprotocol=codec) as honest:
        got: list[Publication] = []
        before: int | None = None
        while True:
            reply = await honest.command(History(0, "poisoned", before=before))
            page = reply.result
            assert isinstance(page, HistoryResult), reply
            assert page.publications and encoded(honest, page.publications) <= budget
            got[:0] = page.publications
            if not page.truncated:
                break
            before = page.publications[0].offset
        assert [p.offset for p in got] == list(range(KEPT, 21))
        assert [label(p) for p in got] == list(range(KEPT - 1, 20))
        assert (await honest.command(Ping(0))).error is None  # still connected


async def test_a_history_page_with_after_keeps_the_oldest_and_pages_on(hub: RunningHub) -> None:
    await poison(hub, "poisoned")
    async with await RawClient.open(hub.url) as honest:
        got: list[Publication] = []
        after = 0
        while True:
            page = (await honest.command(History(0, "poisoned", after=after))).result
            assert isinstance(page, HistoryResult)
            got += page.publications
            if not page.truncated:
                break
            after = page.publications[-1].offset
        assert [p.offset for p in got] == list(range(KEPT, 21))


async def test_a_limit_over_a_hundred_is_taken_as_a_hundred(hub_factory: HubFactory) -> None:
    """protocol.md, history: a ``limit`` absent, 0 or more than 100 means 100, not an error."""
    hub = await hub_factory(history_size=200)
    async with await RawClient.open(hub.url) as client:
        for i in range(105):
            await client.publish("many", i)
        for limit in (None, 0, 101, 2**64 - 1):
            page = (await client.command(History(0, "many", limit=limit))).result
            assert isinstance(page, HistoryResult) and not page.truncated, limit
            assert [p.offset for p in page.publications] == list(range(6, 106)), limit


async def test_a_page_of_one_publication_larger_than_the_budget_still_progresses(hub_factory: HubFactory) -> None:
    hub = await hub_factory(history_reply_bytes=1000)
    await poison(hub, "big", n=3)
    async with await RawClient.open(hub.url) as honest:
        page = (await honest.command(History(0, "big"))).result
        assert isinstance(page, HistoryResult) and page.truncated
        assert [p.offset for p in page.publications] == [3]


@pytest.mark.parametrize("codec", CODECS)
async def test_recovery_too_large_for_one_reply_is_not_recovered(hub: RunningHub, codec: str) -> None:
    """Recovering from before twenty 60 kB publications: ``recovered: false`` with no
    publications (never a reply over the client's queue); from close enough, recovered."""
    async with await RawClient.open(hub.url, subprotocol=codec) as honest:
        start = (await honest.subscribe("poisoned")).result
        assert isinstance(start, SubscribeResult)
        assert (await honest.command(Unsubscribe(0, "poisoned"))).error is None
        await poison(hub, "poisoned")
        since = StreamPosition(start.offset, start.epoch)
        epoch = ""
        for _ in range(3):  # every recovery from there, not only the first
            result = (await honest.command(Subscribe(0, "poisoned", since=since))).result
            assert isinstance(result, SubscribeResult)
            assert not result.recovered and result.publications == () and result.offset == 20
            assert (await honest.command(Unsubscribe(0, "poisoned"))).error is None
            epoch = result.epoch
        # History holds offsets 4..20 (its 1 MiB): all of them are still there, but too large for one reply.
        kept = (await honest.command(Subscribe(0, "poisoned", since=StreamPosition(KEPT - 1, epoch)))).result
        assert isinstance(kept, SubscribeResult)
        assert not kept.recovered and kept.publications == () and kept.offset == 20
        assert (await honest.command(Unsubscribe(0, "poisoned"))).error is None
        near = (await honest.command(Subscribe(0, "poisoned", since=StreamPosition(17, epoch)))).result
        assert isinstance(near, SubscribeResult) and near.recovered
        assert [p.offset for p in near.publications] == [18, 19, 20]
        assert (await honest.command(Ping(0))).error is None


async def test_recovery_from_a_stream_that_had_not_started(hub: RunningHub) -> None:
    """A never-published channel stands at offset 0 of epoch ""; recovering from there brings
    everything its first epoch published."""
    async with await RawClient.open(hub.url) as client:
        start = (await client.subscribe("later")).result
        assert isinstance(start, SubscribeResult) and (start.offset, start.epoch) == (0, "")
        assert (await client.command(Unsubscribe(0, "later"))).error is None
        async with await RawClient.open(hub.url) as other:
            for i in range(3):
                await other.publish("later", i)
        result = (await client.command(Subscribe(0, "later", since=StreamPosition(0, "")))).result
        assert isinstance(result, SubscribeResult) and result.recovered
        assert [value(p) for p in result.publications] == [0, 1, 2]


async def test_the_python_client_pages_history_and_survives_a_poisoned_recovery(hub: RunningHub) -> None:
    """The shipped client on a channel with twenty 60 kB publications: ``history()`` returns
    them all (in several replies), and a reconnect that cannot recover them says so instead of
    being closed as slow on every attempt."""
    unrecovered: list[str] = []
    async with fast(hub.url, on_unrecovered=lambda sub: unrecovered.append(sub.channel)) as client:
        sub = await client.subscribe("poisoned")
        engine = hub.hub.engine
        assert isinstance(engine, MemoryEngine)
        real = engine._handler
        assert real is not None

        class Deaf:  # this node delivers nothing meanwhile: the client misses them all
            def on_publication(self, pub: Publication) -> None:
                pass

            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

        engine._handler = Deaf()
        try:
            await poison(hub, "poisoned")
        finally:
            engine._handler = real
        first = client.client_id
        kick(hub, client, CloseCode.FORCE_RECONNECT)
        async with asyncio.timeout(WAIT):
            while not unrecovered:
                await asyncio.sleep(0.01)
        assert unrecovered == ["poisoned"] and not sub.recovered
        page = await client.history("poisoned")
        assert [m.offset for m in page] == list(range(KEPT, 21))
        assert [int(m.data[:3]) for m in page] == list(range(KEPT - 1, 20))
        assert page.position.offset == 20
        older = await client.history("poisoned", before=11, limit=4)
        assert [m.offset for m in older] == [7, 8, 9, 10]
        newer = await client.history("poisoned", after=3, limit=5)
        assert [m.offset for m in newer] == [4, 5, 6, 7, 8]
        await client.ping()
        assert client.client_id != first  # one reconnect, which succeeded
        assert hub.hub.connections[client.client_id].close_code == 0


async def test_a_frame_of_heavy_commands_takes_turns_with_other_clients(hub: RunningHub) -> None:
    """One frame of 100 history commands on a poisoned channel: another client's ping is
    answered while that frame is still running, and the sender, reading, gets every reply
    (never more than its queue bound waits for it: it is not closed as slow)."""
    await poison(hub, "poisoned")
    async with await RawClient.open(hub.url) as heavy, await RawClient.open(hub.url) as other:
        ids = [heavy.next_id() for _ in range(100)]
        await heavy.send(*(History(i, "poisoned") for i in ids))
        conn = hub.hub.connections[heavy.client_id]
        async with asyncio.timeout(WAIT):
            while not conn._in_frame:
                await asyncio.sleep(0)
        assert (await other.command(Ping(0))).error is None
        assert conn._in_frame  # the ping did not wait for the whole frame
        for i in ids:
            reply = await heavy.reply(i)
            assert isinstance(reply.result, HistoryResult) and reply.result.truncated
        assert not conn.closed


async def test_send_refuses_bytes_over_the_queue_bound(hub_factory: HubFactory) -> None:
    """The queue bound holds as messages are queued, not at the next flush: what would take
    a client's backlog over ``max_queue_bytes`` is never queued; the client is closed as slow."""
    hub = await hub_factory(max_queue_bytes=200_000)
    async with await RawClient.open(hub.url) as client:
        conn = hub.hub.connections[client.client_id]
        backlog: list[int] = []
        for _ in range(5):  # in one loop turn: no flush in between
            conn.send(Outgoing(b"\x90" * 60_000, True))
            backlog.append(conn._pending_bytes)
        assert backlog[:3] == [60_000, 120_000, 180_000] and conn.closed
        assert max(backlog) <= 200_000
        push = await client.disconnect_push()
        assert push.code == CloseCode.SLOW


async def test_reads_of_never_published_channels_create_no_state(hub_factory: HubFactory) -> None:
    """history, subscribe and recovery on 300 never-published channels leave the engine empty.
    (The command budget is off: this is about state, not about how fast a client may read.)"""
    hub = await hub_factory(command_rate=0)
    engine = hub.hub.engine
    assert isinstance(engine, MemoryEngine)
    async with await RawClient.open(hub.url) as client:
        for start in range(0, 300, 100):
            names = [f"nobody-{i}" for i in range(start, start + 100)]
            await client.send(*(History(client.next_id(), n) for n in names))
            for _ in names:
                reply = await client.recv()
                assert isinstance(reply.result, HistoryResult)  # type: ignore[union-attr]
                assert (reply.result.offset, reply.result.epoch) == (0, "")  # type: ignore[union-attr]
        for i in range(50):
            await client.subscribe(f"nobody-{i}", since=StreamPosition(0, ""))
            assert (await client.command(Unsubscribe(0, f"nobody-{i}"))).error is None
            await client.subscribe(f"nobody-{i}")
            assert (await client.command(Unsubscribe(0, f"nobody-{i}"))).error is None
    assert engine._streams == {} and engine._receipts == {}


async def test_history_is_trimmed_by_bytes_per_namespace(hub_factory: HubFactory) -> None:
    small = Namespace(name="small", subscribe="anyone", publish="clients", history_max_bytes=150_000)
    hub = await hub_factory(namespaces=namespaces(small))
    await poison(hub, "small:room", n=6)
    await poison(hub, "big", n=6)  # the default namespace: 1 MiB by default
    async with await RawClient.open(hub.url) as client:
        page = (await client.command(History(0, "small:room"))).result
        assert isinstance(page, HistoryResult)
        assert [p.offset for p in page.publications] == [5, 6]  # 2 x 60 kB fit in 150 kB, 3 do not
    kept = await hub.hub.engine.history("big")
    assert [p.offset for p in kept.publications] == [1, 2, 3, 4, 5, 6]


async def test_channels_per_namespace_are_limited_per_node(hub_factory: HubFactory) -> None:
    few = Namespace(name="few", subscribe="anyone", publish="clients", max_channels=2)
    hub = await hub_factory(namespaces=namespaces(few))
    async with await RawClient.open(hub.url) as a, await RawClient.open(hub.url) as b:
        await a.subscribe("few:1")
        await b.subscribe("few:2")
        refused = await b.command(Subscribe(0, "few:3"))
        assert refused.error is not None and refused.error.code == ErrorCode.LIMIT_EXCEEDED
        await a.subscribe("few:2")  # a channel already open on the node is no new one
        await a.subscribe("other")  # other namespaces are not counted
        assert (await a.command(Unsubscribe(0, "few:1"))).error is None
        await b.subscribe("few:3")  # one closed: room again
        assert hub.hub.subscriptions.per_namespace["few"] == 2


async def test_first_publications_lost_on_the_way_to_an_unstarted_stream_are_repaired(hub: RunningHub) -> None:
    """Subscribers of a never-published channel stand at offset 0 of epoch "": if the node's
    first delivery is offset 3 (1 and 2 lost between engine and node), the node fills 1 and 2
    from history first, and the Python client gets 1, 2, 3 in order."""
    engine = hub.hub.engine
    assert isinstance(engine, MemoryEngine)
    real = engine._handler
    assert real is not None
    lost: list[Publication] = []

    class Lossy:
        def on_publication(self, pub: Publication) -> None:
            lost.append(pub)

        def __getattr__(self, name: str) -> Any:
            return getattr(real, name)

    async with await RawClient.open(hub.url) as raw, fast(hub.url) as client:
        start = (await raw.subscribe("fresh")).result
        assert isinstance(start, SubscribeResult) and (start.offset, start.epoch) == (0, "")
        sub = await client.subscribe("fresh")
        engine._handler = Lossy()
        try:
            await raw.publish("fresh", 1)
            await raw.publish("fresh", 2)
        finally:
            engine._handler = real
        await raw.publish("fresh", 3)
        assert [(await raw.publication()).offset for _ in range(3)] == [1, 2, 3]
        async with asyncio.timeout(WAIT):
            assert [(await anext(sub)).data for _ in range(3)] == [1, 2, 3]
        assert sub.recovered


@pytest.mark.parametrize("subprotocol", CODECS)
async def test_presence_and_receipts_replies_are_bounded_whatever_the_room(
    hub_factory: HubFactory, subprotocol: str
) -> None:
    """A room of more than MAX_PRESENCE_REPLY members: ``presence`` lists that many and says
    ``truncated`` (presence_stats counts them all); ``receipts`` lists the users who read furthest."""
    room = Namespace(name="room", presence=True, subscribe="anyone", publish="clients")
    chat = Namespace(name="chat", kind="chat", subscribe="anyone", publish="clients", history_size=10)
    hub = await hub_factory(namespaces=namespaces(room, chat))
    engine = hub.hub.engine
    crowd = MAX_PRESENCE_REPLY + 5
    for i in range(crowd):  # the engine's own entries: no thousand sockets needed to fill a room
        await engine.presence_add("room:big", f"client-{i}", PresenceEntry(f"user-{i}"), ttl=60)
        await engine.receipt_raise("chat:big", f"user-{i}", i + 1)
    async with await RawClient.open(hub.url, token=make_token("asker"), subprotocol=subprotocol) as asker:
        await asker.subscribe("room:big")
        await asker.subscribe("chat:big")
        await asker.subscribe("chat:small")
        listed = result(await asker.command(PresenceQuery(0, "room:big")), PresenceResult)
        assert len(listed.clients) == MAX_PRESENCE_REPLY and listed.truncated is True
        stats = result(await asker.command(PresenceStatsQuery(0, "room:big")), PresenceStatsResult)
        assert stats.clients == crowd + 1  # the asker too
        receipts = result(await asker.command(Receipts(0, "chat:big")), ReceiptsResult)
        assert receipts.truncated is True and len(receipts.receipts) == MAX_PRESENCE_REPLY
        assert min(receipts.receipts.values()) == crowd - MAX_PRESENCE_REPLY + 1  # the furthest read
        small = result(await asker.command(Receipts(0, "chat:small")), ReceiptsResult)
        assert small == ReceiptsResult({})  # below the bound: no flag on the wire
