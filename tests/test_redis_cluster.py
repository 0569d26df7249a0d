"""The Redis store on a real 3-master Redis Cluster (README "Storage": hash-tagged keys).

The behavioural consume and history suites run on the cluster too: ``with_cluster = True``
in test_verify_api.py, test_customer_api.py and test_race.py adds a ``redis-cluster`` run
(see ``pytest_generate_tests`` and the ``redis_cluster`` fixture in conftest.py). This
module checks what only a cluster can show (where the keys land), the write-behind to SQL
on a cluster, and bursts on a freshly opened cluster client.
"""

from __future__ import annotations

import asyncio
import re
import uuid
from collections import Counter, defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import redis

from quotad.domain.models import (
    Account,
    AccountStatus,
    IdempotencyClaim,
    Overrides,
    Plan,
    Quota,
    Service,
    UsageEvent,
)
from quotad.storage import Stores, stores_from_url
from quotad.storage.redis import RedisCounters
from tests.conftest import LOOPBACK, RedisClusterProcesses, create_account

pytestmark = pytest.mark.redis

DAY = date(2024, 11, 7)
NOW = datetime(2024, 11, 7, 12, tzinfo=UTC)
TOTAL = 100
ACCOUNTS = 24  # all on one master by chance: 3 * (1/3) ** 24, about 1e-11
TAG = re.compile(r"\{([^}]*)\}")


@asynccontextmanager
async def cluster_stores(cluster: RedisClusterProcesses, tmp_path: Path) -> AsyncIterator[Stores]:
    """Opened Redis counters on the cluster under a fresh prefix, records in SQLite."""
    with cluster.namespace(f"sqlite:///{tmp_path / 'records.db'}") as url:
        stores = stores_from_url(url)
        await stores.open()
        try:
            yield stores
        finally:
            await stores.close()


async def add_accounts(stores: Stores, ids: list[str]) -> None:
    """Service insights, a plan of ``TOTAL`` a day, and one account per id."""
    await stores.records.create_service(Service("insights", "", NOW))
    await stores.records.create_plan(Plan("plan", {"insights": Quota.daily(TOTAL)}, (), NOW))
    for account_id in ids:
        await create_account(
            stores,
            Account(account_id, account_id, "plan", "UTC", AccountStatus.ACTIVE, Overrides(), NOW),
        )


def redis_counters(stores: Stores) -> RedisCounters:
    """The counters of ``stores``, which a ``redis+cluster://`` URL opens as RedisCounters."""
    assert isinstance(stores.counters, RedisCounters), stores.counters
    return stores.counters


def prefix_of(stores: Stores) -> str:
    """The key prefix the stores were opened with."""
    match = re.search(r"[?&]prefix=([^&]+)", stores.url)
    assert match, stores.url
    return match.group(1)


def keys_by_master(cluster: RedisClusterProcesses, prefix: str) -> dict[int, list[str]]:
    """Every key under ``prefix``, grouped by the master (port) that holds it."""
    found: dict[int, list[str]] = {}
    for port in cluster.ports:
        client = redis.Redis(host=LOOPBACK, port=port, decode_responses=True)
        try:
            found[port] = list(client.scan_iter(match=f"{prefix}:*", count=1000))
        finally:
            client.close()
    return found


