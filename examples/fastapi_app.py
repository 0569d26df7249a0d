"""An API metered by quotad in-process: FastAPI + ``QuotadMiddleware``.

Embedded (no quotad server: an SQLite file next to you, a demo key printed at start)::

    python examples/fastapi_app.py
    # or: uvicorn fastapi_app:app --app-dir examples   (seed a key with `quotad serve --demo`
    #     or the `quotad` CLI on the same store first)

Remote (a quotad server decides)::

    QUOTAD_URL=http://127.0.0.1:8080 QUOTAD_ADMIN_TOKEN=... python examples/fastapi_app.py

Every ``/insights/…`` call costs 1 unit of the ``insights`` quota and ``/reports`` costs
5; ``/`` and ``/healthz`` are free and need no key. ``/v1/usages`` and
``/usage/insights`` are quotad's customer usage endpoints, mounted in one line. Send
``X-Quotad-Include-Quota: true`` (or ``?include_quota=true``) to get a ``quota`` object in
JSON answers.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.responses import JSONResponse, PlainTextResponse

from quotad.api.server import proxy_options
from quotad.asgi import (
    EmbeddedBackend,
    QuotaBackend,
    QuotadMiddleware,
    RemoteBackend,
    mount_usage_endpoints,
)
from quotad.demo import seed
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url

DEFAULT_STORE = "sqlite:///./quotad-example.db"
FREE_PATHS = frozenset({"/", "/healthz", "/docs", "/openapi.json"})


def make_backend() -> QuotaBackend:
    """A quotad server when ``QUOTAD_URL`` is set, else an embedded store."""
    url = os.environ.get("QUOTAD_URL")
    if url:
        return RemoteBackend(url, os.environ["QUOTAD_ADMIN_TOKEN"])
    return EmbeddedBackend(os.environ.get("QUOTAD_STORE_URL", DEFAULT_STORE))


def cost(scope: dict[str, Any]) -> int | None:
    """Units a request consumes; ``None`` for free routes (no key needed)."""
    path: str = scope["path"]
    if path in FREE_PATHS:
        return None
    if path.startswith("/reports"):
        return 5
    return 1


def create_app(backend: QuotaBackend) -> FastAPI:
    """The example API, metered by quotad through ``backend``."""
    app = FastAPI(title="Insights API (a quotad example)")

    @app.get("/")
    async def index() -> dict[str, str]:
        """What this is (free)."""
        return {"service": "insights", "docs": "/docs"}

    @app.get("/healthz")
    async def healthz() -> dict[str, str]:
        """Liveness (free)."""
        return {"status": "ok"}

    @app.get("/insights/{topic}")
    async def insight(topic: str) -> dict[str, Any]:
        """One insight: costs 1 unit."""
        score = int(hashlib.sha256(topic.encode()).hexdigest()[:4], 16) % 100
        return {"topic": topic, "score": score}

    @app.get("/reports")
    async def reports() -> dict[str, Any]:
        """A heavier call: costs 5 units."""
        return {"rows": [{"topic": name, "count": len(name)} for name in ("ai", "bio", "chem")]}

    @app.get("/insights-export.csv")
    async def export_csv() -> PlainTextResponse:
        """A non-JSON answer: headers are added, the body is left alone."""
        return PlainTextResponse("topic,score\nai,42\n")

    @app.get("/unstable")
    async def unstable() -> JSONResponse:
        """Always fails with 503: the unit it cost is refunded."""
        return JSONResponse({"detail": "upstream model is warming up"}, status_code=503)

    app.add_middleware(QuotadMiddleware, service="insights", cost=cost, backend=backend)
    mount_usage_endpoints(app, backend)
    return app


backend = make_backend()
app = create_app(backend)


async def _seed_demo(store_url: str) -> str:
    ctx = Context(stores_from_url(store_url), Settings(store_url=store_url))
    await ctx.stores.open()
    try:
        return (await seed(ctx)).key
    finally:
        await ctx.stores.close()


def main() -> None:
    """Serve the example; in embedded mode, create the demo account and print a key."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument("--no-demo", action="store_true", help="do not create a demo key")
    args = parser.parse_args()
    if isinstance(backend, EmbeddedBackend) and not args.no_demo:
        store_url = backend.ctx.settings.store_url
        key = asyncio.run(_seed_demo(store_url))
        base = f"http://{args.host}:{args.port}"
        print(f"store {store_url}; demo API key: {key}")
        print(f"  curl -i {base}/insights/ai -H 'Authorization: Bearer {key}'")
        print(f"  curl -s '{base}/insights/ai?include_quota=true' -H 'x-api-key: {key}'")
        print(f"  curl -s {base}/usage/insights -H 'x-api-key: {key}'")
    # X-Forwarded-For only from QUOTAD_TRUSTED_PROXIES: the failure budget of the usage
    # endpoints counts by address, and uvicorn's default believes any local client.
    forwarded = proxy_options(Settings().trusted_proxies)
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", **forwarded)


if __name__ == "__main__":
    main()
