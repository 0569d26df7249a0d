"""The credit operations over a local store: ``quotad.service.credits``, as the credit
routes call it, answering the bodies those routes answer (``quotad.http.credit_views``)."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING

from quotad.cli.credit_operator import CreditOperator, View
from quotad.http.credit_views import credits_view, grant_view, ledger_entry_view
from quotad.service import credits

if TYPE_CHECKING:
    from quotad.service.context import Context


class LocalCredits:
    """The credit operations of ``LocalOperator``, over its context ``ctx``."""

    ctx: Context

    async def grant_credits(
        self,
        account_id: str,
        amount: int,
        expires_at: datetime | None,
        priority: int,
        note: str,
    ) -> View:
        """Grant ``amount`` micro-credits (a new grant has all of them left)."""
        made = await credits.grant(self.ctx, account_id, amount, expires_at, priority, note)
        return grant_view(made, made.amount)

    async def credits(self, account_id: str) -> View:
        """The balance and every grant."""
        return credits_view(await credits.balance(self.ctx, account_id))

    async def credit_ledger(
        self, account_id: str, limit: int, cursor: str | None
    ) -> tuple[list[View], str | None]:
        """A page of the ledger, oldest first."""
        entries, after = await credits.ledger_page(self.ctx, account_id, limit, cursor)
        return [ledger_entry_view(e) for e in entries], after

    async def void_grant(self, account_id: str, grant_id: str) -> View:
        """Void a grant: nothing is left of it."""
        return grant_view(await credits.void(self.ctx, account_id, grant_id), 0)


if TYPE_CHECKING:  # mypy checks the class against the interface
    _LOCAL: type[CreditOperator] = LocalCredits
