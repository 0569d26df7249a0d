"""Prometheus metrics of the hot path and the stores.

With several worker processes, set ``PROMETHEUS_MULTIPROC_DIR`` to an empty directory
that every worker can write (before they start, and wiped between runs): each process
then writes its counters there and ``/metrics``, whichever worker answers, adds up
every process's values (prometheus_client's multiprocess mode).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from prometheus_client import Counter, Histogram

    CONSUMES: Counter
    CONSUME_SECONDS: Histogram
    STORE_ERRORS: Counter
    FAIL_OPEN: Counter
    RATE_LIMITED: Counter
    SHADOW_REFUSALS: Counter

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


@dataclass(frozen=True)
class _Metrics:
    consumes: Counter
    consume_seconds: Histogram
    store_errors: Counter
    fail_open: Counter
    rate_limited: Counter
    shadow_refusals: Counter


# The module's public names of the metrics, by field of ``_Metrics``.
_PUBLIC = {
    "CONSUMES": "consumes",
    "CONSUME_SECONDS": "consume_seconds",
    "STORE_ERRORS": "store_errors",
    "FAIL_OPEN": "fail_open",
    "RATE_LIMITED": "rate_limited",
    "SHADOW_REFUSALS": "shadow_refusals",
}


@functools.cache
def _metrics() -> _Metrics:
    # Defined (and prometheus_client imported) on first use, not on import: the CLI's
    # commands import the service layer, which counts, but never serve /metrics.
    from prometheus_client import Counter, Histogram

    return _Metrics(
        consumes=Counter(
            "quotad_consumes_total",
            "Verify-and-consume answers, by service and result",
            ["service", "result"],
        ),
        consume_seconds=Histogram(
            "quotad_consume_seconds",
            "Time to answer a verify-and-consume, store included",
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
        ),
        store_errors=Counter(
            "quotad_store_errors_total", "Store operations that failed", ["operation"]
        ),
        fail_open=Counter(
            "quotad_fail_open_total",
            "Calls allowed uncounted because the store was unreachable",
            ["service"],
        ),
        rate_limited=Counter(
            "quotad_rate_limited_total", "Customer requests refused by the throttle"
        ),
        shadow_refusals=Counter(
            "quotad_shadow_refusals_total",
            "Verifies a shadow limit would have refused (SPEC 9), by service and limit",
            ["service", "limit"],
        ),
    )


def __getattr__(name: str) -> Any:
    """``CONSUMES`` and the other metrics, defined on first use."""
    field = _PUBLIC.get(name)
    if field is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(_metrics(), field)
    globals()[name] = value  # later lookups (verify's, every call) find it directly
    return value


# ``Counter.labels`` takes a lock and validates its arguments on every call; verify counts
# once per request, so its children are kept here. The label pairs are few (services by
# verdict codes, and prometheus_client keeps every child anyway); the cap only bounds the
# memory odd service names could take when fail-open counts calls to unknown services.
_CONSUME_CHILDREN: dict[tuple[str, str], Counter] = {}
_MAX_CHILDREN = 10_000


def count_consume(service: str, result: str) -> None:
    """Add one to ``quotad_consumes_total`` for ``service`` and ``result``."""
    child = _CONSUME_CHILDREN.get((service, result))
    if child is None:
        if len(_CONSUME_CHILDREN) >= _MAX_CHILDREN:
            _CONSUME_CHILDREN.clear()
        child = _CONSUME_CHILDREN[(service, result)] = _metrics().consumes.labels(service, result)
    child.inc()


def count_shadow_refusal(service: str, limit: str) -> None:
    """Add one to ``quotad_shadow_refusals_total`` for ``service`` and the limit's name."""
    _metrics().shadow_refusals.labels(service, limit).inc()


def exposition() -> tuple[bytes, str]:
    """The metrics in Prometheus' text format, and its content type.

    In multiprocess mode (``PROMETHEUS_MULTIPROC_DIR`` set) the values are those of every
    process sharing the directory; otherwise this process's default registry.
    """
    from prometheus_client import (
        CONTENT_TYPE_LATEST,
        CollectorRegistry,
        generate_latest,
        multiprocess,
    )

    _metrics()  # a scrape before any count shows quotad's metrics at zero
    if os.environ.get(MULTIPROC_ENV):
        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)  # type: ignore[no-untyped-call]
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
