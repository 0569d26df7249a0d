"""The customer portal v2, in-process over HTTP: plan and limits with their resets and
forecasts, refused calls per day, the usage CSV, alerts, and self-service keys (scopes never
wider than the signed-in key's, audited with that key as the actor, other accounts' keys
out of reach)."""

from __future__ import annotations

import csv
import io
import re
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

import httpx2
import pytest

from quotad.api.app import create_app
from quotad.dashboard import portal_pages
from quotad.domain.webhooks import AlertEvent
from quotad.service import quotas
from quotad.service.context import Context
from quotad.storage import Stores, stores_from_url
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment, make_settings, seed, store_url
from tests.test_dashboard import KEY, adjust, csrf_of, sign_in, verify

WRITE_FORM = re.compile(r'<form method="post" action="/portal/keys/(key_\w+)/(revoke|rotate)"')


@pytest.fixture
def ctx(clock: FakeClock) -> Context:
    """Pages read through the service layer: a memory store is enough for most tests."""
    return Context(Stores.of(MemoryStore()), make_settings("memory://"), clock)


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.memory),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ]
)
async def store_client(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[httpx2.AsyncClient]:
    """A client of the app over a memory store, then over PostgreSQL (key writes and their
    audit entries are one transaction there)."""
    with store_url(request.param, tmp_path) as url:
        stores = stores_from_url(url)
        await stores.open()
        try:
            app = create_app(Context(stores, make_settings(url), clock), manage_store=False)
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
                yield http
        finally:
            await stores.close()


async def portal_signed_in(http: httpx2.AsyncClient, secret: str) -> None:
    """Sign the client in to the portal with ``secret``."""
    response = await sign_in(http, "portal", secret)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/portal"


async def new_key(
    http: httpx2.AsyncClient, account: str, scopes: list[str] | None, **extra: str
) -> tuple[str, str]:
    """``(secret, id)`` of a key the operator creates over the admin API."""
    body: dict[str, object] = {"name": "made by operator", "scopes": scopes, **extra}
    response = await http.post(f"/admin/v1/accounts/{account}/keys", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    return response.json()["key"], response.json()["id"]


async def key_records(http: httpx2.AsyncClient, account: str) -> list[dict[str, object]]:
    """The account's keys as the admin API lists them."""
    response = await http.get(f"/admin/v1/accounts/{account}/keys", headers=OPERATOR)
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


async def audit_of(http: httpx2.AsyncClient, key_id: str) -> list[tuple[str, str]]:
    """``(action, actor)`` of a key's audit entries, oldest first."""
    response = await http.get(
        "/admin/v1/audit", params={"target": f"key:{key_id}"}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    return [(entry["action"], entry["actor"]) for entry in reversed(response.json()["items"])]


async def keys_csrf(http: httpx2.AsyncClient) -> str:
    """The CSRF token of the keys page's forms."""
    page = await http.get("/portal/keys")
    assert page.status_code == 200, page.text
    return csrf_of(page.text)


async def create_key(http: httpx2.AsyncClient, *scopes: str, **fields: str) -> httpx2.Response:
    """Post the create form with ``scopes`` ticked."""
    form = {"csrf": await keys_csrf(http), "name": "from portal", **fields}
    form |= {f"scope:{scope}": "on" for scope in scopes}
    return await http.post("/portal/keys", data=form)


def new_secret(response: httpx2.Response) -> str:
    """The secret a page shows once."""
    match = KEY.search(response.text)
    assert match is not None, response.text
    return match.group(1)


def actor(key_id: str, secret: str) -> str:
    """The audit actor of a change made in the portal signed in with that key."""
    return f"customer key {key_id} (qd_…{secret[-4:]})"


# Sessions -----------------------------------------------------------------------------
@pytest.mark.parametrize("path", ["/portal/keys", "/portal/alerts", "/portal/usage.csv"])
async def test_new_pages_need_a_session(client: httpx2.AsyncClient, path: str) -> None:
    """Without a session the portal's new pages redirect (303) to the sign-in form."""
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/portal/login"


async def test_a_post_without_a_session_changes_nothing(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A key form posted without a session goes to sign-in and revokes nothing."""
    response = await client.post(f"/portal/keys/{deployment.key_id}/revoke", data={"csrf": "x"})
    assert response.status_code == 303
    assert response.headers["location"] == "/portal/login"
    assert (await client.get("/v1/usages", headers=deployment.bearer)).status_code == 200


# Usage page ---------------------------------------------------------------------------
async def test_usage_page_shows_plan_limits_resets_and_forecasts(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """Plan name, each limit with its reset as ISO and in words and the forecast of
    GET /v1/quotas."""
    await verify(client, deployment.key, "insights", 150)  # 150 by noon: 250 by 20:00
    api = await client.get("/v1/quotas", headers=deployment.bearer)
    assert api.status_code == 200, api.text
    by_name = {item["name"]: item for item in api.json()}
    await portal_signed_in(client, deployment.key)
    page = (await client.get("/portal")).text
    assert '<strong id="plan-name">plan-acme</strong>' in page
    assert '<a href="/portal" aria-current="page">Usage</a>' in page
    rows = dict(
        re.findall(
            r'<tr data-limit="([^"]+)" data-reset="[^"]+" data-exhausted-at="([^"]*)">', page
        )
    )
    assert set(rows) == {"insights.day", "scoring.day"}
    insights = by_name["insights.day"]
    assert insights["exhausted_at"] is not None
    assert rows["insights.day"] == insights["exhausted_at"]
    assert rows["scoring.day"] == ""  # nothing used: no forecast
    assert f'<time datetime="{insights["reset"]}">{insights["reset"]}</time>' in page
    assert insights["reset"] == "2024-11-08T00:00:00Z"
    assert "resets in 12 h" in page
    assert "runs out in 8 h" in page
    assert "lasts until the reset at this pace" in page
    [state] = [
        s
        for s in await quotas.of_key(ctx, await ctx.records.get_key(deployment.key_id))  # type: ignore[arg-type]
        if s.name == "insights.day"
    ]
    assert (state.used, state.remaining) == (150, 100)
    assert '<td class="num">150</td>\n        <td class="num">100</td>' in page


@pytest.mark.parametrize(
    ("seconds", "words"),
    [
        (0, "now"),
        (59, "in under a minute"),
        (3599, "in 59 min"),
        (7 * 3600 + 100, "in 7 h"),
        (47 * 3600, "in 47 h"),
        (3 * 86400 + 3600, "in 3 days"),
    ],
)
def test_times_from_now_read_as_a_person_says_them(seconds: int, words: str) -> None:
    """Resets and forecasts are said in minutes, hours or days, whichever reads best."""
    assert portal_pages.in_words(timedelta(seconds=seconds)) == words


async def test_refused_calls_are_listed_per_day(client: httpx2.AsyncClient) -> None:
    """Refused calls show per day and service; a range without any says so."""
    acme = await seed(client, "acme", total=3)
    await verify(client, acme.key, "insights", 5)  # 3 allowed, 2 refused
    await portal_signed_in(client, acme.key)
    page = (await client.get("/portal")).text
    assert "used up until the reset" in page
    assert re.search(
        r'<tr data-date="2024-11-07" data-refused="2"><td>2024-11-07</td>'
        r'<td class="num">2</td><td class="num">0</td><td class="num">2</td></tr>',
        page,
    ), page
    earlier = (await client.get("/portal?start=2024-11-01&end=2024-11-06")).text
    assert 'id="refused-days"' not in earlier
    assert "No call was refused from 2024-11-01 to 2024-11-06." in earlier


async def test_usage_csv_has_a_line_per_service_and_day(client: httpx2.AsyncClient) -> None:
    """The CSV lists each day's use, total, remaining and refused calls of the range."""
    acme = await seed(client, "acme", total=3)
    await adjust(client, "acme", "insights", "2024-11-05", 2)
    await verify(client, acme.key, "insights", 4)  # 3 allowed, 1 refused
    await portal_signed_in(client, acme.key)
    page = (await client.get("/portal?start=2024-11-05&end=2024-11-07")).text
    assert 'href="/portal/usage.csv?start=2024-11-05&amp;end=2024-11-07"' in page
    response = await client.get("/portal/usage.csv?start=2024-11-05&end=2024-11-07")
    assert response.status_code == 200
    assert response.headers["content-type"] == "text/csv; charset=utf-8"
    assert "usage-2024-11-05-2024-11-07.csv" in response.headers["content-disposition"]
    lines = list(csv.reader(io.StringIO(response.text)))
    assert lines == [
        ["date", "service", "used", "total", "remaining", "refused"],
        ["2024-11-05", "insights", "2", "3", "1", "0"],
        ["2024-11-06", "insights", "0", "3", "3", "0"],
        ["2024-11-07", "insights", "3", "3", "0", "1"],
    ]


async def test_usage_csv_refuses_a_bad_range(client: httpx2.AsyncClient) -> None:
    """A range the API would refuse is a 400 page naming the problem, not a CSV."""
    acme = await seed(client, "acme")
    await portal_signed_in(client, acme.key)
    response = await client.get("/portal/usage.csv?start=2024-01-01&end=2024-11-07")
    assert response.status_code == 400
    assert "text/html" in response.headers["content-type"]
    assert "90 days" in response.text


# Alerts ---------------------------------------------------------------------------------
async def test_alerts_page_lists_only_the_accounts_alerts(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """The alerts page lists the events about the customer's account, never another's."""
    acme = await seed(client, "acme")
    await seed(client, "beta")
    for n, account in enumerate(("acme", "beta", "acme")):
        data = {"account_id": account, "limit": "insights.day", "threshold": 80, "used": 200}
        event = AlertEvent(f"evt_{n}", "quota.threshold", ctx.clock.now(), f"d{n}", data, account)
        assert await ctx.stores.alerts.record_alert(event, [])
    await portal_signed_in(client, acme.key)
    page = (await client.get("/portal/alerts")).text
    assert re.findall(r'<tr data-event="(\w+)"', page) == ["evt_2", "evt_0"]
    assert '<a href="/portal/alerts" aria-current="page">Alerts</a>' in page
    assert "beta" not in page


async def test_alerts_page_says_when_there_are_none(client: httpx2.AsyncClient) -> None:
    """An account without alerts is told so."""
    acme = await seed(client, "acme")
    await portal_signed_in(client, acme.key)
    page = (await client.get("/portal/alerts")).text
    assert "No alert has been raised for this account." in page


# Keys: listing and writes --------------------------------------------------------------
async def test_keys_page_lists_the_accounts_keys(client: httpx2.AsyncClient) -> None:
    """Each key with its name, hint, scopes, status and dates; never another account's."""
    acme = await seed(client, "acme")
    beta = await seed(client, "beta")
    secret, key_id = await new_key(
        client, "acme", ["usage:read"], expires_at="2025-01-01T00:00:00Z"
    )
    await portal_signed_in(client, acme.key)
    page = (await client.get("/portal/keys")).text
    assert set(re.findall(r'<tr data-key="(key_\w+)" data-status="(\w+)">', page)) == {
        (key_id, "active"),
        (acme.key_id, "active"),
    }
    assert f"qd_…{secret[-4:]}" in page
    assert "usage:read" in page
    assert "every scope" in page
    assert "2025-01-01T00:00:00Z" in page
    assert "2024-11-07T12:00:00Z" in page
    assert beta.key_id not in page
    assert secret not in page


async def test_create_rotate_and_revoke_are_audited(store_client: httpx2.AsyncClient) -> None:
    """Each write shows a new secret once (or revokes), works on the API, and is logged with
    the signed-in key as its actor."""
    http = store_client
    acme = await seed(http, "acme")
    await portal_signed_in(http, acme.key)
    me = actor(acme.key_id, acme.key)

    created = await create_key(http, "usage:read", expires_on="2025-02-01")
    assert created.status_code == 201, created.text
    secret = new_secret(created)
    [record] = [k for k in await key_records(http, "acme") if k["id"] != acme.key_id]
    key_id = str(record["id"])
    assert (record["scopes"], record["expires_at"]) == (["usage:read"], "2025-02-01T00:00:00Z")
    assert (await http.get("/v1/usages", headers={"x-api-key": secret})).status_code == 200
    assert secret not in (await http.get("/portal/keys")).text

    rotated = await http.post(
        f"/portal/keys/{key_id}/rotate",
        data={"csrf": await keys_csrf(http), "grace_seconds": "0"},
    )
    assert rotated.status_code == 201, rotated.text
    replacement = new_secret(rotated)
    assert (await http.get("/v1/usages", headers={"x-api-key": secret})).status_code == 401
    assert (await http.get("/v1/usages", headers={"x-api-key": replacement})).status_code == 200
    new_id = str(
        next(
            k["id"] for k in await key_records(http, "acme") if k["id"] not in (acme.key_id, key_id)
        )
    )

    revoked = await http.post(f"/portal/keys/{new_id}/revoke", data={"csrf": await keys_csrf(http)})
    assert revoked.status_code == 303
    after = await http.get(revoked.headers["location"])
    assert "The key was revoked; it no longer works." in after.text
    assert f'<tr data-key="{new_id}" data-status="revoked">' in after.text
    assert (await http.get("/v1/usages", headers={"x-api-key": replacement})).status_code == 401

    assert await audit_of(http, key_id) == [("key.create", me), ("key.rotate", me)]
    assert await audit_of(http, new_id) == [("key.create", me), ("key.revoke", me)]


async def test_revoking_the_signed_in_key_ends_the_session(client: httpx2.AsyncClient) -> None:
    """A customer may revoke the key it signed in with: it is sent to sign in again."""
    acme = await seed(client, "acme")
    await portal_signed_in(client, acme.key)
    response = await client.post(
        f"/portal/keys/{acme.key_id}/revoke", data={"csrf": await keys_csrf(client)}
    )
    assert response.status_code == 303
    assert response.headers["location"] == "/portal/login"
    assert (await client.get("/portal")).status_code == 303
    assert (await client.get("/v1/usages", headers=acme.bearer)).status_code == 401


# Keys: scopes never wider ----------------------------------------------------------------
async def test_a_scoped_key_is_offered_only_its_own_scopes(client: httpx2.AsyncClient) -> None:
    """The form offers a scoped key only scopes it holds, and no "every scope" choice."""
    acme = await seed(client, "acme")
    secret, _ = await new_key(client, "acme", ["usage:read", "consume:insights"])
    await portal_signed_in(client, secret)
    page = (await client.get("/portal/keys")).text
    offered = re.findall(r'name="scope:([^"]+)"', page)
    assert offered == ["usage:read", "consume:insights"]
    client.cookies.clear()  # sign in afresh, with the unrestricted key
    await portal_signed_in(client, acme.key)
    unrestricted = re.findall(r'name="scope:([^"]+)"', (await client.get("/portal/keys")).text)
    assert unrestricted == ["all", "usage:read", "consume:*", "consume:insights", "consume:scoring"]


@pytest.mark.parametrize(
    "scopes",
    [("consume:*",), ("consume:scoring",), ("usage:read", "consume:scoring"), ("all",)],
)
async def test_a_scoped_key_cannot_create_a_wider_key(
    client: httpx2.AsyncClient, scopes: tuple[str, ...]
) -> None:
    """Asking for a scope the signed-in key lacks (or for every scope) is a 403, and no
    key is created."""
    await seed(client, "acme")
    secret, _ = await new_key(client, "acme", ["usage:read", "consume:insights"])
    await portal_signed_in(client, secret)
    before = await key_records(client, "acme")
    response = await create_key(client, *scopes)
    assert response.status_code == 403
    assert "cannot" in response.text
    assert await key_records(client, "acme") == before


async def test_a_scoped_key_creates_keys_within_its_scopes(client: httpx2.AsyncClient) -> None:
    """A key with usage:read and consume:* may give consume:insights (its family's)."""
    await seed(client, "acme")
    secret, _ = await new_key(client, "acme", ["usage:read", "consume:*"])
    await portal_signed_in(client, secret)
    response = await create_key(client, "usage:read", "consume:insights")
    assert response.status_code == 201, response.text
    scopes = [k["scopes"] for k in await key_records(client, "acme")]
    assert ["consume:insights", "usage:read"] in scopes


async def test_a_wider_key_shows_no_controls_and_a_forged_form_is_refused(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A key wider than the signed-in one has no forms; posting them anyway is a 403 and
    changes nothing."""
    secret, scoped_id = await new_key(client, "acme", ["usage:read"])
    await portal_signed_in(client, secret)
    page = (await client.get("/portal/keys")).text
    assert {found[0] for found in WRITE_FORM.findall(page)} == {scoped_id}
    assert 'data-wider="true"' in page
    before = await key_records(client, "acme")
    csrf = csrf_of(page)
    for action, fields in (("revoke", {}), ("rotate", {"grace_seconds": "0"})):
        response = await client.post(
            f"/portal/keys/{deployment.key_id}/{action}", data={"csrf": csrf, **fields}
        )
        assert response.status_code == 403, action
    assert await key_records(client, "acme") == before
    assert (await client.get("/v1/usages", headers=deployment.bearer)).status_code == 200


async def test_an_expiring_key_cannot_create_one_that_outlives_it(
    client: httpx2.AsyncClient,
) -> None:
    """A key that expires must give an expiry, no later than its own."""
    await seed(client, "acme")
    secret, _ = await new_key(client, "acme", None, expires_at="2024-12-01T00:00:00Z")
    await portal_signed_in(client, secret)
    before = await key_records(client, "acme")
    blank = await create_key(client, "usage:read")
    assert blank.status_code == 400
    assert "choose an expiry date" in blank.text
    later = await create_key(client, "usage:read", expires_on="2024-12-02")
    assert later.status_code == 403
    assert "outlives it" in later.text
    assert await key_records(client, "acme") == before
    ok = await create_key(client, "usage:read", expires_on="2024-12-01")
    assert ok.status_code == 201, ok.text


async def test_an_expiring_key_cannot_change_a_key_that_outlives_it(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A key that never expires is out of reach of an expiring one: no controls, a forged
    rotation is a 403 and nothing changes."""
    secret, own_id = await new_key(client, "acme", None, expires_at="2024-12-01T00:00:00Z")
    await portal_signed_in(client, secret)
    page = (await client.get("/portal/keys")).text
    assert {found[0] for found in WRITE_FORM.findall(page)} == {own_id}
    before = await key_records(client, "acme")
    response = await client.post(
        f"/portal/keys/{deployment.key_id}/rotate",
        data={"csrf": csrf_of(page), "grace_seconds": "0"},
    )
    assert response.status_code == 403
    assert "wider than yours" in response.text
    assert await key_records(client, "acme") == before


# Keys: other accounts, CSRF, bad input -------------------------------------------------
@pytest.mark.parametrize("action", ["revoke", "rotate"])
async def test_another_accounts_key_is_not_found(client: httpx2.AsyncClient, action: str) -> None:
    """A customer can never touch another account's key: 404, and it keeps working."""
    acme = await seed(client, "acme")
    beta = await seed(client, "beta")
    await portal_signed_in(client, acme.key)
    before = await key_records(client, "beta")
    response = await client.post(
        f"/portal/keys/{beta.key_id}/{action}",
        data={"csrf": await keys_csrf(client), "grace_seconds": "0"},
    )
    assert response.status_code == 404
    assert f"Your account has no key “{beta.key_id}”." in response.text
    assert await key_records(client, "beta") == before
    assert (await client.get("/v1/usages", headers=beta.bearer)).status_code == 200
    assert await audit_of(client, beta.key_id) == [("key.create", "bootstrap")]


@pytest.mark.parametrize("csrf", [None, "forged"])
async def test_forms_without_the_csrf_token_are_refused(
    client: httpx2.AsyncClient, deployment: Deployment, csrf: str | None
) -> None:
    """Every key form without the session's CSRF token is a 403 and changes nothing."""
    await portal_signed_in(client, deployment.key)
    before = await key_records(client, "acme")
    base = {} if csrf is None else {"csrf": csrf}
    for path, fields in (
        ("/portal/keys", {"name": "x", "scope:usage:read": "on"}),
        (f"/portal/keys/{deployment.key_id}/rotate", {"grace_seconds": "0"}),
        (f"/portal/keys/{deployment.key_id}/revoke", {}),
    ):
        response = await client.post(path, data={**base, **fields})
        assert response.status_code == 403, path
        assert "Form refused" in response.text
    assert await key_records(client, "acme") == before


@pytest.mark.parametrize(
    ("fields", "scopes", "message"),
    [
        ({}, (), "Choose at least one scope for the new key."),
        ({"expires_on": "next week"}, ("usage:read",), "is not a date: write it as YYYY-MM-DD."),
        ({"expires_on": "2024-11-07"}, ("usage:read",), "The expiry date must be in the future."),
        ({"name": "n" * 129}, ("usage:read",), "A key name has at most 128 characters."),
        ({}, ("admin:everything",), "Unknown scope: admin:everything."),
    ],
)
async def test_bad_create_input_is_explained_and_changes_nothing(
    client: httpx2.AsyncClient,
    deployment: Deployment,
    fields: dict[str, str],
    scopes: tuple[str, ...],
    message: str,
) -> None:
    """A create form with a mistake is a 400 page saying what is wrong; no key is made."""
    await portal_signed_in(client, deployment.key)
    before = await key_records(client, "acme")
    response = await create_key(client, *scopes, **fields)
    assert response.status_code == 400
    assert message in response.text
    assert 'id="new-key"' not in response.text
    assert await key_records(client, "acme") == before


@pytest.mark.parametrize("grace", ["-1", "soon", str(30 * 86_400 + 1)])
async def test_a_bad_grace_period_is_explained_and_changes_nothing(
    client: httpx2.AsyncClient, deployment: Deployment, grace: str
) -> None:
    """A rotation with a grace period out of range is a 400 page; nothing is rotated."""
    await portal_signed_in(client, deployment.key)
    before = await key_records(client, "acme")
    response = await client.post(
        f"/portal/keys/{deployment.key_id}/rotate",
        data={"csrf": await keys_csrf(client), "grace_seconds": grace},
    )
    assert response.status_code == 400
    assert "The grace period is 0 to 2592000 seconds." in response.text
    assert await key_records(client, "acme") == before


async def test_each_key_shows_its_use_of_the_limits_kept_per_key(
    client: httpx2.AsyncClient,
) -> None:
    """With a per-key daily limit, every key's row says how much of it that key used."""
    acme = await seed(client, "acme")
    plan = {
        "quotas": {
            "insights": [
                {"window": "day", "total": 250},
                {"window": "day", "total": 5, "per": "key"},
            ]
        },
        "limits": [],
    }
    response = await client.put("/admin/v1/plans/plan-acme", json=plan, headers=OPERATOR)
    assert response.status_code == 200, response.text
    other, other_id = await new_key(client, "acme", None)  # every scope: it may verify
    for secret, calls in ((acme.key, 3), (other, 1)):
        await verify(client, secret, "insights", calls)
    await portal_signed_in(client, acme.key)
    page = (await client.get("/portal/keys")).text
    assert "Use of per-key limits" in page
    cells = dict(
        re.findall(r'<tr data-key="(key_\w+)".*?<td class="key-usage">(.*?)</td>', page, re.S)
    )
    assert 'data-used="3" data-total="5"' in cells[acme.key_id]
    assert 'data-used="1" data-total="5"' in cells[other_id]


async def test_without_per_key_limits_the_keys_table_has_no_usage_column(
    client: httpx2.AsyncClient,
) -> None:
    """A plan whose limits are all the account's adds no per-key column."""
    acme = await seed(client, "acme")
    await portal_signed_in(client, acme.key)
    assert "Use of per-key limits" not in (await client.get("/portal/keys")).text
