"""A comparable picture of everything a store holds, to prove a refused request changed nothing."""

from __future__ import annotations

from datetime import date
from typing import Any

from quotad.storage import Store


async def store_snapshot(store: Store, window: tuple[date, date]) -> dict[str, Any]:
    """Services, plans, accounts, keys, gauges and usage days within ``window``."""
    accounts = await store.list_accounts(1000, None)
    services = await store.list_services()
    return {
        "services": services,
        "plans": await store.list_plans(1000, None),
        "accounts": accounts,
        "keys": {a.id: await store.list_keys(a.id) for a in accounts},
        "gauges": {a.id: await store.gauges(a.id) for a in accounts},
        # store.usage rather than export_usage: it reads the live counters of every store.
        "usage": {
            (a.id, s.name): [
                (d.day, d.used, d.total, d.rejected)
                for d in await store.usage(a.id, s.name, *window)
            ]
            for a in accounts
            for s in services
        },
    }
