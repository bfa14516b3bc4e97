"""Webhooks under faults: what docs/integration.md ("Queues, order and duplicates") promises, checked
while things break.

Redis run: two `realtime serve` processes on one redis-server (AOF, ``appendfsync always``), a rule
for ``message.published`` to a real backend (tests/backend_app.py) that answers 500 now and then.
Messages are published through the HTTP API (each with its publish id, resent to the other node after
a failure) while, one after the other: a node is SIGKILLed and restarted, the backend is stopped and
started, Redis closes every normal client connection (``CLIENT KILL TYPE normal``), Redis is
SIGKILLed and restarted from its AOF, the other node is SIGKILLed and restarted. Then every message
whose publish succeeded must reach the backend at least once, its copies all with one event id; no
message whose publish failed may; every request must carry a valid signature.

Memory run: the backend down, more events than ``max_queued``: the overflow is counted in /metrics and
every event not counted there is delivered.
"""

from __future__ import annotations

import asyncio
import random
import signal
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from redis.asyncio import Redis

from protocol.codes import ErrorCode
from realtime.auth import ApiKey
from realtime.backend.rules import WebhookRule
from realtime.publisher import ApiError, ApiUnreachable, Publisher, Sent

from .backend_app import BACKEND_SECRET, Backend
from .helpers import HubFactory, start_serve, unique_prefix, until
from .redis_server import RedisServer

API_KEY = "api-key-for-the-webhook-fault-run"
CHANNEL = "chat:faults"
#: Publishes made after a fault was injected, before the next one (at least).
PER_PHASE = 25
#: Most publishes in the whole run, whatever happens.
MAX_PUBLISHES = 1500
#: Concurrent publishers, and each one's pause between two publishes (a steady rate, so faults land mid-flow).
WORKERS = 3
PACE = 0.01
#: Attempts of one message (alternating nodes, same publish id) before it counts as failed or unknown.
ATTEMPTS = 8
#: Seconds the whole run may take to deliver everything after the last fault.
DRAIN = 25.0


class Node:
    """One `realtime serve` process; its log is read all along (a full pipe would block the hub)."""

    def __init__(self, config: Path) -> None:
        self.config = config
        self.proc: asyncio.subprocess.Process | None = None
        self.port = 0
        self.log: list[bytes] = []
        self._reader: asyncio.Task[None] | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    async def start(self) -> None:
        self.proc, self.port = await start_serve("--config", str(self.config), lines=self.log)
        stderr = self.proc.stderr
        assert stderr is not None
        self._reader = asyncio.create_task(self._drain(stderr))

    async def _drain(self, stderr: asyncio.StreamReader) -> None:
        while line := await stderr.readline():
            self.log.append(line)

    async def kill(self) -> None:
        if self.proc is not None and self.proc.returncode is None:
            self.proc.send_signal(signal.SIGKILL)
            await self.proc.wait()
        if self._reader is not None:
            await asyncio.gather(self._reader, return_exceptions=True)
            self._reader = None


