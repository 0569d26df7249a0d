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
from types import TracebackType


class Deadline:
    """``async with deadline():`` raises ``TimeoutError`` once ``seconds`` have passed.

    Like ``asyncio.timeout(seconds)``, with an expiry late by at most ``granularity``.
    Every block it guards has the same length, which keeps the deque in deadline order.
    One ``Deadline`` serves one event loop at a time (a new loop starts it afresh).
    """

    def __init__(self, seconds: float, granularity: float = 0.05) -> None:
        self.seconds = seconds
        self._granularity = granularity
        self._loop: asyncio.AbstractEventLoop | None = None
        self._queue: deque[_Guard] = deque()
        self._armed = False

    def __call__(self) -> _Guard:
        """A guard for one block."""
        return _Guard(self)

    def _watch(self, guard: _Guard) -> float:
        loop = asyncio.get_running_loop()
        if loop is not self._loop:
            self._loop, self._queue, self._armed = loop, deque(), False
        deadline = loop.time() + self.seconds
        self._queue.append(guard)
        if not self._armed:
            self._arm(deadline)
        return deadline

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
            guard = queue.popleft()
            if not guard.done:
                guard.expired = True
                guard.task.cancel()
        if queue:
            self._arm(queue[0].deadline)


class _Guard:
    """One block's deadline (see ``Deadline``)."""

    __slots__ = ("cancelling", "deadline", "done", "expired", "owner", "task")

    def __init__(self, owner: Deadline) -> None:
        self.owner = owner
        self.done = False
        self.expired = False

    async def __aenter__(self) -> None:
        task = asyncio.current_task()
        if task is None:  # pragma: no cover - an async with always runs in a task
            msg = "a deadline needs a task"
            raise RuntimeError(msg)
        self.task = task
        self.cancelling = task.cancelling()
        self.deadline = self.owner._watch(self)

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.done = True
        # Our cancellation, not someone else's: it becomes a TimeoutError, as with
        # asyncio.timeout (the count says whether another cancel is still pending).
        if self.expired:
            pending = self.task.uncancel()
            if pending <= self.cancelling and exc_type is asyncio.CancelledError:
                raise TimeoutError from exc
