"""The two seed endpoints, exactly as their documents describe them (SPEC 3.1, 3.2)."""

from __future__ import annotations

import httpx2
import pytest

from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment

with_cluster = True  # also run the store-backed tests on a Redis Cluster


async def consume(
    client: httpx2.AsyncClient, key: str, cost: int = 1, service: str = "insights"
) -> httpx2.Response:
    """Verify-and-consume through the operator route."""
    body = {"key": key, "service": service, "cost": cost}
    return await client.post("/v1/verify", json=body, headers=OPERATOR)


async def test_usages_lists_limits_and_quotas_with_exactly_four_keys(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """GET /v1/usages returns one object per limit and quota, each with the seed's four keys."""
    await client.put(
        f"/admin/v1/accounts/{deployment.account_id}/limits/cohort.max_count",
        json={"usage": 10},
        headers=OPERATOR,
    )
    await consume(client, deployment.key, 125)
    response = await client.get("/v1/usages", headers=deployment.bearer)
    assert response.status_code == 200
    assert response.json() == [
        {
            "description": "Number of known contacts (KCs) allowed",
            "limit": 10,
            "name": "cohort.max_count",
            "usage": 10,
        },
        {
            "description": "Daily insights queries",
            "limit": 250,
            "name": "insights.daily_queries",
            "usage": 125,
        },
        {
            "description": "Daily scoring queries",
            "limit": 100,
            "name": "scoring.daily_queries",
            "usage": 0,
        },
    ]


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "MISSING_API_KEY"),
        ({"Authorization": "Basic abc"}, "INVALID_AUTHORIZATION"),
        ({"Authorization": "Bearer"}, "INVALID_AUTHORIZATION"),
        ({"Authorization": "Bearer qd_short"}, "MALFORMED_API_KEY"),
        ({"x-api-key": "qd_" + "A" * 36}, "MALFORMED_API_KEY"),
        ({"Authorization": "Bearer qd_2oAhtx1tqafJlZZhChr0o9PqXgf4Zv0OsNkY"}, "MALFORMED_API_KEY"),
    ],
)
async def test_usages_key_problems_are_401(
    client: httpx2.AsyncClient, deployment: Deployment, headers: dict[str, str], code: str
) -> None:
    """Seed 000 answers 401 with the precise code for every key problem."""
    response = await client.get("/v1/usages", headers=headers)
    assert response.status_code == 401
    body = response.json()
    assert body["error"] == code
    assert set(body) == {"error", "id", "note", "validationErrors"}


@pytest.mark.parametrize(
    ("headers", "code"),
    [
        ({}, "MISSING_API_KEY"),
        ({"Authorization": "Token abc"}, "INVALID_AUTHORIZATION"),
        ({"x-api-key": "not-a-key"}, "MALFORMED_API_KEY"),
    ],
)
async def test_usage_history_key_problems_are_403(
    client: httpx2.AsyncClient, deployment: Deployment, headers: dict[str, str], code: str
) -> None:
    """Seed 003 answers 403 "Invalid API Key" for every key problem, with the precise code."""
    response = await client.get("/usage/insights", headers=headers)
    assert response.status_code == 403
    assert response.json()["error"] == code


async def test_unknown_revoked_and_expired_keys(
    client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock
) -> None:
    """An unknown or revoked key is INVALID_AUTHORIZATION and an expired one EXPIRED_API_KEY."""
    from quotad.domain import keys

    unknown = keys.generate("qd")
    response = await client.get("/v1/usages", headers={"x-api-key": unknown})
    assert (response.status_code, response.json()["error"]) == (401, "INVALID_AUTHORIZATION")

    expiring = await client.post(
        f"/admin/v1/accounts/{deployment.account_id}/keys",
        json={"name": "short", "expires_at": "2024-11-07T13:00:00Z"},
        headers=OPERATOR,
    )
    key = expiring.json()["key"]
    assert (await client.get("/usage/insights", headers={"x-api-key": key})).status_code == 200
    clock.advance(hours=2)
    response = await client.get("/usage/insights", headers={"x-api-key": key})
    assert (response.status_code, response.json()["error"]) == (403, "EXPIRED_API_KEY")
    response = await client.get("/v1/usages", headers={"x-api-key": key})
    assert (response.status_code, response.json()["error"]) == (401, "EXPIRED_API_KEY")

    await client.delete(f"/admin/v1/keys/{deployment.key_id}", headers=OPERATOR)
    response = await client.get("/v1/usages", headers=deployment.bearer)
    assert (response.status_code, response.json()["error"]) == (401, "INVALID_AUTHORIZATION")


