"""SQLite's consumes, each batch one transaction on a thread of its own.

Through the async engine every statement is a hop to the driver's thread and back to
the event loop, and on a busy server each return waits behind whatever else the loop has
to do: a batch of three statements and a commit took about 4 ms of which SQLite's work
was 0.4 (the fsync included). Here BEGIN IMMEDIATE (which holds the database's write
lock, so the rows read cannot change before they are written back), the reads,
``decide_batch``, the writes and COMMIT run in one call, with the GIL released inside
SQLite's own calls, and the loop hears back once, after the commit. The statements are
those of ``statements.py``, compiled for SQLite.

The store's reservation writes run on the same thread and connection (``transaction``):
two connections writing one file queue on its lock, and SQLite's busy wait sleeps for
milliseconds at a time. Whatever works wait when a transaction begins share it, each
under a savepoint, so a consume batch and a reservation batch cost one fsync.

The rows a batch reads or writes are kept (``KnownRows``), and the next batch reads only
the rows it does not know: most batches touch the rows the one before them wrote. Kept
only while no other connection has written the file (``PRAGMA data_version``, read in
each transaction), and forgotten whenever a work fails.

Its commits never checkpoint the write-ahead log themselves (SQLite's default makes the
commit that fills the log copy it into the database, an fsync of the database file in
the middle of a batch, which held every caller of that batch up to 30 ms): a second
thread checkpoints every ``CHECKPOINT_SECONDS`` instead, PASSIVE, alongside the writer.
"""

from __future__ import annotations

import asyncio
import contextlib
import sqlite3
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, NamedTuple, TypeVar

from quotad.domain.credits import Hold, Reservation
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
    made_reservations,
)
from quotad.storage.sql.engine import SQLITE_PRAGMAS, lost_race
from quotad.storage.sql.reservation_rows import insert_sqlite
from quotad.storage.sql.statements import (
    SQLITE_WRITE_CLAIMS,
    SQLITE_WRITE_DAYS,
    SQLITE_WRITE_READ_DAYS,
    claim_params,
    day_params,
    sqlite_read_claims,
    sqlite_read_days,
    stored_answer,
)

CHECKPOINT_SECONDS = 1.0
_new = tuple.__new__  # a named tuple without its keyword ``__new__`` (one per row read)

T = TypeVar("T")
MAX_KNOWN_ROWS = 100_000  # day rows the writer remembers (all forgotten past that)


class KnownRows:
    """The day rows this writer has read or written, each as stored and its ``rowid``,
    for the next batch to decide on without reading them again.

    Sound only while no other connection writes the file: each transaction first reads
    SQLite's ``data_version`` (under the write lock, so nothing else can commit until the
    transaction ends), which moves with every commit of any other connection (a purge, an
    adjustment, another process), and forgets every row when it moved. A row read or
    written is known at once, so a later work of the same transaction decides on it as
    the database now holds it; a work that fails, or a transaction that does not commit,
    forgets them all (what was learnt may have been rolled back).

    ``rows`` is handed to ``decide_batch`` as it is (a batch whose rows are all known
    copies nothing); ``ids`` holds the ``rowid`` of every key of ``rows``.
    """

    def __init__(self) -> None:
        self.rows: dict[DayKey, DayRow] = {}
        self.ids: dict[DayKey, int] = {}
        self._version: int | None = None

    def begin(self, connection: sqlite3.Connection) -> None:
        """Forget every row if another connection has committed since the last check
        (or if too many are known)."""
        (version,) = connection.execute("PRAGMA data_version").fetchone()
        if version != self._version or len(self.rows) > MAX_KNOWN_ROWS:
            self.rows.clear()
            self.ids.clear()
            self._version = version

    def learn(self, key: DayKey, row: DayRow, row_id: int) -> None:
        """``row`` is stored at ``row_id`` in the transaction under way."""
        self.rows[key] = row
        self.ids[key] = row_id

    def forget(self) -> None:
        """Something failed, or the connection closes: trust nothing known."""
        self.rows.clear()
        self.ids.clear()
        self._version = None


