"""Usage data on the command line: export, import (round trip on every store), the chart."""

from __future__ import annotations

import asyncio
import io
import json
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import httpx2
import pytest
from rich.console import Console
from typer.testing import CliRunner

from quotad.api.app import create_app
from quotad.cli import app
from quotad.cli.data import LARGE_FILE_BYTES, import_file
from quotad.domain.models import (
    Account,
    AccountStatus,
    Overrides,
    Plan,
    Quota,
    Service,
    UsageEvent,
)
from quotad.errors import ValidationFailed
from quotad.service.context import Context
from quotad.service.transfer import export_lines, import_lines
from quotad.storage import Stores, stores_from_url
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, create_account, make_settings, store_url

CREATED = datetime(2024, 11, 7, tzinfo=UTC)
DAY = date(2024, 11, 7)
runner = CliRunner()


async def add_records(stores: Stores) -> None:
    """Services insights and scoring, a plan, accounts acme and beta."""
    for name in ("insights", "scoring"):
        await stores.records.create_service(Service(name, "", CREATED))
    quotas = {"insights": Quota.daily(5), "scoring": Quota.daily(100)}
    await stores.records.create_plan(Plan("p", quotas, (), CREATED))
    for account_id in ("acme", "beta"):
        await create_account(
            stores,
            Account(account_id, account_id, "p", "UTC", AccountStatus.ACTIVE, Overrides(), CREATED),
        )


async def add_usage(stores: Stores) -> None:
    """Days with use, refusals, adjustments and late events, on both accounts."""
    for _ in range(7):  # 5 granted, 2 refused
        await stores.counters.consume("acme", "insights", DAY, 1, 5)
    await stores.counters.consume("acme", "scoring", DAY - timedelta(days=1), 40, 100)
    await stores.counters.adjust("acme", "insights", DAY - timedelta(days=30), 3, 5)
    await stores.counters.adjust("beta", "insights", DAY - timedelta(days=2), 9, 7)
    await stores.counters.record_events(
        [UsageEvent("ev-1", "beta", "scoring", 12, DAY, 100, CREATED)]
    )


async def lines_of(stores: Stores, clock: FakeClock) -> list[bytes]:
    """The store's export, line by line."""
    ctx = Context(stores, make_settings(stores.url), clock)
    return [line async for line in export_lines(ctx)]


async def test_export_then_import_into_an_empty_store_gives_the_same_rows(
    stores: Stores, store_kind: str, tmp_path: Path, clock: FakeClock
) -> None:
    """Importing an export into a store without usage reproduces every row; twice changes nothing."""
    await add_records(stores)
    await add_usage(stores)
    exported = await lines_of(stores, clock)
    assert len(exported) == 5
    assert json.loads(exported[0]) == {
        "account_id": "acme",
        "service": "insights",
        "date": "2024-10-08",
        "used": 3,
        "total": 5,
        "rejected": 0,
    }
    with store_url(store_kind, tmp_path / "target") as url:
        target = stores_from_url(url)
        await target.open()
        try:
            await add_records(target)
            ctx = Context(target, make_settings(url), clock)
            outcome = await import_lines(ctx, exported)
            assert (outcome.rows, outcome.accounts) == (5, 2)
            assert await lines_of(target, clock) == exported
            await import_lines(ctx, exported)
            assert await lines_of(target, clock) == exported
        finally:
            await target.close()


async def test_import_replaces_a_live_day(stores: Stores, clock: FakeClock) -> None:
    """An imported day replaces the counter of that day; the next consume continues from it."""
    await add_records(stores)
    await stores.counters.consume("acme", "insights", DAY, 1, 5)
    row = {"account_id": "acme", "service": "insights", "date": DAY.isoformat()}
    line = json.dumps({**row, "used": 3, "total": 5, "rejected": 1}).encode()
    await import_lines(Context(stores, make_settings(stores.url), clock), [line])
    outcome = await stores.counters.consume("acme", "insights", DAY, 1, 5)
    assert (outcome.granted, outcome.used) == (True, 4)


async def test_import_stops_at_the_first_bad_line(stores: Stores, clock: FakeClock) -> None:
    """A bad line is refused with its number; the lines before it are written."""
    await add_records(stores)
    ctx = Context(stores, make_settings(stores.url), clock)
    good = {
        "account_id": "acme",
        "service": "insights",
        "date": "2024-11-01",
        "used": 2,
        "total": 5,
    }
    cases = [
        (b"not json", "/line/2"),
        (json.dumps({**good, "used": -1}).encode(), "/line/2/used"),
        (json.dumps({**good, "date": "2024-02-30"}).encode(), "/line/2/date"),
        (json.dumps({**good, "account_id": "nobody"}).encode(), "/line/2/account_id"),
        (json.dumps({**good, "service": "nope"}).encode(), "/line/2/service"),
    ]
    for bad, path in cases:
        with pytest.raises(ValidationFailed) as raised:
            await import_lines(ctx, [json.dumps(good).encode(), bad])
        assert raised.value.note.startswith("line 2 is not a valid usage row; the 1 rows")
        assert [item.path for item in raised.value.validation_errors] == [path]
    [row] = await stores.counters.usage("acme", "insights", date(2024, 11, 1), date(2024, 11, 1))
    assert (row.used, row.total) == (2, 5)


