"""Reservations on a priced service (SPEC 10): credits reserved, given back, settled."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from quotad.service import reservations
from quotad.service.context import Context
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment
from tests.test_reservations import set_limits

with_cluster = True  # also on a Redis Cluster: the credit slots span its hash slots
BASE = "/admin/v1/accounts/acme"


async def setup(client: httpx2.AsyncClient, *amounts: float) -> list[str]:
    """Price insights at 1 credit a unit; give acme grants of ``amounts``, the first
    expiring soonest (so drawn first); their ids in draw order."""
    response = await client.patch(
        "/admin/v1/services/insights", json={"credit_price": 1}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    ids = []
    for n, amount in enumerate(amounts):
        body = {"amount": amount, "expires_at": f"{2030 + n}-01-01T00:00:00Z"}
        made = await client.post(f"{BASE}/grants", json=body, headers=OPERATOR)
        assert made.status_code == 201, made.text
        ids.append(made.json()["id"])
    return ids


async def reserve(client: httpx2.AsyncClient, key: str, cost: int, **extra: Any) -> dict[str, Any]:
    """A verify with reserve on insights: its answer (granted)."""
    body = {"key": key, "service": "insights", "cost": cost, "reserve": True, **extra}
    response = await client.post("/v1/verify", json=body, headers=OPERATOR)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    assert answer["valid"] is True, answer
    return answer


async def left(client: httpx2.AsyncClient) -> dict[str, float]:
    """What is left of each grant by id, and the balance under ``balance``."""
    body = (await client.get(f"{BASE}/credits", headers=OPERATOR)).json()
    found = {grant["id"]: grant["remaining"] for grant in body["grants"]}
    found["balance"] = body["balance"]
    return found


async def commit(client: httpx2.AsyncClient, rid: str, cost: int) -> dict[str, Any]:
    """Commit a reservation; its answer (200)."""
    response = await client.post(
        f"/v1/reservations/{rid}/commit", json={"cost": cost}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def ledger(client: httpx2.AsyncClient) -> list[dict[str, Any]]:
    """The whole ledger of acme."""
    body = (await client.get(f"{BASE}/credits/ledger?limit=500", headers=OPERATOR)).json()
    assert body["next_cursor"] is None
    items: list[dict[str, Any]] = body["items"]
    return items


async def assert_ledger_sums(client: httpx2.AsyncClient) -> list[dict[str, Any]]:
    """The ledger's entries sum to the balance, its last balance_after is the balance."""
    entries = await ledger(client)
    balance = (await left(client))["balance"]
    signed = 0.0
    for entry in entries:
        sign = -1 if entry["kind"] in ("debit", "expiry", "void") else 1
        signed += sign * abs(entry["amount"])
    assert round(signed, 6) == balance, entries
    assert entries[-1]["balance_after"] == balance, entries
    return entries


