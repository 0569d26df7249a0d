"""Credit grants in process memory (SPEC 10)."""

from __future__ import annotations

import threading
from datetime import datetime

from quotad.domain.credits import Grant


class MemoryCredits:
    """Grants of the store (``CreditStore``)."""

    def __init__(self) -> None:
        self._credits_lock = threading.Lock()
        self._grants: dict[str, dict[str, Grant]] = {}  # account id -> grant id -> grant

    async def create_grant(self, grant: Grant) -> bool:
        """Store a grant unless the account has one of its id."""
        raise NotImplementedError  # the credits helper writes this

    async def list_grants(self, account_id: str) -> list[Grant]:
        """Every grant of an account, oldest first."""
        raise NotImplementedError

    async def void_grant(self, account_id: str, grant_id: str, at: datetime) -> Grant:
        """Mark a grant voided from ``at``."""
        raise NotImplementedError
