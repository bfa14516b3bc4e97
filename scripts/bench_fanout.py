"""Fan-out benchmark: one hub process, one publisher, N subscribers on one channel.

Run from the repository root::

    python scripts/bench_fanout.py                         # 1000 subscribers, 10 s per phase
    python scripts/bench_fanout.py --subscribers 100 --duration 3
    python scripts/bench_fanout.py --hub-cmd 'python -m realtime serve --port {port}'
    python scripts/bench_fanout.py --start-redis single     # the Redis engine, on a redis-server of its own
    python scripts/bench_fanout.py --start-redis cluster    # ... on a 3-master Redis Cluster of its own
    python scripts/bench_fanout.py --redis redis://127.0.0.1:6379/0   # on a Redis you run
    python scripts/bench_fanout.py --start-redis single --publish-via redis   # a backend publishes (FCALL)

The script starts the hub as a subprocess on a free 127.0.0.1 port (uvloop, log
level warning, a config allowing anonymous clients on channels without a
colon, with history), connects N subscribers to channel ``bench`` from
``--client-procs`` child processes, and publishes from this process. It stops
everything it started on exit, on Ctrl-C and on SIGTERM.

With ``--redis URL`` (``--redis-cluster`` for a cluster) the hub runs the Redis
engine on that Redis; ``--start-redis single|cluster`` starts a redis-server
(or a 3-master cluster, via ``redis-cli --cluster create``) in a temporary
directory first and removes it afterwards. Publications then go through Redis:
publish script -> pub/sub -> the hub's listener -> fan-out. The hub runs one
connection's commands in order, so the WebSocket publisher waits a Redis round
trip per publish; ``--publish-via redis`` publishes with ``FCALL
realtime_publish`` from this process instead (pipelined, ``--window`` in
flight), the way a backend would, and the hub only fans out.

What it prints
--------------
* **RSS per connection**: (hub VmRSS after N subscribers connected and
  subscribed - VmRSS before) / N, from ``/proc/<pid>/status``; the publisher is
  connected in both readings.
* **Throughput phase**: the publisher keeps ``--window`` publishes in flight
  for ``--duration`` seconds. *deliveries/s* = publications counted by all
  subscribers / (last delivery - first publish). *hub CPU* is utime+stime of
  the hub process over the same span (``/proc/<pid>/stat``), so
  *deliveries per hub CPU-second* does not depend on how busy the client side
  kept the two cores. Its sys part is shown apart: on loopback the kernel runs
  the receiver's TCP path in the sender's context, so part of the clients'
  receive cost is charged to the hub. The CPU of the subscriber processes is
  printed too: near 100 % of a core means the clients, not the hub, set the
  pace. Acks do not wait for delivery, so in this phase the publisher can run
  ahead of slow subscribers and the latency printed is mostly queueing.
* **Latency phase**: ``--rate`` publishes/s for ``--duration`` seconds.
  *p50/p99/max* is publish -> deliver latency: the publisher puts
  ``time.monotonic_ns()`` in the first 8 bytes of each payload, and a sample of
  subscribers (``--samplers``, default 50) decodes every message and subtracts
  it from its own monotonic clock on arrival (one clock for all processes on
  Linux). The publish -> reply round trip is printed as *ack*.
* **Integrity**: samplers check that offsets are consecutive (*gaps* = offsets
  skipped, *disorder* = offsets not above the previous one); every subscriber's
  count is checked against the number of acknowledged publishes (*missing*);
  *disconnects* are subscriber connections that ended during the run, by close
  code; *hub log lines* counts what the hub wrote to stdout/stderr.
* **Redis** (with ``--redis``/``--start-redis``): every 0.25 s the script reads
  ``CLIENT LIST TYPE pubsub`` on each Redis node and follows the hub's pub/sub
  connections (named ``<prefix>:pubsub``): their ids must stay the same from
  the first reading to the last (Redis did not drop them, e.g. for passing
  ``client-output-buffer-limit pubsub``), and the peak ``omem`` (bytes Redis
  held for them) shows how close they came.
* A final line ``JSON {...}`` sums it up for notes and later comparisons.

How the client side stays cheap
-------------------------------
Subscribers are raw asyncio protocols on uvloop that do the WebSocket
handshake themselves. After the subscribe reply, all but the samplers stop
decoding: they count publications with ``bytes.count`` of the msgpack bytes of
``"push": "pub"`` over the raw stream (a message never spans frames, so frame
headers never split it) and walk frame headers only to answer pings and see
close frames. The payload (``--payload`` bytes, a msgpack bin) is the 8-byte
timestamp padded with ``x``, which cannot contain that marker.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import ctypes
import functools
import hashlib
import json
import multiprocessing
import multiprocessing.connection
import os
import resource
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from array import array
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, cast

import msgpack  # type: ignore[import-untyped]  # no stubs
import uvloop

HOST = "127.0.0.1"
WS_PATH = "/ws"
SUBPROTOCOL = "realtime.v1.msgpack"
CHANNEL = "bench"
WS_GUID = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
#: The msgpack bytes of the pair "push": "pub", present once in every publication push.
MARKER: bytes = msgpack.packb("push") + msgpack.packb("pub")
MARKER_TAIL = len(MARKER) - 1
#: The latency phase records every message; the throughput phase one offset in this many.
THROUGHPUT_STRIDE = 8
#: Handshakes in flight per client process (aiohttp listens with a backlog of 128).
CONNECT_CONCURRENCY = 50
#: Seconds for one subscriber to connect and subscribe.
CONNECT_TIMEOUT = 20.0
#: Seconds without a new delivery after which a phase's drain gives up.
DRAIN_STALL = 3.0
#: Seconds a phase's drain may take at most.
DRAIN_MAX = 60.0
#: The hub's settings in the default command: anonymous clients, channel "bench" open, with history,
#: and no per-connection budgets (command_rate, receive_rate): the publisher is one WebSocket client
#: sending as fast as the hub absorbs, which those budgets exist to stop a phone from doing.
HUB_CONFIG = """allow_anonymous = true
command_rate = 0
receive_rate = 0
[namespaces.default]
subscribe = "anyone"
publish = "clients"
history_size = 100
history_ttl = 300
"""
#: Seconds between two readings of CLIENT LIST on each Redis node.
REDIS_WATCH_INTERVAL = 0.25
#: Seconds to wait for a client process to answer a control request.
CONTROL_TIMEOUT = 120.0
#: Most publishes in flight in the latency phase, so a stuck hub cannot grow memory here.
LATENCY_MAX_INFLIGHT = 10_000
REPO = Path(__file__).resolve().parents[1]


class BenchError(Exception):
    """The benchmark cannot go on (hub not starting, subscribers failing, no replies)."""


# --- /proc and process helpers ------------------------------------------------


def rss_kib(pid: int) -> int:
    """VmRSS of ``pid`` in KiB."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise BenchError(f"no VmRSS for pid {pid}")


