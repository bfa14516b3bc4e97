"""``live``: a few hot keys of a live channel updated fast, many subscribers; conflation and final state.

The controller's publisher (one WebSocket client of the first ``--url``) sets
``--keys`` keys (``k0`` .. ``k<K-1>``) of the live channel ``--channel`` in turn,
``--update-rate`` times a second in all (0: as fast as ``--window`` commands in
flight allow), each value ``{"n": seq, "t": monotonic_ns}`` (``n`` counts the
key's updates; ``--payload`` adds ``"p"``, that many bytes of padding, which a hub
without conflation turns into merge-patch pushes of ``n`` and ``t``). ``--subscribers`` clients subscribe first (snapshot) and then
follow the ``state`` pushes as docs/protocol.md says a client must:

* a full ``value`` applies when its version is above the key's; one below it
  means versions went backwards (counted ``out_of_order``), one equal to it is
  ``duplicated``;
* a ``patch`` applies on the version just after the one held; a later one means
  changes were missed: the subscriber subscribes again with the version it holds
  and gets what changed since (a gap, healed by resubscribing: ``resubscribes``);
  an ``unsub`` push with reason ``recover`` does the same.

With conflation (the namespace's ``max_rate``) a subscriber gets each key at
most ``max_rate`` times a second, always the latest value: skipped versions are
not lost. What must hold is the end: every subscriber ends with the last version
and value the publisher wrote of every key. Each (subscriber, key) that does not
is ``lost``. Latency is update -> deliver, from ``t`` of each value applied.
"""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

from protocol import merge_patch

from .clients import Client, dial, error_kind, gather_bounded
from .context import WorkerContext
from .drain import controller_client, drain
from .flags import non_negative, non_negative_int, positive_int, window_size
from .run import Run
from .scenario import Outcome, Role, Scenario
from .stats import Latency, Stats
from .wsclient import LoadtestError, Target, monotonic_ns

#: Seconds without any update reply before the run fails.
STALL = 10.0
#: Seconds a subscribe waits for its reply.
COMMAND_TIMEOUT = 10.0
#: Seconds between two polls of the workers for subscribers behind the publisher's last versions.
BEHIND_POLL = 0.2
#: Most updates one run sends, whatever the rate and duration.
MAX_UPDATES = 100_000_000


class Live(Scenario):
    name = "live"
    help = "hot keys of a live channel updated fast, many subscribers: conflation, final state, update->deliver"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("live")
        group.add_argument("--subscribers", type=positive_int, default=1000, help="subscribers (default 1000)")
        group.add_argument("--keys", type=positive_int, default=10, help="keys updated in turn (default 10)")
        group.add_argument(
            "--update-rate",
            type=non_negative,
            default=100.0,
            help="updates/s, all keys together; 0: as fast as the window allows (default 100)",
        )
        group.add_argument("--window", type=window_size, default=20, help="updates in flight at most (default 20)")
        group.add_argument("--channel", default="live:lt", help="the live channel (default live:lt)")
        group.add_argument(
            "--payload",
            type=non_negative_int,
            default=0,
            help="bytes of padding in each value; from ~32, hubs without conflation send patches (default 0)",
        )

    @classmethod
    def clients(cls, args: argparse.Namespace) -> int:
        return int(args.subscribers)

    @classmethod
    def role(cls, ctx: WorkerContext) -> Role:
        return LiveRole(ctx)

    async def drive(self, run: Run) -> Outcome:
        args = run.args
        publisher = await controller_client(
            run, lambda: Updater(run.targets[0], run.stats, args), "lt-publisher", "publisher"
        )
        started = time.monotonic()
        subscribers = sum(await run.pool.request("connect", timeout=run.remaining()))
        connect_s = time.monotonic() - started
        run.note(f"{subscribers:,} of {args.subscribers:,} subscribers ready in {connect_s:.1f}s")
        if subscribers == 0:
            raise LoadtestError("no subscriber could connect and subscribe")
        run.status = lambda: f"in flight {len(publisher.pending):,}"
        t0 = monotonic_ns()
        await publisher.run(min(time.monotonic() + args.duration, run.deadline))
        while publisher.pending and time.monotonic() < run.deadline:
            await publisher.wait(f"{len(publisher.pending)} updates unanswered")
        update_s = (monotonic_ns() - t0) / 1e9
        final = dict(publisher.final)

        async def caught_up() -> tuple[bool, int]:
            behind = sum(await run.pool.request("behind", final, timeout=max(1.0, run.remaining())))
            return behind == 0, -behind

        if not await drain(run, caught_up, poll=BEHIND_POLL):  # each poll walks every (subscriber, key)
            run.note("subscribers stalled before every one had the last version of every key")
        ends = await run.pool.request("finish", final, timeout=max(1.0, run.remaining()))
        publisher.close()
        total = await run.snapshot()
        last_ns = max((e for e in ends), default=0)
        span = max(0, last_ns - t0) / 1e9 or update_s
        return Outcome(
            elapsed_s=span,
            connect_s=connect_s,
            extra={
                "subscribers": subscribers,
                "keys": args.keys,
                "updates": publisher.acked,
                "updates_per_s": round(publisher.acked / update_s, 1) if update_s else 0.0,
                "update_ack_ms": publisher.acks.summary(),
                "final_version": max((v for v, _ in final.values()), default=0),
                "resubscribes": total.counters.get("resubscribes", 0),
                "stale_keys": total.counters.get("stale_keys", 0),
            },
        )


