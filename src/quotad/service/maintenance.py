"""Background upkeep: forget what the contract no longer needs remembered."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import structlog

from quotad.domain import days
from quotad.service import alerts, reservations
from quotad.service.context import Context

PURGE_EVERY_SECONDS = 600
log = structlog.get_logger("quotad.maintenance")


async def purge_once(ctx: Context) -> None:
    """Drop expired idempotency answers, event ids past the retention (plus a day), and
    reservations settled for as long as their settlement's claim is kept."""
    now = ctx.clock.now()
    await ctx.counters.purge(now, now - days.EVENT_RETENTION - timedelta(days=1))
    await ctx.stores.credits.purge_reservations(now - timedelta(days=reservations.REPLAY_DAYS))


async def notice_expiring_keys(ctx: Context) -> None:
    """Notice ``key.expiring`` for every live key that expires within ``key_expiring_days``
    (each once: the event's dedupe key names the key and its expiry)."""
    now = ctx.clock.now()
    horizon = now + timedelta(days=ctx.settings.key_expiring_days)
    after = None
    while True:
        page = await ctx.records.list_accounts(500, after)
        for account in page:
            for key in await ctx.records.list_keys(account.id):
                expires = key.expires_at
                if expires is not None and key.revoked_at is None and now < expires <= horizon:
                    alerts.notice_key_expiring(ctx.noticer, account.id, key.id, expires, now)
        if len(page) < 500:
            return
        after = page[-1].id


async def purge_forever(ctx: Context, every: float = PURGE_EVERY_SECONDS) -> None:
    """Run ``purge_once`` and ``notice_expiring_keys`` periodically until cancelled;
    failures are logged and retried."""
    while True:
        for step in (purge_once, notice_expiring_keys):
            try:
                await step(ctx)
            except Exception as exc:  # the loop must outlive any store outage
                log.warning("upkeep failed; will retry", step=step.__name__, error=str(exc))
        await asyncio.sleep(every)