def cpu_seconds(pid: int) -> tuple[float, float]:
    """(utime, stime) of ``pid`` in seconds."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    fields = stat[stat.rindex(")") + 2 :].split()  # the command name may hold spaces
    tick = os.sysconf("SC_CLK_TCK")
    return int(fields[11]) / tick, int(fields[12]) / tick


def own_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def raise_nofile() -> int:
    """Raise the soft limit on open files to the hard limit; returns the soft limit now."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if hard == resource.RLIM_INFINITY:
        hard = 1 << 20
    if soft != resource.RLIM_INFINITY and soft < hard:
        resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
        soft = hard
    return soft


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((HOST, 0))
        port: int = sock.getsockname()[1]
        return port


def _hub_preexec() -> None:
    """In the hub child: enough file descriptors, and die with this script."""
    raise_nofile()
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


# --- a minimal WebSocket client ------------------------------------------------


def _mask(payload: bytes, key: bytes) -> bytes:
    n = len(payload)
    keys = (key * (n // 4 + 1))[:n]
    return (int.from_bytes(payload, "big") ^ int.from_bytes(keys, "big")).to_bytes(n, "big")


def client_frame(payload: bytes, opcode: int = 0x2) -> bytes:
    """One final, masked client frame (RFC 6455 section 5.2)."""
    n = len(payload)
    if n < 126:
        head = bytes((0x80 | opcode, 0x80 | n))
    elif n < 65536:
        head = bytes((0x80 | opcode, 0x80 | 126)) + n.to_bytes(2, "big")
    else:
        head = bytes((0x80 | opcode, 0x80 | 127)) + n.to_bytes(8, "big")
    key = os.urandom(4)
    return head + key + _mask(payload, key)


class WSClient(asyncio.Protocol):
    """A WebSocket client over a raw transport: handshake, then a frame walker.

    While ``decoding`` is true every data frame's payload goes through a msgpack
    :class:`msgpack.Unpacker` and each message to :meth:`on_message`; when it is
    false only control frames are looked at and the subclass counts the raw bytes.
    Create with ``loop.create_connection``, then await :attr:`opened`.
    """

    def __init__(self, port: int) -> None:
        loop = asyncio.get_running_loop()
        self.port = port
        self.transport: asyncio.Transport | None = None
        self.opened: asyncio.Future[None] = loop.create_future()
        self.ended: asyncio.Future[None] = loop.create_future()
        self.close_code: int | None = None  # from the server's close frame; 1006 if none came
        self.decoding = True
        self._key = base64.b64encode(os.urandom(16)).decode()
        self._head: bytes | None = b""  # response head until the handshake is done
        self._unpacker = msgpack.Unpacker(raw=False)
        self._remain = 0  # bytes of the current data frame still to come
        self._pending = b""  # an incomplete frame header or control frame

    # handshake

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport = cast(asyncio.Transport, transport)  # uvloop's are not subclasses
        transport.write(
            (
                f"GET {WS_PATH} HTTP/1.1\r\nHost: {HOST}:{self.port}\r\n"
                "Upgrade: websocket\r\nConnection: Upgrade\r\n"
                f"Sec-WebSocket-Key: {self._key}\r\nSec-WebSocket-Version: 13\r\n"
                f"Sec-WebSocket-Protocol: {SUBPROTOCOL}\r\n\r\n"
            ).encode()
        )

    def _handshake(self, data: bytes) -> bytes:
        """Consume the HTTP response; returns the bytes after it (frames)."""
        assert self._head is not None
        buf = self._head + data
        end = buf.find(b"\r\n\r\n")
        if end < 0:
            self._head = buf
            if len(buf) > 16384:
                self._fail("handshake response too long")
            return b""
        self._head = None
        lines = buf[:end].decode("latin-1").split("\r\n")
        headers = {k.strip().lower(): v.strip() for k, _, v in (ln.partition(":") for ln in lines[1:])}
        accept = base64.b64encode(hashlib.sha1(self._key.encode() + WS_GUID).digest()).decode()
        if not lines[0].startswith("HTTP/1.1 101"):
            self._fail(f"handshake refused: {lines[0]!r}")
        elif headers.get("sec-websocket-accept") != accept:
            self._fail("bad Sec-WebSocket-Accept")
        elif headers.get("sec-websocket-protocol") != SUBPROTOCOL:
            self._fail(f"subprotocol not accepted: {headers.get('sec-websocket-protocol')!r}")
        else:
            self.opened.set_result(None)
            return buf[end + 4 :]
        return b""

    def _fail(self, reason: str) -> None:
        if not self.opened.done():
            self.opened.set_exception(BenchError(reason))
        if self.transport is not None:
            self.transport.abort()

    # frames

    def send(self, *messages: Any) -> None:
        """Send each message msgpack-encoded in its own frame, in one write."""
        assert self.transport is not None
        self.transport.write(b"".join(client_frame(msgpack.packb(m)) for m in messages))

    def data_received(self, data: bytes) -> None:
        if self._head is not None:
            data = self._handshake(data)
            if not data:
                return
        if not self.decoding:
            self.count_raw(data)
        self._walk(data)
        self.after_data()

    def _walk(self, data: bytes) -> None:
        if self._pending:
            data = self._pending + data
            self._pending = b""
        n = len(data)
        pos = self._remain
        if pos:
            if pos >= n:
                self._remain = pos - n
                if self.decoding:
                    self._feed(data)
                return
            if self.decoding:
                self._feed(data[:pos])
        while n - pos >= 2:
            length = data[pos + 1] & 0x7F
            start = pos + 2
            if length == 126:
                if n - pos < 4:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 4], "big")
                start = pos + 4
            elif length == 127:
                if n - pos < 10:
                    break
                length = int.from_bytes(data[pos + 2 : pos + 10], "big")
                start = pos + 10
            end = start + length
            opcode = data[pos] & 0x0F
            if opcode >= 0x8:  # control frames are short: handle them whole
                if end > n:
                    break
                self._control(opcode, data[start:end])
            elif end > n:
                if self.decoding:
                    self._feed(data[start:])
                self._remain = end - n
                return
            elif self.decoding:
                self._feed(data[start:end])
            pos = end
        self._remain = 0
        if pos < n:
            self._pending = data[pos:]

    def _feed(self, payload: bytes) -> None:
        unpacker = self._unpacker
        unpacker.feed(payload)
        for message in unpacker:
            self.on_message(message)

    def _control(self, opcode: int, payload: bytes) -> None:
        assert self.transport is not None
        if opcode == 0x9:  # ping
            self.transport.write(client_frame(payload, 0xA))
        elif opcode == 0x8:  # close: answer and let the server close the TCP connection
            self.close_code = int.from_bytes(payload[:2], "big") if len(payload) >= 2 else 1005
            if not self.transport.is_closing():
                self.transport.write(client_frame(payload[:2], 0x8))

    def connection_lost(self, exc: Exception | None) -> None:
        if self.close_code is None:
            self.close_code = 1006
        if not self.opened.done():
            self.opened.set_exception(BenchError(f"connection lost during handshake: {exc}"))
        if not self.ended.done():
            self.ended.set_result(None)

    def close(self) -> None:
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(client_frame((1000).to_bytes(2, "big"), 0x8))
            self.transport.close()

    # for subclasses

    def count_raw(self, data: bytes) -> None:
        """Called with raw stream bytes while not decoding."""

    def after_data(self) -> None:
        """Called after each read has been processed."""

    def on_message(self, message: Any) -> None:
        """Called with each decoded server message while decoding."""


