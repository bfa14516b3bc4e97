"""``storm``: every client dropped at once (or a hub SIGKILLed), then reconnecting and recovering.

``--clients`` clients subscribe over ``--channels`` channels (client i to
``PREFIX<i mod channels>``) while a publisher (a client of the first URL)
publishes ``--rate`` times a second, round-robin over the channels, the whole
run. After ``--drop-after`` seconds every client's socket is dropped at once
(TCP abort, as when phones lose the network together), or, with ``--kill-pid
PID``, that hub process is sent SIGKILL (a harness gives the pid of one node of
a cluster; its clients then reconnect to the other URLs, round-robin).

Clients reconnect as the Python SDK does: delays from
:func:`protocol.backoff.backoff` (full jitter, ``--min-backoff`` to
``--max-backoff``), at least the hub's retry advice after a refusal
(:func:`protocol.backoff.after_advice` with the Disconnect push's
``retry_after``), then resubscribe with their last offset and epoch. Each
client decodes every publication and checks its offsets, so at the end every
publication the hub acknowledged must have reached every subscriber of its
channel: ``lost`` counts those that did not (a resubscribe answered
``"recovered": false`` leaves a gap that shows up here).

``extra`` reports ``recovery_s`` (drop -> the last client resubscribed; null
when not every client came back within ``--recovery-timeout``), how many
resubscribes recovered and how many did not, clients still down, and the
refusals (4008/4009/503 ...) by code. After full recovery the publisher goes on
for ``--duration`` seconds, then every client must catch up.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import os
import signal
import time
from collections.abc import Iterator
from typing import Any

from protocol.backoff import after_advice, backoff

from .clients import Client, dial, error_kind
from .context import WorkerContext
from .flags import non_negative, positive_int, seconds
from .publisher import Publisher
from .run import Run
from .scenario import Outcome, Role, Scenario
from .stats import OffsetTracker
from .wsclient import Closed, LoadtestError, Refused, Target, monotonic_ns

#: The SDK's floor for a refusal whose Disconnect push (and so its advice) was lost
#: (realtime/client/client.py, _REFUSAL_FLOOR): seconds by close code.
REFUSAL_FLOOR = {4008: 1.0, 4009: 30.0}
#: Codes counted as refusals: the hub shed the attempt and said (or implied) when to come back.
REFUSALS = frozenset({4008, 4009, 4010, 503, 110})
#: Seconds between two status polls of the workers.
POLL = 0.1
#: Seconds after the drop during which clients may still be learning that they are down.
SETTLE = 0.5
#: Seconds without progress after which the final catch-up gives up.
DRAIN_STALL = 3.0
#: Publishes unanswered at most: while the publisher's hub is gone, ticks are skipped.
MAX_PENDING = 1000


class Storm(Scenario):
    name = "storm"
    help = "drop every client at once (or SIGKILL a hub): time to full recovery, recovered or not, anything lost"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("storm")
        group.add_argument("--clients", type=positive_int, default=1000, help="subscribers (default 1000)")
        group.add_argument("--channels", type=positive_int, default=10, help="channels they spread over (default 10)")
        group.add_argument("--channel-prefix", default="storm-", help="channel i is PREFIX<i> (default storm-)")
        group.add_argument("--rate", type=non_negative, default=20.0, help="publishes/s in all (default 20)")
        group.add_argument("--payload", type=positive_int, default=64, help="bytes of data per publication, >= 8")
        group.add_argument("--drop-after", type=seconds, default=2.0, help="seconds before the drop (default 2)")
        group.add_argument(
            "--kill-pid", type=positive_int, metavar="PID", help="SIGKILL this hub process instead of dropping sockets"
        )
        group.add_argument(
            "--recovery-timeout",
            type=seconds,
            default=60.0,
            help="seconds after the drop for every client to come back (default 60)",
        )
        group.add_argument("--min-backoff", type=seconds, default=0.05, help="SDK backoff floor (default 0.05)")
        group.add_argument("--max-backoff", type=seconds, default=20.0, help="SDK backoff ceiling (default 20)")

    @classmethod
    def check(cls, args: argparse.Namespace) -> str | None:
        if args.payload < 8:
            return "--payload must be at least 8 (the timestamp)"
        if args.max_backoff < args.min_backoff:
            return "--max-backoff must be at least --min-backoff"
        if args.kill_pid is not None and len(args.url) < 2:
            return "--kill-pid needs at least two --url: the clients of the killed hub reconnect to the others"
        return None

    @classmethod
    def clients(cls, args: argparse.Namespace) -> int:
        return int(args.clients)

    @classmethod
    def role(cls, ctx: WorkerContext) -> Role:
        return StormRole(ctx)

    async def drive(self, run: Run) -> Outcome:
        args = run.args
        channels = [f"{args.channel_prefix}{i}" for i in range(min(args.channels, args.clients))]
        pump = Pump(run, channels)
        await pump.open()
        started = time.monotonic()
        up = sum(await run.pool.request("connect", timeout=run.remaining()))
        connect_s = time.monotonic() - started
        run.note(f"{up:,} of {args.clients:,} clients subscribed in {connect_s:.1f}s")
        if up == 0:
            raise LoadtestError("no client could connect and subscribe")
        t0 = time.monotonic()
        pumping = asyncio.create_task(pump.pump())
        try:
            await asyncio.sleep(min(args.drop_after, run.remaining()))
            drop_ns = monotonic_ns()
            if args.kill_pid is not None:
                run.note(f"SIGKILL to hub pid {args.kill_pid}")
                try:
                    os.kill(args.kill_pid, signal.SIGKILL)
                except OSError as exc:
                    raise LoadtestError(f"cannot kill pid {args.kill_pid}: {exc}") from None
                dropped: int | None = None
            else:
                dropped = sum(await run.pool.request("drop"))
                run.note(f"dropped {dropped:,} connections")
            status = await self._until_recovered(run, drop_ns)
            recovery_s = (status["last_up_ns"] - drop_ns) / 1e9 if status["down"] == 0 else None
            run.note(
                f"full recovery in {recovery_s:.2f}s"
                if recovery_s is not None
                else f"{status['down']} clients still down"
            )
            await asyncio.sleep(min(args.duration, run.remaining()))
        finally:
            pumping.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await pumping
        await pump.settle()
        positions = dict(pump.positions())
        await self._catch_up(run, positions)
        ends = await run.pool.request("finish", positions)
        pump.close()
        refusals: dict[str, int] = {}
        for end in ends:
            for code, n in end["refusals"].items():
                refusals[code] = refusals.get(code, 0) + n
        total = await run.snapshot()
        return Outcome(
            elapsed_s=time.monotonic() - t0,
            connect_s=None,  # the connect latencies include every reconnect: no one rate fits them
            extra={
                "clients": args.clients,
                "connect_phase_s": round(connect_s, 3),
                "channels": len(channels),
                "drop": f"SIGKILL pid {args.kill_pid}" if args.kill_pid is not None else "all sockets",
                "dropped": dropped if dropped is not None else status["drops"],
                "recovery_s": round(recovery_s, 3) if recovery_s is not None else None,
                "reconnected": total.counters["reconnects"],
                "recovered": total.counters["recovered"],
                "not_recovered": total.counters["not_recovered"],
                "still_down": status["down"],
                "refusals": refusals,
                "published": pump.acked,
                "publisher_reconnects": pump.reconnects,
            },
        )

    async def _until_recovered(self, run: Run, drop_ns: int) -> dict[str, Any]:
        """Poll the workers until every client is back (after SETTLE) or the recovery timeout."""
        end = min(time.monotonic() + run.args.recovery_timeout, run.deadline)
        settle_until = time.monotonic() + SETTLE
        status: dict[str, Any] = {"down": -1, "last_up_ns": 0, "drops": 0}
        while True:
            answers = await run.pool.request("status", timeout=max(1.0, run.remaining()))
            status = {
                "down": sum(a["down"] for a in answers),
                "last_up_ns": max(a["last_up_ns"] for a in answers),
                "drops": sum(a["drops"] for a in answers),
            }
            now = time.monotonic()
            if (status["down"] == 0 and status["drops"] and now >= settle_until) or now >= end:
                return status
            await asyncio.sleep(POLL)

    async def _catch_up(self, run: Run, positions: dict[str, tuple[str, int]]) -> None:
        """Until every live client holds its channel's last acknowledged offset, or no progress."""
        last, last_change = -1, time.monotonic()
        while time.monotonic() < run.deadline:
            behind = sum(await run.pool.request("behind", positions))
            if behind == 0 or time.monotonic() - last_change > DRAIN_STALL:
                return
            if behind != last:
                last, last_change = behind, time.monotonic()
            await asyncio.sleep(POLL)


