"""Progress bars of the long commands (export, import, dump, restore), on stderr.

One shape for all: a spinner, the bar (bytes read, when the total is known), the count of
lines or rows so far and the time taken. Shown only on a terminal, and gone once done.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from rich.console import Console
    from rich.progress import Progress


def bar(out: Console, unit: str) -> Progress:
    """A progress display on ``out`` whose tasks count ``unit`` (their ``count`` field)."""
    from rich.progress import (
        BarColumn,
        Progress,
        SpinnerColumn,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    return Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[count]:,} " + unit),
        TimeElapsedColumn(),
        console=out,
        transient=True,
        disable=not out.is_terminal,
    )


@contextmanager
def reading(
    out: Console, description: str, total: int | None, unit: str, *, visible: bool = True
) -> Iterator[Callable[[int], None]]:
    """A bar over ``total`` bytes (``None``: not known); yields the callback that counts one
    line of the given length in bytes."""
    with bar(out, unit) as progress:
        task = progress.add_task(description, total=total, count=0, visible=visible)
        count = 0

        def advance(length: int) -> None:
            nonlocal count
            count += 1
            progress.update(task, advance=length, count=count)

        yield advance
