"""Plan refills (SPEC 10): reset and top-up every window, on DST days and billing anchors."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx2

from quotad.testing import FakeClock
from tests.conftest import OPERATOR

with_cluster = False
BASE = "/admin/v1/accounts/acme"


async def provision(client: httpx2.AsyncClient, refill: dict[str, Any], **account: Any) -> str:
    """A service priced 1 credit a unit, a plan with ``refill``, account acme and a key."""
    plan = {"id": "refilled", "quotas": {"gen": {"total": 100_000}}, "refill": refill}
    body = {"id": "acme", "name": "Acme", "plan": "refilled", **account}
    for path, payload in (
        ("/admin/v1/services", {"name": "gen", "credit_price": 1}),
        ("/admin/v1/plans", plan),
        ("/admin/v1/accounts", body),
        (f"{BASE}/keys", {"name": "k"}),
    ):
        response = await client.post(path, json=payload, headers=OPERATOR)
        assert response.status_code == 201, (path, response.text)
    key: str = response.json()["key"]
    return key


async def spend(client: httpx2.AsyncClient, key: str, cost: int) -> dict[str, Any]:
    """One verify of ``cost`` units of gen; its answer."""
    body = {"key": key, "service": "gen", "cost": cost}
    response = await client.post("/v1/verify", json=body, headers=OPERATOR)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def credits(client: httpx2.AsyncClient) -> dict[str, Any]:
    """The balance and grants of acme."""
    body: dict[str, Any] = (await client.get(f"{BASE}/credits", headers=OPERATOR)).json()
    return body


def at(text: str) -> datetime:
    """An instant in UTC."""
    return datetime.fromisoformat(text).replace(tzinfo=UTC)


async def test_a_reset_refill_starts_each_window_afresh_on_a_dst_day(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """A daily reset refill spans New York's 25-hour day; the next day brings a fresh one."""
    clock.set(at("2024-11-03T12:00:00"))  # the day New York leaves DST
    key = await provision(
        client, {"amount": 100, "window": "day", "mode": "reset"}, timezone="America/New_York"
    )
    assert (await spend(client, key, 30))["credits"] == {"debited": 30, "remaining": 70}
    first = (await credits(client))["grants"]
    assert [(g["kind"], g["id"], g["amount"], g["remaining"]) for g in first] == [
        ("refill", "refill-day-2024-11-03", 100, 70)
    ]
    assert (first[0]["created_at"], first[0]["expires_at"]) == (
        "2024-11-03T04:00:00Z",
        "2024-11-04T05:00:00Z",  # 25 hours later: midnight EST
    )
    clock.set(at("2024-11-04T04:30:00"))  # 23:30 EST, still the 3rd
    assert (await spend(client, key, 10))["credits"] == {"debited": 10, "remaining": 60}
    clock.set(at("2024-11-04T05:00:01"))  # the 4th has begun
    assert (await spend(client, key, 5))["credits"] == {"debited": 5, "remaining": 95}
    after = await credits(client)
    assert after["balance"] == 95
    assert [g["id"] for g in after["grants"]] == ["refill-day-2024-11-03", "refill-day-2024-11-04"]
    ledger = (await client.get(f"{BASE}/credits/ledger", headers=OPERATOR)).json()["items"]
    assert [e["kind"] for e in ledger] == ["refill", "debit", "expiry", "refill", "debit"]
    assert [e["balance_after"] for e in ledger] == [100, 60, 0, 100, 95]


async def test_a_top_up_refill_brings_what_is_left_up_to_the_amount(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """A top-up refill adds only what earlier refills lack, and what is left carries over."""
    clock.set(at("2024-11-07T12:00:00"))
    key = await provision(client, {"amount": 100, "window": "day", "mode": "top_up"})
    await spend(client, key, 30)
    clock.set(at("2024-11-08T00:00:01"))
    assert (await credits(client))["balance"] == 100
    grants = {g["id"]: g for g in (await credits(client))["grants"]}
    assert grants["refill-day-2024-11-08"]["amount"] == 30
    assert grants["refill-day-2024-11-07"]["remaining"] == 70
    assert (await spend(client, key, 80))["credits"] == {"debited": 80, "remaining": 20}
    grants = {g["id"]: g for g in (await credits(client))["grants"]}
    assert grants["refill-day-2024-11-07"]["remaining"] == 0  # the older drawn first
    assert grants["refill-day-2024-11-08"]["remaining"] == 20


async def test_a_billing_anchor_of_31_refills_on_the_30th_of_a_30_day_month(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """With a billing anchor of 31, November's refill comes on the 30th, December's on the 31st."""
    clock.set(at("2024-11-29T12:00:00"))
    refill = {"amount": 50, "window": "month", "anchor": "billing", "mode": "reset"}
    key = await provision(client, refill, billing_anchor=31, timezone="UTC")
    await spend(client, key, 20)
    assert [g["id"] for g in (await credits(client))["grants"]] == ["refill-month-2024-10-31"]
    clock.set(at("2024-11-30T00:00:01"))
    body = await credits(client)
    assert body["balance"] == 50
    newest = body["grants"][-1]
    assert (newest["id"], newest["created_at"], newest["expires_at"]) == (
        "refill-month-2024-11-30",
        "2024-11-30T00:00:00Z",
        "2024-12-31T00:00:00Z",
    )
    clock.set(at("2024-12-31T00:00:01"))
    assert (await spend(client, key, 1))["credits"] == {"debited": 1, "remaining": 49}
    assert (await credits(client))["grants"][-1]["id"] == "refill-month-2024-12-31"


async def test_a_refill_is_made_once_however_many_ask(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """Concurrent verifies at a window's start make its refill grant once."""
    import asyncio

    clock.set(at("2024-11-07T12:00:00"))
    key = await provision(client, {"amount": 100, "window": "day"})
    answers = await asyncio.gather(*(spend(client, key, 1) for _ in range(20)))
    assert all(answer["valid"] for answer in answers)
    body = await credits(client)
    assert [g["id"] for g in body["grants"]] == ["refill-day-2024-11-07"]
    assert body["balance"] == 80
