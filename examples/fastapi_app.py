"""An API metered by quotad in-process: FastAPI + ``QuotadMiddleware``.

Embedded (no quotad server: an SQLite file next to you, a fresh key printed at start)::

    python examples/fastapi_app.py
    # or: uvicorn fastapi_app:app --app-dir examples   (provision with `quotad.embedded`
    #     or the `quotad` CLI on the same store first)

Remote (a quotad server decides)::

    QUOTAD_URL=http://127.0.0.1:8080 QUOTAD_ADMIN_TOKEN=... python examples/fastapi_app.py

Every ``/insights/…`` call costs 1 unit of the ``insights`` quota and ``/reports`` costs
5; ``/`` and ``/healthz`` are free and need no key, as are the API docs (``/docs``,
``/openapi.json``: the middleware's ``exclude_paths``). An unknown route (404) costs
nothing. ``/v1/usages`` and
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

from quotad.asgi import (
    EmbeddedBackend,
    QuotaBackend,
    QuotadMiddleware,
    RemoteBackend,
    mount_usage_endpoints,
)
from quotad.embedded import open_store, uvicorn_options

DEFAULT_STORE = "sqlite:///./quotad-example.db"
FREE_PATHS = frozenset({"/", "/healthz"})  # the API docs are free by default


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


async def provision(store_url: str) -> str:
    """The example's service, plan and account (made once), and a new key for it."""
    async with open_store(store_url) as store:
        await store.create_service("insights", "Insights API queries", exist_ok=True)
        await store.create_plan(
            "example",
            {"insights": 250},
            {"cohort.max_count": (10, "Cohorts allowed")},
            exist_ok=True,
        )
        await store.create_account("acme", "Acme Inc.", plan="example", exist_ok=True)
        return (await store.create_key("acme", "example")).secret


def main() -> None:
    """Serve the example; in embedded mode, provision the example account and print a key."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=8000)
    parser.add_argument(
        "--no-demo", action="store_true", help="do not provision the example account or print a key"
    )
    args = parser.parse_args()
    if isinstance(backend, EmbeddedBackend) and not args.no_demo:
        store_url = os.environ.get("QUOTAD_STORE_URL", DEFAULT_STORE)
        key = asyncio.run(provision(store_url))
        base = f"http://{args.host}:{args.port}"
        print(f"store {store_url}; new API key of account acme: {key}")
        print(f"  curl -i {base}/insights/ai -H 'Authorization: Bearer {key}'")
        print(f"  curl -s '{base}/insights/ai?include_quota=true' -H 'x-api-key: {key}'")
        print(f"  curl -s {base}/usage/insights -H 'x-api-key: {key}'")
    # X-Forwarded-For only from QUOTAD_TRUSTED_PROXIES: the failure budget of the usage
    # endpoints counts by address, and uvicorn's default believes any local client.
    uvicorn.run(app, host=args.host, port=args.port, log_level="warning", **uvicorn_options())


if __name__ == "__main__":
    main()
