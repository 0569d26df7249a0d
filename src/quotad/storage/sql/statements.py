"""The statements of a consume, built from ``storage/schema.py`` with SQLAlchemy Core.

Both consume paths run the same four: read the batch's day rows and its claims' stored
answers, write back the rows and answers ``decide`` changed. PostgreSQL runs them
through SQLAlchemy (locking with ``FOR UPDATE``, after creating the rows it lacks so that
they can be locked, and writing each locked row back by its address), the day rows' as
one statement a batch over one JSON parameter; SQLite's
writer runs them through ``sqlite3`` as SQL compiled here once for the SQLite dialect, so
no table or column name is written twice.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from datetime import date
from functools import cache
from typing import Any

import orjson
import sqlalchemy as sa
from sqlalchemy.dialects import sqlite as sqlite_dialect

from quotad.domain.models import ConsumeOutcome
from quotad.storage.schema import idempotency, usage_days
from quotad.storage.sql.decide import Answer, ClaimKey, DayKey, DayRow
from quotad.storage.sql.rows import from_micros, to_micros

DAY_KEY = (usage_days.c.account_id, usage_days.c.service, usage_days.c.day)
DAY_COUNTS = tuple(usage_days.c)[len(DAY_KEY) :]  # a day row's columns after its key
CLAIM_KEY = (idempotency.c.account_id, idempotency.c.key)
# The written rows' parameters, in the tables' column order (the key first), which
# ``day_params`` and ``claim_params`` follow.
DAY_COLUMNS = tuple(column.name for column in usage_days.c)
CLAIM_COLUMNS = tuple(column.name for column in idempotency.c)

Insert = Callable[[sa.Table], Any]  # a dialect's ``insert``, which has ON CONFLICT


def read_claims() -> sa.Select[Any]:
    """The claims of a list of keys (``keys``), their columns in ``CLAIM_COLUMNS`` order.

    A claim without an answer is one PostgreSQL's consume created to lock and has not
    answered yet: as good as absent.
    """
    return idempotency.select().where(
        sa.tuple_(*CLAIM_KEY).in_(sa.bindparam("keys", expanding=True))
    )


def write_days(insert: Insert, rows: sa.Select[Any] | None = None) -> Any:
    """Store day rows' absolute values, creating those that are missing: the rows bound
    as parameters, or those ``rows`` selects (in ``DAY_COLUMNS`` order)."""
    stmt = insert(usage_days)
    if rows is not None:
        stmt = stmt.from_select(list(DAY_COLUMNS), rows)
    return stmt.on_conflict_do_update(
        index_elements=[column.name for column in DAY_KEY],
        set_={name: stmt.excluded[name] for name in DAY_COLUMNS[3:]},
    )


# PostgreSQL, one statement a batch ------------------------------------------------------
# A batch's rows travel as one JSON parameter (an array of rows, each an array of values)
# that the server takes apart, so each statement is one execution with the same SQL text
# (prepared once) whatever the batch's size. An executemany would run the statement once a
# row, and an expanding IN list would be new SQL text, parsed and prepared again, for every
# batch size. JSON rather than one array parameter a column: orjson writes the whole batch
# in C, where psycopg dumps an array element by element in Python (a sixth of a reserve's
# CPU on PostgreSQL went there).
_BATCH = sa.bindparam("batch", type_=sa.String)


def _batch_items() -> Any:
    """The rows of the ``batch`` parameter, one JSON array each (``jsonb_array_elements``)."""
    from sqlalchemy.dialects.postgresql import JSONB  # PostgreSQL's statements only

    return sa.func.jsonb_array_elements(sa.cast(_BATCH, JSONB))


def pg_insert(table: sa.Table) -> Any:
    """PostgreSQL's INSERT (with ON CONFLICT), its dialect imported when first needed."""
    from sqlalchemy.dialects import postgresql

    return postgresql.insert(table)


def unnested(columns: tuple[sa.ColumnClause[Any], ...]) -> Any:
    """The rows of the ``batch`` parameter (``as_batch``), as a table named ``batch`` with
    ``columns`` (a BIGINT for a BigInteger column, else a VARCHAR), which are each row's
    first values, in order."""
    item = _batch_items().column_valued("item")
    values = (
        sa.cast(
            item.op("->>")(sa.literal_column(str(index))),
            sa.BigInteger if isinstance(column.type, sa.BigInteger) else sa.String,
        ).label(column.name)
        for index, column in enumerate(columns)
    )
    return sa.select(*values).subquery("batch")


