"""The in-process workloads: one function per subject, each returning a ``Measurement``.

Every subject of a section does the same logical work: consume 1 unit of a daily quota
for an account on service ``bench``, granted (the total is never reached). Accounts are
spread the same way for every subject of a section, so no subject is favoured by hitting
one hot row or key while its peer spreads over many.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import threading
from dataclasses import dataclass
from datetime import UTC, date, datetime
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier
from time import perf_counter
from typing import Any

from common import (
    SERVICE,
    TOTAL,
    Measurement,
    latency_summary,
    run_async,
    run_callers,
    timed_phase,
)

from quotad.domain.models import Account, AccountStatus, Overrides, Plan, Quota, Service
from quotad.errors import Conflict
from quotad.storage.memory import MemoryStore
from quotad.storage.redis import RedisCounters
from quotad.storage.sql import SqlStore

BATCH = 1000  # in-process consumes timed together: one perf_counter pair per 1000 ops
MEMORY_ACCOUNTS = [f"acct-{i:04d}" for i in range(BATCH)]
PLAN = "bench"


def today() -> date:
    """The UTC day every consume counts against."""
    return datetime.now(UTC).date()


def accounts(count: int, offset: int = 0) -> list[str]:
    """``count`` account ids, the same ones for every subject of a section."""
    return [f"acct-{i:04d}" for i in range(offset, offset + count)]


# Section 1: in-process consume ---------------------------------------------------
class DictCounter:
    """The hand-written floor: a dict of counters behind a ``threading.Lock``.

    It does what a consume does and nothing more: key (account, service, day), read
    used, check ``used + cost <= total``, write, count a rejection otherwise, and
    answer ``(granted, used)``. A plain function, not a coroutine: the least a Python
    team could write.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._usage: dict[tuple[str, str, date], list[int]] = {}

    def consume(
        self, account_id: str, service: str, day: date, cost: int, total: int
    ) -> tuple[bool, int]:
        """Add ``cost`` within ``total``, all or nothing."""
        key = (account_id, service, day)
        with self._lock:
            row = self._usage.get(key)
            if row is None:
                row = self._usage[key] = [0, 0]  # used, rejected
            used = row[0] + cost
            if used <= total:
                row[0] = used
                return True, used
            row[1] += 1
            return False, row[0]


def _from_batches(batches: list[float], refused: int) -> Measurement:
    # Per-op latency is each batch's time over its size: a perf_counter call per op
    # would cost as much as the dict-based subjects themselves.
    ops = len(batches) * BATCH
    seconds = sum(batches)
    p50, p99 = latency_summary([b / BATCH for b in batches])
    return Measurement(ops / seconds, p50, p99, ops, seconds, refused, {"latency": "batch/1000"})


async def memory_quotad(seconds: float) -> Measurement:
    """``await MemoryStore().consume(...)`` in a tight loop in one coroutine."""
    store = MemoryStore()
    consume = store.consume
    day, names = today(), MEMORY_ACCOUNTS
    batches: list[float] = []
    refused = 0
    gc.collect()
    deadline = perf_counter() + seconds
    while True:
        began = perf_counter()
        for account in names:
            if not (await consume(account, SERVICE, day, 1, TOTAL))[0]:
                refused += 1
        ended = perf_counter()
        batches.append(ended - began)
        if ended >= deadline:
            return _from_batches(batches, refused)


async def memory_limits(seconds: float) -> Measurement:
    """``FixedWindowRateLimiter(MemoryStorage()).hit(RateLimitItemPerDay(N), ...)``."""
    from limits import RateLimitItemPerDay
    from limits.storage import MemoryStorage
    from limits.strategies import FixedWindowRateLimiter

    storage = MemoryStorage()
    hit = FixedWindowRateLimiter(storage).hit
    item = RateLimitItemPerDay(TOTAL)
    names = MEMORY_ACCOUNTS
    batches: list[float] = []
    refused = 0
    gc.collect()
    deadline = perf_counter() + seconds
    try:
        while True:
            began = perf_counter()
            for account in names:
                if not hit(item, account, SERVICE):
                    refused += 1
            ended = perf_counter()
            batches.append(ended - began)
            if ended >= deadline:
                return _from_batches(batches, refused)
    finally:
        # MemoryStorage runs an expiry timer thread; stop it so the process can exit.
        timer = getattr(storage, "timer", None)
        if timer is not None:
            timer.cancel()


async def memory_dict(seconds: float) -> Measurement:
    """``DictCounter.consume`` in the same loop shape as the other two subjects."""
    consume = DictCounter().consume
    day, names = today(), MEMORY_ACCOUNTS
    batches: list[float] = []
    refused = 0
    gc.collect()
    deadline = perf_counter() + seconds
    while True:
        began = perf_counter()
        for account in names:
            if not consume(account, SERVICE, day, 1, TOTAL)[0]:
                refused += 1
        ended = perf_counter()
        batches.append(ended - began)
        if ended >= deadline:
            return _from_batches(batches, refused)


# Records every SQL-backed subject needs -------------------------------------------
async def seed(store: Any, names: list[str]) -> None:
    """Create service ``bench``, plan ``bench`` and ``names`` as accounts (if missing).

    ``usage_days`` rows reference their account (a foreign key), so the SQL stores and
    the raw-SQL baseline need the accounts to exist; the Redis store's records do too,
    or its flusher would drop the counters of unknown accounts.
    """
    now = datetime.now(UTC)
    with contextlib.suppress(Conflict):
        await store.create_service(Service(SERVICE, "benchmark", now))
    with contextlib.suppress(Conflict):
        await store.create_plan(Plan(PLAN, {SERVICE: Quota.daily(TOTAL)}, (), now, "benchmark"))
    for name in names:
        with contextlib.suppress(Conflict):
            await store.create_account(
                Account(name, name, PLAN, "UTC", AccountStatus.ACTIVE, Overrides(), now)
            )


