"""quotad inside your ASGI app: ``QuotadMiddleware`` and the customer usage endpoints.

Embedded (a local store, no quotad server)::

    from quotad.asgi import EmbeddedBackend, QuotadMiddleware, mount_usage_endpoints

    backend = EmbeddedBackend("sqlite:///quotad.db")
    app.add_middleware(QuotadMiddleware, service="insights", cost=1, backend=backend)
    mount_usage_endpoints(app, backend)

Remote (a quotad server decides): ``RemoteBackend("http://127.0.0.1:8080", token)``.
Clients ask for quota in JSON bodies with ``X-Quotad-Include-Quota: true`` or
``?include_quota=true``.
"""

from quotad.asgi.backends import EmbeddedBackend, QuotaBackend, RemoteBackend
from quotad.asgi.middleware import (
    INCLUDE_QUOTA_HEADER,
    INCLUDE_QUOTA_PARAM,
    QuotadMiddleware,
    quota_object,
    wants_quota,
)
from quotad.asgi.usage import USAGE_PATHS, is_usage_path, mount_usage_endpoints

__all__ = [
    "INCLUDE_QUOTA_HEADER",
    "INCLUDE_QUOTA_PARAM",
    "USAGE_PATHS",
    "EmbeddedBackend",
    "QuotaBackend",
    "QuotadMiddleware",
    "RemoteBackend",
    "is_usage_path",
    "mount_usage_endpoints",
    "quota_object",
    "wants_quota",
]
