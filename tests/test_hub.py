"""End to end over real sockets: one in-process hub, real WebSocket clients."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import aiohttp
import msgpack  # type: ignore[import-untyped]  # no stubs
import pytest
from websockets.exceptions import ConnectionClosed, InvalidStatus

from handlers.chat import Chat
from handlers.live import Live
from protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from protocol.codes import CloseCode, ErrorCode
from protocol.errors import CommandError
from protocol.messages import (
    Connect,
    ConnectResult,
    Disconnect,
    Ping,
    Publication,
    Publish,
    PublishResult,
    Refresh,
    StreamPosition,
    Subscribe,
    SubscribeResult,
    Typing,
    Unsubscribe,
)
from realtime.config import Settings, load_settings
from realtime.engines.memory import MemoryEngine
from realtime.feature import EventHook, Feature, PublishHook
from realtime.hub import Hub
from realtime.namespaces import Namespace

from .helpers import HubFactory, RunningHub, closed_code, make_token
from .wsclient import RawClient, value


async def test_connect_result(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url, connect_first=False) as c:
        reply = await c.command(Connect(0, name="test", version="1"))
        assert isinstance(reply.result, ConnectResult)
        assert reply.result.client
        assert reply.result.ping == hub.server.settings.ping_interval
        assert c.ws.subprotocol is None  # no subprotocol offered: msgpack
        assert c.codec.name == MSGPACK_SUBPROTOCOL
        # A second connect is refused, the connection goes on.
        again = await c.command(Connect(0))
        assert again.error is not None and again.error.code == ErrorCode.ALREADY_CONNECTED
        assert (await c.command(Ping(0))).error is None


async def test_subscribers_receive_in_order(hub: RunningHub) -> None:
    subs = [await RawClient.open(hub.url) for _ in range(3)]
    pub = await RawClient.open(hub.url)
    try:
        for s in subs:
            reply = await s.subscribe("news")
            assert isinstance(reply.result, SubscribeResult)
            assert reply.result.offset == 0
        offsets = []
        for i in range(20):
            r = (await pub.publish("news", {"n": i})).result
            assert isinstance(r, PublishResult)
            offsets.append(r.offset)
        assert offsets == list(range(1, 21))
        for s in subs:
            got = [await s.publication() for _ in range(20)]
            assert [value(p) for p in got] == [{"n": i} for i in range(20)]
            assert [p.offset for p in got] == offsets
            assert len({p.epoch for p in got}) == 1
            assert all(p.channel == "news" for p in got)
            assert got[0].info is not None and got[0].info.client
    finally:
        for c in [*subs, pub]:
            await c.close()


async def test_unsubscribe_stops_delivery(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as a, await RawClient.open(hub.url) as b:
        await a.subscribe("x")
        await a.subscribe("y")
        await b.publish("x", 1)
        assert value(await a.publication()) == 1
        assert (await a.command(Unsubscribe(0, "x"))).error is None
        await b.publish("x", 2)
        await b.publish("y", 3)
        # The next thing `a` sees is the publication on y: nothing more came on x.
        p = await a.publication()
        assert (p.channel, value(p)) == ("y", 3)
        err = (await a.command(Unsubscribe(0, "x"))).error
        assert err is not None and err.code == ErrorCode.NOT_SUBSCRIBED


async def test_json_and_msgpack_clients_share_a_channel(hub: RunningHub) -> None:
    js = await RawClient.open(hub.url, subprotocol=JSON_SUBPROTOCOL)
    mp = await RawClient.open(hub.url, subprotocol=MSGPACK_SUBPROTOCOL)
    try:
        assert js.ws.subprotocol == JSON_SUBPROTOCOL
        await js.subscribe("room")
        await mp.subscribe("room")
        payload = {"text": "héllo", "n": [1, 2.5, None, True]}
        await js.publish("room", payload)
        await mp.publish("room", payload)
        for client in (js, mp):
            a, b = await client.publication(), await client.publication()
            assert value(a) == value(b) == payload
            assert (a.offset, b.offset) == (1, 2)
    finally:
        await js.close()
        await mp.close()


async def test_bad_frames_get_error_replies_and_connections_survive(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as bad, await RawClient.open(hub.url) as good:
        await good.subscribe("c")
        garbage = [b"\xc1", b"\x81\xa2id", msgpack.packb([1, 2]), msgpack.packb({"id": 1}) + b"\xff\xff"]
        for frame in garbage:
            await bad.send_raw(frame)
            reply = await bad.reply(0)
            assert reply.error is not None and reply.error.code == ErrorCode.BAD_REQUEST
        unknown = await bad.command(Ping(0))  # still usable
        assert unknown.error is None
        await bad.send_raw(msgpack.packb({"id": 77, "cmd": "fly"}))
        err = (await bad.reply(77)).error
        assert err is not None and err.code == ErrorCode.UNKNOWN_COMMAND
        await bad.publish("c", "after garbage")
        assert value(await good.publication()) == "after garbage"


async def test_json_garbage_and_mixed_frame(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url, subprotocol=JSON_SUBPROTOCOL) as c:
        await c.send_raw(b'{"id": 1, "cmd": "ping"')
        assert (await c.reply(0)).error is not None
        await c.send_raw(b'{"id":5,"cmd":"subscribe","channel":7}\n{"id":6,"cmd":"ping"}')
        first = await c.recv()
        second = await c.recv()
        assert first.id == 5 and first.error is not None  # type: ignore[union-attr]
        assert first.error.code == ErrorCode.BAD_REQUEST  # type: ignore[union-attr]
        assert second.id == 6 and second.error is None  # type: ignore[union-attr]


async def test_batched_commands_and_coalesced_replies(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as sub, await RawClient.open(hub.url) as pub:
        await sub.subscribe("burst")
        ids = [pub.next_id() for _ in range(50)]
        await pub.send(*(Publish(i, "burst", msgpack.packb(i)) for i in ids))
        for i in ids:
            assert (await pub.reply(i)).error is None
        before = sub.frames
        got = [value(await sub.publication()) for _ in range(50)]
        assert got == ids
        # Fifty publications in one loop turn leave in far fewer frames than fifty.
        assert sub.frames - before < 50


async def test_command_before_connect_closes(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url, connect_first=False) as c:
        await c.send(Subscribe(1, "x"))
        push = await c.disconnect_push()
        assert push == Disconnect(CloseCode.BAD_REQUEST, "connect first", False)
        assert await closed_code(c) == CloseCode.BAD_REQUEST


async def test_connect_timeout(hub_factory: HubFactory) -> None:
    hub = await hub_factory(connect_timeout=0.1)
    async with await RawClient.open(hub.url, connect_first=False) as c:
        push = await c.disconnect_push()
        assert push.code == CloseCode.CONNECT_TIMEOUT and push.reconnect
        assert await closed_code(c) == CloseCode.CONNECT_TIMEOUT


async def test_connect_timeout_runs_until_a_connect_succeeds(hub_factory: HubFactory) -> None:
    """A refused connect does not leave an unauthenticated socket open for good."""
    hub = await hub_factory(connect_timeout=0.3, allow_anonymous=False)
    async with await RawClient.open(hub.url, connect_first=False) as c:
        reply = await c.command(Connect(0, token=make_token("alice", ttl=-10)))
        assert reply.error is not None and reply.error.code == ErrorCode.TOKEN_EXPIRED
        assert (await c.disconnect_push()).code == CloseCode.CONNECT_TIMEOUT
        assert await closed_code(c) == CloseCode.CONNECT_TIMEOUT


async def test_a_close_that_overflows_the_queue_sends_one_disconnect(hub_factory: HubFactory) -> None:
    """Closing flushes what is queued; when that overflows the queue the client is
    told SLOW once, and the close code is the same."""
    hub = await hub_factory(max_queue_bytes=2000)
    async with await RawClient.open(hub.url, token=make_token("alice")) as c:
        await c.subscribe("c")
        data = msgpack.packb(b"x" * 500)
        # Six publications (echoed to c) then a refresh whose bad token closes the connection.
        await c.send(*[Publish(c.next_id(), "c", data) for _ in range(6)], Refresh(c.next_id(), token="bad"))
        pushes: list[Disconnect] = []
        with pytest.raises(ConnectionClosed) as info:
            while True:
                msg = await c.recv()
                if isinstance(msg, Disconnect):
                    pushes.append(msg)
        assert info.value.rcvd is not None
        assert [p.code for p in pushes] == [CloseCode.SLOW] == [info.value.rcvd.code]
        async with asyncio.timeout(5):
            while hub.hub.connections:
                await asyncio.sleep(0.01)
        assert hub.hub.disconnects[CloseCode.SLOW] == 1
        assert hub.hub.disconnects[CloseCode.UNAUTHORIZED] == 0


async def test_oversize_frame_closes_with_1009(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_frame_size=1024)
    async with await RawClient.open(hub.url) as big, await RawClient.open(hub.url) as other:
        await big.send(Publish(1, "c", msgpack.packb("x" * 2000)))
        assert await closed_code(big) == 1009
        assert (await other.command(Ping(0))).error is None


async def test_subscription_limit(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_subscriptions=2)
    async with await RawClient.open(hub.url) as c:
        await c.subscribe("a")
        await c.subscribe("b")
        err = (await c.command(Subscribe(0, "c"))).error
        assert err is not None and err.code == ErrorCode.LIMIT_EXCEEDED
        dup = (await c.command(Subscribe(0, "a"))).error
        assert dup is not None and dup.code == ErrorCode.ALREADY_SUBSCRIBED


async def test_origin_allow_list(hub_factory: HubFactory) -> None:
    hub = await hub_factory(allowed_origins=("https://*.example.com",))
    async with await RawClient.open(hub.url, origin="https://app.example.com"):
        pass
    async with await RawClient.open(hub.url):  # native apps send no Origin
        pass
    with pytest.raises(InvalidStatus) as info:
        await RawClient.open(hub.url, origin="https://evil.test")
    assert info.value.response.status_code == 403


async def origin_status(hub: RunningHub, origin: str | None) -> int:
    """101 when the upgrade with this Origin is accepted, else the HTTP status of the refusal."""
    try:
        client = await RawClient.open(hub.url, origin=origin, connect_first=False)
    except InvalidStatus as exc:
        return exc.response.status_code
    await client.close()
    return 101


@pytest.mark.parametrize(
    ("allowed", "origin", "status"),
    [
        # No list: only pages the hub serves itself (the Origin names the Host).
        ((), None, 101),
        ((), "http://127.0.0.1:{port}", 101),
        ((), "http://127.0.0.1:5173", 403),
        ((), "http://localhost:{port}", 403),  # another origin, though the same machine
        # A port wildcard: any port, or none; the host and scheme must match.
        (("http://localhost:*",), "http://localhost:5173", 101),
        (("http://localhost:*",), "http://localhost", 101),
        (("http://localhost:*",), "https://localhost:5173", 403),
        (("http://localhost:*",), "http://localhost.evil.example:5173", 403),
        (("http://localhost:*",), "http://evil.example", 403),
        (("http://[::1]:*",), "http://[::1]:3000", 101),
        # A host wildcard: names under the domain, on the default port only (no port in the entry).
        (("https://*.example.com",), "https://app.example.com", 101),
        (("https://*.example.com",), "https://a.b.example.com", 101),
        (("https://*.example.com",), "https://example.com", 403),
        (("https://*.example.com",), "https://app.example.com:8443", 403),
        (("https://*.example.com",), "https://evil.example.com.attacker.test", 403),
        (("https://app.example.com:8443",), "https://app.example.com:8443", 101),
        (("https://app.example.com",), "null", 403),  # sandboxed frames, file:// pages
        (("*",), "null", 101),
    ],
)
async def test_the_origin_rule(
    hub_factory: HubFactory, allowed: tuple[str, ...], origin: str | None, status: int
) -> None:
    """docs/protocol.md, Connecting: what each Origin gets (a browser sees a refusal as close 1006)."""
    hub = await hub_factory(allowed_origins=allowed)
    assert await origin_status(hub, origin and origin.format(port=hub.port)) == status


async def test_quickstart_allows_local_dev_servers(hub_factory: HubFactory) -> None:
    """A page of a JS dev server on another port connects to the quickstart hub; other sites do not."""
    quick = load_settings(env={}, config_file=Path(__file__).parent.parent / "quickstart.toml")
    hub = await hub_factory(allowed_origins=quick.allowed_origins)
    for page in ("http://localhost:5173", "http://127.0.0.1:3000", "http://[::1]:8080", "http://localhost"):
        assert await origin_status(hub, page) == 101, page
    for page in ("https://evil.example", "http://192.168.1.20:5173", "http://localhost.evil.example"):
        assert await origin_status(hub, page) == 403, page


async def test_slow_client_is_disconnected_and_others_get_everything(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_queue_bytes=256 * 1024)
    slow = await RawClient.open(hub.url, max_queue=1)
    fast = await RawClient.open(hub.url)
    pub = await RawClient.open(hub.url)
    try:
        await slow.subscribe("firehose")
        await fast.subscribe("firehose")
        # Small kernel buffers on both ends, so the backlog shows on the hub quickly.
        sock = slow.ws.transport.get_extra_info("socket")
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        slow_conn = next(iter(hub.hub.connections.values()))  # the first to connect
        slow_conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
        slow.ws.transport.pause_reading()  # the client stops reading
        blob = "x" * 16000
        n = 200
        for start in range(0, n, 3):  # three 16 kB publishes per frame: under the frame limit
            ids = [pub.next_id() for _ in range(min(3, n - start))]
            await pub.send(*(Publish(i, "firehose", msgpack.packb([start + k, blob])) for k, i in enumerate(ids)))
            for i in ids:
                assert (await pub.reply(i)).error is None
        got = [value(await fast.publication())[0] for _ in range(n)]
        assert got == list(range(n))
        async with asyncio.timeout(5):
            while hub.hub.disconnects[CloseCode.SLOW] != 1:
                await asyncio.sleep(0.01)
        assert len(hub.hub.connections) == 2
    finally:
        slow.ws.transport.abort()
        await fast.close()
        await pub.close()


async def test_silent_peer_is_dropped(hub_factory: HubFactory) -> None:
    hub = await hub_factory(ping_interval=0.2)
    # A raw TCP peer that completes the handshake, connects, then never answers pings.
    reader, writer = await asyncio.open_connection("127.0.0.1", hub.port)
    writer.write(
        b"GET /ws HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        b"Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    await reader.readuntil(b"\r\n\r\n")
    payload = msgpack.packb({"id": 1, "cmd": "connect"})
    mask = b"\x00\x00\x00\x00"
    writer.write(bytes([0x82, 0x80 | len(payload)]) + mask + payload)
    assert len(hub.hub.connections) <= 1
    async with asyncio.timeout(2):  # dropped within about 1.5 ping intervals
        while await reader.read(65536):
            pass  # pings arrive and are ignored; EOF comes when the hub drops us
    writer.close()
    async with asyncio.timeout(2):
        while hub.hub.connections:
            await asyncio.sleep(0.01)


async def test_graceful_shutdown_sends_reconnect_advice(hub: RunningHub) -> None:
    clients = [await RawClient.open(hub.url) for _ in range(5)]
    for c in clients:
        await c.subscribe("c")
    stopping = asyncio.ensure_future(hub.stop(drain_window=0.2))
    for c in clients:
        push = await c.disconnect_push()
        assert push == Disconnect(CloseCode.SHUTDOWN, "shutdown", True)
        assert await closed_code(c) == CloseCode.SHUTDOWN
    await stopping


async def test_recovery_after_reconnect(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as pub:
        sub = await RawClient.open(hub.url)
        await sub.subscribe("feed")
        await pub.publish("feed", "a")
        seen = await sub.publication()
        await sub.close()
        for v in ("b", "c", "d"):
            await pub.publish("feed", v)
        async with await RawClient.open(hub.url) as back:
            reply = await back.subscribe("feed", since=StreamPosition(seen.offset, seen.epoch))
            r = reply.result
            assert isinstance(r, SubscribeResult)
            assert r.recovered and r.recoverable
            assert [value(p) for p in r.publications] == ["b", "c", "d"]
            assert [p.offset for p in r.publications] == [2, 3, 4]
            await pub.publish("feed", "e")
            live = await back.publication()
            assert (value(live), live.offset) == ("e", 5)


async def test_recovery_refused_when_history_trimmed(hub_factory: HubFactory) -> None:
    hub = await hub_factory(history_size=2)
    async with await RawClient.open(hub.url) as pub, await RawClient.open(hub.url) as c:
        r0 = (await pub.publish("feed", 0)).result
        assert isinstance(r0, PublishResult)
        for i in range(1, 5):
            await pub.publish("feed", i)
        reply = await c.subscribe("feed", since=StreamPosition(r0.offset, r0.epoch))
        r = reply.result
        assert isinstance(r, SubscribeResult)
        assert not r.recovered and r.publications == ()
        assert r.offset == 5
        wrong_epoch = await c.command(Subscribe(0, "other", since=StreamPosition(0, "nope")))
        assert isinstance(wrong_epoch.result, SubscribeResult) and not wrong_epoch.result.recovered


async def test_healthz(hub: RunningHub) -> None:
    async with await RawClient.open(hub.url) as c:
        await c.subscribe("h")
        async with aiohttp.ClientSession() as http, http.get(hub.http_url + "/healthz") as resp:
            assert resp.status == 200
            body = await resp.json()
    assert body["status"] == "ok"
    assert body["connections"] == 1 and body["channels"] == 1


async def test_publication_is_encoded_once_per_codec(hub: RunningHub, monkeypatch: pytest.MonkeyPatch) -> None:
    """Fan-out cost: one encode per codec per publication, whatever the subscriber count."""
    subs = [await RawClient.open(hub.url) for _ in range(5)]
    try:
        for s in subs:
            await s.subscribe("count")
        codec = hub.hub.connections[next(iter(hub.hub.connections))].codec
        calls = []
        original = type(codec).encode

        def counting(self, message):  # type: ignore[no-untyped-def]
            if isinstance(message, Publication):
                calls.append(message.offset)
            return original(self, message)

        monkeypatch.setattr(type(codec), "encode", counting)
        await subs[0].publish("count", "x")
        for s in subs:
            assert value(await s.publication()) == "x"
        assert calls == [1]
    finally:
        for s in subs:
            await s.close()


async def test_connect_timeout_holds_after_a_refused_connect_that_ends_past_the_deadline(
    hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A connect refused after the deadline (a revocation check that fails slowly: Redis
    unreachable, say) still ends in CONNECT_TIMEOUT. (aiohttp reads a 0.0 receive
    timeout as none at all.)"""
    hub = await hub_factory(connect_timeout=0.2, allow_anonymous=False)

    async def slow_failing_revoked(identity: Any) -> bool:
        await asyncio.sleep(0.4)  # past the connect deadline
        raise CommandError(ErrorCode.NOT_AVAILABLE, "redis unreachable")

    monkeypatch.setattr(hub.hub, "revoked", slow_failing_revoked)
    async with await RawClient.open(hub.url, connect_first=False) as c:
        reply = await c.command(Connect(0, token=make_token("alice")))
        assert reply.error is not None and reply.error.code == ErrorCode.NOT_AVAILABLE
        # The connect timeout has long passed: the hub must close the socket now.
        with pytest.raises(ConnectionClosed) as info:
            while True:
                await c.recv(timeout=2.0)
        assert info.value.rcvd is not None and info.value.rcvd.code == CloseCode.CONNECT_TIMEOUT
    assert hub.hub.connections == {} or all(not c.connected for c in hub.hub.connections.values())


