"""Limits v2 on the Redis store: what only Redis does (the generic behaviour is
test_limits_store.py's, over every store).

Window counters written behind to SQL and rebuilt after a lost Redis, version-1 and
version-2 consumes sharing one script call, one Cluster slot per account, and rates
decided on the caller's clock (Redis's TIME without one).
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import redis.asyncio as aioredis
from redis.crc import key_slot

from quotad.domain.limits import (
    HARD,
    RATE_PERIOD,
    SOFT,
    TALLY,
    Slot,
    advanced,
    interval_us,
    with_day_row,
)
from quotad.domain.models import (
    Account,
    AccountStatus,
    ConsumeOutcome,
    IdempotencyClaim,
    Overrides,
    Plan,
    Quota,
)
from quotad.storage.redis import RedisCounters
from tests.conftest import LOOPBACK, RedisClusterProcesses
from tests.servers import REDIS_URL, redis_namespace

pytestmark = pytest.mark.redis
DAY = date(2024, 11, 7)
NOW = datetime(2024, 11, 7, 12, tzinfo=UTC)
MONTH = Slot("insights.month", "2024-11-01", 100, HARD, 10)


@pytest.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    """A Redis store URL under a fresh prefix, with SQLite records in tmp_path."""
    with redis_namespace(f"sqlite:///{tmp_path / 'records.db'}") as url:
        yield url


def prefix_of(url: str) -> str:
    """The key prefix of a store URL."""
    return url.split("prefix=")[1].split("&", maxsplit=1)[0]


async def open_node(url: str, *accounts: str) -> RedisCounters:
    """One node (flushing only when told) with a plan and the given accounts."""
    store = RedisCounters(url, flush_interval=3600)
    await store.open()
    await store.records.create_plan(Plan("p", {"insights": Quota.daily(1000)}, (), NOW))
    for account_id in accounts:
        await store.records.create_account(
            Account(account_id, account_id, "p", "UTC", AccountStatus.ACTIVE, Overrides(), NOW)
        )
        await store.open_account(account_id)
    return store


async def lose_everything(url: str) -> None:
    """Delete every key of the namespace, markers included, as FLUSHALL would."""
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix_of(url)}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_window_counters_are_written_behind_and_rebuilt_after_a_loss(
    redis_url: str,
) -> None:
    """A month window's grants reach SQL's usage_days, and the window continues from them
    (unflushed grants included) after Redis loses everything."""
    store = await open_node(redis_url, "acme")
    try:
        for _ in range(6):
            await store.consume("acme", "insights", DAY, 10, 1000, extra=(MONTH,))
        await store.flush()
        rows = await store.records.counter_rows("acme", [("insights.month", "2024-11-01")])
        assert rows == {("insights.month", "2024-11-01"): (60, 100, 0)}
        # Granted after the flush: only this node's journal has it when Redis is lost.
        await store.consume("acme", "insights", DAY, 10, 1000, extra=(MONTH,))
        await lose_everything(redis_url)
        outcomes = [
            await store.consume("acme", "insights", DAY, 10, 1000, extra=(MONTH,)) for _ in range(4)
        ]
        assert [outcome.granted for outcome in outcomes] == [True, True, True, False]
        assert outcomes[-1].before == (100, 100)  # the day row, then the month
        assert outcomes[-1].refused == 1
        await store.flush()
        rows = await store.records.counter_rows(
            "acme", [("insights.month", "2024-11-01"), ("insights", DAY.isoformat())]
        )
        assert rows[("insights.month", "2024-11-01")] == (100, 100, 0)
        assert rows[("insights", DAY.isoformat())] == (100, 1000, 1)
    finally:
        await store.close()


async def test_adjust_and_refund_move_windows_in_sql_too(redis_url: str) -> None:
    """adjust's window deltas are floored at zero in Redis and written behind to SQL."""
    store = await open_node(redis_url, "acme")
    try:
        await store.consume("acme", "insights", DAY, 30, 1000, extra=(MONTH,))
        day = await store.adjust("acme", "insights", DAY, -50, 1000, extra=(MONTH,))
        assert day.used == 0
        assert await store.read_counters(
            "acme", [("insights", DAY.isoformat()), ("insights.month", "2024-11-01")]
        ) == [0, 0]
        await store.flush()
        rows = await store.records.counter_rows("acme", [("insights.month", "2024-11-01")])
        assert rows[("insights.month", "2024-11-01")][0] == 0
    finally:
        await store.close()


