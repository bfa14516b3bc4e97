"""The client SDK's chat, presence, status and live-data features, end to end against real hubs.

The pure rules of live state (versions, patches, gaps) are also checked
without sockets at the end, on pushes built by hand.
"""

from __future__ import annotations

import asyncio
import contextlib
import random
from collections.abc import Callable
from typing import Any, TypeVar

import msgpack  # type: ignore[import-untyped, unused-ignore]
import pytest

from handlers.live import Live
from protocol import messages as m
from protocol.codes import CloseCode, ErrorCode
from protocol.wire import NO_RESULTS, Expected
from realtime.client import (
    Client,
    ConnectionLost,
    Event,
    Joined,
    Left,
    Message,
    PresenceMember,
    PresenceStats,
    ReadReceipt,
    ReplyError,
    Sender,
    Sent,
    StateChanged,
    StatusChanged,
    StreamPosition,
    Subscription,
    TypingChanged,
    Unsubscribed,
    UserStatus,
)
from realtime.namespaces import Namespace

from .helpers import (
    MS,
    WAIT,
    HubFactory,
    RunningHub,
    SpyCodec,
    fast,
    kick,
    make_token,
    namespaces,
    spy,
    take,
    unpack,
    until,
)

GRACE = 100 * MS
CHAT = Namespace(
    name="chat",
    kind="chat",
    subscribe="anyone",
    publish="clients",
    history_size=100,
    history_ttl=300,
    typing_interval=0.0,
    typing_timeout=5.0,
)
ROOM = Namespace(name="room", presence=True, join_leave=True, presence_grace=GRACE, subscribe="anyone")
STATUS = Namespace(name="status", kind="status", subscribe="authenticated", presence_grace=GRACE)
LIVE = Namespace(name="live", kind="live", subscribe="anyone", client_write=True)

E = TypeVar("E")


