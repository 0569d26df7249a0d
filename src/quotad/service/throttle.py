"""Per-key request throttling of the customer endpoints (a token bucket per key).

Buckets live in this process. With one process per SQLite file that is exact; the
scale-out stores will keep buckets beside their counters.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable

from quotad import metrics
from quotad.domain.ratelimit import Bucket, TokenBucket
from quotad.errors import RateLimited

MAX_BUCKETS = 100_000


class Throttle:
    """Token buckets by key id, bounded in number (least recently used dropped first)."""

    def __init__(self, rate: float, burst: int, monotonic: Callable[[], float]) -> None:
        self._policy = TokenBucket(rate, burst)
        self._monotonic = monotonic
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._lock = threading.Lock()
        self.enabled = rate > 0

    def check(self, bucket_id: str) -> None:
        """Take one token for ``bucket_id``; raise ``RateLimited`` when none is left."""
        if not self.enabled:
            return
        with self._lock:
            bucket, wait = self._policy.take(self._buckets.get(bucket_id), self._monotonic())
            self._buckets[bucket_id] = bucket
            self._buckets.move_to_end(bucket_id)
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        if wait > 0:
            metrics.RATE_LIMITED.inc()
            raise RateLimited(
                "too many requests for this API key; slow down",
                retry_after=max(math.ceil(wait), 1),
            )
