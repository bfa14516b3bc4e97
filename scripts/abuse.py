"""Abuse drill: attack a live hub with floods, bad frames and slow readers while honest clients watch.

Usage::

    python scripts/abuse.py --spawn [--json report.json]           # a hub of its own (quickstart.toml)
    python scripts/abuse.py --url ws://127.0.0.1:8000/ws --pid PID \\
        --config quickstart.toml [--scenarios flood,amplify] [--json report.json]

With ``--spawn`` the tool starts ``realtime serve --config quickstart.toml`` on a
free loopback port as its own subprocess (``--config`` picks another file),
samples its memory and stops it at the end. With ``--url`` it attacks a running
hub; ``--pid`` names the hub's process (same machine) for the memory figures.
Chat scenarios need a signed-in user: ``--token`` gives a connection token, or
``--config`` a settings file whose ``token_secret`` the tool signs with (through
``realtime token``).

Scenarios (``--scenarios`` picks some, in this order; every loop is bounded by
its count flag and by ``--seconds`` each):

* ``flood``: frames of ``--flood-commands`` pings, ``--flood-frames`` of them, as
  fast as the socket takes them;
* ``oversize``: ``--oversize`` connections each sending one frame one byte over
  ``--max-frame-size``;
* ``malformed``: ``--malformed`` frames of random bytes, bad MessagePack, maps of
  the wrong types and text frames, reconnecting whenever the hub closes;
* ``amplify``: ``--amplify-clients`` users each publish ``--amplify-pubs`` x
  ``--amplify-size`` bytes to a chat channel, then send ``--amplify-frames``
  small frames of ``--amplify-commands`` commands: ``history``, and subscribe
  at offset 0 + unsubscribe, in turn (``--amplify-with`` picks one);
* ``read-flood``: ``history`` of ``--read-channels`` never-published channel
  names, 100 to a frame;
* ``notices``: ``--notices`` ``typing`` (false) and as many ``read`` commands in
  a chat channel, counted as they reach another subscriber;
* ``slow-readers``: ``--slow-readers`` clients subscribe and never read while
  ``--slow-pushes`` publications of ``--slow-size`` bytes go to their channel;
* ``conn-flood``: ``--conn-flood`` sockets send half a WebSocket handshake and
  hold it ``--hold`` seconds.

Meanwhile ``--clients`` well-behaved clients (the Python SDK, half of them over
JSON) subscribe to one channel, a publisher sends it a numbered sequence
(``--rate`` a second) and every client pings the hub every ``--ping-every``
seconds. The report gives, per scenario, what was sent, the error replies by
code, the close codes seen (``by_tool`` for sockets the tool closed itself) and
the hub's peak RSS during it; for the hub its RSS at the start, its peak
(sampled VmRSS) and VmHWM, and whether ``/healthz`` still answers; for the
well-behaved clients what they lost, got twice or out of order, and their ping
latency (max and p99; a ping unanswered within the SDK's 10 s command timeout
is a ping failure). ``--json FILE`` writes the same as JSON. The exit status is
0 when the hub survived and the well-behaved clients lost nothing.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import json
import math
import os
import random
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import aiohttp
import msgpack  # type: ignore[import-untyped]  # no stubs
import orjson
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed, InvalidHandshake, InvalidStatus
from websockets.typing import Subprotocol

from protocol.limits import JSON_SUBPROTOCOL, MAX_COMMANDS_PER_FRAME, MAX_ID, MSGPACK_SUBPROTOCOL
from realtime.client import Client

ROOT = Path(__file__).resolve().parent.parent
QUICKSTART = ROOT / "quickstart.toml"
SCENARIOS = ("flood", "oversize", "malformed", "amplify", "read-flood", "notices", "slow-readers", "conn-flood")


# --- the report --------------------------------------------------------------------


@dataclass
class ScenarioReport:
    """What one scenario tried and what came back."""

    connections: int = 0
    frames: int = 0
    commands: int = 0
    bytes_sent: int = 0
    replies: int = 0
    bytes_received: int = 0
    #: Error replies by code.
    errors: dict[str, int] = field(default_factory=dict)
    #: Closes the hub started, by close code; ``by_tool`` counts sockets the tool closed itself,
    #: ``refused`` handshakes the hub turned down, ``1006`` sockets that ended without a close frame.
    closes: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0
    #: The hub's highest sampled VmRSS during the scenario (kB), when its process is known.
    rss_peak_kb: int | None = None
    notes: dict[str, Any] = field(default_factory=dict)

    def error(self, code: object) -> None:
        self.errors[str(code)] = self.errors.get(str(code), 0) + 1

    def closed(self, code: object) -> None:
        self.closes[str(code)] = self.closes.get(str(code), 0) + 1


@dataclass
class ClientsReport:
    """The well-behaved clients: deliveries of the numbered sequence and ping latency."""

    clients: int = 0
    published: int = 0
    acked: int = 0
    publish_errors: dict[str, int] = field(default_factory=dict)
    delivered: list[int] = field(default_factory=list)
    lost: int = 0
    duplicated: int = 0
    reordered: int = 0
    unrecovered: int = 0
    pings: int = 0
    ping_failures: int = 0
    ping_max_ms: float = 0.0
    ping_p99_ms: float = 0.0

    @property
    def clean(self) -> bool:
        return self.lost == self.duplicated == self.reordered == 0


@dataclass
class HubReport:
    url: str = ""
    pid: int | None = None
    spawned: bool = False
    rss_start_kb: int | None = None
    rss_peak_kb: int | None = None
    vm_hwm_kb: int | None = None
    alive: bool = False


@dataclass
class Report:
    hub: HubReport
    clients: ClientsReport
    scenarios: dict[str, ScenarioReport]

    @property
    def ok(self) -> bool:
        return self.hub.alive and self.clients.clean

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, **asdict(self)}


# --- the hub's process -------------------------------------------------------------


def read_status(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM (kB) of a process, from /proc; empty when it is gone or not on this machine."""
    out: dict[str, int] = {}
    try:
        with open(f"/proc/{pid}/status", encoding="ascii", errors="replace") as f:
            for line in f:
                if line.startswith(("VmRSS:", "VmHWM:")):
                    name, value = line.split(":", 1)
                    out[name] = int(value.split()[0])
    except OSError:
        pass
    return out


