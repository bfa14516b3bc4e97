"""This node's publish script calls on one Redis: in submit order, many per round trip.

:meth:`PublishPipeline.call` queues one call of the publish script and returns
a future at once (nothing awaited before it is queued), so calls queued in an
order reach Redis in that order: a connection's pipelined publishes (see
``realtime.connection``) get offsets in the order the client sent them.
redis-py's pool would not keep it: concurrent commands go out on whichever
pooled connection each one gets first.

One task sends what is queued as one pipeline (at most :data:`MAX_BATCH`
calls, one write) on one pooled connection and reads the replies in order;
what is queued meanwhile goes in the next pipeline. Under load a round trip
carries many publishes; alone, a publish is sent at once, as before.

Each call's outcome is the one ``RedisEngine._publish_once`` documents: what
failed before reaching Redis (no connection, a new connection that did not
answer its PING, a refusal such as READONLY) was not published; what failed
after (a dropped connection, a timeout) is unknown. A call with a publish id
(``retry``) is sent again, at most ``attempts`` times and not past its
deadline, with a backoff doubling from ``backoff``; a failed call goes back to
the head of the queue, before the calls queued after it, so retries keep the
order too. A call refused (or NOSCRIPT) while a later call of its pipeline ran
is not sent again but fails (not published): sent again, it would be stored
after that one. A call whose waiter was cancelled before it was sent is dropped
(not published).
"""

from __future__ import annotations

import asyncio
import functools
import time
import weakref
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import redis.exceptions as rex
from redis.asyncio import Redis

from ..tasks import cancel_and_wait
from .errors import EngineUnavailable, OutcomeUnknown

if TYPE_CHECKING:
    from redis.commands.core import AsyncScript

#: Most publish script calls in one pipeline.
MAX_BATCH = 256


class _Call:
    __slots__ = ("args", "attempt", "deadline", "delay", "future", "keys", "retry", "unknown")

    def __init__(self, keys: list[str], args: list[Any], retry: bool, deadline: float, delay: float) -> None:
        self.keys = keys
        self.args = args
        self.retry = retry
        self.deadline = deadline
        self.delay = delay
        self.attempt = 0
        self.unknown = False
        self.future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()


