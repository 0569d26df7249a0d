"""Background upkeep: forget what the contract no longer needs remembered."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from quotad.domain import days
from quotad.service.context import Context

PURGE_EVERY_SECONDS = 600
log = structlog.get_logger("quotad.maintenance")


async def purge_once(ctx: Context) -> None:
    """Drop expired idempotency answers and event ids past the retention (plus a day)."""
    now = ctx.clock.now()
    await ctx.counters.purge(now, now - days.EVENT_RETENTION - timedelta(days=1))


async def purge_forever(ctx: Context, every: float = PURGE_EVERY_SECONDS) -> None:
    """Run ``purge_once`` periodically until cancelled; failures are logged and retried."""
    while True:
        try:
            await purge_once(ctx)
        except Exception as exc:  # the loop must outlive any store outage
            log.warning("purge failed; will retry", error=str(exc))
        await asyncio.sleep(every)