class Sampler:
    """Samples the hub's VmRSS every ``every`` seconds; ``peak`` since the last ``mark``."""

    def __init__(self, pid: int | None, every: float = 0.05) -> None:
        self.pid = pid
        self.every = every
        self.peak: int | None = None
        self.window: int | None = None
        self._task: asyncio.Task[None] | None = None

    def sample(self) -> None:
        if self.pid is None:
            return
        rss = read_status(self.pid).get("VmRSS")
        if rss is not None:
            self.peak = max(self.peak or 0, rss)
            self.window = max(self.window or 0, rss)

    def mark(self) -> int | None:
        """The peak since the previous mark, then start a new window."""
        self.sample()
        window, self.window = self.window, None
        self.sample()
        return window

    async def _run(self) -> None:
        while True:
            self.sample()
            await asyncio.sleep(self.every)

    def start(self) -> None:
        if self.pid is not None:
            self._task = asyncio.create_task(self._run())

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@contextlib.asynccontextmanager
async def spawned_hub(config: Path, startup: float = 20.0) -> AsyncIterator[tuple[str, int]]:
    """``realtime serve --config config`` on a free loopback port: yields (ws url, pid), stops it after."""
    port = free_port()
    log = tempfile.NamedTemporaryFile(prefix="abuse-hub-", suffix=".log", delete=False)  # noqa: SIM115
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "realtime",
            "serve",
            "--config",
            str(config),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--drain-window",
            "0",
        ],
        stdout=subprocess.DEVNULL,
        stderr=log,
        env=_env(),
    )
    url = f"ws://127.0.0.1:{port}/ws"
    try:
        deadline = time.monotonic() + startup
        while not await healthy(url):
            if proc.poll() is not None or time.monotonic() > deadline:
                log.seek(0)
                tail = log.read()[-2000:].decode(errors="replace")
                raise RuntimeError(f"the hub did not start (exit {proc.poll()}):\n{tail}")
            await asyncio.sleep(0.1)
        yield url, proc.pid
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.to_thread(proc.wait, 10)
            except subprocess.TimeoutExpired:
                proc.kill()
                await asyncio.to_thread(proc.wait)
        log.close()
        os.unlink(log.name)


def _env() -> dict[str, str]:
    """The environment of the hub and of ``realtime token``: this checkout's packages first."""
    return {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}


def http_url(ws_url: str, path: str) -> str:
    parts = urlsplit(ws_url)
    return urlunsplit(("https" if parts.scheme == "wss" else "http", parts.netloc, path, "", ""))


async def healthy(ws_url: str) -> bool:
    """Whether the hub answers GET /healthz with 200 within 5 s."""
    try:
        async with aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=5)) as session:
            async with session.get(http_url(ws_url, "/healthz")) as response:
                return response.status == 200
    except (aiohttp.ClientError, OSError, TimeoutError):
        return False


def mint_token(config: Path, user: str) -> str:
    """A connection token for ``user``, signed by ``realtime token`` with the config's secret."""
    out = subprocess.run(
        [sys.executable, "-m", "realtime", "token", user, "--config", str(config)],
        capture_output=True,
        text=True,
        check=True,
        timeout=30,
        env=_env(),
    )
    return out.stdout.strip()


