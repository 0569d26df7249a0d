"""``quotad proxy``: parse the options, check the services, run ``quotad.asgi.proxy``."""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated

import typer

from quotad.cli.console import err_console
from quotad.cli.stores import StoreOption, load_settings, run_with_store
from quotad.errors import QuotadError

if TYPE_CHECKING:
    from quotad.service.context import Context


def proxy_command(
    upstream: Annotated[
        str,
        typer.Option(
            "--upstream", help="The API to put quotad in front of, e.g. http://127.0.0.1:9000"
        ),
    ],
    service: Annotated[
        list[str],
        typer.Option(
            "--service",
            metavar="NAME[=PATH]",
            help="The service requests consume: NAME for every path, or NAME=PATH for the "
            "paths it covers (PATH ending in / covers everything under it); repeatable",
        ),
    ],
    cost: Annotated[
        list[str] | None,
        typer.Option(
            "--cost",
            metavar="N|'[METHOD ]PATH=N'",
            help="Units per request: N (default 1), or '[METHOD ]PATH=N' for some routes, "
            "e.g. 'POST /v1/search=5'; repeatable",
        ),
    ] = None,
    store: StoreOption = None,
    host: Annotated[str | None, typer.Option(help="Bind address (QUOTAD_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (QUOTAD_PORT)")] = None,
    keep_key: Annotated[
        bool, typer.Option("--keep-key", help="Forward the customer's key to the upstream")
    ] = False,
    refund: Annotated[
        bool,
        typer.Option(
            "--refund/--no-refund",
            help="Give the cost back when the upstream answers 5xx, 404 or 405",
        ),
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the upstream")
    ] = 60.0,
    cost_header: Annotated[
        str | None,
        typer.Option(
            "--cost-header",
            metavar="NAME",
            help="Reserve each request's cost, then commit the actual cost the upstream "
            "answers in this header (absent or invalid: the reserved cost; a 5xx or no "
            "answer: nothing is charged)",
        ),
    ] = None,
    reserve_ttl: Annotated[
        int,
        typer.Option(
            "--reserve-ttl",
            min=1,
            max=604800,
            help="Seconds a --cost-header reservation is held if the proxy never settles it",
        ),
    ] = 300,
) -> None:
    """Meter any HTTP API: a reverse proxy enforcing each key's quota, streaming both ways."""
    # Imported here so that `quotad --help` and the other commands start without them.
    from quotad import logs
    from quotad.api import server
    from quotad.asgi.backends import EmbeddedBackend
    from quotad.asgi.middleware import REFUND_STATUSES
    from quotad.asgi.proxy import build_proxy
    from quotad.asgi.routes import CostMap, service_routes
    from quotad.service import admin
    from quotad.storage import mask_url

    if not upstream.startswith(("http://", "https://")):
        err_console.print(f"[red]--upstream must be an http(s) URL[/red], not {upstream!r}")
        raise typer.Exit(2)
    try:
        routes = service_routes(service)
        costs = CostMap.parse(cost or ())
    except ValueError as exc:
        err_console.print(f"[red]invalid option:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    settings = load_settings(store_url=store, host=host, port=port)
    logs.configure(settings.log_level, settings.log_format)

    async def check(ctx: Context) -> None:
        for route in routes:
            await admin.require_service(ctx, route.service)

    try:
        run_with_store(settings.store_url, check)  # also creates or migrates the schema
    except QuotadError as exc:  # an unknown service, an unreachable store
        err_console.print(f"[red]cannot start the proxy:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    app = build_proxy(
        upstream,
        service=routes,
        backend=EmbeddedBackend(settings=settings),
        cost=costs,
        keep_key=keep_key,
        refund_on_error=refund,
        refund_statuses=REFUND_STATUSES if refund else (),
        timeout=timeout,
        cost_header=cost_header,
        reserve_ttl=reserve_ttl,
    )
    served = ", ".join(f"{route.service} {route.path}" for route in routes)
    typer.echo(
        f"quotad proxy on http://{settings.host}:{settings.port} -> {upstream} "
        f"(services {served}; cost {costs.describe()}"
        + (f", settled by {cost_header}" if cost_header else "")
        + f"; store {mask_url(settings.store_url)})"
    )
    server.run(
        app,
        settings.host,
        settings.port,
        settings.trusted_proxies,
        # Uploads stream to the upstream at its pace: no body deadline; the rest as serve.
        limits=dataclasses.replace(server.Limits.from_settings(settings), body_timeout=None),
        server_header=False,  # the upstream's Server header is passed on instead
    )
