"""``GET /healthz`` and ``GET /readyz``: what a load balancer or Kubernetes asks (SPEC 12).

``/healthz`` (liveness) answers 200 as long as the process serves requests; it touches no
store, so a store outage never gets a healthy process restarted. ``/readyz`` (readiness)
answers 200 when the stores (records and counters) answer a ping within a second, and
the contract's 503 ``SERVICE_UNAVAILABLE`` otherwise, so a balancer sends traffic
elsewhere until they are back. Neither needs credentials, and neither says more than
that: no version, no store URL, no driver's error.

Both are plain Starlette routes tried before the API, as cheap as verify's. Probes that
arrive together share one ping: however often they come, at most one ping per process
waits on a hung store.
"""

from __future__ import annotations

import asyncio
from typing import Literal

import structlog
from fastapi.routing import APIRoute
from pydantic import BaseModel
from starlette.routing import Route

from quotad.api.schemas import ErrorBody
from quotad.errors import ErrorCode
from quotad.http.errors import JSON_TYPE, ErrorAnswer, error_answer
from quotad.http.types import Receive, Scope, Send
from quotad.service.context import Context

READY_TIMEOUT = 1.0  # seconds: SPEC 12, "the store answers within 1 s"
METHODS = ("GET", "HEAD")
_OK = b'{"status":"ok"}'
_OK_HEADERS = [(b"content-length", b"%d" % len(_OK)), JSON_TYPE, (b"cache-control", b"no-store")]

log = structlog.get_logger("quotad.api")


async def _ok(scope: Scope, send: Send) -> None:
    await send({"type": "http.response.start", "status": 200, "headers": list(_OK_HEADERS)})
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else _OK})


def _method_not_allowed() -> ErrorAnswer:
    return error_answer(
        ErrorCode.BAD_REQUEST,
        "method not allowed on this path",
        status=405,
        headers=((b"allow", ", ".join(METHODS).encode()),),
    )


class Healthz:
    """Liveness: 200 ``{"status": "ok"}`` whenever the process answers at all.

    (A class, not a function: Starlette routes a function as a request handler, an
    instance as the ASGI app it is.)
    """

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one probe."""
        if scope["method"] not in METHODS:
            await _method_not_allowed()(scope, receive, send)
            return
        await _ok(scope, send)


class Readyz:
    """Readiness: 200 when the stores answer within ``timeout`` seconds, 503 otherwise."""

    def __init__(self, ctx: Context, timeout: float = READY_TIMEOUT) -> None:
        self.ctx = ctx
        self.timeout = timeout
        self._ping: asyncio.Task[None] | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Answer one probe."""
        if scope["method"] not in METHODS:
            await _method_not_allowed()(scope, receive, send)
            return
        if await self.ready():
            await _ok(scope, send)
            return
        answer = error_answer(ErrorCode.SERVICE_UNAVAILABLE, "the store is not answering")
        await answer(scope, receive, send)

    async def ready(self) -> bool:
        """Whether the stores answer a ping (the one in flight, if any) within the timeout."""
        ping = self._ping
        if ping is None or ping.done() or ping.get_loop() is not asyncio.get_running_loop():
            ping = self._ping = asyncio.create_task(self.ctx.stores.ping(), name="quotad-readyz")
            ping.add_done_callback(_retrieved)
        done, _ = await asyncio.wait({ping}, timeout=self.timeout)
        if not done:
            # Given up: cancelled, and left to finish on its own (a hung driver may take
            # its time to unwind); the next probe waits for it rather than adding another.
            ping.cancel()
            log.warning("store not ready", reason="no answer to a ping within the timeout")
            return False
        if ping.cancelled():
            return False
        error = ping.exception()
        if error is not None:
            log.warning("store not ready", reason=type(error).__name__)
            return False
        return True


def _retrieved(ping: asyncio.Task[None]) -> None:
    """Mark a ping's failure as seen, should it end after every probe gave up on it."""
    if not ping.cancelled():
        ping.exception()


def routes(ctx: Context) -> list[Route]:
    """The two routes, each taking every method so that a 405 is their own."""
    return [
        Route("/healthz", Healthz(), include_in_schema=False),
        Route("/readyz", Readyz(ctx), include_in_schema=False),
    ]


# OpenAPI: described by FastAPI routes that are never routed (see ``api.openapi``).
class Status(BaseModel):
    """The body of a 200 from ``/healthz`` or ``/readyz``."""

    status: Literal["ok"]


async def _healthz_doc() -> Status:
    """Liveness: 200 whenever the process answers; no store is touched (no credentials)."""
    raise AssertionError("documentation only")


async def _readyz_doc() -> Status:
    """Readiness: 200 when the store answers within 1 s, else 503 (no credentials)."""
    raise AssertionError("documentation only")


def openapi_routes() -> list[APIRoute]:
    """How OpenAPI describes the two endpoints."""
    return [
        APIRoute(
            "/healthz",
            _healthz_doc,
            methods=["GET"],
            name="healthz",
            tags=["health"],
            response_model=Status,
        ),
        APIRoute(
            "/readyz",
            _readyz_doc,
            methods=["GET"],
            name="readyz",
            tags=["health"],
            response_model=Status,
            responses={503: {"model": ErrorBody, "description": "The store is not answering"}},
        ),
    ]
