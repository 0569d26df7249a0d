"""Alerts and webhooks: endpoints, alert events, deliveries; plans' alert thresholds.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-02
"""

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    # {"thresholds": [80, 100]}: a plan's alert settings (NULL: the defaults).
    op.add_column("plans", sa.Column("alerts", sa.JSON, nullable=True))
    op.create_table(
        "webhook_endpoints",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("url", sa.Text, nullable=False),
        sa.Column("description", sa.Text, nullable=False),
        sa.Column("events", sa.JSON, nullable=False),
        sa.Column("secret", sa.String(128), nullable=False),
        sa.Column("previous_secret", sa.String(128), nullable=True),
        sa.Column("previous_until", sa.BigInteger, nullable=True),
        sa.Column("disabled_at", sa.BigInteger, nullable=True),
        sa.Column("disabled_reason", sa.Text, nullable=True),
        sa.Column("failing_since", sa.BigInteger, nullable=True),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    )
    op.create_table(
        "alert_events",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("dedupe", sa.String(512), nullable=False, unique=True),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("account_id", sa.String(64), nullable=True),
        sa.Column("at", sa.BigInteger, nullable=False),
        sa.Column("data", sa.JSON, nullable=False),
    )
    op.create_index("ix_alert_events_account_id", "alert_events", ["account_id", "id"])
    op.create_table(
        "webhook_deliveries",
        sa.Column("id", sa.String(64), primary_key=True),
        sa.Column("endpoint_id", sa.String(64), nullable=False),
        sa.Column("event_id", sa.String(64), nullable=False),
        sa.Column("type", sa.String(64), nullable=False),
        sa.Column("status", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("next_at", sa.BigInteger, nullable=True),
        sa.Column("claim", sa.String(64), nullable=True),
        sa.Column("claimed_until", sa.BigInteger, nullable=True),
        sa.Column("attempts", sa.JSON, nullable=False),
    )
    op.create_index(
        "ix_webhook_deliveries_endpoint_id", "webhook_deliveries", ["endpoint_id", "id"]
    )
    op.create_index(
        "ix_webhook_deliveries_due", "webhook_deliveries", ["endpoint_id", "status", "next_at"]
    )


def downgrade() -> None:
    op.drop_index("ix_webhook_deliveries_due", "webhook_deliveries")
    op.drop_index("ix_webhook_deliveries_endpoint_id", "webhook_deliveries")
    op.drop_table("webhook_deliveries")
    op.drop_index("ix_alert_events_account_id", "alert_events")
    op.drop_table("alert_events")
    op.drop_table("webhook_endpoints")
    with op.batch_alter_table("plans") as batch:
        batch.drop_column("alerts")