@dataclass
class Run:
    """The publishes of the run: each message's outcome, by its number (also its ``data``)."""

    nodes: list[Node]
    sent: dict[int, Sent] = field(default_factory=dict)
    failed: set[int] = field(default_factory=set)  # refused every time as not stored (NOT_AVAILABLE)
    unknown: set[int] = field(default_factory=set)  # out of attempts, maybe stored
    answered: dict[int, tuple[int, int]] = field(default_factory=dict)
    marks: list[tuple[str, int]] = field(default_factory=list)
    next: int = 0
    done: int = 0
    progressed: asyncio.Event = field(default_factory=asyncio.Event)

    async def publish_one(self, http: aiohttp.ClientSession, n: int) -> None:
        key = f"fault-run-{n}"
        maybe = False  # some attempt may have been stored
        for attempt in range(ATTEMPTS):
            node = self.nodes[(n + attempt) % len(self.nodes)]
            try:
                pub = Publisher(node.url, API_KEY, format="json", timeout=3.0, session=http)
                self.sent[n] = await pub.publish(CHANNEL, n, key=key)
                self.answered[n] = (node.port, self.done)
                return
            except ApiUnreachable:
                maybe = True
            except ApiError as exc:
                maybe = maybe or exc.code != ErrorCode.NOT_AVAILABLE
            await asyncio.sleep(0.05 * (attempt + 1))
        (self.unknown if maybe else self.failed).add(n)

    async def worker(self, http: aiohttp.ClientSession, stop: Callable[[], bool]) -> None:
        while not stop() and self.next < MAX_PUBLISHES:
            n = self.next
            self.next += 1
            await self.publish_one(http, n)
            self.done += 1
            self.progressed.set()
            await asyncio.sleep(PACE)

    async def until_done(self, count: int) -> None:
        """Wait until ``count`` publishes have finished (or the cap is reached)."""
        async with asyncio.timeout(30):
            while self.done < min(count, MAX_PUBLISHES):
                self.progressed.clear()
                await self.progressed.wait()

    async def phase(self, http: aiohttp.ClientSession, fault: Callable[[], Awaitable[None]]) -> None:
        """Publish while ``fault`` is injected, and until PER_PHASE more publishes have finished after it."""
        start = self.done
        finished = False

        async def inject() -> None:
            nonlocal finished
            await self.until_done(start + 5)
            self.marks.append(("fault", self.done))
            await fault()
            self.marks.append(("fault done", self.done))
            await self.until_done(self.done + PER_PHASE)
            finished = True

        await asyncio.gather(inject(), *(self.worker(http, lambda: finished) for _ in range(WORKERS)))


@pytest.mark.redis
async def test_webhooks_through_node_backend_and_redis_faults(tmp_path: Path) -> None:
    redis_server = RedisServer(None, "--appendonly", "yes", "--appendfsync", "always")
    redis_server.start()
    backend = await Backend().start()
    rng = random.Random(13)
    backend.answers.extend(500 if rng.random() < 0.1 else 200 for _ in range(20_000))
    config = tmp_path / "hub.toml"
    config.write_text(
        f'redis = "{redis_server.url}"\nredis_prefix = "{unique_prefix()}"\n'
        f'[[api_keys]]\nname = "backend"\nkey = "{API_KEY}"\nscopes = ["*"]\n'
        '[namespaces.chat]\nkind = "chat"\nsubscribe = "anyone"\npublish = "clients"\nhistory_size = 10\n'
        f'[backend]\nsecrets = ["{BACKEND_SECRET}"]\ntimeout = 1.0\n'
        f'[[webhooks]]\nurl = "{backend.url}"\non = ["message.published"]\nmax_batch = 4\n'
        "reclaim_after = 1.0\nbackoff_max = 0.2\nmax_attempts = 1000\n"
    )
    nodes = [Node(config), Node(config)]
    admin = Redis(host="127.0.0.1", port=redis_server.port)
    faults: Counter[str] = Counter()
    run = Run(nodes)

    async def kill_node(i: int) -> None:
        await nodes[i].kill()
        faults["node SIGKILL"] += 1
        await nodes[i].start()

    async def backend_outage() -> None:
        await backend.stop()
        faults["backend stopped"] += 1
        await run.until_done(run.done + PER_PHASE)  # the nodes try meanwhile
        await backend.start()

    async def client_kill() -> None:
        for _ in range(2):
            await admin.client_kill_filter(_type="normal", skipme=True)
            faults["CLIENT KILL TYPE normal"] += 1
            await run.until_done(run.done + 5)

    async def kill_redis() -> None:
        await redis_server.restart(kill=True)  # SIGKILL, then back on the same port from its AOF
        faults["Redis SIGKILL"] += 1

    try:
        for node in nodes:
            await node.start()
        async with aiohttp.ClientSession() as http:
            for fault in (lambda: kill_node(0), backend_outage, client_kill, kill_redis, lambda: kill_node(1)):
                await run.phase(http, fault)
        ok = set(run.sent)

        def delivered() -> dict[int, list[dict[str, Any]]]:
            by_message: dict[int, list[dict[str, Any]]] = {}
            for event in backend.events:
                by_message.setdefault(event["data"]["data"], []).append(event)
            return by_message

        try:
            await until(lambda: ok <= set(delivered()), timeout=DRAIN, what="every published message's event")
        except AssertionError:
            missing = sorted(ok - set(delivered()))
            stream = await admin.keys("*:wh:*")
            raise AssertionError(
                f"lost: {[(n, run.sent[n], run.answered[n]) for n in missing]}, faults at {run.marks},"
                f" streams {[(k, await admin.xlen(k), await admin.xpending(k, 'webhooks')) for k in stream]}"
            ) from None
        got = delivered()
        events = backend.events
        duplicates = len(events) - len({e["id"] for e in events})
        print(
            f"\nwebhook fault run: published {run.next} (ok {len(ok)}, failed {len(run.failed)},"
            f" unknown {len(run.unknown)}), POSTs {len(backend.deliveries)}"
            f" ({sum(d.status == 500 for d in backend.deliveries)} answered 500), events delivered {len(events)},"
            f" distinct {len({e['id'] for e in events})}, duplicates by id {duplicates}, faults {dict(faults)}"
        )
        assert sum(faults.values()) == 6
        # Every request signed, and no event for a publish that failed (only for those that succeeded
        # or whose outcome is unknown).
        assert all(d.verified for d in backend.deliveries)
        assert set(got) <= ok | run.unknown
        assert not set(got) & run.failed
        for n, copies in got.items():
            # Duplicates only as copies of one event: one id, and for a published one, its position.
            assert len({e["id"] for e in copies}) == 1, copies
            if n in run.sent:
                sent = run.sent[n]
                assert {(e["data"]["offset"], e["data"]["epoch"]) for e in copies} == {(sent.offset, sent.epoch)}
    finally:
        for node in nodes:
            await node.kill()
        await admin.aclose()
        await backend.stop()
        redis_server.cleanup()


