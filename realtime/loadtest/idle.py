"""``idle``: N clients connect (with a JWT each given --jwt-secret), subscribe to a channel of their
own, and hold still for ``--hold`` seconds, so a harness can read the hub's memory meanwhile.

Reports connects/s (clients connected / seconds from the first dial to the last
connect reply) and the connect latency (dial -> connect reply) in the HDR
histogram; disconnects during the hold show up as close codes.
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
from .wsclient import LoadtestError


class Idle(Scenario):
    name = "idle"
    help = "connect N clients, one channel each, and hold them: connects/s, connect latency, disconnects"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("idle")
        group.add_argument("--connections", type=positive_int, default=1000, help="clients (default 1000)")
        group.add_argument("--hold", type=non_negative, default=5.0, help="seconds to hold them (default 5)")
        group.add_argument("--channel-prefix", default="idle-", help="client i subscribes to PREFIX<i> (default idle-)")

    @classmethod
    def clients(cls, args: argparse.Namespace) -> int:
        return int(args.connections)

    @classmethod
    def role(cls, ctx: WorkerContext) -> Role:
        return IdleRole(ctx)

    async def drive(self, run: Run) -> Outcome:
        args = run.args
        rss0 = run.hub_readings()
        started = time.monotonic()
        answers = await run.pool.request("connect", timeout=run.remaining())
        connect_s = time.monotonic() - started
        connected = sum(answers)
        run.note(f"{connected:,} of {args.connections:,} clients connected and subscribed in {connect_s:.1f}s")
        if connected == 0:
            raise LoadtestError("no client could connect and subscribe")
        hold = min(args.hold, run.remaining())
        await asyncio.sleep(hold)
        rss1 = run.hub_readings()
        # connects/s over the connect phase alone: the workers report their own spans
        spans = await run.pool.request("span")
        connect_span = max((s for s in spans if s), default=connect_s)
        extra: dict[str, Any] = {"connections": connected, "connect_s": round(connect_span, 3), "hold_s": hold}
        grown = [rss1[pid][1] - rss0[pid][1] for pid in rss1 if pid in rss0]
        if grown:  # with --hub-pid: what the connections cost the hubs, at the end of the hold
            extra["rss_per_connection_kib"] = round(sum(grown) / connected, 2)
        return Outcome(elapsed_s=connect_s + hold, connect_s=connect_span, extra=extra)


class IdleRole(Role):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.clients: list[Client] = []
        self.span = 0.0

    async def handle(self, kind: str, arg: Any) -> Any:
        if kind == "connect":
            started = time.monotonic()
            await gather_bounded(self.ctx.indices, self.ctx.args.concurrency, self._one)
            self.span = time.monotonic() - started
            return len(self.clients)
        if kind == "span":
            return self.span
        raise LoadtestError(f"unknown request {kind!r}")

    async def _one(self, i: int) -> None:
        ctx = self.ctx
        try:
            client = await dial(ctx, i, lambda: Client(ctx.target(i), ctx.stats, i))
        except (OSError, TimeoutError, LoadtestError) as exc:
            ctx.stats.error(error_kind("connect", exc))
            return
        try:
            await client.command({"cmd": "subscribe", "channel": f"{ctx.args.channel_prefix}{i}"})
        except (OSError, TimeoutError, LoadtestError) as exc:
            ctx.stats.error(error_kind("subscribe", exc))
            client.abort()
            return
        client.decoding = False  # idle: nothing to read but pings
        self.clients.append(client)

    async def close(self) -> None:
        for client in self.clients:
            client.close()
        await asyncio.sleep(0.05)
