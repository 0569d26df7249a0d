"""Customers' own webhook endpoints: an endpoint may belong to one account.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-03
"""

import sqlalchemy as sa
from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # NULL: the operator's endpoint (every account's events), as every endpoint was before.
    op.add_column("webhook_endpoints", sa.Column("account_id", sa.String(64), nullable=True))
    op.create_index("ix_webhook_endpoints_account_id", "webhook_endpoints", ["account_id"])


def downgrade() -> None:
    op.drop_index("ix_webhook_endpoints_account_id", "webhook_endpoints")
    op.drop_column("webhook_endpoints", "account_id")
