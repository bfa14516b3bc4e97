"""Helpers shared by the test modules (fixtures live in conftest.py), and the worked examples of docs/protocol.md.

``python -m tests.helpers`` prints the examples' JSON and msgpack hex in the
form docs/protocol.md uses; tests/test_codec_roundtrip.py checks that the docs
hold exactly these bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import importlib.util
import inspect
import os
import re
import resource
import sys
import time
import uuid
from collections.abc import Awaitable, Callable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import jwt
import msgpack  # type: ignore[import-untyped]
import pytest
from websockets.exceptions import ConnectionClosed

from protocol import (
    ClientInfo,
    Codec,
    Command,
    Connect,
    ConnectResult,
    Disconnect,
    EmptyResult,
    Error,
    History,
    HistoryResult,
    Join,
    JsonCodec,
    Leave,
    MsgpackCodec,
    Ping,
    Publication,
    Publish,
    PublishResult,
    Read,
    ReadNotice,
    ReadResult,
    Refresh,
    RefreshResult,
    Reply,
    Result,
    Rpc,
    RpcResult,
    ServerMessage,
    StateChange,
    StateResult,
    StateSet,
    StatusQuery,
    StatusResult,
    StreamPosition,
    Subscribe,
    SubscribeResult,
    Typing,
    TypingNotice,
    UserStatus,
    codec_for,
)
from protocol import messages as m
from protocol.codec import JSON_SUBPROTOCOL, MSGPACK_SUBPROTOCOL
from protocol.codes import CloseCode
from protocol.errors import DisconnectError, ProtocolError
from protocol.wire import NO_RESULTS, Expected
from realtime.client import Client, Message, Subscription
from realtime.config import Settings
from realtime.engines.base import HistoryOptions
from realtime.engines.redis import RedisEngine
from realtime.namespaces import Namespace, Namespaces
from realtime.server import WS_PATH, HubServer

from .wsclient import RawClient

T = TypeVar("T")

# --- time ----------------------------------------------------------------------

#: One unit of time for tests (seconds); waits are multiples of it.
#: The repository's root.
ROOT = Path(__file__).resolve().parent.parent
MS = 0.001
#: Upper bound of any single wait for a client command or an event.
WAIT = 5000 * MS
#: Upper bound of a wait on Redis: a restart, a failover, a reconnection, a reroute.
REDIS_WAIT = 10.0


async def until(
    check: Callable[[], bool] | Callable[[], Awaitable[bool]], timeout: float = REDIS_WAIT, what: str = "condition"
) -> None:
    """Poll ``check`` (plain or async) until it is true, for state no awaitable announces;
    fail after ``timeout`` seconds, naming ``what`` was awaited."""
    deadline = time.monotonic() + timeout
    while True:
        done = check()
        if inspect.isawaitable(done):
            done = await done
        if done:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(10 * MS)


# --- hubs ------------------------------------------------------------------------

#: The HS256 secret test hubs verify tokens with (see :func:`make_token`).
TEST_SECRET = "test-secret-that-is-long-enough-for-hs256!!"
#: Test hubs: anonymous clients allowed, and channels without a colon open to
#: everyone for subscribing and publishing, so protocol tests need no tokens.
OPEN_DEFAULT = Namespace(subscribe="anyone", publish="clients")


def namespaces(*extra: Namespace) -> Namespaces:
    """The open default namespace plus ``extra``."""
    return Namespaces([OPEN_DEFAULT, *extra])


def make_token(user: str, *, secret: str = TEST_SECRET, ttl: float | None = 3600, **claims: Any) -> str:
    """An HS256 connection (or, with ``channel=``, subscription) token for ``user``."""
    now = time.time()
    payload: dict[str, Any] = {"sub": user, "iat": int(now), **claims}
    if ttl is not None:
        payload.setdefault("exp", int(now + ttl))
    return jwt.encode(payload, secret, algorithm="HS256")


class RunningHub:
    """A hub served in this process; ``stop``/``start`` restart it on the same port."""

    def __init__(self, settings: Settings) -> None:
        self.server = HubServer(settings)
        self.running = False

    @property
    def port(self) -> int:
        return self.server.port

    @property
    def url(self) -> str:
        return f"ws://127.0.0.1:{self.port}{WS_PATH}"

    @property
    def http_url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    @property
    def hub(self):  # type: ignore[no-untyped-def]
        return self.server.hub

    async def start(self) -> None:
        if not self.running:
            # A fresh app (and a fresh memory engine) each time, as after a process restart.
            self.server = HubServer(dataclasses.replace(self.server.settings, port=self.port))
            await self.server.start()
            self.running = True

    async def stop(self, drain_window: float = 0.0) -> None:
        if self.running:
            self.running = False
            await self.server.stop(drain_window)


#: The ``hub_factory`` fixture: ``await hub_factory(**settings)`` starts a hub.
HubFactory = Callable[..., Awaitable[RunningHub]]


# --- raw protocol clients (tests/wsclient.py) ----------------------------------


async def user(hub: RunningHub, name: str, *channels: str, **kwargs: Any) -> RawClient:
    """A connection of ``name`` ("" = anonymous) subscribed to ``channels``."""
    client = await RawClient.open(hub.url, token=make_token(name) if name else None, **kwargs)
    for channel in channels:
        await client.subscribe(channel)
    return client


async def push(client: RawClient, cls: type[T], timeout: float = 2.0) -> T:
    """The client's next push, which must be a ``cls``."""
    msg = await client.next_push(timeout)
    assert isinstance(msg, cls), msg
    return msg