# --- subscribers (client processes) ---------------------------------------------


@dataclass
class WorkerState:
    """What the subscribers of one client process share."""

    last_ns: int = 0  # monotonic time of the latest read that carried a publication
    stride: int = 1  # samplers record the latency of offsets divisible by this
    latencies: array[int] = field(default_factory=lambda: array("q"))
    gaps: int = 0
    disorder: int = 0
    epoch_changes: int = 0
    other_pushes: Counter[str] = field(default_factory=Counter)


class Subscriber(WSClient):
    """Sends connect and subscribe, then counts publications (or, as a sampler, decodes them)."""

    def __init__(self, port: int, state: WorkerState, sampler: bool) -> None:
        super().__init__(port)
        self.state = state
        self.sampler = sampler
        self.count = 0  # publications received
        self.subscribed: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._offset = 0
        self._epoch = ""
        self._tail = b""
        self._stop_decoding = False
        self._now = 0

    def start(self) -> None:
        self.send(
            {"id": 1, "cmd": "connect", "name": "bench"},
            {"id": 2, "cmd": "subscribe", "channel": CHANNEL},
        )

    def count_raw(self, data: bytes) -> None:
        n = data.count(MARKER)
        tail = self._tail
        if tail:
            n += (tail + data[:MARKER_TAIL]).count(MARKER)
        self._tail = data[-MARKER_TAIL:] if len(data) >= MARKER_TAIL else (tail + data)[-MARKER_TAIL:]
        if n:
            self.count += n
            self.state.last_ns = time.monotonic_ns()

    def data_received(self, data: bytes) -> None:
        if self.sampler:
            self._now = time.monotonic_ns()
        super().data_received(data)

    def after_data(self) -> None:
        if self._stop_decoding:
            self._stop_decoding = False
            self.decoding = False

    def on_message(self, message: Any) -> None:
        if not isinstance(message, dict):
            self.state.other_pushes["non-map message"] += 1
            return
        push = message.get("push")
        if push == "pub":
            self._publication(message)
        elif push is not None:
            self.state.other_pushes[str(push)] += 1
        elif message.get("id") == 2:
            result = message.get("result")
            if not isinstance(result, dict):
                self._refused(f"subscribe failed: {message.get('error')}")
                return
            self._offset, self._epoch = result["offset"], result["epoch"]
            if not self.subscribed.done():
                self.subscribed.set_result(None)
            if not self.sampler:
                self._stop_decoding = True
        elif message.get("id") == 1 and "result" not in message:
            self._refused(f"connect failed: {message.get('error')}")

    def _refused(self, reason: str) -> None:
        if not self.subscribed.done():
            self.subscribed.set_exception(BenchError(reason))

    def _publication(self, message: dict[str, Any]) -> None:
        self.count += 1
        state = self.state
        if not self.sampler:
            state.last_ns = time.monotonic_ns()
            return
        offset, epoch = message["offset"], message["epoch"]
        if epoch != self._epoch and self._epoch:
            state.epoch_changes += 1
            self._epoch = epoch
        elif offset != self._offset + 1:  # (epoch "" at subscribe: the stream starts at offset 1)
            if offset > self._offset:
                state.gaps += offset - self._offset - 1
            else:
                state.disorder += 1
        self._offset, self._epoch = offset, epoch
        if offset % state.stride == 0:
            state.latencies.append(self._now - int.from_bytes(message["data"][:8], "big"))
        state.last_ns = self._now


#: A client process's ends of its pipes: requests in, replies out.
Pipes = tuple[multiprocessing.connection.Connection, multiprocessing.connection.Connection]


