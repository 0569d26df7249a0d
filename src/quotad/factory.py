"""An application factory for ASGI servers that run several worker processes.

``quotad serve`` runs one process. To run several on one port, let the ASGI server
build the app in each worker from the environment (``QUOTAD_*`` settings)::

    export QUOTAD_ADMIN_TOKEN=… QUOTAD_STORE_URL=postgresql://…
    export PROMETHEUS_MULTIPROC_DIR=/run/quotad-metrics   # empty, writable by the workers
    quotad migrate
    uvicorn --factory quotad.factory:create_from_env --workers 4 --port 8080

With ``PROMETHEUS_MULTIPROC_DIR`` set, ``/metrics`` adds up every worker's counters.
The operator token must come from ``QUOTAD_ADMIN_TOKEN`` or already be stored (``quotad
token reset``): workers do not generate one.
"""

from __future__ import annotations

from fastapi import FastAPI

from quotad import logs
from quotad.api.app import create_app
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import store_from_url


def create_from_env() -> FastAPI:
    """The quotad app over the store and settings the environment names."""
    settings = Settings()
    logs.configure_for(settings)
    return create_app(Context(store_from_url(settings.store_url), settings))
