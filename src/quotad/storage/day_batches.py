"""Group-committed consumes of one batch: the decision, and SQLite's thread of its own.

``decide`` is the part every SQL backend shares: given the batch's day rows as they are
stored, it grants or refuses each consume in arrival order and returns the rows to write
back. The store runs it inside a transaction that holds those rows locked.

On SQLite the whole transaction runs in ``SqliteDayWriter``, on a thread with its own
connection to the database file. Through the async engine every statement is a hop to
the driver's thread and back to the event loop, and on a busy server each return waits
behind whatever else the loop has to do: a batch of three statements and a commit took
about 4 ms of which SQLite's work was 0.4 (the fsync included). Here BEGIN IMMEDIATE,
one read, one write and COMMIT run in one call, with the GIL released inside SQLite's
own calls, and the loop hears back once, after the commit.

Its commits never checkpoint the write-ahead log themselves (SQLite's default makes the
commit that fills the log copy it into the database, an fsync of the database file in
the middle of a batch, which held every caller of that batch up to 30 ms): a second
thread checkpoints every ``CHECKPOINT_SECONDS`` instead, PASSIVE, alongside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime

from quotad.domain.models import ConsumeOutcome, IdempotencyClaim
from quotad.errors import Conflict, StorageError

CHECKPOINT_SECONDS = 1.0
DayKey = tuple[str, str, str]  # account id, service, day (ISO)
DayRow = list[int]  # used, total, rejected


@dataclass(frozen=True, slots=True)
class Consume:
    """One ``consume`` call, waiting for its batch."""

    account_id: str
    service: str
    day: date
    cost: int
    total: int
    claim: IdempotencyClaim | None
    now: datetime | None

    @property
    def row_key(self) -> DayKey:
        """The day row it counts against."""
        return self.account_id, self.service, self.day.isoformat()


def first_totals(batch: list[Consume]) -> dict[DayKey, int]:
    """Each day row of the batch, in one lock order for every node, with the total its
    first consume brings (the total a row is created with)."""
    totals: dict[DayKey, int] = {}
    for request in batch:
        totals.setdefault(request.row_key, request.total)
    return dict(sorted(totals.items()))


def decide(batch: list[Consume], rows: dict[DayKey, DayRow]) -> list[ConsumeOutcome]:
    """Grant or refuse each consume in arrival order, updating ``rows`` in place.

    ``rows`` holds the stored rows of the batch's days; a day without one starts empty.
    Afterwards it holds every row to write back.
    """
    outcomes = []
    for request in batch:
        row = rows.setdefault(request.row_key, [0, request.total, 0])
        row[1] = request.total
        granted = row[0] + request.cost <= request.total
        if granted:
            row[0] += request.cost
        else:
            row[2] += 1
        outcomes.append(ConsumeOutcome(granted, row[0], request.total, request.day))
    return outcomes


_WRITE = (
    "INSERT INTO usage_days (account_id, service, day, used, total, rejected) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (account_id, service, day) DO UPDATE SET "
    "used = excluded.used, total = excluded.total, rejected = excluded.rejected"
)


def _read(count: int) -> str:
    # Only placeholders are joined in: the values go as parameters.
    keys = ", ".join(["(?, ?, ?)"] * count)
    columns = "account_id, service, day, used, total, rejected"
    where = f"(account_id, service, day) IN (VALUES {keys})"
    return f"SELECT {columns} FROM usage_days WHERE {where}"  # noqa: S608


class SqliteDayWriter:
    """Runs consume batches on SQLite, each as one transaction on a dedicated thread.

    Args:
        database: the database file (the store's own).
        busy_timeout_ms: how long to wait for another writer (the store's engine, the CLI).
    """

    def __init__(self, database: str, busy_timeout_ms: int) -> None:
        self._database = database
        self._busy_timeout_ms = busy_timeout_ms
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quotad-sqlite")
        self._connection: sqlite3.Connection | None = None  # made and used on the thread
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quotad-wal")
        self._checkpointing: sqlite3.Connection | None = None  # on its own thread
        self._checkpoints: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin checkpointing in the background."""
        self._checkpoints = asyncio.create_task(self._checkpoint_forever(), name="quotad-wal")

    async def consume(self, batch: list[Consume]) -> list[ConsumeOutcome]:
        """Decide and commit ``batch`` (consumes without an Idempotency-Key)."""
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._thread, self._consume, batch)

    async def close(self) -> None:
        """Stop checkpointing, close the connections and stop the threads."""
        if self._checkpoints is not None:
            self._checkpoints.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._checkpoints
            self._checkpoints = None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._thread, self._disconnect)
        await loop.run_in_executor(self._checkpointer, self._stop_checkpointing)
        self._thread.shutdown(wait=True)
        self._checkpointer.shutdown(wait=True)

    def _open(self, *pragmas: str) -> sqlite3.Connection:
        # Autocommit at the driver: transactions are opened explicitly.
        connection = sqlite3.connect(self._database, isolation_level=None)
        for pragma in (
            "journal_mode=WAL",
            "synchronous=FULL",  # an acknowledged consume survives a power cut
            "foreign_keys=ON",
            f"busy_timeout={self._busy_timeout_ms}",
            *pragmas,
        ):
            connection.execute(f"PRAGMA {pragma}")
        return connection

    def _connect(self) -> sqlite3.Connection:
        if self._connection is None:
            self._connection = self._open("wal_autocheckpoint=0")  # the checkpointer's job
        return self._connection

    def _disconnect(self) -> None:
        if self._connection is not None:
            self._connection.close()
            self._connection = None

    async def _checkpoint_forever(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(CHECKPOINT_SECONDS)
            try:
                await loop.run_in_executor(self._checkpointer, self._checkpoint)
            except sqlite3.Error:  # busy or failing now; the log waits for the next one
                await loop.run_in_executor(self._checkpointer, self._stop_checkpointing)

    def _checkpoint(self) -> None:
        if self._checkpointing is None:
            self._checkpointing = self._open()
        self._checkpointing.execute("PRAGMA wal_checkpoint(PASSIVE)")

    def _stop_checkpointing(self) -> None:
        if self._checkpointing is not None:
            self._checkpointing.close()
            self._checkpointing = None

    def _consume(self, batch: list[Consume]) -> list[ConsumeOutcome]:
        try:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._disconnect()  # a fresh connection next time
            raise StorageError("the database could not complete the write") from exc
        try:
            keys = list(first_totals(batch))
            rows = {
                (account_id, service, day): [used, total, rejected]
                for account_id, service, day, used, total, rejected in connection.execute(
                    _read(len(keys)), [part for key in keys for part in key]
                )
            }
            outcomes = decide(batch, rows)
            connection.executemany(_WRITE, [(*key, *row) for key, row in rows.items()])
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):  # an account deleted meanwhile, say
                raise Conflict("the change conflicts with a concurrent change; retry") from exc
            raise StorageError("the database could not complete the write") from exc
        return outcomes
