"""Chat channels end to end: ids, sender, history, idempotent sends, typing, read receipts."""

from __future__ import annotations

import asyncio
import dataclasses
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import msgpack  # type: ignore[import-untyped]
import pytest

from handlers import chat as chat_module
from handlers.chat import Chat, MessageIds
from protocol.codec import JSON_SUBPROTOCOL
from protocol.codes import ErrorCode
from protocol.messages import (
    ClientInfo,
    History,
    HistoryResult,
    Publication,
    Publish,
    PublishResult,
    Read,
    ReadNotice,
    ReadResult,
    Receipts,
    ReceiptsResult,
    StreamPosition,
    Typing,
    TypingNotice,
    Unsubscribe,
)
from realtime.namespaces import Namespace

from .helpers import MS, HubFactory, RunningHub, error, make_token, namespaces, push, result, user
from .wsclient import RawClient, value

CHAT = Namespace(name="chat", kind="chat", subscribe="anyone", publish="clients", history_size=100, history_ttl=300)
ROOM = "chat:room"

T = TypeVar("T")


async def chat_hub(hub_factory: HubFactory, **options: Any) -> RunningHub:
    """A hub with the open default namespace and the chat namespace (``options`` override CHAT's)."""
    return await hub_factory(namespaces=namespaces(dataclasses.replace(CHAT, **options)))


async def send(client: RawClient, data: Any, key: str | None = None, channel: str = ROOM) -> PublishResult:
    return result(await client.command(Publish(0, channel, msgpack.packb(data), key)), PublishResult)


# --- messages ----------------------------------------------------------------


async def test_message_gets_offset_id_time_and_sender(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory)
    alice, bob = await user(hub, "alice", ROOM), await user(hub, "bob", ROOM)
    try:
        before = int(time.time() * 1000)
        # The sender fields inside data are opaque to the hub: they change nothing.
        forged = {"text": "hi", "user": "mallory", "info": {"user": "mallory", "client": "x"}}
        first = await send(alice, forged)
        after = int(time.time() * 1000)
        assert first.offset == 1 and first.epoch
        assert len(first.mid) == 26
        assert before <= first.time <= after
        for client in (bob, alice):
            pub = await push(client, Publication)
            assert value(pub) == forged
            assert (pub.offset, pub.epoch, pub.mid, pub.time) == (first.offset, first.epoch, first.mid, first.time)
            assert pub.info is not None
            assert (pub.info.user, pub.info.client) == ("alice", alice.client_id)
        second = await send(bob, "hello")
        assert second.offset == 2 and second.mid > first.mid and second.time >= first.time
        pub = await push(alice, Publication)
        assert pub.info is not None and pub.info.user == "bob" and pub.mid == second.mid
    finally:
        await alice.close()
        await bob.close()


async def test_server_publish_has_no_sender(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory)
    async with await user(hub, "bob", ROOM) as bob:
        ns = hub.hub.namespace(ROOM)
        assert ns is not None
        sent = await hub.hub.publish(ROOM, msgpack.packb("system"), ns)
        assert isinstance(sent, PublishResult) and sent.mid
        pub = await push(bob, Publication)
        assert (pub.info, pub.mid, value(pub)) == (None, sent.mid, "system")


async def test_history_pages_carry_ids(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory)
    async with await user(hub, "alice", ROOM) as alice:
        sent = [await send(alice, i) for i in range(10)]
        mids = {r.offset: r.mid for r in sent}
        assert len(set(mids.values())) == 10

        async def page(**kwargs: Any) -> list[int]:
            r = result(await alice.command(History(0, ROOM, **kwargs)), HistoryResult)
            assert r.offset == 10 and r.epoch == sent[0].epoch
            for p in r.publications:
                assert p.mid == mids[p.offset] and p.time == sent[p.offset - 1].time
                assert p.info is not None and p.info.user == "alice"
            return [p.offset for p in r.publications]

        assert await page(limit=3) == [8, 9, 10]
        assert await page(limit=3, before=8) == [5, 6, 7]
        assert await page(limit=3, after=2) == [3, 4, 5]
        assert await page(limit=3, before=2) == [1]
        assert await page(limit=3, after=10) == []
        assert await page(limit=50) == list(range(1, 11))
        assert await page() == list(range(1, 11))  # no limit: up to a full page


