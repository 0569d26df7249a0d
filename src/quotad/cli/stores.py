"""Settings and the store for a command: each command opens the store, runs, and closes it.

The commands open the store directly (SQLite in WAL mode tolerates a running server)
and go through the service layer exactly as the ``/admin/v1`` routes do.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from typing import Annotated, Any, TypeVar

import typer

from quotad.cli.console import err_console
from quotad.service import audit
from quotad.service.context import Context
from quotad.service.lifecycle import opened
from quotad.settings import Settings
from quotad.storage import stores_from_url

T = TypeVar("T")
PAGE_SIZE = 500

StoreOption = Annotated[
    str | None,
    typer.Option("--store", help="Store URL (default: QUOTAD_STORE_URL or sqlite:///./quotad.db)"),
]


def load_settings(**overrides: Any) -> Settings:
    """Settings from the environment, with command-line values (when given) winning."""
    given = {name: value for name, value in overrides.items() if value is not None}
    try:
        return Settings(**given)
    except ValueError as exc:
        err_console.print(f"[red]invalid settings:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc


def run_with_store(store_url: str | None, action: Callable[[Context], Awaitable[T]]) -> T:
    """Open the store, run ``action`` with a context over it, and close the store."""
    settings = load_settings(store_url=store_url)
    try:
        stores = stores_from_url(settings.store_url)
    except ValueError as exc:
        err_console.print(f"[red]invalid store URL:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc

    async def main() -> T:
        audit.acting_as(audit.CLI_ACTOR)  # the audit log's actor of what a command changes
        async with opened(Context(stores, settings)) as ctx:
            return await action(ctx)

    return asyncio.run(main())


async def every(
    fetch: Callable[[str | None], Awaitable[list[T]]], ident: Callable[[T], str]
) -> list[T]:
    """Every item of a paged listing, fetched ``PAGE_SIZE`` at a time."""
    found: list[T] = []
    after: str | None = None
    while True:
        page = await fetch(after)
        found += page
        if len(page) < PAGE_SIZE:
            return found
        after = ident(page[-1])