# --- the memory engine: overflow counted, nothing else lost ------------------------------------


async def metric(http_url: str, endpoint: str, outcome: str) -> float:
    async with (
        aiohttp.ClientSession() as http,
        http.get(http_url + "/metrics", headers={"Authorization": f"apikey {API_KEY}"}) as resp,
    ):
        assert resp.status == 200
        text = await resp.text()
    line = f'realtime_webhook_events_total{{endpoint="{endpoint}",outcome="{outcome}"}} '
    return sum(float(row[len(line) :]) for row in text.splitlines() if row.startswith(line))


async def test_memory_queue_overflow_is_counted_and_nothing_else_is_lost(hub_factory: HubFactory) -> None:
    backend = Backend()  # not started: the first event waits in retries, the others fill the queue
    api = ApiKey("backend", API_KEY, frozenset({"*"}))
    hub = await hub_factory(
        api_keys=(api,),
        backend_secrets=(BACKEND_SECRET,),
        backend_timeout=1.0,
        webhooks=(WebhookRule(backend.url, ("message.published",), max_queued=5, backoff_max=0.05, max_attempts=1000),),
    )
    published = 30
    try:
        async with Publisher(hub.http_url, API_KEY, format="json") as pub:
            for n in range(published):
                await pub.publish("news", n)

        async def overflowed() -> bool:
            return await metric(hub.http_url, backend.url, "dropped") > 0

        await until(overflowed, what="the overflow counted")
        await backend.start()

        async def accounted() -> bool:
            # Every event delivered (distinct ids) or counted as dropped, none given up.
            dropped = await metric(hub.http_url, backend.url, "dropped")
            return len({e["id"] for e in backend.events}) + dropped == published

        await until(accounted, what="every event delivered or counted as dropped")
        dropped = int(await metric(hub.http_url, backend.url, "dropped"))
        assert dropped >= published - 1 - 5  # at most max_queued waited, besides the one in retries
        assert await metric(hub.http_url, backend.url, "failed") == 0
        values = sorted({e["data"]["data"] for e in backend.events})
        assert values[-5:] == list(range(published - 5, published))  # the newest were kept
        assert all(d.verified for d in backend.deliveries)
    finally:
        await backend.stop()
