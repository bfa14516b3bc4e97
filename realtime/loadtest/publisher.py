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


class RedisPublisher:
    """Publishes as a backend does: ``FCALL realtime_publish`` straight into Redis (pipelined), so no
    hub connection orders the publishes and the hubs only fan out (docs/redis.md). The same
    interface as :class:`Publisher`."""

    def __init__(self, stats: Stats, payload: int, url: str, cluster: bool, prefix: str, history: tuple[int, int]):
        from redis.asyncio import Redis, RedisCluster

        self.client: Any = RedisCluster.from_url(url) if cluster else Redis.from_url(url)
        self.stats = stats
        self.prefix = prefix
        self.history = history
        self.pad = b"x" * (payload - 8)
        self.pending: dict[int, int] = {}
        self.published = 0
        self.acked = 0
        self.positions: dict[str, tuple[str, int]] = {}
        self.acks = Latency()
        self.progress = asyncio.Event()
        self.ended: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._next = 1
        self._tasks: set[asyncio.Task[None]] = set()

    async def check(self, timeout: float = 10.0) -> None:
        """LoadtestError unless Redis answers and holds the hub's Function library."""
        try:
            async with asyncio.timeout(timeout):
                found = await self.client.function_list(library="realtime")
        except Exception as exc:
            raise LoadtestError(f"cannot use Redis for publishing: {exc}") from None
        if not found:
            raise LoadtestError("Redis holds no realtime Function library: is a hub running on it?")

    def publish(self, channel: str, count: int = 1) -> None:
        now = monotonic_ns()
        ids = list(range(self._next, self._next + count))
        self._next += count
        for id in ids:
            self.pending[id] = now
        self.published += count
        task = asyncio.create_task(self._send(channel, ids, now))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _send(self, channel: str, ids: list[int], sent: int) -> None:
        import msgpack  # type: ignore[import-untyped]

        data = msgpack.packb(sent.to_bytes(8, "big") + self.pad)  # FCALL takes the data's msgpack
        stem = f"{self.prefix}:{{{channel}}}"
        try:
            async with self.client.pipeline(transaction=False) as pipe:
                for _ in ids:
                    pipe.fcall("realtime_publish", 1, stem, data, *self.history)
                results: list[Any] = await pipe.execute(raise_on_error=False)
        except Exception as exc:
            results = [exc] * len(ids)
        now = monotonic_ns()
        for id, result in zip(ids, results):
            self.pending.pop(id, None)
            self.acks.record_ns(now - sent)
            if isinstance(result, Exception):
                self.stats.error(f"publish redis {type(result).__name__}")
                continue
            self.acked += 1
            self.stats.sent += 1
            offset = int(result[0])
            epoch = result[1].decode() if isinstance(result[1], bytes) else str(result[1])
            known = self.positions.get(channel)
            if known is None or known[0] != epoch or offset > known[1]:
                self.positions[channel] = (epoch, offset)
        self.progress.set()

    async def aclose(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        await self.client.aclose()