class Pump:
    """The controller's publisher for the storm: a fixed rate over the channels, reconnecting
    (round-robin over the URLs) when its hub goes away."""

    def __init__(self, run: Run, channels: list[str]) -> None:
        self.run = run
        self.channels = channels
        self.publisher: Publisher | None = None
        self.acked = 0
        self.reconnects = 0
        self._attempt = 0
        self._positions: dict[str, tuple[str, int]] = {}

    async def open(self) -> None:
        self.publisher = await Publisher.open(self.run, self.run.targets[0], self.run.args.payload)

    def positions(self) -> dict[str, tuple[str, int]]:
        merged = dict(self._positions)
        if self.publisher is not None:
            merged.update(self.publisher.positions)
        return merged

    async def pump(self) -> None:
        rate = self.run.args.rate
        if not rate:
            await asyncio.Event().wait()  # nothing to publish: wait to be cancelled
        interval, next_at, turn = 1.0 / rate, time.monotonic(), 0
        while True:
            await asyncio.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at + interval, time.monotonic() - interval)
            pub = self.publisher
            if pub is None or pub.ended.done():
                await self._reopen()
                continue
            if len(pub.pending) < MAX_PENDING:
                pub.publish(self.channels[turn % len(self.channels)])
                turn += 1

    async def _reopen(self) -> None:
        old = self.publisher
        if old is not None:
            self._keep(old)
        self.publisher = None
        self._attempt += 1
        targets = self.run.targets
        target: Target = targets[self._attempt % len(targets)]
        try:
            self.publisher = await Publisher.open(self.run, target, self.run.args.payload, old.acks if old else None)
            self.reconnects += 1
        except LoadtestError:
            await asyncio.sleep(0.2)

    def _keep(self, old: Publisher) -> None:
        self.acked += old.acked
        for channel, (epoch, offset) in old.positions.items():
            known = self._positions.get(channel)
            if known is None or known[0] != epoch or offset > known[1]:
                self._positions[channel] = (epoch, offset)
        old.acked = 0

    async def settle(self) -> None:
        """Wait (a few seconds at most) for the publishes in flight to be answered."""
        pub = self.publisher
        end = time.monotonic() + 5.0
        while pub is not None and pub.pending and not pub.ended.done() and time.monotonic() < end:
            pub.progress.clear()
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(0.5):
                    await pub.progress.wait()

    def close(self) -> None:
        if self.publisher is not None:
            self._keep(self.publisher)
            self.publisher.close()


