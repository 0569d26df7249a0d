"""Verify on a priced service (SPEC 10): the debit in the same atomic step as the limits."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx2

from quotad.service import verify
from quotad.service.context import Context
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment

with_cluster = True  # also run the store-backed tests on a Redis Cluster
BASE = "/admin/v1/accounts/acme"


async def price(client: httpx2.AsyncClient, service: str, credits: float | None) -> None:
    """Set a service's credit price."""
    response = await client.patch(
        f"/admin/v1/services/{service}", json={"credit_price": credits}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text


async def give(client: httpx2.AsyncClient, amount: float, **body: Any) -> str:
    """Grant credits to acme; the grant's id."""
    response = await client.post(
        f"{BASE}/grants", json={"amount": amount, **body}, headers=OPERATOR
    )
    assert response.status_code == 201, response.text
    grant_id: str = response.json()["id"]
    return grant_id


async def post(client: httpx2.AsyncClient, body: dict[str, Any]) -> dict[str, Any]:
    """POST /v1/verify as the operator; the answer's body (it must be 200)."""
    response = await client.post("/v1/verify", json=body, headers=OPERATOR)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def remaining(client: httpx2.AsyncClient) -> dict[str, float]:
    """What is left of each grant, by id, and the balance under ``balance``."""
    body = (await client.get(f"{BASE}/credits", headers=OPERATOR)).json()
    left = {grant["id"]: grant["remaining"] for grant in body["grants"]}
    left["balance"] = body["balance"]
    return left


async def test_an_unpriced_service_answers_without_credits(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """An unpriced service's verify neither debits nor shows credits."""
    await give(client, 5)
    answer = await post(client, {"key": deployment.key, "service": "insights", "cost": 3})
    assert answer["valid"] is True
    assert "credits" not in answer
    assert (await remaining(client))["balance"] == 5


async def test_a_priced_verify_debits_cost_times_price(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A priced call debits cost times price and answers what it debited and what is left."""
    await price(client, "insights", 0.5)
    await give(client, 10)
    answer = await post(client, {"key": deployment.key, "service": "insights", "cost": 3})
    assert answer["valid"] is True
    assert answer["credits"] == {"debited": 1.5, "remaining": 8.5}
    assert answer["used"] == 3
    assert (await remaining(client))["balance"] == 8.5


async def test_debits_draw_by_expiry_then_priority_then_age(
    client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock
) -> None:
    """The grant expiring first is drawn first, then the highest priority, then the oldest."""
    await price(client, "insights", 1)
    oldest = await give(client, 4)
    clock.advance(seconds=1)
    favoured = await give(client, 2, priority=5)
    clock.advance(seconds=1)
    later = await give(client, 3, expires_at="2031-01-01T00:00:00Z")
    sooner = await give(client, 1, expires_at="2030-01-01T00:00:00Z")
    answer = await post(client, {"key": deployment.key, "service": "insights", "cost": 7})
    assert answer["credits"] == {"debited": 7, "remaining": 3}
    left = await remaining(client)
    assert (left[sooner], left[later], left[favoured], left[oldest]) == (0, 0, 0, 3)


async def test_an_exhausted_balance_refuses_and_moves_nothing(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """Too few credits: CREDITS_EXHAUSTED, refused_by credits, no limit or grant moved."""
    await price(client, "insights", 2)
    await give(client, 5)
    answer = await post(client, {"key": deployment.key, "service": "insights", "cost": 3})
    assert answer["valid"] is False
    assert answer["code"] == "CREDITS_EXHAUSTED"
    assert answer["refused_by"] == "credits"
    assert "5" in answer["note"]
    assert answer["credits"] == {"debited": 0, "remaining": 5}
    assert (await remaining(client))["balance"] == 5
    usage = (await client.get(f"{BASE}/quotas", headers=OPERATOR)).json()
    assert [q["used"] for q in usage if q["name"] == "insights.day"] == [0]
    granted = await post(client, {"key": deployment.key, "service": "insights", "cost": 2})
    assert granted["credits"] == {"debited": 4, "remaining": 1}


async def test_no_grant_at_all_is_exhausted(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A priced call of an account without grants is refused as CREDITS_EXHAUSTED."""
    await price(client, "insights", 1)
    answer = await post(client, {"key": deployment.key, "service": "insights", "cost": 1})
    assert (answer["valid"], answer["code"]) == (False, "CREDITS_EXHAUSTED")


async def test_an_expired_grant_is_never_drawn(
    client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock
) -> None:
    """A grant that expired mid-window is skipped; the call draws from the next or fails."""
    await price(client, "insights", 1)
    soon = clock.now().replace(microsecond=0)
    expiry = (soon + timedelta(hours=1)).isoformat().replace("+00:00", "Z")
    short = await give(client, 5, expires_at=expiry)
    answer = await post(client, {"key": deployment.key, "service": "insights", "cost": 2})
    assert answer["credits"] == {"debited": 2, "remaining": 3}
    clock.advance(hours=2)
    refused = await post(client, {"key": deployment.key, "service": "insights", "cost": 1})
    assert refused["code"] == "CREDITS_EXHAUSTED"
    spare = await give(client, 4)
    granted = await post(client, {"key": deployment.key, "service": "insights", "cost": 1})
    assert granted["credits"] == {"debited": 1, "remaining": 3}
    left = await remaining(client)
    assert (left[short], left[spare]) == (0, 3)
    ledger = (await client.get(f"{BASE}/credits/ledger", headers=OPERATOR)).json()["items"]
    assert ledger[-1]["balance_after"] == 3
    assert "expiry" in [entry["kind"] for entry in ledger]


async def test_items_over_two_priced_services_debit_once_all_or_nothing(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Items over two priced services debit their summed price, or nothing at all."""
    await price(client, "insights", 1)
    await price(client, "scoring", 0.25)
    await give(client, 10)
    items = [{"service": "insights", "cost": 4}, {"service": "scoring", "cost": 8}]
    answer = await post(client, {"key": deployment.key, "items": items})
    assert answer["valid"] is True
    assert answer["credits"] == {"debited": 6, "remaining": 4}
    refused = await post(client, {"key": deployment.key, "items": items})
    assert refused["code"] == "CREDITS_EXHAUSTED"
    usage = (await client.get(f"{BASE}/quotas", headers=OPERATOR)).json()
    used = {q["name"]: q["used"] for q in usage}
    assert (used["insights.day"], used["scoring.day"]) == (4, 8)
    assert (await remaining(client))["balance"] == 4


async def test_a_quota_refusal_comes_before_credits(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A call over its quota is QUOTA_EXCEEDED, and its credits are not touched."""
    await price(client, "scoring", 1)
    await give(client, 500)
    answer = await post(client, {"key": deployment.key, "service": "scoring", "cost": 101})
    assert answer["code"] == "QUOTA_EXCEEDED"
    assert (await remaining(client))["balance"] == 500


async def test_a_refund_gives_the_credits_back(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """verify.refund gives a priced call's credits back, shown as a ledger adjustment."""
    await price(client, "insights", 1)
    await give(client, 10)
    verdict = await verify.verify(ctx, deployment.key, "insights", 4)
    assert verdict.credits == (4_000_000, 6_000_000)
    await verify.refund(ctx, verdict, 4)
    assert (await remaining(client))["balance"] == 10
    ledger = (await client.get(f"{BASE}/credits/ledger", headers=OPERATOR)).json()["items"]
    assert [entry["kind"] for entry in ledger] == ["grant", "debit", "adjustment"]
    assert ledger[-1]["balance_after"] == 10


async def test_a_grant_is_seen_by_the_next_verify(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A grant made on this node clears its cache: the very next verify may draw from it."""
    await price(client, "insights", 1)
    refused = await post(client, {"key": deployment.key, "service": "insights", "cost": 1})
    assert refused["code"] == "CREDITS_EXHAUSTED"
    grant_id = await give(client, 1)
    granted = await post(client, {"key": deployment.key, "service": "insights", "cost": 1})
    assert granted["valid"] is True
    await give(client, 1)
    await client.delete(f"{BASE}/grants/{grant_id}", headers=OPERATOR)
    assert (await remaining(client))["balance"] == 1


async def test_quotas_show_the_balance_as_an_item(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """GET /v1/quotas and the admin quotas routes add a credits item once there is a grant."""
    before = (await client.get("/v1/quotas", headers=deployment.bearer)).json()
    assert "credits" not in [item["name"] for item in before]
    await price(client, "insights", 1)
    await give(client, 10)
    await post(client, {"key": deployment.key, "service": "insights", "cost": 4})
    expected = {
        "service": None,
        "name": "credits",
        "per": "account",
        "mode": "hard",
        "used": 4,
        "remaining": 6,
        "total": None,
        "reset": None,
        "exhausted_at": None,
    }
    for url, headers in (
        ("/v1/quotas", deployment.bearer),
        (f"{BASE}/quotas", OPERATOR),
        (f"/admin/v1/keys/{deployment.key_id}/quotas", OPERATOR),
    ):
        items = (await client.get(url, headers=headers)).json()
        assert [item for item in items if item["name"] == "credits"] == [expected], url


async def test_another_node_sees_a_grant_within_the_record_cache_time(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """A grant made on one node reaches another node's cached admission within
    record_cache_seconds (the other node's cache is not cleared by it)."""
    await price(client, "insights", 1)
    ticks = [0.0]
    other = Context(ctx.stores, ctx.settings, clock, monotonic=lambda: ticks[0])
    first = await verify.verify(other, deployment.key, "insights", 1)
    assert first.code == "CREDITS_EXHAUSTED"
    await give(client, 5)  # through this test's node, not ``other``
    ticks[0] += ctx.settings.record_cache_seconds + 0.1
    later = await verify.verify(other, deployment.key, "insights", 1)
    assert later.valid
    assert later.credits == (1_000_000, 4_000_000)


async def test_credits_running_out_are_told_once_per_set_of_grants(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """credits.exhausted is written once when the last credit goes or a call is refused,
    and again only after a new grant runs out too."""
    await price(client, "insights", 1)
    await give(client, 3)
    await post(client, {"key": deployment.key, "service": "insights", "cost": 2})
    await post(client, {"key": deployment.key, "service": "insights", "cost": 1})  # the last
    for _ in range(3):
        await post(client, {"key": deployment.key, "service": "insights", "cost": 1})
    await ctx.noticer.drain()
    events = [e for e in await ctx.stores.alerts.alert_events(100) if e.type == "credits.exhausted"]
    assert len(events) == 1
    assert events[0].data == {"account_id": "acme", "limit": "credits", "used": 3, "total": 3}
    await give(client, 1)
    await post(client, {"key": deployment.key, "service": "insights", "cost": 2})  # refused
    await ctx.noticer.drain()
    events = [e for e in await ctx.stores.alerts.alert_events(100) if e.type == "credits.exhausted"]
    assert len(events) == 2


async def test_an_account_verify_debits_credits_too(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """verify_account (Envoy's account_id) debits a priced service's credits as verify does."""
    await price(client, "insights", 2)
    await give(client, 5)
    granted = await verify.verify_account(ctx, "acme", "insights", 2)
    assert granted.credits == (4_000_000, 1_000_000)
    refused = await verify.verify_account(ctx, "acme", "insights", 1)
    assert (refused.valid, refused.code, refused.refused_by) == (
        False,
        "CREDITS_EXHAUSTED",
        "credits",
    )
