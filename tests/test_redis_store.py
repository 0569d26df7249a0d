"""What only the Redis store does: write-behind to SQL, rebuild after data loss, shared throttle."""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from datetime import UTC, date, datetime, timedelta
from importlib.resources import files
from pathlib import Path
from urllib.parse import urlsplit

import pytest
import redis.asyncio as aioredis

from quotad.domain.models import (
    Account,
    AccountStatus,
    IdempotencyClaim,
    Overrides,
    Plan,
    Quota,
    UsageEvent,
)
from quotad.errors import RateLimited, StorageError
from quotad.service.throttle import SharedThrottle
from quotad.storage.base import CALL_DEADLINE
from quotad.storage.redis import RedisCounters
from tests.faults import BlackholeProxy, noting_answers
from tests.servers import REDIS_URL, redis_namespace

pytestmark = pytest.mark.redis
DAY = date(2024, 11, 7)
NOW = datetime(2024, 11, 7, 12, tzinfo=UTC)


@pytest.fixture
async def redis_url(tmp_path: Path) -> AsyncIterator[str]:
    """A Redis store URL under a fresh prefix, with SQLite records in tmp_path."""
    with redis_namespace(f"sqlite:///{tmp_path / 'records.db'}") as url:
        yield url


async def open_node(url: str, flush_interval: float = 3600) -> RedisCounters:
    """One quotad node's counters (a long flush interval unless a test wants flushing)."""
    store = RedisCounters(url, flush_interval=flush_interval)
    await store.open()
    return store


async def with_account(store: RedisCounters) -> None:
    """A plan and account acme (in the records store) to count against."""
    await store.records.create_plan(Plan("p", {"insights": Quota.daily(100)}, (), NOW))
    await store.records.create_account(
        Account("acme", "Acme", "p", "UTC", AccountStatus.ACTIVE, Overrides(), NOW)
    )
    await store.open_account("acme")


async def drop_counters(url: str) -> None:
    """Delete every counter of the namespace, as a Redis restart without persistence would."""
    prefix = url.split("prefix=")[1].split("&", maxsplit=1)[0]
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*:u:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_flush_copies_counters_to_sql(redis_url: str) -> None:
    """After a flush the records store holds the day's used, total and rejections."""
    store = await open_node(redis_url)
    try:
        await with_account(store)
        for _ in range(3):
            await store.consume("acme", "insights", DAY, 40, 100)
        await store.flush()
        [row] = await store.records.usage("acme", "insights", DAY, DAY)
        assert (row.used, row.total, row.rejected) == (80, 100, 1)
    finally:
        await store.close()


async def test_a_deleted_accounts_unflushed_grants_are_not_flushed_into_its_successor(
    redis_url: str,
) -> None:
    """Grants not yet in SQL when an account is deleted never reach one re-created under its id."""
    store = await open_node(redis_url)
    try:
        await with_account(store)
        await store.consume("acme", "insights", DAY, 40, 100)
        await store.records.delete_account("acme")
        await store.forget_account("acme")
        await store.records.create_account(
            Account("acme", "Acme", "p", "UTC", AccountStatus.ACTIVE, Overrides(), NOW)
        )
        await store.open_account("acme")
        await store.flush()
        assert await store.records.usage("acme", "insights", DAY, DAY) == []
        assert await store.usage("acme", "insights", DAY, DAY) == []
    finally:
        await store.close()


async def test_lost_counters_are_reloaded_from_sql_not_restarted(redis_url: str) -> None:
    """When Redis loses a day's counter, the next consume continues from the flushed value."""
    store = await open_node(redis_url)
    try:
        await with_account(store)
        await store.consume("acme", "insights", DAY, 90, 100)
        await store.flush()
        await drop_counters(redis_url)
        refused = await store.consume("acme", "insights", DAY, 20, 100)
        assert (refused.granted, refused.used) == (False, 90)
        granted = await store.consume("acme", "insights", DAY, 10, 100)
        assert (granted.granted, granted.used) == (True, 100)
    finally:
        await store.close()


