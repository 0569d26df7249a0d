"""Client spans for the SDK's requests, when the application traces with OpenTelemetry.

The SDK does not depend on OpenTelemetry. When the application using it has installed
the OpenTelemetry API and set a tracer provider, each request the SDK sends is a
``CLIENT`` span (named by its method, with the URL and the answer's status) and carries
the span's context in ``traceparent`` (and whatever else the configured propagators
write), so quotad's server span of the request is its child. Otherwise requests go out
as they are, and nothing of OpenTelemetry is imported.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from quotad import __version__
from quotad.sdk._core import Outgoing

if TYPE_CHECKING:
    from opentelemetry.trace import Span, Tracer

NAME = "quotad.sdk"


def current_tracer() -> Tracer | None:
    """The SDK's tracer from the global provider, or ``None`` when none is set.

    Setting a provider imports ``opentelemetry.trace``: when it never was imported, none
    was set, and it is not imported here either.
    """
    trace: Any = sys.modules.get("opentelemetry.trace")
    if trace is None:
        return None
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    tracer: Tracer = provider.get_tracer(NAME, __version__)
    return tracer


@dataclass
class Sending:
    """One request on its way: the headers to send, and its span (if traced)."""

    headers: dict[str, str]
    span: Span | None = field(default=None)

    def answered(self, status: int) -> None:
        """Note the answer's status on the span (an error from 400 on, as for HTTP clients)."""
        if self.span is None:
            return
        from opentelemetry.trace import Status, StatusCode

        self.span.set_attribute("http.response.status_code", status)
        if status >= 400:
            self.span.set_status(Status(StatusCode.ERROR))


@contextmanager
def sending(out: Outgoing, base_url: object) -> Iterator[Sending]:
    """The request ``out`` about to go out, in a client span when the app traces."""
    tracer = current_tracer()
    if tracer is None:
        yield Sending(out.headers)
        return
    from opentelemetry import propagate
    from opentelemetry.trace import SpanKind

    attributes = {
        "http.request.method": out.method,
        "url.full": f"{str(base_url).rstrip('/')}{out.url}",  # without the query's values
    }
    with tracer.start_as_current_span(
        out.method, kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        carrier = dict(out.headers)
        propagate.inject(carrier)
        yield Sending(carrier, span)
