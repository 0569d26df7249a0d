"""Operator tokens and the audit log: ``tokens create|list|revoke`` and ``audit``."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

import typer

from quotad.api import operators, views
from quotad.cli.console import (
    JsonOption,
    handle_errors,
    print_json,
    print_record,
    print_rows,
    print_secret,
    show,
    validated,
)
from quotad.cli.stores import StoreOption, run_with_store
from quotad.domain.operators import AuditQuery, Role
from quotad.errors import ValidationFailed
from quotad.service import audit, tokens
from quotad.service.context import Context

tokens_app = typer.Typer(
    help="Named operator tokens with a role: admin, read or verify (shown only when created).",
    no_args_is_help=True,
)
TOKEN_COLUMNS = ("id", "name", "role", "hint", "status", "created_at", "revoked_at")
AUDIT_COLUMNS = ("at", "actor", "action", "target", "request_id")
MAX_AUDIT_PAGE = 500


@tokens_app.command("create")
@handle_errors
def tokens_create(
    name: str,
    role: Annotated[str, typer.Option(help="admin, read or verify")],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a named operator token and print it once."""
    body = validated(operators.TokenIn, name=name, role=role)

    async def action(ctx: Context) -> dict[str, Any]:
        issued = await tokens.create_token(ctx, body.name, Role(body.role))
        return {**operators.token_view(issued.record, ctx.clock.now()), "token": issued.secret}

    view = run_with_store(store, action)
    if as_json:
        print_json(view)
        return
    print_record(f"operator token {view['id']} created", view, TOKEN_COLUMNS)
    print_secret("Operator token", view["token"])


@tokens_app.command("list")
@handle_errors
def tokens_list(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List the named operator tokens (never the tokens), revoked ones included."""

    async def action(ctx: Context) -> list[dict[str, Any]]:
        now = ctx.clock.now()
        return [operators.token_view(t, now) for t in await tokens.list_tokens(ctx)]

    rows = run_with_store(store, action)
    show(rows, as_json, lambda: print_rows("operator tokens", rows, TOKEN_COLUMNS))


@tokens_app.command("revoke")
@handle_errors
def tokens_revoke(token_id: str, store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Revoke an operator token now."""

    async def action(ctx: Context) -> dict[str, Any]:
        return operators.token_view(await tokens.revoke_token(ctx, token_id), ctx.clock.now())

    view = run_with_store(store, action)
    show(
        view,
        as_json,
        lambda: print_record(f"operator token {view['id']} revoked", view, TOKEN_COLUMNS),
    )


@handle_errors
def audit_command(
    target: Annotated[
        str | None, typer.Option(help="Only this record: KIND:ID, e.g. account:acme")
    ] = None,
    actor: Annotated[str | None, typer.Option(help="Only this actor: a token name, or cli")] = None,
    since: Annotated[
        str | None, typer.Option(help="Only entries at or after this RFC 3339 instant")
    ] = None,
    limit: Annotated[int, typer.Option(help="Entries per page (1 to 500)")] = 50,
    cursor: Annotated[str | None, typer.Option(help="next_cursor of the last page")] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Show the audit log, newest first: who changed what, with before and after."""
    if not 1 <= limit <= MAX_AUDIT_PAGE:
        raise ValidationFailed.at("/query/limit", f"limit is 1 to {MAX_AUDIT_PAGE}", "range")
    instant = _instant(since)
    before_id = views.decode_cursor(cursor)

    async def action(ctx: Context) -> dict[str, Any]:
        query = AuditQuery(
            limit=limit + 1,
            before_id=before_id,
            targets=() if target is None else (target,),
            actor=actor,
            since=instant,
        )
        found = await audit.entries(ctx, query)
        page = found[:limit]
        more = len(found) > limit
        return {
            "items": [operators.audit_view(e) for e in page],
            "next_cursor": views.encode_cursor(page[-1].id) if more else None,
        }

    result = run_with_store(store, action)

    def render() -> None:
        print_rows("audit log", result["items"], AUDIT_COLUMNS)
        if result["next_cursor"] is not None:
            typer.echo(f"more: --cursor {result['next_cursor']}")

    show(result, as_json, render)


def _instant(text: str | None) -> datetime | None:
    if text is None:
        return None
    try:
        instant = datetime.fromisoformat(text)
    except ValueError:
        instant = None
    if instant is None or instant.tzinfo is None:
        raise ValidationFailed.at(
            "/query/since", "since must be an RFC 3339 instant with an offset", "format"
        )
    return instant
