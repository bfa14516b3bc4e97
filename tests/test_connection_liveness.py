"""What a connection's own clock and its frame checks do, seen from real sockets.

The connect deadline (4005), the hub's heartbeat (4003), a slow reader (4002),
the frame size limit (1009) and the mask rule (1002): each is driven by a peer
written by hand (tests/wsclient.py ``RawSocket``), since a WebSocket library
would answer pings, mask its frames and keep reading for us.
"""

from __future__ import annotations

import asyncio
import socket
import time

import msgpack  # type: ignore[import-untyped]
import pytest
from aiohttp._websocket.reader import WebSocketDataQueue
from aiohttp.base_protocol import BaseProtocol
from aiohttp.http import WebSocketError, WebSocketReader
from aiohttp.http_websocket import WSMsgType
from websockets.frames import Frame, Opcode

from protocol import codec_for
from protocol.codec import MSGPACK_SUBPROTOCOL
from protocol.codes import CloseCode
from protocol.messages import Connect, ConnectResult, Disconnect, Ping, Publication, Publish, Subscribe
from realtime.connection import WRITE_BUFFER, Connection
from realtime.frames import ClientFrames

from .helpers import MS, HubFactory, RunningHub, closed_code, until
from .wsclient import OP_BINARY, OP_PING, OP_PONG, RawClient, RawSocket, client_frame


async def connected(hub: RunningHub, port: int, *, rcvbuf: int = 0, limit: int = 2**16) -> tuple[RawSocket, Connection]:
    """A raw peer that has connected, and the hub's side of it."""
    peer = await RawSocket.open(port, rcvbuf=rcvbuf, limit=limit)
    peer.send(Connect(1))
    reply = await peer.reply()
    assert reply.error is None and isinstance(reply.result, ConnectResult), reply
    conn = hub.hub.connections[reply.result.client]
    assert isinstance(conn, Connection)
    return peer, conn


# --- 4005: the connect deadline ------------------------------------------------------


async def test_a_pinging_unauthenticated_socket_is_closed_at_the_connect_deadline(hub_factory: HubFactory) -> None:
    """Pings from the peer and its pongs to the hub's pings do not move the deadline: it counts
    from the upgrade, and the socket gets the Disconnect push, then a 4005 close frame."""
    hub = await hub_factory(connect_timeout=0.5, ping_interval=0.2)  # the hub pings too, and is answered
    started = time.monotonic()
    peer = await RawSocket.open(hub.port)

    async def keep_pinging() -> None:
        while True:
            peer.send_frame(OP_PING, b"still here")
            await asyncio.sleep(20 * MS)  # the peer's pace, not a wait for the hub

    pinger = asyncio.ensure_future(keep_pinging())
    try:
        seen: set[int] = set()
        while True:
            opcode, payload = await peer.frame()
            seen.add(opcode)
            if opcode == OP_PING:
                peer.send_frame(OP_PONG, payload)
            elif opcode == OP_BINARY:
                break
        elapsed = time.monotonic() - started
        assert peer.codec.decode_messages(payload) == [Disconnect(CloseCode.CONNECT_TIMEOUT, "connect timeout", True)]
        assert await peer.close_frame() == CloseCode.CONNECT_TIMEOUT
        assert {OP_PING, OP_PONG} <= seen  # the hub pinged us and answered our pings meanwhile
        assert 0.45 <= elapsed < 0.5 + 0.4, elapsed
    finally:
        pinger.cancel()
        peer.close()
    await until(lambda: hub.hub.disconnects[CloseCode.CONNECT_TIMEOUT] == 1, what="the connection's end")


async def test_a_connect_in_time_stops_the_connect_deadline(hub_factory: HubFactory) -> None:
    hub = await hub_factory(connect_timeout=0.2, ping_interval=0.25)
    peer, _conn = await connected(hub, hub.port)
    try:
        for _ in range(3):  # 0.75 s: well past the connect deadline; pongs answer the hub's pings
            opcode, payload = await peer.frame()
            assert opcode == OP_PING
            peer.send_frame(OP_PONG, payload)
        peer.send(Ping(2))
        assert (await peer.reply()).error is None
    finally:
        peer.close()


async def test_a_handed_over_websocket_has_a_repr(hub: RunningHub) -> None:
    # Its request is let go once upgraded (realtime.server.hand_over); aiohttp's repr reads the
    # method and path, and a log line or debugger formatting the socket raised AttributeError.
    peer, conn = await connected(hub, hub.port)
    try:
        assert repr(conn.ws) == "<HubWebSocket Switching Protocols GET /ws >"
    finally:
        peer.close()


# --- 4003: the heartbeat --------------------------------------------------------------


