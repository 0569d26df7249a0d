"""credits.low (SPEC 11): a plan's or an account's ``low_credits`` mark, and the event
written once per crossing of it, however many calls and nodes see the crossing."""

from __future__ import annotations

import asyncio
import json
import os
from contextlib import AsyncExitStack
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import orjson
import pytest
from typer.testing import CliRunner, Result

from quotad.api.app import create_app
from quotad.cli import app
from quotad.domain.webhooks import CREDITS_LOW, AlertEvent, WebhookEndpoint
from quotad.service import deliveries, webhooks
from quotad.service.context import Context
from quotad.service.webhook_sender import new_client
from quotad.storage import Stores
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment, make_settings, seed
from tests.nodes import three_nodes
from tests.webhook_fixtures import WebhookReceiver

pytest_plugins = ("tests.webhook_fixtures",)
with_cluster = True  # also run the store-backed tests on a Redis Cluster
BASE = "/admin/v1/accounts/acme"
PLAN = {
    "quotas": {"insights": {"total": 250}, "scoring": {"total": 100}},
    "limits": [{"name": "cohort.max_count", "description": "Contacts", "limit": 10}],
}


async def mark(client: httpx2.AsyncClient, low_credits: Any) -> httpx2.Response:
    """Replace acme's plan with ``low_credits`` as its mark; the answer."""
    return await client.put(
        "/admin/v1/plans/plan-acme", json={**PLAN, "low_credits": low_credits}, headers=OPERATOR
    )