class Worker:
    """The subscribers of one client process, driven over a pipe by the controller.

    Requests are tuples: ``("connect",)``, ``("begin", stride)``, ``("snap", with_latencies)``,
    ``("stop",)``; each gets one reply dict.
    """

    def __init__(self, pipes: Pipes, port: int, count: int, samplers: int) -> None:
        self.requests, self.replies = pipes
        self.port = port
        self.count = count
        self.samplers = samplers
        self.state = WorkerState()
        self.subs: list[Subscriber] = []
        self.errors: Counter[str] = Counter()
        self.done: asyncio.Future[None] | None = None
        #: The connecting task: the loop keeps only a weak reference.
        self._connecting: asyncio.Future[None] | None = None

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        loop.add_reader(self.requests.fileno(), self._on_request)
        try:
            await self.done
        finally:
            loop.remove_reader(self.requests.fileno())
            for sub in self.subs:
                sub.close()
            await asyncio.sleep(0.1)

    def _reply(self, value: dict[str, Any]) -> None:
        self.replies.send(value)

    def _on_request(self) -> None:
        assert self.done is not None
        try:
            request = self.requests.recv()
        except (EOFError, OSError):  # the controller is gone
            if not self.done.done():
                self.done.set_result(None)
            return
        kind = request[0]
        if kind == "connect":
            self._connecting = asyncio.ensure_future(self._connect_all())
        elif kind == "begin":
            self.state.stride = request[1]
            self.state.latencies = array("q")
            self._reply(self._snapshot(False))
        elif kind == "snap":
            self._reply(self._snapshot(request[1]))
        elif kind == "stop":
            self._reply({})
            if not self.done.done():
                self.done.set_result(None)

    async def _connect_all(self) -> None:
        limit = asyncio.Semaphore(CONNECT_CONCURRENCY)
        started = time.monotonic()
        results = await asyncio.gather(*(self._connect_one(i < self.samplers, limit) for i in range(self.count)))
        self.subs = [sub for sub in results if sub is not None]
        self._reply({"connected": len(self.subs), "errors": dict(self.errors), "seconds": time.monotonic() - started})

    async def _connect_one(self, sampler: bool, limit: asyncio.Semaphore) -> Subscriber | None:
        loop = asyncio.get_running_loop()
        async with limit:
            sub: Subscriber | None = None
            try:
                async with asyncio.timeout(CONNECT_TIMEOUT):
                    _, sub = await loop.create_connection(
                        lambda: Subscriber(self.port, self.state, sampler), HOST, self.port
                    )
                    await sub.opened
                    sub.start()
                    await sub.subscribed
                return sub
            except (OSError, BenchError, TimeoutError) as exc:
                self.errors[f"{type(exc).__name__}: {exc}"[:200]] += 1
                if sub is not None and sub.transport is not None:
                    sub.transport.abort()
                return None

    def _snapshot(self, with_latencies: bool) -> dict[str, Any]:
        state = self.state
        counts = [sub.count for sub in self.subs] or [0]
        ended = Counter(sub.close_code for sub in self.subs if sub.ended.done())
        return {
            "count": sum(counts),
            "min_sub": min(counts),
            "max_sub": max(counts),
            "last_ns": state.last_ns,
            "cpu": own_cpu_seconds(),
            "gaps": state.gaps,
            "disorder": state.disorder,
            "epoch_changes": state.epoch_changes,
            "other_pushes": dict(state.other_pushes),
            "disconnects": {str(code): n for code, n in ended.items()},
            "latencies": state.latencies.tobytes() if with_latencies else b"",
        }


