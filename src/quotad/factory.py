"""An application factory for ASGI servers that run several worker processes.

``quotad serve`` runs one process. To run several on one port, let the ASGI server
build the app in each worker from the environment (``QUOTAD_*`` settings)::

    export QUOTAD_ADMIN_TOKEN=… QUOTAD_STORE_URL=postgresql://…
    export PROMETHEUS_MULTIPROC_DIR=/run/quotad-metrics   # empty, writable by the workers
    quotad migrate
    uvicorn --factory quotad.factory:create_from_env --workers 4 --port 8080 --no-proxy-headers

uvicorn's command line believes ``X-Forwarded-For`` from 127.0.0.1 by default, which would
let a local client choose the address its failed authentications count against: pass
``--no-proxy-headers``, or behind a proxy ``--forwarded-allow-ips`` with the addresses of
``QUOTAD_TRUSTED_PROXIES`` (what ``quotad serve`` does by itself).

With ``PROMETHEUS_MULTIPROC_DIR`` set, ``/metrics`` adds up every worker's counters.
The operator token must come from ``QUOTAD_ADMIN_TOKEN`` or already be stored (``quotad
token reset``): workers do not generate one.
"""

from __future__ import annotations

from starlette.applications import Starlette

from quotad import logs
from quotad.api.app import create_app
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url


def create_from_env() -> Starlette:
    """The quotad app over the store and settings the environment names."""
    settings = Settings()
    logs.configure_for(settings)
    return create_app(Context(stores_from_url(settings.store_url), settings))
