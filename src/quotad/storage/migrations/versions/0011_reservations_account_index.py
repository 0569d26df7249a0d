"""Reservations lose their index on ``account_id``: no query reads by it.

Every reservation written (a reserve, then its commit) paid for it: one more index
entry per row, on as many pages as there are accounts reserving at once, each page
written and synced at the commit (SQLite reserve + commit, 50 accounts: about 10 %
more pairs a second without it).

Revision ID: 0011
Revises: 0010
Create Date: 2026-12-05
"""

from alembic import op

revision = "0011"
down_revision = "0010"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.drop_index("ix_reservations_account_id", "reservations")


def downgrade() -> None:
    op.create_index("ix_reservations_account_id", "reservations", ["account_id"])
