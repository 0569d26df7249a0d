"""Usage days: local midnight rollover, timezones, DST, day totals and the 90-day window."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import httpx2
import pytest

from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment, seed


def utc(text: str) -> datetime:
    """An RFC 3339 instant."""
    return datetime.fromisoformat(text).astimezone(UTC)


def epoch(text: str) -> str:
    """An RFC 3339 instant as Unix seconds, the way X-RateLimit-Reset carries it."""
    return str(int(utc(text).timestamp()))


def date_range(start: str, end: str) -> list[str]:
    """Every ISO date from ``start`` to ``end`` inclusive."""
    first, last = date.fromisoformat(start), date.fromisoformat(end)
    return [(first + timedelta(days=n)).isoformat() for n in range((last - first).days + 1)]


async def verify(client: httpx2.AsyncClient, key: str, cost: int = 1) -> httpx2.Response:
    """POST /v1/verify for insights with the operator token."""
    body = {"key": key, "service": "insights", "cost": cost}
    response = await client.post("/v1/verify", json=body, headers=OPERATOR)
    assert response.status_code == 200, response.text
    return response


async def seed_in(
    client: httpx2.AsyncClient, timezone: str, account_id: str = "acme", total: int = 250
) -> Deployment:
    """The conftest deployment, its account moved to ``timezone``."""
    deployment = await seed(client, account_id, total)
    response = await client.patch(
        f"/admin/v1/accounts/{account_id}", json={"timezone": timezone}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    assert response.json()["timezone"] == timezone
    return deployment


async def history(
    client: httpx2.AsyncClient, deployment: Deployment, query: str = ""
) -> httpx2.Response:
    """GET /usage/insights with the deployment's key."""
    return await client.get(f"/usage/insights{query}", headers={"x-api-key": deployment.key})


def counts(response: httpx2.Response) -> tuple[int, int, int]:
    """The (used, remaining, total) of a verify answer."""
    body = response.json()
    return body["used"], body["remaining"], body["total"]


def rows(response: httpx2.Response) -> list[tuple[str, int, int, int]]:
    """The (date, used, remaining, total) of each history row."""
    assert response.status_code == 200, response.text
    return [(r["date"], r["used"], r["remaining"], r["total"]) for r in response.json()]


@pytest.mark.parametrize(
    ("timezone", "midnight", "before", "after"),
    [
        ("UTC", "2024-11-08T00:00:00Z", "2024-11-07", "2024-11-08"),
        ("America/New_York", "2024-11-08T05:00:00Z", "2024-11-07", "2024-11-08"),
        ("Asia/Tokyo", "2024-11-07T15:00:00Z", "2024-11-07", "2024-11-08"),
        ("Pacific/Kiritimati", "2024-11-07T10:00:00Z", "2024-11-07", "2024-11-08"),
    ],
)
async def test_quota_resets_at_the_accounts_local_midnight(
    client: httpx2.AsyncClient,
    clock: FakeClock,
    *,
    timezone: str,
    midnight: str,
    before: str,
    after: str,
) -> None:
    """Use just before local midnight counts on that day; the quota is whole again at it."""
    clock.set(utc(midnight) - timedelta(seconds=30))
    deployment = await seed_in(client, timezone, total=5)

    granted = await verify(client, deployment.key, 5)
    assert granted.json()["valid"] is True
    assert granted.json()["reset"] == midnight
    assert granted.headers["X-RateLimit-Reset"] == epoch(midnight)
    assert granted.headers["RateLimit"] == '"insights";r=0;t=30'
    refused = await verify(client, deployment.key, 1)
    assert (refused.json()["valid"], refused.json()["code"]) == (False, "QUOTA_EXCEEDED")
    assert counts(refused) == (5, 0, 5)
    assert refused.headers["Retry-After"] == "30"
    assert refused.headers["X-RateLimit-Reset"] == epoch(midnight)
    assert rows(await history(client, deployment)) == [(before, 5, 0, 5)]

    clock.set(utc(midnight))
    assert rows(await history(client, deployment)) == []  # a new day, nothing used yet
    usages = await client.get("/v1/usages", headers=deployment.bearer)
    assert {"insights.daily_queries": 0}.items() <= {
        line["name"]: line["usage"] for line in usages.json()
    }.items()
    again = await verify(client, deployment.key, 1)
    assert again.json()["valid"] is True
    assert counts(again) == (1, 4, 5)
    next_midnight = utc(midnight) + timedelta(days=1)  # no DST change on these dates
    assert again.json()["reset"] == next_midnight.isoformat().replace("+00:00", "Z")
    assert again.headers["X-RateLimit-Reset"] == str(int(next_midnight.timestamp()))
    assert again.headers["RateLimit"] == '"insights";r=4;t=86400'
    assert rows(await history(client, deployment, f"?start_date={before}")) == [
        (before, 5, 0, 5),
        (after, 1, 4, 5),
    ]


