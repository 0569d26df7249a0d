"""A read-through cache of the records the hot path reads on every call.

Verify reads a service, a key, an account and a plan before its one atomic consume.
They change rarely, so each node keeps them for ``ttl`` seconds. Any record write made
through this node clears the cache at once; a write made on another node (a revoked key,
a suspended account, a changed plan) takes effect here within ``ttl`` seconds. Counters
(usage, gauges, idempotency) are never cached.

Values derived from records (what verify resolves a key to, see ``quotad.service.verify``)
are kept the same way with ``derive`` and ``recall``: their loader reads the records from
the wrapped store itself, so a derived value is never older than ``ttl`` either. A value
missing is loaded once however many callers ask for it at the same time, and a value
still asked for late in its life (past a point drawn at random between its half and
nine tenths, so values loaded together are not reloaded together) is loaded again in
the background while it goes on being served; so keys in steady use never expire, and
their callers never wait for a reload.

Every clear starts a new generation, and a value read or derived before it is neither
stored after it nor handed to a caller that asked after it: a read racing a write cannot
put back what the write replaced.
"""

from __future__ import annotations

import asyncio
import random
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
Loader = Callable[[], Awaitable[Any]]
Keep = Callable[[Any], bool]


def _always(_value: Any) -> bool:
    return True


def _found(value: Any) -> bool:
    return value is not None


class CachingStore:
    """Wraps a store; caches ``_CACHED`` reads for ``ttl`` seconds, passes the rest through."""

    def __init__(
        self, inner: Store, ttl: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self._ttl = ttl
        self._monotonic = monotonic
        # key -> (expires, value, reload at): records and derived values alike
        self._entries: dict[Hashable, tuple[float, Any, float]] = {}
        self._loading: dict[Hashable, asyncio.Task[Any]] = {}
        self.generation = 0  # one more at every clear

    def clear(self) -> None:
        """Forget every cached record and derived value (and loads begun before now)."""
        self.generation += 1
        self._entries.clear()
        self._loading.clear()  # their results may be stale: later callers load afresh

    def recall(self, key: Hashable, reload: Loader | None = None, keep: Keep = _always) -> Any:
        """The value remembered under ``key``, or None once it expired or was cleared.

        With ``reload``, a value late in its life is reloaded in the background (once)
        and served meanwhile; a reloaded value ``keep`` refuses is forgotten instead.
        """
        hit = self._entries.get(key)
        if hit is None:
            return None
        now = self._monotonic()
        if now >= hit[0]:
            return None
        if reload is not None and now >= hit[2] and key not in self._loading:
            self._load(key, reload, keep)
        return hit[1]

    async def derive(self, key: Hashable, load: Loader, keep: Keep) -> Any:
        """What ``load`` answers for ``key``: remembered, or loaded once for every caller.

        ``load`` reads the wrapped store itself. What it answers is kept when ``keep``
        says so (a refusal, say, need not be).
        """
        value = self.recall(key)
        if value is not None:
            return value
        task = self._loading.get(key)
        if task is None:
            task = self._load(key, load, keep)
        # Shielded: a caller that gives up does not cancel the load for the others.
        return await asyncio.shield(task)

    def remember(self, key: Hashable, value: Any, generation: int) -> None:
        """Keep ``value``, read or derived since ``generation``, for ``ttl``."""
        if generation != self.generation:
            return  # records changed meanwhile: the value may be derived from old ones
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        now = self._monotonic()
        reload_at = now + self._ttl * random.uniform(0.5, 0.9)  # noqa: S311 - not a secret
        self._entries[key] = (now + self._ttl, value, reload_at)

    def _load(self, key: Hashable, load: Loader, keep: Keep) -> asyncio.Task[Any]:
        generation = self.generation
        task = asyncio.ensure_future(load())
        self._loading[key] = task

        def loaded(done: asyncio.Task[Any]) -> None:
            if self._loading.get(key) is done:
                del self._loading[key]
            if done.cancelled() or done.exception() is not None:
                return  # a caller waiting gets the error; a background reload retries later
            if keep(done.result()):
                self.remember(key, done.result(), generation)
            elif generation == self.generation:
                self._entries.pop(key, None)  # no longer what the records say

        task.add_done_callback(loaded)
        return task

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
            # Loaded once for every caller asking at the same time; a record missing is
            # not kept, so one created elsewhere shows up at once.
            return await self.derive((name, key), lambda: read(key), _found)

        return cached

    def _clearing(self, write: Callable[..., Awaitable[Any]]) -> Any:
        async def clearing(*args: Any, **kwargs: Any) -> Any:
            self.clear()
            try:
                return await write(*args, **kwargs)
            finally:
                self.clear()

        return clearing