def result(reply: Reply, cls: type[T]) -> T:
    """The result of a successful reply, which must be a ``cls``."""
    assert reply.error is None, reply.error
    assert isinstance(reply.result, cls), reply.result
    return reply.result


def error(reply: Reply) -> int:
    """The error code of a failed reply."""
    assert reply.error is not None, reply.result
    return reply.error.code


async def closed_code(client: RawClient) -> int:
    """Wait for the hub to close ``client`` and return the close code."""
    with pytest.raises(ConnectionClosed) as info:
        while True:
            await client.recv()
    rcvd = info.value.rcvd
    assert rcvd is not None, "closed without a close frame"
    return rcvd.code


def unpack(data: bytes) -> Any:
    """A msgpack value as the hub holds it (``data``, state values), decoded."""
    return msgpack.unpackb(data, strict_map_key=False)


# --- the Python SDK (realtime.client) --------------------------------------------


def fast(url: str, **options: Any) -> Client:
    """A client that reconnects fast: tests restart hubs and expect clients back quickly."""
    return Client(url, **{"min_backoff": 10 * MS, "max_backoff": 50 * MS, "command_timeout": WAIT, **options})


class SpyCodec:
    """The real codec, recording what the client sends and receives."""

    def __init__(self, inner: Codec) -> None:
        self.inner = inner
        self.name = inner.name
        self.binary = inner.binary
        self.separator = inner.separator
        self.sent: list[m.Command] = []
        self.received: list[m.ServerMessage] = []

    def decode_commands(self, frame: bytes) -> list[m.Command | ProtocolError]:
        return self.inner.decode_commands(frame)

    def encode(self, message: m.ServerMessage) -> bytes:
        return self.inner.encode(message)

    def encode_command(self, command: m.Command) -> bytes:
        self.sent.append(command)
        return self.inner.encode_command(command)

    def decode_messages(self, frame: bytes, expected: Expected = NO_RESULTS) -> list[m.ServerMessage]:
        messages = self.inner.decode_messages(frame, expected)
        self.received.extend(messages)
        return messages

    def subscribes(self, channel: str) -> list[m.Subscribe]:
        return [c for c in self.sent if isinstance(c, m.Subscribe) and c.channel == channel]

    def subscribe_results(self) -> list[m.SubscribeResult]:
        return [r.result for r in self.received if isinstance(r, m.Reply) and isinstance(r.result, m.SubscribeResult)]


