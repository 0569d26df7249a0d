"""Reservation writes, group-committed: a reserve's insert and a commit's conditional
update, of every caller waiting at once, in one transaction and one commit (one fsync).

Alone, each took a write transaction of its own; on SQLite that was an fsync each and,
worse, a wait for the file's write lock behind the consumes' writer thread (SQLite's busy
wait sleeps for milliseconds at a time). Here:

- SQLite: a batch runs as one transaction on the consumes' own writer thread and
  connection (``SqliteDayWriter.transaction``), so the two never contend for the lock,
  its inserts as one statement and its commits as another, as on PostgreSQL.
- PostgreSQL: a batch runs as at most two statements, each committing on its own
  (autocommit: one round trip each, where a transaction costs two more): every insert in
  one statement over one JSON parameter, then every commit as one conditional update over
  another (the same SQL text, prepared once, for any batch size: ``statements.unnested``).
  Inserts go first: a commit always follows its reservation's acknowledged insert, so
  the two of one reservation are never in one batch, and writes of different ones in one
  batch were concurrent, for which any order is an order they could have run in.

Each caller is answered once its batch has committed, so an acknowledged reservation is
as durable as one written alone. Two commits of one reservation run one after the other,
in arrival order. A batch the database refuses (bad input in one request) runs again one
request at a time, so one bad request cannot fail the others: what it committed before
(PostgreSQL's inserts) is kept, and an insert runs again as a no-op (an id that exists is
left as it is), a conditional update as it would have.
"""

from __future__ import annotations

import functools
import sqlite3
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace
from typing import Any, NamedTuple

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from quotad.domain.credits import Reservation, ReservationStatus
from quotad.errors import QuotadError, StorageError
from quotad.storage.batching import Batcher, submit_or_run
from quotad.storage.schema import reservations
from quotad.storage.sql.day_batches import SqliteDayWriter
from quotad.storage.sql.engine import Database
from quotad.storage.sql.reservation_rows import (
    SQLITE_ROWS_A_STATEMENT,
    body_text,
    insert_pg,
    insert_sqlite,
)
from quotad.storage.sql.statements import as_batch, sqlite_compiled, unnested

_PENDING = ReservationStatus.PENDING.value

# A finish's parameters: not named as the columns they set, which an UPDATE reserves.
_FINISH = tuple(
    sa.column(name, kind)
    for name, kind in (
        ("finish_id", sa.String),
        ("finish_status", sa.String),
        ("finish_body", sa.String),
        ("finish_settled_at", sa.BigInteger),
        ("finish_now", sa.BigInteger),
    )
)


def _finish(given: Any, body: Any) -> Any:
    """Settle the reservation ``given.finish_id`` names as ``given`` says, if it is pending,
    never claimed and not due at ``given.finish_now``; ``body`` is the JSON to store."""
    r = reservations.c
    return (
        reservations.update()
        .where(
            r.id == given.finish_id,
            r.status == _PENDING,
            r.claim.is_(None),
            r.expires_at > given.finish_now,
        )
        .values(status=given.finish_status, body=body, settled_at=given.finish_settled_at)
    )


@functools.cache  # built once, when PostgreSQL first needs it
def _pg_finish() -> Any:
    """Settle a batch of reservations that move nothing (rows of ``_FINISH``): the ids it
    settled."""
    batch = unnested(_FINISH).c
    return _finish(batch, sa.cast(batch.finish_body, sa.JSON)).returning(reservations.c.id)


# SQLite's finish, run by hand on the writer thread's connection, takes its parameters in
# this order; the body column is SQLAlchemy's JSON, which SQLite keeps as JSON text.
_SQLITE_FINISH_ORDER = (
    "finish_status",
    "finish_body",
    "finish_settled_at",
    "finish_id",
    "status_1",  # the pending status it must find
    "finish_now",
)


def _sqlite_finish() -> str:
    """Settle one reservation that moves nothing (``_SQLITE_FINISH_ORDER``)."""
    given = SimpleNamespace(**{c.name: sa.bindparam(c.name, type_=c.type) for c in _FINISH})
    return sqlite_compiled(_finish(given, given.finish_body), _SQLITE_FINISH_ORDER)


_SQLITE_FINISH = _sqlite_finish()


@functools.cache  # per number of reservations, which a batch's size bounds
def _sqlite_finishes(count: int) -> str:
    """Settle ``count`` reservations (``_FINISH`` rows, flattened, then the pending status
    they must find) in one statement, ids all different."""
    given = sa.values(*_FINISH, name="given").data([("",) * len(_FINISH)] * count)
    found = given.cte("given")
    return sqlite_compiled(_finish(found.c, found.c.finish_body))


# Batches at a time: while one waits for its transaction (or runs in it), the next one
# gathers and queues, so on SQLite it joins the writer thread's next transaction.
IN_FLIGHT = 2


class Create(NamedTuple):
    """Insert a pending reservation, unless its id exists."""

    reservation: Reservation


class Finish(NamedTuple):
    """Settle a reservation that moves nothing, if pending, never claimed and not due at
    ``now`` (micros): whether it did."""

    id: str
    status: str
    body: dict[str, Any]
    settled_at: int | None
    now: int


