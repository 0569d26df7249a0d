"""A give-back on PostgreSQL (a grant committed after its caller was answered 503) applies
once, even when the answer to its COMMIT is lost and it is tried again."""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, date, datetime
from urllib.parse import urlsplit

import psycopg
import pytest

from quotad.domain.models import Account, AccountStatus, Overrides, Plan, Quota
from quotad.storage.sql import SqlStore
from tests.faults import BlackholeProxy, noting_answers, with_address
from tests.servers import postgres_schema

pytestmark = pytest.mark.postgresql

DAY = date(2024, 11, 7)
NOW = datetime(2024, 11, 7, 12, tzinfo=UTC)


def used_in_postgresql(url: str) -> int:
    """acme's insights used on DAY, read directly (not through the proxy)."""
    with psycopg.connect(url, autocommit=True) as conn:
        row = conn.execute(
            "SELECT used FROM usage_days WHERE account_id = 'acme' AND service = 'insights'"
            " AND day = %s",
            (DAY.isoformat(),),
        ).fetchone()
    return int(row[0]) if row else 0


async def wait_for(url: str, expected: int, seconds: float = 5.0) -> int:
    """acme's used, polled until it is ``expected`` or ``seconds`` pass."""
    deadline = time.monotonic() + seconds
    while True:
        used = used_in_postgresql(url)
        if used == expected or time.monotonic() >= deadline:
            return used
        await asyncio.sleep(0.05)


def test_a_give_back_whose_commit_answer_was_lost_applies_once() -> None:
    """The give-back commits, its connection is lost before the answer, it is tried again on a
    new connection: the grant is given back once, not twice."""
    with postgres_schema(migrated=True) as direct:
        target = urlsplit(direct)
        assert target.hostname is not None
        assert target.port is not None
        with BlackholeProxy(target.hostname, target.port) as proxy:

            async def scenario() -> None:
                store = SqlStore(with_address(direct, proxy.address))
                await store.open()
                try:
                    await store.create_plan(Plan("p", {"insights": Quota.daily(100)}, (), NOW))
                    await store.create_account(
                        Account("acme", "Acme", "p", "UTC", AccountStatus.ACTIVE, Overrides(), NOW)
                    )
                    consumes = store._consumes
                    seen = noting_answers(consumes._batcher)
                    await store.consume("acme", "insights", DAY, 5, 100)
                    await store.consume("acme", "insights", DAY, 3, 100)
                    request, outcome = seen[-1]
                    proxy.hold_replies_after(b"COMMIT")
                    consumes._abandoned(request, outcome)  # as when its caller stopped waiting
                    assert await wait_for(direct, 5) == 5  # committed; its answer held
                    proxy.release_replies(reset=True)
                    await asyncio.gather(*consumes._refunds)
                    assert used_in_postgresql(direct) == 5
                finally:
                    await store.close()

            asyncio.run(scenario())
