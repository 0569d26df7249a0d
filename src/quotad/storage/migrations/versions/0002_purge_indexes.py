"""Indexes that let expired idempotency answers and old event ids be purged cheaply.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-22
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_index("ix_idempotency_expires_at", "idempotency", ["expires_at"])
    op.create_index("ix_usage_events_recorded_at", "usage_events", ["recorded_at"])


def downgrade() -> None:
    op.drop_index("ix_usage_events_recorded_at", "usage_events")
    op.drop_index("ix_idempotency_expires_at", "idempotency")
