"""Verify's deadline: one timer for all the verifies in flight, not one each.

``asyncio.timeout`` schedules and cancels a timer handle per call, which cost about a
tenth of an HTTP verify's throughput. Every verify of a node waits for the store at most
the same time (``store_timeout_ms``), so their deadlines arrive in the order the verifies
began: they queue in a deque, and one timer, at most every ``granularity`` seconds,
cancels the verifies still running past theirs. A verify is so stopped between its
deadline and ``granularity`` later.
"""

from __future__ import annotations

import asyncio
from collections import deque


class Deadline:
    """Blocks that must end within ``seconds``: ``watch()`` before, ``Watch.leave`` after.

    Like ``asyncio.timeout(seconds)``, with an expiry late by at most ``granularity``, and
    plain calls instead of an ``async with`` (whose two coroutines cost more than the
    rest of it). Every block watched has the same length, which keeps the deque in
    deadline order. One ``Deadline`` serves one event loop at a time (a new loop starts
    it afresh).
    """

    def __init__(self, seconds: float, granularity: float = 0.05) -> None:
        self.seconds = seconds
        self._granularity = granularity
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[Watch] = deque()
        self._armed = False

    def watch(self) -> Watch:
        """Start watching the current task; its ``Watch`` must be left when the block ends."""
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._queue, self._armed = loop, deque(), False
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - a coroutine always runs in a task here
            msg = "a deadline needs a task"
            raise RuntimeError(msg)
        watch = Watch(loop.time() + self.seconds, task)
        self._queue.append(watch)
        if not self._armed:
            self._arm(watch.deadline)
        return watch

    def _arm(self, when: float) -> None:
        assert self._loop is not None  # noqa: S101 - armed while watching only
        self._armed = True
        self._loop.call_at(max(when, self._loop.time() + self._granularity), self._expire)

    def _expire(self) -> None:
        self._armed = False
        assert self._loop is not None  # noqa: S101 - scheduled by _arm only
        now = self._loop.time()
        queue = self._queue
        while queue and queue[0].deadline <= now:
            watch = queue.popleft()
            task = watch.task
            if task is not None:
                watch.expired = True
                task.cancel()
        if queue:
            self._arm(queue[0].deadline)


class Watch:
    """One block's deadline (see ``Deadline``)."""

    __slots__ = ("cancelling", "deadline", "expired", "task")

    def __init__(self, deadline: float, task: asyncio.Task[object]) -> None:
        self.deadline = deadline
        # Dropped when the block ends: a finished task kept alive until its deadline
        # would keep its whole request in memory that long, for the collector to walk.
        self.task: asyncio.Task[object] | None = task
        self.cancelling = task.cancelling()
        self.expired = False

    def leave(self, cancelled: bool) -> bool:
        """End the watch; whether the block's ``CancelledError`` was this deadline's.

        ``cancelled``: the block ended with ``CancelledError``. As with asyncio.timeout,
        our own cancellation is taken back, and it is ours only when no other is pending.
        """
        task = self.task
        if task is None:  # left already (a finally after an except)
            return False
        self.task = None
        if not self.expired:
            return False
        return task.uncancel() <= self.cancelling and cancelled