# --- raw attackers -------------------------------------------------------------------


def _tally_map(m: object, stats: ScenarioReport) -> tuple[int, dict[str, Any]] | None:
    """Count one server message; return (id, map) of a reply."""
    if not isinstance(m, dict):
        return None
    if m.get("push") == "disconnect":
        stats.notes["disconnect_pushes"] = stats.notes.get("disconnect_pushes", 0) + 1
        return None
    if "push" in m:
        pushes = stats.notes.setdefault("pushes", {})
        pushes[str(m["push"])] = pushes.get(str(m["push"]), 0) + 1
        return None
    stats.replies += 1
    error = m.get("error")
    if isinstance(error, dict):
        stats.error(error.get("code"))
    id = m.get("id")
    return (id, m) if isinstance(id, int) else None


class Raw:
    """One attacker's WebSocket, speaking the protocol by hand (``websockets``).

    A reader task counts what comes back (replies, error codes, bytes) unless
    ``read`` is off: then the socket is left unread (a slow reader) until
    :meth:`drain`. :meth:`request` sends one command and waits for its reply.
    """

    def __init__(self, ws: ClientConnection, stats: ScenarioReport, codec: str) -> None:
        self.ws = ws
        self.stats = stats
        self.json = codec == "json"
        self._ids = itertools.count(2)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self.reader: asyncio.Task[None] | None = None
        self.ended = False

    @classmethod
    async def open(
        cls,
        url: str,
        stats: ScenarioReport,
        *,
        token: str | None = None,
        codec: str = "msgpack",
        read: bool = True,
        connect_command: bool = True,
    ) -> Raw:
        subprotocol = JSON_SUBPROTOCOL if codec == "json" else MSGPACK_SUBPROTOCOL
        ws = await connect(
            url,
            subprotocols=[Subprotocol(subprotocol)],
            compression=None,
            max_size=None,  # amplified replies are what we measure: take them all
            max_queue=1 if not read else 16,  # a slow reader: the socket stops being read at once
            open_timeout=10,
            ping_interval=None,
            close_timeout=2,
        )
        stats.connections += 1
        raw = cls(ws, stats, codec)
        if read:
            raw.reader = asyncio.create_task(raw._read())
        if connect_command:
            m: dict[str, Any] = {"id": 1, "cmd": "connect", "name": "abuse"}
            if token:
                m["token"] = token
            try:
                if read:
                    await raw.request_with_id(1, m)
                else:
                    await raw.send([m])
                    await asyncio.wait_for(ws.recv(), 10)
            except BaseException:
                raw.ended = True  # counted as refused by the caller, not as a close
                await raw.close()
                raise
        return raw

    def next_id(self) -> int:
        return next(self._ids) % MAX_ID + 1

    def encode(self, maps: list[dict[str, Any]]) -> bytes | str:
        if self.json:
            return "\n".join(orjson.dumps(m).decode() for m in maps)
        return b"".join(msgpack.packb(m) for m in maps)

    async def send_frame(self, frame: bytes | str, commands: int = 0) -> bool:
        """Send one frame as is; False once the connection is closed."""
        try:
            await self.ws.send(frame)
        except ConnectionClosed:
            return False
        self.stats.frames += 1
        self.stats.commands += commands
        self.stats.bytes_sent += len(frame)
        return True

    async def send(self, maps: list[dict[str, Any]]) -> bool:
        return await self.send_frame(self.encode(maps), len(maps))

    async def request_with_id(self, id: int, m: dict[str, Any], timeout: float = 30) -> dict[str, Any]:
        if self.ended:
            raise ConnectionError("closed")
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[id] = future
        try:
            if not await self.send([m]):
                raise ConnectionError("closed")
            return await asyncio.wait_for(future, timeout)
        finally:
            self._waiting.pop(id, None)

    async def request(self, cmd: str, fields: dict[str, Any] | None = None, *, timeout: float = 30) -> dict[str, Any]:
        """Send one command and return its reply's map (``result`` or ``error``).

        Never raises: when the connection closes or no reply comes within
        ``timeout`` seconds the map is ``{"no_reply": ...}`` (a hub may close an
        attacker at any point; the drill goes on).
        """
        id = self.next_id()
        try:
            return await self.request_with_id(id, {"id": id, "cmd": cmd, **(fields or {})}, timeout)
        except (ConnectionError, TimeoutError) as exc:
            return {"no_reply": type(exc).__name__}

    def _tally(self, frame: bytes | str) -> None:
        self.stats.bytes_received += len(frame)
        if len(frame) > 1 << 20:  # a big reply: counted by its bytes, not decoded
            self.stats.replies += 1
            self.stats.notes["big_frames"] = self.stats.notes.get("big_frames", 0) + 1
            return
        try:
            if isinstance(frame, str):
                maps = [orjson.loads(line) for line in frame.split("\n") if line.strip()]
            else:
                unpacker = msgpack.Unpacker(raw=False, strict_map_key=False, max_buffer_size=len(frame) + 1)
                unpacker.feed(frame)
                maps = list(unpacker)
        except ValueError:
            self.stats.notes["undecodable_frames"] = self.stats.notes.get("undecodable_frames", 0) + 1
            return
        for m in maps:
            reply = _tally_map(m, self.stats)
            if reply is not None:
                future = self._waiting.get(reply[0])
                if future is not None and not future.done():
                    future.set_result(reply[1])

    async def _read(self) -> None:
        try:
            async for frame in self.ws:
                self._tally(frame)
        except ConnectionClosed:
            pass
        finally:
            self._end()

    def _end(self) -> None:
        if self.ended:
            return
        self.ended = True
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("closed"))
        ws = self.ws.protocol
        if ws.close_rcvd is not None and ws.close_rcvd_then_sent:
            self.stats.closed(ws.close_rcvd.code)
        elif ws.close_sent is not None and not ws.close_rcvd_then_sent:
            self.stats.closed("by_tool")
        else:
            self.stats.closed(1006)

    async def drain(self, timeout: float) -> None:
        """Read (and count) what waits, until the hub closes or ``timeout`` seconds pass."""
        if self.reader is None:
            self.reader = asyncio.create_task(self._read())
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(self.reader), timeout)

    async def close(self) -> None:
        if self.reader is None:
            self.reader = asyncio.create_task(self._read())
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.ws.close(), 3)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.reader, 3)
        self._end()


