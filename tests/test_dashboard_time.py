"""Dashboard v2 "Time": range presets, days at the total that refused calls, refused calls
per day, longer windows drawn, the overview's 30-day trend, and CSV/JSON downloads."""

from __future__ import annotations

import csv
import io
import re
from datetime import UTC, date, datetime
from typing import Any

import httpx2
import orjson
import pytest

from quotad.api.app import create_app
from quotad.dashboard import charts, pages
from quotad.domain.models import UsageDay
from quotad.service.context import Context
from quotad.storage import Stores
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, make_settings, seed
from tests.test_dashboard import adjust, operator_signed_in, sign_in, verify
from tests.test_dashboard_webhooks import token_signed_in

TODAY = "2024-11-07"  # the FakeClock's date
ACCOUNT = "/dashboard/accounts/acme"
BAR = re.compile(
    r'data-date="([^"]+)" data-used="\d+" data-total="\d+" data-remaining="\d+" '
    r'data-refused="(\d+)">\s*<title>[^<]*</title>\s*<rect class="hit"[^>]*/>\s*'
    r'<rect class="([^"]+)"'
)


@pytest.fixture
def ctx(clock: FakeClock) -> Context:
    """Most pages here read through the service layer: a memory store is enough."""
    return Context(Stores.of(MemoryStore()), make_settings("memory://"), clock)


async def windowed_account(http: httpx2.AsyncClient, anchor: int | None = None) -> str:
    """Account ``wide`` on a plan with insights 100/day, 300/week and 1000 per billing
    month; returns its key."""
    response = await http.post("/admin/v1/services", json={"name": "insights"}, headers=OPERATOR)
    assert response.status_code in (201, 409), response.text
    limits = [
        {"window": "day", "total": 100},
        {"window": "week", "total": 300},
        {"window": "month", "total": 1000, "anchor": "billing"},
    ]
    plan = {"id": "plan-wide", "quotas": {"insights": limits}}
    response = await http.post("/admin/v1/plans", json=plan, headers=OPERATOR)
    assert response.status_code == 201, response.text
    body: dict[str, Any] = {"id": "wide", "name": "Wide", "plan": "plan-wide"}
    if anchor is not None:
        body["billing_anchor"] = anchor
    response = await http.post("/admin/v1/accounts", json=body, headers=OPERATOR)
    assert response.status_code == 201, response.text
    response = await http.post("/admin/v1/accounts/wide/keys", json={}, headers=OPERATOR)
    assert response.status_code == 201, response.text
    key: str = response.json()["key"]
    return key


def bar_classes(html: str) -> dict[str, tuple[int, str]]:
    """``{date: (refused, bar class)}`` of the first chart on a page."""
    first = html.split('<figure class="chart"', 2)[1]
    return {day: (int(refused), css) for day, refused, css in BAR.findall(first)}


def presets_of(html: str) -> dict[str, str]:
    """``{preset key: link}`` of the range presets."""
    found = re.findall(r'<a href="([^"]+)" data-preset="([^"]+)"', html)
    return {key: link.replace("&amp;", "&") for link, key in found}


# Presets ------------------------------------------------------------------------------
async def test_presets_link_today_7_30_90_days_month_and_billing_cycle(
    client: httpx2.AsyncClient,
) -> None:
    """The presets are ISO ranges ending today; the cycle starts on the billing anchor."""
    await windowed_account(client, anchor=20)
    await operator_signed_in(client)
    page = await client.get("/dashboard/accounts/wide")
    assert page.status_code == 200
    base = "?start="
    assert presets_of(page.text) == {
        "today": f"{base}{TODAY}&end={TODAY}",
        "7d": f"{base}2024-11-01&end={TODAY}",
        "30d": f"{base}2024-10-09&end={TODAY}",
        "90d": f"{base}2024-08-10&end={TODAY}",
        "month": f"{base}2024-11-01&end={TODAY}",
        "cycle": f"{base}2024-10-20&end={TODAY}",
    }
    # The default range is the 30 days: that preset is the current one.
    assert re.search(r'data-preset="30d" aria-current="true"', page.text)
    assert 'type="text"' in page.text
    assert 'id="start"' in page.text


async def test_following_a_preset_shows_its_range(client: httpx2.AsyncClient) -> None:
    """A preset link is a plain GET: its range fills the From/To fields and is marked."""
    await windowed_account(client, anchor=20)
    await operator_signed_in(client)
    first = await client.get("/dashboard/accounts/wide")
    cycle = await client.get("/dashboard/accounts/wide" + presets_of(first.text)["cycle"])
    assert cycle.status_code == 200
    assert 'id="start" name="start"' in cycle.text
    assert 'value="2024-10-20"' in cycle.text
    assert re.search(r'data-preset="cycle" aria-current="true"', cycle.text)
    assert not re.search(r'data-preset="30d" aria-current', cycle.text)


