"""The records' version: one number every change to what verify and auth read moves.

A node's record cache reads it about once per ``record_cache_seconds`` instead of
reloading every key it holds (see ``storage/cache.py``). Triggers move it, so a change
made by any writer counts: another node, the CLI on the same file, or psql by hand.

Revision ID: 0010
Revises: 0009
Create Date: 2026-12-04
"""

import sqlalchemy as sa
from alembic import op

revision = "0010"
down_revision = "0009"
branch_labels = None
depends_on = None

# What the cached reads and verify's admissions are made of (``storage/cache.py``).
_TABLES = (
    "settings",
    "services",
    "plans",
    "accounts",
    "api_keys",
    "operator_tokens",
    "credit_grants",
)
_BUMP = "UPDATE record_version SET version = version + 1 WHERE id = 1;"


def upgrade() -> None:
    op.create_table(
        "record_version",
        sa.Column("id", sa.Integer, primary_key=True, autoincrement=False),
        sa.Column("version", sa.BigInteger, nullable=False),
    )
    op.execute("INSERT INTO record_version (id, version) VALUES (1, 0)")
    if op.get_bind().dialect.name == "postgresql":
        # Deferred to the commit, so a transaction locks the version's row last: two
        # record writes may wait for each other there, but never deadlock on it. Once
        # per transaction (a transaction-local setting remembers it): a row updated again
        # and again in one transaction leaves a chain of versions that each update walks,
        # which made a bulk insert quadratic (32,000 rows: 7.8 s). The table's name in the
        # body resolves through the writer's search_path, as every statement of quotad's.
        op.execute(
            "CREATE FUNCTION quotad_record_changed() RETURNS trigger LANGUAGE plpgsql AS $$\n"
            "BEGIN\n"
            "  IF current_setting('quotad.record_changed', true) IS DISTINCT FROM 'on' THEN\n"
            f"    {_BUMP}\n"
            "    PERFORM set_config('quotad.record_changed', 'on', true);\n"
            "  END IF;\n"
            "  RETURN NULL;\n"
            "END\n"
            "$$"
        )
        for table in _TABLES:
            op.execute(
                f"CREATE CONSTRAINT TRIGGER record_version_{table} "
                f"AFTER INSERT OR UPDATE OR DELETE ON {table} "
                "DEFERRABLE INITIALLY DEFERRED "
                "FOR EACH ROW EXECUTE FUNCTION quotad_record_changed()"
            )
            op.execute(  # a constraint trigger is per row, and TRUNCATE has no rows
                f"CREATE TRIGGER record_version_{table}_truncate AFTER TRUNCATE ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION quotad_record_changed()"
            )
        return
    # SQLite has row triggers only, one event each.
    for table in _TABLES:
        for event in ("insert", "update", "delete"):
            op.execute(
                f"CREATE TRIGGER record_version_{table}_{event} AFTER {event.upper()} "
                f"ON {table} BEGIN {_BUMP} END"
            )


def downgrade() -> None:
    postgresql = op.get_bind().dialect.name == "postgresql"
    events = ("", "_truncate") if postgresql else ("_insert", "_update", "_delete")
    for table in _TABLES:
        for event in events:
            suffix = f" ON {table}" if postgresql else ""
            op.execute(f"DROP TRIGGER record_version_{table}{event}{suffix}")
    if postgresql:
        op.execute("DROP FUNCTION quotad_record_changed()")
    op.drop_table("record_version")
