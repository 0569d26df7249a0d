"""Limits v2 (SPEC 9) from the client side: the SDK, the CLI and the middleware.

The SDK and the CLI talk to a real ``quotad serve`` (and the CLI also to a local SQLite
store, with the same output); the middleware runs in process on the memory store with a
clock that stands still, so a rate's bucket refills only when the test says so.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from typer.testing import CliRunner

from quotad.api.app import create_app
from quotad.asgi import EmbeddedBackend, QuotadMiddleware, RemoteBackend
from quotad.cli import app as cli_app
from quotad.domain.limits import LimitSpec, Mode, Window, span
from quotad.domain.models import Overrides, Quota
from quotad.sdk import (
    Client,
    ConflictError,
    IssuedKey,
    QuotaLimit,
    Verdict,
)
from quotad.service import admin, verify
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url
from quotad.testing import FakeClock
from tests.conftest import ADMIN_TOKEN as TEST_TOKEN
from tests.conftest import make_settings
from tests.processes import ADMIN_TOKEN, Running
from tests.sdk_harness import Api, api, server, uid  # noqa: F401 - fixtures, by name

runner = CliRunner()


async def account_on(api: Api, quotas: dict[str, Any], **options: Any) -> tuple[str, IssuedKey]:
    """A plan of ``quotas`` (registering its services), an account on it and a key."""
    for service in quotas:
        with contextlib.suppress(ConflictError):
            await api.create_service(service)
    plan = await api.create_plan(uid("p"), quotas)
    account = await api.create_account("Test", plan.id, account_id=uid("a"), **options)
    return account.id, await api.create_key(account.id, "test")


# SDK ---------------------------------------------------------------------------------
PRO = [
    QuotaLimit(1000),
    QuotaLimit(20000, "month", anchor="billing", mode="soft"),
    QuotaLimit.rate(10, 20),
]


@pytest.mark.slow
async def test_sdk_v2_plan_account_and_key_round_trip(api: Api) -> None:
    """A plan of v2 limits, an account's billing anchor and a key's own limits come back typed."""
    with contextlib.suppress(ConflictError):
        await api.create_service("insights")
    plan = await api.create_plan(uid("p"), {"insights": PRO})
    assert plan.quotas["insights"].limits == tuple(PRO)
    assert plan.quotas["insights"].total == 1000  # the daily total the account shares
    assert (await api.get_plan(plan.id)).quotas == plan.quotas
    account = await api.create_account("Acme", plan.id, account_id=uid("a"), billing_anchor=15)
    assert account.billing_anchor == 15
    assert (await api.update_account(account.id, billing_anchor=31)).billing_anchor == 31
    issued = await api.create_key(account.id, "k", limits={"insights": [QuotaLimit(100)]})
    assert issued.limits == {"insights": (QuotaLimit(100),)}
    narrower = {"insights": (QuotaLimit(50), QuotaLimit.rate(1, 5))}
    assert (await api.update_key_limits(issued.id, narrower)).limits == narrower
    assert (await api.update_key_limits(issued.id, {})).limits == {}


@pytest.mark.slow
async def test_sdk_verify_items_pass_together_or_not_at_all(api: Api) -> None:
    """verify(items=...) moves every service or none; the verdict names every limit and the refuser."""
    account_id, issued = await account_on(
        api, {"insights": [QuotaLimit(10), QuotaLimit(100, "month")], "scoring": 3}
    )
    granted: Verdict = await api.verify(issued.key, items=[("insights", 2), ("scoring", 1)])
    assert granted.valid, granted
    assert {x.name for x in granted.limits} >= {"insights.day", "insights.month", "scoring.day"}
    assert (granted.refused_by, granted.overage, granted.would_refuse) == (None, 0, ())
    refused = await api.verify(issued.key, items=[{"service": "insights"}, ("scoring", 3)])
    assert (refused.valid, refused.code, refused.refused_by) == (
        False,
        "QUOTA_EXCEEDED",
        "scoring.day",
    )
    used = {x.name: x.used for x in await api.account_quotas(account_id)}
    assert (used["insights.day"], used["insights.month"], used["scoring.day"]) == (2, 2, 1)


@pytest.mark.slow
async def test_sdk_verdict_reports_soft_overage_and_shadow_refusals(api: Api) -> None:
    """A soft limit past its total adds to overage; a shadow one that would refuse is named."""
    _, issued = await account_on(
        api,
        {"insights": [QuotaLimit(2, mode="soft"), QuotaLimit(1, "hour", mode="shadow")]},
    )
    verdict = await api.verify(issued.key, "insights", 3)
    assert verdict.valid
    assert verdict.overage == 1
    assert verdict.would_refuse == ("insights.hour",)
    day = next(x for x in verdict.limits if x.name == "insights.day")
    assert (day.mode, day.used, day.total, day.overage) == ("soft", 3, 2, 1)


@pytest.mark.slow
async def test_sdk_quotas_for_the_customer_the_account_and_the_key(api: Api) -> None:
    """quotas() (customer), account_quotas() and key_quotas() show each limit's window use."""
    account_id, issued = await account_on(
        api, {"insights": [QuotaLimit(5), QuotaLimit(50, "month", anchor="billing")]}
    )
    assert (await api.verify(issued.key, "insights", 2)).valid
    mine = await api.quotas(key=issued.key)
    assert {(x.name, x.window, x.used, x.remaining, x.total) for x in mine} == {
        ("insights.day", "day", 2, 3, 5),
        ("insights.month", "month", 2, 48, 50),
    }
    assert all(x.reset is not None and x.reset > datetime.now(UTC) for x in mine)

    def seen(states: list[Any]) -> set[tuple[Any, ...]]:
        # exhausted_at moves with the instant of each read
        return {(x.service, x.name, x.used, x.total, x.reset) for x in states}

    assert seen(await api.account_quotas(account_id)) == seen(mine)
    assert seen(await api.key_quotas(issued.id)) == seen(mine)


