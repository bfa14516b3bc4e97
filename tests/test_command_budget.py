"""The per-connection command budget: a token bucket (``command_rate``, ``command_burst``), 110 with
``retry_after`` over it, 4010 for a client that keeps sending while refused; and the SDK's handling of 110.
The per-connection byte budget (``receive_rate``, ``receive_burst``): over it the hub reads more slowly."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Sequence

import msgpack  # type: ignore[import-untyped]
import pytest

from protocol import JsonCodec, MsgpackCodec
from protocol.codes import CloseCode, ErrorCode
from protocol.messages import Command, Disconnect, EmptyResult, Error, Ping, Publish, PublishResult, Reply
from realtime.client import ReplyError
from realtime.connection import CommandBudget, ReceiveBudget
from realtime.namespaces import Namespace

from .helpers import HubFactory, closed_code, fast, namespaces, result, server_roundtrip, user
from .test_metrics import SCRAPER, scrape, value
from .wsclient import RawClient


def test_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = CommandBudget(rate=10.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(100.0) == pytest.approx(0.1)  # a token every tenth of a second
    assert bucket.take(100.05) == pytest.approx(0.15)  # the token at 100.1 is the first refused one's
    assert bucket.take(100.11) == 0.0  # refused commands cost no token
    assert bucket.take(1000.0) == 0.0 and bucket.tokens == 2.0  # refilled to the burst, no more
    assert not bucket.flooding()


def test_each_refused_command_is_told_when_a_token_is_there_for_it() -> None:
    """The k-th command refused in a burst waits for the k-th token, not for the next one."""
    bucket = CommandBudget(rate=10.0, burst=2, now=0.0)
    assert [bucket.take(0.0) for _ in range(5)] == pytest.approx([0.0, 0.0, 0.1, 0.2, 0.3])
    assert [bucket.take(t + 1e-9) for t in (0.1, 0.2, 0.3)] == [0.0, 0.0, 0.0]  # each back when told: all run
    assert bucket.take(0.3) == pytest.approx(0.1)  # the line is empty again: the next token
    assert bucket.take(10.0) == 0.0 and bucket.take(10.0) == 0.0
    assert bucket.take(10.0) == pytest.approx(0.1)  # an old line does not delay a later refusal


def test_refusals_faster_than_ten_times_the_rate_are_a_flood() -> None:
    bucket = CommandBudget(rate=1.0, burst=2, now=0.0)
    assert [bucket.take(0.0) for _ in range(4)] == [0.0, 0.0, 1.0, 2.0]
    assert not bucket.flooding()  # two refusals: at most a burst of them
    assert bucket.take(0.0) == 3.0 and bucket.flooding()
    bucket = CommandBudget(rate=1.0, burst=2, now=0.0)
    bucket.take(0.0), bucket.take(0.0)
    for i in range(1, 100):  # refused ten times a second, on and on: strikes drain as fast as they come
        bucket.take(i / 10)
        assert not bucket.flooding()


@pytest.mark.parametrize("codec", [MsgpackCodec(), JsonCodec()], ids=["msgpack", "json"])
def test_retry_after_on_the_wire(codec: MsgpackCodec | JsonCodec) -> None:
    refused = Reply(3, error=Error(int(ErrorCode.TOO_MANY_REQUESTS), "too many commands", retry_after=250))
    plain = Reply(4, error=Error(int(ErrorCode.BAD_REQUEST), "bad"))
    assert server_roundtrip(codec, refused, plain) == [refused, plain]
    assert b"retry_after" in codec.encode(refused) and b"retry_after" not in codec.encode(plain)


async def test_over_the_burst_commands_are_refused_with_advice(hub_factory: HubFactory) -> None:
    """The finding: nothing limited how many commands one connection runs; now 110 with retry_after,
    the connection goes on, and another connection is not affected."""
    hub = await hub_factory(command_rate=1.0, command_burst=10)
    async with await user(hub, "alice") as alice, await user(hub, "bob") as bob:  # connect took one token
        pings = [Ping(alice.next_id()) for _ in range(12)]
        await alice.send(*pings)
        replies = [await alice.reply(p.id) for p in pings]
        assert all(r.error is None for r in replies[:9])
        refused = [r.error for r in replies[9:]]
        assert [e.code for e in refused if e is not None] == [ErrorCode.TOO_MANY_REQUESTS] * 3
        advice = [e.retry_after for e in refused if e is not None]
        # a token a second: the first refused waits for the next one, each other for one more
        assert all(1000 * k < ms <= 1000 * (k + 1) for k, ms in enumerate(advice))
        assert result(await bob.command(Ping(0)), EmptyResult) == EmptyResult()
        assert alice.ws.close_code is None


async def test_a_client_that_keeps_sending_while_refused_is_closed(hub_factory: HubFactory) -> None:
    hub = await hub_factory(command_rate=1.0, command_burst=10)
    async with await user(hub, "alice") as alice:
        for _ in range(3):
            await alice.send(*(Ping(alice.next_id()) for _ in range(10)))
        # protocol.md, close codes: the push carries no advice (that came with the 110 replies).
        flood = Disconnect(CloseCode.TOO_MANY_REQUESTS, "too many requests", True)
        assert await alice.disconnect_push() == flood
        assert await closed_code(alice) == CloseCode.TOO_MANY_REQUESTS
        assert CloseCode.TOO_MANY_REQUESTS.reconnect  # 4000-4499: come back later, with backoff


async def test_invalid_commands_count_too(hub_factory: HubFactory) -> None:
    """Every item of a frame costs a token, a command the hub cannot read included."""
    hub = await hub_factory(command_rate=1.0, command_burst=3)
    async with await user(hub, "alice", subprotocol="realtime.v1.json") as alice:
        await alice.ws.send('{"id": 7, "cmd": "nope"}\n{"id": 8, "cmd": "nope"}\n{"id": 9, "cmd": "ping"}', text=True)
        codes = []
        for _ in range(3):
            reply = await alice.recv()
            assert isinstance(reply, Reply) and reply.error is not None
            codes.append(reply.error.code)
        assert codes == [ErrorCode.UNKNOWN_COMMAND, ErrorCode.UNKNOWN_COMMAND, ErrorCode.TOO_MANY_REQUESTS]


async def test_frames_that_do_not_decode_count_too(hub_factory: HubFactory) -> None:
    hub = await hub_factory(command_rate=1.0, command_burst=3)
    async with await user(hub, "alice") as alice:
        for _ in range(3):
            await alice.ws.send(b"\xc1")  # never valid msgpack
        codes = []
        for _ in range(3):
            reply = await alice.recv()
            assert isinstance(reply, Reply) and reply.error is not None and reply.id == 0
            codes.append(reply.error.code)
        assert codes == [ErrorCode.BAD_REQUEST, ErrorCode.BAD_REQUEST, ErrorCode.TOO_MANY_REQUESTS]


async def test_budget_off_with_rate_zero(hub_factory: HubFactory) -> None:
    hub = await hub_factory(command_rate=0, command_burst=1)
    async with await user(hub, "alice") as alice:
        pings = [Ping(alice.next_id()) for _ in range(50)]
        await alice.send(*pings)
        assert all([(await alice.reply(p.id)).error is None for p in pings])


async def test_sdk_resends_after_the_advice(hub_factory: HubFactory) -> None:
    """The SDK's commands refused with 110 are sent again after ``retry_after``: all publishes land."""
    hub = await hub_factory(command_rate=200.0, command_burst=8)
    async with fast(hub.url) as client:
        sent = await asyncio.gather(*(client.publish("news", i) for i in range(12)))
        assert sorted(s.offset for s in sent) == list(range(1, 13))


