"""Dated history of each account's daily totals, and server-side dashboard sessions.

``total_changes`` is seeded with one row per account and service holding today's
effective total (the account's override, else its plan's quota), effective from the
account's creation: the best that is known of a past without history.

Revision ID: 0003
Revises: 0002
Create Date: 2026-12-02
"""

from typing import Any

import sqlalchemy as sa
from alembic import op

revision = "0003"
down_revision = "0002"
branch_labels = None
depends_on = None

SEED_BATCH = 1000


def upgrade() -> None:
    op.create_table(
        "total_changes",
        sa.Column(
            "account_id",
            sa.String(64),
            sa.ForeignKey("accounts.id", ondelete="CASCADE"),
            primary_key=True,
        ),
        sa.Column("service", sa.String(64), primary_key=True),
        sa.Column("effective_from", sa.BigInteger, primary_key=True),
        sa.Column("total", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "dashboard_sessions",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
    )
    op.create_index("ix_dashboard_sessions_expires_at", "dashboard_sessions", ["expires_at"])
    _seed_total_changes()


def _seed_total_changes() -> None:
    changes = sa.table(
        "total_changes",
        sa.column("account_id", sa.String),
        sa.column("service", sa.String),
        sa.column("effective_from", sa.BigInteger),
        sa.column("total", sa.BigInteger),
    )
    plans = sa.table("plans", sa.column("id", sa.String), sa.column("quotas", sa.JSON))
    accounts = sa.table(
        "accounts",
        sa.column("id", sa.String),
        sa.column("plan_id", sa.String),
        sa.column("overrides", sa.JSON),
        sa.column("created_at", sa.BigInteger),
    )
    conn = op.get_bind()
    quotas = {row.id: row.quotas or {} for row in conn.execute(sa.select(plans))}
    batch: list[dict[str, Any]] = []
    query = sa.select(accounts).order_by(accounts.c.id)
    for account in conn.execute(query).all():
        totals = {name: int(q["total"]) for name, q in quotas.get(account.plan_id, {}).items()}
        overridden = (account.overrides or {}).get("quotas", {})
        totals.update({name: int(total) for name, total in overridden.items()})
        batch.extend(
            {
                "account_id": account.id,
                "service": service,
                "effective_from": account.created_at,
                "total": total,
            }
            for service, total in totals.items()
        )
        if len(batch) >= SEED_BATCH:
            conn.execute(changes.insert(), batch)
            batch = []
    if batch:
        conn.execute(changes.insert(), batch)


def downgrade() -> None:
    op.drop_index("ix_dashboard_sessions_expires_at", "dashboard_sessions")
    op.drop_table("dashboard_sessions")
    op.drop_table("total_changes")
