"""The web UI's own error pages: HTML in the page's area, never the API's JSON error body.

Starlette raises ``HTTPException`` for what its routing refuses (no such page, a method the
page does not take, a form past its size); a store that cannot be reached raises
``StorageError``; anything else is a bug, answered by ``UnexpectedErrors`` with a 500 page
and logged once with a reference the page shows.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable

import structlog
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Match

from quotad.dashboard import web
from quotad.dashboard.sessions import Area
from quotad.errors import StorageError
from quotad.http.types import ASGIApp, Message, Receive, Scope, Send

log = structlog.get_logger("quotad.dashboard")

PAGES: dict[int, tuple[str, str]] = {
    404: ("Page not found", "There is no page at this address."),
    405: ("Not allowed", "This page cannot be used that way."),
    413: (
        "Form too large",
        f"A form of this site holds at most {web.MAX_FORM_BYTES // 1024} KiB; this one held "
        "more, so it was not read and nothing was changed.",
    ),
}


def area_of(path: str) -> Area:
    """The area whose look an error page at ``path`` takes."""
    return "portal" if path == "/portal" or path.startswith("/portal/") else "dashboard"


# The methods an ``Allow`` can name: those some route of quotad's could take.
METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")


def allowed_methods(routes: Iterable[BaseRoute], scope: Scope) -> str:
    """The ``Allow`` value of a 405 (RFC 9110): every method some route takes at the path.

    Starlette's own 405 names the methods of the first route whose path matched, and a
    path often has one route per method (``GET`` the form, ``POST`` it). Each method is
    asked of every route (``BaseRoute.matches``), so routers nested in any way (FastAPI's
    included routers) answer for their own routes.
    """
    routes = list(routes)
    return ", ".join(
        method
        for method in METHODS
        if any(route.matches({**scope, "method": method})[0] is Match.FULL for route in routes)
    )


async def http_page(request: Request, exc: Exception) -> Response:
    """The page for what routing or a form refused (404, 405, 413, a 400 with its reason)."""
    assert isinstance(exc, HTTPException)  # noqa: S101 - registered for this type only
    path = request.url.path
    heading, text = PAGES.get(exc.status_code, ("Request refused", str(exc.detail)))
    if exc.status_code == 404 and len(path) > 1 and path.endswith("/"):
        # Slashes are never redirected: a redirect would be built from the Host header.
        text += " (No page of quotad ends in a slash.)"
    response = web.message(area_of(path), exc.status_code, heading, text)
    response.headers.update(exc.headers or {})
    if exc.status_code == 405:
        response.headers["Allow"] = allowed_methods(request.app.router.routes, request.scope)
    return response


async def unavailable_page(request: Request, exc: Exception) -> Response:
    """The page for a store that cannot be reached: 503, to be retried."""
    assert isinstance(exc, StorageError)  # noqa: S101 - registered for this type only
    reference = str(uuid.uuid4())
    log.error("page refused", error=exc.code.value, error_id=reference, status=503)
    response = web.message(
        area_of(request.url.path),
        503,
        "Temporarily unavailable",
        f"quotad cannot reach its store just now; try again in a moment (reference {reference}).",
    )
    if exc.retry_after is not None:
        response.headers["Retry-After"] = str(exc.retry_after)
    return response


class UnexpectedErrors:
    """Answers an exception no handler expected with the 500 page; the details go to the log.

    It sits inside the app's ``ServerErrorMiddleware``, which would log the exception a
    second time by re-raising it to the server.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Handle one ASGI connection."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def send_tracked(message: Message) -> None:
            nonlocal started
            started = started or message["type"] == "http.response.start"
            await send(message)

        try:
            await self.app(scope, receive, send_tracked)
        except Exception:
            if started:  # the answer has begun; nothing better can be sent now
                raise
            reference = str(uuid.uuid4())
            log.exception("unexpected error", error_id=reference)
            response = web.message(
                area_of(scope["path"]),
                500,
                "Something went wrong",
                f"The page could not be shown. If this keeps happening, give the operator "
                f"this reference: {reference}.",
            )
            await response(scope, receive, send)