class StormClient(Client):
    """One connection of a :class:`Life`: holds live publications until the resubscribe reply's
    recovered ones have been checked, so offsets are seen in the order the hub meant."""

    def __init__(self, target: Target, life: Life) -> None:
        super().__init__(target, life.role.stats, life.index)
        self.life = life
        self.live = False
        self.held: list[dict[str, Any]] = []

    def on_push(self, message: dict[str, Any]) -> None:
        if message.get("push") != "pub":
            return
        if self.live:
            self.life.publication(message, live=True)
        else:
            self.held.append(message)

    def go_live(self) -> None:
        held, self.held = self.held, []
        for message in held:
            self.life.publication(message, live=True)
        self.live = True


class Life:
    """Client ``index`` over the whole run: connect, subscribe, and after every drop reconnect with
    the SDK's backoff and resubscribe from its position, until the role closes."""

    def __init__(self, role: StormRole, index: int) -> None:
        self.role = role
        self.index = index
        args = role.ctx.args
        self.channel = f"{args.channel_prefix}{index % args.channels}"
        self.tracker = OffsetTracker(role.stats)
        self.client: StormClient | None = None
        self.down = True
        self.subscribed = False  # at least once: later subscribes recover
        self.attempt = 0
        self.stopping = False

    def delays(self) -> Iterator[float]:
        args = self.role.ctx.args
        return backoff(args.min_backoff, args.max_backoff)

    def publication(self, message: dict[str, Any], live: bool) -> None:
        stats = self.role.stats
        if self.tracker.observe(message["offset"], message["epoch"]):
            stats.delivered += 1
        if live:
            data = message.get("data")
            if isinstance(data, bytes) and len(data) >= 8:
                stats.latency.record_ns(monotonic_ns() - int.from_bytes(data[:8], "big"))

    async def run(self, first: asyncio.Semaphore, ready: asyncio.Future[None]) -> None:
        ctx, role = self.role.ctx, self.role
        delays = self.delays()
        advice: float | None = None
        while not self.stopping and time.monotonic() < ctx.deadline:
            target = ctx.targets[(self.index + self.attempt) % len(ctx.targets)]
            client: StormClient | None = None
            try:
                if self.subscribed:
                    client = await self._subscribe(target)
                else:
                    async with first:  # the initial connects go --concurrency at a time
                        client = await self._subscribe(target)
            except (OSError, TimeoutError, LoadtestError) as exc:
                role.stats.error(error_kind("reconnect" if self.subscribed else "connect", exc))
                advice = role.refused(exc)
                self.attempt += 1
                await asyncio.sleep(after_advice(next(delays), advice))
                continue
            role.up(self)
            if not ready.done():
                ready.set_result(None)
            delays, advice = self.delays(), None
            await client.ended
            self.client = None
            if self.stopping or client.closing:
                return
            role.went_down(self)
            advice = client.retry_after
            if advice is None and client.close_code in REFUSAL_FLOOR:
                advice = REFUSAL_FLOOR[client.close_code]
            self.attempt += 1
            await asyncio.sleep(after_advice(next(delays), advice))

    async def _subscribe(self, target: Target) -> StormClient:
        ctx, stats = self.role.ctx, self.role.stats
        client = await dial(ctx, self.index, lambda: StormClient(target, self), target=target)
        command: dict[str, Any] = {"cmd": "subscribe", "channel": self.channel}
        if self.subscribed:
            command.update(offset=self.tracker.offset, epoch=self.tracker.epoch)
        try:
            result = await client.command(command)
        except BaseException:
            client.abort()
            raise
        if not self.subscribed:
            self.tracker.reset(int(result.get("offset", 0)), str(result.get("epoch", "")))
            self.subscribed = True
        else:
            stats.counters["recovered" if result.get("recovered") else "not_recovered"] += 1
            for pub in result.get("publications") or ():
                pub.setdefault("epoch", result.get("epoch", ""))
                self.publication(pub, live=False)
        client.go_live()
        self.client = client
        return client

    def close(self) -> None:
        self.stopping = True
        if self.client is not None:
            self.client.close()


