"""CPU per ``POST /v1/verify`` with tracing off and on, on the memory store, in process.

Each request is a direct ASGI call of the whole app (``create_app``: its middleware, the
router, verify; no sockets, no HTTP parsing), timed in CPU seconds of the process (export
threads included), best of several rounds. Tracing off is the app as ``quotad serve`` builds
it without ``OTEL_*`` variables; on, it is given a tracer provider that samples nothing (the
instrumentation's own cost), then one that records every span and exports them in batches
to an exporter that drops them (the SDK's cost, without a network). To compare "off" with
a commit before tracing existed, run this file's ``off`` row there too (``--only off``,
with that commit's ``src`` first on ``PYTHONPATH``).

    .venv/bin/python bench/tracing_overhead.py [--requests 5000] [--rounds 5]
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import time
from collections.abc import Sequence
from typing import Any

import orjson

from quotad import logs
from quotad.api.app import create_app
from quotad.domain.models import Overrides, Quota
from quotad.service import admin
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url

TOKEN = "bench-operator-token"


def providers() -> dict[str, Any]:
    """The tracer providers measured, by row name (``None``: tracing off)."""
    rows: dict[str, Any] = {"off": None}
    try:
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import (
            BatchSpanProcessor,
            SpanExporter,
            SpanExportResult,
        )
        from opentelemetry.sdk.trace.sampling import ALWAYS_OFF
    except ImportError:  # without the otel extra: the off row alone
        return rows

    class Dropped(SpanExporter):
        def export(self, spans: Sequence[Any]) -> SpanExportResult:
            return SpanExportResult.SUCCESS

    rows["on, nothing sampled"] = TracerProvider(sampler=ALWAYS_OFF)
    recording = TracerProvider()
    recording.add_span_processor(BatchSpanProcessor(Dropped()))
    rows["on, every span exported"] = recording
    return rows


async def run(app: Any, body: bytes, requests: int) -> float:
    """CPU seconds per verify over ``requests`` direct ASGI calls."""
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "POST",
        "scheme": "http",
        "path": "/v1/verify",
        "raw_path": b"/v1/verify",
        "query_string": b"",
        "root_path": "",
        "headers": [
            (b"host", b"bench"),
            (b"authorization", f"Bearer {TOKEN}".encode()),
            (b"content-type", b"application/json"),
            (b"content-length", b"%d" % len(body)),
        ],
        "client": ("127.0.0.1", 5000),
        "server": ("127.0.0.1", 8080),
    }
    statuses: list[int] = []

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            statuses.append(message["status"])

    gc.collect()
    started = time.process_time()
    for _ in range(requests):
        await app(dict(scope), receive, send)
    elapsed = time.process_time() - started
    assert set(statuses) == {200}, set(statuses)
    return elapsed / requests


async def main(requests: int, rounds: int, only: str | None) -> None:
    """Print µs of CPU per verify for each row, and its ratio to tracing off."""
    settings = Settings(
        _env_file=None, store_url="memory://", admin_token=TOKEN, log_level="warning"
    )
    logs.configure_for(settings)  # no access line per verify
    ctx = Context(stores_from_url("memory://"), settings)
    await ctx.stores.open()
    await admin.create_service(ctx, "insights", "")
    await admin.create_plan(ctx, "bench", {"insights": Quota.daily(10**15)}, [], "")
    await admin.create_account(ctx, "bench", "Bench", "bench", "UTC", Overrides())
    key = (await admin.create_key(ctx, "bench", "bench")).secret
    body = orjson.dumps({"key": key, "service": "insights", "cost": 1})
    print(f"{requests} direct ASGI verifies per round, best of {rounds} rounds, memory store")
    baseline = None
    for name, provider in providers().items():
        if only is not None and name != only:
            continue
        app = (
            create_app(ctx, manage_store=False)  # as a commit before tracing can build it too
            if provider is None
            else create_app(ctx, manage_store=False, tracer_provider=provider)
        )
        await run(app, body, 200)  # warm up caches and code paths
        best = min([await run(app, body, requests) for _ in range(rounds)])
        baseline = baseline or best
        print(f"tracing {name:24} {best * 1e6:8.1f} µs CPU/verify   {best / baseline:5.2f}x")
        if provider is not None:
            provider.shutdown()
    await ctx.stores.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=5_000)
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--only", help="one row: off, 'on, nothing sampled', …")
    args = parser.parse_args()
    asyncio.run(main(args.requests, args.rounds, args.only))
