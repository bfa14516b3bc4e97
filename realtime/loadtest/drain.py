"""Helpers the chat, presence and live scenarios share on the controller side: waiting for deliveries
to settle, and opening a client of the controller's own."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import jwt

from .clients import CLIENT_NAME, Client, error_kind
from .run import Run
from .wsclient import LoadtestError, open_client

#: Seconds without a new delivery after which a drain gives up.
DRAIN_STALL = 3.0
#: Seconds a drain may take at most.
DRAIN_MAX = 60.0
#: How often a drain polls the workers.
DRAIN_POLL = 0.05


async def drain(
    run: Run,
    done: Callable[[], Awaitable[tuple[bool, int]]],
    stall: float = DRAIN_STALL,
    longest: float = DRAIN_MAX,
    poll: float = DRAIN_POLL,
) -> bool:
    """Poll ``done()`` -> (finished, progress) every ``poll`` seconds until finished, until
    ``progress`` stops moving for ``stall`` seconds, or ``longest`` / the run's deadline passes;
    returns whether it finished."""
    last, last_change = -1, time.monotonic()
    end = min(time.monotonic() + longest, run.deadline)
    while time.monotonic() < end:
        finished, progress = await done()
        if finished:
            return True
        if progress != last:
            last, last_change = progress, time.monotonic()
        elif time.monotonic() - last_change > stall:
            return False
        await asyncio.sleep(poll)
    return False


_C = TypeVar("_C", bound=Client)


async def controller_client(run: Run, factory: Callable[[], _C], user: str, what: str) -> _C:
    """A client of the controller (a publisher), connected to the first URL with a token for
    ``user`` given --jwt-secret; raises :class:`LoadtestError` (exit 1) when it cannot connect."""
    target = run.targets[0]
    client: _C | None = None
    try:
        client = await open_client(factory, target, timeout=10.0)
        command: dict[str, Any] = {"cmd": "connect", "name": f"{CLIENT_NAME}-{what}"}
        if run.args.jwt_secret:
            now = int(time.time())
            claims = {"sub": user, "iat": now, "exp": now + 86400}
            command["token"] = jwt.encode(claims, run.args.jwt_secret, algorithm="HS256")
        await client.command(command)
    except (OSError, TimeoutError, LoadtestError) as exc:
        if client is not None:
            client.abort()
        run.stats.error(error_kind(f"{what} connect", exc))
        raise LoadtestError(f"the {what} could not connect to {target.url}: {exc}") from None
    client.mark_ready()
    return client
