"""The SQL store (SQLAlchemy Core) for SQLite and PostgreSQL.

Atomicity comes from the database, not from Python: ``consume`` is one conditional
upsert (``ON CONFLICT … DO UPDATE … WHERE used + cost <= total RETURNING used``), and
every multi-statement step runs in one transaction. On SQLite, writers open their
transactions with ``BEGIN IMMEDIATE`` so two processes (a server and the CLI, say)
queue on the file lock instead of failing mid-transaction, and readers use a second
engine so WAL lets them proceed while a write is in progress. On PostgreSQL one pooled
engine serves both; row locks taken by the upserts serialise concurrent consumes of the
same day, under READ COMMITTED, across any number of quotad nodes.

Consumes are group-committed (``batch=True``, the default): concurrent consumes of one
process run in one transaction with one commit (one fsync), and each caller is answered
after that commit. Inside it, the batch's day rows are read under the write lock (SQLite)
or ``FOR UPDATE`` (PostgreSQL), decided in arrival order, and written back in one
statement, so a batch costs the same few statements whatever its size.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager, suppress
from datetime import UTC, date, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
import structlog
from alembic import command
from alembic.config import Config
from sqlalchemy import event
from sqlalchemy.dialects import postgresql as pg_dialect
from sqlalchemy.dialects import sqlite as sqlite_dialect
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine, create_async_engine

from quotad.domain.models import (
    Account,
    AccountStatus,
    ApiKey,
    ConsumeOutcome,
    EventsOutcome,
    IdempotencyClaim,
    Limit,
    Overrides,
    Plan,
    Quota,
    Service,
    TotalChange,
    UsageDay,
    UsageEvent,
    effective_totals,
)
from quotad.errors import Conflict, NotFound, QuotadError, StorageError, ValidationFailed
from quotad.storage.batching import Batcher
from quotad.storage.day_batches import Consume, SqliteDayWriter, decide, first_totals
from quotad.storage.schema import (
    accounts,
    api_keys,
    counter_nodes,
    dashboard_sessions,
    gauges,
    idempotency,
    plans,
    services,
    settings,
    total_changes,
    usage_days,
    usage_events,
)
from quotad.storage.write_behind import Changes, StoredClaim

MIGRATIONS = Path(__file__).with_name("migrations")
log = structlog.get_logger("quotad.storage.sql")
_IN_BATCH = 500  # ids per IN (…) list, well under SQLite's bound on parameters


def to_micros(instant: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch."""
    delta = instant.astimezone(UTC) - datetime(1970, 1, 1, tzinfo=UTC)
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    """Integer microseconds since the epoch as an aware UTC datetime."""
    seconds, micros = divmod(value, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def _opt_micros(instant: datetime | None) -> int | None:
    return None if instant is None else to_micros(instant)


def _opt_dt(value: int | None) -> datetime | None:
    return None if value is None else from_micros(value)


def migrate(connection: sa.Connection, revision: str = "head") -> None:
    """Run the migrations up to ``revision`` on an open synchronous connection."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    config.attributes["connection"] = connection
    command.upgrade(config, revision)


# Any constant works; it only has to be the same for every quotad node.
_MIGRATION_LOCK = 0x71756F746164


def _migrate_locked(connection: sa.Connection) -> None:
    # Several nodes may start at once; only one may run the migrations at a time.
    connection.execute(sa.text("SELECT pg_advisory_xact_lock(:key)"), {"key": _MIGRATION_LOCK})
    migrate(connection)


# Errors that mean "the database cannot serve this now", answered as 503 (or fail-open):
# a lost connection, a refused one, or a pool with no free connection in time.
_UNREACHABLE = (sa.exc.OperationalError, sa.exc.InterfaceError, sa.exc.TimeoutError, OSError)


# PostgreSQL's deadlock_detected and serialization_failure: the transaction lost a race
# with another one and may simply be run again.
_RETRYABLE_SQLSTATES = frozenset({"40P01", "40001"})


def _lost_a_race(exc: sa.exc.DBAPIError) -> bool:
    return getattr(exc.orig, "sqlstate", None) in _RETRYABLE_SQLSTATES


def _unstorable() -> ValidationFailed:
    # PostgreSQL text cannot hold NUL (U+0000); any such id, name or query is bad input.
    return ValidationFailed.at("/", "strings may not contain the NUL character (U+0000)")


def _driver_url(url: str) -> sa.URL:
    parsed = sa.make_url(url)
    backend = parsed.get_backend_name()
    if backend in ("postgresql", "postgres"):
        # A server that stops answering (packets dropped, not refused) would hold a
        # connection for the kernel's retransmission time, about 15 minutes: these make
        # it fail within seconds. The URL's own values win.
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


_PG_LIVENESS = {
    "connect_timeout": "5",
    "keepalives": "1",
    "keepalives_idle": "5",
    "keepalives_interval": "2",
    "keepalives_count": "3",
    "tcp_user_timeout": "10000",
}
SQLITE_BUSY_TIMEOUT_MS = 10_000  # how long a writer waits for another one


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    # Autocommit at the driver so SQLAlchemy's "begin" event decides how a
    # transaction starts (BEGIN IMMEDIATE for writers, plain BEGIN for readers).
    dbapi_connection.isolation_level = None
    cursor = dbapi_connection.cursor()
    cursor.execute("PRAGMA journal_mode=WAL")
    # FULL: an acknowledged consume survives a power cut, not only a crash.
    cursor.execute("PRAGMA synchronous=FULL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute(f"PRAGMA busy_timeout={SQLITE_BUSY_TIMEOUT_MS}")
    cursor.close()


def _begin_with(statement: str) -> Callable[[sa.Connection], None]:
    def begin(conn: sa.Connection) -> None:
        conn.exec_driver_sql(statement)

    return begin


_DAY_KEY = (usage_days.c.account_id, usage_days.c.service, usage_days.c.day)


class SqlStore:
    """Records and counters in one SQL database.

    Args:
        url: ``sqlite:///path`` or ``postgresql://…``.
        pool_size: PostgreSQL connections kept open (as many again may be opened in bursts).
        batch: group-commit concurrent consumes; ``False`` runs one transaction per consume.
    """

    def __init__(self, url: str, pool_size: int = 10, *, batch: bool = True) -> None:
        self.url = url
        self._driver_url = _driver_url(url)
        self._sqlite = self._driver_url.get_backend_name() == "sqlite"
        self._pool_size = pool_size
        self._writer: AsyncEngine | None = None
        self._reader: AsyncEngine | None = None
        self._insert = sqlite_dialect.insert if self._sqlite else pg_dialect.insert
        # The batch's three statements, built once: building them (``excluded`` above
        # all) costs more than running them through SQLAlchemy's compiled cache.
        self._create_days = self._insert(usage_days).on_conflict_do_nothing()
        read_days = (
            sa.select(*_DAY_KEY, usage_days.c.used, usage_days.c.total, usage_days.c.rejected)
            .where(sa.tuple_(*_DAY_KEY).in_(sa.bindparam("keys", expanding=True)))
            .order_by(*_DAY_KEY)
        )
        self._read_days = read_days if self._sqlite else read_days.with_for_update()
        write_days = self._insert(usage_days)
        self._write_days = write_days.on_conflict_do_update(
            index_elements=["account_id", "service", "day"],
            set_={
                "used": write_days.excluded.used,
                "total": write_days.excluded.total,
                "rejected": write_days.excluded.rejected,
            },
        )
        add_days = self._insert(usage_days)
        added = usage_days.c.used + sa.bindparam("d_used")
        self._add_days = add_days.on_conflict_do_update(
            index_elements=["account_id", "service", "day"],
            set_={
                "used": sa.case((added < 0, 0), else_=added),
                "rejected": usage_days.c.rejected + sa.bindparam("d_rejected"),
                "total": add_days.excluded.total,
            },
        )
        put_claims = self._insert(idempotency)
        self._put_claims = put_claims.on_conflict_do_update(
            index_elements=["account_id", "key"],
            set_={
                name: put_claims.excluded[name]
                for name in ("fingerprint", "expires_at", "granted", "used", "total", "day")
            },
        )
        self._batcher: Batcher[Consume, ConsumeOutcome] | None = (
            Batcher(self._consume_batch, abandoned=self._abandoned) if batch else None
        )
        self._refunds: set[asyncio.Task[None]] = set()
        self._days: SqliteDayWriter | None = None  # SQLite's batches, on a thread of their own
        self._key_records = (
            sa.select(api_keys, accounts, plans)
            .join_from(api_keys, accounts, api_keys.c.account_id == accounts.c.id)
            .join(plans, accounts.c.plan_id == plans.c.id)
            .where(api_keys.c.digest.in_(sa.bindparam("digests", expanding=True)))
        )
        self._key_lookups: Batcher[str, tuple[ApiKey, Account, Plan] | None] = Batcher(
            self._find_key_records
        )

    async def open(self) -> None:
        """Create the engines and migrate the schema to the latest revision."""
        if self._sqlite:
            self._open_sqlite()
        else:
            self._writer = self._reader = create_async_engine(
                self._driver_url,
                pool_size=self._pool_size,
                max_overflow=self._pool_size,
                # A burst queues for a connection rather than failing fast.
                pool_timeout=30,
                # After a database restart, pooled connections are dead; checking each
                # one on checkout costs a local round trip and spares a failed request.
                pool_pre_ping=True,
            )
        async with self._write() as conn:
            await conn.run_sync(migrate if self._sqlite else _migrate_locked)
        if self._days is not None:
            self._days.start()

    def _open_sqlite(self) -> None:
        database = self._driver_url.database
        if database:
            # Once at start-up, before any request: blocking here is harmless.
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        self._writer = create_async_engine(self._driver_url, pool_size=1, max_overflow=0)
        if self._batcher is not None and database:
            self._days = SqliteDayWriter(database, SQLITE_BUSY_TIMEOUT_MS)
        self._reader = create_async_engine(self._driver_url, pool_size=4, max_overflow=4)
        for engine, begin in ((self._writer, "BEGIN IMMEDIATE"), (self._reader, "BEGIN")):
            event.listen(engine.sync_engine, "connect", _sqlite_pragmas)
            event.listen(engine.sync_engine, "begin", _begin_with(begin))

    async def close(self) -> None:
        """Dispose of the engines (one on PostgreSQL, two on SQLite)."""
        for task in list(self._refunds):
            with suppress(Exception):
                await task
        if self._days is not None:
            await self._days.close()
            self._days = None
        engines = {id(e): e for e in (self._writer, self._reader) if e is not None}
        for engine in engines.values():
            await engine.dispose()
        self._writer = self._reader = None

    @asynccontextmanager
    async def _write(self) -> AsyncIterator[AsyncConnection]:
        if self._writer is None:
            raise StorageError("store is not open")
        try:
            async with self._writer.begin() as conn:
                yield conn
        except sa.exc.IntegrityError as exc:
            # A concurrent change won a race the checks above could not see (a plan
            # deleted while an account was created on it, say).
            raise Conflict("the change conflicts with a concurrent change; retry") from exc
        except sa.exc.DataError as exc:
            raise _unstorable() from exc
        except sa.exc.OperationalError as exc:
            if _lost_a_race(exc):
                raise Conflict("the change conflicts with a concurrent change; retry") from exc
            raise StorageError("the database could not complete the write") from exc
        except _UNREACHABLE as exc:
            raise StorageError("the database could not complete the write") from exc

    @asynccontextmanager
    async def _read(self) -> AsyncIterator[AsyncConnection]:
        if self._reader is None:
            raise StorageError("store is not open")
        try:
            async with self._reader.connect() as conn:
                yield conn
        except sa.exc.DataError as exc:
            raise _unstorable() from exc
        except _UNREACHABLE as exc:
            raise StorageError("the database could not complete the read") from exc

    async def ping(self) -> None:
        """Run a trivial query."""
        async with self._read() as conn:
            await conn.execute(sa.text("SELECT 1"))

    # Settings ---------------------------------------------------------------
    async def get_setting(self, name: str) -> str | None:
        """A stored setting."""
        async with self._read() as conn:
            value = await conn.scalar(sa.select(settings.c.value).where(settings.c.name == name))
        return None if value is None else str(value)

    async def put_setting(self, name: str, value: str) -> None:
        """Store or replace a setting."""
        stmt = self._insert(settings).values(name=name, value=value)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"value": value})
        async with self._write() as conn:
            await conn.execute(stmt)

    # Services ---------------------------------------------------------------
    async def create_service(self, service: Service) -> None:
        """Register a service."""
        stmt = self._insert(services).values(
            name=service.name,
            description=service.description,
            created_at=to_micros(service.created_at),
        )
        async with self._write() as conn:
            if not await _affects_a_row(conn, stmt.on_conflict_do_nothing()):
                raise Conflict(f"service {service.name!r} already exists")

    async def get_service(self, name: str) -> Service | None:
        """The named service."""
        async with self._read() as conn:
            row = (await conn.execute(services.select().where(services.c.name == name))).first()
        return None if row is None else _service(row)

    async def list_services(self) -> list[Service]:
        """Every service by name."""
        async with self._read() as conn:
            rows = await conn.execute(services.select().order_by(services.c.name))
            return [_service(row) for row in rows]

    # Plans ------------------------------------------------------------------
    async def create_plan(self, plan: Plan) -> None:
        """Add a plan."""
        stmt = self._insert(plans).values(**_plan_values(plan)).on_conflict_do_nothing()
        async with self._write() as conn:
            if not await _affects_a_row(conn, stmt):
                raise Conflict(f"plan {plan.id!r} already exists")

    async def get_plan(self, plan_id: str) -> Plan | None:
        """The plan with this id."""
        async with self._read() as conn:
            row = (await conn.execute(plans.select().where(plans.c.id == plan_id))).first()
        return None if row is None else _plan(row)

    async def list_plans(self, limit: int, after: str | None) -> list[Plan]:
        """A page of plans."""
        query = plans.select().order_by(plans.c.id).limit(limit)
        if after is not None:
            query = query.where(plans.c.id > after)
        async with self._read() as conn:
            return [_plan(row) for row in await conn.execute(query)]

    async def replace_plan(self, plan: Plan) -> None:
        """Replace a plan's content, keeping its creation time."""
        values = _plan_values(plan)
        del values["id"], values["created_at"]
        stmt = plans.update().where(plans.c.id == plan.id).values(**values)
        async with self._write() as conn:
            if not await _affects_a_row(conn, stmt):
                raise NotFound(f"plan {plan.id!r} not found")

    async def delete_plan(self, plan_id: str) -> None:
        """Delete a plan no account uses."""
        in_use = sa.exists().where(accounts.c.plan_id == plan_id)
        async with self._write() as conn:
            if await conn.scalar(sa.select(in_use)):
                raise Conflict(f"plan {plan_id!r} is used by accounts")
            if not await _affects_a_row(conn, plans.delete().where(plans.c.id == plan_id)):
                raise NotFound(f"plan {plan_id!r} not found")

    # Accounts ---------------------------------------------------------------
    async def create_account(self, account: Account) -> None:
        """Add an account."""
        stmt = self._insert(accounts).values(**_account_values(account)).on_conflict_do_nothing()
        async with self._write() as conn:
            await self._require_plan(conn, account.plan_id)
            if not await _affects_a_row(conn, stmt):
                raise Conflict(f"account {account.id!r} already exists")

    async def _require_plan(self, conn: AsyncConnection, plan_id: str) -> None:
        if await conn.scalar(sa.select(plans.c.id).where(plans.c.id == plan_id)) is None:
            raise NotFound(f"plan {plan_id!r} not found")

    async def get_account(self, account_id: str) -> Account | None:
        """The account with this id."""
        async with self._read() as conn:
            query = accounts.select().where(accounts.c.id == account_id)
            row = (await conn.execute(query)).first()
        return None if row is None else _account(row)

    async def list_accounts(
        self, limit: int, after: str | None, search: str | None = None
    ) -> list[Account]:
        """A page of accounts, optionally matching ``search`` in id or name."""
        query = accounts.select().order_by(accounts.c.id).limit(limit)
        if after is not None:
            query = query.where(accounts.c.id > after)
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern += "%"
            query = query.where(
                sa.or_(
                    accounts.c.id.ilike(pattern, escape="\\"),
                    accounts.c.name.ilike(pattern, escape="\\"),
                )
            )
        async with self._read() as conn:
            return [_account(row) for row in await conn.execute(query)]

    async def update_account(self, account: Account) -> None:
        """Replace an account's mutable fields."""
        values = _account_values(account)
        del values["id"], values["created_at"]
        stmt = accounts.update().where(accounts.c.id == account.id).values(**values)
        async with self._write() as conn:
            await self._require_plan(conn, account.plan_id)
            if not await _affects_a_row(conn, stmt):
                raise NotFound(f"account {account.id!r} not found")

    async def delete_account(self, account_id: str) -> None:
        """Delete an account; its keys, usage, gauges and idempotency records cascade."""
        async with self._write() as conn:
            stmt = accounts.delete().where(accounts.c.id == account_id)
            if not await _affects_a_row(conn, stmt):
                raise NotFound(f"account {account_id!r} not found")

    # Keys -------------------------------------------------------------------
    async def create_key(self, key: ApiKey) -> None:
        """Store a key record."""
        async with self._write() as conn:
            await self._insert_key(conn, key)

    async def _insert_key(self, conn: AsyncConnection, key: ApiKey) -> None:
        exists = sa.select(accounts.c.id).where(accounts.c.id == key.account_id)
        if await conn.scalar(exists) is None:
            raise NotFound(f"account {key.account_id!r} not found")
        stmt = self._insert(api_keys).values(**_key_values(key)).on_conflict_do_nothing()
        if not await _affects_a_row(conn, stmt):
            raise Conflict("key already exists")

    async def get_key(self, key_id: str) -> ApiKey | None:
        """The key record with this id."""
        return await self._one_key(api_keys.c.id == key_id)

    async def find_key(self, digest: str) -> ApiKey | None:
        """The key record with this digest."""
        return await self._one_key(api_keys.c.digest == digest)

    async def find_key_records(self, digest: str) -> tuple[ApiKey, Account, Plan] | None:
        """The key with this digest, its account and the account's plan: one query, shared
        by the lookups asked for at the same time (a node's keys, after an idle spell)."""
        return await self._key_lookups.submit(digest)

    async def _find_key_records(
        self, digests: list[str]
    ) -> list[tuple[ApiKey, Account, Plan] | Exception | None]:
        async with self._read() as conn:
            rows = await conn.execute(self._key_records, {"digests": sorted(set(digests))})
            found = {
                row.digest: (
                    _key(_columns(row, api_keys)),
                    _account(_columns(row, accounts)),
                    _plan(_columns(row, plans)),
                )
                for row in rows
            }
        return [found.get(digest) for digest in digests]

    async def _one_key(self, where: sa.ColumnElement[bool]) -> ApiKey | None:
        async with self._read() as conn:
            row = (await conn.execute(api_keys.select().where(where))).first()
        return None if row is None else _key(row)

    async def list_keys(self, account_id: str) -> list[ApiKey]:
        """An account's keys, oldest first."""
        query = (
            api_keys.select()
            .where(api_keys.c.account_id == account_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        async with self._read() as conn:
            return [_key(row) for row in await conn.execute(query)]

    async def revoke_key(self, key_id: str, at: datetime) -> ApiKey:
        """Revoke a key from ``at`` unless it already was earlier."""
        when = to_micros(at)
        async with self._write() as conn:
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id)
                .where(sa.or_(api_keys.c.revoked_at.is_(None), api_keys.c.revoked_at > when))
                .values(revoked_at=when)
            )
            row = (await conn.execute(api_keys.select().where(api_keys.c.id == key_id))).first()
        if row is None:
            raise NotFound(f"key {key_id!r} not found")
        return _key(row)

    async def rotate_key(self, key_id: str, new_key: ApiKey, old_valid_until: datetime) -> None:
        """Store the new key and shorten the old one's life, in one transaction."""
        until = to_micros(old_valid_until)
        async with self._write() as conn:
            old = (await conn.execute(api_keys.select().where(api_keys.c.id == key_id))).first()
            if old is None:
                raise NotFound(f"key {key_id!r} not found")
            await self._insert_key(conn, new_key)
            expires = until if old.expires_at is None else min(old.expires_at, until)
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id)
                .values(expires_at=expires, replaced_by=new_key.id)
            )

    # Usage ------------------------------------------------------------------
    async def consume(
        self,
        account_id: str,
        service: str,
        day: date,
        cost: int,
        total: int,
        claim: IdempotencyClaim | None = None,
        now: datetime | None = None,
    ) -> ConsumeOutcome:
        """Add ``cost`` within ``total``: group-committed, or one conditional upsert alone."""
        request = Consume(account_id, service, day, cost, total, claim, now)
        if self._batcher is not None:
            return await self._batcher.submit(request)
        async with self._write() as conn:
            return await self._consume_one(conn, request)

    def _abandoned(self, request: Consume, outcome: ConsumeOutcome) -> None:
        """Give back a grant committed after its caller stopped waiting (it was told 503)."""
        if outcome.granted and not outcome.replayed:
            task = asyncio.get_running_loop().create_task(self._refund(request))
            self._refunds.add(task)
            task.add_done_callback(self._refunds.discard)

    async def _refund(self, request: Consume) -> None:
        where = sa.and_(
            usage_days.c.account_id == request.account_id,
            usage_days.c.service == request.service,
            usage_days.c.day == request.day.isoformat(),
        )
        less = usage_days.c.used - request.cost
        for attempt in range(8):
            try:
                async with self._write() as conn:
                    await conn.execute(
                        usage_days.update()
                        .where(where)
                        .values(used=sa.case((less < 0, 0), else_=less))
                    )
                    if request.claim is not None:  # a retry of the call is decided afresh
                        await conn.execute(
                            idempotency.delete()
                            .where(idempotency.c.account_id == request.account_id)
                            .where(idempotency.c.key == request.claim.key)
                            .where(idempotency.c.fingerprint == request.claim.fingerprint)
                        )
            except StorageError:
                await asyncio.sleep(min(0.25 * 2**attempt, 10))
            else:
                return
        log.error(
            "could not give back a grant whose caller was answered 503",
            account_id=request.account_id,
        )

    async def _consume_batch(self, batch: list[Consume]) -> list[ConsumeOutcome | Exception]:
        try:
            if self._days is not None and all(request.claim is None for request in batch):
                return list(await self._days.consume(batch))
            async with self._write() as conn:
                return await self._consume_together(conn, batch)
        except StorageError:
            raise
        except QuotadError:
            if len(batch) == 1:
                raise
        # The database refused the batch (bad input in one request, or a lost race):
        # nothing of it was committed, so run each request alone to give each its answer.
        answers: list[ConsumeOutcome | Exception] = []
        for request in batch:
            try:
                async with self._write() as conn:
                    answers.append(await self._consume_one(conn, request))
            except StorageError:
                raise
            except QuotadError as exc:
                answers.append(exc)
        return answers

    async def _consume_together(
        self, conn: AsyncConnection, batch: list[Consume]
    ) -> list[ConsumeOutcome | Exception]:
        answers: list[ConsumeOutcome | Exception | None] = [None] * len(batch)
        plain: list[int] = []
        for index, request in enumerate(batch):
            if request.claim is None:
                plain.append(index)
                continue
            # In arrival order and one by one: a retry in the same batch must see the
            # answer its first attempt stored.
            try:
                answers[index] = await self._consume_one(conn, request)
            except Conflict as exc:  # a reused Idempotency-Key; it changed nothing
                answers[index] = exc
        if plain:
            outcomes = await self._consume_counted(conn, [batch[i] for i in plain])
            for index, outcome in zip(plain, outcomes, strict=True):
                answers[index] = outcome
        return [answer for answer in answers if answer is not None]

    async def _consume_counted(
        self, conn: AsyncConnection, batch: list[Consume]
    ) -> list[ConsumeOutcome]:
        """Decide many consumes with three statements: create, lock and read, write back."""
        totals = first_totals(batch)
        if not self._sqlite:
            # Create missing rows first, so FOR UPDATE below locks every row of the batch
            # (SQLite needs none of this: BEGIN IMMEDIATE already holds the write lock).
            await conn.execute(
                self._create_days,
                [
                    {"account_id": a, "service": s, "day": d, "used": 0, "total": t, "rejected": 0}
                    for (a, s, d), t in totals.items()
                ],
            )
        rows = {
            (row.account_id, row.service, row.day): [
                int(row.used),
                int(row.total),
                int(row.rejected),
            ]
            for row in await conn.execute(self._read_days, {"keys": list(totals)})
        }
        outcomes = decide(batch, rows)
        await conn.execute(
            self._write_days,
            [
                {"account_id": a, "service": s, "day": d, "used": u, "total": t, "rejected": r}
                for (a, s, d), (u, t, r) in rows.items()
            ],
        )
        return outcomes

    async def _consume_one(self, conn: AsyncConnection, request: Consume) -> ConsumeOutcome:
        """One consume in one conditional upsert (with its claim, when it has one)."""
        account_id, service, cost, total = (
            request.account_id,
            request.service,
            request.cost,
            request.total,
        )
        day, claim = request.day, request.claim
        day_text = day.isoformat()
        if claim is not None:
            replayed = await self._claim(conn, account_id, claim, request.now)
            if replayed is not None:
                return replayed
        used: int | None = None
        if cost <= total:
            stmt = self._insert(usage_days).values(
                account_id=account_id,
                service=service,
                day=day_text,
                used=cost,
                total=total,
                rejected=0,
            )
            stmt = stmt.on_conflict_do_update(
                index_elements=["account_id", "service", "day"],
                set_={"used": usage_days.c.used + cost, "total": total},
                where=usage_days.c.used + cost <= total,
            )
            used = await conn.scalar(stmt.returning(usage_days.c.used))
        granted = used is not None
        if used is None:
            refusal = self._insert(usage_days).values(
                account_id=account_id,
                service=service,
                day=day_text,
                used=0,
                total=total,
                rejected=1,
            )
            refusal = refusal.on_conflict_do_update(
                index_elements=["account_id", "service", "day"],
                set_={"rejected": usage_days.c.rejected + 1, "total": total},
            )
            used = await conn.scalar(refusal.returning(usage_days.c.used))
        outcome = ConsumeOutcome(granted, int(used or 0), total, day)
        if claim is not None:
            await conn.execute(
                idempotency.update()
                .where(idempotency.c.account_id == account_id)
                .where(idempotency.c.key == claim.key)
                .values(granted=granted, used=outcome.used, total=total, day=day_text)
            )
        return outcome

    async def _claim(
        self,
        conn: AsyncConnection,
        account_id: str,
        claim: IdempotencyClaim,
        now: datetime | None,
    ) -> ConsumeOutcome | None:
        """Take the claim (``None``), or return the outcome of the request that took it."""
        values = {
            "account_id": account_id,
            "key": claim.key,
            "fingerprint": claim.fingerprint,
            "expires_at": to_micros(claim.expires_at),
        }
        claim_stmt = self._insert(idempotency).values(**values).on_conflict_do_nothing()
        if await _affects_a_row(conn, claim_stmt):
            return None
        where = sa.and_(idempotency.c.account_id == account_id, idempotency.c.key == claim.key)
        row = (await conn.execute(idempotency.select().where(where))).one()
        if now is not None and row.expires_at <= to_micros(now):
            await conn.execute(
                idempotency.update()
                .where(where)
                .values(granted=None, used=None, total=None, day=None, **values)
            )
            return None
        if row.fingerprint != claim.fingerprint:
            raise Conflict("Idempotency-Key was used with a different request")
        return ConsumeOutcome(
            bool(row.granted), int(row.used), int(row.total), date.fromisoformat(row.day), True
        )

    async def adjust(
        self, account_id: str, service: str, day: date, delta: int, total: int
    ) -> UsageDay:
        """Add ``delta`` to a day, flooring at zero."""
        stmt = self._insert(usage_days).values(
            account_id=account_id,
            service=service,
            day=day.isoformat(),
            used=max(delta, 0),
            total=total,
            rejected=0,
        )
        new_used = sa.case((usage_days.c.used + delta < 0, 0), else_=usage_days.c.used + delta)
        upsert = stmt.on_conflict_do_update(
            index_elements=["account_id", "service", "day"], set_={"used": new_used}
        ).returning(usage_days)
        async with self._write() as conn:
            row = (await conn.execute(upsert)).one()
        return _usage_day(row)

    async def record_events(self, events: list[UsageEvent]) -> EventsOutcome:
        """Add unseen events to their days, in one transaction."""
        accepted = await self.record_new_events(events)
        return EventsOutcome(len(accepted), len(events) - len(accepted))

    async def record_new_events(self, events: list[UsageEvent]) -> list[UsageEvent]:
        """Add unseen events to their days, in one transaction; the events that were new."""
        accepted = []
        async with self._write() as conn:
            for item in events:
                new = await _affects_a_row(
                    conn,
                    self._insert(usage_events)
                    .values(
                        id=item.id,
                        account_id=item.account_id,
                        recorded_at=to_micros(item.timestamp),
                    )
                    .on_conflict_do_nothing(),
                )
                if not new:
                    continue
                accepted.append(item)
                stmt = self._insert(usage_days).values(
                    account_id=item.account_id,
                    service=item.service,
                    day=item.day.isoformat(),
                    used=item.amount,
                    total=item.total,
                    rejected=0,
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["account_id", "service", "day"],
                        set_={"used": usage_days.c.used + item.amount},
                    )
                )
        return accepted

    async def put_usage_days(self, account_id: str, rows: list[tuple[str, UsageDay]]) -> None:
        """Store days' absolute values (the write-behind of a counter store)."""
        if not rows:
            return
        async with self._write() as conn:
            for service, row in rows:
                stmt = self._insert(usage_days).values(
                    account_id=account_id,
                    service=service,
                    day=row.day.isoformat(),
                    used=row.used,
                    total=row.total,
                    rejected=row.rejected,
                )
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["account_id", "service", "day"],
                        set_={"used": row.used, "total": row.total, "rejected": row.rejected},
                    )
                )

    async def usage(self, account_id: str, service: str, start: date, end: date) -> list[UsageDay]:
        """Stored days in a range, ascending."""
        query = (
            usage_days.select()
            .where(usage_days.c.account_id == account_id)
            .where(usage_days.c.service == service)
            .where(usage_days.c.day.between(start.isoformat(), end.isoformat()))
            .order_by(usage_days.c.day)
        )
        async with self._read() as conn:
            return [_usage_day(row) for row in await conn.execute(query)]

    async def export_usage(self) -> AsyncIterator[tuple[str, str, UsageDay]]:
        """Every stored day, streamed in primary-key order."""
        query = usage_days.select().order_by(
            usage_days.c.account_id, usage_days.c.service, usage_days.c.day
        )
        async with self._read() as conn:
            result = await conn.stream(query)
            async for row in result:
                yield row.account_id, row.service, _usage_day(row)

    async def purge(self, now: datetime, events_before: datetime) -> None:
        """Delete expired idempotency answers and event ids older than the retention."""
        async with self._write() as conn:
            await conn.execute(
                idempotency.delete().where(idempotency.c.expires_at <= to_micros(now))
            )
            await conn.execute(
                usage_events.delete().where(usage_events.c.recorded_at < to_micros(events_before))
            )

    # Write-behind of a counter store (see storage/write_behind.py) -----------
    async def apply_counter_changes(
        self, node_id: str, seq: int, changes: Changes, now: datetime
    ) -> None:
        """Add a node's flush ``seq`` to the days and claims, once, in one transaction.

        A flush already applied (its commit went unanswered, and the node sent it again)
        only refreshes the node's heartbeat. Changes of accounts deleted meanwhile are
        dropped.
        """
        beat = to_micros(now)
        where = counter_nodes.c.node_id == node_id
        async with self._write() as conn:
            applied = await conn.scalar(sa.select(counter_nodes.c.seq).where(where))
            if applied is None:
                await conn.execute(
                    counter_nodes.insert().values(node_id=node_id, seq=seq, heartbeat_at=beat)
                )
            else:
                await conn.execute(
                    counter_nodes.update()
                    .where(where)
                    .values(seq=max(seq, int(applied)), heartbeat_at=beat)
                )
                if applied >= seq:
                    return
            if not changes:
                return
            named = {key[0] for key in changes.days} | {key[0] for key in changes.claims}
            present = set(
                await conn.scalars(sa.select(accounts.c.id).where(accounts.c.id.in_(named)))
            )
            days = [
                {
                    "account_id": account_id,
                    "service": service,
                    "day": day,
                    "used": max(delta.used, 0),
                    "total": delta.total,
                    "rejected": delta.rejected,
                    "d_used": delta.used,
                    "d_rejected": delta.rejected,
                }
                for (account_id, service, day), delta in changes.days.items()
                if account_id in present
            ]
            if days:
                await conn.execute(self._add_days, days)
            stored, dropped = [], []
            for (account_id, key), claim in changes.claims.items():
                if account_id not in present:
                    continue
                if claim is None:
                    dropped.append((account_id, key))
                else:
                    stored.append(_claim_values(claim))
            if stored:
                await conn.execute(self._put_claims, stored)
            if dropped:
                await conn.execute(
                    idempotency.delete().where(
                        sa.tuple_(idempotency.c.account_id, idempotency.c.key).in_(dropped)
                    )
                )

    async def counter_node_marks(self) -> dict[str, tuple[int, int]]:
        """Each counter node's last flush and heartbeat (microseconds)."""
        async with self._read() as conn:
            rows = await conn.execute(sa.select(counter_nodes))
            return {row.node_id: (int(row.seq), int(row.heartbeat_at)) for row in rows}

    async def forget_counter_nodes(self, node_ids: list[str]) -> None:
        """Remove nodes that stopped (or died long ago) from the write-behind roll."""
        if node_ids:
            async with self._write() as conn:
                await conn.execute(
                    counter_nodes.delete().where(counter_nodes.c.node_id.in_(node_ids))
                )

    async def live_claims(self, account_id: str, now: datetime) -> list[StoredClaim]:
        """An account's answered Idempotency-Keys that have not expired."""
        query = (
            idempotency.select()
            .where(idempotency.c.account_id == account_id)
            .where(idempotency.c.expires_at > to_micros(now))
            .where(idempotency.c.granted.is_not(None))
        )
        async with self._read() as conn:
            return [
                StoredClaim(
                    row.account_id,
                    row.key,
                    row.fingerprint,
                    int(row.expires_at) // 1000,
                    bool(row.granted),
                    int(row.used),
                    int(row.total),
                    row.day,
                )
                for row in await conn.execute(query)
            ]

    # Gauges -----------------------------------------------------------------
    async def gauges(self, account_id: str) -> dict[str, int]:
        """An account's gauges."""
        query = sa.select(gauges.c.name, gauges.c.usage).where(gauges.c.account_id == account_id)
        async with self._read() as conn:
            return {row.name: int(row.usage) for row in await conn.execute(query)}

    async def set_gauge(self, account_id: str, name: str, usage: int) -> int:
        """Set a gauge."""
        stmt = self._insert(gauges).values(account_id=account_id, name=name, usage=usage)
        stmt = stmt.on_conflict_do_update(
            index_elements=["account_id", "name"], set_={"usage": usage}
        )
        async with self._write() as conn:
            await conn.execute(stmt)
        return usage

    async def acquire(self, account_id: str, name: str, amount: int, limit: int) -> int | None:
        """Acquire within the limit, in one conditional upsert."""
        if amount > limit:
            return None
        stmt = self._insert(gauges).values(account_id=account_id, name=name, usage=amount)
        upsert = stmt.on_conflict_do_update(
            index_elements=["account_id", "name"],
            set_={"usage": gauges.c.usage + amount},
            where=gauges.c.usage + amount <= limit,
        ).returning(gauges.c.usage)
        async with self._write() as conn:
            usage = await conn.scalar(upsert)
        return None if usage is None else int(usage)

    async def release(self, account_id: str, name: str, amount: int) -> int | None:
        """Release what is in use, in one conditional update."""
        stmt = (
            gauges.update()
            .where(gauges.c.account_id == account_id)
            .where(gauges.c.name == name)
            .where(gauges.c.usage >= amount)
            .values(usage=gauges.c.usage - amount)
            .returning(gauges.c.usage)
        )
        async with self._write() as conn:
            usage = await conn.scalar(stmt)
        if usage is None:
            return 0 if amount == 0 else None
        return int(usage)

    # Total history ----------------------------------------------------------
    async def record_totals(
        self, at: datetime, *, account_id: str | None = None, plan_id: str | None = None
    ) -> None:
        """Note the totals of an account (or of a plan's accounts) that changed, in one
        transaction that reads the records it notes."""
        query = sa.select(accounts, plans).join(plans, accounts.c.plan_id == plans.c.id)
        if account_id is not None:
            query = query.where(accounts.c.id == account_id)
        if plan_id is not None:
            query = query.where(accounts.c.plan_id == plan_id)
        when = to_micros(at)
        async with self._write() as conn:
            found = [
                (_account(_columns(row, accounts)), _plan(_columns(row, plans)))
                for row in await conn.execute(query)
            ]
            # account -> service -> the total noted as in force at ``at``
            noted: dict[str, dict[str, int]] = {account.id: {} for account, _ in found}
            ids = list(noted)
            for start in range(0, len(ids), _IN_BATCH):
                rows = await conn.execute(
                    sa.select(total_changes)
                    .where(total_changes.c.account_id.in_(ids[start : start + _IN_BATCH]))
                    .where(total_changes.c.effective_from <= when)
                    .order_by(total_changes.c.effective_from)
                )
                for row in rows:
                    noted[row.account_id][row.service] = int(row.total)
            changed = [
                {"account_id": account.id, "service": name, "effective_from": when, "total": total}
                for account, plan in found
                for name, total in effective_totals(plan, account, noted[account.id]).items()
                if noted[account.id].get(name) != total
            ]
            if changed:
                stmt = self._insert(total_changes)
                await conn.execute(
                    stmt.on_conflict_do_update(
                        index_elements=["account_id", "service", "effective_from"],
                        set_={"total": stmt.excluded.total},
                    ),
                    changed,
                )

    async def total_changes(self, account_id: str, service: str) -> list[TotalChange]:
        """An account's noted totals of a service, oldest first."""
        query = (
            sa.select(total_changes.c.effective_from, total_changes.c.total)
            .where(total_changes.c.account_id == account_id)
            .where(total_changes.c.service == service)
            .order_by(total_changes.c.effective_from)
        )
        async with self._read() as conn:
            return [
                TotalChange(from_micros(row.effective_from), int(row.total))
                for row in await conn.execute(query)
            ]

    # Dashboard sessions -----------------------------------------------------
    async def create_session(self, session_id: str, expires_at: datetime, now: datetime) -> None:
        """Record a session; delete the expired ones (an index range, usually empty)."""
        async with self._write() as conn:
            await conn.execute(
                dashboard_sessions.delete().where(dashboard_sessions.c.expires_at <= to_micros(now))
            )
            await conn.execute(
                self._insert(dashboard_sessions).values(
                    id=session_id, expires_at=to_micros(expires_at)
                )
            )

    async def session_live(self, session_id: str, now: datetime) -> bool:
        """Whether the session is recorded and unexpired: one primary-key lookup."""
        query = (
            sa.select(dashboard_sessions.c.id)
            .where(dashboard_sessions.c.id == session_id)
            .where(dashboard_sessions.c.expires_at > to_micros(now))
        )
        async with self._read() as conn:
            return await conn.scalar(query) is not None

    async def end_session(self, session_id: str) -> None:
        """Forget a session."""
        async with self._write() as conn:
            await conn.execute(
                dashboard_sessions.delete().where(dashboard_sessions.c.id == session_id)
            )

    # Counters of one account: this store keeps them with its records.
    async def open_account(self, account_id: str) -> None:
        """Nothing to start: a new account's counters are whole (empty) from the start."""

    async def forget_account(self, account_id: str) -> None:
        """Nothing left: ``delete_account`` deleted the account's counters with it."""