def pg_create_days() -> Any:
    """Create the batch's missing day rows (rows of ``account_id``, ``service``, ``day``
    and ``total``), nothing used yet; existing rows are left as they are."""
    new = unnested((*DAY_KEY, usage_days.c.total))
    zero = sa.literal(0, sa.BigInteger)
    rows = sa.select(*(new.c[column.name] for column in DAY_KEY), zero, new.c.total, zero)
    insert = pg_insert(usage_days).from_select(list(DAY_COLUMNS), rows)
    return insert.on_conflict_do_nothing()


# A row's physical address, which stays the same while the transaction holds its lock.
ROW_ID: sa.ColumnClause[str] = sa.column("ctid", sa.String, _selectable=usage_days)


class TID(sa.types.UserDefinedType[str]):
    """PostgreSQL's ``tid``, a row's address."""

    cache_ok = True

    def get_col_spec(self, **kw: Any) -> str:
        return "TID"


def pg_lock_days() -> sa.Select[Any]:
    """Read and lock the day rows of the batch's keys (rows that start with
    ``account_id``, ``service`` and ``day``), in the one lock order every node follows:
    each row's ``ROW_ID`` (as text), ``used``, ``total``, ``rejected``, and the position of
    its key in the batch (from 1), rather than the key itself."""
    item = _batch_items().table_valued("value", with_ordinality="position")
    item = item.render_derived(name="item")
    field = (item.c.value.op("->>")(sa.literal_column(str(i))) for i in range(len(DAY_KEY)))
    key = (sa.cast(value, sa.String) for value in field)
    return (
        sa.select(sa.cast(ROW_ID, sa.String), *DAY_COUNTS, item.c.position)
        .select_from(
            usage_days.join(item, sa.and_(*(c == v for c, v in zip(DAY_KEY, key, strict=True))))
        )
        .order_by(*DAY_KEY)
        .with_for_update(of=usage_days)
    )


def pg_write_days() -> Any:
    """Store day rows' absolute values (rows of ``DAY_COLUMNS``)."""
    rows = unnested(tuple(usage_days.c))
    return write_days(pg_insert, sa.select(*(rows.c[name] for name in DAY_COLUMNS)))


def pg_write_locked_days() -> Any:
    """Store the values of day rows this transaction has locked (rows of their ``ROW_ID``
    then their columns after the key): found by address, not by a search of the key."""
    rows = unnested((sa.column("row_id", sa.String), *DAY_COUNTS))
    return (
        usage_days.update()
        .where(sa.cast(rows.c.row_id, TID) == ROW_ID)
        .values({column.name: rows.c[column.name] for column in DAY_COUNTS})
    )


def as_batch(rows: Iterable[tuple[Any, ...]]) -> dict[str, str]:
    """Positional rows as the ``batch`` parameter of ``unnested`` statements."""
    return {"batch": orjson.dumps(list(rows)).decode()}


def write_claims(insert: Insert) -> Any:
    """Store claims with their answers, replacing what their keys held."""
    stmt = insert(idempotency)
    return stmt.on_conflict_do_update(
        index_elements=[column.name for column in CLAIM_KEY],
        set_={name: stmt.excluded[name] for name in CLAIM_COLUMNS[2:]},
    )


def stored_answer(
    fingerprint: str, expires_at: int, granted: bool | None, used: int, total: int, day: str
) -> Answer | None:
    """A claim's stored answer, from the columns ``read_claims`` reads after the key."""
    if granted is None:
        return None
    # The version-1 fields only: a replay has no ``before`` (storage/base.py's contract).
    outcome = ConsumeOutcome(bool(granted), int(used), int(total), date.fromisoformat(day))
    return Answer(fingerprint, from_micros(int(expires_at)), outcome)


def day_params(rows: dict[DayKey, DayRow]) -> list[tuple[Any, ...]]:
    """Day rows as ``write_days`` parameters, in ``DAY_COLUMNS`` order."""
    return [(*key, *row) for key, row in rows.items()]