async def test_a_reserve_debits_credits_at_once(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A reserve on a priced service debits cost times price from the grants at once."""
    first, second = await setup(client, 10, 10)
    await reserve(client, deployment.key, 15)
    assert await left(client) == {first: 0, second: 5, "balance": 5}


async def test_a_smaller_commit_gives_back_in_reverse_draw_order(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A smaller commit gives the difference back to the grant drawn last first, then on."""
    first, second = await setup(client, 10, 10)
    rid = (await reserve(client, deployment.key, 15))["reservation_id"]
    assert (await commit(client, rid, 12))["overage"] == 0
    assert await left(client) == {first: 0, second: 8, "balance": 8}
    other = (await reserve(client, deployment.key, 8))["reservation_id"]
    assert await left(client) == {first: 0, second: 0, "balance": 0}
    await commit(client, other, 1)
    assert await left(client) == {first: 0, second: 7, "balance": 7}
    entries = await assert_ledger_sums(client)
    assert [e["kind"] for e in entries].count("adjustment") >= 1


async def test_a_large_give_back_spans_grants(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A give-back larger than the last grant's share goes on into the one drawn before."""
    first, second = await setup(client, 10, 10)
    rid = (await reserve(client, deployment.key, 15))["reservation_id"]
    await commit(client, rid, 4)
    assert await left(client) == {first: 6, second: 10, "balance": 16}
    await assert_ledger_sums(client)


async def test_an_equal_commit_moves_no_credit(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A commit of the reserved cost leaves the balance as the reserve left it."""
    first, second = await setup(client, 10, 10)
    rid = (await reserve(client, deployment.key, 15))["reservation_id"]
    answer = await commit(client, rid, 15)
    assert (answer["committed"], answer["overage"]) == (15, 0)
    assert await left(client) == {first: 0, second: 5, "balance": 5}
    assert "adjustment" not in [e["kind"] for e in await assert_ledger_sums(client)]


async def test_a_larger_commit_with_room_debits_the_extra(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A larger commit debits the extra from the grants when the balance has room."""
    first, second = await setup(client, 10, 10)
    rid = (await reserve(client, deployment.key, 5))["reservation_id"]
    answer = await commit(client, rid, 12)
    assert (answer["committed"], answer["overage"]) == (12, 0)
    assert await left(client) == {first: 0, second: 8, "balance": 8}
    await assert_ledger_sums(client)


async def test_a_larger_commit_without_room_takes_what_is_left_as_overage(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A larger commit the balance cannot pay takes what is left (never below zero) and
    reports the extra as overage."""
    first, second = await setup(client, 5, 5)
    rid = (await reserve(client, deployment.key, 8))["reservation_id"]
    answer = await commit(client, rid, 14)
    assert (answer["committed"], answer["overage"]) == (14, 6)
    assert await left(client) == {first: 0, second: 0, "balance": 0}
    usage = (await client.get(f"{BASE}/quotas", headers=OPERATOR)).json()
    assert [q["used"] for q in usage if q["name"] == "insights.day"] == [14]
    await assert_ledger_sums(client)


async def test_a_larger_commit_past_a_window_debits_the_extra_as_overage(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A larger commit a window has no room for still debits the extra's credits (the
    balance has room) and reports the extra as overage."""
    await set_limits(ctx, insights=[{"window": "day", "total": 10}])
    first, second = await setup(client, 10, 10)
    rid = (await reserve(client, deployment.key, 8))["reservation_id"]
    answer = await commit(client, rid, 13)
    assert (answer["committed"], answer["overage"]) == (13, 5)
    assert await left(client) == {first: 0, second: 7, "balance": 7}
    await assert_ledger_sums(client)


async def test_cancel_gives_every_credit_back(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A cancel gives every credit the reserve debited back, once."""
    first, second = await setup(client, 10, 10)
    rid = (await reserve(client, deployment.key, 15))["reservation_id"]
    for _ in range(2):
        response = await client.delete(f"/v1/reservations/{rid}", headers=OPERATOR)
        assert response.status_code == 200, response.text
    assert await left(client) == {first: 10, second: 10, "balance": 20}
    await assert_ledger_sums(client)


async def test_expiry_gives_every_credit_back_exactly_once(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context, clock: FakeClock
) -> None:
    """A reservation past its deadline gives every credit back on the sweep, once."""
    first, second = await setup(client, 10, 10)
    await reserve(client, deployment.key, 15, ttl_seconds=30)
    await reserve(client, deployment.key, 2, ttl_seconds=600)
    clock.advance(seconds=31)
    assert await reservations.sweep(ctx) == 1
    assert await reservations.sweep(ctx) == 0
    assert await left(client) == {first: 10, second: 8, "balance": 18}
    entries = await assert_ledger_sums(client)
    assert [e["kind"] for e in entries].count("adjustment") >= 1


@pytest.mark.parametrize("actual", [0, 3, 15])
async def test_a_committed_reservation_never_expires(
    client: httpx2.AsyncClient,
    deployment: Deployment,
    ctx: Context,
    clock: FakeClock,
    actual: int,
) -> None:
    """Once committed, a reservation's deadline passing gives nothing more back."""
    await setup(client, 10, 10)
    rid = (await reserve(client, deployment.key, 15, ttl_seconds=30))["reservation_id"]
    await commit(client, rid, actual)
    before = await left(client)
    clock.advance(seconds=31)
    assert await reservations.sweep(ctx) == 0
    assert await left(client) == before
    assert before["balance"] == 20 - actual


@pytest.mark.parametrize(("actual", "balance"), [(0, 100), (4, 94.5), (8, 89), (12, 83.5)])
async def test_a_reservation_of_several_priced_services_settles_their_debit(
    client: httpx2.AsyncClient, deployment: Deployment, actual: int, balance: float
) -> None:
    """A reservation of items priced differently (an unpriced one first) settles the
    debit the verify made, scaled to the actual cost as every window is."""
    await setup(client, 100)
    for service, price in (("insights", None), ("scoring", 2.75)):
        response = await client.patch(
            f"/admin/v1/services/{service}", json={"credit_price": price}, headers=OPERATOR
        )
        assert response.status_code == 200, response.text
    items = [{"service": "insights", "cost": 4}, {"service": "scoring", "cost": 4}]
    body = {"key": deployment.key, "items": items, "reserve": True}
    answer = (await client.post("/v1/verify", json=body, headers=OPERATOR)).json()
    assert answer["valid"] is True, answer
    assert (await left(client))["balance"] == 89
    await commit(client, answer["reservation_id"], actual)
    assert (await left(client))["balance"] == balance
    await assert_ledger_sums(client)


async def test_a_next_day_commit_drawing_on_a_newer_grant_keeps_the_ledger_whole(
    client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock
) -> None:
    """A larger commit a day later, paid by a grant made since the reserve, is a ledger debit."""
    (first,) = await setup(client, 5)
    rid = (await reserve(client, deployment.key, 5, ttl_seconds=3 * 86_400))["reservation_id"]
    clock.advance(seconds=86_400)
    made = await client.post(f"{BASE}/grants", json={"amount": 10}, headers=OPERATOR)
    assert made.status_code == 201, made.text
    second = made.json()["id"]
    assert (await commit(client, rid, 8))["overage"] == 0
    assert await left(client) == {first: 0, second: 7, "balance": 7}
    entries = await assert_ledger_sums(client)
    assert [e["amount"] for e in entries if e["grant_id"] == second] == [10, -3]


async def test_a_larger_commit_draws_on_a_refill_made_since_the_reserve(
    client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock
) -> None:
    """A larger commit in a refill window that began after the reserve draws its extra
    from that window's refill (made then if no call made it), not as overage."""
    await setup(client)
    plan = {
        "quotas": {"insights": {"total": 250}, "scoring": {"total": 100}},
        "refill": {"amount": 10, "window": "day", "mode": "reset"},
    }
    response = await client.put("/admin/v1/plans/plan-acme", json=plan, headers=OPERATOR)
    assert response.status_code == 200, response.text
    rid = (await reserve(client, deployment.key, 5, ttl_seconds=2 * 86_400))["reservation_id"]
    clock.advance(days=1)  # the first day's refill has expired; nothing made today's yet
    answer = await commit(client, rid, 12)
    assert (answer["committed"], answer["overage"]) == (12, 0)
    assert (await left(client))["balance"] == 3
    await assert_ledger_sums(client)
