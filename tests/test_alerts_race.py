"""Alerts under a race (SPEC 11): 600 concurrent verifies over three nodes notice each
threshold crossing and each first refusal exactly once, on every store.

Account ``daily`` has version 1's 250 a day; account ``windows`` has 200 a day, 1,000 a
month and 80 a day per key, with two keys. 300 calls go to each, spread over three nodes
(three apps, each with its own connections and its own ``Noticer``). The events expected
follow from where the counters end, not from the order the calls ran in: ``daily`` passes
80 % and 100 % and is refused; each key of ``windows`` passes 80 % and 100 % of its own
limit and is refused by it (its 160 units at most never reach the account's day total,
only 80 % of it). Each event is written once, with one delivery to the endpoint.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from contextlib import AsyncExitStack

import httpx2

from quotad.domain.webhooks import EVENT_TYPES, WebhookEndpoint
from quotad.service.context import Context
from quotad.storage import Stores, stores_from_url
from quotad.testing import FakeClock
from tests.conftest import OPERATOR
from tests.nodes import three_nodes
from tests.servers import postgres_schema, redis_namespace

CALLS = 300  # per account
PLANS = [
    {"id": "v1", "quotas": {"insights": {"total": 250}}},
    {
        "id": "v2",
        "quotas": {
            "insights": [
                {"window": "day", "total": 200},
                {"window": "month", "total": 1000},
                {"window": "day", "total": 80, "per": "key"},
            ]
        },
    },
]


async def _post(http: httpx2.AsyncClient, path: str, body: dict[str, object]) -> dict[str, str]:
    response = await http.post(path, json=body, headers=OPERATOR)
    assert response.status_code == 201, (path, response.text)
    found: dict[str, str] = response.json()
    return found


async def test_each_crossing_and_first_refusal_is_one_event(
    stores: Stores, clock: FakeClock
) -> None:
    """Exactly the ten events the final counters imply, each once, each delivered once."""
    async with AsyncExitStack() as stack:
        await _race(await three_nodes(stores, clock, stack), stores, clock)


async def test_redis_over_postgresql_writes_each_event_once(clock: FakeClock) -> None:
    """The same race on Redis counters over PostgreSQL records: each event once."""
    with postgres_schema() as records, redis_namespace(records) as url:
        stores = stores_from_url(url)
        await stores.open()
        try:
            async with AsyncExitStack() as stack:
                await _race(await three_nodes(stores, clock, stack), stores, clock)
        finally:
            await stores.close()


async def _race(
    three_nodes: list[tuple[httpx2.AsyncClient, Context]], stores: Stores, clock: FakeClock
) -> None:
    http = three_nodes[0][0]
    await _post(http, "/admin/v1/services", {"name": "insights"})
    for plan in PLANS:
        await _post(http, "/admin/v1/plans", plan)
    await _post(http, "/admin/v1/accounts", {"id": "daily", "name": "D", "plan": "v1"})
    await _post(http, "/admin/v1/accounts", {"id": "windows", "name": "W", "plan": "v2"})
    daily_key = (await _post(http, "/admin/v1/accounts/daily/keys", {"name": "k"}))["key"]
    window_keys = [
        await _post(http, "/admin/v1/accounts/windows/keys", {"name": f"k{n}"}) for n in range(2)
    ]
    now = clock.now()
    hook = WebhookEndpoint("wh_all", "https://example.com/h", EVENT_TYPES, "whsec_x", now, now)
    await stores.alerts.create_webhook(hook)

    async def one(n: int) -> dict[str, object]:
        key = daily_key if n % 2 == 0 else window_keys[(n // 2) % 2]["key"]
        body = {"key": key, "service": "insights", "cost": 1}
        response = await three_nodes[n % 3][0].post("/v1/verify", json=body, headers=OPERATOR)
        assert response.status_code == 200, response.text
        verdict: dict[str, object] = response.json()
        return verdict

    verdicts = await asyncio.gather(*(one(n) for n in range(2 * CALLS)))
    for _, ctx in three_nodes:
        await ctx.noticer.drain()

    assert sum(1 for v in verdicts if v["valid"]) == 250 + 2 * 80
    day = clock.now().date().isoformat()
    events = await stores.alerts.alert_events(100)
    seen = Counter(
        (
            e.type,
            e.data["account_id"],
            e.data.get("key_id"),
            e.data["limit"],
            e.data.get("threshold"),
        )
        for e in events
    )
    expected = {("quota.threshold", "daily", None, "insights.day", t) for t in (80, 100)}
    expected.add(("quota.exceeded", "daily", None, "insights.day", None))
    expected.add(("quota.threshold", "windows", None, "insights.day", 80))
    for key in window_keys:
        for threshold in (80, 100):
            expected.add(("quota.threshold", "windows", key["id"], "insights.day.key", threshold))
        expected.add(("quota.exceeded", "windows", key["id"], "insights.day.key", None))
    assert set(seen) == expected
    assert all(count == 1 for count in seen.values()), seen
    assert all(e.data["window_start"].startswith(day) for e in events)
    deliveries = await stores.alerts.list_deliveries("wh_all", 100)
    assert sorted(d.event_id for d in deliveries) == sorted(e.id for e in events)
