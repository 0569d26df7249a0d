"""What the accounts list and an account's settings show, and how their forms are read
(no HTML here; the routes are ``account_operator``'s and ``operator.accounts``)."""

from __future__ import annotations

import asyncio
import json
import re
from dataclasses import dataclass, field, replace
from datetime import date, timedelta
from typing import Any
from urllib.parse import urlencode

from quotad.domain import credits, limits
from quotad.domain.models import Account, AccountStatus, Overrides, Plan
from quotad.errors import FieldError, QuotadError, ValidationFailed
from quotad.http.credit_views import low_credits_at
from quotad.service import admin, usage
from quotad.service.context import Context

PAGE_SIZE = 50
SCAN_PAGE = 500
ROWS_AT_ONCE = 4
SORTS = ("id", "name", "plan", "status")
STATUSES = tuple(status.value for status in AccountStatus)
# How far back "last seen" looks: the month's days are read anyway, and a store has no
# "latest day" query, so an older last use is shown as "before" this window.
SEEN_DAYS = 90
OVERRIDES_AT = "/overrides"
# The API's bounds on an account's fields (quotad.api.schemas), checked here without it.
MAX_NAME = 200
MAX_TIMEZONE = 64
MAX_COUNT = 10**15
MAX_OVERRIDES = 100
IDENTIFIER = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
LIMIT_NAME = re.compile(r"[A-Za-z][A-Za-z0-9_.-]{0,127}")


@dataclass(frozen=True, slots=True)
class ListQuery:
    """The accounts list's search, filters, sort and page, as its address gives them."""

    search: str = ""
    plan: str = ""
    status: str = ""
    sort: str = "id"
    page: int = 1

    @classmethod
    def of(cls, search: str, plan: str, status: str, sort: str, page: str) -> ListQuery:
        """The query from the address's text; an unknown sort, status or page is the default."""
        known = sort.removeprefix("-") in SORTS
        number = int(page) if page.isdigit() and 0 < int(page) < 10**6 else 1
        return cls(
            search.strip(),
            plan.strip(),
            status if status in STATUSES else "",
            sort if known else "id",
            number,
        )

    @property
    def descending(self) -> bool:
        """Whether the list runs backwards (``sort`` given as ``-name``)."""
        return self.sort.startswith("-")

    @property
    def column(self) -> str:
        """The field sorted on."""
        return self.sort.removeprefix("-")

    def url(self, **changes: Any) -> str:
        """The list's address with ``changes`` (a new filter or sort starts at page 1)."""
        moved = replace(self, **({"page": 1} | changes))
        given = {
            "q": moved.search,
            "plan": moved.plan,
            "status": moved.status,
            "sort": "" if moved.sort == "id" else moved.sort,
            "page": "" if moved.page == 1 else str(moved.page),
        }
        text = urlencode({name: value for name, value in given.items() if value})
        return "/dashboard/accounts" + (f"?{text}" if text else "")

    def sort_url(self, column: str) -> str:
        """The address sorting by ``column``: ascending, or reversed when already so."""
        return self.url(sort=f"-{column}" if self.sort == column else column)


@dataclass(frozen=True, slots=True)
class AccountRow:
    """An account as the list shows it, with its use (all services, in units)."""

    account: Account
    today: int
    month: int
    last_seen: date | None


