"""Group commit: concurrent calls share one round trip (and one transaction, one fsync).

A store hands ``Batcher`` a function that runs many requests at once. Callers submit
one request each and wait for its own answer. While a batch runs, new requests queue;
when it ends, everything queued runs as the next batch. So a lone caller never waits
for company (its batch of one starts at once), and under load the cost of a commit or
a network round trip is shared by every caller that arrived meanwhile.

A caller is answered only after its batch has finished (committed, for SQL), so an
acknowledged consume is as durable as one run alone.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")

# Each result is the request's answer or the exception to raise in its caller.
RunBatch = Callable[[list[T]], Awaitable[list[R | Exception]]]


class Batcher(Generic[T, R]):
    """Runs submitted requests in batches of up to ``max_size``, ``in_flight`` at a time."""

    def __init__(self, run: RunBatch[T, R], max_size: int = 256, in_flight: int = 1) -> None:
        self._run = run
        self._max_size = max_size
        self._in_flight = in_flight
        self._queue: list[tuple[T, asyncio.Future[R]]] = []
        self._workers: dict[asyncio.Task[None], None] = {}

    async def submit(self, request: T) -> R:
        """Queue ``request`` and wait for its batch to finish."""
        loop = asyncio.get_running_loop()
        answer: asyncio.Future[R] = loop.create_future()
        self._queue.append((request, answer))
        if len(self._workers) < self._in_flight:
            worker = loop.create_task(self._drain(), name="quotad-batch")
            self._workers[worker] = None
        return await answer

    async def _drain(self) -> None:
        try:
            while self._queue:
                taken = self._queue[: self._max_size]
                del self._queue[: self._max_size]
                # A caller that gave up (a timeout, a closed connection) before its batch
                # began is left out, so nothing is consumed that nobody was told about.
                batch = [(request, answer) for request, answer in taken if not answer.done()]
                if batch:
                    await self._run_one(batch)
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
        for (_, answer), result in zip(batch, results, strict=True):
            if answer.done():
                continue
            if isinstance(result, Exception):
                answer.set_exception(result)
            else:
                answer.set_result(result)
