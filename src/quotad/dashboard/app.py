"""The web UI as one Starlette app, and the route that mounts it inside another app."""

from __future__ import annotations

from typing import Any

from starlette.applications import Starlette
from starlette.datastructures import URLPath
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.routing import BaseRoute, Match, Mount
from starlette.staticfiles import StaticFiles

from quotad.dashboard import (
    account_operator,
    audit_operator,
    credit_operator,
    downloads,
    errors,
    key_operator,
    operator,
    plan_operator,
    portal,
    portal_webhooks,
    webhook_operator,
)
from quotad.dashboard.web import STATIC_DIR
from quotad.errors import StorageError
from quotad.http.types import Receive, Scope, Send
from quotad.service.context import Context

AREAS = ("/dashboard", "/portal")


def in_areas(path: str) -> bool:
    """Whether ``path`` is one of the web UI's (its areas' pages and everything below)."""
    return any(path == area or path.startswith(area + "/") for area in AREAS)


def create_app(ctx: Context) -> Starlette:
    """The operator dashboard and the customer portal over ``ctx``.

    Its routes are the pages' real paths (``/dashboard…``, ``/portal…``), so it serves the
    same addresses on its own or inside the API (see ``Mounted``).
    """
    app = Starlette(
        routes=[
            *operator.ROUTES,
            *account_operator.ROUTES,
            *credit_operator.ROUTES,
            *webhook_operator.ROUTES,
            *plan_operator.ROUTES,
            *downloads.ROUTES,
            *key_operator.ROUTES,
            *audit_operator.ROUTES,
            Mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="static"),
            *portal.ROUTES,
            *portal_webhooks.ROUTES,
        ],
        middleware=[Middleware(errors.UnexpectedErrors)],
        exception_handlers={
            HTTPException: errors.http_page,
            StorageError: errors.unavailable_page,
        },
    )
    # A slash is never redirected: the redirect would be built from the Host header.
    app.router.redirect_slashes = False
    app.state.ctx = ctx
    return app


class Mounted(BaseRoute):
    """The web UI as a route of another app: every path of its areas goes to it whole.

    Starlette's ``Mount`` would not do: it matches only what lies below its path (not the
    bare ``/dashboard`` or ``/portal``, and quotad redirects no slash), and it moves the
    prefix into ``root_path``, so the web UI would see other paths mounted than alone.
    """

    def __init__(self, app: Starlette) -> None:
        self.app = app

    @property
    def routes(self) -> list[BaseRoute]:
        """The web UI's routes, by their full paths."""
        return self.app.routes

    def matches(self, scope: Scope) -> tuple[Match, Scope]:
        """Every HTTP request to a path of the areas, whatever its method.

        The whole path is matched, as the pages' links, redirects and cookie paths are
        absolute: the web UI is served at the root of its host, never under a prefix.
        """
        if scope["type"] == "http" and in_areas(scope["path"]):
            return Match.FULL, {}
        return Match.NONE, {}

    def url_path_for(self, name: str, /, **path_params: Any) -> URLPath:
        """The path of one of the web UI's named routes."""
        return self.app.url_path_for(name, **path_params)

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Hand the request to the web UI."""
        await self.app(scope, receive, send)
