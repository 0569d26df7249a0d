"""Stores whose every call is an OpenTelemetry span (``traced``), for tracing (SPEC 12).

Only built when tracing is on (``quotad.api.tracing``): with tracing off, nothing here is
imported and the stores are called directly. Each async method of the records, counters
and token buckets becomes a ``CLIENT`` span named ``records.get_account``,
``counters.consume``, … under the request's span, with the store's kind
(``db.system.name``) and the operation; never an argument's value (keys, digests).
A failure is recorded on its span and raised on unchanged.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any, cast
from urllib.parse import urlsplit

from quotad import __version__
from quotad.storage import (
    AlertStore,
    CounterStore,
    CreditStore,
    RecordStore,
    Stores,
    TokenBuckets,
)

if TYPE_CHECKING:
    from opentelemetry.trace import Tracer, TracerProvider

# The semantic conventions' names of the systems quotad stores in (memory has none).
SYSTEMS = {"sqlite": "sqlite", "postgresql": "postgresql", "postgres": "postgresql"}
SYSTEMS |= {"redis": "redis", "rediss": "redis"}


class TracedStore:
    """A store whose async methods each run in a span; everything else is the store's."""

    def __init__(self, inner: object, tracer: Tracer, role: str, url: str) -> None:
        self._inner = inner
        self._tracer = tracer
        self._role = role
        self._attributes = {"quotad.store.role": role}
        system = SYSTEMS.get(urlsplit(url).scheme.split("+", 1)[0])
        if system is not None:
            self._attributes["db.system.name"] = system

    def __getattr__(self, name: str) -> Any:
        """The store's attribute; an async method wrapped in a span (made once, then kept)."""
        value = getattr(self._inner, name)
        if not inspect.iscoroutinefunction(value):
            return value
        wrapped = self._spanned(name, value)
        self.__dict__[name] = wrapped  # the next lookup finds it without __getattr__
        return wrapped

    def _spanned(
        self, name: str, method: Callable[..., Awaitable[Any]]
    ) -> Callable[..., Awaitable[Any]]:
        from opentelemetry.trace import SpanKind

        tracer = self._tracer
        span_name = f"{self._role}.{name}"
        attributes = {**self._attributes, "db.operation.name": name}

        async def call(*args: Any, **kwargs: Any) -> Any:
            with tracer.start_as_current_span(
                span_name, kind=SpanKind.CLIENT, attributes=attributes
            ):
                return await method(*args, **kwargs)

        call.__name__ = call.__qualname__ = name
        call.__doc__ = method.__doc__
        return call


def traced(stores: Stores, provider: TracerProvider) -> Stores:
    """``stores`` with a span around every call to its records, counters and buckets."""
    tracer = provider.get_tracer("quotad.storage", __version__)
    records_url = getattr(stores.records, "url", stores.url)
    records = cast(RecordStore, TracedStore(stores.records, tracer, "records", records_url))
    counters = cast(CounterStore, TracedStore(stores.counters, tracer, "counters", stores.url))
    alerts = cast(AlertStore, TracedStore(stores.alerts, tracer, "alerts", records_url))
    credits = cast(CreditStore, TracedStore(stores.credits, tracer, "credits", records_url))
    buckets = (
        None
        if stores.buckets is None
        else cast(TokenBuckets, TracedStore(stores.buckets, tracer, "buckets", stores.url))
    )
    return Stores(records, counters, alerts, credits, buckets)
