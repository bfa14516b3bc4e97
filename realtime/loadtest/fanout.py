"""``fanout``: one publisher, N subscribers of one channel; throughput, latency and integrity.

The publisher is one WebSocket client of the first ``--url``; subscribers go
round-robin over the URLs. Each publication's data is ``--payload`` bytes: the
publisher's ``time.monotonic_ns()`` in the first 8 bytes, padded with ``x``.

* ``--rate 0`` (default): as fast as the window allows, ``--window`` publishes
  in flight; ``--rate R``: R publishes a second, still at most ``--window`` in
  flight.
* ``--ack reply`` (default) frees a window slot when the hub answers the
  publish; ``--ack delivery`` frees it only when every subscriber has received
  that publication (paced by the slowest subscriber).

``--samplers`` subscribers (spread evenly) decode every message: they record
publish -> deliver latency in the HDR histogram and check each offset
(lost / duplicated / out of order). The others only count publications in the
raw bytes (cheap enough for tens of thousands of clients) and are checked by
count at the end: fewer than published are lost, more are duplicated.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from .clients import Client, dial, error_kind, gather_bounded
from .context import WorkerContext
from .flags import non_negative, positive_int
from .run import Run
from .scenario import Outcome, Role, Scenario
from .stats import Latency, OffsetTracker, Stats, count_shortfall
from .wsclient import LoadtestError, Target, count_markers, monotonic_ns

#: Seconds without a new delivery after which the drain at the end gives up.
DRAIN_STALL = 3.0
#: Seconds the drain may take at most.
DRAIN_MAX = 60.0
#: Seconds without any publish reply (or, with --ack delivery, any progress) before the run fails.
STALL = 10.0
#: A subscriber that ended no longer holds back the delivery floor.
GONE = 1 << 62


class Fanout(Scenario):
    name = "fanout"
    help = "one publisher, N subscribers of one channel: deliveries/s, publish->deliver latency, integrity"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("fanout")
        group.add_argument("--subscribers", type=positive_int, default=1000, help="subscribers (default 1000)")
        group.add_argument("--channel", default="loadtest", help="the channel (default loadtest)")
        group.add_argument("--payload", type=positive_int, default=64, help="bytes of data per publication, >= 8")
        group.add_argument("--window", type=positive_int, default=20, help="publishes in flight at most (default 20)")
        group.add_argument(
            "--ack",
            choices=("reply", "delivery"),
            default="reply",
            help="a window slot frees on the publish reply, or when every subscriber received it (default reply)",
        )
        group.add_argument(
            "--rate", type=non_negative, default=0.0, help="publishes/s; 0: as fast as the window allows"
        )
        group.add_argument(
            "--samplers",
            type=positive_int,
            default=50,
            help="subscribers that decode every message for latency and offsets (default 50)",
        )

    @classmethod
    def check(cls, args: argparse.Namespace) -> str | None:
        if args.payload < 8:
            return "--payload must be at least 8 (the timestamp)"
        return None

    @classmethod
    def clients(cls, args: argparse.Namespace) -> int:
        return int(args.subscribers)

    @classmethod
    def role(cls, ctx: WorkerContext) -> Role:
        return FanoutRole(ctx)

    async def drive(self, run: Run) -> Outcome:
        args = run.args
        publisher = await Publisher.open(run)
        floors: dict[int, int] = {}
        progress = asyncio.Event()
        publisher.progress = progress

        def on_event(worker: int, floor: int) -> None:
            floors[worker] = floor
            progress.set()

        run.pool.on_event = on_event
        started = time.monotonic()
        answers = await run.pool.request("connect", timeout=run.remaining())
        connect_s = time.monotonic() - started
        subscribers = sum(a["connected"] for a in answers)
        run.note(f"{subscribers:,} of {args.subscribers:,} subscribers ready in {connect_s:.1f}s")
        if subscribers == 0:
            raise LoadtestError("no subscriber could connect and subscribe")
        for i, a in enumerate(answers):
            floors.setdefault(i, a["floor"])

        def delivered_to_all() -> int:
            return min(floors.values())

        def inflight() -> int:
            if args.ack == "delivery":
                return publisher.published - delivered_to_all()
            return len(publisher.pending)

        run.status = lambda: f"in flight {inflight():,}"
        t0 = monotonic_ns()
        end = min(time.monotonic() + args.duration, run.deadline)
        interval = 1.0 / args.rate if args.rate else 0.0
        next_at = time.monotonic()
        while time.monotonic() < end:
            room = args.window - inflight()
            if room <= 0:
                await _wait(progress, STALL, "no publish progress")
                continue
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                publisher.publish(1)
                next_at = max(next_at + interval, time.monotonic() - interval)
            else:
                publisher.publish(room)
                await _wait(progress, STALL, "no publish progress")
        publish_s = (monotonic_ns() - t0) / 1e9
        while publisher.pending and time.monotonic() < run.deadline:
            await _wait(progress, STALL, f"{len(publisher.pending)} publishes unanswered")
        # Drain: until every subscriber has every publication, or deliveries stall.
        expected = publisher.acked * subscribers
        last, last_change = -1, time.monotonic()
        drain_end = min(time.monotonic() + DRAIN_MAX, run.deadline)
        while time.monotonic() < drain_end:
            delivered = (await run.snapshot()).delivered
            if delivered >= expected or time.monotonic() - last_change > DRAIN_STALL:
                break
            if delivered != last:
                last, last_change = delivered, time.monotonic()
            await asyncio.sleep(0.05)
        finish = {"published": publisher.acked, "last_offset": publisher.last_offset, "epoch": publisher.epoch}
        ends = await run.pool.request("finish", finish, timeout=max(1.0, run.remaining()))
        publisher.close()
        last_ns = max((e["last_ns"] for e in ends), default=0)
        span = max(0, last_ns - t0) / 1e9 or publish_s
        return Outcome(
            elapsed_s=span,
            connect_s=connect_s,
            extra={
                "subscribers": subscribers,
                "samplers": sum(e["samplers"] for e in ends),
                "published": publisher.acked,
                "publish_s": round(publish_s, 3),
                "publishes_per_s": round(publisher.acked / publish_s, 1) if publish_s else 0.0,
                "ack_ms": publisher.acks.summary(),
                "per_subscriber_min": min(e["min"] for e in ends),
                "per_subscriber_max": max(e["max"] for e in ends),
            },
        )


async def _wait(event: asyncio.Event, timeout: float, what: str) -> None:
    try:
        async with asyncio.timeout(timeout):
            await event.wait()
    except TimeoutError:
        raise LoadtestError(f"{what} for {timeout:.0f}s") from None
    event.clear()


class Publisher(Client):
    """The controller's publisher: timestamped payloads, replies tracked by id."""

    def __init__(self, target: Target, stats: Stats, args: argparse.Namespace) -> None:
        super().__init__(target, stats)
        self.channel: str = args.channel
        self.pad = b"x" * (args.payload - 8)
        self.pending: dict[int, int] = {}  # command id -> monotonic ns sent
        self.published = 0  # sent
        self.acked = 0
        self.last_offset = 0
        self.epoch = ""
        self.acks = Latency()  # publish -> reply
        self.progress = asyncio.Event()

    @classmethod
    async def open(cls, run: Run) -> Publisher:
        from .wsclient import open_client

        target = run.targets[0]
        try:
            pub = await open_client(lambda: cls(target, run.stats, run.args), target, timeout=10.0)
            command: dict[str, Any] = {"cmd": "connect", "name": "realtime-loadtest-publisher"}
            if run.args.jwt_secret:
                import jwt

                now = int(time.time())
                claims = {"sub": "lt-publisher", "iat": now, "exp": now + 86400}
                command["token"] = jwt.encode(claims, run.args.jwt_secret, algorithm="HS256")
            await pub.command(command)
        except (OSError, TimeoutError, LoadtestError) as exc:
            run.stats.error(error_kind("publisher connect", exc))
            raise LoadtestError(f"the publisher could not connect to {target.url}: {exc}") from None
        pub.mark_ready()
        return pub

    def publish(self, count: int) -> None:
        """Send ``count`` publishes in one write."""
        now = monotonic_ns()
        data = now.to_bytes(8, "big") + self.pad
        commands = []
        for _ in range(count):
            id = self.next_id
            self.next_id += 1
            self.pending[id] = now
            commands.append({"id": id, "cmd": "publish", "channel": self.channel, "data": data})
        self.published += count
        self.send(*commands)

    def on_reply(self, message: dict[str, Any]) -> None:
        sent = self.pending.pop(message.get("id", -1), None)
        if sent is None:
            self.stats.error("reply to an unknown id")
            return
        self.acks.record_ns(monotonic_ns() - sent)
        result = message.get("result")
        if isinstance(result, dict):
            self.acked += 1
            self.stats.sent += 1
            if result.get("epoch", self.epoch) != self.epoch:
                self.epoch = result["epoch"]
                self.last_offset = 0
            self.last_offset = max(self.last_offset, int(result.get("offset", 0)))
        else:
            code = (message.get("error") or {}).get("code", 0)
            self.stats.error(f"publish refused {code}")
        self.progress.set()

    def on_end(self) -> None:
        super().on_end()
        self.progress.set()


