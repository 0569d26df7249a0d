"""One migration set creates and upgrades SQLite and PostgreSQL to the schema the code expects."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import sqlalchemy as sa
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from quotad.storage.schema import metadata
from quotad.storage.sql import SqlStore, migrate
from tests.servers import postgres_schema

HEAD = "0006"


@pytest.fixture(
    params=[
        pytest.param("sqlite", marks=pytest.mark.sqlite),
        pytest.param("postgresql", marks=pytest.mark.postgresql),
    ]
)
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty database of each SQL kind, as a URL quotad accepts."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'm.db'}"
    else:
        with postgres_schema() as url:
            yield url


def sync_engine(url: str) -> sa.Engine:
    """A synchronous engine on the same database."""
    return sa.create_engine(url.replace("postgresql://", "postgresql+psycopg://"))


def test_migrated_schema_matches_the_code(database_url: str) -> None:
    """Running every migration on an empty database yields exactly the tables in schema.py."""
    engine = sync_engine(database_url)
    with engine.begin() as conn:
        migrate(conn)
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


def test_a_database_of_the_previous_release_upgrades_in_place(database_url: str) -> None:
    """A 0.1 database (revision 0001) with data upgrades to head and keeps every row."""
    engine = sync_engine(database_url)
    with engine.begin() as conn:
        migrate(conn, "0001")
        conn.execute(sa.text("INSERT INTO plans VALUES ('free', '', '{}', '[]', 0)"))
        conn.execute(
            sa.text(
                "INSERT INTO accounts VALUES ('acme', 'Acme', 'free', 'UTC', 'active', '{}', 0)"
            )
        )
        conn.execute(
            sa.text("INSERT INTO usage_days VALUES ('acme', 'insights', '2024-11-01', 7, 250, 1)")
        )
    with engine.begin() as conn:
        migrate(conn)
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        row = conn.execute(sa.text("SELECT used, total, rejected FROM usage_days")).one()
        assert tuple(row) == (7, 250, 1)
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    engine.dispose()
    assert diff == []


async def test_reopening_keeps_data_and_schema_version(database_url: str) -> None:
    """Opening an existing database runs no destructive step and keeps its rows."""
    from datetime import UTC, datetime

    from quotad.domain.models import Service

    first = SqlStore(database_url)
    await first.open()
    await first.create_service(Service("insights", "", datetime(2024, 1, 1, tzinfo=UTC)))
    await first.close()
    second = SqlStore(database_url)
    await second.open()
    assert [s.name for s in await second.list_services()] == ["insights"]
    await second.close()
    engine = sync_engine(database_url)
    with engine.connect() as conn:
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
    engine.dispose()


def test_upgrading_seeds_each_accounts_totals_from_its_creation(database_url: str) -> None:
    """Revision 0003 notes every account's current totals (override over plan) from its creation."""
    engine = sync_engine(database_url)
    with engine.begin() as conn:
        migrate(conn, "0002")
        quotas = '{"insights": {"total": 250, "period": "day"}, "scoring": {"total": 100, "period": "day"}}'
        conn.execute(sa.text("INSERT INTO plans VALUES ('free', '', :q, '[]', 0)"), {"q": quotas})
        conn.execute(
            sa.text(
                "INSERT INTO accounts VALUES ('acme', 'Acme', 'free', 'UTC', 'active', '{}', 5),"
                " ('beta', 'Beta', 'free', 'UTC', 'active', :o, 7)"
            ),
            {"o": '{"quotas": {"insights": 400}, "limits": {}}'},
        )
    with engine.begin() as conn:
        migrate(conn)
        rows = conn.execute(
            sa.text("SELECT * FROM total_changes ORDER BY account_id, service")
        ).all()
    engine.dispose()
    assert [tuple(row) for row in rows] == [
        ("acme", "insights", 5, 250),
        ("acme", "scoring", 5, 100),
        ("beta", "insights", 7, 400),
        ("beta", "scoring", 7, 100),
    ]