class Updater(Client):
    """The controller's publisher: ``state_set`` of the keys in turn, replies tracked by id."""

    def __init__(self, target: Target, stats: Stats, args: argparse.Namespace) -> None:
        super().__init__(target, stats)
        self.args = args
        self.channel: str = args.channel
        self.keys = [f"k{j}" for j in range(args.keys)]
        self.pad = "x" * args.payload
        self.turn = 0
        self.seq = [0] * args.keys  # updates sent per key
        self.pending: dict[int, tuple[str, int, int]] = {}  # command id -> (key, n, monotonic ns sent)
        self.final: dict[str, tuple[int, int]] = {}  # key -> (version, n) of its last update acked
        self.acked = 0
        self.acks = Latency()  # update -> reply
        self.progress = asyncio.Event()

    async def run(self, end: float) -> None:
        """Update until ``end``: at --update-rate, at most --window in flight."""
        rate, window = self.args.update_rate, self.args.window
        interval = 1.0 / rate if rate else 0.0
        next_at = time.monotonic()
        sent = 0
        while time.monotonic() < end and sent < MAX_UPDATES:
            room = window - len(self.pending)
            if room <= 0:
                await self.wait("no update answered")
                continue
            if interval:
                delay = next_at - time.monotonic()
                if delay > 0:
                    await asyncio.sleep(min(delay, max(0.0, end - time.monotonic())))
                    if time.monotonic() >= end:
                        break
                self.update(1)
                sent += 1
                next_at = max(next_at + interval, time.monotonic() - interval)
            else:
                self.update(room)
                sent += room
                await self.wait("no update answered")

    async def wait(self, what: str) -> None:
        try:
            async with asyncio.timeout(STALL):
                await self.progress.wait()
        except TimeoutError:
            raise LoadtestError(f"{what} for {STALL:.0f}s") from None
        self.progress.clear()

    def update(self, count: int) -> None:
        """Send ``count`` updates in one write, keys in turn."""
        now = monotonic_ns()
        commands = []
        for _ in range(count):
            j = self.turn
            self.turn = (j + 1) % len(self.keys)
            self.seq[j] += 1
            n, key = self.seq[j], self.keys[j]
            id = self.next_id
            self.next_id += 1
            self.pending[id] = (key, n, now)
            value: dict[str, Any] = {"n": n, "t": now}
            if self.pad:
                value["p"] = self.pad
            commands.append({"id": id, "cmd": "state_set", "channel": self.channel, "key": key, "value": value})
        self.send(*commands)

    def on_reply(self, message: dict[str, Any]) -> None:
        sent = self.pending.pop(message.get("id", -1), None)
        if sent is None:
            self.stats.error("reply to an unknown id")
            return
        key, n, ns = sent
        self.acks.record_ns(monotonic_ns() - ns)
        result = message.get("result")
        if isinstance(result, dict):
            self.acked += 1
            self.stats.sent += 1
            version = int(result.get("version", 0))
            if version > self.final.get(key, (0, 0))[0]:
                self.final[key] = (version, n)
        else:
            self.stats.error(f"state_set refused {(message.get('error') or {}).get('code', 0)}")
        self.progress.set()

    def on_end(self) -> None:
        super().on_end()
        self.progress.set()


