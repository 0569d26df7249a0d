"""The audit log (SPEC 12): every change, by whom, before and after, never a secret."""

from __future__ import annotations

import json
import re
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import httpx2
import pytest

from quotad.domain import keys
from quotad.domain.operators import AuditQuery
from quotad.service import admin, audit, auth
from quotad.service.context import Context
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import ADMIN_TOKEN, OPERATOR, Deployment
from tests.test_cli import data, ok
from tests.test_dashboard import sign_in
from tests.test_record_cache import Monotonic, node
from tests.test_roles import bearer, new_token


async def entries(http: httpx2.AsyncClient, **params: Any) -> list[dict[str, Any]]:
    """Every entry the filters match, newest first, read page by page."""
    found: list[dict[str, Any]] = []
    cursor = None
    while True:
        query = {**params, "limit": 100} if cursor is None else {**params, "cursor": cursor}
        response = await http.get("/admin/v1/audit", params=query, headers=OPERATOR)
        assert response.status_code == 200, response.text
        found += response.json()["items"]
        cursor = response.json()["next_cursor"]
        if cursor is None:
            return found


async def latest(http: httpx2.AsyncClient, target: str) -> dict[str, Any]:
    """The newest entry of ``target``."""
    found = await entries(http, target=target)
    assert found, target
    return found[0]


def changed(response: httpx2.Response, status: int = 200) -> str:
    """The request id of a change that succeeded."""
    assert response.status_code == status, response.text
    return response.headers["x-request-id"]


