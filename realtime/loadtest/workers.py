"""Worker processes: each runs a share of the clients on its own uvloop, driven over pipes.

The controller (:class:`Pool`) sends requests ``(rid, kind, arg)``; a worker
answers each with ``(rid, ok, value)`` from a task of its own, so a slow
request (connecting thousands of clients) does not hold up a quick one (the
once-a-second ``snap`` for the live line). A worker may also send events
``(None, True, value)`` unasked (:meth:`WorkerContext.emit`), which the pool
hands to its ``on_event`` callback. Built-in kinds: ``snap`` (the worker's
:class:`Stats` as :meth:`Stats.to_wire`) and ``stop``; any other goes to the
scenario's :meth:`Role.handle`.

A worker stops on ``stop``, when the controller's end of the pipe closes, or
at its own deadline (``--timeout`` plus a margin), whichever comes first.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import functools
import itertools
import multiprocessing
import multiprocessing.connection
import os
import signal
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import uvloop

from .context import WorkerContext, WorkerSpec
from .procinfo import own_cpu_seconds, raise_nofile
from .registry import load
from .stats import Stats
from .wsclient import LoadtestError

#: Seconds to wait for a worker process to start and answer its first request.
START_TIMEOUT = 60.0


class _Worker:
    def __init__(self, requests: multiprocessing.connection.Connection, replies: Any, spec: WorkerSpec) -> None:
        self.requests = requests
        self.replies = replies
        self.ctx = WorkerContext(spec, lambda value: self._send((None, True, value)))
        self.role: Any = load(spec.scenario).role(self.ctx)  # a scenario.Role
        self.tasks: set[asyncio.Task[None]] = set()
        self.done: asyncio.Future[None] | None = None

    def _send(self, message: tuple[Any, bool, Any]) -> None:
        with contextlib.suppress(OSError, ValueError):
            self.replies.send(message)

    async def run(self) -> None:
        loop = asyncio.get_running_loop()
        self.done = loop.create_future()
        loop.add_reader(self.requests.fileno(), self._on_request)
        # uvloop (libuv) makes a watched fd non-blocking; Connection.recv must block instead, or a
        # request larger than the pipe (chat's per-sender counts at 10,000s of users) fails half
        # read with BlockingIOError, which would read as the controller gone.
        os.set_blocking(self.requests.fileno(), True)
        try:
            await asyncio.wait_for(asyncio.shield(self.done), max(0.0, self.ctx.deadline - time.monotonic()))
        except TimeoutError:
            pass
        finally:
            loop.remove_reader(self.requests.fileno())
            for task in list(self.tasks):
                task.cancel()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(5.0):
                    await self.role.close()

    def _on_request(self) -> None:
        assert self.done is not None
        try:
            rid, kind, arg = self.requests.recv()
        except (EOFError, OSError):  # the controller is gone
            if not self.done.done():
                self.done.set_result(None)
            return
        task = asyncio.ensure_future(self._answer(rid, kind, arg))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)

    async def _answer(self, rid: int, kind: str, arg: Any) -> None:
        assert self.done is not None
        try:
            if kind == "snap":
                self.ctx.stats.cpu_s = own_cpu_seconds()
                value: Any = self.ctx.stats.to_wire()
            elif kind == "stop":
                with contextlib.suppress(Exception):
                    async with asyncio.timeout(5.0):
                        await self.role.close()
                self.ctx.stats.cpu_s = own_cpu_seconds()
                value = self.ctx.stats.to_wire()
            else:
                value = await self.role.handle(kind, arg)
        except Exception as exc:
            self._send((rid, False, f"{type(exc).__name__}: {exc}"))
        else:
            self._send((rid, True, value))
        if kind == "stop" and not self.done.done():
            self.done.set_result(None)


def worker_main(
    requests: multiprocessing.connection.Connection, replies: multiprocessing.connection.Connection, spec: WorkerSpec
) -> None:
    """Entry point of a worker process."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the controller stops us
    raise_nofile()
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(_Worker(requests, replies, spec).run())


@contextlib.contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored meanwhile (main thread only): a process started now starts ignoring it, as
    Python installs its KeyboardInterrupt handler only over the default disposition."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


