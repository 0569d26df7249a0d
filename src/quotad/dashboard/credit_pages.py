"""What the credit sections show (SPEC 10), read through ``quotad.service.credits`` (no
HTML here): an account's balance, its grants with what is left of each, its ledger.

Amounts are micro-credits everywhere below; the pages write them as credits with at most
six decimals (``amount_text``), the API's numbers, never a float's rounding.
"""

from __future__ import annotations

import csv
import io
import uuid
from collections import deque
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal

from quotad.domain.credits import MICROS, Grant, GrantKind, LedgerEntry
from quotad.domain.models import Account
from quotad.http.credit_views import ledger_entry_view
from quotad.service import credits
from quotad.service.context import Context

LEDGER_ROWS = 50  # entries on the account page and on each page of the whole ledger
SCAN_PAGE = credits.MAX_LEDGER_PAGE  # entries read at a time to find the latest ones
LEDGER_FIELDS = ("id", "at", "kind", "grant_id", "amount", "balance_after")
EMPTY_GRANT_FORM = {"amount": "", "expires_at": "", "priority": "0", "note": ""}
MAX_ONCE = 64  # a grant form's once-key: a fresh one is 32 hexadecimal digits


def fresh_once() -> str:
    """A new grant form's once-key (its grant's Idempotency-Key)."""
    return uuid.uuid4().hex


def amount_text(micros: int, *, signed: bool = False) -> str:
    """Micro-credits as credits: digits grouped, at most six decimals, none when whole."""
    exact = Decimal(abs(micros)) / MICROS
    text = f"{exact:,f}"
    if "." in text:
        text = text.rstrip("0").rstrip(".")
    if micros < 0:
        return f"\u2212{text}"  # a minus sign, not a hyphen: it reads as one
    return f"+{text}" if signed and micros > 0 else text


def when(value: datetime | None) -> str:
    """A time as the pages write it (UTC, to the second), or a dash."""
    return "—" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


@dataclass(frozen=True, slots=True)
class GrantRow:
    """A grant as the tables list it, with what is left of it and its state now."""

    grant: Grant
    remaining: int
    status: str  # live, used up, expired, voided

    @property
    def live(self) -> bool:
        """Whether it may still be drawn from (so it may be voided)."""
        return self.status in ("live", "used up")

    @property
    def refill(self) -> bool:
        """Whether a plan's refill made it (not an operator)."""
        return self.grant.kind is GrantKind.REFILL


def grant_status(grant: Grant, remaining: int, now: datetime) -> str:
    """``voided``, ``expired``, ``used up`` or ``live``."""
    if grant.voided_at is not None and grant.voided_at <= now:
        return "voided"
    if grant.expires_at is not None and grant.expires_at <= now:
        return "expired"
    return "live" if remaining > 0 else "used up"


@dataclass(frozen=True, slots=True)
class CreditsView:
    """An account's credits: the balance, every grant, and the latest ledger entries
    (newest first)."""

    balance: int
    grants: list[GrantRow]
    ledger: list[LedgerEntry]
    more: bool  # the ledger holds more than the entries shown

    @property
    def live_grants(self) -> list[GrantRow]:
        """The grants still drawn from, in the order the table lists them."""
        return [row for row in self.grants if row.live]


async def grant_rows(ctx: Context, account_id: str) -> tuple[int, list[GrantRow]]:
    """The balance and every grant of an account, newest first."""
    found = await credits.balance(ctx, account_id)
    now = ctx.clock.now()
    rows = [GrantRow(g, left, grant_status(g, left, now)) for g, left in found.grants]
    rows.sort(key=lambda row: (row.grant.created_at, row.grant.id), reverse=True)
    return found.balance, rows


async def latest_entries(
    ctx: Context, account_id: str, count: int
) -> tuple[list[LedgerEntry], bool]:
    """The latest ``count`` ledger entries, newest first, and whether there are older ones.

    The ledger pages oldest first; its end is found by reading it through.
    """
    kept: deque[LedgerEntry] = deque(maxlen=count)
    seen = 0
    cursor: str | None = None
    while True:
        page, cursor = await credits.ledger_page(ctx, account_id, SCAN_PAGE, cursor)
        kept.extend(page)
        seen += len(page)
        if cursor is None or not page:
            break
    return list(reversed(kept)), seen > count


async def credits_view(ctx: Context, account: Account) -> CreditsView:
    """The account page's credit section."""
    balance, rows = await grant_rows(ctx, account.id)
    entries, more = await latest_entries(ctx, account.id, LEDGER_ROWS)
    return CreditsView(balance, rows, entries, more)


@dataclass(frozen=True, slots=True)
class LedgerPage:
    """A page of the whole ledger, oldest first, and the cursor of the next one."""

    entries: list[LedgerEntry]
    cursor: str | None
    next_cursor: str | None


async def ledger_page(ctx: Context, account_id: str, cursor: str | None) -> LedgerPage:
    """``LEDGER_ROWS`` entries after ``cursor`` (from the start without one)."""
    entries, next_cursor = await credits.ledger_page(ctx, account_id, LEDGER_ROWS, cursor)
    return LedgerPage(entries, cursor, next_cursor)


async def ledger_csv(ctx: Context, account_id: str) -> str:
    """The whole ledger as CSV, oldest first: the API's fields and values, one row each."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(LEDGER_FIELDS)
    cursor: str | None = None
    while True:
        page, cursor = await credits.ledger_page(ctx, account_id, SCAN_PAGE, cursor)
        for entry in page:
            view = ledger_entry_view(entry)
            writer.writerow(["" if view[name] is None else view[name] for name in LEDGER_FIELDS])
        if cursor is None or not page:
            break
    return out.getvalue()


@dataclass(frozen=True, slots=True)
class PortalCredits:
    """What a customer sees of its credits: the balance and the live grants' expiry."""

    balance: int
    grants: list[GrantRow]
    refill: str | None  # the plan's refill in words, if it has one


async def portal_credits(ctx: Context, account: Account) -> PortalCredits | None:
    """The portal's credit section, or None for an account without credits (no grant and
    no refill), as ``GET /v1/quotas`` leaves the item out then."""
    plan = await ctx.records.get_plan(account.plan_id)
    refill = plan.refill if plan is not None else None
    balance, rows = await grant_rows(ctx, account.id)
    if not rows and refill is None:
        return None
    live = [row for row in rows if row.status == "live"]
    # The one expiring first is drawn from first: list them in that order.
    live.sort(
        key=lambda row: (row.grant.expires_at is None, row.grant.expires_at or row.grant.created_at)
    )
    words = None
    if refill is not None:
        mode = "reset to" if refill.mode.value == "reset" else "topped up to"
        anchor = " (billing day)" if refill.billing else ""
        words = f"{mode} {amount_text(refill.amount)} every {refill.window.value}{anchor}"
    return PortalCredits(balance, live, words)