def spy(codec: str = "msgpack") -> SpyCodec:
    return SpyCodec(codec_for(MSGPACK_SUBPROTOCOL if codec == "msgpack" else JSON_SUBPROTOCOL))


async def take(sub: Subscription, n: int) -> list[Message]:
    async with asyncio.timeout(WAIT):
        return [await anext(sub) for _ in range(n)]


def kick(hub: RunningHub, client: Client, code: CloseCode) -> None:
    """Make the hub close ``client``'s connection with ``code`` (and its Disconnect push)."""
    hub.hub.connections[client.client_id].close(DisconnectError(code))


# --- Redis -----------------------------------------------------------------------


class Proxy:
    """A TCP proxy to ``127.0.0.1:target``; :meth:`silence` makes open connections go quiet.

    Silenced connections stay open and swallow what either side sends, like a
    peer that vanished without a FIN or RST. Until :meth:`heal`, new
    connections are closed at once (the path to Redis is down); after it they
    pass normally. Given several targets it is a small load balancer: each new
    connection goes to the first target that accepts it. :attr:`rate` (bytes per
    second, 0 = unlimited) slows what comes back from the targets.
    """

    def __init__(self, *targets: int) -> None:
        self.targets = list(targets)
        self.port = 0
        self._server: asyncio.Server | None = None
        self._pipes: list[dict[str, Any]] = []
        self._tasks: set[asyncio.Task[None]] = set()
        self.connections = 0
        self.refusing = False
        self.rate = 0.0

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = self._server.sockets[0].getsockname()[1]

    def silence(self) -> None:
        self.refusing = True
        for pipe in self._pipes:
            pipe["silent"] = True

    def heal(self) -> None:
        self.refusing = False

    def drop(self) -> None:
        """Cut every open connection at once (an RST both ways); new ones pass as before."""
        pipes, self._pipes = self._pipes, []
        for pipe in pipes:
            for w in pipe["writers"]:
                w.transport.abort()

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.refusing:
            writer.transport.abort()
            return
        self.connections += 1
        for target in self.targets:
            try:
                up_reader, up_writer = await asyncio.open_connection("127.0.0.1", target)
                break
            except OSError:
                continue
        else:
            writer.close()
            return
        pipe: dict[str, Any] = {"silent": False, "writers": (writer, up_writer)}
        self._pipes.append(pipe)
        for src, dst, slowed in ((reader, up_writer, False), (up_reader, writer, True)):
            task = asyncio.create_task(self._forward(pipe, src, dst, slowed))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)

    async def _forward(
        self, pipe: dict[str, Any], src: asyncio.StreamReader, dst: asyncio.StreamWriter, slowed: bool
    ) -> None:
        with contextlib.suppress(OSError):
            while data := await src.read(65536):
                if slowed and self.rate:  # a trickle: 1 kB at a time
                    for i in range(0, len(data), 1024):
                        if not pipe["silent"]:
                            dst.write(data[i : i + 1024])
                        await asyncio.sleep(min(1024, len(data) - i) / (self.rate or 1e9))
                elif not pipe["silent"]:
                    dst.write(data)
        if not pipe["silent"]:
            dst.close()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
        for task in list(self._tasks):
            task.cancel()
        for pipe in self._pipes:
            for w in pipe["writers"]:
                w.transport.abort()
        await asyncio.gather(*self._tasks, return_exceptions=True)


# --- the worked examples of docs/protocol.md -----------------------------------------


def pack(value: object) -> bytes:
    """``data`` as the hub holds it: the msgpack encoding of a value."""
    result: bytes = msgpack.packb(value)
    return result


def server_roundtrip(codec: Codec, *messages: ServerMessage) -> list[ServerMessage]:
    """Encode messages on the server, in one frame, and decode them as a client would."""
    frame = codec.separator.join(codec.encode(m) for m in messages)
    return codec.decode_messages(frame, expected_results(*messages))


def expected_results(*messages: object) -> dict[int, type[Result]]:
    """What a client that sent the commands these replies answer expects: id -> result type."""
    return {m.id: type(m.result) for m in messages if isinstance(m, Reply) and m.result is not None}


