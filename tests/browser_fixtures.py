"""Browser fixtures: a seeded ``quotad serve`` (SQLite) and Debian's Chromium through
Playwright, shared by the browser test modules (each module gets its own server)."""

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

from tests.processes import BIN, ROOT, running
from tests.servers import unavailable
from tests.test_race import noon_zone

if TYPE_CHECKING:
    from playwright.sync_api import Browser, Page

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
