"""The dashboard's webhook pages and alerts, in-process over HTTP: endpoints, their secrets
shown once, enable/disable/rotate/delete (audited), deliveries and re-sends, read sessions."""

from __future__ import annotations

import re
from typing import Any

import httpx2
import pytest

from quotad import dashboard
from quotad.dashboard import webhook_pages
from quotad.domain.webhooks import AlertEvent
from quotad.service import webhooks
from quotad.service.context import Context
from quotad.service.deliveries import deliver_due
from quotad.service.webhook_sender import new_client
from quotad.storage import Stores
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import ADMIN_TOKEN, OPERATOR, make_settings, seed
from tests.test_dashboard import csrf_of, operator_signed_in, sign_in, verify
from tests.webhook_fixtures import WebhookReceiver

SECRET = re.compile(r'<code id="new-secret" class="key">([^<]+)</code>')
# Never sent to: these tests only register it (private addresses are allowed here).
URL = "http://127.0.0.1:9/hook"
WRITE_FORM = re.compile(r'<form method="post" action="/dashboard/(?!logout)')


@pytest.fixture
def ctx(clock: FakeClock) -> Context:
    """A memory store is enough for pages; private URLs are allowed for the local receiver."""
    settings = make_settings("memory://", webhook_allow_private=True)
    return Context(Stores.of(MemoryStore()), settings, clock)


async def token_signed_in(http: httpx2.AsyncClient, name: str, role: str) -> None:
    """Sign the client in with a new named operator token of ``role``."""
    response = await http.post(
        "/admin/v1/tokens", json={"name": name, "role": role}, headers=OPERATOR
    )
    assert response.status_code == 201, response.text
    signed = await sign_in(http, "dashboard", response.json()["token"])
    assert signed.status_code == 303, signed.text


async def create_endpoint(
    http: httpx2.AsyncClient, url: str = URL, events: tuple[str, ...] = ("quota.threshold",)
) -> httpx2.Response:
    """Register an endpoint through the dashboard's form."""
    page = await http.get("/dashboard/webhooks")
    form = {"csrf": csrf_of(page.text), "url": url, "description": "pager"}
    form |= {f"event:{name}": "on" for name in events}
    return await http.post("/dashboard/webhooks", data=form)


async def only_endpoint_id(ctx: Context) -> str:
    """The id of the one endpoint registered."""
    [endpoint] = await webhooks.list_all(ctx)
    return endpoint.id


