"""What the commands print, and how they refuse input and report errors."""

from __future__ import annotations

import functools
from collections.abc import Callable, Iterable, Sequence
from typing import Annotated, Any, ParamSpec, TypeVar

import orjson
import pydantic
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from quotad.errors import FieldError, QuotadError, ValidationFailed

console = Console()
err_console = Console(stderr=True, highlight=False)
M = TypeVar("M", bound=pydantic.BaseModel)
P = ParamSpec("P")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


def handle_errors(command: Callable[P, None]) -> Callable[P, None]:
    """Report a ``QuotadError`` as ``error CODE: note`` on stderr and exit with status 1."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
        try:
            command(*args, **kwargs)
        except QuotadError as exc:
            err_console.print(
                f"[red]error {exc.code.value}: {escape(exc.note)}[/red]", soft_wrap=True
            )
            for item in exc.validation_errors:
                hint = f" ({item.suggestion})" if item.suggestion else ""
                err_console.print(
                    f"[red]  {escape(item.path)}: {escape(item.message + hint)}[/red]",
                    soft_wrap=True,
                )
            raise typer.Exit(1) from exc

    return wrapper


def validated(model: type[M], **values: Any) -> M:
    """Command-line values checked by the API's request schema, so both refuse the same input."""
    try:
        return model.model_validate(values)
    except pydantic.ValidationError as exc:
        problems = [
            FieldError(
                "/body/" + "/".join(str(part) for part in item["loc"]), item["msg"], item["type"]
            )
            for item in exc.errors()
        ]
        raise ValidationFailed("the input failed validation", validation_errors=problems) from exc


def print_json(data: Any) -> None:
    """``data`` as indented JSON on stdout."""
    typer.echo(orjson.dumps(data, option=orjson.OPT_INDENT_2).decode())


def show(data: Any, as_json: bool, render: Callable[[], None]) -> None:
    """Print ``data`` as JSON with ``--json``, else as ``render`` draws it for people."""
    if as_json:
        print_json(data)
    else:
        render()


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, list | tuple):
        return ", ".join(str(item) for item in value) or "-"
    return str(value)


def _table(title: str, columns: Sequence[str], show_header: bool = True) -> Table:
    table = Table(title=escape(title), title_justify="left", show_header=show_header)
    for name in columns:
        table.add_column(name, overflow="fold")  # ids must never be cut short with an ellipsis
    return table


def print_rows(title: str, rows: Sequence[dict[str, Any]], columns: Sequence[str]) -> None:
    """One table row per view, showing ``columns`` of each."""
    table = _table(title, columns)
    for row in rows:
        table.add_row(*(escape(_cell(row[name])) for name in columns))
    console.print(table)


def print_record(title: str, view: dict[str, Any], columns: Iterable[str]) -> None:
    """One record as a two-column field/value table."""
    table = _table(title, ("field", "value"), show_header=False)
    for name in columns:
        table.add_row(name, escape(_cell(view[name])))
    console.print(table)


def print_secret(label: str, secret: str) -> None:
    """A new key's secret, on a line of its own so it copies cleanly."""
    console.print(f"[bold yellow]{label} - shown ONCE, it cannot be displayed again:[/bold yellow]")
    console.print(f"  {secret}", markup=False, highlight=False, soft_wrap=True)
