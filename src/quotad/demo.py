"""The demo deployment of the quick start: two services, a plan, an account and a key."""

from __future__ import annotations

from contextlib import suppress
from dataclasses import dataclass
from datetime import timedelta

from quotad.domain import days
from quotad.domain.models import Limit, Overrides, Quota
from quotad.errors import Conflict
from quotad.service import admin, usage
from quotad.service.context import Context

DEMO_ACCOUNT = "acme"
DEMO_PLAN = "starter"
_HISTORY = (125, 250, 250, 50, 245, 240)  # the seed's example week, before today


@dataclass(frozen=True, slots=True)
class Demo:
    """What the quick start prints: the demo account and a fresh key for it."""

    account_id: str
    key: str
    history_start: str
    today: str


async def seed(ctx: Context) -> Demo:
    """Create the demo records if missing (with a week of history), and a new key."""
    for name, description in (("insights", "Insights API queries"), ("scoring", "Scoring API")):
        with suppress(Conflict):
            await admin.create_service(ctx, name, description)
    with suppress(Conflict):
        await admin.create_plan(
            ctx,
            DEMO_PLAN,
            {"insights": Quota(250), "scoring": Quota(100)},
            [Limit("cohort.max_count", "Number of known contacts (KCs) allowed", 10)],
            "Demo plan",
        )
    now = ctx.clock.now()
    try:
        account = await admin.create_account(
            ctx, DEMO_ACCOUNT, "Acme Inc.", DEMO_PLAN, "UTC", Overrides()
        )
    except Conflict:
        account = await admin.require_account(ctx, DEMO_ACCOUNT)
    else:
        await admin.set_gauge(ctx, account.id, "cohort.max_count", 7)
        today = days.local_day(now, account.timezone)
        for back, used in enumerate(reversed(_HISTORY), start=1):
            day = (today - timedelta(days=back)).isoformat()
            await usage.adjust(ctx, account.id, "insights", day, used)
    issued = await admin.create_key(ctx, account.id, "demo")
    today = days.local_day(now, account.timezone)
    return Demo(
        account.id,
        issued.secret,
        (today - timedelta(days=len(_HISTORY))).isoformat(),
        today.isoformat(),
    )
