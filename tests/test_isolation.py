"""Isolation (issue 6): with 20 accounts, no key reaches another account's data.

Twenty accounts, each with its own key and its own, distinct usage (today's consumes,
an adjusted past day, metering events on another service, a gauge), on every store.

- Every customer route (enumerated from the app's routes) answers each key with its own
  account's data and nothing else, whatever account id the request tries to slip in.
- Every operator route (every route under ``/admin/v1``, plus ``/v1/verify`` and
  ``/v1/events``, enumerated from the app's routes) refuses every customer key with 401,
  sent as ``Authorization: Bearer`` or as ``x-api-key``, with path parameters and bodies
  aimed at *another* account, and nothing changes. The same requests sent with the
  operator token then succeed, which shows each probe was one that would have done harm.
- The operator dashboard's pages and actions let no customer key in either.

(The customer portal's per-key isolation is covered by ``tests/test_dashboard.py``.)
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any

import httpx2
from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.routing import Mount

from quotad.api import verify_endpoint
from quotad.api.app import create_app
from quotad.dashboard import Mounted
from quotad.domain.webhooks import AlertEvent, delivery_id
from quotad.service import webhooks
from quotad.service.context import Context
from quotad.service.throttle import FailureBudget
from quotad.storage import Stores
from tests.conftest import OPERATOR
from tests.snapshots import store_snapshot

ACCOUNTS = 20
PLAN, SPARE = "iso", "iso-spare"
LIMIT = "cohort.max_count"
TODAY, ADJUSTED, EVENT_DAY, START = "2024-11-07", "2024-11-05", "2024-11-06", "2024-11-01"
ERROR_KEYS = {"error", "id", "note", "validationErrors"}
USAGE_WINDOW = (date(2024, 10, 1), date(2024, 11, 30))  # the days a snapshot compares
CUSTOMER_ROUTES = {("GET", "/v1/usages"), ("GET", "/usage/{service}"), ("GET", "/v1/quotas")}
PUBLIC_PREFIXES = ("/openapi.json", "/docs", "/redoc", "/metrics", "/healthz", "/readyz", "/portal")


@dataclass(frozen=True)
class Tenant:
    """One account of the twenty, and what it used."""

    n: int
    account_id: str
    key: str
    key_id: str

    @property
    def consumed_today(self) -> int:
        """Insights units consumed today through verify."""
        return self.n + 1

    @property
    def adjusted(self) -> int:
        """Insights units added to ``ADJUSTED`` by the operator."""
        return 100 + self.n

    @property
    def events(self) -> int:
        """Scoring units recorded on ``EVENT_DAY`` by a metering event."""
        return 2 * self.n + 1

    @property
    def gauge(self) -> int:
        """The cohort gauge's usage."""
        return self.n


# The app's routes ------------------------------------------------------------------------
def routes(app: Starlette | Mounted) -> Iterator[tuple[str, str]]:
    """Every (method, path) the app serves, included routers and the mounted web UI flattened;
    verify, which the app's innermost middleware answers ahead of the router, too."""
    middleware = [m.cls for m in getattr(app, "user_middleware", ())]
    if verify_endpoint.VerifyFirst in middleware:  # every method: its own 405
        yield "POST", verify_endpoint.PATH
    for route in app.routes:
        contexts = getattr(route, "effective_route_contexts", None)
        if contexts is not None:  # an included router (FastAPI keeps them unflattened)
            for context in contexts():
                for method in getattr(context.original_route, "methods", None) or ():
                    yield method, context.path
        elif isinstance(route, Mounted):  # the dashboard's own app, by its full paths
            yield from routes(route)
        elif isinstance(route, Mount) and isinstance(route.app, FastAPI):  # the API, at the root
            yield from routes(route.app)
        else:
            methods = getattr(route, "methods", None) or {"GET"}
            for method in methods:
                yield method, str(getattr(route, "path", ""))


def dashboard_routes(app: Starlette) -> list[tuple[str, str]]:
    """The operator dashboard's pages and actions (not its sign-in form or static files)."""
    return sorted(
        (m, p)
        for m, p in routes(app)
        if m != "HEAD"
        and (p == "/dashboard" or p.startswith("/dashboard/"))
        and not p.startswith(("/dashboard/static", "/dashboard/login"))
    )


def is_operator_route(path: str) -> bool:
    """The JSON operator API: ``/admin/v1/…``, ``/v1/verify``, ``/v1/events`` and
    ``/v1/reservations/…``."""
    return path.startswith(("/admin/v1", "/v1/reservations/")) or path in (
        "/v1/verify",
        "/v1/events",
    )


