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

HEAD = "0011"


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


async def test_a_0_1_database_upgrades_to_limits_v2_and_keeps_verifying(
    database_url: str,
) -> None:
    """A 0.1 database (revision 0005) with a plan, a version-1 override, keys, usage days and
    total history upgrades to head losing nothing, and a verify still counts against it."""
    from dataclasses import replace
    from datetime import UTC, date, datetime

    from quotad.domain import limits
    from quotad.domain.keys import digest, generate
    from quotad.service.context import Context
    from quotad.service.verify import verify
    from quotad.storage import stores_from_url
    from quotad.testing import FakeClock
    from tests.conftest import make_settings

    raw_key = generate("qd")
    engine = sync_engine(database_url)
    with engine.begin() as conn:
        migrate(conn, "0005")
        conn.execute(sa.text("INSERT INTO services VALUES ('insights', '', 0)"))
        conn.execute(
            sa.text("INSERT INTO plans VALUES ('free', '', :q, '[]', 0)"),
            {"q": '{"insights": {"total": 250, "period": "day"}}'},
        )
        conn.execute(
            sa.text("INSERT INTO accounts VALUES ('acme', 'Acme', 'free', 'UTC', 'active', :o, 5)"),
            {"o": '{"quotas": {"insights": 400}, "limits": {}}'},
        )
        conn.execute(
            sa.text(
                "INSERT INTO api_keys VALUES ('key_1', 'acme', 'main', :d, 'qd', '0000',"
                " NULL, 5, NULL, NULL, NULL)"
            ),
            {"d": digest(raw_key)},
        )
        conn.execute(
            sa.text(
                "INSERT INTO usage_days VALUES ('acme', 'insights', '2024-11-06', 9, 400, 2),"
                " ('acme', 'insights', '2024-11-07', 7, 400, 0)"
            )
        )
        conn.execute(sa.text("DELETE FROM total_changes"))
        conn.execute(
            sa.text(
                "INSERT INTO total_changes VALUES ('acme', 'insights', 5, 250),"
                " ('acme', 'insights', 9, 400)"
            )
        )
    with engine.begin() as conn:
        migrate(conn)
        assert conn.execute(sa.text("SELECT version_num FROM alembic_version")).scalar() == HEAD
        days = conn.execute(sa.text("SELECT * FROM usage_days ORDER BY day")).all()
        history = conn.execute(sa.text("SELECT * FROM total_changes ORDER BY effective_from")).all()
    engine.dispose()
    assert [tuple(row) for row in days] == [
        ("acme", "insights", "2024-11-06", 9, 400, 2),
        ("acme", "insights", "2024-11-07", 7, 400, 0),
    ]
    assert [tuple(row) for row in history] == [
        ("acme", "insights", 5, 250),
        ("acme", "insights", 9, 400),
    ]

    stores = stores_from_url(database_url)
    await stores.open()
    try:
        plan = await stores.records.get_plan("free")
        account = await stores.records.get_account("acme")
        [key] = await stores.records.list_keys("acme")
        assert plan is not None
        assert plan.quotas["insights"].limits == limits.daily(250)
        assert account is not None
        assert account.overrides.quotas == {"insights": limits.daily(400)}
        assert account.billing_anchor is None
        assert (key.id, key.digest, key.limits) == ("key_1", digest(raw_key), {})
        ctx = Context(stores, make_settings(database_url), FakeClock())
        verdict = await verify(ctx, raw_key, "insights", 3)
        assert (verdict.valid, verdict.code, verdict.used, verdict.total) == (
            True,
            "VALID",
            10,
            400,
        )
        [day] = await stores.counters.usage(
            "acme", "insights", date(2024, 11, 7), date(2024, 11, 7)
        )
        assert (day.used, day.total) == (10, 400)
        # The widened columns take a limit's counter and a key's own limits.
        own: dict[str, limits.Limits] = {
            "insights": (limits.LimitSpec(5, limits.Window.MINUTE, per=limits.Per.KEY),)
        }
        limited = replace(key, id="key_2", digest=digest(generate("qd")), limits=own)
        await stores.records.create_key(limited)
        assert await stores.records.get_key("key_2") == limited
        minute = limits.Slot("insights.minute.key:key_1", "2024-11-07T12:00Z", 5, limits.HARD, 1)
        outcome = await stores.counters.consume(
            "acme",
            "insights",
            date(2024, 11, 7),
            1,
            400,
            now=datetime(2024, 11, 7, 12, tzinfo=UTC),
            extra=(minute,),
        )
        assert outcome.granted
        assert outcome.before == (10, 0)
    finally:
        await stores.close()