class StormRole(Role):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.stats = ctx.stats
        self.lives = [Life(self, i) for i in ctx.indices]
        self.tasks: list[asyncio.Task[None]] = []
        self.down = len(self.lives)
        self.drops = 0
        self.last_up_ns = 0
        self.refusals: dict[str, int] = {}

    def up(self, life: Life) -> None:
        if life.down:
            life.down = False
            self.down -= 1
            self.last_up_ns = monotonic_ns()
            if self.drops:
                self.stats.counters["reconnects"] += 1

    def went_down(self, life: Life) -> None:
        if not life.down:
            life.down = True
            self.down += 1
            self.drops += 1

    def refused(self, exc: BaseException) -> float | None:
        """Count a refusal by code; the retry advice it carried (or the SDK's floor), if any."""
        code = exc.code if isinstance(exc, Closed | Refused) else 0
        if code in REFUSALS:
            self.refusals[str(code)] = self.refusals.get(str(code), 0) + 1
        if isinstance(exc, Closed | Refused):
            return exc.retry_after or REFUSAL_FLOOR.get(code)
        return None

    async def handle(self, kind: str, arg: Any) -> Any:
        if kind == "connect":
            return await self._connect()
        if kind == "drop":
            dropped = 0
            for life in self.lives:
                if life.client is not None:
                    life.client.dropped = True
                    life.client.abort()
                    dropped += 1
            return dropped
        if kind == "status":
            return {"down": self.down, "last_up_ns": self.last_up_ns, "drops": self.drops}
        if kind == "behind":
            return sum(1 for life in self.lives if not life.down and self._behind(life, arg))
        if kind == "finish":
            for life in self.lives:
                epoch, offset = arg.get(life.channel, ("", 0))
                if life.tracker.epoch in ("", epoch):
                    life.tracker.finish(offset)
            return {"refusals": self.refusals}
        raise LoadtestError(f"unknown request {kind!r}")

    @staticmethod
    def _behind(life: Life, positions: dict[str, tuple[str, int]]) -> bool:
        epoch, offset = positions.get(life.channel, ("", 0))
        return life.tracker.epoch in ("", epoch) and life.tracker.offset < offset

    async def _connect(self) -> int:
        first = asyncio.Semaphore(self.ctx.args.concurrency)
        loop = asyncio.get_running_loop()
        readies: list[asyncio.Future[None]] = []
        for life in self.lives:
            ready: asyncio.Future[None] = loop.create_future()
            readies.append(ready)
            self.tasks.append(asyncio.create_task(life.run(first, ready)))
        # Every client up once, or the connect phase's bound: those still trying go on in the background.
        await asyncio.wait(readies, timeout=max(1.0, self.ctx.deadline - time.monotonic()) / 2)
        return sum(1 for ready in readies if ready.done())

    async def close(self) -> None:
        for life in self.lives:
            life.close()
        for task in self.tasks:
            task.cancel()
        await asyncio.gather(*self.tasks, return_exceptions=True)
