"""A day's total is the one in force that day, rows or not (SPEC 1): plan and override history."""

from __future__ import annotations

from datetime import UTC, datetime

import httpx2
import pytest

from quotad.testing import FakeClock
from tests.conftest import ADMIN_TOKEN, OPERATOR, Deployment, seed
from tests.test_dashboard import day_groups, sign_in

WINDOW = "start_date=2024-11-07&end_date=2024-11-10"
SEED_KEYS = ["used", "remaining", "total", "date"]


async def ok(response: httpx2.Response, status: int = 200) -> httpx2.Response:
    """``response``, after checking its status."""
    assert response.status_code == status, response.text
    return response


async def consume(http: httpx2.AsyncClient, key: str, cost: int) -> None:
    """One granted verify of ``cost`` insights units."""
    body = {"key": key, "service": "insights", "cost": cost}
    response = await ok(await http.post("/v1/verify", json=body, headers=OPERATOR))
    assert response.json()["valid"] is True


async def change_total(http: httpx2.AsyncClient, how: str, total: int) -> None:
    """Raise acme's insights total to ``total``: another plan, the plan replaced, an override."""
    if how == "plan switched":
        plan = {"id": "big", "quotas": {"insights": {"total": total}, "scoring": {"total": 200}}}
        await ok(await http.post("/admin/v1/plans", json=plan, headers=OPERATOR), 201)
        body: dict[str, object] = {"plan": "big"}
        await ok(await http.patch("/admin/v1/accounts/acme", json=body, headers=OPERATOR))
        # The old plan may go: the history is the account's, not the plan's.
        await ok(await http.delete("/admin/v1/plans/plan-acme", headers=OPERATOR), 204)
    elif how == "plan replaced":
        plan = {"quotas": {"insights": {"total": total}, "scoring": {"total": 200}}}
        await ok(await http.put("/admin/v1/plans/plan-acme", json=plan, headers=OPERATOR))
    else:
        body = {"overrides": {"quotas": {"insights": {"total": total}}}}
        await ok(await http.patch("/admin/v1/accounts/acme", json=body, headers=OPERATOR))


async def rows(http: httpx2.AsyncClient, key: str, query: str = WINDOW) -> list[dict[str, object]]:
    """The customer's ``GET /usage/insights`` rows, each checked to have exactly the seed's keys."""
    response = await ok(await http.get(f"/usage/insights?{query}", headers={"x-api-key": key}))
    found: list[dict[str, object]] = response.json()
    for row in found:
        assert list(row) == SEED_KEYS
    return found


@pytest.mark.parametrize("how", ["plan switched", "plan replaced", "override"])
async def test_days_before_a_change_keep_the_old_total(
    client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock, how: str
) -> None:
    """250 -> 400 on day 3 of 4, use on days 1 and 4: days 1-2 show 250, days 3-4 show 400."""
    await consume(client, deployment.key, 5)  # 2024-11-07
    clock.advance(days=2)
    await change_total(client, how, 400)  # 2024-11-09, nothing used that day
    clock.advance(days=1)
    await consume(client, deployment.key, 3)  # 2024-11-10
    expected = [
        {"used": 5, "remaining": 245, "total": 250, "date": "2024-11-07"},
        {"used": 0, "remaining": 250, "total": 250, "date": "2024-11-08"},
        {"used": 0, "remaining": 400, "total": 400, "date": "2024-11-09"},
        {"used": 3, "remaining": 397, "total": 400, "date": "2024-11-10"},
    ]
    assert await rows(client, deployment.key) == expected
    admin = await client.get(f"/admin/v1/accounts/acme/usage/insights?{WINDOW}", headers=OPERATOR)
    assert (await ok(admin)).json() == expected


async def test_dashboard_chart_draws_each_days_own_total(
    client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock
) -> None:
    """The account chart's dashed total follows the history, as the usage endpoint does."""
    await consume(client, deployment.key, 5)
    clock.advance(days=2)
    await change_total(client, "plan replaced", 400)
    clock.advance(days=1)
    await consume(client, deployment.key, 3)
    assert (await sign_in(client, "dashboard", ADMIN_TOKEN)).status_code == 303
    page = await ok(await client.get("/dashboard/accounts/acme?start=2024-11-07&end=2024-11-10"))
    assert day_groups(page.text) == {
        "2024-11-07": (5, 250),
        "2024-11-08": (0, 250),
        "2024-11-09": (0, 400),
        "2024-11-10": (3, 400),
    }


async def test_several_changes_each_hold_from_their_day(
    client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock
) -> None:
    """250, then 300 from day 2, then 400 from day 4 (twice changed that day: the last counts)."""
    clock.advance(days=1)
    await change_total(client, "override", 300)
    clock.advance(days=2)
    await change_total(client, "override", 350)
    await change_total(client, "override", 400)
    await consume(client, deployment.key, 1)
    totals = [row["total"] for row in await rows(client, deployment.key)]
    assert totals == [250, 300, 300, 400]


async def test_a_change_counts_from_the_accounts_local_day(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """In Pacific/Auckland (UTC+13) a change at 11:30 UTC on the 8th holds from the local 9th."""
    acme = await seed(client)
    body = {"timezone": "Pacific/Auckland"}
    await ok(await client.patch("/admin/v1/accounts/acme", json=body, headers=OPERATOR))
    clock.set(datetime(2024, 11, 8, 11, 30, tzinfo=UTC))  # 2024-11-09 00:30 in Auckland
    await change_total(client, "override", 400)
    await consume(client, acme.key, 2)
    query = "start_date=2024-11-08&end_date=2024-11-09"
    assert [(row["date"], row["total"]) for row in await rows(client, acme.key, query)] == [
        ("2024-11-08", 250),
        ("2024-11-09", 400),
    ]


async def test_past_days_written_after_a_change_get_that_days_total(
    client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock
) -> None:
    """An adjustment or an event landing on a day before the change stores that day's total."""
    clock.advance(days=2)
    await change_total(client, "plan replaced", 400)  # scoring 100 -> 200 too
    path = "/admin/v1/accounts/acme/usage/insights/adjust"
    adjusted = await client.post(path, json={"date": "2024-11-08", "delta": 10}, headers=OPERATOR)
    assert (await ok(adjusted)).json() == {
        "used": 10,
        "remaining": 240,
        "total": 250,
        "date": "2024-11-08",
    }
    event = {
        "id": "ev-1",
        "account_id": "acme",
        "service": "scoring",
        "amount": 4,
        "timestamp": "2024-11-08T09:00:00Z",
    }
    await ok(await client.post("/v1/events", json={"events": [event]}, headers=OPERATOR))
    scoring = await client.get(
        "/usage/scoring?start_date=2024-11-08&end_date=2024-11-09", headers=deployment.bearer
    )
    assert [(row["date"], row["total"]) for row in (await ok(scoring)).json()] == [
        ("2024-11-08", 100),
        ("2024-11-09", 200),
    ]
