"""What the commands print, and how they refuse input and report errors.

Errors are reported in the words of the command line: a validation error names the
option or argument (``--to``, ``--quota insights``, ``NAME``) rather than the API's
JSON path, whether the error came from the local service layer or from a server.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Annotated, Any, ParamSpec, TypeVar

import orjson
import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperCommand, TyperGroup, TyperOption
from typer.models import CommandFunctionType

from quotad.errors import FieldError, QuotadError, ValidationFailed

if TYPE_CHECKING:
    import pydantic
    from rich.table import Table

console = Console()
err_console = Console(stderr=True, highlight=False)
M = TypeVar("M", bound="pydantic.BaseModel")
P = ParamSpec("P")

JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


# Help without a <bool> after every flag ------------------------------------------
def _without_flag_types(params: list[Any]) -> list[Any]:
    # Typer's rich help prints a type after every option, flags included ("--json
    # <bool>", "--help <bool>"); an empty metavar leaves a flag's type column blank.
    for param in params:
        if isinstance(param, TyperOption) and param.is_flag and param.metavar is None:
            param.metavar = ""
    return params


class Command(TyperCommand):
    """A command whose help shows no type after its flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters (with ``--help``), flags without a type."""
        return _without_flag_types(super().get_params(ctx))


class Group(TyperGroup):
    """A command group whose help shows no type after its flags."""

    def get_params(self, ctx: Any) -> list[Any]:
        """The parameters (with ``--help``), flags without a type."""
        return _without_flag_types(super().get_params(ctx))


class App(typer.Typer):
    """A Typer app whose groups and commands use ``Group`` and ``Command``."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cls", Group)
        kwargs.setdefault("no_args_is_help", True)
        super().__init__(**kwargs)

    def command(
        self, *args: Any, **kwargs: Any
    ) -> Callable[[CommandFunctionType], CommandFunctionType]:
        """``typer.Typer.command`` with ``Command`` as the default class."""
        kwargs.setdefault("cls", Command)
        return super().command(*args, **kwargs)


# Errors in command-line terms ------------------------------------------------------
# The API's field names, as the options that set them.
OPTION_OF_FIELD = {
    "quotas": "--quota",
    "limits": "--limit",
    "scopes": "--scope",
    "start_date": "--from",
    "end_date": "--to",
    "alert_thresholds": "--alert-threshold",
}
# The API's name patterns, in words (tests/test_cli_remote.py checks every schema pattern
# has its words here).
PATTERN_WORDS = {
    r"^[a-z][a-z0-9_-]{0,63}$": (
        "use lowercase letters, digits, '-' and '_', starting with a letter (at most 64)"
    ),
    r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$": (
        "use letters, digits, '.', '-' and '_', starting with a letter or digit (at most 64)"
    ),
    r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$": (
        "use letters, digits, '.', '-' and '_', starting with a letter (at most 128)"
    ),
    r"^(usage:read|consume:\*|consume:[a-z][a-z0-9_-]{0,63})$": (
        "must be usage:read, consume:* or consume:SERVICE"
    ),
}
_PATTERN = re.compile(r"String should match pattern '(.*)'", re.DOTALL)
_FIELD_WORD = re.compile(r"\b(?:an? )?(start_date|end_date)\b")
_REGISTER = "register it with POST /admin/v1/services first"


def cli_name(path: str, arguments: Mapping[str, str]) -> str:
    """The option or argument behind an API path: ``/query/end_date`` is ``--to``.

    ``arguments`` names the fields a command takes as arguments (``{"name": "NAME"}``).
    Further segments follow: ``/body/quotas/insights/total`` is ``--quota insights
    (total)``, ``/body/scopes/0`` is ``--scope #1``.
    """
    parts = [part for part in path.split("/") if part]
    if parts and parts[0] in ("body", "query", "path"):
        parts = parts[1:]
    if not parts:
        return "input"
    head, rest = parts[0], parts[1:]
    name = arguments.get(head) or OPTION_OF_FIELD.get(head) or "--" + head.replace("_", "-")
    if rest:
        first = f"#{int(rest[0]) + 1}" if rest[0].isdigit() else rest[0]
        name += f" {first}"
        if rest[1:]:
            name += f" ({'/'.join(rest[1:])})"
    return name


def cli_words(text: str) -> str:
    """A message of the API in command-line words."""
    found = _PATTERN.search(text)
    if found:
        words = PATTERN_WORDS.get(found.group(1), "has characters that are not allowed")
        text = text[: found.start()] + words + text[found.end() :]
    return _FIELD_WORD.sub(_option_words, text)


def _option_words(found: re.Match[str]) -> str:
    article = "a " if found.group(0).startswith("a") else ""
    return article + OPTION_OF_FIELD[found.group(1)]


def _suggestion(item: FieldError) -> str | None:
    if item.suggestion == _REGISTER:
        service = item.path.rstrip("/").rsplit("/", 1)[-1]
        return f"register it with `quotad services create {service}` first"
    return None if item.suggestion is None else cli_words(item.suggestion)


def report(exc: QuotadError, arguments: Mapping[str, str] | None = None) -> None:
    """Print ``error CODE: note`` and each validation error, in command-line terms."""
    err_console.print(
        f"[red]error {exc.code.value}: {escape(cli_words(exc.note))}[/red]", soft_wrap=True
    )
    for item in exc.validation_errors:
        suggestion = _suggestion(item)
        hint = f" ({suggestion})" if suggestion else ""
        where = cli_name(item.path, arguments or {})
        err_console.print(
            f"[red]  {escape(where)}: {escape(cli_words(item.message) + hint)}[/red]",
            soft_wrap=True,
        )


def fail(message: str, status: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr; the ``Exit`` to raise."""
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True)
    return typer.Exit(status)


def cli_errors(
    arguments: Mapping[str, str] | None = None,
) -> Callable[[Callable[P, None]], Callable[P, None]]:
    """Report a ``QuotadError`` (see ``report``) and exit with status 1.

    ``arguments`` maps the API fields a command takes as arguments to their names.
    """

    def decorate(command: Callable[P, None]) -> Callable[P, None]:
        @functools.wraps(command)
        def wrapper(*args: P.args, **kwargs: P.kwargs) -> None:
            try:
                command(*args, **kwargs)
            except QuotadError as exc:
                report(exc, arguments)
                raise typer.Exit(1) from exc

        return wrapper

    return decorate


handle_errors = cli_errors()


def validated(model: type[M], **values: Any) -> M:
    """Command-line values checked by the API's request schema, so both refuse the same input."""
    import pydantic

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


# Output ------------------------------------------------------------------------------
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
    from rich.table import Table

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
