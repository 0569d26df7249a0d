"""The operator's key forms, in-process over HTTP: creating a key with scopes, an ISO expiry
and its own limits (audited), a key's limits page, the keys downloads, read sessions."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime
from pathlib import Path

import httpx2
import pytest

from quotad.api.app import create_app
from quotad.dashboard.table_export import csv_cell
from quotad.domain.models import ApiKey
from quotad.service import admin
from quotad.service.context import Context
from quotad.storage import Stores, stores_from_url
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment, make_settings, seed, store_url
from tests.test_dashboard import KEY, csrf_of, operator_signed_in
from tests.test_dashboard_webhooks import WRITE_FORM, token_signed_in

ACCOUNT = "/dashboard/accounts/acme"
LIMITS = {"insights": [{"window": "day", "total": 100}]}


@pytest.fixture
def ctx(clock: FakeClock) -> Context:
    """A memory store is enough for the forms (one test below runs on PostgreSQL)."""
    return Context(Stores.of(MemoryStore()), make_settings("memory://"), clock)


async def keys_of(ctx: Context, account_id: str = "acme") -> list[ApiKey]:
    """The account's key records, oldest first."""
    return await ctx.records.list_keys(account_id)


async def key_named(ctx: Context, name: str) -> ApiKey:
    """The one key of ``acme`` named ``name`` (the fake clock gives keys one creation time,
    so their order is their random ids')."""
    [key] = [k for k in await keys_of(ctx) if k.name == name]
    return key


async def audit_of(http: httpx2.AsyncClient, key_id: str) -> list[tuple[str, str]]:
    """``(action, actor)`` of the key's audit entries, oldest first."""
    response = await http.get(
        "/admin/v1/audit", params={"target": f"key:{key_id}"}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    return [(entry["action"], entry["actor"]) for entry in reversed(response.json()["items"])]


async def create_key(http: httpx2.AsyncClient, **fields: str) -> httpx2.Response:
    """Post the account page's create-key form with its CSRF token."""
    page = await http.get(ACCOUNT)
    assert page.status_code == 200, page.text
    return await http.post(f"{ACCOUNT}/keys", data={"csrf": csrf_of(page.text), **fields})


async def set_limits(http: httpx2.AsyncClient, key_id: str, text: str) -> httpx2.Response:
    """Post a key's limits form with its page's CSRF token."""
    page = await http.get(f"{ACCOUNT}/keys/{key_id}/limits")
    assert page.status_code == 200, page.text
    return await http.post(
        f"{ACCOUNT}/keys/{key_id}/limits", data={"csrf": csrf_of(page.text), "limits": text}
    )


# The create form ----------------------------------------------------------------------
async def test_the_create_form_offers_every_scope_and_an_iso_expiry_field(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """The form has a checkbox per known scope, a text expiry (never a date input), a
    limits textarea, and the keys table shows each key's scopes and limits link."""
    del deployment
    await operator_signed_in(client)
    page = (await client.get(ACCOUNT)).text
    for scope in ("usage:read", "consume:*", "consume:insights", "consume:scoring"):
        assert f'name="scope:{scope}" value="on"' in page, scope
    assert 'name="expires_on" type="text"' in page
    assert 'type="date"' not in page
    assert '<textarea id="key-limits" name="limits"' in page
    assert "every scope" in page
    assert f'href="{ACCOUNT}/keys.csv"' in page


async def test_create_with_scopes_expiry_and_limits_is_shown_once_and_audited(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """A key made with scopes, an expiry and its own limits has them all, its secret is
    shown once, it works within its scopes, and its creation is audited."""
    await operator_signed_in(client)
    created = await create_key(
        client,
        name="ci",
        expires_on="2025-01-31",
        limits=json.dumps(LIMITS),
        **{"scope:usage:read": "on", "scope:consume:insights": "on"},
    )
    assert created.status_code == 201, created.text
    match = KEY.search(created.text)
    assert match is not None
    secret = match.group(1)
    key = await key_named(ctx, "ci")
    assert key.id != deployment.key_id
    assert key.scopes == ("consume:insights", "usage:read")
    assert key.expires_at == datetime(2025, 1, 31, tzinfo=UTC)
    assert {k: [x.to_json() for x in v] for k, v in key.limits.items()} == LIMITS
    assert (await client.get("/v1/usages", headers={"x-api-key": secret})).status_code == 200
    again = (await client.get(ACCOUNT)).text
    assert secret not in again
    assert "consume:insights, usage:read" in again
    assert await audit_of(client, key.id) == [("key.create", "bootstrap")]


async def test_no_scope_ticked_gives_every_scope_as_the_api_does(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """A key created with only a name has every scope and no expiry or limits (the API's defaults)."""
    del deployment
    await operator_signed_in(client)
    created = await create_key(client, name="plain")
    assert created.status_code == 201, created.text
    key = await key_named(ctx, "plain")
    assert (key.scopes, key.expires_at, key.limits) == (None, None, {})


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"expires_on": "31/01/2025"}, "write it as YYYY-MM-DD"),
        ({"expires_on": "20250131"}, "write it as YYYY-MM-DD"),
        ({"expires_on": "2024-11-07"}, "is not in the future"),
        ({"limits": "{insights: 1}"}, "The limits are not JSON"),
        ({"limits": "[1]"}, "a JSON object by service"),
        ({"limits": '{"nope": [{"window": "day", "total": 5}]}'}, "limits/nope: the plan"),
        ({"limits": '{"insights": [{"window": "day", "total": 999}]}'}, "limits/insights/0"),
        ({"limits": '{"insights": [{"window": "fortnight", "total": 5}]}'}, "limits/insights"),
        ({"scope:admin:*": "on"}, "Unknown scope: admin:*"),
        ({"name": "x" * 129}, "at most 128 characters"),
    ],
    ids=[
        "date-format",
        "date-basic",
        "past",
        "not-json",
        "not-object",
        "unknown-service",
        "wider",
        "bad-window",
        "scope",
        "long-name",
    ],
)
async def test_a_refused_creation_names_the_problem_and_changes_nothing(
    client: httpx2.AsyncClient,
    ctx: Context,
    deployment: Deployment,
    fields: dict[str, str],
    words: str,
) -> None:
    """A bad expiry, limits or scope is a 400 page naming it, the form kept; no key is made."""
    del deployment
    await operator_signed_in(client)
    before = await keys_of(ctx)
    response = await create_key(client, **{"name": "kept", **fields})
    assert response.status_code == 400, response.text
    assert words in response.text
    assert KEY.search(response.text) is None
    assert await keys_of(ctx) == before
    if "name" not in fields:
        assert 'value="kept"' in response.text


