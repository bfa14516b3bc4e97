"""Sockets before they authenticate: handshake and idle timeouts, the pending caps, the drain, the backlog.

Real sockets against a hub on port 0 (``asyncio.open_connection``), with the time settings scaled small.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import signal
import subprocess
import time

import pytest
from aiohttp import web

from protocol.codes import CloseCode
from protocol.messages import Connect, Disconnect
from realtime.connection import HubWebSocket
from realtime.server import ADMISSION, WS_PATH

from .helpers import MS, WAIT, HubFactory, RunningHub, until
from .wsclient import RawClient, RawSocket

HOST = "127.0.0.1"
UPGRADE = (
    f"GET {WS_PATH} HTTP/1.1\r\nHost: localhost\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    "Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n"
    "Sec-WebSocket-Protocol: realtime.json\r\n\r\n"
).encode()

Stream = tuple[asyncio.StreamReader, asyncio.StreamWriter]


async def open_socket(hub: RunningHub) -> Stream:
    return await asyncio.open_connection(HOST, hub.port)


async def closed_after(reader: asyncio.StreamReader, timeout: float = WAIT) -> float:
    """Seconds until the hub closes the socket (EOF or reset); what it sent before is discarded."""
    start = time.monotonic()
    async with asyncio.timeout(timeout):
        try:
            while await reader.read(65536):
                pass
        except ConnectionResetError:
            pass
    return time.monotonic() - start


async def still_open(reader: asyncio.StreamReader, wait: float) -> bool:
    """Whether the socket is still open (nothing read, no EOF) after ``wait`` seconds."""
    try:
        async with asyncio.timeout(wait):
            await reader.read(1)
    except TimeoutError:
        return True
    return False


async def http_response(reader: asyncio.StreamReader) -> tuple[int, dict[str, str], bytes]:
    """One HTTP/1.1 response with a Content-Length: (status, headers lower-cased, body)."""
    async with asyncio.timeout(WAIT):
        head = await reader.readuntil(b"\r\n\r\n")
        lines = head.decode("latin-1").split("\r\n")
        status = int(lines[0].split()[1])
        headers = {k.strip().lower(): v.strip() for k, v in (line.split(":", 1) for line in lines[1:] if line)}
        body = await reader.readexactly(int(headers.get("content-length", "0")))
    return status, headers, body


async def get(hub: RunningHub, path: str) -> tuple[int, dict[str, object]]:
    reader, writer = await open_socket(hub)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n".encode())
    status, _, body = await http_response(reader)
    writer.close()
    return status, json.loads(body)


def close(*streams: Stream) -> None:
    for _, writer in streams:
        writer.close()


# --- handshake and idle timeouts ----------------------------------------------------


async def test_half_a_request_head_is_closed_after_the_handshake_timeout(hub_factory: HubFactory) -> None:
    hub = await hub_factory(handshake_timeout=200 * MS, http_idle_timeout=60.0)
    reader, writer = await open_socket(hub)
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # and never the blank line
    elapsed = await closed_after(reader)
    assert 150 * MS <= elapsed < 3.0
    assert hub.server.app is not None and hub.server.app[ADMISSION].timed_out == 1
    writer.close()


async def test_a_slowloris_trickling_its_head_is_closed_after_the_handshake_timeout(hub_factory: HubFactory) -> None:
    hub = await hub_factory(handshake_timeout=300 * MS)
    reader, writer = await open_socket(hub)
    start = time.monotonic()
    for byte in b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: yes\r\n":  # bounded: the head is 45 bytes
        if writer.is_closing() or reader.at_eof():
            break
        writer.write(bytes([byte]))
        await asyncio.sleep(20 * MS)
        if time.monotonic() - start > 0.5:
            break
    await closed_after(reader)
    assert 250 * MS <= time.monotonic() - start < 3.0
    writer.close()


async def test_a_silent_socket_is_closed_after_the_handshake_timeout(hub_factory: HubFactory) -> None:
    hub = await hub_factory(handshake_timeout=200 * MS)
    reader, writer = await open_socket(hub)
    assert 150 * MS <= await closed_after(reader) < 3.0
    writer.close()


async def test_an_idle_keep_alive_connection_is_closed_after_the_idle_timeout(hub_factory: HubFactory) -> None:
    hub = await hub_factory(handshake_timeout=100 * MS, http_idle_timeout=500 * MS)
    reader, writer = await open_socket(hub)
    for _ in range(2):  # keep-alive: two requests on one connection
        writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        status, headers, _ = await http_response(reader)
        assert status == 200 and headers.get("connection", "").lower() != "close"
    # Past the handshake timeout but within the idle timeout: still open.
    assert await still_open(reader, 250 * MS)
    elapsed = await closed_after(reader)
    assert elapsed < 3.0
    writer.close()


async def test_a_websocket_open_longer_than_both_timeouts_stays_open(hub_factory: HubFactory) -> None:
    hub = await hub_factory(handshake_timeout=100 * MS, http_idle_timeout=100 * MS)
    async with await RawClient.open(hub.url) as client:
        await asyncio.sleep(500 * MS)
        reply = await client.subscribe("c")
        assert reply.error is None
        await client.publish("c", "still here")
        assert (await client.publication()).channel == "c"


async def test_a_websocket_upgrade_stops_the_handshake_timer(hub_factory: HubFactory) -> None:
    hub = await hub_factory(handshake_timeout=100 * MS, connect_timeout=5.0)
    reader, writer = await open_socket(hub)
    writer.write(UPGRADE)
    async with asyncio.timeout(WAIT):
        head = await reader.readuntil(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 101")
    assert await still_open(reader, 400 * MS)  # upgraded, not connected yet: connect_timeout applies
    writer.close()


# --- the pending caps ----------------------------------------------------------------


async def test_the_per_address_cap_refuses_one_more_and_admits_after_a_close(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_pending_per_address=2, handshake_timeout=10.0)
    assert hub.server.app is not None
    admission = hub.server.app[ADMISSION]
    first, second = await open_socket(hub), await open_socket(hub)
    await until(lambda: admission.pending_from(HOST) == 2, WAIT, "two pending sockets")

    third = await open_socket(hub)
    status, headers, body = await http_response(third[0])  # answered without sending anything
    assert status == 503 and headers["content-type"].startswith("application/json")
    assert json.loads(body) == {"code": 110, "message": "too many unauthenticated connections from this address"}
    assert await closed_after(third[0]) < 1.0
    assert admission.refused == 1 and admission.pending_from(HOST) == 2

    close(first)
    await until(lambda: admission.pending_from(HOST) == 1, WAIT, "one pending socket")
    status, body_map = await get(hub, "/healthz")  # the freed place
    assert status == 200 and body_map["status"] == "ok"
    close(second, third)


async def test_the_per_address_cap_admits_again_after_a_websocket_connects(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_pending_per_address=2, handshake_timeout=10.0, connect_timeout=10.0)
    assert hub.server.app is not None
    admission = hub.server.app[ADMISSION]
    a = await RawClient.open(hub.url, connect_first=False)
    b = await RawClient.open(hub.url, connect_first=False)
    assert admission.pending_from(HOST) == 2
    over = await open_socket(hub)
    assert (await http_response(over[0]))[0] == 503

    assert (await a.command(Connect(0, name="test"))).error is None  # authenticated: no longer pending
    assert admission.pending_from(HOST) == 1
    async with await RawClient.open(hub.url) as c:  # admitted, and connects
        await c.subscribe("c")
        assert admission.pending_from(HOST) == 1
    await until(lambda: admission.pending_from(HOST) == 1, WAIT, "the others settle")
    await a.close()
    await b.close()
    close(over)
    await until(lambda: admission.pending == 0, WAIT, "no pending socket")


async def test_the_node_cap_refuses_one_more(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_pending=2, max_pending_per_address=0)
    assert hub.server.app is not None
    admission = hub.server.app[ADMISSION]
    held = [await open_socket(hub), await open_socket(hub)]
    await until(lambda: admission.pending == 2, WAIT, "two pending sockets")
    reader, writer = await open_socket(hub)
    status, _, body = await http_response(reader)
    assert status == 503
    assert json.loads(body) == {"code": 110, "message": "too many unauthenticated connections on this node"}
    close(*held, (reader, writer))
    await until(lambda: admission.pending == 0, WAIT, "no pending socket")


async def test_zero_turns_the_caps_off(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_pending=0, max_pending_per_address=0)
    assert hub.server.app is not None
    admission = hub.server.app[ADMISSION]
    held = [await open_socket(hub) for _ in range(20)]
    await until(lambda: admission.pending == 20, WAIT, "twenty pending sockets")
    assert admission.refused == 0
    close(*held)


# --- the drain -----------------------------------------------------------------------


async def test_readyz_is_503_during_the_drain_and_upgrades_are_refused(hub_factory: HubFactory) -> None:
    hub = await hub_factory()
    clients = [await RawClient.open(hub.url) for _ in range(4)]
    assert (await get(hub, "/readyz"))[0] == 200
    stopping = asyncio.create_task(hub.stop(drain_window=1.5))  # 4 clients: ~1.1 s of drain
    await until(lambda: hub.server.hub.closing, WAIT, "the drain to start")

    status, body = await get(hub, "/readyz")  # answered: the listener is still open
    assert status == 503 and body["status"] == "not ready" and body["reason"] == "shutting down"
    assert (await get(hub, "/healthz"))[0] == 200
    reader, writer = await open_socket(hub)
    writer.write(UPGRADE)
    status, _, raw = await http_response(reader)
    assert status == 503 and json.loads(raw) == {"code": 108, "message": "shutting down"}
    writer.close()
    assert not stopping.done()

    await stopping
    with pytest.raises(OSError):  # the site stops at the end of the drain
        await open_socket(hub)
    for c in clients:
        await c.close()


async def test_a_socket_upgraded_as_the_drain_begins_gets_the_shutdown_advice(
    hub_factory: HubFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The drain starting between an upgrade's checks and its 101: a window of one await, which a
    # test cannot hit from outside on purpose, so the upgrade itself starts the stop there.
    hub = await hub_factory(ping_interval=1.0)  # the stop waits up to 0.5 s for the closing handshake
    stopping: list[asyncio.Task[None]] = []
    prepare = HubWebSocket.prepare

    async def prepare_as_the_drain_begins(self: HubWebSocket, request: web.BaseRequest) -> object:
        stopping.append(asyncio.create_task(hub.stop(drain_window=0.5)))
        await until(lambda: hub.server.hub.closing, WAIT, "the drain to start")
        return await prepare(self, request)

    monkeypatch.setattr(HubWebSocket, "prepare", prepare_as_the_drain_begins)
    peer = await RawSocket.open(hub.port)
    try:
        assert await peer.messages() == [Disconnect(CloseCode.SHUTDOWN, "shutdown", True)]
        assert await peer.close_frame() == CloseCode.SHUTDOWN
        await stopping[0]
        assert hub.server.hub.disconnects[CloseCode.SHUTDOWN] == 1
    finally:
        peer.close()


# --- the backlog ---------------------------------------------------------------------


def _listen_queue(port: int) -> int | None:
    """The listening socket's accept queue limit (ss's Send-Q for a LISTEN socket), None without ss."""
    ss = shutil.which("ss")
    if ss is None:
        return None
    out = subprocess.run([ss, "-ltnH", f"sport = :{port}"], capture_output=True, text=True, check=True).stdout
    for line in out.splitlines():
        fields = line.split()
        if fields and fields[0] == "LISTEN":
            return int(fields[2])
    return None


def _somaxconn() -> int:
    try:
        with open("/proc/sys/net/core/somaxconn") as f:
            return int(f.read())
    except OSError:
        return 4096


@pytest.mark.parametrize("backlog", [77, 2048])
async def test_the_backlog_reaches_the_listening_socket(hub_factory: HubFactory, backlog: int) -> None:
    hub = await hub_factory(backlog=backlog)
    assert hub.server._site is not None and hub.server._site._backlog == backlog
    queue = _listen_queue(hub.port)
    if queue is None:
        pytest.skip("ss is not available: only checked that the backlog is passed to the site")
    assert queue == min(backlog, _somaxconn())


def test_the_default_backlog_is_sized_for_reconnect_storms() -> None:
    from realtime.config import Settings

    assert Settings().backlog == 2048 > 128


# --- `realtime serve` as a process (uvloop where installed) ------------------------


async def test_serve_process_times_out_a_silent_socket_and_answers_readyz_while_draining(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from .helpers import start_serve
    from .test_serve_process import QUICKSTART

    monkeypatch.setenv("REALTIME_HANDSHAKE_TIMEOUT", "0.3")
    monkeypatch.setenv("REALTIME_BACKLOG", "99")
    proc, port = await start_serve("--config", str(QUICKSTART), "--drain-window", "2")
    try:
        reader, writer = await asyncio.open_connection(HOST, port)
        assert 250 * MS <= await closed_after(reader) < 3.0  # silent: closed by the handshake timeout
        writer.close()
        queue = _listen_queue(port)
        assert queue is None or queue == min(99, _somaxconn())

        url = f"ws://{HOST}:{port}{WS_PATH}"
        clients = [await RawClient.open(url) for _ in range(4)]
        await asyncio.sleep(500 * MS)  # past the handshake timeout: connected WebSockets stay
        await clients[0].subscribe("c")
        proc.send_signal(signal.SIGTERM)
        await clients[0].disconnect_push()  # the drain began: the first client is told to go

        reader, writer = await asyncio.open_connection(HOST, port)  # not refused
        writer.write(b"GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, _, body = await http_response(reader)
        assert status == 503 and json.loads(body)["reason"] == "shutting down"
        writer.close()
        async with asyncio.timeout(10):
            assert await proc.wait() == 0
        for c in clients:
            await c.close()
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


async def test_serve_process_refuses_one_more_pending_socket_under_uvloop(monkeypatch: pytest.MonkeyPatch) -> None:
    """``realtime serve`` runs uvloop, whose transports are not ``asyncio.WriteTransport``s:
    the over-cap socket still gets its 503, and nothing is logged at ERROR."""
    from .helpers import start_serve
    from .test_serve_process import QUICKSTART

    monkeypatch.setenv("REALTIME_MAX_PENDING_PER_ADDRESS", "2")
    proc, port = await start_serve("--config", str(QUICKSTART))
    try:
        held = [await asyncio.open_connection(HOST, port) for _ in range(2)]
        await asyncio.sleep(200 * MS)  # both accepted and counted (no event to await across processes)
        reader, writer = await asyncio.open_connection(HOST, port)
        status, _, body = await http_response(reader)
        assert status == 503 and json.loads(body)["code"] == 110
        writer.close()
        for _, w in held:
            w.close()
    finally:
        proc.send_signal(signal.SIGTERM)
        async with asyncio.timeout(10):
            await proc.wait()
    assert proc.stderr is not None
    log = (await proc.stderr.read()).decode()
    assert " ERROR " not in log and "Traceback" not in log, log


# --- keep-alive HTTP sockets and IPv6 ------------------------------------------------


async def test_a_keep_alive_socket_stops_counting_as_pending_after_its_first_request(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_pending_per_address=1, handshake_timeout=10.0, http_idle_timeout=60.0)
    assert hub.server.app is not None
    admission = hub.server.app[ADMISSION]
    reader, writer = await open_socket(hub)
    await until(lambda: admission.pending_from(HOST) == 1, WAIT, "one pending socket")
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")  # keep-alive
    status, headers, _ = await http_response(reader)
    assert status == 200 and headers.get("connection", "").lower() != "close"
    await until(lambda: admission.pending_from(HOST) == 0, WAIT, "the answered socket to leave the count")

    # Its place is free while it stays open: a second socket is admitted, and the first still works.
    assert (await get(hub, "/healthz"))[0] == 200
    writer.write(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    assert (await http_response(reader))[0] == 200
    assert admission.refused == 0
    writer.close()


async def test_a_websocket_stays_pending_until_its_connect_succeeds(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_pending_per_address=5, handshake_timeout=10.0, connect_timeout=10.0)
    assert hub.server.app is not None
    admission = hub.server.app[ADMISSION]
    client = await RawClient.open(hub.url, connect_first=False)  # upgraded: a request was answered (101)
    assert admission.pending_from(HOST) == 1
    assert (await client.command(Connect(0, name="test"))).error is None
    assert admission.pending_from(HOST) == 0
    await client.close()


async def test_ipv6_sockets_count_by_their_64_against_the_pending_cap(hub_factory: HubFactory) -> None:
    hub = await hub_factory(host="::1", max_pending_per_address=1, handshake_timeout=10.0)
    assert hub.server.app is not None
    admission = hub.server.app[ADMISSION]
    held = await asyncio.open_connection("::1", hub.port)
    await until(lambda: admission.pending_from("::1") == 1, WAIT, "one pending socket")
    assert admission.pending_from("::2:3:4") == 1  # another address of the same /64: the same count
    reader, writer = await asyncio.open_connection("::1", hub.port)
    status, headers, _ = await http_response(reader)
    assert status == 503 and headers["retry-after"] == "1"
    close(held, (reader, writer))


async def test_trusted_proxies_are_not_held_to_the_per_address_pending_cap(hub_factory: HubFactory) -> None:
    hub = await hub_factory(max_pending_per_address=1, trusted_proxies=("127.0.0.1",), handshake_timeout=10.0)
    assert hub.server.app is not None
    admission = hub.server.app[ADMISSION]
    held = [await open_socket(hub) for _ in range(3)]
    await until(lambda: admission.pending_from(HOST) == 3, WAIT, "three pending sockets from the proxy")
    assert admission.refused == 0
    close(*held)