async def test_sdk_resends_a_burst_of_twice_the_budget(hub_factory: HubFactory) -> None:
    """The SDK follows the advice as protocol.md gives it: a burst of twice ``command_burst`` all lands."""
    hub = await hub_factory(command_rate=100.0, command_burst=20)
    async with fast(hub.url) as client:  # connect took one token
        sent = await asyncio.gather(*(client.publish("news", i) for i in range(39)))
        assert sorted(s.offset for s in sent) == list(range(1, 40))


async def test_sdk_raises_when_the_advice_outlasts_the_timeout(hub_factory: HubFactory) -> None:
    hub = await hub_factory(command_rate=0.01, command_burst=2)
    async with fast(hub.url, command_timeout=1.0) as client:  # connect took one token
        await client.publish("news", 1)
        with pytest.raises(ReplyError) as info:
            await client.publish("news", 2)
        assert info.value.code == ErrorCode.TOO_MANY_REQUESTS and info.value.temporary
        assert info.value.retry_after == pytest.approx(100.0, rel=0.01)
        assert info.value.key is not None  # publish again with it later


async def test_typing_refusal_goes_to_the_app(hub_factory: HubFactory) -> None:
    hub = await hub_factory(command_rate=0.01, command_burst=2)
    async with fast(hub.url) as client:
        await client.ping()
        with pytest.raises(ReplyError) as info:
            await client.typing("news")
        assert info.value.code == ErrorCode.TOO_MANY_REQUESTS


