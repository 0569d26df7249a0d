"""Every page of the dashboard and the portal in Chromium, at a phone's and a laptop's width,
in light and dark: no sideways scroll, axis text of 10 px or more, no serious axe-core
finding, ISO dates, and a visible focus on everything the keyboard reaches (issue 18).

The pages are found by following the links of each area from its first page, so a page
added later is checked without being listed here. Screenshots go to ``artifacts/``.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

from tests.browser_fixtures import ARTIFACTS, TOKEN, Seeded

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

pytestmark = pytest.mark.slow

MIN_AXIS_PX = 10
MAX_PAGES = 25
# Links that are downloads or actions, not pages.
NOT_PAGES = re.compile(r"(\.csv|\.json|/logout)(\?|$)")
# A date written any way but ISO 8601: 12/03/2026, 3.12.2026, Dec 3, 3 December.
NOT_ISO = re.compile(
    r"\b\d{1,2}[/.]\d{1,2}[/.]\d{2,4}\b"
    r"|\b(Jan|Feb|Mar|Apr|Jun|Jul|Aug|Sep|Oct|Nov|Dec)[a-z]* \d{1,2}\b"
    r"|\b\d{1,2} (January|February|March|April|June|July|August|September|October|November"
    r"|December)\b"
)
SERIOUS = ("serious", "critical")
# Page kinds the crawl must reach (more are welcome): a page no link leads to is a bug.
EVERY_KIND = {
    "dashboard": {
        "/dashboard",
        "/dashboard/accounts",
        "/dashboard/accounts/*",
        "/dashboard/accounts/*/settings",
        "/dashboard/plans",
        "/dashboard/plans/*",
        "/dashboard/services",
        "/dashboard/webhooks",
        "/dashboard/audit",
    },
    "portal": {"/portal", "/portal/keys", "/portal/alerts", "/portal/webhooks"},
}
# What the keyboard must reach: every visible link, field and button.
CONTROLS = (
    "a[href]:not([hidden]), button:not([disabled]), input:not([type=hidden]):not([disabled]), "
    "select, textarea, summary"
)


def sign_in(page: Page, server: Seeded, area: str) -> None:
    """Sign in to ``area`` (the operator token, or acme's key for the portal)."""
    page.goto(f"{server.base}/{area}/login")
    page.fill("#secret", TOKEN if area == "dashboard" else server.acme_key)
    page.click("#sign-in")
    page.wait_for_url(f"{server.base}/{area}")


def page_kind(path: str) -> str:
    """The page ``path`` is one of: another account's, key's or endpoint's page, or the same
    page with other query parameters, is the same page (checked once)."""
    bare = path.split("?", 1)[0]
    return re.sub(r"/(accounts|keys|webhooks|plans|deliveries)/[^/]+", r"/\1/*", bare)


def pages_of(page: Page, server: Seeded, area: str) -> list[str]:
    """The paths of the area's pages, found by following its links from its first page."""
    seen: list[str] = []
    kinds: set[str] = set()
    queue = [f"/{area}"]
    while queue and len(seen) < MAX_PAGES:
        path = queue.pop(0)
        kind = page_kind(path)
        if kind in kinds:
            continue
        kinds.add(kind)
        response = page.goto(server.base + path)
        assert response is not None, path
        assert response.ok, path
        seen.append(path)
        hrefs = page.eval_on_selector_all(
            "a[href]", "links => links.map(a => a.getAttribute('href'))"
        )
        for href in hrefs:
            if href.startswith(f"/{area}") and not NOT_PAGES.search(href) and href not in seen:
                queue.append(href)
    return seen


@pytest.fixture(scope="module")
def found(server: Seeded, browser: Browser) -> dict[str, list[str]]:
    """Each area's pages."""
    result = {}
    for area in ("dashboard", "portal"):
        context = browser.new_context(viewport={"width": 1366, "height": 900})
        page = context.new_page()
        sign_in(page, server, area)
        result[area] = pages_of(page, server, area)
        context.close()
    return result


@pytest.fixture
def signed_in(
    request: pytest.FixtureRequest, server: Seeded, browser: Browser
) -> Iterator[tuple[Page, str]]:
    """A signed-in page of the area the test names, at its width and colour scheme."""
    area, width, scheme = request.param
    context = browser.new_context(
        viewport={"width": width, "height": 900},
        color_scheme=scheme,
        locale="en-US",  # the locale whose own date format is not ISO
    )
    page = context.new_page()
    page.set_default_timeout(10_000)
    sign_in(page, server, area)
    try:
        yield page, area
    finally:
        context.close()


# Both widths in light, and dark at the phone's width (its colours are the same at any
# width; the full product of the two ran 30 s longer in CI for nothing new).
CASES = [
    (area, width, scheme)
    for area in ("dashboard", "portal")
    for width, scheme in ((390, "light"), (390, "dark"), (1366, "light"))
]


def problems_of(page: Page, path: str) -> list[str]:
    """What is wrong with the page on screen."""
    found: list[str] = []
    overflow = page.evaluate(
        "() => document.documentElement.scrollWidth - document.documentElement.clientWidth"
    )
    if overflow > 0:
        found.append(f"{path}: scrolls sideways by {overflow} px")
    smallest = page.evaluate(
        """() => Math.min(Infinity, ...[...document.querySelectorAll('svg text')].map(t => {
              if (t.getClientRects().length === 0) return Infinity;  // not on screen
              const m = t.getScreenCTM();
              const scale = m ? Math.sqrt(Math.abs(m.a * m.d - m.b * m.c)) : 1;  // rotated too
              return parseFloat(getComputedStyle(t).fontSize) * scale;
           }))"""
    )
    if smallest < MIN_AXIS_PX:
        found.append(f"{path}: chart text of {smallest:.1f} px")
    text = page.inner_text("body")
    found += [f"{path}: a date not in ISO 8601: {m.group(0)!r}" for m in NOT_ISO.finditer(text)]
    for field in page.query_selector_all("input[type=date], input[type=datetime-local]"):
        found.append(f"{path}: a {field.get_attribute('type')} input shows the locale's format")
    return found


def axe_findings(page: Page, path: str) -> list[str]:
    """axe-core's serious and critical findings on the page."""
    from axe_playwright_python.sync_playwright import Axe

    results: Any = Axe().run(page)
    return [
        f"{path}: {v['id']} ({v['impact']}): {v['help']} — {[n['target'] for n in v['nodes']][:3]}"
        for v in results.response["violations"]
        if v["impact"] in SERIOUS
    ]


@pytest.mark.parametrize("signed_in", CASES, indirect=True, ids=lambda c: "-".join(map(str, c)))
def test_every_page_fits_reads_and_passes_axe(
    signed_in: tuple[Page, str], found: dict[str, list[str]], server: Seeded
) -> None:
    """Each page of the area: no sideways scroll, chart text >= 10 px, ISO dates, axe clean."""
    page, area = signed_in
    width = page.viewport_size["width"] if page.viewport_size else 0
    problems: list[str] = []
    reached = {page_kind(path) for path in found[area]}
    assert EVERY_KIND[area] <= reached, (EVERY_KIND[area] - reached, found)  # the crawl saw them
    for path in found[area]:
        page.goto(server.base + path)
        scheme = page.evaluate("() => matchMedia('(prefers-color-scheme: dark)').matches")
        name = re.sub(r"[^a-z0-9]+", "-", path.lower()).strip("-")
        page.screenshot(
            path=str(ARTIFACTS / f"quality-{name}-{width}-{'dark' if scheme else 'light'}.png"),
            full_page=True,
        )
        problems += problems_of(page, path)
        problems += axe_findings(page, path)
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize(
    "signed_in", [("dashboard", 1366, "light"), ("portal", 390, "dark")], indirect=True
)
def test_the_keyboard_reaches_every_control_with_a_visible_focus(
    signed_in: tuple[Page, str], found: dict[str, list[str]], server: Seeded
) -> None:
    """Tabbing through each page focuses every link, field and button, each visibly."""
    page, area = signed_in
    problems: list[str] = []
    for path in found[area]:
        page.goto(server.base + path)
        wanted = page.evaluate(f"() => document.querySelectorAll({CONTROLS!r}).length")
        for _ in range(wanted + 5):
            page.keyboard.press("Tab")
            focus = page.evaluate(
                """() => { const e = document.activeElement;
                   if (!e || e === document.body) return null;
                   e.dataset.tabbed = '1';
                   const s = getComputedStyle(e);
                   const ring = s.outlineStyle !== 'none' && parseFloat(s.outlineWidth) > 0;
                   return [e.outerHTML.slice(0, 80), ring || s.boxShadow !== 'none']; }"""
            )
            if focus is not None and not focus[1]:
                problems.append(f"{path}: no visible focus on {focus[0]}")
        missed = page.evaluate(
            f"""() => [...document.querySelectorAll({CONTROLS!r})]
                  .filter(e => !e.dataset.tabbed).map(e => e.outerHTML.slice(0, 80))"""
        )
        problems += [f"{path}: the keyboard never reached {html}" for html in missed]
    assert not problems, "\n".join(problems)


@pytest.mark.parametrize("signed_in", [("dashboard", 1366, "light")], indirect=True)
def test_every_table_downloads_as_csv_and_json_with_what_it_shows(
    signed_in: tuple[Page, str], server: Seeded
) -> None:
    """Each table has CSV and JSON buttons; the files hold its rows as shown, actions left out."""
    page, _area = signed_in
    page.goto(f"{server.base}/dashboard/accounts/acme")
    tables = page.locator("main table").count()
    assert page.locator("button[data-download=csv]").count() == tables
    assert page.locator("button[data-download=json]").count() == tables
    keys = page.locator("#keys")
    bar = page.locator("#keys + p.table-downloads")
    with page.expect_download() as csv_file:
        bar.locator("button[data-download=csv]").click()
    text = Path(csv_file.value.path()).read_text()
    header, *rows = text.splitlines()
    assert "Actions" not in header
    assert header.split(",")[0] == (keys.locator("thead th").first.text_content() or "").strip()
    assert len(rows) == keys.locator("tbody tr").count()
    with page.expect_download() as json_file:
        bar.locator("button[data-download=json]").click()
    items = json.loads(Path(json_file.value.path()).read_text())
    assert len(items) == len(rows)
    assert all("Actions" not in item for item in items)
    chart = page.locator('figure.chart[data-service="insights"]')
    with page.expect_download() as chart_file:
        chart.locator("details + p.table-downloads button[data-download=json]").click()
    days = json.loads(Path(chart_file.value.path()).read_text())
    by_date = {day["Date"]: day for day in days}
    assert server.day(-5) in by_date, days[:3]
    assert by_date[server.day(-5)]["Used"] == "55"
    assert by_date[server.day(-5)]["Total"] == "100"
