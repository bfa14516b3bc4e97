"""The client SDK when the app acts while a command or a reconnect is in flight.

Closing while connecting, giving up on a subscribe, unsubscribing during a
reconnect, a connection ending while it is being opened, a state reset on the
hub, a failing ``refresh_token()``: each leaves the client and the hub agreeing
on what is subscribed, and the client either working or stopped for good.
Token refreshes that make no headway never loop without pause, command ids
wrap within the protocol's range, and a status change that a resubscribe
races with is announced once.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import subprocess
import sys
import textwrap
import time
from collections.abc import Awaitable, Callable
from contextlib import AbstractAsyncContextManager
from typing import Any

import pytest
from websockets.asyncio.server import Server, ServerConnection, serve
from websockets.typing import Subprotocol

from protocol import codec_for
from protocol import messages as m
from protocol.codec import MSGPACK_SUBPROTOCOL
from protocol.codes import CloseCode
from realtime.client import Client, CommandTimeout, ConnectionClosed, StatusChanged, UserStatus
from realtime.namespaces import Namespace

from .helpers import MS, WAIT, HubFactory, RunningHub, fast, kick, make_token, namespaces, spy

CODEC = codec_for(MSGPACK_SUBPROTOCOL)
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def gate_engine_history(hub: RunningHub) -> asyncio.Event:
    """Make the hub's engine history reads (every subscribe does one) wait while the event is clear."""
    engine = hub.hub.engine
    real = engine.history
    gate = asyncio.Event()
    gate.set()

    async def history(*args: Any, **kwargs: Any) -> Any:
        await gate.wait()
        return await real(*args, **kwargs)

    engine.history = history
    return gate


# --- closing while connecting ---------------------------------------------------------


async def test_close_during_connect_leaves_no_open_connection(hub: RunningHub) -> None:
    """close() while connect() is still opening: connect() ends without a run task, and the
    connection it was opening is closed (the hub no longer holds it)."""
    client = fast(hub.url)
    connecting = asyncio.create_task(client.connect())
    await asyncio.sleep(0)  # connect() is now waiting on the WebSocket handshake
    await client.close()
    try:
        await connecting  # returning or raising ConnectionClosed are both fine...
    except ConnectionClosed:
        pass
    try:  # ...leaving a connection open is not
        assert client._run_task is None
        async with asyncio.timeout(WAIT):
            while hub.hub.connections:
                await asyncio.sleep(MS)
    finally:
        if client._run_task is not None:  # clean up a leaked connection
            client._run_task.cancel()
            if client._conn is not None:
                await client._conn.close()


# --- a subscribe the client gave up on -------------------------------------------------


async def test_subscribe_that_timed_out_can_be_retried(hub: RunningHub) -> None:
    """A subscribe() that raised CommandTimeout is undone on the hub when the hub completes it
    late, so subscribing to the channel again works and receives its publications."""
    gate = gate_engine_history(hub)
    async with fast(hub.url, command_timeout=100 * MS) as client, fast(hub.url) as publisher:
        gate.clear()  # the hub is slow to answer this subscribe
        with pytest.raises(CommandTimeout):
            await client.subscribe("feed")
        assert client.subscriptions() == {}
        gate.set()
        await client.ping()  # the hub has now finished the first subscribe
        sub = await client.subscribe("feed")
        await publisher.publish("feed", "x")
        async with asyncio.timeout(WAIT):
            assert (await anext(sub)).data == "x"


async def test_unsubscribe_then_subscribe_again_while_reconnecting(hub: RunningHub) -> None:
    """Unsubscribing and subscribing again to a channel whose resubscribe (by the reconnect) is
    still in flight: the old subscription is undone on the hub before the new one is made."""
    codec = spy()
    gate = gate_engine_history(hub)
    async with fast(hub.url, codec=codec) as client, fast(hub.url) as publisher:
        sub = await client.subscribe("feed")
        gate.clear()  # hold the reconnect's resubscribe on the hub
        kick(hub, client, CloseCode.FORCE_RECONNECT)
        async with asyncio.timeout(WAIT):
            while len(codec.subscribes("feed")) < 2:
                await asyncio.sleep(MS)
        await sub.unsubscribe()
        again = asyncio.create_task(client.subscribe("feed"))
        async with asyncio.timeout(WAIT):
            while client.subscriptions().get("feed") in (None, sub):
                await asyncio.sleep(0)  # the new subscribe() now waits for the connection
        gate.set()
        async with asyncio.timeout(WAIT):
            sub2 = await again
        await publisher.publish("feed", "x")
        async with asyncio.timeout(WAIT):
            assert (await anext(sub2)).data == "x"


