"""Migrations create the schema the code expects, and a 0.1 database upgrades in place."""

from __future__ import annotations

from pathlib import Path

import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from quotad.storage.schema import metadata
from quotad.storage.sql import SqlStore, migrate


def test_migrated_schema_matches_the_code(tmp_path: Path) -> None:
    """Running every migration on an empty SQLite file yields exactly the tables in schema.py."""
    engine = sa.create_engine(f"sqlite:///{tmp_path / 'm.db'}")
    with engine.begin() as conn:
        migrate(conn)
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


async def test_reopening_keeps_data_and_schema_version(tmp_path: Path) -> None:
    """Opening an existing database runs no destructive step and keeps its rows."""
    from datetime import UTC, datetime

    from quotad.domain.models import Service

    url = f"sqlite:///{tmp_path / 'q.db'}"
    first = SqlStore(url)
    await first.open()
    await first.create_service(Service("insights", "", datetime(2024, 1, 1, tzinfo=UTC)))
    await first.close()
    second = SqlStore(url)
    await second.open()
    assert [s.name for s in await second.list_services()] == ["insights"]
    await second.close()
    engine = sa.create_engine(url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == "0001"
    engine.dispose()
