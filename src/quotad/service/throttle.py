"""Per-key request throttling of the customer endpoints (a token bucket per key).

In one process the buckets live in memory (``LocalThrottle``). A store that several
nodes share may keep them itself (the Redis store does), so a key's budget is the same
whichever node answers.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Protocol

from quotad import metrics
from quotad.domain.ratelimit import Bucket, TokenBucket
from quotad.errors import RateLimited

MAX_BUCKETS = 100_000


class Throttle(Protocol):
    """Takes one token per request from a bucket."""

    async def check(self, bucket_id: str) -> None:
        """Take a token for ``bucket_id``; raise ``RateLimited`` when none is left."""
        ...


def refuse(wait: float, note: str = "too many requests for this API key; slow down") -> RateLimited:
    """The error for a request that must wait ``wait`` seconds."""
    metrics.RATE_LIMITED.inc()
    return RateLimited(note, retry_after=max(math.ceil(wait), 1))


class LocalThrottle:
    """Token buckets by key id in this process, bounded (least recently used dropped first)."""

    def __init__(self, rate: float, burst: int, monotonic: Callable[[], float]) -> None:
        self._policy = TokenBucket(rate, burst)
        self._monotonic = monotonic
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._lock = threading.Lock()

    async def check(self, bucket_id: str) -> None:
        """Take one token for ``bucket_id``."""
        if self._policy.rate <= 0:
            return
        with self._lock:
            bucket, wait = self._policy.take(self._buckets.get(bucket_id), self._monotonic())
            self._buckets[bucket_id] = bucket
            self._buckets.move_to_end(bucket_id)
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        if wait > 0:
            raise refuse(wait)


class FailureBudget:
    """Slows down a client that keeps presenting bad credentials (guessing keys or tokens).

    Each failed authentication takes a token from the client's bucket; while the bucket
    is empty, the client's requests are refused with 429 before any key is looked at.
    Successful requests cost nothing.
    """

    def __init__(self, per_minute: int, monotonic: Callable[[], float]) -> None:
        self._policy = TokenBucket(per_minute / 60, max(per_minute, 1))
        self._monotonic = monotonic
        self._buckets: OrderedDict[str, Bucket] = OrderedDict()
        self._lock = threading.Lock()
        self.enabled = per_minute > 0

    def check(self, client: str) -> None:
        """Refuse ``client`` while its failure budget is spent."""
        if not self.enabled or client not in self._buckets:  # most clients never failed
            return
        with self._lock:
            bucket = self._buckets.get(client)
            if bucket is None:
                return
            bucket, _ = self._policy.take(bucket, self._monotonic(), cost=0)
            self._buckets[client] = bucket
        if bucket.tokens < 1:
            raise refuse(
                (1 - bucket.tokens) / self._policy.rate,
                "too many failed authentications from this client; slow down",
            )

    def record_failure(self, client: str) -> None:
        """Spend one token of ``client``'s budget."""
        if not self.enabled:
            return
        with self._lock:
            bucket, _ = self._policy.take(self._buckets.get(client), self._monotonic())
            self._buckets[client] = bucket
            self._buckets.move_to_end(client)
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
