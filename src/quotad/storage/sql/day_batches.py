"""SQLite's consumes, each batch one transaction on a thread of its own.

Through the async engine every statement is a hop to the driver's thread and back to
the event loop, and on a busy server each return waits behind whatever else the loop has
to do: a batch of three statements and a commit took about 4 ms of which SQLite's work
was 0.4 (the fsync included). Here BEGIN IMMEDIATE (which holds the database's write
lock, so the rows read cannot change before they are written back), the reads,
``decide_batch``, the writes and COMMIT run in one call, with the GIL released inside
SQLite's own calls, and the loop hears back once, after the commit. The statements are
those of ``statements.py``, compiled for SQLite.

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

from quotad.errors import StorageError
from quotad.storage.sql.decide import (
    Answer,
    ClaimKey,
    Consume,
    DayKey,
    DayRow,
    Decided,
    claim_order,
    decide_batch,
    lock_order,
)
from quotad.storage.sql.engine import SQLITE_PRAGMAS, lost_race
from quotad.storage.sql.statements import (
    SQLITE_WRITE_CLAIMS,
    SQLITE_WRITE_DAYS,
    claim_params,
    day_params,
    sqlite_read_claims,
    sqlite_read_days,
    stored_answer,
)

CHECKPOINT_SECONDS = 1.0


class SqliteDayWriter:
    """Runs consume batches on SQLite, each as one transaction on a dedicated thread.

    Args:
        database: the database file (the store's own).
    """

    def __init__(self, database: str) -> None:
        self._database = database
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quotad-sqlite")
        self._connection: sqlite3.Connection | None = None  # made and used on the thread
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quotad-wal")
        self._checkpointing: sqlite3.Connection | None = None  # on its own thread
        self._checkpoints: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Begin checkpointing in the background."""
        self._checkpoints = asyncio.create_task(self._checkpoint_forever(), name="quotad-wal")

    async def consume(self, batch: list[Consume]) -> Decided:
        """Decide and commit ``batch``.

        Raises:
            Conflict: the database refused the batch (an account deleted meanwhile, say).
            StorageError: the database could not run it.
        """
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
        for pragma in (*SQLITE_PRAGMAS, *pragmas):
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

    def _consume(self, batch: list[Consume]) -> Decided:
        try:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
        except sqlite3.Error as exc:
            self._disconnect()  # a fresh connection next time
            raise StorageError("the database could not complete the write") from exc
        try:
            decided = decide_batch(
                batch, _read_days(connection, batch), _read_claims(connection, batch)
            )
            connection.executemany(SQLITE_WRITE_DAYS, day_params(decided.rows))
            if decided.claims:
                connection.executemany(SQLITE_WRITE_CLAIMS, claim_params(decided.claims))
            connection.execute("COMMIT")
        except sqlite3.Error as exc:
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            if isinstance(exc, sqlite3.IntegrityError):  # an account deleted meanwhile, say
                raise lost_race() from exc
            raise StorageError("the database could not complete the write") from exc
        return decided


def _read_days(connection: sqlite3.Connection, batch: list[Consume]) -> dict[DayKey, DayRow]:
    keys = lock_order(batch)
    found = connection.execute(sqlite_read_days(len(keys)), [part for key in keys for part in key])
    return {
        (account_id, service, day): DayRow(used, total, rejected)
        for account_id, service, day, used, total, rejected in found
    }


def _read_claims(connection: sqlite3.Connection, batch: list[Consume]) -> dict[ClaimKey, Answer]:
    keys = claim_order(batch)
    if not keys:
        return {}
    found = connection.execute(
        sqlite_read_claims(len(keys)), [part for key in keys for part in key]
    )
    answers = {}
    for account_id, key, *stored in found:
        answer = stored_answer(*stored)
        if answer is not None:
            answers[account_id, key] = answer
    return answers