class _Claims(Feature):
    """A feature that claims only a publish hook or an event hook (what ``Hub.use`` checks)."""

    def __init__(self, hub: Hub, publish_kind: str = "", event_namespace: str = "") -> None:
        self.hub, self.publish_kind, self.event_namespace = hub, publish_kind, event_namespace

    def publishers(self) -> Mapping[str, PublishHook]:
        return {self.publish_kind: Chat(self.hub).publish} if self.publish_kind else {}

    def event_hooks(self) -> Mapping[str, EventHook]:
        return {self.event_namespace: lambda channel, event: False} if self.event_namespace else {}


def test_a_second_claim_on_a_command_kind_or_namespace_is_refused() -> None:
    """Plugging in two features that both handle a command (or own a namespace kind's publishes,
    or a namespace's events) is a wiring mistake: the second is refused, the first keeps it."""
    settings = Settings(namespaces={"fast": Namespace("fast", kind="live", max_rate=10)})
    hub = Hub(settings, MemoryEngine())
    chat, live = Chat(hub), Live(hub)
    hub.use(chat, live)
    for twin, what in (
        (Chat(hub), "command Typing"),
        (Live(hub), "command StateSet"),
        (_Claims(hub, publish_kind="chat"), "publish hook of namespace kind chat"),
        (_Claims(hub, event_namespace="fast"), "event hook of namespace fast"),
    ):
        with pytest.raises(ValueError, match=what):
            hub.use(twin)
    assert hub.handlers[Typing] == chat.typing and hub.features == [chat, live]
