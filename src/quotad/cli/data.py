"""Usage data on the command line: ``usage show`` / ``adjust``, ``export`` and ``import``.

Export and import speak JSON Lines, one usage day per line, exactly the rows of
``GET /admin/v1/export`` (``quotad.service.transfer`` writes and reads them); this
module adds the files, stdout and the progress bars.
"""

from __future__ import annotations

import sys
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from quotad.cli import progress
from quotad.cli.console import (
    App,
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
from quotad.cli.target import TokenOption, UrlOption, run, target

if TYPE_CHECKING:
    from quotad.cli.operator import Operator
    from quotad.service.context import Context
    from quotad.service.transfer import ImportOutcome

LARGE_FILE_BYTES = 256 * 1024  # imports this large show a progress bar
LARGE_EXPORT_ROWS = 5000  # exports show their progress once this many rows are written


# Usage ------------------------------------------------------------------------
usage_app = App(help="Daily usage of an account.")
USAGE_COLUMNS = ("date", "used", "remaining", "total")
ServiceOption = Annotated[str, typer.Option("--service", help="Service name")]


@usage_app.command("show")
@handle_errors
def usage_show(
    account_id: str,
    *,
    service: ServiceOption,
    start: Annotated[
        str | None,
        typer.Option("--from", help="First day, YYYY-MM-DD (default: 29 days before --to)"),
    ] = None,
    end: Annotated[
        str | None,
        typer.Option("--to", help="Last day, YYYY-MM-DD (default: the account's today)"),
    ] = None,
    as_json: JsonOption = False,
    chart: Annotated[
        bool, typer.Option("--chart/--no-chart", help="Draw a bar chart above the table")
    ] = True,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show an account's daily usage of a service, the last 30 days unless --from/--to say,
    then where each of the service's limits stands in its current window (--json: the
    day rows only, as before)."""
    where = target(store, url, token)
    if as_json:
        print_json(run(where, lambda op: op.usage(account_id, service, start, end)))
        return
    rows, windows = run(where, lambda op: _usage_and_limits(op, account_id, service, start, end))
    if not rows:
        console.print(f"no {escape(service)} usage by {escape(account_id)} in this window")
    else:
        if chart:
            from quotad.cli.chart import print_usage_chart

            print_usage_chart(rows, f"{account_id} {service}: used / total per day")
        print_rows(f"{account_id} {service} usage", rows, USAGE_COLUMNS)
    if windows:
        print_rows(f"{account_id} {service} limits now", windows, LIMIT_COLUMNS)


LIMIT_COLUMNS = ("name", "window", "mode", "used / total", "reset")


async def _usage_and_limits(
    op: Operator, account_id: str, service: str, start: str | None, end: str | None
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    rows = await op.usage(account_id, service, start, end)
    found = await op.account_quotas(account_id)
    return rows, [limit_row(x) for x in found if x["service"] == service]


def limit_row(state: dict[str, Any]) -> dict[str, Any]:
    """A limit of ``GET .../quotas`` as a row of ``usage show``."""
    rate = state.get("rate")
    return {
        "name": state["name"],
        "window": f"rate {rate['per_second']}/s" if rate else state["window"],
        "mode": state["mode"],
        "used / total": f"{state['used']:,} / {state['total']:,}",
        "reset": state["reset"],
    }


@usage_app.command("adjust")
@handle_errors
def usage_adjust(
    account_id: str,
    *,
    service: ServiceOption,
    day: Annotated[str, typer.Option("--date", help="The day, YYYY-MM-DD")],
    delta: Annotated[int, typer.Option(help="Units to add (negative to credit back)")],
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Correct or credit one day's usage (never below zero)."""
    from quotad.api import schemas

    body = validated(schemas.AdjustIn, date=day, delta=delta)
    where = target(store, url, token)
    view = run(where, lambda op: op.adjust(account_id, service, body.date, body.delta))
    show(
        view,
        as_json,
        lambda: print_rows(f"{account_id} {service} usage adjusted", [view], USAGE_COLUMNS),
    )


# Export -----------------------------------------------------------------------


async def write_export(lines: AsyncIterator[bytes], sink: IO[bytes], out: Console) -> int:
    """Write ``lines`` to ``sink``; past ``LARGE_EXPORT_ROWS``, show progress on ``out``."""
    count = 0
    with progress.bar(out, "rows") as shown:
        task = shown.add_task("exporting", total=None, count=0, visible=False)
        async for line in lines:
            sink.write(line)
            count += 1
            if count % 500 == 0:
                shown.update(task, count=count, visible=count >= LARGE_EXPORT_ROWS)
    return count


@handle_errors
def export_command(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout", dir_okay=False),
    ] = None,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Write every usage day as JSON Lines, one day per line (what `quotad import` reads)."""
    where = target(store, url, token)

    async def action(op: Operator) -> int:
        if output is None:
            return await write_export(op.export_lines(), sys.stdout.buffer, err_console)
        with output.open("wb") as sink:
            return await write_export(op.export_lines(), sink, err_console)

    count = run(where, action)
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
    from quotad.service.transfer import import_lines

    visible = size >= LARGE_FILE_BYTES
    with progress.reading(out, f"importing {path.name}", size, "rows", visible=visible) as advance:
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