async def test_background_flush_runs_by_itself(redis_url: str) -> None:
    """With a short interval, usage reaches SQL without an explicit flush."""
    store = await open_node(redis_url, flush_interval=0.05)
    try:
        await with_account(store)
        await store.consume("acme", "insights", DAY, 7, 100)
        for _ in range(100):
            rows = await store.records.usage("acme", "insights", DAY, DAY)
            if rows and rows[0].used == 7:
                break
            await asyncio.sleep(0.02)
        assert rows[0].used == 7
    finally:
        await store.close()


async def test_two_nodes_share_counters_and_throttle(redis_url: str) -> None:
    """Two nodes on one Redis see one counter and one token bucket per key."""
    first, second = await open_node(redis_url), await open_node(redis_url)
    try:
        await with_account(first)
        await first.consume("acme", "insights", DAY, 60, 100)
        outcome = await second.consume("acme", "insights", DAY, 50, 100)
        assert (outcome.granted, outcome.used) == (False, 60)
        throttles = [
            SharedThrottle(first, 0.001, 3),
            SharedThrottle(second, 0.001, 3),
        ]
        for index in range(3):
            await throttles[index % 2].check("key_1")
        with pytest.raises(RateLimited):
            await throttles[1].check("key_1")
    finally:
        await first.close()
        await second.close()


async def drop_everything(url: str) -> None:
    """Delete every key of the namespace, markers included: a Redis restarted empty."""
    prefix = url.split("prefix=")[1].split("&", maxsplit=1)[0]
    client = aioredis.Redis.from_url(REDIS_URL)
    keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
    if keys:
        await client.delete(*keys)
    await client.aclose()


async def test_a_lost_redis_is_rebuilt_with_every_nodes_unflushed_grants(redis_url: str) -> None:
    """Grants another node has not flushed yet still count after Redis loses everything."""
    first = await open_node(redis_url, flush_interval=0.2)
    second = await open_node(redis_url, flush_interval=0.2)
    try:
        await with_account(first)
        assert (await first.consume("acme", "insights", DAY, 90, 100)).granted
        await drop_everything(redis_url)
        refused = await second.consume("acme", "insights", DAY, 20, 100)
        assert (refused.granted, refused.used) == (False, 90)
        granted = await first.consume("acme", "insights", DAY, 10, 100)
        assert (granted.granted, granted.used) == (True, 100)
    finally:
        await first.close()
        await second.close()


async def test_idempotency_answers_and_event_ids_survive_a_lost_redis(redis_url: str) -> None:
    """A replayed Idempotency-Key and a re-sent event id count nothing after Redis loses all."""
    store = await open_node(redis_url)
    try:
        await with_account(store)
        claim = IdempotencyClaim("retry-me", "fp", NOW + timedelta(days=1))
        first = await store.consume("acme", "insights", DAY, 7, 100, claim, NOW)
        event = UsageEvent("ev-1", "acme", "insights", 3, DAY, 100, NOW)
        assert (await store.record_events([event])).accepted == 1
        await drop_everything(redis_url)
        again = await store.consume("acme", "insights", DAY, 7, 100, claim, NOW)
        assert (again.replayed, again.granted, again.used) == (True, True, first.used)
        assert (await store.record_events([event])).duplicates == 1
        [row] = await store.usage("acme", "insights", DAY, DAY)
        assert row.used == 10
    finally:
        await store.close()


