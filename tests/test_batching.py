"""Group commit: concurrent consumes share round trips and commits, and stay exact."""

from __future__ import annotations

import asyncio
import random
import sqlite3
import threading
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event

from quotad.domain.limits import HARD, Slot
from quotad.domain.models import Account, AccountStatus, IdempotencyClaim, Overrides
from quotad.errors import Conflict, ValidationFailed
from quotad.storage import Stores
from quotad.storage.batching import Batcher
from quotad.storage.redis import RedisCounters
from quotad.storage.schema import usage_days
from quotad.storage.sql import SqlStore, day_batches
from tests.conftest import STORES, create_account, store_url
from tests.test_race import ATTEMPTS, DAY, TOTAL, add_account, gather_all

NOW = datetime(2024, 11, 7, 12, tzinfo=UTC)
CLAIM_EXPIRES = NOW + timedelta(days=1)


class Recorder:
    """A batch runner that records each batch and can hold one until released."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []
        self.release = asyncio.Event()
        self.release.set()

    async def run(self, batch: list[int]) -> list[int | Exception]:
        """Answer each request with its double; a negative request fails alone."""
        self.batches.append(batch)
        await self.release.wait()
        return [ValueError(f"bad {n}") if n < 0 else n * 2 for n in batch]


async def settle() -> None:
    """Let every ready task run until it waits (a submit takes a few loop turns)."""
    for _ in range(10):
        await asyncio.sleep(0)


# The batcher itself -------------------------------------------------------------------
async def test_a_lone_request_runs_at_once_in_a_batch_of_its_own() -> None:
    """One caller does not wait for company: its batch of one runs immediately."""
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.run)
    assert await batcher.submit(21) == 42
    assert recorder.batches == [[21]]


async def test_requests_arriving_during_a_batch_run_together_in_the_next() -> None:
    """While one batch runs, new requests queue and then run as one batch."""
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.run)
    recorder.release.clear()
    first = asyncio.ensure_future(batcher.submit(1))
    await settle()
    rest = [asyncio.ensure_future(batcher.submit(n)) for n in range(2, 12)]
    await settle()
    recorder.release.set()
    assert await first == 2
    assert [await r for r in rest] == [n * 2 for n in range(2, 12)]
    assert recorder.batches == [[1], list(range(2, 12))]


async def test_a_caller_that_gave_up_before_its_batch_is_left_out() -> None:
    """A request cancelled while queued never reaches the store."""
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.run)
    recorder.release.clear()
    first = asyncio.ensure_future(batcher.submit(1))
    await settle()
    leaving = asyncio.ensure_future(batcher.submit(2))
    staying = asyncio.ensure_future(batcher.submit(3))
    await settle()
    leaving.cancel()
    recorder.release.set()
    assert (await first, await staying) == (2, 6)
    assert recorder.batches == [[1], [3]]


async def test_an_error_of_one_request_reaches_only_its_caller() -> None:
    """A per-request failure is raised in its own caller; the rest of the batch succeeds."""
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.run)
    results = await asyncio.gather(*(batcher.submit(n) for n in (1, -1, 2)), return_exceptions=True)
    assert results[0] == 2
    assert results[2] == 4
    assert isinstance(results[1], ValueError)


async def test_a_failed_batch_fails_its_callers_and_the_next_batch_still_runs() -> None:
    """An exception from the runner reaches every caller of that batch, and no later one."""
    calls = 0

    async def flaky(batch: list[int]) -> list[int | Exception]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise OSError("store went away")
        return list(batch)

    batcher: Batcher[int, int] = Batcher(flaky)
    with pytest.raises(OSError, match="went away"):
        await batcher.submit(1)
    assert await batcher.submit(2) == 2


async def test_with_two_in_flight_a_second_batch_starts_while_the_first_runs() -> None:
    """``in_flight=2`` lets a second batch start before the first has finished."""
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.run, in_flight=2)
    recorder.release.clear()
    first = asyncio.ensure_future(batcher.submit(1))
    await settle()
    second = asyncio.ensure_future(batcher.submit(2))
    await settle()
    assert recorder.batches == [[1], [2]]
    recorder.release.set()
    assert (await first, await second) == (2, 4)


async def test_with_two_slots_free_the_queue_is_split_over_both() -> None:
    """Requests queued while no batch runs go out as two halves, one per free slot."""
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.run, in_flight=2)
    recorder.release.clear()
    waiting = [asyncio.ensure_future(batcher.submit(n)) for n in range(10)]
    await settle()
    assert recorder.batches == [list(range(5)), list(range(5, 10))]
    recorder.release.set()
    assert [await w for w in waiting] == [n * 2 for n in range(10)]


async def test_while_one_batch_runs_the_next_takes_everything_queued() -> None:
    """With one slot busy, the other takes the whole queue rather than half of it."""
    recorder = Recorder()
    batcher: Batcher[int, int] = Batcher(recorder.run, in_flight=2)
    recorder.release.clear()
    first = asyncio.ensure_future(batcher.submit(0))
    await settle()
    rest = [asyncio.ensure_future(batcher.submit(n)) for n in range(1, 9)]
    await settle()
    assert recorder.batches == [[0], list(range(1, 9))]
    recorder.release.set()
    assert [await first, *[await r for r in rest]] == [n * 2 for n in range(9)]


# Every store, under concurrency -------------------------------------------------------
async def test_concurrent_consumes_of_many_accounts_and_costs_stay_exact(stores: Stores) -> None:
    """Mixed accounts and costs in shared batches: each account's grants fit its total."""
    accounts = [f"acct{i}" for i in range(5)]
    await add_account(stores, accounts[0])
    for account_id in accounts[1:]:
        await create_account(
            stores,
            Account(account_id, account_id, "plan", "UTC", AccountStatus.ACTIVE, Overrides(), NOW),
        )
    rng = random.Random(7)
    calls = [(rng.choice(accounts), rng.randint(1, 7)) for _ in range(300)]
    outcomes = await gather_all(
        stores.counters.consume(account_id, "insights", DAY, cost, TOTAL)
        for account_id, cost in calls
    )
    for account_id in accounts:
        mine = [
            (cost, o) for (acc, cost), o in zip(calls, outcomes, strict=True) if acc == account_id
        ]
        granted = sum(cost for cost, o in mine if o.granted)
        assert granted <= TOTAL
        assert all(o.used <= TOTAL for _, o in mine)
        [row] = await stores.counters.usage(account_id, "insights", DAY, DAY)
        assert (row.used, row.rejected) == (granted, sum(not o.granted for _, o in mine))