class PublishPipeline:
    """Create with the engine's client (one Redis, not a cluster) and its publish script.

    ``is_outage(exc)`` says whether an error means "Redis unreachable"; ``warn(op, exc)``
    reports one (rate-limited by the engine); ``refused`` are the errors Redis answers
    instead of running a script. :meth:`close` fails what is queued.
    """

    def __init__(
        self,
        redis: Redis,
        script: AsyncScript,
        *,
        is_outage: Callable[[BaseException], bool],
        warn: Callable[[str, BaseException], None],
        refused: tuple[type[Exception], ...],
        attempts: int,
        retry_time: float,
        backoff: float,
    ) -> None:
        self._pool = redis.connection_pool
        self._script = script
        self._is_outage = is_outage
        self._warn = warn
        self._refused = refused
        self.attempts = attempts
        self.retry_time = retry_time
        self.backoff = backoff
        self._queue: deque[_Call] = deque()
        self._task: asyncio.Task[None] | None = None
        self._sending: list[_Call] = []
        #: Command connection -> the stream it answered a PING on: a new one proves itself first.
        self._proven: weakref.WeakKeyDictionary[Any, Any] = weakref.WeakKeyDictionary()
        #: Pipelines sent and calls carried, for tests and profiles.
        self.pipelines = 0
        self.calls = 0

    def call(self, keys: list[str], args: list[Any], *, retry: bool) -> asyncio.Future[Any]:
        """Queue one publish script call: its future gets the script's reply or the
        error (EngineUnavailable: not published; OutcomeUnknown; another error as raised)."""
        call = _Call(keys, args, retry, time.monotonic() + self.retry_time, self.backoff)
        self._queue.append(call)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())
        return call.future

    async def close(self) -> None:
        task, self._task = self._task, None
        if task is not None:
            await cancel_and_wait(task)
        while self._queue:
            call = self._queue.popleft()
            if not call.future.done():  # one waiting to be sent again may have run
                call.future.set_exception(_gave_up(call))

    # --- sending -----------------------------------------------------------

    async def _run(self) -> None:
        queue = self._queue
        try:
            while queue:
                batch: list[_Call] = []
                while queue and len(batch) < MAX_BATCH:
                    call = queue.popleft()
                    if not call.future.done():  # a waiter cancelled before it was sent: not published
                        batch.append(call)
                if not batch:
                    continue
                self._sending = batch
                try:
                    failed = await self._send(batch)
                except Exception as exc:  # not an outage: each call raises it, as one alone would
                    failed = []
                    _settle(batch, functools.partial(_same, exc))
                self._sending = []
                if failed:
                    await self._retry(failed)
        finally:
            # Cancelled (closing) with a pipeline out: its calls may have run.
            _settle(self._sending, lambda: OutcomeUnknown("outcome unknown: retry with the same id"))
            self._sending = []
            if self._task is asyncio.current_task():
                self._task = None

    async def _retry(self, failed: list[tuple[_Call, BaseException, bool]]) -> None:
        """Settle or requeue (at the head, in order) the calls of a pipeline that failed."""
        again: list[_Call] = []
        now = time.monotonic()
        for call, exc, sent in failed:
            call.attempt += 1
            call.unknown = call.unknown or sent
            attempt = call.attempt
            self._warn("publish" if attempt == 1 else f"publish (attempt {attempt})", exc)
            if call.future.done():
                continue
            if call.retry and attempt < self.attempts and now + call.delay < call.deadline:
                again.append(call)
            else:
                call.future.set_exception(_gave_up(call))
        if again:
            self._queue.extendleft(reversed(again))
            await asyncio.sleep(max(call.delay for call in again))
            for call in again:
                call.delay *= 2

    async def _send(self, batch: list[_Call]) -> list[tuple[_Call, BaseException, bool]]:
        """Run ``batch`` as one pipeline; returns the calls that failed with an outage:
        (call, error, whether it may have run). Other outcomes are set on the futures."""
        pool = self._pool
        outage = self._is_outage
        try:
            conn = await pool.get_connection()  # type: ignore[no-untyped-call]
        except Exception as exc:
            if not outage(exc):
                raise
            return [(call, exc, False) for call in batch]
        try:
            try:
                stale = conn.is_connected and await conn.can_read()  # EOF, or a reply nobody read
            except Exception as exc:
                if not outage(exc):
                    raise
                stale = True
            if stale:
                await conn.disconnect(nowait=True)
            if not conn.is_connected or self._proven.get(conn) is not conn._reader:
                # A new connection proves itself first: a failure here is before the scripts.
                try:
                    await conn.send_command("PING")
                    await conn.read_response()
                except Exception as exc:
                    if not outage(exc):
                        raise
                    return [(call, exc, False) for call in batch]
                self._proven[conn] = conn._reader
            failed: list[tuple[_Call, BaseException, bool]] = []
            missing = await self._pipeline(conn, batch, "EVALSHA", failed)
            if missing:  # Redis restarted empty: those scripts did not run
                await self._pipeline(conn, missing, "EVAL", failed)
            return failed
        except BaseException:
            await conn.disconnect(nowait=True)  # never hand a connection with replies due back to the pool
            raise
        finally:
            await pool.release(conn)

    async def _pipeline(
        self, conn: Any, batch: list[_Call], command: str, failed: list[tuple[_Call, BaseException, bool]]
    ) -> list[_Call]:
        """Send ``batch`` in one write and read its replies; returns the calls answered NOSCRIPT.
        An outage fails the rest of the batch (they may have run) and the connection."""
        script = self._script
        body = script.sha if command == "EVALSHA" else script.script
        packed = conn.pack_commands([(command, body, len(c.keys), *c.keys, *c.args) for c in batch])
        self.pipelines += 1
        self.calls += len(batch)
        missing: list[_Call] = []
        not_run: list[_Call] = []  # refused or NOSCRIPT so far, to be run again unless a later call ran
        i = 0
        try:
            await conn.send_packed_command(packed)
            for i, call in enumerate(batch):  # noqa: B007  (i: where an outage stopped the reading)
                try:
                    reply = await conn.read_response()
                except rex.NoScriptError:
                    missing.append(call)
                    not_run.append(call)
                    continue
                except self._refused as exc:  # answered without running it
                    failed.append((call, exc, False))
                    not_run.append(call)
                    continue
                except rex.ResponseError as exc:
                    if not call.future.done():
                        call.future.set_exception(exc)
                    continue
                if not_run:  # run again, they would land after this one: they fail instead
                    _overtaken(not_run, missing, failed)
                    not_run = []
                if not call.future.done():
                    call.future.set_result(reply)
        except Exception as exc:
            if not self._is_outage(exc):
                raise
            await conn.disconnect(nowait=True)
            failed.extend((call, exc, True) for call in batch[i:])
            failed.extend((call, exc, False) for call in missing)  # answered NOSCRIPT: did not run
            return []
        return missing


def _overtaken(calls: list[_Call], missing: list[_Call], failed: list[tuple[_Call, BaseException, bool]]) -> None:
    """Give up ``calls``, which did not run while a later call of their pipeline did: sent again,
    they would be published after it, out of the connection's command order."""
    gone = set(map(id, calls))
    for call in calls:
        if not call.future.done():
            call.future.set_exception(_gave_up(call))
    missing[:] = [call for call in missing if id(call) not in gone]
    failed[:] = [entry for entry in failed if id(entry[0]) not in gone]


def _gave_up(call: _Call) -> Exception:
    """What a call not sent again raises: it may have run (unknown), or certainly did not."""
    if call.unknown:
        return OutcomeUnknown("outcome unknown: retry with the same id")
    return EngineUnavailable("temporarily unavailable: retry")


def _same(exc: BaseException) -> BaseException:
    return exc


def _settle(calls: list[_Call], error: Callable[[], BaseException]) -> None:
    for call in calls:
        if not call.future.done():
            call.future.set_exception(error())