def test_the_byte_bucket_waits_rather_than_refuses() -> None:
    bucket = ReceiveBudget(rate=1000.0, burst=3000, now=0.0)
    assert [bucket.take(1000, 0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(500, 0.0) == pytest.approx(0.5)  # in debt by half a second's worth: wait it out
    assert bucket.take(1000, 0.5) == pytest.approx(1.0)  # the wait paid the debt; this frame is a second's
    assert bucket.take(10, 100.0) == 0.0 and bucket.tokens == 2990.0  # refilled to the burst, no more


async def test_a_client_over_the_byte_budget_is_read_slower_and_loses_nothing(hub_factory: HubFactory) -> None:
    """Big frames are paced by their bytes, not refused: every publish is answered, the waits are
    counted in the metrics, and another client's ping is answered meanwhile."""
    big = Namespace(name="big", subscribe="anyone", publish="clients")
    hub = await hub_factory(
        namespaces=namespaces(big), api_keys=(SCRAPER,), receive_rate=64 * 1024, receive_burst=64 * 1024
    )
    data = msgpack.packb(b"x" * 60_000)
    async with await user(hub, "mallory") as mallory, await user(hub, "alice") as alice:
        ids = [mallory.next_id() for _ in range(4)]
        for i in ids:  # 240 KB: the first fits the burst, each later one waits about a second
            await mallory.send(Publish(i, "big:1", data))
        assert (await alice.command(Ping(0))).error is None  # answered while mallory is paced
        replies = [await mallory.recv() for _ in ids]
    assert [r.id for r in replies] == ids and all(r.error is None for r in replies)  # type: ignore[union-attr]
    assert value(await scrape(hub), "realtime_rate_limited_total", kind="bytes") == 3


async def _resend_refused(client: RawClient, commands: Sequence[Command], *, jitter: bool) -> list[Reply] | Disconnect:
    """Send ``commands`` in one frame, then each refused one again as protocol.md says: after its
    ``retry_after`` plus a random part of as much again (``jitter=False``: at once, ignoring it).

    The replies, in command order, once every command is answered otherwise than 110; or the
    Disconnect push that ended the connection. Bounded: at most 20 refusals per command, each
    wait for a message bounded by the client's timeout.
    """
    rng = random.Random(7)
    by_id = {c.id: c for c in commands}
    answers: dict[int, Reply] = {}
    resends: list[asyncio.Task[None]] = []

    async def again(command: Command, delay: float) -> None:
        await asyncio.sleep(delay)
        await client.send(command)

    await client.send(*commands)
    try:
        for _ in range(20 * len(commands)):
            if len(answers) == len(commands):
                break
            message = await client.recv()
            if isinstance(message, Disconnect):
                return message
            if not isinstance(message, Reply):
                continue
            error = message.error
            if error is not None and error.code == ErrorCode.TOO_MANY_REQUESTS:
                assert error.retry_after is not None
                delay = error.retry_after / 1000 * (1 + rng.random()) if jitter else 0.0
                resends.append(asyncio.ensure_future(again(by_id[message.id], delay)))
            else:
                answers[message.id] = message
    finally:
        for task in resends:
            task.cancel()
    return [answers[c.id] for c in commands]


async def test_a_burst_resent_as_advised_is_all_answered(hub_factory: HubFactory) -> None:
    """protocol.md, the command budget: a client that sends each refused command again after its
    ``retry_after`` plus a random part of as much again never gets near the flood limit, even after
    the largest burst the flood rule lets through at once: twice ``command_burst`` (the connect took
    one token). The k-th refused one is told to wait for the k-th token to come, not all of them
    for the next one, so they do not all come back together to be refused again."""
    hub = await hub_factory(command_rate=100.0, command_burst=20)
    async with await user(hub, "alice") as alice:
        publishes = [Publish(alice.next_id(), "news", msgpack.packb(i)) for i in range(39)]
        replies = await _resend_refused(alice, publishes, jitter=True)
        assert not isinstance(replies, Disconnect), replies
        offsets = [result(r, PublishResult).offset for r in replies]
        assert sorted(offsets) == list(range(1, 40))


async def test_a_burst_resent_at_once_is_a_flood(hub_factory: HubFactory) -> None:
    """The same burst, each refused command sent again as soon as it is refused: 4010."""
    hub = await hub_factory(command_rate=100.0, command_burst=20)
    async with await user(hub, "alice") as alice:
        publishes = [Publish(alice.next_id(), "news", msgpack.packb(i)) for i in range(39)]
        flood = await _resend_refused(alice, publishes, jitter=False)
        assert flood == Disconnect(CloseCode.TOO_MANY_REQUESTS, "too many requests", True)