def worker_main(pipes: Pipes, port: int, count: int, samplers: int) -> None:
    """Entry point of a client process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller stops us
    raise_nofile()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(Worker(pipes, port, count, samplers).run())


class WorkerHandle:
    """The controller's side of one client process."""

    def __init__(self, port: int, count: int, samplers: int) -> None:
        ctx = multiprocessing.get_context("spawn")
        # Two one-way pipes: the loop's add_reader makes the requests end non-blocking,
        # and the replies (latency arrays of megabytes) must be written blocking.
        requests_in, self.requests = ctx.Pipe(duplex=False)
        self.replies, replies_out = ctx.Pipe(duplex=False)
        self.process = ctx.Process(
            target=worker_main, args=((requests_in, replies_out), port, count, samplers), daemon=True
        )
        self.process.start()
        requests_in.close()
        replies_out.close()

    def request(self, *request: Any, timeout: float = CONTROL_TIMEOUT) -> dict[str, Any]:
        """Blocking: send one request and wait for its reply (run it in an executor)."""
        self.requests.send(request)
        if not self.replies.poll(timeout):
            raise BenchError(f"client process {self.process.pid} did not answer {request[0]!r} in {timeout:.0f}s")
        reply: dict[str, Any] = self.replies.recv()
        return reply

    def stop(self) -> None:
        with contextlib.suppress(OSError, BenchError, EOFError):
            if self.process.is_alive():
                self.request("stop", timeout=5.0)
        self.process.join(5.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(2.0)
        self.requests.close()
        self.replies.close()


class Workers:
    """All client processes, asked together."""

    def __init__(self, handles: list[WorkerHandle]) -> None:
        self.handles = handles

    async def request(self, *request: Any, timeout: float = CONTROL_TIMEOUT) -> list[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        asks = [
            loop.run_in_executor(None, functools.partial(h.request, *request, timeout=timeout)) for h in self.handles
        ]
        return list(await asyncio.gather(*asks))


# --- the publisher -----------------------------------------------------------------


class Publisher(WSClient):
    """Publishes timestamped payloads and tracks their replies."""

    def __init__(self, port: int, payload_size: int) -> None:
        super().__init__(port)
        self.pad = b"x" * (payload_size - 8)
        self.next_id = 1
        self.inflight: dict[int, int] = {}  # command id -> monotonic ns sent
        self.acked = 0
        self.errors: Counter[str] = Counter()
        self.acks = array("q")  # publish -> reply round trips, ns
        self.progress = asyncio.Event()
        self.offset = 0
        self._replies: dict[int, asyncio.Future[Any]] = {}

    async def command(self, command: dict[str, Any], timeout: float = 10.0) -> Any:
        """Send one command and return its reply's result."""
        id = command["id"] = self.next_id
        self.next_id += 1
        future = self._replies[id] = asyncio.get_running_loop().create_future()
        self.send(command)
        async with asyncio.timeout(timeout):
            reply = await future
        if "result" not in reply:
            raise BenchError(f"{command['cmd']} failed: {reply.get('error')}")
        return reply["result"]

    def publish(self, count: int) -> None:
        """Send ``count`` publishes in one write."""
        now = time.monotonic_ns()
        commands = []
        for _ in range(count):
            id = self.next_id
            self.next_id += 1
            self.inflight[id] = now
            commands.append({"id": id, "cmd": "publish", "channel": CHANNEL, "data": now.to_bytes(8, "big") + self.pad})
        self.send(*commands)

    def on_message(self, message: Any) -> None:
        if not isinstance(message, dict) or "id" not in message:
            self.errors[f"unexpected message {str(message)[:80]}"] += 1
            return
        id = message["id"]
        sent = self.inflight.pop(id, None)
        if sent is None:
            future = self._replies.pop(id, None)
            if future is not None and not future.done():
                future.set_result(message)
            else:
                self.errors[f"reply to unknown id: {str(message)[:80]}"] += 1
            return
        self.acks.append(time.monotonic_ns() - sent)
        result = message.get("result")
        if isinstance(result, dict):
            self.acked += 1
            self.offset = max(self.offset, result["offset"])
        else:
            self.errors[f"publish error {message.get('error')}"] += 1
        self.progress.set()

    async def wait_progress(self, timeout: float = 10.0) -> None:
        self.progress.clear()
        try:
            async with asyncio.timeout(timeout):
                await self.progress.wait()
        except TimeoutError:
            raise BenchError(f"no publish reply for {timeout:.0f}s ({len(self.inflight)} in flight)") from None

    async def settle(self) -> None:
        """Wait for every publish in flight to be answered."""
        while self.inflight:
            await self.wait_progress()


class RedisPublisher:
    """Publishes like :class:`Publisher`, as a backend does: ``FCALL realtime_publish`` straight
    into Redis (pipelined), so no hub connection orders the publishes and the hub only fans out."""

    def __init__(self, url: str, cluster: bool, payload_size: int, prefix: str = "rt") -> None:
        from redis.asyncio import Redis, RedisCluster

        self.client: Any = RedisCluster.from_url(url) if cluster else Redis.from_url(url)
        self.stem = f"{prefix}:{{{CHANNEL}}}"  # the channel's key stem (docs/redis.md)
        self.pad = b"x" * (payload_size - 8)
        self.next_id = 1
        self.inflight: dict[int, int] = {}
        self.acked = 0
        self.errors: Counter[str] = Counter()
        self.acks = array("q")
        self.progress = asyncio.Event()
        self.offset = 0
        self._tasks: set[asyncio.Task[None]] = set()

    async def wait_library(self, timeout: float = 20.0) -> None:
        """Until the hub has loaded its Function library."""
        deadline = time.monotonic() + timeout
        while not await self.client.function_list(library="realtime"):
            if time.monotonic() > deadline:
                raise BenchError("the hub did not load the realtime Function library into Redis")
            await asyncio.sleep(0.1)

    def publish(self, count: int) -> None:
        now = time.monotonic_ns()
        ids = list(range(self.next_id, self.next_id + count))
        self.next_id += count
        for id in ids:
            self.inflight[id] = now
        task = asyncio.create_task(self._send(ids, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, ids: list[int], sent: int) -> None:
        data = msgpack.packb(sent.to_bytes(8, "big") + self.pad)  # FCALL takes the value's msgpack
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for _ in ids:
                    pipe.fcall("realtime_publish", 1, self.stem, data, 100, 300)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            results = [exc] * len(ids)
        now = time.monotonic_ns()
        for id, result in zip(ids, results):
            self.inflight.pop(id, None)
            self.acks.append(now - sent)
            if isinstance(result, Exception):
                self.errors[f"publish error {str(result)[:80]}"] += 1
            else:
                self.acked += 1
                self.offset = max(self.offset, int(result[0]))
        self.progress.set()

    async def wait_progress(self, timeout: float = 10.0) -> None:
        self.progress.clear()
        try:
            async with asyncio.timeout(timeout):
                await self.progress.wait()
        except TimeoutError:
            raise BenchError(f"no FCALL reply for {timeout:.0f}s ({len(self.inflight)} in flight)") from None

    async def settle(self) -> None:
        while self.inflight:
            await self.wait_progress()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await self.client.aclose()


# --- the hub process ------------------------------------------------------------------


class Hub:
    """The hub under test as a subprocess, with its output in a temporary file."""

    def __init__(self, argv: Sequence[str], port: int) -> None:
        self.argv = list(argv)
        self.port = port
        self.log: IO[bytes] = tempfile.TemporaryFile()  # noqa: SIM115  (closed in stop())
        self.process = subprocess.Popen(
            self.argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=_hub_preexec,
            start_new_session=True,  # Ctrl-C reaches the script only; it stops the hub in order
        )
        self.pid = self.process.pid

    async def wait_ready(self, timeout: float = 20.0) -> None:
        """Poll ``/readyz`` until it answers 200 (``/healthz`` for hubs without readiness)."""
        deadline = time.monotonic() + timeout
        path = "/readyz"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise BenchError(f"hub exited with {self.process.returncode}:\n{self.output()}")
            with contextlib.suppress(OSError, TimeoutError):
                async with asyncio.timeout(1.0):
                    reader, writer = await asyncio.open_connection(HOST, self.port)
                    writer.write(f"GET {path} HTTP/1.1\r\nHost: {HOST}\r\nConnection: close\r\n\r\n".encode())
                    status = await reader.readline()
                    writer.close()
                    if b" 200 " in status:
                        return
                    if b" 404 " in status:
                        path = "/healthz"
            await asyncio.sleep(0.1)
        raise BenchError(f"hub not ready on port {self.port} after {timeout:.0f}s:\n{self.output()}")

    def output(self) -> str:
        self.log.flush()
        self.log.seek(0)
        return self.log.read().decode(errors="replace")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(15.0)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(5.0)


def default_hub_argv(port: int, config: Path, redis: str | None = None, cluster: bool = False) -> list[str]:
    """``python -m realtime serve`` with ``config`` (uvloop is the hub's default loop), on ``redis`` if given."""
    argv = [sys.executable, "-m", "realtime", "serve", "--port", str(port), "--log-level", "warning"]
    argv += ["--config", str(config)]
    if redis:
        argv += ["--redis", redis, *(["--redis-cluster"] if cluster else [])]
    return argv


# --- Redis: started for the run, and watched during it ------------------------------------


class LocalRedis:
    """A redis-server, or a 3-master cluster, in temporary directories (the test suite's helpers)."""

    def __init__(self, kind: str) -> None:
        sys.path.insert(0, str(REPO))
        from tests.redis_cluster import LocalCluster
        from tests.redis_server import RedisServer

        self.cluster = kind == "cluster"
        self._servers: Any = LocalCluster() if self.cluster else RedisServer()

    def start(self) -> None:
        self._servers.start()

    @property
    def url(self) -> str:
        return str(self._servers.url)

    def logs(self) -> str:
        servers = self._servers.servers if self.cluster else [self._servers]
        return "\n".join((s.dir / "redis.log").read_text(errors="replace") for s in servers)

    def cleanup(self) -> None:
        self._servers.cleanup()


class RedisWatch:
    """Follows the hub's pub/sub connections on every Redis node while the benchmark runs."""

    def __init__(self, url: str, cluster: bool, prefix: str = "rt") -> None:
        from redis.asyncio import Redis, RedisCluster

        self.client: Any = RedisCluster.from_url(url) if cluster else Redis.from_url(url)
        self.cluster = cluster
        self.name = f"{prefix}:pubsub"
        #: node -> connection ids seen, in order; node -> peak omem / oll.
        self.ids: dict[str, list[int]] = {}
        self.peak_omem: dict[str, int] = {}
        self.peak_oll: dict[str, int] = {}
        self.errors = 0
        self._task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self.sample()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        while True:
            await asyncio.sleep(REDIS_WATCH_INTERVAL)
            await self.sample()

    async def sample(self) -> None:
        try:
            if self.cluster:
                replies = await self.client.client_list(_type="pubsub", target_nodes=self.client.PRIMARIES)
                per_node = replies if isinstance(replies, dict) else {"cluster": replies}
            else:
                per_node = {"redis": await self.client.client_list(_type="pubsub")}
        except Exception:
            self.errors += 1
            return
        for node, clients in per_node.items():
            for c in clients:
                if c.get("name") != self.name:
                    continue
                ids = self.ids.setdefault(str(node), [])
                if not ids or ids[-1] != int(c["id"]):
                    ids.append(int(c["id"]))
                self.peak_omem[str(node)] = max(self.peak_omem.get(str(node), 0), int(c["omem"]))
                self.peak_oll[str(node)] = max(self.peak_oll.get(str(node), 0), int(c["oll"]))

    async def stop(self) -> dict[str, Any]:
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._task
        await self.sample()
        await self.client.aclose()
        return {
            "pubsub_connections": {node: ids for node, ids in self.ids.items()},
            "reconnected": sorted(node for node, ids in self.ids.items() if len(ids) > 1),
            "peak_omem_bytes": self.peak_omem,
            "peak_oll": self.peak_oll,
            "watch_errors": self.errors,
        }


# --- the benchmark ----------------------------------------------------------------------


@dataclass
class PhaseResult:
    name: str
    published: int
    publish_seconds: float
    delivered: int
    expected: int
    seconds: float  # first publish -> last delivery
    hub_cpu: float  # user + sys
    hub_sys: float
    client_cpu: float  # all client processes
    publisher_cpu: float  # this process
    latencies_ns: list[int]
    acks_ns: list[int]
    min_sub: int
    max_sub: int

    def summary(self) -> dict[str, Any]:
        lat = percentiles(self.latencies_ns)
        ack = percentiles(self.acks_ns)
        return {
            "published": self.published,
            "publishes_per_s": round(self.published / self.publish_seconds, 1),
            "delivered": self.delivered,
            "missing": self.expected - self.delivered,
            "seconds": round(self.seconds, 3),
            "deliveries_per_s": round(self.delivered / self.seconds) if self.seconds else 0,
            "hub_cpu_s": round(self.hub_cpu, 3),
            "hub_sys_s": round(self.hub_sys, 3),
            "hub_cpu_pct": round(100 * self.hub_cpu / self.seconds, 1) if self.seconds else 0,
            "deliveries_per_hub_cpu_s": round(self.delivered / self.hub_cpu) if self.hub_cpu else None,
            "client_cpu_pct": round(100 * self.client_cpu / self.seconds, 1) if self.seconds else 0,
            "publisher_cpu_pct": round(100 * self.publisher_cpu / self.seconds, 1) if self.seconds else 0,
            "latency_ms": {k: round(v / 1e6, 3) for k, v in lat.items()},
            "latency_samples": len(self.latencies_ns),
            "ack_ms": {k: round(v / 1e6, 3) for k, v in ack.items()},
        }


def percentiles(values: list[int]) -> dict[str, int]:
    if not values:
        return {}
    values = sorted(values)
    n = len(values)
    return {"p50": values[(n - 1) // 2], "p99": values[min(n - 1, (99 * n) // 100)], "max": values[-1]}


class Bench:
    def __init__(self, args: argparse.Namespace, hub: Hub, workers: Workers) -> None:
        self.args = args
        self.hub = hub
        self.workers = workers
        self.subscribers = 0  # connected
        self.publisher: Any = None  # Publisher, or RedisPublisher with --publish-via redis
        self.hub_publisher: Publisher | None = None
        self.integrity: dict[str, Any] = {}  # problems seen so far, see check_integrity

    async def connect(self) -> dict[str, Any]:
        loop = asyncio.get_running_loop()
        await self.hub.wait_ready()
        _, pub = await loop.create_connection(lambda: Publisher(self.hub.port, self.args.payload), HOST, self.hub.port)
        self.publisher = self.hub_publisher = pub
        try:
            await asyncio.wait_for(pub.opened, 10.0)
        except TimeoutError:
            raise BenchError("publisher handshake timed out") from None
        await pub.command({"cmd": "connect", "name": "bench-publisher"})
        await asyncio.sleep(0.5)
        rss_before = rss_kib(self.hub.pid)
        started = time.monotonic()
        replies = await self.workers.request("connect")
        seconds = time.monotonic() - started
        self.subscribers = sum(r["connected"] for r in replies)
        errors: Counter[str] = Counter()
        for r in replies:
            errors.update(r["errors"])
        if errors:
            print(f"subscriber connect errors: {dict(errors)}", flush=True)
        if self.subscribers == 0:
            raise BenchError("no subscriber could connect")
        await asyncio.sleep(1.0)  # let the hub settle after the connect storm
        rss_after = rss_kib(self.hub.pid)
        if self.args.publish_via == "redis":
            self.publisher = RedisPublisher(self.args.redis, self.args.redis_cluster, self.args.payload)
            await self.publisher.wait_library()
        return {
            "subscribers": self.subscribers,
            "connect_seconds": round(seconds, 2),
            "connect_errors": sum(errors.values()),
            "rss_before_mib": round(rss_before / 1024, 1),
            "rss_after_mib": round(rss_after / 1024, 1),
            "rss_per_conn_kib": round((rss_after - rss_before) / self.subscribers, 2),
        }

    async def phase(self, name: str, stride: int, publish: Callable[[Publisher], Any]) -> PhaseResult:
        pub = self.publisher
        assert pub is not None
        begin = await self.workers.request("begin", stride)
        count0 = sum(r["count"] for r in begin)
        client_cpu0 = sum(r["cpu"] for r in begin)
        acked0 = pub.acked
        pub.acks = array("q")
        hub_user0, hub_sys0 = cpu_seconds(self.hub.pid)
        own_cpu0 = own_cpu_seconds()
        t0 = time.monotonic_ns()
        await publish(pub)
        await pub.settle()
        publish_seconds = (time.monotonic_ns() - t0) / 1e9
        published = pub.acked - acked0
        expected_total = self.subscribers * pub.acked
        # Drain: until every subscriber has every acknowledged publication, or no progress.
        deadline = time.monotonic() + DRAIN_MAX
        last_total, last_change = -1, time.monotonic()
        while True:
            snaps = await self.workers.request("snap", False)
            total = sum(r["count"] for r in snaps)
            now = time.monotonic()
            if total >= expected_total or now > deadline or now - last_change > DRAIN_STALL:
                break
            if total != last_total:
                last_total, last_change = total, now
            await asyncio.sleep(0.1)
        hub_user, hub_sys = cpu_seconds(self.hub.pid)
        hub_user, hub_sys = hub_user - hub_user0, hub_sys - hub_sys0
        own_cpu = own_cpu_seconds() - own_cpu0
        snaps = await self.workers.request("snap", True)
        last_ns = max(r["last_ns"] for r in snaps)
        latencies: list[int] = []
        for r in snaps:
            latencies.extend(array("q", r["latencies"]))
        self.check_integrity(name, snaps, pub.acked)
        return PhaseResult(
            name=name,
            published=published,
            publish_seconds=publish_seconds,
            delivered=sum(r["count"] for r in snaps) - count0,
            expected=published * self.subscribers,
            seconds=max(0, last_ns - t0) / 1e9,
            hub_cpu=hub_user + hub_sys,
            hub_sys=hub_sys,
            client_cpu=sum(r["cpu"] for r in snaps) - client_cpu0,
            publisher_cpu=own_cpu,
            latencies_ns=latencies,
            acks_ns=list(pub.acks),
            min_sub=min(r["min_sub"] for r in snaps),
            max_sub=max(r["max_sub"] for r in snaps),
        )

    def check_integrity(self, name: str, snaps: list[dict[str, Any]], acked: int) -> None:
        self.integrity = {
            "gaps": sum(r["gaps"] for r in snaps),
            "disorder": sum(r["disorder"] for r in snaps),
            "epoch_changes": sum(r["epoch_changes"] for r in snaps),
            "subscribers_short": acked - min(r["min_sub"] for r in snaps),
            "disconnects": dict(sum((Counter(r["disconnects"]) for r in snaps), Counter())),
            "other_pushes": dict(sum((Counter(r["other_pushes"]) for r in snaps), Counter())),
            "publish_errors": dict(self.publisher.errors) if self.publisher else {},
        }
        bad = {k: v for k, v in self.integrity.items() if v}
        if bad:
            print(f"  ! after {name}: {bad}", flush=True)

    async def throughput(self, pub: Publisher) -> None:
        window, deadline = self.args.window, time.monotonic() + self.args.duration
        while time.monotonic() < deadline:
            room = window - len(pub.inflight)
            if room > 0:
                pub.publish(room)
            await pub.wait_progress()

    async def latency(self, pub: Publisher) -> None:
        interval = 1.0 / self.args.rate
        start = time.monotonic()
        total = int(self.args.duration * self.args.rate)
        for i in range(total):
            delay = start + i * interval - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if len(pub.inflight) >= LATENCY_MAX_INFLIGHT:
                await pub.wait_progress()
            pub.publish(1)


def print_phase(result: PhaseResult, summary: dict[str, Any]) -> None:
    s = summary
    lat, ack = s["latency_ms"], s["ack_ms"]
    print(
        f"{result.name}: {s['published']} publishes in {result.publish_seconds:.2f}s ({s['publishes_per_s']:.0f}/s)"
        f" -> {s['delivered']} deliveries in {s['seconds']:.2f}s = {s['deliveries_per_s']:,} deliveries/s",
        flush=True,
    )
    per_cpu = s["deliveries_per_hub_cpu_s"]
    print(
        f"  hub CPU {s['hub_cpu_s']:.2f}s ({s['hub_cpu_pct']:.0f}% of a core, {s['hub_sys_s']:.2f}s of it sys)"
        f" = {per_cpu or 0:,} deliveries per hub CPU-second;"
        f" subscriber procs {s['client_cpu_pct']:.0f}%, publisher {s['publisher_cpu_pct']:.0f}% of a core",
        flush=True,
    )
    if lat:
        print(
            f"  publish->deliver p50 {lat['p50']:.2f} ms, p99 {lat['p99']:.2f} ms, max {lat['max']:.2f} ms"
            f" ({s['latency_samples']} samples); ack p50 {ack['p50']:.2f} ms, p99 {ack['p99']:.2f} ms",
            flush=True,
        )
    if s["missing"] or result.min_sub != result.max_sub:
        print(
            f"  ! missing {s['missing']} deliveries; per-subscriber totals {result.min_sub}..{result.max_sub}",
            flush=True,
        )


async def run(args: argparse.Namespace, hub: Hub, workers: Workers) -> dict[str, Any]:
    bench = Bench(args, hub, workers)
    watch = RedisWatch(args.redis, args.redis_cluster) if args.redis else None
    conn = await bench.connect()
    if watch is not None:
        await watch.start()
    print(
        f"connected {conn['subscribers']} subscribers in {conn['connect_seconds']:.1f}s;"
        f" hub RSS {conn['rss_before_mib']:.1f} -> {conn['rss_after_mib']:.1f} MiB"
        f" = {conn['rss_per_conn_kib']:.1f} KiB per connection",
        flush=True,
    )
    phases: dict[str, Any] = {}
    for name, stride, body in (
        ("throughput", THROUGHPUT_STRIDE, bench.throughput),
        ("latency", 1, bench.latency),
    ):
        result = await bench.phase(name, stride, body)
        phases[name] = result.summary()
        print_phase(result, phases[name])
    assert bench.hub_publisher is not None
    bench.hub_publisher.close()
    if isinstance(bench.publisher, RedisPublisher):
        await bench.publisher.aclose()
    rss_end = rss_kib(hub.pid)
    results = {"connect": conn, **phases, "rss_end_mib": round(rss_end / 1024, 1), "integrity": bench.integrity}
    if watch is not None:
        results["redis"] = report = await watch.stop()
        for node, ids in report["pubsub_connections"].items():
            kept = "kept its id" if len(ids) == 1 else f"was replaced {len(ids) - 1} time(s)"
            print(
                f"redis {node}: pub/sub connection {watch.name} (id {ids[0]}) {kept};"
                f" peak output buffer {report['peak_omem_bytes'][node] / 1024:.0f} KiB"
                f" ({report['peak_oll'][node]} reply blocks)",
                flush=True,
            )
        if not report["pubsub_connections"]:
            print(f"redis: no pub/sub connection named {watch.name} seen", flush=True)
    return results


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--subscribers", type=int, default=1000)
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per phase (default 10)")
    parser.add_argument("--rate", type=float, default=200.0, help="publishes/s in the latency phase (default 200)")
    parser.add_argument("--payload", type=int, default=64, help="bytes of each publication's data, >= 8 (default 64)")
    parser.add_argument("--window", type=int, default=32, help="publishes in flight in the throughput phase")
    parser.add_argument("--client-procs", type=int, default=1, help="subscriber processes (default 1)")
    parser.add_argument("--samplers", type=int, default=50, help="subscribers that decode every message")
    parser.add_argument(
        "--hub-cmd",
        help="command line of the hub under test, with {port} where the port goes (and {redis}, the Redis URL)"
        " (default: python -m realtime serve with log level warning and an open channel 'bench')",
    )
    parser.add_argument("--redis", metavar="URL", help="run the hub's Redis engine on this Redis (and watch it)")
    parser.add_argument("--redis-cluster", action="store_true", help="--redis names a Redis Cluster node")
    parser.add_argument(
        "--start-redis",
        choices=("single", "cluster"),
        help="start a redis-server (or a 3-master cluster) for the run; implies --redis",
    )
    parser.add_argument(
        "--publish-via",
        choices=("hub", "redis"),
        default="hub",
        help="hub: a WebSocket client of the hub publishes (default); redis: FCALL realtime_publish"
        " straight into Redis, as a backend would (needs --redis or --start-redis)",
    )
    args = parser.parse_args(argv)
    if args.publish_via == "redis" and not (args.redis or args.start_redis):
        parser.error("--publish-via redis needs --redis or --start-redis")
    if args.start_redis and args.redis:
        parser.error("--start-redis starts its own Redis: leave out --redis")
    if args.payload < 8:
        parser.error("--payload must be at least 8 (the timestamp)")
    if args.hub_cmd is not None and "{port}" not in args.hub_cmd:
        parser.error("--hub-cmd needs a {port} placeholder")
    if min(args.subscribers, args.client_procs, args.window) < 1 or args.rate <= 0 or args.duration <= 0:
        parser.error("--subscribers, --client-procs, --window, --rate and --duration must be positive")
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    nofile = raise_nofile()
    if nofile < args.subscribers + 100:
        print(f"warning: open files limited to {nofile}", file=sys.stderr)
    port = free_port()
    local_redis: LocalRedis | None = None
    if args.start_redis:
        local_redis = LocalRedis(args.start_redis)
        try:
            local_redis.start()
        except Exception as exc:
            local_redis.cleanup()
            print(f"error: cannot start Redis: {exc}", file=sys.stderr)
            return 1
        args.redis, args.redis_cluster = local_redis.url, local_redis.cluster
        print(f"started {args.start_redis} Redis at {args.redis}", flush=True)
    config = Path(tempfile.mkdtemp(prefix="bench-hub-")) / "hub.toml"
    config.write_text(HUB_CONFIG)
    if args.hub_cmd:
        hub_argv = shlex.split(args.hub_cmd.format(port=port, redis=args.redis or ""))
    else:
        hub_argv = default_hub_argv(port, config, args.redis, args.redis_cluster)
    procs = min(args.client_procs, args.subscribers)
    shares = [args.subscribers // procs + (i < args.subscribers % procs) for i in range(procs)]
    samplers = min(args.samplers, args.subscribers)
    sampler_shares = [samplers // procs + (i < samplers % procs) for i in range(procs)]
    # SIGTERM takes the Ctrl-C path (asyncio.Runner cancels the run, then cleanup below);
    # SIGINT is restored as a background job in a non-interactive shell starts with it ignored.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    signal.signal(signal.SIGTERM, lambda *_: signal.raise_signal(signal.SIGINT))
    hub = Hub(hub_argv, port)
    handles: list[WorkerHandle] = []
    print(
        f"hub pid {hub.pid}: {shlex.join(hub_argv)}\n{args.subscribers} subscribers ({samplers} sampling)"
        f" in {procs} client process(es), payload {args.payload} B, {args.duration:g}s per phase",
        flush=True,
    )
    try:
        handles = [WorkerHandle(port, n, s) for n, s in zip(shares, sampler_shares)]
        with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
            results = runner.run(run(args, hub, Workers(handles)))
        log = hub.output()
        results["hub_log_lines"] = len(log.splitlines())
        if log:
            print(f"hub output ({results['hub_log_lines']} lines, last 20):", flush=True)
            print("\n".join("  | " + line for line in log.splitlines()[-20:]), flush=True)
        summary = {
            "subscribers": args.subscribers,
            "duration": args.duration,
            "rate": args.rate,
            "payload": args.payload,
            "window": args.window,
            "client_procs": procs,
            "hub_cmd": args.hub_cmd or "default",
            "redis_url": args.redis,
            "publish_via": args.publish_via,
            "redis_cluster": args.redis_cluster,
            **results,
        }
        if local_redis is not None:
            closed = local_redis.logs().count("scheduled to be closed ASAP for overcoming of output buffer limits")
            summary["redis_output_buffer_disconnects"] = closed
            print(f"redis log: {closed} client(s) closed for passing an output buffer limit", flush=True)
        print("JSON " + json.dumps(summary, separators=(",", ":")), flush=True)
        return 0
    except BenchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        log = hub.output()
        if log:
            print("hub output (last 40 lines):\n" + "\n".join(log.splitlines()[-40:]), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    finally:
        for handle in handles:
            handle.stop()
        hub.stop()
        if local_redis is not None:
            local_redis.cleanup()
        with contextlib.suppress(OSError):
            config.unlink()
            config.parent.rmdir()


if __name__ == "__main__":
    sys.exit(main())
