"""What each page shows, read through the service layer (no HTML here).

Days are each account's own: "today" on the overview is, for every account, its local
date in its timezone, the same day its quota counts.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from quotad.dashboard.charts import Gauge, UsageChart, usage_chart
from quotad.domain import days
from quotad.domain.models import Account, ApiKey, Plan, effective_limits, effective_total
from quotad.domain.operators import AuditEntry, AuditQuery
from quotad.errors import QuotadError
from quotad.service import admin, audit, usage
from quotad.service.context import Context

DEFAULT_RANGE_DAYS = 30
HIGH_USE = 0.8
TOP_ACCOUNTS = 10
PAGE_SIZE = 50
SCAN_PAGE = 500


@dataclass
class ServiceToday:
    """One service's use today, summed over every account."""

    name: str
    granted: int = 0
    refused: int = 0
    accounts: int = 0


@dataclass(frozen=True, slots=True)
class HighUse:
    """An account at or past 80 % of a daily quota today."""

    account: Account
    service: str
    used: int
    total: int

    @property
    def percent(self) -> int:
        """Use as a whole percentage of the total."""
        return round(self.used / self.total * 100) if self.total else 100


@dataclass
class AccountToday:
    """One account's use today, all services together."""

    account: Account
    used: int = 0
    refused: int = 0
    by_service: dict[str, int] = field(default_factory=dict)


@dataclass
class Overview:
    """The operator's view of today."""

    services: list[ServiceToday]
    high_use: list[HighUse]
    top: list[AccountToday]
    accounts: int


async def _plan(ctx: Context, plans: dict[str, Plan | None], plan_id: str) -> Plan | None:
    if plan_id not in plans:
        plans[plan_id] = await ctx.records.get_plan(plan_id)
    return plans[plan_id]


def quota_services(plan: Plan, account: Account) -> list[str]:
    """The services an account has a daily quota for, by name."""
    return sorted(
        name
        for name in set(plan.quotas) | set(account.overrides.quotas)
        if effective_total(plan, account, name) is not None
    )


async def overview(ctx: Context) -> Overview:
    """Today's use per service, the accounts near a quota, and the busiest accounts."""
    services = {s.name: ServiceToday(s.name) for s in await ctx.records.list_services()}
    plans: dict[str, Plan | None] = {}
    high_use: list[HighUse] = []
    busiest: list[AccountToday] = []
    count = 0
    after: str | None = None
    while True:
        page = await ctx.records.list_accounts(SCAN_PAGE, after)
        for account in page:
            count += 1
            plan = await _plan(ctx, plans, account.plan_id)
            if plan is None:
                continue
            today = usage.today(ctx, account)
            summary = AccountToday(account)
            for name in quota_services(plan, account):
                rows = await ctx.counters.usage(account.id, name, today, today)
                used = rows[0].used if rows else 0
                refused = rows[0].rejected if rows else 0
                total = effective_total(plan, account, name) or 0
                line = services.setdefault(name, ServiceToday(name))
                line.granted += used
                line.refused += refused
                line.accounts += 1 if used or refused else 0
                summary.used += used
                summary.refused += refused
                summary.by_service[name] = used
                if (total and used >= HIGH_USE * total) or (not total and refused):
                    high_use.append(HighUse(account, name, used, total))
            if summary.used or summary.refused:
                busiest.append(summary)
        if len(page) < SCAN_PAGE:
            break
        after = page[-1].id
    high_use.sort(key=lambda item: (-item.percent, item.account.id, item.service))
    busiest.sort(key=lambda item: (-item.used, -item.refused, item.account.id))
    return Overview(
        sorted(services.values(), key=lambda s: s.name), high_use, busiest[:TOP_ACCOUNTS], count
    )


@dataclass(frozen=True, slots=True)
class AccountsPage:
    """A page of the accounts list."""

    accounts: list[Account]
    search: str
    next_after: str | None


async def accounts_page(ctx: Context, search: str, after: str | None) -> AccountsPage:
    """Up to ``PAGE_SIZE`` accounts whose id or name contains ``search``."""
    found = await ctx.records.list_accounts(PAGE_SIZE + 1, after or None, search or None)
    more = len(found) > PAGE_SIZE
    found = found[:PAGE_SIZE]
    return AccountsPage(found, search, found[-1].id if more and found else None)