async def test_an_adjustments_idempotency_key_survives_a_lost_redis(redis_url: str) -> None:
    """An adjustment repeated under its Idempotency-Key after Redis lost everything (the
    first one not yet flushed to SQL) still moves nothing."""
    store = await open_node(redis_url)
    try:
        await with_account(store)
        claim = IdempotencyClaim("adjust k1", "fp", NOW + timedelta(days=1))
        first, _ = await store.adjust_once("acme", "insights", DAY, 7, 100, (), claim, NOW)
        await drop_everything(redis_url)
        again, repeated = await store.adjust_once("acme", "insights", DAY, 7, 100, (), claim, NOW)
        assert (repeated, again.used) == (True, first.used)
        [row] = await store.usage("acme", "insights", DAY, DAY)
        assert row.used == 7
    finally:
        await store.close()


async def test_a_consume_past_its_callers_deadline_changes_nothing(redis_url: str) -> None:
    """A consume Redis runs after its caller's deadline is refused with StorageError, uncharged."""
    store = await open_node(redis_url)
    try:
        await with_account(store)
        await store.consume("acme", "insights", DAY, 5, 100)
        token = CALL_DEADLINE.set(time.time() - 1)
        try:
            with pytest.raises(StorageError):
                await store.consume("acme", "insights", DAY, 5, 100)
        finally:
            CALL_DEADLINE.reset(token)
        [row] = await store.usage("acme", "insights", DAY, DAY)
        assert row.used == 5
    finally:
        await store.close()


@contextlib.asynccontextmanager
async def node_behind_proxy(redis_url: str) -> AsyncIterator[tuple[RedisCounters, BlackholeProxy]]:
    """A node of ``redis_url`` that reaches Redis through a ``BlackholeProxy``, with acme."""
    target = urlsplit(REDIS_URL)
    assert target.hostname is not None
    assert target.port is not None
    with BlackholeProxy(target.hostname, target.port) as proxy:
        url = redis_url.replace(f"{target.hostname}:{target.port}", proxy.address, 1)
        store = await open_node(url)
        try:
            await with_account(store)
            yield store, proxy
        finally:
            await store.close()


async def used_in_redis(redis_url: str) -> int:
    """acme's insights used today as Redis holds it, read directly (not through a proxy)."""
    prefix = redis_url.split("prefix=")[1].split("&", maxsplit=1)[0]
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        return int(await client.hget(f"{prefix}:{{acme}}:u:insights:{DAY}", "used") or 0)
    finally:
        await client.aclose()


async def used_once_settled(store: RedisCounters, expected: int) -> int:
    """acme's insights used today, polled for up to 10 s until it is ``expected``."""
    deadline = time.monotonic() + 10
    while True:
        [row] = await store.usage("acme", "insights", DAY, DAY)
        if row.used == expected or time.monotonic() > deadline:
            return row.used
        await asyncio.sleep(0.1)


async def test_a_consume_whose_reply_was_lost_is_given_back_once_redis_answers(
    redis_url: str,
) -> None:
    """Redis runs a consume whose reply never comes back (past the client library's resend):
    the caller gets StorageError, and once replies flow again what it granted is given
    back, in Redis and in SQL's copy; the consume answered before stays counted."""
    async with node_behind_proxy(redis_url) as (store, proxy):
        await store.consume("acme", "insights", DAY, 5, 100)
        with proxy.replies_held():
            with pytest.raises(StorageError):
                await store.consume("acme", "insights", DAY, 3, 100)
            assert await used_in_redis(redis_url) == 8  # Redis ran it
        assert await used_once_settled(store, 5) == 5
        await store.flush()
        [row] = await store.records.usage("acme", "insights", DAY, DAY)
        assert row.used == 5


async def test_a_lost_reply_to_a_consume_with_an_idempotency_key_stays_counted_once(
    redis_url: str,
) -> None:
    """The same with an Idempotency-Key: the retry is answered the first run's grant (a
    replay), so that grant is kept, and counted once."""
    claim = IdempotencyClaim("k", "fp", NOW + timedelta(days=1))
    async with node_behind_proxy(redis_url) as (store, proxy):
        await store.consume("acme", "insights", DAY, 5, 100)
        with proxy.replies_held():
            with pytest.raises(StorageError):
                await store.consume("acme", "insights", DAY, 3, 100, claim, NOW)
            assert await used_in_redis(redis_url) == 8  # Redis ran it
        again = await store.consume("acme", "insights", DAY, 3, 100, claim, NOW)
        assert again.granted
        assert again.replayed
        await asyncio.sleep(1)  # the lost call asked again meanwhile
        assert await used_once_settled(store, 8) == 8


