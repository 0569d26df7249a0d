"""A read-through cache of the records the hot path reads on every call.

Verify reads a service, a key, an account and a plan before its one atomic consume.
They change rarely, so each node keeps them for ``ttl`` seconds. Any record write made
through this node clears the cache at once; a write made on another node (a revoked key,
a suspended account, a changed plan) takes effect here within ``ttl`` seconds. Counters
(usage, gauges, idempotency) are never cached.

Values derived from those records (what verify resolves a key to, see
``quotad.service.verify``) are kept the same way with ``remember`` and ``recall``, so they
expire and clear with the records they came from. Every clear starts a new generation,
and a value read or derived before it is not stored after it: a read racing a write
cannot put back what the write replaced.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable, Hashable
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
        self._entries: dict[Hashable, tuple[float, Any]] = {}
        self.generation = 0  # one more at every clear

    def clear(self) -> None:
        """Forget every cached record and derived value."""
        self.generation += 1
        self._entries.clear()

    def recall(self, key: Hashable) -> Any:
        """The value remembered under ``key``, or None once it expired or was cleared."""
        hit = self._entries.get(key)
        if hit is not None and hit[0] > self._monotonic():
            return hit[1]
        return None

    def remember(self, key: Hashable, value: Any, generation: int) -> None:
        """Keep ``value``, derived from records read since ``generation``, for ``ttl``."""
        if generation != self.generation:
            return  # records changed meanwhile: the value may be derived from old ones
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        self._entries[key] = (self._monotonic() + self._ttl, value)

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
            hit = self._entries.get((name, key))
            if hit is not None and hit[0] > self._monotonic():
                return hit[1]
            generation = self.generation
            value = await read(key)
            if value is not None:  # a record created elsewhere must show up at once
                self.remember((name, key), value, generation)
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