# A deployment of twenty accounts -----------------------------------------------------------
async def populate(http: httpx2.AsyncClient) -> list[Tenant]:
    """Twenty accounts with distinct usage, provisioned and used over the API."""

    async def ok(method: str, path: str, body: Any = None, status: int = 200) -> Any:
        response = await http.request(method, path, json=body, headers=OPERATOR)
        assert response.status_code == status, (method, path, response.text)
        return response.json()

    for name in ("insights", "scoring"):
        await ok("POST", "/admin/v1/services", {"name": name}, 201)
    quotas = {"insights": {"total": 1000}, "scoring": {"total": 100}}
    limits = [{"name": LIMIT, "description": "Cohorts", "limit": 50}]
    await ok("POST", "/admin/v1/plans", {"id": PLAN, "quotas": quotas, "limits": limits}, 201)
    await ok("POST", "/admin/v1/plans", {"id": SPARE, "quotas": quotas}, 201)
    tenants = []
    for n in range(ACCOUNTS):
        account_id = f"tenant-{n:02d}"
        await ok(
            "POST", "/admin/v1/accounts", {"id": account_id, "name": account_id, "plan": PLAN}, 201
        )
        issued = await ok("POST", f"/admin/v1/accounts/{account_id}/keys", {"name": "own"}, 201)
        tenant = Tenant(n, account_id, issued["key"], issued["id"])
        verdict = await ok(
            "POST",
            "/v1/verify",
            {"key": tenant.key, "service": "insights", "cost": tenant.consumed_today},
        )
        assert verdict["valid"] is True, verdict
        await ok(
            "POST",
            f"/admin/v1/accounts/{account_id}/usage/insights/adjust",
            {"date": ADJUSTED, "delta": tenant.adjusted},
        )
        await ok("PUT", f"/admin/v1/accounts/{account_id}/limits/{LIMIT}", {"usage": tenant.gauge})
        tenants.append(tenant)
    events = [
        {
            "id": f"ev-{t.n}",
            "account_id": t.account_id,
            "service": "scoring",
            "amount": t.events,
            "timestamp": f"{EVENT_DAY}T10:00:00Z",
        }
        for t in tenants
    ]
    await ok("POST", "/v1/events", {"events": events})
    return tenants


async def snapshot(stores: Stores) -> dict[str, Any]:
    """Everything a request could change, over this module's usage window."""
    return await store_snapshot(stores, USAGE_WINDOW)


def no_failure_budget(ctx: Context) -> None:
    """These tests present hundreds of wrong credentials on purpose: no 429 for that."""
    ctx.failures = FailureBudget(0, time.monotonic)


# Customer routes ---------------------------------------------------------------------------
def expected_usages(tenant: Tenant) -> list[dict[str, Any]]:
    """``GET /v1/usages`` of this tenant alone."""
    return [
        {"description": "Cohorts", "limit": 50, "name": LIMIT, "usage": tenant.gauge},
        {
            "description": "Daily insights queries",
            "limit": 1000,
            "name": "insights.daily_queries",
            "usage": tenant.consumed_today,
        },
        {
            "description": "Daily scoring queries",
            "limit": 100,
            "name": "scoring.daily_queries",
            "usage": 0,
        },
    ]


def expected_history(tenant: Tenant, service: str) -> dict[str, int]:
    """``used`` per day of ``GET /usage/{service}`` from START to TODAY, for this tenant."""
    used = dict.fromkeys([f"2024-11-0{d}" for d in range(1, 8)], 0)
    if service == "insights":
        used[ADJUSTED] = tenant.adjusted
        used[TODAY] = tenant.consumed_today
    else:
        used[EVENT_DAY] = tenant.events
    return used