async def open_raw(ctx: Context, stats: ScenarioReport, **options: Any) -> Raw | None:
    """A Raw connection, or None (counted as ``refused``) when the hub turns it down."""
    try:
        return await Raw.open(ctx.url, stats, codec=ctx.codec, **options)
    except InvalidStatus as exc:
        stats.closed(f"refused_{exc.response.status_code}")
    except (InvalidHandshake, ConnectionClosed, OSError, TimeoutError, ConnectionError):
        stats.closed("refused")
    return None


# --- scenarios ---------------------------------------------------------------------------


@dataclass
class Context:
    url: str
    args: argparse.Namespace
    run: str
    codec: str
    token: str | None
    deadline: float = 0.0

    def time_left(self) -> bool:
        return time.monotonic() < self.deadline


async def flood(ctx: Context, stats: ScenarioReport) -> None:
    a = ctx.args
    raw = await open_raw(ctx, stats)
    for _ in range(a.flood_frames):
        if raw is None or raw.ended:
            raw = await open_raw(ctx, stats)
            if raw is None:
                return
        if not ctx.time_left():
            break
        maps = [{"id": raw.next_id(), "cmd": "ping"} for _ in range(a.flood_commands)]
        await raw.send(maps)
    if raw is not None:
        await raw.request("ping")  # the replies before it have been counted (or the hub closed)
        await raw.close()


async def oversize(ctx: Context, stats: ScenarioReport) -> None:
    a = ctx.args
    for _ in range(a.oversize):
        if not ctx.time_left():
            break
        raw = await open_raw(ctx, stats)
        if raw is None:
            continue
        # A valid publish whose data makes the frame one byte longer than the limit.
        size = a.max_frame_size + 1
        m: dict[str, Any] = {"id": 2, "cmd": "publish", "channel": f"abuse-big-{ctx.run}", "data": "x" * size}
        frame = raw.encode([m])
        for _ in range(4):  # the string's header shrinks with it: a few steps settle the length
            m["data"] = "x" * (len(m["data"]) + size - len(frame))
            frame = raw.encode([m])
        await raw.send_frame(frame, 1)
        stats.notes["frame_bytes"] = len(frame)
        await raw.drain(5)
        await raw.close()


def malformed_frames(rng: random.Random, run: str) -> list[bytes | str]:
    """A varied batch of frames that are not protocol v1."""
    return [
        rng.randbytes(rng.randint(1, 64)),
        b"\xc1",  # never used in msgpack
        b"\x85\xa2id",  # truncated map
        msgpack.packb([1, 2, 3]),  # not a map
        msgpack.packb({"id": "1", "cmd": "ping"}),  # id of the wrong type
        msgpack.packb({"id": rng.randint(2, 999), "cmd": "publish", "channel": 7, "data": None}),
        msgpack.packb({"id": rng.randint(2, 999), "cmd": "history", "channel": f"abuse-{run}", "limit": -1}),
        msgpack.packb({"id": rng.randint(2, 999), "cmd": "nope"}),
        msgpack.packb({"id": rng.randint(2, 999), "cmd": "subscribe", "channel": "a b"}),
        msgpack.packb({1: 2}),  # a non-string key
        msgpack.packb(msgpack.ExtType(1, b"x")),
        b"\xdd\xff\xff\xff\xff",  # an array claiming 4 G items
        '{"id":1,"cmd":"ping"',  # a text frame of broken JSON
        "[" * 5000,
    ]


