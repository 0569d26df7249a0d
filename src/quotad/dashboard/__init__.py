"""The web UI: the operator dashboard (``/dashboard``) and the customer portal (``/portal``).

Server-rendered HTML (Jinja2 templates and inline SVG charts shipped in this package,
no CDN), plain forms with a little optional JavaScript. None of its routes are part of
the API's OpenAPI document.
"""

from __future__ import annotations

from fastapi import FastAPI
from starlette.staticfiles import StaticFiles

from quotad.dashboard import operator, portal
from quotad.dashboard.forms import FormBodies
from quotad.dashboard.web import STATIC_DIR


def install(app: FastAPI) -> None:
    """Add the dashboard and the portal to ``app``.

    Call it after the app's other middleware is added: the form adapter must sit
    outside ``RequestGuard`` (see ``quotad.dashboard.forms``).
    """
    app.include_router(operator.router)
    app.include_router(portal.router)
    app.mount("/dashboard/static", StaticFiles(directory=STATIC_DIR), name="dashboard-static")
    app.add_middleware(FormBodies)


__all__ = ["install"]
