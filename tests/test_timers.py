"""The timer wheel (one loop timer for many connections' deadlines), and what an idle connection holds.

The wheel on a real event loop; the connection checks on a real hub with a real client.
"""

from __future__ import annotations

import asyncio
import gc
import types

import msgpack  # type: ignore[import-untyped]  # no stubs
from aiohttp import web

from realtime.hub import FEW_DEVICES
from realtime.server import CONNECTION_TASKS
from realtime.timers import RESOLUTION, TimerWheel

from .helpers import RunningHub, make_token
from .wsclient import RawClient


class Deadline:
    """A Timed that records when it was called back."""

    def __init__(self, name: str, calls: list[tuple[str, float]]) -> None:
        self.name = name
        self.calls = calls
        self.timer_slot: int | None = None

    def on_timer(self) -> None:
        self.calls.append((self.name, asyncio.get_running_loop().time()))
        if self.name == "fails":
            raise RuntimeError("a broken callback")


async def test_deadlines_are_met_in_order_never_early_and_at_most_a_slot_late() -> None:
    loop = asyncio.get_running_loop()
    wheel = TimerWheel()
    calls: list[tuple[str, float]] = []
    start = loop.time()
    due = {"a": start + 0.12, "b": start + 0.03, "c": start + 0.2}
    for name, when in due.items():
        wheel.schedule(Deadline(name, calls), when)
    await asyncio.sleep(0.2 + 3 * RESOLUTION)
    assert [name for name, _ in calls] == ["b", "a", "c"]
    for name, at in calls:
        assert at >= due[name] - 0.002  # the loop's own timer granularity
        assert at <= due[name] + RESOLUTION + 0.5  # a busy machine may add its own lateness
    assert len(wheel) == 0


async def test_a_moved_or_cancelled_deadline_fires_once_at_its_new_time_or_never() -> None:
    loop = asyncio.get_running_loop()
    wheel = TimerWheel()
    calls: list[tuple[str, float]] = []
    moved, cancelled, fails, after = (Deadline(n, calls) for n in ("moved", "cancelled", "fails", "after"))
    now = loop.time()
    wheel.schedule(moved, now + 0.02)
    wheel.schedule(moved, now + 0.15)  # moved later: the first entry is skipped
    wheel.schedule(cancelled, now + 0.02)
    wheel.cancel(cancelled)
    wheel.schedule(fails, now + 0.05)
    wheel.schedule(after, now + 0.05)  # same slot as the failing one: still called back
    await asyncio.sleep(0.15 + 3 * RESOLUTION)
    assert [name for name, _ in calls] == ["fails", "after", "moved"]
    assert calls[-1][1] >= now + 0.15 - 0.002
    assert moved.timer_slot is None and cancelled.timer_slot is None


async def test_an_idle_connection_holds_no_timer_handle_nor_http_parser(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url, token=make_token("alice")) as client:
        await client.subscribe("alpha")
        conn = next(iter(hub.hub.connections.values()))
        assert conn.timer_slot is not None  # filed in the hub's wheel
        request = conn.ws._req
        assert request is not None
        assert request.protocol._parser is None  # released at the upgrade
        gc.collect()
        holders: list[object] = [r for r in gc.get_referrers(conn) if isinstance(r, types.MethodType)]
        holders += [r for m in holders for r in gc.get_referrers(m)]
        assert not [h for h in holders if "TimerHandle" in type(h).__name__]


async def test_an_upgraded_connection_outlives_aiohttp_s_request_and_its_request_loop(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url, token=make_token("alice")) as client:
        await client.subscribe("alpha")
        await asyncio.sleep(0)  # the request loop ends one loop turn after the handler returned
        gc.collect()
        # Neither the request (and the head it parsed) nor the coroutines of aiohttp's request
        # loop stay alive for the connection's life.
        assert not [o for o in gc.get_objects() if isinstance(o, web.BaseRequest)]
        loops = [t for t in asyncio.all_tasks() if "RequestHandler" in getattr(t.get_coro(), "__qualname__", "")]
        assert not loops
        # The connection goes on: reads, writes, pings, and its end as before.
        await client.publish("alpha", "hello")
        publication = await client.publication()
        assert msgpack.unpackb(publication.data) == "hello"
        conn = next(iter(hub.hub.connections.values()))
        assert conn.ws._req is not None and conn.ws._req.transport is conn.transport
    for _ in range(100):
        if not hub.hub.connections:
            break
        await asyncio.sleep(0.01)
    assert not hub.hub.connections
    assert hub.server.app is not None and not hub.server.app[CONNECTION_TASKS]


async def test_a_stopped_server_leaves_no_connection_task_running(hub: RunningHub) -> None:
    client = await RawClient.open(hub.url, token=make_token("alice"))
    try:
        await client.subscribe("alpha")
        assert hub.server.app is not None
        tasks = hub.server.app[CONNECTION_TASKS]
        serving = list(tasks)
        assert len(serving) == 1
        await hub.stop()
        assert all(task.done() for task in serving)
        assert not tasks
    finally:
        await client.ws.close()


async def test_a_user_s_connections_are_counted_past_the_few_a_tuple_holds(hub: RunningHub) -> None:
    node = hub.hub
    devices = [object() for _ in range(FEW_DEVICES + 3)]
    for n, device in enumerate(devices, 1):
        node.track_user(device, "alice")  # only its identity is used
        node.track_user(device, "alice")  # twice: counted once
        assert len(node.users["alice"]) == n
    for n, device in enumerate(reversed(devices), 1):
        node.untrack_user(device, "alice")
        assert len(node.users.get("alice", ())) == len(devices) - n
    assert "alice" not in node.users
