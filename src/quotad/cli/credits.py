"""An account's credits (SPEC 10): ``credits show|ledger|grant|void``.

As every administrative command, each runs on a local store (through
``quotad.service.credits``, rendered by ``quotad.http.credit_views``) or, with ``--url``,
through the operator API, and prints the same either way.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from quotad.cli.console import (
    App,
    JsonOption,
    cli_errors,
    console,
    handle_errors,
    print_json,
    print_record,
    print_rows,
    show,
)
from quotad.cli.stores import StoreOption
from quotad.cli.target import TokenOption, UrlOption, run, target
from quotad.errors import ValidationFailed

credits_app = App(help="Accounts' credits: balance, grants and the ledger.")
GRANT_COLUMNS = (
    "id",
    "kind",
    "amount",
    "remaining",
    "expires_at",
    "priority",
    "note",
    "created_at",
    "voided_at",
)
GRANT_LIST_COLUMNS = ("id", "kind", "amount", "remaining", "expires_at", "priority", "note")
LEDGER_COLUMNS = ("id", "at", "kind", "grant_id", "amount", "balance_after")
MAX_PAGE = 500  # the largest page the API serves
GRANT_ARGUMENTS = {"amount": "AMOUNT"}


def _micros(amount: str) -> int:
    """AMOUNT (credits, at most 6 decimals) in micro-credits, checked as the API checks it."""
    from quotad.domain.credits import to_micros

    try:
        return to_micros(amount.strip())
    except ValueError as exc:
        raise ValidationFailed.at("/body/amount", f"amount {exc}", "range") from exc


def _expiry(value: str | None) -> datetime | None:
    """``--expires-at`` as an aware time (RFC 3339, with its offset)."""
    if value is None:
        return None
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError as exc:
        raise ValidationFailed.at(
            "/body/expires_at", "expires_at must be an RFC 3339 time", "format"
        ) from exc
    if moment.tzinfo is None:
        raise ValidationFailed.at(
            "/body/expires_at", "expires_at needs a UTC offset (Z or +hh:mm)", "format"
        )
    return moment


def _check_limit(limit: int) -> int:
    """``--limit`` checked as the API checks a page's ``limit``."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed.at("/query/limit", f"limit is 1 to {MAX_PAGE}", "range")
    return limit


@credits_app.command("show")
@handle_errors
def credits_show(
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT")],
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show an account's balance and every grant with what is left of it."""
    view = run(target(store, url, token), lambda op: op.credits(account_id))

    def render() -> None:
        console.print(f"balance of {escape(account_id)}: {view['balance']} credits")
        print_rows(f"grants of {account_id}", view["grants"], GRANT_LIST_COLUMNS)

    show(view, as_json, render)


@credits_app.command("ledger")
@handle_errors
def credits_ledger(
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT")],
    limit: Annotated[int, typer.Option(help=f"How many, oldest first (1 to {MAX_PAGE})")] = 50,
    cursor: Annotated[
        str | None, typer.Option(help="Start after this entry (a page's next cursor)")
    ] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List a page of an account's credit ledger, oldest first."""
    count = _check_limit(limit)
    rows, after = run(
        target(store, url, token), lambda op: op.credit_ledger(account_id, count, cursor)
    )
    page: dict[str, Any] = {"items": rows, "next_cursor": after}

    def render() -> None:
        print_rows(f"credit ledger of {account_id}", rows, LEDGER_COLUMNS)
        if after is not None:
            console.print(f"more: --cursor {escape(after)}", soft_wrap=True)

    show(page, as_json, render)


@credits_app.command("grant")
@cli_errors(GRANT_ARGUMENTS)
def credits_grant(
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT")],
    amount: Annotated[str, typer.Argument(metavar="AMOUNT", help="Credits (at most 6 decimals)")],
    *,
    expires_at: Annotated[
        str | None,
        typer.Option("--expires-at", help="When the grant expires (RFC 3339, in the future)"),
    ] = None,
    priority: Annotated[
        int, typer.Option(help="Drawn from before lower priorities expiring together")
    ] = 0,
    note: Annotated[str, typer.Option(help="Why it was granted")] = "",
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Grant credits to an account."""
    micros = _micros(amount)
    expiry = _expiry(expires_at)
    where = target(store, url, token)
    view = run(where, lambda op: op.grant_credits(account_id, micros, expiry, priority, note))
    if as_json:
        print_json(view)
        return
    print_record(f"grant {view['id']} to {account_id}", view, GRANT_COLUMNS)


@credits_app.command("void")
@handle_errors
def credits_void(
    account_id: Annotated[str, typer.Argument(metavar="ACCOUNT")],
    grant_id: Annotated[str, typer.Argument(metavar="GRANT_ID")],
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Void what is left of a grant (a void entry in the ledger)."""
    view = run(target(store, url, token), lambda op: op.void_grant(account_id, grant_id))
    show(view, as_json, lambda: print_record(f"grant {view['id']} voided", view, GRANT_COLUMNS))
