"""``quotad dump`` and ``quotad restore``: a whole deployment out to JSON Lines and back in.

``quotad.service.dump`` writes and reads the lines; this module adds files, stdin and
stdout, and a progress bar on stderr when stderr is a terminal.
"""

from __future__ import annotations

import sys
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import IO, TYPE_CHECKING, Annotated

import typer
from rich.console import Console
from rich.markup import escape

from quotad.cli import progress
from quotad.cli.console import console, err_console, handle_errors
from quotad.cli.stores import StoreOption, run_with_store

if TYPE_CHECKING:  # the service layer and the stores load when a command runs
    from quotad.service.context import Context


def _summary(counts: Counter[str]) -> str:
    """``39 records (1 setting, 2 service, …)``: the dump's kinds, by name."""
    from quotad.service.dump import KINDS

    kinds = ", ".join(f"{counts[kind]:,} {kind}" for kind in KINDS if counts[kind])
    return f"{counts.total():,} records ({kinds or 'none'})"


async def write_dump(ctx: Context, sink: IO[bytes], out: Console) -> Counter[str]:
    """Write the deployment's dump to ``sink``, with progress on ``out``; lines of each kind."""
    from quotad.service.dump import dump_lines

    counts: Counter[str] = Counter()
    with progress.bar(out, "lines") as shown:
        task = shown.add_task("dumping", total=None, count=0)
        async for kind, line in dump_lines(ctx):
            sink.write(line)
            counts[kind] += 1
            if counts.total() % 500 == 0:
                shown.update(task, count=counts.total())
    del counts["header"], counts["end"]
    return counts


@handle_errors
def dump_command(
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write to this file instead of stdout", dir_okay=False),
    ] = None,
    store: StoreOption = None,
) -> None:
    """Write the whole deployment as JSON Lines (restore it with `quotad restore`).

    A dump holds secrets (the webhook endpoints' signing secrets): keep it safe.
    """

    async def action(ctx: Context) -> Counter[str]:
        if output is None:
            return await write_dump(ctx, sys.stdout.buffer, err_console)
        with output.open("wb") as sink:
            return await write_dump(ctx, sink, err_console)

    counts = run_with_store(store, action)
    if output is None:
        sys.stdout.flush()
    else:
        console.print(
            f"dumped {_summary(counts)} to {escape(str(output))}", highlight=False, soft_wrap=True
        )


def _lines(source: IO[bytes]) -> Iterator[bytes]:
    yield from source


async def read_dump(
    ctx: Context, source: IO[bytes], size: int | None, out: Console
) -> Counter[str]:
    """Restore the dump ``source`` holds (``size`` bytes, if known), with progress on ``out``."""
    from quotad.service.dump import restore_lines

    with progress.reading(out, "restoring", size, "lines") as advance:
        return await restore_lines(ctx, _lines(source), advance)


@handle_errors
def restore_command(
    file: Annotated[
        str, typer.Argument(help="A file `quotad dump` wrote, or - for stdin", show_default=False)
    ],
    store: StoreOption = None,
) -> None:
    """Load a dump into an empty store, all or nothing (SQLite -> PostgreSQL, say)."""
    if file == "-":
        source, size = sys.stdin.buffer, None
    else:
        path = Path(file)
        try:
            source = path.open("rb")  # a file, or a pipe such as <(quotad dump …)
        except OSError as exc:
            err_console.print(
                f"[red]cannot read {escape(file)}: {escape(exc.strerror or str(exc))}[/red]",
                soft_wrap=True,
            )
            raise typer.Exit(2) from exc
        size = path.stat().st_size if path.is_file() else None

    async def action(ctx: Context) -> Counter[str]:
        return await read_dump(ctx, source, size, err_console)

    try:
        counts = run_with_store(
            store, action, create=True
        )  # a restore makes its store, as migrate does
    finally:
        if source is not sys.stdin.buffer:
            source.close()
    console.print(f"restored {_summary(counts)}", highlight=False, soft_wrap=True)
