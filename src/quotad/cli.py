"""The ``quotad`` command: serve the API and administer a deployment."""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import sys
from collections.abc import Awaitable, Callable, Iterable, Sequence
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ParamSpec, TypeVar

import orjson
import pydantic
import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from quotad import __version__
from quotad.api import schemas, views
from quotad.domain import days
from quotad.domain.models import AccountStatus, Limit, Overrides, Quota
from quotad.errors import FieldError, QuotadError, ValidationFailed
from quotad.service import admin, auth, usage
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import mask_url, stores_from_url

app = typer.Typer(
    name="quotad",
    help="Usage metering and quotas for API providers.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
err_console = Console(stderr=True, highlight=False)
T = TypeVar("T")
M = TypeVar("M", bound=pydantic.BaseModel)
P = ParamSpec("P")

StoreOption = Annotated[
    str | None,
    typer.Option("--store", help="Store URL (default: QUOTAD_STORE_URL or sqlite:///./quotad.db)"),
]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table")]


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
        ctx = Context(stores, settings)
        await ctx.stores.open()
        try:
            return await action(ctx)
        finally:
            await ctx.stores.close()

    return asyncio.run(main())


@app.callback(invoke_without_command=True)
def _root(
    version: Annotated[bool, typer.Option("--version", help="Print the version and exit")] = False,
) -> None:
    if version:
        console.print(f"quotad {__version__}")
        raise typer.Exit


@app.command()
def serve(
    store: StoreOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (QUOTAD_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (QUOTAD_PORT)")] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Create the demo deployment and print curl lines")
    ] = False,
) -> None:
    """Start the HTTP service."""
    from quotad import demo as demo_module
    from quotad import logs
    from quotad.api import server
    from quotad.api.app import create_app

    settings = load_settings(store_url=store, host=host, port=port)
    logs.configure_for(settings)

    async def prepare(ctx: Context) -> tuple[str | None, demo_module.Demo | None]:
        token = await auth.ensure_operator_token(ctx)
        seeded = await demo_module.seed(ctx) if demo else None
        return token, seeded

    token, seeded = run_with_store(settings.store_url, prepare)
    base = f"http://{settings.host}:{settings.port}"
    _print_banner(settings, base, token, seeded)
    ctx = Context(stores_from_url(settings.store_url), settings)
    server.run(
        create_app(ctx),
        settings.host,
        settings.port,
        settings.trusted_proxies,
        limits=server.Limits.from_settings(settings),
    )


def _print_banner(settings: Settings, base: str, token: str | None, seeded: Any) -> None:
    out = Console(highlight=False, soft_wrap=True)
    store = mask_url(settings.store_url)
    out.print(f"[bold]quotad {__version__}[/bold] serving on {base} (store {store})")
    if token is not None:
        out.print(f"operator token (shown once, stored hashed): [bold]{token}[/bold]")
        operator = token
    elif settings.admin_token is not None:
        operator = "$QUOTAD_ADMIN_TOKEN"
    else:
        out.print("operator token: printed on first start; `quotad token reset` makes a new one")
        operator = "<operator token>"
    if seeded is None:
        out.print(f"API docs: {base}/docs")
        return
    key = seeded.key
    out.print(f"demo account [bold]{seeded.account_id}[/bold], new API key: [bold]{key}[/bold]")
    out.print("Try:")
    lines = [
        f"curl -s {base}/v1/usages -H 'Authorization: Bearer {key}'",
        f"curl -s '{base}/usage/insights?start_date={seeded.history_start}"
        f"&end_date={seeded.today}' -H 'x-api-key: {key}'",
        f"curl -s -X POST {base}/v1/verify -H 'Authorization: Bearer {operator}' "
        f"-H 'Content-Type: application/json' "
        f"""-d '{{"key": "{key}", "service": "insights", "cost": 1}}'""",
        f"curl -s {base}/usage/insights -H 'x-api-key: {key}'",
    ]
    for line in lines:
        out.print(f"  {line}", markup=False)
    out.print(f"API docs: {base}/docs   (Ctrl-C stops)")
    sys.stdout.flush()


