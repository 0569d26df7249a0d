"""The customer usage endpoints (``GET /v1/usages``, ``GET /usage/{service}``) for any app.

Embedded, they are quotad's own router (``quotad.api.customer``) with quotad's error
handlers and request guard, over the backend's context; remote, they are relayed to the
quotad server. Either way a client of the two seed documents sees exactly what quotad
itself would answer.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any

from quotad.http.types import Scope

if TYPE_CHECKING:
    from quotad.asgi.backends import QuotaBackend

USAGE_PATHS = ("/v1/usages", "/usage/{service}")
_USAGE_PATH = re.compile(r"^/(?:v1/usages|usage/[^/]+)/?$")


def is_usage_path(scope: Scope) -> bool:
    """Whether the request is for one of the two customer usage endpoints."""
    return bool(_USAGE_PATH.match(scope.get("path", "")))


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
