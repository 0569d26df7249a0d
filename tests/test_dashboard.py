"""The operator dashboard and the customer portal, in-process: sessions, CSRF, pages, isolation."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from datetime import date
from pathlib import Path

import httpx2
import orjson
import pytest
import structlog

from quotad import dashboard
from quotad.dashboard import charts, pages, web
from quotad.dashboard.sessions import COOKIE_NAMES
from quotad.domain.models import UsageDay
from quotad.errors import StorageError
from quotad.service.context import Context
from quotad.storage import Stores
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import ADMIN_TOKEN, OPERATOR, Deployment, make_settings, seed

CSRF = re.compile(r'name="csrf" value="([^"]+)"')
KEY = re.compile(r'<code id="new-key" class="key">([^<]+)</code>')
PACKAGE = Path(charts.__file__).parent
TODAY = "2024-11-07"  # the FakeClock's date


@pytest.fixture
def ctx(clock: FakeClock) -> Context:
    """The dashboard reads through the service layer: a memory store is enough here."""
    return Context(Stores.of(MemoryStore()), make_settings("memory://"), clock)


def csrf_of(html: str) -> str:
    """The CSRF token of the first form on a page."""
    match = CSRF.search(html)
    assert match is not None, html
    return match.group(1)


async def sign_in(http: httpx2.AsyncClient, area: str, secret: str) -> httpx2.Response:
    """Open the area's sign-in form and submit ``secret`` with its CSRF token."""
    page = await http.get(f"/{area}/login")
    assert page.status_code == 200
    return await http.post(f"/{area}/login", data={"csrf": csrf_of(page.text), "secret": secret})


async def operator_signed_in(http: httpx2.AsyncClient) -> None:
    """Sign the client in as the operator."""
    response = await sign_in(http, "dashboard", ADMIN_TOKEN)
    assert response.status_code == 303, response.text
    assert response.headers["location"] == "/dashboard"


async def verify(http: httpx2.AsyncClient, key: str, service: str, times: int) -> None:
    """``times`` verify-and-consume calls of cost 1."""
    body = {"key": key, "service": service, "cost": 1}
    for _ in range(times):
        response = await http.post("/v1/verify", json=body, headers=OPERATOR)
        assert response.status_code == 200, response.text


async def adjust(
    http: httpx2.AsyncClient, account: str, service: str, day: str, delta: int
) -> None:
    """Add ``delta`` to a past day over the admin API."""
    response = await http.post(
        f"/admin/v1/accounts/{account}/usage/{service}/adjust",
        json={"date": day, "delta": delta},
        headers=OPERATOR,
    )
    assert response.status_code == 200, response.text


def day_groups(html: str) -> dict[str, tuple[int, int]]:
    """``{date: (used, total)}`` from a chart's ``data-*`` attributes (first chart only)."""
    first = html.split("<figure", 2)[1]
    found = re.findall(r'data-date="([^"]+)" data-used="(\d+)" data-total="(\d+)"', first)
    return {day: (int(used), int(total)) for day, used, total in found}


# Authentication and sessions ------------------------------------------------------
@pytest.mark.parametrize(
    "path",
    ["/dashboard", "/dashboard/accounts", "/dashboard/accounts/acme", "/portal"],
)
async def test_pages_need_a_session(client: httpx2.AsyncClient, path: str) -> None:
    """Without a session every page redirects (303) to its area's sign-in form."""
    response = await client.get(path)
    assert response.status_code == 303
    area = path.split("/")[1]
    assert response.headers["location"] == f"/{area}/login"


async def test_session_cookie_is_httponly_strict_scoped_and_signed(
    client: httpx2.AsyncClient,
) -> None:
    """The operator's cookie is HttpOnly, SameSite=Strict, Path=/dashboard; a forged one fails."""
    response = await sign_in(client, "dashboard", ADMIN_TOKEN)
    cookie = response.headers["set-cookie"]
    assert cookie.startswith(f"{COOKIE_NAMES['dashboard']}=")
    flags = {part.strip().lower() for part in cookie.split(";")[1:]}
    assert {"httponly", "samesite=strict", "path=/dashboard"} <= flags
    assert (await client.get("/dashboard")).status_code == 200
    value = client.cookies.get(COOKIE_NAMES["dashboard"])
    assert value is not None
    client.cookies.clear()
    payload, _, signature = value.partition(".")
    forged = payload + "." + signature[::-1]
    client.cookies.set(COOKIE_NAMES["dashboard"], forged, path="/dashboard")
    assert (await client.get("/dashboard")).status_code == 303