@app.command()
def migrate(store: StoreOption = None) -> None:
    """Create or upgrade the store's schema to the latest version."""

    async def noop(_ctx: Context) -> None:
        return None

    run_with_store(store, noop)  # opening a store migrates it
    console.print("schema is up to date")


token_app = typer.Typer(help="The operator token.", no_args_is_help=True)
app.add_typer(token_app, name="token")


@token_app.command("reset")
def token_reset(store: StoreOption = None) -> None:
    """Generate a new operator token (the old one stops working) and print it once."""
    token = run_with_store(store, auth.reset_operator_token)
    console.print(f"new operator token: [bold]{token}[/bold]", highlight=False)


@app.command()
def openapi(
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout")
    ] = None,
) -> None:
    """Print the OpenAPI document of the HTTP API."""
    text = openapi_json()
    if output is None:
        sys.stdout.write(text)
    else:
        output.write_text(text)


def openapi_json() -> str:
    """The OpenAPI document, as the committed ``openapi.json`` holds it."""
    from quotad.api.app import create_app

    ctx = Context(stores_from_url("memory://"), Settings(store_url="memory://"))
    document = create_app(ctx, manage_store=False).openapi()
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


# Administration ---------------------------------------------------------------
# The commands below open the store directly (SQLite in WAL mode tolerates a running
# server) and go through the service layer exactly as the /admin/v1 routes do.
PAGE_SIZE = 500


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


async def every(
    fetch: Callable[[str | None], Awaitable[list[T]]], ident: Callable[[T], str]
) -> list[T]:
    """Every item of a paged store listing."""
    found: list[T] = []
    after: str | None = None
    while True:
        page = await fetch(after)
        found += page
        if len(page) < PAGE_SIZE:
            return found
        after = ident(page[-1])


# Services ---------------------------------------------------------------------
services_app = typer.Typer(help="Metered services.", no_args_is_help=True)
app.add_typer(services_app, name="services")
SERVICE_COLUMNS = ("name", "description", "created_at")


