"""Verify's shared deadline (``quotad.service.deadline``): asyncio.timeout's behaviour, one timer."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable

import pytest

from quotad.service.deadline import Deadline


async def guarded(deadline: Deadline, work: Awaitable[None]) -> None:
    """Run ``work`` under ``deadline``."""
    with deadline.watch():
        await work


async def test_a_block_past_its_deadline_raises_timeout_error_soon_after() -> None:
    """A block still running at its deadline is stopped with TimeoutError within the granularity."""
    deadline = Deadline(0.2, granularity=0.05)
    started = time.monotonic()
    with pytest.raises(TimeoutError):
        await guarded(deadline, asyncio.sleep(5))
    assert 0.2 <= time.monotonic() - started < 0.5


async def test_a_block_done_in_time_is_never_cancelled_afterwards() -> None:
    """A block that ends before its deadline leaves its task alone once the deadline passes."""
    deadline = Deadline(0.05, granularity=0.01)
    await guarded(deadline, asyncio.sleep(0))
    await asyncio.sleep(0.2)  # past the deadline: no CancelledError here


async def test_many_blocks_each_keep_their_own_deadline() -> None:
    """Of concurrent blocks, only those still running at their deadline time out."""
    deadline = Deadline(0.1, granularity=0.01)

    async def block(seconds: float) -> str:
        try:
            await guarded(deadline, asyncio.sleep(seconds))
        except TimeoutError:
            return "timeout"
        return "done"

    results = await asyncio.gather(*(block(0.01 if n % 2 else 1.0) for n in range(20)))
    assert results == ["timeout", "done"] * 10


async def test_a_cancellation_from_elsewhere_stays_a_cancellation() -> None:
    """A task cancelled by someone else inside the block gets CancelledError, not TimeoutError."""
    deadline = Deadline(5, granularity=0.01)

    task = asyncio.create_task(guarded(deadline, asyncio.sleep(5)))
    await asyncio.sleep(0.01)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task


def test_one_deadline_serves_successive_event_loops() -> None:
    """A deadline used on one event loop works again on the next (the CLI runs several)."""
    deadline = Deadline(0.05, granularity=0.01)

    for _ in range(2):
        with pytest.raises(TimeoutError):
            asyncio.run(guarded(deadline, asyncio.sleep(1)))


async def test_ended_blocks_are_not_kept_until_their_deadline() -> None:
    """Under a long deadline it keeps the blocks in flight, not every block that ended."""
    deadline = Deadline(30.0)
    for _ in range(1000):
        await guarded(deadline, asyncio.sleep(0))
    running = [asyncio.create_task(guarded(deadline, asyncio.sleep(0.05))) for _ in range(10)]
    await asyncio.sleep(0)  # each has begun its block
    assert deadline.held <= 11
    await asyncio.gather(*running)


async def test_a_block_still_in_flight_does_not_keep_the_blocks_ended_after_it() -> None:
    """Blocks that end are let go even while an older one runs on (one slow or not yet
    resumed verify kept every later one until its own end)."""
    deadline = Deadline(30.0)
    slow = asyncio.create_task(guarded(deadline, asyncio.sleep(0.2)))
    await asyncio.sleep(0)  # it has begun its block
    for _ in range(1000):
        await guarded(deadline, asyncio.sleep(0))
    assert deadline.held == 1
    await slow
    assert deadline.held == 0


async def test_a_block_outside_a_task_is_refused_with_a_clear_error() -> None:
    """Watching from a plain loop callback (no task to cancel) raises RuntimeError at once."""
    deadline = Deadline(0.1)
    refused: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    def callback() -> None:
        try:
            deadline.watch()
        except RuntimeError as exc:
            refused.set_result(str(exc))

    asyncio.get_running_loop().call_soon(callback)
    assert await refused == "a deadline needs a task"
    assert deadline.held == 0
