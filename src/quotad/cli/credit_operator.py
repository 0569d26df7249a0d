"""What the ``credits`` commands ask of a deployment (SPEC 10).

Part of ``quotad.cli.operator.Operator``: each method answers with the JSON body
``/admin/v1/accounts/{id}/credits`` and its grants and ledger routes return, whether over
a local store (``quotad.cli.local_credits``) or a running server
(``quotad.cli.remote_credits``).
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

View = dict[str, Any]


class CreditOperator(Protocol):
    """An account's credit grants, balance and ledger, as views."""

    async def grant_credits(
        self,
        account_id: str,
        amount: int,
        expires_at: datetime | None,
        priority: int,
        note: str,
    ) -> View:
        """Grant ``amount`` micro-credits; the grant's view."""
        ...

    async def credits(self, account_id: str) -> View:
        """``{"balance", "grants"}`` of an account."""
        ...

    async def credit_ledger(
        self, account_id: str, limit: int, cursor: str | None
    ) -> tuple[list[View], str | None]:
        """A page of the ledger, oldest first, and the next page's cursor (None: last)."""
        ...

    async def void_grant(self, account_id: str, grant_id: str) -> View:
        """Void what is left of a grant; the voided grant's view."""
        ...
