"""Records in SQL: settings, services, plans, accounts, keys, total history, sessions,
operator tokens and the audit log.

Each method is one transaction; a check and the change it guards run in the same one.
"""

from __future__ import annotations

from contextlib import AbstractAsyncContextManager
from datetime import datetime

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from quotad.domain import limits
from quotad.domain.limits import Limits
from quotad.domain.models import Account, ApiKey, Plan, Service, TotalChange, effective_totals
from quotad.domain.operators import AuditEntry, AuditQuery, OperatorToken
from quotad.errors import Conflict, NotFound
from quotad.storage.batching import Batcher
from quotad.storage.schema import (
    accounts,
    api_keys,
    audit_log,
    credit_grants,
    dashboard_sessions,
    operator_tokens,
    plans,
    record_version,
    services,
    settings,
    total_changes,
)
from quotad.storage.sql.engine import Database
from quotad.storage.sql.rows import (
    account_of,
    account_values,
    affects_a_row,
    audit_of,
    audit_values,
    columns,
    from_micros,
    key_of,
    key_values,
    operator_token_of,
    operator_token_values,
    plan_of,
    plan_values,
    service_of,
    to_micros,
)

_IN_BATCH = 500  # ids per IN (…) list, well under SQLite's bound on parameters


class SqlRecords:
    """Services, plans, accounts, keys and the rest of what an operator manages."""

    def __init__(self, db: Database) -> None:
        self._db = db
        self._key_records = (
            sa.select(api_keys, accounts, plans)
            .join_from(api_keys, accounts, api_keys.c.account_id == accounts.c.id)
            .join(plans, accounts.c.plan_id == plans.c.id)
            .where(api_keys.c.digest.in_(sa.bindparam("digests", expanding=True)))
        )
        self._key_lookups: Batcher[str, tuple[ApiKey, Account, Plan] | None] = Batcher(
            self._find_key_records, under_way=db.under_way
        )

    def atomic(self) -> AbstractAsyncContextManager[None]:
        """One write transaction for the task's record writes (``Database.atomic``)."""
        return self._db.atomic()

    # Settings ---------------------------------------------------------------
    async def get_setting(self, name: str) -> str | None:
        """A stored setting."""
        async with self._db.read() as conn:
            value = await conn.scalar(sa.select(settings.c.value).where(settings.c.name == name))
        return None if value is None else str(value)

    async def put_setting(self, name: str, value: str) -> None:
        """Store or replace a setting."""
        stmt = self._db.insert(settings).values(name=name, value=value)
        stmt = stmt.on_conflict_do_update(index_elements=["name"], set_={"value": value})
        async with self._db.write() as conn:
            await conn.execute(stmt)

    async def records_version(self) -> int | None:
        """The number the schema's triggers move with every change to a record that
        verify or auth reads, whoever writes it (migration 0010)."""
        async with self._db.read() as conn:
            version = await conn.scalar(
                sa.select(record_version.c.version).where(record_version.c.id == 1)
            )
        return None if version is None else int(version)

    # Services ---------------------------------------------------------------
    async def create_service(self, service: Service) -> None:
        """Register a service."""
        stmt = self._db.insert(services).values(
            name=service.name,
            description=service.description,
            created_at=to_micros(service.created_at),
            credit_price=service.credit_price,
        )
        async with self._db.write() as conn:
            if not await affects_a_row(conn, stmt.on_conflict_do_nothing()):
                raise Conflict(f"service {service.name!r} already exists")

    async def get_service(self, name: str) -> Service | None:
        """The named service."""
        async with self._db.read() as conn:
            row = (await conn.execute(services.select().where(services.c.name == name))).first()
        return None if row is None else service_of(row)

    async def list_services(self) -> list[Service]:
        """Every service by name."""
        async with self._db.read() as conn:
            rows = await conn.execute(services.select().order_by(services.c.name))
            return [service_of(row) for row in rows]

    async def update_service(self, service: Service) -> None:
        """Change a service's description and credit price."""
        stmt = (
            services.update()
            .where(services.c.name == service.name)
            .values(description=service.description, credit_price=service.credit_price)
        )
        async with self._db.write() as conn:
            if not await affects_a_row(conn, stmt):
                raise NotFound(f"service {service.name!r} is not configured")

    # Plans ------------------------------------------------------------------
    async def create_plan(self, plan: Plan) -> None:
        """Add a plan."""
        stmt = self._db.insert(plans).values(**plan_values(plan)).on_conflict_do_nothing()
        async with self._db.write() as conn:
            if not await affects_a_row(conn, stmt):
                raise Conflict(f"plan {plan.id!r} already exists")

    async def get_plan(self, plan_id: str) -> Plan | None:
        """The plan with this id."""
        async with self._db.read() as conn:
            row = (await conn.execute(plans.select().where(plans.c.id == plan_id))).first()
        return None if row is None else plan_of(row)

    async def list_plans(self, limit: int, after: str | None) -> list[Plan]:
        """A page of plans."""
        query = plans.select().order_by(plans.c.id).limit(limit)
        if after is not None:
            query = query.where(plans.c.id > after)
        async with self._db.read() as conn:
            return [plan_of(row) for row in await conn.execute(query)]

    async def replace_plan(self, plan: Plan) -> None:
        """Replace a plan's content, keeping its creation time."""
        values = plan_values(plan)
        del values["id"], values["created_at"]
        stmt = plans.update().where(plans.c.id == plan.id).values(**values)
        async with self._db.write() as conn:
            if not await affects_a_row(conn, stmt):
                raise NotFound(f"plan {plan.id!r} not found")

    async def delete_plan(self, plan_id: str) -> None:
        """Delete a plan no account uses."""
        in_use = sa.exists().where(accounts.c.plan_id == plan_id)
        async with self._db.write() as conn:
            if await conn.scalar(sa.select(in_use)):
                raise Conflict(f"plan {plan_id!r} is used by accounts")
            if not await affects_a_row(conn, plans.delete().where(plans.c.id == plan_id)):
                raise NotFound(f"plan {plan_id!r} not found")

    # Accounts ---------------------------------------------------------------
    async def create_account(self, account: Account) -> None:
        """Add an account."""
        stmt = self._db.insert(accounts).values(**account_values(account))
        async with self._db.write() as conn:
            await _require_plan(conn, account.plan_id)
            if not await affects_a_row(conn, stmt.on_conflict_do_nothing()):
                raise Conflict(f"account {account.id!r} already exists")

    async def get_account(self, account_id: str) -> Account | None:
        """The account with this id."""
        async with self._db.read() as conn:
            query = accounts.select().where(accounts.c.id == account_id)
            row = (await conn.execute(query)).first()
        return None if row is None else account_of(row)

    async def list_accounts(
        self, limit: int, after: str | None, search: str | None = None, plan_id: str | None = None
    ) -> list[Account]:
        """A page of accounts, optionally matching ``search`` in id or name, and a plan."""
        query = accounts.select().order_by(accounts.c.id).limit(limit)
        if after is not None:
            query = query.where(accounts.c.id > after)
        if plan_id is not None:
            query = query.where(accounts.c.plan_id == plan_id)
        if search:
            pattern = "%" + search.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
            pattern += "%"
            query = query.where(
                sa.or_(
                    accounts.c.id.ilike(pattern, escape="\\"),
                    accounts.c.name.ilike(pattern, escape="\\"),
                )
            )
        async with self._db.read() as conn:
            return [account_of(row) for row in await conn.execute(query)]

    async def count_accounts_by_plan(self) -> dict[str, int]:
        """Accounts per plan: one grouped count (plan_id is indexed)."""
        query = sa.select(accounts.c.plan_id, sa.func.count()).group_by(accounts.c.plan_id)
        async with self._db.read() as conn:
            return {str(plan): int(count) for plan, count in await conn.execute(query)}

    async def update_account(self, account: Account) -> None:
        """Replace an account's mutable fields."""
        values = account_values(account)
        del values["id"], values["created_at"]
        stmt = accounts.update().where(accounts.c.id == account.id).values(**values)
        async with self._db.write() as conn:
            await _require_plan(conn, account.plan_id)
            if not await affects_a_row(conn, stmt):
                raise NotFound(f"account {account.id!r} not found")

    async def delete_account(self, account_id: str) -> None:
        """Delete an account; its keys, usage, gauges and idempotency records cascade."""
        async with self._db.write() as conn:
            stmt = accounts.delete().where(accounts.c.id == account_id)
            if not await affects_a_row(conn, stmt):
                raise NotFound(f"account {account_id!r} not found")
            # Grants have no foreign key (refills are made on the hot path): deleted here.
            await conn.execute(
                credit_grants.delete().where(credit_grants.c.account_id == account_id)
            )

    # Keys -------------------------------------------------------------------
    async def create_key(self, key: ApiKey) -> None:
        """Store a key record."""
        async with self._db.write() as conn:
            await self._insert_key(conn, key)

    async def _insert_key(self, conn: AsyncConnection, key: ApiKey) -> None:
        exists = sa.select(accounts.c.id).where(accounts.c.id == key.account_id)
        if await conn.scalar(exists) is None:
            raise NotFound(f"account {key.account_id!r} not found")
        stmt = self._db.insert(api_keys).values(**key_values(key)).on_conflict_do_nothing()
        if not await affects_a_row(conn, stmt):
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
        async with self._db.read() as conn:
            rows = await conn.execute(self._key_records, {"digests": sorted(set(digests))})
            found = {
                row.digest: (
                    key_of(columns(row, api_keys)),
                    account_of(columns(row, accounts)),
                    plan_of(columns(row, plans)),
                )
                for row in rows
            }
        return [found.get(digest) for digest in digests]

    async def _one_key(self, where: sa.ColumnElement[bool]) -> ApiKey | None:
        async with self._db.read() as conn:
            row = (await conn.execute(api_keys.select().where(where))).first()
        return None if row is None else key_of(row)

    async def list_keys(self, account_id: str) -> list[ApiKey]:
        """An account's keys, oldest first."""
        query = (
            api_keys.select()
            .where(api_keys.c.account_id == account_id)
            .order_by(api_keys.c.created_at, api_keys.c.id)
        )
        async with self._db.read() as conn:
            return [key_of(row) for row in await conn.execute(query)]

    async def revoke_key(self, key_id: str, at: datetime) -> ApiKey:
        """Revoke a key from ``at`` unless it already was earlier."""
        when = to_micros(at)
        async with self._db.write() as conn:
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id)
                .where(sa.or_(api_keys.c.revoked_at.is_(None), api_keys.c.revoked_at > when))
                .values(revoked_at=when)
            )
            row = (await conn.execute(api_keys.select().where(api_keys.c.id == key_id))).first()
        if row is None:
            raise NotFound(f"key {key_id!r} not found")
        return key_of(row)

    async def set_key_limits(self, key_id: str, own: dict[str, Limits]) -> ApiKey:
        """Replace a key's own limits (the ``api_keys.limits`` JSON; NULL when none)."""
        async with self._db.write() as conn:
            await conn.execute(
                api_keys.update()
                .where(api_keys.c.id == key_id)
                .values(limits=limits.encode_all(own) or None)
            )
            row = (await conn.execute(api_keys.select().where(api_keys.c.id == key_id))).first()
        if row is None:
            raise NotFound(f"key {key_id!r} not found")
        return key_of(row)

    async def rotate_key(self, key_id: str, new_key: ApiKey, old_valid_until: datetime) -> None:
        """Store the new key and shorten the old one's life, in one transaction."""
        until = to_micros(old_valid_until)
        async with self._db.write() as conn:
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
        async with self._db.write() as conn:
            found = [
                (account_of(columns(row, accounts)), plan_of(columns(row, plans)))
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
                stmt = self._db.insert(total_changes)
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
        async with self._db.read() as conn:
            return [
                TotalChange(from_micros(row.effective_from), int(row.total))
                for row in await conn.execute(query)
            ]

    # Dashboard sessions -----------------------------------------------------
    async def create_session(self, session_id: str, expires_at: datetime, now: datetime) -> None:
        """Record a session; delete the expired ones (an index range, usually empty)."""
        async with self._db.write() as conn:
            await conn.execute(
                dashboard_sessions.delete().where(dashboard_sessions.c.expires_at <= to_micros(now))
            )
            await conn.execute(
                self._db.insert(dashboard_sessions).values(
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
        async with self._db.read() as conn:
            return await conn.scalar(query) is not None

    async def end_session(self, session_id: str) -> None:
        """Forget a session."""
        async with self._db.write() as conn:
            await conn.execute(
                dashboard_sessions.delete().where(dashboard_sessions.c.id == session_id)
            )

    # Operator tokens --------------------------------------------------------
    async def create_operator_token(self, token: OperatorToken) -> None:
        """Store an operator token; a taken name (or digest) is a ``Conflict``."""
        stmt = self._db.insert(operator_tokens).values(**operator_token_values(token))
        async with self._db.write() as conn:
            if not await affects_a_row(conn, stmt.on_conflict_do_nothing()):
                raise Conflict(f"an operator token named {token.name!r} already exists")

    async def get_operator_token(self, token_id: str) -> OperatorToken | None:
        """The operator token with this id."""
        return await self._one_token(operator_tokens.c.id == token_id)

    async def find_operator_token(self, digest: str) -> OperatorToken | None:
        """The operator token with this digest."""
        return await self._one_token(operator_tokens.c.digest == digest)

    async def _one_token(self, where: sa.ColumnElement[bool]) -> OperatorToken | None:
        async with self._db.read() as conn:
            row = (await conn.execute(operator_tokens.select().where(where))).first()
        return None if row is None else operator_token_of(row)

    async def list_operator_tokens(self) -> list[OperatorToken]:
        """Every operator token, oldest first."""
        query = operator_tokens.select().order_by(
            operator_tokens.c.created_at, operator_tokens.c.id
        )
        async with self._db.read() as conn:
            return [operator_token_of(row) for row in await conn.execute(query)]

    async def revoke_operator_token(self, token_id: str, at: datetime) -> OperatorToken:
        """Revoke an operator token from ``at`` unless it already was earlier."""
        when = to_micros(at)
        column = operator_tokens.c.revoked_at
        async with self._db.write() as conn:
            await conn.execute(
                operator_tokens.update()
                .where(operator_tokens.c.id == token_id)
                .where(sa.or_(column.is_(None), column > when))
                .values(revoked_at=when)
            )
            query = operator_tokens.select().where(operator_tokens.c.id == token_id)
            row = (await conn.execute(query)).first()
        if row is None:
            raise NotFound(f"operator token {token_id!r} not found")
        return operator_token_of(row)

    # Audit log --------------------------------------------------------------
    async def append_audit(self, entry: AuditEntry) -> None:
        """Add an audit entry."""
        async with self._db.write() as conn:
            await conn.execute(audit_log.insert().values(**audit_values(entry)))

    async def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        """The matching entries, newest first (an index range on target or actor)."""
        select = audit_log.select().order_by(audit_log.c.id.desc()).limit(query.limit)
        if query.before_id is not None:
            select = select.where(audit_log.c.id < query.before_id)
        if query.targets:
            select = select.where(audit_log.c.target.in_(query.targets))
        if query.actor is not None:
            select = select.where(audit_log.c.actor == query.actor)
        if query.since is not None:
            select = select.where(audit_log.c.at >= to_micros(query.since))
        async with self._db.read() as conn:
            return [audit_of(row) for row in await conn.execute(select)]


async def _require_plan(conn: AsyncConnection, plan_id: str) -> None:
    if await conn.scalar(sa.select(plans.c.id).where(plans.c.id == plan_id)) is None:
        raise NotFound(f"plan {plan_id!r} not found")