# --- live state across a reset of the hub's state ----------------------------------------


FAST = Namespace(name="fast", kind="live", subscribe="anyone", client_write=True, max_rate=10)


async def test_live_state_reset_forgets_versions_applied_ahead(hub_factory: HubFactory) -> None:
    """A snapshot that resets the state (a version below the one asked for) also resets the
    versions applied ahead of the old state's version (conflation skips versions): the new state's
    versions then count from the snapshot, and no change of the new state is dropped as stale."""
    hub = await hub_factory(namespaces=namespaces(FAST))
    async with fast(hub.url) as client, fast(hub.url) as writer:
        sub = await client.subscribe("fast:g")
        for i in range(1, 11):  # within one conflation interval: versions get skipped
            await writer.state_set("fast:g", "a", i)
        async with asyncio.timeout(WAIT):
            while sub.state.get("a") != 10:
                await asyncio.sleep(MS)
        await hub.stop()
        await hub.start()  # a fresh memory engine: the state is reset to version 0
        await client.ping()  # reconnected, and resubscribed
        await writer.ping()
        assert dict(sub.state) == {}
        for i in range(1, 11):
            await writer.state_set("fast:g", f"k{i}", i)
            await asyncio.sleep(20 * MS)  # paced: the changes arrive one by one
        async with asyncio.timeout(WAIT):
            while sub.version < 10:
                await asyncio.sleep(MS)
        assert dict(sub.state) == {f"k{i}": i for i in range(1, 11)}


# --- a connection that ends while it is being opened ------------------------------------


def fake_hub(
    conns: list[ServerConnection],
    resubscribed: asyncio.Event,
    release: asyncio.Event,
    on_unsubscribe: Callable[[ServerConnection], Awaitable[None]],
) -> AbstractAsyncContextManager[Server]:
    """A scripted hub: connection 1 subscribes then goes away; connection 2 answers the
    resubscribe (``resubscribed``) once ``release`` is set, then ends itself (``on_unsubscribe``) on the
    Unsubscribe the client sends for the channel the app dropped meanwhile."""

    async def handler(ws: ServerConnection) -> None:
        n = len(conns) + 1
        conns.append(ws)
        async for frame in ws:
            for cmd in CODEC.decode_commands(frame if isinstance(frame, bytes) else frame.encode()):
                if isinstance(cmd, m.Connect):
                    await ws.send(CODEC.encode(m.Reply(cmd.id, m.ConnectResult(f"c{n}", "1", 25.0))))
                elif isinstance(cmd, m.Subscribe):
                    if n == 1:
                        await ws.send(CODEC.encode(m.Reply(cmd.id, m.SubscribeResult(0, "e", True))))
                        await ws.close(1001, "going away")
                        return
                    resubscribed.set()
                    await release.wait()
                    await ws.send(CODEC.encode(m.Reply(cmd.id, m.SubscribeResult(0, "e", True, True))))
                elif isinstance(cmd, m.Unsubscribe):
                    await on_unsubscribe(ws)
                    return
                else:
                    await ws.send(CODEC.encode(m.Reply(cmd.id, m.EmptyResult())))

    return serve(handler, "127.0.0.1", 0, subprotocols=[Subprotocol(MSGPACK_SUBPROTOCOL)])


async def test_terminal_disconnect_during_reconnect_stops_the_client() -> None:
    """A Disconnect(reconnect=False) that ends a connection while the reconnect is still opening
    it (here: on the Unsubscribe of a channel the app dropped during the resubscribe) stops the
    client for good: it does not connect again."""
    conns: list[ServerConnection] = []
    resubscribed, release = asyncio.Event(), asyncio.Event()

    async def ban(ws: ServerConnection) -> None:
        await ws.send(CODEC.encode(m.Disconnect(CloseCode.FORCE_DISCONNECT, "banned", False)))
        await ws.close(CloseCode.FORCE_DISCONNECT, "banned")

    async with fake_hub(conns, resubscribed, release, ban) as server:
        port = server.sockets[0].getsockname()[1]
        async with fast(f"ws://127.0.0.1:{port}/ws") as client:
            sub = await client.subscribe("feed")
            async with asyncio.timeout(WAIT):
                await resubscribed.wait()
            await sub.unsubscribe()  # while the resubscribe is in flight
            release.set()
            async with asyncio.timeout(WAIT):
                while not client.closed and len(conns) < 3:
                    await asyncio.sleep(MS)
            assert len(conns) == 2, "the client reconnected after Disconnect(4502, reconnect=False)"
            assert client.closed