async def test_one_script_call_decides_a_batch_of_v1_and_v2_consumes(redis_url: str) -> None:
    """Concurrent version-1 and version-2 consumes share the batch's script calls, and the
    hard window they share is never passed."""
    store = await open_node(redis_url, "acme", "beta")
    try:
        window = Slot("insights.month", "2024-11-01", 50, HARD, 10)
        await store.consume("acme", "insights", DAY, 0, 1000, extra=(window._replace(cost=0),))
        await store.consume("beta", "insights", DAY, 0, 1000)
        client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        pattern = f"{prefix_of(redis_url)}:*:b:*"
        calls_before = {key async for key in client.scan_iter(match=pattern)}
        calls = [
            store.consume("acme", "insights", DAY, 10, 1000, extra=(window,))
            if index % 2
            else store.consume("beta", "insights", DAY, 10, 1000)
            for index in range(20)
        ]
        outcomes = await asyncio.gather(*calls)
        calls_after = {key async for key in client.scan_iter(match=pattern)}
        await client.aclose()
        # Two batches in flight at most: 20 consumes in two script calls, not 20.
        assert len(calls_after - calls_before) <= 2
        v2 = [outcome for index, outcome in enumerate(outcomes) if index % 2]
        v1 = [outcome for index, outcome in enumerate(outcomes) if not index % 2]
        assert [outcome.granted for outcome in v2].count(True) == 5
        assert all(outcome.granted and outcome.before == () for outcome in v1)
        assert sorted(outcome.used for outcome in v1) == list(range(10, 110, 10))
        assert await store.read_counters("acme", [("insights.month", "2024-11-01")]) == [50]
    finally:
        await store.close()


async def test_a_rate_is_decided_on_the_callers_clock_or_redis_time(redis_url: str) -> None:
    """A rate's bucket follows the caller's ``now`` as on every store (an hour of it refills
    the bucket); a consume without a ``now`` is decided on Redis's TIME."""
    store = await open_node(redis_url, "acme")
    try:
        rate = Slot("insights.rate", RATE_PERIOD, 2, HARD, 1, interval_us(0.001))

        async def at(moment: datetime | None) -> ConsumeOutcome:
            return await store.consume(
                "acme", "insights", DAY, 1, 1000, now=moment, extra=(rate,), day_mode=TALLY
            )

        burst = [await at(NOW), await at(NOW)]
        refused = await at(NOW)
        later = await at(NOW + timedelta(hours=1))  # 3.6 tokens back (one per 1000 s)
        assert [o.granted for o in (*burst, refused, later)] == [True, True, False, True]
        now_us = int(NOW.timestamp() * 1_000_000)
        assert (refused.at_us, refused.refused) == (now_us, 1)
        assert later.at_us == now_us + 3_600_000_000
        key = f"{prefix_of(redis_url)}:{{acme}}:t:insights.rate"
        client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        try:
            await client.delete(key)
            server_us = sum(
                int(x) * m for x, m in zip(await client.time(), (10**6, 1), strict=True)
            )
        finally:
            await client.aclose()
        unclocked = await at(None)
        assert abs(unclocked.at_us - server_us) < 5_000_000  # Redis's TIME, not 2024
    finally:
        await store.close()


