"""A cheap subscriber: counts publications in the raw stream, or (a sampler) decodes and checks them.

Used by the scenarios with many subscribers (fanout, ramp). A counting
subscriber stops decoding after its subscribe reply and counts the publication
marker in the raw bytes; at the end it is checked by count against the
publications of its channel since its subscribe reply. A sampler decodes every
publication: its offsets go through an :class:`OffsetTracker` and its
publish -> deliver latency to the sink's :meth:`Sink.record`.
"""

from __future__ import annotations

from typing import Any, Protocol

from .clients import Client, dial, error_kind
from .context import WorkerContext
from .stats import OffsetTracker, Stats, count_shortfall
from .wsclient import LoadtestError, Target, count_markers, monotonic_ns


class Sink(Protocol):
    """Where a :class:`Subscriber` reports (a scenario's role)."""

    stats: Stats

    def received(self, sub: Subscriber, n: int) -> None:
        """``n`` more publications reached ``sub``."""

    def record(self, latency_ns: int) -> None:
        """A sampler's publish -> deliver latency."""

    def gone(self, sub: Subscriber) -> None:
        """``sub``'s connection ended."""


class Subscriber(Client):
    """One subscriber of one channel; ``count`` publications so far."""

    def __init__(self, target: Target, sink: Sink, index: int, slot: int, sampler: bool) -> None:
        super().__init__(target, sink.stats, index)
        self.sink = sink
        self.slot = slot
        self.sampler = sampler
        self.count = 0
        self.tracker = OffsetTracker(sink.stats)  # at the subscribe position; moves only on samplers
        self._tail = b""
        #: Publications that came before the subscribe reply was handled (in the same read): they
        #: are checked once the tracker stands at the reply's position (:meth:`go_live`).
        self._held: list[dict[str, Any]] | None = []

    def count_raw(self, data: bytes) -> None:
        n, self._tail = count_markers(data, self._tail)
        if n:
            self.count += n
            self.sink.received(self, n)

    def on_push(self, message: dict[str, Any]) -> None:
        if message.get("push") != "pub":
            return
        if self._held is not None:
            self._held.append(message)
            return
        self.count += 1
        if self.sampler:
            now = monotonic_ns()
            self.tracker.observe(message["offset"], message["epoch"])
            data = message.get("data")
            if isinstance(data, bytes) and len(data) >= 8:
                self.sink.record(now - int.from_bytes(data[:8], "big"))
        self.sink.received(self, 1)

    def go_live(self, offset: int, epoch: str) -> None:
        """The subscribe reply: the stream stands at ``offset`` of ``epoch``; check what was held."""
        self.tracker.reset(offset, epoch)
        held, self._held = self._held or [], None
        for message in held:
            self.on_push(message)

    def on_end(self) -> None:
        super().on_end()
        self.sink.gone(self)

    def finish(self, epoch: str, last_offset: int) -> None:
        """Account what this subscriber missed of its channel, which stands at ``last_offset``."""
        if self.tracker.epoch not in ("", epoch):
            return  # the stream restarted under it: no count to compare with
        if self.sampler:
            self.tracker.finish(last_offset)
        else:
            count_shortfall(self.stats, self.count, max(0, last_offset - self.tracker.offset))


async def subscribe(
    ctx: WorkerContext, sink: Sink, index: int, slot: int, channel: str, sampler: bool
) -> Subscriber | None:
    """Dial client ``index``, connect and subscribe it to ``channel``; None (and an error counted)
    if any step failed. A counting subscriber stops decoding once subscribed."""
    try:
        sub = await dial(ctx, index, lambda: Subscriber(ctx.target(index), sink, index, slot, sampler))
    except (OSError, TimeoutError, LoadtestError) as exc:
        ctx.stats.error(error_kind("connect", exc))
        return None
    try:
        result = await sub.command({"cmd": "subscribe", "channel": channel})
    except (OSError, TimeoutError, LoadtestError) as exc:
        ctx.stats.error(error_kind("subscribe", exc))
        sub.abort()
        return None
    sub.go_live(int(result.get("offset", 0)), str(result.get("epoch", "")))
    if not sampler:
        sub.decoding = False
    return sub