async def malformed(ctx: Context, stats: ScenarioReport) -> None:
    rng = random.Random(ctx.args.seed)
    raw: Raw | None = None
    sent = 0
    while sent < ctx.args.malformed and ctx.time_left():
        for frame in malformed_frames(rng, ctx.run):
            if sent >= ctx.args.malformed:
                break
            if raw is None or raw.ended:
                raw = await open_raw(ctx, stats)
                if raw is None:
                    return
            await raw.send_frame(frame)
            sent += 1
    if raw is not None:
        await raw.request("ping")
        await raw.close()


async def _chat_user(ctx: Context, stats: ScenarioReport, channel: str) -> Raw | None:
    """A signed-in attacker subscribed to a chat channel (its pushes are read and counted)."""
    raw = await open_raw(ctx, stats, token=ctx.token)
    if raw is None:
        return None
    reply = await raw.request("subscribe", {"channel": channel})
    if "result" not in reply:
        stats.notes["subscribe_refused"] = reply.get("error", reply)
        await raw.close()
        return None
    return raw


async def amplify(ctx: Context, stats: ScenarioReport) -> None:
    a = ctx.args
    if ctx.token is None:
        stats.notes["skipped"] = "needs a signed-in user: --token or --config"
        return

    async def one(n: int) -> None:
        channel = f"chat:abuse-{ctx.run}-{n}"
        raw = await _chat_user(ctx, stats, channel)
        if raw is None:
            return
        epoch = ""
        body = "x" * a.amplify_size
        for i in range(a.amplify_pubs):
            if not ctx.time_left():
                break
            reply = await raw.request("publish", {"channel": channel, "data": {"n": i, "body": body}})
            if "no_reply" in reply:
                break
            epoch = reply.get("result", {}).get("epoch", epoch)
        for f in range(a.amplify_frames):
            if raw.ended or not ctx.time_left():
                break
            maps: list[dict[str, Any]] = []
            history = a.amplify_with == "history" or (a.amplify_with == "both" and f % 2 == 0)
            while len(maps) < a.amplify_commands:
                if history:
                    maps.append({"id": raw.next_id(), "cmd": "history", "channel": channel, "limit": 100})
                else:
                    maps.append({"id": raw.next_id(), "cmd": "unsubscribe", "channel": channel})
                    maps.append(
                        {"id": raw.next_id(), "cmd": "subscribe", "channel": channel, "offset": 0, "epoch": epoch}
                    )
            await raw.send(maps[: a.amplify_commands])
        await raw.request("ping", timeout=a.seconds)
        await raw.close()

    await asyncio.gather(*(one(n) for n in range(a.amplify_clients)))


async def read_flood(ctx: Context, stats: ScenarioReport) -> None:
    raw = await open_raw(ctx, stats)
    i = 0
    while i < ctx.args.read_channels and ctx.time_left():
        if raw is None or raw.ended:
            raw = await open_raw(ctx, stats)
            if raw is None:
                return
        n = min(MAX_COMMANDS_PER_FRAME, ctx.args.read_channels - i)
        maps = [{"id": raw.next_id(), "cmd": "history", "channel": f"abuse-never-{ctx.run}-{i + k}"} for k in range(n)]
        i += n
        await raw.send(maps)
    stats.notes["channels"] = i
    if raw is not None:
        await raw.request("ping", timeout=ctx.args.seconds)
        await raw.close()