def client_roundtrip(codec: Codec, *commands: Command) -> list[object]:
    """Encode commands on the client, in one frame, and decode them as the server would."""
    frame = codec.separator.join(codec.encode_command(c) for c in commands)
    return list(codec.decode_commands(frame))


_HI = pack({"text": "hi"})
# chat:lobby is a chat channel (quickstart.toml): its publications carry mid and time.
_CHAT_PUB = Publication("chat:lobby", _HI, 42, "Xq3v", ClientInfo("alice", "c0ffee"), mid="01HV7Z", time=1767225600123)

#: name -> the message; docs/protocol.md shows each in JSON and as msgpack hex.
EXAMPLES: dict[str, Command | ServerMessage] = {
    "connect": Connect(1, token="abc.def.ghi", name="swift", version="1.2.0"),
    "rpc": Rpc(14, "profile", pack({"id": 7})),
    "rpc-reply": Reply(14, RpcResult(pack({"name": "Bob"}))),
    "rpc-error": Reply(14, error=Error(1404, "no such profile")),
    "connect-reply": Reply(1, ConnectResult("c0ffee", "0.1.0", 25.0, "alice", expires=1767225600)),
    "subscribe": Subscribe(2, "chat:lobby"),
    "subscribe-reply": Reply(2, SubscribeResult(41, "Xq3v", recoverable=True)),
    "publish": Publish(3, "chat:lobby", _HI),
    "publish-reply": Reply(3, PublishResult(42, "Xq3v", mid="01HV7Z", time=1767225600123)),
    "publication": _CHAT_PUB,
    "resubscribe": Subscribe(4, "chat:lobby", StreamPosition(41, "Xq3v")),
    "resubscribe-reply": Reply(
        4,
        SubscribeResult(42, "Xq3v", recoverable=True, recovered=True, publications=(_CHAT_PUB,)),
    ),
    "ping": Ping(5),
    "ping-reply": Reply(5, EmptyResult()),
    "error-reply": Reply(6, error=Error(103, "permission denied")),
    "busy-reply": Reply(6, error=Error(110, "too many commands", retry_after=1500)),
    "disconnect": Disconnect(4001, "shutdown", True),
    "disconnect-overloaded": Disconnect(4008, "too many connects", True, 2300),
    "refresh": Refresh(7, "jkl.mno.pqr"),
    "refresh-reply": Reply(7, RefreshResult(1767229200)),
    "history": History(8, "chat:lobby", limit=1, before=43),
    "history-reply": Reply(8, HistoryResult((_CHAT_PUB,), 43, "Xq3v")),
    "history-newest": History(13, "chat:lobby"),
    "history-truncated-reply": Reply(13, HistoryResult((_CHAT_PUB,), 43, "Xq3v", truncated=True)),
    "typing": Typing(9, "chat:lobby"),
    "typing-push": TypingNotice("chat:lobby", "alice", True, 6.0),
    "read": Read(10, "chat:lobby", 42),
    "read-reply": Reply(10, ReadResult(42)),
    "read-push": ReadNotice("chat:lobby", "bob", 42),
    "state-set": StateSet(11, "live:scores", "match-1", pack({"home": 1, "away": 0}), version=3),
    "state-set-reply": Reply(11, StateResult(4)),
    "state-push": StateChange("live:scores", "match-1", 5, patch=pack({"away": 1})),
    "join": Join("chat:lobby", "bob", pack({"name": "Bob"})),
    "leave": Leave("chat:lobby", "bob"),
    "status": StatusQuery(12, ("alice", "bob")),
    "status-reply": Reply(12, StatusResult((UserStatus("alice", True), UserStatus("bob", False, 1767225600000)))),
}


def encode_example(codec: Codec, message: Command | ServerMessage) -> bytes:
    if isinstance(message, Command):
        return codec.encode_command(message)
    return codec.encode(message)


