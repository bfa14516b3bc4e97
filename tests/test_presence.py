"""Presence and user status end to end: joins and leaves, devices, grace windows, queries.

Grace windows are short (:data:`GRACE`). To show that *nothing* came during a
window, tests let another user (carol) leave after the event under test: her
leave is settled later than any wrong one would be, so when the observer's
next push is carol's leave, nothing came before it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import msgpack  # type: ignore[import-untyped]
import pytest

from handlers.presence import Presence
from protocol.codec import JSON_SUBPROTOCOL
from protocol.codes import ErrorCode
from protocol.messages import (
    Join,
    Leave,
    PresenceMember,
    PresenceQuery,
    PresenceResult,
    PresenceStatsQuery,
    PresenceStatsResult,
    StatusNotice,
    StatusQuery,
    StatusResult,
    Subscribe,
    SubscribeResult,
    Unsubscribe,
    UserStatus,
)
from realtime.engines.presence import PresenceEntry
from realtime.namespaces import Namespace, SubscribeRule

from .helpers import MS, HubFactory, RunningHub, error, make_token, namespaces, push, result, until, user
from .wsclient import RawClient, value

GRACE = 150 * MS
ROOM = "room:a"

T = TypeVar("T")


def room(grace: float = GRACE) -> Namespace:
    """Rooms such as "room:a": presence with join and leave events, open to everyone."""
    return Namespace(
        name="room", presence=True, join_leave=True, presence_grace=grace, subscribe="anyone", publish="clients"
    )


def status_ns(grace: float = GRACE, subscribe: SubscribeRule = "authenticated") -> Namespace:
    """Status channels such as "status:alice"."""
    return Namespace(name="status", kind="status", subscribe=subscribe, presence_grace=grace)


async def marker(client: RawClient, channel: str = "m") -> None:
    """Publish to ``channel`` (which ``client`` is subscribed to) and see it come back next:
    whatever the hub sent the client before it has been read."""
    await client.publish(channel, "marker")
    pub = await client.publication()
    assert (pub.channel, value(pub)) == (channel, "marker")


async def gone(hub: RunningHub, key: str, client: RawClient) -> None:
    """Wait until the hub has taken ``client``'s entry out of ``key``'s presence."""

    async def check() -> bool:
        return client.client_id not in await hub.hub.engine.presence(key)

    await until(check)


def feature(hub: RunningHub) -> Presence:
    found = hub.hub.feature(Presence)
    assert isinstance(found, Presence)
    return found


# --- channel presence -----------------------------------------------------------


async def test_join_and_leave_reach_other_members(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=namespaces(room()))
    bob = await user(hub, "bob", ROOM, subprotocol=JSON_SUBPROTOCOL)  # transcoded pushes too
    assert await push(bob, Join) == Join(ROOM, "bob")  # a joining user's device gets the join too
    alice = await RawClient.open(hub.url, token=make_token("alice", info={"name": "Alice"}))
    try:
        await alice.subscribe(ROOM)
        join = await push(bob, Join)
        assert (join.channel, join.user) == (ROOM, "alice")
        assert join.info is not None and msgpack.unpackb(join.info) == {"name": "Alice"}
        assert (await alice.command(Unsubscribe(0, ROOM))).error is None
        started = time.monotonic()
        assert await push(bob, Leave) == Leave(ROOM, "alice")
        assert time.monotonic() - started >= GRACE - 10 * MS  # only after the grace window
        await alice.subscribe(ROOM)
        assert (await push(bob, Join)).user == "alice"
    finally:
        await alice.close()
        await bob.close()


async def test_two_devices_one_join_and_a_leave_after_the_last(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=namespaces(room()))
    bob = await user(hub, "bob", ROOM, "m")
    assert (await push(bob, Join)).user == "bob"
    carol = await user(hub, "carol", ROOM)
    assert (await push(bob, Join)).user == "carol"
    phone = await user(hub, "alice", ROOM)
    assert (await push(bob, Join)).user == "alice"
    laptop = await user(hub, "alice", ROOM)
    try:
        await marker(bob)  # no second join
        await phone.close()
        await gone(hub, ROOM, phone)
        await carol.close()  # her leave settles after any leave the phone could cause
        assert await push(bob, Leave) == Leave(ROOM, "carol")
        await laptop.close()
        assert await push(bob, Leave) == Leave(ROOM, "alice")
        await marker(bob)
    finally:
        for c in (bob, carol, phone, laptop):
            await c.close()


async def test_reconnect_within_grace_is_neither_leave_nor_join(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=namespaces(room(grace=300 * MS)))
    bob = await user(hub, "bob", ROOM, "m")
    assert (await push(bob, Join)).user == "bob"
    carol = await user(hub, "carol", ROOM)
    assert (await push(bob, Join)).user == "carol"
    before = await user(hub, "alice", ROOM)
    assert (await push(bob, Join)).user == "alice"
    await before.close()  # the network dropped
    await gone(hub, ROOM, before)
    after = await user(hub, "alice", ROOM)  # the app reconnects: a new connection
    try:
        await carol.close()
        assert await push(bob, Leave) == Leave(ROOM, "carol")
        await marker(bob)
        members = result(await bob.command(PresenceQuery(0, ROOM)), PresenceResult).clients
        assert members == {bob.client_id: PresenceMember("bob"), after.client_id: PresenceMember("alice")}
    finally:
        for c in (bob, carol, after):
            await c.close()


async def test_reconnect_after_grace_is_leave_then_join(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=namespaces(room()))
    bob = await user(hub, "bob", ROOM)
    assert (await push(bob, Join)).user == "bob"
    before = await user(hub, "alice", ROOM)
    assert (await push(bob, Join)).user == "alice"
    await before.close()
    assert await push(bob, Leave) == Leave(ROOM, "alice")
    after = await user(hub, "alice", ROOM)
    try:
        assert await push(bob, Join) == Join(ROOM, "alice")
    finally:
        await after.close()
        await bob.close()


async def test_anonymous_connections_are_listed_and_counted_never_announced(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=namespaces(room()))
    bob = await user(hub, "bob", ROOM, "m")
    assert (await push(bob, Join)).user == "bob"
    anon = await user(hub, "", ROOM)
    phone = await user(hub, "alice", ROOM)
    assert (await push(bob, Join)).user == "alice"  # not a join of ""
    laptop = await user(hub, "alice", ROOM)
    outsider = await user(hub, "dave")  # may subscribe, so may ask
    try:
        for asker in (bob, outsider):
            members = result(await asker.command(PresenceQuery(0, ROOM)), PresenceResult).clients
            assert members == {
                bob.client_id: PresenceMember("bob"),
                anon.client_id: PresenceMember(""),
                phone.client_id: PresenceMember("alice"),
                laptop.client_id: PresenceMember("alice"),
            }
            stats = result(await asker.command(PresenceStatsQuery(0, ROOM)), PresenceStatsResult)
            assert stats == PresenceStatsResult(clients=4, users=3)  # bob, alice, and "" for anonymous
        await anon.close()
        await gone(hub, ROOM, anon)
        await phone.close()
        await laptop.close()
        assert await push(bob, Leave) == Leave(ROOM, "alice")  # and no leave of ""
        await marker(bob)
        stats = result(await bob.command(PresenceStatsQuery(0, ROOM)), PresenceStatsResult)
        assert stats == PresenceStatsResult(1, 1)
    finally:
        for c in (bob, anon, phone, laptop, outsider):
            await c.close()


async def test_presence_without_join_leave_lists_but_announces_nothing(hub_factory: HubFactory) -> None:
    quiet = Namespace(name="quiet", presence=True, subscribe="anyone", publish="clients")
    hub = await hub_factory(namespaces=namespaces(quiet))
    bob = await user(hub, "bob", "quiet:x", "m")
    alice = await user(hub, "alice", "quiet:x")
    try:
        stats = result(await bob.command(PresenceStatsQuery(0, "quiet:x")), PresenceStatsResult)
        assert stats == PresenceStatsResult(2, 2)
        await alice.close()
        await gone(hub, "quiet:x", alice)
        await marker(bob)
        assert not feature(hub)._settles  # nothing to announce: settled at once
    finally:
        await alice.close()
        await bob.close()


async def test_presence_query_permissions(hub_factory: HubFactory) -> None:
    private = Namespace(name="priv", presence=True, subscribe="user")
    news = Namespace(name="news", subscribe="anyone")
    hub = await hub_factory(namespaces=namespaces(room(), private, news))
    alice = await user(hub, "alice", "priv:#alice")
    bob = await user(hub, "bob")
    try:
        for query in (PresenceQuery, PresenceStatsQuery):
            # Not temporary: the hub's configuration decides (docs/protocol.md, error codes).
            assert error(await bob.command(query(0, "news:x"))) == ErrorCode.BAD_REQUEST
            assert error(await bob.command(query(0, "nope:x"))) == ErrorCode.UNKNOWN_CHANNEL
            assert error(await bob.command(query(0, "priv:#alice"))) == ErrorCode.PERMISSION_DENIED
            assert error(await alice.command(query(0, "priv:#bob"))) == ErrorCode.PERMISSION_DENIED
            assert error(await bob.command(query(0, "$status:alice"))) == ErrorCode.UNKNOWN_CHANNEL
        mine = result(await alice.command(PresenceQuery(0, "priv:#alice")), PresenceResult)
        assert mine.clients == {alice.client_id: PresenceMember("alice")}
        empty = result(await bob.command(PresenceQuery(0, "priv:#bob")), PresenceResult)  # may subscribe
        assert empty.clients == {}
    finally:
        await alice.close()
        await bob.close()


# --- user status -------------------------------------------------------------------


async def test_user_status_online_then_offline_with_last_seen(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=namespaces(status_ns()))
    bob = await user(hub, "bob", "m")
    sub = result(await bob.command(Subscribe(0, "status:alice")), SubscribeResult)
    assert sub.status == UserStatus("alice", False, 0)  # never seen
    phone = await user(hub, "alice")
    online = await push(bob, StatusNotice)
    assert online == StatusNotice("status:alice", UserStatus("alice", True, 0))
    laptop = await user(hub, "alice")
    await marker(bob)  # the second device changes nothing
    try:
        asked = result(await bob.command(StatusQuery(0, ("alice", "carol", "alice"))), StatusResult)
        assert asked.users == (UserStatus("alice", True), UserStatus("carol", False), UserStatus("alice", True))
        left = int(time.time() * 1000)
        await phone.close()
        await laptop.close()
        offline = await push(bob, StatusNotice)
        back = int(time.time() * 1000)
        assert (offline.channel, offline.status.user, offline.status.online) == ("status:alice", "alice", False)
        assert left <= offline.status.last_seen <= back - int(GRACE * 1000) + 10
        asked = result(await bob.command(StatusQuery(0, ("alice",))), StatusResult)
        assert asked.users == (offline.status,)
        async with await user(hub, "carol") as carol:
            late = result(await carol.command(Subscribe(0, "status:alice")), SubscribeResult)
            assert late.status == offline.status
    finally:
        for c in (bob, phone, laptop):
            await c.close()


async def test_status_reconnect_within_grace_is_silent(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=namespaces(status_ns(grace=300 * MS)))
    bob = await user(hub, "bob", "m", "status:alice", "status:carol")
    carol = await user(hub, "carol")
    assert (await push(bob, StatusNotice)).status == UserStatus("carol", True)
    before = await user(hub, "alice")
    assert (await push(bob, StatusNotice)).status == UserStatus("alice", True)
    await before.close()
    await gone(hub, "$status:alice", before)
    asked = result(await bob.command(StatusQuery(0, ("alice",))), StatusResult)
    assert asked.users == (UserStatus("alice", True),)  # within the window: still online
    after = await user(hub, "alice")
    try:
        await carol.close()
        notice = await push(bob, StatusNotice)
        assert (notice.status.user, notice.status.online) == ("carol", False)
        await marker(bob)
    finally:
        for c in (bob, carol, after):
            await c.close()


async def test_every_status_namespace_gets_the_notices(hub_factory: HubFactory) -> None:
    other = Namespace(name="seen", kind="status", subscribe="anyone", presence_grace=0)
    hub = await hub_factory(namespaces=namespaces(status_ns(), other))
    anon = await user(hub, "", "seen:alice")
    bob = await user(hub, "bob", "status:alice")
    alice = await user(hub, "alice")
    try:
        assert await push(anon, StatusNotice) == StatusNotice("seen:alice", UserStatus("alice", True))
        assert await push(bob, StatusNotice) == StatusNotice("status:alice", UserStatus("alice", True))
        await alice.close()
        notice = await push(anon, StatusNotice)  # the largest grace of the two applies
        assert (notice.channel, notice.status.online) == ("seen:alice", False)
        assert (await push(bob, StatusNotice)).status == notice.status
    finally:
        for c in (anon, bob, alice):
            await c.close()


async def test_status_permissions(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=namespaces(status_ns()))
    anon = await user(hub, "")
    bob = await user(hub, "bob")
    try:
        assert error(await anon.command(StatusQuery(0, ("bob",)))) == ErrorCode.PERMISSION_DENIED
        assert error(await anon.command(Subscribe(0, "status:bob"))) == ErrorCode.PERMISSION_DENIED
        assert error(await bob.command(Subscribe(0, "status:"))) == ErrorCode.UNKNOWN_CHANNEL
        assert "status:" not in hub.hub.connections[bob.client_id].channels
    finally:
        await anon.close()
        await bob.close()

    hub = await hub_factory(namespaces=namespaces(status_ns(subscribe="token")))
    async with await user(hub, "bob") as bob:
        assert error(await bob.command(StatusQuery(0, ("alice",)))) == ErrorCode.PERMISSION_DENIED
        mine = result(await bob.command(StatusQuery(0, ("bob",))), StatusResult)
        assert mine.users == (UserStatus("bob", True),)
    granted = make_token("bob", channels=["status:*"])
    async with await RawClient.open(hub.url, token=granted) as bob:
        assert result(await bob.command(StatusQuery(0, ("alice",))), StatusResult).users == (
            UserStatus("alice", False),
        )

    hub = await hub_factory(namespaces=namespaces())
    async with await user(hub, "bob") as bob:
        assert error(await bob.command(StatusQuery(0, ("bob",)))) == ErrorCode.BAD_REQUEST


async def test_api_helpers(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=namespaces(room(), status_ns()))
    presence = feature(hub)
    async with await user(hub, "alice", ROOM) as alice:
        assert await presence.members(ROOM) == {alice.client_id: PresenceMember("alice")}
        assert await presence.stats(ROOM) == PresenceStatsResult(1, 1)
        assert await presence.status(["alice", "", "zed"]) == [
            UserStatus("alice", True),
            UserStatus("", False),
            UserStatus("zed", False),
        ]


# --- engine upkeep ---------------------------------------------------------------------


async def test_refresh_costs_one_engine_call_per_entry(
    hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    hub = await hub_factory(namespaces=namespaces(room()))
    presence = feature(hub)
    presence.ttl = 30 * MS  # a pass every 10 ms
    engine = hub.hub.engine
    calls: list[tuple[str, str]] = []
    original: Callable[..., Awaitable[bool]] = engine.presence_add

    async def counting(channel: str, client: str, entry: PresenceEntry, *, ttl: float) -> bool:
        calls.append((channel, client))
        return await original(channel, client, entry, ttl=ttl)

    monkeypatch.setattr(engine, "presence_add", counting)
    bob = await user(hub, "bob", ROOM, "room:b", "m")
    assert [(await push(bob, Join)).channel for _ in range(2)] == [ROOM, "room:b"]
    anon = await user(hub, "", ROOM)
    try:
        # bob: two channels and his status; anon: one channel (no status).
        entries = {
            (ROOM, bob.client_id),
            ("room:b", bob.client_id),
            ("$status:bob", bob.client_id),
            (ROOM, anon.client_id),
        }
        calls.clear()
        assert await presence.refresh() == 4
        assert sorted(calls) == sorted(entries)

        async def two_passes() -> bool:
            return len(calls) >= 12

        await until(two_passes)
        assert set(calls) == entries
        await marker(bob)  # refreshing announces nothing
        await anon.close()
        await gone(hub, ROOM, anon)
        calls.clear()
        assert await presence.refresh() == 3
    finally:
        await bob.close()
        await anon.close()


async def test_refresh_racing_a_disconnect_leaves_no_ghost(
    hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """On a shared engine a refresh's add may land after the connection's removal: it is undone."""
    hub = await hub_factory(namespaces=namespaces(room()))
    presence = feature(hub)
    engine = hub.hub.engine
    original: Callable[..., Awaitable[bool]] = engine.presence_add
    held: set[tuple[str, str]] = set()
    entered, release = asyncio.Event(), asyncio.Event()

    async def late(channel: str, client: str, entry: PresenceEntry, *, ttl: float) -> bool:
        if (channel, client) in held:
            entered.set()
            await release.wait()
        return await original(channel, client, entry, ttl=ttl)

    monkeypatch.setattr(engine, "presence_add", late)
    bob = await user(hub, "bob", ROOM)
    assert (await push(bob, Join)).user == "bob"
    alice = await user(hub, "alice", ROOM)
    assert (await push(bob, Join)).user == "alice"
    try:
        held.add((ROOM, alice.client_id))
        refreshing = asyncio.ensure_future(presence.refresh())
        async with asyncio.timeout(2):
            await entered.wait()
        await alice.close()
        await gone(hub, ROOM, alice)
        release.set()  # the refresh's add of alice lands now, after her removal
        await refreshing
        assert await push(bob, Leave) == Leave(ROOM, "alice")
        assert alice.client_id not in await engine.presence(ROOM)
    finally:
        release.set()
        await bob.close()


async def test_stopping_cancels_pending_leaves_and_the_refresh(hub_factory: HubFactory) -> None:
    hub = await hub_factory(namespaces=namespaces(room(grace=10.0), status_ns(grace=10.0)))
    presence = feature(hub)
    alice = await user(hub, "alice", ROOM)
    await alice.close()
    await gone(hub, "$status:alice", alice)
    tasks = [*presence._tasks, presence._refresher]
    assert len(tasks) == 3  # the leave of the room, the status leave, the refresh
    await hub.stop()
    assert all(task is not None and task.done() for task in tasks)
    assert not presence._tasks and presence._refresher is None
