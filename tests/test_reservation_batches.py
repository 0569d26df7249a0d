"""Reservation writes group-committed (SPEC 10): concurrent writes share transactions,
each is answered for itself, and a commit from a held copy never overrides the store."""

from __future__ import annotations

import asyncio
import sqlite3
import threading
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx2
import pytest
from sqlalchemy import event

from quotad.domain.credits import Reservation, ReservationStatus
from quotad.errors import Conflict, ValidationFailed
from quotad.service import reservations
from quotad.service.context import Context
from quotad.storage.sql import SqlStore
from quotad.storage.sql.day_batches import SqliteDayWriter
from quotad.storage.sql.reservation_batches import ReservationWrites, Write
from quotad.testing import FakeClock
from tests.conftest import Deployment
from tests.servers import postgres_schema
from tests.test_reservations import commit, reserve

NOW = datetime(2026, 1, 5, 12, tzinfo=UTC)


def pending(n: int, account: str = "acct") -> Reservation:
    """A pending reservation of 3 units, due in five minutes."""
    return Reservation(
        id=f"rsv_{n}",
        account_id=account,
        key_id=None,
        items=(("svc", 3),),
        day=date(2026, 1, 5),
        moved=(),
        given={},
        price=0,
        created_at=NOW,
        expires_at=NOW + timedelta(minutes=5),
    )


@pytest.fixture(params=["sqlite", "postgresql"])
async def sql_store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[SqlStore]:
    """An open, empty SQL store of each kind."""
    if request.param == "sqlite":
        store = SqlStore(f"sqlite:///{tmp_path / 'quotad.db'}")
        await store.open()
        try:
            yield store
        finally:
            await store.close()
        return
    with postgres_schema() as url:
        store = SqlStore(url)
        await store.open()
        try:
            yield store
        finally:
            await store.close()


