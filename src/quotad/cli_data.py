"""Usage data on the command line: a terminal bar chart, ``quotad export`` and ``quotad import``.

Export and import speak JSON Lines, one usage day per line, exactly the rows of
``GET /admin/v1/export``: ``{"account_id", "service", "date", "used", "total", "rejected"}``.
Import writes each day's absolute values (so importing the same file twice changes
nothing the second time); the accounts and services it names must exist.

``quotad.cli`` registers the commands (this module does not import it at import time,
so either may be imported first).
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Annotated, Any

import orjson
import pydantic
import typer
from rich.console import Console, Group
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table
from rich.text import Text

from quotad.domain.models import UsageDay
from quotad.errors import FieldError, ValidationFailed
from quotad.service import usage
from quotad.service.context import Context

EXPORT_FIELDS = ("account_id", "service", "date", "used", "total", "rejected")
BATCH_ROWS = 1000
LARGE_FILE_BYTES = 256 * 1024  # imports this large show a progress bar
LARGE_EXPORT_ROWS = 5000  # exports show their progress once this many rows are written
USED, OVER, LEFT, MARK = "█", "█", "░", "┃"
# The same option as quotad.cli's (typer reads it from this module's globals).
StoreOption = Annotated[
    str | None,
    typer.Option("--store", help="Store URL (default: QUOTAD_STORE_URL or sqlite:///./quotad.db)"),
]


# Chart ------------------------------------------------------------------------
def usage_chart(rows: list[dict[str, Any]], title: str, width: int) -> Group:
    """A bar per day: used (over the total in red), what was left up to the total, the total.

    Args:
        rows: day views as ``GET /usage/{service}`` returns them (date, used, total).
        title: the chart's heading.
        width: the width available, in terminal cells.
    """
    numbers = [f"{int(row['used']):,} / {int(row['total']):,}" for row in rows]
    numbers_width = max(len(text) for text in numbers)
    bar_width = max(width - 10 - numbers_width - 4, 10)
    scale = max(1, *(max(row["used"], row["total"]) for row in rows))
    table = Table.grid(padding=(0, 1))
    table.add_column("date", no_wrap=True)
    table.add_column("numbers", justify="right", no_wrap=True)
    table.add_column("bar", no_wrap=True)
    for row, text in zip(rows, numbers, strict=True):
        used, total = int(row["used"]), int(row["total"])
        used_cells = round(used / scale * (bar_width - 1))
        total_cells = round(total / scale * (bar_width - 1))
        bar = Text()
        bar.append(USED * min(used_cells, total_cells), style="cyan")
        if used_cells > total_cells:
            bar.append(MARK, style="bold yellow")
            bar.append(OVER * (used_cells - total_cells), style="red")
        else:
            bar.append(LEFT * (total_cells - used_cells), style="grey50")
            bar.append(MARK, style="bold yellow")
        table.add_row(str(row["date"]), Text(text, style="red" if used > total else ""), bar)
    legend = Text.assemble(
        "used / total  ",
        (USED, "cyan"),
        " used  ",
        (LEFT, "grey50"),
        " left  ",
        (MARK, "bold yellow"),
        " daily total  ",
        (OVER, "red"),
        " over the total",
    )
    return Group(Text(title, style="bold"), table, legend)


def print_usage_chart(rows: list[dict[str, Any]], title: str) -> None:
    """Draw ``usage_chart`` on the CLI's console."""
    from quotad.cli import console

    console.print(usage_chart(rows, title, console.width))


# Export -----------------------------------------------------------------------
def export_row(account_id: str, service: str, row: UsageDay) -> dict[str, Any]:
    """One usage day as ``GET /admin/v1/export`` writes it."""
    return {
        "account_id": account_id,
        "service": service,
        "date": row.day.isoformat(),
        "used": row.used,
        "total": row.total,
        "rejected": row.rejected,
    }


async def export_lines(ctx: Context) -> AsyncIterator[bytes]:
    """Every stored usage day as a JSON line."""
    async for account_id, service, row in ctx.counters.export_usage():
        yield orjson.dumps(export_row(account_id, service, row)) + b"\n"


def _progress(out: Console) -> Progress:
    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rows]:,} rows"),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,
    )


async def write_export(ctx: Context, sink: IO[bytes], out: Console) -> int:
    """Write every usage day to ``sink``; past ``LARGE_EXPORT_ROWS``, show progress on ``out``."""
    count = 0
    with _progress(out) as progress:
        task = progress.add_task("exporting", total=None, rows=0, visible=False)
        async for line in export_lines(ctx):
            sink.write(line)
            count += 1
            if count % 500 == 0:
                progress.update(task, rows=count, visible=count >= LARGE_EXPORT_ROWS)
    return count