class WorkerHandle:
    """The controller's side of one worker process; a thread reads its replies."""

    def __init__(self, spec: WorkerSpec, loop: asyncio.AbstractEventLoop, on_message: Callable[[Any], None]) -> None:
        ctx = multiprocessing.get_context("spawn")
        # Two one-way pipes: the worker's loop watches the requests end (add_reader), and
        # replies (histograms) are written blocking and read by a thread here.
        requests_in, self.requests = ctx.Pipe(duplex=False)
        self.replies, replies_out = ctx.Pipe(duplex=False)
        self.spec = spec
        self.process = ctx.Process(target=worker_main, args=(requests_in, replies_out, spec), daemon=True)
        with _sigint_ignored():  # inherited: a Ctrl-C while the worker imports prints no traceback there
            self.process.start()
        requests_in.close()
        replies_out.close()
        self._loop = loop
        self._on_message = on_message
        self._reader = threading.Thread(target=self._read, name=f"loadtest-worker-{spec.index}", daemon=True)
        self._reader.start()

    def _read(self) -> None:
        while True:
            try:
                message = self.replies.recv()
            except (EOFError, OSError):
                message = None
            with contextlib.suppress(RuntimeError):  # the loop is closed
                self._loop.call_soon_threadsafe(self._on_message, message)
            if message is None:
                return

    def send(self, message: tuple[int, str, Any]) -> None:
        self.requests.send(message)

    def stop(self) -> None:
        self.process.join(5.0)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(2.0)
        with contextlib.suppress(OSError):
            self.requests.close()
        self._reader.join(2.0)
        with contextlib.suppress(OSError):
            self.replies.close()


class Pool:
    """The worker processes of a run, asked together.

    ``await pool.request(kind, arg)`` returns every worker's answer (a list, in
    worker order); ``pool.on_event`` gets ``(worker index, value)`` for each
    event a worker emits.
    """

    def __init__(self, scenario: str, args: argparse.Namespace, total: int) -> None:
        procs = max(1, min(args.procs, total)) if total else 1
        shares = [total // procs + (i < total % procs) for i in range(procs)]
        firsts = [sum(shares[:i]) for i in range(procs)]
        self.on_event: Callable[[int, Any], None] | None = None
        self._loop = asyncio.get_running_loop()
        self._rids = itertools.count(1)
        self._pending: dict[int, tuple[int, asyncio.Future[Any]]] = {}
        self._gone: set[int] = set()
        params = {k: v for k, v in vars(args).items() if not k.startswith("_")}
        self.handles = [
            WorkerHandle(
                WorkerSpec(scenario, params, i, procs, firsts[i], shares[i]),
                self._loop,
                functools.partial(self._on_message, i),
            )
            for i in range(procs)
        ]

    def __len__(self) -> int:
        return len(self.handles)

    def _on_message(self, index: int, message: Any) -> None:
        if message is None:  # the worker's pipe closed
            self._gone.add(index)
            for rid, (worker, future) in list(self._pending.items()):
                if worker == index and not future.done():
                    future.set_exception(LoadtestError(f"worker {index} exited"))
                    del self._pending[rid]
            return
        rid, ok, value = message
        if rid is None:
            if self.on_event is not None:
                self.on_event(index, value)
            return
        entry = self._pending.pop(rid, None)
        if entry is not None and not entry[1].done():
            future = entry[1]
            if ok:
                future.set_result(value)
            else:
                future.set_exception(LoadtestError(f"worker {index}: {value}"))

    def ask(self, index: int, kind: str, arg: Any = None) -> asyncio.Future[Any]:
        """Send one request to worker ``index``; the future gets its answer."""
        future: asyncio.Future[Any] = self._loop.create_future()
        if index in self._gone:
            future.set_exception(LoadtestError(f"worker {index} exited"))
            return future
        rid = next(self._rids)
        self._pending[rid] = (index, future)
        try:
            self.handles[index].send((rid, kind, arg))
        except OSError as exc:
            del self._pending[rid]
            future.set_exception(LoadtestError(f"worker {index}: {exc}"))
        return future

    async def request(self, kind: str, arg: Any = None, timeout: float = START_TIMEOUT) -> list[Any]:
        """Ask every worker; their answers in worker order."""
        async with asyncio.timeout(timeout):
            return list(await asyncio.gather(*(self.ask(i, kind, arg) for i in range(len(self.handles)))))

    async def snap(self, timeout: float = 10.0) -> list[Stats]:
        return [Stats.from_wire(w) for w in await self.request("snap", timeout=timeout)]

    async def stop(self) -> list[Stats]:
        """Stop every worker; their last stats (those that answered)."""
        futures = [self.ask(i, "stop") for i in range(len(self.handles))]
        await asyncio.wait(futures, timeout=15.0)
        await asyncio.get_running_loop().run_in_executor(None, self._join)
        answered = [f for f in futures if f.done() and not f.cancelled() and f.exception() is None]
        for f in futures:
            if not f.done():
                f.cancel()
        return [Stats.from_wire(f.result()) for f in answered]

    def _join(self) -> None:
        for handle in self.handles:
            handle.stop()
