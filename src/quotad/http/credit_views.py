"""Credits as the operator API answers them (SPEC 10): one rendering for the routes, the
CLI and the dashboard. Amounts are credits (``from_micros``), times RFC 3339."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from quotad.domain import days
from quotad.domain.credits import CreditError, Grant, LedgerEntry, Refill, from_micros, parse_refill
from quotad.domain.credits import to_micros as credits_to_micros
from quotad.domain.models import Plan, Service
from quotad.errors import FieldError, ValidationFailed
from quotad.service.credits import Balance
from quotad.service.quotas import CreditsState


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


def service_credit_fields(service: Service) -> dict[str, Any]:
    """What a service view adds for credits: its price (null: unpriced)."""
    price = None if service.credit_price is None else from_micros(service.credit_price)
    return {"credit_price": price}


def plan_credit_fields(plan: Plan) -> dict[str, Any]:
    """What a plan view adds for credits: its refill (null: none)."""
    return {
        "refill": None if plan.refill is None else plan.refill.to_json(),
        "low_credits": None if plan.low_credits is None else from_micros(plan.low_credits),
    }


def credits_quota_view(state: CreditsState) -> dict[str, Any]:
    """The balance as an item of ``GET /v1/quotas`` (SPEC 10): no service, no total."""
    return {
        "service": None,
        "name": "credits",
        "per": "account",
        "mode": "hard",
        "used": from_micros(state.used),
        "remaining": from_micros(state.remaining),
        "total": None,
        "reset": None,
        "exhausted_at": None,
    }


# Input ----------------------------------------------------------------------------------
def credits_at(value: object, path: str) -> int:
    """A JSON number of credits in micro-credits, or VALIDATION_FAILED at ``path``."""
    field = path.rsplit("/", 1)[-1]
    if isinstance(value, str):
        raise ValidationFailed.at(path, f"{field} must be a number", "type")
    try:
        return credits_to_micros(value)
    except ValueError as exc:
        raise ValidationFailed.at(path, f"{field} {exc}", "invalid") from None


def price_at(value: object, path: str = "/body/credit_price") -> int | None:
    """A service's ``credit_price`` (null: unpriced) in micro-credits."""
    return None if value is None else credits_at(value, path)


def low_credits_at(value: object, path: str = "/body/low_credits") -> int | None:
    """A plan's or an account's ``low_credits`` mark (null: none) in micro-credits."""
    return None if value is None else credits_at(value, path)


def refill_at(value: object, path: str = "/body/refill") -> Refill | None:
    """A plan's ``refill`` (null: none), or VALIDATION_FAILED at its fields."""
    try:
        return parse_refill(value, ())
    except CreditError as exc:
        problems = [
            FieldError("/".join([path, *(str(part) for part in where)]), message)
            for where, message in exc.problems
        ]
        raise ValidationFailed(str(exc), validation_errors=problems) from None
