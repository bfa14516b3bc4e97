"""``chat``: users in small rooms sending at human rates, with typing notices and read receipts.

``--users`` clients, each a signed-in user (``--jwt-secret``; user ``lt<i>``),
are split into rooms of ``--room-min`` .. ``--room-max`` members (consecutive
users; sizes drawn from ``--seed``, so every process computes the same rooms).
Room ``r`` is the channel ``NAMESPACE:lt-room-<r>`` of a chat namespace. Once
every member is subscribed, each user sends messages at ``--message-rate`` a
second on average (exponential gaps, as people do), for ``--duration`` seconds:

* ``typing`` first, unless the user's last one was less than
  ``--typing-interval`` ago (the hub's ``typing_interval`` throttle), then the
  publish ``--typing-lead`` seconds later;
* the publish's data is ``{"s": sender, "n": seq, "t": monotonic_ns}``: ``n``
  counts the sender's messages from 1, ``t`` is when it left. A message whose
  publish got no answer (a timeout, or still waiting when the senders are stopped
  ``SEND_GRACE`` seconds after ``--duration``) keeps its ``n``: members that never
  get it count it lost.

Every member decodes what it receives (a few messages a second each): it keeps
one :class:`OffsetTracker` per sender of its room over ``n`` (lost, duplicated,
out of order), records publish -> deliver latency from ``t``, and ``--read-delay``
seconds after a message sends one ``read`` receipt up to the newest offset it has
(later messages within the delay share it). Typing and read pushes are counted.
At the end every member must have every message of its room, its own included,
once and in each sender's order.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import random
import time
from typing import Any

from .clients import Client, dial, error_kind, gather_bounded
from .context import WorkerContext
from .drain import drain
from .flags import non_negative, positive_int
from .run import Run
from .scenario import Outcome, Role, Scenario
from .stats import OffsetTracker
from .wsclient import Closed, LoadtestError, Refused, Target, monotonic_ns

#: Seconds a publish, typing or subscribe waits for its reply.
COMMAND_TIMEOUT = 10.0
#: Seconds the workers' senders get, after --duration, to finish the message they are on.
SEND_GRACE = 15.0
#: Error code of a typing notice sent too soon (the hub's throttle), counted apart from errors.
TOO_MANY_REQUESTS = 110
#: Added to --typing-interval before a user types again: the hub starts its throttle when the
#: notice arrives, a little after we sent it.
TYPING_MARGIN = 0.05


def rooms(users: int, smallest: int, largest: int, seed: int) -> list[int]:
    """The first user of each room (consecutive users share a room); sizes are drawn from ``seed``
    between ``smallest`` and ``largest``, and a last room too small joins the one before it."""
    rng = random.Random(seed)
    starts: list[int] = []
    i = 0
    while i < users:
        starts.append(i)
        i += rng.randint(smallest, largest)
    if len(starts) > 1 and users - starts[-1] < smallest:
        starts.pop()
    return starts


class Layout:
    """Which room each user is in, and each room's members (a range of user indices)."""

    def __init__(self, args: argparse.Namespace) -> None:
        self.users: int = args.users
        self.starts = rooms(args.users, args.room_min, args.room_max, args.seed)
        self.channel_prefix = f"{args.namespace}:{args.room_prefix}"

    def room(self, user: int) -> int:
        return bisect.bisect_right(self.starts, user) - 1

    def members(self, room: int) -> range:
        end = self.starts[room + 1] if room + 1 < len(self.starts) else self.users
        return range(self.starts[room], end)

    def channel(self, room: int) -> str:
        return f"{self.channel_prefix}{room}"