class Subscriber(Client):
    """Connects, subscribes, then counts publications in the raw stream (a sampler decodes them)."""

    def __init__(self, target: Target, role: FanoutRole, index: int, slot: int, sampler: bool) -> None:
        super().__init__(target, role.stats, index)
        self.role = role
        self.slot = slot
        self.sampler = sampler
        self.count = 0
        self.tracker = OffsetTracker(role.stats)
        self._tail = b""

    def count_raw(self, data: bytes) -> None:
        n, self._tail = count_markers(data, self._tail)
        if n:
            self.count += n
            self.role.received(self, n)

    def on_push(self, message: dict[str, Any]) -> None:
        if message.get("push") != "pub":
            return
        self.count += 1
        now = monotonic_ns()
        if self.sampler:
            self.tracker.observe(message["offset"], message["epoch"])
            data = message.get("data")
            if isinstance(data, bytes) and len(data) >= 8:
                self.stats.latency.record_ns(now - int.from_bytes(data[:8], "big"))
        self.role.received(self, 1)

    def on_end(self) -> None:
        super().on_end()
        self.role.gone(self)


class FanoutRole(Role):
    """A worker's subscribers; it tells the controller the delivery floor (the fewest publications
    any of its live subscribers has) whenever that rises, for ``--ack delivery``."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.stats = ctx.stats
        args = ctx.args
        self.stride = max(1, args.subscribers // min(args.samplers, args.subscribers))
        self.subs: list[Subscriber] = []
        self.counts: list[int] = []  # per slot; GONE once a subscriber ended
        self.floor = 0
        self.at_floor = 0  # subscribers whose count is the floor
        self.last_ns = 0
        self._emit_scheduled = False
        self.track_floor = args.ack == "delivery"

    async def handle(self, kind: str, arg: Any) -> Any:
        if kind == "connect":
            await self._connect_all()
            self._recompute()
            return {"connected": len(self.subs), "floor": self.floor if self.subs else GONE}
        if kind == "finish":
            return self._finish(arg)
        raise LoadtestError(f"unknown request {kind!r}")

    async def _connect_all(self) -> None:
        ctx = self.ctx
        slots: list[Subscriber | None] = [None] * ctx.count

        async def one(i: int) -> None:
            sampler = i % self.stride == 0
            slot = i - ctx.first
            try:
                sub = await dial(ctx, i, lambda: Subscriber(ctx.target(i), self, i, slot, sampler))
            except (OSError, TimeoutError, LoadtestError) as exc:
                self.stats.error(error_kind("connect", exc))
                return
            try:
                result = await sub.command({"cmd": "subscribe", "channel": ctx.args.channel})
            except (OSError, TimeoutError, LoadtestError) as exc:
                self.stats.error(error_kind("subscribe", exc))
                sub.abort()
                return
            sub.tracker.reset(int(result.get("offset", 0)), str(result.get("epoch", "")))
            if not sampler:
                sub.decoding = False
            slots[slot] = sub

        await gather_bounded(ctx.indices, ctx.args.concurrency, one)
        self.counts = [GONE] * ctx.count
        for slot, sub in enumerate(slots):
            if sub is not None and not sub.ended.done():
                self.subs.append(sub)
                self.counts[slot] = sub.count

    def received(self, sub: Subscriber, n: int) -> None:
        self.stats.delivered += n
        self.last_ns = monotonic_ns()
        if not self.track_floor or not self.counts:
            return
        old = self.counts[sub.slot]
        if old >= GONE:
            return
        self.counts[sub.slot] = old + n
        if old == self.floor:
            self.at_floor -= 1
            if self.at_floor <= 0:
                self._recompute()

    def gone(self, sub: Subscriber) -> None:
        if self.counts and self.counts[sub.slot] < GONE:
            was = self.counts[sub.slot]
            self.counts[sub.slot] = GONE
            if was == self.floor:
                self.at_floor -= 1
                if self.at_floor <= 0:
                    self._recompute()

    def _recompute(self) -> None:
        floor = min(self.counts, default=GONE)
        self.at_floor = self.counts.count(floor)
        if floor != self.floor:
            self.floor = floor
            if self.track_floor and not self._emit_scheduled:
                self._emit_scheduled = True
                asyncio.get_running_loop().call_soon(self._emit)

    def _emit(self) -> None:
        self._emit_scheduled = False
        self.ctx.emit(self.floor)

    def _finish(self, arg: dict[str, Any]) -> dict[str, Any]:
        published, last_offset = arg["published"], arg["last_offset"]
        counts = [sub.count for sub in self.subs]
        for sub in self.subs:
            if sub.sampler:
                if sub.tracker.epoch in ("", arg["epoch"]):
                    sub.tracker.finish(last_offset)
            else:
                count_shortfall(self.stats, sub.count, published)
        return {
            "last_ns": self.last_ns,
            "samplers": sum(1 for sub in self.subs if sub.sampler),
            "min": min(counts, default=0),
            "max": max(counts, default=0),
        }

    async def close(self) -> None:
        for sub in self.subs:
            sub.close()
        await asyncio.sleep(0.05)


__all__ = ["Fanout"]
