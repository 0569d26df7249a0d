"""Prometheus metrics of the hot path and the stores."""

from __future__ import annotations

from prometheus_client import Counter, Histogram

CONSUMES = Counter(
    "quotad_consumes_total",
    "Verify-and-consume answers, by service and result",
    ["service", "result"],
)
CONSUME_SECONDS = Histogram(
    "quotad_consume_seconds",
    "Time to answer a verify-and-consume, store included",
    buckets=(0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0),
)
STORE_ERRORS = Counter("quotad_store_errors_total", "Store operations that failed", ["operation"])
FAIL_OPEN = Counter(
    "quotad_fail_open_total",
    "Calls allowed uncounted because the store was unreachable",
    ["service"],
)
RATE_LIMITED = Counter("quotad_rate_limited_total", "Customer requests refused by the throttle")
