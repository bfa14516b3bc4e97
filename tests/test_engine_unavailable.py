"""Engine outages: while Redis is down every role raises :class:`EngineUnavailable`
(``realtime.engines.errors``), logged in a line, and serves again once Redis is back."""

from __future__ import annotations

import asyncio

import pytest

from protocol.codes import ErrorCode
from protocol.messages import StateEntry
from realtime.engines.base import EngineError, EngineUnavailable, Idempotency, VersionConflict
from realtime.engines.errors import OutcomeUnknown, client_error
from realtime.engines.presence import PresenceEntry
from realtime.engines.redis import RedisEngine
from realtime.engines.state import StateLimits

from .helpers import MS, WAIT, Nodes, Recorder, unique_prefix
from .redis_server import RedisServer

# --- what only the Redis engine can get wrong ---------------------------------------------


async def test_unreachable_redis_is_a_temporary_error(
    nodes: Nodes, redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    eng = await nodes(socket_timeout=0.5)
    await eng.publish("up", b"\x00")
    await asyncio.to_thread(redis_server.kill)
    for call in (
        eng.publish("up", b"\x00"),
        eng.history("up"),
        eng.kv_get("k"),
        eng.presence_stats("up"),
        eng.state_since("up"),
    ):
        with pytest.raises(EngineUnavailable):
            await call
    warnings = [r for r in caplog.records if r.name == "realtime.engines.redis"]
    assert warnings and all(r.exc_info is None for r in warnings)
    assert len(warnings) <= 2  # one line a second at most
    await asyncio.to_thread(redis_server.start)
    await eng.publish("up", b"\x00")  # and back once Redis is


async def test_a_node_starts_while_redis_is_down(redis_server: RedisServer) -> None:
    await asyncio.to_thread(redis_server.stop)
    eng = RedisEngine(redis_server.url, prefix=unique_prefix(), connect_timeout=100 * MS)
    rec = Recorder()
    try:
        async with asyncio.timeout(WAIT):
            await eng.start(rec)  # gives up waiting after connect_timeout
        assert not eng.ready
        with pytest.raises(EngineUnavailable):
            await eng.subscribe("later")
        await asyncio.to_thread(redis_server.start)
        async with asyncio.timeout(WAIT):
            while not eng.ready:  # the listener has no event for its first connection
                await asyncio.sleep(10 * MS)
        await eng.library_loaded()
        await eng.subscribe("later")
        await eng.control(b"\x80")  # the control channel was subscribed with the first connection
        await eng.publish("later", b"\x01")
        await rec.until(lambda: len(rec.pubs) == 1 and len(rec.controls) == 1)
        assert rec.resyncs == 0  # a first connection, nothing to resync
    finally:
        await eng.close()


async def test_every_role_raises_engine_unavailable_while_redis_is_down(
    nodes: Nodes, redis_server: RedisServer
) -> None:
    eng = await nodes(socket_timeout=0.5)
    await eng.publish("up", b"\x00")
    await asyncio.to_thread(redis_server.kill)
    for call in (
        eng.publish("up", b"\x00", idempotency=Idempotency("k", ttl=60)),  # broker
        eng.broadcast("up", b"\x80"),
        eng.control(b"\x80"),
        eng.remove_history("up"),
        eng.presence_add("up", "c1", PresenceEntry("u"), ttl=30),  # presence
        eng.presence("up"),
        eng.kv_set("k", b"1"),  # kv
        eng.kv_set_max("m", 1.0),
        eng.receipt_set("up", "u", 1),  # receipts
        eng.receipt_raise("up", "u", 1),
        eng.receipts("up"),
        eng.state_set("up", "k", b"\x01"),  # live state
        eng.state_write("up", "k", b"\x01", limits=StateLimits(max_bytes=10, max_keys=1, ttl=60)),
        eng.state_get("up", "k"),
        eng.state_read("up", 1),
        eng.state_expire("up"),
    ):
        with pytest.raises(EngineUnavailable) as info:
            await call
        assert isinstance(info.value, EngineError)
    await asyncio.to_thread(redis_server.start)
    await eng.publish("up", b"\x00")


def test_each_engine_error_has_one_client_error() -> None:
    """What both boundaries (WebSocket commands, the HTTP API) tell a client of an engine error."""
    outage = client_error(EngineUnavailable("Redis is unavailable"))
    assert (outage.code, outage.message, outage.code.temporary) == (
        ErrorCode.NOT_AVAILABLE,
        "Redis is unavailable",
        True,
    )
    conflict = client_error(VersionConflict(StateEntry("k", b"\x01", 7)))
    assert (conflict.code, conflict.message) == (ErrorCode.CONFLICT, "version is 7")
    assert client_error(EngineError("odd")).code == ErrorCode.INTERNAL


def test_an_unknown_outcome_is_told_apart_from_an_outage() -> None:
    unknown = client_error(OutcomeUnknown("the publish may have happened"))
    assert (unknown.code, unknown.code.temporary) == (ErrorCode.OUTCOME_UNKNOWN, True)
