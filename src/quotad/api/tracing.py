"""OpenTelemetry tracing of every request and store call, off unless configured (SPEC 12).

Tracing is on when the standard variables ask for it: ``OTEL_TRACES_EXPORTER`` names an
exporter other than ``none``, or an OTLP endpoint is set (``OTEL_EXPORTER_OTLP_ENDPOINT``
or ``OTEL_EXPORTER_OTLP_TRACES_ENDPOINT``); ``OTEL_SDK_DISABLED=true`` turns it off
whatever else says. It needs the ``otel`` extra (``pip install 'quotad[otel]'``).

When on, the whole app (verify, the API, the web UI) is wrapped in the ASGI
instrumentation's middleware, one server span per request (continuing the caller's trace
from its ``traceparent``), and every store call is a child span of it
(``quotad.storage.traced``). When off, ``from_environment`` answers ``None`` after reading
a few variables: nothing of OpenTelemetry is imported and no middleware is added.

The exporters are the SDK's own, configured by their standard variables
(``OTEL_EXPORTER_OTLP_*``, ``OTEL_SERVICE_NAME``, ``OTEL_RESOURCE_ATTRIBUTES``,
``OTEL_BSP_*``, ``OTEL_TRACES_SAMPLER``): ``otlp`` (OTLP over HTTP, ``http/protobuf``)
and ``console``. A tracer provider set before quotad starts (by ``opentelemetry-instrument``,
say) is used as it is.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from opentelemetry.sdk.trace.export import SpanExporter
    from opentelemetry.trace import TracerProvider
    from starlette.applications import Starlette

ENDPOINTS = ("OTEL_EXPORTER_OTLP_ENDPOINT", "OTEL_EXPORTER_OTLP_TRACES_ENDPOINT")
EXPORTERS = ("otlp", "console")
DEFAULT_SERVICE_NAME = "quotad"


def exporter_names(environ: Mapping[str, str] = os.environ) -> list[str]:
    """The exporters the variables ask for; empty when tracing is off."""
    if environ.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return []
    named = environ.get("OTEL_TRACES_EXPORTER", "").strip()
    if named:
        return [n for n in (p.strip().lower() for p in named.split(",")) if n and n != "none"]
    if any(environ.get(name, "").strip() for name in ENDPOINTS):
        return ["otlp"]
    return []


def from_environment(environ: Mapping[str, str] = os.environ) -> TracerProvider | None:
    """The tracer provider the ``OTEL_*`` variables configure, or ``None`` when tracing is off.

    The first call sets the global tracer provider (unless one is set already, which is
    then used); later calls answer it.

    Raises:
        RuntimeError: tracing is asked for, but the ``otel`` extra is not installed.
        ValueError: an exporter or OTLP protocol quotad does not ship is named.
    """
    names = exporter_names(environ)
    if not names:
        return None
    try:
        from opentelemetry import trace
        from opentelemetry.sdk.resources import SERVICE_NAME, Resource
        from opentelemetry.sdk.trace import TracerProvider as SdkTracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor
    except ImportError as exc:  # pragma: no cover - the test environment has the extra
        msg = "OTEL_* variables ask for tracing: install it with pip install 'quotad[otel]'"
        raise RuntimeError(msg) from exc
    current = trace.get_tracer_provider()
    if not isinstance(current, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return current
    exporters = [_exporter(name, environ) for name in names]
    resource = Resource.create()  # OTEL_SERVICE_NAME, OTEL_RESOURCE_ATTRIBUTES
    if str(resource.attributes.get(SERVICE_NAME, "unknown_service")).startswith("unknown_service"):
        resource = resource.merge(Resource({SERVICE_NAME: DEFAULT_SERVICE_NAME}))
    provider = SdkTracerProvider(resource=resource)
    for exporter in exporters:
        provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def _exporter(name: str, environ: Mapping[str, str]) -> SpanExporter:
    if name == "console":
        from opentelemetry.sdk.trace.export import ConsoleSpanExporter

        return ConsoleSpanExporter()
    if name != "otlp":
        msg = f"OTEL_TRACES_EXPORTER: quotad ships {', '.join(EXPORTERS)}, not {name!r}"
        raise ValueError(msg)
    protocol = (
        environ.get("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL")
        or environ.get("OTEL_EXPORTER_OTLP_PROTOCOL")
        or "http/protobuf"
    ).strip()
    if protocol != "http/protobuf":
        msg = f"OTEL_EXPORTER_OTLP_PROTOCOL: quotad ships OTLP over http/protobuf, not {protocol!r}"
        raise ValueError(msg)
    try:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        # xds-protos (the envoy extra) ships an old copy of opentelemetry-proto's modules;
        # installed after it, they replace the exporter's own.
        msg = (
            f"the OTLP exporter cannot load ({exc}); if the envoy extra was installed after "
            "the otel one, restore OpenTelemetry's protobuf modules with: "
            "pip install --force-reinstall --no-deps opentelemetry-proto"
        )
        raise RuntimeError(msg) from exc
    return OTLPSpanExporter()  # endpoint, headers, timeout: from OTEL_EXPORTER_OTLP_*


def instrument(app: Starlette, provider: TracerProvider) -> None:
    """Wrap the whole of ``app`` in the ASGI instrumentation: one server span per request.

    Outermost, so that every request (verify, the API, the web UI, the health checks and
    the refusals of the app's own middleware) has its span. The per-message ``receive``
    and ``send`` spans are left out: they say nothing a request span does not.
    """
    from opentelemetry.instrumentation.asgi import OpenTelemetryMiddleware
    from opentelemetry.util.http import get_excluded_urls

    app.add_middleware(
        OpenTelemetryMiddleware,
        tracer_provider=provider,
        # OTEL_PYTHON_ASGI_EXCLUDED_URLS or OTEL_PYTHON_EXCLUDED_URLS: paths not traced
        # (the health checks a balancer asks every few seconds, say).
        excluded_urls=get_excluded_urls("ASGI"),
        exclude_spans=["receive", "send"],
    )