@pytest.fixture
def batches(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The size of every reservation batch run from now on."""
    sizes: list[int] = []
    run = ReservationWrites._apply

    async def counted(self: ReservationWrites, batch: list[Write]) -> list[bool]:
        sizes.append(len(batch))
        return await run(self, batch)

    monkeypatch.setattr(ReservationWrites, "_apply", counted)
    return sizes


async def test_concurrent_reservation_writes_share_transactions(
    sql_store: SqlStore, batches: list[int]
) -> None:
    """40 concurrent reserves, then 40 equal commits, take fewer transactions than writes,
    and every one is stored and answered as if written alone."""
    made = [pending(n) for n in range(40)]
    await asyncio.gather(*(sql_store.create_reservation(r) for r in made))
    assert sum(batches) == 40
    assert len(batches) < 40
    for reservation in made:
        assert await sql_store.get_reservation(reservation.id) == reservation
    later = NOW + timedelta(seconds=1)
    done = [r.settled_as(ReservationStatus.COMMITTED, 3, 0, later) for r in made]
    batches.clear()
    answers = await asyncio.gather(*(sql_store.finish_reservation(r, later) for r in done))
    assert answers == [True] * 40
    assert len(batches) < 40
    again = await asyncio.gather(*(sql_store.finish_reservation(r, later) for r in done))
    assert again == [False] * 40  # settled: the conditional write no longer applies
    for reservation in done:
        assert await sql_store.get_reservation(reservation.id) == reservation


async def test_a_finish_past_the_deadline_or_claimed_is_refused_in_a_batch(
    sql_store: SqlStore,
) -> None:
    """In one batch, a finish of a due or claimed reservation is refused and the others
    apply: each request is decided on its own row."""
    made = [pending(n) for n in range(3)]
    for reservation in made:
        await sql_store.create_reservation(reservation)
    claimed = await sql_store.claim_reservation(
        made[1].id, "nonce:cancelled:0", NOW, NOW + timedelta(seconds=30)
    )
    assert claimed is not None
    at = NOW + timedelta(seconds=1)
    due = made[2].expires_at
    answers = await asyncio.gather(
        sql_store.finish_reservation(made[0].settled_as(ReservationStatus.COMMITTED, 3, 0, at), at),
        sql_store.finish_reservation(made[1].settled_as(ReservationStatus.COMMITTED, 3, 0, at), at),
        sql_store.finish_reservation(
            made[2].settled_as(ReservationStatus.COMMITTED, 3, 0, due), due
        ),
    )
    assert answers == [True, False, False]
    statuses = [(await sql_store.get_reservation(r.id)) for r in made]
    assert [s.status.value if s else None for s in statuses] == [
        "committed",
        "pending",
        "pending",
    ]


async def test_a_bad_reservation_fails_alone_in_its_batch(tmp_path: Path) -> None:
    """On PostgreSQL a reservation it cannot store (a NUL in its account id) is refused
    alone; the others of its batch are stored."""
    with postgres_schema() as url:
        store = SqlStore(url)
        await store.open()
        try:
            good = [pending(n) for n in range(5)]
            bad = pending(99, account="a\x00b")
            answers = await asyncio.gather(
                *(store.create_reservation(r) for r in [*good[:2], bad, *good[2:]]),
                return_exceptions=True,
            )
            assert isinstance(answers[2], ValidationFailed)
            assert [a for i, a in enumerate(answers) if i != 2] == [None] * 5
            for reservation in good:
                assert await store.get_reservation(reservation.id) == reservation
            assert await store.get_reservation(bad.id) is None
        finally:
            await store.close()


async def test_new_reservations_and_commits_of_others_in_one_batch_each_apply(
    sql_store: SqlStore, batches: list[int]
) -> None:
    """Reserves and commits of other reservations sent at once, interleaved: each is stored
    or settled and answered as if written alone."""
    earlier = [pending(n) for n in range(20)]
    await asyncio.gather(*(sql_store.create_reservation(r) for r in earlier))
    later = NOW + timedelta(seconds=1)
    done = [r.settled_as(ReservationStatus.COMMITTED, 3, 0, later) for r in earlier]
    fresh = [pending(n) for n in range(100, 120)]
    batches.clear()
    writes = []
    for settled, new in zip(done, fresh, strict=True):
        writes += [sql_store.finish_reservation(settled, later), sql_store.create_reservation(new)]
    answers = await asyncio.gather(*writes)
    assert answers == [True, None] * 20
    assert max(batches) > 1  # some batch held both kinds
    for reservation in [*done, *fresh]:
        assert await sql_store.get_reservation(reservation.id) == reservation


async def test_a_commit_postgresql_refuses_fails_alone_beside_new_reservations() -> None:
    """On PostgreSQL a commit it cannot run (a NUL in the id) is refused alone; the
    reservations made and the other commits of its batch are kept and answered."""
    with postgres_schema() as url:
        store = SqlStore(url)
        await store.open()
        try:
            earlier = [pending(n) for n in range(4)]
            await asyncio.gather(*(store.create_reservation(r) for r in earlier))
            later = NOW + timedelta(seconds=1)
            done = [r.settled_as(ReservationStatus.COMMITTED, 3, 0, later) for r in earlier]
            bad = done[0]._replace(id="rsv_\x00")
            fresh = [pending(n) for n in range(100, 104)]
            answers = await asyncio.gather(
                *(store.create_reservation(r) for r in fresh[:2]),
                store.finish_reservation(bad, later),
                *(store.finish_reservation(r, later) for r in done),
                *(store.create_reservation(r) for r in fresh[2:]),
                return_exceptions=True,
            )
            assert isinstance(answers[2], ValidationFailed)
            assert [a for i, a in enumerate(answers) if i != 2] == [None] * 2 + [True] * 4 + [
                None
            ] * 2
            for reservation in [*done, *fresh]:
                assert await store.get_reservation(reservation.id) == reservation
        finally:
            await store.close()


async def test_a_failing_work_is_rolled_back_alone_in_a_shared_transaction(
    tmp_path: Path,
) -> None:
    """Works queued together on SQLite's writer share a transaction; one that fails after
    writing leaves nothing, its caller gets the error, and the others' writes commit."""
    path = tmp_path / "w.db"
    with sqlite3.connect(path) as setup:
        setup.execute("CREATE TABLE t (x INTEGER)")
    writer = SqliteDayWriter(str(path))
    gate = threading.Event()

    def insert(x: int, fail: bool = False) -> Any:
        def work(connection: sqlite3.Connection) -> int:
            connection.execute("INSERT INTO t VALUES (?)", (x,))
            if fail:
                raise sqlite3.IntegrityError("refused")
            return x

        return work

    def held(connection: sqlite3.Connection) -> int:
        gate.wait(5)  # keeps the thread busy while the others queue
        return 0

    try:
        first = asyncio.ensure_future(writer.transaction(held))
        await asyncio.sleep(0.05)
        queued = [
            asyncio.ensure_future(writer.transaction(insert(1))),
            asyncio.ensure_future(writer.transaction(insert(2, fail=True))),
            asyncio.ensure_future(writer.transaction(insert(3))),
        ]
        await asyncio.sleep(0.05)
        gate.set()
        assert await first == 0
        answers = await asyncio.gather(*queued, return_exceptions=True)
        assert answers[0] == 1
        assert isinstance(answers[1], Conflict)
        assert answers[2] == 3
    finally:
        gate.set()
        await writer.close()
    with sqlite3.connect(path) as check:
        assert sorted(x for (x,) in check.execute("SELECT x FROM t")) == [1, 3]


async def test_a_commit_from_a_held_copy_answers_as_the_store_says(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """A reservation settled elsewhere (another node cancelled it) after this node made it:
    a commit of the reserved cost here is refused as already cancelled, never applied."""
    rid = (await reserve(client, deployment.key, 10))["reservation_id"]
    store = ctx.stores.credits
    now = clock.now()
    held = await store.claim_reservation(rid, "other:cancelled:0", now, now + timedelta(seconds=30))
    assert held is not None
    assert await store.settle_reservation(held._replace(settled_at=now), "other")
    response = await commit(client, rid, 10)
    assert response.status_code == 409, response.text
    assert "cancelled" in response.text
    found = await store.get_reservation(rid)
    assert found is not None
    assert found.status is ReservationStatus.CANCELLED


async def test_once_full_each_reservation_made_drops_the_oldest_held_copy(
    client: httpx2.AsyncClient,
    deployment: Deployment,
    ctx: Context,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The node keeps copies of the newest ``HELD_PER_STORE`` reservations it made; a
    commit of one whose copy was dropped reads the store and settles it all the same."""
    monkeypatch.setattr(reservations, "HELD_PER_STORE", 3)
    made = [(await reserve(client, deployment.key, 1))["reservation_id"] for _ in range(5)]
    assert list(reservations._held[ctx.stores.credits]) == made[2:]
    for rid in made:
        response = await commit(client, rid, 1)
        assert response.status_code == 200, response.text
        assert response.json()["status"] == "committed"
    assert not reservations._held[ctx.stores.credits]


async def test_two_finishes_of_one_reservation_in_a_batch_apply_once(
    sql_store: SqlStore,
) -> None:
    """Two settlements of the same reservation sent at once (with others): the first to
    arrive applies, the second finds it settled, as they would one after the other."""
    made = [pending(n) for n in range(3)]
    for reservation in made:
        await sql_store.create_reservation(reservation)
    at = NOW + timedelta(seconds=1)
    first = made[0].settled_as(ReservationStatus.COMMITTED, 3, 0, at)
    second = made[0].settled_as(ReservationStatus.CANCELLED, 0, 0, at)
    others = [r.settled_as(ReservationStatus.COMMITTED, 3, 0, at) for r in made[1:]]
    answers = await asyncio.gather(
        *(sql_store.finish_reservation(r, at) for r in [first, others[0], second, others[1]])
    )
    assert answers == [True, True, False, True]
    assert await sql_store.get_reservation(made[0].id) == first


async def test_postgresql_runs_a_batch_of_reservation_writes_as_one_statement_a_kind() -> None:
    """Reservation inserts and commits run once a batch, never a row at a time, SQL fixed,
    each committing on its own (no BEGIN and COMMIT round trips around it)."""
    with postgres_schema() as url:
        store = SqlStore(url)
        await store.open()
        try:
            sent: list[tuple[str, bool]] = []
            transactions: list[bool] = []  # each write's: whether it ran in one

            def note(*args: Any) -> None:
                statement, executemany = args[2], args[5]
                if "reservations" in statement:
                    sent.append((statement, executemany))
                    if not statement.startswith("SELECT"):
                        transactions.append(not args[0].connection.dbapi_connection.autocommit)

            writer = store._db.writer  # the engine reservation writes go through
            assert writer is not None
            event.listen(writer.sync_engine, "before_cursor_execute", note)
            try:
                texts = []
                later = NOW + timedelta(seconds=1)
                for size, first in ((2, 0), (40, 100)):
                    sent.clear()
                    made = [pending(n) for n in range(first, first + size)]
                    await asyncio.gather(*(store.create_reservation(r) for r in made))
                    done = [r.settled_as(ReservationStatus.COMMITTED, 3, 0, later) for r in made]
                    answers = await asyncio.gather(
                        *(store.finish_reservation(r, later) for r in done)
                    )
                    assert answers == [True] * size
                    assert [await store.get_reservation(r.id) for r in done] == done
                    assert not any(executemany for _, executemany in sent)
                    texts.append({statement for statement, _ in sent})
            finally:
                event.remove(writer.sync_engine, "before_cursor_execute", note)
            assert texts[0] == texts[1]
            assert transactions
            assert not any(transactions)
        finally:
            await store.close()


async def test_sqlite_runs_a_batch_of_reservation_writes_as_one_statement_a_kind(
    tmp_path: Path, batches: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """On SQLite's writer a batch's inserts run as one statement and its commits as
    another, never a row at a time; each is stored and answered as if written alone."""
    sent: list[str] = []
    connect = SqliteDayWriter._connect

    def traced(self: SqliteDayWriter) -> sqlite3.Connection:
        connection = connect(self)
        connection.set_trace_callback(sent.append)
        return connection

    monkeypatch.setattr(SqliteDayWriter, "_connect", traced)
    store = SqlStore(f"sqlite:///{tmp_path / 'quotad.db'}")
    await store.open()
    try:
        made = [pending(n) for n in range(40)]
        await asyncio.gather(*(store.create_reservation(r) for r in made))
        inserts = [s for s in sent if s.startswith("INSERT INTO reservations")]
        assert len(batches) < 40
        assert len(inserts) == len(batches)
        later = NOW + timedelta(seconds=1)
        done = [r.settled_as(ReservationStatus.COMMITTED, 3, 0, later) for r in made]
        sent.clear()
        batches.clear()
        answers = await asyncio.gather(*(store.finish_reservation(r, later) for r in done))
        assert answers == [True] * 40
        updates = [s for s in sent if "UPDATE reservations" in s]
        assert len(batches) < 40
        assert len(updates) == len(batches)
        assert [await store.get_reservation(r.id) for r in done] == done
    finally:
        await store.close()
