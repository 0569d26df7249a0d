"""What the portal v2 shows a customer, read through the service layer (no HTML here):
its limits as ``GET /v1/quotas`` computes them, its refused calls per day, its usage as
CSV, its alerts, and which scopes its key may give to the keys it creates.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime, timedelta

from quotad.dashboard import pages, webhook_pages
from quotad.domain import days
from quotad.domain.models import Account, ApiKey
from quotad.service import admin, quotas, usage, webhooks
from quotad.service.context import Context
from quotad.service.quotas import QuotaState

ALERT_ROWS = 50
USAGE_FIELDS = ("date", "service", "used", "total", "remaining", "refused")
# The scopes a key may have, as the admin API accepts them (``api.schemas.Scope``).
SCOPE = re.compile(r"^(usage:read|consume:\*|consume:[a-z][a-z0-9_-]{0,63})$")


def in_words(delta: timedelta) -> str:
    """How far away a moment is, roughly, as a person says it ("in 7 h", "in 3 days")."""
    seconds = int(delta.total_seconds())
    if seconds <= 0:
        return "now"
    if seconds < 60:
        return "in under a minute"
    if seconds < 3600:
        return f"in {seconds // 60} min"
    if seconds < 48 * 3600:
        return f"in {round(seconds / 3600)} h"
    return f"in {round(seconds / 86400)} days"


@dataclass(frozen=True, slots=True)
class LimitRow:
    """One limit of the signed-in key as the portal lists it, with its times in words."""

    state: QuotaState
    now: datetime

    @property
    def kind(self) -> str:
        """``per day``, ``per month (billing)``, ``rate 5/s`` …, and ``per key`` when so."""
        limit = self.state.limit
        if limit.window is None:
            text = f"rate {limit.per_second:g}/s"
        else:
            text = f"per {limit.window.value}" + (" (billing)" if limit.billing else "")
        return text + (", per key" if limit.per.value == "key" else "")

    @property
    def reset_iso(self) -> str:
        """When the window resets (a rate: when its bucket is full again), RFC 3339."""
        return days.rfc3339(self.state.reset)

    @property
    def reset_words(self) -> str:
        """The reset, from now, in words ("resets in 7 h")."""
        return f"resets {in_words(self.state.reset - self.now)}"

    @property
    def exhausted_iso(self) -> str:
        """When the window runs out at its current pace, RFC 3339, or an empty string."""
        return pages.rfc3339(self.state.exhausted_at)

    @property
    def exhausted_words(self) -> str:
        """The forecast in words, or that it holds until the reset."""
        if self.state.exhausted_at is None:
            return "lasts until the reset at this pace"
        if self.state.remaining == 0:
            return "used up until the reset"
        return f"runs out {in_words(self.state.exhausted_at - self.now)}"


async def limit_rows(ctx: Context, key: ApiKey, account: Account) -> list[LimitRow]:
    """Every limit of ``key``'s calls, where it stands now (as ``GET /v1/quotas``)."""
    now = ctx.clock.now()
    return [LimitRow(state, now) for state in await quotas.of_key(ctx, key, account)]


@dataclass(frozen=True, slots=True)
class RefusedDay:
    """The calls refused on one day, by service."""

    day: date
    by_service: dict[str, int]

    @property
    def total(self) -> int:
        """Refused calls that day, all services."""
        return sum(self.by_service.values())


@dataclass(frozen=True, slots=True)
class RefusedView:
    """The days of a range with refused calls, and the services shown as columns."""

    services: list[str]
    days: list[RefusedDay]

    @property
    def total(self) -> int:
        """Refused calls over the whole range."""
        return sum(day.total for day in self.days)


async def refused_days(ctx: Context, view: pages.UsageView) -> RefusedView:
    """The refused calls per day of the view's range, from the stored usage rows (only
    days with a refusal: most days have none)."""
    services = [chart.service for chart in view.charts]
    found: dict[date, dict[str, int]] = {}
    for service in services:
        for row in await ctx.counters.usage(view.account.id, service, view.start, view.end):
            if row.rejected:
                found.setdefault(row.day, {})[service] = row.rejected
    return RefusedView(services, [RefusedDay(day, found[day]) for day in sorted(found)])


async def usage_csv(ctx: Context, view: pages.UsageView) -> str:
    """The usage table of the view's range as CSV: one line per service and day, as the
    charts draw it, with the calls refused that day."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(USAGE_FIELDS)
    account = view.account
    start, end = view.start.isoformat(), view.end.isoformat()
    for chart in view.charts:
        service = chart.service
        stored = await ctx.counters.usage(account.id, service, view.start, view.end)
        refused = {row.day: row.rejected for row in stored}
        drawn = {row.day: row for row in await usage.history(ctx, account, service, start, end)}
        for day in days.days_between(view.start, view.end):
            row = drawn.get(day)
            if row is None and not refused.get(day):
                continue
            used, total, left = (row.used, row.total, row.remaining) if row else (0, "", "")
            writer.writerow((day.isoformat(), service, used, total, left, refused.get(day, 0)))
    return out.getvalue()


async def alerts_page(
    ctx: Context, account_id: str, before: str | None = None
) -> webhook_pages.AlertsPage:
    """Up to ``ALERT_ROWS`` alert events about one account, newest first."""
    found = await webhooks.alert_events(ctx, ALERT_ROWS + 1, before, account_id=account_id)
    more = len(found) > ALERT_ROWS
    found = found[:ALERT_ROWS]
    rows = [webhook_pages.AlertRow(event) for event in found]
    return webhook_pages.AlertsPage(rows, found[-1].id if more and found else None)


# Scopes -------------------------------------------------------------------------------
def allows(own: tuple[str, ...] | None, scope: str) -> bool:
    """Whether a key with scopes ``own`` holds ``scope`` (as ``auth.require_scope`` reads
    them: the scope itself or its family's ``name:*``; no scopes at all hold every one)."""
    if own is None:
        return True
    return scope in own or scope.split(":", 1)[0] + ":*" in own


def within(own: tuple[str, ...] | None, scopes: tuple[str, ...] | None) -> bool:
    """Whether a key with ``scopes`` is no wider than one with ``own``."""
    if scopes is None:
        return own is None
    return all(allows(own, scope) for scope in scopes)


def no_wider(own: ApiKey, key: ApiKey) -> bool:
    """Whether the signed-in key ``own`` may change ``key``: its scopes are within own's
    and it expires no later (a replacement of a wider key would give the customer more
    than its own key has)."""
    if not within(own.scopes, key.scopes):
        return False
    if own.expires_at is None:
        return True
    return key.expires_at is not None and key.expires_at <= own.expires_at


def scope_choices(own: tuple[str, ...] | None, services: Iterable[str]) -> list[str]:
    """The scopes the create form offers: those a key with ``own`` may give."""
    offered = ["usage:read", "consume:*", *(f"consume:{name}" for name in sorted(services))]
    return [scope for scope in offered if SCOPE.match(scope) and allows(own, scope)]


async def service_names(ctx: Context) -> list[str]:
    """The registered services' names (the ``consume:<service>`` scopes)."""
    return [service.name for service in await admin.list_services(ctx)]
