"""One SQL database: its URL, engines, connection settings, transactions and migrations.

On SQLite, writers open their transactions with ``BEGIN IMMEDIATE`` so two processes (a
server and the CLI, say) queue on the file lock instead of failing mid-transaction, and
readers use a second engine so WAL lets them proceed while a write is in progress. On
PostgreSQL one pooled engine serves both.
"""

from __future__ import annotations

import asyncio
import functools
import re
import shlex
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from quotad.errors import Conflict, StorageError, ValidationFailed
from quotad.storage.under_way import UnderWay

MIGRATIONS = Path(__file__).parent.parent / "migrations"

# A server that stops answering (packets dropped, not refused) would hold a connection
# for the kernel's retransmission time, about 15 minutes: these make it fail within
# seconds. The URL's own values win.
_PG_LIVENESS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}
SQLITE_BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for another one
# Every SQLite connection quotad opens, through SQLAlchemy or sqlite3 directly.
SQLITE_PRAGMAS: Sequence[str] = (
    "journal_mode=WAL",
    "synchronous=FULL",  # an acknowledged consume survives a power cut, not only a crash
    "foreign_keys=ON",
    f"busy_timeout={SQLITE_BUSY_TIMEOUT_MS}",
)

# A pooled PostgreSQL connection is checked (a trivial query) before use only once it has
# sat idle this long. One in steady use has just proven itself, and a check is a round
# trip: about 140 µs of this process's CPU through the async engine, a fifth of a batch's.
# A connection the server dropped while idle (a restart, an idle timeout) is replaced
# before anyone's request fails; one dropped within this span of its last use fails the
# one request that finds it (the pool then replaces every connection as old: it takes a
# lost connection as a sign that the server restarted).
PG_IDLE_CHECK_SECONDS = 1.0

# Any constant works; it only has to be the same for every quotad node.
_MIGRATION_LOCK = 0x71756F746164

# Errors that mean "the database cannot serve this now", answered as 503 (or fail-open):
# a lost connection, a refused one, or a pool with no free connection in time.
_UNREACHABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, OSError)

# PostgreSQL's deadlock_detected and serialization_failure: the transaction lost a race
# with another one and may simply be run again.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


# What PostgreSQL says when a connection names a database it does not have (SQLSTATE
# 3D000, which psycopg does not attach to a failed connection).
_NO_DATABASE = re.compile(r'database "(.*)" does not exist')


def _missing_database(url: sa.URL, exc: BaseException) -> StorageError | None:
    """The error for a PostgreSQL database that does not exist, saying how to create it.

    ``url`` is the store's URL as given; it is shown without its password (nor its query,
    which may hold one). ``None`` when ``exc`` is another failure.
    """
    found = _NO_DATABASE.search(str(getattr(exc, "orig", None) or exc))
    if found is None:
        return None
    name = url.database or found.group(1)  # without one in the URL, the user's name
    shown = url.set(query={}).render_as_string(hide_password=True)
    where = [f"-h {url.host or 'localhost'}", f"-p {url.port or 5432}"]
    if url.username:
        where.append(f"-U {url.username}")
    command_line = " ".join(["createdb", *where, shlex.quote(name)])
    return StorageError(
        f'the PostgreSQL database "{name}" does not exist (store {shown}); '
        f"create it with: {command_line}"
    )


_REVISION_LINE = re.compile(r"^(revision|down_revision)\s*=\s*(.+?)\s*$", re.MULTILINE)


@functools.cache
def script_head() -> str | None:
    """The one head revision of the migration scripts, read without importing Alembic
    (``None`` when the scripts are not a plain chain: Alembic decides then)."""
    revisions: set[str] = set()
    parents: set[str] = set()
    for path in (MIGRATIONS / "versions").glob("[0-9]*.py"):
        found = dict(_REVISION_LINE.findall(path.read_text()))
        revision, parent = found.get("revision", ""), found.get("down_revision", "")
        if not re.fullmatch(r"[\"'][\w-]+[\"']", revision):
            return None
        revisions.add(revision[1:-1])
        if parent != "None":
            if not re.fullmatch(r"[\"'][\w-]+[\"']", parent):
                return None
            parents.add(parent[1:-1])
    heads = revisions - parents
    return heads.pop() if len(heads) == 1 else None