async def test_accounts_in_different_zones_are_on_different_days(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """At one instant each account consumes on its own local date, not on UTC's."""
    clock.set(utc("2024-11-08T02:00:00Z"))
    zones = {
        "utc-acct": ("UTC", "2024-11-08"),
        "ny-acct": ("America/New_York", "2024-11-07"),  # 21:00 the day before
        "kiri-acct": ("Pacific/Kiritimati", "2024-11-08"),  # 16:00
        "honolulu": ("Pacific/Honolulu", "2024-11-07"),  # 16:00 the day before
    }
    for account_id, (timezone, local_date) in zones.items():
        deployment = await seed_in(client, timezone, account_id)
        await verify(client, deployment.key, 7)
        assert rows(await history(client, deployment)) == [(local_date, 7, 243, 250)]


@pytest.mark.parametrize(
    ("instant", "local_date", "window", "reset"),
    [
        ("2024-11-03T12:00:00Z", "2024-11-03", 90_000, "2024-11-04T05:00:00Z"),  # fall back
        ("2024-03-10T12:00:00Z", "2024-03-10", 82_800, "2024-03-11T04:00:00Z"),  # spring forward
        ("2024-11-04T12:00:00Z", "2024-11-04", 86_400, "2024-11-05T05:00:00Z"),  # an ordinary day
    ],
)
async def test_dst_days_have_their_true_length(
    client: httpx2.AsyncClient,
    clock: FakeClock,
    *,
    instant: str,
    local_date: str,
    window: int,
    reset: str,
) -> None:
    """On DST change days in New York the quota window is 25 or 23 hours long."""
    clock.set(utc(instant))
    deployment = await seed_in(client, "America/New_York")
    response = await verify(client, deployment.key, 1)
    assert response.headers["RateLimit-Policy"] == f'"insights";q=250;w={window}'
    assert response.json()["reset"] == reset
    assert response.headers["X-RateLimit-Reset"] == epoch(reset)
    reset_in = int((utc(reset) - utc(instant)).total_seconds())
    assert response.headers["RateLimit"] == f'"insights";r=249;t={reset_in}'
    assert rows(await history(client, deployment)) == [(local_date, 1, 249, 250)]


async def test_fall_back_day_runs_from_edt_midnight_to_est_midnight(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """Every instant of New York's 25-hour 2024-11-03 counts on that day, and only those."""
    clock.set(utc("2024-11-03T03:59:59Z"))  # 23:59:59 EDT on 11-02
    deployment = await seed_in(client, "America/New_York")
    await verify(client, deployment.key, 1)
    for instant in (
        "2024-11-03T04:00:00Z",  # 00:00 EDT
        "2024-11-03T05:30:00Z",  # 01:30 EDT, the first time
        "2024-11-03T06:30:00Z",  # 01:30 EST, the second time
        "2024-11-04T04:59:59Z",  # 23:59:59 EST
    ):
        clock.set(utc(instant))
        await verify(client, deployment.key, 10)
    clock.set(utc("2024-11-04T05:00:00Z"))  # 00:00 EST on 11-04
    await verify(client, deployment.key, 100)
    assert rows(await history(client, deployment, "?start_date=2024-11-02")) == [
        ("2024-11-02", 1, 249, 250),
        ("2024-11-03", 40, 210, 250),
        ("2024-11-04", 100, 150, 250),
    ]


async def test_start_date_is_read_in_the_accounts_timezone(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """A date that is today in Tokyo but tomorrow in UTC is accepted for Tokyo only."""
    clock.set(utc("2024-11-07T20:00:00Z"))  # 2024-11-08 05:00 in Tokyo
    tokyo = await seed_in(client, "Asia/Tokyo", "tokyo")
    plain = await seed_in(client, "UTC", "plain")
    for deployment in (tokyo, plain):
        await verify(client, deployment.key, 1)

    assert rows(await history(client, tokyo, "?start_date=2024-11-08")) == [
        ("2024-11-08", 1, 249, 250)
    ]
    assert rows(await history(client, tokyo, "?start_date=2024-11-07&end_date=2024-11-08")) == [
        ("2024-11-07", 0, 250, 250),
        ("2024-11-08", 1, 249, 250),
    ]
    admin = await client.get(
        "/admin/v1/accounts/tokyo/usage/insights?start_date=2024-11-08", headers=OPERATOR
    )
    assert rows(admin) == [("2024-11-08", 1, 249, 250)]

    for query, path in (
        ("?start_date=2024-11-08", "/query/start_date"),
        ("?start_date=2024-11-07&end_date=2024-11-08", "/query/end_date"),
    ):
        response = await history(client, plain, query)
        assert response.status_code == 400, response.text
        body = response.json()
        assert body["error"] == "VALIDATION_FAILED"
        assert body["validationErrors"][0]["path"] == path
    assert rows(await history(client, plain)) == [("2024-11-07", 1, 249, 250)]

    # Adjusting "today" follows the same rule: a future day only for the UTC account.
    adjust = {"date": "2024-11-08", "delta": 2}
    response = await client.post(
        "/admin/v1/accounts/tokyo/usage/insights/adjust", json=adjust, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    response = await client.post(
        "/admin/v1/accounts/plain/usage/insights/adjust", json=adjust, headers=OPERATOR
    )
    assert (response.status_code, response.json()["error"]) == (400, "VALIDATION_FAILED")


async def test_events_land_on_the_local_day_of_their_timestamp(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """A metering event counts on the date its timestamp has in the account's timezone."""
    clock.set(utc("2024-11-08T12:00:00Z"))
    ny = await seed_in(client, "America/New_York", "ny")
    plain = await seed_in(client, "UTC", "plain")
    events = [
        # 22:00 EST on 11-07
        {"id": "ny-1", "account_id": "ny", "amount": 3, "timestamp": "2024-11-08T03:00:00Z"},
        # 23:30 EST on 11-07, written with its offset
        {"id": "ny-2", "account_id": "ny", "amount": 5, "timestamp": "2024-11-07T23:30:00-05:00"},
        # exactly local midnight: 11-08
        {"id": "ny-3", "account_id": "ny", "amount": 4, "timestamp": "2024-11-08T05:00:00Z"},
        {"id": "utc-1", "account_id": "plain", "amount": 3, "timestamp": "2024-11-08T03:00:00Z"},
        # 23:30 in Tokyo is 14:30 UTC on 11-07
        {
            "id": "utc-2",
            "account_id": "plain",
            "amount": 2,
            "timestamp": "2024-11-07T23:30:00+09:00",
        },
    ]
    for item in events:
        item["service"] = "insights"
    response = await client.post("/v1/events", json={"events": events}, headers=OPERATOR)
    assert response.status_code == 200, response.text
    assert response.json() == {"accepted": 5, "duplicates": 0}

    assert rows(await history(client, ny, "?start_date=2024-11-07")) == [
        ("2024-11-07", 8, 242, 250),
        ("2024-11-08", 4, 246, 250),
    ]
    assert rows(await history(client, plain, "?start_date=2024-11-07")) == [
        ("2024-11-07", 2, 248, 250),
        ("2024-11-08", 3, 247, 250),
    ]


async def test_past_days_keep_their_total_when_the_plan_changes(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """A stored day keeps the total it had; today's total follows the plan at the next consume."""
    clock.set(utc("2024-11-06T12:00:00Z"))
    deployment = await seed(client)
    await verify(client, deployment.key, 10)
    clock.advance(days=1)
    await verify(client, deployment.key, 5)

    plan = {
        "quotas": {"insights": {"total": 100}, "scoring": {"total": 100}},
        "limits": [],
    }
    response = await client.put("/admin/v1/plans/plan-acme", json=plan, headers=OPERATOR)
    assert response.status_code == 200, response.text
    assert rows(await history(client, deployment, "?start_date=2024-11-06")) == [
        ("2024-11-06", 10, 240, 250),
        ("2024-11-07", 5, 245, 250),  # stored before the change, not yet consumed since
    ]

    after = await verify(client, deployment.key, 1)
    assert counts(after) == (6, 94, 100)
    assert after.headers["RateLimit-Policy"] == '"insights";q=100;w=86400'
    assert rows(await history(client, deployment, "?start_date=2024-11-05")) == [
        ("2024-11-05", 0, 250, 250),  # no row, before the account: its first total
        ("2024-11-06", 10, 240, 250),
        ("2024-11-07", 6, 94, 100),
    ]

    plan["quotas"] = {"insights": {"total": 3}}
    response = await client.put("/admin/v1/plans/plan-acme", json=plan, headers=OPERATOR)
    assert response.status_code == 200, response.text
    refused = await verify(client, deployment.key, 1)
    assert refused.json()["code"] == "QUOTA_EXCEEDED"
    assert counts(refused) == (6, 0, 3)
    assert rows(await history(client, deployment, "?start_date=2024-11-06")) == [
        ("2024-11-06", 10, 240, 250),
        ("2024-11-07", 6, 0, 3),
    ]


@pytest.mark.parametrize(
    ("timezone", "instant", "today", "first", "too_early"),
    [
        ("Asia/Tokyo", "2024-11-07T20:00:00Z", "2024-11-08", "2024-08-11", "2024-08-10"),
        ("Pacific/Kiritimati", "2024-11-07T12:00:00Z", "2024-11-08", "2024-08-11", "2024-08-10"),
        # a leap February and the spring-forward day inside the window
        ("America/New_York", "2024-04-30T12:00:00Z", "2024-04-30", "2024-02-01", "2024-01-31"),
        ("UTC", "2024-03-31T23:59:59Z", "2024-03-31", "2024-01-02", "2024-01-01"),
    ],
)
async def test_ninety_day_window_counts_days_inclusively(
    client: httpx2.AsyncClient,
    clock: FakeClock,
    *,
    timezone: str,
    instant: str,
    today: str,
    first: str,
    too_early: str,
) -> None:
    """From ``first`` through the account's today is 90 calendar days (allowed); one more is 400."""
    clock.set(utc(instant))
    deployment = await seed_in(client, timezone)
    await verify(client, deployment.key, 1)
    expected = date_range(first, today)
    assert len(expected) == 90

    for query in (f"?start_date={first}&end_date={today}", f"?start_date={first}"):
        response = await history(client, deployment, query)
        assert [day for day, *_ in rows(response)] == expected
        assert rows(response)[-1] == (today, 1, 249, 250)
        assert all(used == 0 for _, used, _, _ in rows(response)[:-1])

    for query in (f"?start_date={too_early}&end_date={today}", f"?start_date={too_early}"):
        response = await history(client, deployment, query)
        assert response.status_code == 400, response.text
        assert response.json()["validationErrors"][0]["path"] == "/query/end_date"