async def test_the_cycle_preset_follows_a_billing_anchor_past_the_months_end(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """An anchor on the 31st starts February's cycle on its last day, as the limits count."""
    await windowed_account(client, anchor=31)
    clock.advance(days=114)  # 2025-03-01
    await operator_signed_in(client)
    page = await client.get("/dashboard/accounts/wide")
    assert presets_of(page.text)["cycle"] == "?start=2025-02-28&end=2025-03-01"


async def test_portal_has_the_presets_too(client: httpx2.AsyncClient) -> None:
    """The customer's range form offers the same presets, linking to the portal."""
    deployment = await seed(client)
    page = await client.get("/portal/login")
    assert page.status_code == 200
    assert (await sign_in(client, "portal", deployment.key)).status_code == 303
    usage = await client.get("/portal")
    assert usage.status_code == 200
    links = presets_of(usage.text)
    assert links["7d"] == f"?start=2024-11-01&end={TODAY}"
    assert set(links) == {"today", "7d", "30d", "90d", "month", "cycle"}


# Days at the total, refused calls -------------------------------------------------------
async def test_a_day_at_the_total_with_refusals_stands_out(client: httpx2.AsyncClient) -> None:
    """Today at its total of 5 with 2 refused is "full"; a day under it is a plain bar."""
    deployment = await seed(client, total=5)
    await adjust(client, "acme", "insights", "2024-11-05", 3)
    await adjust(client, "acme", "insights", "2024-11-04", 9)  # late events: over
    await verify(client, deployment.key, "insights", 7)
    await operator_signed_in(client)
    page = await client.get(ACCOUNT, params={"start": "2024-11-03", "end": TODAY})
    assert page.status_code == 200
    assert bar_classes(page.text) == {
        "2024-11-03": (0, "bar"),
        "2024-11-04": (0, "bar over"),
        "2024-11-05": (0, "bar"),
        "2024-11-06": (0, "bar"),
        "2024-11-07": (2, "bar full"),
    }
    assert "<title>2024-11-07: used 5 of 5; 2 calls refused</title>" in page.text
    assert "At the total, calls refused" in page.text
    assert 'data-refused="2">2 calls refused in the range' in page.text
    assert (
        '<tr data-date="2024-11-07" class="full"><td>2024-11-07</td><td>5</td><td>5</td>'
        "<td>0</td><td>2</td></tr>"
    ) in page.text


def test_a_day_at_the_total_without_refusals_is_not_full() -> None:
    """Reaching the total exactly with nothing refused is an ordinary day."""
    day = date(2024, 11, 7)
    chart = charts.usage_chart("insights", day, day, [UsageDay(day, 5, 5, 0)])
    assert [bar.state for bar in chart.bars] == [""]
    assert not chart.any_full
    refused = charts.usage_chart("insights", day, day, [UsageDay(day, 5, 5, 1)])
    assert [bar.state for bar in refused.bars] == ["full"]


async def test_a_day_that_spent_its_week_and_refused_stands_out(
    client: httpx2.AsyncClient, clock: FakeClock
) -> None:
    """A week-only service is drawn, "full" when its week ran out and refused; the trend counts it."""
    response = await client.post("/admin/v1/services", json={"name": "insights"}, headers=OPERATOR)
    assert response.status_code == 201, response.text
    plan = {"id": "weekly", "quotas": {"insights": [{"window": "week", "total": 4}]}}
    response = await client.post("/admin/v1/plans", json=plan, headers=OPERATOR)
    assert response.status_code == 201, response.text
    body = {"id": "acme", "name": "Acme", "plan": "weekly"}
    assert (await client.post("/admin/v1/accounts", json=body, headers=OPERATOR)).is_success
    response = await client.post("/admin/v1/accounts/acme/keys", json={}, headers=OPERATOR)
    key = response.json()["key"]
    clock.set(datetime(2024, 11, 5, 12, tzinfo=UTC))  # the same week, two days before
    await verify(client, key, "insights", 3)
    clock.set(datetime(2024, 11, 7, 12, tzinfo=UTC))
    await verify(client, key, "insights", 3)  # 1 granted, 2 refused
    await operator_signed_in(client)
    page = await client.get(ACCOUNT, params={"start": "2024-11-05", "end": TODAY})
    assert bar_classes(page.text) == {
        "2024-11-05": (0, "bar"),
        "2024-11-06": (0, "bar"),
        "2024-11-07": (2, "bar full"),
    }
    assert "Total per week (line)" in page.text
    assert "Daily total (line)" not in page.text
    overview = (await client.get("/dashboard")).text  # the trend counts such services too
    assert f'<tr data-date="{TODAY}" data-granted="1" data-refused="2">' in overview
    assert '<tr data-date="2024-11-05" data-granted="3" data-refused="0">' in overview
    assert 'id="high-use"' not in overview  # no daily quota to be near


async def test_no_refusal_says_so_under_the_chart(client: httpx2.AsyncClient) -> None:
    """A range without refusals says so instead of counting them."""
    deployment = await seed(client)
    await verify(client, deployment.key, "insights", 2)
    await operator_signed_in(client)
    page = await client.get(ACCOUNT)
    assert "No call was refused in the range." in page.text
    assert "bar full" not in page.text


# Longer windows ----------------------------------------------------------------------
async def test_week_and_billing_month_windows_are_drawn_with_their_use(
    client: httpx2.AsyncClient,
) -> None:
    """Each week/month window of the plan is a gauge of its use against its total."""
    key = await windowed_account(client, anchor=20)
    await verify(client, key, "insights", 3)
    await operator_signed_in(client)
    page = await client.get("/dashboard/accounts/wide")
    windows = page.text.split('id="windows"', 1)[1].split("</section>", 1)[0]
    found = re.findall(r'data-name="([^"]+)" data-usage="(\d+)" data-limit="(\d+)"', windows)
    assert found == [("insights.week", "3", "300"), ("insights.month", "3", "1000")]
    assert "insights per month (billing cycle); resets 2024-11-20T00:00:00Z" in windows
    assert "insights per week; resets 2024-11-11T00:00:00Z" in windows


async def test_a_plan_with_daily_quotas_only_has_no_windows_section(
    client: httpx2.AsyncClient,
) -> None:
    """Without week, month or year windows the section is left out."""
    await seed(client)
    await operator_signed_in(client)
    page = await client.get(ACCOUNT)
    assert page.status_code == 200
    assert 'id="windows"' not in page.text


# Overview trend ----------------------------------------------------------------------
async def test_overview_trend_sums_granted_and_refused_per_day(
    client: httpx2.AsyncClient,
) -> None:
    """The overview draws 30 days ending today, with every account's granted and refused."""
    acme = await seed(client, "acme", total=5)
    beta = await seed(client, "beta", total=100)
    await adjust(client, "acme", "insights", "2024-10-20", 4)
    await adjust(client, "beta", "scoring", "2024-10-20", 6)
    await verify(client, acme.key, "insights", 6)  # 5 granted, 1 refused
    await verify(client, beta.key, "insights", 2)
    await operator_signed_in(client)
    page = await client.get("/dashboard")
    assert page.status_code == 200
    rows = re.findall(
        r'<tr data-date="([^"]+)" data-granted="(\d+)" data-refused="(\d+)">', page.text
    )
    assert len(rows) == 30
    assert rows[0][0] == "2024-10-09"
    assert rows[-1][0] == TODAY
    table = {day: (int(granted), int(refused)) for day, granted, refused in rows}
    assert table["2024-10-20"] == (10, 0)
    assert table[TODAY] == (7, 1)
    assert sum(granted for granted, _ in table.values()) == 17
    assert 'id="trend-granted"' in page.text
    assert 'id="trend-refused"' in page.text
    assert "Units granted per day from 2024-10-09 to 2024-11-07: 17 units in 30 days" in page.text
    assert 'href="/dashboard/trend.csv"' in page.text


async def test_overview_without_accounts_still_draws_30_days(
    client: httpx2.AsyncClient,
) -> None:
    """With nothing used, the trend is 30 zero days ending on UTC's today."""
    await operator_signed_in(client)
    page = await client.get("/dashboard")
    assert page.status_code == 200
    assert page.text.count('data-granted="0" data-refused="0"') == 30


async def test_trend_and_refused_days_through_every_store(stores: Stores, clock: FakeClock) -> None:
    """The trend and the per-day refusals read the stored refused counts of each store."""
    ctx = Context(stores, make_settings(stores.url), clock)
    app = create_app(ctx, manage_store=False)
    async with httpx2.AsyncClient(
        transport=httpx2.ASGITransport(app=app), base_url="http://quotad"
    ) as http:
        deployment = await seed(http, total=3)
        await verify(http, deployment.key, "insights", 5)
        trend = await pages.trend(ctx)
        assert (trend.days[-1].day.isoformat(), trend.days[-1].granted) == (TODAY, 3)
        assert trend.days[-1].refused == 2
        account = await ctx.records.get_account("acme")
        assert account is not None
        view = await pages.usage_view(ctx, account, None, None)
        [insights] = [chart for chart in view.charts if chart.service == "insights"]
        assert [(bar.refused, bar.state) for bar in insights.bars][-1] == (2, "full")


def test_series_chart_geometry() -> None:
    """Bars grow with their value; the tallest reaches the top tick; no day, no bars."""
    days = [date(2024, 11, d) for d in (1, 2, 3)]
    chart = charts.series_chart("Calls refused", "calls", list(zip(days, (0, 5, 10), strict=True)))
    heights = [bar.height for bar in chart.bars]
    assert heights[0] == 0
    assert heights[1] * 2 == pytest.approx(heights[2])
    assert chart.y_ticks[-1].label == "10"
    assert chart.bars[2].y == pytest.approx(chart.y_ticks[-1].at)
    assert not charts.series_chart("Calls refused", "calls", []).bars


# Downloads ---------------------------------------------------------------------------
async def test_account_chart_data_downloads_as_csv_and_json(client: httpx2.AsyncClient) -> None:
    """Per service per day: date, used, total and refused, over the page's range."""
    deployment = await seed(client, total=5)
    await adjust(client, "acme", "insights", "2024-11-06", 2)
    await verify(client, deployment.key, "insights", 6)
    await operator_signed_in(client)
    page = await client.get(ACCOUNT, params={"start": "2024-11-06", "end": TODAY})
    assert 'href="/dashboard/accounts/acme/usage.csv?start=2024-11-06&amp;end=2024-11-07"' in (
        page.text
    )
    response = await client.get(
        f"{ACCOUNT}/usage.csv", params={"start": "2024-11-06", "end": TODAY}
    )
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/csv")
    assert (
        'filename="usage-acme-2024-11-06-2024-11-07.csv"'
        in (response.headers["content-disposition"])
    )
    assert list(csv.reader(io.StringIO(response.text))) == [
        ["date", "service", "used", "total", "refused"],
        ["2024-11-06", "insights", "2", "5", "0"],
        ["2024-11-07", "insights", "5", "5", "1"],
    ]
    response = await client.get(
        f"{ACCOUNT}/usage.json", params={"start": "2024-11-06", "end": TODAY}
    )
    assert response.status_code == 200
    assert response.headers["content-type"] == "application/json"
    body = orjson.loads(response.content)
    assert (body["account_id"], body["start"], body["end"]) == ("acme", "2024-11-06", TODAY)
    assert body["rows"][-1] == {
        "date": TODAY,
        "service": "insights",
        "used": 5,
        "total": 5,
        "refused": 1,
    }


async def test_trend_downloads_as_csv_and_json(client: httpx2.AsyncClient) -> None:
    """The overview's 30 days download with granted and refused per day."""
    deployment = await seed(client, total=5)
    await verify(client, deployment.key, "insights", 7)
    await operator_signed_in(client)
    text = (await client.get("/dashboard/trend.csv")).text
    lines = list(csv.reader(io.StringIO(text)))
    assert lines[0] == ["date", "granted", "refused"]
    assert len(lines) == 31
    assert lines[-1] == [TODAY, "5", "2"]
    body = orjson.loads((await client.get("/dashboard/trend.json")).content)
    assert (body["start"], body["end"]) == ("2024-10-09", TODAY)
    assert body["rows"][-1] == {"date": TODAY, "granted": 5, "refused": 2}


async def test_a_read_session_sees_the_trend_and_downloads(client: httpx2.AsyncClient) -> None:
    """Downloads are views: a read token gets them as the admin does."""
    await seed(client)
    await token_signed_in(client, "auditor", "read")
    assert 'id="trend-csv"' in (await client.get("/dashboard")).text
    assert (await client.get("/dashboard/trend.json")).status_code == 200
    assert (await client.get(f"{ACCOUNT}/usage.csv")).status_code == 200


@pytest.mark.parametrize(
    "path", ["/dashboard/trend.csv", "/dashboard/trend.json", f"{ACCOUNT}/usage.csv"]
)
async def test_downloads_need_a_session(client: httpx2.AsyncClient, path: str) -> None:
    """Without a session a download redirects to sign-in and leaks nothing."""
    await seed(client)
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"


async def test_bad_downloads_are_refused_in_words(client: httpx2.AsyncClient) -> None:
    """A wrong range is a 400 saying why; an unknown format or account is a 404."""
    await seed(client)
    await operator_signed_in(client)
    wrong = await client.get(f"{ACCOUNT}/usage.csv", params={"start": "2024-01-01"})
    assert wrong.status_code == 400
    assert "at most 90 days" in wrong.text
    assert (await client.get(f"{ACCOUNT}/usage.xml")).status_code == 404
    assert (await client.get("/dashboard/trend.xml")).status_code == 404
    missing = await client.get("/dashboard/accounts/nobody/usage.json")
    assert missing.status_code == 404
    assert "There is no account" in missing.text