async def test_concurrent_retries_with_one_idempotency_key_consume_once(stores: Stores) -> None:
    """20 concurrent consumes carrying one Idempotency-Key consume once and agree."""
    await add_account(stores)
    claim = IdempotencyClaim("retry-1", "fp", CLAIM_EXPIRES)
    outcomes = await gather_all(
        stores.counters.consume("racer", "insights", DAY, 3, TOTAL, claim, NOW) for _ in range(20)
    )
    assert {(o.granted, o.used) for o in outcomes} == {(True, 3)}
    assert Counter(o.replayed for o in outcomes) == Counter({True: 19, False: 1})
    [row] = await stores.counters.usage("racer", "insights", DAY, DAY)
    assert row.used == 3


async def test_a_reused_key_fails_only_its_own_caller(stores: Stores) -> None:
    """An Idempotency-Key reused with another request is a Conflict for that caller alone."""
    await add_account(stores)
    first = IdempotencyClaim("k", "fp-a", CLAIM_EXPIRES)
    reused = IdempotencyClaim("k", "fp-b", CLAIM_EXPIRES)
    await stores.counters.consume("racer", "insights", DAY, 1, TOTAL, first, NOW)
    results = await asyncio.gather(
        *(stores.counters.consume("racer", "insights", DAY, 1, TOTAL) for _ in range(10)),
        stores.counters.consume("racer", "insights", DAY, 1, TOTAL, reused, NOW),
        *(stores.counters.consume("racer", "insights", DAY, 1, TOTAL) for _ in range(10)),
        return_exceptions=True,
    )
    assert isinstance(results[10], Conflict)
    assert all(
        not isinstance(r, BaseException) and r.granted for i, r in enumerate(results) if i != 10
    )
    [row] = await stores.counters.usage("racer", "insights", DAY, DAY)
    assert row.used == 21