@pytest.fixture
async def hub(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory(namespaces=namespaces(CHAT, ROOM, STATUS, LIVE))


def user(hub: RunningHub, name: str, **options: Any) -> Client:
    """A fast-reconnecting client of user ``name`` (token claims in ``claims``)."""
    claims = options.pop("claims", {})
    return fast(hub.url, token=make_token(name, **claims), **options)


async def next_event(sub: Subscription) -> Event:
    async with asyncio.timeout(WAIT):
        return await anext(aiter(sub.events()))


async def event_where(sub: Subscription, check: Callable[[Event], bool]) -> Event:
    """The first event that passes ``check``, skipping those before it."""
    async with asyncio.timeout(WAIT):
        async for event in sub.events():
            if check(event):
                return event
    raise AssertionError("the events ended")


async def queued_events(sub: Subscription) -> list[Event]:
    """The events already queued, without waiting for more."""
    assert sub._events is not None
    return [await next_event(sub) for _ in range(len(sub._events))]


async def truth(hub: RunningHub, channel: str) -> tuple[dict[str, Any], int]:
    """What the hub holds for a live channel: key -> value, and the version."""
    entries, version = await hub.hub.feature(Live).get(channel)
    return {e.key: unpack(e.value) for e in entries}, version


# --- chat -----------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_chat_history_typing_read_and_receipts(hub: RunningHub, codec: Any) -> None:
    ch = "chat:room"
    async with user(hub, "alice", codec=codec, claims={"info": {"name": "Alice"}}) as alice, user(hub, "bob") as bob:
        a = await alice.subscribe(ch, events=True)
        b = await bob.subscribe(ch, events=True)
        sent = [await alice.publish(ch, {"n": i}) for i in range(5)]
        assert [s.offset for s in sent] == [1, 2, 3, 4, 5]
        assert all(len(s.mid) == 26 and s.time > 0 for s in sent)
        got = await take(b, 5)
        assert [(p.data, p.mid, p.time) for p in got] == [({"n": i}, s.mid, s.time) for i, s in enumerate(sent)]
        assert all(p.info == Sender("alice", alice.client_id, {"name": "Alice"}) for p in got)

        page = await bob.history(ch, limit=2)
        assert [(p.offset, p.mid, p.data) for p in page] == [(4, sent[3].mid, {"n": 3}), (5, sent[4].mid, {"n": 4})]
        assert page.position == sent[-1] and isinstance(page, list)
        older = await bob.history(ch, limit=2, before=page[0].offset)
        assert [p.offset for p in older] == [2, 3]
        assert [p.offset for p in await alice.history(ch, after=3)] == [4, 5]
        assert [p.offset for p in await alice.history(ch)] == [1, 2, 3, 4, 5]
        with pytest.raises(ValueError):
            await bob.history(ch, before=3, after=1)

        await alice.typing(ch)
        assert await next_event(b) == TypingChanged(ch, "alice", True, 5.0)
        await alice.typing(ch, False)
        assert await next_event(b) == TypingChanged(ch, "alice", False, 5.0)

        assert await bob.read(ch, 4) == 4
        assert await next_event(b) == ReadReceipt(ch, "bob", 4)
        with pytest.raises(ReplyError) as info:
            await bob.read(ch, 2)  # receipts never move backwards
        assert info.value.code is ErrorCode.CONFLICT
        assert await alice.read(ch, 5) == 5
        assert await alice.receipts(ch) == {"bob": 4, "alice": 5}
        # The sender's subscription saw the same events, and its own publications.
        assert [await next_event(a) for _ in range(4)] == [
            TypingChanged(ch, "alice", True, 5.0),
            TypingChanged(ch, "alice", False, 5.0),
            ReadReceipt(ch, "bob", 4),
            ReadReceipt(ch, "alice", 5),
        ]
        assert [p.mid for p in await take(a, 5)] == [s.mid for s in sent]
        with pytest.raises(ReplyError) as info:
            await bob.typing("news")  # not a chat channel
        assert info.value.code is ErrorCode.BAD_REQUEST


async def test_publish_with_a_key_posts_once_and_stays_a_stream_position(hub: RunningHub) -> None:
    ch = "chat:keys"
    async with user(hub, "alice") as alice:
        sub = await alice.subscribe(ch)
        first = await alice.publish(ch, "once", key="k1")
        again = await alice.publish(ch, "once", key="k1")
        assert (again.offset, again.epoch, again.mid, again.time) == (first.offset, first.epoch, first.mid, first.time)
        # Backward compatible: a StreamPosition, equal (and hashing) as the position alone.
        assert isinstance(first, StreamPosition) and isinstance(first, Sent)
        assert first == StreamPosition(first.offset, first.epoch) == first.position
        assert StreamPosition(first.offset, first.epoch) == first
        assert hash(first) == hash(first.position) and {first.position, first} == {first}
        await alice.publish(ch, "marker")
        assert [p.data for p in await take(sub, 2)] == ["once", "marker"]
        # Outside chat channels there is no mid.
        plain = await alice.publish("news", 1)
        assert (plain.mid, plain.time) == ("", 0)


async def test_publish_with_a_key_is_retried_across_a_reconnect(
    hub: RunningHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The engine's publish is held (a fake in timing only) so that the connection drops mid-send."""
    ch = "chat:retry"
    engine = hub.hub.engine
    original = engine.publish
    entered, release = asyncio.Event(), asyncio.Event()

    async def slow_publish(*args: Any, **kwargs: Any) -> Any:
        entered.set()
        await release.wait()
        return await original(*args, **kwargs)

    monkeypatch.setattr(engine, "publish", slow_publish)
    codec = spy()
    try:
        async with user(hub, "alice", codec=codec) as alice, user(hub, "bob") as bob:
            await bob.subscribe(ch)
            sending = asyncio.ensure_future(alice.publish(ch, "hello", key="m1"))
            async with asyncio.timeout(WAIT):
                await entered.wait()
            old = alice.client_id
            kick(hub, alice, CloseCode.FORCE_RECONNECT)
            await until(lambda: alice.connected and alice.client_id != old)
            assert not sending.done()  # sent again on the new connection, waiting for the hub
            release.set()
            sent = await asyncio.wait_for(sending, WAIT)
            assert [(p.data, p.mid) for p in await bob.history(ch)] == [("hello", sent.mid)]
            sends = [c for c in codec.sent if isinstance(c, m.Publish)]
            assert [(c.key, c.data) for c in sends] == [("m1", msgpack.packb("hello"))] * 2
            assert sends[0].id < sends[1].id

            # Without a key the SDK cannot know whether it posted: ConnectionLost.
            entered.clear()
            release.clear()
            plain = asyncio.ensure_future(alice.publish(ch, "maybe"))
            async with asyncio.timeout(WAIT):
                await entered.wait()
            kick(hub, alice, CloseCode.FORCE_RECONNECT)
            with pytest.raises(ConnectionLost):
                await asyncio.wait_for(plain, WAIT)
    finally:
        release.set()


# --- presence and status ------------------------------------------------------------


async def test_join_and_leave_events_and_presence_queries(hub: RunningHub) -> None:
    ch = "room:a"
    async with user(hub, "bob") as bob:
        sub = await bob.subscribe(ch, events=True)
        assert await next_event(sub) == Joined(ch, "bob")
        async with user(hub, "alice", claims={"info": {"name": "Alice"}}) as alice:
            await alice.subscribe(ch)
            assert await next_event(sub) == Joined(ch, "alice", {"name": "Alice"})
            assert await bob.presence(ch) == {
                bob.client_id: PresenceMember("bob"),
                alice.client_id: PresenceMember("alice", {"name": "Alice"}),
            }
            assert await alice.presence_stats(ch) == PresenceStats(clients=2, users=2)
        assert await next_event(sub) == Left(ch, "alice")  # after the grace window
        assert await bob.presence_stats(ch) == PresenceStats(1, 1)
        assert len(sub) == 0  # events never reach the publications' iterator
        with pytest.raises(ReplyError) as info:
            await bob.presence("news")  # no presence there
        assert info.value.code is ErrorCode.BAD_REQUEST and not info.value.temporary  # no retrying


async def test_status_channel_and_status_query(hub: RunningHub) -> None:
    async with user(hub, "bob") as bob:
        sub = await bob.subscribe("status:carol", events=True)
        assert sub.status == UserStatus("carol", False, 0)  # never seen
        async with user(hub, "carol"):
            assert await next_event(sub) == StatusChanged("status:carol", UserStatus("carol", True))
            assert sub.status == UserStatus("carol", True)
            assert await bob.status("carol", "zed") == [UserStatus("carol", True), UserStatus("zed", False)]
        offline = await next_event(sub)
        assert isinstance(offline, StatusChanged) and not offline.status.online and offline.status.last_seen > 0
        assert sub.status == offline.status
        assert await bob.status() == []
        many = await bob.status(*(f"u{i}" for i in range(150)))  # more than one command's worth
        assert [s.user for s in many] == [f"u{i}" for i in range(150)]


async def test_server_unsubscribe_ends_the_subscription(hub: RunningHub) -> None:
    codec = spy()
    async with user(hub, "alice", codec=codec) as alice:
        sub = await alice.subscribe("news", events=True)
        plain = await alice.subscribe("other")
        with pytest.raises(RuntimeError):
            plain.events()  # events are opt-in
        await alice.publish("news", "queued")
        await alice.ping()
        await hub.hub.control("unsubscribe", user="alice", channel="news")
        assert [p.data for p in await take(sub, 1)] == ["queued"]  # what was queued comes first
        with pytest.raises(Unsubscribed) as info:
            await asyncio.wait_for(anext(sub), WAIT)
        assert info.value.channel == "news" and info.value.reason
        with pytest.raises(Unsubscribed):
            await next_event(sub)
        assert list(alice.subscriptions()) == ["other"]
        # A reconnect does not bring it back.
        old = alice.client_id
        kick(hub, alice, CloseCode.FORCE_RECONNECT)
        await until(lambda: alice.connected and alice.client_id != old)
        await alice.ping()
        assert len(codec.subscribes("news")) == 1 and len(codec.subscribes("other")) == 2
        again = await alice.subscribe("news")
        await alice.publish("news", "back")
        assert [p.data for p in await take(again, 1)] == ["back"]


# --- live data --------------------------------------------------------------------


async def test_live_snapshot_patches_and_conflicts(hub: RunningHub) -> None:
    ch = "live:doc"
    codec = spy()
    async with fast(hub.url) as w, fast(hub.url, codec=codec) as s:
        assert await w.state_set(ch, "a", {"x": 1}) == 1
        assert await w.state_set(ch, "gone", 1) == 2
        assert await w.state_set(ch, "gone", None) == 3  # None deletes
        sub = await s.subscribe(ch, events=True)
        assert dict(sub.state) == {"a": {"x": 1}} and sub.version == 3
        assert (sub.key_version("a"), sub.key_version("gone"), sub.key_version("never")) == (1, 0, 0)

        big = {f"f{i}": f"value {i}" for i in range(20)}
        patched = {**big, "f3": "changed", "new": {"deep": [1]}}
        del patched["f4"]
        assert await w.state_set(ch, "doc", big) == 4
        assert await w.state_set(ch, "doc", {**big, "f3": "changed"}) == 5  # travels as a patch
        assert await w.state_patch(ch, "doc", {"f4": None, "new": {"deep": [1]}}) == 6
        assert await w.state_set(ch, "a", None) == 7
        assert [await next_event(sub) for _ in range(4)] == [
            StateChanged(ch, "doc", big, 4),
            StateChanged(ch, "doc", {**big, "f3": "changed"}, 5),
            StateChanged(ch, "doc", patched, 6),
            StateChanged(ch, "a", None, 7),
        ]
        assert dict(sub.state) == {"doc": patched} and sub.version == 7
        pushes = [msg for msg in codec.received if isinstance(msg, m.StateChange)]
        assert [c.patch is not None for c in pushes] == [False, True, True, False]  # patches were applied

        with pytest.raises(ReplyError) as info:
            await w.state_set(ch, "doc", 1, version=5)  # the key was last set at 6
        assert info.value.code is ErrorCode.CONFLICT
        with pytest.raises(ReplyError) as info:
            await w.state_patch(ch, "doc", {"x": 1}, version=0)
        assert info.value.code is ErrorCode.CONFLICT
        assert await w.state_set(ch, "doc", "new", version=sub.key_version("doc")) == 8
        assert await w.state_set(ch, "fresh", 1, version=0) == 9  # 0: create only
        with pytest.raises(TypeError):
            await w.state_patch(ch, "doc", [1])  # type: ignore[arg-type]
        with pytest.raises(ReplyError) as info:
            await w.state_set("news", "k", 1)
        assert info.value.code is ErrorCode.BAD_REQUEST
        await until(lambda: sub.version == 9)
        assert (dict(sub.state), sub.version) == await truth(hub, ch)


@pytest.mark.parametrize("codec", ["msgpack", "json"])
async def test_live_state_equals_the_hubs_after_many_writes(hub: RunningHub, codec: Any) -> None:
    ch = "live:many"
    keys = [f"k{i}" for i in range(6)]

    async def writes(client: Client, seed: int) -> None:
        rnd = random.Random(seed)
        for i in range(60):
            key, op = rnd.choice(keys), rnd.random()
            if op < 0.15:
                await client.state_set(ch, key, None)
            elif op < 0.55:
                await client.state_patch(ch, key, {f"f{rnd.randrange(8)}": rnd.choice([i, None, "x" * 30, [i]])})
            else:
                await client.state_set(ch, key, {f"f{j}": f"{seed}-{i}-{j}" for j in range(rnd.randrange(1, 8))})

    async with contextlib.AsyncExitStack() as stack:
        s = await stack.enter_async_context(fast(hub.url, codec=codec))
        writers = [await stack.enter_async_context(fast(hub.url)) for _ in range(3)]
        await writers[0].state_set(ch, "k0", {"start": True})
        sub = await s.subscribe(ch, events=True)
        replay = dict(sub.state)
        await asyncio.gather(*(writes(w, seed) for seed, w in enumerate(writers)))
        state, version = await truth(hub, ch)
        assert version == 1 + 3 * 60
        await until(lambda: sub.version == version)
        assert dict(sub.state) == state
        # The changes came out as events: replayed on the snapshot, they give the same state.
        for event in await queued_events(sub):
            assert isinstance(event, StateChanged)
            if event.value is None:
                replay.pop(event.key, None)
            else:
                replay[event.key] = event.value
        assert replay == state


async def test_live_reconnect_gets_only_what_changed(hub: RunningHub) -> None:
    ch = "live:re"
    codec = spy()
    async with fast(hub.url) as w, fast(hub.url, codec=codec) as s:
        for i in range(10):
            await w.state_set(ch, f"k{i}", {"n": i, "pad": "x" * 40})
        sub = await s.subscribe(ch, events=True)
        assert sub.version == 10 and len(sub.state) == 10

        # Drop the subscriber and keep it out while the state changes.
        hub.hub.closing = True
        old = s.client_id
        kick(hub, s, CloseCode.FORCE_RECONNECT)
        assert await w.state_set(ch, "k1", "changed") == 11
        assert await w.state_patch(ch, "k2", {"n": 20}) == 12
        assert await w.state_set(ch, "k3", None) == 13
        assert await w.state_set(ch, "new", [1]) == 14
        hub.hub.closing = False

        await s.ping()  # waits for the reconnect, which resubscribes first
        assert s.client_id != old
        assert codec.subscribes(ch)[-1].version == 10
        result = codec.subscribe_results()[-1]
        assert result.version == 14 and sorted(e.key for e in result.state) == ["k1", "k2", "k3", "new"]
        events = sorted([await next_event(sub) for _ in range(4)], key=lambda e: getattr(e, "version", 0))
        assert events == [
            StateChanged(ch, "k1", "changed", 11),
            StateChanged(ch, "k2", {"n": 20, "pad": "x" * 40}, 12),
            StateChanged(ch, "k3", None, 13),
            StateChanged(ch, "new", [1], 14),
        ]
        assert (dict(sub.state), sub.version) == await truth(hub, ch)
        # Live pushes go on after the resubscribe.
        assert await w.state_patch(ch, "k2", {"n": 21}) == 15
        assert await next_event(sub) == StateChanged(ch, "k2", {"n": 21, "pad": "x" * 40}, 15)


class LossyCodec(SpyCodec):
    """The real codec, losing the state pushes whose versions are in ``lose`` (a test-only fault)."""

    def __init__(self) -> None:
        super().__init__(spy().inner)
        self.lose: set[int] = set()
        self.lost: list[m.StateChange] = []

    def decode_messages(self, frame: bytes, expected: Expected = NO_RESULTS) -> list[m.ServerMessage]:
        kept: list[m.ServerMessage] = []
        for message in super().decode_messages(frame, expected):
            if isinstance(message, m.StateChange) and message.version in self.lose:
                self.lose.discard(message.version)
                self.lost.append(message)
            else:
                kept.append(message)
        return kept


async def test_a_missed_state_change_is_healed_by_an_automatic_resubscribe(hub: RunningHub) -> None:
    ch = "live:gap"
    codec = LossyCodec()
    async with fast(hub.url) as w, fast(hub.url, codec=codec) as s:
        big = {f"k{i}": "x" * 20 for i in range(10)}
        await w.state_set(ch, "doc", big)
        await w.state_set(ch, "other", 1)
        sub = await s.subscribe(ch, events=True)
        assert sub.version == 2
        codec.lose.add(3)
        await w.state_patch(ch, "doc", {"k1": "one"})  # 3: lost
        await w.state_patch(ch, "doc", {"k2": "two"})  # 4: a gap, so the client resubscribes
        await w.state_set(ch, "other", 2)  # 5
        await w.state_patch(ch, "doc", {"k3": "three"})  # 6
        final = {**big, "k1": "one", "k2": "two", "k3": "three"}
        await event_where(sub, lambda e: isinstance(e, StateChanged) and e.key == "doc" and e.value == final)
        await until(lambda: sub.version == 6)
        assert [c.version for c in codec.lost] == [3] and codec.lost[0].patch is not None
        assert (dict(sub.state), sub.version) == await truth(hub, ch)
        # One resubscribe, from the version held before the gap.
        unsubscribes = [c for c in codec.sent if isinstance(c, m.Unsubscribe) and c.channel == ch]
        assert len(unsubscribes) == 1
        assert [c.version for c in codec.subscribes(ch)] == [None, 2]
        # The subscription goes on as before.
        assert await w.state_set(ch, "other", 3) == 7
        assert await event_where(sub, lambda e: getattr(e, "version", 0) == 7) == StateChanged(ch, "other", 3, 7)
        assert ch in s.subscriptions()


async def test_live_state_reset_by_a_hub_restart_is_replaced(hub: RunningHub) -> None:
    ch = "live:reset"
    codec = spy()
    async with fast(hub.url) as w, fast(hub.url, codec=codec) as s:
        for key in "abc":
            await w.state_set(ch, key, key)
        sub = await s.subscribe(ch, events=True)
        assert sub.version == 3
        await hub.stop()
        await hub.start()  # a fresh memory engine: no state, version 0
        await s.ping()
        assert codec.subscribes(ch)[-1].version == 3
        assert dict(sub.state) == {} and sub.version == 0
        gone = sorted([await next_event(sub) for _ in range(3)], key=lambda e: getattr(e, "key", ""))
        assert gone == [StateChanged(ch, k, None, 0) for k in "abc"]
        assert await w.state_set(ch, "d", 1) == 1
        assert await next_event(sub) == StateChanged(ch, "d", 1, 1)
        assert (dict(sub.state), sub.version) == await truth(hub, ch)


# --- live rules, without sockets ---------------------------------------------------------


def value_push(key: str, version: int, value: Any) -> m.StateChange:
    return m.StateChange("live:x", key, version, value=msgpack.packb(value))


def patch_push(key: str, version: int, patch: dict[str, Any]) -> m.StateChange:
    return m.StateChange("live:x", key, version, patch=msgpack.packb(patch))


async def test_live_rules() -> None:
    sub = Subscription(Client("ws://unused/ws"), "live:x", events=True)
    snapshot = (m.StateEntry("a", msgpack.packb({"n": 1}), 1), m.StateEntry("b", msgpack.packb(2), 2))
    assert not sub._on_subscribed(m.SubscribeResult(0, "e", version=2, state=snapshot), None)
    assert (dict(sub.state), sub.version) == ({"a": {"n": 1}, "b": 2}, 2)

    assert not sub._on_push(patch_push("a", 3, {"m": 2}))  # at version + 1: applied
    assert not sub._on_push(patch_push("a", 3, {"z": 0}))  # already included
    assert not sub._on_push(value_push("b", 1, 99))  # stale
    assert (dict(sub.state), sub.version) == ({"a": {"n": 1, "m": 2}, "b": 2}, 3)

    # A full value ahead applies at once; the version waits for the change in between.
    assert not sub._on_push(value_push("b", 5, 5))
    assert (sub.state["b"], sub.version) == (5, 3)
    assert not sub._on_push(value_push("c", 4, "c"))
    assert sub.version == 5  # 4, then 5 that was already there
    # A patch that arrives after a newer full value of its key only moves the version.
    assert not sub._on_push(value_push("a", 7, "seven"))
    assert not sub._on_push(patch_push("a", 6, {"old": 1}))
    assert (sub.state["a"], sub.version) == ("seven", 7)
    # A delete, then a stale value of the deleted key: it stays deleted.
    assert not sub._on_push(value_push("c", 8, None))
    assert not sub._on_push(value_push("c", 4, "c"))
    assert "c" not in sub.state and sub.key_version("c") == 0
    # A patch beyond version + 1: a change was missed.
    assert sub._on_push(patch_push("a", 10, {"x": 1}))
    assert sub.version == 8

    # The resubscribe with version 8 brings what changed after it.
    sub._hold()
    sub._on_push(patch_push("b", 10, {"late": True}))  # held, then recognised as included
    delta = (m.StateEntry("a", msgpack.packb({"x": 1}), 10), m.StateEntry("b", msgpack.packb({"y": 1}), 9))
    assert not sub._on_subscribed(m.SubscribeResult(0, "e", version=10, state=delta), StreamPosition(0, "e"), 8)
    assert (dict(sub.state), sub.version) == ({"a": {"x": 1}, "b": {"y": 1}}, 10)

    events = await queued_events(sub)
    assert [(e.key, e.version) for e in events if isinstance(e, StateChanged)] == [
        ("a", 3),
        ("b", 5),
        ("c", 4),
        ("a", 7),
        ("c", 8),
        ("a", 10),
        ("b", 9),
    ]
    assert len(events) == 7


def test_publication_exposes_chat_fields() -> None:
    pub = Message("chat:a", "hi", 1, "e", None, "01HV7Z", 1767225600123)
    assert (pub.mid, pub.time, pub.position) == ("01HV7Z", 1767225600123, StreamPosition(1, "e"))