def export_command(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout", dir_okay=False),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Write every usage day as JSON Lines (the rows of GET /admin/v1/export)."""
    from quotad.cli import console, err_console, run_with_store

    async def action(ctx: Context) -> int:
        if output is None:
            return await write_export(ctx, sys.stdout.buffer, err_console)
        with output.open("wb") as sink:
            return await write_export(ctx, sink, err_console)

    count = run_with_store(store, action)
    if output is not None:
        console.print(f"exported {count:,} usage days to {escape(str(output))}", highlight=False)
    else:
        sys.stdout.flush()


# Import -----------------------------------------------------------------------
class UsageRowIn(pydantic.BaseModel):
    """One line of an export."""

    model_config = pydantic.ConfigDict(extra="ignore", strict=True)

    account_id: str = pydantic.Field(min_length=1, max_length=64)
    service: str = pydantic.Field(min_length=1, max_length=64)
    date: str
    used: int = pydantic.Field(ge=0)
    total: int = pydantic.Field(ge=0)
    rejected: int = pydantic.Field(0, ge=0)


@dataclass
class ImportOutcome:
    """What an import wrote."""

    rows: int = 0
    accounts: int = 0


def _refuse(number: int, written: int, problems: list[FieldError]) -> ValidationFailed:
    return ValidationFailed(
        f"line {number} is not a valid usage row; the {written:,} rows before it were imported "
        "(importing is idempotent: fix the line and import the whole file again)",
        validation_errors=problems,
    )


def _parse(number: int, raw: bytes) -> tuple[UsageRowIn, UsageDay] | list[FieldError]:
    path = f"/line/{number}"
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [FieldError(path, "not a JSON object", "format")]
    try:
        item = UsageRowIn.model_validate(data)
    except pydantic.ValidationError as exc:
        return [
            FieldError(
                path + "/" + "/".join(str(p) for p in problem["loc"]),
                problem["msg"],
                problem["type"],
            )
            for problem in exc.errors()
        ]
    try:
        day = usage.parse_date(item.date, f"{path}/date")
    except ValidationFailed as exc:
        return list(exc.validation_errors)
    return item, UsageDay(day, item.used, item.total, item.rejected)


async def import_lines(
    ctx: Context, lines: Iterable[bytes], advance: Callable[[int], None] = lambda _n: None
) -> ImportOutcome:
    """Write the usage days of ``lines`` (JSON Lines), in batches, checking each line.

    Args:
        ctx: the context whose store receives the rows.
        lines: the file's lines (blank ones are skipped).
        advance: called with each line's length in bytes, for a progress bar.

    Raises:
        ValidationFailed: a line is not a usage row, or names an unknown account or
            service; the rows before it have been written.
    """
    services = {s.name for s in await ctx.records.list_services()}
    accounts: dict[str, bool] = {}
    pending: dict[str, list[tuple[str, UsageDay]]] = {}
    outcome = ImportOutcome()
    waiting = 0

    async def flush() -> None:
        nonlocal waiting
        for account_id, rows in pending.items():
            await ctx.counters.put_usage_days(account_id, rows)
            outcome.rows += len(rows)
        pending.clear()
        waiting = 0

    for number, raw in enumerate(lines, start=1):
        advance(len(raw))
        if not raw.strip():
            continue
        parsed = _parse(number, raw)
        if isinstance(parsed, list):
            await flush()
            raise _refuse(number, outcome.rows, parsed)
        item, row = parsed
        if item.account_id not in accounts:
            accounts[item.account_id] = await ctx.records.get_account(item.account_id) is not None
        problems = []
        if not accounts[item.account_id]:
            problems.append(
                FieldError(
                    f"/line/{number}/account_id",
                    f"account {item.account_id!r} does not exist",
                    "unknown",
                    "create the accounts (and their plans) before importing their usage",
                )
            )
        if item.service not in services:
            problems.append(
                FieldError(
                    f"/line/{number}/service",
                    f"service {item.service!r} is not registered",
                    "unknown",
                    "register it with `quotad services create` first",
                )
            )
        if problems:
            await flush()
            raise _refuse(number, outcome.rows, problems)
        pending.setdefault(item.account_id, []).append((item.service, row))
        waiting += 1
        if waiting >= BATCH_ROWS:
            await flush()
    await flush()
    outcome.accounts = sum(accounts.values())
    return outcome


def _lines(path: Path) -> Iterator[bytes]:
    with path.open("rb") as source:
        yield from source


async def import_file(ctx: Context, path: Path, size: int, out: Console) -> ImportOutcome:
    """Import a JSON Lines file of ``size`` bytes, with a progress bar on ``out`` if large."""
    with _progress(out) as progress:
        task = progress.add_task(
            f"importing {path.name}", total=size, rows=0, visible=size >= LARGE_FILE_BYTES
        )
        lines = 0

        def advance(length: int) -> None:
            nonlocal lines
            lines += 1
            progress.update(task, advance=length, rows=lines)

        return await import_lines(ctx, _lines(path), advance)


def import_command(
    file: Annotated[
        Path,
        typer.Argument(help="JSON Lines, as `quotad export` writes", exists=True, dir_okay=False),
    ],
    store: StoreOption = None,
) -> None:
    """Write usage days from a JSON Lines export (absolute values: safe to repeat)."""
    from quotad.cli import console, err_console, run_with_store

    size = file.stat().st_size

    async def action(ctx: Context) -> ImportOutcome:
        return await import_file(ctx, file, size, err_console)

    outcome = run_with_store(store, action)
    console.print(
        f"imported {outcome.rows:,} usage days of {outcome.accounts:,} accounts", highlight=False
    )
