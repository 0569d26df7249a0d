"""A token bucket, as pure arithmetic over an injected time."""

from __future__ import annotations

import math
from dataclasses import dataclass


@dataclass(slots=True)
class Bucket:
    """Tokens left and when they were last counted (seconds, monotonic)."""

    tokens: float
    stamp: float


@dataclass(frozen=True, slots=True)
class TokenBucket:
    """``rate`` tokens per second, holding at most ``burst``."""

    rate: float
    burst: int

    def take(self, bucket: Bucket | None, now: float, cost: float = 1.0) -> tuple[Bucket, float]:
        """Take ``cost`` tokens at ``now``.

        Returns:
            The bucket after the attempt, and 0.0 when allowed, else the seconds to wait.
        """
        if bucket is None:
            bucket = Bucket(float(self.burst), now)
        elapsed = max(now - bucket.stamp, 0.0)
        tokens = min(float(self.burst), bucket.tokens + elapsed * self.rate)
        if tokens >= cost:
            return Bucket(tokens - cost, now), 0.0
        wait = (cost - tokens) / self.rate if self.rate > 0 else math.inf
        return Bucket(tokens, now), wait
