"""The dashboard's plans and services pages, in-process over HTTP on memory and PostgreSQL:
limits in words and the accounts on each plan; creating, replacing and deleting plans and
registering and editing services through the forms (audited); read sessions, CSRF, and
refused input that changes nothing."""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from quotad.dashboard.plan_operator import limit_words
from quotad.domain import limits
from quotad.domain.credits import to_micros
from quotad.domain.limits import LimitSpec, Mode, Per, Window
from quotad.domain.models import Overrides, Quota
from quotad.service import admin
from quotad.service.context import Context
from quotad.storage import Stores, stores_from_url
from tests.conftest import OPERATOR, store_url
from tests.test_dashboard import csrf_of, operator_signed_in
from tests.test_dashboard_webhooks import token_signed_in

# For tests of what the dashboard refuses before any write: the store does not matter there.
MEMORY_ONLY = pytest.mark.parametrize("stores", ["memory"], indirect=True)
WRITE_FORM = re.compile(r'<form method="post" action="/dashboard/(plans|services)')
# Every limit kind of SPEC 9 in one service, as the API's body writes them.
ALL_KINDS: list[dict[str, Any]] = [
    {"rate": {"per_second": 10, "burst": 20}},
    {"window": "minute", "total": 5, "mode": "shadow", "per": "key"},
    {"window": "hour", "total": 100},
    {"window": "day", "total": 250},
    {"window": "week", "total": 1000, "mode": "soft"},
    {"window": "month", "total": 20000, "anchor": "billing"},
    {"window": "year", "total": 100000},
]


@pytest.fixture(params=["memory", "postgresql"])
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    """Two stores only: the pages are the same on each, the records' writes are not."""
    with store_url(request.param, tmp_path) as url:
        opened = stores_from_url(url)
        await opened.open()
        try:
            yield opened
        finally:
            await opened.close()


@pytest.fixture
async def seeded(ctx: Context) -> None:
    """Services insights (priced) and scoring, plan ``pro`` of every limit kind with
    account ``acme`` on it, and plan ``spare`` that no account uses."""
    await admin.create_service(ctx, "insights", "Insight queries", to_micros("0.002"))
    await admin.create_service(ctx, "scoring", "")
    quotas = admin.parse_quotas({"insights": ALL_KINDS, "scoring": {"total": 100}}, "/q")
    await admin.create_plan(
        ctx, "pro", {k: Quota(v) for k, v in quotas.items()}, [], "The pro plan", (50, 90)
    )
    await admin.create_plan(ctx, "spare", {"scoring": Quota.daily(10)}, [], "")
    await admin.create_account(ctx, "acme", "Acme Corp", "pro", "UTC", Overrides())


async def audit_actions(http: httpx2.AsyncClient, target: str) -> list[tuple[str, str]]:
    """``(action, actor)`` of a target's audit entries, oldest first."""
    response = await http.get("/admin/v1/audit", params={"target": target}, headers=OPERATOR)
    assert response.status_code == 200, response.text
    return [(entry["action"], entry["actor"]) for entry in reversed(response.json()["items"])]


async def post_form(
    http: httpx2.AsyncClient, page: str, action: str, **fields: str
) -> httpx2.Response:
    """Post a form with the CSRF token of ``page``."""
    shown = await http.get(page)
    assert shown.status_code == 200, shown.text
    return await http.post(action, data={"csrf": csrf_of(shown.text), **fields})


def error_of(html: str) -> str:
    """The page's error message (its alert paragraph)."""
    match = re.search(r'<p class="error" role="alert">(.*?)</p>', html, re.DOTALL)
    assert match is not None, html
    return match.group(1)


def test_limits_are_said_in_words() -> None:
    """Each limit kind reads as the pages write it: total / window, rate and burst, billing,
    mode and per key."""
    assert limit_words(LimitSpec(250)) == "250 / day"
    assert limit_words(LimitSpec(20, None, 10.0)) == "10/s burst 20"
    assert limit_words(LimitSpec(3, None, 0.5)) == "0.5/s burst 3"
    assert limit_words(LimitSpec(20000, Window.MONTH, billing=True)) == "20,000 / month (billing)"
    shadow = LimitSpec(5, Window.MINUTE, mode=Mode.SHADOW, per=Per.KEY)
    assert limit_words(shadow) == "5 / minute, shadow, per key"
    assert limit_words(LimitSpec(7, Window.WEEK, mode=Mode.SOFT)) == "7 / week, soft"