async def test_a_silent_peer_gets_the_stale_push_and_close_frame(hub_factory: HubFactory) -> None:
    """A peer that never answers a ping is told 4003 within the pong timeout (half an interval),
    so at most about 1.5 intervals after the last thing it sent; then the socket is closed."""
    interval = 0.2
    hub = await hub_factory(ping_interval=interval)
    upgraded = time.monotonic()  # at the latest: the hub's clock starts at the upgrade
    peer, _conn = await connected(hub, hub.port)
    try:
        pings = 0
        while True:
            opcode, payload = await peer.frame()
            if opcode != OP_PING:
                break
            pings += 1  # never answered
        elapsed = time.monotonic() - upgraded
        assert opcode == OP_BINARY
        assert peer.codec.decode_messages(payload) == [Disconnect(CloseCode.STALE, "no pong", True)]
        assert await peer.close_frame() == CloseCode.STALE
        assert pings == 1
        assert interval * 1.5 <= elapsed <= interval * 1.5 + 0.5, elapsed
        await peer.eof()  # the peer never answers the close frame: the hub gives up after its close timeout
    finally:
        peer.close()
    await until(lambda: not hub.hub.connections, what="the connection's end")
    assert hub.hub.disconnects[CloseCode.STALE] == 1


async def test_a_library_client_that_stops_answering_pings_sees_4003(hub_factory: HubFactory) -> None:
    """docs/protocol.md, Keep-alive, as a client library sees it: a WebSocket library whose
    automatic pong is turned off (Node ``ws`` with ``autoPong: false`` does the same) and which
    keeps reading gets the Disconnect push, then the close frame 4003, never a bare 1006."""
    hub = await hub_factory(ping_interval=0.3)
    client = await RawClient.open(hub.url, ping_interval=None)  # the client's own pings off too
    protocol = client.ws.protocol
    send_frame = protocol.send_frame

    def no_pong(frame: Frame) -> None:
        if frame.opcode is not Opcode.PONG:
            send_frame(frame)

    protocol.send_frame = no_pong  # type: ignore[method-assign]
    try:
        assert await client.disconnect_push() == Disconnect(CloseCode.STALE, "no pong", True)
        assert await closed_code(client) == CloseCode.STALE  # from the close frame (1006 has none)
    finally:
        await client.close()
    await until(lambda: hub.hub.disconnects[CloseCode.STALE] == 1, what="the connection's end")


@pytest.mark.parametrize("answer", ["pong", "frame"])
async def test_a_peer_that_answers_pings_stays(hub_factory: HubFactory, answer: str) -> None:
    """Anything the peer sends answers a ping: a pong, or a frame of commands (a client
    that cannot see WebSocket pings, sending the ping command)."""
    hub = await hub_factory(ping_interval=0.3)  # 0.15 s to answer, even on a busy machine
    peer, _conn = await connected(hub, hub.port)
    try:
        ids = iter(range(10, 100))
        for _ in range(3):  # 0.9 s, three pong deadlines
            opcode, payload = await peer.frame()
            if opcode == OP_BINARY:  # the reply to a ping command
                continue
            assert opcode == OP_PING
            if answer == "pong":
                peer.send_frame(OP_PONG, payload)
            else:
                peer.send(Ping(next(ids)))
        peer.send(Ping(1000))
        while True:
            (msg,) = await peer.messages(pong=True)
            if getattr(msg, "id", None) == 1000:
                break
    finally:
        peer.close()
    assert hub.hub.disconnects[CloseCode.STALE] == 0


# --- 4002: a slow reader -----------------------------------------------------------


async def test_a_slow_reader_gets_the_slow_push_and_close_frame_when_it_reads_again(
    hub_factory: HubFactory,
) -> None:
    """The backlog over max_queue_bytes is dropped: when the client reads again it gets at most
    what the transport and the kernel buffers held, then the 4002 push, then the close frame."""
    max_queue = 512 * 1024
    hub = await hub_factory(max_queue_bytes=max_queue)
    # Small socket buffers on both ends, so the backlog shows on the hub quickly.
    slow, conn = await connected(hub, hub.port, rcvbuf=4096, limit=4096)
    conn.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 16384)
    slow.send(Subscribe(2, "firehose"))
    assert (await slow.reply()).error is None
    blob = "x" * 16000
    async with await RawClient.open(hub.url) as pub:
        sent = 0
        while not conn.closed:  # slow has stopped reading
            assert sent < 400, "never closed as slow"
            ids = [pub.next_id() for _ in range(3)]
            await pub.send(*(Publish(i, "firehose", msgpack.packb([sent + k, blob])) for k, i in enumerate(ids)))
            for i in ids:
                assert (await pub.reply(i)).error is None
            sent += 3
    assert conn.close_code == CloseCode.SLOW
    assert sent * len(blob) > max_queue
    # The client reads again: publications, then the push and the close frame right behind them.
    got: list[int] = []
    try:
        while True:
            opcode, payload = await slow.frame()
            assert opcode == OP_BINARY
            messages = slow.codec.decode_messages(payload)
            if messages == [Disconnect(CloseCode.SLOW, "slow client", True)]:
                break
            for msg in messages:
                assert isinstance(msg, Publication)
                got.append(msgpack.unpackb(msg.data)[0])
        before_push = slow.bytes_read - len(payload) - 2
        assert await slow.close_frame() == CloseCode.SLOW
        await slow.eof()
    finally:
        slow.close()
    assert got == list(range(len(got)))  # in order, no gap: what was dropped is the tail
    assert len(got) < sent
    # Only what the hub had handed to the transport (WRITE_BUFFER and the message crossing it)
    # and the kernel buffers came first, not the max_queue_bytes backlog.
    assert before_push < WRITE_BUFFER + 160 * 1024 < max_queue, before_push
    await until(lambda: not hub.hub.connections, what="the connection's end")
    assert hub.hub.disconnects[CloseCode.SLOW] == 1


