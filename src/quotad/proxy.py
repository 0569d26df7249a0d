"""``quotad proxy``: a metering reverse proxy in front of any HTTP API, no code change.

Each request is checked by ``QuotadMiddleware`` (key, quota, headers, refund on 5xx), then
relayed to the upstream with both bodies streamed (``quotad.asgi.forward``); the
customer's key is removed on the way unless ``--keep-key``. The proxy serves
``GET /v1/usages`` and ``GET /usage/{service}`` itself.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Annotated, Any

import typer

if TYPE_CHECKING:
    import httpx2

    from quotad.asgi.backends import QuotaBackend
    from quotad.http.types import ASGIApp, Receive, Scope, Send

CUSTOMER_KEY_HEADERS = (b"authorization", b"x-api-key")


class ProxyApp:
    """An ASGI app that relays every HTTP request to ``upstream``, streaming.

    Args:
        upstream: the base URL of the API behind the proxy (its path is a prefix).
        keep_key: forward the customer's ``Authorization`` / ``x-api-key`` headers.
        timeout: seconds to wait for the upstream to connect and for each read.
        transport: an ``httpx2`` async transport (tests).
    """

    def __init__(
        self,
        upstream: str,
        *,
        keep_key: bool = False,
        timeout: float = 60.0,
        transport: httpx2.AsyncBaseTransport | None = None,
    ) -> None:
        import httpx2

        self.upstream = httpx2.URL(upstream)
        self.drop = () if keep_key else CUSTOMER_KEY_HEADERS
        self.timeout = httpx2.Timeout(timeout, connect=min(timeout, 10.0))
        self.transport = transport
        self._client: httpx2.AsyncClient | None = None

    def client(self) -> httpx2.AsyncClient:
        """The pooled client to the upstream (created on first use)."""
        import httpx2

        if self._client is None:
            self._client = httpx2.AsyncClient(
                timeout=self.timeout,
                transport=self.transport,
                limits=httpx2.Limits(max_connections=200, max_keepalive_connections=50),
                follow_redirects=False,
            )
        return self._client

    async def aclose(self) -> None:
        """Close the connections to the upstream."""
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Relay HTTP; answer the lifespan; refuse websockets."""
        from quotad.asgi.forward import forward, target_url

        if scope["type"] == "http":
            url = target_url(self.upstream, scope)
            await forward(self.client(), url, scope, receive, send, self.drop)
        elif scope["type"] == "lifespan":
            while True:
                message = await receive()
                if message["type"] == "lifespan.startup":
                    await send({"type": "lifespan.startup.complete"})
                elif message["type"] == "lifespan.shutdown":
                    await self.aclose()
                    await send({"type": "lifespan.shutdown.complete"})
                    return
        elif scope["type"] == "websocket":
            await send({"type": "websocket.close", "code": 1003})


class _UsageFirst:
    """The usage endpoints from the backend; everything else from the upstream."""

    def __init__(self, usage: ASGIApp, upstream: ASGIApp) -> None:
        self.usage = usage
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        from quotad.asgi.usage import is_usage_path

        if scope["type"] == "http" and is_usage_path(scope):
            await self.usage(scope, receive, send)
        else:
            await self.upstream(scope, receive, send)


def build_proxy(
    upstream: str,
    *,
    service: str,
    backend: QuotaBackend,
    cost: int = 1,
    keep_key: bool = False,
    refund_on_error: bool = True,
    timeout: float = 60.0,
    transport: httpx2.AsyncBaseTransport | None = None,
) -> ASGIApp:
    """The proxy as one ASGI app: quota middleware, usage endpoints, streaming relay."""
    from quotad.asgi.middleware import QuotadMiddleware

    relay = ProxyApp(upstream, keep_key=keep_key, timeout=timeout, transport=transport)
    return QuotadMiddleware(
        _UsageFirst(backend.usage_app(), relay),
        service=service,
        backend=backend,
        cost=cost,
        refund_on_error=refund_on_error,
    )


def proxy_command(
    upstream: Annotated[
        str,
        typer.Option(
            "--upstream", help="The API to put quotad in front of, e.g. http://127.0.0.1:9000"
        ),
    ],
    service: Annotated[str, typer.Option("--service", help="The service each request consumes")],
    cost: Annotated[int, typer.Option("--cost", min=0, help="Units each request consumes")] = 1,
    store: Annotated[
        str | None,
        typer.Option(
            "--store", help="Store URL (default: QUOTAD_STORE_URL or sqlite:///./quotad.db)"
        ),
    ] = None,
    host: Annotated[str | None, typer.Option(help="Bind address (QUOTAD_HOST)")] = None,
    port: Annotated[int | None, typer.Option(help="Port (QUOTAD_PORT)")] = None,
    keep_key: Annotated[
        bool, typer.Option("--keep-key", help="Forward the customer's key to the upstream")
    ] = False,
    refund: Annotated[
        bool,
        typer.Option(
            "--refund/--no-refund", help="Give the cost back when the upstream answers 5xx"
        ),
    ] = True,
    timeout: Annotated[
        float, typer.Option("--timeout", min=0.1, help="Seconds to wait for the upstream")
    ] = 60.0,
) -> None:
    """Meter any HTTP API: a reverse proxy enforcing each key's quota, streaming both ways."""
    from quotad import logs
    from quotad.api import server
    from quotad.asgi.backends import EmbeddedBackend
    from quotad.cli import err_console, load_settings, run_with_store
    from quotad.errors import QuotadError
    from quotad.service import admin
    from quotad.service.context import Context
    from quotad.storage import mask_url

    if not upstream.startswith(("http://", "https://")):
        err_console.print(f"[red]--upstream must be an http(s) URL[/red], not {upstream!r}")
        raise typer.Exit(2)
    settings = load_settings(store_url=store, host=host, port=port)
    logs.configure(settings.log_level, settings.log_format)

    async def check(ctx: Context) -> Any:
        return await admin.require_service(ctx, service)

    try:
        run_with_store(settings.store_url, check)  # also creates or migrates the schema
    except QuotadError as exc:  # an unknown service, an unreachable store
        err_console.print(f"[red]cannot start the proxy:[/red] {exc}", soft_wrap=True)
        raise typer.Exit(2) from exc
    app = build_proxy(
        upstream,
        service=service,
        backend=EmbeddedBackend(settings=settings),
        cost=cost,
        keep_key=keep_key,
        refund_on_error=refund,
        timeout=timeout,
    )
    typer.echo(
        f"quotad proxy on http://{settings.host}:{settings.port} -> {upstream} "
        f"(service {service}, cost {cost}, store {mask_url(settings.store_url)})"
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
