"""Verify's deadline: one timer for all the verifies in flight, not one each.

``asyncio.timeout`` schedules and cancels a timer handle per call, which cost about a
tenth of an HTTP verify's throughput. Every verify of a node waits for the store at most
the same time (``store_timeout_ms``), so their deadlines arrive in the order the verifies
began: they are kept in that order, and one timer, at most every ``granularity`` seconds,
cancels the verifies still running past theirs. A verify is so stopped between its
deadline and ``granularity`` later.
"""

from __future__ import annotations

import asyncio
from collections import OrderedDict
from types import TracebackType


class Deadline:
    """Blocks that must end within ``seconds``: ``with deadline.watch(): await …``.

    Like ``async with asyncio.timeout(seconds)``, with an expiry late by at most
    ``granularity``, and a plain ``with`` (an ``async with`` costs two coroutines, more
    than the rest of it). Every block watched has the same length, which keeps the deque in
    deadline order. One ``Deadline`` serves one event loop at a time (a new loop starts
    it afresh).
    """

    def __init__(self, seconds: float, granularity: float = 0.05) -> None:
        self.seconds = seconds
        self._granularity = granularity
        self._loop: asyncio.AbstractEventLoop | None = None
        # The blocks in flight, oldest first: each leaves as it ends. (Not a queue whose
        # ended blocks are dropped from the front: one block held up, say a task the loop
        # has not resumed yet, kept every block after it, tens of thousands a second, for
        # the collector to walk.)
        self._running: OrderedDict[Watch, None] = OrderedDict()
        self._armed = False

    @property
    def held(self) -> int:
        """How many blocks it keeps: those still running."""
        return len(self._running)

    def watch(self) -> Watch:
        """Watch the current task until the ``with`` block the ``Watch`` guards ends."""
        # The task first, and its loop from it: each of asyncio.get_running_loop() and
        # current_task() asks the kernel for the process id on Python 3.11 (a getpid()
        # call, about 0.2 µs on a virtual machine), and one of them is enough.
        task = asyncio.current_task()
        if task is None:
            msg = "a deadline needs a task"
            raise RuntimeError(msg)
        loop = task.get_loop()
        if loop is not self._loop:
            self._loop, self._running, self._armed = loop, OrderedDict(), False
        watch = Watch(loop.time() + self.seconds, task, self._running)
        self._running[watch] = None
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
        running = self._running
        while running:
            watch = next(iter(running))  # the oldest (an OrderedDict finds it at once)
            if watch.deadline > now:
                self._arm(watch.deadline)
                return
            del running[watch]
            task = watch.task
            if task is not None:
                watch.expired = True
                task.cancel()


class Watch:
    """One block's deadline (see ``Deadline``); its ``with`` turns our cancellation into
    ``TimeoutError``, as ``asyncio.timeout`` does."""

    __slots__ = ("cancelling", "deadline", "expired", "running", "task")

    def __init__(
        self, deadline: float, task: asyncio.Task[object], running: OrderedDict[Watch, None]
    ) -> None:
        self.deadline = deadline
        self.running = running  # its deadline's blocks in flight, which it leaves on exit
        # Dropped when the block ends: a finished task kept alive until its deadline
        # would keep its whole request in memory that long, for the collector to walk.
        self.task: asyncio.Task[object] | None = task
        self.cancelling = task.cancelling()
        self.expired = False

    def __enter__(self) -> Watch:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        task, self.task = self.task, None
        self.running.pop(self, None)
        # As asyncio.timeout: our own cancellation is taken back, and the block's
        # CancelledError is ours only when no other cancellation is pending.
        if (
            self.expired
            and task is not None
            and task.uncancel() <= self.cancelling
            and exc_type is asyncio.CancelledError
        ):
            raise TimeoutError from exc