async def notices(ctx: Context, stats: ScenarioReport) -> None:
    if ctx.token is None:
        stats.notes["skipped"] = "needs a signed-in user: --token or --config"
        return
    channel = f"chat:abuse-notices-{ctx.run}"
    witness_stats = ScenarioReport()
    witness = await open_raw(ctx, witness_stats)  # another subscriber: what reaches it is the flood's reach
    if witness is None:
        return
    await witness.request("subscribe", {"channel": channel})
    raw = await _chat_user(ctx, stats, channel)
    if raw is None:
        await witness.close()
        return
    reply = await raw.request("publish", {"channel": channel, "data": {"text": "hi"}})
    offset = reply.get("result", {}).get("offset", 0)
    left = ctx.args.notices
    while left > 0 and ctx.time_left() and not raw.ended:
        n = min(MAX_COMMANDS_PER_FRAME // 2, left)
        maps = [{"id": raw.next_id(), "cmd": "typing", "channel": channel, "typing": False} for _ in range(n)]
        maps += [{"id": raw.next_id(), "cmd": "read", "channel": channel, "offset": offset} for _ in range(n)]
        left -= n
        await raw.send(maps)
    await raw.request("ping")
    await witness.request("ping")
    await raw.close()
    await witness.close()
    pushes = witness_stats.notes.get("pushes", {})
    stats.notes["witness_got"] = {"typing": pushes.get("typing", 0), "read": pushes.get("read", 0)}


async def slow_readers(ctx: Context, stats: ScenarioReport) -> None:
    a = ctx.args
    channel = f"abuse-slow-{ctx.run}"
    readers: list[Raw] = []
    for _ in range(a.slow_readers):
        raw = await open_raw(ctx, stats, read=False)
        if raw is None:
            continue
        await raw.send([{"id": raw.next_id(), "cmd": "subscribe", "channel": channel}])
        readers.append(raw)
    pusher_stats = ScenarioReport()
    pusher = await open_raw(ctx, pusher_stats)
    if pusher is not None:
        body = "x" * a.slow_size
        for i in range(a.slow_pushes):
            if pusher.ended or not ctx.time_left():
                break
            await pusher.send([{"id": pusher.next_id(), "cmd": "publish", "channel": channel, "data": [i, body]}])
        await pusher.request("ping", timeout=a.seconds)
        stats.notes["pushed_bytes"] = pusher_stats.bytes_sent
        await pusher.close()
    # Now read: what waited, then the close the hub sent (4002 for a reader it gave up on).
    await asyncio.gather(*(r.drain(2) for r in readers))
    await asyncio.gather(*(r.close() for r in readers))


async def conn_flood(ctx: Context, stats: ScenarioReport) -> None:
    a = ctx.args
    parts = urlsplit(ctx.url)
    host, port = parts.hostname or "127.0.0.1", parts.port or (443 if parts.scheme == "wss" else 80)
    if parts.scheme == "wss":
        stats.notes["skipped"] = "plain ws:// only"
        return
    half = (
        f"GET {parts.path or '/'} HTTP/1.1\r\nHost: {parts.netloc}\r\nUpgrade: websocket\r\n"
        "Connection: Upgrade\r\nSec-WebSocket-Version: 13\r\n"  # and never the blank line that ends it
    ).encode()
    hold_until = time.monotonic() + a.hold
    answers: Counter[str] = Counter()

    async def one() -> None:
        try:
            reader, writer = await asyncio.wait_for(asyncio.open_connection(host, port), 5)
        except (OSError, TimeoutError):
            stats.closed("refused")
            return
        stats.connections += 1
        try:
            writer.write(half)
            stats.bytes_sent += len(half)
            left = hold_until - time.monotonic()
            data = await asyncio.wait_for(reader.read(4096), max(left, 0.01))
            if data:
                status = data.split(b"\r\n", 1)[0].decode(errors="replace")
                answers[status] += 1
                stats.closed("answered")
            else:
                stats.closed("closed_by_hub")
        except TimeoutError:
            stats.closed("by_tool")  # still open at the end of the hold
        except OSError:
            stats.closed("reset")
        finally:
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()

    await asyncio.gather(*(one() for _ in range(a.conn_flood)))
    stats.notes["answers"] = dict(answers)


RUNNERS: dict[str, Callable[[Context, ScenarioReport], Awaitable[None]]] = {
    "flood": flood,
    "oversize": oversize,
    "malformed": malformed,
    "amplify": amplify,
    "read-flood": read_flood,
    "notices": notices,
    "slow-readers": slow_readers,
    "conn-flood": conn_flood,
}


# --- well-behaved clients --------------------------------------------------------------


class Honest:
    """K SDK clients on one channel, a publisher of numbers, and pings from every client."""

    def __init__(self, url: str, k: int, channel: str, rate: float, count: int, ping_every: float) -> None:
        self.report = ClientsReport(clients=k)
        self.channel = channel
        self.rate = rate
        self.count = count
        self.ping_every = ping_every
        self.clients = [
            Client(url, codec="json" if i % 2 else "msgpack", on_unrecovered=self._unrecovered) for i in range(k)
        ]
        self.publisher = Client(url)
        self.numbers: list[list[int]] = [[] for _ in range(k)]
        self.acked: list[int] = []
        self.latencies: list[float] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.stopping = asyncio.Event()

    def _unrecovered(self, sub: object) -> None:
        self.report.unrecovered += 1

    async def start(self) -> None:
        await self.publisher.connect()
        for i, client in enumerate(self.clients):
            await client.connect()
            sub = await client.subscribe(self.channel)
            self.tasks.append(asyncio.create_task(self._record(sub, self.numbers[i])))
            self.tasks.append(asyncio.create_task(self._ping(client)))
        self.tasks.append(asyncio.create_task(self._publish()))

    async def _record(self, sub: Any, numbers: list[int]) -> None:
        async for message in sub:
            if isinstance(message.data, dict) and isinstance(message.data.get("n"), int):
                numbers.append(message.data["n"])

    async def _ping(self, client: Client) -> None:
        while not self.stopping.is_set():
            try:
                self.latencies.append(await client.ping())
            except Exception:
                self.report.ping_failures += 1
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.stopping.wait(), self.ping_every)

    async def _publish(self) -> None:
        start = time.monotonic()
        for n in range(self.count):
            if self.stopping.is_set():
                break
            delay = start + n / self.rate - time.monotonic()
            if delay > 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self.stopping.wait(), delay)
                if self.stopping.is_set():
                    break
            self.report.published += 1
            try:
                await self.publisher.publish(self.channel, {"n": n})
            except Exception as exc:
                name = type(exc).__name__
                self.report.publish_errors[name] = self.report.publish_errors.get(name, 0) + 1
            else:
                self.acked.append(n)

    async def finish(self, settle: float) -> ClientsReport:
        """Stop publishing and pinging, wait up to ``settle`` s for deliveries, and count."""
        self.stopping.set()
        publisher = self.tasks[-1]
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(asyncio.shield(publisher), settle + 10)
        acked = set(self.acked)
        deadline = time.monotonic() + settle
        while time.monotonic() < deadline and not all(acked <= set(n) for n in self.numbers):
            await asyncio.sleep(0.05)
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
        for client in [*self.clients, self.publisher]:
            await client.close()
        r = self.report
        r.acked = len(acked)
        for numbers in self.numbers:
            got = Counter(numbers)
            r.delivered.append(len(numbers))
            r.lost += sum(1 for n in acked if got[n] == 0)
            r.duplicated += sum(c - 1 for c in got.values() if c > 1)
            r.reordered += sum(1 for x, y in itertools.pairwise(numbers) if y < x)
        lat = sorted(self.latencies)
        r.pings = len(lat)
        if lat:
            r.ping_max_ms = round(lat[-1] * 1000, 1)
            r.ping_p99_ms = round(lat[min(len(lat) - 1, math.ceil(0.99 * len(lat)) - 1)] * 1000, 1)
        return r


