"""Reservations from the clients (SPEC 10): the middleware's reserve mode (embedded and
remote, over every store), the proxy's ``cost_header``, and CREDITS_EXHAUSTED as a 429."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import Any

import httpx2
import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from quotad.api.app import create_app
from quotad.asgi import EmbeddedBackend, QuotadMiddleware, RemoteBackend
from quotad.asgi.backends import QuotaBackend
from quotad.asgi.proxy import build_proxy
from quotad.domain.credits import from_micros, to_micros
from quotad.domain.models import Overrides, Quota
from quotad.service import admin, credits
from quotad.service.context import Context
from quotad.storage import Stores
from tests.conftest import ADMIN_TOKEN, make_settings

ERROR_KEYS = {"error", "id", "note", "validationErrors"}


@dataclass
class World:
    """A deployment with one account (llm: 100 a day), its key, and a backend to it."""

    ctx: Context
    key: str
    backend: QuotaBackend

    async def balance(self) -> int | float:
        """The account's balance, in credits."""
        return from_micros((await credits.balance(self.ctx, "acme")).balance)

    async def used(self) -> int:
        """What the account used of llm today."""
        today = self.ctx.clock.now().date()
        rows = await self.ctx.counters.usage("acme", "llm", today, today)
        return rows[0].used if rows else 0


@pytest.fixture(params=["embedded", "remote"])
async def world(request: pytest.FixtureRequest, stores: Stores) -> AsyncIterator[World]:
    """The account on the test's store, behind an embedded backend or a remote one (a
    quotad app in process, reached through the SDK)."""
    ctx = Context(stores, make_settings("memory://"))
    await admin.create_service(ctx, "llm", "")
    await admin.create_service(ctx, "gen", "", to_micros(1))  # a credit a unit
    await admin.create_plan(ctx, "p", {"llm": Quota.daily(100), "gen": Quota.daily(1000)}, [], "")
    await admin.create_account(ctx, "acme", "Acme", "p", "UTC", Overrides())
    key = (await admin.create_key(ctx, "acme", "k")).secret
    backend: QuotaBackend
    if request.param == "embedded":
        backend = EmbeddedBackend(ctx=ctx)
    else:
        quotad = httpx2.ASGITransport(app=create_app(ctx, manage_store=False))
        backend = RemoteBackend("http://quotad", ADMIN_TOKEN, transport=quotad)
    yield World(ctx, key, backend)
    await backend.close()


async def work(request: Request) -> JSONResponse:
    """Reports its actual cost as ?state= (request state) or ?header= (an answer header)."""
    if "state" in request.query_params:
        request.state.quotad_cost = int(request.query_params["state"])
    headers = {}
    if "header" in request.query_params:
        headers["x-actual-cost"] = request.query_params["header"]
    status = int(request.query_params.get("status", "200"))
    reservation = request.scope["state"].get("quotad_reservation")
    return JSONResponse({"reservation": reservation}, status_code=status, headers=headers)


async def boom(_request: Request) -> JSONResponse:
    """An endpoint that raises."""
    raise RuntimeError("boom")


def reserving_app(
    world: World, cost: int = 10, service: str = "llm", **options: Any
) -> httpx2.AsyncClient:
    """A client to a Starlette app whose middleware reserves ``cost`` a request (unless
    ``reserve=False`` is among the options)."""
    app = Starlette(routes=[Route("/work", work), Route("/boom", boom)])
    options = {"reserve": True, **options}
    app.add_middleware(
        QuotadMiddleware, service=service, backend=world.backend, cost=cost, **options
    )
    transport = httpx2.ASGITransport(app=app, raise_app_exceptions=False)
    return httpx2.AsyncClient(transport=transport, base_url="http://app")


def bearer(key: str) -> dict[str, str]:
    """The key as a bearer token."""
    return {"Authorization": f"Bearer {key}"}


async def test_the_app_reports_a_smaller_cost_in_its_state(world: World) -> None:
    """A reservation of 10 whose app sets request.state.quotad_cost = 3 commits 3."""
    async with reserving_app(world) as client:
        answer = await client.get("/work", params={"state": 3}, headers=bearer(world.key))
    assert answer.status_code == 200
    assert answer.json()["reservation"]  # the app sees the reservation's id
    assert await world.used() == 3