async def priced(client: httpx2.AsyncClient, low_credits: float | None = 5) -> None:
    """insights at one credit a unit, and acme's plan marked at ``low_credits``."""
    response = await client.patch(
        "/admin/v1/services/insights", json={"credit_price": 1}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    response = await mark(client, low_credits)
    assert response.status_code == 200, response.text


async def give(client: httpx2.AsyncClient, amount: float) -> str:
    """Grant credits to acme; the grant's id."""
    response = await client.post(f"{BASE}/grants", json={"amount": amount}, headers=OPERATOR)
    assert response.status_code == 201, response.text
    grant_id: str = response.json()["id"]
    return grant_id


async def spend(client: httpx2.AsyncClient, key: str, cost: int) -> dict[str, Any]:
    """A verify of ``cost`` insights units; its answer."""
    body = {"key": key, "service": "insights", "cost": cost}
    response = await client.post("/v1/verify", json=body, headers=OPERATOR)
    assert response.status_code == 200, response.text
    answer: dict[str, Any] = response.json()
    return answer


async def lows(ctx: Context) -> list[AlertEvent]:
    """The credits.low events written, once what was noticed is."""
    await ctx.noticer.drain()
    return [e for e in await ctx.stores.alerts.alert_events(100) if e.type == CREDITS_LOW]


async def test_a_plan_shows_and_checks_its_low_credits(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A plan's low_credits is shown as given (null by default); a bad one is a 400 at
    /body/low_credits and changes nothing."""
    del deployment
    plan = (await client.get("/admin/v1/plans/plan-acme", headers=OPERATOR)).json()
    assert plan["low_credits"] is None
    assert (await mark(client, 12.5)).json()["low_credits"] == 12.5
    for bad in (0, -1, 0.0000001, "5", True):
        response = await mark(client, bad)
        assert response.status_code == 400, (bad, response.text)
        body = response.json()
        assert body["error"] == "VALIDATION_FAILED"
        assert [e["path"] for e in body["validationErrors"]] == ["/body/low_credits"]
    plan = (await client.get("/admin/v1/plans/plan-acme", headers=OPERATOR)).json()
    assert plan["low_credits"] == 12.5
    assert (await mark(client, None)).json()["low_credits"] is None


async def test_an_account_overrides_its_plans_mark(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """An account's overrides.low_credits replaces its plan's: the event follows its mark."""
    await priced(client, 1)
    response = await client.patch(BASE, json={"overrides": {"low_credits": 8}}, headers=OPERATOR)
    assert response.status_code == 200, response.text
    assert response.json()["overrides"]["low_credits"] == 8
    bad = await client.patch(BASE, json={"overrides": {"low_credits": 0}}, headers=OPERATOR)
    assert bad.status_code == 400
    assert bad.json()["validationErrors"][0]["path"] == "/body/overrides/low_credits"
    await give(client, 10)
    await spend(client, deployment.key, 3)  # 7 left: below the account's 8, above the plan's 1
    [event] = await lows(ctx)
    assert event.data["low_credits"] == 8
    assert event.data["balance"] == 7


async def test_a_crossing_writes_one_event_with_the_balance(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """No event above the mark; one when the balance falls below it, none for the calls
    after it, with the quota events' shape and the balance."""
    await priced(client, 5)
    await give(client, 10)
    await spend(client, deployment.key, 4)  # 6 left: above the mark
    await spend(client, deployment.key, 1)  # 5 left: at the mark is not below it
    assert await lows(ctx) == []
    await spend(client, deployment.key, 2)  # 3 left: crossed
    for _ in range(3):
        await spend(client, deployment.key, 1)
    [event] = await lows(ctx)
    assert event.account_id == "acme"
    assert event.data == {
        "account_id": "acme",
        "limit": "credits",
        "used": 7,
        "total": None,
        "balance": 3,
        "low_credits": 5,
    }


async def test_an_unmarked_plan_writes_no_low_event(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """Without a low_credits mark a priced call never writes credits.low."""
    await priced(client, None)
    await give(client, 10)
    await spend(client, deployment.key, 9)
    assert await lows(ctx) == []


async def test_a_new_grant_then_a_new_crossing_writes_a_second_event(
    client: httpx2.AsyncClient, deployment: Deployment, ctx: Context
) -> None:
    """A grant that lifts the balance back above the mark makes the next fall a new event."""
    await priced(client, 5)
    await give(client, 6)
    await spend(client, deployment.key, 2)  # 4 left
    assert len(await lows(ctx)) == 1
    await give(client, 10)  # 14
    await spend(client, deployment.key, 6)  # 8: above
    assert len(await lows(ctx)) == 1
    await spend(client, deployment.key, 4)  # 4: below again
    events = await lows(ctx)
    assert len(events) == 2
    assert len({e.dedupe for e in events}) == 2


async def test_concurrent_crossings_on_three_nodes_write_one_event(
    stores: Stores, clock: FakeClock
) -> None:
    """Many verifies on three nodes taking the balance below the mark write one event,
    with one delivery to an endpoint that takes it."""
    async with AsyncExitStack() as stack:
        nodes = await three_nodes(stores, clock, stack)
        http = nodes[0][0]
        deployment = await seed(http)
        await priced(http, 50)
        await give(http, 100)
        now = clock.now()
        hook = WebhookEndpoint(
            "wh_low", "https://example.com/h", (CREDITS_LOW,), "whsec_x", now, now
        )
        await stores.alerts.create_webhook(hook)

        async def one(n: int) -> dict[str, Any]:
            return await spend(nodes[n % 3][0], deployment.key, 1)

        answers = await asyncio.gather(*(one(n) for n in range(90)))
        assert all(a["valid"] for a in answers)
        for _, node in nodes:
            await node.noticer.drain()
        events = [e for e in await stores.alerts.alert_events(100) if e.type == CREDITS_LOW]
        assert len(events) == 1, events
        assert events[0].data["low_credits"] == 50
        assert events[0].data["balance"] < 50
        [delivery] = await stores.alerts.list_deliveries(hook.id, 10)
        assert delivery.event_id == events[0].id


async def test_the_event_is_delivered_signed(
    stores: Stores, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    """credits.low reaches a real receiver signed (standardwebhooks verifies it), its body
    carrying the balance and the mark."""
    clock.set(datetime.now(UTC).replace(microsecond=0))  # the receiver checks timestamps
    ctx = Context(stores, make_settings(stores.url, webhook_allow_private=True), clock)
    app = create_app(ctx, manage_store=False)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://node"
    ) as http:
        deployment = await seed(http)
        created = await webhooks.create(ctx, receiver.url, [CREDITS_LOW])
        await ctx.stores.alerts.update_webhook(replace(created, secret=receiver.secret))
        await priced(http, 5)
        await give(http, 6)
        await spend(http, deployment.key, 2)
        [event] = await lows(ctx)
    async with new_client() as sender:
        assert await deliveries.deliver_due(ctx, sender, "node_test") == 1
    [received] = receiver.received()
    assert received["verified"] is True, received
    assert (received["webhook_id"], received["type"]) == (event.id, CREDITS_LOW)
    body = orjson.loads(deliveries.body_of(event))
    assert body["data"]["balance"] == 4
    assert body["data"]["low_credits"] == 5


# The command line -------------------------------------------------------------------------
@pytest.fixture
def cli_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite store with service llm; no QUOTAD_* environment."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("QUOTAD_")]:
        monkeypatch.delenv(name)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    for args in (["migrate"], ["services", "create", "llm"]):
        result = CliRunner().invoke(app, [*args, "--store", url])
        assert result.exit_code == 0, result.output
    return url


def test_plans_take_low_credits_on_the_command_line(cli_store: str) -> None:
    """--low-credits sets a plan's mark on create and replace; a bad one is refused at it."""

    def cli(*args: str) -> Result:
        return CliRunner().invoke(app, [*args, "--store", cli_store])

    created = cli("plans", "create", "p", "--quota", "llm=10", "--low-credits", "2.5", "--json")
    assert created.exit_code == 0, created.output
    assert json.loads(created.stdout)["low_credits"] == 2.5
    assert "low credits: below 2.5" in cli("plans", "show", "p").stdout
    replaced = cli("plans", "replace", "p", "--quota", "llm=10", "--low-credits", "7", "--json")
    assert json.loads(replaced.stdout)["low_credits"] == 7
    for bad in ("0", "abc", "0.0000001"):
        refused = cli("plans", "create", "x", "--quota", "llm=10", "--low-credits", bad)
        assert refused.exit_code == 1, refused.output
        assert "VALIDATION_FAILED" in refused.stderr
        assert "--low-credits" in refused.stderr