def test_a_version_1_verdict_reads_with_empty_v2_fields() -> None:
    """A verdict from a server before SPEC 9 reads with no limits, no overage, no refuser."""
    body = {"valid": True, "code": "OK", "service": "insights", "account_id": "a", "used": 1}
    verdict = Verdict.from_json(body)
    assert (verdict.limits, verdict.overage, verdict.would_refuse, verdict.refused_by) == (
        (),
        0,
        (),
        None,
    )


def test_verify_takes_a_service_or_items_not_both() -> None:
    """verify() with both service and items, or neither, is a ValueError before any request."""
    with Client("http://127.0.0.1:9", operator_token="t") as client:
        with pytest.raises(ValueError, match="not both"):
            client.verify("k", "insights", items=[("insights", 1)])
        with pytest.raises(ValueError, match="needs a service"):
            client.verify("k")


# CLI: local and remote -----------------------------------------------------------------
@pytest.fixture(params=["local", "remote"])
def target(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> tuple[str, tuple[str, ...]]:
    """Where the CLI runs: a migrated SQLite store, or the module's server."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("QUOTAD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "250")
    if request.param == "remote":
        server: Running = request.getfixturevalue("server")
        return server.base, ("--url", server.base, "--token", ADMIN_TOKEN)
    store = f"sqlite:///{tmp_path / 'q.db'}"
    assert runner.invoke(cli_app, ["migrate", "--store", store]).exit_code == 0
    return store, ("--store", store)


def cli(where: tuple[str, tuple[str, ...]], *args: str) -> str:
    """``quotad ARGS`` against the target; its output, which must be a success."""
    result = runner.invoke(cli_app, [*args, *where[1]])
    assert result.exit_code == 0, result.output
    return result.stdout


def consume(where: tuple[str, tuple[str, ...]], key: str, cost: int) -> None:
    """A verify of ``cost`` insights with ``key``: through the server, or on the store."""
    url = where[0]
    if url.startswith("http"):
        with Client(url, operator_token=ADMIN_TOKEN) as client:
            assert client.verify(key, "insights", cost).valid
        return

    async def local() -> None:
        stores = stores_from_url(url)
        await stores.open()
        try:
            ctx = Context(stores, Settings(_env_file=None, store_url=url))  # type: ignore[call-arg]
            assert (await verify.verify(ctx, key, "insights", cost)).valid
        finally:
            await stores.close()

    asyncio.run(local())


@pytest.mark.slow
def test_cli_v2_plan_and_usage_show_with_every_window(target: tuple[str, tuple[str, ...]]) -> None:
    """plans create takes window, billing, soft and rate limits; usage show has a row per limit."""
    with contextlib.suppress(AssertionError):
        cli(target, "services", "create", "insights")
    plan, account = uid("pro"), uid("acme")
    shown = cli(
        target,
        *("plans", "create", plan, "--limit", "insights=day:1000"),
        *("--limit", "insights=month:20000:billing:soft", "--limit", "insights=rate:10/20"),
        "--json",
    )
    assert json.loads(shown)["quotas"]["insights"] == [
        {"window": "day", "total": 1000},
        {"window": "month", "total": 20000, "anchor": "billing", "mode": "soft"},
        {"rate": {"per_second": 10, "burst": 20}},
    ]
    created = cli(
        target,
        *("accounts", "create", "--name", "Acme", "--plan", plan, "--id", account),
        *("--billing-anchor", "15", "--json"),
    )
    assert json.loads(created)["billing_anchor"] == 15
    issued = json.loads(
        cli(target, "keys", "create", account, "--limit", "insights=day:500", "--json")
    )
    assert issued["limits"] == {"insights": [{"window": "day", "total": 500}]}
    consume(target, issued["key"], 3)
    out = cli(target, "usage", "show", account, "--service", "insights", "--no-chart")
    assert "limits now" in out
    rows = {line.split()[1]: line for line in out.splitlines() if "insights." in line}
    assert "3 / 1,000" in rows["insights.day"]
    assert "3 / 20,000" in rows["insights.month"]
    assert "soft" in rows["insights.month"]
    assert "rate 10/s" in rows["insights.rate"]


@pytest.mark.slow
def test_cli_refuses_a_malformed_limit_naming_it(target: tuple[str, tuple[str, ...]]) -> None:
    """A --limit with an unknown flag or a bad total is VALIDATION_FAILED, saying which."""
    with contextlib.suppress(AssertionError):
        cli(target, "services", "create", "insights")
    for option, words in (
        ("insights=day:1000:sometimes", "unknown 'sometimes'"),
        ("insights=week:many", "whole number"),
        ("insights=rate:10", "rate:PER_SECOND/BURST"),
    ):
        result = runner.invoke(
            cli_app, ["plans", "create", uid("x"), "--limit", option, *target[1]]
        )
        assert result.exit_code == 1, result.output
        assert "VALIDATION_FAILED" in result.stderr
        assert words in result.stderr


# Middleware ----------------------------------------------------------------------------
async def limits_seen(request: Request) -> JSONResponse:
    """The names of the limits the middleware's verdict lists, from the request's state."""
    return JSONResponse({"limits": [x.name for x in request.state.quotad.limits]})


@pytest.fixture(params=["embedded", "remote"])
async def metered(request: pytest.FixtureRequest) -> AsyncIterator[tuple[httpx2.AsyncClient, str]]:
    """An app behind the middleware whose insights allow one call a second (burst 1) and
    100 a day, on the memory store with a clock that stands still, and a key."""
    clock = FakeClock()
    ctx = Context(stores_from_url("memory://"), make_settings("memory://"), clock)
    await ctx.stores.open()
    await admin.create_service(ctx, "insights", "")
    rate = LimitSpec(1, None, 1.0, False, Mode.HARD)
    quota = Quota((LimitSpec(100, Window.DAY), rate))
    await admin.create_plan(ctx, "p", {"insights": quota}, [], "")
    await admin.create_account(ctx, "acme", "Acme", "p", "UTC", Overrides())
    key = (await admin.create_key(ctx, "acme", "k")).secret
    backend: EmbeddedBackend | RemoteBackend
    if request.param == "embedded":
        backend = EmbeddedBackend(ctx=ctx)
    else:
        server = httpx2.ASGITransport(app=create_app(ctx, manage_store=False))
        backend = RemoteBackend("http://quotad", TEST_TOKEN, transport=server)
    app = Starlette(routes=[Route("/limits", limits_seen)])
    app.add_middleware(QuotadMiddleware, service="insights", backend=backend)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://app") as client:
        yield client, key
    await backend.close()
    await ctx.stores.close()


async def test_middleware_answers_429_rate_limited_with_retry_after(
    metered: tuple[httpx2.AsyncClient, str],
) -> None:
    """The first call passes with every limit in request.state; the next is 429 RATE_LIMITED."""
    client, key = metered
    headers = {"Authorization": f"Bearer {key}"}
    first = await client.get("/limits", headers=headers)
    assert first.status_code == 200, first.text
    assert sorted(first.json()["limits"]) == ["insights.day", "insights.rate"]
    second = await client.get("/limits", headers=headers)
    assert second.status_code == 429, second.text
    assert second.json()["error"] == "RATE_LIMITED"
    assert second.headers["retry-after"] == "1"
    assert "insights.rate" in second.headers["ratelimit-policy"]


async def boom(request: Request) -> JSONResponse:
    """A route whose work fails."""
    del request
    return JSONResponse({"error": "boom"}, status_code=500)


@pytest.mark.parametrize("mode", ["embedded", "remote"])
async def test_a_failed_call_gives_back_its_day_and_its_month(mode: str) -> None:
    """A 5xx behind the middleware refunds a v2 verdict whose reset is its month's (no
    daily quota): the day row and the month counter are both back to nothing."""
    clock = FakeClock(datetime.now(UTC))  # the remote backend dates the call by the wall clock
    ctx = Context(stores_from_url("memory://"), make_settings("memory://"), clock)
    await ctx.stores.open()
    await admin.create_service(ctx, "insights", "")
    await admin.create_plan(ctx, "p", {"insights": Quota((LimitSpec(1000, Window.MONTH),))}, [], "")
    await admin.create_account(ctx, "acme", "Acme", "p", "UTC", Overrides())
    key = (await admin.create_key(ctx, "acme", "k")).secret
    backend: EmbeddedBackend | RemoteBackend
    if mode == "embedded":
        backend = EmbeddedBackend(ctx=ctx)
    else:
        server = httpx2.ASGITransport(app=create_app(ctx, manage_store=False))
        backend = RemoteBackend("http://quotad", TEST_TOKEN, transport=server)
    app = Starlette(routes=[Route("/boom", boom)])
    app.add_middleware(QuotadMiddleware, service="insights", backend=backend)
    try:
        async with httpx2.AsyncClient(
            transport=httpx2.ASGITransport(app=app), base_url="http://app"
        ) as client:
            answer = await client.get("/boom", headers={"Authorization": f"Bearer {key}"})
        assert answer.status_code == 500, answer.text
        today = clock.now().date()
        month = span(Window.MONTH, clock.now(), "UTC").period
        [row] = await ctx.counters.usage("acme", "insights", today, today)
        assert row.used == 0
        assert await ctx.counters.read_counters("acme", [("insights.month", month)]) == [0]
    finally:
        await backend.close()
        await ctx.stores.close()
