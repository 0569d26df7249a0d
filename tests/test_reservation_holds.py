"""A reservation made in its verify's own consume (SPEC 10, ``Hold``): where the store keeps
reservations with its counters (SQL, memory) both are committed or neither; Redis, which
keeps them in the records' SQL, makes none and leaves the reserve to write it after."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event

from quotad.domain.credits import Hold, ReservationStatus
from quotad.domain.limits import HARD, Slot
from quotad.domain.models import IdempotencyClaim
from quotad.storage import Stores
from quotad.storage.sql import SqlStore
from tests.conftest import store_url
from tests.test_limits_store import add_account

DAY = date(2024, 11, 7)
NOON = datetime(2024, 11, 7, 12, tzinfo=UTC)
ISO = DAY.isoformat()
DAY_ROW = [("insights", ISO)]


def hold(n: int, cost: int = 3) -> Hold:
    """A reservation of ``cost`` insights units to make, due in five minutes."""
    return Hold(f"rsv_hold{n}", (("insights", cost),), NOON, NOON + timedelta(minutes=5))


def keeps_holds(store_kind: str) -> bool:
    """Whether the store makes a hold's reservation in its consume (not Redis)."""
    return not store_kind.startswith("redis")


async def test_a_granted_consume_stores_its_holds_reservation_with_it(
    stores: Stores, store_kind: str
) -> None:
    """A grant with a hold stores the pending reservation of what it moved (not on Redis)."""
    await add_account(stores)
    asked = hold(1)
    outcome = await stores.counters.consume("acme", "insights", DAY, 3, 10, now=NOON, hold=asked)
    assert (outcome.granted, outcome.used) == (True, 3)
    stored = await stores.credits.get_reservation(asked.id)
    if not keeps_holds(store_kind):
        assert asked.made is None
        assert stored is None
        return
    assert asked.made is not None
    assert stored == asked.made
    assert stored.status is ReservationStatus.PENDING
    assert stored.moved == (Slot("insights", ISO, 10, HARD, 3),)
    assert (stored.account_id, stored.day, stored.reserved) == ("acme", DAY, 3)


async def test_a_refused_or_replayed_consume_makes_no_reservation(stores: Stores) -> None:
    """A refusal, and a replay of an Idempotency-Key's answer, store no reservation."""
    await add_account(stores)
    refused = hold(1, cost=11)
    outcome = await stores.counters.consume("acme", "insights", DAY, 11, 10, now=NOON, hold=refused)
    assert not outcome.granted
    claim = IdempotencyClaim("job-1", "print", NOON + timedelta(days=1))
    first, again = hold(2), hold(3)
    await stores.counters.consume("acme", "insights", DAY, 3, 10, claim, NOON, hold=first)
    replay = await stores.counters.consume("acme", "insights", DAY, 3, 10, claim, NOON, hold=again)
    assert replay.replayed
    assert refused.made is None
    assert again.made is None
    assert await stores.credits.get_reservation(refused.id) is None
    assert await stores.credits.get_reservation(again.id) is None
    assert await stores.counters.read_counters("acme", DAY_ROW) == [3]


async def test_an_abandoned_held_grant_is_cancelled_and_given_back_once(
    stores: Stores, store_kind: str
) -> None:
    """Consumes with holds cancelled while the store decides them: each grant nobody heard
    of is given back and its reservation cancelled, so no expiry gives it back again."""
    await add_account(stores)
    answered = 0
    asked = []
    for attempt in range(40):
        made = hold(attempt)
        asked.append(made)
        call = stores.counters.consume("acme", "insights", DAY, 3, 1000, now=NOON, hold=made)
        task = asyncio.create_task(call)
        for _ in range(attempt % 4):  # into the batch, its call sent (or not)
            await asyncio.sleep(0)
        task.cancel()
        [result] = await asyncio.gather(task, return_exceptions=True)
        if not isinstance(result, BaseException):
            assert result.granted
            answered += 3
    steady = 0
    for _ in range(400):  # the last give-back may still be under way
        steady = (
            steady + 1 if await stores.counters.read_counters("acme", DAY_ROW) == [answered] else 0
        )
        if steady >= 25:
            break
        await asyncio.sleep(0.02)
    assert await stores.counters.read_counters("acme", DAY_ROW) == [answered]
    pending = 0
    for made in asked:
        stored = await stores.credits.get_reservation(made.id)
        if stored is not None and stored.status is ReservationStatus.PENDING:
            pending += 3
        elif stored is not None:
            assert stored.status is ReservationStatus.CANCELLED
    # Each held unit is the pending reservation of an answer (Redis made none).
    assert pending == (answered if keeps_holds(store_kind) else 0)


async def test_postgresql_inserts_a_holds_reservation_in_its_consumes_transaction(
    tmp_path: Path,
) -> None:
    """On PostgreSQL the consume's day row and its hold's reservation are written in one
    transaction: there is no moment one is committed without the other."""
    with store_url("postgresql", tmp_path) as url:
        store = SqlStore(url)
        stores = Stores.of(store)
        await stores.open()
        try:
            await add_account(stores)
            writer = store._db.writer  # the engine consumes write through
            assert writer is not None
            engine = writer.sync_engine
            transactions = [0]
            written: list[tuple[int, str]] = []

            def began(*_: Any) -> None:
                transactions[0] += 1

            def note(*args: Any) -> None:
                statement = args[2]
                for table in ("usage_days", "reservations"):
                    if statement.lstrip().upper().startswith("INSERT") and table in statement:
                        written.append((transactions[0], table))

            event.listen(engine, "begin", began)
            event.listen(engine, "before_cursor_execute", note)
            try:
                asked = hold(1)
                await stores.counters.consume("acme", "insights", DAY, 3, 10, now=NOON, hold=asked)
            finally:
                event.remove(engine, "before_cursor_execute", note)
                event.remove(engine, "begin", began)
            assert asked.made is not None
            tables = {table for _, table in written}
            assert tables == {"usage_days", "reservations"}, written
            assert len({number for number, _ in written}) == 1, written
        finally:
            await stores.close()
