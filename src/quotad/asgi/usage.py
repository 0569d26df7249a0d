"""The customer usage endpoints (``GET /v1/usages``, ``GET /usage/{service}``) for any app.

Embedded, they are quotad's own router (``quotad.api.customer``) with quotad's error
handlers and request guard, over the backend's context; remote, they are relayed to the
quotad server. Either way a client of the two seed documents sees exactly what quotad
itself would answer.
"""

from __future__ import annotations

import re
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from quotad.http.types import ASGIApp, Receive, Scope, Send
from quotad.service.context import Context

if TYPE_CHECKING:
    from quotad.asgi.backends import QuotaBackend

USAGE_PATHS = ("/v1/usages", "/usage/{service}")
_USAGE_PATH = re.compile(r"^/(?:v1/usages|usage/[^/]+)/?$")


def is_usage_path(scope: Scope) -> bool:
    """Whether the request is for one of the two customer usage endpoints."""
    return bool(_USAGE_PATH.match(scope.get("path", "")))


class _Opening:
    """Opens the backend before the first request reaches ``app``."""

    def __init__(self, app: ASGIApp, opener: Callable[[], Awaitable[None]]) -> None:
        self.app = app
        self.opener = opener

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.opener()
        await self.app(scope, receive, send)


def embedded_usage_app(ctx: Context, opener: Callable[[], Awaitable[None]]) -> ASGIApp:
    """quotad's customer router, error handlers and request guard over ``ctx``."""
    from fastapi import FastAPI

    from quotad.api import customer, errors
    from quotad.api.responses import ORJSONResponse
    from quotad.http.middleware import JsonBodyGuard, RequestContext

    app = FastAPI(
        openapi_url=None, docs_url=None, redoc_url=None, default_response_class=ORJSONResponse
    )
    app.state.ctx = ctx
    errors.install(app)
    app.include_router(customer.router)
    app.add_middleware(JsonBodyGuard, max_body_bytes=ctx.settings.max_body_bytes)
    app.add_middleware(RequestContext)
    return _Opening(app, opener)


def mount_usage_endpoints(app: Any, backend: QuotaBackend) -> None:
    """Serve ``GET /v1/usages`` and ``GET /usage/{service}`` from a Starlette or FastAPI app.

    The routes go first, so they win over the app's own; ``QuotadMiddleware`` does not
    meter them (they are throttled per key instead, as in quotad)::

        mount_usage_endpoints(app, backend)
    """
    from starlette.routing import Route

    usage = backend.usage_app()
    routes = [Route(path, usage, methods=["GET"]) for path in USAGE_PATHS]
    app.router.routes[:0] = routes