# A key's limits ----------------------------------------------------------------------
async def test_editing_a_keys_limits_replaces_them_and_is_audited(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """The limits page sets a key's own limits, then blank clears them; both are audited."""
    await operator_signed_in(client)
    page = await client.get(f"{ACCOUNT}/keys/{deployment.key_id}/limits")
    assert "None of its own" in page.text
    saved = await set_limits(client, deployment.key_id, json.dumps(LIMITS))
    assert saved.status_code == 303
    assert saved.headers["location"] == f"{ACCOUNT}?notice=limits"
    assert (
        "The key&#39;s own limits were replaced."
        in (await client.get(saved.headers["location"])).text
    )
    [key] = await keys_of(ctx)
    assert {k: [x.to_json() for x in v] for k, v in key.limits.items()} == LIMITS
    shown = (await client.get(f"{ACCOUNT}/keys/{deployment.key_id}/limits")).text
    assert '"total": 100' in shown
    cleared = await set_limits(client, deployment.key_id, "")
    assert cleared.status_code == 303
    [key] = await keys_of(ctx)
    assert key.limits == {}
    assert await audit_of(client, deployment.key_id) == [
        ("key.create", "bootstrap"),
        ("key.update", "bootstrap"),
        ("key.update", "bootstrap"),
    ]


@pytest.mark.parametrize(
    ("text", "words"),
    [
        ("not json", "The limits are not JSON"),
        ('{"insights": [{"window": "day", "total": 999}]}', "limits/insights/0"),
    ],
    ids=["not-json", "wider"],
)
async def test_refused_limits_are_named_and_change_nothing(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment, text: str, words: str
) -> None:
    """Limits the API would refuse are a 400 page naming why, the text kept; the key is unchanged."""
    await operator_signed_in(client)
    response = await set_limits(client, deployment.key_id, text)
    assert response.status_code == 400, response.text
    assert words in response.text
    assert "999" in response.text or "not json" in response.text
    [key] = await keys_of(ctx)
    assert key.limits == {}
    assert await audit_of(client, deployment.key_id) == [("key.create", "bootstrap")]


async def test_a_key_of_another_account_is_not_found_through_this_one(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Another account's key, read or posted under this account's address, is a 404."""
    await seed(client, "acme")
    beta = await seed(client, "beta")
    await operator_signed_in(client)
    path = f"{ACCOUNT}/keys/{beta.key_id}/limits"
    assert (await client.get(path)).status_code == 404
    csrf = csrf_of((await client.get(ACCOUNT)).text)
    response = await client.post(path, data={"csrf": csrf, "limits": json.dumps(LIMITS)})
    assert response.status_code == 404
    [key] = await keys_of(ctx, "beta")
    assert key.limits == {}


# Refusals: CSRF, read sessions --------------------------------------------------------
async def test_key_forms_need_the_csrf_token(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """Creating a key or setting limits with a wrong CSRF token is a 403 and changes nothing."""
    await operator_signed_in(client)
    before = await keys_of(ctx)
    for path in (f"{ACCOUNT}/keys", f"{ACCOUNT}/keys/{deployment.key_id}/limits"):
        response = await client.post(
            path, data={"csrf": "forged", "name": "x", "limits": json.dumps(LIMITS)}
        )
        assert response.status_code == 403, path
        assert "Form refused" in response.text
    assert await keys_of(ctx) == before


async def test_a_read_session_sees_no_key_form_and_a_forged_one_is_refused(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """A read session sees keys and limits without forms; posting them anyway is a 403
    that changes nothing."""
    await token_signed_in(client, "auditor", "read")
    limits_path = f"{ACCOUNT}/keys/{deployment.key_id}/limits"
    for path in (ACCOUNT, limits_path):
        page = await client.get(path)
        assert page.status_code == 200, path
        assert not WRITE_FORM.search(page.text), path
        assert 'id="read-only"' in page.text
    before = await keys_of(ctx)
    csrf = csrf_of((await client.get(ACCOUNT)).text)  # the sign-out form's
    for path in (f"{ACCOUNT}/keys", limits_path):
        response = await client.post(
            path, data={"csrf": csrf, "name": "x", "limits": json.dumps(LIMITS)}
        )
        assert response.status_code == 403, path
        assert "Read-only session" in response.text
    assert await keys_of(ctx) == before


# Downloads ----------------------------------------------------------------------------
async def test_the_keys_download_as_csv_and_json_without_secrets(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Both downloads list every key with its scopes and limits, never a secret."""
    await operator_signed_in(client)
    assert (await set_limits(client, deployment.key_id, json.dumps(LIMITS))).status_code == 303
    as_json = await client.get(f"{ACCOUNT}/keys.json")
    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    assert 'filename="keys-acme.json"' in as_json.headers["content-disposition"]
    [item] = as_json.json()["items"]
    assert (item["id"], item["status"], item["scopes"]) == (deployment.key_id, "active", None)
    assert item["limits"] == LIMITS
    as_csv = await client.get(f"{ACCOUNT}/keys?format=csv")
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    [row] = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert row["id"] == deployment.key_id
    assert json.loads(row["limits"]) == LIMITS
    for body in (as_json.text, as_csv.text):
        assert deployment.key not in body
        assert "digest" not in body
    assert (await client.get(f"{ACCOUNT}/keys?format=xml")).status_code == 400
    assert (await client.get(f"{ACCOUNT}/keys.xml")).status_code == 404


def test_csv_cells_never_start_a_formula() -> None:
    """Text a spreadsheet would evaluate gets a leading apostrophe; JSON and blanks as is."""
    assert csv_cell("=HYPERLINK(1)") == "'=HYPERLINK(1)"
    assert csv_cell("@SUM(A1)") == "'@SUM(A1)"
    assert csv_cell("ops-admin") == "ops-admin"
    assert csv_cell(None) == ""
    assert csv_cell({"a": [1]}) == '{"a": [1]}'


# The store matters here: the limits must survive a real database -----------------------
async def test_a_keys_limits_set_from_the_dashboard_persist_in_postgresql(
    tmp_path: Path, clock: FakeClock
) -> None:
    """On PostgreSQL, a key created with limits and edited from its page reads back as set."""
    with store_url("postgresql", tmp_path) as url:
        stores = stores_from_url(url)
        await stores.open()
        try:
            pg = Context(stores, make_settings(url), clock)
            app = create_app(pg, manage_store=False)
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
                await seed(http)
                await operator_signed_in(http)
                created = await create_key(http, name="pg", limits=json.dumps(LIMITS))
                assert created.status_code == 201, created.text
                made = await key_named(pg, "pg")
                assert {k: [x.to_json() for x in v] for k, v in made.limits.items()} == LIMITS
                narrower = {"insights": [{"window": "day", "total": 50}]}
                first = await key_named(pg, "test")
                assert (await set_limits(http, first.id, json.dumps(narrower))).status_code == 303
                first = await key_named(pg, "test")
                assert {k: [x.to_json() for x in v] for k, v in first.limits.items()} == narrower
        finally:
            await stores.close()


async def test_a_key_may_be_scoped_to_each_of_many_services(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """With 30 services registered, a key ticked for every one of them is made (the form's
    field limit leaves room for a checkbox per service)."""
    del deployment
    names = [f"svc{n:02d}" for n in range(30)]
    for name in names:
        await admin.create_service(ctx, name, "")
    await operator_signed_in(client)
    ticked = {f"scope:consume:{name}": "on" for name in names}
    created = await create_key(client, name="wide", **ticked)
    assert created.status_code == 201, created.text
    key = await key_named(ctx, "wide")
    assert key.scopes == tuple(sorted(f"consume:{name}" for name in names))
