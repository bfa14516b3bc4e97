"""The controller's publisher: one WebSocket client publishing timestamped payloads, replies by id.

Each publication's data is ``payload`` bytes: the publisher's
``time.monotonic_ns()`` in the first 8 bytes, padded with ``x`` (which cannot
form the publication marker that counting clients look for). It keeps, per
channel, the last offset and epoch the hub acknowledged, so clients can be
checked against them at the end.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import jwt

from .clients import Client, error_kind
from .run import Run
from .stats import Latency, Stats
from .wsclient import LoadtestError, Target, monotonic_ns, open_client

#: The JWT subject of the publisher (with --jwt-secret).
PUBLISHER_USER = "lt-publisher"


class Publisher(Client):
    """Publishes to channels; ``pending`` holds the ids (and send times) not yet answered."""

    def __init__(self, target: Target, stats: Stats, payload: int) -> None:
        super().__init__(target, stats)
        self.pad = b"x" * (payload - 8)
        self.pending: dict[int, int] = {}  # command id -> monotonic ns sent
        self.published = 0  # sent
        self.acked = 0
        #: channel -> (epoch, last acknowledged offset)
        self.positions: dict[str, tuple[str, int]] = {}
        self.acks = Latency()  # publish -> reply
        self.progress = asyncio.Event()
        self._channels: dict[int, str] = {}

    @classmethod
    async def open(cls, run: Run, target: Target, payload: int, acks: Latency | None = None) -> Publisher:
        """Connect a publisher to ``target`` (with a token given --jwt-secret); LoadtestError if it cannot."""
        try:
            pub = await open_client(lambda: cls(target, run.stats, payload), target, timeout=10.0)
            command: dict[str, Any] = {"cmd": "connect", "name": "realtime-loadtest-publisher"}
            if run.args.jwt_secret:
                now = int(time.time())
                claims = {"sub": PUBLISHER_USER, "iat": now, "exp": now + 86400}
                command["token"] = jwt.encode(claims, run.args.jwt_secret, algorithm="HS256")
            await pub.command(command)
        except (OSError, TimeoutError, LoadtestError) as exc:
            run.stats.error(error_kind("publisher connect", exc))
            raise LoadtestError(f"the publisher could not connect to {target.url}: {exc}") from None
        if acks is not None:
            pub.acks = acks
        pub.mark_ready()
        return pub

    def last_offset(self, channel: str) -> int:
        return self.positions.get(channel, ("", 0))[1]

    def publish(self, channel: str, count: int = 1) -> None:
        """Send ``count`` publishes to ``channel`` in one write."""
        now = monotonic_ns()
        data = now.to_bytes(8, "big") + self.pad
        commands = []
        for _ in range(count):
            id = self.next_id
            self.next_id += 1
            self.pending[id] = now
            self._channels[id] = channel
            commands.append({"id": id, "cmd": "publish", "channel": channel, "data": data})
        self.published += count
        self.send(*commands)

    def on_reply(self, message: dict[str, Any]) -> None:
        id = message.get("id", -1)
        sent = self.pending.pop(id, None)
        channel = self._channels.pop(id, "")
        if sent is None:
            self.stats.error("reply to an unknown id")
            return
        self.acks.record_ns(monotonic_ns() - sent)
        result = message.get("result")
        if isinstance(result, dict):
            self.acked += 1
            self.stats.sent += 1
            epoch, offset = str(result.get("epoch", "")), int(result.get("offset", 0))
            known = self.positions.get(channel)
            if known is None or known[0] != epoch or offset > known[1]:
                self.positions[channel] = (epoch, offset)
        else:
            code = (message.get("error") or {}).get("code", 0)
            self.stats.error(f"publish refused {code}")
        self.progress.set()

    def on_end(self) -> None:
        super().on_end()
        if self.pending and not self.closing:
            self.stats.error(f"publish closed {self.close_code}", len(self.pending))
        self.pending.clear()
        self._channels.clear()
        self.progress.set()


async def wait_progress(event: asyncio.Event, timeout: float, what: str) -> None:
    """Wait for ``event`` (then clear it); LoadtestError after ``timeout`` seconds without it."""
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        raise LoadtestError(f"{what} for {timeout:.0f}s") from None
    event.clear()