class Follower(Client):
    """A subscriber that keeps the channel's state as a client must (see the module's docstring)."""

    def __init__(self, target: Target, role: LiveRole, index: int) -> None:
        super().__init__(target, role.stats, index)
        self.role = role
        self.held = 0  # the channel version held
        self.state: dict[str, tuple[int, Any]] = {}  # key -> (version, value)
        self.resyncing = False

    def load(self, result: dict[str, Any]) -> None:
        """A subscribe result: the snapshot, or what changed since the version asked for."""
        if result.get("full"):
            self.state.clear()
        for entry in result.get("state") or ():
            key, version = entry["key"], int(entry["version"])
            if version > self.state.get(key, (0, None))[0]:
                self.state[key] = (version, entry.get("value"))
        self.held = int(result.get("version", 0))

    def on_push(self, message: dict[str, Any]) -> None:
        kind = message.get("push")
        if kind == "state":
            self.role.change(self, message)
        elif kind == "unsub" and message.get("reason") == "recover":
            self.role.resync(self)


class LiveRole(Role):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.stats = ctx.stats
        self.channel: str = ctx.args.channel
        self.followers: list[Follower] = []
        self.tasks: set[asyncio.Task[None]] = set()
        self.last_ns = 0

    async def handle(self, kind: str, arg: Any) -> Any:
        if kind == "connect":
            await gather_bounded(self.ctx.indices, self.ctx.args.concurrency, self._follow)
            return len(self.followers)
        if kind == "behind":
            return sum(1 for f in self.followers for key, (v, _) in arg.items() if f.state.get(key, (0, None))[0] < v)
        if kind == "finish":
            self._finish(arg)
            return self.last_ns
        raise LoadtestError(f"unknown request {kind!r}")

    async def _follow(self, i: int) -> None:
        ctx = self.ctx
        try:
            follower = await dial(ctx, i, lambda: Follower(ctx.target(i), self, i))
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("connect", exc))
            return
        try:
            follower.load(await follower.command({"cmd": "subscribe", "channel": self.channel}, COMMAND_TIMEOUT))
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("subscribe", exc))
            follower.abort()
            return
        self.followers.append(follower)

    def change(self, follower: Follower, message: dict[str, Any]) -> None:
        now = monotonic_ns()
        self.stats.delivered += 1
        self.last_ns = now
        if follower.resyncing:
            return  # the resubscribe's result brings it
        key, version = message.get("key"), int(message.get("version", 0))
        if not isinstance(key, str):
            return
        have, value = follower.state.get(key, (0, None))
        if "patch" in message:
            if version <= follower.held:
                return  # already included
            if version != follower.held + 1:
                self.resync(follower)  # a change was missed
                return
            follower.held = version
            if version <= have:
                return
            value = merge_patch.apply(value, message["patch"])
        else:
            if version < have:
                self.stats.out_of_order += 1  # versions went backwards
                return
            if version == have:
                self.stats.duplicated += 1
                return
            value = message.get("value")
            if version == follower.held + 1:
                follower.held = version
        follower.state[key] = (version, value)
        if isinstance(value, dict) and isinstance(value.get("t"), int):
            self.stats.latency.record_ns(now - value["t"])

    def resync(self, follower: Follower) -> None:
        if follower.resyncing or follower.ended.done():
            return
        follower.resyncing = True
        task = asyncio.create_task(self._resubscribe(follower))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _resubscribe(self, follower: Follower) -> None:
        """Heal a gap: subscribe again with the version held, and take what changed since."""
        self.stats.counters["resubscribes"] += 1
        try:
            await follower.command({"cmd": "unsubscribe", "channel": self.channel}, COMMAND_TIMEOUT)
            command = {"cmd": "subscribe", "channel": self.channel, "version": follower.held}
            follower.load(await follower.command(command, COMMAND_TIMEOUT))
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("resubscribe", exc))
        finally:
            follower.resyncing = False

    def _finish(self, final: dict[str, tuple[int, int]]) -> None:
        """Each follower must hold the last version and value of every key."""
        for follower in self.followers:
            for key, (version, n) in final.items():
                have, value = follower.state.get(key, (0, None))
                if have < version:
                    self.stats.lost += 1
                    self.stats.counters["stale_keys"] += 1
                elif not isinstance(value, dict) or value.get("n") != n:
                    self.stats.error("final value differs from the last written")

    async def close(self) -> None:
        for task in list(self.tasks):
            task.cancel()
        for follower in self.followers:
            follower.close()
        await asyncio.sleep(0.05)


__all__ = ["Live"]
