"""Every store decides credit slots (SPEC 10) exactly as ``limits.decide`` does: a debit
drawn from grants in slot order, all or nothing with the call's limits, LEDGER slots
moving by each take, CREDIT_TAKE never refusing, give-backs exact."""

from __future__ import annotations

import asyncio
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import redis

from quotad.domain.credits import (
    BACK_PREFIX,
    GRANT_PERIOD,
    Grant,
    counter_name,
    credit_slots,
    give_back_slots,
    takes,
)
from quotad.domain.limits import CREDIT, CREDIT_TAKE, TALLY, Slot, decide
from quotad.domain.models import IdempotencyClaim
from quotad.storage import Stores, stores_from_url
from tests.conftest import RedisProcess
from tests.test_limits_store import add_account

with_cluster = True

DAY = date(2024, 11, 7)
NOON = datetime(2024, 11, 7, 12, tzinfo=UTC)
ISO = DAY.isoformat()


def grants(*amounts: int) -> list[Grant]:
    """Grants of ``amounts`` that draw in the order given: each expires a day after the
    one before it."""
    return [
        Grant(f"g{index}", "acme", amount, NOON - timedelta(days=1), NOON + timedelta(days=index))
        for index, amount in enumerate(amounts, start=1)
    ]


def keys_of(*grant_ids: str) -> list[tuple[str, str]]:
    """Each grant's cumulative debit and its debit on ``DAY``, as counter keys."""
    return [
        key
        for grant_id in grant_ids
        for key in ((counter_name(grant_id), GRANT_PERIOD), (counter_name(grant_id), ISO))
    ]


def taking(slots: tuple[Slot, ...]) -> tuple[Slot, ...]:
    """The same slots as a pool that takes what there is (CREDIT_TAKE)."""
    return tuple(slot._replace(mode=CREDIT_TAKE) if slot.mode == CREDIT else slot for slot in slots)


async def debit(
    stores: Stores,
    amount: int,
    pool: list[Grant],
    *,
    day_total: int = 1000,
    take: bool = False,
    claim: IdempotencyClaim | None = None,
) -> tuple[bool, int, tuple[int, ...], tuple[Slot, ...]]:
    """One call of cost 1 debiting ``amount``: (granted, refused, before, slots)."""
    extra = credit_slots(pool, amount, DAY, NOON)
    if take:
        extra = taking(extra)
    outcome = await stores.counters.consume(
        "acme", "insights", DAY, 1, day_total, claim, NOON, extra=extra
    )
    slots = (Slot("insights", ISO, day_total, 0, 1), *extra)
    return outcome.granted, outcome.refused, outcome.before, slots


async def test_a_debit_draws_grants_in_order_and_on_into_the_next(stores: Stores) -> None:
    """Debits of 3 then 4 against grants of 5 and 10: the first grant gives 3, then its last
    2 and the second 2; each day's LEDGER counter records each take."""
    await add_account(stores)
    pool = grants(5, 10)
    first = await debit(stores, 3, pool)
    second = await debit(stores, 4, pool)
    assert (first[0], second[0]) == (True, True)
    assert takes(second[3], second[2], decide(second[2], second[3], 0)[1]) == {"g1": 2, "g2": 2}
    counters = await stores.counters.read_counters(
        "acme", [("insights", ISO), *keys_of("g1", "g2")]
    )
    assert counters == [2, 5, 5, 2, 2]


async def test_a_pool_that_cannot_pay_refuses_and_nothing_moves(stores: Stores) -> None:
    """A debit of 9 against 3 + 5 left is refused at the first CREDIT slot: no counter
    moves (day row, credit slots, a window) and the day row counts one rejection."""
    await add_account(stores)
    pool = grants(3, 5)
    month = Slot("insights.month", "2024-11-01", 100, 0, 1)
    extra = (month, *credit_slots(pool, 9, DAY, NOON))
    outcome = await stores.counters.consume("acme", "insights", DAY, 1, 10, now=NOON, extra=extra)
    assert (outcome.granted, outcome.refused) == (False, 2)
    keys = [("insights", ISO), ("insights.month", "2024-11-01"), *keys_of("g1", "g2")]
    assert await stores.counters.read_counters("acme", keys) == [0] * 6
    [row] = await stores.counters.usage("acme", "insights", DAY, DAY)
    assert (row.used, row.rejected) == (0, 1)


