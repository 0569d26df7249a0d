"""Stores, opened by URL: ``memory://``, ``sqlite:///path/to/quotad.db``, ``postgresql://…``.

Backends are named as ``"module:Class"`` and imported only when a URL asks for
them, so a deployment never needs the drivers of stores it does not use.
"""

from __future__ import annotations

import importlib
import re
from urllib.parse import urlsplit

from quotad.storage.base import Store

BACKENDS: dict[str, str] = {
    "memory": "quotad.storage.memory:MemoryStore",
    "sqlite": "quotad.storage.sql:SqlStore",
    "postgresql": "quotad.storage.sql:SqlStore",
    "postgres": "quotad.storage.sql:SqlStore",
    "redis": "quotad.storage.redis:RedisStore",
    "rediss": "quotad.storage.redis:RedisStore",
}


_PASSWORD = re.compile(r"(://[^:/@?&\s]*:)[^@/?&\s]+@")


def mask_url(url: str) -> str:
    """``url`` with every password (a records URL inside it included) shown as ``***``."""
    return _PASSWORD.sub(r"\1***@", url)


def store_from_url(url: str) -> Store:
    """The (not yet opened) store a URL names.

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
    store_class = getattr(importlib.import_module(module_name), class_name)
    store: Store = store_class(url)
    return store


__all__ = ["BACKENDS", "Store", "mask_url", "store_from_url"]
