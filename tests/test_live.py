"""Live data end to end: snapshots, deltas, patches, conflicts, recovery, conflation, permissions.

A :class:`Mirror` is a client that follows the algorithm documented in
``handlers/live.py``; tests check that it converges to what the hub holds.
"""

from __future__ import annotations

import asyncio
from typing import Any

import msgpack  # type: ignore[import-untyped]
import pytest

from handlers.live import Live
from protocol import merge_patch
from protocol.codec import JSON_SUBPROTOCOL
from protocol.codes import ErrorCode
from protocol.errors import CommandError
from protocol.messages import (
    Ping,
    StateChange,
    StateEntry,
    StatePatch,
    StateResult,
    StateSet,
    Subscribe,
    SubscribeResult,
    Unsubscribe,
    Unsubscribed,
)
from realtime.engines.errors import EngineUnavailable
from realtime.namespaces import Namespace

from .helpers import MS, HubFactory, Proxy, RunningHub, make_token, namespaces, unpack, until
from .wsclient import TIMEOUT, RawClient

LIVE = Namespace(name="live", kind="live", subscribe="anyone", client_write=True)
FAST = Namespace(name="fast", kind="live", subscribe="anyone", client_write=True, max_rate=10)
NIL = b"\xc0"


@pytest.fixture
async def hub(hub_factory: HubFactory) -> RunningHub:
    return await hub_factory(namespaces=namespaces(LIVE, FAST))


async def write(client: RawClient, channel: str, key: str, value: Any, version: int | None = None) -> int:
    """Set ``key`` (``value=None`` deletes it); returns the new version."""
    reply = await client.command(StateSet(0, channel, key, msgpack.packb(value), version))
    assert reply.error is None, reply.error
    assert isinstance(reply.result, StateResult)
    return reply.result.version


async def patch(client: RawClient, channel: str, key: str, p: dict[str, Any], version: int | None = None) -> int:
    reply = await client.command(StatePatch(0, channel, key, msgpack.packb(p), version))
    assert reply.error is None, reply.error
    assert isinstance(reply.result, StateResult)
    return reply.result.version


async def error_code(client: RawClient, cmd: StateSet | StatePatch | Subscribe) -> int:
    reply = await client.command(cmd)
    assert reply.error is not None, reply.result
    return reply.error.code


async def change(client: RawClient, timeout: float = TIMEOUT) -> StateChange:
    msg = await client.next_push(timeout)
    assert isinstance(msg, StateChange), msg
    return msg


async def subscribe(client: RawClient, channel: str, version: int | None = None) -> SubscribeResult:
    result = (await client.subscribe(channel, version=version)).result
    assert isinstance(result, SubscribeResult)
    return result


def entries(result: SubscribeResult) -> dict[str, tuple[Any, int]]:
    return {e.key: (None if e.value is None else unpack(e.value), e.version) for e in result.state}


class Mirror:
    """A live channel as a client holds it (the algorithm of handlers/live.py)."""

    def __init__(self, client: RawClient, channel: str) -> None:
        self.client = client
        self.channel = channel
        self.values: dict[str, Any] = {}
        self.versions: dict[str, int] = {}
        self.held = 0
        self.resyncs: list[SubscribeResult] = []

    async def subscribe(self, version: int | None = None) -> SubscribeResult:
        result = await subscribe(self.client, self.channel, version)
        if version is None or result.version < version:
            self.values.clear()
            self.versions.clear()
        for e in result.state:
            self._put(e.key, None if e.value is None else unpack(e.value), e.version)
        self.held = result.version
        return result

    async def resync(self) -> None:
        assert (await self.client.command(Unsubscribe(0, self.channel))).error is None
        self.resyncs.append(await self.subscribe(self.held))

    async def apply(self, c: StateChange) -> None:
        assert c.channel == self.channel
        if c.patch is not None:
            if c.version <= self.held:
                return  # already included
            if c.version != self.held + 1:
                await self.resync()  # missed something
                return
            self._put(c.key, merge_patch.apply(self.values.get(c.key), unpack(c.patch)), c.version)
            self.held = c.version
        else:
            assert c.value is not None
            if c.version <= self.versions.get(c.key, 0):
                return  # stale
            self._put(c.key, unpack(c.value), c.version)
            if c.version == self.held + 1:
                self.held = c.version

    async def follow(self, version: int) -> None:
        """Apply pushes until the mirror holds ``version``."""
        while self.held < version:
            await self.apply(await change(self.client))

    def _put(self, key: str, value: Any, version: int) -> None:
        if value is None:
            self.values.pop(key, None)
        else:
            self.values[key] = value
        self.versions[key] = version