async def test_a_give_back_whose_reply_was_lost_applies_once(redis_url: str) -> None:
    """A grant whose caller stopped waiting is given back; when the give-back's replies are
    lost (the client library resends it, the node retries it), it still applies once."""
    async with node_behind_proxy(redis_url) as (store, proxy):
        await store.consume("acme", "insights", DAY, 5, 100)
        seen = noting_answers(store._batcher)
        await store.consume("acme", "insights", DAY, 3, 100)
        await store.consume("acme", "insights", DAY, 3, 100)
        [(first, first_reply), (request, reply)] = seen
        store._abandoned(first, first_reply)  # once while replies flow (Redis loads the script)
        await asyncio.gather(*store._refunds)
        assert await used_in_redis(redis_url) == 8
        with proxy.replies_held():
            store._abandoned(request, reply)  # as when its caller stopped waiting
            await asyncio.sleep(2.5)  # sent, resent, and retried: none answered
            assert await used_in_redis(redis_url) == 5
        await asyncio.gather(*store._refunds)
        assert await used_in_redis(redis_url) == 5


async def test_an_adjustment_whose_connection_was_lost_applies_once(redis_url: str) -> None:
    """An adjustment Redis ran whose connection was reset before the reply came: the client
    library sends it again on a new connection, and it is answered, not applied again."""
    async with node_behind_proxy(redis_url) as (store, proxy):
        await store.consume("acme", "insights", DAY, 5, 100)
        await store.adjust("acme", "insights", DAY, 2, 100)  # Redis loads the script
        proxy.hold_replies_after(store._scripts["adjust"].sha.encode())
        adjusting = asyncio.create_task(store.adjust("acme", "insights", DAY, 3, 100))
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:  # until Redis has run it (its reply held)
            if await used_in_redis(redis_url) == 10:
                break
            await asyncio.sleep(0.02)
        proxy.release_replies(reset=True)
        row = await adjusting
        assert row.used == 10
        assert await used_in_redis(redis_url) == 10


async def test_no_key_is_shared_by_accounts(redis_url: str) -> None:
    """Every key the store writes carries an account's hash tag (none on a global slot)."""
    store = await open_node(redis_url)
    try:
        await with_account(store)
        claim = IdempotencyClaim("k", "fp", NOW + timedelta(days=1))
        await store.consume("acme", "insights", DAY, 1, 100, claim, NOW)
        await store.adjust("acme", "insights", DAY, 2, 100)
        await store.record_events([UsageEvent("e", "acme", "insights", 1, DAY, 100, NOW)])
        prefix = redis_url.split("prefix=")[1].split("&", maxsplit=1)[0]
        client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
        keys = [key async for key in client.scan_iter(match=f"{prefix}:*")]
        await client.aclose()
        assert keys, "the store wrote nothing to Redis"
        assert all(key.startswith(f"{prefix}:{{acme}}:") for key in keys), keys
    finally:
        await store.close()


