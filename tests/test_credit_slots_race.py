"""Credit slots under a race: 600 concurrent debits from three store instances over one
deployment never take a grant past its amount, and the grants' counters hold exactly
the debits that were granted.

1,000 credits (in micro-credits: amounts are whole numbers either way) are split over
four grants of different amounts; each call debits a random 1..5 through the four
grants' CREDIT and LEDGER slots. Three ``stores_from_url`` opens of one SQLite file,
PostgreSQL schema or Redis namespace decide them (the memory store is one instance).
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack

import pytest

from quotad.domain.credits import GRANT_PERIOD, counter_name, credit_slots
from quotad.storage import Stores, stores_from_url
from tests.test_credit_slots import DAY, ISO, NOON, grants
from tests.test_limits_store import add_account

with_cluster = True

CALLS = 600
AMOUNTS = (130, 400, 70, 400)  # 1,000 credits
POOL = grants(*AMOUNTS)


@pytest.fixture
async def three(stores: Stores) -> AsyncIterator[list[Stores]]:
    """Three instances over the test's deployment (memory: the one)."""
    async with AsyncExitStack() as stack:
        nodes = [stores]
        for _ in range(2):
            if stores.url.startswith("memory"):
                nodes.append(stores)
                continue
            node = stores_from_url(stores.url)
            await node.open()
            stack.push_async_callback(node.close)
            nodes.append(node)
        yield nodes


async def test_600_debits_over_three_instances_take_exactly_what_was_granted(
    stores: Stores, three: list[Stores], store_kind: str
) -> None:
    """The grants' counters sum to the granted debits, none passes its amount, each LEDGER
    counter equals its grant's, grants fill in draw order, the day row counts the granted
    calls, and a refused debit could not have fit once the pool was drained that far."""
    await add_account(stores)
    rng = random.Random(15)
    costs = [rng.randint(1, 5) for _ in range(CALLS)]

    async def one(n: int) -> tuple[bool, int]:
        node = three[n % 3]
        extra = credit_slots(POOL, costs[n], DAY, NOON)
        outcome = await node.counters.consume(
            "acme", "insights", DAY, 1, 10**6, now=NOON, extra=extra
        )
        assert outcome.refused in (-1, 1)  # only the pool's first slot ever refuses
        return outcome.granted, costs[n]

    results = await asyncio.gather(*(one(n) for n in range(CALLS)))
    granted = [cost for ok, cost in results if ok]
    refused = [cost for ok, cost in results if not ok]
    debited = sum(granted)
    keys = [(counter_name(g.id), period) for g in POOL for period in (GRANT_PERIOD, ISO)]
    values = await stores.counters.read_counters("acme", [("insights", ISO), *keys])
    takes, ledgers = values[1::2], values[2::2]
    assert values[0] == len(granted)
    assert sum(takes) == debited <= sum(AMOUNTS)
    assert takes == ledgers
    assert all(take <= amount for take, amount in zip(takes, AMOUNTS, strict=True))
    for index, take in enumerate(takes):  # a later grant drawn only once earlier ones are dry
        if take:
            assert takes[:index] == list(AMOUNTS[:index])
    if refused:
        assert debited + min(refused) > sum(AMOUNTS)
    if store_kind.startswith("redis"):
        for node in three:
            await node.counters.flush()  # type: ignore[attr-defined]
        rows = await stores.counters.records.counter_rows("acme", keys)  # type: ignore[attr-defined]
        assert [rows.get(key, (0,))[0] for key in keys] == values[1:]
