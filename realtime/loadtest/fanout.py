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

from .clients import gather_bounded
from .context import WorkerContext
from .flags import non_negative, non_negative_int, positive_int, window_size
from .publisher import Publisher, RedisPublisher, wait_progress
from .redis_watch import RedisWatch
from .run import Run
from .scenario import Outcome, Role, Scenario
from .subscriber import Subscriber, subscribe
from .wsclient import LoadtestError, monotonic_ns

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
        group.add_argument("--window", type=window_size, default=20, help="publishes in flight at most (default 20)")
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
            "--publish-via",
            choices=("hub", "redis"),
            default="hub",
            help="hub: a WebSocket client of the first URL publishes (default); redis: FCALL realtime_publish"
            " straight into --redis, as a backend would",
        )
        group.add_argument(
            "--redis",
            metavar="URL",
            help="the hubs' Redis: watch their pub/sub connections (extra.redis), and publish there with"
            " --publish-via redis",
        )
        group.add_argument("--redis-cluster", action="store_true", help="--redis names a Redis Cluster node")
        group.add_argument("--redis-prefix", default="rt", help="the hubs' redis_prefix (default rt)")
        group.add_argument(
            "--history",
            type=non_negative_int,
            nargs=2,
            default=[100, 300],
            metavar=("SIZE", "TTL"),
            help="history size and TTL (s) FCALL passes: the channel's namespace's (default 100 300)",
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
        if args.publish_via == "redis" and not args.redis:
            return "--publish-via redis needs --redis URL"
        return None

    @classmethod
    def clients(cls, args: argparse.Namespace) -> int:
        return int(args.subscribers)

    @classmethod
    def role(cls, ctx: WorkerContext) -> Role:
        return FanoutRole(ctx)

    async def drive(self, run: Run) -> Outcome:
        args = run.args
        publisher: Publisher | RedisPublisher
        if args.publish_via == "redis":
            publisher = RedisPublisher(
                run.stats, args.payload, args.redis, args.redis_cluster, args.redis_prefix, tuple(args.history)
            )
            await publisher.check()
        else:
            publisher = await Publisher.open(run, run.targets[0], args.payload)
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
        watch = RedisWatch(args.redis, args.redis_cluster, args.redis_prefix) if args.redis else None
        if watch is not None:
            await watch.start()
        cpu0 = (await run.snapshot()).cpu_s
        hubs0 = run.hub_readings()
        t0 = monotonic_ns()
        end = min(time.monotonic() + args.duration, run.deadline)
        interval = 1.0 / args.rate if args.rate else 0.0
        next_at = time.monotonic()
        while time.monotonic() < end:
            if isinstance(publisher, Publisher) and publisher.ended.done():
                raise LoadtestError(f"the publisher's connection closed with {publisher.close_code}")
            if args.ack == "delivery" and delivered_to_all() >= GONE:
                raise LoadtestError("every subscriber disconnected")
            room = min(args.window, args.window - inflight())
            if room <= 0:
                await wait_progress(progress, STALL, "no publish progress")
                continue
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(delay)
                publisher.publish(args.channel, 1)
                next_at = max(next_at + interval, time.monotonic() - interval)
            else:
                publisher.publish(args.channel, room)
                await wait_progress(progress, STALL, "no publish progress")
        publish_s = (monotonic_ns() - t0) / 1e9
        while publisher.pending and time.monotonic() < run.deadline and not publisher.ended.done():
            await wait_progress(progress, STALL, f"{len(publisher.pending)} publishes unanswered")
        # Drain: until every subscriber has every publication, or deliveries stall.
        expected = publisher.acked * subscribers
        last, last_change, delivered = -1, time.monotonic(), 0
        drain_end = min(time.monotonic() + DRAIN_MAX, run.deadline)
        cpu1 = cpu0
        while time.monotonic() < drain_end:
            snap = await run.snapshot()
            delivered, cpu1 = snap.delivered, snap.cpu_s
            if delivered >= expected or time.monotonic() - last_change > DRAIN_STALL:
                break
            if delivered != last:
                last, last_change = delivered, time.monotonic()
            await asyncio.sleep(0.05)
        epoch, last_offset = publisher.positions.get(args.channel, ("", 0))
        hubs1 = run.hub_readings()
        redis = await watch.stop() if watch is not None else None
        finish = {"last_offset": last_offset, "epoch": epoch}
        ends = await run.pool.request("finish", finish, timeout=max(1.0, run.remaining()))
        if isinstance(publisher, RedisPublisher):
            await publisher.aclose()
        else:
            publisher.close()
        last_ns = max((e["last_ns"] for e in ends), default=0)
        span = max(0, last_ns - t0) / 1e9 or publish_s
        outcome = Outcome(
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
                # the generator over the same span as deliveries/s (the report's generator figure spans
                # the whole run, connects included): near --procs + 1 cores, the generator set the pace
                "generator_cores_busy": round((cpu1 - cpu0) / span, 2) if span else 0.0,
            },
        )
        if redis is not None:
            outcome.extra["redis"] = redis
        hub_cpu = sum(hubs1[pid][0] - hubs0[pid][0] for pid in hubs1 if pid in hubs0)
        if hub_cpu > 0:  # with --hub-pid: the hubs' CPU over the publishing and the drain alone
            outcome.extra["hub_cpu_s"] = round(hub_cpu, 3)
            outcome.extra["deliveries_per_hub_cpu_s"] = round(delivered / hub_cpu, 1)
        return outcome


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
            slot = i - ctx.first
            slots[slot] = await subscribe(ctx, self, i, slot, ctx.args.channel, i % self.stride == 0)

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

    def record(self, latency_ns: int) -> None:
        self.stats.latency.record_ns(latency_ns)

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
        counts = [sub.count for sub in self.subs]
        for sub in self.subs:
            sub.finish(arg["epoch"], arg["last_offset"])
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
