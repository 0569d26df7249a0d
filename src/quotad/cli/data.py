"""Usage data on the command line: ``usage show`` / ``adjust``, ``export`` and ``import``.

Export and import speak JSON Lines, one usage day per line, exactly the rows of
``GET /admin/v1/export`` (``quotad.service.transfer`` writes and reads them); this
module adds the files, stdout and the progress bars.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (
    BarColumn,
    Progress,
    SpinnerColumn,
    TaskProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from quotad.api import schemas, views
from quotad.cli.chart import print_usage_chart
from quotad.cli.console import (
    JsonOption,
    console,
    err_console,
    handle_errors,
    print_json,
    print_rows,
    show,
    validated,
)
from quotad.cli.stores import StoreOption, run_with_store
from quotad.service import admin, usage
from quotad.service.context import Context
from quotad.service.transfer import ImportOutcome, export_lines, import_lines

LARGE_FILE_BYTES = 256 * 1024  # imports this large show a progress bar
LARGE_EXPORT_ROWS = 5000  # exports show their progress once this many rows are written


# Usage ------------------------------------------------------------------------
usage_app = typer.Typer(help="Daily usage of an account.", no_args_is_help=True)
USAGE_COLUMNS = ("date", "used", "remaining", "total")
ServiceOption = Annotated[str, typer.Option("--service", help="Service name")]


@usage_app.command("show")
@handle_errors
def usage_show(
    account_id: str,
    *,
    service: ServiceOption,
    start: Annotated[
        str | None, typer.Option("--from", help="First day, YYYY-MM-DD (default: today)")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Last day, YYYY-MM-DD (default: today)")
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    chart: Annotated[
        bool, typer.Option("--chart/--no-chart", help="Draw a bar chart above the table")
    ] = True,
) -> None:
    """Show an account's daily usage of a service (the rows of GET /usage/{service})."""

    async def action(ctx: Context) -> list[dict[str, Any]]:
        account = await admin.require_account(ctx, account_id)
        rows = await usage.history(ctx, account, service, start, end)
        return [views.usage_day_view(row) for row in rows]

    rows = run_with_store(store, action)
    if as_json:
        print_json(rows)
    elif not rows:
        console.print(f"no {escape(service)} usage by {escape(account_id)} in this window")
    else:
        if chart:
            print_usage_chart(rows, f"{account_id} {service}: used / total per day")
        print_rows(f"{account_id} {service} usage", rows, USAGE_COLUMNS)


@usage_app.command("adjust")
@handle_errors
def usage_adjust(
    account_id: str,
    *,
    service: ServiceOption,
    day: Annotated[str, typer.Option("--date", help="The day, YYYY-MM-DD")],
    delta: Annotated[int, typer.Option(help="Units to add (negative to credit back)")],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Correct or credit one day's usage (never below zero)."""
    body = validated(schemas.AdjustIn, date=day, delta=delta)

    async def action(ctx: Context) -> dict[str, Any]:
        row = await usage.adjust(ctx, account_id, service, body.date, body.delta)
        return views.usage_day_view(row)

    view = run_with_store(store, action)
    show(
        view,
        as_json,
        lambda: print_rows(f"{account_id} {service} usage adjusted", [view], USAGE_COLUMNS),
    )


# Export -----------------------------------------------------------------------
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


@handle_errors
def export_command(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout", dir_okay=False),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Write every usage day as JSON Lines (the rows of GET /admin/v1/export)."""

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


@handle_errors
def import_command(
    file: Annotated[
        Path,
        typer.Argument(help="JSON Lines, as `quotad export` writes", exists=True, dir_okay=False),
    ],
    store: StoreOption = None,
) -> None:
    """Write usage days from a JSON Lines export (absolute values: safe to repeat)."""
    size = file.stat().st_size

    async def action(ctx: Context) -> ImportOutcome:
        return await import_file(ctx, file, size, err_console)

    outcome = run_with_store(store, action)
    console.print(
        f"imported {outcome.rows:,} usage days of {outcome.accounts:,} accounts", highlight=False
    )