async def test_wrong_operator_token_is_refused(client: httpx2.AsyncClient) -> None:
    """A wrong token answers 401 with the form again and starts no session."""
    response = await sign_in(client, "dashboard", "not-the-token")
    assert response.status_code == 401
    assert "not valid" in response.text
    assert (await client.get("/dashboard")).status_code == 303


async def test_sign_in_without_csrf_token_is_refused(client: httpx2.AsyncClient) -> None:
    """A sign-in form posted without its CSRF token (or with another) is refused with 403."""
    await client.get("/dashboard/login")
    for form in ({"secret": ADMIN_TOKEN}, {"secret": ADMIN_TOKEN, "csrf": "forged"}):
        response = await client.post("/dashboard/login", data=form)
        assert response.status_code == 403
    assert (await client.get("/dashboard")).status_code == 303


async def test_key_actions_need_the_csrf_token(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """Creating, revoking or rotating a key with a wrong CSRF token is 403 and changes nothing."""
    await operator_signed_in(client)
    base = "/dashboard/accounts/acme/keys"
    for path in (base, f"{base}/{deployment.key_id}/revoke", f"{base}/{deployment.key_id}/rotate"):
        response = await client.post(path, data={"csrf": "forged", "name": "x"})
        assert response.status_code == 403, path
        assert "Form refused" in response.text
    keys = (await client.get("/admin/v1/accounts/acme/keys", headers=OPERATOR)).json()
    assert [(k["id"], k["status"]) for k in keys["items"]] == [(deployment.key_id, "active")]


async def test_json_posts_need_the_csrf_token_too(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A JSON body (not a form) is no way around the CSRF check."""
    del deployment
    await operator_signed_in(client)
    response = await client.post("/dashboard/accounts/acme/keys", json={"name": "x"})
    assert response.status_code == 403


async def test_sign_out_ends_the_session(client: httpx2.AsyncClient) -> None:
    """Signing out clears the cookie; pages redirect to sign-in again."""
    await operator_signed_in(client)
    page = await client.get("/dashboard")
    response = await client.post("/dashboard/logout", data={"csrf": csrf_of(page.text)})
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login?signed_out=1"
    assert "Max-Age=0" in response.headers["set-cookie"]
    assert (await client.get("/dashboard")).status_code == 303
    assert "You are signed out." in (await client.get("/dashboard/login?signed_out=1")).text


# Pages ---------------------------------------------------------------------------
async def test_overview_counts_today_per_service(client: httpx2.AsyncClient) -> None:
    """The overview sums today's granted and refused calls per service, lists hot and top accounts."""
    acme = await seed(client, "acme", total=250)
    beta = await seed(client, "beta", total=5)
    await verify(client, acme.key, "insights", 3)
    await verify(client, acme.key, "scoring", 2)
    await verify(client, beta.key, "insights", 7)  # 5 granted, 2 refused
    await adjust(client, "acme", "insights", "2024-11-06", 100)  # yesterday: not today
    await operator_signed_in(client)
    page = (await client.get("/dashboard")).text
    rows = re.findall(r'data-service="(\w+)" data-granted="(\d+)" data-refused="(\d+)"', page)
    assert rows == [("insights", "8", "2"), ("scoring", "2", "0")]
    high = re.findall(r'<tr data-account="(\w+)" data-service="(\w+)">', page)
    assert high == [("beta", "insights")]
    top = re.findall(r'<tr data-account="(\w+)" data-used="(\d+)">', page)
    assert top == [("beta", "5"), ("acme", "5")]


async def test_accounts_list_searches_ids_and_names(client: httpx2.AsyncClient) -> None:
    """The accounts list shows every account, or those whose id or name matches the search."""
    for name in ("acme", "beta", "acmeish"):
        await seed(client, name)
    await operator_signed_in(client)
    everyone = (await client.get("/dashboard/accounts")).text
    assert re.findall(r'<tr data-account="(\w+)">', everyone) == ["acme", "acmeish", "beta"]
    found = (await client.get("/dashboard/accounts", params={"q": "ACM"})).text
    assert re.findall(r'<tr data-account="(\w+)">', found) == ["acme", "acmeish"]
    none = (await client.get("/dashboard/accounts", params={"q": "zzz"})).text
    assert "No account matches" in none


async def test_account_chart_shows_used_and_total_per_day(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """The account page's chart has one day per date of the range, with used and total."""
    await adjust(client, "acme", "insights", "2024-11-05", 40)
    await adjust(client, "acme", "insights", "2024-11-03", 260)  # over the total
    await verify(client, deployment.key, "insights", 2)
    await operator_signed_in(client)
    response = await client.get(
        "/dashboard/accounts/acme", params={"start": "2024-11-01", "end": TODAY}
    )
    assert response.status_code == 200
    days = day_groups(response.text)
    assert days == {
        "2024-11-01": (0, 250),
        "2024-11-02": (0, 250),
        "2024-11-03": (260, 250),
        "2024-11-04": (0, 250),
        "2024-11-05": (40, 250),
        "2024-11-06": (0, 250),
        "2024-11-07": (2, 250),
    }
    assert "<title>2024-11-05: used 40 of 250</title>" in response.text
    assert "Used per day (bars)" in response.text
    assert "Daily total (line)" in response.text
    assert "Over the total" in response.text
    assert "Units per day" in response.text
    assert "Day (UTC)" in response.text


async def test_empty_range_says_so(client: httpx2.AsyncClient, deployment: Deployment) -> None:
    """A range without any use shows a sentence instead of a chart."""
    del deployment
    await operator_signed_in(client)
    page = (await client.get("/dashboard/accounts/acme?start=2024-10-01&end=2024-10-31")).text
    assert "No insights usage between 2024-10-01 and 2024-10-31." in page
    assert "No scoring usage between 2024-10-01 and 2024-10-31." in page
    assert 'class="plot"' not in page


async def test_a_range_past_90_days_is_refused_in_words(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A range the API would refuse is explained, and the last 30 days are shown instead."""
    del deployment
    await operator_signed_in(client)
    page = (await client.get("/dashboard/accounts/acme?start=2024-01-01&end=2024-11-07")).text
    assert "at most 90 days" in page
    assert 'value="2024-10-09"' in page  # the default range starts 29 days before today


async def test_limits_show_as_gauges(client: httpx2.AsyncClient, deployment: Deployment) -> None:
    """Each resource limit is a gauge of its usage against its limit."""
    del deployment
    response = await client.put(
        "/admin/v1/accounts/acme/limits/cohort.max_count", json={"usage": 8}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    await operator_signed_in(client)
    page = (await client.get("/dashboard/accounts/acme")).text
    assert 'data-name="cohort.max_count" data-usage="8" data-limit="10"' in page
    assert "8 of 10 (80%)" in page
    assert "gauge level-high" in page


async def test_unknown_account_is_a_404_page(client: httpx2.AsyncClient) -> None:
    """An account that does not exist answers an HTML 404."""
    await operator_signed_in(client)
    response = await client.get("/dashboard/accounts/nobody")
    assert response.status_code == 404
    assert "There is no account “nobody”." in response.text


async def test_create_revoke_and_rotate_keys(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A new key is shown once and works; revoking stops it; rotating shows the replacement."""
    await operator_signed_in(client)
    page = await client.get("/dashboard/accounts/acme")
    created = await client.post(
        "/dashboard/accounts/acme/keys", data={"csrf": csrf_of(page.text), "name": "ci"}
    )
    assert created.status_code == 201
    match = KEY.search(created.text)
    assert match is not None
    secret = match.group(1)
    usages = await client.get("/v1/usages", headers={"x-api-key": secret})
    assert usages.status_code == 200
    again = (await client.get("/dashboard/accounts/acme")).text
    assert secret not in again
    assert f"…{secret[-4:]}" in again
    row = re.search(
        rf'<tr data-key="(key_\w+)" data-status="active">\s*<td><code>qd_…{secret[-4:]}</code>',
        again,
    )
    assert row is not None
    new_id = row.group(1)

    revoked = await client.post(
        f"/dashboard/accounts/acme/keys/{new_id}/revoke", data={"csrf": csrf_of(again)}
    )
    assert revoked.status_code == 303
    after = (await client.get(revoked.headers["location"])).text
    assert f'<tr data-key="{new_id}" data-status="revoked">' in after
    assert "The key was revoked" in after
    assert (await client.get("/v1/usages", headers={"x-api-key": secret})).status_code == 401

    rotated = await client.post(
        f"/dashboard/accounts/acme/keys/{deployment.key_id}/rotate",
        data={"csrf": csrf_of(after), "grace_seconds": "0"},
    )
    assert rotated.status_code == 201
    replacement = KEY.search(rotated.text)
    assert replacement is not None
    assert (
        await client.get("/v1/usages", headers={"x-api-key": replacement.group(1)})
    ).status_code == 200


async def test_keys_of_another_account_cannot_be_revoked_through_this_one(
    client: httpx2.AsyncClient,
) -> None:
    """Revoking a key under an account it does not belong to is a 404 and changes nothing."""
    await seed(client, "acme")
    beta = await seed(client, "beta")
    await operator_signed_in(client)
    page = (await client.get("/dashboard/accounts/acme")).text
    response = await client.post(
        f"/dashboard/accounts/acme/keys/{beta.key_id}/revoke", data={"csrf": csrf_of(page)}
    )
    assert response.status_code == 404
    assert (await client.get("/v1/usages", headers=beta.bearer)).status_code == 200


# The customer portal -------------------------------------------------------------
async def test_portal_shows_only_the_keys_account(client: httpx2.AsyncClient) -> None:
    """A customer sees its own charts and gauges, never another account's."""
    acme = await seed(client, "acme")
    beta = await seed(client, "beta")
    await adjust(client, "acme", "insights", "2024-11-05", 40)
    await adjust(client, "beta", "insights", "2024-11-05", 99)
    response = await sign_in(client, "portal", acme.key)
    assert response.status_code == 303
    cookie = response.headers["set-cookie"]
    assert "Path=/portal" in cookie
    assert "HttpOnly" in cookie
    assert "SameSite=strict" in cookie
    page = (await client.get("/portal?start=2024-11-01&end=2024-11-07")).text
    assert day_groups(page)["2024-11-05"] == (40, 250)
    assert "acme" in page
    assert "beta" not in page.lower()
    assert acme.key not in page
    assert beta.key_id not in page


async def test_portal_session_opens_no_dashboard(client: httpx2.AsyncClient) -> None:
    """A customer's session is no operator session: the dashboard sends it to sign in."""
    acme = await seed(client, "acme")
    await sign_in(client, "portal", acme.key)
    assert (await client.get("/portal")).status_code == 200
    for path in ("/dashboard", "/dashboard/accounts/acme"):
        response = await client.get(path)
        assert response.status_code == 303
        assert response.headers["location"] == "/dashboard/login"


async def test_portal_refuses_bad_keys(client: httpx2.AsyncClient) -> None:
    """Malformed, unknown or operator secrets do not open the portal (401, a sentence why)."""
    await seed(client, "acme")
    malformed = await sign_in(client, "portal", "qd_nope")
    assert malformed.status_code == 401
    assert "not an API key" in malformed.text
    operator = await sign_in(client, "portal", ADMIN_TOKEN)
    assert operator.status_code == 401
    assert (await client.get("/portal")).status_code == 303


async def test_portal_needs_the_usage_read_scope(client: httpx2.AsyncClient) -> None:
    """A key limited to consuming cannot open the portal (403, the missing scope named)."""
    await seed(client, "acme")
    response = await client.post(
        "/admin/v1/accounts/acme/keys",
        json={"name": "consume only", "scopes": ["consume:*"]},
        headers=OPERATOR,
    )
    assert response.status_code == 201, response.text
    refused = await sign_in(client, "portal", response.json()["key"])
    assert refused.status_code == 403
    assert "lacks the scope" in refused.text
    assert (await client.get("/portal")).status_code == 303


async def test_revoking_a_key_ends_its_portal_session(client: httpx2.AsyncClient) -> None:
    """The portal checks the key on every page: once revoked, its session is over."""
    acme = await seed(client, "acme")
    await sign_in(client, "portal", acme.key)
    assert (await client.get("/portal")).status_code == 200
    response = await client.delete(f"/admin/v1/keys/{acme.key_id}", headers=OPERATOR)
    assert response.status_code == 200, response.text
    assert (await client.get("/portal")).status_code == 303


# Packaging and plumbing ----------------------------------------------------------
async def test_dashboard_is_not_in_the_openapi_document(client: httpx2.AsyncClient) -> None:
    """The HTML routes stay out of /openapi.json: the committed document is the API's."""
    paths = orjson.loads((await client.get("/openapi.json")).content)["paths"]
    assert not [p for p in paths if p.startswith(("/dashboard", "/portal"))]


async def test_the_web_ui_serves_the_same_paths_on_its_own(ctx: Context) -> None:
    """``create_app`` is a whole app: alone, it serves the pages at the addresses it has mounted."""
    app = dashboard.create_app(ctx)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as alone:
        assert (await sign_in(alone, "dashboard", ADMIN_TOKEN)).status_code == 303
        assert (await alone.get("/dashboard")).status_code == 200
        assert (await alone.get("/dashboard/static/dashboard.css")).status_code == 200
        assert (await alone.get("/portal")).headers["location"] == "/portal/login"
        assert (await alone.get("/v1/usages")).status_code == 404


async def test_assets_are_served_from_the_package(client: httpx2.AsyncClient) -> None:
    """CSS and JS come from the package itself; no template or asset loads anything remote."""
    for name, kind in (("dashboard.css", "text/css"), ("dashboard.js", "javascript")):
        response = await client.get(f"/dashboard/static/{name}")
        assert response.status_code == 200
        assert kind in response.headers["content-type"]
    for path in [*PACKAGE.glob("templates/*.html"), *PACKAGE.glob("static/*")]:
        text = path.read_text().replace(SVG_NAMESPACE, "")  # a name, never fetched
        assert "http://" not in text, path
        assert "https://" not in text, path


SVG_NAMESPACE = 'xmlns="http://www.w3.org/2000/svg"'


async def test_every_page_names_the_packaged_favicon_and_both_color_schemes(
    client: httpx2.AsyncClient,
) -> None:
    """The favicon is served as SVG, and pages declare light and dark (the CSS follows)."""
    icon = await client.get("/dashboard/static/favicon.svg")
    assert icon.status_code == 200
    assert icon.headers["content-type"].startswith("image/svg+xml")
    for path in ("/dashboard/login", "/portal/login"):
        page = (await client.get(path)).text
        assert '<link rel="icon" href="/dashboard/static/favicon.svg"' in page
        assert '<meta name="color-scheme" content="light dark">' in page
    css = (await client.get("/dashboard/static/dashboard.css")).text
    assert "@media (prefers-color-scheme: dark)" in css


async def test_pages_send_protective_headers(client: httpx2.AsyncClient) -> None:
    """Pages forbid framing, inline scripts and caching."""
    response = await client.get("/dashboard/login")
    assert "script-src 'self'" in response.headers["content-security-policy"]
    assert "frame-ancestors 'none'" in response.headers["content-security-policy"]
    assert response.headers["cache-control"] == "no-store"
    assert response.headers["x-frame-options"] == "DENY"


@pytest.mark.parametrize("declared", [True, False], ids=["content-length", "chunked"])
async def test_oversized_forms_get_a_413_page(client: httpx2.AsyncClient, declared: bool) -> None:
    """A form body past the limit, declared or streamed, is a 413 page; the sign-in never runs."""
    body = ("secret=" + "x" * web.MAX_FORM_BYTES).encode()

    async def chunks() -> AsyncIterator[bytes]:
        for start in range(0, len(body), 4096):
            yield body[start : start + 4096]

    response = await client.post(
        "/dashboard/login",
        content=body if declared else chunks(),
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 413
    assert response.headers["content-type"].startswith("text/html")
    assert "Form too large" in response.text
    assert "at most 64 KiB" in response.text
    # A sign-in that ran would have answered with a fresh pre-session cookie.
    assert client.cookies.get(COOKIE_NAMES["dashboard"]) is None


async def test_a_form_just_under_the_limit_is_read(client: httpx2.AsyncClient) -> None:
    """A form of nearly the limit is read like any other (a wrong secret: 403 for its CSRF)."""
    body = "secret=" + "x" * (web.MAX_FORM_BYTES - 100)
    response = await client.post(
        "/dashboard/login",
        content=body,
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 403
    assert "sign-in form expired" in response.text
    assert client.cookies.get(COOKIE_NAMES["dashboard"]) is not None


async def test_a_form_of_too_many_fields_is_a_400_page(client: httpx2.AsyncClient) -> None:
    """A form with more fields than any page's is refused with a 400 page, and not read."""
    fields = {f"f{n}": "x" for n in range(web.MAX_FORM_FIELDS + 1)}
    response = await client.post("/portal/login", data=fields)
    assert response.status_code == 400
    assert "Too many fields" in response.text
    assert 'class="area-portal"' in response.text


async def test_only_url_encoded_forms_are_read(client: httpx2.AsyncClient) -> None:
    """A multipart body, even with the right CSRF token, is not read as a form (403)."""
    page = await client.get("/dashboard/login")
    response = await client.post(
        "/dashboard/login",
        files={"csrf": (None, csrf_of(page.text)), "secret": (None, ADMIN_TOKEN)},
    )
    assert response.status_code == 403
    assert (await client.get("/dashboard")).status_code == 303


async def test_the_api_still_refuses_form_bodies(client: httpx2.AsyncClient) -> None:
    """Form bodies outside /dashboard and /portal are still refused as not JSON."""
    response = await client.post(
        "/admin/v1/services",
        content="name=x",
        headers={**OPERATOR, "content-type": "application/x-www-form-urlencoded"},
    )
    assert response.status_code == 400
    assert response.json()["error"] == "BAD_REQUEST"


@pytest.mark.parametrize(
    ("path", "area"),
    [
        ("/dashboard/nowhere", "dashboard"),
        ("/dashboard/", "dashboard"),
        ("/dashboard/static", "dashboard"),
        ("/dashboard/static/missing.css", "dashboard"),
        ("/portal/nowhere", "portal"),
    ],
)
async def test_an_unknown_page_is_a_404_page(
    client: httpx2.AsyncClient, path: str, area: str
) -> None:
    """A path under an area that no page serves is the area's HTML 404, never a redirect."""
    response = await client.get(path)
    assert response.status_code == 404
    assert "location" not in response.headers
    assert response.headers["content-type"].startswith("text/html")
    assert "Page not found" in response.text
    assert f'class="area-{area}"' in response.text
    assert response.headers["x-frame-options"] == "DENY"
    if path.endswith("/"):
        assert "ends in a slash" in response.text


async def test_a_method_a_page_does_not_take_is_a_405_page(client: httpx2.AsyncClient) -> None:
    """Posting to a page that only shows, or getting an action, is a 405 page naming the methods."""
    posted = await client.post("/dashboard", data={"csrf": "x"})
    assert posted.status_code == 405
    assert "GET" in posted.headers["allow"]
    assert "cannot be used that way" in posted.text
    fetched = await client.get("/portal/logout")
    assert fetched.status_code == 405
    assert fetched.headers["allow"] == "POST"


async def test_an_overlong_query_is_a_400_page(client: httpx2.AsyncClient) -> None:
    """A search or a date longer than any real one is refused with a 400 page saying which."""
    await operator_signed_in(client)
    response = await client.get("/dashboard/accounts", params={"q": "a" * 201})
    assert response.status_code == 400
    assert "“q” in the address is longer than 200 characters" in response.text
    response = await client.get("/portal", params={"start": "2" * 33})
    assert response.status_code == 400
    assert "“start” in the address is longer than 32 characters" in response.text


async def test_pages_carry_the_request_id_and_are_access_logged(
    client: httpx2.AsyncClient,
) -> None:
    """Every page and form answer has its x-request-id and api-version, and an access line."""
    with structlog.testing.capture_logs(
        processors=[structlog.contextvars.merge_contextvars]
    ) as logs:
        page = await client.get("/dashboard/login")
        posted = await client.post(
            "/dashboard/login", data={"csrf": csrf_of(page.text), "secret": ADMIN_TOKEN}
        )
        missing = await client.get("/portal/nowhere")
    lines = {line["request_id"]: line for line in logs if line["event"] == "request"}
    for response, path in (
        (page, "/dashboard/login"),
        (posted, "/dashboard/login"),
        (missing, "/portal/nowhere"),
    ):
        assert response.headers["api-version"] == "v1"
        line = lines[response.headers["x-request-id"]]
        assert (line["path"], line["status"]) == (path, response.status_code)
    assert ADMIN_TOKEN not in str(logs)


async def test_an_unexpected_error_is_a_500_page_logged_once(
    client: httpx2.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A bug behind a page answers the 500 page with a reference, logged with its traceback."""

    async def broken(ctx: Context) -> None:
        raise RuntimeError("the overview broke")

    monkeypatch.setattr(pages, "overview", broken)
    await operator_signed_in(client)
    with structlog.testing.capture_logs() as logs:
        response = await client.get("/dashboard")
    assert response.status_code == 500
    assert "Something went wrong" in response.text
    assert "the overview broke" not in response.text
    [error] = [line for line in logs if line["event"] == "unexpected error"]
    assert error["error_id"] in response.text
    assert error["exc_info"] is True


async def test_an_unreachable_store_is_a_503_page(
    client: httpx2.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store that cannot be reached answers a 503 page asking to retry, not a traceback."""

    async def unreachable(ctx: Context) -> None:
        raise StorageError("the store is down", retry_after=2)

    monkeypatch.setattr(pages, "overview", unreachable)
    await operator_signed_in(client)
    response = await client.get("/dashboard")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "2"
    assert "Temporarily unavailable" in response.text
    assert "the store is down" not in response.text


# Chart arithmetic ----------------------------------------------------------------
def test_chart_bars_scale_to_a_round_axis() -> None:
    """Bars are proportional to use on an axis rounded up to a 1-2-5 step; over-total days flag."""
    rows = [UsageDay(date(2024, 11, 1), 125, 250), UsageDay(date(2024, 11, 2), 300, 250)]
    chart = charts.usage_chart("insights", date(2024, 11, 1), date(2024, 11, 2), rows)
    assert [tick.label for tick in chart.y_ticks] == ["0", "100", "200", "300"]
    first, second = chart.bars
    assert first.height * 300 == pytest.approx(chart.plot_height * 125, abs=1)
    assert second.height == pytest.approx(chart.plot_height, abs=0.01)
    assert (first.over, second.over) == (False, True)
    assert chart.any_over
    assert [tick.label for tick in chart.x_ticks] == ["2024-11-01", "2024-11-02"]


def test_chart_labels_at_most_eight_dates() -> None:
    """A 90-day range labels at most eight dates on its axis."""
    start = date(2024, 8, 10)
    rows = [UsageDay(date.fromordinal(start.toordinal() + n), n, 100) for n in range(90)]
    chart = charts.usage_chart("insights", rows[0].day, rows[-1].day, rows)
    assert 2 <= len(chart.x_ticks) <= charts.MAX_X_LABELS
    assert len(chart.bars) == 90


def test_empty_chart_has_a_sentence() -> None:
    """A chart of no rows is empty and says which service and dates."""
    chart = charts.usage_chart("insights", date(2024, 11, 1), date(2024, 11, 7), [])
    assert chart.empty
    assert chart.summary == "No insights usage between 2024-11-01 and 2024-11-07."


@pytest.mark.parametrize(
    ("usage", "limit", "level", "percent"),
    [(0, 10, "ok", 0), (8, 10, "high", 80), (10, 10, "full", 100), (3, 0, "full", 100)],
)
def test_gauge_levels(usage: int, limit: int, level: str, percent: int) -> None:
    """Gauges turn 'high' at 80 % and 'full' at 100 % (a zero limit with use is full)."""
    gauge = charts.Gauge("cohort.max_count", "", usage, limit)
    assert (gauge.level, gauge.percent) == (level, percent)