# --- 1009: max_frame_size is the largest frame accepted -----------------------------


def publish_frame(size: int) -> bytes:
    """A msgpack publish command (id 1) of exactly ``size`` bytes."""
    codec = codec_for(MSGPACK_SUBPROTOCOL)
    for n in range(size, 0, -1):
        frame = codec.encode_command(Publish(1, "c", msgpack.packb("x" * n)))
        if len(frame) == size:
            return frame
    raise AssertionError(f"no publish frame of {size} bytes")


async def test_a_frame_of_exactly_max_frame_size_is_accepted_and_one_more_byte_closes_1009(
    hub_factory: HubFactory,
) -> None:
    hub = await hub_factory(max_frame_size=1024)
    async with await RawClient.open(hub.url) as c:
        await c.send_raw(publish_frame(1024))
        assert (await c.reply(1)).error is None
        await c.send_raw(publish_frame(1025))
        assert await closed_code(c) == 1009


# --- 1002: unmasked client frames ------------------------------------------------------


async def test_an_unmasked_frame_is_closed_1002(hub_factory: HubFactory) -> None:
    hub = await hub_factory()
    peer = await RawSocket.open(hub.port)
    try:
        peer.send(Connect(1), masked=False)
        assert await peer.close_frame() == 1002  # no reply: the frame is not read
        await peer.eof()
    finally:
        peer.close()
    await until(lambda: not hub.hub.connections, what="the connection's end")
    assert hub.hub.disconnects[1002] == 1


async def test_frames_before_an_unmasked_one_run_then_1002(hub_factory: HubFactory) -> None:
    hub = await hub_factory()
    peer, _conn = await connected(hub, hub.port)
    try:
        # One write: a masked ping command, then an unmasked one.
        peer.writer.write(peer.frame_of(Ping(2)) + peer.frame_of(Ping(3), masked=False))
        assert (await peer.reply()).id == 2
        assert await peer.close_frame() == 1002
    finally:
        peer.close()


async def test_an_unmasked_frame_sent_with_the_upgrade_request_is_closed_1002(hub_factory: HubFactory) -> None:
    hub = await hub_factory()
    frame = client_frame(OP_BINARY, codec_for(MSGPACK_SUBPROTOCOL).encode_command(Connect(1)), masked=False)
    peer = await RawSocket.open(hub.port, first=frame)
    try:
        assert await peer.close_frame() == 1002
    finally:
        peer.close()


async def test_an_unmasked_control_frame_is_closed_1002(hub_factory: HubFactory) -> None:
    hub = await hub_factory()
    peer, _conn = await connected(hub, hub.port)
    try:
        peer.send_frame(OP_PING, b"hi", masked=False)
        assert await peer.close_frame() == 1002
    finally:
        peer.close()


# --- the frame guard, byte by byte -------------------------------------------------------


async def test_client_frames_split_at_every_byte_are_read_and_checked() -> None:
    """ClientFrames in front of aiohttp's real parser: frames of every length encoding, fed
    in every split, all arrive; an unmasked one after them fails the queue with 1002."""
    loop = asyncio.get_running_loop()
    payloads = [b"a" * 5, b"b" * 300, b"c" * 70000]
    stream = b"".join(client_frame(OP_BINARY, p) for p in payloads) + client_frame(OP_PING, b"p")
    bad = client_frame(OP_BINARY, b"no mask", masked=False)
    for chunk in (1, 2, 3, 5, 13, 4096, len(stream)):
        queue = WebSocketDataQueue(BaseProtocol(loop), 2**20, loop=loop)
        frames = ClientFrames(WebSocketReader(queue, 2**20, compress=False, decode_text=False), queue, loop.time)
        data = stream + bad
        for i in range(0, len(data), chunk):
            frames.feed_data(data[i : i + chunk])
        got = [await queue.read() for _ in range(4)]
        assert [m.data for m in got[:3]] == payloads, chunk
        assert got[3].type == WSMsgType.PING
        with pytest.raises(WebSocketError) as info:
            await queue.read()
        assert info.value.code == 1002
