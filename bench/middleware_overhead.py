"""Per-request overhead of ``QuotadMiddleware`` on the memory store, in process.

Each request is a direct ASGI call (no sockets, no HTTP parsing), so the numbers are
the middleware's own cost: reading the key, quotad's verify-and-consume on the memory
store, and adding the quota headers. Two apps are measured with and without it: a bare
ASGI app answering JSON, and a FastAPI app with one route.

    .venv/bin/python bench/middleware_overhead.py [--requests 20000]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import statistics
import time
from typing import Any

from fastapi import FastAPI

from quotad.asgi import EmbeddedBackend, QuotadMiddleware
from quotad.domain.models import Overrides, Quota
from quotad.service import admin
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url


async def bare_app(scope: Any, receive: Any, send: Any) -> None:
    """The smallest JSON answer."""
    await send(
        {
            "type": "http.response.start",
            "status": 200,
            "headers": [(b"content-type", b"application/json"), (b"content-length", b"11")],
        }
    )
    await send({"type": "http.response.body", "body": b'{"ok":true}'})


def fastapi_app() -> FastAPI:
    """A FastAPI app with one route."""
    app = FastAPI()

    @app.get("/insights/{topic}")
    async def insight(topic: str) -> dict[str, str]:
        return {"topic": topic}

    return app


async def run(app: Any, key: str, requests: int) -> float:
    """Seconds per request over ``requests`` direct ASGI calls."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/insights/ai",
        "raw_path": b"/insights/ai",
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), (b"authorization", f"Bearer {key}".encode())],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8000),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    started = time.perf_counter()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    elapsed = time.perf_counter() - started
    assert set(statuses) == {200}, set(statuses)
    return elapsed / requests


async def measured(app: Any, key: str, requests: int) -> float:
    """``run`` after a full collection, so no round pays for another's garbage."""
    gc.collect()
    return await run(app, key, requests)


async def main(requests: int, rounds: int) -> None:
    """Measure and print µs/request with and without the middleware, and the ratio."""
    settings = Settings(_env_file=None, store_url="memory://")
    ctx = Context(stores_from_url("memory://"), settings)
    await ctx.stores.open()
    await admin.create_service(ctx, "insights", "")
    await admin.create_plan(ctx, "bench", {"insights": Quota.daily(10**15)}, [], "")
    await admin.create_account(ctx, "bench", "Bench", "bench", "UTC", Overrides())
    key = (await admin.create_key(ctx, "bench", "bench")).secret
    backend = EmbeddedBackend(ctx=ctx)
    print(f"{requests} direct ASGI calls per round, best of {rounds} rounds, memory store")
    for name, app in (("bare ASGI app", bare_app), ("FastAPI app", fastapi_app())):
        metered = QuotadMiddleware(app, service="insights", backend=backend)
        await run(metered, key, 200)  # warm up caches and code paths
        await run(app, key, 200)
        plain = min([await measured(app, key, requests) for _ in range(rounds)])
        with_quota = min([await measured(metered, key, requests) for _ in range(rounds)])
        overhead = with_quota - plain
        print(
            f"{name:14} without {plain * 1e6:8.1f} µs/request   with {with_quota * 1e6:8.1f} "
            f"µs/request   overhead {overhead * 1e6:6.1f} µs   ratio {with_quota / plain:5.2f}x"
        )
    single = QuotadMiddleware(bare_app, service="insights", backend=backend)
    samples = sorted([await run(single, key, 1) for _ in range(2000)])
    median, p99 = statistics.median(samples), samples[int(len(samples) * 0.99)]
    print(
        f"bare app + middleware, one request at a time: median {median * 1e6:.1f} µs, "
        f"p99 {p99 * 1e6:.1f} µs"
    )
    await ctx.stores.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20_000)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds))