async def test_a_granted_v2_consume_hands_back_every_counter_after_it(redis_url: str) -> None:
    """A granted v2 consume answers each slot's counter after it, as ``limits.advanced``
    computes it from the counters before (what the verdict shows, without deciding again);
    a refused one answers none (its counters did not move), and a consume of other slots
    is keyed and answered for its own."""
    store = await open_node(redis_url, "acme")
    try:
        rate = Slot("insights.rate", RATE_PERIOD, 5, HARD, 1, interval_us(10))
        month = Slot("insights.month", "2024-11-01", 30, HARD, 10)
        extra = (rate, month)
        first = await store.consume("acme", "insights", DAY, 10, 1000, None, NOW, extra=extra)
        second = await store.consume("acme", "insights", DAY, 10, 1000, None, NOW, extra=extra)
        slots = with_day_row("insights", DAY, 1000, HARD, 10, extra)
        for outcome in (first, second):
            assert outcome.granted
            assert outcome.after == tuple(advanced(outcome.before, slots, outcome.at_us))
        assert second.before[0] == first.after[0] == 10
        assert second.before[2] == first.after[2] == 10
        over = Slot("insights.month", "2024-11-01", 30, HARD, 20)  # 20 more than 30 - 20
        refused = await store.consume(
            "acme", "insights", DAY, 20, 1000, None, NOW, extra=(rate, over)
        )
        assert (refused.granted, refused.refused, refused.after) == (False, 2, ())
        assert refused.before[2] == 20
    finally:
        await store.close()


async def test_a_v2_consume_writes_a_counters_total_and_freshness_only_when_they_change(
    redis_url: str,
) -> None:
    """A window's hash takes the call's total when it differs (a plan changed mid-window),
    loses its "fresh" mark (loaded from SQL without a row) at the first write, and a
    refused call leaves a window's use and mark alone while its day row counts it."""
    store = await open_node(redis_url, "acme")
    key = f"{prefix_of(redis_url)}:{{acme}}:u:insights.month:2024-11-01"
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        month = Slot("insights.month", "2024-11-01", 30, HARD, 10)
        first = await store.consume("acme", "insights", DAY, 10, 1000, None, NOW, extra=(month,))
        assert first.granted
        assert await client.hgetall(key) == {"used": "10", "total": "30", "rejected": "0"}
        raised = month._replace(total=50)
        await store.consume("acme", "insights", DAY, 10, 1000, None, NOW, extra=(raised,))
        assert await client.hmget(key, "used", "total") == ["20", "50"]
        too_much = raised._replace(cost=40)
        refused = await store.consume(
            "acme", "insights", DAY, 40, 1000, None, NOW, extra=(too_much,)
        )
        assert (refused.granted, refused.refused) == (False, 1)
        assert await client.hgetall(key) == {"used": "20", "total": "50", "rejected": "0"}
        day_key = f"{prefix_of(redis_url)}:{{acme}}:u:insights:{DAY.isoformat()}"
        assert await client.hmget(day_key, "used", "rejected") == ["20", "1"]
    finally:
        await client.aclose()
        await store.close()


async def test_a_replayed_v2_consume_keeps_its_refusal(redis_url: str) -> None:
    """A v2 consume's Idempotency-Key replays its first answer, refused slot included."""
    store = await open_node(redis_url, "acme")
    try:
        full = Slot("insights.month", "2024-11-01", 5, HARD, 10)
        claim = IdempotencyClaim("again", "fp", NOW + timedelta(days=1))
        first = await store.consume("acme", "insights", DAY, 10, 1000, claim, NOW, extra=(full,))
        again = await store.consume("acme", "insights", DAY, 10, 1000, claim, NOW, extra=(full,))
        assert (first.granted, first.refused, first.replayed) == (False, 1, False)
        assert (again.granted, again.refused, again.replayed, again.before) == (
            False,
            1,
            True,
            (),
        )
    finally:
        await store.close()


