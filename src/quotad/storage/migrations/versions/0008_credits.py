"""Credits and reservations: grants, reservations; services' prices, plans' refills.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # Micro-credits a unit of cost (NULL: an unpriced service).
    op.add_column("services", sa.Column("credit_price", sa.BigInteger, nullable=True))
    # {"amount", "window", "mode", "anchor"?}: a plan's credit refill (NULL: none).
    op.add_column("plans", sa.Column("refill", sa.JSON, nullable=True))
    op.create_table(
        "credit_grants",
        sa.Column("account_id", sa.String(64), primary_key=True),
        sa.Column("id", sa.String(128), primary_key=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("amount", sa.BigInteger, nullable=False),
        sa.Column("priority", sa.Integer, nullable=False),
        sa.Column("note", sa.Text, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=True),
        sa.Column("voided_at", sa.BigInteger, nullable=True),
        sa.Column("voided", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "reservations",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("account_id", sa.String(64), nullable=False),
        sa.Column("key_id", sa.String(64), nullable=True),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("body", sa.JSON, nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.Column("settled_at", sa.BigInteger, nullable=True),
        sa.Column("claim", sa.String(64), nullable=True),
        sa.Column("claimed_until", sa.BigInteger, nullable=True),
    )
    op.create_index("ix_reservations_due", "reservations", ["status", "expires_at"])
    op.create_index("ix_reservations_account_id", "reservations", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_reservations_account_id", "reservations")
    op.drop_index("ix_reservations_due", "reservations")
    op.drop_table("reservations")
    op.drop_table("credit_grants")
    op.drop_column("plans", "refill")
    op.drop_column("services", "credit_price")
