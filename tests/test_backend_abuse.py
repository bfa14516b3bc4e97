"""A hostile or broken app backend against the hub's backend client and proxies.

A real aiohttp server on a loopback port answers what each test needs: a large answer sent in
many chunks, a body nested deeper than a decoder's stack, an answer that never comes while its
caller gives up. The hub must read whole answers (up to its bound), turn any undecodable one into
a typed failure, and keep every endpoint's circuit breaker able to close again.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from typing import Any

import msgpack  # type: ignore[import-untyped]  # no stubs
import pytest
from aiohttp import web

from protocol.codes import CloseCode, ErrorCode
from protocol.messages import Connect, ConnectResult, Ping, Rpc, RpcResult
from realtime.backend.delivery import RetryPolicy
from realtime.backend.events import Event, now_ms
from realtime.backend.http import MAX_ANSWER_BYTES, Answer, BackendClient, Failure
from realtime.backend.proxy import MAX_ERROR_MESSAGE
from realtime.backend.push import SignedPost
from realtime.backend.queues import MAX_QUEUED_BYTES, MemoryQueue
from realtime.backend.rules import WebhookRule
from realtime.namespaces import Namespace

from .helpers import HubFactory, closed_code, namespaces, unpack, until, user
from .proxy_backend import BACKEND_SECRET
from .wsclient import RawClient

BIG = {"result": {"data": "x" * 300_000}}  # well under MAX_ANSWER_BYTES, many TCP segments


class Hostile:
    """A backend whose paths misbehave; ``hung`` is set once a ``/hang`` request arrived."""

    def __init__(self) -> None:
        self.port = 0
        self.hung = asyncio.Event()
        self.release = asyncio.Event()
        self.runner: web.AppRunner | None = None
        self.redirected = False
        self.answer: Any = {"result": {"user": "mallory", "data": 1}}  # any other path

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    async def handle(self, request: web.Request) -> web.StreamResponse:
        await request.read()
        path = request.path
        if path == "/chunked":  # a valid answer written in small pieces, each flushed
            body = json.dumps(BIG).encode()
            response = web.StreamResponse(headers={"Content-Type": "application/json"})
            await response.prepare(request)
            for start in range(0, len(body), 16_384):
                await response.write(body[start : start + 16_384])
                await asyncio.sleep(0)
            await response.write_eof()
            return response
        if path == "/deep-json":  # valid JSON, nested past the decoder's recursion limit
            return web.Response(body=b"[" * 200_000 + b"]" * 200_000, content_type="application/json")
        if path == "/deep-msgpack":
            return web.Response(body=b"\x91" * 200_000 + b"\xc0", content_type="application/msgpack")
        if path == "/huge":  # past the bound: never read whole
            return web.Response(body=b" " * (MAX_ANSWER_BYTES + 10) + b"{}", content_type="application/json")
        if path == "/endless":  # 200 at once, then a body that drips for ever (bounded here)
            response = web.StreamResponse(headers={"Content-Type": "text/plain"})
            await response.prepare(request)
            for _ in range(100_000):
                if self.release.is_set():
                    break
                await response.write(b"x" * 1024)
                await asyncio.sleep(0.01)
            return response
        if path == "/disconnect":  # a reason whose 120th byte falls inside a character
            return web.json_response({"disconnect": {"code": 4321, "reason": "a" + "\u00e9" * 99}})
        if path == "/long-error":  # an app error with a message far past what a human reads
            return web.json_response({"error": {"code": 1400, "message": "\u00e9" * 100_000}})
        if path == "/moved":  # elsewhere: where a signed body must not follow
            raise web.HTTPPermanentRedirect(self.url("/elsewhere"))
        if path == "/elsewhere":
            self.redirected = True
        if path == "/hang":
            self.hung.set()
            await self.release.wait()
        if path == "/fail":
            return web.Response(status=500)
        return web.Response(text=json.dumps(self.answer), content_type="application/json")

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{path:.*}", self.handle)
        self.runner = web.AppRunner(app, shutdown_timeout=0.5)
        await self.runner.setup()
        await web.TCPSite(self.runner, "127.0.0.1", 0).start()
        self.port = self.runner.addresses[0][1]

    async def stop(self) -> None:
        self.release.set()
        if self.runner is not None:
            await self.runner.cleanup()


@pytest.fixture
async def hostile() -> AsyncIterator[Hostile]:
    h = Hostile()
    await h.start()
    yield h
    await h.stop()


@pytest.fixture
async def client() -> AsyncIterator[BackendClient]:
    c = BackendClient([BACKEND_SECRET], timeout=2.0, breaker_failures=1, breaker_cooldown=0.0)
    await c.start()
    yield c
    await c.close()


async def test_an_answer_sent_in_pieces_is_read_whole(client: BackendClient, hostile: Hostile) -> None:
    outcome = await client.post(hostile.url("/chunked"), {})
    assert outcome == Answer(BIG)


async def test_an_answer_past_the_bound_is_a_bad_answer(client: BackendClient, hostile: Hostile) -> None:
    outcome = await client.post(hostile.url("/huge"), {})
    assert isinstance(outcome, Failure) and outcome.reason == "bad answer"


@pytest.mark.parametrize("path", ["/deep-json", "/deep-msgpack"])
async def test_a_body_nested_too_deep_is_a_bad_answer(client: BackendClient, hostile: Hostile, path: str) -> None:
    outcome = await client.post(hostile.url(path), {})
    assert isinstance(outcome, Failure) and outcome.reason == "bad answer"


async def test_a_trial_call_given_up_does_not_hold_the_breaker_open(client: BackendClient, hostile: Hostile) -> None:
    # One failure opens the breaker (cool-down 0): the next call is its half-open trial.
    assert isinstance(await client.post(hostile.url("/fail"), {}), Failure)
    assert client.breaker(hostile.url("/fail")).state == "open"
    url = hostile.url("/hang")
    assert isinstance(await client.post(url, {}, timeout=0.01), Failure)  # /hang's breaker opens too
    hostile.hung.clear()
    trial = asyncio.ensure_future(client.post(url, {}))
    async with asyncio.timeout(5):
        await hostile.hung.wait()
    trial.cancel()  # its caller went away (the connection closed, the hub stops)
    with pytest.raises(asyncio.CancelledError):
        await trial
    hostile.release.set()
    outcome = await client.post(url, {})
    assert isinstance(outcome, Answer), outcome  # another trial went through, and closed the breaker


async def test_a_deeply_nested_rpc_answer_is_a_temporary_error(hub_factory: HubFactory, hostile: Hostile) -> None:
    hub = await hub_factory(
        backend_secrets=(BACKEND_SECRET,),
        backend_timeout=2.0,
        proxy_connect=hostile.url("/connect"),
        proxy_rpc=hostile.url("/deep-json"),
    )
    async with await RawClient.open(hub.url, connect_first=False) as c:
        assert isinstance((await c.command(Connect(0))).result, ConnectResult)
        error = (await c.command(Rpc(0, "x", msgpack.packb(None)))).error
        assert error is not None and error.code == ErrorCode.NOT_AVAILABLE, error
        assert (await c.command(Ping(0))).error is None


async def test_a_large_rpc_answer_in_pieces_reaches_the_client(hub_factory: HubFactory, hostile: Hostile) -> None:
    hub = await hub_factory(
        backend_secrets=(BACKEND_SECRET,), proxy_connect=hostile.url("/connect"), proxy_rpc=hostile.url("/chunked")
    )
    async with await RawClient.open(hub.url, connect_first=False) as c:
        assert isinstance((await c.command(Connect(0))).result, ConnectResult)
        reply = await c.command(Rpc(0, "x", msgpack.packb(None)))
        assert isinstance(reply.result, RpcResult), reply
        data: Any = unpack(reply.result.data)
        assert data == BIG["result"]["data"]


async def test_a_webhook_answer_is_its_status_not_its_body(hub_factory: HubFactory, hostile: Hostile) -> None:
    # The body after a 200 is never read: one that never ends (or is huge) neither holds the
    # delivery until its timeout nor fills the hub's memory.
    url = hostile.url("/endless")
    hub = await hub_factory(
        namespaces=namespaces(Namespace(name="chat", kind="chat", subscribe="anyone", publish="clients")),
        webhooks=(WebhookRule(url, ("message.published",), timeout=1.0, backoff_max=0.2),),
        backend_secrets=(BACKEND_SECRET,),
    )
    alice = await user(hub, "alice", "chat:l")
    await alice.publish("chat:l", "hello")
    await until(lambda: hub.hub.metrics.webhook_count(url, "delivered") == 1, what="delivered")
    assert hub.hub.metrics.webhook_count(url, "retried") == 0
    await alice.close()


async def test_a_long_disconnect_reason_is_cut_on_a_character(hub_factory: HubFactory, hostile: Hostile) -> None:
    # A close frame's reason must be UTF-8: cut mid-character, the client fails the connection
    # (1007) instead of seeing the backend's code.
    hub = await hub_factory(backend_secrets=(BACKEND_SECRET,), proxy_connect=hostile.url("/disconnect"))
    c = await RawClient.open(hub.url, connect_first=False)
    await c.send(Connect(c.next_id()))
    assert await closed_code(c) == 4321


@pytest.mark.parametrize("expires", [1e300, 2**70])
async def test_an_expiry_past_any_date_is_a_bad_answer(hub_factory: HubFactory, expires: float) -> None:
    # It once let the connection in, then failed to encode the connect reply (INTERNAL).
    backend = Hostile()
    backend.answer = {"result": {"user": "mallory", "expires": expires}}
    await backend.start()
    try:
        hub = await hub_factory(backend_secrets=(BACKEND_SECRET,), proxy_connect=backend.url("/connect"))
        c = await RawClient.open(hub.url, connect_first=False)
        await c.send(Connect(c.next_id()))
        assert (await c.disconnect_push()).code == CloseCode.OVERLOADED
    finally:
        await backend.stop()


def test_a_memory_queue_is_bounded_in_bytes_too() -> None:
    # Big publications for an endpoint that is down: the count alone (10,000) let it grow to GBs.
    dropped: list[int] = []
    queue = MemoryQueue(10_000, dropped.append, "http://127.0.0.1:1/hooks")
    size = 1024 * 1024
    for n in range(100):
        queue.put(Event(str(n), "message.published", 0, "node", "chat:l", "chat", data={"data": "x"}, size=size))
    assert len(queue) == MAX_QUEUED_BYTES // size
    assert sum(dropped) == 100 - len(queue)


async def test_the_push_hook_follows_no_redirect(hostile: Hostile) -> None:
    policy = RetryPolicy(timeout=2.0, max_attempts=1, retry_for=60.0, backoff_max=0.1)
    post = SignedPost(hostile.url("/moved"), [BACKEND_SECRET.encode()], policy)
    try:
        outcome = await post("0" * 32, b'{"notifications":[]}', since=now_ms(), on_retry=lambda reason: None)
    finally:
        await post.close()
    assert not outcome.delivered
    assert not hostile.redirected


async def test_requests_in_flight_are_bounded_per_url(hostile: Hostile) -> None:
    # Slow calls to one URL (an rpc flood from many connections) take at most max_in_flight of
    # the hub's requests; more fail at once, uncounted by the breaker, and other URLs still answer.
    c = BackendClient([BACKEND_SECRET], timeout=5.0, breaker_failures=1, max_in_flight=2)
    await c.start()
    try:
        slow = [asyncio.ensure_future(c.post(hostile.url("/hang"), {})) for _ in range(2)]
        async with asyncio.timeout(5):
            await hostile.hung.wait()
        busy = await c.post(hostile.url("/hang"), {})
        assert isinstance(busy, Failure) and busy.reason == "busy"
        assert c.breaker(hostile.url("/hang")).state == "closed"
        assert isinstance(await c.post(hostile.url("/connect"), {}), Answer)
        hostile.release.set()
        assert all(isinstance(outcome, Answer) for outcome in await asyncio.gather(*slow))
        assert isinstance(await c.post(hostile.url("/hang"), {}), Answer)
    finally:
        await c.close()


async def test_a_long_app_error_message_is_cut(hub_factory: HubFactory, hostile: Hostile) -> None:
    hub = await hub_factory(
        backend_secrets=(BACKEND_SECRET,), proxy_connect=hostile.url("/connect"), proxy_rpc=hostile.url("/long-error")
    )
    async with await RawClient.open(hub.url, connect_first=False) as c:
        assert isinstance((await c.command(Connect(0))).result, ConnectResult)
        error = (await c.command(Rpc(0, "x", msgpack.packb(None)))).error
        assert error is not None and error.code == 1400, error
        assert error.message == "\u00e9" * MAX_ERROR_MESSAGE
