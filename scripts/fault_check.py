"""Check what a running hub (or cluster of hubs) delivers while you inject faults.

Usage::

    python scripts/fault_check.py --ws ws://127.0.0.1:8000/ws \\
        --api http://127.0.0.1:8000 --api-key KEY [--channel fault:check] \\
        [--subscribers 3] [--count 500] [--rate 200] [--settle 3] [--json]

``--ws`` and ``--api`` may be given several times (nodes of one deployment):
subscribers and publishes are spread over them. The channel's namespace must
keep history (recovery) and let anonymous clients subscribe, or pass
``--token`` for the subscribers.

N subscribers (the Python SDK, recovering on reconnect) record every
publication; one publisher sends ``--count`` numbered messages over the HTTP
API, each with its own publish id, resending on a temporary failure with the
same id. At the end it reads the channel's history and reports:

* per subscriber: ``gaps`` (stored, not delivered, in no more runs of the
  channel's order than the SDK reported it could not recover:
  ``on_unrecovered``), else ``lost``; ``duplicated`` and ``reordered``
  deliveries;
* for the publisher: ``ok``, ``failed`` (an answer that says not stored),
  ``unknown`` (OUTCOME_UNKNOWN or no answer, after the resends), and
  ``stored_twice`` (numbers found more than once in history: the bug publish
  ids prevent), ``stored_after_failure`` (a "failed" publish found in history).

The exit status is 0 when every count but ``ok`` and ``unknown`` is zero.
Inject faults from elsewhere while it runs (``redis-cli CLIENT KILL TYPE
normal`` in a loop, a proxy that drops connections, SIGSTOP/SIGCONT of Redis).
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import itertools
import json
import sys
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any

from protocol.codes import ErrorCode
from realtime.client import Client, ReplyError, Subscription
from realtime.publisher import ApiError, ApiUnreachable, Publisher


@dataclass
class SubscriberReport:
    delivered: int = 0
    lost: int = 0
    gaps: int = 0
    duplicated: int = 0
    reordered: int = 0


@dataclass
class PublisherReport:
    sent: int = 0
    ok: int = 0
    failed: int = 0
    unknown: int = 0
    stored_twice: int = 0
    stored_after_failure: int = 0
    errors: dict[str, int] = field(default_factory=dict)


@dataclass
class Report:
    subscribers: list[SubscriberReport]
    publisher: PublisherReport

    @property
    def clean(self) -> bool:
        p = self.publisher
        subs_clean = all(s.lost == s.gaps == s.duplicated == s.reordered == 0 for s in self.subscribers)
        return subs_clean and p.failed == p.stored_twice == p.stored_after_failure == 0

    def as_dict(self) -> dict[str, Any]:
        return {"clean": self.clean, **asdict(self)}


class Recorder:
    """One subscriber: the numbers it got, in order, and the ones reported lost."""

    def __init__(self, url: str, channel: str, token: str | None) -> None:
        self.client = Client(url, token=token, on_unrecovered=self._unrecovered)
        self.channel = channel
        self.numbers: list[int] = []
        #: How often the SDK said a resubscribe could not get back everything missed.
        self.unrecovered = 0
        self.task: asyncio.Task[None] | None = None
        self.sub: Subscription | None = None

    async def start(self) -> None:
        await self.client.connect()
        deadline = time.monotonic() + 10
        while self.sub is None:  # faults may already be running: retry what is temporary
            try:
                self.sub = await self.client.subscribe(self.channel)
            except ReplyError as exc:
                if not exc.temporary or time.monotonic() > deadline:
                    raise
                await asyncio.sleep(0.1)
        self.task = asyncio.create_task(self._read())

    async def _read(self) -> None:
        assert self.sub is not None
        async for message in self.sub:
            data = message.data
            if isinstance(data, dict) and isinstance(data.get("n"), int):
                self.numbers.append(data["n"])

    def _unrecovered(self, sub: Subscription) -> None:
        self.unrecovered += 1

    async def stop(self) -> None:
        if self.task is not None:
            self.task.cancel()
            await asyncio.gather(self.task, return_exceptions=True)
        await self.client.close()


async def check(
    ws_urls: list[str],
    api_urls: list[str],
    api_key: str,
    *,
    channel: str = "fault:check",
    subscribers: int = 3,
    count: int = 200,
    rate: float = 200.0,
    settle: float = 2.0,
    token: str | None = None,
    run: str | None = None,
) -> Report:
    """Run one check and return its report (see the module's docstring)."""
    run = run or f"{time.time_ns():x}"
    recorders = [Recorder(ws_urls[i % len(ws_urls)], channel, token) for i in range(subscribers)]
    for r in recorders:
        await r.start()
    pubs = [Publisher(url, api_key, retries=3, retry_delay=0.1) for url in api_urls]
    report = PublisherReport()
    errors: Counter[str] = Counter()
    failed: set[int] = set()
    outcome: dict[int, str] = {}
    try:
        start = time.monotonic()

        async def publish(i: int) -> None:
            pub = pubs[i % len(pubs)]
            try:
                await pub.publish(channel, {"n": i, "run": run}, key=f"{run}-{i}")
            except ApiError as exc:
                name = ErrorCode(exc.code).name if isinstance(exc.code, ErrorCode) else str(exc.code)
                errors[name] += 1
                if exc.code == ErrorCode.OUTCOME_UNKNOWN:
                    outcome[i] = "unknown"
                else:
                    outcome[i] = "failed"
                    failed.add(i)
            except ApiUnreachable:
                errors["unreachable"] += 1
                outcome[i] = "unknown"
            else:
                outcome[i] = "ok"

        tasks = []
        for i in range(count):
            delay = start + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(publish(i)))
        await asyncio.gather(*tasks)
        report.sent = count
        for state in outcome.values():
            setattr(report, state, getattr(report, state) + 1)
        report.errors = dict(errors)
        await asyncio.sleep(settle)  # deliveries and recoveries finish
        stored = await _stored(pubs[0], channel, run)
    finally:
        for r in recorders:
            await r.stop()
        for pub in pubs:
            await pub.close()
    counts = Counter(stored)
    rank = {n: i for i, n in reversed(list(enumerate(stored)))}  # a number's first place in the stream
    report.stored_twice = sum(1 for n in counts.values() if n > 1)
    report.stored_after_failure = sum(1 for i in failed if counts[i])
    subs = []
    for r in recorders:
        got = Counter(r.numbers)
        missing = sum(1 for i in counts if got[i] == 0)
        # Publishes run concurrently, so the channel's order is history's (offsets), not the numbers'.
        place = [rank.get(n, -1) for n in r.numbers]
        out_of_order = sum(1 for a, b in itertools.pairwise(place) if b < a)
        # Each run of missed publications is one jump in what the subscriber got; the SDK reports
        # each jump it knows of (on_unrecovered). More jumps than reports: some went unreported.
        reported = _jumps(place, [rank[n] for n in counts if got[n] == 0]) <= r.unrecovered
        subs.append(
            SubscriberReport(
                delivered=len(r.numbers),
                lost=0 if reported else missing,
                gaps=missing if reported else 0,
                duplicated=sum(n - 1 for n in got.values() if n > 1),
                reordered=out_of_order,
            )
        )
    return Report(subs, report)