# --- the drill ----------------------------------------------------------------------------


async def drill(args: argparse.Namespace) -> Report:
    """Run the chosen scenarios against a hub (spawned or given) and return the report."""
    async with contextlib.AsyncExitStack() as stack:
        config: Path | None = Path(args.config) if args.config else None
        if args.spawn:
            config = config or QUICKSTART
            url, pid = await stack.enter_async_context(spawned_hub(config))
        else:
            url, pid = args.url, args.pid
        token = args.token
        if token is None and config is not None:
            token = await asyncio.to_thread(mint_token, config, "abuser")
        hub = HubReport(url=url, pid=pid, spawned=args.spawn)
        sampler = Sampler(pid)
        sampler.sample()
        hub.rss_start_kb = sampler.peak
        sampler.start()
        run = f"{time.time_ns():x}"
        honest = Honest(url, args.clients, f"abuse-good-{run}", args.rate, args.sequence, args.ping_every)
        await honest.start()
        scenarios: dict[str, ScenarioReport] = {}
        try:
            for name in args.scenarios:
                stats = scenarios[name] = ScenarioReport()
                ctx = Context(url, args, run, args.codec, token)
                started = time.monotonic()
                ctx.deadline = started + args.seconds
                sampler.mark()
                try:
                    # Each scenario's own loops stop at its deadline; this bounds its teardown too.
                    await asyncio.wait_for(RUNNERS[name](ctx, stats), args.seconds + 30)
                except TimeoutError:
                    stats.notes["timed_out"] = True
                except Exception as exc:  # a scenario that breaks is reported, the drill goes on
                    stats.notes["failed"] = f"{type(exc).__name__}: {exc}"
                stats.seconds = round(time.monotonic() - started, 2)
                stats.rss_peak_kb = sampler.mark()
        finally:
            clients = await honest.finish(args.settle)
            await sampler.stop()
        hub.alive = await healthy(url)
        sampler.sample()
        hub.rss_peak_kb = sampler.peak
        if pid is not None:
            hub.vm_hwm_kb = read_status(pid).get("VmHWM")
        return Report(hub, clients, scenarios)


