"""``presence``: devices connecting, going to the background and coming back, watched by observers.

``--devices`` clients, each a signed-in user (``--jwt-secret``; user ``lt<i>``),
subscribe to presence channels of ``--room-size`` devices each
(``NAMESPACE:lt-presence-<c>``), after ``--observers`` clients per channel that
never leave and decode the channel's ``join`` and ``leave`` pushes. For
``--duration`` seconds, ``--churn-rate`` times a second (all processes together,
exponential gaps) a random connected device goes to the background for a pause
drawn evenly from half to 1.5 times ``--background-s``, then comes
back: it connects and subscribes again, as an app does on resume. How it leaves
is ``--background``:

* ``close``: it closes its WebSocket (1000), as an app that disconnects on
  backgrounding does;
* ``drop``: it drops the TCP connection (a phone losing its network);
* ``silent``: it stops reading and answering pings (a suspended app); the hub
  notices only by its ping timeout, if the pause is long enough. The old
  connection is dropped on resume.

The hub announces a leave only once a user has been gone for the namespace's
``presence_grace`` (``--grace``, default the hub's 5 s): an absence shorter than
``--grace`` minus :data:`GRACE_TOLERANCE` must produce no leave/join pair, one
longer than ``--grace`` plus the tolerance must produce exactly one (``silent``
absences longer than the grace may or may not: the hub's view of them starts when
its ping timeout fires). An absence is measured from the pause to the resubscribe
reply. Each observer counts, per device: leaves beyond what its absences allow
are *flaps* (reported as ``duplicated``), leaves that should have come and did
not are ``lost``, and joins must be one more than leaves. At the end, with every
device back, each observer asks the hub for the channel's ``presence`` list and
compares it with the devices connected (one entry each), and compares the
membership its pushes built with it too.
"""

from __future__ import annotations

import argparse
import asyncio
import random
import time
from collections import Counter
from dataclasses import dataclass
from typing import Any

from .clients import CONNECT_TIMEOUT, Client, dial, error_kind, gather_bounded
from .context import WorkerContext
from .flags import non_negative, positive_int
from .run import Run
from .scenario import Outcome, Role, Scenario
from .stats import Stats
from .wsclient import LoadtestError, Target

#: Seconds either side of --grace within which an absence may or may not give a leave.
GRACE_TOLERANCE = 0.25
#: Seconds a subscribe or presence query waits for its reply.
COMMAND_TIMEOUT = 10.0
#: Attempts to come back from the background (with a growing pause between them).
RESUME_ATTEMPTS = 3
#: Seconds pushes get to arrive after the last device came back, before the final check.
SETTLE_S = 1.0