async def test_an_accounts_slots_share_one_cluster_slot(
    redis_cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    """On a Cluster every key of a multi-limit consume (day, windows, per-key, rate) lands in
    its account's slot, and accounts on different masters are decided side by side."""
    accounts = [f"acct-{index}" for index in range(6)]
    assert len({key_slot(f"{{{account}}}".encode()) for account in accounts}) > 1
    with redis_cluster.namespace(f"sqlite:///{tmp_path / 'records.db'}") as url:
        store = await open_node(url, *accounts)
        try:
            extra = (
                MONTH,
                Slot("insights.week.key:k1", "2024-11-04", 100, SOFT, 10),
                Slot("insights.rate", RATE_PERIOD, 5, HARD, 1, interval_us(10)),
            )
            outcomes = await asyncio.gather(
                *(
                    store.consume(account, "insights", DAY, 10, 1000, extra=extra)
                    for account in accounts
                    for _ in range(3)
                )
            )
            assert all(outcome.granted for outcome in outcomes)
            for account in accounts:
                keys = []
                for port in redis_cluster.ports:
                    client = aioredis.Redis(host=LOOPBACK, port=port, decode_responses=True)
                    keys += [
                        key
                        async for key in client.scan_iter(match=f"{prefix_of(url)}:{{{account}}}:*")
                    ]
                    await client.aclose()
                assert {key.split(":", 2)[2].split(":")[0] for key in keys} >= {"u", "t", "m"}
                assert len({key_slot(key.encode()) for key in keys}) == 1, keys
                assert await store.read_counters(
                    account,
                    [("insights.month", "2024-11-01"), ("insights.week.key:k1", "2024-11-04")],
                ) == [30, 30]
        finally:
            await store.close()


async def test_an_abandoned_v2_grant_gives_back_every_window(redis_url: str) -> None:
    """A v2 grant whose caller stopped waiting while its script ran is given back on the day
    row and the month, in Redis and in what is written behind to SQL."""
    store = await open_node(redis_url, "acme")
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        keys = [("insights", DAY.isoformat()), ("insights.month", "2024-11-01")]
        await store.consume("acme", "insights", DAY, 10, 1000, extra=(MONTH,))
        kept = 10  # what callers were told was granted
        pattern = f"{prefix_of(redis_url)}:*:b:*"
        abandoned = False
        for _ in range(50):
            calls_before = {key async for key in client.scan_iter(match=pattern)}
            task = asyncio.create_task(
                store.consume("acme", "insights", DAY, 10, 1000, extra=(MONTH,))
            )
            for _ in range(3):  # into the batch, its script call sent
                await asyncio.sleep(0)
            task.cancel()
            [result] = await asyncio.gather(task, return_exceptions=True)
            if not isinstance(result, asyncio.CancelledError):
                kept += 10
                continue
            calls_after = {key async for key in client.scan_iter(match=pattern)}
            if calls_after - calls_before:  # the script ran: the grant was made, then abandoned
                abandoned = True
                break
        assert abandoned, "never cancelled a caller while its script ran"
        for _ in range(100):
            if await store.read_counters("acme", keys) == [kept, kept]:
                break
            await asyncio.sleep(0.02)
        assert await store.read_counters("acme", keys) == [kept, kept]
        await store.flush()
        rows = await store.records.counter_rows("acme", keys)
        assert [rows[key][0] for key in keys] == [kept, kept]
    finally:
        await client.aclose()
        await store.close()


async def test_counters_near_the_largest_total_stay_exact(redis_url: str) -> None:
    """Costs and totals up to 10^15 are decided and stored exactly (no 1e+15 in Lua)."""
    store = await open_node(redis_url, "acme")
    try:
        big = 10**15
        month = Slot("insights.month", "2024-11-01", big, HARD, big - 1)
        first = await store.consume("acme", "insights", DAY, big - 1, big, extra=(month,))
        last = await store.consume("acme", "insights", DAY, 1, big, extra=(month._replace(cost=1),))
        over = await store.consume("acme", "insights", DAY, 1, big, extra=(month._replace(cost=1),))
        assert (first.granted, last.granted, over.granted) == (True, True, False)
        assert (last.used, over.before) == (big, (big, big))
        assert await store.read_counters("acme", [("insights.month", "2024-11-01")]) == [big]
    finally:
        await store.close()