# --- idempotent sends -----------------------------------------------------------


async def test_retry_with_key_posts_once(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory)
    alice, bob = await user(hub, "alice"), await user(hub, "bob", ROOM)
    try:
        await alice.subscribe(ROOM)
        first = await send(alice, "once", key="k1")
        assert first.mid
        # The same send again, also from a new connection of alice (a reconnect).
        assert await send(alice, "once", key="k1") == first
        async with await user(hub, "alice") as again:
            assert await send(again, "once", key="k1") == first
        # Another user's key "k1" is theirs: a new message.
        other = await send(bob, "mine", key="k1")
        assert other.offset == first.offset + 1 and other.mid != first.mid
        # Exactly one publication per key reached the subscriber, and history.
        assert [value(await push(bob, Publication)) for _ in range(2)] == ["once", "mine"]
        marker = await send(alice, "marker")
        assert value(await push(bob, Publication)) == "marker"
        page = result(await bob.command(History(0, ROOM)), HistoryResult)
        assert [p.mid for p in page.publications] == [first.mid, other.mid, marker.mid]
    finally:
        await alice.close()
        await bob.close()


async def test_anonymous_keys_are_per_connection(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory)
    async with await user(hub, "") as a, await user(hub, "") as b:
        ra = await send(a, "a", key="same")
        assert await send(a, "a", key="same") == ra
        rb = await send(b, "b", key="same")
        assert rb.offset == ra.offset + 1


async def test_key_expires_after_the_window(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory, idempotency_window=0.1)
    async with await user(hub, "alice") as alice:
        first = await send(alice, "x", key="k")
        assert await send(alice, "x", key="k") == first
        await asyncio.sleep(150 * MS)  # the window is time itself: nothing to await
        assert (await send(alice, "x", key="k")).offset == first.offset + 1


async def test_bad_key_is_refused(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory)
    async with await user(hub, "alice") as alice:
        reply = await alice.command(Publish(0, ROOM, msgpack.packb(1), "k" * 129))
        assert error(reply) == ErrorCode.BAD_REQUEST


def block_publishes(hub: RunningHub, monkeypatch: pytest.MonkeyPatch) -> tuple[asyncio.Event, asyncio.Event]:
    """Make the engine's next publish wait: returns (entered, release).

    A fake only in timing: the real engine publishes once ``release`` is set.
    A real engine cannot be made slow on demand.
    """
    engine = hub.hub.engine
    original: Callable[..., Awaitable[StreamPosition]] = engine.publish
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_publish(*args: Any, **kwargs: Any) -> StreamPosition:
        entered.set()
        await release.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(engine, "publish", slow_publish)
    return entered, release