class Presence(Scenario):
    name = "presence"
    help = "devices going to the background and back (churn); observers check join/leave and presence lists"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("presence")
        group.add_argument("--devices", type=positive_int, default=1000, help="devices, one user each (default 1000)")
        group.add_argument("--room-size", type=positive_int, default=50, help="devices per channel (default 50)")
        group.add_argument("--observers", type=positive_int, default=1, help="observers per channel (default 1)")
        group.add_argument(
            "--churn-rate",
            type=non_negative,
            default=10.0,
            help="devices going to the background per second (default 10)",
        )
        group.add_argument(
            "--background-s",
            type=non_negative,
            default=10.0,
            help="mean seconds in the background; each pause is drawn from half to 1.5 times it (default 10)",
        )
        group.add_argument(
            "--background",
            choices=("close", "drop", "silent"),
            default="close",
            help="how a device leaves: close its WebSocket, drop TCP, or go silent (default close)",
        )
        group.add_argument(
            "--grace", type=non_negative, default=5.0, help="the namespace's presence_grace, in seconds (default 5)"
        )
        group.add_argument("--namespace", default="presence", help="the presence namespace (default presence)")
        group.add_argument(
            "--channel-prefix", default="lt-presence-", help="channel c is NAMESPACE:PREFIX<c> (default lt-presence-)"
        )
        group.add_argument("--seed", type=int, default=1, help="seed of the churn (default 1)")

    @classmethod
    def check(cls, args: argparse.Namespace) -> str | None:
        if not args.jwt_secret:
            return "presence needs --jwt-secret (the hub's token_secret): joins and leaves are of users"
        return None

    @classmethod
    def clients(cls, args: argparse.Namespace) -> int:
        return int(args.devices) + channels(args) * int(args.observers)

    @classmethod
    def role(cls, ctx: WorkerContext) -> Role:
        return PresenceRole(ctx)

    async def drive(self, run: Run) -> Outcome:
        args = run.args
        started = time.monotonic()
        observers = sum(await run.pool.request("observe", timeout=run.remaining()))
        devices = sum(await run.pool.request("connect", timeout=run.remaining()))
        connect_s = time.monotonic() - started
        run.note(f"{devices:,} of {args.devices:,} devices and {observers:,} observers ready in {connect_s:.1f}s")
        if devices == 0 or observers == 0:
            raise LoadtestError("no device or no observer could connect and subscribe")
        duration = min(args.duration, run.remaining())
        run.status = lambda: "churning"
        await run.pool.request("start", duration)
        await asyncio.sleep(duration)
        settled = await run.pool.request("settle", timeout=max(1.0, min(settle_s(args) + 5.0, run.remaining())))
        absences: dict[int, tuple[int, int]] = {}
        connected: list[int] = []
        for part in settled:
            absences.update(part["absences"])
            connected.extend(part["connected"])
        await asyncio.sleep(min(SETTLE_S, run.remaining()))
        await run.pool.request("check", {"absences": absences, "connected": connected}, timeout=run.remaining())
        total = await run.snapshot()
        extra: dict[str, Any] = {
            "devices": devices,
            "observers": observers,
            "channels": channels(args),
            "first_connects_per_s": round((devices + observers) / connect_s, 1) if connect_s else 0.0,
        }
        for name in COUNTERS:
            extra[name] = total.counters.get(name, 0)
        # No connects/s over the run: reconnects come at the churn's pace, not the hub's.
        return Outcome(elapsed_s=duration, extra=extra)


#: The scenario's counters, reported in ``extra``.
COUNTERS = (
    "backgrounds",
    "short_absences",
    "long_absences",
    "borderline_absences",
    "resume_failures",
    "joins_seen",
    "leaves_seen",
    "flaps",
    "missed_leaves",
    "join_mismatches",
    "presence_list_mismatches",
    "pushed_state_mismatches",
    "presence_truncated",
)


def settle_s(args: argparse.Namespace) -> float:
    """Most seconds a device's last pause can take: the longest pause, then every resume attempt
    timing out, with the backoff between attempts."""
    attempt = CONNECT_TIMEOUT + COMMAND_TIMEOUT
    return (
        float(args.background_s) * 1.5 + RESUME_ATTEMPTS * attempt + sum(0.5 * (1 << a) for a in range(RESUME_ATTEMPTS))
    )


