"""What every use case needs: the store, the clock and the settings."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import cast

from quotad.domain.clock import Clock, SystemClock
from quotad.service.throttle import FailureBudget, LocalThrottle, SharedThrottle, Throttle
from quotad.settings import Settings
from quotad.storage import Store
from quotad.storage.cache import CachingStore


@dataclass
class Context:
    """The dependencies of the service layer, built once per process."""

    store: Store
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    throttle: Throttle = field(init=False)
    failures: FailureBudget = field(init=False)
    cache: CachingStore | None = field(init=False)  # the record cache, unless turned off

    def __post_init__(self) -> None:
        ttl = self.settings.record_cache_seconds
        if ttl > 0 and not isinstance(self.store, CachingStore):
            self.store = cast(Store, CachingStore(self.store, ttl))
        self.cache = self.store if isinstance(self.store, CachingStore) else None
        self.failures = FailureBudget(self.settings.auth_failures_per_minute, time.monotonic)
        rate, burst = self.settings.rate_limit_per_second, self.settings.rate_limit_burst
        take_token = getattr(self.store, "take_token", None)
        self.throttle = (
            SharedThrottle(take_token, rate, burst)
            if callable(take_token)
            else LocalThrottle(rate, burst, monotonic=time.monotonic)
        )
