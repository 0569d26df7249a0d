"""Every store decides a Limits v2 consume (SPEC 9) the same way: all of its slots together,
all or nothing, through ``limits.refusing`` and ``limits.advanced``."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest

from quotad.domain.dump import DumpItem, WindowCounter
from quotad.domain.limits import HARD, SHADOW, SOFT, Slot, interval_us
from quotad.domain.models import (
    Account,
    AccountStatus,
    ConsumeOutcome,
    IdempotencyClaim,
    Overrides,
    Plan,
    Quota,
    Service,
    UsageDay,
    UsageEvent,
)
from quotad.storage import Stores, stores_from_url
from quotad.storage.sql import SqlStore
from quotad.storage.write_behind import Changes, DayDelta
from tests.conftest import STORES, create_account, store_url

DAY = date(2024, 11, 7)
NOON = datetime(2024, 11, 7, 12, tzinfo=UTC)
MONTH = ("insights.month", "2024-11-01")
HOUR = ("insights.hour", "2024-11-07T12:00Z")
RATE = ("insights.rate", "rate")
SQL_STORES = [param for param in STORES if param.values[0] in ("sqlite", "postgresql")]


async def add_account(stores: Stores, account_id: str = "acme") -> None:
    """Service insights, a plan with a daily quota for it, one account on that plan."""
    await stores.records.create_service(Service("insights", "", NOON))
    await stores.records.create_plan(Plan("plan", {"insights": Quota.daily(1000)}, (), NOON))
    await create_account(
        stores, Account(account_id, "Acme", "plan", "UTC", AccountStatus.ACTIVE, Overrides(), NOON)
    )


def window(key: tuple[str, str], total: int, cost: int, mode: int = HARD) -> Slot:
    """A window quota's slot."""
    return Slot(key[0], key[1], total, mode, cost)


def rate(burst: int, per_second: float, cost: int = 1) -> Slot:
    """A rate's slot."""
    return Slot(*RATE, burst, HARD, cost, interval_us(per_second))


def day_key(service: str = "insights") -> tuple[str, str]:
    """The account's day row of ``service`` as a counter key."""
    return (service, DAY.isoformat())


async def test_a_granted_consume_moves_every_counter(stores: Stores) -> None:
    """A consume with three window slots that all have room moves all three by its cost."""
    await add_account(stores)
    extra = (window(MONTH, 100, 2), window(HOUR, 5, 2))
    outcome = await stores.counters.consume("acme", "insights", DAY, 2, 10, now=NOON, extra=extra)
    assert (outcome.granted, outcome.used, outcome.total) == (True, 2, 10)
    assert (outcome.before, outcome.refused) == ((0, 0, 0), -1)
    counters = await stores.counters.read_counters("acme", [day_key(), MONTH, HOUR])
    assert counters == [2, 2, 2]


async def test_a_refusing_slot_moves_none_and_counts_one_rejection(stores: Stores) -> None:
    """When the third of three slots has no room, no counter moves and the day row counts
    one rejection."""
    await add_account(stores)
    extra = (window(MONTH, 100, 2), window(HOUR, 3, 2))
    first = await stores.counters.consume("acme", "insights", DAY, 2, 10, now=NOON, extra=extra)
    second = await stores.counters.consume("acme", "insights", DAY, 2, 10, now=NOON, extra=extra)
    assert first.granted
    assert (second.granted, second.refused, second.before) == (False, 2, (2, 2, 2))
    assert second.used == 2
    assert await stores.counters.read_counters("acme", [day_key(), MONTH, HOUR]) == [2, 2, 2]
    [row] = await stores.counters.usage("acme", "insights", DAY, DAY)
    assert (row.used, row.total, row.rejected) == (2, 10, 1)


