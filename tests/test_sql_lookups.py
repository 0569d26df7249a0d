"""SQLite finds a consume's rows by their keys in the key's index, never by reading the
whole table: a deployment's usage_days grows by a row per account, service (and limit)
and day, and SQLite runs ``(…) IN (VALUES …)`` as a scan of every row of it. Checked on
the query plans SQLite itself gives (no timing)."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from quotad.domain.limits import HARD, Slot
from quotad.domain.models import IdempotencyClaim
from quotad.storage import stores_from_url
from quotad.storage.sql.statements import sqlite_read_claims, sqlite_read_days
from tests.servers import migrated_sqlite_copy
from tests.test_race import DAY, add_account

pytestmark = pytest.mark.sqlite

TABLES = ("usage_days", "idempotency")


def plan(connection: sqlite3.Connection, sql: str, params: Any = ()) -> list[str]:
    """The steps of SQLite's plan for ``sql``."""
    return [row[3] for row in connection.execute(f"EXPLAIN QUERY PLAN {sql}", params)]


def scans(steps: list[str]) -> list[str]:
    """The steps that read a counter table whole."""
    return [step for step in steps for table in TABLES if step.startswith(f"SCAN {table}")]


@pytest.fixture
def database(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    """A migrated store's file, opened with sqlite3 as the writer opens it."""
    with closing(sqlite3.connect(migrated_sqlite_copy(tmp_path / "q.db"))) as connection:
        yield connection


@pytest.mark.parametrize("count", [1, 3, 150])
def test_the_writers_reads_look_each_key_up(database: sqlite3.Connection, count: int) -> None:
    """The consume writer's read of a batch's day rows and of its Idempotency-Keys'
    answers searches each table's key index, for one key or many; it scans no table."""
    days = plan(database, sqlite_read_days(count), ["a", "s", "2024-11-07"] * count)
    claims = plan(database, sqlite_read_claims(count), ["a", "k"] * count)
    assert scans(days) == [], days
    assert scans(claims) == [], claims
    assert any(step.startswith("SEARCH usage_days USING INDEX") for step in days), days
    assert any(step.startswith("SEARCH idempotency USING INDEX") for step in claims), claims


async def test_the_stores_counter_reads_scan_no_counter_table(tmp_path: Path) -> None:
    """What a verify reads back through the SQL store (counters by name and period, after
    a replay; a service's days) is found by key: SQLite's plan of each statement it ran
    against usage_days or idempotency scans neither table."""
    url = f"sqlite:///{migrated_sqlite_copy(tmp_path / 'q.db')}"
    stores = stores_from_url(url)
    await stores.open()
    ran: list[tuple[str, Any]] = []

    def seen(_conn: Any, _cursor: Any, statement: str, parameters: Any, *_: Any) -> None:
        if any(table in statement for table in TABLES) and not statement.startswith("EXPLAIN"):
            ran.append((statement, parameters))

    database = stores.counters._db  # type: ignore[attr-defined]
    for engine in {id(e): e for e in (database.writer, database.reader)}.values():
        event.listen(engine.sync_engine, "before_cursor_execute", seen)
    try:
        await add_account(stores)
        now = datetime.now(UTC)
        month = Slot("insights.month", "2024-11", 10**6, HARD, 1)
        claim = IdempotencyClaim("k1", "fingerprint", now + timedelta(hours=1))
        counters = stores.counters
        await counters.consume("racer", "insights", DAY, 1, 10, claim, now, extra=(month,))
        await counters.consume("racer", "insights", DAY, 1, 10, claim, now, extra=(month,))
        keys = [("insights", DAY.isoformat()), ("insights.month", "2024-11")]
        assert await counters.read_counters("racer", keys) == [1, 1]
        assert len(await counters.usage("racer", "insights", DAY, DAY)) == 1
    finally:
        await stores.close()
    reads = [(sql, params) for sql, params in ran if sql.lstrip().startswith(("SELECT", "WITH"))]
    assert reads, "the store ran no read of a counter table"
    with closing(sqlite3.connect(url.removeprefix("sqlite:///"))) as connection:
        for sql, params in reads:
            assert scans(plan(connection, sql, params)) == [], sql
