"""Metering events (SPEC 4.3): recorded on the account's local day, de-duplicated, all or nothing."""

from __future__ import annotations

import httpx2

from tests.conftest import OPERATOR, Deployment


def event(
    ident: str, amount: int = 3, timestamp: str = "2024-11-07T10:00:00Z", **extra: str
) -> dict[str, object]:
    """One event for account acme on insights."""
    return {
        "id": ident,
        "account_id": "acme",
        "service": "insights",
        "amount": amount,
        "timestamp": timestamp,
        **extra,
    }


async def used_on(client: httpx2.AsyncClient, day: str) -> int:
    """What acme used of insights on ``day``."""
    rows = await client.get(
        f"/admin/v1/accounts/acme/usage/insights?start_date={day}&end_date={day}", headers=OPERATOR
    )
    return int(rows.json()[0]["used"]) if rows.json() else 0


async def test_events_are_counted_once_by_id(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A batch answers accepted/duplicates and a repeated id adds nothing."""
    first = await client.post(
        "/v1/events", json={"events": [event("e1"), event("e2", 4)]}, headers=OPERATOR
    )
    assert first.json() == {"accepted": 2, "duplicates": 0}
    again = await client.post(
        "/v1/events",
        json={"events": [event("e2", 4), event("e3", 1), event("e3", 1)]},
        headers=OPERATOR,
    )
    assert again.json() == {"accepted": 1, "duplicates": 2}
    assert await used_on(client, "2024-11-07") == 8


async def test_events_may_pass_the_total(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Late events are recorded even past the total; remaining stays at zero."""
    await client.post("/v1/events", json={"events": [event("big", 300)]}, headers=OPERATOR)
    rows = await client.get("/usage/insights", headers=deployment.bearer)
    assert rows.json() == [{"used": 300, "remaining": 0, "total": 250, "date": "2024-11-07"}]
    verdict = await client.post(
        "/v1/verify", json={"key": deployment.key, "service": "insights"}, headers=OPERATOR
    )
    assert verdict.json()["code"] == "QUOTA_EXCEEDED"


async def test_events_land_on_their_timestamps_day(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """An event is recorded on the day of its timestamp, not on the day it arrives."""
    await client.post(
        "/v1/events",
        json={"events": [event("old", 5, "2024-11-02T23:59:59+00:00")]},
        headers=OPERATOR,
    )
    assert await used_on(client, "2024-11-02") == 5
    assert await used_on(client, "2024-11-07") == 0


async def test_one_invalid_event_refuses_the_whole_batch(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A batch with bad events is 400 with one validation error per bad event, and records nothing."""
    batch = [
        event("ok-1"),
        event("bad-account", account_id="ghost"),
        event("bad-service", service="weather"),
        event("future", timestamp="2024-11-08T12:00:00Z"),
    ]
    response = await client.post("/v1/events", json={"events": batch}, headers=OPERATOR)
    assert (response.status_code, response.json()["error"]) == (400, "VALIDATION_FAILED")
    paths = [e["path"] for e in response.json()["validationErrors"]]
    assert paths == [
        "/body/events/1/account_id",
        "/body/events/2/service",
        "/body/events/3/timestamp",
    ]
    assert await used_on(client, "2024-11-07") == 0
    again = await client.post("/v1/events", json={"events": [event("ok-1")]}, headers=OPERATOR)
    assert again.json() == {"accepted": 1, "duplicates": 0}


async def test_event_schema_errors_name_the_event(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Schema errors (negative amount, naive timestamp) point at the offending event."""
    batch = [event("a"), event("b", -1), event("c", timestamp="2024-11-07T10:00:00")]
    response = await client.post("/v1/events", json={"events": batch}, headers=OPERATOR)
    assert response.status_code == 400
    paths = {e["path"] for e in response.json()["validationErrors"]}
    assert paths == {"/body/events/1/amount", "/body/events/2/timestamp"}


async def test_batch_size_is_1_to_1000(client: httpx2.AsyncClient, deployment: Deployment) -> None:
    """An empty batch or one of 1,001 events is refused; 1,000 are accepted."""
    assert (
        await client.post("/v1/events", json={"events": []}, headers=OPERATOR)
    ).status_code == 400
    big = [event(f"e{i}", 1) for i in range(1001)]
    assert (
        await client.post("/v1/events", json={"events": big}, headers=OPERATOR)
    ).status_code == 400
    response = await client.post("/v1/events", json={"events": big[:1000]}, headers=OPERATOR)
    assert response.json() == {"accepted": 1000, "duplicates": 0}
    assert await used_on(client, "2024-11-07") == 1000
