"""A read-through cache of the records the hot path reads on every call.

Verify reads a service, a key, an account and a plan before its one atomic consume.
They change rarely, so each node keeps them for ``ttl`` seconds. Any record write made
through this node clears the cache at once; a write made on another node (a revoked key,
a suspended account, a changed plan) takes effect here within ``ttl`` seconds. Counters
(usage, gauges, idempotency) are never cached.

Values derived from records (what verify resolves a key to, see ``quotad.service.verify``)
are kept the same way with ``derive`` and ``recall``: their loader reads records the cache
passes through (``find_key_records``), so a derived value is never older than ``ttl``
either. A value missing is loaded once however many callers ask for it at the same time.

A value still asked for late in its life (past a point drawn at random between its half
and nine tenths of ``ttl``) stays current without waiting, in one of two ways:

- A store that keeps a records version (SQL: triggers move it with every change, see
  ``RecordStore.records_version``) is asked for that one number, in the background, at
  most every half ``ttl``. Each value is stamped with the version known when its read
  began; a read of the version that finds it so vouches for the value (nothing has
  changed since it was read), which is then served up to ``ttl`` after that read began,
  and not reloaded. So a node reads one row a second however many keys are in use,
  instead of reloading each of them every second or so.
- Otherwise, and for a value whose stamp is no longer the version (the records changed
  somewhere since: a new version starts a new generation), the value itself is loaded
  again in the background while it goes on being served (within ``ttl`` of when it was
  read, or of the last read of the version that vouched for it).

Either way keys in steady use never expire, and their callers never wait for a reload.

Every clear (and every new records version) starts a new generation, and a value read or
derived before it is neither stored after it nor handed to a caller that asked after a
clear: a read racing a write cannot put back what the write replaced.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Hashable
from contextlib import asynccontextmanager
from contextvars import ContextVar
from datetime import datetime
from typing import Any, TypeVar

from quotad.domain.limits import Limits
from quotad.domain.models import Account, ApiKey, Plan, Service, TotalChange
from quotad.domain.operators import AuditEntry, AuditQuery, OperatorToken
from quotad.storage.base import RecordStore

MAX_ENTRIES = 50_000
Loader = Callable[[], Awaitable[Any]]
Keep = Callable[[Any], bool]
T = TypeVar("T")


_NEVER = float("-inf")


def _always(_value: Any) -> bool:
    return True


def _found(value: Any) -> bool:
    return value is not None


# Set inside ``RecordCache.atomic``: reads there go to the store, in its transaction (the
# shared loads run in tasks of their own, which would read outside it).
_INSIDE: ContextVar[bool] = ContextVar("quotad_cache_inside_transaction", default=False)


class RecordCache:
    """A record store over another: four reads cached for ``ttl`` seconds, writes clearing.

    Every method of ``RecordStore`` is written out, so mypy checks the cache against the
    protocol. Each write goes through ``_write``, which clears before and after it; a
    read is either cached (``_cached``) or passed through, and is named in ``READS``
    (a test calls every other method of the protocol and checks it clears).
    """

    READS = frozenset(
        {
            "records_version",
            "get_setting",
            "get_service",
            "list_services",
            "get_plan",
            "list_plans",
            "get_account",
            "list_accounts",
            "count_accounts_by_plan",
            "get_key",
            "find_key",
            "find_key_records",
            "list_keys",
            "total_changes",
            "session_live",
            "get_operator_token",
            "find_operator_token",
            "list_operator_tokens",
            "audit_entries",
        }
    )

    def __init__(
        self, inner: RecordStore, ttl: float, monotonic: Callable[[], float] = time.monotonic
    ) -> None:
        self._inner = inner
        self._ttl = ttl
        self._monotonic = monotonic
        # key -> (expires, value, reload at, stamp): records and derived values alike; the
        # stamp is the records version known when the value's read began (None: unknown)
        self._entries: dict[Hashable, tuple[float, Any, float, int | None]] = {}
        self._loading: dict[Hashable, asyncio.Task[Any]] = {}
        self.generation = 0  # one more at every clear and every new records version
        # The records version last read (None: none yet, or the store keeps none), and
        # until when the reads of it vouch for the values stamped with it (this version's
        # and the one before it).
        self._versioned: bool | None = None  # whether the store keeps one (unknown: None)
        self._version: int | None = None
        self._vouched: dict[int, float] = {}
        self._check_at = _NEVER
        self._checking: asyncio.Task[None] | None = None

    def clear(self) -> None:
        """Forget every cached record and derived value (and loads begun before now)."""
        self.generation += 1
        self._entries.clear()
        self._loading.clear()  # their results may be stale: later callers load afresh

    def recall(self, key: Hashable, reload: Loader | None = None, keep: Keep = _always) -> Any:
        """The value remembered under ``key``, or None once it expired or was cleared.

        With ``reload``, a value late in its life is reloaded in the background (once)
        and served meanwhile; a reloaded value ``keep`` refuses is forgotten instead.
        """
        hit = self._entries.get(key)
        if hit is None:
            return None
        now = self._monotonic()
        if now < hit[2]:
            return hit[1]  # early in its life
        if now >= self._check_at and self._versioned is not False:
            self._check(now)
        stamp = hit[3]
        vouched = _NEVER if stamp is None else self._vouched.get(stamp, _NEVER)
        if stamp is not None and stamp == self._version:
            # Nothing has changed since it was read, as far as the last read of the version
            # knows (the one under way, if any, will vouch for it again).
            return hit[1] if now < hit[0] or now < vouched else None
        if now >= hit[0] and now >= vouched:
            return None
        if reload is not None and key not in self._loading:
            self._load(key, reload, keep)
        return hit[1]

    def _check(self, now: float) -> None:
        """Read the records version in the background (one read at a time)."""
        if self._checking is None:
            self._check_at = now + self._ttl / 2
            self._checking = asyncio.ensure_future(self._read_version(now))

    async def _read_version(self, began: float) -> None:
        try:
            version = await self._inner.records_version()
        except Exception:  # values age out meanwhile; a later call retries
            return
        finally:
            self._checking = None
        self._versioned = version is not None
        if version is None:
            return
        if version != self._version:
            # Records changed somewhere (or this is the first read). A value read before
            # now is not stamped with this version: a new generation.
            self.generation += 1
            kept = self._version
            self._vouched = {} if kept is None else {kept: self._vouched.get(kept, _NEVER)}
            self._version = version
        # A value stamped ``version`` was read since the store reached it and nothing has
        # changed up to this read: it is current as of ``began``.
        self._vouched[version] = began + self._ttl

    async def derive(self, key: Hashable, load: Loader, keep: Keep) -> Any:
        """What ``load`` answers for ``key``: remembered, or loaded once for every caller.

        ``load`` reads the records it derives from (verify's: through reads this cache
        passes through). What it answers is kept when ``keep`` says so (a refusal, say,
        need not be).
        """
        value = self.recall(key)
        if value is not None:
            return value
        task = self._loading.get(key)
        if task is None:
            task = self._load(key, load, keep)
        # Shielded: a caller that gives up does not cancel the load for the others.
        return await asyncio.shield(task)

    def remember(self, key: Hashable, value: Any, generation: int) -> None:
        """Keep ``value``, read or derived since ``generation``, for ``ttl``."""
        if generation != self.generation:
            return  # records changed meanwhile: the value may be derived from old ones
        if len(self._entries) >= MAX_ENTRIES:
            self._entries.clear()
        now = self._monotonic()
        reload_at = now + self._ttl * random.uniform(0.5, 0.9)  # noqa: S311 - not a secret
        # No new version since ``generation`` began: the read began at this one or later.
        self._entries[key] = (now + self._ttl, value, reload_at, self._version)

    def _load(self, key: Hashable, load: Loader, keep: Keep) -> asyncio.Task[Any]:
        generation = self.generation
        task = asyncio.ensure_future(load())
        self._loading[key] = task

        def loaded(done: asyncio.Task[Any]) -> None:
            if self._loading.get(key) is done:
                del self._loading[key]
            if done.cancelled() or done.exception() is not None:
                return  # a caller waiting gets the error; a background reload retries later
            if keep(done.result()):
                self.remember(key, done.result(), generation)
            elif generation == self.generation:
                self._entries.pop(key, None)  # no longer what the records say

        task.add_done_callback(loaded)
        return task

    async def _cached(
        self, name: str, read: Callable[[str], Awaitable[T | None]], key: str
    ) -> T | None:
        """``read(key)``, kept for ``ttl`` when found (under ``name`` and ``key``)."""
        if _INSIDE.get():
            return await read(key)  # its own writes: not kept, and not loaded by a task
        entry = (name, key)
        value: T | None = self.recall(entry)
        if value is not None:
            return value
        # Loaded once for every caller asking at the same time; a record missing is not
        # kept, so one created elsewhere shows up at once.
        found: T | None = await self.derive(entry, lambda: read(key), _found)
        return found

    async def _write(self, write: Awaitable[T]) -> T:
        """Run a record write (not started yet), clearing the cache before and after it.

        Before: no caller is served a record the write is changing. After: a read that
        raced the write is not kept (its generation is gone).
        """
        self.clear()
        try:
            return await write
        finally:
            self.clear()

    # Cached reads -----------------------------------------------------------
    async def get_service(self, name: str) -> Service | None:
        """The service, as read within ``ttl``."""
        return await self._cached("get_service", self._inner.get_service, name)

    async def get_plan(self, plan_id: str) -> Plan | None:
        """The plan, as read within ``ttl``."""
        return await self._cached("get_plan", self._inner.get_plan, plan_id)

    async def get_account(self, account_id: str) -> Account | None:
        """The account, as read within ``ttl``."""
        return await self._cached("get_account", self._inner.get_account, account_id)

    async def find_key(self, digest: str) -> ApiKey | None:
        """The key record, as read within ``ttl``."""
        return await self._cached("find_key", self._inner.find_key, digest)

    async def find_operator_token(self, digest: str) -> OperatorToken | None:
        """The operator token, as read within ``ttl`` (every operator call may ask)."""
        return await self._cached("find_operator_token", self._inner.find_operator_token, digest)

    # Reads passed through ---------------------------------------------------
    async def records_version(self) -> int | None:
        """The store's records version, read afresh."""
        return await self._inner.records_version()

    async def get_setting(self, name: str) -> str | None:
        """A stored setting, read afresh."""
        return await self._inner.get_setting(name)

    async def list_services(self) -> list[Service]:
        """Every service, read afresh."""
        return await self._inner.list_services()

    async def list_plans(self, limit: int, after: str | None) -> list[Plan]:
        """A page of plans, read afresh."""
        return await self._inner.list_plans(limit, after)

    async def list_accounts(
        self, limit: int, after: str | None, search: str | None = None, plan_id: str | None = None
    ) -> list[Account]:
        """A page of accounts, read afresh."""
        return await self._inner.list_accounts(limit, after, search, plan_id)

    async def count_accounts_by_plan(self) -> dict[str, int]:
        """Accounts per plan, read afresh."""
        return await self._inner.count_accounts_by_plan()

    async def get_key(self, key_id: str) -> ApiKey | None:
        """A key record by id, read afresh."""
        return await self._inner.get_key(key_id)

    async def find_key_records(self, digest: str) -> tuple[ApiKey, Account, Plan] | None:
        """A key with its account and plan, read afresh (verify caches what it derives)."""
        return await self._inner.find_key_records(digest)

    async def list_keys(self, account_id: str) -> list[ApiKey]:
        """An account's keys, read afresh."""
        return await self._inner.list_keys(account_id)

    async def total_changes(self, account_id: str, service: str) -> list[TotalChange]:
        """Noted totals, read afresh."""
        return await self._inner.total_changes(account_id, service)

    async def session_live(self, session_id: str, now: datetime) -> bool:
        """Whether a dashboard session is live, read afresh."""
        return await self._inner.session_live(session_id, now)

    async def get_operator_token(self, token_id: str) -> OperatorToken | None:
        """An operator token by id, read afresh."""
        return await self._inner.get_operator_token(token_id)

    async def list_operator_tokens(self) -> list[OperatorToken]:
        """Every operator token, read afresh."""
        return await self._inner.list_operator_tokens()

    async def audit_entries(self, query: AuditQuery) -> list[AuditEntry]:
        """Audit entries, read afresh."""
        return await self._inner.audit_entries(query)

    # Writes: each clears the cache ------------------------------------------
    async def put_setting(self, name: str, value: str) -> None:
        """Store a setting."""
        await self._write(self._inner.put_setting(name, value))

    async def create_service(self, service: Service) -> None:
        """Register a service."""
        await self._write(self._inner.create_service(service))

    async def update_service(self, service: Service) -> None:
        """Change a service's description and credit price."""
        await self._write(self._inner.update_service(service))

    async def create_plan(self, plan: Plan) -> None:
        """Add a plan."""
        await self._write(self._inner.create_plan(plan))

    async def replace_plan(self, plan: Plan) -> None:
        """Replace a plan."""
        await self._write(self._inner.replace_plan(plan))

    async def delete_plan(self, plan_id: str) -> None:
        """Delete a plan."""
        await self._write(self._inner.delete_plan(plan_id))

    async def create_account(self, account: Account) -> None:
        """Add an account."""
        await self._write(self._inner.create_account(account))

    async def update_account(self, account: Account) -> None:
        """Change an account."""
        await self._write(self._inner.update_account(account))

    async def delete_account(self, account_id: str) -> None:
        """Delete an account."""
        await self._write(self._inner.delete_account(account_id))

    async def create_key(self, key: ApiKey) -> None:
        """Store a key record."""
        await self._write(self._inner.create_key(key))

    async def revoke_key(self, key_id: str, at: datetime) -> ApiKey:
        """Revoke a key."""
        return await self._write(self._inner.revoke_key(key_id, at))

    async def set_key_limits(self, key_id: str, own: dict[str, Limits]) -> ApiKey:
        """Replace a key's own limits."""
        return await self._write(self._inner.set_key_limits(key_id, own))

    async def rotate_key(self, key_id: str, new_key: ApiKey, old_valid_until: datetime) -> None:
        """Rotate a key."""
        await self._write(self._inner.rotate_key(key_id, new_key, old_valid_until))

    async def record_totals(
        self, at: datetime, *, account_id: str | None = None, plan_id: str | None = None
    ) -> None:
        """Note changed totals."""
        await self._write(self._inner.record_totals(at, account_id=account_id, plan_id=plan_id))

    async def create_session(self, session_id: str, expires_at: datetime, now: datetime) -> None:
        """Record a dashboard session."""
        await self._write(self._inner.create_session(session_id, expires_at, now))

    async def end_session(self, session_id: str) -> None:
        """Forget a dashboard session."""
        await self._write(self._inner.end_session(session_id))

    async def create_operator_token(self, token: OperatorToken) -> None:
        """Store an operator token."""
        await self._write(self._inner.create_operator_token(token))

    async def revoke_operator_token(self, token_id: str, at: datetime) -> OperatorToken:
        """Revoke an operator token (refused at once on this node)."""
        return await self._write(self._inner.revoke_operator_token(token_id, at))

    @asynccontextmanager
    async def atomic(self) -> AsyncIterator[None]:
        """The inner store's transaction, clearing before and after it: what is read
        inside it may be rolled back, so nothing read there outlives it."""
        self.clear()
        token = _INSIDE.set(True)
        try:
            async with self._inner.atomic():
                yield
        finally:
            _INSIDE.reset(token)
            self.clear()

    async def append_audit(self, entry: AuditEntry) -> None:
        """Add an audit entry (a write like any other: it clears the cache too)."""
        await self._write(self._inner.append_audit(entry))