# The commands ------------------------------------------------------------------------
def sqlite(tmp_path: Path, name: str) -> str:
    """A SQLite store with the records of ``add_records`` (and usage when ``name`` is source)."""
    url = f"sqlite:///{tmp_path / name}.db"

    async def fill() -> None:
        stores = stores_from_url(url)
        await stores.open()
        try:
            await add_records(stores)
            if name == "source":
                await add_usage(stores)
        finally:
            await stores.close()

    asyncio.run(fill())
    return url


def api_export(url: str) -> str:
    """GET /admin/v1/export of an app over ``url``."""

    async def fetch() -> str:
        stores = stores_from_url(url)
        await stores.open()
        try:
            ctx = Context(stores, make_settings(url), FakeClock())
            transport = httpx2.ASGITransport(app=create_app(ctx, manage_store=False))
            async with httpx2.AsyncClient(transport=transport, base_url="http://q") as http:
                response = await http.get("/admin/v1/export", headers=OPERATOR)
                assert response.status_code == 200
                return response.text
        finally:
            await stores.close()

    return asyncio.run(fetch())


def test_export_and_import_commands_round_trip(tmp_path: Path) -> None:
    """`quotad export` writes the API's export rows; `quotad import` of them reproduces them."""
    source, target = sqlite(tmp_path, "source"), sqlite(tmp_path, "target")
    printed = runner.invoke(app, ["export", "--store", source])
    assert printed.exit_code == 0, printed.output
    assert printed.stdout == api_export(source)
    dump = tmp_path / "usage.jsonl"
    written = runner.invoke(app, ["export", "--output", str(dump), "--store", source])
    assert written.exit_code == 0, written.output
    assert "exported 5 usage days" in written.stdout
    assert dump.read_text() == printed.stdout
    loaded = runner.invoke(app, ["import", str(dump), "--store", target])
    assert loaded.exit_code == 0, loaded.output
    assert "imported 5 usage days of 2 accounts" in loaded.stdout
    assert runner.invoke(app, ["export", "--store", target]).stdout == printed.stdout


def test_import_command_reports_the_bad_line(tmp_path: Path) -> None:
    """`quotad import` of a file with an unknown account exits 1 naming the line."""
    target = sqlite(tmp_path, "target")
    dump = tmp_path / "bad.jsonl"
    row = {"account_id": "nobody", "service": "insights", "date": "2024-11-01", "used": 1}
    dump.write_text("\n" + json.dumps({**row, "total": 5}) + "\n")
    result = runner.invoke(app, ["import", str(dump), "--store", target])
    assert result.exit_code == 1
    assert "error VALIDATION_FAILED: line 2" in result.stderr
    assert "account 'nobody' does not exist" in result.stderr


async def test_large_imports_show_a_progress_bar(clock: FakeClock, tmp_path: Path) -> None:
    """Importing a file past LARGE_FILE_BYTES draws a progress bar on a terminal."""
    stores = Stores.of(MemoryStore())
    await add_records(stores)
    dump = tmp_path / "big.jsonl"
    start = date(2024, 1, 1)
    with dump.open("w") as out:
        for n in range(LARGE_FILE_BYTES // 90 + 10):
            day = start + timedelta(days=n % 300)
            row = {"account_id": "acme", "service": "insights", "date": day.isoformat()}
            out.write(json.dumps({**row, "used": n % 5, "total": 5, "rejected": 0}) + "\n")
    size = dump.stat().st_size
    assert size >= LARGE_FILE_BYTES
    screen = io.StringIO()
    terminal = Console(file=screen, force_terminal=True, width=100)
    ctx = Context(stores, make_settings(stores.url), clock)
    outcome = await import_file(ctx, dump, size, terminal)
    assert outcome.rows == LARGE_FILE_BYTES // 90 + 10
    assert "importing big.jsonl" in screen.getvalue()
    assert "rows" in screen.getvalue()


def test_usage_show_draws_a_chart_above_the_table(tmp_path: Path) -> None:
    """`quotad usage show` draws a bar per day with used / total; --no-chart leaves the table."""
    url = sqlite(tmp_path, "target")
    today = datetime.now(UTC).date()

    async def use() -> None:
        stores = stores_from_url(url)
        await stores.open()
        try:
            await stores.counters.adjust("acme", "insights", today - timedelta(days=1), 4, 5)
            await stores.counters.adjust("acme", "insights", today - timedelta(days=2), 7, 5)
        finally:
            await stores.close()

    asyncio.run(use())
    window = ["--service", "insights", "--from", (today - timedelta(days=2)).isoformat()]
    shown = runner.invoke(app, ["usage", "show", "acme", *window, "--store", url])
    assert shown.exit_code == 0, shown.output
    lines = shown.stdout.splitlines()
    assert lines[0] == "acme insights: used / total per day"
    assert lines[1].startswith(f"{today - timedelta(days=2)} 7 / 5 ████")
    assert lines[2].startswith(f"{today - timedelta(days=1)} 4 / 5 ████")
    assert lines[3].startswith(f"{today} 0 / 5 ░")
    assert "daily total" in lines[4]
    bare = runner.invoke(app, ["usage", "show", "acme", *window, "--no-chart", "--store", url])
    assert "████" not in bare.stdout
    assert "acme insights usage" in bare.stdout
