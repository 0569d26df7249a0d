"""Real PostgreSQL and Redis servers for the tests: found, or skipped with a reason.

Under ``CI=true`` a missing server fails the test instead of skipping it, so CI can
never pass by silently testing less.
"""

from __future__ import annotations

import atexit
import functools
import os
import shutil
import subprocess
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, NoReturn

import pytest

POSTGRES_URL = os.environ.get(
    "QUOTAD_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/test"
)
REDIS_URL = os.environ.get("QUOTAD_TEST_REDIS_URL", "redis://127.0.0.1:6379/0")
START_POSTGRES = (
    "start PostgreSQL with `pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start` "
    "or point QUOTAD_TEST_POSTGRES_URL at one"
)
START_REDIS = (
    "start Redis with `redis-server --daemonize yes --port 6379 --save '' --appendonly no` "
    "or point QUOTAD_TEST_REDIS_URL at one"
)


def unavailable(reason: str) -> NoReturn:
    """Skip the test, or fail it under CI=true."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI=true and {reason}")
    pytest.skip(reason)


def _with_search_path(url: str, schema: str) -> str:
    separator = "&" if "?" in url else "?"
    return f"{url}{separator}options=-csearch_path%3D{schema}"


@contextmanager
def postgres_schema(*, migrated: bool = False) -> Iterator[str]:
    """The URL of a fresh schema on the test PostgreSQL, dropped afterwards: empty, or
    ``migrated`` to the latest revision (a copy of a schema migrated once per process)."""
    import psycopg

    try:
        admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
    except psycopg.OperationalError as exc:
        if "does not exist" in str(exc):
            _create_database()
            admin = psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3)
        else:
            unavailable(f"PostgreSQL is not reachable at {POSTGRES_URL}: {START_POSTGRES}")
    schema = f"t_{uuid.uuid4().hex[:16]}"
    with admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
        if migrated:
            script = _migrated_schema_script()
            if script is not None:  # else the store migrates the empty schema when opened
                admin.execute(script.replace(_TEMPLATE_MARK, schema))
        try:
            yield _with_search_path(POSTGRES_URL, schema)
        finally:
            _drop_schema(admin, schema)


# Lock waits of a schema's DROP before the sessions holding its locks are ended.
DROP_LOCK_TIMEOUT = "5s"


def _drop_schema(admin: Any, schema: str) -> None:
    """Drop a test's schema. A session a test left holding locks in it (a store closed while
    one of its transactions was under way, on an event loop that then closed) is ended, so
    the drop fails neither that test's teardown nor every later one by waiting forever."""
    import psycopg

    admin.execute(f"SET lock_timeout = '{DROP_LOCK_TIMEOUT}'")
    for _ in range(3):
        try:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        except psycopg.errors.LockNotAvailable:
            admin.execute(
                "SELECT pg_terminate_backend(l.pid) FROM pg_locks l"
                " JOIN pg_class c ON c.oid = l.relation"
                " JOIN pg_namespace n ON n.oid = c.relnamespace"
                " WHERE n.nspname = %s AND l.pid <> pg_backend_pid()",
                (schema,),
            )
        else:
            return
    admin.execute(f'DROP SCHEMA "{schema}" CASCADE')


def _create_database() -> None:
    import psycopg
    from psycopg import sql

    base, _, name = POSTGRES_URL.rpartition("/")
    with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name.split("?")[0])))


def redis_available() -> None:
    """Skip (or fail under CI) unless the test Redis answers PING."""
    import redis

    client = redis.Redis.from_url(REDIS_URL, socket_connect_timeout=2)
    try:
        client.ping()
    except redis.RedisError:
        unavailable(f"Redis is not reachable at {REDIS_URL}: {START_REDIS}")
    finally:
        client.close()


@contextmanager
def redis_namespace(records_url: str) -> Iterator[str]:
    """The URL of a Redis store under a fresh key prefix, its keys deleted afterwards."""
    import redis

    redis_available()
    prefix = f"t{uuid.uuid4().hex[:12]}"
    separator = "&" if "?" in REDIS_URL else "?"
    try:
        yield f"{REDIS_URL}{separator}prefix={prefix}&records={records_url}"
    finally:
        client = redis.Redis.from_url(REDIS_URL)
        try:
            keys = list(client.scan_iter(match=f"{prefix}:*", count=1000))
            if keys:
                client.delete(*keys)
        finally:
            client.close()


# A store opened on a schema already at the latest revision skips Alembic (which costs
# about 0.1 s on SQLite and 0.25 s on PostgreSQL, for each of about two thousand tests):
# each test's store is a copy of one migrated once per test process. The migrations'
# own tests start from empty schemas.
_TEMPLATE_MARK = "quotad_template_schema"


@functools.cache
def migrated_sqlite_template() -> Path:
    """A SQLite file at the latest revision, made once per test process; copy it."""
    import sqlalchemy as sa

    from quotad.storage.sql import migrate

    directory = Path(tempfile.mkdtemp(prefix="quotad-template-"))
    atexit.register(shutil.rmtree, directory, True)
    path = directory / "template.db"
    engine = sa.create_engine(f"sqlite:///{path}")
    with engine.begin() as connection:
        migrate(connection)
    engine.dispose()
    return path


@functools.cache
def _migrated_schema_script() -> str | None:
    """The DDL of a PostgreSQL schema at the latest revision, with its version row, as
    ``pg_dump`` writes it, the schema's name replaced by ``_TEMPLATE_MARK`` (None without a
    ``pg_dump`` that can read the server)."""
    import psycopg
    import sqlalchemy as sa

    from quotad.storage.sql import migrate

    if shutil.which("pg_dump") is None:
        return None
    template = f"{_TEMPLATE_MARK}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(POSTGRES_URL, autocommit=True, connect_timeout=3) as admin:
        admin.execute(f'CREATE SCHEMA "{template}"')
        try:
            url = sa.make_url(_with_search_path(POSTGRES_URL, template))
            engine = sa.create_engine(url.set(drivername="postgresql+psycopg"))
            with engine.begin() as connection:
                migrate(connection)
            engine.dispose()
            dumped = subprocess.run(
                [
                    "pg_dump",
                    "--dbname",
                    POSTGRES_URL,
                    "--schema",
                    template,
                    "--inserts",
                    "--no-owner",
                    "--no-privileges",
                ],
                capture_output=True,
                text=True,
                check=False,
                timeout=60,
            )
        finally:
            admin.execute(f'DROP SCHEMA "{template}" CASCADE')
    if dumped.returncode != 0:  # an older pg_dump than the server, say
        return None
    lines = [
        line
        for line in dumped.stdout.splitlines()
        # The schema exists already; the session settings would outlive the script; psql's
        # meta-commands (\\restrict) are not SQL.
        if not line.startswith(("CREATE SCHEMA", "SET ", "SELECT pg_catalog.set_config", "\\"))
    ]
    return "\n".join(lines).replace(template, _TEMPLATE_MARK)


def migrated_sqlite_copy(path: Path) -> Path:
    """``path``, made a copy of the migrated template unless a store is there already."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(migrated_sqlite_template(), path)
    return path