class SqliteDayWriter:
    """Runs the store's group-committed writes (consume batches, reservation writes) on
    SQLite, on a dedicated thread, every work waiting in one transaction.

    Args:
        database: the database file (the store's own).
        share: run every waiting work in one transaction; ``False``: one transaction each.
    """

    def __init__(self, database: str, *, share: bool = True) -> None:
        self._database = database
        self._share = share
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quotad-sqlite")
        self._connection: sqlite3.Connection | None = None  # made and used on the thread
        self._checkpointer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="quotad-wal")
        self._checkpointing: sqlite3.Connection | None = None  # on its own thread
        self._checkpoints: asyncio.Task[None] | None = None
        # Works waiting for the next transaction, taken by the thread all at once.
        self._waiting: list[_Work] = []
        self._waiting_lock = threading.Lock()
        self._known = KnownRows()  # used on the writer's thread only

    def start(self) -> None:
        """Begin checkpointing in the background."""
        self._checkpoints = asyncio.create_task(self._checkpoint_forever(), name="quotad-wal")

    async def consume(
        self, batch: list[Consume], made: list[tuple[Hold, Reservation]] | None = None
    ) -> Decided:
        """Decide and commit ``batch``, with the reservations its grants make (appended to
        ``made``: committed once this returns).

        Raises:
            Conflict: the database refused the batch (an account deleted meanwhile, say).
            StorageError: the database could not run it.
        """
        held = [] if made is None else made
        known = self._known
        return await self.transaction(
            lambda connection: _decide_and_write(connection, batch, held, known)
        )

    async def transaction(self, work: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``work`` on this writer's thread and connection, in the next transaction
        with whatever other work is waiting (the consumes', the reservations'): one
        commit, one fsync, and no wait on the file's lock between two writers of the
        store (a busy wait sleeps for milliseconds). Each work runs under a savepoint, so
        one that fails leaves the others' writes whole; it is answered after the commit.

        Raises:
            Conflict: the database refused it (a constraint).
            StorageError: the database could not run it.
        """
        answer: Future[T] = Future()
        with self._waiting_lock:
            self._waiting.append((work, answer))
        self._thread.submit(self._run_waiting)
        return await asyncio.wrap_future(answer)

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
        self._known.forget()
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

    def _run_waiting(self) -> None:
        with self._waiting_lock:
            take = len(self._waiting) if self._share else 1
            waiting = self._waiting[:take]
            del self._waiting[:take]
        # A caller that stopped waiting before its work began is left out.
        works = [item for item in waiting if item[1].set_running_or_notify_cancel()]
        if not works:
            return  # an earlier run took them
        try:
            connection = self._connect()
            connection.execute("BEGIN IMMEDIATE")
            self._known.begin(connection)
        except sqlite3.Error as exc:
            self._disconnect()  # a fresh connection next time
            for _, answer in works:
                answer.set_exception(_mapped(exc))
            return
        try:
            results = _run_each(connection, works, self._known)
            connection.execute("COMMIT")
        except Exception as exc:
            # The transaction as a whole failed: nothing of it was committed.
            self._known.forget()
            if connection.in_transaction:
                with contextlib.suppress(sqlite3.Error):
                    connection.execute("ROLLBACK")
            for _, answer in works:
                answer.set_exception(_mapped(exc))
            return
        for (_, answer), result in zip(works, results, strict=True):
            if isinstance(result, _Failed):
                answer.set_exception(result.error)
            else:
                answer.set_result(result)


class _Failed(NamedTuple):
    """A work that failed alone (its savepoint rolled back; the others' writes stand)."""

    error: Exception


_Work = tuple[Callable[[sqlite3.Connection], Any], "Future[Any]"]


def _run_each(connection: sqlite3.Connection, works: list[_Work], known: KnownRows) -> list[Any]:
    """Each work's result (or ``_Failed``); raises if the transaction as a whole failed.
    A work rolled back forgets the rows ``known`` (it may have written some)."""
    if len(works) == 1:
        return [works[0][0](connection)]  # its failure is the transaction's
    results: list[Any] = []
    for work, _ in works:
        connection.execute("SAVEPOINT work")
        try:
            result = work(connection)
        except Exception as exc:
            if not connection.in_transaction:
                raise  # SQLite rolled the whole transaction back (a full disk, say)
            connection.execute("ROLLBACK TO work")
            connection.execute("RELEASE work")
            known.forget()
            results.append(_Failed(_mapped(exc)))
            continue
        connection.execute("RELEASE work")
        results.append(result)
    return results


def _mapped(exc: Exception) -> Exception:
    """quotad's error for what a work or the transaction raised."""
    if isinstance(exc, sqlite3.IntegrityError):  # an account deleted meanwhile, say
        return lost_race()
    if isinstance(exc, sqlite3.Error):
        return StorageError("the database could not complete the write")
    return exc


def _decide_and_write(
    connection: sqlite3.Connection,
    batch: list[Consume],
    made: list[tuple[Hold, Reservation]],
    known: KnownRows,
) -> Decided:
    _read_days(connection, batch, known)
    decided = decide_batch(batch, known.rows, _read_claims(connection, batch))
    # Rows stored are written back by their rowid (and known as written); new ones inserted.
    rows, ids = known.rows, known.ids
    found = []
    new = {}
    for key, row in decided.rows.items():
        row_id = ids.get(key)
        if row_id is None:
            new[key] = row
        else:
            found.append((*row, row_id))
            rows[key] = row
    if found:
        connection.executemany(SQLITE_WRITE_READ_DAYS, found)
    if new:
        connection.executemany(SQLITE_WRITE_DAYS, day_params(new))
    if decided.claims:
        connection.executemany(SQLITE_WRITE_CLAIMS, claim_params(decided.claims))
    making = made_reservations(batch, decided.answers)
    if making:
        insert_sqlite(connection, [r for _, r in making])
        made += making
    return decided


def _read_days(connection: sqlite3.Connection, batch: list[Consume], known: KnownRows) -> None:
    """Have ``known`` hold each of the batch's day rows that is stored: those it does not
    know yet are read (a row not stored yet stays unknown: the batch inserts it)."""
    rows = known.rows
    missing: dict[DayKey, None] = {}
    for request in batch:
        if request.__class__ is Consume:
            key = request.row_key
            if key not in rows:
                missing[key] = None
        else:
            for key in request.keys:  # type: ignore[attr-defined]  # a SlotConsume's
                if key not in rows:
                    missing[key] = None
    if not missing:
        return
    keys = list(missing)
    found = connection.execute(sqlite_read_days(len(keys)), [part for key in keys for part in key])
    for row_id, account_id, service, day, used, total, rejected in found:
        known.learn((account_id, service, day), _new(DayRow, (used, total, rejected)), row_id)


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