async def test_soft_and_shadow_slots_never_refuse_and_go_past(stores: Stores) -> None:
    """A soft day row and a shadow window of total 1 grant three consumes and count 3."""
    await add_account(stores)
    extra = (window(MONTH, 1, 1, SHADOW),)
    outcomes = [
        await stores.counters.consume(
            "acme", "insights", DAY, 1, 1, now=NOON, extra=extra, day_mode=SOFT
        )
        for _ in range(3)
    ]
    assert [o.granted for o in outcomes] == [True, True, True]
    assert [o.before for o in outcomes] == [(0, 0), (1, 1), (2, 2)]
    assert await stores.counters.read_counters("acme", [day_key(), MONTH]) == [3, 3]


async def test_a_rate_grants_its_burst_refuses_then_refills(
    stores: Stores, store_kind: str
) -> None:
    """A rate of 1/s with a burst of 2 grants two calls at once, refuses the third, and
    grants again a second later; its refusal moves no counter.

    Redis decides rates on its own clock (one clock for every node), the other stores on
    the caller's: there the second passes for real.
    """
    await add_account(stores)
    extra = (rate(2, 1.0),)
    consume = stores.counters.consume
    burst = [await consume("acme", "insights", DAY, 1, 100, now=NOON, extra=extra) for _ in "ab"]
    refused = await consume("acme", "insights", DAY, 1, 100, now=NOON, extra=extra)
    if store_kind.startswith("redis"):
        await asyncio.sleep(1.05)
    later = NOON + timedelta(seconds=1)
    refilled = await consume("acme", "insights", DAY, 1, 100, now=later, extra=extra)
    start_us = burst[0].at_us  # the store's clock at the first call
    if not store_kind.startswith("redis"):
        assert start_us == refused.at_us == int(NOON.timestamp() * 1_000_000)
    assert [o.granted for o in burst] == [True, True]
    assert (refused.granted, refused.refused) == (False, 1)
    assert refused.before == (2, start_us + 2_000_000)  # the bucket's arrival time, in µs
    assert refilled.granted
    counters = await stores.counters.read_counters("acme", [day_key(), RATE])
    assert counters == [3, start_us + 3_000_000]


async def test_per_key_counters_are_independent(stores: Stores) -> None:
    """Two keys' counters of one per-key limit are kept apart: one key's use does not
    refuse the other's."""
    await add_account(stores)
    mine, theirs = (
        ("insights.day.key:k1", DAY.isoformat()),
        ("insights.day.key:k2", DAY.isoformat()),
    )
    consume = stores.counters.consume
    first = await consume("acme", "insights", DAY, 1, 100, now=NOON, extra=(window(mine, 1, 1),))
    again = await consume("acme", "insights", DAY, 1, 100, now=NOON, extra=(window(mine, 1, 1),))
    other = await consume("acme", "insights", DAY, 1, 100, now=NOON, extra=(window(theirs, 1, 1),))
    assert (first.granted, again.granted, other.granted) == (True, False, True)
    assert await stores.counters.read_counters("acme", [mine, theirs, day_key()]) == [1, 1, 2]


async def test_adjust_moves_the_window_counters_and_leaves_rates(stores: Stores) -> None:
    """A refund through ``adjust`` takes its delta off the day row and every window slot,
    floored at zero, and leaves a rate's bucket alone."""
    await add_account(stores)
    extra = (window(MONTH, 100, 3), rate(10, 1.0, 3))
    await stores.counters.consume("acme", "insights", DAY, 3, 100, now=NOON, extra=extra)
    [bucket] = await stores.counters.read_counters("acme", [RATE])
    day = await stores.counters.adjust("acme", "insights", DAY, -5, 100, extra=extra)
    assert day.used == 0
    counters = await stores.counters.read_counters("acme", [day_key(), MONTH, RATE])
    assert counters == [0, 0, bucket]
    await stores.counters.adjust("acme", "insights", DAY, 2, 100, extra=extra)
    assert await stores.counters.read_counters("acme", [MONTH]) == [2]


