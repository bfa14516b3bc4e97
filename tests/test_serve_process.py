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


def _open_files(pid: int) -> tuple[int, int]:
    """The process's open-file limit (soft, hard) as the kernel holds it."""
    for line in Path(f"/proc/{pid}/limits").read_text().splitlines():
        if line.startswith("Max open files"):
            soft, hard = line.split()[3:5]
            return int(soft), int(hard)
    raise AssertionError("no open-file limit in /proc")


async def _serve_with_limit(
    open_files: tuple[int, int], env: dict[str, str] | None = None
) -> tuple[asyncio.subprocess.Process, list[bytes]]:
    lines: list[bytes] = []
    proc, _ = await start_serve("--config", str(QUICKSTART), open_files=open_files, env=env, lines=lines)
    return proc, lines


async def test_serve_raises_its_soft_open_file_limit_to_the_hard_one() -> None:
    hard = 10_000  # at most this machine's hard limit (20,000)
    proc, lines = await _serve_with_limit((256, hard))
    try:
        assert _open_files(proc.pid) == (hard, hard)
        assert any(b"open-file limit raised from 256 to 10000" in line for line in lines)
        assert not any(b"open-file limit (" in line for line in lines)  # the defaults fit 10,000: no warning
    finally:
        proc.kill()
        await proc.wait()


async def test_serve_warns_when_max_connections_and_max_pending_pass_the_open_file_limit() -> None:
    env = {"REALTIME_MAX_CONNECTIONS": "5000", "REALTIME_MAX_PENDING": "100"}
    proc, lines = await _serve_with_limit((1024, 4096), env)
    try:
        assert _open_files(proc.pid) == (4096, 4096)
        warned = [line for line in lines if b"max_connections (5000) plus max_pending (100)" in line]
        assert len(warned) == 1 and b"open-file limit (4096)" in warned[0]
    finally:
        proc.kill()
        await proc.wait()


async def test_serve_warns_when_max_pending_passes_half_the_open_file_limit() -> None:
    proc, lines = await _serve_with_limit((1024, 4096))  # max_pending 4,096 by default
    try:
        assert any(b"max_pending (4096) is above half the open-file limit (4096)" in line for line in lines)
        assert not any(b"max_connections (" in line for line in lines)  # max_connections 0: no limit to check
    finally:
        proc.kill()
        await proc.wait()
