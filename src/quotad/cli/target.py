"""Where an administrative command runs: a local store, or a running quotad.

Every administrative command takes ``--store`` (a local store, the default) or
``--url`` with ``--token`` (the operator API of a running deployment, through the SDK);
``--url`` and ``--token`` are also accepted before the command (``quotad --url URL
--token TOKEN services list``) and read from ``QUOTAD_URL`` and ``QUOTAD_TOKEN``. An
explicit ``--store`` or ``--create`` wins over ``QUOTAD_URL``. The command itself is
written once against ``quotad.cli.operator.Operator``; ``run`` picks the implementation.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable
from contextvars import ContextVar
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, TypeVar
from urllib.parse import urlsplit, urlunsplit

import typer

from quotad.cli import startup
from quotad.cli.console import fail

if TYPE_CHECKING:
    from quotad.cli.operator import Operator

T = TypeVar("T")
PANEL = "Target"

UrlOption = Annotated[
    str | None,
    typer.Option(
        "--url",
        help="Run against the quotad at this URL, through its operator API (env QUOTAD_URL)",
        rich_help_panel=PANEL,
    ),
]
TokenOption = Annotated[
    str | None,
    typer.Option(
        "--token", help="Operator token for --url (env QUOTAD_TOKEN)", rich_help_panel=PANEL
    ),
]
CreateOption = Annotated[
    bool,
    typer.Option(
        "--create", help="Create the local store if it does not exist", rich_help_panel=PANEL
    ),
]
# Commands that work on a local store only: they refuse a --url given before them.
LOCAL_ONLY = frozenset({"serve", "migrate", "token", "import", "proxy", "dump", "restore"})


@dataclass(frozen=True, slots=True)
class Given:
    """``--url`` and ``--token`` as given before the command."""

    url: str | None = None
    token: str | None = None


_given: ContextVar[Given] = ContextVar("quotad_cli_given", default=Given())  # noqa: B039


def remember_root_options(command: str | None, url: str | None, token: str | None) -> None:
    """Keep ``quotad --url … --token …`` for the command; refuse them for local ones."""
    if url and command in LOCAL_ONLY:
        raise fail(f"`quotad {command}` works on a local store only (--store), not through --url")
    _given.set(Given(url or None, token or None))


@dataclass(frozen=True, slots=True)
class Target:
    """A local store (``store``, ``create``) or a server (``url`` with ``token``)."""

    store: str | None = None
    create: bool = False
    url: str | None = None
    token: str | None = None


def shown(url: str) -> str:
    """``url`` without any user or password in it."""
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def target(store: str | None, url: str | None, token: str | None, create: bool = False) -> Target:
    """Where a command runs, from its options, the options before it, and the environment."""
    given = _given.get()
    flag_url = url or given.url
    if flag_url and (store is not None or create):
        raise fail("--store and --create name a local store: give them or --url, not both")
    chosen = flag_url or (
        None if store is not None or create else os.environ.get("QUOTAD_URL") or None
    )
    if chosen is None:
        return Target(store=store, create=create)
    if urlsplit(chosen).scheme not in ("http", "https") or not urlsplit(chosen).netloc:
        raise fail(
            f"--url must be an http(s) URL such as http://127.0.0.1:8080, not {shown(chosen)!r}"
        )
    secret = token or given.token or os.environ.get("QUOTAD_TOKEN") or None
    if secret is None:
        raise fail(f"--url {shown(chosen)} needs the operator token: --token or QUOTAD_TOKEN")
    return Target(url=chosen, token=secret)


def run(where: Target, action: Callable[[Operator], Awaitable[T]]) -> T:
    """Run ``action`` with the operator of ``where``: a local store or a server."""
    if where.url is None:
        from quotad.cli.local import LocalOperator
        from quotad.cli.stores import run_with_store

        return run_with_store(
            where.store, lambda ctx: action(LocalOperator(ctx)), create=where.create
        )
    return _run_remote(where.url, where.token or "", action)


def _run_remote(url: str, token: str, action: Callable[[Operator], Awaitable[T]]) -> T:
    import asyncio

    import httpx2

    from quotad.cli.remote import RemoteOperator, as_quotad_error
    from quotad.sdk import (
        AsyncClient,
        AuthenticationError,
        QuotadAPIError,
        QuotadConnectionError,
        UnexpectedResponseError,
    )

    # Plain HTTP uses no TLS: a transport that loads no certificate store starts faster
    # (https:// URLs keep the default, verified transport).
    plain = urlsplit(url).scheme == "http"

    async def main() -> T:
        transport = httpx2.AsyncHTTPTransport(verify=False) if plain else None
        async with AsyncClient(url, operator_token=token, transport=transport) as client:
            return await action(RemoteOperator(client))

    startup.imported()
    try:
        return asyncio.run(main())
    except AuthenticationError as exc:
        hint = "the server refused the operator token: check --token or QUOTAD_TOKEN"
        raise as_quotad_error(exc, hint) from exc
    except QuotadAPIError as exc:
        raise as_quotad_error(exc) from exc
    except QuotadConnectionError as exc:
        reason = exc.__cause__ or exc
        raise fail(f"cannot reach quotad at {shown(url)}: {reason}", 1) from exc
    except UnexpectedResponseError as exc:
        raise fail(f"{shown(url)} did not answer as quotad does: {exc}", 1) from exc