class Chat(Scenario):
    name = "chat"
    help = "users in small rooms sending at human rates, with typing and read receipts: every message to every member"

    @classmethod
    def add_arguments(cls, parser: argparse.ArgumentParser) -> None:
        group = parser.add_argument_group("chat")
        group.add_argument("--users", type=positive_int, default=1000, help="users, one client each (default 1000)")
        group.add_argument("--room-min", type=positive_int, default=2, help="fewest members of a room (default 2)")
        group.add_argument("--room-max", type=positive_int, default=20, help="most members of a room (default 20)")
        group.add_argument(
            "--message-rate",
            type=non_negative,
            default=0.1,
            help="messages per user per second, on average (default 0.1)",
        )
        group.add_argument("--namespace", default="chat", help="the chat namespace of the rooms (default chat)")
        group.add_argument("--room-prefix", default="lt-room-", help="room r is NAMESPACE:PREFIX<r> (default lt-room-)")
        group.add_argument(
            "--typing",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="send a typing notice before each message (default on)",
        )
        group.add_argument(
            "--typing-lead", type=non_negative, default=0.5, help="seconds from typing to the send (default 0.5)"
        )
        group.add_argument(
            "--typing-interval",
            type=non_negative,
            default=1.0,
            help="the hub's typing_interval: no typing notice sooner than this after the last (default 1)",
        )
        group.add_argument(
            "--reads",
            action=argparse.BooleanOptionalAction,
            default=True,
            help="send read receipts for what arrives (default on)",
        )
        group.add_argument(
            "--read-delay",
            type=non_negative,
            default=0.5,
            help="seconds from a message's arrival to the read receipt covering it (default 0.5)",
        )
        group.add_argument("--seed", type=int, default=1, help="seed of the room sizes and send times (default 1)")

    @classmethod
    def check(cls, args: argparse.Namespace) -> str | None:
        if not 2 <= args.room_min <= args.room_max:
            return "rooms need 2 <= --room-min <= --room-max"
        if args.users < args.room_min:
            return "--users must be at least --room-min"
        if not args.jwt_secret:
            return "chat needs --jwt-secret (the hub's token_secret): typing and read receipts belong to a user"
        if args.message_rate <= 0:
            return "--message-rate must be above 0"
        return None

    @classmethod
    def clients(cls, args: argparse.Namespace) -> int:
        return int(args.users)

    @classmethod
    def role(cls, ctx: WorkerContext) -> Role:
        return ChatRole(ctx)

    async def drive(self, run: Run) -> Outcome:
        args = run.args
        layout = Layout(args)
        started = time.monotonic()
        answers = await run.pool.request("connect", timeout=run.remaining())
        connect_s = time.monotonic() - started
        members = [i for a in answers for i in a]
        run.note(f"{len(members):,} of {args.users:,} users in {len(layout.starts):,} rooms in {connect_s:.1f}s")
        if not members:
            raise LoadtestError("no user could connect and subscribe")
        present = [0] * len(layout.starts)  # connected members per room
        for i in members:
            present[layout.room(i)] += 1
        duration = min(args.duration, run.remaining())
        t0 = monotonic_ns()
        await run.pool.request("start", duration)
        run.status = lambda: f"rooms {len(layout.starts):,}"
        await asyncio.sleep(duration)
        ends = await run.pool.request("settle", timeout=max(1.0, min(duration + SEND_GRACE, run.remaining())))
        send_s = (monotonic_ns() - t0) / 1e9
        last: dict[int, int] = {}
        for e in ends:
            last.update(e)
        expected = sum(n * present[layout.room(s)] for s, n in last.items())

        async def delivered() -> tuple[bool, int]:
            got = (await run.snapshot()).delivered
            return got >= expected, got

        if not await drain(run, delivered):
            run.note("deliveries stalled before every member had every message")
        finishes = await run.pool.request("finish", last, timeout=max(1.0, run.remaining()))
        last_ns = max((f for f in finishes), default=0)
        total = await run.snapshot()
        span = max(0, last_ns - t0) / 1e9 or send_s
        sizes = [len(layout.members(r)) for r in range(len(layout.starts))]
        extra: dict[str, Any] = {
            "users": len(members),
            "rooms": len(sizes),
            "room_size_min": min(sizes),
            "room_size_max": max(sizes),
            "messages": sum(last.values()),
            "expected_deliveries": expected,
            "messages_per_s": round(sum(last.values()) / send_s, 1) if send_s else 0.0,
        }
        for name in ("typing_sent", "typing_throttled", "typing_pushes", "reads_sent", "read_pushes"):
            extra[name] = total.counters.get(name, 0)
        return Outcome(elapsed_s=span, connect_s=connect_s, extra=extra)


class Member(Client):
    """One user in one room: decodes what arrives and keeps one tracker per sender."""

    def __init__(self, target: Target, role: ChatRole, index: int, channel: str) -> None:
        super().__init__(target, role.stats, index)
        self.role = role
        self.channel = channel
        self.trackers: dict[int, OffsetTracker] = {}
        self.seq = 0  # this user's messages sent (n of the last one)
        self.typed_at = -1e9  # time.monotonic() of the last typing notice
        self.read_upto = 0  # newest offset received
        self.read_sent = 0  # newest offset a read receipt was sent for
        self.read_timer: asyncio.TimerHandle | None = None

    def on_push(self, message: dict[str, Any]) -> None:
        kind = message.get("push")
        if kind == "pub":
            self.role.received(self, message)
        elif kind == "typing":
            self.stats.counters["typing_pushes"] += 1
        elif kind == "read":
            self.stats.counters["read_pushes"] += 1

    def on_end(self) -> None:
        super().on_end()
        if self.read_timer is not None:
            self.read_timer.cancel()
            self.read_timer = None


