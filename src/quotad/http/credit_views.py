"""Credits as the operator API answers them (SPEC 10): one rendering for the routes, the
CLI and the dashboard. Amounts are credits (``from_micros``), times RFC 3339."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quotad.domain import days
from quotad.domain.credits import Grant, LedgerEntry, from_micros
from quotad.service.credits import Balance


def _time(value: datetime | None) -> str | None:
    return None if value is None else days.rfc3339(value)


def grant_view(grant: Grant, remaining: int) -> dict[str, Any]:
    """A grant with what is left of it."""
    return {
        "id": grant.id,
        "kind": grant.kind.value,
        "amount": from_micros(grant.amount),
        "remaining": from_micros(remaining),
        "expires_at": _time(grant.expires_at),
        "priority": grant.priority,
        "note": grant.note,
        "created_at": days.rfc3339(grant.created_at),
        "voided_at": _time(grant.voided_at),
    }


def credits_view(balance: Balance) -> dict[str, Any]:
    """An account's balance and every grant."""
    return {
        "balance": from_micros(balance.balance),
        "grants": [grant_view(grant, left) for grant, left in balance.grants],
    }


def ledger_entry_view(entry: LedgerEntry) -> dict[str, Any]:
    """One line of the ledger (``amount`` signed)."""
    return {
        "id": entry.id,
        "at": days.rfc3339(entry.at),
        "kind": entry.kind.value,
        "grant_id": entry.grant_id,
        "amount": from_micros(entry.amount),
        "balance_after": from_micros(entry.balance_after),
    }