async def audit_of(http: httpx2.AsyncClient, endpoint_id: str) -> list[tuple[str, str]]:
    """``(action, actor)`` of the endpoint's audit entries, oldest first."""
    response = await http.get(
        "/admin/v1/audit", params={"target": f"webhook:{endpoint_id}"}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    return [(entry["action"], entry["actor"]) for entry in reversed(response.json()["items"])]


async def post_action(http: httpx2.AsyncClient, path: str, **fields: str) -> httpx2.Response:
    """Post one of an endpoint page's forms with the page's CSRF token."""
    endpoint_page = re.match(r"/dashboard/webhooks/[^/]+", path)
    assert endpoint_page is not None, path
    page = await http.get(endpoint_page.group(0))
    assert page.status_code == 200, page.text
    return await http.post(path, data={"csrf": csrf_of(page.text), **fields})


def delivery_rows(html: str) -> list[tuple[str, str]]:
    """``(delivery id, status)`` of the deliveries table, in page order."""
    return re.findall(r'<tr data-delivery="([^"]+)" data-status="(\w+)">', html)


def attempt_codes(html: str) -> list[str]:
    """The status codes of the attempts listed, in page order."""
    return re.findall(r'<li data-status-code="(\d*)">', html)


# Sessions and roles --------------------------------------------------------------
@pytest.mark.parametrize("path", ["/dashboard/webhooks", "/dashboard/webhooks/wh_x"])
async def test_webhook_pages_need_a_session(client: httpx2.AsyncClient, path: str) -> None:
    """Without a session the webhook pages redirect (303) to the sign-in form."""
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"


@pytest.mark.parametrize("role", ["admin", "read"])
async def test_pages_render_for_admin_and_read_sessions(
    client: httpx2.AsyncClient, ctx: Context, role: str
) -> None:
    """Both roles see the list, the endpoint page and the nav link; only admin gets forms."""
    created = await webhooks.create(ctx, URL, ["quota.threshold", "key.expiring"], "pager")
    if role == "admin":
        await operator_signed_in(client)
    else:
        await token_signed_in(client, "auditor", "read")
    listing = await client.get("/dashboard/webhooks")
    assert listing.status_code == 200
    assert '<a href="/dashboard/webhooks" aria-current="page">Webhooks</a>' in listing.text
    assert f'<tr data-webhook="{created.id}" data-status="enabled">' in listing.text
    assert URL in listing.text
    assert f"whsec_…{created.secret[-4:]}" in listing.text
    assert "No alert has been raised." in listing.text
    endpoint = await client.get(f"/dashboard/webhooks/{created.id}")
    assert endpoint.status_code == 200
    assert "Nothing has been sent to this endpoint yet." in endpoint.text
    for page in (listing.text, endpoint.text):
        assert created.secret not in page
        assert bool(WRITE_FORM.search(page)) == (role == "admin")
        assert ('id="read-only"' in page) == (role == "read")


async def test_a_read_session_cannot_write_even_by_forging_a_form(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Every webhook form posted by a read session, with its own valid CSRF token, is a 403
    and changes nothing."""
    created = await webhooks.create(ctx, URL, ["quota.threshold"])
    await token_signed_in(client, "auditor", "read")
    csrf = csrf_of((await client.get("/dashboard/webhooks")).text)  # the sign-out form's
    base = f"/dashboard/webhooks/{created.id}"
    forged: list[tuple[str, dict[str, str]]] = [
        ("/dashboard/webhooks", {"url": URL, "event:quota.exceeded": "on"}),
        (f"{base}/disable", {}),
        (f"{base}/rotate", {"grace_seconds": "0"}),
        (f"{base}/delete", {}),
        (f"{base}/deliveries/dlv_x_y/resend", {}),
    ]
    for path, fields in forged:
        response = await client.post(path, data={"csrf": csrf, **fields})
        assert response.status_code == 403, path
        assert "Read-only session" in response.text
    assert await webhooks.list_all(ctx) == [created]
    assert await audit_of(client, created.id) == [("webhook.create", "local")]


async def test_webhook_forms_need_the_csrf_token(client: httpx2.AsyncClient, ctx: Context) -> None:
    """An admin's webhook form with a wrong CSRF token is a 403 and changes nothing."""
    created = await webhooks.create(ctx, URL, ["quota.threshold"])
    await operator_signed_in(client)
    for path in ("/dashboard/webhooks", f"/dashboard/webhooks/{created.id}/delete"):
        response = await client.post(path, data={"csrf": "forged", "url": URL})
        assert response.status_code == 403, path
        assert "Form refused" in response.text
    assert await webhooks.list_all(ctx) == [created]


# Creating, and the secret shown once ---------------------------------------------
async def test_create_shows_the_secret_once_and_never_again(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """The page answering a creation shows the secret; no page shows it afterwards."""
    await operator_signed_in(client)
    created = await create_endpoint(client, events=("quota.threshold", "credits.low"))
    assert created.status_code == 201, created.text
    match = SECRET.search(created.text)
    assert match is not None
    secret = match.group(1)
    [endpoint] = await webhooks.list_all(ctx)
    assert secret == endpoint.secret
    assert secret.startswith("whsec_")
    assert endpoint.events == ("quota.threshold", "credits.low")
    assert endpoint.description == "pager"
    for path in ("/dashboard/webhooks", f"/dashboard/webhooks/{endpoint.id}"):
        page = (await client.get(path)).text
        assert secret not in page, path
        assert f"whsec_…{secret[-4:]}" in page, path
    assert await audit_of(client, endpoint.id) == [("webhook.create", "bootstrap")]


@pytest.mark.parametrize(
    ("form", "words"),
    [
        ({"url": "ftp://example.com/hook", "event:quota.threshold": "on"}, "http:// or https://"),
        ({"url": "http://user:pw@127.0.0.1/h", "event:quota.threshold": "on"}, "credentials"),
        ({"url": URL}, "Choose at least one event"),
        ({"url": URL, "event:quota.threshold": "on", "description": "x" * 501}, "at most 500"),
    ],
    ids=["scheme", "credentials", "no-event", "long-description"],
)
async def test_a_refused_creation_says_why_and_keeps_the_form(
    client: httpx2.AsyncClient, ctx: Context, form: dict[str, str], words: str
) -> None:
    """A URL or form the service refuses is a 400 page saying why; nothing is registered."""
    await operator_signed_in(client)
    page = await client.get("/dashboard/webhooks")
    response = await client.post("/dashboard/webhooks", data={"csrf": csrf_of(page.text), **form})
    assert response.status_code == 400
    assert '<p class="error" role="alert">' in response.text
    assert words in response.text
    assert "pw@" not in response.text
    assert not SECRET.search(response.text)
    assert await webhooks.list_all(ctx) == []


async def test_a_private_address_is_refused_unless_allowed(clock: FakeClock) -> None:
    """Without QUOTAD_WEBHOOK_ALLOW_PRIVATE, a loopback URL is refused in the page (400)."""
    ctx = Context(Stores.of(MemoryStore()), make_settings("memory://"), clock)
    transport = httpx2.ASGITransport(app=dashboard.create_app(ctx))
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
        assert (await sign_in(http, "dashboard", ADMIN_TOKEN)).status_code == 303
        response = await create_endpoint(http)
    assert response.status_code == 400
    assert "loopback" in response.text
    assert "QUOTAD_WEBHOOK_ALLOW_PRIVATE=1" in response.text
    assert await webhooks.list_all(ctx) == []


# Enable, disable, rotate, delete ---------------------------------------------------
async def test_disable_enable_rotate_and_delete_are_audited(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Each action changes the endpoint as shown, and is audited under the session's token name."""
    await token_signed_in(client, "ops-admin", "admin")
    assert (await create_endpoint(client)).status_code == 201
    endpoint_id = await only_endpoint_id(ctx)
    base = f"/dashboard/webhooks/{endpoint_id}"

    disabled = await post_action(client, f"{base}/disable")
    assert disabled.status_code == 303
    page = (await client.get(disabled.headers["location"])).text
    assert f'data-webhook="{endpoint_id}" data-status="disabled"' in page
    assert "disabled by an operator" in page
    assert "The endpoint is disabled" in page
    assert 'id="enable"' in page

    enabled = await post_action(client, f"{base}/enable")
    assert enabled.status_code == 303
    page = (await client.get(enabled.headers["location"])).text
    assert f'data-webhook="{endpoint_id}" data-status="enabled"' in page
    assert (await webhooks.get(ctx, endpoint_id)).disabled_at is None

    old_secret = (await webhooks.get(ctx, endpoint_id)).secret
    rotated = await post_action(client, f"{base}/rotate", grace_seconds="3600")
    assert rotated.status_code == 201
    match = SECRET.search(rotated.text)
    assert match is not None
    after = await webhooks.get(ctx, endpoint_id)
    assert match.group(1) == after.secret != old_secret
    assert after.previous_secret == old_secret
    assert old_secret not in rotated.text
    assert after.secret not in (await client.get(base)).text

    refused = await post_action(client, f"{base}/rotate", grace_seconds="604801")
    assert refused.status_code == 400
    assert "The grace period is 0 to 604800 seconds." in refused.text
    assert (await webhooks.get(ctx, endpoint_id)).secret == after.secret

    deleted = await post_action(client, f"{base}/delete")
    assert deleted.status_code == 303
    assert deleted.headers["location"] == "/dashboard/webhooks?notice=deleted"
    listing = (await client.get(deleted.headers["location"])).text
    assert "The endpoint was deleted" in listing
    assert endpoint_id not in listing
    assert await webhooks.list_all(ctx) == []
    assert (await client.get(base)).status_code == 404

    assert await audit_of(client, endpoint_id) == [
        ("webhook.create", "ops-admin"),
        ("webhook.update", "ops-admin"),
        ("webhook.update", "ops-admin"),
        ("webhook.rotate_secret", "ops-admin"),
        ("webhook.delete", "ops-admin"),
    ]


async def test_the_delete_form_asks_for_confirmation(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """The delete button's form carries the question the page's script asks first."""
    created = await webhooks.create(ctx, URL, ["quota.threshold"])
    await operator_signed_in(client)
    page = (await client.get(f"/dashboard/webhooks/{created.id}")).text
    assert re.search(
        rf'action="/dashboard/webhooks/{created.id}/delete" class="inline" '
        r'data-confirm="Delete the endpoint [^"]+ cannot be undone\.">',
        page,
    )


async def test_actions_on_an_unknown_endpoint_are_a_404_page(client: httpx2.AsyncClient) -> None:
    """An endpoint that does not exist answers an HTML 404, for its page and its forms."""
    await operator_signed_in(client)
    page = await client.get("/dashboard/webhooks/wh_nobody")
    assert page.status_code == 404
    assert "There is no webhook endpoint “wh_nobody”." in page.text
    csrf = csrf_of(page.text)
    response = await client.post("/dashboard/webhooks/wh_nobody/disable", data={"csrf": csrf})
    assert response.status_code == 404


# Alerts, deliveries and re-sends -----------------------------------------------------
async def crossing(client: httpx2.AsyncClient, ctx: Context) -> dict[str, Any]:
    """Account acme (insights 5 a day) used to 80 %: one quota.threshold event, written."""
    acme = await seed(client, "acme", total=5)
    await verify(client, acme.key, "insights", 4)
    await ctx.noticer.drain()
    [event] = await ctx.stores.alerts.alert_events(10)
    assert event.type == "quota.threshold"
    return event.data


async def test_alerts_show_on_the_account_and_the_webhooks_page(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """A threshold crossed is listed, with its limit, threshold and window, on both pages."""
    data = await crossing(client, ctx)
    await seed(client, "beta")
    await operator_signed_in(client)
    account = (await client.get("/dashboard/accounts/acme")).text
    listing = (await client.get("/dashboard/webhooks")).text
    for page in (account, listing):
        row = re.search(
            r'<tr data-event="evt_\w+" data-type="quota.threshold">(.*?)</tr>', page, re.S
        )
        assert row is not None
        cells = row.group(1)
        assert f"<td>{data['limit']}</td>" in cells
        assert "<td>80%</td>" in cells
        assert f"{data['window_start']} to {data['reset']}" in cells
        assert "<td>4 of 5</td>" in cells
    assert '<a href="/dashboard/accounts/acme">acme</a>' in listing
    beta = (await client.get("/dashboard/accounts/beta")).text
    assert "No alert has been raised for this account." in beta


async def test_deliveries_show_their_attempts_and_resend_makes_one_pending(
    client: httpx2.AsyncClient, ctx: Context, clock: FakeClock, receiver: WebhookReceiver
) -> None:
    """A delivery's attempts (status, error, answer) are listed; Re-send makes it pending
    again and it is sent once more with the same webhook-id."""
    await operator_signed_in(client)
    assert (await create_endpoint(client, url=receiver.url)).status_code == 201
    endpoint_id = await only_endpoint_id(ctx)
    await crossing(client, ctx)
    base = f"/dashboard/webhooks/{endpoint_id}"
    async with new_client() as sender:
        receiver.set_mode(status=503, body="busy, try later")
        assert await deliver_due(ctx, sender, "node-a") == 1
        page = (await client.get(base)).text
        [(delivery_id, status)] = delivery_rows(page)
        assert status == "pending"
        assert attempt_codes(page) == ["503"]
        assert "busy, try later" in page
        assert "next try" in page

        clock.advance(seconds=6)
        receiver.set_mode(status=204)
        assert await deliver_due(ctx, sender, "node-a") == 1
        page = (await client.get(base)).text
        assert delivery_rows(page) == [(delivery_id, "delivered")]
        assert attempt_codes(page) == ["204", "503"]

        resent = await post_action(client, f"{base}/deliveries/{delivery_id}/resend")
        assert resent.status_code == 303
        page = (await client.get(resent.headers["location"])).text
        assert delivery_rows(page) == [(delivery_id, "pending")]
        assert "The delivery is pending again" in page
        assert await deliver_due(ctx, sender, "node-a") == 1
    received = receiver.wait_for(3)
    assert len({line["webhook_id"] for line in received}) == 1
    assert await audit_of(client, endpoint_id) == [
        ("webhook.create", "bootstrap"),
        ("webhook.resend", "bootstrap"),
    ]


async def test_resending_an_unknown_delivery_is_a_404_in_the_page(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """Re-sending a delivery the endpoint does not have says so (404) and audits nothing."""
    created = await webhooks.create(ctx, URL, ["quota.threshold"])
    await operator_signed_in(client)
    base = f"/dashboard/webhooks/{created.id}"
    response = await post_action(client, f"{base}/deliveries/dlv_nope/resend")
    assert response.status_code == 404
    assert '<p class="error" role="alert">' in response.text
    assert await audit_of(client, created.id) == [("webhook.create", "local")]


async def test_older_alerts_are_a_page_away(
    client: httpx2.AsyncClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The webhooks page lists the newest alerts and links to the older ones, none twice."""
    monkeypatch.setattr(webhook_pages, "ALERT_ROWS", 2)
    for n in range(3):
        data = {"account_id": "acme", "key_id": f"key_{n}", "expires_at": "2024-11-14T00:00:00Z"}
        event = AlertEvent(f"evt_{n}", "key.expiring", ctx.clock.now(), f"d{n}", data, "acme")
        assert await ctx.stores.alerts.record_alert(event, [])
    await operator_signed_in(client)
    first = (await client.get("/dashboard/webhooks")).text
    assert re.findall(r'<tr data-event="(\w+)"', first) == ["evt_2", "evt_1"]
    assert "key id key_2, expires at 2024-11-14T00:00:00Z" in first
    older = re.search(r'<a href="([^"]+)" id="older-alerts">', first)
    assert older is not None
    second = (await client.get(older.group(1).replace("&amp;", "&"))).text
    assert re.findall(r'<tr data-event="(\w+)"', second) == ["evt_0"]
    assert 'id="older-alerts"' not in second


async def test_what_an_operator_typed_is_escaped(client: httpx2.AsyncClient, ctx: Context) -> None:
    """A description with markup is shown as text on both pages, never as markup."""
    created = await webhooks.create(ctx, URL, ["quota.threshold"], "<script>x()</script>")
    await operator_signed_in(client)
    for path in ("/dashboard/webhooks", f"/dashboard/webhooks/{created.id}"):
        page = (await client.get(path)).text
        assert "<script>x()" not in page, path
        assert "&lt;script&gt;x()&lt;/script&gt;" in page, path
