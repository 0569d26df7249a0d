"""Closing a store while calls are under way (a node shutting down under load): each call
either answers, and what it answered is stored, or fails with a StorageError; the close
waits for the calls it can finish, and leaves no transaction open on the server."""

from __future__ import annotations

import asyncio
import time
import uuid
from pathlib import Path

import psycopg
import pytest
import redis

from quotad.errors import StorageError
from quotad.storage import stores_from_url, under_way
from tests.conftest import store_url
from tests.servers import POSTGRES_URL, REDIS_URL
from tests.test_race import DAY, SHARED_STORES, add_account

CALLS = 120


def sessions_in_a_transaction(name: str) -> int:
    """How many server sessions named ``name`` are inside a transaction now."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        row = admin.execute(
            "SELECT count(*) FROM pg_stat_activity"
            " WHERE application_name = %s AND state LIKE 'idle in transaction%%'",
            (name,),
        ).fetchone()
    return int(row[0]) if row else 0


def redis_connections(name: str) -> int:
    """How many connections named ``name`` Redis has open now."""
    with redis.Redis.from_url(REDIS_URL) as client:
        return sum(1 for entry in client.client_list() if entry.get("name") == name)


@pytest.mark.parametrize("kind", SHARED_STORES)
async def test_closing_under_load_keeps_every_answered_consume(kind: str, tmp_path: Path) -> None:
    """A store closed while 120 consumes are queued or running answers them all before
    it returns: each one granted is in the counters afterwards (read through a new store),
    every other one was refused or failed with a StorageError, and the store left no
    connection open (Redis) nor a transaction (PostgreSQL) behind."""
    name = f"close{uuid.uuid4().hex[:12]}"
    with store_url(kind, tmp_path) as base:
        option = {"postgresql": "application_name", "redis": "client_name"}.get(kind)
        url = f"{base}&{option}={name}" if option else base
        stores = stores_from_url(url)
        await stores.open()
        await add_account(stores)
        calls = [
            asyncio.ensure_future(stores.counters.consume("racer", "insights", DAY, 1, CALLS))
            for _ in range(CALLS)
        ]
        await asyncio.sleep(0)  # the first batch is under way
        await stores.close()
        assert all(call.done() for call in calls)  # the close waited for every one
        results = await asyncio.gather(*calls, return_exceptions=True)
        odd = [
            r for r in results if isinstance(r, BaseException) and not isinstance(r, StorageError)
        ]
        assert odd == []
        granted = sum(1 for r in results if not isinstance(r, BaseException) and r.granted)
        if kind == "postgresql":
            assert sessions_in_a_transaction(name) == 0
        if kind == "redis":
            assert redis_connections(name) == 0
        again = stores_from_url(base)
        await again.open()
        try:
            rows = await again.counters.usage("racer", "insights", DAY, DAY)
            assert sum(row.used for row in rows) == granted
        finally:
            await again.close()


async def test_a_close_waits_for_calls_under_way_only_so_long(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A call that never ends holds a close up for CLOSE_WAIT_SECONDS, no longer; one that
    ends lets the close go on at once."""
    monkeypatch.setattr(under_way, "CLOSE_WAIT_SECONDS", 0.2)
    calls = under_way.UnderWay()
    calls.begin()
    started = time.monotonic()
    assert not await calls.settled()
    assert 0.2 <= time.monotonic() - started < 3.0

    async def ends_soon() -> None:
        await asyncio.sleep(0.05)
        calls.end()

    ending = asyncio.ensure_future(ends_soon())
    started = time.monotonic()
    assert await calls.settled(within=5.0)
    assert time.monotonic() - started < 3.0
    await ending
    assert calls.count == 0
