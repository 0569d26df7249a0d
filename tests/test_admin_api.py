"""The operator API (SPEC 4.1): every route, its validation and its errors."""

from __future__ import annotations

import httpx2
import orjson

from quotad.domain.models import Limit, Overrides, Quota
from quotad.service import admin
from quotad.service.context import Context
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment, seed


async def test_operator_routes_refuse_missing_and_wrong_tokens(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Admin routes answer 401 without the operator token or with a customer key."""
    response = await client.get("/admin/v1/accounts")
    assert (response.status_code, response.json()["error"]) == (401, "MISSING_API_KEY")
    response = await client.get("/admin/v1/accounts", headers={"Authorization": "Bearer nope"})
    assert (response.status_code, response.json()["error"]) == (401, "INVALID_AUTHORIZATION")
    response = await client.get("/admin/v1/accounts", headers=deployment.bearer)
    assert response.status_code == 401
    assert deployment.key not in response.text


async def test_services_create_list_and_conflict(client: httpx2.AsyncClient) -> None:
    """Services are created once (201), listed, and a duplicate is 409 CONFLICT."""
    body = {"name": "insights", "description": "Insights API"}
    assert (await client.post("/admin/v1/services", json=body, headers=OPERATOR)).status_code == 201
    again = await client.post("/admin/v1/services", json=body, headers=OPERATOR)
    assert (again.status_code, again.json()["error"]) == (409, "CONFLICT")
    listed = await client.get("/admin/v1/services", headers=OPERATOR)
    assert [s["name"] for s in listed.json()["items"]] == ["insights"]
    bad = await client.post("/admin/v1/services", json={"name": "Bad Name"}, headers=OPERATOR)
    assert (bad.status_code, bad.json()["validationErrors"][0]["path"]) == (400, "/body/name")


async def test_plan_lifecycle(client: httpx2.AsyncClient, deployment: Deployment) -> None:
    """Plans are read, replaced, listed, refused for unknown services, and deleted only when unused."""
    plan = await client.get("/admin/v1/plans/plan-acme", headers=OPERATOR)
    assert plan.json()["quotas"]["insights"] == {"total": 250, "period": "day"}
    unknown = await client.post(
        "/admin/v1/plans", json={"id": "x", "quotas": {"weather": {"total": 1}}}, headers=OPERATOR
    )
    assert unknown.status_code == 400
    assert unknown.json()["validationErrors"][0]["path"] == "/body/quotas/weather"
    weekly = await client.post(
        "/admin/v1/plans",
        json={"id": "x", "quotas": {"insights": {"total": 1, "period": "week"}}},
        headers=OPERATOR,
    )
    assert weekly.status_code == 400
    replaced = await client.put(
        "/admin/v1/plans/plan-acme", json={"quotas": {"insights": {"total": 500}}}, headers=OPERATOR
    )
    assert replaced.json()["quotas"] == {"insights": {"total": 500, "period": "day"}}
    assert replaced.json()["limits"] == []
    in_use = await client.delete("/admin/v1/plans/plan-acme", headers=OPERATOR)
    assert (in_use.status_code, in_use.json()["error"]) == (409, "CONFLICT")
    await client.post("/admin/v1/plans", json={"id": "spare"}, headers=OPERATOR)
    assert (await client.delete("/admin/v1/plans/spare", headers=OPERATOR)).status_code == 204
    gone = await client.get("/admin/v1/plans/spare", headers=OPERATOR)
    assert (gone.status_code, gone.json()["error"]) == (404, "NOT_FOUND")
    missing = await client.put("/admin/v1/plans/spare", json={}, headers=OPERATOR)
    assert missing.status_code == 404


async def test_plans_and_accounts_page_with_cursors(client: httpx2.AsyncClient) -> None:
    """Lists page with ?limit= and the returned next_cursor until it is null."""
    await client.post("/admin/v1/plans", json={"id": "p"}, headers=OPERATOR)
    for index in range(5):
        body = {"id": f"acct-{index}", "name": f"Account {index}", "plan": "p"}
        assert (
            await client.post("/admin/v1/accounts", json=body, headers=OPERATOR)
        ).status_code == 201
    seen: list[str] = []
    cursor = None
    while True:
        params = {"limit": "2", **({"cursor": cursor} if cursor else {})}
        page = (await client.get("/admin/v1/accounts", params=params, headers=OPERATOR)).json()
        seen += [item["id"] for item in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [f"acct-{i}" for i in range(5)]
    found = await client.get("/admin/v1/accounts", params={"search": "count 3"}, headers=OPERATOR)
    assert [a["id"] for a in found.json()["items"]] == ["acct-3"]
    bad = await client.get("/admin/v1/accounts", params={"cursor": "%%%"}, headers=OPERATOR)
    assert bad.status_code == 400


async def test_account_lifecycle(client: httpx2.AsyncClient, deployment: Deployment) -> None:
    """Accounts are created with a generated id, patched, validated and deleted with their keys."""
    created = await client.post(
        "/admin/v1/accounts", json={"name": "No Id", "plan": "plan-acme"}, headers=OPERATOR
    )
    assert created.status_code == 201
    assert created.json()["id"].startswith("acct_")
    assert created.json()["timezone"] == "UTC"
    dup = await client.post(
        "/admin/v1/accounts",
        json={"id": "acme", "name": "A", "plan": "plan-acme"},
        headers=OPERATOR,
    )
    assert (dup.status_code, dup.json()["error"]) == (409, "CONFLICT")
    bad_tz = await client.patch(
        "/admin/v1/accounts/acme", json={"timezone": "Mars/Base"}, headers=OPERATOR
    )
    assert (bad_tz.status_code, bad_tz.json()["validationErrors"][0]["path"]) == (
        400,
        "/body/timezone",
    )
    bad_plan = await client.patch(
        "/admin/v1/accounts/acme", json={"plan": "nope"}, headers=OPERATOR
    )
    assert bad_plan.status_code == 400
    patched = await client.patch(
        "/admin/v1/accounts/acme",
        json={
            "name": "Acme Corp",
            "timezone": "Europe/Paris",
            "overrides": {"limits": {"cohort.max_count": 20}},
        },
        headers=OPERATOR,
    )
    assert patched.json()["name"] == "Acme Corp"
    assert patched.json()["timezone"] == "Europe/Paris"
    assert patched.json()["overrides"] == {"quotas": {}, "limits": {"cohort.max_count": 20}}
    fetched = await client.get("/admin/v1/accounts/acme", headers=OPERATOR)
    assert fetched.json() == patched.json()
    assert (await client.delete("/admin/v1/accounts/acme", headers=OPERATOR)).status_code == 204
    assert (await client.get("/admin/v1/accounts/acme", headers=OPERATOR)).status_code == 404
    refused = await client.get("/v1/usages", headers=deployment.bearer)
    assert (refused.status_code, refused.json()["error"]) == (401, "INVALID_AUTHORIZATION")


async def test_keys_are_shown_once_and_listed_without_secret(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Creation returns the secret once; listing shows prefix and last four characters only."""
    listed = await client.get("/admin/v1/accounts/acme/keys", headers=OPERATOR)
    [item] = listed.json()["items"]
    assert "key" not in item
    assert deployment.key not in listed.text
    assert item["hint"] == f"qd_…{deployment.key[-4:]}"
    assert (item["prefix"], item["status"]) == ("qd", "active")
    past = await client.post(
        "/admin/v1/accounts/acme/keys",
        json={"expires_at": "2020-01-01T00:00:00Z"},
        headers=OPERATOR,
    )
    assert (past.status_code, past.json()["validationErrors"][0]["path"]) == (
        400,
        "/body/expires_at",
    )
    naive = await client.post(
        "/admin/v1/accounts/acme/keys", json={"expires_at": "2030-01-01T00:00:00"}, headers=OPERATOR
    )
    assert naive.status_code == 400
    nobody = await client.post("/admin/v1/accounts/ghost/keys", json={}, headers=OPERATOR)
    assert nobody.status_code == 404
    unlisted = await client.get("/admin/v1/accounts/ghost/keys", headers=OPERATOR)
    assert (unlisted.status_code, unlisted.json()["error"]) == (404, "NOT_FOUND")


async def test_rotation_keeps_old_key_for_the_grace_period(
    client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock
) -> None:
    """After rotation both keys work until the grace period ends; then only the new one."""
    rotated = await client.post(
        f"/admin/v1/keys/{deployment.key_id}/rotate", json={"grace_seconds": 600}, headers=OPERATOR
    )
    assert rotated.status_code == 201
    new_key = rotated.json()["key"]
    assert new_key != deployment.key
    for key in (deployment.key, new_key):
        assert (await client.get("/v1/usages", headers={"x-api-key": key})).status_code == 200
    again = await client.post(f"/admin/v1/keys/{deployment.key_id}/rotate", headers=OPERATOR)
    assert (again.status_code, again.json()["error"]) == (409, "CONFLICT")
    clock.advance(seconds=601)
    old = await client.get("/v1/usages", headers={"x-api-key": deployment.key})
    assert (old.status_code, old.json()["error"]) == (401, "EXPIRED_API_KEY")
    assert (await client.get("/v1/usages", headers={"x-api-key": new_key})).status_code == 200
    listed = (await client.get("/admin/v1/accounts/acme/keys", headers=OPERATOR)).json()["items"]
    by_id = {k["id"]: k for k in listed}
    assert by_id[deployment.key_id]["status"] == "expired"
    assert by_id[deployment.key_id]["replaced_by"] == rotated.json()["id"]
    assert by_id[rotated.json()["id"]]["status"] == "active"


async def test_rotation_with_zero_grace_and_revocation(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """grace_seconds 0 ends the old key at once; a revoked key cannot be rotated; unknown is 404."""
    rotated = await client.post(
        f"/admin/v1/keys/{deployment.key_id}/rotate", json={"grace_seconds": 0}, headers=OPERATOR
    )
    assert (await client.get("/v1/usages", headers=deployment.bearer)).status_code == 401
    new_id = rotated.json()["id"]
    revoked = await client.delete(f"/admin/v1/keys/{new_id}", headers=OPERATOR)
    assert revoked.json()["status"] == "revoked"
    refused = await client.post(f"/admin/v1/keys/{new_id}/rotate", headers=OPERATOR)
    assert refused.status_code == 409
    assert (await client.delete("/admin/v1/keys/key_nope", headers=OPERATOR)).status_code == 404
    assert (
        await client.post("/admin/v1/keys/key_nope/rotate", headers=OPERATOR)
    ).status_code == 404


async def test_admin_usage_and_adjust(client: httpx2.AsyncClient, deployment: Deployment) -> None:
    """The operator reads any account's rows and adjusts days, never below zero or in the future."""
    path = "/admin/v1/accounts/acme/usage/insights"
    credit = await client.post(
        f"{path}/adjust", json={"date": "2024-11-06", "delta": 40}, headers=OPERATOR
    )
    assert credit.json() == {"used": 40, "remaining": 210, "total": 250, "date": "2024-11-06"}
    floored = await client.post(
        f"{path}/adjust", json={"date": "2024-11-06", "delta": -100}, headers=OPERATOR
    )
    assert floored.json()["used"] == 0
    await client.post(f"{path}/adjust", json={"date": "2024-11-07", "delta": 3}, headers=OPERATOR)
    rows = await client.get(f"{path}?start_date=2024-11-06&end_date=2024-11-07", headers=OPERATOR)
    assert [r["used"] for r in rows.json()] == [0, 3]
    future = await client.post(
        f"{path}/adjust", json={"date": "2024-11-08", "delta": 1}, headers=OPERATOR
    )
    assert future.status_code == 400
    bad_date = await client.post(
        f"{path}/adjust", json={"date": "11/06/2024", "delta": 1}, headers=OPERATOR
    )
    assert bad_date.json()["validationErrors"][0]["path"] == "/body/date"
    nobody = await client.get("/admin/v1/accounts/ghost/usage/insights", headers=OPERATOR)
    assert nobody.status_code == 404


async def test_resource_limits_acquire_release_and_set(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Acquire past the limit is 403 MAX_RESOURCES_REACHED and changes nothing; release and set work."""
    base = "/admin/v1/accounts/acme/limits/cohort.max_count"
    acquired = await client.post(f"{base}/acquire", json={"amount": 8}, headers=OPERATOR)
    assert acquired.json() == {"name": "cohort.max_count", "usage": 8, "limit": 10}
    refused = await client.post(f"{base}/acquire", json={"amount": 3}, headers=OPERATOR)
    assert (refused.status_code, refused.json()["error"]) == (403, "MAX_RESOURCES_REACHED")
    assert (await client.post(f"{base}/acquire", headers=OPERATOR)).json()["usage"] == 9
    released = await client.post(f"{base}/release", json={"amount": 4}, headers=OPERATOR)
    assert released.json()["usage"] == 5
    too_many = await client.post(f"{base}/release", json={"amount": 6}, headers=OPERATOR)
    assert (too_many.status_code, too_many.json()["error"]) == (409, "CONFLICT")
    assert (await client.put(base, json={"usage": 10}, headers=OPERATOR)).json()["usage"] == 10
    usages = await client.get("/v1/usages", headers=deployment.bearer)
    assert usages.json()[0] == {
        "description": "Number of known contacts (KCs) allowed",
        "limit": 10,
        "name": "cohort.max_count",
        "usage": 10,
    }
    unknown = await client.post("/admin/v1/accounts/acme/limits/nope/acquire", headers=OPERATOR)
    assert unknown.status_code == 404
    zero = await client.post(f"{base}/acquire", json={"amount": 0}, headers=OPERATOR)
    assert zero.status_code == 400


async def test_export_streams_every_usage_day(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Export returns one JSON line per stored usage day of every account."""
    await seed(client, "globex")
    for account in ("acme", "globex"):
        await client.post(
            f"/admin/v1/accounts/{account}/usage/insights/adjust",
            json={"date": "2024-11-05", "delta": 9},
            headers=OPERATOR,
        )
    response = await client.get("/admin/v1/export?format=jsonl", headers=OPERATOR)
    assert response.headers["content-type"].startswith("application/x-ndjson")
    rows = [orjson.loads(line) for line in response.text.splitlines()]
    assert rows == [
        {
            "account_id": a,
            "service": "insights",
            "date": "2024-11-05",
            "used": 9,
            "total": 250,
            "rejected": 0,
        }
        for a in ("acme", "globex")
    ]
    bad = await client.get("/admin/v1/export?format=csv", headers=OPERATOR)
    assert bad.status_code == 400


async def test_healthz_answers_without_auth(client: httpx2.AsyncClient) -> None:
    """GET /healthz needs no credentials and reports ok."""
    response = await client.get("/healthz")
    assert (response.status_code, response.json()) == (200, {"status": "ok"})


async def test_an_account_recreated_after_its_deletion_starts_with_nothing(ctx: Context) -> None:
    """Deleting an account drops its usage and gauges: one re-created under its id has none."""
    await admin.create_service(ctx, "insights", "")
    await admin.create_plan(ctx, "p", {"insights": Quota.daily(10)}, [Limit("seats", "", 5)], "")
    await admin.create_account(ctx, "acme", "Acme", "p", "UTC", Overrides())
    day = ctx.clock.now().date()
    assert (await ctx.counters.consume("acme", "insights", day, 7, 10)).granted
    await admin.set_gauge(ctx, "acme", "seats", 3)
    await admin.delete_account(ctx, "acme")
    await admin.create_account(ctx, "acme", "Acme", "p", "UTC", Overrides())
    assert await ctx.counters.usage("acme", "insights", day, day) == []
    assert await ctx.counters.gauges("acme") == {}
    outcome = await ctx.counters.consume("acme", "insights", day, 7, 10)
    assert (outcome.granted, outcome.used) == (True, 7)