def print_report(report: Report) -> None:
    h, c = report.hub, report.clients
    print(f"hub {h.url} pid={h.pid} spawned={h.spawned} alive={h.alive}")
    print(f"  rss start={h.rss_start_kb} kB  peak={h.rss_peak_kb} kB  VmHWM={h.vm_hwm_kb} kB")
    for name, s in report.scenarios.items():
        print(
            f"{name:13} {s.seconds:6.2f}s conns={s.connections} frames={s.frames} commands={s.commands} "
            f"sent={s.bytes_sent} B replies={s.replies} received={s.bytes_received} B rss_peak={s.rss_peak_kb} kB"
        )
        print(f"{'':13} errors={s.errors} closes={s.closes}" + (f" {s.notes}" if s.notes else ""))
    print(
        f"clients: {c.clients} published={c.published} acked={c.acked} delivered={c.delivered} lost={c.lost} "
        f"duplicated={c.duplicated} reordered={c.reordered} unrecovered={c.unrecovered} "
        f"publish_errors={c.publish_errors}"
    )
    print(f"  pings={c.pings} failures={c.ping_failures} max={c.ping_max_ms} ms p99={c.ping_p99_ms} ms")
    print("OK" if report.ok else "NOT OK")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    where = p.add_mutually_exclusive_group(required=True)
    where.add_argument("--url", help="the hub's WebSocket URL, e.g. ws://127.0.0.1:8000/ws")
    where.add_argument("--spawn", action="store_true", help="start a hub of its own (quickstart.toml, a free port)")
    p.add_argument("--pid", type=int, help="the hub's process id, for its memory figures (with --url)")
    p.add_argument("--config", help="settings file: the hub's with --spawn; its token_secret signs a chat user")
    p.add_argument("--token", help="a connection token for the chat scenarios (instead of --config)")
    p.add_argument("--scenarios", default=",".join(SCENARIOS), help=f"comma-separated, of: {','.join(SCENARIOS)}")
    p.add_argument("--codec", choices=("msgpack", "json"), default="msgpack", help="the attackers' codec")
    p.add_argument("--seconds", type=float, default=10.0, help="time cap of each scenario")
    p.add_argument("--max-frame-size", type=int, default=65536, help="the hub's max_frame_size")
    p.add_argument("--flood-frames", type=int, default=2000)
    p.add_argument("--flood-commands", type=int, default=MAX_COMMANDS_PER_FRAME)
    p.add_argument("--oversize", type=int, default=20, help="connections sending one oversize frame each")
    p.add_argument("--malformed", type=int, default=500, help="malformed frames")
    p.add_argument("--amplify-clients", type=int, default=1)
    p.add_argument("--amplify-pubs", type=int, default=100)
    p.add_argument("--amplify-size", type=int, default=60_000, help="bytes of each publication")
    p.add_argument("--amplify-frames", type=int, default=20)
    p.add_argument("--amplify-commands", type=int, default=20, help="commands in each amplifying frame")
    p.add_argument(
        "--amplify-with",
        choices=("both", "history", "subscribe"),
        default="both",
        help="frames of history, of subscribe at offset 0 + unsubscribe, or both in turn",
    )
    p.add_argument("--read-channels", type=int, default=10_000)
    p.add_argument("--notices", type=int, default=1000, help="typing and as many read commands")
    p.add_argument("--slow-readers", type=int, default=5)
    p.add_argument("--slow-pushes", type=int, default=300)
    p.add_argument("--slow-size", type=int, default=30_000)
    p.add_argument("--conn-flood", type=int, default=200, help="half-open handshakes")
    p.add_argument("--hold", type=float, default=3.0, help="seconds to hold them")
    p.add_argument("--clients", type=int, default=4, help="well-behaved clients")
    p.add_argument("--rate", type=float, default=20.0, help="their publisher's messages per second")
    p.add_argument("--sequence", type=int, default=10_000, help="most numbered messages published")
    p.add_argument("--ping-every", type=float, default=0.2)
    p.add_argument("--settle", type=float, default=5.0, help="seconds to wait for the last deliveries")
    p.add_argument("--seed", type=int, default=1)
    p.add_argument("--json", metavar="FILE", help="write the report as JSON to FILE ('-': stdout)")
    args = p.parse_args(argv)
    args.scenarios = [s for s in args.scenarios.split(",") if s]
    unknown = set(args.scenarios) - set(SCENARIOS)
    if unknown:
        p.error(f"unknown scenarios: {', '.join(sorted(unknown))}")
    if args.pid is not None and args.spawn:
        p.error("--pid is for --url: a spawned hub's pid is known")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    report = asyncio.run(drill(args))
    if args.json == "-":
        print(json.dumps(report.as_dict(), indent=2))
    else:
        print_report(report)
        if args.json:
            Path(args.json).write_text(json.dumps(report.as_dict(), indent=2) + "\n", encoding="utf-8")
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