async def test_retry_while_first_send_in_flight(hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = await chat_hub(hub_factory)
    entered, release = block_publishes(hub, monkeypatch)
    first_conn, retry_conn = await user(hub, "alice"), await user(hub, "alice")
    bob = await user(hub, "bob", ROOM)
    try:
        cmd = Publish(first_conn.next_id(), ROOM, msgpack.packb("slow"), "k")
        await first_conn.send(cmd)
        async with asyncio.timeout(2):
            await entered.wait()
        # The retry (a reconnected device) waits for the send in flight...
        retry = asyncio.ensure_future(send(retry_conn, "slow", key="k"))
        await asyncio.sleep(20 * MS)
        assert not retry.done()
        release.set()
        # ...and gets its result.
        original = result(await first_conn.reply(cmd.id), PublishResult)
        async with asyncio.timeout(2):
            assert await retry == original
        assert value(await push(bob, Publication)) == "slow"
        await send(first_conn, "marker")
        assert value(await push(bob, Publication)) == "marker"
    finally:
        for c in (first_conn, retry_conn, bob):
            await c.close()


async def test_retry_gives_up_on_a_stuck_send(hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = await chat_hub(hub_factory)
    monkeypatch.setattr(chat_module, "IN_FLIGHT_WAIT", 0.05)
    entered, release = block_publishes(hub, monkeypatch)
    async with await user(hub, "alice") as first, await user(hub, "alice") as retry:
        cmd = Publish(first.next_id(), ROOM, msgpack.packb("stuck"), "k")
        await first.send(cmd)
        async with asyncio.timeout(2):
            await entered.wait()
        refused = await retry.command(Publish(0, ROOM, msgpack.packb("stuck"), "k"))
        assert error(refused) == ErrorCode.NOT_AVAILABLE  # temporary: retry later
        assert ErrorCode(error(refused)).temporary
        release.set()
        original = result(await first.reply(cmd.id), PublishResult)
        assert await send(retry, "stuck", key="k") == original


async def test_retry_on_another_node_waits_for_the_claim(
    hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A second Chat over the same engine stands for another node: it only sees the kv claim."""
    hub = await chat_hub(hub_factory)
    entered, release = block_publishes(hub, monkeypatch)
    ns = hub.hub.namespace(ROOM)
    assert ns is not None
    node_a, node_b = hub.hub.feature(Chat), Chat(hub.hub)
    info = ClientInfo("alice", "conn-1")
    first = asyncio.ensure_future(node_a.publish(ROOM, msgpack.packb(1), ns, info=info, key="k"))
    async with asyncio.timeout(2):
        await entered.wait()
    second = asyncio.ensure_future(
        node_b.publish(ROOM, msgpack.packb(1), ns, info=ClientInfo("alice", "conn-2"), key="k")
    )
    await asyncio.sleep(20 * MS)
    assert not second.done()
    release.set()
    async with asyncio.timeout(2):
        assert await second == await first


async def test_failed_send_releases_its_key(hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = await chat_hub(hub_factory)
    engine = hub.hub.engine
    original: Callable[..., Awaitable[StreamPosition]] = engine.publish
    calls = 0

    async def failing_once(*args: Any, **kwargs: Any) -> StreamPosition:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ConnectionError("engine down")
        return await original(*args, **kwargs)

    monkeypatch.setattr(engine, "publish", failing_once)
    async with await user(hub, "alice") as alice:
        failed = await alice.command(Publish(0, ROOM, msgpack.packb("x"), "k"))
        assert error(failed) == ErrorCode.INTERNAL
        # The claim was released: the retry posts (the first send never did).
        assert (await send(alice, "x", key="k")).offset == 1


def test_message_ids_sort_in_time_order() -> None:
    ids = MessageIds()
    a, ms_a = ids.new(1_000)
    b, ms_b = ids.new(1_000)  # same millisecond
    c, ms_c = ids.new(999)  # the clock stepped back
    d, ms_d = ids.new(2_000)
    assert a < b < c < d
    assert (ms_a, ms_b, ms_c, ms_d) == (1_000, 1_000, 1_000, 2_000)
    assert len({a, b, c, d}) == 4 and all(len(x) == 26 for x in (a, b, c, d))
    other_node = MessageIds()
    assert other_node.new(1_000)[0] != a


# --- typing ----------------------------------------------------------------------


async def test_typing_notices_reach_subscribers(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory, typing_interval=5.0, typing_timeout=10.0)
    alice, bob = await user(hub, "alice", ROOM), await user(hub, "bob", ROOM)
    js = await RawClient.open(hub.url, subprotocol=JSON_SUBPROTOCOL, token=make_token("carol"))
    try:
        await js.subscribe(ROOM)
        assert (await alice.command(Typing(0, ROOM, True))).error is None
        assert await push(bob, TypingNotice) == TypingNotice(ROOM, "alice", True, 10.0)
        assert await push(js, TypingNotice) == TypingNotice(ROOM, "alice", True, 10.0)
        # A flood is refused; stopping is always allowed.
        assert error(await alice.command(Typing(0, ROOM, True))) == ErrorCode.TOO_MANY_REQUESTS
        assert (await alice.command(Typing(0, ROOM, False))).error is None
        assert await push(bob, TypingNotice) == TypingNotice(ROOM, "alice", False, 10.0)
        # The limit is per user and channel: bob may type.
        assert (await bob.command(Typing(0, ROOM, True))).error is None
        assert await push(bob, TypingNotice) == TypingNotice(ROOM, "bob", True, 10.0)
        # Nothing was stored.
        page = result(await bob.command(History(0, ROOM)), HistoryResult)
        assert page.publications == () and page.offset == 0
    finally:
        for c in (alice, bob, js):
            await c.close()


async def test_typing_indicator_expires_by_itself(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory, typing_interval=0.1, typing_timeout=0.2)
    async with await user(hub, "alice", ROOM) as alice, await user(hub, "bob", ROOM) as bob:
        start = time.monotonic()
        assert (await alice.command(Typing(0, ROOM, True))).error is None
        assert (await push(bob, TypingNotice)).typing
        stopped = await push(bob, TypingNotice)
        assert stopped == TypingNotice(ROOM, "alice", False, 0.2)
        assert time.monotonic() - start >= 0.2 - 10 * MS


async def test_typing_renewed_before_timeout_keeps_indicator(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory, typing_interval=0.05, typing_timeout=0.3)
    async with await user(hub, "alice", ROOM) as alice, await user(hub, "bob", ROOM) as bob:
        start = time.monotonic()
        assert (await alice.command(Typing(0, ROOM, True))).error is None
        assert (await push(bob, TypingNotice)).typing
        await asyncio.sleep(0.15)  # past the interval, well within the timeout
        renewed = time.monotonic()
        assert (await alice.command(Typing(0, ROOM, True))).error is None
        assert (await push(bob, TypingNotice)).typing
        assert not (await push(bob, TypingNotice)).typing
        # The timeout counted from the renewal, not from the first notice.
        assert time.monotonic() - renewed >= 0.3 - 10 * MS
        assert time.monotonic() - start >= 0.45 - 10 * MS


async def test_typing_stops_on_disconnect_and_unsubscribe(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory, typing_interval=0.0, typing_timeout=30.0)
    bob = await user(hub, "bob", ROOM)
    try:
        alice = await user(hub, "alice", ROOM)
        assert (await alice.command(Typing(0, ROOM, True))).error is None
        assert (await push(bob, TypingNotice)).typing
        await alice.close()
        assert await push(bob, TypingNotice) == TypingNotice(ROOM, "alice", False, 30.0)

        async with await user(hub, "carol", ROOM) as carol:
            assert (await carol.command(Typing(0, ROOM, True))).error is None
            assert (await push(bob, TypingNotice)).typing
            assert (await carol.command(Unsubscribe(0, ROOM))).error is None
            assert await push(bob, TypingNotice) == TypingNotice(ROOM, "carol", False, 30.0)
        assert not hub.hub.feature(Chat)._typing  # no timer left behind
    finally:
        await bob.close()


# --- read receipts -----------------------------------------------------------------


async def test_read_receipts(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory)
    alice, bob = await user(hub, "alice", ROOM), await user(hub, "bob", ROOM)
    try:
        for i in range(3):
            await send(alice, i)
        for _ in range(3):
            await push(bob, Publication)
        assert result(await alice.command(Read(0, ROOM, 2)), ReadResult) == ReadResult(2)
        assert await push(bob, ReadNotice) == ReadNotice(ROOM, "alice", 2)
        assert result(await bob.command(Read(0, ROOM, 3)), ReadResult) == ReadResult(3)
        assert await push(bob, ReadNotice) == ReadNotice(ROOM, "bob", 3)
        got = result(await bob.command(Receipts(0, ROOM)), ReceiptsResult)
        assert got.receipts == {"alice": 2, "bob": 3}
        # Backwards is refused; the same offset again is an idempotent success, not announced again.
        assert error(await alice.command(Read(0, ROOM, 1))) == ErrorCode.CONFLICT
        assert result(await alice.command(Read(0, ROOM, 2)), ReadResult) == ReadResult(2)
        assert result(await alice.command(Read(0, ROOM, 3)), ReadResult) == ReadResult(3)
        assert await push(bob, ReadNotice) == ReadNotice(ROOM, "alice", 3)
        # Past the channel's offset, or negative: a bad request.
        assert error(await alice.command(Read(0, ROOM, 4))) == ErrorCode.BAD_REQUEST
        got = result(await alice.command(Receipts(0, ROOM)), ReceiptsResult)
        assert got.receipts == {"alice": 3, "bob": 3}
    finally:
        await alice.close()
        await bob.close()


# --- notice floods ------------------------------------------------------------------


async def _notices_before_marker(hub: RunningHub, flood: Callable[[RawClient], Awaitable[None]]) -> list[object]:
    """The pushes bob gets while alice runs ``flood``, up to carol's read receipt sent after it."""
    await hub.hub.publish(ROOM, msgpack.packb("hello"), hub.hub.namespace(ROOM))
    alice, bob, carol = [await user(hub, name, ROOM) for name in ("alice", "bob", "carol")]
    try:
        await flood(alice)
        assert result(await carol.command(Read(0, ROOM, 1)), ReadResult) == ReadResult(1)
        seen: list[object] = []
        while (notice := await bob.next_push()) != ReadNotice(ROOM, "carol", 1):
            seen.append(notice)
        return seen
    finally:
        for client in (alice, bob, carol):
            await client.close()


async def _flood(client: RawClient, commands: list[Typing | Read]) -> None:
    """Send ``commands`` 100 to a frame, then wait for every reply."""
    for i in range(0, len(commands), 100):
        await client.send(*(dataclasses.replace(c, id=client.next_id()) for c in commands[i : i + 100]))
    while client.expected:
        await client.recv()


async def test_repeated_stops_and_reads_reach_nobody(hub_factory: HubFactory) -> None:
    """The finding: one subscriber pushed 1,000 ``typing: false`` and 1,000 repeated ``read`` notices to the
    others in 0.1 s. A stop is announced only when it turns an indicator off, a receipt only when it moves.
    (The command budget is off here: these are the notices' own rules.)"""
    chat = dataclasses.replace(CHAT, typing_interval=0.0, typing_timeout=30.0)
    hub = await hub_factory(namespaces=namespaces(chat), command_rate=0)

    async def flood(alice: RawClient) -> None:
        assert (await alice.command(Typing(0, ROOM, True))).error is None
        await _flood(alice, [Typing(0, ROOM, False)] * 1000 + [Read(0, ROOM, 1)] * 1000)

    seen = await _notices_before_marker(hub, flood)
    assert seen == [
        TypingNotice(ROOM, "alice", True, 30.0),
        TypingNotice(ROOM, "alice", False, 30.0),
        ReadNotice(ROOM, "alice", 1),
    ]


async def test_stepping_reads_push_one_notice_per_interval(hub_factory: HubFactory) -> None:
    """The finding: where clients may not publish, a subscriber stepping ``read`` through a long
    history (1, 2, 3...) pushed one notice per message to everyone (200 in 0.02 s, then 100 a
    second). Now one at once, then the latest when the user's ``typing_interval`` ends."""
    chat = dataclasses.replace(CHAT, publish="server", typing_interval=0.5)
    hub = await hub_factory(namespaces=namespaces(chat), command_rate=0)
    for i in range(50):
        await hub.hub.publish(ROOM, msgpack.packb(i), hub.hub.namespace(ROOM))
    async with await user(hub, "alice", ROOM) as alice, await user(hub, "bob", ROOM) as bob:
        await _flood(alice, [Read(0, ROOM, i) for i in range(1, 51)])
        assert await push(bob, ReadNotice) == ReadNotice(ROOM, "alice", 1)
        assert await push(bob, ReadNotice) == ReadNotice(ROOM, "alice", 50)  # the latest, when the wait ends
        assert result(await bob.command(Read(0, ROOM, 7)), ReadResult) == ReadResult(7)  # bob's own: at once
        assert await push(bob, ReadNotice) == ReadNotice(ROOM, "bob", 7)
        got = result(await bob.command(Receipts(0, ROOM)), ReceiptsResult)
        assert got.receipts == {"alice": 50, "bob": 7}
        assert not [p for p in bob.pushes if isinstance(p, ReadNotice)]


async def test_typing_needs_the_right_to_publish(hub_factory: HubFactory) -> None:
    """Where clients may not publish, nobody is typing a message: typing is refused (103), reads still work."""
    hub = await hub_factory(namespaces=namespaces(dataclasses.replace(CHAT, publish="server")), command_rate=0)

    async def flood(alice: RawClient) -> None:
        assert error(await alice.command(Typing(0, ROOM, True))) == ErrorCode.PERMISSION_DENIED
        assert error(await alice.command(Typing(0, ROOM, False))) == ErrorCode.PERMISSION_DENIED
        await _flood(alice, [Typing(0, ROOM, False)] * 1000 + [Read(0, ROOM, 1)] * 1000)

    assert await _notices_before_marker(hub, flood) == [ReadNotice(ROOM, "alice", 1)]


async def test_typing_stop_from_another_connection_clears_the_indicator(hub_factory: HubFactory) -> None:
    """The indicator's state is the engine's, so a stop sent on another connection (device) still counts."""
    hub = await chat_hub(hub_factory, typing_interval=0.0, typing_timeout=30.0)
    async with await user(hub, "alice", ROOM) as phone, await user(hub, "alice", ROOM) as laptop:
        async with await user(hub, "bob", ROOM) as bob:
            assert (await phone.command(Typing(0, ROOM, True))).error is None
            assert (await push(bob, TypingNotice)).typing
            assert (await laptop.command(Typing(0, ROOM, False))).error is None
            assert await push(bob, TypingNotice) == TypingNotice(ROOM, "alice", False, 30.0)
            assert (await laptop.command(Typing(0, ROOM, False))).error is None  # already off: not announced
            assert (await phone.command(Typing(0, ROOM, True))).error is None
            assert await push(bob, TypingNotice) == TypingNotice(ROOM, "alice", True, 30.0)


async def test_typing_too_often_says_when_to_retry(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory, typing_interval=5.0, typing_timeout=10.0)
    async with await user(hub, "alice", ROOM) as alice:
        assert (await alice.command(Typing(0, ROOM, True))).error is None
        refused = (await alice.command(Typing(0, ROOM, True))).error
        assert refused is not None and refused.code == ErrorCode.TOO_MANY_REQUESTS
        assert refused.retry_after == 5000


# --- refusals ----------------------------------------------------------------------


async def test_anonymous_unsubscribed_and_other_channels_are_refused(hub_factory: HubFactory) -> None:
    hub = await chat_hub(hub_factory)
    commands = (Typing(0, ROOM, True), Read(0, ROOM, 0), Receipts(0, ROOM))
    async with await user(hub, "", ROOM) as anon, await user(hub, "alice", "news") as alice:
        for cmd in commands:
            assert error(await anon.command(cmd)) == ErrorCode.PERMISSION_DENIED
            assert error(await alice.command(cmd)) == ErrorCode.NOT_SUBSCRIBED
            plain = dataclasses.replace(cmd, channel="news")
            assert error(await alice.command(plain)) == ErrorCode.BAD_REQUEST
            unknown = dataclasses.replace(cmd, channel="nope:x")
            assert error(await alice.command(unknown)) == ErrorCode.UNKNOWN_CHANNEL


async def test_memory_engine_sweep_drops_expired_values() -> None:
    """Idempotency records must not pile up in a long-running memory-engine hub."""
    from realtime.engines.memory import MemoryEngine

    engine = MemoryEngine()
    await engine.kv_set("short", b"1", ttl=1.0)
    await engine.kv_set("forever", b"1")
    engine.sweep(now=time.monotonic() + 2.0)
    assert set(engine._kv) == {"forever"}
