"""A metering reverse proxy in front of any HTTP API, no code change (``quotad proxy``).

Each request goes to the service whose path covers it (``quotad.asgi.routes``), is
checked by that service's ``QuotadMiddleware`` (key, quota, headers, refunds on 5xx, 404
and 405; with a ``cost_header``, a reservation settled at the cost the upstream reports),
then relayed to the upstream with both bodies streamed (``quotad.asgi.forward``); the
customer's key is removed on the way unless ``keep_key``,
and ``X-Quotad-Include-Quota`` always (it is the proxy's to answer). The proxy serves
``GET /v1/usages`` and ``GET /usage/{service}`` itself, relays the excluded paths (the
upstream's API docs by default) unmetered, and answers 404 for a path no service covers.
"""

from __future__ import annotations

from collections.abc import Iterable

import httpx2

from quotad.asgi.backends import QuotaBackend
from quotad.asgi.forward import forward, target_url
from quotad.asgi.middleware import (
    DOCS_PATHS,
    INCLUDE_QUOTA_HEADER,
    REFUND_STATUSES,
    Cost,
    QuotadMiddleware,
)
from quotad.asgi.routes import ServiceRoute, check_pattern, matches, route_for
from quotad.asgi.usage import is_usage_path
from quotad.errors import ErrorCode
from quotad.http.errors import error_answer
from quotad.http.types import ASGIApp, Receive, Scope, Send

CUSTOMER_KEY_HEADERS = (b"authorization", b"x-api-key")
# Asked of the proxy, answered by the proxy: never the upstream's business.
PROXY_HEADERS = (INCLUDE_QUOTA_HEADER.encode(),)


class ProxyApp:
    """An ASGI app that relays every HTTP request to ``upstream``, streaming.

    Args:
        upstream: the base URL of the API behind the proxy (its path is a prefix).
        keep_key: forward the customer's ``Authorization`` / ``x-api-key`` headers
            (``X-Quotad-Include-Quota`` is never forwarded).
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
        self.upstream = httpx2.URL(upstream)
        self.drop = PROXY_HEADERS + (() if keep_key else CUSTOMER_KEY_HEADERS)
        self.timeout = httpx2.Timeout(timeout, connect=min(timeout, 10.0))
        self.transport = transport
        self._client: httpx2.AsyncClient | None = None

    def client(self) -> httpx2.AsyncClient:
        """The pooled client to the upstream (created on first use)."""
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


class ServiceRouter:
    """Sends each request to the app of the service covering its path.

    The usage endpoints go to ``usage``, excluded paths straight to ``relay``
    (unmetered), a path no service covers is answered 404 ``NOT_FOUND``. The lifespan is
    answered here: the backend is opened at startup, the relay and the backend are closed
    at shutdown.
    """

    def __init__(
        self,
        routes: list[tuple[ServiceRoute, ASGIApp]],
        *,
        usage: ASGIApp,
        relay: ProxyApp,
        backend: QuotaBackend,
        exclude_paths: tuple[str, ...],
    ) -> None:
        self.routes = routes
        self.usage = usage
        self.relay = relay
        self.backend = backend
        self.exclude_paths = exclude_paths
        self._apps = {id(route): app for route, app in routes}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Route HTTP; answer the lifespan; refuse websockets."""
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
        elif scope["type"] != "http":
            await send({"type": "websocket.close", "code": 1003})
        elif is_usage_path(scope):
            await self.usage(scope, receive, send)
        elif any(matches(pattern, scope["path"]) for pattern in self.exclude_paths):
            await self.relay(scope, receive, send)
        else:
            route = route_for([route for route, _ in self.routes], scope["path"])
            if route is None:
                note = "no service of this proxy serves this path"
                await error_answer(ErrorCode.NOT_FOUND, note)(scope, receive, send)
                return
            await self._apps[id(route)](scope, receive, send)

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                try:
                    await self.backend.open()
                except Exception as exc:
                    await send({"type": "lifespan.startup.failed", "message": str(exc)})
                    return
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.relay.aclose()
                await self.backend.close()
                await send({"type": "lifespan.shutdown.complete"})
                return


def build_proxy(
    upstream: str,
    *,
    service: str | list[ServiceRoute],
    backend: QuotaBackend,
    cost: Cost = 1,
    keep_key: bool = False,
    refund_on_error: bool = True,
    refund_statuses: Iterable[int] = REFUND_STATUSES,
    exclude_paths: Iterable[str] = DOCS_PATHS,
    timeout: float = 60.0,
    transport: httpx2.AsyncBaseTransport | None = None,
    cost_header: str | None = None,
    reserve_ttl: int = 300,
) -> ASGIApp:
    """The proxy as one ASGI app: routing by service, quota middleware, usage, streaming relay.

    Args:
        upstream: the base URL of the API behind the proxy.
        service: one service for every path, or the services with the paths they cover
            (``[ServiceRoute("insights", "/insights/"), ...]``).
        backend: where decisions are made.
        cost: units per request: a number, or a function of the scope (a ``CostMap``).
        keep_key: forward the customer's key to the upstream.
        refund_on_error: give the units back when the upstream answers 5xx or cannot be
            reached.
        refund_statuses: the 4xx answers whose units are given back (404 and 405).
        exclude_paths: paths relayed unmetered, with no key needed (the API docs).
        timeout: seconds to wait for the upstream.
        transport: an ``httpx2`` async transport (tests).
        cost_header: reserve each request's cost and commit the one the upstream puts in
            this answer header (absent or invalid: the reserved cost; a 5xx or no answer:
            cancel); the header is not passed on.
        reserve_ttl: seconds such a reservation is held if the proxy never settles it.
    """
    routes = [ServiceRoute(service)] if isinstance(service, str) else list(service)
    excluded = tuple(check_pattern(path) for path in exclude_paths)
    relay = ProxyApp(upstream, keep_key=keep_key, timeout=timeout, transport=transport)
    apps: list[tuple[ServiceRoute, ASGIApp]] = [
        (
            route,
            QuotadMiddleware(
                relay,
                service=route.service,
                backend=backend,
                cost=cost,
                refund_on_error=refund_on_error,
                refund_statuses=refund_statuses,
                exclude_paths=excluded,
                reserve=cost_header is not None,
                reserve_ttl=reserve_ttl,
                cost_header=cost_header,
            ),
        )
        for route in routes
    ]
    return ServiceRouter(
        apps, usage=backend.usage_app(), relay=relay, backend=backend, exclude_paths=excluded
    )
