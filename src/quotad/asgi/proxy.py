"""A metering reverse proxy in front of any HTTP API, no code change (``quotad proxy``).

Each request is checked by ``QuotadMiddleware`` (key, quota, headers, refund on 5xx), then
relayed to the upstream with both bodies streamed (``quotad.asgi.forward``); the
customer's key is removed on the way unless ``keep_key``. The proxy serves
``GET /v1/usages`` and ``GET /usage/{service}`` itself.
"""

from __future__ import annotations

import httpx2

from quotad.asgi.backends import QuotaBackend
from quotad.asgi.forward import forward, target_url
from quotad.asgi.middleware import QuotadMiddleware
from quotad.asgi.usage import is_usage_path
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
        self.upstream = httpx2.URL(upstream)
        self.drop = () if keep_key else CUSTOMER_KEY_HEADERS
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


class _UsageFirst:
    """The usage endpoints from the backend; everything else from the upstream."""

    def __init__(self, usage: ASGIApp, upstream: ASGIApp) -> None:
        self.usage = usage
        self.upstream = upstream

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
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
    relay = ProxyApp(upstream, keep_key=keep_key, timeout=timeout, transport=transport)
    return QuotadMiddleware(
        _UsageFirst(backend.usage_app(), relay),
        service=service,
        backend=backend,
        cost=cost,
        refund_on_error=refund_on_error,
    )
