"""Pieces every scenario's clients share: dialling with a connect command, and naming errors."""

from __future__ import annotations

import asyncio
import errno
from collections.abc import Awaitable, Callable, Iterable
from typing import TypeVar

from .context import WorkerContext
from .stats import Stats
from .wsclient import Closed, LoadtestError, Refused, Target, WSClient, monotonic_ns, open_client

#: Seconds for one client to open, upgrade and get its connect reply.
CONNECT_TIMEOUT = 20.0
#: The SDK name clients send in their connect command (the hub logs it).
CLIENT_NAME = "realtime-loadtest"


class Client(WSClient):
    """A :class:`WSClient` that keeps ``stats`` current: the connected gauge, and the close codes
    of connections the hub ended (not those we closed)."""

    def __init__(self, target: Target, stats: Stats, index: int = -1) -> None:
        super().__init__(target)
        self.stats = stats
        self.index = index
        self.ready = False  # counted in stats.connected
        self.dropped = False  # we aborted it on purpose (a simulated network loss): no close code to count

    def mark_ready(self) -> None:
        if not self.ready:
            self.ready = True
            self.stats.connected += 1

    def on_end(self) -> None:
        if self.ready:
            self.ready = False
            self.stats.connected -= 1
            if not self.closing and not self.dropped:
                self.stats.closed(self.close_code or 1006)


def error_kind(what: str, exc: BaseException) -> str:
    """A short, countable name for why ``what`` failed, e.g. ``connect closed 4008``."""
    if isinstance(exc, Closed):
        return f"{what} closed {exc.code}"
    if isinstance(exc, Refused):
        return f"{what} refused {exc.code}"
    if isinstance(exc, TimeoutError):
        return f"{what} timeout"
    if isinstance(exc, OSError):
        name = errno.errorcode.get(exc.errno or 0)  # EMFILE: raise the open files limit; EADDRNOTAVAIL: ports
        return f"{what} {type(exc).__name__}" + (f" {name}" if name else "")
    return f"{what} {type(exc).__name__}: {exc}"[:120]


_C = TypeVar("_C", bound=Client)


async def dial(
    ctx: WorkerContext,
    index: int,
    factory: Callable[[], _C],
    timeout: float = CONNECT_TIMEOUT,
    target: Target | None = None,
) -> _C:
    """Open client ``index`` and send ``connect`` (with its token); record the connect latency
    (dial -> connect reply) and count it connected. ``target`` defaults to the client's URL
    (round-robin over --url). Raises what failed (see :func:`error_kind`)."""
    started = monotonic_ns()
    client = await open_client(factory, target or ctx.target(index), ctx.source(index), timeout)
    try:
        command: dict[str, object] = {"cmd": "connect", "name": CLIENT_NAME}
        token = ctx.token(index)
        if token is not None:
            command["token"] = token
        await client.command(command, timeout)
    except BaseException:
        client.abort()
        raise
    ctx.stats.connect_latency.record_ns(monotonic_ns() - started)
    ctx.stats.connects += 1
    client.mark_ready()
    return client


async def gather_bounded(items: Iterable[int], limit: int, make: Callable[[int], Awaitable[None]]) -> None:
    """Await ``make(i)`` for each of ``items``, at most ``limit`` at once, in order. ``limit`` tasks
    take the items in turn: a task per item up front would cost memory per client not yet dialled
    (gigabytes at a million) and hold the loop while they are made, past ``--timeout``."""
    pending = iter(items)

    async def runner() -> None:
        for i in pending:
            await make(i)

    await asyncio.gather(*(runner() for _ in range(limit)))


__all__ = ["CLIENT_NAME", "CONNECT_TIMEOUT", "Client", "LoadtestError", "dial", "error_kind", "gather_bounded"]