def test_pending_command_does_not_spin_on_a_dead_connection() -> None:
    """A connection that drops while the reconnect is opening it is not handed to the commands
    waiting for it: a pending ping() waits for the next connection and succeeds there (it must not
    retry on the dead one without yielding, which would freeze the event loop; hence a subprocess)."""
    script = textwrap.dedent(
        """
        import asyncio
        from realtime.client import Client
        from tests.test_client_races import fake_hub

        async def main():
            conns, resubscribed, release = [], asyncio.Event(), asyncio.Event()

            async def drop(ws):
                await ws.close(1001, "going away")

            async with fake_hub(conns, resubscribed, release, drop) as server:
                port = server.sockets[0].getsockname()[1]
                url = f"ws://127.0.0.1:{port}/ws"
                async with Client(url, min_backoff=0.01, max_backoff=0.05, command_timeout=2) as client:
                    sub = await client.subscribe("feed")
                    async with asyncio.timeout(2):
                        await resubscribed.wait()
                    ping = asyncio.create_task(client.ping())
                    await sub.unsubscribe()
                    release.set()
                    async with asyncio.timeout(2):
                        await ping
                    assert len(conns) == 3, len(conns)
            print("ok")

        asyncio.run(main())
        """
    )
    try:
        done = subprocess.run(
            [sys.executable, "-c", script],
            capture_output=True,
            text=True,
            timeout=10,
            cwd=ROOT,
            env={**os.environ, "PYTHONPATH": ROOT},
        )
    except subprocess.TimeoutExpired:
        pytest.fail("ping() spun forever on a dead connection: the event loop hung")
    assert done.returncode == 0 and "ok" in done.stdout, done.stderr[-2000:]


# --- refresh_token() failing on reconnect -------------------------------------------------


class AuthServiceDown(Exception):
    pass


async def test_refresh_token_failure_on_reconnect_is_retried(hub_factory: HubFactory) -> None:
    """When a reconnect finds the token expired and refresh_token() fails (any exception: the
    app's auth service may be briefly down), the client tries again with backoff and connects
    with the next token, instead of stopping."""
    hub = await hub_factory(allow_anonymous=False)
    calls = 0

    async def refresh() -> str:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise AuthServiceDown("auth service briefly unavailable")
        return make_token("alice")

    async with fast(hub.url, token=make_token("alice"), refresh_token=refresh) as client:
        client.token = make_token("alice", ttl=None, exp=int(time.time()) - 5)  # expired meanwhile
        kick(hub, client, CloseCode.TOKEN_EXPIRED)
        await client.ping()
        assert not client.closed and client.user == "alice" and calls == 2


# --- token refreshes that make no headway ------------------------------------------------


async def test_refresh_reply_with_an_expiry_in_the_past_does_not_spin(hub_factory: HubFactory) -> None:
    """The refresh reply's ``expires`` is on the hub's clock; when the client's clock runs ahead
    it looks past already. The client still refreshes, but at least a second apart and backing
    off: not refresh_token() and a Refresh command over and over with no pause."""
    hub = await hub_factory(allow_anonymous=False)
    calls: list[float] = []

    async def refresh() -> str:
        calls.append(time.monotonic())
        return make_token("alice", ttl=3600)

    async def refresh_in_the_past(conn: object, cmd: m.Refresh) -> m.RefreshResult:
        return m.RefreshResult(int(time.time()) - 5)  # accepted; the hub's clock is behind ours

    hub.hub.handlers[m.Refresh] = refresh_in_the_past
    short = make_token("alice", ttl=None, exp=int(time.time()) + 1)
    async with Client(hub.url, short, refresh_token=refresh, command_timeout=5) as client:
        await asyncio.sleep(1.0)  # a window to count refreshes in: nothing to wait for
        assert client.connected
    assert len(calls) <= 3, f"refresh_token() called {len(calls)} times in one second"


async def test_refresh_token_returning_a_token_about_to_expire_does_not_spin(hub_factory: HubFactory) -> None:
    """refresh_token() returning the app's cached token, which expires within a second or two (the
    hub accepts it: not expired yet), makes the client refresh again later with backoff, not at
    once and forever."""
    hub = await hub_factory(allow_anonymous=False, token_grace=30)
    exp = int(time.time()) + 2
    token = make_token("alice", ttl=None, exp=exp)
    calls: list[float] = []

    async def refresh() -> str:
        calls.append(time.monotonic())
        return token  # the cached token: nothing newer yet

    async with Client(hub.url, token, refresh_token=refresh, command_timeout=5) as client:
        await asyncio.sleep(max(0.0, exp - time.time()) + 0.2)  # a window: up to the token's expiry
        assert client.connected
    assert len(calls) <= 5, f"refresh_token() called {len(calls)} times before the token expired"


