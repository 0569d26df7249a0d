"""A comparable picture of everything a store holds, to prove a refused request changed nothing."""

from __future__ import annotations

from datetime import date
from typing import Any

from quotad.storage import Stores


async def store_snapshot(stores: Stores, window: tuple[date, date]) -> dict[str, Any]:
    """Services, plans, accounts, keys, gauges and usage days within ``window``."""
    accounts = await stores.records.list_accounts(1000, None)
    services = await stores.records.list_services()
    return {
        "services": services,
        "plans": await stores.records.list_plans(1000, None),
        "accounts": accounts,
        "keys": {a.id: await stores.records.list_keys(a.id) for a in accounts},
        "gauges": {a.id: await stores.counters.gauges(a.id) for a in accounts},
        # usage rather than export_usage: it reads the live counters of every store.
        "usage": {
            (a.id, s.name): [
                (d.day, d.used, d.total, d.rejected)
                for d in await stores.counters.usage(a.id, s.name, *window)
            ]
            for a in accounts
            for s in services
        },
    }
