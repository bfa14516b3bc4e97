"""`realtime serve` as a real process: starts with no flags, drains on SIGTERM."""

from __future__ import annotations

import asyncio
import signal
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from protocol.codes import CloseCode
from protocol.messages import Disconnect

from .helpers import start_serve
from .wsclient import RawClient

QUICKSTART = Path(__file__).resolve().parent.parent / "quickstart.toml"


@pytest.fixture
async def serve_proc() -> AsyncIterator[tuple[asyncio.subprocess.Process, int]]:
    proc, port = await start_serve("--config", str(QUICKSTART), "--drain-window", "0.5")
    yield proc, port
    if proc.returncode is None:
        proc.kill()
        await proc.wait()


async def test_sigterm_drains_with_reconnect_advice(serve_proc: tuple[asyncio.subprocess.Process, int]) -> None:
    proc, port = serve_proc
    url = f"ws://127.0.0.1:{port}/ws"
    clients = [await RawClient.open(url) for _ in range(4)]
    await clients[0].subscribe("c")
    await clients[1].publish("c", "before shutdown")
    assert (await clients[0].publication()).channel == "c"
    proc.send_signal(signal.SIGTERM)
    for c in clients:
        push = await c.disconnect_push()
        assert push == Disconnect(CloseCode.SHUTDOWN, "shutdown", True)
    async with asyncio.timeout(10):
        assert await proc.wait() == 0
    assert proc.stderr is not None
    log = await proc.stderr.read()
    # One line per connection closing, and no payloads in the log.
    assert log.count(b"connection closed") == 4
    assert b"before shutdown" not in log
    for c in clients:
        await c.close()
