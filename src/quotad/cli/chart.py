"""The terminal bar chart that ``quotad usage show`` draws above its table."""

from __future__ import annotations

from typing import Any

from rich.console import Group
from rich.table import Table
from rich.text import Text

from quotad.cli.console import console

USED, OVER, LEFT, MARK = "█", "█", "░", "┃"


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
    console.print(usage_chart(rows, title, console.width))
