"""Administration: ``services``, ``plans``, ``accounts`` and ``keys``.

Each command checks its input with the API's request schema, then asks the
``Operator`` of its target (a local store or, with ``--url``, a running quotad) and
prints the views it answers.
"""

from __future__ import annotations

from enum import StrEnum
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
    print_secret,
    show,
    validated,
)
from quotad.cli.operator import PlanLimit
from quotad.cli.stores import StoreOption
from quotad.cli.target import CreateOption, TokenOption, UrlOption, run, target
from quotad.errors import ValidationFailed

# Services ---------------------------------------------------------------------
services_app = App(help="Metered services.")
SERVICE_COLUMNS = ("name", "description", "created_at")


@services_app.command("list")
@handle_errors
def services_list(
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the registered services."""
    rows = run(target(store, url, token), lambda op: op.list_services())
    show(rows, as_json, lambda: print_rows("services", rows, SERVICE_COLUMNS))


@services_app.command("create")
@cli_errors({"name": "NAME"})
def services_create(
    name: str,
    description: Annotated[str, typer.Option(help="What the service is")] = "",
    as_json: JsonOption = False,
    store: StoreOption = None,
    create: CreateOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Register a service."""
    from quotad.api import schemas

    body = validated(schemas.ServiceIn, name=name, description=description)
    where = target(store, url, token, create)
    view = run(where, lambda op: op.create_service(body.name, body.description))
    show(
        view,
        as_json,
        lambda: print_record(f"service {view['name']} created", view, SERVICE_COLUMNS),
    )


# Plans ------------------------------------------------------------------------
plans_app = App(help="Plans: quotas per service and resource limits.")


def _number(text: str) -> int | str:
    # The API's integers are strict; a command-line number arrives as text.
    stripped = text.strip()
    return int(stripped) if stripped.lstrip("-").isdigit() else text


def _quota_options(items: list[str]) -> dict[str, dict[str, int | str]]:
    quotas: dict[str, dict[str, int | str]] = {}
    for text in items:
        name, sep, total = text.partition("=")
        if not sep:
            raise ValidationFailed.at(
                "/body/quotas", f"{text!r} is not SERVICE=TOTAL", "format", "e.g. insights=250"
            )
        quotas[name] = {"total": _number(total)}
    return quotas


def _limit_options(items: list[str]) -> list[dict[str, int | str]]:
    limits = []
    for index, text in enumerate(items):
        name, sep, rest = text.partition("=")
        value, _, description = rest.partition(":")
        if not sep:
            raise ValidationFailed.at(
                f"/body/limits/{index}",
                f"{text!r} is not NAME=LIMIT[:DESCRIPTION]",
                "format",
                "e.g. cohort.max_count=10:Number of known contacts",
            )
        limits.append({"name": name, "limit": _number(value), "description": description})
    return limits


def print_plan(title: str, view: dict[str, Any]) -> None:
    """A plan with its quotas and limits."""
    print_record(title, view, ("id", "description", "created_at"))
    quotas = [{"service": name, **quota} for name, quota in view["quotas"].items()]
    print_rows("quotas", quotas, ("service", "total", "period"))
    print_rows("limits", view["limits"], ("name", "limit", "description"))


@plans_app.command("list")
@handle_errors
def plans_list(
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the plans."""
    rows = run(target(store, url, token), lambda op: op.list_plans())
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["quotas"] = [f"{name}={q['total']}/{q['period']}" for name, q in row["quotas"].items()]
        row["limits"] = [f"{x['name']}={x['limit']}" for x in row["limits"]]
    print_rows("plans", rows, ("id", "description", "quotas", "limits"))


@plans_app.command("show")
@handle_errors
def plans_show(
    plan_id: str,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show one plan."""
    view = run(target(store, url, token), lambda op: op.get_plan(plan_id))
    show(view, as_json, lambda: print_plan(f"plan {view['id']}", view))


@plans_app.command("create")
@cli_errors({"id": "PLAN_ID"})
def plans_create(
    plan_id: str,
    *,
    quota: Annotated[
        list[str] | None, typer.Option("--quota", help="SERVICE=TOTAL per day (repeatable)")
    ] = None,
    limit: Annotated[
        list[str] | None,
        typer.Option("--limit", help="NAME=LIMIT[:DESCRIPTION] (repeatable)"),
    ] = None,
    description: Annotated[str, typer.Option(help="What the plan is")] = "",
    as_json: JsonOption = False,
    store: StoreOption = None,
    create: CreateOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a plan whose quotas name registered services."""
    from quotad.api import schemas

    body = validated(
        schemas.PlanIn,
        id=plan_id,
        description=description,
        quotas=_quota_options(quota or []),
        limits=_limit_options(limit or []),
    )
    # The schema reads limits as JSON (SPEC 9): checked as the API checks them.
    from quotad.service import admin as admin_service

    parsed = admin_service.parse_quotas(body.quotas, "/body/quotas")
    quotas = {name: limits[0].total for name, limits in parsed.items()}
    limits = [PlanLimit(x.name, x.limit, x.description) for x in body.limits]
    where = target(store, url, token, create)
    view = run(where, lambda op: op.create_plan(body.id, quotas, limits, body.description))
    show(view, as_json, lambda: print_plan(f"plan {view['id']} created", view))


@plans_app.command("delete")
@handle_errors
def plans_delete(
    plan_id: str,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete a plan that no account uses."""
    run(target(store, url, token), lambda op: op.delete_plan(plan_id))
    console.print(f"plan {escape(plan_id)} deleted")


# Accounts ---------------------------------------------------------------------
accounts_app = App(help="Customer accounts.")
ACCOUNT_COLUMNS = ("id", "name", "plan", "timezone", "status", "created_at")


class Status(StrEnum):
    """An account's status (``quotad.domain.models.AccountStatus``)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


@accounts_app.command("list")
@handle_errors
def accounts_list(
    search: Annotated[str | None, typer.Option(help="Only ids or names containing this")] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the accounts."""
    rows = run(target(store, url, token), lambda op: op.list_accounts(search))
    show(rows, as_json, lambda: print_rows("accounts", rows, ACCOUNT_COLUMNS))


@accounts_app.command("show")
@handle_errors
def accounts_show(
    account_id: str,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show one account with today's usage of each quota and resource limit."""
    view = run(target(store, url, token), lambda op: op.show_account(account_id))
    if as_json:
        print_json(view)
        return
    print_record(f"account {view['id']}", view, ACCOUNT_COLUMNS)
    print_rows("usage today", view["usage"], ("name", "usage", "limit", "description"))


@accounts_app.command("create")
@handle_errors
def accounts_create(
    *,
    name: Annotated[str, typer.Option(help="Display name")],
    plan: Annotated[str, typer.Option(help="Plan id")],
    account_id: Annotated[str | None, typer.Option("--id", help="Id (default: generated)")] = None,
    timezone: Annotated[str, typer.Option(help="IANA timezone of its usage days")] = "UTC",
    as_json: JsonOption = False,
    store: StoreOption = None,
    create: CreateOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create an account on an existing plan."""
    from quotad.api import schemas

    body = validated(schemas.AccountIn, id=account_id, name=name, plan=plan, timezone=timezone)
    where = target(store, url, token, create)
    view = run(where, lambda op: op.create_account(body.id, body.name, body.plan, body.timezone))
    show(
        view, as_json, lambda: print_record(f"account {view['id']} created", view, ACCOUNT_COLUMNS)
    )


@accounts_app.command("update")
@handle_errors
def accounts_update(
    account_id: str,
    *,
    name: Annotated[str | None, typer.Option(help="New display name")] = None,
    plan: Annotated[str | None, typer.Option(help="New plan id")] = None,
    timezone: Annotated[str | None, typer.Option(help="New IANA timezone")] = None,
    status: Annotated[Status | None, typer.Option(help="active or suspended")] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Change an account's name, plan, timezone or status."""
    from quotad.api import schemas

    body = validated(
        schemas.AccountPatch,
        name=name,
        plan=plan,
        timezone=timezone,
        status=None if status is None else status.value,
    )
    where = target(store, url, token)
    view = run(
        where,
        lambda op: op.update_account(account_id, body.name, body.plan, body.timezone, body.status),
    )
    show(
        view, as_json, lambda: print_record(f"account {view['id']} updated", view, ACCOUNT_COLUMNS)
    )


@accounts_app.command("delete")
@handle_errors
def accounts_delete(
    account_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete an account with its keys, usage and gauges."""
    where = target(store, url, token)
    if not yes:
        typer.confirm(f"Delete account {account_id} with its keys and usage?", abort=True)
    run(where, lambda op: op.delete_account(account_id))
    console.print(f"account {escape(account_id)} deleted")


# Keys -------------------------------------------------------------------------
keys_app = App(help="API keys (secrets are shown only when issued).")
KEY_COLUMNS = ("id", "name", "hint", "status", "scopes", "created_at", "expires_at", "replaced_by")
KEY_LIST_COLUMNS = ("id", "name", "hint", "status", "scopes", "expires_at", "replaced_by")


@keys_app.command("list")
@handle_errors
def keys_list(
    account_id: str,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List an account's keys (never their secrets)."""
    rows = run(target(store, url, token), lambda op: op.list_keys(account_id))
    show(rows, as_json, lambda: print_rows(f"keys of {account_id}", rows, KEY_LIST_COLUMNS))


@keys_app.command("create")
@handle_errors
def keys_create(
    account_id: str,
    *,
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    expires_at: Annotated[
        str | None, typer.Option("--expires-at", help="RFC 3339 expiry, e.g. 2025-01-01T00:00:00Z")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="usage:read, consume:* or consume:SERVICE (default: all)"),
    ] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Issue a key for an account and print its secret once."""
    from quotad.api import schemas

    body = validated(schemas.KeyIn, name=name, expires_at=expires_at, scopes=scope)
    where = target(store, url, token)
    view = run(where, lambda op: op.create_key(account_id, body.name, body.expires_at, body.scopes))
    if as_json:
        print_json(view)
        return
    print_record(f"key {view['id']} created", view, KEY_COLUMNS)
    print_secret("API key", view["key"])


@keys_app.command("revoke")
@handle_errors
def keys_revoke(
    key_id: str,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a key now."""
    view = run(target(store, url, token), lambda op: op.revoke_key(key_id))
    show(view, as_json, lambda: print_record(f"key {view['id']} revoked", view, KEY_COLUMNS))


@keys_app.command("rotate")
@handle_errors
def keys_rotate(
    key_id: str,
    grace_seconds: Annotated[int, typer.Option(help="How long the old key keeps working")] = 3600,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Issue a replacement key and print its secret once; the old one works for the grace period."""
    from quotad.api import schemas

    body = validated(schemas.RotateIn, grace_seconds=grace_seconds)
    where = target(store, url, token)
    view, old_until = run(where, lambda op: op.rotate_key(key_id, body.grace_seconds))
    if as_json:
        print_json(view)
        return
    print_record(f"key {key_id} rotated to {view['id']}", view, KEY_COLUMNS)
    if old_until is not None:
        console.print(f"the old key {escape(key_id)} stays valid until {old_until}")
    print_secret("new API key", view["key"])