async def test_the_cost_header_commits_a_larger_cost_and_is_not_passed_on(world: World) -> None:
    """The app's x-actual-cost: 25 commits 25 of a 10 reserved; the caller never sees it."""
    async with reserving_app(world, cost_header="X-Actual-Cost") as client:
        answer = await client.get("/work", params={"header": 25}, headers=bearer(world.key))
    assert answer.status_code == 200
    assert "x-actual-cost" not in answer.headers
    assert await world.used() == 25


async def test_no_or_an_invalid_reported_cost_commits_the_reserved_one(world: World) -> None:
    """Without a report, or with a header that is not an integer >= 0, the 10 reserved stand."""
    async with reserving_app(world, cost_header="x-actual-cost") as client:
        await client.get("/work", headers=bearer(world.key))
        await client.get("/work", params={"header": "-4"}, headers=bearer(world.key))
        await client.get("/work", params={"header": "lots"}, headers=bearer(world.key))
    assert await world.used() == 30


async def test_an_app_raising_or_answering_5xx_cancels(world: World) -> None:
    """The app's exception and its 503 give the whole reservation back; a 200 then commits."""
    async with reserving_app(world) as client:
        raised = await client.get("/boom", headers=bearer(world.key))
        failed = await client.get("/work", params={"status": 503}, headers=bearer(world.key))
        assert (raised.status_code, failed.status_code) == (500, 503)
        assert await world.used() == 0
        await client.get("/work", params={"state": 4}, headers=bearer(world.key))
    assert await world.used() == 4


async def test_a_refused_reservation_is_a_429_and_takes_nothing(world: World) -> None:
    """A reservation of 150 of a quota of 100 answers 429 QUOTA_EXCEEDED, nothing consumed."""
    async with reserving_app(world, cost=150) as client:
        answer = await client.get("/work", headers=bearer(world.key))
    assert answer.status_code == 429
    assert set(answer.json()) == ERROR_KEYS
    assert answer.json()["error"] == "QUOTA_EXCEEDED"
    assert await world.used() == 0


async def test_credits_exhausted_is_a_429_without_a_guessed_retry_after(world: World) -> None:
    """A priced call beyond the balance answers 429 CREDITS_EXHAUSTED with the contract's
    body and no Retry-After (a limit's reset brings no credits); nothing is debited."""
    await credits.grant(world.ctx, "acme", to_micros(5))
    for reserve in (False, True):
        async with reserving_app(world, cost=6, service="gen", reserve=reserve) as client:
            answer = await client.get("/work", headers=bearer(world.key))
        assert answer.status_code == 429
        assert set(answer.json()) == ERROR_KEYS
        assert answer.json()["error"] == "CREDITS_EXHAUSTED"
        assert "retry-after" not in answer.headers
    assert await world.balance() == 5


async def test_a_priced_reservation_debits_the_actual_cost(world: World) -> None:
    """A reservation of 4 credits whose app reports 1 debits 1; one that fails debits none."""
    await credits.grant(world.ctx, "acme", to_micros(5))
    async with reserving_app(world, cost=4, service="gen") as client:
        await client.get("/work", params={"state": 1}, headers=bearer(world.key))
        assert await world.balance() == 4
        await client.get("/boom", headers=bearer(world.key))
    assert await world.balance() == 4


async def test_an_embedded_refund_gives_the_credits_back(stores: Stores) -> None:
    """Consuming (not reserving) a priced service, a 5xx answer gives its debit back."""
    ctx = Context(stores, make_settings("memory://"))
    await admin.create_service(ctx, "gen", "", to_micros(1))
    await admin.create_plan(ctx, "p", {"gen": Quota.daily(1000)}, [], "")
    await admin.create_account(ctx, "acme", "Acme", "p", "UTC", Overrides())
    key = (await admin.create_key(ctx, "acme", "k")).secret
    world = World(ctx, key, EmbeddedBackend(ctx=ctx))
    await credits.grant(ctx, "acme", to_micros(5))
    async with reserving_app(world, cost=2, service="gen", reserve=False) as client:
        failed = await client.get("/work", params={"status": 500}, headers=bearer(key))
        assert failed.status_code == 500
        assert await world.balance() == 5
        await client.get("/work", headers=bearer(key))
    assert await world.balance() == 3