async def test_one_accounts_keys_share_a_slot_and_accounts_spread_over_masters(
    redis_cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    """An account's keys (hash tag ``{account}``) share one slot; accounts spread over masters."""
    ids = [f"acct-{uuid.uuid4().hex[:8]}" for _ in range(ACCOUNTS)]
    async with cluster_stores(redis_cluster, tmp_path) as stores:
        await add_accounts(stores, ids)
        claim_expiry = NOW + timedelta(days=1)
        for account_id in ids:
            claim = IdempotencyClaim(f"idem-{account_id}", "fingerprint", claim_expiry)
            outcome = await stores.counters.consume(
                account_id, "insights", DAY, 2, TOTAL, claim, NOW
            )
            assert (outcome.granted, outcome.used) == (True, 2)
            event = UsageEvent(f"ev-{account_id}", account_id, "insights", 3, DAY, TOTAL, NOW)
            assert (await stores.counters.record_events([event])).accepted == 1
            [row] = await stores.counters.usage(account_id, "insights", DAY, DAY)
            assert row.used == 5
        # Inspect while the namespace (and its keys) still exists.
        placed = keys_by_master(redis_cluster, prefix_of(stores))
        check_placement(redis_cluster, placed, ids)


def check_placement(
    cluster: RedisClusterProcesses, placed: dict[int, list[str]], ids: list[str]
) -> None:
    """Each account's keys in one slot of one master; the accounts on more than one master."""
    # Which master holds each account's keys, and which slot each key hashes to.
    masters_of: dict[str, set[int]] = defaultdict(set)
    keys_of: dict[str, list[str]] = defaultdict(list)
    for port, keys in placed.items():
        for key in keys:
            tag = TAG.search(key)
            assert tag is not None, f"a key shared by accounts: {key}"
            masters_of[tag.group(1)].add(port)
            keys_of[tag.group(1)].append(key)
    assert set(keys_of) == set(ids), sorted(keys_of)
    keys_in_slot: dict[tuple[int, int], int] = defaultdict(int)
    for account_id, keys in keys_of.items():
        # Counter, Idempotency-Key answer, marker, a consume call's replies kept for a
        # resend (event ids are de-duplicated in SQL).
        assert {key.split(":")[2] for key in keys} == {"u", "i", "m", "b"}, keys
        slots = {cluster_keyslot(cluster, key) for key in keys}
        assert slots == {cluster_keyslot(cluster, account_id)}, (account_id, keys)
        assert len(masters_of[account_id]) == 1, (account_id, masters_of[account_id])
        keys_in_slot[(*masters_of[account_id], *slots)] += len(keys)
    for (port, slot), count in keys_in_slot.items():
        # The master that SCANned the keys owns their slot, and holds nothing else in it.
        assert count_keys_in_slot(port, slot) == count, (port, slot)
    assert len({port for ports in masters_of.values() for port in ports}) > 1, masters_of


def cluster_keyslot(cluster: RedisClusterProcesses, key: str) -> int:
    """CLUSTER KEYSLOT of ``key``, as the cluster computes it."""
    client = redis.Redis(host=LOOPBACK, port=cluster.ports[0])
    try:
        return int(client.execute_command("CLUSTER", "KEYSLOT", key))
    finally:
        client.close()


def count_keys_in_slot(port: int, slot: int) -> int:
    """CLUSTER COUNTKEYSINSLOT on the master at ``port``."""
    client = redis.Redis(host=LOOPBACK, port=port)
    try:
        return int(client.execute_command("CLUSTER", "COUNTKEYSINSLOT", slot))
    finally:
        client.close()


def drop_namespace(cluster: RedisClusterProcesses, prefix: str) -> None:
    """Delete every key under ``prefix``, as a Redis restarted without its data would."""
    for port, keys in keys_by_master(cluster, prefix).items():
        client = redis.Redis(host=LOOPBACK, port=port)
        try:
            for key in keys:
                client.delete(key)
        finally:
            client.close()


async def test_cluster_counters_flush_to_sql_and_reload_after_a_loss(
    redis_cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    """Counters flushed from the cluster reach the SQL records, and a lost counter is reloaded."""
    async with cluster_stores(redis_cluster, tmp_path) as stores:
        await add_accounts(stores, ["flushed"])
        for _ in range(5):
            assert (await stores.counters.consume("flushed", "insights", DAY, 1, TOTAL)).granted
        await redis_counters(stores).flush()
        [row] = await redis_counters(stores).records.usage("flushed", "insights", DAY, DAY)
        assert (row.used, row.total) == (5, TOTAL)

        drop_namespace(redis_cluster, prefix_of(stores))
        outcome = await stores.counters.consume("flushed", "insights", DAY, 1, TOTAL)
        assert (outcome.granted, outcome.used) == (True, 6)  # not restarted from zero
        [row] = await stores.counters.usage("flushed", "insights", DAY, DAY)
        assert row.used == 6


async def test_a_burst_on_a_freshly_opened_cluster_store_is_answered(
    redis_cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    """50 concurrent consumes right after open (below any pool limit) grant 50 of 100, none fail."""
    async with cluster_stores(redis_cluster, tmp_path) as stores:
        await add_accounts(stores, ["burst"])
        results = await asyncio.gather(
            *(stores.counters.consume("burst", "insights", DAY, 1, TOTAL) for _ in range(50)),
            return_exceptions=True,
        )
        failures = [repr(r) for r in results if isinstance(r, BaseException)]
        # A regression test: RedisCounters.open once left the cluster client to learn the slot
        # map lazily, and a first burst raced in redis-py's initialisation, some calls dying
        # with AttributeError("'NoneType' object has no attribute 'writelines'").
        assert failures == []
        assert sum(r.granted for r in results if not isinstance(r, BaseException)) == 50


async def test_a_burst_beyond_a_hundred_waits_for_cluster_connections(
    redis_cluster: RedisClusterProcesses, tmp_path: Path
) -> None:
    """150 concurrent consumes on one account (one master) queue for connections, none fail."""
    async with cluster_stores(redis_cluster, tmp_path) as stores:
        await add_accounts(stores, ["crowd"])
        assert (await stores.counters.consume("crowd", "insights", DAY, 1, 1000)).granted  # warm up
        results = await asyncio.gather(
            *(stores.counters.consume("crowd", "insights", DAY, 1, 1000) for _ in range(150)),
            return_exceptions=True,
        )
        failures = Counter(repr(r.__cause__) for r in results if isinstance(r, BaseException))
        # A regression test: redis-py's cluster client allows 100 connections per node and
        # raises MaxConnectionsError past them (a StorageError: 503, or an uncounted
        # fail-open allow) instead of queueing; RedisCounters bounds its in-flight commands.
        assert failures == Counter()
        assert all(r.granted for r in results if not isinstance(r, BaseException))