async def test_replays_and_reused_keys_create_no_day_row(stores: Stores) -> None:
    """A replay on a later day and a key reused on another service, batched with consumes
    that count, leave no row for the days they do not count on."""
    await add_account(stores)
    claim = IdempotencyClaim("once", "fp", CLAIM_EXPIRES)
    first = await stores.counters.consume("racer", "insights", DAY, 2, TOTAL, claim, NOW)
    later = DAY + timedelta(days=1)
    reused = IdempotencyClaim("once", "other", CLAIM_EXPIRES)
    results = await asyncio.gather(
        *(stores.counters.consume("racer", "insights", DAY, 1, TOTAL) for _ in range(5)),
        stores.counters.consume("racer", "insights", later, 2, TOTAL, claim, NOW),
        stores.counters.consume("racer", "scoring", DAY, 2, TOTAL, reused, NOW),
        *(stores.counters.consume("racer", "insights", DAY, 1, TOTAL) for _ in range(5)),
        return_exceptions=True,
    )
    assert results[5] == first._replace(replayed=True)
    assert isinstance(results[6], Conflict)
    assert await stores.counters.usage("racer", "insights", later, later) == []
    assert await stores.counters.usage("racer", "scoring", DAY, DAY) == []
    [row] = await stores.counters.usage("racer", "insights", DAY, DAY)
    assert row.used == 12


@pytest.mark.parametrize(
    ("account_id", "service", "refusal"),
    [
        # Only PostgreSQL refuses NUL in text; the others store it as any other character.
        pytest.param("racer", "insights\x00", ValidationFailed, id="nul"),
        # The SQL stores' day rows reference their account; the others count any account.
        pytest.param("nobody", "insights", Conflict, id="unknown-account"),
    ],
)
async def test_a_request_the_database_refuses_fails_alone(
    stores: Stores, account_id: str, service: str, refusal: type[Exception]
) -> None:
    """A consume the database cannot store fails without the rest of its batch."""
    await add_account(stores)
    results = await asyncio.gather(
        *(stores.counters.consume("racer", "insights", DAY, 1, TOTAL) for _ in range(10)),
        stores.counters.consume(account_id, service, DAY, 1, TOTAL),
        *(stores.counters.consume("racer", "insights", DAY, 1, TOTAL) for _ in range(10)),
        return_exceptions=True,
    )
    odd = results.pop(10)
    assert isinstance(odd, refusal) or not isinstance(odd, BaseException)
    assert all(not isinstance(r, BaseException) and r.granted for r in results)
    [row] = await stores.counters.usage("racer", "insights", DAY, DAY)
    assert row.used == 20


# The unbatched path, which the benchmark compares against ----------------------------
SHARED = [param for param in STORES if param.values[0] != "memory"]