@dataclass(frozen=True, slots=True)
class KeyRow:
    """A key as the account page lists it."""

    key: ApiKey
    status: str

    @property
    def active(self) -> bool:
        """Whether the key still works (so it may be revoked or rotated)."""
        return self.status == "active"


@dataclass
class UsageView:
    """Charts and gauges of one account over a date range."""

    account: Account
    start: date
    end: date
    today: date
    charts: list[UsageChart]
    quotas_today: list[Gauge]
    limits: list[Gauge]
    range_error: str | None = None


def default_range(today: date) -> tuple[date, date]:
    """The last ``DEFAULT_RANGE_DAYS`` days, today included."""
    return today - timedelta(days=DEFAULT_RANGE_DAYS - 1), today


async def usage_view(
    ctx: Context, account: Account, start_text: str | None, end_text: str | None
) -> UsageView:
    """An account's charts over a range (default: the last 30 days), and its gauges.

    A range the customer API would refuse (SPEC 3.2: real dates, not after today, at
    most 90 days) is reported in ``range_error`` and the default range is shown instead.
    """
    plan = await admin.require_plan(ctx, account.plan_id)
    today = usage.today(ctx, account)
    start, end = default_range(today)
    range_error = None
    if start_text or end_text:
        try:
            start, end = usage.history_window(ctx, account, start_text or None, end_text or None)
        except QuotadError as exc:
            problems = "; ".join(item.message for item in exc.validation_errors)
            range_error = problems or exc.note
    charts, quotas_today = [], []
    for name in quota_services(plan, account):
        rows = await usage.history(ctx, account, name, start.isoformat(), end.isoformat())
        charts.append(usage_chart(name, start, end, rows))
        today_rows = await ctx.counters.usage(account.id, name, today, today)
        used = today_rows[0].used if today_rows else 0
        total = effective_total(plan, account, name) or 0
        quotas_today.append(Gauge(name, f"Daily {name} quota, today", used, total))
    gauges = await ctx.counters.gauges(account.id)
    limits = [
        Gauge(item.name, item.description, gauges.get(item.name, 0), item.limit)
        for item in effective_limits(plan, account)
    ]
    return UsageView(account, start, end, today, charts, quotas_today, limits, range_error)


async def key_rows(ctx: Context, account: Account) -> list[KeyRow]:
    """An account's keys, newest first, with their status now."""
    now: datetime = ctx.clock.now()
    found = await ctx.records.list_keys(account.id)
    return [KeyRow(key, admin.key_status(key, now)) for key in reversed(found)]


AUDIT_ROWS = 50
MAX_SHOWN = 60  # characters of a value shown in a change


@dataclass(frozen=True, slots=True)
class ChangeRow:
    """One audit entry of an account's page, with what it changed in words."""

    entry: AuditEntry
    changes: list[str]


def _shown(value: object) -> str:
    text = "—" if value is None else str(value)
    return text if len(text) <= MAX_SHOWN else text[: MAX_SHOWN - 1] + "…"


def _changes(entry: AuditEntry) -> list[str]:
    before, after = entry.before or {}, entry.after or {}
    if not entry.before or not entry.after:
        return []  # created or deleted: the action says it
    return [
        f"{name}: {_shown(before.get(name))} → {_shown(after.get(name))}"
        for name in sorted(before.keys() | after.keys())
        if before.get(name) != after.get(name)
    ]


async def audit_rows(ctx: Context, account: Account, key_ids: list[str]) -> list[ChangeRow]:
    """The latest changes of an account (its credit grants and voids among them) and of
    its keys, newest first."""
    targets = (audit.target("account", account.id), *(audit.target("key", k) for k in key_ids))
    found = await audit.entries(ctx, AuditQuery(limit=AUDIT_ROWS, targets=targets))
    return [ChangeRow(entry, _changes(entry)) for entry in found]


def rfc3339(value: datetime | None) -> str:
    """A timestamp as the API writes it, or an empty string."""
    return "" if value is None else days.rfc3339(value)


def changes_of(entry: AuditEntry) -> list[str]:
    """What an audit entry changed, one line a field (none for a creation or deletion)."""
    return _changes(entry)
