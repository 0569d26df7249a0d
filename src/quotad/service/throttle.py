"""Per-key request throttling of the customer endpoints (a token bucket per key).

In one process the buckets live in memory (``LocalThrottle``). A store that several
nodes share may keep them itself (``Stores.buckets``: Redis's; ``SharedThrottle``), so a
key's budget is the same whichever node answers.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import Literal, Protocol

from quotad import metrics
from quotad.domain.ratelimit import Bucket, TokenBucket
from quotad.errors import RateLimited
from quotad.storage.base import TokenBuckets

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


class SharedThrottle:
    """Token buckets kept by a store that every node shares (Redis)."""

    def __init__(self, buckets: TokenBuckets, rate: float, burst: int) -> None:
        self._take_token, self._rate, self._burst = buckets.take_token, rate, burst

    async def check(self, bucket_id: str) -> None:
        """Take one token for ``bucket_id``."""
        if self._rate <= 0:
            return
        wait = await self._take_token(bucket_id, self._rate, self._burst)
        if wait > 0:
            raise refuse(wait)


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


Realm = Literal["customer", "operator"]


class FailureBudget:
    """Slows down a client that keeps presenting bad credentials (guessing keys or tokens).

    Each failed authentication takes a token from the client's bucket of its realm; a
    failure that finds the bucket empty is answered 429 instead of 401. The credential is
    always checked first and a valid one is served whatever the bucket holds: a budget
    counts failures by address, and one address is often many callers (a NAT, an API
    server relaying its customers' reads), so refusing by address alone would let one
    bad caller lock the good ones out. Customer keys and operator tokens have separate
    realms, so failing customers never slow the operator down, nor the other way round.
    """

    def __init__(self, per_minute: int, monotonic: Callable[[], float]) -> None:
        self._policy = TokenBucket(per_minute / 60, max(per_minute, 1))
        self._monotonic = monotonic
        self._buckets: OrderedDict[tuple[Realm, str], Bucket] = OrderedDict()
        self._lock = threading.Lock()
        self.enabled = per_minute > 0

    def record_failure(self, realm: Realm, client: str) -> None:
        """Spend one token of ``client``'s budget in ``realm``.

        Raises:
            RateLimited: the budget was already spent (answer this failure with 429).
        """
        if not self.enabled:
            return
        where = (realm, client)
        with self._lock:
            bucket, wait = self._policy.take(self._buckets.get(where), self._monotonic())
            self._buckets[where] = bucket
            self._buckets.move_to_end(where)
            if len(self._buckets) > MAX_BUCKETS:
                self._buckets.popitem(last=False)
        if wait > 0:
            raise refuse(wait, "too many failed authentications from this client; slow down")
