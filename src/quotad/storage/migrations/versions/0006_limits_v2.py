"""Limits v2: every limit's counters in usage_days, history by limit name, a key's limits.

A window counter is stored as ``(account, limit name, window id)``: the names are longer
than a service's and a minute window's id (``YYYY-MM-DDTHH:MMZ``) longer than a date.
Widening keeps every row; SQLite, which cannot alter a column, copies the table.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("usage_days") as batch:
        batch.alter_column(
            "service", type_=sa.String(200), existing_type=sa.String(64), existing_nullable=False
        )
        batch.alter_column(
            "day", type_=sa.String(32), existing_type=sa.String(10), existing_nullable=False
        )
    with op.batch_alter_table("total_changes") as batch:
        batch.alter_column(
            "service", type_=sa.String(200), existing_type=sa.String(64), existing_nullable=False
        )
    with op.batch_alter_table("api_keys") as batch:
        batch.add_column(sa.Column("limits", sa.JSON, nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("api_keys") as batch:
        batch.drop_column("limits")
    # Only version-1 rows fit the narrower columns again.
    op.execute("DELETE FROM usage_days WHERE service LIKE '%.%'")
    op.execute("DELETE FROM total_changes WHERE service LIKE '%.%'")
    with op.batch_alter_table("total_changes") as batch:
        batch.alter_column(
            "service", type_=sa.String(64), existing_type=sa.String(200), existing_nullable=False
        )
    with op.batch_alter_table("usage_days") as batch:
        batch.alter_column(
            "day", type_=sa.String(10), existing_type=sa.String(32), existing_nullable=False
        )
        batch.alter_column(
            "service", type_=sa.String(64), existing_type=sa.String(200), existing_nullable=False
        )