async def test_a_rebuild_begun_before_a_second_loss_cannot_finish_after_it(
    redis_url: str,
) -> None:
    """The rebuild scripts refuse to mark an account whole from an intent a later loss wiped."""
    package = files("quotad.storage") / "lua"
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    begin = client.register_script((package / "begin.lua").read_text())
    restore = client.register_script((package / "restore.lua").read_text())
    prefix = redis_url.split("prefix=")[1].split("&", maxsplit=1)[0]
    marker, intent = f"{prefix}:{{acme}}:m", f"{prefix}:{{acme}}:r"
    try:
        slow = await begin(keys=[marker, intent], args=["first"])  # a node begins, waits
        assert slow == ["intent", "first"]
        assert await begin(keys=[marker, intent], args=["second"]) == ["intent", "first"]
        assert await restore(keys=[marker, intent], args=["", "1", "t1", "first"]) == "done"
        assert await client.get(marker) == "t1"
        await drop_everything(redis_url)  # grants were made under t1, then Redis lost them
        assert await restore(keys=[marker, intent], args=["", "1", "t2", "first"]) == "stale"
        assert await client.get(marker) is None
    finally:
        await client.delete(marker, intent)
        await client.aclose()


async def test_a_consume_call_sent_twice_is_applied_once(redis_url: str) -> None:
    """The same consume script call, sent again (a client's retry), replays its first replies."""
    store = await open_node(redis_url)
    try:
        await with_account(store)
        script = store._scripts["consume"]
        calls: list[tuple[list[str], list[object]]] = []

        async def twice(keys: list[str], args: list[object]) -> object:
            calls.append((keys, args))
            first = await script(keys=keys, args=args)
            again = await script(keys=keys, args=args)  # what a retry after a timeout sends
            assert again == [[str(field) for field in reply] for reply in first]
            return first

        store._scripts["consume"] = twice
        outcome = await store.consume("acme", "insights", DAY, 30, 100)
        assert (outcome.granted, outcome.used) == (True, 30)
        [row] = await store.usage("acme", "insights", DAY, DAY)
        assert row.used == 30
    finally:
        await store.close()


async def test_consumes_with_and_without_a_claim_on_one_row_each_count_once(
    redis_url: str,
) -> None:
    """On one day row, consumes with an Idempotency-Key and without one, in any order, each
    count (a key's replay once): what one call sends never changes the next one's."""
    store = await open_node(redis_url)
    try:
        await with_account(store)
        expires = NOW + timedelta(days=1)
        first = IdempotencyClaim("k1", "f1", expires)
        assert (await store.consume("acme", "insights", DAY, 1, 100)).used == 1
        assert (await store.consume("acme", "insights", DAY, 2, 100, first, NOW)).used == 3
        assert (await store.consume("acme", "insights", DAY, 4, 100)).used == 7
        replay = await store.consume("acme", "insights", DAY, 2, 100, first, NOW)
        assert (replay.replayed, replay.used) == (True, 3)
        second = IdempotencyClaim("k2", "f2", expires)
        assert (await store.consume("acme", "insights", DAY, 8, 100, second, NOW)).used == 15
        assert (await store.consume("acme", "insights", DAY, 16, 100)).used == 31
        [row] = await store.usage("acme", "insights", DAY, DAY)
        assert row.used == 31
    finally:
        await store.close()


async def test_a_day_counter_takes_a_new_total_and_loses_its_fresh_mark_once_written(
    redis_url: str,
) -> None:
    """A version-1 consume writes the day's hash as before: its use, its refusals, the
    call's total when it changes, and no "fresh" mark after the first write."""
    store = await open_node(redis_url)
    prefix = redis_url.split("prefix=")[1].split("&", maxsplit=1)[0]
    key = f"{prefix}:{{acme}}:u:insights:{DAY.isoformat()}"
    client = aioredis.Redis.from_url(REDIS_URL, decode_responses=True)
    try:
        await with_account(store)
        assert (await store.consume("acme", "insights", DAY, 40, 100)).granted
        assert await client.hgetall(key) == {"used": "40", "total": "100", "rejected": "0"}
        assert not (await store.consume("acme", "insights", DAY, 70, 100)).granted
        assert (await store.consume("acme", "insights", DAY, 70, 120)).granted  # raised
        assert await client.hgetall(key) == {"used": "110", "total": "120", "rejected": "1"}
    finally:
        await client.aclose()
        await store.close()
