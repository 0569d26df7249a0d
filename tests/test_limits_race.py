"""Limits v2 under a race: 600 concurrent verifies over three nodes never pass any limit.

The plan holds a rate (50/s, burst 50), 250 a day and 400 a month for the account, and
100 a day for each of its three keys (the first key sends half the calls). The verifies
come in ten waves of 60 spread over three nodes (three apps, each with its own connections
to one store; the memory store is shared by the three), with the clock moving one second
between waves and a day after the sixth, so that every limit is reached at some point. Afterwards every stored counter equals the sum
of the costs its limit granted, computed here from the verdicts (the model), exactly.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from typing import Any

import httpx2
import pytest

from quotad.storage import Stores
from quotad.testing import FakeClock
from tests.conftest import OPERATOR
from tests.nodes import three_nodes

with_cluster = True

KEYS = 3
WAVE = 60
WAVES = 10
RATE, BURST, DAY, MONTH, KEY_DAY = 50, 50, 250, 400, 100
PLAN = {
    "id": "race",
    "quotas": {
        "insights": [
            {"rate": {"per_second": RATE, "burst": BURST}},
            {"window": "day", "total": DAY},
            {"window": "month", "total": MONTH},
            {"window": "day", "total": KEY_DAY, "per": "key"},
        ]
    },
}


async def _provision(http: httpx2.AsyncClient) -> list[tuple[str, str]]:
    """The service, the plan, one account in UTC and its three keys: ``(key id, key)``."""
    for path, body in (
        ("/admin/v1/services", {"name": "insights"}),
        ("/admin/v1/plans", PLAN),
        ("/admin/v1/accounts", {"id": "fleet", "name": "Fleet", "plan": "race", "timezone": "UTC"}),
    ):
        response = await http.post(path, json=body, headers=OPERATOR)
        assert response.status_code == 201, (path, response.text)
    keys = []
    for n in range(KEYS):
        response = await http.post(
            "/admin/v1/accounts/fleet/keys", json={"name": f"k{n}"}, headers=OPERATOR
        )
        assert response.status_code == 201, response.text
        keys.append((response.json()["id"], response.json()["key"]))
    return keys


@pytest.fixture
async def cluster_of_three(
    stores: Stores, clock: FakeClock
) -> AsyncIterator[list[httpx2.AsyncClient]]:
    """Three nodes over the test's store."""
    async with AsyncExitStack() as stack:
        yield [client for client, _ in await three_nodes(stores, clock, stack)]


async def test_600_verifies_over_three_nodes_never_pass_a_limit(
    cluster_of_three: list[httpx2.AsyncClient], clock: FakeClock
) -> None:
    """No limit is ever passed, each is reached, and every counter equals the granted sum."""
    nodes = cluster_of_three
    keys = await _provision(nodes[0])
    clock.set(clock.now().replace(day=29, hour=12))  # 2024-11-29, then the 30th
    granted: Counter[tuple[str, str]] = Counter()  # (key id, day) -> units granted
    refused_by: Counter[str] = Counter()
    for wave in range(WAVES):
        if wave == 6:
            clock.advance(days=1)
        day = clock.now().date().isoformat()

        async def one(n: int) -> tuple[str, dict[str, Any]]:
            key_id, key = keys[max(n % 4 - 1, 0)]  # the first key sends half the calls
            body = {"key": key, "service": "insights", "cost": 1}
            response = await nodes[n % 3].post("/v1/verify", json=body, headers=OPERATOR)
            assert response.status_code == 200, response.text
            return key_id, response.json()

        for key_id, verdict in await asyncio.gather(*(one(n) for n in range(WAVE))):
            if verdict["valid"]:
                granted[key_id, day] += 1
            else:
                refused_by[verdict["refused_by"]] += 1
        clock.advance(seconds=1)

    by_day = Counter[str]()
    for (key_id, day), units in granted.items():
        assert units <= KEY_DAY, (key_id, day, units)
        by_day[day] += units
    assert all(units <= DAY for units in by_day.values()), by_day
    assert sum(by_day.values()) <= MONTH, by_day  # both days are in November
    # The rate's burst, then its rate over the nine seconds the clock moved.
    assert sum(by_day.values()) <= BURST + RATE * (WAVES - 1)
    names = {"insights.rate", "insights.day", "insights.month", "insights.day.key"}
    assert set(refused_by) == names, refused_by  # every limit was reached

    # The stored counters are exactly the sums of what was granted.
    response = await nodes[1].get("/admin/v1/accounts/fleet/quotas", headers=OPERATOR)
    assert response.status_code == 200, response.text
    account_view = {entry["name"]: entry for entry in response.json()}
    today = clock.now().date().isoformat()
    assert account_view["insights.day"]["used"] == by_day[today]
    assert account_view["insights.month"]["used"] == sum(by_day.values())
    for key_id, _ in keys:
        response = await nodes[2].get(f"/admin/v1/keys/{key_id}/quotas", headers=OPERATOR)
        assert response.status_code == 200, response.text
        key_view = {entry["name"]: entry for entry in response.json()}
        assert key_view["insights.day.key"]["used"] == granted[key_id, today], key_id
    rows = await nodes[0].get(
        "/admin/v1/accounts/fleet/usage/insights",
        params={"start_date": "2024-11-29", "end_date": today},
        headers=OPERATOR,
    )
    assert rows.status_code == 200, rows.text
    assert {row["date"]: row["used"] for row in rows.json()} == dict(by_day)
