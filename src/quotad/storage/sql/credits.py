"""Credit grants in SQL (SPEC 10): the ``credit_grants`` table.

A grant's id is unique within its account (the primary key), so two nodes making the same
window's refill store it once: the second insert does nothing and answers False.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

import sqlalchemy as sa

from quotad.domain.credits import Grant, GrantKind
from quotad.errors import NotFound
from quotad.storage.schema import accounts, credit_grants
from quotad.storage.sql.engine import Database
from quotad.storage.sql.rows import affects_a_row, from_micros, opt_dt, opt_micros, to_micros


def grant_values(grant: Grant) -> dict[str, Any]:
    """A Grant as a ``credit_grants`` row."""
    return {
        "account_id": grant.account_id,
        "id": grant.id,
        "kind": grant.kind.value,
        "amount": grant.amount,
        "priority": grant.priority,
        "note": grant.note,
        "created_at": to_micros(grant.created_at),
        "expires_at": opt_micros(grant.expires_at),
        "voided_at": opt_micros(grant.voided_at),
        "voided": grant.voided,
    }


def grant_of(row: Any) -> Grant:
    """A ``credit_grants`` row as a Grant."""
    return Grant(
        id=row.id,
        account_id=row.account_id,
        amount=row.amount,
        created_at=from_micros(row.created_at),
        expires_at=opt_dt(row.expires_at),
        priority=row.priority,
        note=row.note,
        kind=GrantKind(row.kind),
        voided_at=opt_dt(row.voided_at),
        voided=row.voided,
    )


class SqlCredits:
    """Grants of the store (``CreditStore``)."""

    _db: Database

    async def create_grant(self, grant: Grant) -> bool:
        """Store a grant unless the account has one of its id."""
        stmt = self._db.insert(credit_grants).values(**grant_values(grant))
        async with self._db.write() as conn:
            found = await conn.execute(
                sa.select(accounts.c.id).where(accounts.c.id == grant.account_id)
            )
            if found.first() is None:
                raise NotFound(f"account {grant.account_id!r} not found")
            return await affects_a_row(conn, stmt.on_conflict_do_nothing())

    async def list_grants(self, account_id: str) -> list[Grant]:
        """Every grant of an account, oldest first."""
        query = (
            credit_grants.select()
            .where(credit_grants.c.account_id == account_id)
            .order_by(credit_grants.c.created_at, credit_grants.c.id)
        )
        async with self._db.read() as conn:
            rows = (await conn.execute(query)).all()
        return [grant_of(row) for row in rows]

    async def void_grant(self, account_id: str, grant_id: str, at: datetime) -> Grant:
        """Mark a grant voided from ``at`` (kept if already voided)."""
        where = sa.and_(credit_grants.c.account_id == account_id, credit_grants.c.id == grant_id)
        async with self._db.write() as conn:
            await conn.execute(
                credit_grants.update()
                .where(where, credit_grants.c.voided_at.is_(None))
                .values(voided_at=to_micros(at))
            )
            row = (await conn.execute(credit_grants.select().where(where))).first()
        if row is None:
            raise NotFound(f"grant {grant_id!r} not found")
        return grant_of(row)