def _jumps(delivered: list[int], missed: list[int]) -> int:
    """How many runs of ``missed`` places (in the channel's order) lie between places ``delivered``."""
    seen = sorted(set(delivered))
    runs = set()
    for q in missed:
        i = bisect.bisect_left(seen, q)
        runs.add((seen[i - 1] if i else None, seen[i] if i < len(seen) else None))
    return len(runs)


async def _stored(pub: Publisher, channel: str, run: str) -> list[int]:
    """The numbers of this run found in the channel's history (all pages)."""
    numbers: list[int] = []
    after = 0
    deadline = time.monotonic() + 30
    while True:
        try:
            page = await pub.history(channel, limit=100, after=after)
        except (ApiError, ApiUnreachable):
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)
            continue
        messages = list(page)
        for m in messages:
            if isinstance(m.data, dict) and m.data.get("run") == run:
                numbers.append(m.data["n"])
        if not messages:
            return numbers
        after = messages[-1].offset


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--ws", action="append", required=True, help="WebSocket URL of a node (repeatable)")
    parser.add_argument("--api", action="append", required=True, help="HTTP base URL of a node (repeatable)")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--channel", default="fault:check")
    parser.add_argument("--subscribers", type=int, default=3)
    parser.add_argument("--count", type=int, default=500)
    parser.add_argument("--rate", type=float, default=200.0, help="publishes per second")
    parser.add_argument("--settle", type=float, default=3.0, help="seconds to wait for deliveries at the end")
    parser.add_argument("--token", help="connection token for the subscribers (default: anonymous)")
    parser.add_argument("--json", action="store_true", help="print the report as JSON")
    args = parser.parse_args(argv)
    report = asyncio.run(
        check(
            args.ws,
            args.api,
            args.api_key,
            channel=args.channel,
            subscribers=args.subscribers,
            count=args.count,
            rate=args.rate,
            settle=args.settle,
            token=args.token,
        )
    )
    if args.json:
        print(json.dumps(report.as_dict(), indent=2))
    else:
        p = report.publisher
        print(
            f"publisher: sent={p.sent} ok={p.ok} failed={p.failed} unknown={p.unknown} "
            f"stored_twice={p.stored_twice} stored_after_failure={p.stored_after_failure} errors={p.errors}"
        )
        for i, s in enumerate(report.subscribers):
            print(
                f"subscriber {i}: delivered={s.delivered} lost={s.lost} gaps={s.gaps} "
                f"duplicated={s.duplicated} reordered={s.reordered}"
            )
        print("clean" if report.clean else "NOT CLEAN")
    return 0 if report.clean else 1


if __name__ == "__main__":
    sys.exit(main())
