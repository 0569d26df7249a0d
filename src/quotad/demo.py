"""The demo deployment of the quick start: two services, a plan, an account and a key.

Seeding is idempotent: on a store that already has the demo, nothing is added. Keys are
stored hashed, so the demo key made by an earlier start cannot be shown again; the
banner then says so and how to make a new one.
"""

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
DEMO_KEY_NAME = "demo"
_HISTORY = (125, 250, 250, 50, 245, 240)  # the seed's example week, before today


@dataclass(frozen=True, slots=True)
class Demo:
    """What the quick start prints: the demo account and its key.

    ``key`` is the secret of a key made now, or ``None`` when the account already had an
    active demo key (made by an earlier start, shown then); ``key_hint`` is ``qd_…abcd``
    either way.
    """

    account_id: str
    key: str | None
    key_hint: str
    history_start: str
    today: str

    @property
    def new_key_command(self) -> str:
        """The CLI line that makes another key for the demo account."""
        return f"quotad keys create {self.account_id} --name {DEMO_KEY_NAME}"


async def seed(ctx: Context) -> Demo:
    """Create the demo records and key if missing (the account with a week of history).

    A store that already has an active demo key gets no new one.
    """
    for name, description in (("insights", "Insights API queries"), ("scoring", "Scoring API")):
        with suppress(Conflict):
            await admin.create_service(ctx, name, description)
    with suppress(Conflict):
        await admin.create_plan(
            ctx,
            DEMO_PLAN,
            {"insights": Quota.daily(250), "scoring": Quota.daily(100)},
            [Limit("cohort.max_count", "Cohorts allowed", 10)],
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
    today = days.local_day(now, account.timezone)
    dates = ((today - timedelta(days=len(_HISTORY))).isoformat(), today.isoformat())
    for existing in await admin.list_keys(ctx, account.id):
        if existing.name == DEMO_KEY_NAME and admin.key_status(existing, now) == "active":
            return Demo(account.id, None, existing.hint, *dates)
    issued = await admin.create_key(ctx, account.id, DEMO_KEY_NAME)
    return Demo(account.id, issued.secret, issued.record.hint, *dates)