async def test_an_exact_debit_empties_the_pool_then_refuses(stores: Stores) -> None:
    """A debit of exactly what is left passes; the next, of 1, is refused."""
    await add_account(stores)
    pool = grants(3, 5)
    assert (await debit(stores, 8, pool))[0]
    granted, refused, before, _ = await debit(stores, 1, pool)
    assert (granted, refused, before) == (False, 1, (1, 3, 3, 5, 5))


async def test_a_hard_limit_refusing_before_the_pool_moves_nothing(stores: Stores) -> None:
    """A day row of total 0 refuses first (index 0), though the pool could pay: nothing
    moves, one rejection is counted."""
    await add_account(stores)
    granted, refused, _, _ = await debit(stores, 2, grants(5), day_total=0)
    assert (granted, refused) == (False, 0)
    assert await stores.counters.read_counters("acme", keys_of("g1")) == [0, 0]
    [row] = await stores.counters.usage("acme", "insights", DAY, DAY)
    assert (row.used, row.rejected) == (0, 1)


async def test_no_live_grant_refuses(stores: Stores) -> None:
    """Without a live grant the pool is one CREDIT slot of total 0: it refuses."""
    await add_account(stores)
    granted, refused, _, slots = await debit(stores, 1, [])
    assert (granted, refused, slots[1].mode) == (False, 1, CREDIT)


async def test_credit_take_takes_what_there_is_and_never_refuses(stores: Stores) -> None:
    """A CREDIT_TAKE pool owing 20 against 3 + 5 takes all 8 and passes; a second passes
    with nothing to take."""
    await add_account(stores)
    pool = grants(3, 5)
    first = await debit(stores, 20, pool, take=True)
    second = await debit(stores, 20, pool, take=True)
    assert (first[0], first[1], second[0]) == (True, -1, True)
    counters = await stores.counters.read_counters(
        "acme", [("insights", ISO), *keys_of("g1", "g2")]
    )
    assert counters == [2, 3, 3, 5, 5]


async def test_negative_tally_slots_give_back_exactly(stores: Stores) -> None:
    """Giving back 4 of a grant's 6 debited moves its cumulative debit down by 4 and its
    ``back:<day>`` counter up by 4; the next debit draws from it again."""
    await add_account(stores)
    pool = grants(6, 10)
    assert (await debit(stores, 6, pool))[0]
    back = give_back_slots({"g1": 4}, DAY)
    outcome = await stores.counters.consume(
        "acme", "insights", DAY, 0, 1000, now=NOON, extra=back, day_mode=TALLY
    )
    assert (outcome.granted, outcome.before) == (True, (1, 6, 0))
    back_key = (counter_name("g1"), f"{BACK_PREFIX}{ISO}")
    assert await stores.counters.read_counters("acme", [*keys_of("g1"), back_key]) == [2, 6, 4]
    assert (await debit(stores, 5, pool))[0]
    counters = await stores.counters.read_counters("acme", keys_of("g1", "g2"))
    assert counters == [6, 10, 1, 1]


async def test_a_replayed_credit_consume_changes_nothing(stores: Stores) -> None:
    """A second consume under the same Idempotency-Key replays the first answer and moves
    no credit counter; a refused one replays its refusal."""
    await add_account(stores)
    pool = grants(5)
    expires = NOON + timedelta(hours=1)
    claim = IdempotencyClaim("k1", "fp1", expires)
    first = await debit(stores, 4, pool, claim=claim)
    again = await debit(stores, 4, pool, claim=claim)
    assert (first[0], again[0]) == (True, True)
    assert await stores.counters.read_counters("acme", keys_of("g1")) == [4, 4]
    refused_claim = IdempotencyClaim("k2", "fp2", expires)
    refused = await debit(stores, 4, pool, claim=refused_claim)
    replayed = await debit(stores, 4, pool, claim=refused_claim)
    assert (refused[0], replayed[0]) == (False, False)
    assert await stores.counters.read_counters("acme", keys_of("g1")) == [4, 4]
    [row] = await stores.counters.usage("acme", "insights", DAY, DAY)
    assert (row.used, row.rejected) == (1, 1)


