"""Group commit: concurrent calls share one round trip (and one transaction, one fsync).

A store hands ``Batcher`` a function that runs many requests at once. Callers submit
one request each and wait for its own answer. While a batch runs, new requests queue;
when it ends, everything queued runs as the next batch. So a lone caller never waits
for company (its batch of one starts at once), and under load the cost of a commit or
a network round trip is shared by every caller that arrived meanwhile.

With ``in_flight`` above one, a batch that starts while other slots are free takes only
its share of the queue and starts a sibling for the rest. So concurrent callers are split
over the slots, and the caller's process prepares one batch, or wakes its callers, while
the store runs the other, instead of idling through each round trip in turn.

A caller is answered only after its batch has finished (committed, for SQL), so an
acknowledged consume is as durable as one run alone. A caller that stops waiting while
its batch runs is answered by nobody; the store hears of its result (``abandoned``) and
gives back what it consumed, so a call answered 503 is never charged.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

from quotad.storage.under_way import UnderWay

T = TypeVar("T")
R = TypeVar("R")

# Each result is the request's answer or the exception to raise in its caller.
RunBatch = Callable[[list[T]], Awaitable[list[R | Exception]]]
# Told of each answer whose caller stopped waiting while its batch ran (a timeout, a
# closed connection), so the store can undo what that caller was never told of.
Abandoned = Callable[[T, R], None]


class Batcher(Generic[T, R]):
    """Runs submitted requests in batches of up to ``max_size``, ``in_flight`` at a time."""

    def __init__(
        self,
        run: RunBatch[T, R],
        max_size: int = 256,
        in_flight: int = 1,
        abandoned: Abandoned[T, R] | None = None,
        under_way: UnderWay | None = None,
    ) -> None:
        self._run = run
        self._abandoned = abandoned
        # Each call counts from submission to answer: a queued call is under way too.
        self._under_way = under_way
        self._max_size = max_size
        self._in_flight = in_flight
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._workers: dict[asyncio.Task[None], None] = {}
        self._running = 0  # batches in the store now

    async def submit(self, request: T) -> R:
        """Queue ``request`` and wait for its batch to finish."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._queue.append((request, answer))
        if len(self._workers) < self._in_flight:
            self._start_worker(loop)
        under_way = self._under_way
        if under_way is not None:
            under_way.begin()
        try:
            return await answer
        except asyncio.CancelledError:
            # Cancelled in the instant between its answer and its wake-up: the answer
            # came, and nobody will hear it.
            if (
                self._abandoned is not None
                and answer.done()
                and not answer.cancelled()
                and answer.exception() is None
            ):
                self._abandoned(request, answer.result())
            raise
        finally:
            if under_way is not None:
                under_way.end()

    def _start_worker(self, loop: asyncio.AbstractEventLoop) -> None:
        worker = loop.create_task(self._drain(), name="quotad-batch")
        self._workers[worker] = None

    def _share(self) -> int:
        """How many queued requests the next batch takes: all, or its share of the slots."""
        queued = len(self._queue)
        slots = self._in_flight - self._running  # this worker's and the idle ones
        share = -(-queued // slots) if slots > 1 else queued
        return min(share, self._max_size)

    async def _drain(self) -> None:
        try:
            while self._queue:
                share = self._share()
                taken = self._queue[:share]
                del self._queue[:share]
                if self._queue and len(self._workers) < self._in_flight:
                    self._start_worker(asyncio.get_running_loop())
                # A caller that gave up (a timeout, a closed connection) before its batch
                # began is left out, so nothing is consumed that nobody was told about.
                batch = [(request, answer) for request, answer in taken if not answer.done()]
                if batch:
                    self._running += 1
                    try:
                        await self._run_one(batch)
                    finally:
                        self._running -= 1
        finally:
            self._workers.pop(asyncio.current_task(), None)  # type: ignore[arg-type]

    async def _run_one(self, batch: list[tuple[T, asyncio.Future[R]]]) -> None:
        try:
            results = await self._run([request for request, _ in batch])
        except asyncio.CancelledError:
            for _, answer in batch:
                answer.cancel()
            raise
        except Exception as exc:
            for _, answer in batch:
                if not answer.done():
                    answer.set_exception(exc)
            return
        for (request, answer), result in zip(batch, results, strict=True):
            if answer.done():
                if self._abandoned is not None and not isinstance(result, Exception):
                    self._abandoned(request, result)
                continue
            if isinstance(result, Exception):
                answer.set_exception(result)
            else:
                answer.set_result(result)


async def submit_or_run(batcher: Batcher[T, R] | None, run: RunBatch[T, R], request: T) -> R:
    """``request``'s answer: through ``batcher``, or run alone when batching is off."""
    if batcher is not None:
        return await batcher.submit(request)
    [answer] = await run([request])
    if isinstance(answer, Exception):
        raise answer
    return answer