def at_head(connection: sa.Connection) -> bool:
    """Whether the schema is already at the scripts' head (so Alembic need not load)."""
    head = script_head()
    if head is None or not sa.inspect(connection).has_table("alembic_version"):
        return False
    current = connection.execute(sa.text("SELECT version_num FROM alembic_version")).scalars()
    return list(current) == [head]


def migrate(connection: sa.Connection, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` on an open synchronous connection.

    A schema already at the head is left alone without importing Alembic, which keeps
    opening a store (every CLI command does) quick.
    """
    if revision == "head" and at_head(connection):
        return
    from alembic import command
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


def _migrate_locked(connection: sa.Connection) -> None:
    # Several nodes may start at once; only one may run the migrations at a time.
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    migrate(connection)


def _lost_a_race(exc: sa.exc.DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def lost_race() -> Conflict:
    """The error of a change that a concurrent change kept from being made."""
    return Conflict("the change conflicts with a concurrent change; retry")


def _unstorable() -> ValidationFailed:
    # PostgreSQL text cannot hold NUL (U+0000); any such id, name or query is bad input.
    return ValidationFailed.at("/", "strings may not contain the NUL character (U+0000)")


def driver_url(url: str) -> sa.URL:
    """``url`` with the async driver quotad uses, checked.

    Raises:
        ValueError: neither SQLite with a file nor PostgreSQL.
    """
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        query = {**_PG_LIVENESS, **parsed.query}
        return parsed.set(drivername="postgresql+psycopg", query=query)
    if backend == "sqlite":
        if not parsed.database or parsed.database == ":memory:":
            msg = (
                "sqlite:// needs a file path, such as sqlite:///./quotad.db (use memory:// instead)"
            )
            raise ValueError(msg)
        return parsed.set(drivername="sqlite+aiosqlite")
    msg = f"unsupported SQL URL scheme {parsed.drivername!r}"
    raise ValueError(msg)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver so SQLAlchemy's "begin" event decides how a
    # transaction starts (BEGIN IMMEDIATE for writers, plain BEGIN for readers).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    for pragma in SQLITE_PRAGMAS:
        cursor.execute(f"PRAGMA {pragma}")
    cursor.close()


def _check_when_idle(engine: AsyncEngine, idle_seconds: float = PG_IDLE_CHECK_SECONDS) -> None:
    """Check a pooled connection on checkout once it was idle ``idle_seconds``: the pool
    replaces one that fails the check (``pool_pre_ping``, for the idle ones only)."""
    dialect = engine.dialect

    def checked_in(_dbapi_connection: Any, record: Any) -> None:
        record.info["quotad_idle_since"] = time.monotonic()

    def checked_out(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        since = record.info.get("quotad_idle_since")
        if since is None or time.monotonic() - since < idle_seconds:
            return  # new, or in use a moment ago
        try:
            dialect.do_ping(dbapi_connection)
        except Exception as exc:
            # As pool_pre_ping does: every connection as old is replaced (the server most
            # likely restarted), this one at once, before its caller uses it.
            raise sa.exc.InvalidatePoolError(str(exc)) from exc

    event.listen(engine.sync_engine, "checkin", checked_in)
    event.listen(engine.sync_engine, "checkout", checked_out)


def _begin_with(statement: str) -> Callable[[sa.Connection], None]:
    def begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(statement)

    return begin


# The write transaction ``Database.atomic`` holds open, with its database and the task
# that holds it: that task's writes and reads of that database go through it. A task
# started meanwhile inherits the variable but not the transaction (one connection is
# never used by two tasks at once).
_HELD: ContextVar[tuple[object, AsyncConnection, asyncio.Task[Any] | None] | None] = ContextVar(
    "quotad_sql_transaction", default=None
)


class Database:
    """The engines of one SQL database, and its transactions.

    Args:
        url: ``sqlite:///path`` or ``postgresql://…``.
        pool_size: PostgreSQL connections kept open (as many again may be opened in bursts).
    """

    def __init__(self, url: str, pool_size: int) -> None:
        self._url = driver_url(url)
        self._given = sa.make_url(url)
        self.sqlite = self._url.get_backend_name() == "sqlite"
        # The SQLite file, for connections made without SQLAlchemy.
        self.file: str | None = self._url.database if self.sqlite else None
        if not self.sqlite:
            # Imported for PostgreSQL only: the dialect costs a SQLite store's commands
            # about 25 ms of start-up.
            from sqlalchemy.dialects import postgresql as pg_dialect
        self.insert = sqlite_dialect.insert if self.sqlite else pg_dialect.insert
        self._pool_size = pool_size
        self.writer: AsyncEngine | None = None
        self.reader: AsyncEngine | None = None
        # PostgreSQL: the writer's pool, its connections in autocommit (``single``).
        self._autocommit: AsyncEngine | None = None
        # Connections in use, and (its batchers count them too) the store's calls queued.
        self.under_way = UnderWay()

    async def open(self) -> None:
        """Create the engines and migrate the schema to the latest revision."""
        if self.sqlite:
            self._open_sqlite()
        else:
            self.writer = self.reader = create_async_engine(
                self._url,
                pool_size=self._pool_size,
                max_overflow=self._pool_size,
                # A burst queues for a connection rather than failing fast.
                pool_timeout=30,
            )
            _check_when_idle(self.writer, PG_IDLE_CHECK_SECONDS)
            self._autocommit = self.writer.execution_options(isolation_level="AUTOCOMMIT")
        # A schema already at the head (every CLI command's store, every node but the first
        # to start) is read as such without taking SQLite's write lock or PostgreSQL's
        # migration lock, so a command does not queue behind a running server's writes.
        async with self.read() as conn:
            current = await conn.run_sync(at_head)
        if current:
            return
        async with self.write() as conn:
            await conn.run_sync(migrate if self.sqlite else _migrate_locked)

    def _open_sqlite(self) -> None:
        if self.file:
            # Once at start-up, before any request: blocking here is harmless.
            Path(self.file).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self.writer = create_async_engine(self._url, pool_size=1, max_overflow=0)
        self.reader = create_async_engine(self._url, pool_size=4, max_overflow=4)
        for engine, begin in ((self.writer, "BEGIN IMMEDIATE"), (self.reader, "BEGIN")):
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(engine.sync_engine, "begin", _begin_with(begin))

    async def close(self) -> None:
        """Let the calls under way finish (``UnderWay.settled``), then dispose of the
        engines (one on PostgreSQL, two on SQLite)."""
        await self.under_way.settled()
        engines = {id(e): e for e in (self.writer, self.reader) if e is not None}
        for engine in engines.values():
            await engine.dispose()
        self.writer = self.reader = self._autocommit = None

    @property
    def free(self) -> bool:
        """Whether this task is outside ``atomic``: a write of its own can be rolled back."""
        return self._held() is None

    def _held(self) -> AsyncConnection | None:
        """The transaction ``atomic`` holds open for this task, if any."""
        held = _HELD.get()
        if held is None or held[0] is not self or held[2] is not asyncio.current_task():
            return None
        return held[1]

    @asynccontextmanager
    async def atomic(self) -> AsyncIterator[None]:
        """One write transaction for every write (and read) the task makes inside it.

        So several writes, a change and its audit entry say, are kept or lost together.
        """
        if self._held() is not None:
            yield  # already inside one: the outer transaction decides
            return
        async with self.write() as conn:
            token = _HELD.set((self, conn, asyncio.current_task()))
            try:
                yield
            finally:
                _HELD.reset(token)

    @asynccontextmanager
    async def write(self) -> AsyncIterator[AsyncConnection]:
        """A write transaction, committed on leaving; driver errors become quotad's.

        Inside ``atomic``, the transaction it holds (committed when it ends).
        """
        held = self._held()
        if self.writer is None:
            raise StorageError("store is not open")
        async with self._write_errors():
            if held is not None:
                yield held
                return
            under_way = self.under_way
            under_way.begin()
            try:
                async with self.writer.begin() as conn:
                    yield conn
            finally:
                under_way.end()

    @asynccontextmanager
    async def single(self) -> AsyncIterator[AsyncConnection]:
        """A connection whose write statements each commit on their own, atomically; driver
        errors become quotad's.

        On PostgreSQL, autocommit: a statement is one round trip, where a transaction
        costs three (BEGIN, the statement, COMMIT). Elsewhere, and inside ``atomic``, a
        write transaction (``write``).
        """
        if self._autocommit is None or self._held() is not None:
            async with self.write() as conn:
                yield conn
            return
        under_way = self.under_way
        under_way.begin()
        try:
            async with self._write_errors(), self._autocommit.connect() as conn:
                yield conn
        finally:
            under_way.end()

    @asynccontextmanager
    async def _write_errors(self) -> AsyncIterator[None]:
        """Driver errors of a write as quotad's."""
        try:
            yield
        except sa.exc.IntegrityError as exc:
            # A concurrent change won a race the checks above could not see (a plan
            # deleted while an account was created on it, say).
            raise lost_race() from exc
        except sa.exc.DataError as exc:
            raise _unstorable() from exc
        except sa.exc.OperationalError as exc:
            if _lost_a_race(exc):
                raise lost_race() from exc
            raise await self._diagnosed(exc, "write") from exc
        except _UNREACHABLE as exc:
            raise await self._diagnosed(exc, "write") from exc

    @asynccontextmanager
    async def read(self) -> AsyncIterator[AsyncConnection]:
        """A connection for reading; driver errors become quotad's.

        Inside ``atomic``, its transaction: a read sees the writes made before it there.
        """
        held = self._held()
        if held is not None:
            yield held
            return
        if self.reader is None:
            raise StorageError("store is not open")
        under_way = self.under_way
        under_way.begin()
        try:
            async with self.reader.connect() as conn:
                yield conn
        except sa.exc.DataError as exc:
            raise _unstorable() from exc
        except _UNREACHABLE as exc:
            raise await self._diagnosed(exc, "read") from exc
        finally:
            under_way.end()

    async def _diagnosed(self, exc: BaseException, what: str) -> StorageError:
        """``_failure``, but for a connection the server ended while it sat in the pool (a
        restart, a dropped database: connections in steady use are not checked before
        use) after one fresh connection, whose own failure says more."""
        if self.sqlite or self.reader is None or not getattr(exc, "connection_invalidated", False):
            return self._failure(exc, what)
        try:
            async with self.reader.connect() as conn:
                await conn.execute(sa.text("SELECT 1"))
        except _UNREACHABLE as again:
            return self._failure(again, what)
        return self._failure(exc, what)

    def _failure(self, exc: BaseException, what: str) -> StorageError:
        """quotad's error for a driver failure: a missing database named, else generic."""
        if not self.sqlite:
            missing = _missing_database(self._given, exc)
            if missing is not None:
                return missing
        return StorageError(f"the database could not complete the {what}")

    @asynccontextmanager
    async def snapshot(self) -> AsyncIterator[AsyncConnection]:
        """A read-only transaction whose reads all see one instant (for ``dump``).

        PostgreSQL runs it at REPEATABLE READ; SQLite's read transaction (WAL) sees the
        database as of its first read anyway.
        """
        async with self.read() as conn:
            if not self.sqlite:
                await conn.execution_options(isolation_level="REPEATABLE READ")
            async with conn.begin():
                if not self.sqlite:
                    await conn.execute(sa.text("SET TRANSACTION READ ONLY"))
                yield conn

    async def ping(self) -> None:
        """Run a trivial query."""
        async with self.read() as conn:
            await conn.execute(sa.text("SELECT 1"))
