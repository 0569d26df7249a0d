"""The ASGI application: verify, the web UI and the API around one service context."""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import TYPE_CHECKING, Any

from fastapi import FastAPI
from starlette.applications import Starlette
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.middleware import Middleware
from starlette.responses import Response
from starlette.routing import Mount

from quotad import __version__, dashboard
from quotad import metrics as prometheus
from quotad.api import (
    admin,
    credits,
    customer,
    errors,
    health,
    metering,
    operators,
    tracing,
    verify_endpoint,
    webhooks,
)
from quotad.api import reservations as reservations_api
from quotad.api.openapi import document_also
from quotad.api.responses import ORJSONResponse
from quotad.http.middleware import JsonBodyGuard, RequestContext
from quotad.service import deliveries, maintenance, reservations
from quotad.service.context import Context

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

DESCRIPTION = """\
Usage metering and quotas for API providers.

* **Customer API** (the account's API key, as `Authorization: Bearer` or `x-api-key`;
  both must carry the same key, and another `Authorization` scheme beside `x-api-key` is
  ignored): `GET /v1/usages`, `GET /usage/{service}`.
* **Operator API** (an operator token as `Authorization: Bearer`): `/admin/v1/…`,
  `POST /v1/verify`, `POST /v1/events`. A named token's role limits it: `admin`
  everything, `read` every GET, `verify` verify and events (403 `FORBIDDEN` otherwise).

Every error is `{"error", "id", "note", "validationErrors"}`.
"""


def create_app(
    ctx: Context, *, manage_store: bool = True, tracer_provider: TracerProvider | None = None
) -> Starlette:
    """The quotad application over ``ctx``: verify, the web UI and the API side by side.

    A plain Starlette app whose middleware (request id, ``api-version``, access line, the
    JSON body guard, and whatever ``add_middleware`` adds later) runs for every request,
    whichever of the three answers it. ``/v1/verify`` is answered by its own endpoint from
    the innermost middleware, ahead of the router; the operator and customer API is a
    FastAPI app (``create_api``) mounted at the root, so its routing, validation and
    exception handlers cost nothing on the hot path.

    Args:
        ctx: the service context (stores, settings, clock).
        manage_store: open the stores on startup and close them on shutdown.
        tracer_provider: trace requests and store calls with it; by default, with the
            one the ``OTEL_*`` variables configure, if any (``quotad.api.tracing``).
    """
    provider = tracer_provider or tracing.from_environment()
    if provider is not None:  # the app's context over stores whose calls are spans
        from quotad.storage.traced import traced

        ctx = dataclasses.replace(ctx, stores=traced(ctx.stores, provider))

    @asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        if not manage_store:
            yield
            return
        await ctx.stores.open()
        upkeep = asyncio.create_task(maintenance.purge_forever(ctx), name="quotad-purge")
        sender = asyncio.create_task(deliveries.deliver_forever(ctx), name="quotad-webhooks")
        sweeper = asyncio.create_task(reservations.sweep_forever(ctx), name="quotad-reservations")
        try:
            yield
        finally:
            for task in (upkeep, sender, sweeper):
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
            await ctx.stores.close()

    api = create_api(ctx)
    app = Starlette(
        routes=[
            *health.routes(ctx),
            dashboard.Mounted(dashboard.create_app(ctx)),
            Mount("", app=api),
        ],
        middleware=[
            Middleware(RequestContext),
            # The web UI reads its own url-encoded forms: the JSON body guard leaves it alone.
            Middleware(
                JsonBodyGuard, max_body_bytes=ctx.settings.max_body_bytes, exempt=dashboard.AREAS
            ),
            Middleware(verify_endpoint.VerifyFirst, ctx=ctx),  # innermost: ahead of the router
        ],
        # A path no route takes (one with a newline, which the API's mount does not match)
        # and what fails outside RequestContext (in middleware added later) answer as the
        # API would: the contract's 404 and 500.
        exception_handlers={
            StarletteHTTPException: errors.http_error,
            Exception: errors.last_resort,
        },
        lifespan=lifespan,
    )
    if provider is not None:
        tracing.instrument(app, provider)
    app.state.ctx = ctx
    app.state.api = api
    return app


def create_api(ctx: Context) -> FastAPI:
    """The operator and customer API (everything but verify and the web UI), and the
    OpenAPI document that describes verify too."""
    api = _fastapi(
        ctx,
        title="quotad",
        version=__version__,
        description=DESCRIPTION,
        # Starlette would answer a path with a trailing slash (or without one) by a 307 to
        # the other spelling, on the host the request's Host header names: 404 instead.
        redirect_slashes=False,
    )
    document_also(api, [verify_endpoint.openapi_route(), *health.openapi_routes()])
    api.include_router(customer.router)
    api.include_router(metering.router)
    api.include_router(reservations_api.router)
    api.include_router(admin.router)
    api.include_router(webhooks.router)
    api.include_router(credits.router)
    api.include_router(operators.router)

    @api.get("/metrics", tags=["health"], include_in_schema=False)
    async def metrics() -> Response:
        """Prometheus metrics (of every worker when PROMETHEUS_MULTIPROC_DIR is set)."""
        body, media_type = prometheus.exposition()
        return Response(body, media_type=media_type)

    return api


def create_usage_api(ctx: Context) -> FastAPI:
    """The two customer usage endpoints alone, with the API's errors and guards: what the
    ASGI middleware's embedded backend serves inside a provider's own app."""
    api = _fastapi(ctx, openapi_url=None, docs_url=None, redoc_url=None)
    api.include_router(customer.router)
    api.add_middleware(JsonBodyGuard, max_body_bytes=ctx.settings.max_body_bytes)
    api.add_middleware(RequestContext)
    return api


def _fastapi(ctx: Context, **options: Any) -> FastAPI:
    """A FastAPI app over ``ctx`` with the contract's error handlers and orjson answers.

    FastAPI's own OpenTelemetry bridge is off: it asks the providers on every request
    (about 5 µs), and quotad's spans are to wrap the whole app, verify included.
    """
    api = FastAPI(
        default_response_class=ORJSONResponse,
        telemetry={"tracing": False, "metrics": False, "logs": False},
        **options,
    )
    api.state.ctx = ctx
    errors.install(api)
    return api