async def test_a_consume_after_an_import_counts_on_the_imported_day(stores: Stores) -> None:
    """A day replaced by an import (``put_usage_days``) is the one the next consume of the
    same slots counts on, however many consumes of them came before."""
    await add_account(stores)
    extra = (window(MONTH, 100, 1),)
    for _ in range(2):
        await stores.counters.consume("acme", "insights", DAY, 1, 10, now=NOON, extra=extra)
    await stores.counters.put_usage_days("acme", [("insights", UsageDay(DAY, 7, 10, 3))])
    outcome = await stores.counters.consume("acme", "insights", DAY, 1, 10, now=NOON, extra=extra)
    assert (outcome.granted, outcome.before, outcome.used) == (True, (7, 2), 8)
    refused = await stores.counters.consume(
        "acme", "insights", DAY, 3, 10, now=NOON, extra=(window(MONTH, 100, 3),)
    )
    assert (refused.granted, refused.before) == (False, (8, 3))
    [day] = await stores.counters.usage("acme", "insights", DAY, DAY)
    assert (day.used, day.rejected) == (8, 4)


async def test_an_event_counts_in_its_windows(stores: Stores) -> None:
    """A recorded event moves its day row and each of its window counters by its amount,
    once."""
    await add_account(stores)
    event = UsageEvent("ev-1", "acme", "insights", 4, DAY, 1000, NOON, windows=(MONTH, HOUR))
    first = await stores.counters.record_events([event])
    again = await stores.counters.record_events([event])
    assert (first.accepted, again.accepted) == (1, 0)
    assert await stores.counters.read_counters("acme", [day_key(), MONTH, HOUR]) == [4, 4, 4]


async def test_read_counters_answers_zero_for_absent_counters(stores: Stores) -> None:
    """Counters never written read 0, in the order asked, beside stored ones."""
    await add_account(stores)
    await stores.counters.consume(
        "acme", "insights", DAY, 1, 9, now=NOON, extra=(window(HOUR, 5, 1),)
    )
    keys = [MONTH, HOUR, ("insights", "2024-11-08"), day_key(), RATE]
    assert await stores.counters.read_counters("acme", keys) == [0, 1, 0, 1, 0]
    assert await stores.counters.read_counters("acme", []) == []


async def test_an_idempotent_replay_moves_no_slot(stores: Stores) -> None:
    """A multi-slot consume retried with its Idempotency-Key answers the first outcome,
    marked replayed, without ``before``, and moves nothing again."""
    await add_account(stores)
    claim = IdempotencyClaim("retry-1", "f" * 64, NOON + timedelta(days=1))
    extra = (window(MONTH, 100, 2),)
    consume = stores.counters.consume
    first = await consume("acme", "insights", DAY, 2, 10, claim=claim, now=NOON, extra=extra)
    replay = await consume("acme", "insights", DAY, 2, 10, claim=claim, now=NOON, extra=extra)
    assert (first.granted, first.replayed, first.before) == (True, False, (0, 0))
    assert (replay.granted, replay.replayed, replay.before) == (True, True, ())
    assert (replay.used, replay.total, replay.day) == (2, 10, DAY)
    assert await stores.counters.read_counters("acme", [day_key(), MONTH]) == [2, 2]