@MEMORY_ONLY
@pytest.mark.parametrize(
    "path", ["/dashboard/plans", "/dashboard/plans/pro", "/dashboard/services"]
)
async def test_plan_pages_need_a_session(client: httpx2.AsyncClient, path: str) -> None:
    """Without a session the plans and services pages redirect (303) to the sign-in form."""
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"


@pytest.mark.usefixtures("seeded")
async def test_plans_page_lists_limits_in_words_and_the_accounts(
    client: httpx2.AsyncClient,
) -> None:
    """The list shows every plan with each limit in words and its accounts linked; the plan
    page shows thresholds, the accounts, and the plan's JSON to edit."""
    await operator_signed_in(client)
    listing = await client.get("/dashboard/plans")
    assert listing.status_code == 200
    assert '<a href="/dashboard/plans" aria-current="page">Plans</a>' in listing.text
    assert '<tr data-plan="pro" data-accounts="1">' in listing.text
    assert '<tr data-plan="spare" data-accounts="0">' in listing.text
    for words in (
        "10/s burst 20",
        "5 / minute, shadow, per key",
        "250 / day",
        "1,000 / week, soft",
        "20,000 / month (billing)",
        "100,000 / year",
    ):
        assert f'<span class="limit">{words}</span>' in listing.text
    assert '<a href="/dashboard/accounts/acme">acme</a>' in listing.text
    page = await client.get("/dashboard/plans/pro")
    assert page.status_code == 200
    assert '<li data-account="acme"><a href="/dashboard/accounts/acme">acme</a>' in page.text
    assert '<td id="thresholds">50 %, 90 %</td>' in page.text
    assert 'href="/dashboard/accounts?plan=pro" id="plan-accounts-list"' in page.text
    assert "&#34;anchor&#34;: &#34;billing&#34;" in page.text  # the edit box's JSON
    missing = await client.get("/dashboard/plans/nope")
    assert missing.status_code == 404
    assert "There is no plan “nope”." in missing.text


