"""OpenTelemetry tracing (SPEC 12): every request a server span, every store call a child.

Spans are read from the SDK's ``InMemorySpanExporter``; the app is given its tracer
provider explicitly, except in the tests of the ``OTEL_*`` variables, where one test sends
them over OTLP/HTTP to a collector of its own. Tests that set the global tracer provider
(which the SDK's client spans use) reset it afterwards.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import threading
import time
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx2
import pytest
from opentelemetry import trace
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.test.globals_test import reset_trace_globals
from opentelemetry.trace import SpanKind

from quotad.api import tracing
from quotad.api.app import create_app
from quotad.api.verify_endpoint import VerifyFirst
from quotad.http.middleware import JsonBodyGuard, RequestContext
from quotad.sdk import AsyncClient, Client, NotFoundError
from quotad.service.context import Context
from quotad.storage.traced import TracedStore
from tests.conftest import ADMIN_TOKEN, OPERATOR, seed
from tests.faults import http_client, provision
from tests.processes import ADMIN_TOKEN as PROCESS_TOKEN
from tests.processes import quotad_spec, running_all

SYSTEM = {"memory": None, "sqlite": "sqlite", "postgresql": "postgresql", "redis": "sqlite"}
OTEL_VARIABLES = (
    "OTEL_SDK_DISABLED",
    "OTEL_TRACES_EXPORTER",
    "OTEL_EXPORTER_OTLP_ENDPOINT",
    "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT",
    "OTEL_EXPORTER_OTLP_PROTOCOL",
    "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL",
    "OTEL_SERVICE_NAME",
    "OTEL_RESOURCE_ATTRIBUTES",
    "OTEL_TRACES_SAMPLER",
    "OTEL_TRACES_SAMPLER_ARG",
    "OTEL_PYTHON_EXCLUDED_URLS",
    "OTEL_PYTHON_ASGI_EXCLUDED_URLS",
)


@pytest.fixture(autouse=True)
def no_otel_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """No OTEL_* variable of the machine's leaks into a test."""
    for name in OTEL_VARIABLES:
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def exporter() -> InMemorySpanExporter:
    """Where the spans of ``provider`` end up, one by one as they end."""
    return InMemorySpanExporter()


@pytest.fixture
def provider(exporter: InMemorySpanExporter) -> Iterator[TracerProvider]:
    """A tracer provider exporting to ``exporter``."""
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    yield provider
    provider.shutdown()


@pytest.fixture
def global_provider(provider: TracerProvider) -> Iterator[TracerProvider]:
    """``provider`` as the process's global tracer provider, unset afterwards."""
    reset_trace_globals()
    trace.set_tracer_provider(provider)
    yield provider
    reset_trace_globals()


@pytest.fixture
async def traced(ctx: Context, provider: TracerProvider) -> AsyncIterator[httpx2.AsyncClient]:
    """An HTTP client talking to the app, traced with ``provider``, in-process."""
    app = create_app(ctx, manage_store=False, tracer_provider=provider)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
        yield http


def servers(spans: tuple[ReadableSpan, ...]) -> list[ReadableSpan]:
    """The server spans (one per request)."""
    return [s for s in spans if s.kind is SpanKind.SERVER]


def status_of(span: ReadableSpan) -> object:
    """The HTTP status on a server span (by the stable conventions' name or the old one)."""
    attributes = dict(span.attributes or {})
    return attributes.get("http.response.status_code", attributes.get("http.status_code"))


def attribute_text(spans: tuple[ReadableSpan, ...]) -> str:
    """Every span's name and attributes, as one text to search."""
    return json.dumps([[s.name, dict(s.attributes or {})] for s in spans], default=str)


