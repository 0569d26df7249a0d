"""Stores, named by URL: ``memory://``, ``sqlite:///path/to/quotad.db``, ``postgresql://…``,
``redis://host:6379/0?records=<SQL URL>``.

A URL names a deployment's records and counters (``Stores``). SQL and memory keep both in
one store; Redis keeps counters only, over the SQL store its ``records`` parameter names.
Backends are named as ``"module:Class"`` and imported only when a URL asks for them, so a
deployment never needs the drivers of stores it does not use.
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING
from urllib.parse import urlsplit

from quotad.storage.base import (
    AlertStore,
    CounterStore,
    CreditStore,
    RecordsAndCounters,
    RecordStore,
    TokenBuckets,
)

BACKENDS: dict[str, str] = {
    "memory": "quotad.storage.memory:MemoryStore",
    "sqlite": "quotad.storage.sql:SqlStore",
    "postgresql": "quotad.storage.sql:SqlStore",
    "postgres": "quotad.storage.sql:SqlStore",
    "redis": "quotad.storage.redis:RedisCounters",
    "rediss": "quotad.storage.redis:RedisCounters",
}
if TYPE_CHECKING:  # mypy checks each backend against the contracts it keeps
    from quotad.storage.memory import MemoryStore
    from quotad.storage.redis import RedisCounters
    from quotad.storage.sql import SqlStore

    _MEMORY: type[RecordsAndCounters] = MemoryStore
    _SQL: type[RecordsAndCounters] = SqlStore
    _REDIS: type[CounterStore] = RedisCounters
    _REDIS_BUCKETS: type[TokenBuckets] = RedisCounters

# Schemes whose backend keeps counters only, over the records store it opens itself (its
# ``records``); it also keeps the token buckets every node shares.
COUNTERS_ONLY = frozenset({"redis", "rediss"})


@dataclass(frozen=True, slots=True)
class Stores:
    """A deployment's records and counters, opened and closed together.

    The counter store opens the records store with itself: they are one store (SQL,
    memory: ``Stores.of``), or the counters are over the records (Redis). ``alerts`` and
    ``credits`` (grants, reservations) are kept with the records. ``buckets`` are the
    token buckets every node shares, when the counter store keeps them.
    """

    records: RecordStore
    counters: CounterStore
    alerts: AlertStore
    credits: CreditStore
    buckets: TokenBuckets | None = None
    # What must finish before the stores close (a context's alert writes): see ``close``.
    _before_close: list[Callable[[], Awaitable[None]]] = field(
        default_factory=list, compare=False, repr=False
    )

    @classmethod
    def of(cls, store: RecordsAndCounters) -> Stores:
        """One store that keeps records and counters alike."""
        return cls(store, store, store, store)

    @property
    def url(self) -> str:
        """The URL the stores were named by."""
        return self.counters.url

    async def open(self) -> None:
        """Connect and bring the schemas up to date."""
        await self.counters.open()

    def on_close(self, finish: Callable[[], Awaitable[None]]) -> None:
        """Have ``close`` await ``finish`` first: work under way on these stores (an alert
        being written) ends before its connections are taken away, whoever closes them."""
        self._before_close.append(finish)

    async def close(self) -> None:
        """Release connections, once the work registered with ``on_close`` has finished
        (the counter store writes what it holds back first)."""
        for finish in self._before_close:
            await finish()
        await self.counters.close()

    async def ping(self) -> None:
        """Raise ``StorageError`` unless records and counters answer."""
        await self.counters.ping()


_PASSWORD = re.compile(r"(://[^:/@?&\s]*:)[^@/?&\s]+@")


def mask_url(url: str) -> str:
    """``url`` with every password (a records URL inside it included) shown as ``***``."""
    return _PASSWORD.sub(r"\1***@", url)


def stores_from_url(url: str) -> Stores:
    """The (not yet opened) stores a URL names.

    Raises:
        ValueError: the scheme is not one of ``BACKENDS``.
    """
    scheme = urlsplit(url).scheme.split("+", 1)[0]
    target = BACKENDS.get(scheme)
    if target is None:
        known = ", ".join(f"{name}://" for name in sorted(BACKENDS))
        msg = f"unknown store URL scheme {scheme!r}; known: {known}"
        raise ValueError(msg)
    module_name, class_name = target.split(":")
    backend = getattr(importlib.import_module(module_name), class_name)
    if scheme in COUNTERS_ONLY:
        counters: RedisCounters = backend(url)
        records = counters.records
        return Stores(records, counters, records, records, buckets=counters)
    store: RecordsAndCounters = backend(url)
    return Stores.of(store)


__all__ = [
    "BACKENDS",
    "AlertStore",
    "CounterStore",
    "CreditStore",
    "RecordStore",
    "RecordsAndCounters",
    "Stores",
    "TokenBuckets",
    "mask_url",
    "stores_from_url",
]