async def test_a_plan_created_through_the_form_has_every_limit_and_is_audited(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """The create form takes the API's body: every limit kind, resource limits, thresholds,
    refill and low-credits mark are stored, and ``plan.create`` is logged by the session."""
    await admin.create_service(ctx, "insights", "")
    await operator_signed_in(client)
    body = {
        "description": "Growth",
        "quotas": {"insights": ALL_KINDS},
        "limits": [{"name": "cohort.max_count", "description": "Cohorts", "limit": 10}],
        "alert_thresholds": [75, 100],
        "refill": {"amount": 1000, "window": "month", "mode": "top_up", "anchor": "billing"},
        "low_credits": 12.5,
    }
    response = await post_form(
        client, "/dashboard/plans", "/dashboard/plans", id="growth", body=json.dumps(body)
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard/plans/growth?notice=created"
    plan = await admin.require_plan(ctx, "growth")
    assert limits.render(plan.quotas["insights"].limits) == ALL_KINDS
    assert [(x.name, x.limit) for x in plan.limits] == [("cohort.max_count", 10)]
    assert plan.alert_thresholds == (75, 100)
    assert plan.refill is not None
    assert plan.refill.to_json()["mode"] == "top_up"
    assert plan.low_credits == to_micros("12.5")
    shown = await client.get(response.headers["location"])
    assert "The plan was created." in shown.text
    assert '<td id="refill">1,000 credits / month (billing), top up</td>' in shown.text
    assert '<td id="low-credits">12.5 credits</td>' in shown.text
    assert await audit_actions(client, "plan:growth") == [("plan.create", "bootstrap")]


@pytest.mark.usefixtures("seeded")
async def test_a_plan_replaced_through_the_form_changes_and_is_audited(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """The replace form starts from the plan's JSON; what it posts replaces the plan whole
    and is logged as ``plan.replace`` by the session."""
    await operator_signed_in(client)
    body = {"description": "Pro, cheaper", "quotas": {"insights": [{"window": "day", "total": 9}]}}
    response = await post_form(
        client, "/dashboard/plans/pro", "/dashboard/plans/pro/replace", body=json.dumps(body)
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard/plans/pro?notice=replaced"
    plan = await admin.require_plan(ctx, "pro")
    assert plan.description == "Pro, cheaper"
    assert set(plan.quotas) == {"insights"}
    assert limit_words(plan.quotas["insights"].limits[0]) == "9 / day"
    assert plan.alert_thresholds is None
    actions = await audit_actions(client, "plan:pro")
    assert actions == [("plan.create", "local"), ("plan.replace", "bootstrap")]


@pytest.mark.usefixtures("seeded")
async def test_deleting_a_plan_is_refused_while_accounts_use_it(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Deleting a plan an account uses is a 409 saying so, the plan kept; an unused plan is
    deleted and ``plan.delete`` logged."""
    await operator_signed_in(client)
    refused = await post_form(client, "/dashboard/plans/pro", "/dashboard/plans/pro/delete")
    assert refused.status_code == 409
    assert "Plan pro is not deleted: accounts use it." in error_of(refused.text)
    assert await ctx.records.get_plan("pro") is not None
    deleted = await post_form(client, "/dashboard/plans/spare", "/dashboard/plans/spare/delete")
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/dashboard/plans?notice=deleted"
    assert await ctx.records.get_plan("spare") is None
    assert await audit_actions(client, "plan:spare") == [
        ("plan.create", "local"),
        ("plan.delete", "bootstrap"),
    ]
    assert await audit_actions(client, "plan:pro") == [("plan.create", "local")]


@MEMORY_ONLY
@pytest.mark.parametrize(
    ("plan_id", "body", "said"),
    [
        ("bad id!", "{}", "A plan id is 1 to 64 letters"),
        ("new", "{not json", "The plan is not valid JSON"),
        ("new", "[]", "The plan is a JSON object"),
        (
            "new",
            '{"quotas": {"insights": [{"window": "fortnight", "total": 5}]}}',
            "/body/quotas/insights/0/window",
        ),
        ("new", '{"quotas": {"ghost": {"total": 5}}}', "service &#39;ghost&#39; is not registered"),
        ("new", '{"limits": [{"name": "x", "limit": -1}]}', "/body/limits/0/limit"),
        ("new", '{"alert_thresholds": [0]}', "/body/alert_thresholds"),
        ("new", '{"refill": {"amount": 5}}', "/body/refill"),
        ("new", '{"extra": 1}', "/body/extra: unknown field"),
        ("pro", "{}", "already exists"),
    ],
)
@pytest.mark.usefixtures("seeded")
async def test_a_refused_plan_says_why_and_nothing_changes(
    client: httpx2.AsyncClient, ctx: Context, plan_id: str, body: str, said: str
) -> None:
    """Input the API would refuse is refused with the problem named (by JSON pointer where
    it has one), the form keeps what was entered, and no plan is created."""
    await operator_signed_in(client)
    response = await post_form(
        client, "/dashboard/plans", "/dashboard/plans", id=plan_id, body=body
    )
    assert response.status_code in (400, 409), response.text
    assert said in error_of(response.text)
    assert [p.id for p in await admin.list_plans(ctx, 10)] == ["pro", "spare"]
    assert await audit_actions(client, "plan:new") == []


@pytest.mark.usefixtures("seeded")
async def test_a_refused_replacement_keeps_the_text_and_the_plan(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """A replacement with a bad limit is a 400 naming its pointer, the box keeps the text
    posted, and the plan is unchanged."""
    await operator_signed_in(client)
    before = await admin.require_plan(ctx, "pro")
    text = '{"quotas": {"insights": [{"rate": {"per_second": 0, "burst": 1}}]}}'
    response = await post_form(
        client, "/dashboard/plans/pro", "/dashboard/plans/pro/replace", body=text
    )
    assert response.status_code == 400
    assert "/body/quotas/insights/0/rate/per_second" in error_of(response.text)
    assert "&#34;per_second&#34;: 0" in response.text
    assert await admin.require_plan(ctx, "pro") == before


@pytest.mark.usefixtures("seeded")
async def test_the_set_limit_form_replaces_or_adds_a_limit_and_remove_takes_it_out(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Setting a limit of an existing window and per replaces it, a new one is added, and
    removing a service's last limit drops the service; each is a ``plan.replace`` entry."""
    await operator_signed_in(client)
    page = "/dashboard/plans/pro"
    fields = {"service": "insights", "window": "day", "total": "300", "mode": "soft"}
    replaced = await post_form(client, page, f"{page}/limits", per="account", **fields)
    assert replaced.status_code == 303, replaced.text
    assert replaced.headers["location"] == f"{page}?notice=limit-set"
    rate = {"service": "scoring", "window": "rate", "total": "4", "per_second": "0.5"}
    added = await post_form(client, page, f"{page}/limits", mode="hard", per="key", **rate)
    assert added.status_code == 303, added.text
    plan = await admin.require_plan(ctx, "pro")
    insights = [limit_words(spec) for spec in plan.quotas["insights"].limits]
    assert "300 / day, soft" in insights
    assert "250 / day" not in insights
    assert len(insights) == len(ALL_KINDS)
    scoring = [limit_words(spec) for spec in plan.quotas["scoring"].limits]
    assert scoring == ["100 / day", "0.5/s burst 4, per key"]
    shown = await client.get(page)
    assert '<div class="plan-limit" data-limit="scoring.rate.key">' in shown.text
    for name in ("scoring.day", "scoring.rate.key"):
        removed = await post_form(client, page, f"{page}/limits/remove", limit=name)
        assert removed.status_code == 303, removed.text
    assert "scoring" not in (await admin.require_plan(ctx, "pro")).quotas
    gone = await post_form(client, page, f"{page}/limits/remove", limit="scoring.day")
    assert gone.status_code == 409
    assert "has no limit “scoring.day”" in error_of(gone.text)
    actions = await audit_actions(client, "plan:pro")
    assert actions == [("plan.create", "local"), *[("plan.replace", "bootstrap")] * 4]


@MEMORY_ONLY
@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"window": "day", "total": "many"}, "The total (a rate&#39;s burst) is a whole number."),
        ({"window": "rate", "total": "5", "per_second": "fast"}, "is a number, e.g. 10"),
        ({"window": "rate", "total": "5", "per_second": "0"}, "per_second"),
        ({"window": "fortnight", "total": "5"}, "window"),
        ({"window": "day", "total": "5", "service": "ghost"}, "is not registered"),
        ({"window": "day", "total": "5", "service": "Bad!"}, "Choose a registered service."),
    ],
)
@pytest.mark.usefixtures("seeded")
async def test_a_refused_limit_says_why_and_the_plan_is_unchanged(
    client: httpx2.AsyncClient, ctx: Context, fields: dict[str, str], said: str
) -> None:
    """A limit the form or the API's parser refuses is a 400 or 409 with a message, and
    the plan is as it was."""
    await operator_signed_in(client)
    before = await admin.require_plan(ctx, "pro")
    form = {"service": "insights", "mode": "hard", "per": "account", **fields}
    response = await post_form(
        client, "/dashboard/plans/pro", "/dashboard/plans/pro/limits", **form
    )
    assert response.status_code in (400, 409), response.text
    assert said in error_of(response.text)
    assert await admin.require_plan(ctx, "pro") == before


@MEMORY_ONLY
@pytest.mark.parametrize("csrf", [None, "forged"], ids=["missing", "wrong"])
@pytest.mark.usefixtures("seeded")
async def test_plan_and_service_forms_need_the_csrf_token(
    client: httpx2.AsyncClient, ctx: Context, csrf: str | None
) -> None:
    """Each plan and service form posted by an admin without its CSRF token (or with
    another) is a 403 and changes nothing."""
    await operator_signed_in(client)
    form: dict[str, str] = {} if csrf is None else {"csrf": csrf}
    for path, fields in (
        ("/dashboard/plans", {"id": "new", "body": "{}"}),
        ("/dashboard/plans/pro/replace", {"body": "{}"}),
        ("/dashboard/plans/pro/limits", {"service": "insights", "window": "day", "total": "1"}),
        ("/dashboard/plans/pro/limits/remove", {"limit": "insights.day"}),
        ("/dashboard/plans/spare/delete", {}),
        ("/dashboard/services", {"name": "new"}),
        ("/dashboard/services/insights/update", {"description": "changed"}),
    ):
        response = await client.post(path, data={**form, **fields})
        assert response.status_code == 403, path
        assert "Form refused" in response.text
    assert [p.id for p in await admin.list_plans(ctx, 10)] == ["pro", "spare"]
    assert len((await admin.require_plan(ctx, "pro")).quotas) == 2
    services = await admin.list_services(ctx)
    assert [(s.name, s.description) for s in services] == [
        ("insights", "Insight queries"),
        ("scoring", ""),
    ]


@pytest.mark.usefixtures("seeded")
async def test_a_read_session_sees_no_write_control_and_cannot_forge_one(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """A read session sees the plans and services without forms; each form it posts with
    its own valid CSRF token is a 403 and changes nothing."""
    await token_signed_in(client, "auditor", "read")
    pages = [await client.get(p) for p in ("/dashboard/plans", "/dashboard/plans/pro")]
    pages.append(await client.get("/dashboard/services"))
    for page in pages:
        assert page.status_code == 200
        assert not WRITE_FORM.search(page.text)
        assert 'id="read-only"' in page.text
    assert '<tr data-plan="pro" data-accounts="1">' in pages[0].text
    assert '<tr data-service="insights">' in pages[2].text
    csrf = csrf_of(pages[0].text)  # the sign-out form's
    for path, fields in (
        ("/dashboard/plans", {"id": "new", "body": "{}"}),
        ("/dashboard/plans/pro/replace", {"body": "{}"}),
        ("/dashboard/plans/pro/limits", {"service": "insights", "window": "day", "total": "1"}),
        ("/dashboard/plans/pro/limits/remove", {"limit": "insights.day"}),
        ("/dashboard/plans/spare/delete", {}),
        ("/dashboard/services", {"name": "new"}),
        ("/dashboard/services/insights/update", {"description": "changed"}),
    ):
        response = await client.post(path, data={"csrf": csrf, **fields})
        assert response.status_code == 403, path
        assert "Read-only session" in response.text
    assert [p.id for p in await admin.list_plans(ctx, 10)] == ["pro", "spare"]
    assert [s.name for s in await admin.list_services(ctx)] == ["insights", "scoring"]
    assert (await admin.require_service(ctx, "insights")).description == "Insight queries"


@pytest.mark.usefixtures("seeded")
async def test_services_are_listed_registered_and_edited_with_audit(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """The services page lists name, description, price and the plans limiting each;
    registering and editing go through the service layer and are logged by the session."""
    await operator_signed_in(client)
    page = await client.get("/dashboard/services")
    assert page.status_code == 200
    assert '<a href="/dashboard/services" aria-current="page">Services</a>' in page.text
    assert '<td class="price">0.002 credits a unit</td>' in page.text
    assert '<td class="price">unpriced</td>' in page.text
    scoring_plans = (
        '<a href="/dashboard/plans/pro">pro</a>, <a href="/dashboard/plans/spare">spare</a>'
    )
    assert f'<td class="plans">{scoring_plans}</td>' in page.text
    created = await post_form(
        client,
        "/dashboard/services",
        "/dashboard/services",
        name="exports",
        description="CSV exports",
        credit_price="1.5",
    )
    assert created.status_code == 303, created.text
    assert created.headers["location"] == "/dashboard/services?notice=service-created"
    service = await admin.require_service(ctx, "exports")
    assert (service.description, service.credit_price) == ("CSV exports", to_micros("1.5"))
    updated = await post_form(
        client,
        "/dashboard/services",
        "/dashboard/services/insights/update",
        description="Insights v2",
        credit_price="",
    )
    assert updated.status_code == 303, updated.text
    service = await admin.require_service(ctx, "insights")
    assert (service.description, service.credit_price) == ("Insights v2", None)
    assert await audit_actions(client, "service:exports") == [("service.create", "bootstrap")]
    assert await audit_actions(client, "service:insights") == [
        ("service.create", "local"),
        ("service.update", "bootstrap"),
    ]


@MEMORY_ONLY
@pytest.mark.parametrize(
    ("path", "fields", "status", "said"),
    [
        ("/dashboard/services", {"name": "Bad Name"}, 400, "A service name is 1 to 64"),
        ("/dashboard/services", {"name": "insights"}, 409, "already exists"),
        ("/dashboard/services", {"name": "new", "credit_price": "-1"}, 400, "The credit price"),
        ("/dashboard/services", {"name": "new", "description": "x" * 501}, 400, "at most 500"),
        ("/dashboard/services/insights/update", {"credit_price": "abc"}, 400, "The credit price"),
        ("/dashboard/services/ghost/update", {"description": "x"}, 404, "ghost"),
    ],
)
@pytest.mark.usefixtures("seeded")
async def test_a_refused_service_form_says_why_and_nothing_changes(
    client: httpx2.AsyncClient,
    ctx: Context,
    path: str,
    fields: dict[str, str],
    status: int,
    said: str,
) -> None:
    """A bad name, a taken name, a bad price, a long description or an unknown service is
    refused with a message, and no service is added or changed."""
    await operator_signed_in(client)
    response = await post_form(client, "/dashboard/services", path, **fields)
    assert response.status_code == status, response.text
    assert said in error_of(response.text)
    services = await admin.list_services(ctx)
    assert [(s.name, s.description, s.credit_price) for s in services] == [
        ("insights", "Insight queries", to_micros("0.002")),
        ("scoring", "", None),
    ]
