"""The webhook and alert routes (SPEC 11), and alert thresholds on plans and accounts."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import httpx2
import pytest

from quotad.api.app import create_app
from quotad.domain import ids
from quotad.domain.models import Overrides
from quotad.domain.webhooks import QUOTA_THRESHOLD, AlertEvent
from quotad.errors import ValidationFailed
from quotad.service import admin
from quotad.service.context import Context
from quotad.storage import Stores
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment, make_settings

EVENTS = ["quota.threshold", "quota.exceeded"]
# A receiver on this machine: refused unless private addresses are allowed.
LOCAL_URL = "http://127.0.0.1:9/hook"


@pytest.fixture
def ctx(stores: Stores, clock: FakeClock) -> Context:
    """The suite's context, allowing webhooks to private addresses (a local receiver)."""
    return Context(stores, make_settings(stores.url, webhook_allow_private=True), clock)


async def create_webhook(
    http: httpx2.AsyncClient, url: str = LOCAL_URL, events: list[str] | None = None
) -> dict[str, Any]:
    """POST /admin/v1/webhooks, which must answer 201."""
    body = {"url": url, "events": events or EVENTS, "description": "ops pager"}
    response = await http.post("/admin/v1/webhooks", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return created


def problem(response: httpx2.Response) -> tuple[int, str, str]:
    """Status, error code and the first failed check's path of an answer."""
    body = response.json()
    return response.status_code, body["error"], body["validationErrors"][0]["path"]


async def record_event(ctx: Context, endpoint_ids: list[str], account_id: str = "acme") -> str:
    """Write a quota.threshold event for ``endpoint_ids`` as the noticer would; its id."""
    at = ctx.clock.now()
    event_id = ids.sortable_id("evt", at)
    data = {"account_id": account_id, "limit": "insights.day", "threshold": 80}
    event = AlertEvent(event_id, QUOTA_THRESHOLD, at, f"dedupe-{event_id}", data, account_id)
    assert await ctx.stores.alerts.record_alert(event, endpoint_ids)
    return event_id


# Endpoints --------------------------------------------------------------------
async def test_the_secret_is_shown_once_only(client: httpx2.AsyncClient) -> None:
    """The 201 answer carries the secret; the list, the endpoint and its audit entry never do."""
    created = await create_webhook(client)
    secret = created["secret"]
    assert secret.startswith("whsec_")
    assert created["secret_hint"].endswith(secret[-4:])
    assert secret not in created["secret_hint"]
    assert created["enabled"] is True
    assert (created["disabled_at"], created["failing_since"]) == (None, None)
    assert created["events"] == EVENTS
    assert created["description"] == "ops pager"
    listed = await client.get("/admin/v1/webhooks", headers=OPERATOR)
    one = await client.get(f"/admin/v1/webhooks/{created['id']}", headers=OPERATOR)
    audit = await client.get(
        "/admin/v1/audit", params={"target": f"webhook:{created['id']}"}, headers=OPERATOR
    )
    assert [w["id"] for w in listed.json()["items"]] == [created["id"]]
    assert listed.json()["next_cursor"] is None
    assert one.json() == {k: v for k, v in created.items() if k != "secret"}
    assert [e["action"] for e in audit.json()["items"]] == ["webhook.create"]
    for response in (listed, one, audit):
        assert response.status_code == 200
        assert secret not in response.text
        assert secret[6:] not in response.text


async def test_a_new_endpoint_is_validated(client: httpx2.AsyncClient) -> None:
    """A bad URL, an unknown, missing, repeated or empty event list, or an unknown field is 400."""
    bodies = {
        "/body/url": {"url": "ftp://example.com/hook", "events": EVENTS},
        "/body/events/0": {"url": LOCAL_URL, "events": ["quota.nope"]},
        "/body/events": {"url": LOCAL_URL, "events": []},
        "/body/description": {"url": LOCAL_URL, "events": EVENTS, "description": 5},
        "/body/secret": {"url": LOCAL_URL, "events": EVENTS, "secret": "whsec_mine"},
    }
    for path, body in bodies.items():
        response = await client.post("/admin/v1/webhooks", json=body, headers=OPERATOR)
        assert problem(response) == (400, "VALIDATION_FAILED", path), response.text
    twice = {"url": LOCAL_URL, "events": ["quota.exceeded", "quota.exceeded"]}
    response = await client.post("/admin/v1/webhooks", json=twice, headers=OPERATOR)
    assert problem(response) == (400, "VALIDATION_FAILED", "/body/events")
    credentials = {"url": "https://user:pw@example.com/hook", "events": EVENTS}
    response = await client.post("/admin/v1/webhooks", json=credentials, headers=OPERATOR)
    assert problem(response) == (400, "VALIDATION_FAILED", "/body/url")
    assert "pw@" not in response.text
    listed = await client.get("/admin/v1/webhooks", headers=OPERATOR)
    assert listed.json()["items"] == []


async def test_a_private_address_is_refused_unless_allowed(
    stores: Stores, clock: FakeClock
) -> None:
    """Without QUOTAD_WEBHOOK_ALLOW_PRIVATE, loopback and private hosts are 400 at /body/url."""
    strict = Context(stores, make_settings(stores.url), clock)
    transport = httpx2.ASGITransport(app=create_app(strict, manage_store=False))
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
        for url in (LOCAL_URL, "http://10.1.2.3/hook", "http://[::1]:8080/hook"):
            body = {"url": url, "events": EVENTS}
            response = await http.post("/admin/v1/webhooks", json=body, headers=OPERATOR)
            assert problem(response) == (400, "VALIDATION_FAILED", "/body/url")
            assert response.json()["validationErrors"][0]["context"]["errorType"] == "forbidden"
        public = {"url": "https://93.184.215.14/hook", "events": EVENTS}
        response = await http.post("/admin/v1/webhooks", json=public, headers=OPERATOR)
        assert response.status_code == 201, response.text
        created = await http.post("/admin/v1/webhooks", json=public, headers=OPERATOR)
        patched = await http.patch(
            f"/admin/v1/webhooks/{created.json()['id']}", json={"url": LOCAL_URL}, headers=OPERATOR
        )
        assert problem(patched) == (400, "VALIDATION_FAILED", "/body/url")


async def test_an_endpoint_is_updated_disabled_and_enabled(client: httpx2.AsyncClient) -> None:
    """PATCH changes the given fields only; enabled false disables it, true enables it again."""
    created = await create_webhook(client)
    path = f"/admin/v1/webhooks/{created['id']}"
    changed = await client.patch(
        path,
        json={"url": "http://127.0.0.1:10/other", "events": ["credits.low"]},
        headers=OPERATOR,
    )
    assert changed.status_code == 200, changed.text
    assert changed.json()["url"] == "http://127.0.0.1:10/other"
    assert changed.json()["events"] == ["credits.low"]
    assert changed.json()["description"] == "ops pager"
    assert changed.json()["secret_hint"] == created["secret_hint"]
    assert "secret" not in changed.json()
    disabled = await client.patch(path, json={"enabled": False}, headers=OPERATOR)
    assert disabled.json()["enabled"] is False
    assert disabled.json()["disabled_at"] is not None
    assert disabled.json()["disabled_reason"] == "disabled by an operator"
    enabled = await client.patch(path, json={"enabled": True}, headers=OPERATOR)
    assert enabled.json()["enabled"] is True
    assert (enabled.json()["disabled_at"], enabled.json()["disabled_reason"]) == (None, None)
    for body, where in (
        ({"events": []}, "/body/events"),
        ({"enabled": "yes"}, "/body/enabled"),
        ({"secret": "whsec_x"}, "/body/secret"),
    ):
        response = await client.patch(path, json=body, headers=OPERATOR)
        assert problem(response) == (400, "VALIDATION_FAILED", where), response.text
    missing = await client.patch("/admin/v1/webhooks/wh_nope", json={}, headers=OPERATOR)
    assert (missing.status_code, missing.json()["error"]) == (404, "NOT_FOUND")


async def test_a_deleted_endpoint_is_gone(client: httpx2.AsyncClient, ctx: Context) -> None:
    """DELETE answers 204; the endpoint, its deliveries and a second DELETE are then 404."""
    created = await create_webhook(client)
    await record_event(ctx, [created["id"]])
    path = f"/admin/v1/webhooks/{created['id']}"
    assert (await client.delete(path, headers=OPERATOR)).status_code == 204
    for response in (
        await client.get(path, headers=OPERATOR),
        await client.get(f"{path}/deliveries", headers=OPERATOR),
        await client.delete(path, headers=OPERATOR),
        await client.post(f"{path}/rotate-secret", json={}, headers=OPERATOR),
    ):
        assert (response.status_code, response.json()["error"]) == (404, "NOT_FOUND")
    assert (await client.get("/admin/v1/webhooks", headers=OPERATOR)).json()["items"] == []


async def test_rotating_the_secret(client: httpx2.AsyncClient, ctx: Context) -> None:
    """A rotation answers a new secret once; with grace the old one signs until then."""
    created = await create_webhook(client)
    path = f"/admin/v1/webhooks/{created['id']}/rotate-secret"
    rotated = await client.post(path, json={"grace_seconds": 3600}, headers=OPERATOR)
    assert rotated.status_code == 200, rotated.text
    assert rotated.json()["secret"].startswith("whsec_")
    assert rotated.json()["secret"] != created["secret"]
    assert rotated.json()["secret_hint"].endswith(rotated.json()["secret"][-4:])
    stored = await ctx.stores.alerts.get_webhook(created["id"])
    assert stored is not None
    assert stored.previous_secret == created["secret"]
    assert stored.previous_until == ctx.clock.now() + timedelta(hours=1)
    assert stored.signing_secrets(ctx.clock.now()) == (rotated.json()["secret"], created["secret"])
    at_once = await client.post(path, headers=OPERATOR)  # no body: no grace
    assert at_once.status_code == 200, at_once.text
    stored = await ctx.stores.alerts.get_webhook(created["id"])
    assert stored is not None
    assert stored.signing_secrets(ctx.clock.now()) == (at_once.json()["secret"],)
    for grace in (-1, 604_801, "60"):
        response = await client.post(path, json={"grace_seconds": grace}, headers=OPERATOR)
        assert problem(response) == (400, "VALIDATION_FAILED", "/body/grace_seconds")
    one = await client.get(f"/admin/v1/webhooks/{created['id']}", headers=OPERATOR)
    audit = await client.get(
        "/admin/v1/audit", params={"target": f"webhook:{created['id']}"}, headers=OPERATOR
    )
    for secret in (created["secret"], rotated.json()["secret"], at_once.json()["secret"]):
        assert secret not in one.text
        assert secret not in audit.text


# Deliveries and alerts ------------------------------------------------------------
async def test_deliveries_page_newest_first_and_resend(
    client: httpx2.AsyncClient, ctx: Context, clock: FakeClock
) -> None:
    """Deliveries list newest first in pages; a resend answers 202 with the pending delivery."""
    created = await create_webhook(client)
    path = f"/admin/v1/webhooks/{created['id']}/deliveries"
    event_ids = []
    for _ in range(3):
        event_ids.append(await record_event(ctx, [created["id"]]))
        clock.advance(seconds=1)
    first = await client.get(path, params={"limit": 2}, headers=OPERATOR)
    assert first.status_code == 200, first.text
    assert [d["event_id"] for d in first.json()["items"]] == event_ids[:0:-1]
    cursor = first.json()["next_cursor"]
    assert cursor is not None
    rest = await client.get(path, params={"limit": 2, "cursor": cursor}, headers=OPERATOR)
    assert [d["event_id"] for d in rest.json()["items"]] == event_ids[:1]
    assert rest.json()["next_cursor"] is None
    delivery = rest.json()["items"][0]
    assert delivery["type"] == "quota.threshold"
    assert (delivery["status"], delivery["attempts"]) == ("pending", [])
    assert delivery["next_attempt_at"] is not None
    resent = await client.post(f"{path}/{delivery['id']}/resend", headers=OPERATOR)
    assert resent.status_code == 202, resent.text
    assert (resent.json()["id"], resent.json()["status"]) == (delivery["id"], "pending")
    unknown = await client.post(f"{path}/dlv_nope/resend", headers=OPERATOR)
    assert (unknown.status_code, unknown.json()["error"]) == (404, "NOT_FOUND")
    bad = await client.get(path, params={"limit": 0}, headers=OPERATOR)
    assert problem(bad) == (400, "VALIDATION_FAILED", "/query/limit")


async def test_alerts_list_by_account_newest_first(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """GET /admin/v1/alerts pages every event newest first, or one account's."""
    acme = [await record_event(ctx, [], "acme") for _ in range(2)]
    other = await record_event(ctx, [], "other")
    everything = await client.get("/admin/v1/alerts", headers=OPERATOR)
    assert [e["id"] for e in everything.json()["items"]] == [other, *reversed(acme)]
    page = await client.get(
        "/admin/v1/alerts", params={"account_id": "acme", "limit": 1}, headers=OPERATOR
    )
    assert [e["id"] for e in page.json()["items"]] == [acme[1]]
    event = page.json()["items"][0]
    assert (event["type"], event["account_id"]) == ("quota.threshold", "acme")
    assert event["data"]["threshold"] == 80
    rest = await client.get(
        "/admin/v1/alerts",
        params={"account_id": "acme", "cursor": page.json()["next_cursor"]},
        headers=OPERATOR,
    )
    assert [e["id"] for e in rest.json()["items"]] == [acme[0]]
    assert rest.json()["next_cursor"] is None


async def test_a_verify_crossing_a_plan_threshold_is_listed_and_delivered(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """A plan's own thresholds drive the events: a verify past 50% writes one, with a delivery."""
    created = await create_webhook(client)
    plan = await client.put(
        "/admin/v1/plans/plan-acme",
        json={"quotas": {"insights": {"total": 250}}, "alert_thresholds": [50]},
        headers=OPERATOR,
    )
    assert plan.json()["alert_thresholds"] == [50]
    body = {"key": deployment.key, "service": "insights", "cost": 130}
    verdict = await client.post("/v1/verify", json=body, headers=OPERATOR)
    assert verdict.json()["valid"] is True, verdict.text
    await ctx.noticer.drain()
    alerts = await client.get("/admin/v1/alerts", params={"account_id": "acme"}, headers=OPERATOR)
    (event,) = alerts.json()["items"]
    assert event["type"] == "quota.threshold"
    assert (event["data"]["threshold"], event["data"]["used"]) == (50, 130)
    deliveries = await client.get(
        f"/admin/v1/webhooks/{created['id']}/deliveries", headers=OPERATOR
    )
    assert [d["event_id"] for d in deliveries.json()["items"]] == [event["id"]]


async def test_a_read_token_reads_but_changes_nothing(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """A read token GETs endpoints, deliveries and alerts; every change is 403 FORBIDDEN."""
    created = await create_webhook(client)
    delivery_event = await record_event(ctx, [created["id"]])
    token = await client.post(
        "/admin/v1/tokens", json={"name": "reader", "role": "read"}, headers=OPERATOR
    )
    reader = {"Authorization": f"Bearer {token.json()['token']}"}
    path = f"/admin/v1/webhooks/{created['id']}"
    for url in ("/admin/v1/webhooks", path, f"{path}/deliveries", "/admin/v1/alerts"):
        response = await client.get(url, headers=reader)
        assert response.status_code == 200, (url, response.text)
        assert created["secret"] not in response.text
    (delivery,) = (await client.get(f"{path}/deliveries", headers=reader)).json()["items"]
    assert delivery["event_id"] == delivery_event
    refused = [
        await client.post(
            "/admin/v1/webhooks", json={"url": LOCAL_URL, "events": EVENTS}, headers=reader
        ),
        await client.patch(path, json={"enabled": False}, headers=reader),
        await client.delete(path, headers=reader),
        await client.post(f"{path}/rotate-secret", json={}, headers=reader),
        await client.post(f"{path}/deliveries/{delivery['id']}/resend", headers=reader),
    ]
    for response in refused:
        assert (response.status_code, response.json()["error"]) == (403, "FORBIDDEN")
    still = await client.get(path, headers=OPERATOR)
    assert still.json() == {k: v for k, v in created.items() if k != "secret"}


# Alert thresholds -----------------------------------------------------------------
async def test_plan_thresholds_round_trip(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A plan's thresholds are stored sorted as whole numbers, shown (null when unset) and
    audited only when set."""
    del deployment
    default = await client.get("/admin/v1/plans/plan-acme", headers=OPERATOR)
    assert default.json()["alert_thresholds"] is None
    # 50.0 is a JSON Schema integer, as the OpenAPI document lets a client write it.
    body = {"id": "pro", "quotas": {"insights": {"total": 10}}, "alert_thresholds": [100, 50.0]}
    created = await client.post("/admin/v1/plans", json=body, headers=OPERATOR)
    assert created.status_code == 201, created.text
    assert created.json()["alert_thresholds"] == [50, 100]
    assert (await client.get("/admin/v1/plans/pro", headers=OPERATOR)).json()[
        "alert_thresholds"
    ] == [50, 100]
    replaced = await client.put(
        "/admin/v1/plans/pro", json={"quotas": {"insights": {"total": 10}}}, headers=OPERATOR
    )
    assert replaced.json()["alert_thresholds"] is None
    audit = await client.get("/admin/v1/audit", params={"target": "plan:pro"}, headers=OPERATOR)
    replace_entry, create_entry = audit.json()["items"]
    assert create_entry["after"]["alert_thresholds"] == [50, 100]
    assert replace_entry["before"]["alert_thresholds"] == [50, 100]
    assert "alert_thresholds" not in replace_entry["after"]


@pytest.mark.parametrize(
    "thresholds",
    [[0], [80, 80], ["80"], [], [80.5], [True], list(range(1, 12)), [1001], {"a": 1}],
)
async def test_bad_thresholds_are_refused(
    client: httpx2.AsyncClient, deployment: Deployment, thresholds: object
) -> None:
    """Thresholds other than 1-10 distinct whole percentages in 1..1000 are 400, nothing kept."""
    plan = {"id": "pro", "quotas": {}, "alert_thresholds": thresholds}
    response = await client.post("/admin/v1/plans", json=plan, headers=OPERATOR)
    assert problem(response) == (400, "VALIDATION_FAILED", "/body/alert_thresholds")
    response = await client.put(
        "/admin/v1/plans/plan-acme", json={"alert_thresholds": thresholds}, headers=OPERATOR
    )
    assert problem(response) == (400, "VALIDATION_FAILED", "/body/alert_thresholds")
    overrides = {"overrides": {"alert_thresholds": thresholds}}
    response = await client.post(
        "/admin/v1/accounts", json={"name": "B", "plan": "plan-acme", **overrides}, headers=OPERATOR
    )
    assert problem(response) == (400, "VALIDATION_FAILED", "/body/overrides/alert_thresholds")
    response = await client.patch(
        f"/admin/v1/accounts/{deployment.account_id}", json=overrides, headers=OPERATOR
    )
    assert problem(response) == (400, "VALIDATION_FAILED", "/body/overrides/alert_thresholds")
    assert (await client.get("/admin/v1/plans/pro", headers=OPERATOR)).status_code == 404
    account = await client.get(f"/admin/v1/accounts/{deployment.account_id}", headers=OPERATOR)
    assert "alert_thresholds" not in account.json()["overrides"]


async def test_account_thresholds_round_trip(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """An account's thresholds live in its overrides: set on create, replaced by a PATCH."""
    del deployment
    overrides = {"alert_thresholds": [90]}
    body = {"id": "beta", "name": "Beta", "plan": "plan-acme", "overrides": overrides}
    created = await client.post("/admin/v1/accounts", json=body, headers=OPERATOR)
    assert created.status_code == 201, created.text
    assert created.json()["overrides"] == {"quotas": {}, "limits": {}, "alert_thresholds": [90]}
    patched = await client.patch(
        "/admin/v1/accounts/beta",
        json={"overrides": {"limits": {"cohort.max_count": 3}, "alert_thresholds": [95, 75]}},
        headers=OPERATOR,
    )
    assert patched.json()["overrides"]["alert_thresholds"] == [75, 95]
    renamed = await client.patch("/admin/v1/accounts/beta", json={"name": "B"}, headers=OPERATOR)
    assert renamed.json()["overrides"]["alert_thresholds"] == [75, 95]
    cleared = await client.patch(
        "/admin/v1/accounts/beta", json={"overrides": {}}, headers=OPERATOR
    )
    assert cleared.json()["overrides"] == {"quotas": {}, "limits": {}}
    audit = await client.get("/admin/v1/audit", params={"target": "account:beta"}, headers=OPERATOR)
    cleared_entry, _renamed, patched_entry, created_entry = audit.json()["items"]
    assert created_entry["after"]["overrides"]["alert_thresholds"] == [90]
    assert patched_entry["after"]["overrides"]["alert_thresholds"] == [75, 95]
    assert "alert_thresholds" not in cleared_entry["after"]["overrides"]


async def test_the_service_takes_thresholds_from_any_entry_point(
    ctx: Context, deployment: Deployment
) -> None:
    """create_plan and the account use cases take thresholds (sorted, checked) from the CLI too;
    an account's given alone keep its other overrides."""
    plan = await admin.create_plan(ctx, "cli", {}, [], "", alert_thresholds=[100, 60])
    assert plan.alert_thresholds == (60, 100)
    with pytest.raises(ValidationFailed) as refused:
        await admin.replace_plan(ctx, "cli", {}, [], "", alert_thresholds=[60, 60])
    assert refused.value.validation_errors[0].path == "/body/alert_thresholds"
    account = await admin.create_account(
        ctx, "cli-acct", "C", "cli", "UTC", Overrides(limits={"x": 1}), alert_thresholds=[90]
    )
    assert account.overrides == Overrides(limits={"x": 1}, alert_thresholds=(90,))
    changed = await admin.update_account(
        ctx, deployment.account_id, admin.AccountChanges(alert_thresholds=[70])
    )
    assert changed.overrides.alert_thresholds == (70,)
    assert changed.overrides.limits == {}
    stored = await admin.require_account(ctx, deployment.account_id)
    assert stored.overrides.alert_thresholds == (70,)
    with pytest.raises(ValidationFailed):
        await admin.update_account(ctx, "cli-acct", admin.AccountChanges(alert_thresholds=[0]))
    assert (await admin.require_account(ctx, "cli-acct")).overrides.alert_thresholds == (90,)
