"""The ``quotad`` command: serve the API and administer a deployment."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Annotated, Any, TypeVar

import orjson
import typer
from rich.console import Console

from quotad import __version__
from quotad.service import auth
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import store_from_url

app = typer.Typer(
    name="quotad",
    help="Usage metering and quotas for API providers.",
    no_args_is_help=True,
    add_completion=False,
)
console = Console()
T = TypeVar("T")

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
        console.print(f"[red]invalid settings:[/red] {exc}")
        raise typer.Exit(2) from exc


def run_with_store(store_url: str | None, action: Callable[[Context], Awaitable[T]]) -> T:
    """Open the store, run ``action`` with a context over it, and close the store."""
    settings = load_settings(store_url=store_url)

    async def main() -> T:
        ctx = Context(store_from_url(settings.store_url), settings)
        await ctx.store.open()
        try:
            return await action(ctx)
        finally:
            await ctx.store.close()

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
    import uvicorn

    from quotad import demo as demo_module
    from quotad import logs
    from quotad.api import create_app

    settings = load_settings(store_url=store, host=host, port=port)
    logs.configure(settings.log_level, settings.log_format)

    async def prepare(ctx: Context) -> tuple[str | None, demo_module.Demo | None]:
        token = await auth.ensure_operator_token(ctx)
        seeded = await demo_module.seed(ctx) if demo else None
        return token, seeded

    token, seeded = run_with_store(settings.store_url, prepare)
    base = f"http://{settings.host}:{settings.port}"
    _print_banner(settings, base, token, seeded)
    ctx = Context(store_from_url(settings.store_url), settings)
    uvicorn.run(
        create_app(ctx),
        host=settings.host,
        port=settings.port,
        log_level="warning",
        access_log=False,
        log_config=None,
    )


def _print_banner(
    settings: Settings, base: str, token: str | None, seeded: Any
) -> None:
    out = Console(highlight=False, soft_wrap=True)
    out.print(f"[bold]quotad {__version__}[/bold] serving on {base} (store {settings.store_url})")
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
    from quotad.api import create_app

    ctx = Context(store_from_url("memory://"), Settings(store_url="memory://"))
    document = create_app(ctx, manage_store=False).openapi()
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"


def main() -> None:
    """Entry point of the ``quotad`` script."""
    app()
