"""The dashboard and the portal in a real browser: Debian's Chromium driven by Playwright.

A real ``quotad serve`` (SQLite) is seeded over the admin API with known numbers; the
tests sign in, read the charts' numbers from the page, manage keys and sign out, and
save screenshots under ``artifacts/``. Without Chromium or Playwright they skip (and
fail under ``CI=true``, where ``.ci/run`` installs Chromium).
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

import httpx2
import pytest

from quotad.domain import keys
from tests.browser_fixtures import ARTIFACTS, KEY_RE, TOKEN, Seeded

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow


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
