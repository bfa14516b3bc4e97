"""Events on their way into one Redis Stream: a bounded buffer that one task appends in pipelines.

The writer behind a webhook endpoint's Redis queue and behind the event stream. ``put`` never waits:
the event waits here, at most ``limit`` events and :data:`~realtime.backend.queues.MAX_QUEUED_BYTES`
of payload (:attr:`Event.size`). Beyond either bound the oldest waiting event is dropped and counted;
never one of the round trip in progress (it may be in Redis already, and its publish waits for it):
with none waiting, the new event goes instead (unless it would be alone). A round trip that fails goes
back to the front of the buffer (some of it may be appended twice: consumers deduplicate by the
event's ``id``) and is tried again after a pause. :meth:`settle` waits until every event put so far
is appended or dropped: the hub answers a publish only then, so a node killed right after its answer
has not lost the event.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Any

from ..tasks import cancel_and_wait
from .events import Event
from .queues import MAX_QUEUED_BYTES

if TYPE_CHECKING:
    from redis.asyncio import Redis, RedisCluster

#: An event's Stream entry: its fields.
Fields = Mapping[Any, Any]


class StreamAppender:
    """Appends the events :meth:`put` takes to the Stream ``key`` (``XADD MAXLEN ~ maxlen``).

    ``on_drop(n)`` is told of events dropped, ``on_appended(n)`` of events appended, and
    ``on_failure(error, pause)`` of a round trip that failed (tried again after ``pause`` seconds,
    from ``pauses[0]`` doubling up to ``pauses[1]``)."""

    def __init__(
        self,
        redis: Redis | RedisCluster,
        key: str,
        fields: Callable[[Event], Fields],
        *,
        limit: int,
        maxlen: int,
        batch: int,
        pauses: tuple[float, float],
        on_drop: Callable[[int], None],
        on_failure: Callable[[Exception, float], None],
        on_appended: Callable[[int], None] = lambda n: None,
    ) -> None:
        self.redis = redis
        self.key = key
        self._fields = fields
        self._limit = limit
        self._maxlen = maxlen
        self._batch = batch
        self._pauses = pauses
        self._on_drop = on_drop
        self._on_failure = on_failure
        self._on_appended = on_appended
        #: Events waiting, as (serial, entry fields, payload bytes), oldest first.
        self.waiting: deque[tuple[int, Fields, int]] = deque()
        #: The round trip in progress: out of :attr:`waiting`, back to its front if it fails.
        self._sending: list[tuple[int, Fields, int]] = []
        self._bytes = 0  # the payload bytes of the waiting events and the round trip
        self._put = 0  # events put so far: the serial of the last one
        self._wake = asyncio.Event()
        self._progress = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._closed = False

    def put(self, event: Event) -> None:
        if self._closed:
            return
        self._put += 1
        size = event.size
        dropped = 0
        while self._over(1, size) and self.waiting:
            self._bytes -= self.waiting.popleft()[2]
            dropped += 1
        drop_this = bool(self._sending) and self._over(1, size)
        if dropped or drop_this:
            self._dropped(dropped + drop_this)
        if drop_this:
            return
        self.waiting.append((self._put, self._fields(event), size))
        self._bytes += size
        self._wake.set()
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run())

    @property
    def pending(self) -> bool:
        """Whether events wait or a round trip is in progress."""
        return bool(self.waiting or self._sending)

    def _over(self, n: int, size: int) -> bool:
        """Whether ``n`` more events of ``size`` bytes would exceed the count or the bytes."""
        count = len(self.waiting) + len(self._sending) + n
        return count > self._limit or self._bytes + size > MAX_QUEUED_BYTES

    def _oldest(self) -> int:
        """The serial of the oldest event neither appended nor dropped (the round trip's come first)."""
        if self._sending:
            return self._sending[0][0]
        return self.waiting[0][0] if self.waiting else self._put + 1

    def _dropped(self, n: int) -> None:
        self._progress.set()
        self._on_drop(n)

    async def settle(self) -> None:
        """Until every event put so far is appended (or dropped), or this appender closes."""
        target = self._put
        while self._oldest() <= target and not self._closed:
            self._progress.clear()
            await self._progress.wait()

    async def _run(self) -> None:
        pause = self._pauses[0]
        while True:
            if not self.waiting:
                self._wake.clear()
                await self._wake.wait()
            batch = self._sending = [self.waiting.popleft() for _ in range(min(self._batch, len(self.waiting)))]
            try:
                pipe: Any = self.redis.pipeline(transaction=False)
                for _, fields, _ in batch:
                    pipe.xadd(self.key, fields, maxlen=self._maxlen, approximate=True)
                await pipe.execute()
            except Exception as exc:
                self._sending = []
                self.waiting.extendleft(reversed(batch))
                overflow = 0
                while len(self.waiting) > 1 and self._over(0, 0):
                    self._bytes -= self.waiting.popleft()[2]
                    overflow += 1
                if overflow:
                    self._dropped(overflow)
                self._on_failure(exc, pause)
                await asyncio.sleep(pause)
                pause = min(pause * 2, self._pauses[1])
                continue
            except BaseException:
                self._sending = []
                self.waiting.extendleft(reversed(batch))
                raise
            self._sending = []
            self._bytes -= sum(size for _, _, size in batch)
            self._progress.set()
            self._on_appended(len(batch))
            pause = self._pauses[0]

    async def close(self, flush: float) -> None:
        """Take no more events; append what waits for up to ``flush`` seconds, then stop."""
        self._closed = True
        self._progress.set()  # settle waits no more
        task, self._task = self._task, None
        if task is None:
            return
        loop = asyncio.get_running_loop()
        deadline = loop.time() + flush
        while self.pending and loop.time() < deadline:
            await asyncio.sleep(0.01)
        await cancel_and_wait(task)


__all__ = ["StreamAppender"]
