"""Dashboard and portal sessions end on the server: a copied cookie dies at sign-out, on every node."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx2

from quotad.api.app import create_app
from quotad.dashboard.sessions import COOKIE_NAMES, MAX_AGE_SECONDS
from quotad.service.context import Context
from quotad.storage import Stores, stores_from_url
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import ADMIN_TOKEN, make_settings, seed
from tests.test_dashboard import csrf_of, sign_in


@asynccontextmanager
async def app_client(stores: Stores, clock: FakeClock) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client on a quotad app of its own (a node) over ``stores``."""
    app = create_app(Context(stores, make_settings(stores.url), clock), manage_store=False)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
        yield http


@asynccontextmanager
async def second_node(stores: Stores, clock: FakeClock) -> AsyncIterator[httpx2.AsyncClient]:
    """Another node over the same store: its own connections (memory: the same object)."""
    if isinstance(stores.counters, MemoryStore):
        async with app_client(stores, clock) as http:
            yield http
        return
    other = stores_from_url(stores.url)
    await other.open()
    try:
        async with app_client(other, clock) as http:
            yield http
    finally:
        await other.close()


def copy_cookie(source: httpx2.AsyncClient, target: httpx2.AsyncClient, area: str) -> str:
    """Put ``source``'s session cookie of ``area`` into ``target``; returns the value."""
    value = source.cookies.get(COOKIE_NAMES[area])
    assert value is not None
    target.cookies.set(COOKIE_NAMES[area], value, path=f"/{area}")
    return value


async def sign_out(http: httpx2.AsyncClient, area: str, page_path: str) -> None:
    """Sign out through the form of a signed-in page."""
    page = await http.get(page_path)
    assert page.status_code == 200, page.text
    response = await http.post(f"/{area}/logout", data={"csrf": csrf_of(page.text)})
    assert response.status_code == 303
    assert response.headers["location"] == f"/{area}/login?signed_out=1"


async def test_a_copied_operator_cookie_is_refused_after_sign_out(
    client: httpx2.AsyncClient, stores: Stores, clock: FakeClock
) -> None:
    """After sign-out, a copy of the operator's cookie opens no page and posts no form."""
    await seed(client)
    assert (await sign_in(client, "dashboard", ADMIN_TOKEN)).status_code == 303
    async with app_client(stores, clock) as thief:
        copy_cookie(client, thief, "dashboard")
        page = await thief.get("/dashboard/accounts/acme")
        assert page.status_code == 200
        csrf = csrf_of(page.text)
        await sign_out(client, "dashboard", "/dashboard")
        for path in ("/dashboard", "/dashboard/accounts", "/dashboard/accounts/acme"):
            response = await thief.get(path)
            assert response.status_code == 303, path
            assert response.headers["location"] == "/dashboard/login"
        posted = await thief.post(
            "/dashboard/accounts/acme/keys", data={"csrf": csrf, "name": "stolen"}
        )
        assert posted.status_code == 303
        assert posted.headers["location"] == "/dashboard/login"
    keys = await client.get(
        "/admin/v1/accounts/acme/keys", headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}
    )
    assert [key["name"] for key in keys.json()["items"]] == ["test"]


async def test_a_copied_portal_cookie_is_refused_after_sign_out(
    client: httpx2.AsyncClient, stores: Stores, clock: FakeClock
) -> None:
    """After a customer signs out, a copy of its portal cookie is sent back to sign in."""
    acme = await seed(client)
    assert (await sign_in(client, "portal", acme.key)).status_code == 303
    async with app_client(stores, clock) as thief:
        copy_cookie(client, thief, "portal")
        assert (await thief.get("/portal")).status_code == 200
        await sign_out(client, "portal", "/portal")
        response = await thief.get("/portal")
        assert response.status_code == 303
        assert response.headers["location"] == "/portal/login"
        assert (await thief.get("/portal/login")).status_code == 200  # a fresh sign-in form


async def test_sign_out_on_one_node_ends_the_session_on_another(
    client: httpx2.AsyncClient, stores: Stores, clock: FakeClock
) -> None:
    """Two nodes over one store: a session opened and ended on one is refused by the other."""
    acme = await seed(client)
    assert (await sign_in(client, "dashboard", ADMIN_TOKEN)).status_code == 303
    assert (await sign_in(client, "portal", acme.key)).status_code == 303
    async with second_node(stores, clock) as node_b:
        copy_cookie(client, node_b, "dashboard")
        copy_cookie(client, node_b, "portal")
        assert (await node_b.get("/dashboard")).status_code == 200
        assert (await node_b.get("/portal")).status_code == 200
        await sign_out(client, "dashboard", "/dashboard")
        assert (await node_b.get("/dashboard")).status_code == 303
        assert (await node_b.get("/portal")).status_code == 200  # the other area is untouched
        await sign_out(node_b, "portal", "/portal")
        assert (await client.get("/portal")).status_code == 303


async def test_signing_in_again_keeps_other_sessions(
    client: httpx2.AsyncClient, stores: Stores, clock: FakeClock
) -> None:
    """Each sign-in is its own session: ending one leaves the operator's others open."""
    async with app_client(stores, clock) as laptop:
        assert (await sign_in(client, "dashboard", ADMIN_TOKEN)).status_code == 303
        assert (await sign_in(laptop, "dashboard", ADMIN_TOKEN)).status_code == 303
        await sign_out(client, "dashboard", "/dashboard")
        assert (await laptop.get("/dashboard")).status_code == 200


async def test_a_session_ends_on_the_server_after_eight_hours(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """The server forgets a session after its 8 hours even when the cookie is still sent."""
    assert (await sign_in(client, "dashboard", ADMIN_TOKEN)).status_code == 303
    clock.advance(seconds=MAX_AGE_SECONDS - 60)
    assert (await client.get("/dashboard")).status_code == 200
    clock.advance(seconds=61)
    assert (await client.get("/dashboard")).status_code == 303