async def _affects_a_row(conn: AsyncConnection, stmt: Any) -> bool:
    """Whether an INSERT, UPDATE or DELETE touched a row.

    Asked with RETURNING rather than ``rowcount``, which psycopg's async cursor
    leaves at -1 for these statements.
    """
    returning = stmt.returning(*stmt.table.primary_key.columns)
    return (await conn.execute(returning)).first() is not None


def _columns(row: sa.Row[Any], table: sa.Table) -> Any:
    """One table's columns of a joined row, by name, as that table's own rows have them."""
    return SimpleNamespace(**{column.name: row._mapping[column] for column in table.c})


def _service(row: sa.Row[Any]) -> Service:
    return Service(row.name, row.description, from_micros(row.created_at))


def _plan_values(plan: Plan) -> dict[str, Any]:
    return {
        "id": plan.id,
        "description": plan.description,
        "quotas": {name: {"total": q.total, "period": q.period} for name, q in plan.quotas.items()},
        "limits": [
            {"name": lim.name, "description": lim.description, "limit": lim.limit}
            for lim in plan.limits
        ],
        "created_at": to_micros(plan.created_at),
    }


def _plan(row: sa.Row[Any]) -> Plan:
    return Plan(
        id=row.id,
        quotas={name: Quota(int(q["total"]), q["period"]) for name, q in row.quotas.items()},
        limits=tuple(
            Limit(lim["name"], lim["description"], int(lim["limit"])) for lim in row.limits
        ),
        created_at=from_micros(row.created_at),
        description=row.description,
    )