def hex_lines(data: bytes, per_line: int = 16) -> str:
    """Bytes as lowercase hex, space-separated, ``per_line`` bytes a line."""
    return "\n".join(data[i : i + per_line].hex(" ") for i in range(0, len(data), per_line))


def main() -> None:
    for name, message in EXAMPLES.items():
        print(f"<!-- example: {name} json -->\n```json")
        print(encode_example(JsonCodec(), message).decode())
        print(f"```\n<!-- example: {name} msgpack -->\n```text")
        print(hex_lines(encode_example(MsgpackCodec(), message)))
        print("```\n")


if __name__ == "__main__":
    main()


# --- engines under test (the engine contract suites) ---------------------------------

#: History kept in the engine contract tests.
KEEP = HistoryOptions(size=10, ttl=60)


class Recorder:
    """The node side: collects what the engine delivers; :meth:`until` awaits a condition."""

    def __init__(self) -> None:
        self.pubs: list[Publication] = []
        self.events: list[tuple[str, bytes]] = []
        self.controls: list[bytes] = []
        self.resyncs = 0
        self.arrived = asyncio.Event()
        self._changed = asyncio.Event()

    def _note(self) -> None:
        self._changed.set()

    def on_publication(self, pub: Publication) -> None:
        self.pubs.append(pub)
        self.arrived.set()
        self._note()

    def on_event(self, channel: str, event: bytes) -> None:
        self.events.append((channel, event))
        self._note()

    def on_control(self, message: bytes) -> None:
        self.controls.append(message)
        self._note()

    def on_resync(self) -> None:
        self.resyncs += 1
        self._note()

    async def until(self, condition: Callable[[], bool], timeout: float = WAIT) -> None:
        async with asyncio.timeout(timeout):
            while not condition():
                self._changed.clear()
                await self._changed.wait()


def unique_prefix() -> str:
    return "t" + uuid.uuid4().hex[:12]


#: Makes started Redis engines of one deployment (the ``nodes`` fixture).
Nodes = Callable[..., Awaitable[RedisEngine]]

#: Engine -> what it delivered, for the engines the ``nodes`` fixture made.
RECORDERS: dict[int, Recorder] = {}


def recorder(eng: RedisEngine) -> Recorder:
    return RECORDERS[id(eng)]


def load_script(name: str) -> Any:
    """A module of ``scripts/`` (not a package), loaded by file name, e.g. ``load_script("fault_check")``."""
    spec = importlib.util.spec_from_file_location(name, ROOT / "scripts" / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses look their module up while the script runs
    spec.loader.exec_module(module)
    return module


#: What ``realtime serve`` prints on stderr once it listens (with ``--port 0``: the port it took).
LISTENING = re.compile(rb"listening on wss?://[\d.]+:(\d+)/ws")


async def start_serve(
    *args: str,
    env: dict[str, str] | None = None,
    lines: list[bytes] | None = None,
    timeout: float = 15.0,
    open_files: tuple[int, int] | None = None,
) -> tuple[asyncio.subprocess.Process, int]:
    """``python -m realtime serve --port 0 ARGS`` as a real process, once it listens: it and its port.

    ``env`` is added to this process's environment; the stderr lines read until then are appended to
    ``lines``. ``open_files`` (soft, hard) is the process's open-file limit from its start (at most
    this process's own). A hub that exits or does not listen in time is killed and fails the test.
    """
    limit = None if open_files is None else partial(resource.setrlimit, resource.RLIMIT_NOFILE, open_files)
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "realtime",
        "serve",
        "--port",
        "0",
        *args,
        stderr=asyncio.subprocess.PIPE,
        env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
        preexec_fn=limit,
    )
    assert proc.stderr is not None
    seen = [] if lines is None else lines
    try:
        async with asyncio.timeout(timeout):
            while True:
                line = await proc.stderr.readline()
                assert line, f"the hub exited before listening: {b''.join(seen[-20:])!r}"
                seen.append(line)
                if m := LISTENING.search(line):
                    return proc, int(m.group(1))
    except BaseException:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
        raise
