"""Totals and uses up to the contract's largest (10^15) are kept exactly by every store."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from quotad.domain.models import IdempotencyClaim
from quotad.storage import Stores
from tests.test_race import DAY, add_account

BIG = 10**15  # the largest total the operator API accepts
NOW = datetime(2024, 11, 7, 12, tzinfo=UTC)


async def test_a_consume_near_the_largest_total_is_exact(stores: Stores) -> None:
    """Consuming up to a total of 10^15 counts every unit and refuses the one past it."""
    await add_account(stores)
    first = await stores.counters.consume("racer", "insights", DAY, BIG - 10**9, BIG)
    second = await stores.counters.consume("racer", "insights", DAY, 10**9 - 1, BIG)
    last = await stores.counters.consume("racer", "insights", DAY, 1, BIG)
    past = await stores.counters.consume("racer", "insights", DAY, 1, BIG)
    assert (first.used, second.used, last.used) == (BIG - 10**9, BIG - 1, BIG)
    assert (past.granted, past.used, past.total) == (False, BIG, BIG)
    [row] = await stores.counters.usage("racer", "insights", DAY, DAY)
    assert (row.used, row.total, row.rejected) == (BIG, BIG, 1)


async def test_a_replayed_answer_near_the_largest_total_is_exact(stores: Stores) -> None:
    """An Idempotency-Key replays a used value near 10^15 digit for digit."""
    await add_account(stores)
    claim = IdempotencyClaim("big", "fp", NOW + timedelta(days=1))
    granted = await stores.counters.consume("racer", "insights", DAY, BIG - 3, BIG, claim, NOW)
    replayed = await stores.counters.consume("racer", "insights", DAY, BIG - 3, BIG, claim, NOW)
    assert (replayed.replayed, replayed.used, replayed.total) == (True, BIG - 3, BIG)
    assert granted.used == replayed.used


async def test_an_adjustment_near_the_largest_total_is_exact(stores: Stores) -> None:
    """Adjusting a use near 10^15 up and down keeps every unit."""
    await add_account(stores)
    await stores.counters.consume("racer", "insights", DAY, BIG - 5, BIG)
    up = await stores.counters.adjust("racer", "insights", DAY, 3, BIG)
    down = await stores.counters.adjust("racer", "insights", DAY, -1, BIG)
    assert (up.used, down.used) == (BIG - 2, BIG - 3)
    after = await stores.counters.consume("racer", "insights", DAY, 3, BIG)
    assert (after.granted, after.used) == (True, BIG)
