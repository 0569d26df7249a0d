"""Managing accounts on the operator dashboard, in-process over HTTP: the list's columns,
sort, filters and pages; creating, renaming, suspending, re-planning, overriding and
deleting accounts (audited with the session's actor); CSRF, read sessions, bad input."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx2
import pytest

from quotad.dashboard import account_pages
from quotad.domain.models import AccountStatus, Overrides
from quotad.service import admin
from quotad.service.context import Context
from quotad.storage import Stores, stores_from_url
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, make_settings, seed, store_url
from tests.test_dashboard import adjust, csrf_of, verify
from tests.test_dashboard_webhooks import token_signed_in

SETTINGS = "/dashboard/accounts/acme/settings"
ACTOR = "alice"  # an admin token's name: the actor of the dashboard's changes
WRITE_FORM = re.compile(r'<form method="post" action="/dashboard/(?!logout)')
ROW = re.compile(
    r'<tr data-account="([^"]+)">.*?data-today="(\d+)".*?data-month="(\d+)"'
    r'.*?data-last-seen="([^"]*)"',
    re.DOTALL,
)
# Every form this module adds, with fields that would change the account if accepted.
WRITES = [
    ("/dashboard/accounts/acme/name", {"name": "Forged"}),
    ("/dashboard/accounts/acme/status", {"status": "suspended"}),
    ("/dashboard/accounts/acme/plan", {"plan": "plan-other"}),
    ("/dashboard/accounts/acme/overrides", {"limits_json": '{"limits": {"cohort.max_count": 1}}'}),
    ("/dashboard/accounts/acme/delete", {"confirm": "acme"}),
    ("/dashboard/accounts", {"id": "forged", "name": "Forged", "plan": "plan-acme"}),
]


@pytest.fixture
async def stores(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[Stores]:
    """A memory store, unless a test asks for another kind by ``kind`` parametrisation."""
    kind = getattr(request, "param", "memory")
    with store_url(kind, tmp_path) as url:
        opened = stores_from_url(url)
        await opened.open()
        try:
            yield opened
        finally:
            await opened.close()


@pytest.fixture
def ctx(stores: Stores, clock: FakeClock) -> Context:
    """The service context the app and the assertions share."""
    return Context(stores, make_settings(stores.url), clock)


async def other_plan(http: httpx2.AsyncClient) -> None:
    """Add plan ``plan-other`` (insights 10/day) beside seed's ``plan-acme``."""
    body = {"id": "plan-other", "quotas": {"insights": {"total": 10}}, "limits": []}
    response = await http.post("/admin/v1/plans", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text


async def audit_of(http: httpx2.AsyncClient, account_id: str = "acme") -> list[tuple[str, str]]:
    """``(action, actor)`` of an account's audit entries, oldest first."""
    response = await http.get(
        "/admin/v1/audit", params={"target": f"account:{account_id}"}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    return [(entry["action"], entry["actor"]) for entry in reversed(response.json()["items"])]


async def post(http: httpx2.AsyncClient, page: str, path: str, **fields: str) -> httpx2.Response:
    """Post a form with the CSRF token of ``page``."""
    shown = await http.get(page)
    assert shown.status_code == 200, shown.text
    return await http.post(path, data={"csrf": csrf_of(shown.text), **fields})


def rows(html: str) -> list[tuple[str, int, int, str]]:
    """``(id, today, month, last seen)`` of the accounts table, in page order."""
    return [(a, int(t), int(m), seen) for a, t, m, seen in ROW.findall(html)]


async def account(ctx: Context, account_id: str = "acme") -> Any:
    """The account as stored now (None once deleted)."""
    return await ctx.records.get_account(account_id)


# The list ---------------------------------------------------------------------------
@pytest.mark.parametrize("stores", ["memory", "redis"], indirect=True)
async def test_list_shows_plan_status_today_month_and_last_seen(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Each row has its plan, status, today's and this month's use and the last used day."""
    deployment = await seed(client)
    await seed(client, "beta")
    await seed(client, "idle")
    await verify(client, deployment.key, "insights", 3)
    await adjust(client, "acme", "scoring", "2024-11-02", 4)
    await adjust(client, "acme", "insights", "2024-10-20", 5)
    await adjust(client, "beta", "insights", "2024-10-20", 2)
    await token_signed_in(client, ACTOR, "admin")
    page = await client.get("/dashboard/accounts")
    assert page.status_code == 200
    assert rows(page.text) == [
        ("acme", 3, 7, "2024-11-07"),
        ("beta", 0, 0, "2024-10-20"),
        ("idle", 0, 0, ""),
    ]
    assert "<td>plan-acme</td>" in page.text
    assert '<span class="pill active">active</span>' in page.text
    assert "not in 90 days" in page.text


async def test_list_sorts_and_filters_by_plan_and_status(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """sort=name/-name/plan/status order the rows; plan= and status= filter them."""
    await seed(client, "acme")
    await other_plan(client)
    for account_id, name, plan in (("b1", "zulu", "plan-other"), ("c1", "Alpha", "plan-acme")):
        await admin.create_account(ctx, account_id, name, plan, "UTC", Overrides())
    await admin.update_account(ctx, "b1", admin.AccountChanges(status=AccountStatus.SUSPENDED))
    await token_signed_in(client, ACTOR, "admin")

    async def ids(**params: str) -> list[str]:
        page = await client.get("/dashboard/accounts", params=params)
        assert page.status_code == 200, page.text
        return [row[0] for row in rows(page.text)]

    assert await ids() == ["acme", "b1", "c1"]
    assert await ids(sort="name") == ["acme", "c1", "b1"]  # Acme, Alpha, zulu: case-blind
    assert await ids(sort="-name") == ["b1", "c1", "acme"]
    assert await ids(sort="plan") == ["acme", "c1", "b1"]
    assert await ids(sort="status") == ["acme", "c1", "b1"]
    assert await ids(plan="plan-other") == ["b1"]
    assert await ids(status="active", sort="-id") == ["c1", "acme"]
    assert await ids(status="suspended", plan="plan-acme") == []
    sorted_by_name = (await client.get("/dashboard/accounts", params={"sort": "name"})).text
    # The sorted column's header reverses the order; the others sort ascending.
    assert 'href="/dashboard/accounts?sort=-name" data-sort="name"' in sorted_by_name
    assert 'href="/dashboard/accounts?sort=plan" data-sort="plan"' in sorted_by_name
    assert '<option value="plan-other">plan-other</option>' in sorted_by_name


async def test_list_pages_keep_filters(client: httpx2.AsyncClient, ctx: Context) -> None:
    """Past 50 matching accounts the list has pages, and their links keep the filters."""
    await seed(client, "acme")
    for n in range(account_pages.PAGE_SIZE + 1):
        await admin.create_account(ctx, f"x{n:03}", f"X {n}", "plan-acme", "UTC", Overrides())
    await token_signed_in(client, ACTOR, "admin")
    first = await client.get("/dashboard/accounts", params={"q": "x", "sort": "-id"})
    assert [row[0] for row in rows(first.text)][:2] == ["x050", "x049"]
    assert len(rows(first.text)) == account_pages.PAGE_SIZE
    assert 'href="/dashboard/accounts?q=x&amp;sort=-id&amp;page=2" id="next-page"' in first.text
    second = await client.get("/dashboard/accounts", params={"q": "x", "sort": "-id", "page": "2"})
    assert [row[0] for row in rows(second.text)] == ["x000"]
    assert 'id="previous-page"' in second.text


# Creating --------------------------------------------------------------------------
async def test_create_form_creates_an_audited_account(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """The create form makes the account on the chosen plan and logs it as the operator's."""
    await seed(client)
    await token_signed_in(client, ACTOR, "admin")
    response = await post(
        client,
        "/dashboard/accounts",
        "/dashboard/accounts",
        id="newco",
        name="New Co",
        plan="plan-acme",
        timezone="Europe/Paris",
        billing_anchor="15",
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard/accounts/newco?notice=created"
    created = await account(ctx, "newco")
    assert (created.name, created.plan_id, created.timezone) == (
        "New Co",
        "plan-acme",
        "Europe/Paris",
    )
    assert created.billing_anchor == 15
    assert await audit_of(client, "newco") == [("account.create", ACTOR)]
    shown = await client.get(response.headers["location"])
    assert "The account was created." in shown.text


async def test_create_without_an_id_makes_one(client: httpx2.AsyncClient, ctx: Context) -> None:
    """An empty id gets a random ``acct_`` one."""
    await seed(client)
    await token_signed_in(client, ACTOR, "admin")
    response = await post(
        client, "/dashboard/accounts", "/dashboard/accounts", name="Anon", plan="plan-acme"
    )
    assert response.status_code == 303, response.text
    assert re.fullmatch(
        r"/dashboard/accounts/acct_\w{16}\?notice=created", response.headers["location"]
    )


@pytest.mark.parametrize(
    ("fields", "status", "said"),
    [
        (
            {"name": "X", "plan": "plan-acme", "timezone": "Mars/Olympus"},
            400,
            "is not an IANA timezone",
        ),
        ({"name": "X", "plan": "nope"}, 400, "plan &#39;nope&#39; does not exist"),
        ({"name": "  ", "plan": "plan-acme"}, 400, "The name is 1 to 200 characters."),
        ({"id": "-bad", "name": "X", "plan": "plan-acme"}, 400, "An id is 1 to 64 letters"),
        ({"name": "X", "plan": "plan-acme", "billing_anchor": "32"}, 400, "1 to 31"),
        ({"id": "acme", "name": "X", "plan": "plan-acme"}, 409, "already exists"),
    ],
)
async def test_create_refuses_bad_input_with_a_message(
    client: httpx2.AsyncClient, ctx: Context, fields: dict[str, str], status: int, said: str
) -> None:
    """Bad input shows the form again with why (and what was typed); nothing is created."""
    await seed(client)
    await token_signed_in(client, ACTOR, "admin")
    before = await admin.list_accounts(ctx, 10)
    response = await post(client, "/dashboard/accounts", "/dashboard/accounts", **fields)
    assert response.status_code == status
    assert 'id="create-error"' in response.text
    assert said in response.text
    assert f'value="{fields["name"]}"' in response.text
    assert await admin.list_accounts(ctx, 10) == before


# Changing ---------------------------------------------------------------------------
async def test_rename_suspend_resume_and_change_plan_are_audited(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Each settings form changes the account and logs ``account.update`` as the operator's."""
    await seed(client)
    await other_plan(client)
    await token_signed_in(client, ACTOR, "admin")
    renamed = await post(client, SETTINGS, "/dashboard/accounts/acme/name", name="Acme Corp")
    assert renamed.status_code == 303
    assert renamed.headers["location"] == f"{SETTINGS}?notice=renamed"
    assert (await account(ctx)).name == "Acme Corp"
    suspended = await post(client, SETTINGS, "/dashboard/accounts/acme/status", status="suspended")
    assert suspended.status_code == 303
    assert (await account(ctx)).status is AccountStatus.SUSPENDED
    page = await client.get(suspended.headers["location"])
    assert 'id="resume"' in page.text
    assert "The account is suspended" in page.text
    resumed = await post(client, SETTINGS, "/dashboard/accounts/acme/status", status="active")
    assert resumed.status_code == 303
    assert (await account(ctx)).status is AccountStatus.ACTIVE
    moved = await post(client, SETTINGS, "/dashboard/accounts/acme/plan", plan="plan-other")
    assert moved.status_code == 303
    assert (await account(ctx)).plan_id == "plan-other"
    assert await audit_of(client) == [
        ("account.create", "bootstrap"),
        *[("account.update", ACTOR)] * 4,
    ]


async def test_overrides_form_sets_limits_thresholds_and_low_credits(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """The overrides form replaces them whole, read by the API's parsers, and is audited."""
    await seed(client)
    await token_signed_in(client, ACTOR, "admin")
    limits_json = (
        '{"quotas": {"insights": [{"total": 500, "window": "day"}]},'
        ' "limits": {"cohort.max_count": 20}}'
    )
    response = await post(
        client,
        SETTINGS,
        "/dashboard/accounts/acme/overrides",
        limits_json=limits_json,
        alert_thresholds="100, 50",
        low_credits="2.5",
    )
    assert response.status_code == 303, response.text
    stored = (await account(ctx)).overrides
    assert stored.limits == {"cohort.max_count": 20}
    assert stored.alert_thresholds == (50, 100)
    assert stored.low_credits == 2_500_000
    assert [limit.total for limit in stored.quotas["insights"]] == [500]
    # The API reads back what the form set.
    api = await client.get("/admin/v1/accounts/acme", headers=OPERATOR)
    assert api.json()["overrides"] == {
        "quotas": {"insights": {"total": 500}},
        "limits": {"cohort.max_count": 20},
        "alert_thresholds": [50, 100],
        "low_credits": 2.5,
    }
    page = await client.get(response.headers["location"])
    assert "The account&#39;s overrides were saved." in page.text
    assert 'value="50, 100"' in page.text
    assert 'value="2.5"' in page.text
    assert await audit_of(client) == [("account.create", "bootstrap"), ("account.update", ACTOR)]
    cleared = await post(client, SETTINGS, "/dashboard/accounts/acme/overrides", limits_json="")
    assert cleared.status_code == 303
    assert (await account(ctx)).overrides == Overrides()


@pytest.mark.parametrize(
    ("fields", "said"),
    [
        ({"limits_json": "{"}, "The limits are not valid JSON"),
        ({"limits_json": "[1]"}, "The limits are a JSON object of"),
        ({"limits_json": '{"quotas": {"insights": {"total": -1}}}'}, "/quotas/insights"),
        ({"limits_json": '{"limits": {"cohort.max_count": 1.5}}'}, "/limits/cohort.max_count"),
        ({"limits_json": '{"limits": {"x": NaN}}'}, "The limits are not valid JSON"),
        ({"alert_thresholds": "80, lots"}, "whole percentages separated by commas"),
        ({"alert_thresholds": "80, 80"}, "alert threshold 80 is given twice"),
        ({"low_credits": "-3"}, "/low_credits"),
        ({"low_credits": "many"}, "low_credits must be a number"),
    ],
)
async def test_overrides_form_refuses_bad_input(
    client: httpx2.AsyncClient, ctx: Context, fields: dict[str, str], said: str
) -> None:
    """Bad overrides are shown back with where and why; the account is left as it was."""
    await seed(client)
    await token_signed_in(client, ACTOR, "admin")
    before = await account(ctx)
    response = await post(client, SETTINGS, "/dashboard/accounts/acme/overrides", **fields)
    assert response.status_code == 400
    assert 'id="overrides-error"' in response.text
    assert said in response.text
    assert await account(ctx) == before
    assert await audit_of(client) == [("account.create", "bootstrap")]


@pytest.mark.parametrize(
    ("path", "fields", "said"),
    [
        ("/dashboard/accounts/acme/name", {"name": ""}, "The name is 1 to 200 characters."),
        (
            "/dashboard/accounts/acme/status",
            {"status": "gone"},
            "The status is active or suspended.",
        ),
        ("/dashboard/accounts/acme/plan", {"plan": "nope"}, "plan &#39;nope&#39; does not exist"),
    ],
)
async def test_settings_forms_refuse_bad_input(
    client: httpx2.AsyncClient, ctx: Context, path: str, fields: dict[str, str], said: str
) -> None:
    """A bad name, status or plan answers 400 with why; nothing changes."""
    await seed(client)
    await token_signed_in(client, ACTOR, "admin")
    before = await account(ctx)
    response = await post(client, SETTINGS, path, **fields)
    assert response.status_code == 400
    assert said in response.text
    assert await account(ctx) == before


# Deleting ---------------------------------------------------------------------------
async def test_delete_needs_the_id_typed_and_is_audited(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """The confirm page deletes only once the id is typed; then keys go too and it is logged."""
    deployment = await seed(client)
    await token_signed_in(client, ACTOR, "admin")
    confirm = await client.get("/dashboard/accounts/acme/delete")
    assert confirm.status_code == 200
    assert 'id="confirm-id"' in confirm.text
    wrong = await client.post(
        "/dashboard/accounts/acme/delete", data={"csrf": csrf_of(confirm.text), "confirm": "acm"}
    )
    assert wrong.status_code == 400
    assert "Nothing was deleted." in wrong.text
    assert await account(ctx) is not None
    done = await client.post(
        "/dashboard/accounts/acme/delete", data={"csrf": csrf_of(confirm.text), "confirm": "acme"}
    )
    assert done.status_code == 303
    assert done.headers["location"] == "/dashboard/accounts?notice=deleted"
    assert await account(ctx) is None
    assert await ctx.records.get_key(deployment.key_id) is None
    assert (await audit_of(client))[-1] == ("account.delete", ACTOR)
    listing = await client.get(done.headers["location"])
    assert "The account was deleted." in listing.text
    assert rows(listing.text) == []


# Refusals ---------------------------------------------------------------------------
@pytest.mark.parametrize(("path", "fields"), WRITES)
async def test_forms_without_csrf_are_refused(
    client: httpx2.AsyncClient, ctx: Context, path: str, fields: dict[str, str]
) -> None:
    """A form without (or with a wrong) CSRF token is refused (403) and changes nothing."""
    await seed(client)
    await other_plan(client)
    await token_signed_in(client, ACTOR, "admin")
    before = await admin.list_accounts(ctx, 10)
    for token in ({}, {"csrf": "forged"}):
        response = await client.post(path, data={**fields, **token})
        assert response.status_code == 403
        assert "Form refused" in response.text
    assert await admin.list_accounts(ctx, 10) == before


@pytest.mark.parametrize(("path", "fields"), WRITES)
async def test_read_session_sees_no_write_control_and_cannot_forge_one(
    client: httpx2.AsyncClient, ctx: Context, path: str, fields: dict[str, str]
) -> None:
    """A read session sees the list and settings without forms; a forged form gets 403."""
    await seed(client)
    await other_plan(client)
    await token_signed_in(client, "auditor", "read")
    listing = await client.get("/dashboard/accounts")
    settings = await client.get(SETTINGS)
    assert listing.status_code == settings.status_code == 200
    assert rows(listing.text)[0][0] == "acme"
    assert 'id="overrides-json"' in settings.text
    assert 'id="read-only"' in settings.text
    assert not WRITE_FORM.search(listing.text + settings.text)
    assert (await client.get("/dashboard/accounts/acme/delete")).status_code == 403
    before = await admin.list_accounts(ctx, 10)
    response = await client.post(path, data={"csrf": csrf_of(settings.text), **fields})
    assert response.status_code == 403
    assert "Read-only session" in response.text
    assert await admin.list_accounts(ctx, 10) == before


async def test_settings_pages_need_a_session_and_an_account(client: httpx2.AsyncClient) -> None:
    """Signed out, settings and forms go to sign-in; an unknown account answers 404."""
    await seed(client)
    for response in (
        await client.get(SETTINGS),
        await client.post("/dashboard/accounts/acme/name", data={"name": "x"}),
        await client.post("/dashboard/accounts", data={"name": "x", "plan": "plan-acme"}),
    ):
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/login"
    await token_signed_in(client, ACTOR, "admin")
    assert (await client.get("/dashboard/accounts/nope/settings")).status_code == 404
    missing = await post(client, SETTINGS, "/dashboard/accounts/nope/name", name="x")
    assert missing.status_code == 404


async def test_account_page_links_to_its_settings(client: httpx2.AsyncClient) -> None:
    """The account page links to the settings page, which shows the account's facts."""
    await seed(client)
    await token_signed_in(client, ACTOR, "admin")
    page = await client.get("/dashboard/accounts/acme")
    assert 'href="/dashboard/accounts/acme/settings" id="account-settings"' in page.text
    settings = await client.get(SETTINGS)
    assert '<span class="pill active" id="account-status">active</span>' in settings.text
    assert '<option value="plan-acme" selected>plan-acme</option>' in settings.text