async def test_snapshot_on_subscribe(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as w, await RawClient.open(hub.url) as s:
        assert await write(w, "live:room", "a", {"x": 1}) == 1
        assert await write(w, "live:room", "b", [1, 2]) == 2
        assert await write(w, "live:room", "gone", "soon") == 3
        assert await write(w, "live:room", "gone", None) == 4  # msgpack nil deletes
        assert await patch(w, "live:room", "a", {"y": 2}) == 5
        result = await subscribe(s, "live:room")
        assert result.version == 5
        assert entries(result) == {"a": ({"x": 1, "y": 2}, 5), "b": ([1, 2], 2)}
        # Another channel of the namespace is separate; a fresh one is empty at version 0.
        empty = await subscribe(s, "live:other")
        assert (empty.version, empty.state) == (0, ())


async def test_deltas_have_consecutive_versions_and_mirrors_converge(hub: RunningHub) -> None:
    w = await RawClient.open(hub.url)
    mp = await RawClient.open(hub.url)
    js = await RawClient.open(hub.url, subprotocol=JSON_SUBPROTOCOL)
    try:
        await write(w, "live:doc", "seed", 0)
        mirrors = [Mirror(mp, "live:doc"), Mirror(js, "live:doc")]
        for m in mirrors:
            assert (await m.subscribe()).version == 1
        big = {f"f{i}": f"value {i}" for i in range(20)}
        versions = [
            await write(w, "live:doc", "doc", big),
            await write(w, "live:doc", "doc", {**big, "f3": "changed"}),  # sent as a patch
            await patch(w, "live:doc", "doc", {"f4": None, "new": {"deep": [1, None]}}),
            await write(w, "live:doc", "doc", {**big, "f5": None}),  # a nil member: sent whole
            await write(w, "live:doc", "n", 1),
            await write(w, "live:doc", "seed", None),
            await patch(w, "live:doc", "fresh", {"a": 1}),  # a patch on a missing key
        ]
        assert versions == list(range(2, 9))
        for m in mirrors:
            seen = [await change(m.client) for _ in versions]
            assert [c.version for c in seen] == versions
            assert [c.patch is not None for c in seen] == [False, True, True, False, False, False, False]
            for c in seen:
                await m.apply(c)
            assert m.held == 8 and not m.resyncs
        async with await RawClient.open(hub.url) as late:
            fresh = entries(await subscribe(late, "live:doc"))
        truth = {k: v for k, (v, _) in fresh.items()}
        assert truth == {"doc": {**big, "f5": None}, "n": 1, "fresh": {"a": 1}}
        for m in mirrors:
            assert m.values == truth
    finally:
        for client in (w, mp, js):
            await client.close()


async def test_a_patch_is_smaller_on_the_wire_than_the_full_value(hub: RunningHub) -> None:
    async def frame(client: RawClient) -> tuple[StateChange, int]:
        """The next frame, which must hold one state push, and its size in bytes."""
        raw = await asyncio.wait_for(client.ws.recv(), TIMEOUT)
        data = raw if isinstance(raw, bytes) else raw.encode()
        (msg,) = client.codec.decode_messages(data)
        assert isinstance(msg, StateChange)
        return msg, len(data)

    async with await RawClient.open(hub.url) as w, await RawClient.open(hub.url) as s:
        await subscribe(s, "live:profile")
        big = {f"field{i:03}": f"a value of field {i}" for i in range(100)}
        await write(w, "live:profile", "user", big)
        full, full_size = await frame(s)
        assert full.value is not None and unpack(full.value) == big
        await write(w, "live:profile", "user", {**big, "field042": "new"})
        delta, delta_size = await frame(s)
        assert delta.patch is not None and unpack(delta.patch) == {"field042": "new"}
        await patch(w, "live:profile", "user", {"field007": None})
        client_patch, client_patch_size = await frame(s)
        assert client_patch.patch is not None and unpack(client_patch.patch) == {"field007": None}
        # Measured (msgpack frames): 2,950 bytes for the full value, 71 and 68 for the patches.
        assert full_size > 2900
        assert delta_size < 80 and client_patch_size < 80
        # A small value goes whole: its patch would be no smaller.
        await write(w, "live:profile", "flag", {"on": True})
        await write(w, "live:profile", "flag", {"on": False})
        for _ in range(2):
            small, _size = await frame(s)
            assert small.value is not None


async def test_version_conflicts(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as c:
        ch = "live:cas"
        assert await write(c, ch, "k", 1, version=0) == 1  # 0: create only
        assert await error_code(c, StateSet(0, ch, "k", msgpack.packb(2), 0)) == ErrorCode.CONFLICT
        assert await write(c, ch, "other", 1) == 2  # the channel moves on, the key's version stays 1
        assert await error_code(c, StateSet(0, ch, "k", msgpack.packb(2), 2)) == ErrorCode.CONFLICT
        assert await write(c, ch, "k", 2, version=1) == 3
        assert await error_code(c, StatePatch(0, ch, "k", msgpack.packb({"a": 1}), 1)) == ErrorCode.CONFLICT
        assert await patch(c, ch, "k", {"a": 1}, version=3) == 4
        assert await write(c, ch, "k", None, version=4) == 5  # a conditional delete
        assert await write(c, ch, "k", "back", version=0) == 6  # deleted counts as absent
        state = entries(await subscribe(c, ch))
        assert state == {"k": ("back", 6), "other": (1, 2)}


async def test_delete(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as w, await RawClient.open(hub.url) as s:
        await write(w, "live:d", "k", {"v": 1})
        await subscribe(s, "live:d")
        assert await write(w, "live:d", "k", None) == 2
        c = await change(s)
        assert (c.key, c.version, c.value, c.patch) == ("k", 2, NIL, None)
        assert entries(await subscribe(w, "live:d")) == {}


async def test_resubscribe_with_a_version_gets_only_what_changed(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as w, await RawClient.open(hub.url) as s:
        for key, value in (("a", 1), ("b", 2), ("c", 3)):
            await write(w, "live:r", key, value)
        mirror = Mirror(s, "live:r")
        assert (await mirror.subscribe()).version == 3
        assert (await s.command(Unsubscribe(0, "live:r"))).error is None
        await write(w, "live:r", "a", 10)
        await write(w, "live:r", "b", None)
        await patch(w, "live:r", "d", {"x": 1})
        result = await mirror.subscribe(version=3)
        assert result.version == 6
        assert entries(result) == {"a": (10, 4), "b": (None, 5), "d": ({"x": 1}, 6)}
        assert mirror.values == {"a": 10, "c": 3, "d": {"x": 1}}
        # Nothing changed since: an empty delta.
        assert (await s.command(Unsubscribe(0, "live:r"))).error is None
        assert (await subscribe(s, "live:r", version=6)).state == ()
        # A version the hub never reached (its state was reset): the full snapshot.
        assert (await s.command(Unsubscribe(0, "live:r"))).error is None
        reset = await subscribe(s, "live:r", version=99)
        assert reset.version == 6 and set(entries(reset)) == {"a", "c", "d"}


async def test_a_client_that_misses_a_version_resubscribes_and_converges(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as w, await RawClient.open(hub.url) as s:
        big = {f"k{i}": "x" * 20 for i in range(10)}
        await write(w, "live:gap", "doc", big)
        await write(w, "live:gap", "other", 1)
        mirror = Mirror(s, "live:gap")
        await mirror.subscribe()
        assert mirror.held == 2
        await patch(w, "live:gap", "doc", {"k1": "one"})  # 3: lost below
        await patch(w, "live:gap", "doc", {"k2": "two"})  # 4
        await write(w, "live:gap", "other", 2)  # 5
        await patch(w, "live:gap", "doc", {"k3": "three"})  # 6
        lost = await change(s)
        assert lost.version == 3 and lost.patch is not None
        await mirror.follow(6)
        assert len(mirror.resyncs) == 1
        # The resubscribe brought only what changed after version 2.
        assert entries(mirror.resyncs[0]) == {
            "doc": ({**big, "k1": "one", "k2": "two", "k3": "three"}, 6),
            "other": (2, 5),
        }
        # Pushes that were on their way are recognised as already included.
        assert (await s.command(Ping(0))).error is None
        while s.pushes:
            push = s.pushes.popleft()
            assert isinstance(push, StateChange)
            await mirror.apply(push)
        assert len(mirror.resyncs) == 1
        assert mirror.values == {"doc": {**big, "k1": "one", "k2": "two", "k3": "three"}, "other": 2}


async def test_conflation_delivers_few_full_values_ending_with_the_latest(hub: RunningHub) -> None:
    interval = 1 / FAST.max_rate
    loop = asyncio.get_running_loop()
    w = await RawClient.open(hub.url)
    subs = [await RawClient.open(hub.url) for _ in range(2)]
    try:
        for s in subs:
            await subscribe(s, "fast:game")
        started = loop.time()
        for i in range(50):
            if i % 5 == 4:
                await patch(w, "fast:game", "score", {"n": i})
            else:
                await write(w, "fast:game", "score", {"n": i, "pad": "x" * 40})
            await asyncio.sleep(2 * MS)
        elapsed = loop.time() - started
        got: list[list[StateChange]] = []
        for s in subs:
            seen: list[StateChange] = []
            while not seen or seen[-1].version < 50:
                seen.append(await change(s))
            got.append(seen)
        for seen in got:
            assert all(c.value is not None for c in seen)  # full values, patches included
            assert unpack(seen[-1].value or b"") == {"n": 49, "pad": "x" * 40}
            versions = [c.version for c in seen]
            assert versions == sorted(versions) and versions[0] == 1
            assert len(seen) <= elapsed / interval + 2 and len(seen) < 15
        # Once per node: both subscribers got the same deliveries.
        assert [c.version for c in got[0]] == [c.version for c in got[1]]
        # Nothing follows the latest value: no backlog.
        await asyncio.sleep(3 * interval)
        for s in subs:
            assert (await s.command(Ping(0))).error is None
            assert not s.pushes
        # An idle key's next change goes out at once.
        await write(w, "fast:game", "score", {"n": 50})
        for s in subs:
            assert unpack((await change(s, timeout=interval / 2)).value or b"") == {"n": 50}
    finally:
        for client in (w, *subs):
            await client.close()


async def test_permission_refusals(hub_factory: HubFactory) -> None:
    hub = await hub_factory(
        namespaces=namespaces(
            LIVE,
            Namespace(name="ro", kind="live", subscribe="anyone"),
            Namespace(name="members", kind="live", subscribe="authenticated", client_write=True),
            Namespace(name="small", kind="live", subscribe="anyone", client_write=True, max_message_size=16),
        )
    )
    value = msgpack.packb({"a": 1})
    async with await RawClient.open(hub.url) as anon, await RawClient.open(hub.url, token=make_token("alice")) as alice:
        # client_write is off: only the server API writes; subscribing is fine.
        assert await error_code(anon, StateSet(0, "ro:x", "k", value)) == ErrorCode.PERMISSION_DENIED
        assert await error_code(anon, StatePatch(0, "ro:x", "k", value)) == ErrorCode.PERMISSION_DENIED
        await subscribe(anon, "ro:x")
        # Not allowed to subscribe: not allowed to write.
        assert await error_code(anon, Subscribe(0, "members:x")) == ErrorCode.PERMISSION_DENIED
        assert await error_code(anon, StateSet(0, "members:x", "k", value)) == ErrorCode.PERMISSION_DENIED
        assert await error_code(anon, StatePatch(0, "members:x", "k", value)) == ErrorCode.PERMISSION_DENIED
        assert await write(alice, "members:x", "k", {"a": 1}) == 1
        # Not a live channel; an unknown namespace; too large.
        assert await error_code(anon, StateSet(0, "plain", "k", value)) == ErrorCode.BAD_REQUEST
        assert await error_code(anon, StateSet(0, "nope:x", "k", value)) == ErrorCode.UNKNOWN_CHANNEL
        big = msgpack.packb("x" * 20)
        assert await error_code(anon, StateSet(0, "small:x", "k", big)) == ErrorCode.LIMIT_EXCEEDED
        await write(anon, "small:x", "k", {"a": 1})
        grow = msgpack.packb({"b": "y" * 20})
        assert await error_code(anon, StatePatch(0, "small:x", "k", grow)) == ErrorCode.LIMIT_EXCEEDED
        assert entries(await subscribe(anon, "small:x")) == {"k": ({"a": 1}, 1)}


async def test_server_api_methods(hub: RunningHub) -> None:
    """What the HTTP API calls: same semantics, no permission checks, subscribers get the deltas."""
    live = hub.hub.feature(Live)
    async with await RawClient.open(hub.url) as s:
        await subscribe(s, "live:api")
        assert await live.set_value("live:api", "k", msgpack.packb({"a": 1, "pad": "x" * 40})) == 1
        assert await live.patch_value("live:api", "k", msgpack.packb({"a": 2}), expected_version=1) == 2
        with pytest.raises(CommandError) as info:
            await live.set_value("live:api", "k", msgpack.packb(0), expected_version=1)
        assert info.value.code == ErrorCode.CONFLICT
        with pytest.raises(CommandError) as info:
            await live.patch_value("live:api", "k", b"\xc1")
        assert info.value.code == ErrorCode.BAD_REQUEST
        assert await live.set_value("live:api", "gone", NIL) == 3
        assert await live.set_value("live:api", "other", None) == 4
        changes = [await change(s) for _ in range(4)]
        assert [c.version for c in changes] == [1, 2, 3, 4]
        assert changes[1].patch is not None and unpack(changes[1].patch) == {"a": 2}
        assert changes[2].value == NIL
        found, version = await live.get("live:api")
        assert version == 4 and [(e.key, unpack(e.value or b"")) for e in found] == [("k", {"a": 2, "pad": "x" * 40})]
        assert await live.get("live:api", "k") == (found, 4)
        assert await live.get("live:api", "gone") == ([], 4)
        with pytest.raises(CommandError) as info:
            await live.get("plain")
        assert info.value.code == ErrorCode.BAD_REQUEST


# --- after the engine's delivery was interrupted ---------------------------------------

LIVE_NO_HISTORY = Namespace(name="live", kind="live", subscribe="anyone", client_write=True, history_size=0)


def _values(entries: tuple[StateEntry, ...]) -> dict[str, Any]:
    return {e.key: msgpack.unpackb(e.value) for e in entries if e.value is not None}


async def test_a_resync_asks_live_subscribers_to_resubscribe_with_their_version(hub_factory: HubFactory) -> None:
    """State changes are pushed at most once (Redis pub/sub): one lost while the engine's
    delivery was interrupted reaches the subscriber through its resubscribe."""
    hub = await hub_factory(namespaces=namespaces(LIVE_NO_HISTORY))
    ch = "live:score"
    live, engine = hub.hub.feature(Live), hub.hub.engine
    async with await RawClient.open(hub.url) as sub:
        await sub.subscribe(ch)
        await live.set_value(ch, "score", msgpack.packb(1))
        first = await sub.next_push()
        assert isinstance(first, StateChange) and first.version == 1
        handler, engine._handler = engine._handler, None  # this node misses the next change
        try:
            await live.set_value(ch, "score", msgpack.packb(2))
        finally:
            engine._handler = handler
        hub.hub.on_resync()  # what the Redis engine calls once its listener is back
        assert await sub.next_push() == Unsubscribed(ch, "recover")
        result = (await sub.subscribe(ch, version=first.version)).result
        assert isinstance(result, SubscribeResult) and result.version == 2
        assert _values(result.state) == {"score": 2}


async def test_a_state_change_lost_while_a_nodes_pubsub_reconnects(hub_factory: HubFactory, redis_server: Any) -> None:
    """The same on two nodes over Redis: node B's pub/sub connection is cut and kept out
    while node A writes; once B is back, its subscriber resubscribes and gets the change."""
    from redis.asyncio import Redis

    proxy = Proxy(redis_server.port)
    await proxy.start()
    ns = namespaces(LIVE_NO_HISTORY)
    a = await hub_factory(redis=redis_server.url, namespaces=ns)
    b = await hub_factory(redis=f"redis://127.0.0.1:{proxy.port}/0", namespaces=ns)
    ch = "live:score"
    direct = Redis.from_url(redis_server.url)
    try:
        async with await RawClient.open(b.url) as sub:
            await sub.subscribe(ch)
            await a.hub.feature(Live).set_value(ch, "score", msgpack.packb(1))
            first = await sub.next_push()
            assert isinstance(first, StateChange) and first.version == 1
            proxy.refusing = True  # B cannot reconnect until heal()
            await direct.client_kill_filter(_type="pubsub")
            await a.hub.feature(Live).set_value(ch, "score", msgpack.packb(2))  # B is not listening
            proxy.heal()
            assert await sub.next_push(timeout=10) == Unsubscribed(ch, "recover")
            result = (await sub.subscribe(ch, version=first.version)).result
            assert isinstance(result, SubscribeResult) and _values(result.state) == {"score": 2}
    finally:
        await direct.aclose()
        await b.stop()
        await proxy.close()


async def test_python_client_follows_live_state_after_redis_restarts_empty(
    hub_factory: HubFactory, redis_server: Any
) -> None:
    """Redis restarts without persistence under a running node: the state starts again at
    version 1, below what the client holds; the client takes a full snapshot instead of
    dropping the new changes as stale."""
    from realtime.client import Client

    hub = await hub_factory(redis=redis_server.url, namespaces=namespaces(LIVE_NO_HISTORY))
    ch = "live:score"
    for n in (1, 2, 3):
        await hub.hub.feature(Live).set_value(ch, "score", msgpack.packb(n))
    async with Client(hub.url, min_backoff=10 * MS, max_backoff=50 * MS) as client:
        sub = await client.subscribe(ch)
        assert (dict(sub.state), sub.version) == ({"score": 3}, 3)
        await redis_server.restart()  # empty: no persistence
        async with asyncio.timeout(10):
            while True:  # until the node reaches the new Redis
                try:
                    await hub.hub.feature(Live).set_value(ch, "score", msgpack.packb(100))
                    break
                except EngineUnavailable:  # until the node reaches the new Redis
                    await asyncio.sleep(50 * MS)
            while dict(sub.state) != {"score": 100}:
                await asyncio.sleep(10 * MS)
        assert sub.version >= 1


# --- bounds: value size, state size and keys, tombstones, expiry -------------------------------


async def test_a_patch_cannot_grow_a_key_past_the_value_limit(hub_factory: HubFactory) -> None:
    """The finding: 40 ``state_patch`` calls grew one key to 2.4 MB. A value, a patched one included, is at
    most ``max_message_size``, by default ``max_frame_size``."""
    hub = await hub_factory(namespaces=namespaces(LIVE), max_frame_size=16 * 1024)
    async with await RawClient.open(hub.url) as client:
        await patch(client, "live:doc", "k", {"f0": "x" * 10_000})
        assert await error_code(client, StatePatch(0, "live:doc", "k", msgpack.packb({"f1": "x" * 10_000}))) == (
            ErrorCode.LIMIT_EXCEEDED
        )
        value = await hub.hub.feature(Live).get("live:doc", "k")
        assert [unpack(e.value) for e in value[0] if e.value] == [{"f0": "x" * 10_000}]


async def test_big_values_cannot_poison_a_channel_for_new_subscribers(hub_factory: HubFactory) -> None:
    """The finding: 20 anonymous ``state_set`` of 60 kB on ``live:scores`` closed every new subscriber
    with 4002, for ever. The channel's state is bounded (by default an eighth of ``max_queue_bytes``):
    writes beyond get 106, and a subscriber gets the snapshot."""
    hub = await hub_factory(namespaces=namespaces(LIVE))
    value = "x" * 60_000
    async with (
        await RawClient.open(hub.url) as writer,
        await RawClient.open(hub.url, subprotocol=JSON_SUBPROTOCOL) as js,
    ):
        codes = []
        for i in range(20):
            reply = await writer.command(StateSet(0, "live:scores", f"k{i}", msgpack.packb(value)))
            codes.append(0 if reply.error is None else reply.error.code)
        assert codes == [0, 0] + [ErrorCode.LIMIT_EXCEEDED] * 18
        for client in (writer, js):  # JSON too: the snapshot fits the queue in either codec
            snapshot = await subscribe(client, "live:scores")
            assert sorted(e.key for e in snapshot.state) == ["k0", "k1"]
            assert (await client.command(Ping(0))).error is None  # still connected
        # Deleting makes room.
        await write(writer, "live:scores", "k0", None)
        await write(writer, "live:scores", "k2", value)


async def test_the_key_count_is_bounded(hub_factory: HubFactory) -> None:
    hub = await hub_factory(
        namespaces=namespaces(Namespace("cap", kind="live", subscribe="anyone", client_write=True, max_state_keys=3))
    )
    async with await RawClient.open(hub.url) as client:
        for key in "abc":
            await write(client, "cap:x", key, 1)
        assert await error_code(client, StateSet(0, "cap:x", "d", msgpack.packb(1))) == ErrorCode.LIMIT_EXCEEDED
        await write(client, "cap:x", "a", 2)  # an existing key may change
        with pytest.raises(CommandError) as info:  # the HTTP API's path too
            await hub.hub.feature(Live).set_value("cap:x", "d", msgpack.packb(1))
        assert info.value.code == ErrorCode.LIMIT_EXCEEDED


async def test_tombstones_are_compacted_and_a_stale_version_gets_everything(hub_factory: HubFactory) -> None:
    """The finding: deleted keys left tombstones for ever (5,000 returned to one subscribe). At most
    ``max_state_keys`` are kept; a client behind the ones dropped gets every key, marked ``full``."""
    ns = Namespace("cap", kind="live", subscribe="anyone", client_write=True, max_state_keys=10)
    hub = await hub_factory(namespaces=namespaces(ns))
    live = hub.hub.feature(Live)
    await live.set_value("cap:x", "kept", msgpack.packb(1))  # version 1
    for i in range(50):
        await live.set_value("cap:x", f"k{i}", msgpack.packb(i))
        await live.set_value("cap:x", f"k{i}", None)  # version 2i + 3
    async with await RawClient.open(hub.url) as client:
        behind = await subscribe(client, "cap:x", version=1)
        assert (behind.version, behind.full, behind.state) == (101, True, (StateEntry("kept", msgpack.packb(1), 1),))
        await client.command(Unsubscribe(0, "cap:x"))
        recent = await subscribe(client, "cap:x", version=97)
        assert (recent.full, [e.key for e in recent.state]) == (False, ["k48", "k49"])


async def test_keys_expire_and_subscribers_are_told(hub_factory: HubFactory) -> None:
    """Keys are not kept for ever: one not written for ``state_ttl`` is deleted, and its subscribers get
    the deletion (the node sweeps its live channels every tenth of the ttl); new subscribers never see it."""
    ns = Namespace("brief", kind="live", subscribe="anyone", client_write=True, state_ttl=0.2)
    hub = await hub_factory(namespaces=namespaces(ns))
    async with await RawClient.open(hub.url) as writer, await RawClient.open(hub.url) as watcher:
        await write(writer, "brief:x", "old", 1)
        assert [e.key for e in (await subscribe(watcher, "brief:x")).state] == ["old"]
        assert await change(watcher) == StateChange("brief:x", "old", 2, value=NIL)
        async with await RawClient.open(hub.url) as late:
            assert (await subscribe(late, "brief:x")).state == ()
        assert await write(writer, "brief:x", "new", 2) == 3
        assert await change(watcher) == StateChange("brief:x", "new", 3, value=msgpack.packb(2))


async def test_a_write_deletes_expired_keys_first_and_says_so(hub_factory: HubFactory) -> None:
    """Between sweeps, the channel's next write deletes an expired key before its own change."""
    ns = Namespace("brief", kind="live", subscribe="anyone", client_write=True, state_ttl=0.2)
    hub = await hub_factory(namespaces=namespaces(ns))
    live: Live = hub.hub.feature(Live)
    live._sweep_interval = 3600.0  # no sweep within this test: the write must do it
    async with await RawClient.open(hub.url) as writer, await RawClient.open(hub.url) as watcher:
        await write(writer, "brief:x", "old", 1)
        assert [e.key for e in (await subscribe(watcher, "brief:x")).state] == ["old"]

        async def gone() -> bool:
            entries, _ = await live.get("brief:x")
            return not entries

        await until(gone, what="the key's expiry")
        assert await write(writer, "brief:x", "new", 2) == 3
        assert await change(watcher) == StateChange("brief:x", "old", 2, value=NIL)
        assert await change(watcher) == StateChange("brief:x", "new", 3, value=msgpack.packb(2))