async def test_a_verify_is_a_server_span_whose_children_are_its_store_calls(
    traced: httpx2.AsyncClient, exporter: InMemorySpanExporter, store_kind: str
) -> None:
    """POST /v1/verify: one server span, and each store call a child span in the same trace."""
    deployment = await seed(traced)
    exporter.clear()
    body = {"key": deployment.key, "service": "insights", "cost": 1}
    response = await traced.post("/v1/verify", json=body, headers=OPERATOR)
    assert response.status_code == 200, response.text
    spans = exporter.get_finished_spans()
    [server] = servers(spans)
    assert server.name == "POST /v1/verify"
    assert status_of(server) == 200
    stored = [s for s in spans if s is not server]
    names = {s.name for s in stored}
    assert "counters.consume" in names, names
    for span in stored:
        assert span.kind is SpanKind.CLIENT
        assert span.context.trace_id == server.context.trace_id
        assert span.parent is not None
        assert span.parent.span_id == server.context.span_id
        assert span.attributes is not None
        role, operation = span.name.split(".")
        assert span.attributes["quotad.store.role"] == role
        assert span.attributes["db.operation.name"] == operation
    [consume] = [s for s in stored if s.name == "counters.consume"]
    assert consume.attributes is not None
    counters_system = "redis" if store_kind == "redis" else SYSTEM[store_kind]
    assert consume.attributes.get("db.system.name") == counters_system
    # Neither the key nor the operator token is in any span.
    text = attribute_text(spans)
    assert deployment.key not in text
    assert ADMIN_TOKEN not in text


async def test_every_part_of_the_app_has_request_spans(
    traced: httpx2.AsyncClient, exporter: InMemorySpanExporter, store_kind: str
) -> None:
    """The API, the web UI, the health checks and a refusal each get a server span; the
    shared throttle's token buckets (Redis) are store calls too."""
    deployment = await seed(traced)
    exporter.clear()
    asked = [
        ("GET", "/v1/usages", deployment.bearer, 200),
        ("GET", "/dashboard/login", {}, 200),
        ("GET", "/readyz", {}, 200),
        ("GET", "/admin/v1/accounts", {}, 401),
    ]
    for method, path, headers, status in asked:
        response = await traced.request(method, path, headers=headers)
        assert response.status_code == status, (path, response.text)
    spans = exporter.get_finished_spans()
    answered = [(s.name, status_of(s)) for s in servers(spans)]
    assert answered == [(f"{m} {p}", status) for m, p, _, status in asked]
    # /readyz's ping is a store call of its request.
    [readyz] = [s for s in servers(spans) if s.name == "GET /readyz"]
    pings = [s for s in spans if s.name.endswith(".ping")]
    assert pings
    assert all(p.context.trace_id == readyz.context.trace_id for p in pings)
    takes = [s for s in spans if s.name == "buckets.take_token"]
    assert len(takes) == (1 if store_kind == "redis" else 0)


async def test_a_failing_store_call_is_an_error_span(
    traced: httpx2.AsyncClient, exporter: InMemorySpanExporter
) -> None:
    """A store call that raises (a duplicate account) is recorded as an error on its span."""
    await seed(traced)
    exporter.clear()
    again = {"id": "acme", "name": "Acme", "plan": "plan-acme"}
    response = await traced.post("/admin/v1/accounts", json=again, headers=OPERATOR)
    assert response.status_code == 409
    spans = exporter.get_finished_spans()
    failed = [s for s in spans if s.kind is SpanKind.CLIENT and not s.status.is_ok]
    assert [s.name for s in failed] == ["records.create_account"]
    assert failed[0].events[0].name == "exception"


def recording_transport(seen: list[httpx2.Request], status: int = 200) -> httpx2.MockTransport:
    """A transport answering ``/readyz`` with ``status``, keeping every request."""

    def answer(request: httpx2.Request) -> httpx2.Response:
        seen.append(request)
        return httpx2.Response(status, json={"status": "ok"})

    return httpx2.MockTransport(answer)


