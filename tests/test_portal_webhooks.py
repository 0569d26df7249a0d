"""Customers' own webhook endpoints (issue 18): registered from the portal, signed as every
delivery is (SPEC 11), sent only their own account's events; stored, migrated, dumped and
deleted with their account; the portal's forms (CSRF, other accounts' endpoints out of reach,
at most five, URLs checked) audited with the customer's key as the actor."""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx2
import pytest
import sqlalchemy as sa

from quotad.api.app import create_app
from quotad.domain.webhooks import (
    ACCOUNT_EVENT_TYPES,
    EVENT_TYPES,
    MAX_ACCOUNT_ENDPOINTS,
    WEBHOOK_DISABLED,
    WebhookEndpoint,
)
from quotad.errors import ValidationFailed
from quotad.service import deliveries, webhooks
from quotad.service.context import Context
from quotad.service.deliveries import deliver_due
from quotad.service.dump import dump_lines, restore_lines
from quotad.service.webhook_sender import new_client
from quotad.storage import Stores, stores_from_url
from quotad.storage.memory import MemoryStore
from quotad.storage.sql import migrate
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, make_settings, seed, store_url
from tests.test_dashboard import csrf_of, sign_in, verify
from tests.test_migrations import sync_engine
from tests.test_webhook_delivery import real_now
from tests.webhook_fixtures import WebhookReceiver

SECRET = re.compile(r'<code id="new-secret" class="key">([^<]+)</code>')
# Never sent to: most tests only register it (private addresses are allowed there).
URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def ctx(clock: FakeClock) -> Context:
    """A memory store is enough for the forms; private URLs are allowed for local receivers."""
    settings = make_settings("memory://", webhook_allow_private=True)
    return Context(Stores.of(MemoryStore()), settings, clock)


@dataclass
class Env:
    """An app over one store, its context, and a client of it."""

    ctx: Context
    http: httpx2.AsyncClient


@pytest.fixture(
    params=[
        pytest.param("memory", marks=pytest.mark.memory),
        pytest.param("sqlite", marks=pytest.mark.sqlite),
    ]
)
async def env(
    request: pytest.FixtureRequest, clock: FakeClock, tmp_path: Path
) -> AsyncIterator[Env]:
    """The app over a memory store, then over SQLite (endpoints as rows)."""
    with store_url(request.param, tmp_path) as url:
        stores = stores_from_url(url)
        await stores.open()
        try:
            ctx = Context(stores, make_settings(url, webhook_allow_private=True), clock)
            app = create_app(ctx, manage_store=False)
            transport = httpx2.ASGITransport(app=app)
            async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
                yield Env(ctx, http)
        finally:
            await stores.close()


async def portal_signed_in(http: httpx2.AsyncClient, secret: str) -> None:
    """Sign the client in to the portal with ``secret``."""
    response = await sign_in(http, "portal", secret)
    assert response.status_code == 303, response.text


async def register(
    http: httpx2.AsyncClient,
    url: str = URL,
    events: tuple[str, ...] = ("quota.threshold",),
    csrf: str | None = None,
) -> httpx2.Response:
    """Post the portal's registration form."""
    page = await http.get("/portal/webhooks")
    assert page.status_code == 200, page.text
    form = {"csrf": csrf_of(page.text) if csrf is None else csrf, "url": url, "description": "ours"}
    form |= {f"event:{name}": "on" for name in events}
    return await http.post("/portal/webhooks", data=form)


async def post_action(http: httpx2.AsyncClient, path: str, **fields: str) -> httpx2.Response:
    """Post one of the portal's endpoint forms with a valid CSRF token."""
    page = await http.get("/portal/webhooks")
    return await http.post(path, data={"csrf": csrf_of(page.text), **fields})


def shown_secret(response: httpx2.Response) -> str:
    """The signing secret a page shows once."""
    match = SECRET.search(response.text)
    assert match is not None, response.text
    return match.group(1)


