"""A read-through cache of the records the hot path reads on every call.

Verify reads a service, a key, an account and a plan before its one atomic consume.
They change rarely, so each node keeps them for ``ttl`` seconds. Any record write made
through this node clears the cache at once; a write made on another node (a revoked key,
a suspended account, a changed plan) takes effect here within ``ttl`` seconds. Counters
(usage, gauges, idempotency) are never cached.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import Any

from quotad.storage.base import Store

_CACHED = frozenset({"get_service", "get_plan", "get_account", "find_key"})
_RECORD_WRITES = frozenset(
    {
        "put_setting",
        "create_service",
        "create_plan",
        "replace_plan",
        "delete_plan",
        "create_account",
        "update_account",
        "delete_account",
        "create_key",
        "revoke_key",
        "rotate_key",
    }
)
MAX_ENTRIES = 50_000


class CachingStore:
    """Wraps a store; caches ``_CACHED`` reads for ``ttl`` seconds, passes the rest through."""

    def __init__(
        self, inner: Store, ttl: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self._ttl = ttl
        self._monotonic = monotonic
        self._entries: dict[tuple[str, str], tuple[float, Any]] = {}

    def clear(self) -> None:
        """Forget every cached record."""
        self._entries.clear()

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self.inner, name)
        if name in _CACHED:
            attribute = self._cached(name, attribute)
        elif name in _RECORD_WRITES:
            attribute = self._clearing(attribute)
        if callable(attribute):
            # Kept on the instance, so later lookups (several per verify) are plain
            # attribute reads rather than calls of __getattr__ building a new wrapper.
            setattr(self, name, attribute)
        return attribute

    def _cached(self, name: str, read: Callable[[str], Awaitable[Any]]) -> Any:
        async def cached(key: str) -> Any:
            now = self._monotonic()
            hit = self._entries.get((name, key))
            if hit is not None and hit[0] > now:
                return hit[1]
            value = await read(key)
            if value is not None:  # a record created elsewhere must show up at once
                if len(self._entries) >= MAX_ENTRIES:
                    self._entries.clear()
                self._entries[(name, key)] = (now + self._ttl, value)
            return value

        return cached

    def _clearing(self, write: Callable[..., Awaitable[Any]]) -> Any:
        async def clearing(*args: Any, **kwargs: Any) -> Any:
            self.clear()
            try:
                return await write(*args, **kwargs)
            finally:
                self.clear()

        return clearing
