"""Operator tokens and the audit log: ``tokens create|list|revoke`` and ``audit``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated

import typer

from quotad.cli.console import (
    App,
    JsonOption,
    handle_errors,
    print_json,
    print_record,
    print_rows,
    print_secret,
    show,
    validated,
)
from quotad.cli.operator import AuditPage
from quotad.cli.stores import StoreOption
from quotad.cli.target import TokenOption, UrlOption, run, target
from quotad.domain import days
from quotad.errors import ValidationFailed

tokens_app = App(
    help="Named operator tokens with a role: admin, read or verify (shown only when created).",
)
TOKEN_COLUMNS = ("id", "name", "role", "hint", "status", "created_at", "revoked_at")
AUDIT_COLUMNS = ("at", "actor", "action", "target", "request_id")
MAX_AUDIT_PAGE = 500


@tokens_app.command("create")
@handle_errors
def tokens_create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, read or verify")],
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a named operator token and print it once."""
    from quotad.api import operators

    body = validated(operators.TokenIn, name=name, role=role)
    view = run(target(store, url, token), lambda op: op.create_token(body.name, body.role))
    if as_json:
        print_json(view)
        return
    print_record(f"operator token {view['id']} created", view, TOKEN_COLUMNS)
    print_secret("Operator token", view["token"])


@tokens_app.command("list")
@handle_errors
def tokens_list(
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the named operator tokens (never the tokens), revoked ones included."""
    rows = run(target(store, url, token), lambda op: op.list_tokens())
    show(rows, as_json, lambda: print_rows("operator tokens", rows, TOKEN_COLUMNS))


@tokens_app.command("revoke")
@handle_errors
def tokens_revoke(
    token_id: str,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke an operator token now."""
    view = run(target(store, url, token), lambda op: op.revoke_token(token_id))
    show(
        view,
        as_json,
        lambda: print_record(f"operator token {view['id']} revoked", view, TOKEN_COLUMNS),
    )


@handle_errors
def audit_command(
    record: Annotated[
        str | None,
        typer.Option("--target", help="Only this record: KIND:ID, e.g. account:acme"),
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor: a token name, or cli")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only entries at or after this RFC 3339 instant")
    ] = None,
    limit: Annotated[int, typer.Option(help="Entries per page (1 to 500)")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the last page")] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show the audit log, newest first: who changed what, with before and after."""
    if not 1 <= limit <= MAX_AUDIT_PAGE:
        raise ValidationFailed.at("/query/limit", f"limit is 1 to {MAX_AUDIT_PAGE}", "range")
    query = AuditPage(record, actor, _instant(since), limit, cursor)
    result = run(target(store, url, token), lambda op: op.audit(query))

    def render() -> None:
        print_rows("audit log", result["items"], AUDIT_COLUMNS)
        if result["next_cursor"] is not None:
            typer.echo(f"more: --cursor {result['next_cursor']}")

    show(result, as_json, render)


def _instant(text: str | None) -> datetime | None:
    """``--since`` as an instant, checked as ``GET /admin/v1/audit`` checks it."""
    if text is None:
        return None
    instant = days.parse_rfc3339(text)
    if instant is None:
        raise ValidationFailed.at(
            "/query/since",
            "since must be an RFC 3339 instant with its offset",
            "format",
            "e.g. 2026-12-01T00:00:00Z",
        )
    return instant
