"""``ramp``: connections added in steps until a latency or error budget breaks; reports the knee.

Each step adds ``--step`` subscribers (spread over ``--channels`` channels,
client i on ``PREFIX<i mod channels>``), then measures for ``--step-duration``
seconds while a publisher (a client of the first URL) publishes ``--rate``
times a second to every channel. A step is good when its publish -> deliver
p99 (from the samplers, one subscriber in ``--sample-every``) is within
``--p99-budget-ms`` and it saw at most ``--error-budget`` errors (failed
connects or subscribes, disconnects, refused publishes). The ramp stops at the
first bad step, or at ``--max-connections``; ``extra.knee`` is the number of
connections at the last good step (0 when the first step already broke), and
``extra.steps`` lists every step.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import time
from typing import Any

from .clients import gather_bounded
from .context import WorkerContext
from .flags import non_negative_int, positive, positive_int, seconds
from .publisher import Publisher
from .run import Run
from .scenario import Outcome, Role, Scenario
from .stats import Latency, Stats
from .subscriber import Subscriber, subscribe
from .wsclient import LoadtestError

#: Seconds without progress after which the final catch-up gives up.
DRAIN_STALL = 3.0
#: Publishes unanswered at most: beyond, ticks are skipped (and counted as an error).
MAX_PENDING = 1000


class Ramp(Scenario):
    name = "ramp"
    help = "add subscribers in steps until a p99 or error budget breaks: the knee"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("ramp")
        group.add_argument("--step", type=positive_int, default=500, help="connections added per step (default 500)")
        group.add_argument("--step-duration", type=seconds, default=5.0, help="seconds measured per step (default 5)")
        group.add_argument(
            "--max-connections", type=positive_int, default=10000, help="stop there at the latest (default 10000)"
        )
        group.add_argument("--channels", type=positive_int, default=1, help="channels (default 1)")
        group.add_argument("--channel-prefix", default="ramp-", help="channel i is PREFIX<i> (default ramp-)")
        group.add_argument("--rate", type=positive, default=10.0, help="publishes/s to each channel (default 10)")
        group.add_argument("--payload", type=positive_int, default=64, help="bytes of data per publication, >= 8")
        group.add_argument(
            "--p99-budget-ms", type=positive, default=50.0, help="a step's p99 latency must stay within (default 50)"
        )
        group.add_argument("--error-budget", type=non_negative_int, default=0, help="errors a step may see (default 0)")
        group.add_argument(
            "--sample-every", type=positive_int, default=10, help="one subscriber in N decodes (default 10)"
        )

    @classmethod
    def check(cls, args: argparse.Namespace) -> str | None:
        if args.payload < 8:
            return "--payload must be at least 8 (the timestamp)"
        if args.step_duration >= args.timeout:
            return f"--step-duration {args.step_duration:g} leaves no step within --timeout {args.timeout:g}"
        return None

    @classmethod
    def clients(cls, args: argparse.Namespace) -> int:
        return int(args.max_connections)

    @classmethod
    def role(cls, ctx: WorkerContext) -> Role:
        return RampRole(ctx)

    async def drive(self, run: Run) -> Outcome:
        args = run.args
        channels = [f"{args.channel_prefix}{i}" for i in range(args.channels)]
        publisher = await Publisher.open(run, run.targets[0], args.payload)
        t0 = time.monotonic()
        pumping = asyncio.create_task(self._pump(run, publisher, channels))
        steps: list[dict[str, Any]] = []
        knee, broke = 0, "max connections reached"
        target = 0
        procs = len(run.pool)
        try:
            while target < args.max_connections and run.remaining() > args.step_duration:
                add = min(args.step, args.max_connections - target)
                target += add
                shares = [add // procs + (i < add % procs) for i in range(procs)]
                await asyncio.gather(*(run.pool.ask(i, "grow", n) for i, n in enumerate(shares)))
                await run.pool.request("window")  # the step's latency window starts now
                before = await run.snapshot()
                await asyncio.sleep(args.step_duration)
                windows = await run.pool.request("window")
                after = await run.snapshot()
                step = self._step(before, after, windows, args.step_duration)
                step["target"] = target
                steps.append(step)
                run.note(
                    f"step {len(steps)}: {step['connections']:,} connected, p99 {step['p99_ms']:.1f} ms,"
                    f" {step['errors']} errors"
                )
                problem = self._broken(args, step, target)
                if problem is not None:
                    broke = problem
                    break
                knee = step["connections"]
            else:
                if target < args.max_connections:
                    broke = "out of time (--timeout)"
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
        await self._settle(run, publisher, channels)
        ends = await run.pool.request("finish", dict(publisher.positions))
        publisher.close()
        if not steps:  # no knee measured (a knee of 0 would say the first step broke): not a completed run
            raise LoadtestError(f"--timeout {args.timeout:g}s left no time for one --step-duration step")
        return Outcome(
            elapsed_s=time.monotonic() - t0,
            connect_s=None,
            extra={
                "knee": knee,
                "broke": broke,
                "p99_budget_ms": args.p99_budget_ms,
                "error_budget": args.error_budget,
                "samplers": sum(ends),
                "published": publisher.acked,
                "steps": steps,
            },
        )

    @staticmethod
    def _step(before: Stats, after: Stats, windows: list[bytes], duration: float) -> dict[str, Any]:
        latency = Latency()
        for encoded in windows:
            latency.add_encoded(encoded)
        summary = latency.summary()
        errors = sum(after.errors.values()) - sum(before.errors.values())
        errors += sum(after.close_codes.values()) - sum(before.close_codes.values())
        return {
            "connections": after.connected - 1,  # not the publisher
            "deliveries_per_s": round((after.delivered - before.delivered) / duration, 1),
            "p50_ms": summary["p50"],
            "p99_ms": summary["p99"],
            "max_ms": summary["max"],
            "samples": int(summary["count"]),
            "errors": errors,
        }

    @staticmethod
    def _broken(args: argparse.Namespace, step: dict[str, Any], target: int) -> str | None:
        if step["p99_ms"] > args.p99_budget_ms:
            return f"p99 {step['p99_ms']:.1f} ms over the budget of {args.p99_budget_ms:g} ms"
        if step["errors"] > args.error_budget:
            return f"{step['errors']} errors over the budget of {args.error_budget}"
        if step["connections"] < target - args.error_budget:
            return f"only {step['connections']} of {target} connections up"
        if step["samples"] == 0:
            return "no latency sample: nothing delivered"
        return None

    @staticmethod
    async def _pump(run: Run, publisher: Publisher, channels: list[str]) -> None:
        interval, next_at = 1.0 / run.args.rate, time.monotonic()
        while not publisher.ended.done():
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic() - interval)
            if len(publisher.pending) >= MAX_PENDING:
                run.stats.error("publish backlog full")
                continue
            for channel in channels:
                publisher.publish(channel)
        run.stats.error(f"publisher closed {publisher.close_code}")

    @staticmethod
    async def _settle(run: Run, publisher: Publisher, channels: list[str]) -> None:
        """Until the publishes are answered and every subscriber has caught up, or no progress."""
        end = min(time.monotonic() + 5.0, run.deadline)
        while publisher.pending and not publisher.ended.done() and time.monotonic() < end:
            publisher.progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await publisher.progress.wait()
        last, last_change = -1, time.monotonic()
        while time.monotonic() < run.deadline:
            behind = sum(await run.pool.request("behind", dict(publisher.positions)))
            if behind == 0 or time.monotonic() - last_change > DRAIN_STALL:
                return
            if behind != last:
                last, last_change = behind, time.monotonic()
            await asyncio.sleep(0.1)


class RampRole(Role):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.stats = ctx.stats
        self.subs: list[Subscriber] = []
        self.next = ctx.first
        self.window = Latency()

    def received(self, sub: Subscriber, n: int) -> None:
        self.stats.delivered += n

    def record(self, latency_ns: int) -> None:
        self.stats.latency.record_ns(latency_ns)
        self.window.record_ns(latency_ns)

    def gone(self, sub: Subscriber) -> None:
        pass

    def _channel(self, i: int) -> str:
        args = self.ctx.args
        return f"{args.channel_prefix}{i % args.channels}"

    async def handle(self, kind: str, arg: Any) -> Any:
        ctx = self.ctx
        if kind == "grow":
            indices = range(self.next, min(self.next + int(arg), ctx.first + ctx.count))
            self.next = indices.stop
            every = ctx.args.sample_every

            async def one(i: int) -> None:
                sub = await subscribe(ctx, self, i, i - ctx.first, self._channel(i), i % every == 0)
                if sub is not None:
                    self.subs.append(sub)

            await gather_bounded(indices, ctx.args.concurrency, one)
            return len(self.subs)
        if kind == "window":
            window, self.window = self.window, Latency()
            return window.encode() if window.count else b""
        if kind == "behind":
            return sum(1 for sub in self.subs if not sub.ended.done() and self._behind(sub, arg))
        if kind == "finish":
            for sub in self.subs:
                epoch, offset = arg.get(self._channel(sub.index), ("", 0))
                sub.finish(epoch, offset)
            return sum(1 for sub in self.subs if sub.sampler)
        raise LoadtestError(f"unknown request {kind!r}")

    def _behind(self, sub: Subscriber, positions: dict[str, tuple[str, int]]) -> bool:
        epoch, offset = positions.get(self._channel(sub.index), ("", 0))
        if sub.tracker.epoch not in ("", epoch):
            return False
        have = sub.tracker.offset if sub.sampler else sub.tracker.offset + sub.count
        return have < offset

    async def close(self) -> None:
        for sub in self.subs:
            sub.close()
        await asyncio.sleep(0.05)
