"""The gRPC server of Envoy's rate limit service, in the HTTP server's process and loop.

``serve_beside`` hooks it into the app's lifespan: it starts once the app has opened its
stores, so it decides over the same ``Context`` (stores, record cache, throttles) as
``POST /v1/verify``, and it stops (letting calls in flight finish) before they close,
after uvicorn has drained its own connections.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

import grpc
import structlog
from envoy.service.ratelimit.v3 import rls_pb2_grpc
from starlette.applications import Starlette

from quotad.envoy.ratelimit import RateLimitService
from quotad.service.context import Context

log = structlog.get_logger("quotad.envoy")

GRACE_SECONDS = 5.0  # how long calls in flight may take to finish when the server stops
# gRPC's default would let a second process bind the same port and share its calls: a
# port in use must fail the start instead.
SERVER_OPTIONS = [("grpc.so_reuseport", 0)]


def address(host: str, port: int) -> str:
    """``host:port`` as gRPC binds it (an IPv6 address in brackets)."""
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


async def start(ctx: Context, host: str, port: int) -> Any:
    """A started ``grpc.aio`` server of the rate limit service on ``host:port``.

    Raises:
        RuntimeError: the port cannot be bound.
    """
    server = grpc.aio.server(options=SERVER_OPTIONS)
    rls_pb2_grpc.add_RateLimitServiceServicer_to_server(RateLimitService(ctx), server)
    bound = server.add_insecure_port(address(host, port))
    await server.start()
    log.info("envoy rate limit service listening", address=address(host, bound))
    return server


def serve_beside(app: Starlette, ctx: Context, host: str, port: int) -> None:
    """Serve the rate limit service on ``host:port`` for as long as ``app`` runs."""
    inner: Callable[[Any], AbstractAsyncContextManager[Any]] = app.router.lifespan_context

    @asynccontextmanager
    async def lifespan(running: Any) -> AsyncIterator[Any]:
        async with inner(running) as state:
            server = await start(ctx, host, port)
            try:
                yield state
            finally:
                await server.stop(GRACE_SECONDS)
                log.info("envoy rate limit service stopped")

    app.router.lifespan_context = lifespan
