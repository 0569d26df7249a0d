"""The credit operations through the operator API: the SDK's ``AsyncClient``, its typed
results turned back into the bodies the API answered (as ``quotad.cli.local_credits``
renders them from the records), so a command prints the same either way."""

from __future__ import annotations

from datetime import datetime
from decimal import Decimal
from typing import TYPE_CHECKING

from quotad.cli.credit_operator import CreditOperator, View
from quotad.domain import days
from quotad.domain.credits import MICROS, from_micros
from quotad.sdk import AsyncClient, CreditGrant, LedgerEntry


def _time(value: datetime | None) -> str | None:
    return None if value is None else days.rfc3339(value)


def grant_view(grant: CreditGrant) -> View:
    """A grant, as ``quotad.http.credit_views.grant_view``."""
    return {
        "id": grant.id,
        "kind": grant.kind,
        "amount": grant.amount,
        "remaining": grant.remaining,
        "expires_at": _time(grant.expires_at),
        "priority": grant.priority,
        "note": grant.note,
        "created_at": days.rfc3339(grant.created_at),
        "voided_at": _time(grant.voided_at),
    }


def ledger_entry_view(entry: LedgerEntry) -> View:
    """A ledger entry, as ``quotad.http.credit_views.ledger_entry_view``."""
    return {
        "id": entry.id,
        "at": days.rfc3339(entry.at),
        "kind": entry.kind,
        "grant_id": entry.grant_id,
        "amount": entry.amount,
        "balance_after": entry.balance_after,
    }


def credits_number(micros: int) -> int | float:
    """Micro-credits as the JSON number the API takes (exact: at most 6 decimals)."""
    shown = from_micros(micros)
    if isinstance(shown, int):
        return shown
    return float(Decimal(micros) / MICROS)


class RemoteCredits:
    """The credit operations of ``RemoteOperator``, over its ``client``."""

    client: AsyncClient

    async def grant_credits(
        self,
        account_id: str,
        amount: int,
        expires_at: datetime | None,
        priority: int,
        note: str,
    ) -> View:
        """``POST /admin/v1/accounts/{id}/grants``."""
        made = await self.client.grant_credits(
            account_id, credits_number(amount), expires_at, priority, note
        )
        return grant_view(made)

    async def credits(self, account_id: str) -> View:
        """``GET /admin/v1/accounts/{id}/credits``."""
        found = await self.client.credits(account_id)
        return {"balance": found.balance, "grants": [grant_view(g) for g in found.grants]}

    async def credit_ledger(
        self, account_id: str, limit: int, cursor: str | None
    ) -> tuple[list[View], str | None]:
        """``GET /admin/v1/accounts/{id}/credits/ledger``."""
        page = await self.client.credit_ledger(account_id, cursor, limit)
        return [ledger_entry_view(e) for e in page.items], page.next_cursor

    async def void_grant(self, account_id: str, grant_id: str) -> View:
        """``DELETE /admin/v1/accounts/{id}/grants/{grant_id}``."""
        return grant_view(await self.client.void_grant(account_id, grant_id))


if TYPE_CHECKING:  # mypy checks the class against the interface
    _REMOTE: type[CreditOperator] = RemoteCredits