@pytest.mark.slow
@pytest.mark.redis
async def test_credit_counters_survive_a_lost_redis(tmp_path: Path) -> None:
    """After FLUSHALL, credit counters are rebuilt from SQL (the account's marker is gone):
    the balance stands as it was and the next debit draws from what is left."""
    server = RedisProcess(tmp_path / "redis")
    server.start()
    try:
        url = (
            f"redis://127.0.0.1:{server.port}/0?prefix=c"
            f"&records=sqlite:///{tmp_path / 'records.db'}"
        )
        stores = stores_from_url(url)
        await stores.open()
        try:
            await add_account(stores)
            pool = grants(5, 10)
            assert (await debit(stores, 7, pool))[0]
            keys = [("insights", ISO), *keys_of("g1", "g2")]
            assert await stores.counters.read_counters("acme", keys) == [1, 5, 5, 2, 2]
            client = redis.Redis(host="127.0.0.1", port=server.port)
            try:
                client.flushall()
            finally:
                client.close()
            granted, _, before, _ = await debit(stores, 9, pool)
            assert (granted, before) == (False, (1, 5, 5, 2, 2))
            assert (await debit(stores, 8, pool))[0]
            assert await stores.counters.read_counters("acme", keys) == [2, 5, 5, 10, 10]
        finally:
            await stores.close()
    finally:
        server.kill()


async def test_an_abandoned_credit_grant_gives_back_its_takes(
    stores: Stores, store_kind: str
) -> None:
    """Consumes cancelled while the store decides them are given back by what each slot
    moved (a grant's take, its LEDGER's), not by their cost: every counter ends where the
    answered consumes alone put it, in the live counters and in SQL."""
    await add_account(stores)
    pool = grants(50, 1000)
    answered = 0
    for attempt in range(40):
        task = asyncio.create_task(debit(stores, 7, pool))
        for _ in range(attempt % 4):  # into the batch, its call sent (or not)
            await asyncio.sleep(0)
        task.cancel()
        [result] = await asyncio.gather(task, return_exceptions=True)
        if not isinstance(result, BaseException):
            assert result[0]
            answered += 7
    first = min(answered, 50)
    expected = [first, first, answered - first, answered - first]
    keys = keys_of("g1", "g2")
    # The last cancelled call's batch may still be committing, and its give-back follows:
    # the counters must settle on the expected values and stay there (a read between the
    # commit and the give-back saw them right only by passing through them).
    steady = 0
    for _ in range(400):
        steady = steady + 1 if await stores.counters.read_counters("acme", keys) == expected else 0
        if steady >= 25:
            break
        await asyncio.sleep(0.02)
    assert await stores.counters.read_counters("acme", keys) == expected
    if store_kind.startswith("redis"):
        await stores.counters.flush()  # type: ignore[attr-defined]
        rows = await stores.counters.records.counter_rows("acme", keys)  # type: ignore[attr-defined]
        assert [rows.get(key, (0,))[0] for key in keys] == expected


async def test_a_negative_cost_alone_gives_back(stores: Stores) -> None:
    """A consume of cost -2 without other slots takes 2 off the day row, on every store
    (Redis's version-1 line reads unsigned costs only: it goes as a v2 line)."""
    await add_account(stores)
    await stores.counters.consume("acme", "insights", DAY, 5, 10, now=NOON)
    outcome = await stores.counters.consume("acme", "insights", DAY, -2, 10, now=NOON)
    assert (outcome.granted, outcome.used) == (True, 3)
    assert await stores.counters.read_counters("acme", [("insights", ISO)]) == [3]


async def test_grants_near_the_largest_amount_stay_exact(stores: Stores) -> None:
    """Grants of 10^15 micro-credits (a billion credits) are drawn from to the unit: a
    debit of all but one, then 2 across into the next, then a refusal of 10^15."""
    await add_account(stores)
    big = 10**15
    pool = grants(big, big)
    assert (await debit(stores, big - 1, pool))[0]
    assert (await debit(stores, 2, pool))[0]
    granted, _, before, _ = await debit(stores, big, pool)
    assert (granted, before) == (False, (2, big, big, 1, 1))
    assert await stores.counters.read_counters("acme", keys_of("g1", "g2")) == [big, big, 1, 1]
