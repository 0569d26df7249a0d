"""quotad inside your ASGI app: ``QuotadMiddleware`` and the customer usage endpoints.

Embedded (a local store, no quotad server)::

    from quotad.asgi import EmbeddedBackend, QuotadMiddleware, mount_usage_endpoints

    backend = EmbeddedBackend("sqlite:///quotad.db")
    app.add_middleware(QuotadMiddleware, service="insights", cost=1, backend=backend)
    mount_usage_endpoints(app, backend)

Remote (a quotad server decides): ``RemoteBackend("http://127.0.0.1:8080", token)``.
Clients ask for quota in JSON bodies with ``X-Quotad-Include-Quota: true`` or
``?include_quota=true``. The API docs (``DOCS_PATHS``) are not metered, and 404 and 405
answers are refunded (``REFUND_STATUSES``); ``CostMap`` prices requests by method and path.
"""

from quotad.asgi.backends import EmbeddedBackend, QuotaBackend, RemoteBackend
from quotad.asgi.middleware import (
    DOCS_PATHS,
    INCLUDE_QUOTA_HEADER,
    INCLUDE_QUOTA_PARAM,
    REFUND_STATUSES,
    QuotadMiddleware,
    quota_object,
    wants_quota,
)
from quotad.asgi.routes import CostMap, CostRule, ServiceRoute
from quotad.asgi.usage import USAGE_PATHS, is_usage_path, mount_usage_endpoints

__all__ = [
    "DOCS_PATHS",
    "INCLUDE_QUOTA_HEADER",
    "INCLUDE_QUOTA_PARAM",
    "REFUND_STATUSES",
    "USAGE_PATHS",
    "CostMap",
    "CostRule",
    "EmbeddedBackend",
    "QuotaBackend",
    "QuotadMiddleware",
    "RemoteBackend",
    "ServiceRoute",
    "is_usage_path",
    "mount_usage_endpoints",
    "quota_object",
    "wants_quota",
]
