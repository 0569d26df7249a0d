"""The dashboard and the portal in a real browser: Debian's Chromium driven by Playwright.

A real ``quotad serve`` (SQLite) is seeded over the admin API with known numbers; the
tests sign in, read the charts' numbers from the page, manage keys and sign out, and
save screenshots under ``artifacts/``. Without Chromium or Playwright they skip (and
fail under ``CI=true``, where ``.ci/run`` installs Chromium).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any
from zoneinfo import ZoneInfo

import httpx2
import pytest

from quotad.domain import keys
from tests.processes import BIN, ROOT, running
from tests.servers import unavailable
from tests.test_race import noon_zone

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TOKEN = "browser-test-operator-token"
OPERATOR = {"Authorization": f"Bearer {TOKEN}"}
ARTIFACTS = ROOT / "artifacts"
KEY_RE = re.compile(r"^qd_[0-9A-Za-z]{36}$")


@dataclass
class Seeded:
    """The running server and what was put in it."""

    base: str
    today: date
    acme_key: str
    beta_key: str
    log: Path

    def day(self, offset: int) -> str:
        """Today plus ``offset`` days, as YYYY-MM-DD."""
        return (self.today + timedelta(days=offset)).isoformat()


def _post(http: httpx2.Client, path: str, body: dict[str, Any], status: int = 201) -> Any:
    response = http.post(path, json=body)
    assert response.status_code == status, response.text
    return response.json()


def seed(http: httpx2.Client) -> tuple[date, str, str]:
    """Two services, a plan, four accounts, and known use; returns (today, acme key, beta key)."""
    for name in ("insights", "scoring"):
        _post(http, "/admin/v1/services", {"name": name, "description": f"{name} API"})
    limits = [{"name": "cohort.max_count", "description": "Cohorts allowed", "limit": 10}]
    quotas = {"insights": {"total": 100}, "scoring": {"total": 50}}
    _post(http, "/admin/v1/plans", {"id": "pro", "quotas": quotas, "limits": limits})
    zone = noon_zone(datetime.now(UTC))
    for account_id, name in (
        ("acme", "Acme Corp"),
        ("beta", "Beta Labs"),
        ("gamma", "Gamma Works"),
        ("acmeish", "Acme-ish Ltd"),
    ):
        _post(
            http,
            "/admin/v1/accounts",
            {"id": account_id, "name": name, "plan": "pro", "timezone": zone},
        )
    today = datetime.now(ZoneInfo(zone)).date()
    keys = {
        account_id: _post(http, f"/admin/v1/accounts/{account_id}/keys", {"name": "main"})["key"]
        for account_id in ("acme", "beta")
    }
    for account_id, service, offset, delta in (
        ("acme", "insights", -6, 30),
        ("acme", "insights", -5, 55),
        ("acme", "insights", -3, 100),
        ("acme", "insights", -1, 80),
        ("acme", "scoring", -2, 20),
        ("beta", "insights", 0, 95),
        ("beta", "insights", -4, 60),
    ):
        day = (today + timedelta(days=offset)).isoformat()
        path = f"/admin/v1/accounts/{account_id}/usage/{service}/adjust"
        _post(http, path, {"date": day, "delta": delta}, 200)
    for account_id, times in (("acme", 12), ("beta", 7)):  # beta: 5 granted, 2 refused
        for _ in range(times):
            verify = {"key": keys[account_id], "service": "insights", "cost": 1}
            _post(http, "/v1/verify", verify, 200)
    response = http.put("/admin/v1/accounts/acme/limits/cohort.max_count", json={"usage": 7})
    assert response.status_code == 200, response.text
    return today, keys["acme"], keys["beta"]


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """``quotad serve`` on a fresh SQLite file, seeded with known numbers."""
    workdir = tmp_path_factory.mktemp("browser")
    argv = [str(BIN / "quotad"), "serve", "--store", f"sqlite:///{workdir / 'quotad.db'}"]
    env = {"QUOTAD_ADMIN_TOKEN": TOKEN, "QUOTAD_LOG_LEVEL": "info"}
    with running(argv, workdir, "quotad", **env) as process:
        with httpx2.Client(base_url=process.base, headers=OPERATOR) as http:
            today, acme_key, beta_key = seed(http)
        yield Seeded(process.base, today, acme_key, beta_key, process.log)


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    """Headless Debian Chromium (Playwright's own browser download is never used)."""
    if not CHROMIUM.exists():
        unavailable(f"Chromium is not installed at {CHROMIUM}: apt-get install -y chromium")
    try:
        from playwright.sync_api import sync_playwright
    except ImportError:
        unavailable("the playwright package is missing: pip install -e '.[test]'")
    ARTIFACTS.mkdir(exist_ok=True)
    with sync_playwright() as driver:
        launched = driver.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield launched
        finally:
            launched.close()


@pytest.fixture
def page(browser: Browser) -> Iterator[Page]:
    """A page in a fresh browser context (no cookies), closed afterwards."""
    context = browser.new_context(viewport={"width": 1200, "height": 900})
    opened = context.new_page()
    opened.set_default_timeout(10_000)
    opened.on("dialog", lambda dialog: dialog.accept())
    try:
        yield opened
    finally:
        context.close()


def shot(page: Page, name: str) -> None:
    """Save a full-page screenshot as ``artifacts/<name>.png``."""
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def chart_days(page: Page, service: str) -> dict[str, tuple[int, int]]:
    """``{date: (used, total)}`` as the service's chart carries them."""
    days = page.locator(f'figure.chart[data-service="{service}"] g.day')
    found = {}
    for index in range(days.count()):
        item = days.nth(index)
        used, total = item.get_attribute("data-used"), item.get_attribute("data-total")
        assert used is not None
        assert total is not None
        found[str(item.get_attribute("data-date"))] = (int(used), int(total))
    return found


def test_operator_signs_in_reads_charts_manages_keys_and_signs_out(
    server: Seeded, page: Page
) -> None:
    """Sign in, overview numbers, search, an account's chart, create and revoke a key, sign out."""
    page.goto(f"{server.base}/dashboard")
    page.wait_for_url("**/dashboard/login")
    shot(page, "dashboard-login")
    page.fill("#secret", TOKEN)
    page.click("#sign-in")
    page.wait_for_url(f"{server.base}/dashboard")

    insights = page.locator('#services-today tr[data-service="insights"]')
    assert insights.get_attribute("data-granted") == str(12 + 100)
    assert insights.get_attribute("data-refused") == "2"
    assert page.locator('#high-use tr[data-account="beta"]').is_visible()
    top = page.locator("#top-accounts tr[data-account]")
    assert [top.nth(i).get_attribute("data-account") for i in range(top.count())] == [
        "beta",
        "acme",
    ]
    shot(page, "dashboard-overview")

    page.click("nav >> text=Accounts")
    page.fill("#q", "acme")
    page.click("#search")
    rows = page.locator("#accounts tr[data-account]")
    assert [rows.nth(i).get_attribute("data-account") for i in range(rows.count())] == [
        "acme",
        "acmeish",
    ]
    page.click('#accounts a:text-is("acme")')
    page.wait_for_url("**/dashboard/accounts/acme")

    page.fill("#start", server.day(-6))
    page.fill("#end", server.day(0))
    page.click("#show-range")
    page.wait_for_url(re.compile(r".*start=.*"))
    assert chart_days(page, "insights") == {
        server.day(-6): (30, 100),
        server.day(-5): (55, 100),
        server.day(-4): (0, 100),
        server.day(-3): (100, 100),
        server.day(-2): (0, 100),
        server.day(-1): (80, 100),
        server.day(0): (12, 100),
    }
    assert chart_days(page, "scoring")[server.day(-2)] == (20, 50)
    title = page.locator(
        f'figure.chart[data-service="insights"] g.day[data-date="{server.day(-5)}"] title'
    )
    assert title.text_content() == f"{server.day(-5)}: used 55 of 100"
    legend = page.locator('figure.chart[data-service="insights"] .legend')
    assert "Used per day (bars)" in legend.inner_text()
    assert "Daily total (line)" in legend.inner_text()
    gauge = page.locator('.gauge[data-name="cohort.max_count"]')
    assert gauge.get_attribute("data-usage") == "7"
    assert "7 of 10 (70%)" in gauge.inner_text()
    shot(page, "dashboard-account")

    page.fill("#key-name", "from the browser")
    page.click("#create-key")
    secret = page.locator("#new-key").inner_text().strip()
    assert KEY_RE.match(secret)
    shot(page, "dashboard-new-key")
    assert httpx2.get(f"{server.base}/v1/usages", headers={"x-api-key": secret}).status_code == 200
    page.goto(f"{server.base}/dashboard/accounts/acme")
    assert secret not in page.content()
    row = page.locator("#keys tr", has_text=f"…{secret[-4:]}")
    assert row.get_attribute("data-status") == "active"
    row.locator('button[name="revoke"]').click()
    page.wait_for_url(re.compile(r".*notice=revoked"))
    row = page.locator("#keys tr", has_text=f"…{secret[-4:]}")
    assert row.get_attribute("data-status") == "revoked"
    assert httpx2.get(f"{server.base}/v1/usages", headers={"x-api-key": secret}).status_code == 401

    page.click("#sign-out")
    page.wait_for_url("**/dashboard/login?signed_out=1")
    assert "You are signed out." in page.inner_text("main")
    page.goto(f"{server.base}/dashboard/accounts/acme")
    page.wait_for_url("**/dashboard/login")


def test_customer_sees_only_its_own_account(server: Seeded, page: Page) -> None:
    """A customer signed in with acme's key sees acme's charts and gauges, and nothing of beta."""
    page.goto(f"{server.base}/portal")
    page.wait_for_url("**/portal/login")
    page.fill("#secret", keys.generate("qd"))  # well-formed, but nobody's
    page.click("#sign-in")
    assert "not valid" in page.inner_text("main")

    page.fill("#secret", server.acme_key)
    page.click("#sign-in")
    page.wait_for_url(f"{server.base}/portal")
    heading = page.inner_text("h1")
    assert "Acme Corp" in heading
    days = chart_days(page, "insights")
    assert len(days) == 30
    assert days[server.day(-5)] == (55, 100)
    assert days[server.day(0)] == (12, 100)
    gauge = page.locator('.gauge[data-name="cohort.max_count"]')
    assert gauge.get_attribute("data-usage") == "7"
    text = page.content()
    assert "Beta Labs" not in text
    assert "beta" not in text
    assert server.acme_key not in text
    shot(page, "portal")

    page.fill("#start", server.day(-60))
    page.fill("#end", server.day(-40))
    page.click("#show-range")
    page.wait_for_url(re.compile(r".*start=.*"))
    empty = page.locator('figure.chart[data-service="insights"] .empty')
    assert empty.inner_text() == (
        f"No insights usage between {server.day(-60)} and {server.day(-40)}."
    )

    for path in ("/dashboard", "/dashboard/accounts/beta"):
        page.goto(f"{server.base}{path}")
        page.wait_for_url("**/dashboard/login")
    page.goto(f"{server.base}/portal")
    page.click("#sign-out")
    page.wait_for_url("**/portal/login?signed_out=1")


def test_no_secret_reached_the_servers_log(server: Seeded, browser: Browser) -> None:
    """After the browser sessions, the server's log holds neither the keys nor the token."""
    del browser
    log = server.log.read_text()
    assert '"event": "request"' in log
    for secret in (TOKEN, server.acme_key, server.beta_key):
        assert secret not in log
