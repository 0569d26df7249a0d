"""The ASGI application: routers, error mapping and guards around one service context."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from fastapi import FastAPI
from starlette.responses import Response

from quotad import __version__, dashboard
from quotad import metrics as prometheus
from quotad.api import admin, customer, errors, metering, verify_endpoint
from quotad.api.openapi import document_also
from quotad.api.responses import ORJSONResponse
from quotad.http.middleware import JsonBodyGuard, RequestContext
from quotad.service import maintenance
from quotad.service.context import Context

DESCRIPTION = """\
Usage metering and quotas for API providers.

* **Customer API** (the account's API key, as `Authorization: Bearer` or `x-api-key`;
  both must carry the same key, and another `Authorization` scheme beside `x-api-key` is
  ignored): `GET /v1/usages`, `GET /usage/{service}`.
* **Operator API** (the operator token as `Authorization: Bearer`): `/admin/v1/…`,
  `POST /v1/verify`, `POST /v1/events`.

Every error is `{"error", "id", "note", "validationErrors"}`.
"""


def create_app(ctx: Context, *, manage_store: bool = True) -> FastAPI:
    """The quotad application over ``ctx``.

    Args:
        ctx: the service context (store, settings, clock).
        manage_store: open the store on startup and close it on shutdown.
    """

    @asynccontextmanager
    async def lifespan(_app: FastAPI) -> AsyncIterator[None]:
        if not manage_store:
            yield
            return
        await ctx.stores.open()
        upkeep = asyncio.create_task(maintenance.purge_forever(ctx), name="quotad-purge")
        try:
            yield
        finally:
            upkeep.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await upkeep
            await ctx.stores.close()

    app = FastAPI(
        title="quotad",
        version=__version__,
        description=DESCRIPTION,
        lifespan=lifespan,
        default_response_class=ORJSONResponse,
        # Starlette would answer a path with a trailing slash (or without one) by a 307 to
        # the other spelling, on the host the request's Host header names: 404 instead.
        redirect_slashes=False,
        # The hottest route first: the router tries its routes in order.
        routes=[verify_endpoint.route(ctx)],
    )
    app.state.ctx = ctx
    document_also(app, [verify_endpoint.openapi_route()])
    errors.install(app)
    app.include_router(customer.router)
    app.include_router(metering.router)
    app.include_router(admin.router)

    @app.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics (of every worker when PROMETHEUS_MULTIPROC_DIR is set)."""
        body, media_type = prometheus.exposition()
        return Response(body, media_type=media_type)

    @app.get("/healthz", tags=["health"], include_in_schema=True)
    async def healthz() -> Response:
        """Whether the process runs and its store answers."""
        await ctx.stores.ping()
        return ORJSONResponse({"status": "ok"})

    # The web UI reads its own url-encoded forms: the JSON body guard leaves it alone.
    app.router.routes.append(dashboard.Mounted(dashboard.create_app(ctx)))
    # Added last, so outermost: every request passes them, whatever answers it.
    app.add_middleware(
        JsonBodyGuard, max_body_bytes=ctx.settings.max_body_bytes, exempt=dashboard.AREAS
    )
    app.add_middleware(RequestContext)
    return app
