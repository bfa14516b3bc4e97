"""realtime.tasks: a task whose cancellation Python 3.11's ``asyncio.wait_for`` lost is still stopped."""

from __future__ import annotations

import asyncio
import logging

import pytest

from realtime.tasks import cancel_and_wait


async def _waits_for_forever(turns: list[int]) -> None:
    # What a Redis reader loop does: each command goes through wait_for (redis-py, socket timeout set).
    while True:
        turns.append(1)
        await asyncio.wait_for(asyncio.sleep(0), 5)


async def test_every_task_ends_even_where_a_cancellation_is_lost() -> None:
    tasks = []
    turns: list[int] = []
    for n in range(60):
        task = asyncio.create_task(_waits_for_forever(turns))
        for _ in range(n % 7 + 1):  # cancel at every point of the loop, the lossy one among them
            await asyncio.sleep(0)
        tasks.append(task)
    await asyncio.wait_for(cancel_and_wait(*tasks), 10)
    assert all(task.cancelled() for task in tasks)
    assert turns


async def test_tasks_already_ended_and_failed_ones_are_fine(caplog: pytest.LogCaptureFixture) -> None:
    async def fails() -> None:
        raise RuntimeError("broken")

    done = asyncio.create_task(asyncio.sleep(0))
    failed = asyncio.create_task(fails())
    await asyncio.sleep(0.01)
    with caplog.at_level(logging.ERROR, logger="realtime.tasks"):
        await cancel_and_wait(done, failed)
    assert done.done() and not done.cancelled()
    assert "failed before it was stopped" in caplog.text and "broken" in caplog.text
