"""Verify-and-consume (SPEC 4.2): atomic, all-or-nothing, idempotent, with quota headers."""

from __future__ import annotations

import asyncio

import httpx2
import pytest

from quotad.domain import keys
from tests.conftest import OPERATOR, Deployment

with_cluster = True  # also run the store-backed tests on a Redis Cluster


async def verify(
    client: httpx2.AsyncClient,
    key: str,
    cost: int = 1,
    service: str = "insights",
    headers: dict[str, str] | None = None,
) -> httpx2.Response:
    """POST /v1/verify as the operator."""
    return await client.post(
        "/v1/verify",
        json={"key": key, "service": service, "cost": cost},
        headers={**OPERATOR, **(headers or {})},
    )


async def test_valid_consume_reports_state_in_body_and_headers(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A granted consume answers VALID with used/remaining/total/reset and the quota headers."""
    response = await verify(client, deployment.key, 3)
    assert response.status_code == 200
    assert response.json() == {
        "valid": True,
        "code": "VALID",
        "account_id": "acme",
        "service": "insights",
        "used": 3,
        "remaining": 247,
        "total": 250,
        "reset": "2024-11-08T00:00:00Z",
        # Limits v2 (SPEC 9): a version-1 plan's one daily limit, and no refusal.
        "limits": [
            {
                "name": "insights.day",
                "window": "day",
                "per": "account",
                "mode": "hard",
                "used": 3,
                "remaining": 247,
                "total": 250,
                "reset": "2024-11-08T00:00:00Z",
            }
        ],
        "overage": 0,
        "would_refuse": [],
        "refused_by": None,
    }
    headers = response.headers
    assert headers["RateLimit-Policy"] == '"insights";q=250;w=86400'
    assert headers["RateLimit"] == '"insights";r=247;t=43200'
    assert headers["X-RateLimit-Limit"] == "250"
    assert headers["X-RateLimit-Remaining"] == "247"
    assert headers["X-RateLimit-Reset"] == "1731024000"
    assert "Retry-After" not in headers


async def test_consume_is_all_or_nothing(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A cost that would pass the total consumes nothing, counts a rejection, and says when to retry."""
    assert (await verify(client, deployment.key, 249)).json()["remaining"] == 1
    refused = await verify(client, deployment.key, 2)
    assert refused.status_code == 200
    assert refused.json()["valid"] is False
    assert refused.json()["code"] == "QUOTA_EXCEEDED"
    assert refused.json()["used"] == 249
    assert refused.headers["Retry-After"] == "43200"
    assert refused.headers["X-RateLimit-Remaining"] == "1"
    assert (await verify(client, deployment.key, 1)).json()["remaining"] == 0
    export = await client.get("/admin/v1/export", headers=OPERATOR)
    line = next(row for row in export.text.splitlines() if '"insights"' in row)
    assert '"used":250' in line
    assert '"rejected":1' in line


async def test_cost_zero_peeks_without_consuming(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """cost 0 reports the quota state and consumes nothing."""
    await verify(client, deployment.key, 10)
    peek = await verify(client, deployment.key, 0)
    assert (peek.json()["valid"], peek.json()["used"]) == (True, 10)


@pytest.mark.parametrize(
    ("key", "code"),
    [
        ("garbage", "MALFORMED_API_KEY"),
        (keys.generate("qd"), "INVALID_AUTHORIZATION"),
    ],
    ids=["malformed", "unknown"],  # fixed: every pytest-xdist worker collects the same ids
)
async def test_bad_keys_are_invalid_verdicts(
    client: httpx2.AsyncClient, deployment: Deployment, key: str, code: str
) -> None:
    """A malformed or unknown key is a 200 verdict with valid=false and the precise code."""
    response = await verify(client, key)
    assert response.status_code == 200
    assert response.json()["valid"] is False
    assert response.json()["code"] == code
    assert response.json()["account_id"] is None


async def test_verify_requires_the_operator_token(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Without the operator token, or with a customer key in its place, verify is 401."""
    body = {"key": deployment.key, "service": "insights"}
    response = await client.post("/v1/verify", json=body)
    assert (response.status_code, response.json()["error"]) == (401, "MISSING_API_KEY")
    response = await client.post("/v1/verify", json=body, headers=deployment.bearer)
    assert (response.status_code, response.json()["error"]) == (401, "INVALID_AUTHORIZATION")


async def test_unknown_service_is_404(client: httpx2.AsyncClient, deployment: Deployment) -> None:
    """Verify against a service that is not configured is 404 NOT_FOUND."""
    response = await verify(client, deployment.key, service="weather")
    assert (response.status_code, response.json()["error"]) == (404, "NOT_FOUND")


@pytest.mark.parametrize(
    "body",
    [
        {"key": "x", "service": "insights", "cost": -1},
        {"key": "x", "service": "insights", "cost": 10**20},
        {"key": "x", "service": "insights", "cost": "one"},
        {"service": "insights"},
        {"key": "x", "service": "insights", "extra": True},
    ],
)
async def test_invalid_bodies_are_400(
    client: httpx2.AsyncClient, deployment: Deployment, body: dict[str, object]
) -> None:
    """Negative, huge or non-integer costs, missing keys and unknown fields are 400."""
    response = await client.post("/v1/verify", json=body, headers=OPERATOR)
    assert (response.status_code, response.json()["error"]) == (400, "VALIDATION_FAILED")
    assert response.json()["validationErrors"]


async def test_idempotency_key_replays_the_first_answer(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A repeated Idempotency-Key returns the first answer and consumes nothing more."""
    first = await verify(client, deployment.key, 5, headers={"Idempotency-Key": "req-1"})
    again = await verify(client, deployment.key, 5, headers={"Idempotency-Key": "req-1"})
    assert first.json() == again.json()
    assert again.json()["used"] == 5
    other = await verify(client, deployment.key, 5, headers={"Idempotency-Key": "req-2"})
    assert other.json()["used"] == 10


async def test_concurrent_idempotent_retries_consume_once(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Twenty concurrent requests with one Idempotency-Key consume exactly once."""
    answers = await asyncio.gather(
        *[
            verify(client, deployment.key, 7, headers={"Idempotency-Key": "burst"})
            for _ in range(20)
        ]
    )
    assert {a.json()["used"] for a in answers} == {7}
    assert (await verify(client, deployment.key, 0)).json()["used"] == 7


async def test_idempotency_key_with_a_different_body_is_409(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Reusing an Idempotency-Key with another cost is 409 CONFLICT and changes nothing."""
    await verify(client, deployment.key, 5, headers={"Idempotency-Key": "req-1"})
    response = await verify(client, deployment.key, 6, headers={"Idempotency-Key": "req-1"})
    assert (response.status_code, response.json()["error"]) == (409, "CONFLICT")
    assert (await verify(client, deployment.key, 0)).json()["used"] == 5


async def test_idempotency_key_expires_after_24_hours(
    client: httpx2.AsyncClient, deployment: Deployment, clock: object
) -> None:
    """After the retention period the same Idempotency-Key consumes again."""
    from quotad.testing import FakeClock

    assert isinstance(clock, FakeClock)
    await verify(client, deployment.key, 5, headers={"Idempotency-Key": "daily"})
    clock.advance(hours=24, seconds=1)
    again = await verify(client, deployment.key, 5, headers={"Idempotency-Key": "daily"})
    assert again.json()["used"] == 5  # a new day, consumed afresh
    assert again.json()["reset"] == "2024-11-09T00:00:00Z"


async def test_refused_idempotent_request_replays_the_refusal(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A refused consume is replayed as refused even after quota is credited back."""
    refused = await verify(client, deployment.key, 300, headers={"Idempotency-Key": "big"})
    assert refused.json()["code"] == "QUOTA_EXCEEDED"
    again = await verify(client, deployment.key, 300, headers={"Idempotency-Key": "big"})
    assert again.json() == refused.json()


async def test_malformed_idempotency_key_is_400(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """An Idempotency-Key longer than 255 characters is refused with 400."""
    response = await verify(client, deployment.key, headers={"Idempotency-Key": "x" * 256})
    assert (response.status_code, response.json()["error"]) == (400, "VALIDATION_FAILED")


async def test_account_override_changes_the_total(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A per-account quota override replaces the plan's total on the next consume."""
    await client.patch(
        "/admin/v1/accounts/acme",
        json={"overrides": {"quotas": {"insights": {"total": 1000}}}},
        headers=OPERATOR,
    )
    assert (await verify(client, deployment.key, 500)).json()["total"] == 1000


async def test_service_not_in_plan_is_forbidden_verdict(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A registered service the account's plan has no quota for is a FORBIDDEN verdict."""
    await client.post("/admin/v1/services", json={"name": "weather"}, headers=OPERATOR)
    response = await verify(client, deployment.key, service="weather")
    assert (response.status_code, response.json()["code"]) == (200, "FORBIDDEN")