@pytest.mark.parametrize("kind", SHARED)
async def test_without_batching_concurrent_consumes_never_pass_the_quota(
    kind: str, tmp_path: Path
) -> None:
    """``batch=False`` (one transaction or script call per consume) is exact as well."""
    with store_url(kind, tmp_path) as url:
        if kind == "redis":
            counters = RedisCounters(url, batch=False)
            stores = Stores(counters.records, counters, counters.records, counters.records)
        else:
            stores = Stores.of(SqlStore(url, batch=False))
        await stores.open()
        try:
            await add_account(stores)
            outcomes = await gather_all(
                stores.counters.consume("racer", "insights", DAY, 1, TOTAL) for _ in range(ATTEMPTS)
            )
            assert sorted(o.used for o in outcomes if o.granted) == list(range(1, TOTAL + 1))
            [row] = await stores.counters.usage("racer", "insights", DAY, DAY)
            assert (row.used, row.rejected) == (TOTAL, ATTEMPTS - TOTAL)
        finally:
            await stores.close()


async def test_sqlite_consumes_reach_the_database_file_through_background_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Batched commits leave the log to the checkpointer, which copies them into the file."""
    monkeypatch.setattr(day_batches, "CHECKPOINT_SECONDS", 0.05)
    database = tmp_path / "quotad.db"
    stores = Stores.of(SqlStore(f"sqlite:///{database}"))
    await stores.open()
    try:
        await add_account(stores)
        await gather_all(
            stores.counters.consume("racer", "insights", DAY, 1, TOTAL) for _ in range(20)
        )
        await asyncio.sleep(0.5)
        # The database file alone, without the write-ahead log: what was checkpointed.
        main_file = sqlite3.connect(f"file:{database}?immutable=1", uri=True)
        try:
            [(used,)] = main_file.execute("SELECT used FROM usage_days").fetchall()
        finally:
            main_file.close()
        assert used == 20
    finally:
        await stores.close()


# PostgreSQL: a statement a batch, not a row -------------------------------------------
@pytest.mark.postgresql
async def test_a_postgresql_batch_runs_its_day_row_statements_once_whatever_its_size(
    tmp_path: Path,
) -> None:
    """A batch's day rows (each consume's three slots) are created, locked and written by
    one execution each, the same SQL for a batch of 2 and of 40: never a row at a time."""
    month = Slot("insights.month", "2024-11-01", 10 * TOTAL, HARD, 1)
    hour = Slot("insights.hour", "2024-11-07T12:00Z", 10 * TOTAL, HARD, 1)
    with store_url("postgresql", tmp_path) as url:
        store = SqlStore(url)
        stores = Stores.of(store)
        await stores.open()
        try:
            accounts = [f"acct{n}" for n in range(40)]
            await add_account(stores, accounts[0])
            for account_id in accounts[1:]:
                await create_account(
                    stores,
                    Account(account_id, "", "plan", "UTC", AccountStatus.ACTIVE, Overrides(), NOW),
                )
            sent: list[tuple[str, bool]] = []

            def note(*args: Any) -> None:
                statement, executemany = args[2], args[5]
                if "usage_days" in statement:
                    sent.append((statement, executemany))

            writer = store._db.writer  # the engine consumes write through
            assert writer is not None
            engine = writer.sync_engine
            event.listen(engine, "before_cursor_execute", note)
            try:
                texts = []
                for size in (2, 40):
                    sent.clear()
                    outcomes = await gather_all(
                        stores.counters.consume(a, "insights", DAY, 1, TOTAL, extra=(month, hour))
                        for a in accounts[:size]
                    )
                    assert all(outcome.granted for outcome in outcomes)
                    assert sent
                    assert not any(executemany for _, executemany in sent)
                    texts.append({statement for statement, _ in sent})
            finally:
                event.remove(engine, "before_cursor_execute", note)
            assert texts[0] == texts[1]
            for account_id in accounts[:2]:
                counters = await stores.counters.read_counters(
                    account_id, [("insights", DAY.isoformat()), ("insights.month", "2024-11-01")]
                )
                assert counters == [2, 2]
        finally:
            await stores.close()


@pytest.mark.postgresql
async def test_a_postgresql_batch_whose_day_rows_exist_locks_and_writes_them_only(
    tmp_path: Path,
) -> None:
    """Once its day rows exist, a batch sends two statements on them (lock, then write by
    each row's address), no create; a batch with a new row creates it, and a row deleted
    since is created again: every counter still ends at what was granted."""
    with store_url("postgresql", tmp_path) as url:
        store = SqlStore(url)
        stores = Stores.of(store)
        await stores.open()
        try:
            accounts = ["acct0", "acct1", "acct2"]
            await add_account(stores, accounts[0])
            for account_id in accounts[1:]:
                await create_account(
                    stores,
                    Account(account_id, "", "plan", "UTC", AccountStatus.ACTIVE, Overrides(), NOW),
                )
            sent: list[str] = []

            def note(*args: Any) -> None:
                if "usage_days" in args[2]:
                    sent.append(args[2].split()[0])

            writer = store._db.writer
            assert writer is not None
            event.listen(writer.sync_engine, "before_cursor_execute", note)

            async def consume(*names: str) -> list[str]:
                sent.clear()
                outcomes = await gather_all(
                    stores.counters.consume(name, "insights", DAY, 1, TOTAL) for name in names
                )
                assert all(outcome.granted for outcome in outcomes)
                return list(sent)

            try:
                first = await consume(*accounts[:2])
                assert first == ["SELECT", "INSERT", "SELECT", "UPDATE"]  # lock missed: create
                assert await consume(*accounts[:2]) == ["SELECT", "UPDATE"]
                assert await consume(*accounts) == ["SELECT", "INSERT", "SELECT", "UPDATE"]
                async with store._db.write() as conn:  # acct1's row goes (a purge, say)
                    await conn.execute(
                        usage_days.delete().where(usage_days.c.account_id == accounts[1])
                    )
                await consume(*accounts)
            finally:
                event.remove(writer.sync_engine, "before_cursor_execute", note)
            for account_id, used in zip(accounts, (4, 1, 2), strict=True):
                counters = await stores.counters.read_counters(
                    account_id, [("insights", DAY.isoformat())]
                )
                assert counters == [used]
        finally:
            await stores.close()


@pytest.mark.sqlite
async def test_a_sqlite_batch_writes_the_rows_it_read_by_rowid_and_inserts_new_ones(
    tmp_path: Path,
) -> None:
    """SQLite's writer updates each day row it read by its rowid and inserts only the rows
    that were missing; a batch of both ends with every counter at what was granted."""
    store = SqlStore(f"sqlite:///{tmp_path / 'quotad.db'}")
    stores = Stores.of(store)
    await stores.open()
    try:
        accounts = ["acct0", "acct1"]
        await add_account(stores, accounts[0])
        await create_account(
            stores, Account(accounts[1], "", "plan", "UTC", AccountStatus.ACTIVE, Overrides(), NOW)
        )
        writer = store._consumes.sqlite_writer
        assert writer is not None
        sent: list[str] = []

        def note(statement: str) -> None:
            if statement.startswith("INSERT INTO usage_days"):
                sent.append("insert")
            elif statement.startswith("UPDATE usage_days") and "= usage_days.rowid" in statement:
                sent.append("update by rowid")

        await writer.transaction(lambda connection: connection.set_trace_callback(note))
        await stores.counters.consume(accounts[0], "insights", DAY, 1, TOTAL)
        assert sent == ["insert"]
        sent.clear()
        await gather_all(
            stores.counters.consume(name, "insights", DAY, 1, TOTAL) for name in accounts
        )
        assert sorted(sent) == ["insert", "update by rowid"]
        for account_id, used in zip(accounts, (2, 1), strict=True):
            counters = await stores.counters.read_counters(
                account_id, [("insights", DAY.isoformat())]
            )
            assert counters == [used]
    finally:
        await stores.close()


async def test_a_sqlite_batch_decides_on_the_rows_it_wrote_without_reading_them_again(
    tmp_path: Path,
) -> None:
    """The writer keeps the day rows it wrote: a later batch on the same rows reads none
    of them from the database, and the counters stay exact."""
    store = SqlStore(f"sqlite:///{tmp_path / 'quotad.db'}")
    stores = Stores.of(store)
    await stores.open()
    try:
        await add_account(stores)
        writer = store._consumes.sqlite_writer
        assert writer is not None
        reads: list[str] = []

        def note(statement: str) -> None:
            if "FROM wanted JOIN usage_days" in statement:
                reads.append(statement)

        await writer.transaction(lambda connection: connection.set_trace_callback(note))
        await stores.counters.consume("racer", "insights", DAY, 1, TOTAL)  # inserts the row
        await stores.counters.consume("racer", "insights", DAY, 1, TOTAL)  # reads, writes it
        reads.clear()
        outcomes = [
            await stores.counters.consume("racer", "insights", DAY, 1, TOTAL) for _ in range(5)
        ]
        assert reads == []
        assert [outcome.used for outcome in outcomes] == [3, 4, 5, 6, 7]
    finally:
        await stores.close()


async def test_a_sqlite_day_row_another_connection_changed_is_read_again(
    tmp_path: Path,
) -> None:
    """A day row the writer knows, changed by another connection (an operator's fix, a
    second process): the next consume decides on the row as that connection left it."""
    database = tmp_path / "quotad.db"
    stores = Stores.of(SqlStore(f"sqlite:///{database}"))
    await stores.open()
    try:
        await add_account(stores)
        for _ in range(3):
            await stores.counters.consume("racer", "insights", DAY, 1, TOTAL)
        with sqlite3.connect(database) as other:
            other.execute("UPDATE usage_days SET used = ?", (TOTAL,))
        refused = await stores.counters.consume("racer", "insights", DAY, 1, TOTAL)
        assert not refused.granted
        assert refused.used == TOTAL
        with sqlite3.connect(database) as other:
            other.execute("UPDATE usage_days SET used = 10")
        granted = await stores.counters.consume("racer", "insights", DAY, 1, TOTAL)
        assert granted.granted
        assert granted.used == 11
    finally:
        await stores.close()


async def test_a_sqlite_work_that_fails_after_writing_leaves_no_row_known(
    tmp_path: Path,
) -> None:
    """A consume work that fails after writing its row, alone in its transaction or rolled
    back to its savepoint beside others: the consumes after it, in the same transaction
    or the next, decide on the row as committed."""
    store = SqlStore(f"sqlite:///{tmp_path / 'quotad.db'}")
    stores = Stores.of(store)
    await stores.open()
    try:
        await add_account(stores)
        for _ in range(2):
            await stores.counters.consume("racer", "insights", DAY, 1, TOTAL)
        writer = store._consumes.sqlite_writer
        assert writer is not None
        batch = [day_batches.Consume("racer", "insights", DAY, 5, TOTAL, None, None)]

        def fails_after_writing(connection: sqlite3.Connection) -> None:
            day_batches._decide_and_write(connection, batch, [], writer._known)
            raise sqlite3.IntegrityError("refused after writing")

        with pytest.raises(Conflict):  # alone: the whole transaction rolls back
            await writer.transaction(fails_after_writing)
        assert (await stores.counters.consume("racer", "insights", DAY, 1, TOTAL)).used == 3

        gate = threading.Event()

        def held(connection: sqlite3.Connection) -> None:
            gate.wait(5)  # keeps the thread busy while the others queue

        first = asyncio.ensure_future(writer.transaction(held))
        await asyncio.sleep(0.05)
        failing = asyncio.ensure_future(writer.transaction(fails_after_writing))
        after = asyncio.ensure_future(stores.counters.consume("racer", "insights", DAY, 1, TOTAL))
        await asyncio.sleep(0.05)
        gate.set()
        await first
        with pytest.raises(Conflict):
            await failing
        assert (await after).used == 4
    finally:
        await stores.close()
