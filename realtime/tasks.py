"""Stopping tasks for certain: :func:`cancel_and_wait`.

On Python 3.11, ``asyncio.wait_for`` loses a cancellation that arrives in the loop iteration
its inner awaitable finishes (CPython gh-86296, fixed in 3.12), and redis-py calls it around
every command it sends when a socket timeout is set, as ours always is. A loop cancelled at
that moment goes on running, and a ``close`` that awaits it waits forever: a webhook
endpoint's reader did, once in a few dozen shutdowns. So a task is cancelled again until it
has ended.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

log = logging.getLogger("realtime.tasks")

#: Seconds between two cancellations of a task that has not ended.
AGAIN = 0.05


async def cancel_and_wait(*tasks: asyncio.Future[Any]) -> None:
    """Cancel ``tasks`` and return once every one has ended, cancelling again any that goes on.

    A task that ended with an exception other than cancellation is logged: a close has
    nobody to raise it to.
    """
    pending = {task for task in tasks if not task.done()}
    while pending:
        for task in pending:
            task.cancel()
        _, pending = await asyncio.wait(pending, timeout=AGAIN)
    for task in tasks:
        if not task.cancelled() and task.exception() is not None:
            log.error("%r failed before it was stopped", task, exc_info=task.exception())


__all__ = ["AGAIN", "cancel_and_wait"]
