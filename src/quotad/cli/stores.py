"""Settings and the local store of a command: each command opens the store, runs, closes it.

The commands open the store directly (SQLite in WAL mode tolerates a running server)
and go through the service layer exactly as the ``/admin/v1`` routes do. A store that
does not exist is an error naming it; only ``serve``, ``migrate`` and ``--create``
create one. The store's modules (SQLAlchemy, Alembic, drivers) are imported only here,
when a command opens a store, so that ``--help`` and remote commands start quickly.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar
from urllib.parse import parse_qs, urlsplit

import typer

from quotad.cli import startup
from quotad.cli.console import err_console, fail

if TYPE_CHECKING:
    from quotad.service.context import Context
    from quotad.settings import Settings

T = TypeVar("T")

StoreOption = Annotated[
    str | None,
    typer.Option(
        "--store",
        help="Local store URL (default: QUOTAD_STORE_URL or sqlite:///./quotad.db)",
        rich_help_panel="Target",
    ),
]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with command-line values (when given) winning."""
    from quotad.settings import Settings

    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValueError as exc:
        err_console.print(f"[red]invalid settings:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


def _records_url(url: str) -> str:
    """The SQL URL a Redis store keeps its records in (as ``quotad.storage.redis`` reads it)."""
    query = {name: values[-1] for name, values in parse_qs(urlsplit(url).query).items()}
    records = query.get("records") or os.environ.get("QUOTAD_RECORDS_URL")
    if not records:
        raise fail(
            "a redis:// store keeps only counters: name the SQL store of its records with "
            "records=<SQL URL> in the --store URL, or QUOTAD_RECORDS_URL"
        )
    return records


def check_store(url: str, create: bool) -> None:
    """Refuse a store URL that names nothing: a Redis store without records, a missing
    SQLite file (unless ``create``)."""
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme in ("redis", "rediss"):
        url = _records_url(url)
        scheme = urlsplit(url).scheme.split("+", 1)[0]
    if scheme != "sqlite" or create:
        return
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        database = make_url(url).database
    except ArgumentError:
        return  # the store itself reports a malformed URL
    if database and not Path(database).expanduser().exists():
        path = Path(database).expanduser().resolve()
        raise fail(
            f"no store at {path}: `quotad migrate` creates it (or add --create), "
            "or name an existing one with --store or QUOTAD_STORE_URL"
        )


def run_with_store(
    store_url: str | None, action: Callable[[Context], Awaitable[T]], *, create: bool = False
) -> T:
    """Open the store, run ``action`` with a context over it, and close the store.

    The store must exist unless ``create`` (see ``check_store``).
    """
    import asyncio  # here, not at the top: `quotad --help` needs no event loop

    from quotad.service import audit
    from quotad.service.context import Context
    from quotad.service.lifecycle import opened
    from quotad.storage import stores_from_url

    settings = load_settings(store_url=store_url)
    try:
        stores = stores_from_url(settings.store_url)
    except ValueError as exc:
        err_console.print(f"[red]invalid store URL:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    check_store(settings.store_url, create)
    startup.imported()

    async def main() -> T:
        audit.acting_as(audit.CLI_ACTOR)  # the audit log's actor of what a command changes
        async with opened(Context(stores, settings)) as ctx:
            return await action(ctx)

    return asyncio.run(main())