# --- command ids at the end of their range ------------------------------------------------


async def test_command_ids_stay_within_uint32(hub: RunningHub) -> None:
    """A command id is a uint32 1..2**32-1, unique among the commands in flight (protocol.md).
    After 2**32-1 commands (five days of a publisher at 10k msg/s) the next id is 1 again, not
    one the hub cannot read (it would answer with id 0 and the call would time out)."""
    codec = spy()
    client = fast(hub.url, codec=codec, command_timeout=1.0)
    client._ids = itertools.count(2**32 - 2)  # as after 4294967293 commands: Connect takes 2**32-2
    async with client:
        await client.ping()  # 2**32-1: the last valid id
        await client.ping()  # 1
        assert client.connected
    assert [c.id for c in codec.sent] == [2**32 - 2, 2**32 - 1, 1]


async def test_wrapped_command_ids_skip_an_id_still_in_flight(hub: RunningHub) -> None:
    """When the ids wrap around onto a command still waiting for its reply, that id is skipped:
    both commands get their own reply."""
    codec = spy()
    handlers = hub.hub.handlers
    real_ping = handlers[m.Ping]
    entered, gate = asyncio.Event(), asyncio.Event()

    async def held_ping(conn: Any, cmd: Any) -> Any:
        entered.set()
        await gate.wait()
        return await real_ping(conn, cmd)

    async with fast(hub.url, codec=codec, command_timeout=WAIT) as client:
        handlers[m.Ping] = held_ping
        first = asyncio.create_task(client.ping())
        async with asyncio.timeout(WAIT):
            await entered.wait()
        held = codec.sent[-1].id
        client._ids = itertools.count(held + 2**32 - 1)  # the next id would wrap onto ``held``
        second = asyncio.create_task(client.ping())
        async with asyncio.timeout(WAIT):
            while len(codec.sent) < 3:  # the second Ping is on its way
                await asyncio.sleep(0)
            gate.set()
            await asyncio.gather(first, second)
    assert [c.id for c in codec.sent[1:]] == [held, held + 1]


# --- a status change that a resubscribe races with ------------------------------------------

STATUS = Namespace(name="status", kind="status", subscribe="authenticated", presence_grace=0.1)


async def test_status_change_during_a_resubscribe_is_one_event(hub_factory: HubFactory) -> None:
    """A user who comes online while a reconnect's resubscribe to their status channel is on the
    hub: the resubscribe reply shows them online (one StatusChanged), and the status push of that
    same change, which came meanwhile, is no second event."""
    hub = await hub_factory(namespaces=namespaces(STATUS))
    engine = hub.hub.engine
    real_history = engine.history
    entered, gate = asyncio.Event(), asyncio.Event()
    gate.set()

    async def history(*args: Any, **kwargs: Any) -> Any:  # every subscribe reads history first
        entered.set()
        await gate.wait()
        return await real_history(*args, **kwargs)

    engine.history = history
    codec = spy()

    def online_pushes() -> list[m.StatusNotice]:
        return [p for p in codec.received if isinstance(p, m.StatusNotice) and p.status.online]

    async with fast(hub.url, token=make_token("bob"), codec=codec) as bob:
        sub = await bob.subscribe("status:alice", events=True)
        assert sub.status == UserStatus("alice", False, 0)
        gate.clear()
        entered.clear()
        kick(hub, bob, CloseCode.FORCE_RECONNECT)
        async with asyncio.timeout(WAIT):
            await entered.wait()  # bob's resubscribe is on the hub, before its status is read
        async with fast(hub.url, token=make_token("alice")) as alice:
            async with asyncio.timeout(WAIT):
                while not (await alice.status("alice"))[0].online:
                    await asyncio.sleep(0.01)
                gate.set()
                await bob.ping()  # after the resubscribe's reply
                while not online_pushes():  # the push of the change reached bob
                    await asyncio.sleep(0.01)
            events = [await anext(aiter(sub.events())) for _ in range(len(sub.events()))]  # type: ignore[arg-type]
            assert sub.status is not None and sub.status.online
            online = [e for e in events if isinstance(e, StatusChanged) and e.status.online]
            assert len(online) == 1, events
