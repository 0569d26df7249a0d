"""Named operator tokens and their roles (SPEC 12): each role against each kind of route."""

from __future__ import annotations

import itertools
from typing import Any

import httpx2
import pytest

from quotad.api.app import create_app
from quotad.domain import keys
from quotad.domain.operators import Role
from quotad.errors import AuthError
from quotad.sdk import AsyncClient, AuthenticationError, PermissionDeniedError
from quotad.service import auth, tokens
from quotad.service.context import Context
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import ADMIN_TOKEN, OPERATOR, Deployment
from tests.test_dashboard import csrf_of, sign_in
from tests.test_record_cache import TTL, Monotonic, node

_EVENT_IDS = itertools.count()


async def new_token(http: httpx2.AsyncClient, name: str, role: str) -> dict[str, Any]:
    """Create a named token with the bootstrap token; its create answer."""
    response = await http.post(
        "/admin/v1/tokens", json={"name": name, "role": role}, headers=OPERATOR
    )
    assert response.status_code == 201, response.text
    body: dict[str, Any] = response.json()
    return body


def bearer(token: str) -> dict[str, str]:
    """Operator headers carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


async def call_each_kind(
    http: httpx2.AsyncClient, deployment: Deployment, headers: dict[str, str]
) -> dict[str, httpx2.Response]:
    """One call of each kind of route: admin reads, admin writes, verify and events."""
    event = {
        "id": f"ev-{next(_EVENT_IDS)}",
        "account_id": deployment.account_id,
        "service": "insights",
        "amount": 1,
        "timestamp": "2024-11-07T11:00:00Z",
    }
    return {
        "read": await http.get("/admin/v1/accounts", headers=headers),
        "read-audit": await http.get("/admin/v1/audit", headers=headers),
        "read-tokens": await http.get("/admin/v1/tokens", headers=headers),
        "write": await http.post("/admin/v1/services", json={"name": "extra"}, headers=headers),
        "write-token": await http.post(
            "/admin/v1/tokens", json={"name": "made-by-it", "role": "admin"}, headers=headers
        ),
        "verify": await http.post(
            "/v1/verify",
            json={"key": deployment.key, "service": "insights", "cost": 1},
            headers=headers,
        ),
        "events": await http.post("/v1/events", json={"events": [event]}, headers=headers),
    }


ALLOWED = {
    "admin": {"read", "read-audit", "read-tokens", "write", "write-token", "verify", "events"},
    "read": {"read", "read-audit", "read-tokens"},
    "verify": {"verify", "events"},
}


def assert_forbidden(response: httpx2.Response) -> None:
    """A 403 FORBIDDEN in the contract's error shape."""
    assert response.status_code == 403, response.text
    body = response.json()
    assert body["error"] == "FORBIDDEN"
    assert set(body) == {"error", "id", "note", "validationErrors"}
    assert body["validationErrors"] == []


@pytest.mark.parametrize("role", sorted(ALLOWED))
async def test_each_role_reaches_only_its_routes(
    client: httpx2.AsyncClient, deployment: Deployment, role: str
) -> None:
    """A token's role admits its kinds of route and refuses every other one with 403."""
    token = (await new_token(client, f"ops-{role}", role))["token"]
    answers = await call_each_kind(client, deployment, bearer(token))
    for kind, response in answers.items():
        if kind in ALLOWED[role]:
            assert response.status_code in (200, 201), (kind, response.text)
        else:
            assert_forbidden(response)
    services = await client.get("/admin/v1/services", headers=OPERATOR)
    assert ("extra" in services.text) == (role == "admin")  # a refused write changed nothing