def test_a_cost_header_without_reserve_is_refused() -> None:
    """cost_header settles a reservation: without reserve=True the middleware refuses it."""
    with pytest.raises(ValueError, match="reserve=True"):
        QuotadMiddleware(boom, service="llm", backend=EmbeddedBackend("memory://"), cost_header="x")  # type: ignore[arg-type]


# The proxy ------------------------------------------------------------------------------
def upstream_app() -> Starlette:
    """An upstream answering its cost in x-tokens (?tokens=), or failing with ?status=."""

    async def generate(request: Request) -> JSONResponse:
        headers = {}
        if "tokens" in request.query_params:
            headers["x-tokens"] = request.query_params["tokens"]
        status = int(request.query_params.get("status", "200"))
        return JSONResponse({"ok": True}, status_code=status, headers=headers)

    return Starlette(routes=[Route("/generate", generate)])


async def test_the_proxy_commits_the_cost_the_upstream_reports(world: World) -> None:
    """With cost_header, the upstream's x-tokens is committed, a missing one commits the
    reserved cost, and an upstream 5xx or an unreachable upstream is cancelled."""
    upstream = httpx2.ASGITransport(app=upstream_app())
    proxy = build_proxy(
        "http://upstream",
        service="llm",
        backend=world.backend,
        cost=20,
        cost_header="x-tokens",
        transport=upstream,
    )
    transport = httpx2.ASGITransport(app=proxy)
    async with httpx2.AsyncClient(transport=transport, base_url="http://proxy") as client:
        tokens = await client.get("/generate", params={"tokens": 7}, headers=bearer(world.key))
        assert tokens.status_code == 200
        assert "x-tokens" not in tokens.headers
        assert await world.used() == 7
        await client.get("/generate", headers=bearer(world.key))
        assert await world.used() == 27
        failed = await client.get("/generate", params={"status": 502}, headers=bearer(world.key))
        assert failed.status_code == 502
        assert await world.used() == 27


async def test_the_proxy_answers_credits_exhausted_429(world: World) -> None:
    """Through the proxy, a priced call beyond the balance is a 429 CREDITS_EXHAUSTED and
    the upstream is never called."""
    called: list[str] = []

    def upstream(request: httpx2.Request) -> httpx2.Response:
        called.append(request.url.path)
        return httpx2.Response(200, json={"ok": True})

    proxy = build_proxy(
        "http://upstream",
        service="gen",
        backend=world.backend,
        cost=3,
        cost_header="x-tokens",
        transport=httpx2.MockTransport(upstream),
    )
    await credits.grant(world.ctx, "acme", to_micros(2))
    transport = httpx2.ASGITransport(app=proxy)
    async with httpx2.AsyncClient(transport=transport, base_url="http://proxy") as client:
        answer = await client.get("/generate", headers=bearer(world.key))
    assert (answer.status_code, answer.json()["error"]) == (429, "CREDITS_EXHAUSTED")
    assert called == []
    assert await world.balance() == 2


async def test_the_proxy_cancels_when_the_upstream_cannot_be_reached(world: World) -> None:
    """An upstream that refuses connections costs nothing."""

    def refuse(request: httpx2.Request) -> httpx2.Response:
        raise httpx2.ConnectError("refused", request=request)

    proxy = build_proxy(
        "http://upstream",
        service="llm",
        backend=world.backend,
        cost=20,
        cost_header="x-tokens",
        transport=httpx2.MockTransport(refuse),
    )
    transport = httpx2.ASGITransport(app=proxy)
    async with httpx2.AsyncClient(transport=transport, base_url="http://proxy") as client:
        answer = await client.get("/generate", headers=bearer(world.key))
    assert answer.status_code == 502
    assert await world.used() == 0
