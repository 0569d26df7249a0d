"""A store's calls under way, so that closing it lets them finish first.

Closing tore connections out from under the calls still running: on Redis a call then
reconnected into a pool nobody would close again, and a consume finished after the last
write-behind flush left its change out of SQL; on PostgreSQL a transaction cut off with the
event loop stayed open on the server, holding its locks. A store counts its calls (a
batcher from submission to answer, since a queued call is under way too), and its
``close`` waits, for a bounded time, until none is.
"""

from __future__ import annotations

import asyncio

# How long a close waits for the calls under way. A call on a store that stopped answering
# ends with its own timeout well before this; one beyond it is cut off as before.
CLOSE_WAIT_SECONDS = 5.0


class UnderWay:
    """Counts calls under way (``begin`` … ``end``, the latter in a ``finally``)."""

    __slots__ = ("_count", "_none")

    def __init__(self) -> None:
        self._count = 0
        self._none: asyncio.Event | None = None

    def begin(self) -> None:
        self._count += 1

    def end(self) -> None:
        self._count -= 1
        if self._count == 0 and self._none is not None:
            self._none.set()

    @property
    def count(self) -> int:
        """How many calls are under way now."""
        return self._count

    async def settled(self, within: float | None = None) -> bool:
        """Wait until no call is under way, at most ``within`` seconds (default
        ``CLOSE_WAIT_SECONDS``); whether none is."""
        try:
            async with asyncio.timeout(CLOSE_WAIT_SECONDS if within is None else within):
                while self._count:
                    self._none = asyncio.Event()
                    try:
                        await self._none.wait()
                    finally:
                        self._none = None
        except TimeoutError:
            return False
        return True
