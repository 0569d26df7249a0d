"""The credits routes (SPEC 10): grants, the balance, the ledger, voids, prices, refills."""

from __future__ import annotations

from typing import Any

import httpx2
import pytest

from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment
from tests.test_roles import bearer, new_token

with_cluster = False
BASE = "/admin/v1/accounts/acme"


async def grant(client: httpx2.AsyncClient, **body: Any) -> httpx2.Response:
    """POST a grant to acme as the operator."""
    return await client.post(f"{BASE}/grants", json=body, headers=OPERATOR)


async def test_grant_list_ledger_and_void(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A grant answers 201 with its view, shows in the balance and ledger; a void empties it."""
    made = await grant(client, amount=12.5, expires_at="2030-01-01T00:00:00Z", priority=3, note="n")
    assert made.status_code == 201, made.text
    body = made.json()
    assert body["amount"] == 12.5
    assert body["remaining"] == 12.5
    assert body["expires_at"] == "2030-01-01T00:00:00Z"
    assert (body["priority"], body["note"], body["kind"], body["voided_at"]) == (
        3,
        "n",
        "grant",
        None,
    )
    listed = (await client.get(f"{BASE}/credits", headers=OPERATOR)).json()
    assert listed == {"balance": 12.5, "grants": [body]}
    ledger = (await client.get(f"{BASE}/credits/ledger", headers=OPERATOR)).json()
    assert ledger["next_cursor"] is None
    assert [(e["kind"], e["amount"], e["balance_after"]) for e in ledger["items"]] == [
        ("grant", 12.5, 12.5)
    ]
    assert set(ledger["items"][0]) == {"id", "at", "kind", "grant_id", "amount", "balance_after"}
    voided = await client.delete(f"{BASE}/grants/{body['id']}", headers=OPERATOR)
    assert voided.status_code == 200, voided.text
    assert voided.json()["remaining"] == 0
    assert voided.json()["voided_at"] is not None
    listed = (await client.get(f"{BASE}/credits", headers=OPERATOR)).json()
    assert listed["balance"] == 0
    ledger = (await client.get(f"{BASE}/credits/ledger", headers=OPERATOR)).json()
    assert [e["kind"] for e in ledger["items"]] == ["grant", "void"]
    assert ledger["items"][-1]["balance_after"] == 0


async def test_the_ledger_pages(client: httpx2.AsyncClient, deployment: Deployment) -> None:
    """The ledger pages with limit and next_cursor, each entry once."""
    for amount in (1, 2, 3):
        assert (await grant(client, amount=amount)).status_code == 201
    first = (await client.get(f"{BASE}/credits/ledger?limit=2", headers=OPERATOR)).json()
    assert len(first["items"]) == 2
    assert first["next_cursor"]
    rest = await client.get(
        f"{BASE}/credits/ledger",
        params={"limit": 2, "cursor": first["next_cursor"]},
        headers=OPERATOR,
    )
    items = first["items"] + rest.json()["items"]
    assert len({e["id"] for e in items}) == 3
    assert items[-1]["balance_after"] == 6
    assert rest.json()["next_cursor"] is None


@pytest.mark.parametrize(
    ("body", "path"),
    [
        ({"amount": 0}, "/body/amount"),
        ({"amount": -1}, "/body/amount"),
        ({"amount": 0.0000001}, "/body/amount"),
        ({"amount": "5"}, "/body/amount"),
        ({"amount": 1, "expires_at": "2020-01-01T00:00:00Z"}, "/body/expires_at"),
        ({"amount": 1, "priority": 1001}, "/body/priority"),
        ({"amount": 1, "note": "x" * 501}, "/body/note"),
        ({}, "/body/amount"),
    ],
)
async def test_a_bad_grant_is_refused_and_changes_nothing(
    client: httpx2.AsyncClient, deployment: Deployment, body: dict[str, Any], path: str
) -> None:
    """Zero, negative, too precise, past expiry, out-of-range priority: 400 at the field."""
    response = await grant(client, **body)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "VALIDATION_FAILED"
    assert [e["path"] for e in response.json()["validationErrors"]] == [path]
    listed = (await client.get(f"{BASE}/credits", headers=OPERATOR)).json()
    assert listed == {"balance": 0, "grants": []}


async def test_unknown_accounts_and_grants_are_404(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """An unknown account or grant answers 404 NOT_FOUND."""
    for response in (
        await client.post("/admin/v1/accounts/nobody/grants", json={"amount": 1}, headers=OPERATOR),
        await client.get("/admin/v1/accounts/nobody/credits", headers=OPERATOR),
        await client.get("/admin/v1/accounts/nobody/credits/ledger", headers=OPERATOR),
        await client.delete(f"{BASE}/grants/gr_nothing", headers=OPERATOR),
    ):
        assert response.status_code == 404, response.text
        assert response.json()["error"] == "NOT_FOUND"


async def test_reads_need_read_and_writes_admin(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A read token lists the balance and ledger but may not grant or void (403)."""
    reader = bearer((await new_token(client, "reader", "read"))["token"])
    assert (await client.get(f"{BASE}/credits", headers=reader)).status_code == 200
    assert (await client.get(f"{BASE}/credits/ledger", headers=reader)).status_code == 200
    refused = await client.post(f"{BASE}/grants", json={"amount": 1}, headers=reader)
    assert refused.status_code == 403
    made = (await grant(client, amount=1)).json()
    assert (await client.delete(f"{BASE}/grants/{made['id']}", headers=reader)).status_code == 403
    verifier = bearer((await new_token(client, "verifier", "verify"))["token"])
    assert (await client.get(f"{BASE}/credits", headers=verifier)).status_code == 403


async def test_grants_and_voids_are_audited(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A grant and a void each write an audit entry on the account."""
    made = (await grant(client, amount=2)).json()
    await client.delete(f"{BASE}/grants/{made['id']}", headers=OPERATOR)
    log = (
        await client.get("/admin/v1/audit", params={"target": "account:acme"}, headers=OPERATOR)
    ).json()["items"]
    actions = {entry["action"]: entry for entry in log}
    assert actions["credits.grant"]["after"]["amount"] == 2
    assert actions["credits.void"]["before"]["voided_at"] is None
    assert actions["credits.void"]["after"]["voided_at"] is not None


async def test_a_grant_under_an_idempotency_key_is_made_once(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A grant sent twice with one Idempotency-Key answers the same grant both times, and
    the balance, the ledger and the audit log hold it once; the key with another amount is
    409 and a malformed key 400, and neither grants anything. Another key grants anew."""
    keyed = {**OPERATOR, "Idempotency-Key": "payment-pi_3Nx"}
    body = {"amount": 5, "expires_at": "2030-01-01T01:00:00+01:00", "note": "top-up"}
    first = await client.post(f"{BASE}/grants", json=body, headers=keyed)
    again = await client.post(f"{BASE}/grants", json=body, headers=keyed)
    assert (first.status_code, again.status_code) == (201, 201), again.text
    assert first.json() == again.json()
    reused = await client.post(f"{BASE}/grants", json={**body, "amount": 6}, headers=keyed)
    assert (reused.status_code, reused.json()["error"]) == (409, "CONFLICT")
    malformed = {**OPERATOR, "Idempotency-Key": "two words"}
    refused = await client.post(f"{BASE}/grants", json=body, headers=malformed)
    assert (refused.status_code, refused.json()["error"]) == (400, "VALIDATION_FAILED")
    assert (await client.get(f"{BASE}/credits", headers=OPERATOR)).json()["balance"] == 5
    other = {**OPERATOR, "Idempotency-Key": "payment-pi_4Qy"}
    assert (await client.post(f"{BASE}/grants", json=body, headers=other)).status_code == 201
    assert (await client.get(f"{BASE}/credits", headers=OPERATOR)).json()["balance"] == 10
    ledger = (await client.get(f"{BASE}/credits/ledger", headers=OPERATOR)).json()["items"]
    assert [e["kind"] for e in ledger] == ["grant", "grant"]
    log = (
        await client.get("/admin/v1/audit", params={"target": "account:acme"}, headers=OPERATOR)
    ).json()["items"]
    assert [entry["action"] for entry in log].count("credits.grant") == 2


async def test_a_service_price_is_set_changed_and_removed(client: httpx2.AsyncClient) -> None:
    """credit_price on create and PATCH: shown back, null unprices, bad values refused."""
    made = await client.post(
        "/admin/v1/services", json={"name": "gen", "credit_price": 0.002}, headers=OPERATOR
    )
    assert made.status_code == 201, made.text
    assert made.json()["credit_price"] == 0.002
    patched = await client.patch(
        "/admin/v1/services/gen", json={"credit_price": 3}, headers=OPERATOR
    )
    assert patched.json()["credit_price"] == 3
    kept = await client.patch("/admin/v1/services/gen", json={"description": "d"}, headers=OPERATOR)
    assert (kept.json()["credit_price"], kept.json()["description"]) == (3, "d")
    for bad in (0, -1, 0.0000001, "1"):
        refused = await client.patch(
            "/admin/v1/services/gen", json={"credit_price": bad}, headers=OPERATOR
        )
        assert refused.status_code == 400, refused.text
        assert refused.json()["validationErrors"][0]["path"] == "/body/credit_price"
    cleared = await client.patch(
        "/admin/v1/services/gen", json={"credit_price": None}, headers=OPERATOR
    )
    assert cleared.json()["credit_price"] is None
    listed = (await client.get("/admin/v1/services", headers=OPERATOR)).json()["items"]
    assert [s["credit_price"] for s in listed if s["name"] == "gen"] == [None]
    missing = await client.patch("/admin/v1/services/nope", json={}, headers=OPERATOR)
    assert missing.status_code == 404


async def test_a_plan_refill_is_stored_and_shown(client: httpx2.AsyncClient) -> None:
    """A plan's refill is shown back on create, read and replace; a bad one is refused."""
    refill = {"amount": 100, "window": "month", "anchor": "billing", "mode": "top_up"}
    made = await client.post(
        "/admin/v1/plans", json={"id": "paid", "refill": refill}, headers=OPERATOR
    )
    assert made.status_code == 201, made.text
    assert made.json()["refill"] == refill
    read = (await client.get("/admin/v1/plans/paid", headers=OPERATOR)).json()
    assert read["refill"] == refill
    replaced = await client.put(
        "/admin/v1/plans/paid", json={"refill": {"amount": 5, "window": "day"}}, headers=OPERATOR
    )
    assert replaced.json()["refill"] == {"amount": 5, "window": "day", "mode": "reset"}
    bad = await client.put(
        "/admin/v1/plans/paid",
        json={"refill": {"amount": 0, "window": "fortnight"}},
        headers=OPERATOR,
    )
    assert bad.status_code == 400
    paths = {e["path"] for e in bad.json()["validationErrors"]}
    assert paths == {"/body/refill/amount", "/body/refill/window"}
    unchanged = (await client.get("/admin/v1/plans/paid", headers=OPERATOR)).json()
    assert unchanged["refill"]["amount"] == 5


async def test_a_refill_of_the_wrong_types_is_a_400_not_a_500(client: httpx2.AsyncClient) -> None:
    """A refill whose mode, window or anchor is an object or a number is a clear 400."""
    refill = {"amount": 1000, "anchor": {}, "mode": {}, "window": [1]}
    answer = await client.post(
        "/admin/v1/plans", json={"id": "odd", "refill": refill}, headers=OPERATOR
    )
    assert answer.status_code == 400, answer.text
    paths = {e["path"] for e in answer.json()["validationErrors"]}
    assert paths == {"/body/refill/anchor", "/body/refill/mode", "/body/refill/window"}
    assert (await client.get("/admin/v1/plans/odd", headers=OPERATOR)).status_code == 404


async def test_a_grant_expiring_in_the_past_by_the_clock_is_refused(
    client: httpx2.AsyncClient, deployment: Deployment, clock: FakeClock
) -> None:
    """An expiry one second before the server's now is refused at /body/expires_at."""
    past = clock.now().replace(microsecond=0).isoformat().replace("+00:00", "Z")
    response = await grant(client, amount=1, expires_at=past)
    assert response.status_code == 400
    assert response.json()["validationErrors"][0]["path"] == "/body/expires_at"