async def test_the_bootstrap_token_stays_an_admin(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """The configured operator token reaches every kind of route beside the named ones."""
    await new_token(client, "someone", "read")
    answers = await call_each_kind(client, deployment, OPERATOR)
    assert all(r.status_code in (200, 201) for r in answers.values()), answers


async def test_a_role_is_checked_again_when_the_token_was_accepted_before(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A read token accepted on a GET (and remembered) is still refused by verify."""
    token = (await new_token(client, "reader", "read"))["token"]
    for _ in range(2):
        assert (await client.get("/admin/v1/plans", headers=bearer(token))).status_code == 200
        verify = await client.post(
            "/v1/verify",
            json={"key": deployment.key, "service": "insights", "cost": 1},
            headers=bearer(token),
        )
        assert_forbidden(verify)


async def test_a_revoked_token_gets_401(client: httpx2.AsyncClient, deployment: Deployment) -> None:
    """Once revoked, a token is refused as INVALID_AUTHORIZATION everywhere, at once."""
    created = await new_token(client, "meter", "verify")
    headers = bearer(created["token"])
    body = {"key": deployment.key, "service": "insights", "cost": 1}
    assert (await client.post("/v1/verify", json=body, headers=headers)).status_code == 200
    revoked = await client.delete(f"/admin/v1/tokens/{created['id']}", headers=OPERATOR)
    assert revoked.status_code == 200, revoked.text
    assert revoked.json()["status"] == "revoked"
    for response in (
        await client.post("/v1/verify", json=body, headers=headers),
        await client.get("/admin/v1/accounts", headers=headers),
    ):
        assert response.status_code == 401, response.text
        assert response.json()["error"] == "INVALID_AUTHORIZATION"


async def test_a_token_is_shown_once_and_never_listed(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """The create answer carries the token; the list, its hint only (no token, no digest);
    the store keeps its SHA-256 digest, never the token."""
    created = await new_token(client, "deploy-bot", "admin")
    token = created["token"]
    assert token.startswith("qdtok_")
    assert keys.is_well_formed(token)
    assert created["hint"] == f"qdtok_…{token[-4:]}"
    listed = await client.get("/admin/v1/tokens", headers=OPERATOR)
    assert listed.status_code == 200
    assert [t["name"] for t in listed.json()["items"]] == ["deploy-bot"]
    assert "token" not in listed.json()["items"][0]
    assert token not in listed.text
    assert keys.digest(token) not in listed.text
    stored = await ctx.stores.records.list_operator_tokens()
    assert [t.digest for t in stored] == [keys.digest(token)]
    assert token not in repr(stored)


async def test_a_named_admin_token_can_create_and_revoke_tokens(
    client: httpx2.AsyncClient,
) -> None:
    """An admin token manages tokens; the token it revokes stops working."""
    admin = bearer((await new_token(client, "lead", "admin"))["token"])
    made = await client.post(
        "/admin/v1/tokens", json={"name": "intern", "role": "read"}, headers=admin
    )
    assert made.status_code == 201, made.text
    intern = bearer(made.json()["token"])
    assert (await client.get("/admin/v1/tokens", headers=intern)).status_code == 200
    gone = await client.delete(f"/admin/v1/tokens/{made.json()['id']}", headers=admin)
    assert gone.status_code == 200
    assert (await client.get("/admin/v1/tokens", headers=intern)).status_code == 401


@pytest.mark.parametrize(
    ("body", "pointer"),
    [
        ({"name": "ops", "role": "owner"}, "/body/role"),
        ({"name": "has space", "role": "read"}, "/body/name"),
        ({"name": "cli", "role": "read"}, "/body/name"),
        ({"name": "bootstrap", "role": "admin"}, "/body/name"),
        ({"name": "local", "role": "admin"}, "/body/name"),
        ({"role": "read"}, "/body/name"),
    ],
)
async def test_a_bad_token_request_is_refused_and_creates_nothing(
    client: httpx2.AsyncClient, body: dict[str, str], pointer: str
) -> None:
    """An unknown role, a bad or reserved name: 400 VALIDATION_FAILED at the field."""
    response = await client.post("/admin/v1/tokens", json=body, headers=OPERATOR)
    assert response.status_code == 400, response.text
    assert response.json()["error"] == "VALIDATION_FAILED"
    assert pointer in {e["path"] for e in response.json()["validationErrors"]}
    assert (await client.get("/admin/v1/tokens", headers=OPERATOR)).json()["items"] == []


async def test_a_token_name_is_taken_once(client: httpx2.AsyncClient) -> None:
    """A second token of the same name is a 409 CONFLICT, even once the first is revoked."""
    first = await new_token(client, "ci", "verify")
    await client.delete(f"/admin/v1/tokens/{first['id']}", headers=OPERATOR)
    again = await client.post(
        "/admin/v1/tokens", json={"name": "ci", "role": "read"}, headers=OPERATOR
    )
    assert again.status_code == 409, again.text
    assert again.json()["error"] == "CONFLICT"


async def test_revoking_an_unknown_token_is_404(client: httpx2.AsyncClient) -> None:
    """No such token: 404 NOT_FOUND."""
    response = await client.delete("/admin/v1/tokens/tok_nope", headers=OPERATOR)
    assert response.status_code == 404
    assert response.json()["error"] == "NOT_FOUND"


@pytest.mark.parametrize(
    "token",
    [
        "qdtok_" + "A" * 36,  # the right shape, a wrong checksum
        keys.generate("qdtok"),  # well formed, never issued
        keys.generate("qd"),  # a customer key's shape
    ],
    # Fixed ids: generated tokens differ in each process (pytest-xdist's workers collect
    # the same tests).
    ids=["bad-checksum", "never-issued", "customer-shape"],
)
async def test_an_unknown_operator_token_gets_401(client: httpx2.AsyncClient, token: str) -> None:
    """A token no record stands behind is 401 INVALID_AUTHORIZATION."""
    response = await client.get("/admin/v1/accounts", headers=bearer(token))
    assert response.status_code == 401
    assert response.json()["error"] == "INVALID_AUTHORIZATION"


async def test_a_forbidden_call_does_not_count_as_a_failed_authentication(
    client: httpx2.AsyncClient, ctx: Context
) -> None:
    """A valid token on a route its role lacks is 403, never 429: its token is right."""
    ctx.failures = type(ctx.failures)(1, ctx.monotonic)  # one failure a minute
    headers = bearer((await new_token(client, "looker", "read"))["token"])
    for _ in range(3):
        response = await client.post("/admin/v1/services", json={"name": "x"}, headers=headers)
        assert response.status_code == 403, response.text


# The dashboard ------------------------------------------------------------------------
async def test_a_read_session_sees_no_write_controls_and_its_forged_posts_are_refused(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A read token signs in; the account page has no key forms; a forged POST is 403."""
    token = (await new_token(client, "viewer", "read"))["token"]
    signed = await sign_in(client, "dashboard", token)
    assert signed.status_code == 303, signed.text
    page = await client.get(f"/dashboard/accounts/{deployment.account_id}")
    assert page.status_code == 200
    assert 'id="create-key"' not in page.text
    assert 'name="revoke"' not in page.text
    assert 'name="rotate"' not in page.text
    assert 'id="read-only"' in page.text
    csrf = csrf_of(page.text)  # the sign-out form's: a forged post may well carry it
    base = f"/dashboard/accounts/{deployment.account_id}/keys"
    for path, form in (
        (base, {"csrf": csrf, "name": "forged"}),
        (f"{base}/{deployment.key_id}/revoke", {"csrf": csrf}),
        (f"{base}/{deployment.key_id}/rotate", {"csrf": csrf, "grace_seconds": "0"}),
    ):
        refused = await client.post(path, data=form)
        assert refused.status_code == 403, (path, refused.text)
    listed = await client.get(f"/admin/v1/accounts/{deployment.account_id}/keys", headers=OPERATOR)
    assert [(k["id"], k["status"]) for k in listed.json()["items"]] == [
        (deployment.key_id, "active")
    ]


async def test_an_admin_token_session_changes_keys_under_its_name(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A named admin token's session has the key forms, and its changes name it as actor."""
    token = (await new_token(client, "alice", "admin"))["token"]
    assert (await sign_in(client, "dashboard", token)).status_code == 303
    page = await client.get(f"/dashboard/accounts/{deployment.account_id}")
    assert 'id="create-key"' in page.text
    revoked = await client.post(
        f"/dashboard/accounts/{deployment.account_id}/keys/{deployment.key_id}/revoke",
        data={"csrf": csrf_of(page.text)},
    )
    assert revoked.status_code == 303, revoked.text
    log = await client.get(
        "/admin/v1/audit", params={"target": f"key:{deployment.key_id}"}, headers=OPERATOR
    )
    assert [(e["action"], e["actor"]) for e in log.json()["items"]] == [
        ("key.revoke", "alice"),
        ("key.create", "bootstrap"),
    ]


async def test_a_verify_token_cannot_sign_in_to_the_dashboard(client: httpx2.AsyncClient) -> None:
    """A verify token meters only: the dashboard refuses it (403) and starts no session."""
    token = (await new_token(client, "meter", "verify"))["token"]
    refused = await sign_in(client, "dashboard", token)
    assert refused.status_code == 403
    assert (await client.get("/dashboard")).status_code == 303


async def test_revoking_a_token_ends_its_dashboard_session(client: httpx2.AsyncClient) -> None:
    """A session lives only as long as the token it signed in with."""
    created = await new_token(client, "temp", "read")
    assert (await sign_in(client, "dashboard", created["token"])).status_code == 303
    assert (await client.get("/dashboard")).status_code == 200
    await client.delete(f"/admin/v1/tokens/{created['id']}", headers=OPERATOR)
    gone = await client.get("/dashboard")
    assert gone.status_code == 303
    assert gone.headers["location"] == "/dashboard/login"


# The SDK ------------------------------------------------------------------------------
async def test_the_sdk_manages_tokens_and_reads_the_audit_log(ctx: Context) -> None:
    """create_token (shown once), list_tokens, revoke_token and audit, over the real app."""
    transport = httpx2.ASGITransport(app=create_app(ctx, manage_store=False))
    async with AsyncClient("http://quotad", operator_token=ADMIN_TOKEN, transport=transport) as api:
        issued = await api.create_token("sdk-reader", "read")
        assert issued.token.startswith("qdtok_")
        assert issued.token not in repr(issued)
        listed = await api.list_tokens()
        assert [(t.id, t.name, t.role, t.status) for t in listed] == [
            (issued.id, "sdk-reader", "read", "active")
        ]
        async with AsyncClient(
            "http://quotad", operator_token=issued.token, transport=transport
        ) as reader:
            assert await reader.list_services() == []
            with pytest.raises(PermissionDeniedError):
                await reader.create_service("nope")
            page = await reader.audit(target=f"token:{issued.id}")
            assert [(e.action, e.actor) for e in page.items] == [("token.create", "bootstrap")]
            assert page.items[0].after is not None
            assert page.items[0].after["name"] == "sdk-reader"
            revoked = await api.revoke_token(issued.id)
            assert revoked.status == "revoked"
            with pytest.raises(AuthenticationError):
                await reader.list_services()
        since = await api.audit(actor="bootstrap", since=ctx.clock.now(), limit=1)
        assert [e.action for e in since.items] == ["token.revoke"]
        assert since.next_cursor is not None
        rest = await api.audit(actor="bootstrap", cursor=since.next_cursor)
        assert [e.action for e in rest.items] == ["token.create"]


# Revocation across nodes ----------------------------------------------------------------
async def test_a_token_revoked_through_another_node_is_refused_within_the_cache_ttl() -> None:
    """A node that accepted a token refuses it once its record cache's ttl has passed."""
    shared, clock, monotonic = MemoryStore(), FakeClock(), Monotonic()
    here, there = await node(shared, clock, monotonic), await node(shared, clock, monotonic)
    issued = await tokens.create_token(here, "roamer", Role.VERIFY)
    header = f"Bearer {issued.secret}"
    assert (await auth.authenticate_operator(here, header)).name == "roamer"
    await tokens.revoke_token(there, issued.record.id)
    with pytest.raises(AuthError):  # through the node that revoked it: at once
        await auth.authenticate_operator(there, header)
    monotonic.now += TTL - 0.1
    assert (await auth.authenticate_operator(here, header)).role is Role.VERIFY  # the bound
    monotonic.now += 0.2
    with pytest.raises(AuthError, match="not valid"):
        await auth.authenticate_operator(here, header)