Write = Create | Finish


class ReservationWrites:
    """Group-committed reservation writes of one SQL store.

    Args:
        db: the store's database.
        sqlite_writer: SQLite's consume writer, once the store is open (None on PostgreSQL).
        batch: share transactions between concurrent writes; ``False``: one each.
    """

    def __init__(
        self, db: Database, sqlite_writer: Callable[[], SqliteDayWriter | None], *, batch: bool
    ) -> None:
        self._db = db
        self._sqlite_writer = sqlite_writer
        self._batcher: Batcher[Write, bool] | None = (
            Batcher(self._run, in_flight=IN_FLIGHT, under_way=db.under_way) if batch else None
        )

    async def write(self, request: Write) -> bool:
        """Run ``request`` (with whoever else is waiting); its answer once committed."""
        return await submit_or_run(self._batcher, self._run, request)

    async def _run(self, batch: list[Write]) -> list[bool | Exception]:
        try:
            return list(await self._apply(batch))
        except StorageError:
            raise
        except QuotadError:
            if len(batch) == 1:
                raise
        # Nothing of the batch was committed: run each request alone for its own answer.
        answers: list[bool | Exception] = []
        for request in batch:
            try:
                answers += await self._apply([request])
            except StorageError:
                raise
            except QuotadError as exc:
                answers.append(exc)
        return answers

    async def _apply(self, batch: list[Write]) -> list[bool]:
        if not self._db.sqlite:
            async with self._db.single() as conn:
                return await _apply_pg(conn, batch)
        writer = self._sqlite_writer()
        if writer is None:
            raise StorageError("store is not open")
        return await writer.transaction(partial(_apply_sqlite, batch))


def _apply_sqlite(batch: list[Write], connection: sqlite3.Connection) -> list[bool]:
    """As on PostgreSQL: a batch's inserts in one statement, then its commits in another
    (one SQLite call each, not one a row: each call hands the GIL back and waits for it
    again behind the event loop's thread); each request's answer, in order."""
    creates = [request.reservation for request in batch if isinstance(request, Create)]
    finishes = [request for request in batch if isinstance(request, Finish)]
    if creates:
        insert_sqlite(connection, creates)
    settled = iter(_finish_sqlite(connection, finishes) if finishes else ())
    return [True if isinstance(request, Create) else next(settled) for request in batch]


def _finish_sqlite(connection: sqlite3.Connection, finishes: list[Finish]) -> list[bool]:
    """Conditional updates: one statement for all (up to ``SQLITE_ROWS_A_STATEMENT``)
    when their ids differ and each settles (the usual case: commits of pending
    reservations); else one by one, in order, each as it would alone (the one
    statement's changes undone first)."""
    count = len(finishes)
    if count > 1 and count <= SQLITE_ROWS_A_STATEMENT and len({f.id for f in finishes}) == count:
        params: list[Any] = []
        for f in finishes:
            params += (f.id, f.status, body_text(f.body), f.settled_at, f.now)
        connection.execute("SAVEPOINT finishes")
        connection.execute(_sqlite_finishes(count), [*params, _PENDING])
        # changes(), not the cursor's rowcount: Python's sqlite3 counts only statements
        # that begin with INSERT, UPDATE or DELETE, and this one begins with its WITH.
        (done,) = connection.execute("SELECT changes()").fetchone()
        if done == count:
            connection.execute("RELEASE finishes")
            return [True] * count
        connection.execute("ROLLBACK TO finishes")
        connection.execute("RELEASE finishes")
    return [_finish_sqlite_one(connection, f) for f in finishes]


def _finish_sqlite_one(connection: sqlite3.Connection, request: Finish) -> bool:
    done = connection.execute(
        _SQLITE_FINISH,
        (
            request.status,
            body_text(request.body),
            request.settled_at,
            request.id,
            _PENDING,
            request.now,
        ),
    )
    return done.rowcount == 1


async def _apply_pg(conn: AsyncConnection, batch: list[Write]) -> list[bool]:
    """A batch's inserts in one statement, then its commits in another (the module's
    docstring says why that order is safe); each request's answer, in order."""
    creates = [request.reservation for request in batch if isinstance(request, Create)]
    finishes = [request for request in batch if isinstance(request, Finish)]
    if creates:
        await insert_pg(conn, creates)
    settled = iter(await _finish_pg(conn, finishes) if finishes else ())
    return [True if isinstance(request, Create) else next(settled) for request in batch]


async def _finish_pg(conn: AsyncConnection, finishes: list[Finish]) -> list[bool]:
    """Conditional updates, one statement for all when their ids differ (one round trip
    instead of one each: through the async engine a round trip costs the event loop far
    more than PostgreSQL's work)."""
    if len(finishes) > 1 and len({f.id for f in finishes}) < len(finishes):
        # A reservation twice in one statement would be updated once, by either: one by
        # one, in order, the second sees the first's write as it would alone.
        return [answer for f in finishes for answer in await _finish_pg(conn, [f])]
    rows = ((f.id, f.status, body_text(f.body), f.settled_at, f.now) for f in finishes)
    done = {row.id for row in await conn.execute(_pg_finish(), as_batch(rows))}
    return [f.id in done for f in finishes]