async def test_history_today_is_empty_until_something_is_used(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """With no dates, today only; [] while nothing was used, one row once something was."""
    response = await client.get("/usage/insights", headers={"x-api-key": deployment.key})
    assert (response.status_code, response.json()) == (200, [])
    await consume(client, deployment.key, 5)
    response = await client.get("/usage/insights", headers={"x-api-key": deployment.key})
    assert response.json() == [{"used": 5, "remaining": 245, "total": 250, "date": "2024-11-07"}]
    assert list(response.json()[0]) == ["used", "remaining", "total", "date"]


async def test_history_range_has_every_day_ascending(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A range returns one row per day, ascending, days without use included as 0."""
    path = f"/admin/v1/accounts/{deployment.account_id}/usage/insights/adjust"
    for day, delta in (("2024-11-01", 125), ("2024-11-03", 250)):
        response = await client.post(path, json={"date": day, "delta": delta}, headers=OPERATOR)
        assert response.status_code == 200, response.text
    response = await client.get(
        "/usage/insights?start_date=2024-11-01&end_date=2024-11-04", headers=deployment.bearer
    )
    assert response.json() == [
        {"used": 125, "remaining": 125, "total": 250, "date": "2024-11-01"},
        {"used": 0, "remaining": 250, "total": 250, "date": "2024-11-02"},
        {"used": 250, "remaining": 0, "total": 250, "date": "2024-11-03"},
        {"used": 0, "remaining": 250, "total": 250, "date": "2024-11-04"},
    ]
    response = await client.get("/usage/insights?start_date=2024-11-05", headers=deployment.bearer)
    assert response.json() == []
    response = await client.get("/usage/insights?start_date=2024-11-03", headers=deployment.bearer)
    assert [row["date"] for row in response.json()] == [
        "2024-11-03",
        "2024-11-04",
        "2024-11-05",
        "2024-11-06",
        "2024-11-07",
    ]


@pytest.mark.parametrize(
    ("query", "path"),
    [
        ("end_date=2024-11-05", "/query/start_date"),
        ("start_date=2024-11-05&end_date=2024-11-01", "/query/start_date"),
        ("start_date=2024-08-01&end_date=2024-11-01", "/query/end_date"),
        ("start_date=2024-11-08", "/query/start_date"),
        ("start_date=2024-11-01&end_date=2024-11-08", "/query/end_date"),
        ("start_date=2024-02-30", "/query/start_date"),
        ("start_date=20241101", "/query/start_date"),
        ("start_date=2024-11-01&end_date=yesterday", "/query/end_date"),
    ],
)
async def test_history_bad_dates_are_400(
    client: httpx2.AsyncClient, deployment: Deployment, query: str, path: str
) -> None:
    """Every rule of SPEC 3.2's dates answers 400 VALIDATION_FAILED naming the field."""
    response = await client.get(f"/usage/insights?{query}", headers=deployment.bearer)
    assert response.status_code == 400
    body = response.json()
    assert body["error"] == "VALIDATION_FAILED"
    assert body["validationErrors"][0]["path"] == path
    assert body["validationErrors"][0]["context"]["errorType"]


async def test_history_window_of_exactly_90_days_is_allowed(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A window of 90 days inclusive is accepted; 91 is refused."""
    await consume(client, deployment.key, 1)
    ok = await client.get(
        "/usage/insights?start_date=2024-08-10&end_date=2024-11-07", headers=deployment.bearer
    )
    assert ok.status_code == 200
    assert len(ok.json()) == 90
    too_long = await client.get(
        "/usage/insights?start_date=2024-08-09&end_date=2024-11-07", headers=deployment.bearer
    )
    assert too_long.status_code == 400


async def test_unknown_service_and_path_are_404(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """An unknown service or path is 404 NOT_FOUND with the error body."""
    response = await client.get("/usage/weather", headers=deployment.bearer)
    assert (response.status_code, response.json()["error"]) == (404, "NOT_FOUND")
    response = await client.get("/nowhere", headers=deployment.bearer)
    assert (response.status_code, response.json()["error"]) == (404, "NOT_FOUND")


async def test_api_version_is_echoed_and_checked(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """api-version v1 or none is served as v1 and echoed; an unknown one is 400."""
    response = await client.get(
        "/usage/insights", headers={**deployment.bearer, "api-version": "v1"}
    )
    assert (response.status_code, response.headers["api-version"]) == (200, "v1")
    response = await client.get("/usage/insights", headers=deployment.bearer)
    assert response.headers["api-version"] == "v1"
    response = await client.get(
        "/usage/insights", headers={**deployment.bearer, "api-version": "v9"}
    )
    assert (response.status_code, response.json()["error"]) == (400, "VALIDATION_FAILED")
    assert response.headers["api-version"] == "v1"


async def test_suspended_account_is_forbidden(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A key of a suspended account gets 403 FORBIDDEN on both customer endpoints."""
    await client.patch(
        f"/admin/v1/accounts/{deployment.account_id}",
        json={"status": "suspended"},
        headers=OPERATOR,
    )
    for path in ("/v1/usages", "/usage/insights"):
        response = await client.get(path, headers=deployment.bearer)
        assert (response.status_code, response.json()["error"]) == (403, "FORBIDDEN")


async def test_scoped_key_without_usage_read_is_forbidden(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A key limited to consume scopes may not read usage (403 FORBIDDEN)."""
    response = await client.post(
        f"/admin/v1/accounts/{deployment.account_id}/keys",
        json={"name": "consumer", "scopes": ["consume:insights"]},
        headers=OPERATOR,
    )
    key = response.json()["key"]
    response = await client.get("/v1/usages", headers={"x-api-key": key})
    assert (response.status_code, response.json()["error"]) == (403, "FORBIDDEN")
    verdict = await consume(client, key, 1, "insights")
    assert verdict.json()["code"] == "VALID"
    verdict = await consume(client, key, 1, "scoring")
    assert verdict.json()["code"] == "FORBIDDEN"