class ChatRole(Role):
    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.stats = ctx.stats
        self.args = ctx.args
        self.layout = Layout(ctx.args)
        self.members: list[Member] = []
        self.senders: list[asyncio.Task[None]] = []
        self.last_ns = 0

    async def handle(self, kind: str, arg: Any) -> Any:
        if kind == "connect":
            await gather_bounded(self.ctx.indices, self.args.concurrency, self._join)
            return [m.index for m in self.members]
        if kind == "start":
            end = time.monotonic() + float(arg)
            self.senders = [asyncio.create_task(self._send_loop(m, end)) for m in self.members]
            return None
        if kind == "settle":
            if self.senders:
                await asyncio.wait(self.senders, timeout=SEND_GRACE)
                for task in self.senders:
                    task.cancel()
            return {m.index: m.seq for m in self.members if m.seq}
        if kind == "finish":
            self._finish(arg)
            return self.last_ns
        raise LoadtestError(f"unknown request {kind!r}")

    async def _join(self, i: int) -> None:
        ctx = self.ctx
        channel = self.layout.channel(self.layout.room(i))
        try:
            member = await dial(ctx, i, lambda: Member(ctx.target(i), self, i, channel))
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("connect", exc))
            return
        try:
            await member.command({"cmd": "subscribe", "channel": channel}, COMMAND_TIMEOUT)
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("subscribe", exc))
            member.abort()
            return
        self.members.append(member)

    async def _send_loop(self, member: Member, end: float) -> None:
        args = self.args
        rng = random.Random(args.seed * 1_000_003 + member.index)
        lead = args.typing_lead if args.typing else 0.0
        # At most four times the expected count (exponential gaps rarely go below a quarter).
        for _ in range(int(args.duration * args.message_rate * 4) + 4):
            gap = rng.expovariate(args.message_rate)
            if time.monotonic() + gap > end or member.ended.done():
                return
            await asyncio.sleep(max(0.0, gap - lead))
            if args.typing:
                await self._type(member)
                await asyncio.sleep(min(lead, gap))
            if not await self._publish(member):
                return

    async def _type(self, member: Member) -> None:
        now = time.monotonic()
        if now - member.typed_at < self.args.typing_interval + TYPING_MARGIN:
            return  # the hub would refuse it: the indicator is still on from the last one
        member.typed_at = now
        try:
            await member.command({"cmd": "typing", "channel": member.channel}, COMMAND_TIMEOUT)
        except Refused as exc:
            if exc.code == TOO_MANY_REQUESTS:
                self.stats.counters["typing_throttled"] += 1
            else:
                self.stats.error(error_kind("typing", exc))
            return
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("typing", exc))
            return
        self.stats.counters["typing_sent"] += 1

    async def _publish(self, member: Member) -> bool:
        """One message; False when the connection is gone."""
        # n counts as sent from here: a publish whose outcome stays unknown (a timeout, the run
        # ending while it waits) may still be delivered, and must not look like the next one.
        n = member.seq = member.seq + 1
        data = {"s": member.index, "n": n, "t": monotonic_ns()}
        try:
            await member.command({"cmd": "publish", "channel": member.channel, "data": data}, COMMAND_TIMEOUT)
        except Refused as exc:  # not published: the next message reuses n
            member.seq = n - 1
            self.stats.error(error_kind("publish", exc))
            return True
        except (OSError, TimeoutError, LoadtestError) as exc:
            self.stats.error(error_kind("publish", exc))
            return not isinstance(exc, Closed)
        self.stats.sent += 1
        return True

    def received(self, member: Member, message: dict[str, Any]) -> None:
        now = monotonic_ns()
        data = message.get("data")
        if not isinstance(data, dict) or not {"s", "n", "t"} <= data.keys():
            self.stats.error("publication not from the load test")
            return
        tracker = member.trackers.get(data["s"])
        if tracker is None:
            tracker = member.trackers[data["s"]] = OffsetTracker(self.stats)
        if tracker.observe(int(data["n"]), ""):
            self.stats.latency.record_ns(now - int(data["t"]))
        self.stats.delivered += 1
        self.last_ns = now
        if self.args.reads and data["s"] != member.index:
            member.read_upto = max(member.read_upto, int(message.get("offset", 0)))
            if member.read_timer is None:
                loop = asyncio.get_running_loop()
                member.read_timer = loop.call_later(self.args.read_delay, self._read, member)

    def _read(self, member: Member) -> None:
        member.read_timer = None
        offset = member.read_upto
        if offset <= member.read_sent or member.ended.done():
            return
        member.read_sent = offset
        reply = member.command_nowait({"cmd": "read", "channel": member.channel, "offset": offset})
        reply.add_done_callback(self._read_done)
        self.stats.counters["reads_sent"] += 1

    def _read_done(self, reply: asyncio.Future[dict[str, Any]]) -> None:
        if reply.cancelled():
            return
        exc = reply.exception()
        if exc is not None:
            if not isinstance(exc, Closed):
                self.stats.error(error_kind("read", exc))
            return
        error = reply.result().get("error")
        if error is not None:
            self.stats.error(f"read refused {error.get('code', 0)}")

    def _finish(self, last: dict[int, int]) -> None:
        """Count what never came: each member must have every sender's messages up to its last."""
        for member in self.members:
            for sender in self.layout.members(self.layout.room(member.index)):
                sent = last.get(sender, 0)
                tracker = member.trackers.get(sender)
                if tracker is None:
                    self.stats.lost += sent
                else:
                    tracker.finish(sent)

    async def close(self) -> None:
        for task in self.senders:
            task.cancel()
        for member in self.members:
            member.close()
        await asyncio.sleep(0.05)


__all__ = ["Chat", "Layout", "rooms"]
