"""Running a deployment: ``serve``, ``migrate``, ``token reset`` and ``openapi``."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import orjson
import typer
from rich.console import Console

from quotad import __version__
from quotad.cli.console import App, console, err_console, handle_errors
from quotad.cli.stores import StoreOption, load_settings, run_with_store

if TYPE_CHECKING:  # the service layer and the stores load when a command runs
    from quotad.demo import Demo
    from quotad.service.context import Context
    from quotad.settings import Settings


@handle_errors
def serve(
    store: StoreOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (QUOTAD_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (QUOTAD_PORT)")] = None,
    grpc_port: Annotated[
        int | None,
        typer.Option(help="Also serve Envoy's rate limit gRPC API on this port (QUOTAD_GRPC_PORT)"),
    ] = None,
    demo: Annotated[
        bool, typer.Option("--demo", help="Create the demo deployment and print curl lines")
    ] = False,
) -> None:
    """Start the HTTP service."""
    from quotad import demo as demo_module
    from quotad import logs
    from quotad.api import server
    from quotad.api.app import create_app
    from quotad.service import auth
    from quotad.service.context import Context
    from quotad.storage import stores_from_url

    settings = load_settings(store_url=store, host=host, port=port, grpc_port=grpc_port)
    logs.configure_for(settings)
    interrupts = server.Interrupts()  # Ctrl-C stops it from now on, even mid-start
    interrupts.install()

    async def prepare(ctx: Context) -> tuple[str | None, Demo | None]:
        token = await auth.ensure_operator_token(ctx)
        seeded = await demo_module.seed(ctx) if demo else None
        return token, seeded

    token, seeded = run_with_store(settings.store_url, prepare, create=True)
    base = f"http://{settings.host}:{settings.port}"
    _print_banner(settings, base, token, seeded)
    ctx = Context(stores_from_url(settings.store_url), settings)
    app = create_app(ctx)
    if settings.grpc_port is not None:
        try:
            from quotad import envoy  # gRPC only when asked for
        except ImportError as exc:
            err_console.print(
                "--grpc-port needs the envoy extra: pip install 'quotad[envoy]'", markup=False
            )
            raise typer.Exit(2) from exc
        envoy.serve_beside(app, ctx, settings.host, settings.grpc_port)
    server.run(
        app,
        settings.host,
        settings.port,
        settings.trusted_proxies,
        limits=server.Limits.from_settings(settings),
        interrupts=interrupts,
    )


def _print_banner(settings: Settings, base: str, token: str | None, seeded: Demo | None) -> None:
    from quotad.storage import mask_url

    out = Console(highlight=False, soft_wrap=True)
    store = mask_url(settings.store_url)
    out.print(f"[bold]quotad {__version__}[/bold] serving on {base} (store {store})")
    if settings.grpc_port is not None:
        out.print(f"Envoy rate limit service (gRPC) on {settings.host}:{settings.grpc_port}")
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
    if seeded.key is not None:
        key = seeded.key
        out.print(f"demo account [bold]{seeded.account_id}[/bold], new API key: [bold]{key}[/bold]")
    else:  # an earlier start made it; only its digest is stored
        key = "<API key>"
        out.print(
            f"demo account [bold]{seeded.account_id}[/bold] already has its demo key "
            f"{seeded.key_hint}, shown when it was made and not stored (no new key was added); "
            f"make another with: [bold]{seeded.new_key_command} --store {shlex.quote(store)}[/bold]"
        )
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


@handle_errors
def migrate(store: StoreOption = None) -> None:
    """Create or upgrade the store's schema to the latest version."""

    async def noop(_ctx: Context) -> None:
        return None

    run_with_store(store, noop, create=True)  # opening a store creates or migrates it
    console.print("schema is up to date")


token_app = App(help="The operator token.")


@token_app.command("reset")
@handle_errors
def token_reset(store: StoreOption = None) -> None:
    """Generate a new operator token (the old one stops working) and print it once."""
    from quotad.service import auth

    token = run_with_store(store, auth.reset_operator_token)
    console.print(f"new operator token: [bold]{token}[/bold]", highlight=False)


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
    from quotad.api.app import create_api
    from quotad.service.context import Context
    from quotad.settings import Settings
    from quotad.storage import stores_from_url

    ctx = Context(stores_from_url("memory://"), Settings(store_url="memory://"))
    document = create_api(ctx).openapi()
    return orjson.dumps(document, option=orjson.OPT_INDENT_2 | orjson.OPT_SORT_KEYS).decode() + "\n"
