"""Credits under a race (SPEC 10): 600 concurrent verifies over three nodes against 1,000
credits spread over grants with different expiries never take the balance below zero,
and the ledger sums to the balance exactly."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import AsyncExitStack
from decimal import Decimal
from typing import Any

import httpx2
import pytest

from quotad.service.context import Context
from quotad.storage import Stores
from quotad.testing import FakeClock
from tests.conftest import OPERATOR
from tests.nodes import three_nodes

with_cluster = True

CALLS = 600
WAVE = 60
PRICE = "2.5"  # credits a unit: calls of 1 to 3 units debit 2.5 to 7.5
GRANTS = [  # (credits, expires_at): 1,000 in all
    (400, "2024-11-08T00:00:00Z"),
    (150, "2024-12-01T00:00:00Z"),
    (200, "2030-01-01T00:00:00Z"),
    (250, None),
]


@pytest.fixture
async def nodes(
    stores: Stores, clock: FakeClock
) -> AsyncIterator[list[tuple[httpx2.AsyncClient, Context]]]:
    """Three nodes over the test's store."""
    async with AsyncExitStack() as stack:
        yield await three_nodes(stores, clock, stack)


async def _provision(http: httpx2.AsyncClient) -> tuple[str, list[str]]:
    """A priced service, a plan, an account, a key and the grants: the key and grant ids."""
    plan = {"id": "metered", "quotas": {"gen": {"total": 100_000}}}
    for path, body in (
        ("/admin/v1/services", {"name": "gen", "credit_price": float(PRICE)}),
        ("/admin/v1/plans", plan),
        ("/admin/v1/accounts", {"id": "fleet", "name": "Fleet", "plan": "metered"}),
        ("/admin/v1/accounts/fleet/keys", {"name": "k"}),
    ):
        response = await http.post(path, json=body, headers=OPERATOR)
        assert response.status_code == 201, (path, response.text)
    key: str = response.json()["key"]
    grant_ids = []
    for amount, expires_at in GRANTS:
        body = {"amount": amount} | ({} if expires_at is None else {"expires_at": expires_at})
        response = await http.post("/admin/v1/accounts/fleet/grants", json=body, headers=OPERATOR)
        assert response.status_code == 201, response.text
        grant_ids.append(response.json()["id"])
    return key, grant_ids


async def test_600_priced_verifies_over_three_nodes_never_overdraw(
    nodes: list[tuple[httpx2.AsyncClient, Context]],
) -> None:
    """Never below zero; debits equal what the verdicts say; the ledger sums to the balance."""
    clients = [client for client, _ in nodes]
    key, grant_ids = await _provision(clients[0])
    debited = Decimal(0)
    exhausted = 0

    async def one(n: int) -> dict[str, Any]:
        body = {"key": key, "service": "gen", "cost": n % 3 + 1}
        response = await clients[n % 3].post("/v1/verify", json=body, headers=OPERATOR)
        assert response.status_code == 200, response.text
        answer: dict[str, Any] = response.json()
        return answer

    for wave in range(0, CALLS, WAVE):
        for answer in await asyncio.gather(*(one(n) for n in range(wave, wave + WAVE))):
            if answer["valid"]:
                assert answer["credits"]["remaining"] >= 0
                debited += Decimal(str(answer["credits"]["debited"]))
            else:
                assert answer["code"] == "CREDITS_EXHAUSTED", answer
                exhausted += 1
    assert exhausted > 0  # the balance ran out
    for _, ctx in nodes:
        flush = getattr(ctx.counters, "flush", None)
        if flush is not None:
            await flush()

    credits = (await clients[1].get("/admin/v1/accounts/fleet/credits", headers=OPERATOR)).json()
    balance = Decimal(str(credits["balance"]))
    assert balance >= 0
    assert balance == 1000 - debited
    assert balance < Decimal(PRICE)  # drained to below one unit's price
    left = {grant["id"]: grant["remaining"] for grant in credits["grants"]}
    assert all(value >= 0 for value in left.values())
    assert [left[grant_id] for grant_id in grant_ids[:3]] == [0, 0, 0]  # drawn in order

    items: list[dict[str, Any]] = []
    cursor = None
    while True:
        params = {"limit": 500} | ({} if cursor is None else {"cursor": cursor})
        page = (
            await clients[2].get(
                "/admin/v1/accounts/fleet/credits/ledger", params=params, headers=OPERATOR
            )
        ).json()
        items += page["items"]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert sum(Decimal(str(item["amount"])) for item in items) == balance
    assert Decimal(str(items[-1]["balance_after"])) == balance
    assert all(Decimal(str(item["balance_after"])) >= 0 for item in items)
    assert sum(-Decimal(str(i["amount"])) for i in items if i["kind"] == "debit") == debited
