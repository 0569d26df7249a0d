"""The SQL schema, shared by every SQL backend; migrations create and upgrade it.

Instants are stored as integer microseconds since the epoch (UTC) and dates as
``YYYY-MM-DD`` text, so every dialect compares and sorts them the same way.
"""

from __future__ import annotations

import sqlalchemy as sa

metadata = sa.MetaData()

settings = sa.Table(
    "settings",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("value", sa.Text, nullable=False),
)

services = sa.Table(
    "services",
    metadata,
    sa.Column("name", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("credit_price", sa.BigInteger, nullable=True),  # micro-credits a unit; NULL: none
)

plans = sa.Table(
    "plans",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("description", sa.Text, nullable=False),
    sa.Column("quotas", sa.JSON, nullable=False),
    sa.Column("limits", sa.JSON, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("alerts", sa.JSON, nullable=True),  # {"thresholds": [...]}; NULL: defaults
    sa.Column("refill", sa.JSON, nullable=True),  # credits.Refill.to_json(); NULL: none
)

accounts = sa.Table(
    "accounts",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("plan_id", sa.String(64), sa.ForeignKey("plans.id"), nullable=False, index=True),
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("status", sa.String(16), nullable=False),
    sa.Column("overrides", sa.JSON, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
)

api_keys = sa.Table(
    "api_keys",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column(
        "account_id",
        sa.String(64),
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        nullable=False,
        index=True,
    ),
    sa.Column("name", sa.Text, nullable=False),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("scopes", sa.JSON, nullable=True),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
    sa.Column("replaced_by", sa.String(64), nullable=True),
    sa.Column("limits", sa.JSON, nullable=True),  # the key's own limits (SPEC 9), by service
)

# Every counter (SPEC 9): an account's day row of a service (``service`` the service,
# ``day`` an ISO date), or any other limit's counter (``service`` the limit's name, which
# has a dot and, per key, ``:<key id>``; ``day`` its window's id, or ``rate`` for a rate's
# bucket, whose ``used`` is its theoretical arrival time in µs and ``total`` its burst).
usage_days = sa.Table(
    "usage_days",
    metadata,
    sa.Column(
        "account_id",
        sa.String(64),
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("service", sa.String(200), primary_key=True),
    sa.Column("day", sa.String(32), primary_key=True),
    sa.Column("used", sa.BigInteger, nullable=False),
    sa.Column("total", sa.BigInteger, nullable=False),
    sa.Column("rejected", sa.BigInteger, nullable=False),
)

usage_events = sa.Table(
    "usage_events",
    metadata,
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("recorded_at", sa.BigInteger, nullable=False),
    sa.Index("ix_usage_events_recorded_at", "recorded_at"),
)

idempotency = sa.Table(
    "idempotency",
    metadata,
    sa.Column(
        "account_id",
        sa.String(64),
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("key", sa.String(255), primary_key=True),
    sa.Column("fingerprint", sa.String(64), nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Column("granted", sa.Boolean, nullable=True),
    sa.Column("used", sa.BigInteger, nullable=True),
    sa.Column("total", sa.BigInteger, nullable=True),
    sa.Column("day", sa.String(10), nullable=True),
    sa.Index("ix_idempotency_expires_at", "expires_at"),
)

gauges = sa.Table(
    "gauges",
    metadata,
    sa.Column(
        "account_id",
        sa.String(64),
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("name", sa.String(128), primary_key=True),
    sa.Column("usage", sa.BigInteger, nullable=False),
)

# The effective daily total of an account's service from an instant on: one row per
# change (plan switched, plan replaced, override changed), so a past day without a
# usage row reports the total in force that day (its local date is read in the
# account's timezone, so a timezone change moves the boundary with it).
total_changes = sa.Table(
    "total_changes",
    metadata,
    sa.Column(
        "account_id",
        sa.String(64),
        sa.ForeignKey("accounts.id", ondelete="CASCADE"),
        primary_key=True,
    ),
    sa.Column("service", sa.String(200), primary_key=True),  # a history name (SPEC 9)
    sa.Column("effective_from", sa.BigInteger, primary_key=True),
    sa.Column("total", sa.BigInteger, nullable=False),
)

# Signed-in dashboard and portal sessions, by the SHA-256 of the id their cookie names:
# a session is live only while its row is, so signing out ends it on every node.
dashboard_sessions = sa.Table(
    "dashboard_sessions",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
    sa.Index("ix_dashboard_sessions_expires_at", "expires_at"),
)

# Named operator tokens (SPEC 12), by the SHA-256 of the token: never the token itself.
operator_tokens = sa.Table(
    "operator_tokens",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("name", sa.String(64), nullable=False, unique=True),
    sa.Column("role", sa.String(16), nullable=False),
    sa.Column("digest", sa.String(64), nullable=False, unique=True),
    sa.Column("prefix", sa.String(16), nullable=False),
    sa.Column("last4", sa.String(4), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("revoked_at", sa.BigInteger, nullable=True),
)

# The audit log, append-only. Ids are lowercase hex after ``aud_`` and sort in the order
# the entries were written, in every collation; the log is read newest first by id.
audit_log = sa.Table(
    "audit_log",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("actor", sa.String(64), nullable=False),
    sa.Column("action", sa.String(64), nullable=False),
    sa.Column("target", sa.String(200), nullable=False),
    sa.Column("before", sa.JSON, nullable=True),
    sa.Column("after", sa.JSON, nullable=True),
    sa.Column("request_id", sa.String(64), nullable=True),
    sa.Index("ix_audit_log_target_id", "target", "id"),
    sa.Index("ix_audit_log_actor_id", "actor", "id"),
)

# Alerts (SPEC 11). Endpoints keep their signing secrets: a delivery is signed with them.
webhook_endpoints = sa.Table(
    "webhook_endpoints",
    metadata,
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
    # A customer's own endpoint (its account's events only); NULL: the operator's.
    sa.Column("account_id", sa.String(64), nullable=True),
    sa.Index("ix_webhook_endpoints_account_id", "account_id"),
)

# One row per alert: its ``dedupe`` key is unique, so however many nodes see a threshold
# crossed, one insert wins. Ids sort in the order the events were written.
alert_events = sa.Table(
    "alert_events",
    metadata,
    sa.Column("id", sa.String(64), primary_key=True),
    sa.Column("dedupe", sa.String(512), nullable=False, unique=True),
    sa.Column("type", sa.String(64), nullable=False),
    sa.Column("account_id", sa.String(64), nullable=True),
    sa.Column("at", sa.BigInteger, nullable=False),
    sa.Column("data", sa.JSON, nullable=False),
    sa.Index("ix_alert_events_account_id", "account_id", "id"),
)

# Each event for each endpoint: pending until delivered or given up. A node claims a due
# delivery (``claim`` until ``claimed_until``) before sending it, so no two send it at once.
webhook_deliveries = sa.Table(
    "webhook_deliveries",
    metadata,
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
    sa.Index("ix_webhook_deliveries_endpoint_id", "endpoint_id", "id"),
    sa.Index("ix_webhook_deliveries_due", "endpoint_id", "status", "next_at"),
)

# Credits given to an account (SPEC 10); what is left of each is the counter store's
# (``credits.<id>`` counters). A refill's id is its window's, so one insert per window wins.
credit_grants = sa.Table(
    "credit_grants",
    metadata,
    sa.Column("account_id", sa.String(64), primary_key=True),
    sa.Column("id", sa.String(128), primary_key=True),
    sa.Column("kind", sa.String(16), nullable=False),
    sa.Column("amount", sa.BigInteger, nullable=False),  # micro-credits
    sa.Column("priority", sa.Integer, nullable=False),
    sa.Column("note", sa.Text, nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=True),
    sa.Column("voided_at", sa.BigInteger, nullable=True),
    sa.Column("voided", sa.BigInteger, nullable=False),
)

# Reservations (SPEC 10): pending until committed, cancelled or expired. A node claims one
# (``claim`` until ``claimed_until``) before settling it, so two never settle it at once;
# ``body`` holds what it moved (``credits.Reservation``'s items, moved slots, grants).
reservations = sa.Table(
    "reservations",
    metadata,
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
    sa.Index("ix_reservations_due", "status", "expires_at"),
)

# The quotad nodes of a Redis deployment, each with the last batch of counter changes it
# has written here (``seq``) and when it last wrote one. A node that finds an account's
# counters lost in Redis waits until every live node has written what it granted before
# rebuilding them from here (see ``storage/write_behind.py``).
counter_nodes = sa.Table(
    "counter_nodes",
    metadata,
    sa.Column("node_id", sa.String(64), primary_key=True),
    sa.Column("seq", sa.BigInteger, nullable=False),
    sa.Column("heartbeat_at", sa.BigInteger, nullable=False),
)

# One row (id 1): a number that triggers (migration 0010) move with every change to the
# records verify and auth read: settings, services, plans, accounts, API keys, operator
# tokens and credit grants. A node's record cache reads it instead of reloading each key.
record_version = sa.Table(
    "record_version",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
    sa.Column("version", sa.BigInteger, nullable=False),
)