@dataclass(frozen=True, slots=True)
class AccountsList:
    """One page of the filtered, sorted accounts list."""

    query: ListQuery
    rows: list[AccountRow]
    matching: int
    plans: list[str]
    seen_since: date | None = None  # the earliest day "last seen" looked at (first row's)

    @property
    def pages(self) -> int:
        """How many pages the matching accounts fill (at least one)."""
        return max(1, -(-self.matching // PAGE_SIZE))


def _sort_key(column: str) -> Any:
    if column == "name":
        return lambda a: (a.name.casefold(), a.id)
    if column == "plan":
        return lambda a: (a.plan_id, a.id)
    if column == "status":
        return lambda a: (a.status.value, a.id)
    return lambda a: a.id


async def plan_ids(ctx: Context) -> list[str]:
    """Every plan's id, in order."""
    found: list[str] = []
    after: str | None = None
    while True:
        page = await admin.list_plans(ctx, SCAN_PAGE, after)
        found += [plan.id for plan in page]
        if len(page) < SCAN_PAGE:
            return found
        after = page[-1].id


async def accounts_list(ctx: Context, query: ListQuery) -> AccountsList:
    """The page of accounts the query asks for, with today's and this month's use of
    each (read only for the accounts shown).

    The store lists accounts by id and filters by search only, so the whole list is read
    to filter by plan and status and to sort by another field (as the overview reads it).
    """
    matching: list[Account] = []
    after: str | None = None
    while True:
        page = await admin.list_accounts(ctx, SCAN_PAGE, after, query.search or None)
        matching += [
            account
            for account in page
            if (not query.plan or account.plan_id == query.plan)
            and (not query.status or account.status.value == query.status)
        ]
        if len(page) < SCAN_PAGE:
            break
        after = page[-1].id
    matching.sort(key=_sort_key(query.column), reverse=query.descending)
    shown = matching[(query.page - 1) * PAGE_SIZE : query.page * PAGE_SIZE]
    plans = {plan_id: await ctx.records.get_plan(plan_id) for plan_id in {a.plan_id for a in shown}}
    # A few rows read at once: each is a store round trip per service, and a page of them
    # one after another took about 0.5 s on PostgreSQL; a few, so metering keeps the pool.
    gate = asyncio.Semaphore(ROWS_AT_ONCE)

    async def row(account: Account) -> AccountRow:
        async with gate:
            return await account_row(ctx, account, plans.get(account.plan_id))

    rows = list(await asyncio.gather(*(row(account) for account in shown)))
    return AccountsList(query, rows, len(matching), await plan_ids(ctx))


async def account_row(ctx: Context, account: Account, plan: Plan | None) -> AccountRow:
    """An account's use today and this calendar month (its local days), and the last day
    of the last ``SEEN_DAYS`` on which it used or was refused anything."""
    services = set(account.overrides.quotas) | (set(plan.quotas) if plan else set())
    today = usage.today(ctx, account)
    month_start = today.replace(day=1)
    start = min(month_start, today - timedelta(days=SEEN_DAYS - 1))
    used_today = used_month = 0
    last_seen: date | None = None
    for service in sorted(services):
        for row in await ctx.counters.usage(account.id, service, start, today):
            used_today += row.used if row.day == today else 0
            used_month += row.used if row.day >= month_start else 0
            if (row.used or row.rejected) and (last_seen is None or row.day > last_seen):
                last_seen = row.day
    return AccountRow(account, used_today, used_month, last_seen)


# Forms ----------------------------------------------------------------------------
EMPTY_CREATE_FORM = {"id": "", "name": "", "plan": "", "timezone": "UTC", "billing_anchor": ""}


def problems_of(exc: QuotadError) -> str:
    """What a refusal says: each field's problem (where it is, for the overrides' JSON),
    else its note."""
    if exc.validation_errors:
        return "; ".join(_said(item) for item in exc.validation_errors)
    return exc.note


def _said(item: FieldError) -> str:
    if item.path.startswith(OVERRIDES_AT + "/"):
        return f"{item.path.removeprefix(OVERRIDES_AT)}: {item.message}"
    return item.message


def _refuse(path: str, message: str) -> ValidationFailed:
    return ValidationFailed.at(path, message)


def parse_name(text: str) -> str:
    """An account's name (1 to 200 characters once trimmed), or ``ValidationFailed``."""
    name = text.strip()
    if not 0 < len(name) <= MAX_NAME:
        raise _refuse("/name", f"The name is 1 to {MAX_NAME} characters.")
    return name


def parse_create(form: dict[str, str]) -> tuple[str | None, str, str, str, int | None]:
    """The id (None: a new one), name, plan, timezone and billing anchor of the create
    form, or ``ValidationFailed``; the plan and timezone are the service's to check."""
    account_id = form.get("id", "").strip()
    if account_id and not IDENTIFIER.fullmatch(account_id):
        raise _refuse(
            "/id",
            "An id is 1 to 64 letters, digits, '.', '_' or '-', starting with a letter or digit.",
        )
    name = parse_name(form.get("name", ""))
    plan = form.get("plan", "").strip()
    if not plan:
        raise _refuse("/plan", "Choose a plan.")
    timezone = form.get("timezone", "").strip() or "UTC"
    if len(timezone) > MAX_TIMEZONE:
        raise _refuse("/timezone", f"A timezone name has at most {MAX_TIMEZONE} characters.")
    anchor_text = form.get("billing_anchor", "").strip()
    anchor = None
    if anchor_text:
        if not anchor_text.isdigit() or not 1 <= int(anchor_text) <= 31:
            raise _refuse("/billing_anchor", "The billing anchor is a day of the month, 1 to 31.")
        anchor = int(anchor_text)
    return account_id or None, name, plan, timezone, anchor


def overrides_form(overrides: Overrides) -> dict[str, str]:
    """The overrides form's fields showing ``overrides`` (as the API writes them)."""
    shown = {
        "quotas": {k: limits.render_override(v) for k, v in sorted(overrides.quotas.items())},
        "limits": dict(sorted(overrides.limits.items())),
    }
    thresholds = overrides.alert_thresholds
    low = overrides.low_credits
    return {
        "limits_json": json.dumps(shown, indent=2),
        "alert_thresholds": "" if thresholds is None else ", ".join(map(str, thresholds)),
        "low_credits": "" if low is None else str(credits.from_micros(low)),
    }


def _limits_json(text: str) -> tuple[dict[str, object], dict[str, int]]:
    """The ``quotas`` and ``limits`` of the JSON textarea, their shapes checked."""
    try:
        raw = json.loads(text or "{}", parse_constant=_no_constant)
    except ValueError as exc:
        raise _refuse(OVERRIDES_AT, f"The limits are not valid JSON: {exc}.") from None
    if not isinstance(raw, dict) or not set(raw) <= {"quotas", "limits"}:
        raise _refuse(OVERRIDES_AT, 'The limits are a JSON object of "quotas" and "limits".')
    quotas, counts = raw.get("quotas", {}), raw.get("limits", {})
    if not isinstance(quotas, dict) or len(quotas) > MAX_OVERRIDES:
        raise _refuse(
            f"{OVERRIDES_AT}/quotas", f"quotas is an object of at most {MAX_OVERRIDES} services."
        )
    if not isinstance(counts, dict) or len(counts) > MAX_OVERRIDES:
        raise _refuse(
            f"{OVERRIDES_AT}/limits", f"limits is an object of at most {MAX_OVERRIDES} names."
        )
    problems = [
        FieldError(f"{OVERRIDES_AT}/limits/{name}", message)
        for name, value in counts.items()
        for message in _count_problems(name, value)
    ]
    if problems:
        raise ValidationFailed("the limits are not valid", validation_errors=problems)
    return quotas, {name: _count(value) or 0 for name, value in counts.items()}


def _count(value: object) -> int | None:
    """A resource limit as the API's schema takes it (3.0 is 3; true, "5", 1.5 are not)."""
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT:
        return value
    return None


def _count_problems(name: str, value: object) -> list[str]:
    found = []
    if not LIMIT_NAME.fullmatch(name):
        found.append("a limit name is a letter then letters, digits, '_', '.' or '-'")
    if _count(value) is None:
        found.append(f"a resource limit is a whole number from 0 to {MAX_COUNT}")
    return found


def _no_constant(name: str) -> object:
    # JSON has no NaN or Infinity (the API's parser refuses them too).
    raise ValueError(f"{name} is not a JSON number")


def parse_overrides(form: dict[str, str]) -> Overrides:
    """The account's new overrides from the form: the limits' JSON (read by the API's
    parsers, ``admin.parse_quotas``), the alert thresholds (``80, 100``; empty: the
    plan's) and the low-credits mark (credits; empty: the plan's). ``ValidationFailed``
    names every problem; nothing is written on one."""
    quotas, counts = _limits_json(form.get("limits_json", ""))
    parsed = admin.parse_quotas(quotas, f"{OVERRIDES_AT}/quotas")
    thresholds_text = form.get("alert_thresholds", "").strip()
    thresholds = None
    if thresholds_text:
        parts = [part for part in re.split(r"[\s,]+", thresholds_text) if part]
        if not all(part.isdigit() for part in parts):
            raise _refuse(
                f"{OVERRIDES_AT}/alert_thresholds",
                "Alert thresholds are whole percentages separated by commas, e.g. 80, 100.",
            )
        thresholds = admin.parse_alert_thresholds(
            [int(part) for part in parts], f"{OVERRIDES_AT}/alert_thresholds"
        )
    low_text = form.get("low_credits", "").strip()
    low = None
    if low_text:
        try:
            number = json.loads(low_text, parse_constant=_no_constant)
        except ValueError:
            number = low_text  # refused below as not a number
        low = admin.check_low_credits(
            low_credits_at(number, f"{OVERRIDES_AT}/low_credits"),
            f"{OVERRIDES_AT}/low_credits",
        )
    return Overrides(parsed, counts, thresholds, low)


@dataclass
class SettingsForms:
    """What the settings page's forms show: the account's values, or what was entered."""

    name: str
    plan: str
    overrides: dict[str, str] = field(default_factory=dict)

    @classmethod
    def of(cls, account: Account) -> SettingsForms:
        """The forms filled with the account as it is."""
        return cls(account.name, account.plan_id, overrides_form(account.overrides))
