"""Credit grants in process memory (SPEC 10)."""

from __future__ import annotations

import threading
from dataclasses import replace
from datetime import datetime

from quotad.domain.credits import Grant
from quotad.errors import NotFound


class MemoryCredits:
    """Grants of the store (``CreditStore``)."""

    def __init__(self) -> None:
        self._credits_lock = threading.Lock()
        self._grants: dict[str, dict[str, Grant]] = {}  # account id -> grant id -> grant

    def _has_account(self, account_id: str) -> bool:
        """Whether the account exists (the store's accounts; see ``MemoryStore``)."""
        return account_id in getattr(self, "_accounts", {})

    async def create_grant(self, grant: Grant) -> bool:
        """Store a grant unless the account has one of its id."""
        if not self._has_account(grant.account_id):
            raise NotFound(f"account {grant.account_id!r} not found")
        with self._credits_lock:
            grants = self._grants.setdefault(grant.account_id, {})
            if grant.id in grants:
                return False
            grants[grant.id] = grant
            return True

    async def list_grants(self, account_id: str) -> list[Grant]:
        """Every grant of an account, oldest first."""
        with self._credits_lock:
            grants = list(self._grants.get(account_id, {}).values())
        return sorted(grants, key=lambda g: (g.created_at, g.id))

    async def void_grant(self, account_id: str, grant_id: str, at: datetime) -> Grant:
        """Mark a grant voided from ``at``."""
        with self._credits_lock:
            grants = self._grants.get(account_id, {})
            grant = grants.get(grant_id)
            if grant is None:
                raise NotFound(f"grant {grant_id!r} not found")
            if grant.voided_at is None:
                grant = grants[grant_id] = replace(grant, voided_at=at)
            return grant