def _account_values(account: Account) -> dict[str, Any]:
    return {
        "id": account.id,
        "name": account.name,
        "plan_id": account.plan_id,
        "timezone": account.timezone,
        "status": account.status.value,
        "overrides": {"quotas": account.overrides.quotas, "limits": account.overrides.limits},
        "created_at": to_micros(account.created_at),
    }


def _account(row: sa.Row[Any]) -> Account:
    overrides = row.overrides or {}
    return Account(
        id=row.id,
        name=row.name,
        plan_id=row.plan_id,
        timezone=row.timezone,
        status=AccountStatus(row.status),
        overrides=Overrides(
            quotas={k: int(v) for k, v in overrides.get("quotas", {}).items()},
            limits={k: int(v) for k, v in overrides.get("limits", {}).items()},
        ),
        created_at=from_micros(row.created_at),
    )


def _key_values(key: ApiKey) -> dict[str, Any]:
    return {
        "id": key.id,
        "account_id": key.account_id,
        "name": key.name,
        "digest": key.digest,
        "prefix": key.prefix,
        "last4": key.last4,
        "scopes": None if key.scopes is None else list(key.scopes),
        "created_at": to_micros(key.created_at),
        "expires_at": _opt_micros(key.expires_at),
        "revoked_at": _opt_micros(key.revoked_at),
        "replaced_by": key.replaced_by,
    }


def _key(row: sa.Row[Any]) -> ApiKey:
    return ApiKey(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        digest=row.digest,
        prefix=row.prefix,
        last4=row.last4,
        scopes=None if row.scopes is None else tuple(row.scopes),
        created_at=from_micros(row.created_at),
        expires_at=_opt_dt(row.expires_at),
        revoked_at=_opt_dt(row.revoked_at),
        replaced_by=row.replaced_by,
    )


def _claim_values(claim: StoredClaim) -> dict[str, Any]:
    return {
        "account_id": claim.account_id,
        "key": claim.key,
        "fingerprint": claim.fingerprint,
        "expires_at": claim.expires_ms * 1000,
        "granted": claim.granted,
        "used": claim.used,
        "total": claim.total,
        "day": claim.day,
    }


def _usage_day(row: sa.Row[Any]) -> UsageDay:
    return UsageDay(date.fromisoformat(row.day), int(row.used), int(row.total), int(row.rejected))


__all__ = ["SqlStore", "from_micros", "migrate", "to_micros"]
