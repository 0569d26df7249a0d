"""What every use case needs: the records, the counters, the clock and the settings."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field

from quotad.domain.clock import Clock, SystemClock
from quotad.service.alerts import Noticer
from quotad.service.throttle import FailureBudget, LocalThrottle, SharedThrottle, Throttle
from quotad.settings import Settings
from quotad.storage import CounterStore, RecordStore, Stores
from quotad.storage.cache import RecordCache


@dataclass
class Context:
    """The dependencies of the service layer, built once per process.

    ``records`` is the record cache over the stores' records, unless the settings turn
    it off (``cache`` is then ``None``). ``monotonic`` times the cache and the throttles.
    """

    stores: Stores
    settings: Settings
    clock: Clock = field(default_factory=SystemClock)
    monotonic: Callable[[], float] = time.monotonic
    records: RecordStore = field(init=False)
    counters: CounterStore = field(init=False)
    cache: RecordCache | None = field(init=False)
    throttle: Throttle = field(init=False)
    failures: FailureBudget = field(init=False)
    noticer: Noticer = field(init=False)  # writes the alert events verify notices

    def __post_init__(self) -> None:
        ttl = self.settings.record_cache_seconds
        self.cache = RecordCache(self.stores.records, ttl, self.monotonic) if ttl > 0 else None
        self.records = self.stores.records if self.cache is None else self.cache
        self.counters = self.stores.counters
        self.noticer = Noticer(self.stores.alerts)
        self.stores.on_close(self.noticer.drain)
        self.failures = FailureBudget(self.settings.auth_failures_per_minute, self.monotonic)
        rate, burst = self.settings.rate_limit_per_second, self.settings.rate_limit_burst
        buckets = self.stores.buckets
        self.throttle = (
            LocalThrottle(rate, burst, self.monotonic)
            if buckets is None
            else SharedThrottle(buckets, rate, burst)
        )