async def test_dump_and_restore_carry_window_counters(
    stores: Stores, store_kind: str, tmp_path: Path
) -> None:
    """A dump lists other limits' counters as WindowCounter items (day rows stay usage),
    and a restore into an empty store of the same kind writes them back."""
    await add_account(stores)
    extra = (window(MONTH, 100, 2), rate(5, 1.0))
    await stores.counters.consume("acme", "insights", DAY, 2, 10, now=NOON, extra=extra)
    items = [item async for item in stores.counters.dump()]
    counters = [item for item in items if isinstance(item, WindowCounter)]
    noon_us = int(NOON.timestamp() * 1_000_000)
    month = WindowCounter("acme", "insights.month", "2024-11-01", 2, 100)
    # Redis keeps rate buckets in Redis only (a lost or moved bucket starts full).
    bucket = WindowCounter("acme", "insights.rate", "rate", noon_us + 1_000_000, 5)
    redis = store_kind.startswith("redis")
    assert counters == ([month] if redis else [month, bucket])
    restored_path = tmp_path / "restored"
    restored_path.mkdir()
    with store_url(store_kind, restored_path) as url:
        restored = stores_from_url(url)
        await restored.open()
        try:

            async def replay() -> AsyncIterator[DumpItem]:
                for item in items:
                    yield item

            await restored.counters.restore(replay())
            assert [item async for item in restored.counters.dump()] == items
            read = await restored.counters.read_counters("acme", [MONTH, RATE, day_key()])
            assert read == [2, 0 if redis else noon_us + 1_000_000, 2]
        finally:
            await restored.close()


async def test_concurrent_multi_slot_consumes_never_pass_any_total(stores: Stores) -> None:
    """200 concurrent consumes, half with three slots and half version 1, never pass any
    total, and every counter equals what was granted against it."""
    await add_account(stores)
    extra = (window(MONTH, 50, 1), window(HOUR, 70, 1))

    async def call(index: int) -> ConsumeOutcome:
        if index % 2:
            return await stores.counters.consume(
                "acme", "insights", DAY, 1, 80, now=NOON, extra=extra
            )
        return await stores.counters.consume("acme", "insights", DAY, 1, 80)

    # Every call finishes before a failure is raised (none left running into teardown).
    results = await asyncio.gather(*(call(index) for index in range(200)), return_exceptions=True)
    failures = [result for result in results if isinstance(result, BaseException)]
    if failures:
        raise failures[0]
    outcomes = [result for result in results if not isinstance(result, BaseException)]
    multi = [o for i, o in enumerate(outcomes) if i % 2 and o.granted]
    single = [o for i, o in enumerate(outcomes) if not i % 2 and o.granted]
    assert len(multi) <= 50
    assert len(multi) + len(single) == 80  # the day's total binds: 200 calls want it
    counters = await stores.counters.read_counters("acme", [day_key(), MONTH, HOUR])
    assert counters == [80, len(multi), len(multi)]
    [row] = await stores.counters.usage("acme", "insights", DAY, DAY)
    assert row.rejected == 120


@pytest.mark.parametrize("kind", SQL_STORES)
async def test_write_behind_keeps_window_counters(kind: str, tmp_path: Path) -> None:
    """A counter node's flush (Redis's write-behind) of a minute window's and a per-key
    counter lands in the SQL store's widened rows, which ``counter_rows`` reads back."""
    with store_url(kind, tmp_path) as url:
        stores = stores_from_url(url)
        await stores.open()
        try:
            await add_account(stores)
            sql = stores.counters
            assert isinstance(sql, SqlStore)
            minute = ("insights.minute.key:key_" + "x" * 60, "2024-11-07T12:00Z")
            changes = Changes(
                {
                    ("acme", *minute): DayDelta(3, 0, 10),
                    ("acme", *MONTH): DayDelta(3, 0, 100),
                    ("acme", *day_key()): DayDelta(3, 1, 50),
                }
            )
            await sql.apply_counter_changes("node-1", 1, changes, NOON)
            rows = await sql.counter_rows("acme", [minute, MONTH, day_key(), HOUR])
            assert rows == {minute: (3, 10, 0), MONTH: (3, 100, 0), day_key(): (3, 50, 1)}
            assert await sql.read_counters("acme", [minute, HOUR]) == [3, 0]
            # The version-1 views see only the day row.
            exported = [row async for row in sql.export_usage()]
            assert [(a, s) for a, s, _ in exported] == [("acme", "insights")]
        finally:
            await stores.close()
