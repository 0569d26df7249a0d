"""Credit grants in SQL (SPEC 10): the ``credit_grants`` table."""

from __future__ import annotations

from datetime import datetime

from quotad.domain.credits import Grant
from quotad.storage.sql.engine import Database


class SqlCredits:
    """Grants of the store (``CreditStore``)."""

    _db: Database

    async def create_grant(self, grant: Grant) -> bool:
        """Store a grant unless the account has one of its id."""
        raise NotImplementedError  # the credits helper writes this

    async def list_grants(self, account_id: str) -> list[Grant]:
        """Every grant of an account, oldest first."""
        raise NotImplementedError

    async def void_grant(self, account_id: str, grant_id: str, at: datetime) -> Grant:
        """Mark a grant voided from ``at``."""
        raise NotImplementedError