async def seed_sql(url: str, names: list[str]) -> None:
    """Migrate the SQL database at ``url`` and seed it."""
    store = SqlStore(url)
    await store.open()
    try:
        await seed(store, names)
    finally:
        await store.close()


# Sections 2 and 6: Redis ------------------------------------------------------------
async def redis_quotad(
    url: str, names: list[str], seconds: float, warmup: float, callers: int
) -> Measurement:
    """``RedisCounters.consume`` from ``callers`` concurrent callers, one account each."""
    return await store_callers(RedisCounters(url), names, seconds, warmup, callers)


async def store_callers(
    store: RedisCounters | SqlStore, names: list[str], seconds: float, warmup: float, callers: int
) -> Measurement:
    """Open ``store``, run ``callers`` concurrent consumers (one account each), close it."""
    await store.open()
    day = today()
    try:

        async def op(i: int) -> bool:
            return (await store.consume(names[i], SERVICE, day, 1, TOTAL)).granted

        return await run_callers(op, callers, seconds, warmup)
    finally:
        await store.close()


async def redis_limits(
    redis_url: str, key_prefix: str, names: list[str], seconds: float, warmup: float, callers: int
) -> Measurement:
    """``limits.aio`` ``FixedWindowRateLimiter`` on ``RedisStorage`` (coredis client)."""
    from limits import RateLimitItemPerDay
    from limits.aio.storage import RedisStorage
    from limits.aio.strategies import FixedWindowRateLimiter

    storage = RedisStorage(f"async+{redis_url}", key_prefix=key_prefix)
    hit = FixedWindowRateLimiter(storage).hit
    item = RateLimitItemPerDay(TOTAL)

    async def op(i: int) -> bool:
        return await hit(item, names[i], SERVICE)

    return await run_callers(op, callers, seconds, warmup)


@dataclass
class ScalingJob:
    """What one scaling worker process runs."""

    url: str
    names: list[str]
    seconds: float
    warmup: float
    callers: int


def scaling_worker(job: ScalingJob, start: Barrier, results: Queue[dict[str, Any]]) -> None:
    """One quotad process for the scaling section (run in a spawned child)."""
    from quotad import logs

    logs.configure("error")  # as the parent: a first run rebuilds every counter, expectedly
    try:
        measured = run_async(_scaling_main(job, start))
    except Exception as exc:
        start.abort()  # release the parent and the siblings instead of a timeout
        results.put({"ok": False, "error": f"{type(exc).__name__}: {exc}"})
        return
    results.put({"ok": True, "measurement": measured})


async def _scaling_main(job: ScalingJob, start: Barrier) -> dict[str, Any]:
    store = RedisCounters(job.url)
    await store.open()
    day = today()
    try:

        async def op(i: int) -> bool:
            return (await store.consume(job.names[i], SERVICE, day, 1, TOTAL)).granted

        await timed_phase(op, job.callers, job.warmup)
        gc.collect()
        # Every process starts its timed phase together with its siblings.
        await asyncio.to_thread(start.wait, 120)
        latencies: list[float] = []
        measured = await timed_phase(op, job.callers, job.seconds, samples=latencies)
        return {**measured.as_json(), "samples": latencies[:: max(1, len(latencies) // 20_000)]}
    finally:
        await store.close()


# Sections 3 and 4: SQL ----------------------------------------------------------------
async def sql_quotad(
    url: str, names: list[str], seconds: float, warmup: float, callers: int, *, batch: bool
) -> Measurement:
    """``SqlStore(url, batch=batch).consume`` from ``callers`` callers, one account each."""
    store = SqlStore(url) if batch else SqlStore(url, batch=False)
    return await store_callers(store, names, seconds, warmup, callers)


# The raw baseline: what a team would write by hand, one autocommitted conditional
# upsert per consume (one statement; quotad's unbatched path locks, reads and writes).
UPSERT = (
    "INSERT INTO usage_days (account_id, service, day, used, total, rejected) "
    "VALUES (%s, %s, %s, %s, %s, 0) "
    "ON CONFLICT (account_id, service, day) DO UPDATE SET used = usage_days.used + %s "
    "WHERE usage_days.used + %s <= %s RETURNING used"
)


async def postgres_raw(
    conninfo: str, names: list[str], seconds: float, warmup: float, callers: int, pool_size: int
) -> Measurement:
    """psycopg 3 ``AsyncConnectionPool``: one upsert per consume, autocommit."""
    from psycopg_pool import AsyncConnectionPool

    pool = AsyncConnectionPool(
        conninfo,
        min_size=pool_size,
        max_size=pool_size,
        kwargs={"autocommit": True},
        open=False,
    )
    await pool.open(wait=True)
    day = today().isoformat()
    try:

        async def op(i: int) -> bool:
            async with pool.connection() as conn:
                cursor = await conn.execute(UPSERT, (names[i], SERVICE, day, 1, TOTAL, 1, 1, TOTAL))
                return await cursor.fetchone() is not None

        return await run_callers(op, callers, seconds, warmup)
    finally:
        await pool.close()