async def audit_of(http: httpx2.AsyncClient, endpoint_id: str) -> list[tuple[str, str]]:
    """``(action, actor)`` of the endpoint's audit entries, oldest first."""
    response = await http.get(
        "/admin/v1/audit", params={"target": f"webhook:{endpoint_id}"}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    return [(entry["action"], entry["actor"]) for entry in reversed(response.json()["items"])]


def by_id(endpoints: list[WebhookEndpoint]) -> dict[str, WebhookEndpoint]:
    """Endpoints by id: those created in the same instant list in their random ids' order."""
    return {e.id: e for e in endpoints}


def actor(key_id: str, secret: str) -> str:
    """The audit actor of a change made in the portal signed in with that key."""
    return f"customer key {key_id} (qd_…{secret[-4:]})"


# Which events an endpoint receives ---------------------------------------------------
def test_a_customer_endpoint_receives_only_its_own_accounts_events(clock: FakeClock) -> None:
    """The operator's endpoint takes every account's events and webhook.disabled; an
    account's takes its own account's only, never an event about no account."""
    now = clock.now()
    operator = WebhookEndpoint("wh_op", URL, EVENT_TYPES, "whsec_x", now, now)
    own = WebhookEndpoint("wh_own", URL, EVENT_TYPES, "whsec_y", now, now, account_id="acme")
    assert operator.receives("quota.threshold", "beta")
    assert operator.receives(WEBHOOK_DISABLED, None)
    assert own.receives("quota.threshold", "acme")
    assert not own.receives("quota.threshold", "beta")
    assert not own.receives(WEBHOOK_DISABLED, None)
    assert WEBHOOK_DISABLED not in ACCOUNT_EVENT_TYPES


async def test_a_customer_endpoint_gets_its_accounts_threshold_signed_and_nothing_else(
    env: Env, clock: FakeClock, tmp_path: Path
) -> None:
    """Registered from the portal, the endpoint is sent acme's quota.threshold (verified by
    standardwebhooks in the receiver with the secret shown once), not beta's, nor
    webhook.disabled; the operator's endpoint gets both accounts' events."""
    clock.set(real_now())  # the receiver refuses a signature timestamped far from its clock
    http, ctx = env.http, env.ctx
    acme = await seed(http, "acme", total=5)
    beta = await seed(http, "beta", total=5)
    workdir = tmp_path / "receiver"
    workdir.mkdir()
    receiver = WebhookReceiver(workdir)
    await portal_signed_in(http, acme.key)
    created = await register(http, receiver.url)
    assert created.status_code == 201, created.text
    receiver.secret = shown_secret(created)  # it verifies with the secret shown once
    operator = await webhooks.create(ctx, URL, ["quota.threshold"])
    [own] = await webhooks.list_own(ctx, "acme")

    await verify(http, beta.key, "insights", 4)
    await verify(http, acme.key, "insights", 4)
    await ctx.noticer.drain()
    assert len(await ctx.stores.alerts.alert_events(10)) == 2
    assert [d.type for d in await webhooks.deliveries(ctx, own.id, 10)] == ["quota.threshold"]
    assert len(await webhooks.deliveries(ctx, operator.id, 10)) == 2

    # An endpoint about to be disabled: the account's endpoint is not told even if its
    # record (written past the service's checks) subscribes to webhook.disabled.
    await ctx.stores.alerts.update_webhook(
        WebhookEndpoint(
            own.id, own.url, (*own.events, WEBHOOK_DISABLED), own.secret,
            own.created_at, own.updated_at, account_id="acme",
        )
    )  # fmt: skip
    await deliveries.tell_disabled(ctx, operator)
    assert len(await webhooks.deliveries(ctx, own.id, 10)) == 1

    receiver.start()
    try:
        await webhooks.delete(ctx, operator.id)  # only the customer's delivery is left to send
        async with new_client() as sender:
            assert await deliver_due(ctx, sender, "node-a") == 1
        [line] = receiver.wait_for(1)
    finally:
        receiver.stop()
    assert line["verified"] is True, line
    assert line["type"] == "quota.threshold"
    [event] = [e for e in await ctx.stores.alerts.alert_events(10) if e.account_id == "acme"]
    assert line["webhook_id"] == event.id
    page = await http.get(f"/portal/webhooks/{own.id}")
    assert re.findall(r'<tr data-delivery="[^"]+" data-status="(\w+)">', page.text) == ["delivered"]


# The portal's pages and forms ----------------------------------------------------------
async def test_pages_need_a_session(client: httpx2.AsyncClient) -> None:
    """Without a session the portal's webhook pages and forms redirect to the sign-in form."""
    for response in (
        await client.get("/portal/webhooks"),
        await client.post("/portal/webhooks", data={"csrf": "x", "url": URL}),
    ):
        assert response.status_code == 303
        assert response.headers["location"] == "/portal/login"


async def test_register_shows_the_secret_once_lists_own_endpoints_only_and_audits(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Registering shows the secret once; the list shows the account's endpoints (never the
    operator's nor another account's); the creation is audited with the customer's key."""
    acme = await seed(client, "acme")
    await seed(client, "beta")
    theirs = await webhooks.create(
        ctx, "http://127.0.0.1:9/beta", ["quota.exceeded"], account_id="beta"
    )
    operators = await webhooks.create(ctx, "http://127.0.0.1:9/ops", ["quota.threshold"])
    await portal_signed_in(client, acme.key)
    page = await client.get("/portal/webhooks")
    assert '<a href="/portal/webhooks" aria-current="page">Webhooks</a>' in page.text
    assert 'id="no-webhooks"' in page.text
    assert "webhook.disabled" not in page.text  # not offered to a customer
    created = await register(client, events=("quota.threshold", "credits.low"))
    assert created.status_code == 201, created.text
    secret = shown_secret(created)
    [own] = await webhooks.list_own(ctx, "acme")
    assert (own.secret, own.account_id, own.events) == (
        secret,
        "acme",
        ("quota.threshold", "credits.low"),
    )
    listing = (await client.get("/portal/webhooks")).text
    assert f'<tr data-webhook="{own.id}" data-status="enabled">' in listing
    assert "2024-11-07 12:00:00" in listing  # created, ISO
    assert secret not in listing
    assert f"whsec_…{secret[-4:]}" in listing
    for other in (theirs, operators):
        assert other.id not in listing
        assert other.url not in listing
    assert secret not in (await client.get(f"/portal/webhooks/{own.id}")).text
    assert await audit_of(client, own.id) == [("webhook.create", actor(acme.key_id, acme.key))]


async def test_disable_enable_rotate_and_delete_work_and_are_audited(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Each action on the endpoint's page changes it through the service, audited with the
    customer's key; a rotation shows the new secret once."""
    acme = await seed(client, "acme")
    await portal_signed_in(client, acme.key)
    assert (await register(client)).status_code == 201
    [own] = await webhooks.list_own(ctx, "acme")
    base = f"/portal/webhooks/{own.id}"

    disabled = await post_action(client, f"{base}/disable")
    assert disabled.status_code == 303
    page = (await client.get(disabled.headers["location"])).text
    assert 'data-status="disabled"' in page
    assert "disabled by its account" in page
    assert (await post_action(client, f"{base}/enable")).status_code == 303
    assert (await webhooks.get(ctx, own.id)).disabled_at is None

    rotated = await post_action(client, f"{base}/rotate", grace_seconds="3600")
    assert rotated.status_code == 201
    after = await webhooks.get(ctx, own.id)
    assert shown_secret(rotated) == after.secret != own.secret
    assert after.previous_secret == own.secret

    deleted = await post_action(client, f"{base}/delete")
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/portal/webhooks?notice=deleted"
    assert await webhooks.list_own(ctx, "acme") == []
    who = actor(acme.key_id, acme.key)
    assert await audit_of(client, own.id) == [
        ("webhook.create", who),
        ("webhook.update", who),
        ("webhook.update", who),
        ("webhook.rotate_secret", who),
        ("webhook.delete", who),
    ]


async def test_forms_without_the_csrf_token_are_refused_and_change_nothing(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """A registration or an action posted with a wrong CSRF token is a 403; nothing changes."""
    acme = await seed(client, "acme")
    own = await webhooks.create(ctx, URL, ["quota.threshold"], account_id="acme")
    await portal_signed_in(client, acme.key)
    assert (await register(client, csrf="forged")).status_code == 403
    for action in ("delete", "disable", "rotate"):
        response = await client.post(f"/portal/webhooks/{own.id}/{action}", data={"csrf": ""})
        assert response.status_code == 403, action
        assert "Form refused" in response.text
    assert await webhooks.list_own(ctx, "acme") == [own]


async def test_another_accounts_or_the_operators_endpoint_is_not_found(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Another account's endpoint, or the operator's, is a 404 to read or to change, and is
    left as it was."""
    acme = await seed(client, "acme")
    await seed(client, "beta")
    theirs = await webhooks.create(ctx, URL, ["quota.threshold"], account_id="beta")
    operators = await webhooks.create(ctx, URL, ["quota.threshold"])
    await portal_signed_in(client, acme.key)
    for other in (theirs, operators):
        assert (await client.get(f"/portal/webhooks/{other.id}")).status_code == 404
        for action in ("delete", "disable", "rotate"):
            response = await post_action(client, f"/portal/webhooks/{other.id}/{action}")
            assert response.status_code == 404, action
            assert "Your account has no webhook endpoint" in response.text
    assert by_id(await webhooks.list_all(ctx)) == by_id([theirs, operators])


async def test_at_most_five_endpoints_per_account(client: httpx2.AsyncClient, ctx: Context) -> None:
    """A sixth registration is refused with a clear message; the form then says why it is
    gone; another account may still register its own."""
    acme = await seed(client, "acme")
    for n in range(MAX_ACCOUNT_ENDPOINTS):
        await webhooks.create(ctx, f"{URL}/{n}", ["quota.threshold"], account_id="acme")
    await webhooks.create(ctx, URL, ["quota.threshold"], account_id="beta")
    await portal_signed_in(client, acme.key)
    page = (await client.get("/portal/webhooks")).text
    assert 'id="full"' in page
    assert 'id="create-webhook-form"' not in page
    refused = await register(client, f"{URL}/6")
    assert refused.status_code == 409
    assert "at most 5 webhook endpoints" in refused.text
    assert len(await webhooks.list_own(ctx, "acme")) == MAX_ACCOUNT_ENDPOINTS


@pytest.mark.parametrize(
    ("url", "events", "note"),
    [
        ("ftp://example.com/hook", ("quota.threshold",), "http"),
        ("http://user:pw@example.com/hook", ("quota.threshold",), "credentials"),
        (URL, (), "Choose at least one event"),
    ],
)
async def test_bad_input_is_explained_and_registers_nothing(
    client: httpx2.AsyncClient, ctx: Context, url: str, events: tuple[str, ...], note: str
) -> None:
    """A URL quotad refuses, or no event chosen, is a 400 saying why; nothing is registered
    and a URL with credentials is not offered again."""
    acme = await seed(client, "acme")
    await portal_signed_in(client, acme.key)
    response = await register(client, url, events)
    assert response.status_code == 400
    assert '<p class="error" role="alert">' in response.text
    assert note in response.text
    assert "user:pw" not in response.text
    assert await webhooks.list_all(ctx) == []


async def test_private_addresses_are_refused_unless_allowed(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """Without QUOTAD_WEBHOOK_ALLOW_PRIVATE a customer cannot point an endpoint at a private
    address (the same rule as the operator's)."""
    strict = Context(Stores.of(MemoryStore()), make_settings("memory://"), clock)
    app = create_app(strict, manage_store=False)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
        acme = await seed(http, "acme")
        await portal_signed_in(http, acme.key)
        response = await register(http, "http://10.0.0.7/hook")
        assert response.status_code == 400
        assert await webhooks.list_all(strict) == []


async def test_the_service_refuses_webhook_disabled_for_an_account(ctx: Context) -> None:
    """An account's endpoint may not subscribe to webhook.disabled, at creation or later."""
    with pytest.raises(ValidationFailed, match=r"unknown event type 'webhook\.disabled'"):
        await webhooks.create(ctx, URL, [WEBHOOK_DISABLED], account_id="acme")
    own = await webhooks.create(ctx, URL, ["quota.threshold"], account_id="acme")
    with pytest.raises(ValidationFailed):
        await webhooks.update(ctx, own.id, events=[WEBHOOK_DISABLED])
    assert await webhooks.list_all(ctx) == [own]


# The operator's view ---------------------------------------------------------------------
async def test_the_operator_sees_each_endpoints_owner(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """GET /admin/v1/webhooks gives account_id (null for the operator's); the dashboard's
    list shows the owner; the operator disabling an account's endpoint is named as such."""
    own = await webhooks.create(ctx, URL, ["quota.threshold"], account_id="acme")
    operators = await webhooks.create(ctx, URL, ["quota.threshold"])
    listed = await client.get("/admin/v1/webhooks", headers=OPERATOR)
    assert listed.status_code == 200, listed.text
    owners = {item["id"]: item["account_id"] for item in listed.json()["items"]}
    assert owners == {own.id: "acme", operators.id: None}
    await sign_in(client, "dashboard", OPERATOR["Authorization"].removeprefix("Bearer "))
    page = (await client.get("/dashboard/webhooks")).text
    assert '<td data-owner="acme">' in page
    assert '<td data-owner="">operator</td>' in page
    disabled = await client.patch(
        f"/admin/v1/webhooks/{own.id}", json={"enabled": False}, headers=OPERATOR
    )
    assert disabled.status_code == 200, disabled.text
    assert disabled.json()["disabled_reason"] == "disabled by an operator"
    assert disabled.json()["account_id"] == "acme"


# Deleting an account ---------------------------------------------------------------------
async def test_deleting_an_account_deletes_its_endpoints(env: Env) -> None:
    """An account deleted takes its own endpoints with it (audited); others' stay."""
    http, ctx = env.http, env.ctx
    await seed(http, "acme")
    own = await webhooks.create(ctx, URL, ["quota.threshold"], account_id="acme")
    theirs = await webhooks.create(ctx, URL, ["quota.threshold"], account_id="beta")
    operators = await webhooks.create(ctx, URL, ["quota.threshold"])
    response = await http.delete("/admin/v1/accounts/acme", headers=OPERATOR)
    assert response.status_code == 204, response.text
    assert by_id(await webhooks.list_all(ctx)) == by_id([theirs, operators])
    assert [action for action, _actor in await audit_of(http, own.id)] == [
        "webhook.create",
        "webhook.delete",
    ]


# Migration and dump ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ],
)
async def test_upgrading_keeps_endpoints_as_the_operators(kind: str, tmp_path: Path) -> None:
    """An endpoint of a 0008 database is, after migration 0009, the operator's (no account)
    and still receives every account's events."""
    with store_url(kind, tmp_path) as url:
        engine = sync_engine(url)
        with engine.begin() as conn:
            migrate(conn, "0008")
            conn.execute(
                sa.text(
                    "INSERT INTO webhook_endpoints (id, url, description, events, secret,"
                    " created_at, updated_at) VALUES ('wh_old', :url, '', :events, 'whsec_x', 5, 5)"
                ),
                {"url": URL, "events": json.dumps(["quota.threshold"])},
            )
        with engine.begin() as conn:
            migrate(conn)
        engine.dispose()
        stores = stores_from_url(url)
        await stores.open()
        try:
            [old] = await stores.alerts.list_webhooks()
            assert (old.id, old.url, old.account_id) == ("wh_old", URL, None)
            assert old.receives("quota.threshold", "acme")
            assert await stores.alerts.list_webhooks("acme") == []
        finally:
            await stores.close()


@pytest.mark.parametrize(
    "kind",
    [
        pytest.param("memory", marks=pytest.mark.memory),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ],
)
async def test_a_dump_carries_the_owner_and_an_older_dump_still_restores(
    kind: str, tmp_path: Path, clock: FakeClock
) -> None:
    """A dump restores each endpoint with its account; a dump without the field (older)
    restores its endpoints as the operator's."""
    contexts: list[Context] = []
    with contextlib.ExitStack() as urls:
        async with contextlib.AsyncExitStack() as opened:
            for n in range(3):
                url = urls.enter_context(store_url(kind, tmp_path / str(n)))
                (tmp_path / str(n)).mkdir(exist_ok=True)
                stores = stores_from_url(url)
                await stores.open()
                opened.push_async_callback(stores.close)
                settings = make_settings(url, webhook_allow_private=True)
                contexts.append(Context(stores, settings, clock))
            await dump_round_trip(*contexts)


async def dump_round_trip(source: Context, same: Context, older: Context) -> None:
    """Dump ``source`` into ``same`` as it is, and into ``older`` without the owner field."""
    own = await webhooks.create(source, URL, ["quota.threshold"], account_id="acme")
    operators = await webhooks.create(source, URL, ["key.expiring"])
    lines = [line async for _kind, line in dump_lines(source)]
    await restore_lines(same, lines)
    assert {e.id: e.account_id for e in await webhooks.list_all(same)} == {
        own.id: "acme",
        operators.id: None,
    }
    assert await webhooks.list_all(same) == await webhooks.list_all(source)

    def without_owner(line: bytes) -> bytes:
        """The line as a dump older than customers' endpoints wrote it."""
        record = json.loads(line)
        if record.get("kind") != "webhook":
            return line
        del record["account_id"]
        return json.dumps(record).encode()

    await restore_lines(older, [without_owner(line) for line in lines])
    assert {e.account_id for e in await webhooks.list_all(older)} == {None}
