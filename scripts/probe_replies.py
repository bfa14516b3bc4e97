"""Measure reply amplification and read floods against a hub it starts (memory engine).

Usage::

    python scripts/probe_replies.py [--source DIR] [--publications 100] [--size 60000] [--json]

For each step it starts ``python -m realtime serve`` from ``--source`` (a checkout of the
hub; default: this one) on a free port, with an open default namespace, then:

1. publishes ``--publications`` messages of ``--size`` bytes to channel ``probe``;
2. one of: ``history``: one client sends one frame of 100 ``history`` commands and reads nothing;
   ``recover``: one client sends one frame of 50 pairs (subscribe at offset 0 of the
   stream's epoch, unsubscribe) and reads nothing;
   ``reads``: 20,000 ``history`` commands on never-published channel names, in frames of 100.

For each step it prints the hub's resident memory growth (VmRSS after minus before),
its peak so far (VmHWM), how the attacking connection ended, and the slowest ping of
another client pinging meanwhile. Nothing here asserts: it reports numbers.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import msgpack  # type: ignore[import-untyped]
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

HERE = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(HERE))

from protocol.limits import MSGPACK_SUBPROTOCOL  # noqa: E402

CONFIG = """allow_anonymous = true
[namespaces.default]
subscribe = "anyone"
publish = "clients"
history_size = 100
history_ttl = 3600
"""


#: The probes, each against a hub of its own.
STEPS = ("history", "recover", "reads")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def memory(pid: int) -> dict[str, int]:
    """VmRSS and VmHWM of ``pid``, in kB."""
    out: dict[str, int] = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            name, value = line.split(":", 1)
            out[name] = int(value.split()[0])
    return out


def frame(*commands: dict[str, Any]) -> bytes:
    return b"".join(msgpack.packb(c) for c in commands)


async def open_client(url: str) -> ClientConnection:
    ws = await connect(url, subprotocols=[MSGPACK_SUBPROTOCOL], max_size=None, compression=None)  # type: ignore[list-item]
    await ws.send(frame({"id": 1, "cmd": "connect"}))
    await ws.recv()
    return ws


async def request(ws: ClientConnection, command: dict[str, Any]) -> dict[str, Any]:
    await ws.send(frame(command))
    while True:
        raw = await ws.recv()
        assert isinstance(raw, bytes)
        unpacker = msgpack.Unpacker(raw=False)
        unpacker.feed(raw)
        for message in unpacker:
            if message.get("id") == command["id"]:
                result: dict[str, Any] = message.get("result") or {}
                return result


async def pinger(url: str, stop: asyncio.Event) -> float:
    """The slowest ping round trip (seconds) of a well-behaved client until ``stop``."""
    ws = await open_client(url)
    worst, n = 0.0, 100
    try:
        while not stop.is_set():
            n += 1
            start = time.perf_counter()
            await request(ws, {"id": n, "cmd": "ping"})
            worst = max(worst, time.perf_counter() - start)
            await asyncio.sleep(0.01)
    finally:
        await ws.close()
    return worst


async def attack(url: str, pid: int, payload: bytes, settle: float) -> dict[str, Any]:
    """Send one frame and read nothing; report memory and how the connection ended."""
    before = memory(pid)
    stop = asyncio.Event()
    ping = asyncio.create_task(pinger(url, stop))
    ws = await open_client(url)
    await ws.send(payload)
    ended = "open"
    try:
        await asyncio.wait_for(ws.wait_closed(), settle)
        ended = f"closed {ws.close_code}"
    except TimeoutError:
        pass
    after = memory(pid)
    stop.set()
    worst = await ping
    await ws.close()
    return {
        "rss_growth_mb": round((after["VmRSS"] - before["VmRSS"]) / 1024, 1),
        "peak_rss_mb": round(after["VmHWM"] / 1024, 1),
        "attacker": ended,
        "slowest_other_ping_ms": round(worst * 1000, 1),
    }


async def probe(url: str, pid: int, step: str, publications: int, size: int) -> dict[str, Any]:
    ws = await open_client(url)
    epoch = ""
    for i in range(publications):
        result = await request(ws, {"id": 10 + i, "cmd": "publish", "channel": "probe", "data": "x" * size})
        epoch = result.get("epoch", epoch)
    await ws.close()
    report: dict[str, Any] = {"idle_rss_mb": round(memory(pid)["VmRSS"] / 1024, 1)}
    if step == "history":
        history = frame(*({"id": 10 + i, "cmd": "history", "channel": "probe"} for i in range(100)))
        report.update(await attack(url, pid, history, 5.0))
    elif step == "recover":
        pairs: list[dict[str, Any]] = []
        for i in range(50):
            pairs.append({"id": 10 + 2 * i, "cmd": "subscribe", "channel": "probe", "offset": 0, "epoch": epoch})
            pairs.append({"id": 11 + 2 * i, "cmd": "unsubscribe", "channel": "probe"})
        report.update(await attack(url, pid, frame(*pairs), 5.0))
    else:
        before = memory(pid)
        ws = await open_client(url)
        start = time.perf_counter()
        for n in range(200):
            names = (f"never-{n}-{i}" for i in range(100))
            await ws.send(frame(*({"id": 10 + i, "cmd": "history", "channel": c} for i, c in enumerate(names))))
            got = 0
            while got < 100:
                raw = await ws.recv()
                unpacker = msgpack.Unpacker(raw=False)
                unpacker.feed(raw)
                got += sum(1 for _ in unpacker)
        await ws.close()
        after = memory(pid)
        report.update(
            commands=20_000,
            seconds=round(time.perf_counter() - start, 1),
            rss_growth_mb=round((after["VmRSS"] - before["VmRSS"]) / 1024, 1),
            peak_rss_mb=round(after["VmHWM"] / 1024, 1),
        )
    return report


def run_step(source: str, step: str, publications: int, size: int) -> dict[str, Any]:
    """Start a hub from ``source``, run one step against it, stop it."""
    port = free_port()
    with tempfile.NamedTemporaryFile("w", suffix=".toml", delete=False) as config:
        config.write(CONFIG)
    env = {**os.environ, "PYTHONPATH": source, "REALTIME_LOG_LEVEL": "warning"}
    hub = subprocess.Popen(
        [sys.executable, "-m", "realtime", "serve", "--config", config.name, "--port", str(port)],
        cwd=source,
        env=env,
    )
    try:
        deadline = time.monotonic() + 20
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=1).close()
                break
            except OSError:
                if time.monotonic() > deadline or hub.poll() is not None:
                    raise SystemExit("the hub did not start") from None
                time.sleep(0.05)
        try:
            return asyncio.run(probe(f"ws://127.0.0.1:{port}/ws", hub.pid, step, publications, size))
        except ConnectionClosed as exc:
            raise SystemExit(f"a probe connection was closed: {exc}") from None
    finally:
        hub.terminate()
        hub.wait(10)
        os.unlink(config.name)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--source", default=str(HERE), help="the hub checkout to run (default: this one)")
    parser.add_argument("--publications", type=int, default=100)
    parser.add_argument("--size", type=int, default=60_000)
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    args = parser.parse_args(argv)
    report = {step: run_step(args.source, step, args.publications, args.size) for step in STEPS}
    if args.json:
        print(json.dumps(report))
    else:
        for step, values in report.items():
            print(f"{step}: {values}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
