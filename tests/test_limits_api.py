"""Limits v2 (SPEC 9) through the API: plans, overrides, billing anchors and key limits as
records, and the reading endpoints (/v1/quotas, the admin quotas views, /v1/usages and
/usage/{service}) over counters moved by the store's own consume, events and adjustments."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import httpx2

from quotad.domain import days, limits
from quotad.domain.limits import LimitSpec
from quotad.domain.models import ConsumeOutcome
from quotad.service import admin, quotas
from quotad.service.context import Context
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment

NOV_1 = datetime(2024, 11, 1, 12, 0, tzinfo=UTC)

V2_INSIGHTS: list[dict[str, Any]] = [
    {"rate": {"per_second": 10, "burst": 20}},
    {"window": "day", "total": 1000},
    {"window": "month", "total": 20000, "anchor": "billing", "mode": "soft"},
    {"window": "hour", "total": 100, "per": "key"},
]
V2_SCORING: list[dict[str, Any]] = [{"window": "month", "total": 300}]


async def _setup(http: httpx2.AsyncClient, anchor: int | None = None) -> Deployment:
    """Services insights, scoring and weather; plan v2; account acme; one key."""
    for name in ("insights", "scoring", "weather"):
        response = await http.post("/admin/v1/services", json={"name": name}, headers=OPERATOR)
        assert response.status_code == 201, response.text
    plan = {"id": "v2", "quotas": {"insights": V2_INSIGHTS, "scoring": V2_SCORING}}
    response = await http.post("/admin/v1/plans", json=plan, headers=OPERATOR)
    assert response.status_code == 201, response.text
    account: dict[str, Any] = {"id": "acme", "name": "Acme", "plan": "v2"}
    if anchor is not None:
        account["billing_anchor"] = anchor
    response = await http.post("/admin/v1/accounts", json=account, headers=OPERATOR)
    assert response.status_code == 201, response.text
    response = await http.post("/admin/v1/accounts/acme/keys", json={}, headers=OPERATOR)
    assert response.status_code == 201, response.text
    return Deployment("acme", response.json()["key"], response.json()["id"])


async def _consume(
    ctx: Context, service: str, cost: int, key_id: str | None = None
) -> ConsumeOutcome:
    """One consume of every limit that applies, as verify decides it (the store's step)."""
    account = await admin.require_account(ctx, "acme")
    plan = await admin.require_plan(ctx, account.plan_id)
    key = None if key_id is None else await admin.require_key(ctx, key_id)
    chosen = (
        quotas.key_limits(account, plan, key)
        if key is not None
        else quotas.account_limits(account, plan)
    )
    now = ctx.clock.now()
    items = [
        quotas.counter(service, limit, now, account.timezone, account.anchor_day, key_id)
        for name, limit in chosen
        if name == service
    ]
    day_row = next((item for item in items if item.is_day_row), None)
    extra = tuple(quotas.slot(item, cost) for item in items if not item.is_day_row)
    return await ctx.counters.consume(
        account.id,
        service,
        days.local_day(now, account.timezone),
        cost,
        0 if day_row is None else day_row.limit.total,
        None,
        now,
        extra,
        limits.TALLY if day_row is None else limits.MODES[day_row.limit.mode],
    )


def _problems(response: httpx2.Response) -> list[tuple[str, str]]:
    body = response.json()
    assert (response.status_code, body["error"]) == (400, "VALIDATION_FAILED"), response.text
    return [(item["path"], item["message"]) for item in body["validationErrors"]]


# Records ---------------------------------------------------------------------------------
async def test_a_v2_plan_reads_back_as_written(client: httpx2.AsyncClient, ctx: Context) -> None:
    """A plan of SPEC 9's lists is stored and read back (POST, GET, PUT) in the same shape."""
    await _setup(client)
    plan = (await client.get("/admin/v1/plans/v2", headers=OPERATOR)).json()
    assert plan["quotas"] == {"insights": V2_INSIGHTS, "scoring": V2_SCORING}
    replaced = await client.put(
        "/admin/v1/plans/v2", json={"quotas": {"scoring": V2_INSIGHTS[:2]}}, headers=OPERATOR
    )
    assert replaced.status_code == 200, replaced.text
    assert replaced.json()["quotas"] == {"scoring": V2_INSIGHTS[:2]}
    stored = await admin.require_plan(ctx, "v2")
    assert stored.quotas["scoring"].limits == (
        LimitSpec(20, None, 10.0),
        LimitSpec(1000),
    )


async def test_a_v1_plan_and_override_read_back_unchanged(client: httpx2.AsyncClient) -> None:
    """Version 1's {"total": N} stays version 1's shape on read, for plans and overrides."""
    await client.post("/admin/v1/services", json={"name": "insights"}, headers=OPERATOR)
    plan = {"id": "free", "quotas": {"insights": {"total": 250}}}
    created = await client.post("/admin/v1/plans", json=plan, headers=OPERATOR)
    assert created.json()["quotas"] == {"insights": {"total": 250, "period": "day"}}
    body = {
        "id": "acme",
        "name": "Acme",
        "plan": "free",
        "overrides": {"quotas": {"insights": {"total": 500}}},
    }
    account = await client.post("/admin/v1/accounts", json=body, headers=OPERATOR)
    assert account.json()["overrides"]["quotas"] == {"insights": {"total": 500}}
    got = await client.get("/admin/v1/accounts/acme", headers=OPERATOR)
    assert got.json()["overrides"]["quotas"] == {"insights": {"total": 500}}


async def test_bad_limits_are_refused_at_their_pointer_and_change_nothing(
    client: httpx2.AsyncClient,
) -> None:
    """Unknown window, zero or negative total, rate without burst, a window twice and a
    billing anchor off a month are each VALIDATION_FAILED at their JSON pointer; the plan
    stays as it was."""
    await _setup(client)
    cases: list[tuple[list[dict[str, Any]], str]] = [
        ([{"window": "fortnight", "total": 5}], "/body/quotas/insights/0/window"),
        ([{"window": "day", "total": 0}], "/body/quotas/insights/0/total"),
        ([{"window": "day", "total": -3}], "/body/quotas/insights/0/total"),
        ([{"rate": {"per_second": 5}}], "/body/quotas/insights/0/rate/burst"),
        (
            [{"window": "day", "total": 5}, {"window": "day", "total": 9}],
            "/body/quotas/insights/1",
        ),
        ([{"window": "week", "total": 5, "anchor": "billing"}], "/body/quotas/insights/0/anchor"),
    ]
    before = (await client.get("/admin/v1/plans/v2", headers=OPERATOR)).json()
    for given, path in cases:
        body = {"quotas": {"insights": given}}
        replaced = await client.put("/admin/v1/plans/v2", json=body, headers=OPERATOR)
        assert [p for p, _ in _problems(replaced)] == [path], given
        created = await client.post(
            "/admin/v1/plans", json={"id": "other", **body}, headers=OPERATOR
        )
        assert [p for p, _ in _problems(created)] == [path], given
    assert (await client.get("/admin/v1/plans/v2", headers=OPERATOR)).json() == before
    missing = await client.get("/admin/v1/plans/other", headers=OPERATOR)
    assert missing.status_code == 404
    overrides = {"quotas": {"scoring": [{"window": "day", "total": 0}]}}
    patched = await client.patch(
        "/admin/v1/accounts/acme", json={"overrides": overrides}, headers=OPERATOR
    )
    assert [p for p, _ in _problems(patched)] == ["/body/overrides/quotas/scoring/0/total"]


async def test_overrides_replace_a_plan_limit_of_the_same_window_or_add_one(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """An account's v2 override replaces the plan's day limit and adds a week one."""
    await _setup(client)
    overrides = {
        "quotas": {"insights": [{"window": "day", "total": 400}, {"window": "week", "total": 2000}]}
    }
    patched = await client.patch(
        "/admin/v1/accounts/acme", json={"overrides": overrides}, headers=OPERATOR
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["overrides"]["quotas"] == overrides["quotas"]
    states = (await client.get("/admin/v1/accounts/acme/quotas", headers=OPERATOR)).json()
    totals = {x["name"]: x["total"] for x in states if x["service"] == "insights"}
    assert totals == {
        "insights.rate": 20,
        "insights.day": 400,
        "insights.month": 20000,
        "insights.week": 2000,
    }


async def test_billing_anchor_defaults_to_the_creation_day_and_is_checked(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """billing_anchor is the local creation day unless given (1-31), on create and PATCH."""
    clock.set(NOV_1)
    await _setup(client)
    account = (await client.get("/admin/v1/accounts/acme", headers=OPERATOR)).json()
    assert account["billing_anchor"] == 1
    patched = await client.patch(
        "/admin/v1/accounts/acme", json={"billing_anchor": 31}, headers=OPERATOR
    )
    assert patched.json()["billing_anchor"] == 31
    for bad in (0, 32, "5"):
        refused = await client.patch(
            "/admin/v1/accounts/acme", json={"billing_anchor": bad}, headers=OPERATOR
        )
        assert [p for p, _ in _problems(refused)] == ["/body/billing_anchor"]
    body = {"id": "beta", "name": "Beta", "plan": "v2", "billing_anchor": 15}
    created = await client.post("/admin/v1/accounts", json=body, headers=OPERATOR)
    assert created.json()["billing_anchor"] == 15
    body = {"id": "gamma", "name": "Gamma", "plan": "v2", "billing_anchor": 40}
    assert _problems(await client.post("/admin/v1/accounts", json=body, headers=OPERATOR))
    assert (await client.get("/admin/v1/accounts/gamma", headers=OPERATOR)).status_code == 404


async def test_a_billing_anchored_month_resets_on_the_anchor_day(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """A billing month of an account anchored on the 5th runs 5 Nov to 5 Dec (local)."""
    await _setup(client, anchor=5)
    states = (await client.get("/admin/v1/accounts/acme/quotas", headers=OPERATOR)).json()
    month = next(x for x in states if x["name"] == "insights.month")
    assert month["reset"] == "2024-12-05T00:00:00Z"


async def test_key_limits_are_kept_replaced_and_only_narrow(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """A key's limits are stored on create, replaced by PATCH (audited), and refused when
    wider than the account's or for a service the plan has no limits for."""
    deployment = await _setup(client)
    own = {"insights": [{"window": "day", "total": 50}]}
    created = await client.post(
        "/admin/v1/accounts/acme/keys", json={"limits": own}, headers=OPERATOR
    )
    assert created.status_code == 201, created.text
    assert created.json()["limits"] == own
    key_id = created.json()["id"]
    listed = (await client.get("/admin/v1/accounts/acme/keys", headers=OPERATOR)).json()
    # Both keys were made at the same (fake) instant: their order is their random ids'.
    assert {k["id"]: k["limits"] for k in listed["items"]} == {
        deployment.key_id: {},
        key_id: own,
    }

    wider = {"limits": {"insights": [{"window": "day", "total": 5000}]}}
    refused = await client.patch(f"/admin/v1/keys/{key_id}", json=wider, headers=OPERATOR)
    assert [p for p, _ in _problems(refused)] == ["/body/limits/insights/0"]
    faster = {"limits": {"insights": [{"rate": {"per_second": 100, "burst": 20}}]}}
    refused = await client.patch(f"/admin/v1/keys/{key_id}", json=faster, headers=OPERATOR)
    assert [p for p, _ in _problems(refused)] == ["/body/limits/insights/0"]
    elsewhere = {"limits": {"weather": {"total": 1}}}
    refused = await client.patch(f"/admin/v1/keys/{key_id}", json=elsewhere, headers=OPERATOR)
    assert [p for p, _ in _problems(refused)] == ["/body/limits/weather"]
    refused = await client.post(
        "/admin/v1/accounts/acme/keys", json={"limits": wider["limits"]}, headers=OPERATOR
    )
    assert [p for p, _ in _problems(refused)] == ["/body/limits/insights/0"]
    assert (await admin.require_key(ctx, key_id)).limits == {"insights": (LimitSpec(50),)}

    narrower = {"limits": {"insights": [{"window": "hour", "total": 10}]}}
    patched = await client.patch(f"/admin/v1/keys/{key_id}", json=narrower, headers=OPERATOR)
    assert patched.status_code == 200, patched.text
    assert patched.json()["limits"] == narrower["limits"]
    audit = await client.get(
        "/admin/v1/audit", params={"target": f"key:{key_id}"}, headers=OPERATOR
    )
    update = next(x for x in audit.json()["items"] if x["action"] == "key.update")
    assert update["before"]["limits"] == {"insights": {"total": 50, "period": "day"}}
    assert update["after"]["limits"] == {"insights": [{"window": "hour", "total": 10}]}
    assert deployment.key_id != key_id
    missing = await client.patch("/admin/v1/keys/key_nope", json=narrower, headers=OPERATOR)
    assert missing.status_code == 404


# Reading ---------------------------------------------------------------------------------
async def test_quotas_show_every_limit_of_the_key_and_the_account(
    client: httpx2.AsyncClient, ctx: Context, clock: FakeClock
) -> None:
    """/v1/quotas and the key view list every limit of the key (rates as tokens taken);
    the account view lists the shared ones only; exhausted_at follows the window's pace."""
    clock.set(NOV_1)
    deployment = await _setup(client)
    clock.set(datetime(2024, 11, 3, 12, 0, tzinfo=UTC))
    assert (await _consume(ctx, "insights", 5, deployment.key_id)).granted
    assert (await _consume(ctx, "scoring", 150, deployment.key_id)).granted

    mine = await client.get("/v1/quotas", headers=deployment.bearer)
    assert mine.status_code == 200, mine.text
    by_name = {x["name"]: x for x in mine.json()}
    assert list(by_name) == [
        "insights.rate",
        "insights.day",
        "insights.month",
        "insights.hour.key",
        "scoring.month",
    ]
    assert by_name["insights.rate"] == {
        "service": "insights",
        "name": "insights.rate",
        "rate": {"per_second": 10, "burst": 20},
        "per": "account",
        "mode": "hard",
        "used": 5,
        "remaining": 15,
        "total": 20,
        "reset": "2024-11-03T12:00:00.500000Z",
        "exhausted_at": None,
    }
    assert by_name["insights.day"] == {
        "service": "insights",
        "name": "insights.day",
        "window": "day",
        "per": "account",
        "mode": "hard",
        "used": 5,
        "remaining": 995,
        "total": 1000,
        "reset": "2024-11-04T00:00:00Z",
        "exhausted_at": None,
    }
    assert by_name["insights.month"]["mode"] == "soft"
    assert by_name["insights.month"]["reset"] == "2024-12-01T00:00:00Z"  # anchored on the 1st
    assert (by_name["insights.hour.key"]["used"], by_name["insights.hour.key"]["per"]) == (5, "key")
    # 150 of 300 in 2.5 days: the other 150 at that pace by 6 Nov, within the month.
    assert by_name["scoring.month"]["exhausted_at"] == "2024-11-06T00:00:00Z"

    key_view = await client.get(f"/admin/v1/keys/{deployment.key_id}/quotas", headers=OPERATOR)
    assert key_view.json() == mine.json()
    shared = (await client.get("/admin/v1/accounts/acme/quotas", headers=OPERATOR)).json()
    assert [x["name"] for x in shared] == [
        "insights.rate",
        "insights.day",
        "insights.month",
        "scoring.month",
    ]
    other = await client.post("/admin/v1/accounts/acme/keys", json={}, headers=OPERATOR)
    theirs = await client.get(f"/admin/v1/keys/{other.json()['id']}/quotas", headers=OPERATOR)
    hour = next(x for x in theirs.json() if x["name"] == "insights.hour.key")
    assert hour["used"] == 0  # per key: its own counter
    unknown = await client.get("/admin/v1/accounts/nope/quotas", headers=OPERATOR)
    assert unknown.status_code == 404


async def test_quotas_need_a_key_with_usage_read(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """/v1/quotas refuses a missing key (401) and a key without usage:read (403)."""
    assert (await client.get("/v1/quotas")).status_code == 401
    scoped = await client.post(
        "/admin/v1/accounts/acme/keys", json={"scopes": ["consume:*"]}, headers=OPERATOR
    )
    headers = {"Authorization": f"Bearer {scoped.json()['key']}"}
    refused = await client.get("/v1/quotas", headers=headers)
    assert (refused.status_code, refused.json()["error"]) == (403, "FORBIDDEN")
    v1 = await client.get("/v1/quotas", headers=deployment.bearer)
    assert [x["name"] for x in v1.json()] == ["insights.day", "scoring.day"]


async def test_usages_list_one_item_per_window_quota(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """/v1/usages names each account window <service>.<adjective>_queries with the current
    window's use; rates and per-key limits are not listed."""
    deployment = await _setup(client)
    await _consume(ctx, "insights", 7, deployment.key_id)
    await _consume(ctx, "scoring", 30)
    lines = (await client.get("/v1/usages", headers=deployment.bearer)).json()
    assert lines == [
        {
            "description": "Daily insights queries",
            "limit": 1000,
            "name": "insights.daily_queries",
            "usage": 7,
        },
        {
            "description": "Monthly insights queries",
            "limit": 20000,
            "name": "insights.monthly_queries",
            "usage": 7,
        },
        {
            "description": "Monthly scoring queries",
            "limit": 300,
            "name": "scoring.monthly_queries",
            "usage": 30,
        },
    ]


async def test_usage_rows_of_a_month_only_service_keep_each_days_total(
    client: httpx2.AsyncClient, ctx: Context, clock: FakeClock
) -> None:
    """/usage rows of a service with only a month quota: each day's use, the month's total
    in force that day, and what the month had left at its end; a plan change mid-month
    leaves the days before it as they were, also days with no use."""
    clock.set(NOV_1)
    deployment = await _setup(client)
    await _consume(ctx, "scoring", 100)
    clock.set(datetime(2024, 11, 3, 12, 0, tzinfo=UTC))
    await _consume(ctx, "scoring", 50)
    bigger = {"quotas": {"insights": V2_INSIGHTS, "scoring": [{"window": "month", "total": 600}]}}
    assert (await client.put("/admin/v1/plans/v2", json=bigger, headers=OPERATOR)).is_success
    clock.set(datetime(2024, 11, 5, 12, 0, tzinfo=UTC))
    query = {"start_date": "2024-11-01", "end_date": "2024-11-05"}
    rows = await client.get("/usage/scoring", params=query, headers=deployment.bearer)
    assert rows.status_code == 200, rows.text
    assert rows.json() == [
        {"used": 100, "remaining": 200, "total": 300, "date": "2024-11-01"},
        {"used": 0, "remaining": 200, "total": 300, "date": "2024-11-02"},
        {"used": 50, "remaining": 450, "total": 600, "date": "2024-11-03"},
        {"used": 0, "remaining": 450, "total": 600, "date": "2024-11-04"},
        {"used": 0, "remaining": 450, "total": 600, "date": "2024-11-05"},
    ]
    later = await client.get(
        "/usage/scoring", params={"start_date": "2024-11-02"}, headers=deployment.bearer
    )
    assert later.json()[0] == {"used": 0, "remaining": 200, "total": 300, "date": "2024-11-02"}
    admin_rows = await client.get(
        "/admin/v1/accounts/acme/usage/scoring", params=query, headers=OPERATOR
    )
    assert admin_rows.json() == rows.json()


async def test_events_and_adjustments_count_in_the_account_windows(
    client: httpx2.AsyncClient, ctx: Context, clock: FakeClock
) -> None:
    """A metering event and an admin adjustment move the month counter of their day too."""
    clock.set(NOV_1)
    await _setup(client)
    clock.set(datetime(2024, 11, 3, 12, 0, tzinfo=UTC))
    events = {
        "events": [
            {
                "id": "ev-1",
                "account_id": "acme",
                "service": "scoring",
                "amount": 40,
                "timestamp": "2024-11-02T08:00:00Z",
            }
        ]
    }
    recorded = await client.post("/v1/events", json=events, headers=OPERATOR)
    assert recorded.json() == {"accepted": 1, "duplicates": 0}
    adjusted = await client.post(
        "/admin/v1/accounts/acme/usage/scoring/adjust",
        json={"date": "2024-11-01", "delta": 10},
        headers=OPERATOR,
    )
    assert adjusted.status_code == 200, adjusted.text
    states = (await client.get("/admin/v1/accounts/acme/quotas", headers=OPERATOR)).json()
    month = next(x for x in states if x["name"] == "scoring.month")
    assert (month["used"], month["remaining"]) == (50, 250)
