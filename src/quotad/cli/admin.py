"""Administration: ``services``, ``plans``, ``accounts`` and ``keys``."""

from __future__ import annotations

import dataclasses
from datetime import datetime
from typing import Annotated, Any

import typer
from rich.markup import escape

from quotad.api import schemas, views
from quotad.cli.console import (
    JsonOption,
    console,
    handle_errors,
    print_json,
    print_record,
    print_rows,
    print_secret,
    show,
    validated,
)
from quotad.cli.stores import PAGE_SIZE, StoreOption, every, run_with_store
from quotad.domain import days
from quotad.domain.models import AccountStatus, Limit, Overrides, Quota
from quotad.errors import ValidationFailed
from quotad.service import admin, usage
from quotad.service.context import Context

# Services ---------------------------------------------------------------------
services_app = typer.Typer(help="Metered services.", no_args_is_help=True)
SERVICE_COLUMNS = ("name", "description", "created_at")


@services_app.command("list")
@handle_errors
def services_list(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List the registered services."""

    async def action(ctx: Context) -> list[dict[str, Any]]:
        return [views.service_view(s) for s in await admin.list_services(ctx)]

    rows = run_with_store(store, action)
    show(rows, as_json, lambda: print_rows("services", rows, SERVICE_COLUMNS))


@services_app.command("create")
@handle_errors
def services_create(
    name: str,
    description: Annotated[str, typer.Option(help="What the service is")] = "",
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Register a service."""
    body = validated(schemas.ServiceIn, name=name, description=description)

    async def action(ctx: Context) -> dict[str, Any]:
        return views.service_view(await admin.create_service(ctx, body.name, body.description))

    view = run_with_store(store, action)
    show(
        view,
        as_json,
        lambda: print_record(f"service {view['name']} created", view, SERVICE_COLUMNS),
    )


# Plans ------------------------------------------------------------------------
plans_app = typer.Typer(help="Plans: quotas per service and resource limits.", no_args_is_help=True)


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
def plans_list(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List the plans."""

    async def action(ctx: Context) -> list[dict[str, Any]]:
        plans = await every(lambda after: admin.list_plans(ctx, PAGE_SIZE, after), lambda p: p.id)
        return [views.plan_view(p) for p in plans]

    rows = run_with_store(store, action)
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["quotas"] = [f"{name}={q['total']}/{q['period']}" for name, q in row["quotas"].items()]
        row["limits"] = [f"{x['name']}={x['limit']}" for x in row["limits"]]
    print_rows("plans", rows, ("id", "description", "quotas", "limits"))


@plans_app.command("show")
@handle_errors
def plans_show(plan_id: str, store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Show one plan."""

    async def action(ctx: Context) -> dict[str, Any]:
        return views.plan_view(await admin.require_plan(ctx, plan_id))

    view = run_with_store(store, action)
    show(view, as_json, lambda: print_plan(f"plan {view['id']}", view))


@plans_app.command("create")
@handle_errors
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
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create a plan whose quotas name registered services."""
    body = validated(
        schemas.PlanIn,
        id=plan_id,
        description=description,
        quotas=_quota_options(quota or []),
        limits=_limit_options(limit or []),
    )
    quotas = {name: Quota(q.total, q.period) for name, q in body.quotas.items()}
    limits = [Limit(x.name, x.description, x.limit) for x in body.limits]

    async def action(ctx: Context) -> dict[str, Any]:
        plan = await admin.create_plan(ctx, body.id, quotas, limits, body.description)
        return views.plan_view(plan)

    view = run_with_store(store, action)
    show(view, as_json, lambda: print_plan(f"plan {view['id']} created", view))


@plans_app.command("delete")
@handle_errors
def plans_delete(plan_id: str, store: StoreOption = None) -> None:
    """Delete a plan that no account uses."""

    async def action(ctx: Context) -> None:
        await admin.delete_plan(ctx, plan_id)

    run_with_store(store, action)
    console.print(f"plan {escape(plan_id)} deleted")


# Accounts ---------------------------------------------------------------------
accounts_app = typer.Typer(help="Customer accounts.", no_args_is_help=True)
ACCOUNT_COLUMNS = ("id", "name", "plan", "timezone", "status", "created_at")


@accounts_app.command("list")
@handle_errors
def accounts_list(
    search: Annotated[str | None, typer.Option(help="Only ids or names containing this")] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """List the accounts."""

    async def action(ctx: Context) -> list[dict[str, Any]]:
        accounts = await every(
            lambda after: admin.list_accounts(ctx, PAGE_SIZE, after, search), lambda a: a.id
        )
        return [views.account_view(a) for a in accounts]

    rows = run_with_store(store, action)
    show(rows, as_json, lambda: print_rows("accounts", rows, ACCOUNT_COLUMNS))


@accounts_app.command("show")
@handle_errors
def accounts_show(account_id: str, store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Show one account with today's usage of each quota and resource limit."""

    async def action(ctx: Context) -> dict[str, Any]:
        account = await admin.require_account(ctx, account_id)
        lines = [dataclasses.asdict(x) for x in await usage.overview(ctx, account)]
        return {**views.account_view(account), "usage": lines}

    view = run_with_store(store, action)
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
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Create an account on an existing plan."""
    body = validated(schemas.AccountIn, id=account_id, name=name, plan=plan, timezone=timezone)

    async def action(ctx: Context) -> dict[str, Any]:
        account = await admin.create_account(
            ctx, body.id, body.name, body.plan, body.timezone, Overrides()
        )
        return views.account_view(account)

    view = run_with_store(store, action)
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
    status: Annotated[AccountStatus | None, typer.Option(help="active or suspended")] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Change an account's name, plan, timezone or status."""
    body = validated(
        schemas.AccountPatch,
        name=name,
        plan=plan,
        timezone=timezone,
        status=None if status is None else status.value,
    )
    changes = admin.AccountChanges(
        name=body.name, plan_id=body.plan, timezone=body.timezone, status=status
    )

    async def action(ctx: Context) -> dict[str, Any]:
        return views.account_view(await admin.update_account(ctx, account_id, changes))

    view = run_with_store(store, action)
    show(
        view, as_json, lambda: print_record(f"account {view['id']} updated", view, ACCOUNT_COLUMNS)
    )


@accounts_app.command("delete")
@handle_errors
def accounts_delete(
    account_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    store: StoreOption = None,
) -> None:
    """Delete an account with its keys, usage and gauges."""
    if not yes:
        typer.confirm(f"Delete account {account_id} with its keys and usage?", abort=True)

    async def action(ctx: Context) -> None:
        await admin.delete_account(ctx, account_id)

    run_with_store(store, action)
    console.print(f"account {escape(account_id)} deleted")


# Keys -------------------------------------------------------------------------
keys_app = typer.Typer(help="API keys (secrets are shown only when issued).", no_args_is_help=True)
KEY_COLUMNS = ("id", "name", "hint", "status", "scopes", "created_at", "expires_at", "replaced_by")
KEY_LIST_COLUMNS = ("id", "name", "hint", "status", "scopes", "expires_at", "replaced_by")


@keys_app.command("list")
@handle_errors
def keys_list(account_id: str, store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List an account's keys (never their secrets)."""

    async def action(ctx: Context) -> list[dict[str, Any]]:
        keys = await admin.list_keys(ctx, account_id)
        now = ctx.clock.now()
        return [views.key_view(k, now) for k in keys]

    rows = run_with_store(store, action)
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
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a key for an account and print its secret once."""
    body = validated(schemas.KeyIn, name=name, expires_at=expires_at, scopes=scope)
    scopes = None if body.scopes is None else tuple(body.scopes)

    async def action(ctx: Context) -> dict[str, Any]:
        issued = await admin.create_key(ctx, account_id, body.name, body.expires_at, scopes)
        return views.issued_key_view(issued, ctx.clock.now())

    view = run_with_store(store, action)
    if as_json:
        print_json(view)
        return
    print_record(f"key {view['id']} created", view, KEY_COLUMNS)
    print_secret("API key", view["key"])


@keys_app.command("revoke")
@handle_errors
def keys_revoke(key_id: str, store: StoreOption = None, as_json: JsonOption = False) -> None:
    """Revoke a key now."""

    async def action(ctx: Context) -> dict[str, Any]:
        return views.key_view(await admin.revoke_key(ctx, key_id), ctx.clock.now())

    view = run_with_store(store, action)
    show(view, as_json, lambda: print_record(f"key {view['id']} revoked", view, KEY_COLUMNS))


@keys_app.command("rotate")
@handle_errors
def keys_rotate(
    key_id: str,
    grace_seconds: Annotated[int, typer.Option(help="How long the old key keeps working")] = 3600,
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Issue a replacement key and print its secret once; the old one works for the grace period."""
    body = validated(schemas.RotateIn, grace_seconds=grace_seconds)

    async def action(ctx: Context) -> tuple[dict[str, Any], datetime | None]:
        issued = await admin.rotate_key(ctx, key_id, body.grace_seconds)
        old = await admin.require_key(ctx, key_id)
        return views.issued_key_view(issued, ctx.clock.now()), old.expires_at

    view, old_until = run_with_store(store, action)
    if as_json:
        print_json(view)
        return
    print_record(f"key {key_id} rotated to {view['id']}", view, KEY_COLUMNS)
    if old_until is not None:
        console.print(f"the old key {escape(key_id)} stays valid until {days.rfc3339(old_until)}")
    print_secret("new API key", view["key"])