def channels(args: argparse.Namespace) -> int:
    return -(-int(args.devices) // int(args.room_size))


class Device(Client):
    """A device: pushes are not read (a device only holds its place)."""


class Observer(Client):
    """Watches one channel: counts joins and leaves per user, and who its pushes say is present."""

    def __init__(self, target: Target, stats: Stats, index: int, channel: str) -> None:
        super().__init__(target, stats, index)
        self.channel = channel
        self.joins: Counter[str] = Counter()
        self.leaves: Counter[str] = Counter()
        self.present: set[str] = set()

    def on_push(self, message: dict[str, Any]) -> None:
        kind = message.get("push")
        user = message.get("user")
        if not isinstance(user, str):
            return
        if kind == "join":
            self.joins[user] += 1
            self.present.add(user)
            self.stats.counters["joins_seen"] += 1
            self.stats.delivered += 1
        elif kind == "leave":
            self.leaves[user] += 1
            self.present.discard(user)
            self.stats.counters["leaves_seen"] += 1
            self.stats.delivered += 1


@dataclass
class Slot:
    """One device and its absences so far."""

    index: int
    channel: str
    client: Device | None = None
    paused: bool = False
    long: int = 0  # absences that must give a leave
    borderline: int = 0  # absences that may give one


class PresenceRole(Role):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.stats = ctx.stats
        self.args = ctx.args
        self.observers: list[Observer] = []
        self.slots: list[Slot] = []
        self.churn: asyncio.Task[None] | None = None
        self.pauses: set[asyncio.Task[None]] = set()

    def channel(self, c: int) -> str:
        return f"{self.args.namespace}:{self.args.channel_prefix}{c}"

    async def handle(self, kind: str, arg: Any) -> Any:
        devices = self.args.devices
        if kind == "observe":
            mine = [i for i in self.ctx.indices if i >= devices]
            await gather_bounded(mine, self.args.concurrency, self._observe)
            return len(self.observers)
        if kind == "connect":
            slots = {i: Slot(i, self.channel(i // self.args.room_size)) for i in self.ctx.indices if i < devices}

            async def arrive(i: int) -> None:
                await self._come_back(slots[i])

            await gather_bounded(slots, self.args.concurrency, arrive)
            self.slots = [s for s in slots.values() if s.client is not None]
            return len(self.slots)
        if kind == "start":
            self.churn = asyncio.create_task(self._churn(time.monotonic() + float(arg)))
            return None
        if kind == "settle":
            return await self._settle()
        if kind == "check":
            self._check(arg["absences"], set(arg["connected"]))
            await asyncio.gather(*(self._check_list(o, set(arg["connected"])) for o in self.observers))
            return None
        raise LoadtestError(f"unknown request {kind!r}")

    async def _observe(self, i: int) -> None:
        ctx = self.ctx
        channel = self.channel((i - self.args.devices) // self.args.observers)
        try:
            observer = await dial(ctx, i, lambda: Observer(ctx.target(i), self.stats, i, channel))
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("observer connect", exc))
            return
        try:
            await observer.command({"cmd": "subscribe", "channel": channel}, COMMAND_TIMEOUT)
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("observer subscribe", exc))
            observer.abort()
            return
        self.observers.append(observer)

    async def _come_back(self, slot: Slot) -> bool:
        """Connect ``slot``'s device and subscribe it; True when it is back."""
        ctx, i = self.ctx, slot.index
        try:
            device = await dial(ctx, i, lambda: Device(ctx.target(i), self.stats, i))
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("connect", exc))
            return False
        try:
            await device.command({"cmd": "subscribe", "channel": slot.channel}, COMMAND_TIMEOUT)
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("subscribe", exc))
            device.abort()
            return False
        device.decoding = False  # nothing to read but pings
        slot.client = device
        return True

    async def _churn(self, end: float) -> None:
        args = self.args
        if not self.slots or args.churn_rate <= 0:
            return
        rate = args.churn_rate * len(self.slots) / args.devices  # this process's share
        rng = random.Random(args.seed * 1_000_003 + self.ctx.index)
        for _ in range(int(rate * args.duration * 4) + 4):
            gap = rng.expovariate(rate)
            if time.monotonic() + gap > end:
                return
            await asyncio.sleep(gap)
            idle = [s for s in self.slots if not s.paused and s.client is not None and not s.client.ended.done()]
            if not idle:
                continue
            slot = rng.choice(idle)
            pause = rng.uniform(args.background_s / 2, args.background_s * 1.5)
            task = asyncio.create_task(self._background(slot, pause))
            self.pauses.add(task)
            task.add_done_callback(self.pauses.discard)

    async def _background(self, slot: Slot, pause: float) -> None:
        client = slot.client
        assert client is not None
        slot.paused = True
        self.stats.counters["backgrounds"] += 1
        started = time.monotonic()
        mode = self.args.background
        if mode == "close":
            client.close()
        else:
            client.dropped = True  # our doing: no close code of the hub's to count
            if mode == "drop":
                client.abort()
            elif client.transport is not None:
                client.transport.pause_reading()
        await asyncio.sleep(pause)
        client.abort()  # a silent one is dropped now; the others are gone already
        slot.client = None
        gone = time.monotonic() - started  # the least the hub saw it absent
        for attempt in range(RESUME_ATTEMPTS):
            if await self._come_back(slot):
                break
            await asyncio.sleep(0.5 * 2**attempt)
        else:
            self.stats.counters["resume_failures"] += 1
        back = time.monotonic() - started  # the most
        self._classify(slot, gone, back)
        slot.paused = False

    def _classify(self, slot: Slot, gone: float, back: float) -> None:
        grace = self.args.grace
        if back < grace - GRACE_TOLERANCE:
            self.stats.counters["short_absences"] += 1
        elif gone > grace + GRACE_TOLERANCE and self.args.background != "silent":
            slot.long += 1
            self.stats.counters["long_absences"] += 1
        else:
            slot.borderline += 1
            self.stats.counters["borderline_absences"] += 1

    async def _settle(self) -> dict[str, Any]:
        if self.churn is not None:
            await self.churn
        if self.pauses:
            await asyncio.wait(set(self.pauses), timeout=settle_s(self.args))
            for task in list(self.pauses):  # cannot happen: every step of a pause is bounded
                task.cancel()
                self.stats.counters["resume_failures"] += 1
        return {
            "absences": {s.index: (s.long, s.borderline) for s in self.slots if s.long or s.borderline},
            "connected": [s.index for s in self.slots if s.client is not None and not s.client.ended.done()],
        }

    def _check(self, absences: dict[int, tuple[int, int]], connected: set[int]) -> None:
        """Each observer's joins and leaves against the absences of its channel's devices."""
        size = self.args.room_size
        for observer in self.observers:
            if observer.ended.done():
                self.stats.error("observer gone before the check")
                continue
            c = (observer.index - self.args.devices) // self.args.observers
            for i in range(c * size, min((c + 1) * size, self.args.devices)):
                user = self.ctx.user(i)
                long, borderline = absences.get(i, (0, 0))
                leaves, joins = observer.leaves[user], observer.joins[user]
                if leaves > long + borderline:
                    self.stats.counters["flaps"] += leaves - long - borderline
                    self.stats.duplicated += leaves - long - borderline
                elif leaves < long:
                    self.stats.counters["missed_leaves"] += long - leaves
                    self.stats.lost += long - leaves
                if i in connected and joins != leaves + 1:
                    self.stats.counters["join_mismatches"] += abs(joins - leaves - 1)
                if (user in observer.present) != (i in connected):
                    self.stats.counters["pushed_state_mismatches"] += 1

    async def _check_list(self, observer: Observer, connected: set[int]) -> None:
        """The hub's presence list of the observer's channel: one entry per connected device."""
        if observer.ended.done():
            return
        try:
            result = await observer.command({"cmd": "presence", "channel": observer.channel}, COMMAND_TIMEOUT)
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("presence", exc))
            return
        if result.get("truncated"):
            self.stats.counters["presence_truncated"] += 1
            return
        entries: Counter[str] = Counter(
            m.get("user", "") for m in (result.get("presence") or {}).values() if isinstance(m, dict)
        )
        size = self.args.room_size
        c = (observer.index - self.args.devices) // self.args.observers
        for i in range(c * size, min((c + 1) * size, self.args.devices)):
            expected = 1 if i in connected else 0
            self.stats.counters["presence_list_mismatches"] += abs(entries[self.ctx.user(i)] - expected)

    async def close(self) -> None:
        if self.churn is not None:
            self.churn.cancel()
        for task in list(self.pauses):
            task.cancel()
        for slot in self.slots:
            if slot.client is not None:
                slot.client.close()
        for observer in self.observers:
            observer.close()
        await asyncio.sleep(0.05)


__all__ = ["Presence"]