async def test_each_change_is_logged_with_actor_before_after_and_request_id(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Every kind of change through the API leaves one entry naming who, what and how."""
    ops = bearer((await new_token(client, "ops", "admin"))["token"])
    acme = f"/admin/v1/accounts/{deployment.account_id}"
    plan = "plan-acme"
    quotas = {"insights": {"total": 500}, "scoring": {"total": 100}}
    day_100 = {"total": 100, "period": "day"}
    limits = [{"name": "cohort.max_count", "description": "", "limit": 10}]
    replaced = {"quotas": quotas, "limits": limits}
    # (the change, status, action, target, before (subset), after (subset))
    cases: list[tuple[Callable[[], Awaitable[httpx2.Response]], int, str, str, Any, Any]] = [
        (
            lambda: client.post("/admin/v1/services", json={"name": "maps"}, headers=ops),
            201,
            "service.create",
            "service:maps",
            None,
            {"name": "maps"},
        ),
        (
            lambda: client.post("/admin/v1/plans", json={"id": "spare", "quotas": {}}, headers=ops),
            201,
            "plan.create",
            "plan:spare",
            None,
            {"id": "spare"},
        ),
        (
            lambda: client.put(f"/admin/v1/plans/{plan}", json=replaced, headers=ops),
            200,
            "plan.replace",
            f"plan:{plan}",
            {"quotas": {"insights": {"total": 250, "period": "day"}, "scoring": day_100}},
            {"quotas": {"insights": {"total": 500, "period": "day"}, "scoring": day_100}},
        ),
        (
            lambda: client.delete("/admin/v1/plans/spare", headers=ops),
            204,
            "plan.delete",
            "plan:spare",
            {"id": "spare"},
            None,
        ),
        (
            lambda: client.patch(
                acme, json={"name": "Acme Inc", "status": "suspended"}, headers=ops
            ),
            200,
            "account.update",
            "account:acme",
            {"name": "Acme", "status": "active"},
            {"name": "Acme Inc", "status": "suspended"},
        ),
        (
            lambda: client.post(
                f"{acme}/usage/insights/adjust",
                json={"date": "2024-11-06", "delta": 7},
                headers=ops,
            ),
            200,
            "usage.adjust",
            "account:acme",
            None,
            {"service": "insights", "date": "2024-11-06", "used": 7, "delta": 7},
        ),
        (
            lambda: client.put(f"{acme}/limits/cohort.max_count", json={"usage": 4}, headers=ops),
            200,
            "limit.set",
            "account:acme",
            {"limit": "cohort.max_count", "usage": 0},
            {"limit": "cohort.max_count", "usage": 4},
        ),
        (
            lambda: client.delete(f"/admin/v1/keys/{deployment.key_id}", headers=ops),
            200,
            "key.revoke",
            f"key:{deployment.key_id}",
            {"revoked_at": None},
            {"revoked_at": "2024-11-07T12:00:00Z"},
        ),
    ]
    for change, status, action, target, before, after in cases:
        response = await change()
        entry = await latest(client, target)
        assert entry["action"] == action
        assert entry["actor"] == "ops"
        assert entry["request_id"] == changed(response, status)
        assert entry["at"] == "2024-11-07T12:00:00Z"
        for side, expected in (("before", before), ("after", after)):
            if expected is None:
                assert entry[side] is None, (action, side, entry)
            else:
                shown = {name: entry[side].get(name) for name in expected}
                assert shown == expected, (action, side, entry)


async def test_key_creation_rotation_and_account_life_are_logged(
    client: httpx2.AsyncClient,
) -> None:
    """Creating an account and a key, rotating the key and deleting the account: five entries."""
    await client.post("/admin/v1/plans", json={"id": "free", "quotas": {}}, headers=OPERATOR)
    made = await client.post(
        "/admin/v1/accounts", json={"id": "zeta", "name": "Zeta", "plan": "free"}, headers=OPERATOR
    )
    key = await client.post("/admin/v1/accounts/zeta/keys", json={"name": "k"}, headers=OPERATOR)
    rotated = await client.post(
        f"/admin/v1/keys/{key.json()['id']}/rotate", json={"grace_seconds": 60}, headers=OPERATOR
    )
    deleted = await client.delete("/admin/v1/accounts/zeta", headers=OPERATOR)
    old, new = key.json()["id"], rotated.json()["id"]
    account_log = await entries(client, target="account:zeta")
    assert [(e["action"], e["request_id"]) for e in account_log] == [
        ("account.delete", changed(deleted, 204)),
        ("account.create", changed(made, 201)),
    ]
    assert account_log[0]["before"]["plan"] == "free"
    assert account_log[0]["after"] is None
    old_log = await entries(client, target=f"key:{old}")
    assert [e["action"] for e in old_log] == ["key.rotate", "key.create"]
    assert old_log[0]["before"]["replaced_by"] is None
    assert old_log[0]["after"]["replaced_by"] == new
    assert old_log[0]["after"]["expires_at"] == "2024-11-07T12:01:00Z"
    new_log = await entries(client, target=f"key:{new}")
    assert [(e["action"], e["request_id"]) for e in new_log] == [
        ("key.create", changed(rotated, 201))
    ]
    assert all(e["actor"] == "bootstrap" for e in account_log + old_log + new_log)


async def test_token_creation_and_revocation_are_logged(client: httpx2.AsyncClient) -> None:
    """Tokens are records too: created and revoked, each with an entry (never the token)."""
    created = await new_token(client, "robot", "verify")
    revoked = await client.delete(f"/admin/v1/tokens/{created['id']}", headers=OPERATOR)
    log = await entries(client, target=f"token:{created['id']}")
    assert [(e["action"], e["request_id"]) for e in log] == [
        ("token.revoke", changed(revoked)),
        ("token.create", log[1]["request_id"]),
    ]
    assert log[1]["after"] == {
        "id": created["id"],
        "name": "robot",
        "role": "verify",
        "hint": created["hint"],
        "revoked_at": None,
    }
    assert log[0]["after"]["revoked_at"] == "2024-11-07T12:00:00Z"


async def test_metering_and_refused_changes_are_not_logged(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Verify, events, acquire and release are usage; a refused change changes nothing."""
    before = await entries(client)
    acme = f"/admin/v1/accounts/{deployment.account_id}"
    body = {"key": deployment.key, "service": "insights", "cost": 1}
    event = {
        "id": "e1",
        "account_id": "acme",
        "service": "insights",
        "amount": 2,
        "timestamp": "2024-11-07T10:00:00Z",
    }
    for response in (
        await client.post("/v1/verify", json=body, headers=OPERATOR),
        await client.post("/v1/events", json={"events": [event]}, headers=OPERATOR),
        await client.post(f"{acme}/limits/cohort.max_count/acquire", headers=OPERATOR),
        await client.post(f"{acme}/limits/cohort.max_count/release", headers=OPERATOR),
    ):
        assert response.status_code == 200, response.text
    refused = await client.post(
        "/admin/v1/plans", json={"id": "x", "quotas": {"nope": {"total": 1}}}, headers=OPERATOR
    )
    assert refused.status_code == 400
    assert await entries(client) == before


async def test_no_secret_is_ever_in_the_log(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """No key, token or digest of either appears in any entry, whatever the change."""
    token = (await new_token(client, "auditor", "admin"))["token"]
    rotated = await client.post(
        f"/admin/v1/keys/{deployment.key_id}/rotate",
        json={"grace_seconds": 0},
        headers=bearer(token),
    )
    second = await client.post("/admin/v1/accounts/acme/keys", json={"name": "b"}, headers=OPERATOR)
    await client.delete(f"/admin/v1/keys/{second.json()['id']}", headers=OPERATOR)
    listed = await client.get("/admin/v1/tokens", headers=OPERATOR)
    await client.delete(f"/admin/v1/tokens/{listed.json()['items'][0]['id']}", headers=OPERATOR)
    secrets = [deployment.key, rotated.json()["key"], second.json()["key"], token, ADMIN_TOKEN]
    text = json.dumps(await entries(client))
    assert len(await entries(client)) >= 10
    for secret in secrets:
        assert secret not in text
        assert keys.digest(secret) not in text
        assert secret[:-4] not in text  # not even all but the hint's last four characters


async def test_the_log_pages_newest_first_and_filters(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """Pages of ``limit`` entries, newest first, with no gap or repeat; target, actor and
    since filter, alone or together."""
    reader = bearer((await new_token(client, "reader", "read"))["token"])
    ops = bearer((await new_token(client, "ops", "admin"))["token"])
    for index in range(5):
        clock.advance(minutes=1)
        who = ops if index % 2 else OPERATOR
        response = await client.post("/admin/v1/services", json={"name": f"s{index}"}, headers=who)
        assert response.status_code == 201
    pages, cursor = [], None
    while True:
        params: dict[str, Any] = {"limit": 3} if cursor is None else {"limit": 3, "cursor": cursor}
        answer = (await client.get("/admin/v1/audit", params=params, headers=reader)).json()
        pages.append([e["target"] for e in answer["items"]])
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert [len(page) for page in pages] == [3, 3, 1]
    flat = [target for page in pages for target in page]
    assert flat[:5] == [f"service:s{i}" for i in (4, 3, 2, 1, 0)]
    assert flat[5:] == [flat[5], flat[6]]
    assert {flat[5][:6], flat[6][:6]} == {"token:"}
    assert [e["target"] for e in await entries(client, actor="ops")] == ["service:s3", "service:s1"]
    assert [e["target"] for e in await entries(client, target="service:s2")] == ["service:s2"]
    since = {"since": "2024-11-07T12:03:00Z"}
    assert [e["target"] for e in await entries(client, **since)] == [
        "service:s4",
        "service:s3",
        "service:s2",
    ]
    assert [e["target"] for e in await entries(client, actor="bootstrap", **since)] == [
        "service:s4",
        "service:s2",
    ]
    assert await entries(client, actor="nobody") == []


@pytest.mark.parametrize(
    ("params", "pointer"),
    [
        ({"cursor": "!!!"}, "/query/cursor"),
        ({"since": "2024-11-07T12:00:00"}, "/query/since"),
        ({"since": "yesterday"}, "/query/since"),
        ({"limit": 0}, "/query/limit"),
        ({"limit": 501}, "/query/limit"),
    ],
)
async def test_a_bad_audit_query_is_refused(
    client: httpx2.AsyncClient, params: dict[str, Any], pointer: str
) -> None:
    """A bad cursor, a naive or unreadable instant, a limit out of range: 400 at the field."""
    response = await client.get("/admin/v1/audit", params=params, headers=OPERATOR)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "VALIDATION_FAILED"
    assert pointer in {e["path"] for e in response.json()["validationErrors"]}


async def test_the_actor_of_a_request_does_not_outlive_it(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """A change made in-process after an API call is the embedding program's (``local``)."""
    ops = bearer((await new_token(client, "ops", "admin"))["token"])
    assert (await client.post("/admin/v1/services", json={"name": "a"}, headers=ops)).is_success
    await admin.create_service(ctx, "b", "")
    assert (await latest(client, "service:a"))["actor"] == "ops"
    entry = await latest(client, "service:b")
    assert (entry["actor"], entry["request_id"]) == (audit.LOCAL_ACTOR, None)


def test_cli_changes_are_logged_as_cli(tmp_path: Path) -> None:
    """A CLI command's change names ``cli`` as its actor; ``quotad audit`` shows it."""
    url = f"sqlite:///{tmp_path / 'cli.db'}"
    ok(url, "services", "create", "insights", "--create")
    made = data(url, "tokens", "create", "robot", "--role", "read")
    assert made["token"].startswith("qdtok_")
    assert data(url, "tokens", "list")[0]["name"] == "robot"
    assert "token" not in data(url, "tokens", "list")[0]
    ok(url, "tokens", "revoke", made["id"])
    log = data(url, "audit")["items"]
    assert [(e["action"], e["actor"]) for e in log] == [
        ("token.revoke", "cli"),
        ("token.create", "cli"),
        ("service.create", "cli"),
    ]
    assert made["token"] not in json.dumps(log)
    only = data(url, "audit", "--target", "service:insights")["items"]
    assert [e["action"] for e in only] == ["service.create"]
    paged = data(url, "audit", "--limit", "2")
    assert len(paged["items"]) == 2
    assert paged["next_cursor"] is not None
    rest = data(url, "audit", "--limit", "2", "--cursor", paged["next_cursor"])
    assert [e["action"] for e in rest["items"]] == ["service.create"]


async def test_the_dashboard_shows_an_accounts_changes(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """The account page lists the account's and its keys' entries, with who and what changed."""
    ops = bearer((await new_token(client, "ops", "admin"))["token"])
    await client.patch("/admin/v1/accounts/acme", json={"name": "Acme Two"}, headers=ops)
    await client.post("/admin/v1/services", json={"name": "elsewhere"}, headers=ops)
    assert (await sign_in(client, "dashboard", ADMIN_TOKEN)).status_code == 303
    page = await client.get(f"/dashboard/accounts/{deployment.account_id}")
    assert page.status_code == 200
    section = page.text.split('id="changes"', 1)[1]
    assert "account.update" in section
    assert "name: Acme → Acme Two" in section
    assert "key.create" in section
    assert f"key:{deployment.key_id}" in section
    assert "account.create" in section
    assert "service.create" not in section  # another record's change
    assert section.index("account.update") < section.index("account.create")  # newest first


def test_a_bootstrap_token_reset_is_logged_by_its_hint(tmp_path: Path) -> None:
    """``quotad token reset`` leaves a ``token.reset`` entry of ``token:bootstrap``, by hint only."""
    url = f"sqlite:///{tmp_path / 'reset.db'}"
    ok(url, "migrate")
    printed = ok(url, "token", "reset").stdout
    found = re.findall(r"\bqdop_[0-9A-Za-z]{36}\b", printed)
    assert len(found) == 1, printed
    token = found[0]
    log = data(url, "audit", "--target", "token:bootstrap")["items"]
    assert [(e["action"], e["actor"]) for e in log] == [("token.reset", "cli")]
    assert log[0]["after"] == {"name": "bootstrap", "role": "admin", "hint": f"qdop_…{token[-4:]}"}
    assert token not in json.dumps(log)
    assert keys.digest(token) not in json.dumps(log)


async def test_a_generated_bootstrap_token_is_logged_by_its_hint() -> None:
    """The token generated at first start leaves a ``token.create`` of ``token:bootstrap``."""
    ctx = await node(MemoryStore(), FakeClock(), Monotonic(), admin_token=None)
    token = await auth.ensure_operator_token(ctx)
    assert token is not None
    assert await auth.ensure_operator_token(ctx) is None  # generated once
    log = await audit.entries(ctx, AuditQuery(limit=10))
    assert [(e.action, e.target, e.actor) for e in log] == [
        ("token.create", "token:bootstrap", audit.LOCAL_ACTOR)
    ]
    assert log[0].after == {"name": "bootstrap", "role": "admin", "hint": f"qdop_…{token[-4:]}"}


def test_an_import_is_logged_per_account(tmp_path: Path) -> None:
    """``quotad import`` leaves a ``usage.import`` entry per account: how many rows, which days."""
    url = f"sqlite:///{tmp_path / 'import.db'}"
    ok(url, "services", "create", "insights", "--create")
    ok(url, "plans", "create", "free", "--quota", "insights=10")
    ok(url, "accounts", "create", "--name", "Acme", "--plan", "free", "--id", "acme")
    rows = [
        {"account_id": "acme", "service": "insights", "date": day, "used": 3, "total": 10}
        for day in ("2026-11-02", "2026-11-01")
    ]
    source = tmp_path / "usage.jsonl"
    source.write_text("".join(json.dumps(row) + "\n" for row in rows))
    ok(url, "import", str(source))
    log = data(url, "audit", "--target", "account:acme")["items"]
    assert (log[0]["action"], log[0]["actor"]) == ("usage.import", "cli")
    assert log[0]["after"] == {"rows": 2, "from": "2026-11-01", "to": "2026-11-02"}