async def test_every_customer_route_shows_each_key_only_its_own_account(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Each of 20 keys reads exactly its own account's usages and history on every customer route."""
    no_failure_budget(ctx)
    tenants = await populate(client)
    app = create_app(ctx, manage_store=False)  # the same routes as the client's app
    served = {(m, p) for m, p in routes(app) if m != "HEAD"}
    customer = {
        (m, p) for m, p in served if not is_operator_route(p) and p.startswith(("/v1", "/usage"))
    }
    assert customer == CUSTOMER_ROUTES, "a new customer route: add it to this test"
    # Every route is known to this module: customer, operator, dashboard, or public.
    unclassified = {
        (m, p)
        for m, p in served
        if (m, p) not in CUSTOMER_ROUTES
        and not is_operator_route(p)
        and not p.startswith(("/dashboard", *PUBLIC_PREFIXES))
    }
    assert not unclassified, f"routes this test does not know: {unclassified}"
    window = f"start_date={START}&end_date={TODAY}"
    for tenant in tenants:
        others = [t for t in tenants if t is not tenant]
        bearer = {"Authorization": f"Bearer {tenant.key}"}
        x_api_key = {"x-api-key": tenant.key}
        # Naming another account alongside the key is ignored, not obeyed.
        intruder = others[tenant.n % len(others)].account_id
        sneaky = {**bearer, "X-Account-Id": intruder}
        answers = [
            (await client.get("/v1/usages", headers=bearer), None),
            (await client.get(f"/v1/usages?account_id={intruder}", headers=sneaky), None),
            (await client.get(f"/usage/insights?{window}", headers=x_api_key), "insights"),
            (
                await client.get(f"/usage/scoring?{window}&account_id={intruder}", headers=sneaky),
                "scoring",
            ),
        ]
        for response, service in answers:
            assert response.status_code == 200, response.text
            if service is None:
                assert response.json() == expected_usages(tenant), tenant.account_id
            else:
                days = {row["date"]: row["used"] for row in response.json()}
                assert days == expected_history(tenant, service), (tenant.account_id, service)
            assert not any(t.account_id in response.text for t in others)


# Operator routes ---------------------------------------------------------------------------
EVENTS = ["quota.threshold"]
HOOK_URL = "https://93.184.215.14/h"  # a public address, given as one: no DNS asked


def probe(method: str, path: str, victim: Tenant) -> tuple[str, Any]:
    """A concrete URL and a valid body for an operator route, aimed at ``victim``."""
    url = (
        path.replace("{account_id}", victim.account_id)
        .replace("{service}", "insights")
        .replace("{name}", LIMIT)
        .replace("{key_id}", victim.key_id)
        .replace("{plan_id}", SPARE)
        .replace("{token_id}", "tok_stolen")
        .replace("{webhook_id}", "wh_stolen")
        .replace("{delivery_id}", "dlv_stolen")
        .replace("{reservation_id}", "rsv_stolen")
        .replace("{grant_id}", "gr_stolen")
    )
    assert "{" not in url, f"no value for a path parameter of {path}: add it to this test"
    event = {
        "id": "stolen",
        "account_id": victim.account_id,
        "service": "insights",
        "amount": 500,
        "timestamp": f"{TODAY}T10:00:00Z",
    }
    bodies: dict[tuple[str, str], Any] = {
        ("POST", "/admin/v1/services"): {"name": "stolen"},
        ("PATCH", "/admin/v1/services/{service}"): {"credit_price": 1000},
        ("POST", "/admin/v1/accounts/{account_id}/grants"): {"amount": 1000},
        ("POST", "/admin/v1/plans"): {"id": "stolen", "quotas": {"insights": {"total": 1}}},
        ("PUT", "/admin/v1/plans/{plan_id}"): {"quotas": {"insights": {"total": 1}}},
        ("POST", "/admin/v1/accounts"): {"id": "stolen", "name": "Stolen", "plan": PLAN},
        ("PATCH", "/admin/v1/accounts/{account_id}"): {"status": "suspended"},
        ("POST", "/admin/v1/accounts/{account_id}/keys"): {"name": "stolen"},
        ("POST", "/admin/v1/keys/{key_id}/rotate"): {"grace_seconds": 0},
        ("PATCH", "/admin/v1/keys/{key_id}"): {"limits": {}},
        ("POST", "/admin/v1/accounts/{account_id}/usage/{service}/adjust"): {
            "date": TODAY,
            "delta": -1000,
        },
        ("PUT", "/admin/v1/accounts/{account_id}/limits/{name}"): {"usage": 0},
        ("POST", "/admin/v1/accounts/{account_id}/limits/{name}/acquire"): {"amount": 1},
        ("POST", "/admin/v1/accounts/{account_id}/limits/{name}/release"): {"amount": 1},
        ("POST", "/v1/verify"): {"key": victim.key, "service": "insights", "cost": 1},
        ("POST", "/v1/events"): {"events": [event]},
        ("POST", "/v1/reservations/{reservation_id}/commit"): {"cost": 1},
        ("POST", "/admin/v1/tokens"): {"name": "stolen", "role": "admin"},
        ("POST", "/admin/v1/webhooks"): {"url": HOOK_URL, "events": EVENTS},
        ("PATCH", "/admin/v1/webhooks/{webhook_id}"): {"enabled": False},
        ("POST", "/admin/v1/webhooks/{webhook_id}/rotate-secret"): {"grace_seconds": 0},
        ("POST", "/admin/v1/webhooks/{webhook_id}/deliveries/{delivery_id}/resend"): {},
    }
    if method in ("POST", "PUT", "PATCH"):
        assert (method, path) in bodies, f"no body for {method} {path}: add one to this test"
    return url, bodies.get((method, path))


def assert_refused(response: httpx2.Response, codes: set[str]) -> None:
    """401 with the contract's error body and one of ``codes``."""
    assert response.status_code == 401, (response.request.url, response.text)
    body = response.json()
    assert set(body) == ERROR_KEYS
    assert body["error"] in codes, body


async def test_no_customer_key_reaches_any_operator_route(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Every customer key gets 401 on every operator route (and no dashboard); nothing changes."""
    no_failure_budget(ctx)
    tenants = await populate(client)
    app = create_app(ctx, manage_store=False)  # the same routes as the client's app
    operator_routes = sorted(
        {(m, p) for m, p in routes(app) if is_operator_route(p) and m != "HEAD"},
        # Deletions last, the account's own at the very end, so that the operator's
        # confirmation below still finds its victim on every other route.
        key=lambda route: (
            route[0] == "DELETE",
            route == ("DELETE", "/admin/v1/accounts/{account_id}"),
            route,
        ),
    )
    assert len(operator_routes) >= 24, operator_routes
    assert ("POST", verify_endpoint.PATH) in operator_routes
    before = await snapshot(ctx.stores)

    for tenant in tenants:
        victim = tenants[(tenant.n + 1) % ACCOUNTS]
        for method, path in operator_routes:
            url, body = probe(method, path, victim)
            bearer = {"Authorization": f"Bearer {tenant.key}"}
            response = await client.request(method, url, json=body, headers=bearer)
            assert_refused(response, {"INVALID_AUTHORIZATION"})
            if tenant.n == 0:  # the key alone, as x-api-key: operator routes never read it
                response = await client.request(
                    method, url, json=body, headers={"x-api-key": tenant.key}
                )
                assert_refused(response, {"MISSING_API_KEY"})
    # Nor does a customer key open the operator dashboard (it redirects to its sign-in).
    assert ("POST", "/dashboard/accounts/{account_id}/keys/{key_id}/revoke") in dashboard_routes(
        app
    )
    for tenant in tenants[:2]:
        for headers in ({"Authorization": f"Bearer {tenant.key}"}, {"x-api-key": tenant.key}):
            for method, path in dashboard_routes(app):
                url = path.replace("{account_id}", victim.account_id).replace(
                    "{key_id}", victim.key_id
                )
                response = await client.request(method, url, headers=headers)
                assert response.status_code in (303, 401, 403), (method, url, response.status_code)
                if response.status_code == 303:
                    assert response.headers["location"].startswith("/dashboard/login")
                assert victim.account_id not in response.text
    assert await snapshot(ctx.stores) == before, "a refused request changed something"

    # The same probes with the operator token succeed: each one would have done harm.
    victim = tenants[1]
    token_id = "tok_stolen"
    grant_id = "gr_stolen"
    hook = await webhooks.create(ctx, HOOK_URL, EVENTS)
    now = ctx.clock.now()
    event = AlertEvent("evt_probe", EVENTS[0], now, "probe", {}, victim.account_id)
    await ctx.stores.alerts.record_alert(event, [hook.id])
    held = []  # two reservations of the victim's: one to commit, one to cancel
    for _ in range(2):
        reserve = {"key": victim.key, "service": "insights", "cost": 1, "reserve": True}
        answer = (await client.post("/v1/verify", json=reserve, headers=OPERATOR)).json()
        held.append(answer["reservation_id"])
    for method, path in operator_routes:
        url, body = probe(method, path, victim)
        url = url.replace("tok_stolen", token_id)  # the token POST /admin/v1/tokens made
        url = url.replace("gr_stolen", grant_id)  # the grant POST …/grants made
        url = url.replace("wh_stolen", hook.id).replace(
            "dlv_stolen", delivery_id(event.id, hook.id)
        )
        url = url.replace("rsv_stolen", held[method == "DELETE"])
        response = await client.request(method, url, json=body, headers=OPERATOR)
        assert 200 <= response.status_code < 300, (method, url, response.text)
        if (method, path) == ("POST", "/admin/v1/tokens"):
            token_id = response.json()["id"]
        if (method, path) == ("POST", "/admin/v1/accounts/{account_id}/grants"):
            grant_id = response.json()["id"]
    assert await snapshot(ctx.stores) != before