def claim_params(claims: dict[ClaimKey, Answer]) -> list[tuple[Any, ...]]:
    """Answers as ``write_claims`` parameters, in ``CLAIM_COLUMNS`` order."""
    return [
        (
            *key,
            answer.fingerprint,
            to_micros(answer.expires_at),
            answer.outcome.granted,
            answer.outcome.used,
            answer.outcome.total,
            answer.outcome.day.isoformat(),
        )
        for key, answer in claims.items()
    ]


def as_dicts(names: Iterable[str], params: list[tuple[Any, ...]]) -> list[dict[str, Any]]:
    """Positional parameters as SQLAlchemy's named ones."""
    keys = tuple(names)
    return [dict(zip(keys, values, strict=True)) for values in params]


# SQLite, compiled once ---------------------------------------------------------------
_SQLITE = sqlite_dialect.dialect(paramstyle="qmark")


def sqlite_compiled(stmt: Any, params: tuple[str, ...] | None = None, **kwargs: Any) -> str:
    """``stmt`` as SQLite SQL with ``?`` parameters, checked to take ``params`` in that order."""
    compiled = stmt.compile(dialect=_SQLITE, **kwargs)
    if params is not None and tuple(compiled.positiontup) != params:
        msg = f"parameters {compiled.positiontup} differ from {params}"
        raise AssertionError(msg)
    return str(compiled)


SQLITE_WRITE_DAYS = sqlite_compiled(
    write_days(sqlite_dialect.insert), DAY_COLUMNS, column_keys=DAY_COLUMNS
)
SQLITE_WRITE_CLAIMS = sqlite_compiled(
    write_claims(sqlite_dialect.insert), CLAIM_COLUMNS, column_keys=CLAIM_COLUMNS
)


def keyed(
    table: sa.Table, key: tuple[sa.Column[Any], ...], keys: list[tuple[Any, ...]]
) -> sa.Select[Any]:
    """The rows of ``table`` whose ``key`` columns hold one of ``keys`` (each a value per
    column; bound as parameters, in order), its columns in table order.

    The keys are a table of their own (``WITH wanted(…) AS (VALUES …)``) joined on the
    key, so the database looks each one up in the key's index. SQLite runs the
    ``(…) IN (VALUES …)`` form as a scan of the whole table, every row compared with the
    list: a consume batch's read took 27 ms on a table of 200,000 days, where this form
    takes about 0.24 ms for 150 keys on that table as on a new one
    (``tests/test_sql_lookups.py`` checks the plans).
    """
    wanted = sa.values(*(sa.column(c.name, c.type) for c in key), name="wanted").data(keys)
    found = wanted.cte("wanted")
    joined = found.join(table, sa.and_(*(c == found.c[c.name] for c in key)))
    return sa.select(*table.c).select_from(joined)


def _sqlite_keyed(table: sa.Table, key: tuple[sa.Column[Any], ...], count: int, *first: Any) -> str:
    # ``keyed`` for ``count`` keys, SQLite's SQL; ``first``: columns before the table's.
    stmt = keyed(table, key, [("",) * len(key)] * count)
    return sqlite_compiled(stmt.with_only_columns(*first, *table.c))


# Cached per number of keys, which a batch's size bounds.
# SQLite's own key of a row, which the writer's transaction keeps from changing: a row it
# has read is written back by it, without a search of the primary key's index.
SQLITE_ROW_ID: sa.ColumnClause[int] = sa.column("rowid", sa.Integer, _selectable=usage_days)
SQLITE_WRITE_READ_DAYS = sqlite_compiled(
    usage_days.update()
    .where(sa.bindparam("rowid") == SQLITE_ROW_ID)
    .values({column.name: sa.bindparam(column.name) for column in DAY_COUNTS}),
    (*(column.name for column in DAY_COUNTS), "rowid"),
)


@cache
def sqlite_read_days(count: int) -> str:
    """The day rows of ``count`` keys (``keyed``), flattened into its parameters, each
    row's ``rowid`` first (``SQLITE_WRITE_READ_DAYS`` writes it back by it)."""
    return _sqlite_keyed(usage_days, DAY_KEY, count, SQLITE_ROW_ID)


@cache
def sqlite_read_claims(count: int) -> str:
    """``read_claims`` for ``count`` keys, flattened into its parameters."""
    return _sqlite_keyed(idempotency, CLAIM_KEY, count)
