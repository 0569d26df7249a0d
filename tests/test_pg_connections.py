"""PostgreSQL's pooled connections: checked before use only once idle, so a connection the
server dropped while idle never fails a request, and one in steady use costs no extra
round trip (``storage.sql.engine.PG_IDLE_CHECK_SECONDS``)."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator

import psycopg
import pytest

from quotad.storage import stores_from_url
from quotad.storage.sql import engine
from tests import servers
from tests.servers import POSTGRES_URL, postgres_schema

pytestmark = pytest.mark.postgresql

IDLE = 0.3  # the idle span before a check, shortened for the tests


@pytest.fixture
def named_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[str, str]]:
    """A migrated schema's URL whose connections carry a unique application name, and
    that name; idle connections are checked after ``IDLE`` seconds."""
    monkeypatch.setattr(engine, "PG_IDLE_CHECK_SECONDS", IDLE)
    name = f"pgconn{uuid.uuid4().hex[:12]}"
    with postgres_schema(migrated=True) as url:
        yield f"{url}&application_name={name}", name


def terminate(name: str) -> int:
    """End every server connection named ``name`` (as a restart or an idle timeout would);
    how many there were."""
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        ended = admin.execute(
            "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
            " WHERE application_name = %s",
            (name,),
        ).fetchone()
    return int(ended[0]) if ended else 0


def count_pings(monkeypatch: pytest.MonkeyPatch, dialect: object) -> list[int]:
    """A one-item list counting the checks the store's engine makes from now on."""
    pings = [0]
    ping = dialect.do_ping  # type: ignore[attr-defined]

    def counted(dbapi_connection: object) -> bool:
        pings[0] += 1
        return bool(ping(dbapi_connection))

    monkeypatch.setattr(dialect, "do_ping", counted)
    return pings


def test_a_connection_dropped_while_idle_is_replaced_before_a_request_uses_it(
    named_url: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """After the server ended the pool's idle connections, the next reads and writes all
    succeed, and the pool checked the connection it took."""
    url, name = named_url

    async def scenario() -> None:
        stores = stores_from_url(url)
        await stores.open()
        try:
            await stores.records.list_services()
            db = stores.records._db  # type: ignore[attr-defined]
            pings = count_pings(monkeypatch, db.writer.sync_engine.dialect)
            await asyncio.sleep(IDLE + 0.2)
            assert terminate(name) >= 1
            await stores.records.list_services()  # a read
            await stores.records.put_setting("probe", "after")  # a write
            assert await stores.records.get_setting("probe") == "after"
            assert pings[0] >= 1
        finally:
            await stores.close()

    asyncio.run(scenario())


def test_a_connection_in_steady_use_is_not_checked_before_each_use(
    named_url: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Back-to-back reads and writes make no check round trip; one after an idle span does."""
    url, _name = named_url

    async def scenario() -> None:
        stores = stores_from_url(url)
        await stores.open()
        try:
            db = stores.records._db  # type: ignore[attr-defined]
            pings = count_pings(monkeypatch, db.writer.sync_engine.dialect)
            for n in range(40):
                await stores.records.put_setting("probe", str(n))
                await stores.records.list_services()
            assert pings[0] == 0
            await asyncio.sleep(IDLE + 0.2)
            await stores.records.list_services()
            assert pings[0] == 1
        finally:
            await stores.close()

    asyncio.run(scenario())


def test_a_schema_a_session_left_in_a_transaction_is_still_dropped(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The tests' schema helper ends a session that holds locks in its schema (a store closed
    mid-transaction) instead of waiting for it forever, and drops the schema."""
    monkeypatch.setattr(servers, "DROP_LOCK_TIMEOUT", "200ms")
    with postgres_schema(migrated=True) as url:
        schema = url.rsplit("%3D", 1)[1]
        held = psycopg.connect(url)  # a transaction of its own, left open
        held.execute("LOCK TABLE usage_days IN ACCESS SHARE MODE")
    with psycopg.connect(POSTGRES_URL, autocommit=True) as admin:
        left = admin.execute(
            "SELECT count(*) FROM pg_namespace WHERE nspname = %s", (schema,)
        ).fetchone()
    assert left == (0,)
    with held, pytest.raises(psycopg.OperationalError):
        held.execute("SELECT 1")  # the session was ended