@pytest.mark.parametrize("shell", ["blocking", "async"])
async def test_an_sdk_call_is_a_client_span_sent_as_traceparent(
    shell: str, global_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """With a global tracer provider, each SDK request is a client span, and carries it in
    traceparent (both shells)."""
    seen: list[httpx2.Request] = []
    if shell == "blocking":
        with Client("http://quotad", transport=recording_transport(seen)) as quotad:
            assert quotad.health()
    else:
        async with AsyncClient("http://quotad", transport=recording_transport(seen)) as aquotad:
            assert await aquotad.health()
    [request] = seen
    [span] = exporter.get_finished_spans()
    assert span.kind is SpanKind.CLIENT
    assert span.name == "GET"
    assert span.instrumentation_scope is not None
    assert span.instrumentation_scope.name == "quotad.sdk"
    assert span.attributes is not None
    assert span.attributes["url.full"] == "http://quotad/readyz"
    assert span.attributes["http.response.status_code"] == 200
    version, trace_id, span_id, flags = request.headers["traceparent"].split("-")
    assert (version, trace_id, span_id) == (
        "00",
        f"{span.context.trace_id:032x}",
        f"{span.context.span_id:016x}",
    )
    assert int(flags, 16) & 1  # sampled


def test_an_error_answer_marks_the_sdk_span_as_an_error(
    global_provider: TracerProvider, exporter: InMemorySpanExporter
) -> None:
    """A 4xx answer sets the client span's status to error, with the status code."""
    seen: list[httpx2.Request] = []
    with (
        Client("http://quotad", transport=recording_transport(seen, 404)) as quotad,
        pytest.raises(NotFoundError),
    ):
        quotad.health()
    [span] = exporter.get_finished_spans()
    assert not span.status.is_ok
    assert span.attributes is not None
    assert span.attributes["http.response.status_code"] == 404


def test_without_a_tracer_provider_the_sdk_sends_no_traceparent() -> None:
    """No global tracer provider: no span, no traceparent header."""
    reset_trace_globals()
    seen: list[httpx2.Request] = []
    with Client("http://quotad", transport=recording_transport(seen)) as quotad:
        assert quotad.health()
    [request] = seen
    assert "traceparent" not in request.headers


# Off by default; on with the standard variables -----------------------------------------
@pytest.mark.parametrize(
    ("environ", "expected"),
    [
        ({}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, ["otlp"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4318/v1/traces"}, ["otlp"]),
        ({"OTEL_TRACES_EXPORTER": "otlp,console"}, ["otlp", "console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, []),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "TRUE"}, []),
    ],
)
def test_the_otel_variables_turn_tracing_on(environ: dict[str, str], expected: list[str]) -> None:
    """Tracing is on when an exporter or an OTLP endpoint is named, off when disabled."""
    assert tracing.exporter_names(environ) == expected


@pytest.mark.parametrize(
    "environ",
    [
        {"OTEL_TRACES_EXPORTER": "zipkin"},
        {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_EXPORTER_OTLP_PROTOCOL": "grpc"},
    ],
)
def test_an_exporter_quotad_does_not_ship_is_refused_at_start(environ: dict[str, str]) -> None:
    """An unknown exporter or the gRPC protocol: a clear error, not silently no traces."""
    reset_trace_globals()
    try:
        with pytest.raises(ValueError, match="quotad ships"):
            tracing.from_environment(environ)
    finally:
        reset_trace_globals()


def test_an_otlp_exporter_that_cannot_load_names_the_fix(monkeypatch: pytest.MonkeyPatch) -> None:
    """OTLP asked for but its modules broken (xds-protos over opentelemetry-proto): the
    error at start says how to put them back."""
    module = "opentelemetry.exporter.otlp.proto.http.trace_exporter"
    monkeypatch.setitem(sys.modules, module, None)  # importing it raises ImportError
    reset_trace_globals()
    try:
        with pytest.raises(RuntimeError, match="--force-reinstall --no-deps opentelemetry-proto"):
            tracing.from_environment({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318"})
    finally:
        reset_trace_globals()


async def test_with_tracing_off_the_app_has_no_tracing_at_all(ctx: Context) -> None:
    """No OTEL_* variable: no tracing middleware, and the app's stores are the context's own."""
    app = create_app(ctx, manage_store=False)
    classes: list[object] = [m.cls for m in app.user_middleware]
    assert classes == [RequestContext, JsonBodyGuard, VerifyFirst]
    assert app.state.ctx is ctx
    assert not isinstance(app.state.ctx.stores.counters, TracedStore)


def test_with_tracing_off_no_opentelemetry_sdk_is_imported(tmp_path: Path) -> None:
    """A fresh process serving a verify without OTEL_* variables imports neither the
    OpenTelemetry SDK nor the instrumentation."""
    script = """
import asyncio, sys
import httpx2
from quotad.api.app import create_app
from quotad.http.middleware import JsonBodyGuard, RequestContext
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url

async def main():
    ctx = Context(stores_from_url("memory://"), Settings(_env_file=None, store_url="memory://", admin_token="t"))
    app = create_app(ctx, manage_store=False)
    async with httpx2.AsyncClient(transport=httpx2.ASGITransport(app=app), base_url="http://q") as http:
        answer = await http.post("/v1/verify", json={"key": "qd_x", "service": "s"}, headers={"Authorization": "Bearer t"})
        assert answer.status_code in (200, 400, 404), answer.text
asyncio.run(main())
print(sorted(m for m in sys.modules if m.startswith(("opentelemetry.sdk", "opentelemetry.instrumentation"))))
"""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-c", script],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines()[-1] == "[]", done.stdout


async def test_excluded_urls_are_not_traced(
    ctx: Context,
    provider: TracerProvider,
    exporter: InMemorySpanExporter,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """OTEL_PYTHON_EXCLUDED_URLS=healthz,readyz: the probes have no span; other paths do."""
    monkeypatch.setenv("OTEL_PYTHON_EXCLUDED_URLS", "healthz,readyz")
    app = create_app(ctx, manage_store=False, tracer_provider=provider)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
        assert (await http.get("/healthz")).status_code == 200
        assert (await http.get("/readyz")).status_code == 200
        assert (await http.get("/dashboard/login")).status_code == 200
    assert [s.name for s in servers(exporter.get_finished_spans())] == ["GET /dashboard/login"]


class Collector:
    """An OTLP/HTTP collector on a loopback port: keeps every export request it is sent."""

    def __init__(self) -> None:
        self.received: list[tuple[str, bytes]] = []
        self.arrived = threading.Event()
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                length = int(self.headers["Content-Length"])
                collector.received.append((self.path, self.rfile.read(length)))
                collector.arrived.set()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *_args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        """The base URL to give OTEL_EXPORTER_OTLP_ENDPOINT."""
        return f"http://127.0.0.1:{self.server.server_address[1]}"

    def spans(self) -> list[tuple[str, str, Any]]:
        """(service.name, scope, span) of every span received (spans as protobuf messages)."""
        found = []
        for _path, body in list(self.received):
            request = ExportTraceServiceRequest.FromString(body)
            for resource_spans in request.resource_spans:
                attrs = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
                for scope_spans in resource_spans.scope_spans:
                    for span in scope_spans.spans:
                        found.append((attrs["service.name"], scope_spans.scope.name, span))
        return found

    def names(self) -> list[tuple[str, str, str]]:
        """(service.name, scope, span name) of every span received."""
        return [(service, scope, span.name) for service, scope, span in self.spans()]


@pytest.fixture
def collector() -> Iterator[Collector]:
    """A running collector, stopped afterwards."""
    running = Collector()
    running.thread.start()
    yield running
    running.server.shutdown()
    running.server.server_close()


async def test_an_otlp_endpoint_variable_sends_the_spans_there(
    ctx: Context, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_EXPORTER_OTLP_ENDPOINT alone: request and store spans reach that collector over
    OTLP/HTTP, from service "quotad"."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    reset_trace_globals()
    try:
        app = create_app(ctx, manage_store=False)
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
            await seed(http)
            assert (await http.get("/readyz")).status_code == 200
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        reset_trace_globals()
    assert collector.received
    assert {path for path, _ in collector.received} == {"/v1/traces"}
    spans = collector.names()
    assert ("quotad", "opentelemetry.instrumentation.asgi", "GET /readyz") in spans
    assert any(scope == "quotad.storage" and name.endswith(".ping") for _, scope, name in spans)


@pytest.mark.slow
async def test_a_served_verify_continues_the_sdk_callers_trace(
    collector: Collector,
    global_provider: TracerProvider,
    exporter: InMemorySpanExporter,
    tmp_path: Path,
) -> None:
    """`quotad serve` with OTEL_EXPORTER_OTLP_ENDPOINT, called by the SDK over the network:
    the server's verify span (exported over OTLP) is the SDK's client span's child, and
    its store calls are in the same trace."""
    traced_env = {
        "OTEL_EXPORTER_OTLP_ENDPOINT": collector.endpoint,
        "OTEL_BSP_SCHEDULE_DELAY": "50",
    }
    spec = quotad_spec(f"sqlite:///{tmp_path / 'quotad.db'}")
    spec.env.update(traced_env)
    with running_all(tmp_path, spec) as [server]:
        async with http_client() as http:
            [account] = await provision(http, server.base, ["traced"], 100)
        exporter.clear()
        with Client(server.base, operator_token=PROCESS_TOKEN) as quotad:
            assert quotad.verify(account.key, "insights").valid
        [client] = exporter.get_finished_spans()
        deadline = time.monotonic() + 10
        while not (verifies := [s for _, _, s in collector.spans() if s.name == "POST /v1/verify"]):
            assert time.monotonic() < deadline, f"no verify span arrived: {collector.names()}"
            await asyncio.sleep(0.05)
    [verify] = verifies
    assert verify.trace_id == client.context.trace_id.to_bytes(16, "big")
    assert verify.parent_span_id == client.context.span_id.to_bytes(8, "big")
    in_trace = [s for _, _, s in collector.spans() if s.trace_id == verify.trace_id]
    assert any(
        s.name == "counters.consume" and s.parent_span_id == verify.span_id for s in in_trace
    )


def test_a_tracer_provider_set_before_is_used_as_it_is(global_provider: TracerProvider) -> None:
    """With a global tracer provider already set (opentelemetry-instrument, say), the OTEL_*
    variables turn tracing on with that provider, not a second one."""
    environ = {"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:9"}
    assert tracing.from_environment(environ) is global_provider
    assert trace.get_tracer_provider() is global_provider


CONSOLE_SCRIPT = """
import asyncio
import httpx2
from opentelemetry import trace
from quotad.api.app import create_app
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url

async def main():
    settings = Settings(_env_file=None, store_url="memory://", admin_token="t")
    app = create_app(Context(stores_from_url("memory://"), settings), manage_store=False)
    transport = httpx2.ASGITransport(app=app)
    async with httpx2.AsyncClient(transport=transport, base_url="http://q") as http:
        assert (await http.get("/readyz")).status_code == 200
asyncio.run(main())
trace.get_tracer_provider().force_flush()
"""


@pytest.mark.parametrize(
    ("environ", "service"),
    [
        ({"OTEL_TRACES_EXPORTER": "console"}, "quotad"),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SERVICE_NAME": "quotad-eu"}, "quotad-eu"),
        (
            {"OTEL_TRACES_EXPORTER": "console", "OTEL_RESOURCE_ATTRIBUTES": "service.name=q-us"},
            "q-us",
        ),
    ],
)
def test_the_console_exporter_writes_spans_to_stdout(
    environ: dict[str, str], service: str, tmp_path: Path
) -> None:
    """OTEL_TRACES_EXPORTER=console: a process's request and store spans as JSON on stdout,
    from service "quotad" unless OTEL_SERVICE_NAME or OTEL_RESOURCE_ATTRIBUTES name another."""
    env = {"PATH": "/usr/bin:/bin", "HOME": str(tmp_path), "QUOTAD_LOG_LEVEL": "error", **environ}
    done = subprocess.run(
        [sys.executable, "-c", CONSOLE_SCRIPT],
        check=False,
        capture_output=True,
        text=True,
        env=env,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    assert '"name": "GET /readyz"' in done.stdout
    assert '"name": "counters.ping"' in done.stdout
    assert f'"service.name": "{service}"' in done.stdout


async def test_the_sampler_variable_applies(
    ctx: Context, collector: Collector, monkeypatch: pytest.MonkeyPatch
) -> None:
    """OTEL_TRACES_SAMPLER=always_off: tracing is configured, and no span is recorded."""
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", collector.endpoint)
    monkeypatch.setenv("OTEL_TRACES_SAMPLER", "always_off")
    reset_trace_globals()
    try:
        app = create_app(ctx, manage_store=False)
        provider = trace.get_tracer_provider()
        assert isinstance(provider, TracerProvider)
        transport = httpx2.ASGITransport(app=app)
        async with httpx2.AsyncClient(transport=transport, base_url="http://quotad") as http:
            assert (await http.get("/readyz")).status_code == 200
        assert provider.force_flush(10_000)
        provider.shutdown()
    finally:
        reset_trace_globals()
    assert collector.spans() == []