@services_app.command("list")
@handle_errors
def services_list(store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List the registered services."""

    async def action(ctx: Context) -> list[dict[str, Any]]:
        return [views.service_view(s) for s in await ctx.records.list_services()]

    rows = run_with_store(store, action)
    if as_json:
        print_json(rows)
    else:
        print_rows("services", rows, SERVICE_COLUMNS)


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
    if as_json:
        print_json(view)
    else:
        print_record(f"service {view['name']} created", view, SERVICE_COLUMNS)


# Plans ------------------------------------------------------------------------
plans_app = typer.Typer(help="Plans: quotas per service and resource limits.", no_args_is_help=True)
app.add_typer(plans_app, name="plans")


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
        plans = await every(lambda after: ctx.records.list_plans(PAGE_SIZE, after), lambda p: p.id)
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
    if as_json:
        print_json(view)
    else:
        print_plan(f"plan {view['id']}", view)


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
    if as_json:
        print_json(view)
    else:
        print_plan(f"plan {view['id']} created", view)


@plans_app.command("delete")
@handle_errors
def plans_delete(plan_id: str, store: StoreOption = None) -> None:
    """Delete a plan that no account uses."""

    async def action(ctx: Context) -> None:
        await ctx.records.delete_plan(plan_id)

    run_with_store(store, action)
    console.print(f"plan {escape(plan_id)} deleted")


# Accounts ---------------------------------------------------------------------
accounts_app = typer.Typer(help="Customer accounts.", no_args_is_help=True)
app.add_typer(accounts_app, name="accounts")
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
            lambda after: ctx.records.list_accounts(PAGE_SIZE, after, search), lambda a: a.id
        )
        return [views.account_view(a) for a in accounts]

    rows = run_with_store(store, action)
    if as_json:
        print_json(rows)
    else:
        print_rows("accounts", rows, ACCOUNT_COLUMNS)


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
    if as_json:
        print_json(view)
    else:
        print_record(f"account {view['id']} created", view, ACCOUNT_COLUMNS)


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
    if as_json:
        print_json(view)
    else:
        print_record(f"account {view['id']} updated", view, ACCOUNT_COLUMNS)


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
app.add_typer(keys_app, name="keys")
KEY_COLUMNS = ("id", "name", "hint", "status", "scopes", "created_at", "expires_at", "replaced_by")
KEY_LIST_COLUMNS = ("id", "name", "hint", "status", "scopes", "expires_at", "replaced_by")


@keys_app.command("list")
@handle_errors
def keys_list(account_id: str, store: StoreOption = None, as_json: JsonOption = False) -> None:
    """List an account's keys (never their secrets)."""

    async def action(ctx: Context) -> list[dict[str, Any]]:
        await admin.require_account(ctx, account_id)
        now = ctx.clock.now()
        return [views.key_view(k, now) for k in await ctx.records.list_keys(account_id)]

    rows = run_with_store(store, action)
    if as_json:
        print_json(rows)
    else:
        print_rows(f"keys of {account_id}", rows, KEY_LIST_COLUMNS)


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
    if as_json:
        print_json(view)
    else:
        print_record(f"key {view['id']} revoked", view, KEY_COLUMNS)


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


# Usage ------------------------------------------------------------------------
usage_app = typer.Typer(help="Daily usage of an account.", no_args_is_help=True)
app.add_typer(usage_app, name="usage")
USAGE_COLUMNS = ("date", "used", "remaining", "total")
ServiceOption = Annotated[str, typer.Option("--service", help="Service name")]


@usage_app.command("show")
@handle_errors
def usage_show(
    account_id: str,
    *,
    service: ServiceOption,
    start: Annotated[
        str | None, typer.Option("--from", help="First day, YYYY-MM-DD (default: today)")
    ] = None,
    end: Annotated[
        str | None, typer.Option("--to", help="Last day, YYYY-MM-DD (default: today)")
    ] = None,
    store: StoreOption = None,
    as_json: JsonOption = False,
    chart: Annotated[
        bool, typer.Option("--chart/--no-chart", help="Draw a bar chart above the table")
    ] = True,
) -> None:
    """Show an account's daily usage of a service (the rows of GET /usage/{service})."""

    async def action(ctx: Context) -> list[dict[str, Any]]:
        account = await admin.require_account(ctx, account_id)
        rows = await usage.history(ctx, account, service, start, end)
        return [views.usage_day_view(row) for row in rows]

    rows = run_with_store(store, action)
    if as_json:
        print_json(rows)
    elif not rows:
        console.print(f"no {escape(service)} usage by {escape(account_id)} in this window")
    else:
        if chart:
            print_usage_chart(rows, f"{account_id} {service}: used / total per day")
        print_rows(f"{account_id} {service} usage", rows, USAGE_COLUMNS)


@usage_app.command("adjust")
@handle_errors
def usage_adjust(
    account_id: str,
    *,
    service: ServiceOption,
    day: Annotated[str, typer.Option("--date", help="The day, YYYY-MM-DD")],
    delta: Annotated[int, typer.Option(help="Units to add (negative to credit back)")],
    store: StoreOption = None,
    as_json: JsonOption = False,
) -> None:
    """Correct or credit one day's usage (never below zero)."""
    body = validated(schemas.AdjustIn, date=day, delta=delta)

    async def action(ctx: Context) -> dict[str, Any]:
        row = await usage.adjust(ctx, account_id, service, body.date, body.delta)
        return views.usage_day_view(row)

    view = run_with_store(store, action)
    if as_json:
        print_json(view)
    else:
        print_rows(f"{account_id} {service} usage adjusted", [view], USAGE_COLUMNS)


# Commands implemented in their own modules ------------------------------------
from quotad.proxy import proxy_command  # noqa: E402 - registered after the commands above

app.command("proxy")(proxy_command)

from quotad.cli_data import export_command, import_command, print_usage_chart  # noqa: E402

app.command("export")(handle_errors(export_command))
app.command("import")(handle_errors(import_command))


def main() -> None:
    """Entry point of the ``quotad`` script."""
    app()
