"""The per-node record cache and what verify derives from it stay within their bounds.

A node keeps records, and what a key resolves to for verify (its admission), for
``record_cache_seconds``. Writes through the node take effect at once, writes through
another node within that time, and a key's own expiry or revocation instant at its
instant; a read racing a write never puts the old record back.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any, NamedTuple

import pytest
import sqlalchemy as sa
from sqlalchemy import event

from quotad.domain.models import Account, ApiKey, Overrides, Plan, Quota
from quotad.domain.operators import Role
from quotad.errors import AuthError
from quotad.service import admin, auth, credits, tokens, verify
from quotad.service.context import Context
from quotad.storage import RecordStore, Stores
from quotad.storage.cache import RecordCache
from quotad.storage.memory import MemoryStore
from quotad.storage.sql import SqlStore
from quotad.testing import FakeClock
from tests.conftest import STORES, make_settings, store_url

TTL = 2.0


class Monotonic:
    """A monotonic clock a test moves by hand."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def node(
    inner: MemoryStore, clock: FakeClock, monotonic: Monotonic, **settings: Any
) -> Context:
    """A node's context: its own record cache over the store every node shares."""
    options = make_settings(inner.url, record_cache_seconds=TTL, **settings)
    return Context(Stores.of(inner), options, clock, monotonic)


async def provision(ctx: Context, total: int = 100) -> tuple[str, ApiKey]:
    """Service insights, a plan, account acme and a key; the key and its record."""
    await admin.create_service(ctx, "insights", "")
    await admin.create_plan(ctx, "free", {"insights": Quota.daily(total)}, [], "")
    await admin.create_account(ctx, "acme", "Acme", "free", "UTC", Overrides())
    issued = await admin.create_key(ctx, "acme", "k")
    return issued.secret, issued.record


async def test_a_key_revoked_through_this_node_is_refused_at_once() -> None:
    """Revoking clears the node's cache: the next verify on it refuses the key."""
    ctx = await node(MemoryStore(), FakeClock(), Monotonic())
    key, record = await provision(ctx)
    assert (await verify.verify(ctx, key, "insights", 1)).valid
    await admin.revoke_key(ctx, record.id)
    verdict = await verify.verify(ctx, key, "insights", 1)
    assert (verdict.valid, verdict.code) == (False, "INVALID_AUTHORIZATION")


async def test_a_key_revoked_through_another_node_is_refused_once_the_ttl_has_passed() -> None:
    """Another node's revocation reaches this node's cached admission within the ttl."""
    shared, clock, monotonic = MemoryStore(), FakeClock(), Monotonic()
    here, there = await node(shared, clock, monotonic), await node(shared, clock, monotonic)
    key, record = await provision(here)
    assert (await verify.verify(here, key, "insights", 1)).valid
    await admin.revoke_key(there, record.id)
    monotonic.now += TTL - 0.1
    assert (await verify.verify(here, key, "insights", 1)).valid  # the documented bound
    monotonic.now += 0.2
    verdict = await verify.verify(here, key, "insights", 1)
    assert (verdict.valid, verdict.code) == (False, "INVALID_AUTHORIZATION")


async def test_a_cached_key_is_refused_from_its_expiry_instant() -> None:
    """An admission is only used before the key's expiry, however fresh the cache."""
    clock = FakeClock()
    ctx = await node(MemoryStore(), clock, Monotonic())
    await provision(ctx)
    issued = await admin.create_key(ctx, "acme", "short", clock.now() + timedelta(seconds=10))
    assert (await verify.verify(ctx, issued.secret, "insights", 1)).valid
    clock.advance(seconds=10)
    verdict = await verify.verify(ctx, issued.secret, "insights", 1)
    assert (verdict.valid, verdict.code) == (False, "EXPIRED_API_KEY")


async def test_a_rotated_key_is_refused_from_the_end_of_its_grace_period() -> None:
    """The old key of a rotation stops at the end of its grace, even while cached."""
    clock = FakeClock()
    ctx = await node(MemoryStore(), clock, Monotonic())
    key, record = await provision(ctx)
    await admin.rotate_key(ctx, record.id, 60)
    assert (await verify.verify(ctx, key, "insights", 1)).valid  # cached after the rotation
    clock.advance(seconds=60)
    assert not (await verify.verify(ctx, key, "insights", 1)).valid


async def test_a_plan_change_through_this_node_applies_to_the_next_verify() -> None:
    """A new total reaches the cached admission at once on the node that made it."""
    ctx = await node(MemoryStore(), FakeClock(), Monotonic())
    key, _ = await provision(ctx, total=100)
    assert (await verify.verify(ctx, key, "insights", 1)).total == 100
    await admin.replace_plan(ctx, "free", {"insights": Quota.daily(7)}, [], "")
    verdict = await verify.verify(ctx, key, "insights", 1)
    assert (verdict.total, verdict.used) == (7, 2)


class SlowKeys(MemoryStore):
    """A memory store whose key lookups are counted and wait until the test lets them."""

    def __init__(self) -> None:
        super().__init__()
        self.hold = asyncio.Event()
        self.hold.set()
        self.lookups = 0

    async def find_key_records(self, digest: str) -> tuple[ApiKey, Account, Plan] | None:
        """The key's records as they were when asked for, handed over once released."""
        self.lookups += 1
        found = await super().find_key_records(digest)
        await self.hold.wait()
        return found


async def settle() -> None:
    """Let every ready task run until it waits."""
    for _ in range(10):
        await asyncio.sleep(0)


async def test_concurrent_verifies_of_a_new_key_resolve_it_once() -> None:
    """Twenty verifies arriving together for an unseen key share one lookup."""
    inner = SlowKeys()
    ctx = await node(inner, FakeClock(), Monotonic())
    key, _ = await provision(ctx)
    inner.lookups = 0
    verdicts = await asyncio.gather(*(verify.verify(ctx, key, "insights", 1) for _ in range(20)))
    assert all(v.valid for v in verdicts)
    assert sorted(v.used for v in verdicts) == list(range(1, 21))
    assert inner.lookups == 1


async def test_a_key_in_use_is_resolved_again_in_the_background_before_it_expires() -> None:
    """Late in its life an admission is reloaded while still served."""
    inner, monotonic = SlowKeys(), Monotonic()
    ctx = await node(inner, FakeClock(), monotonic)
    key, _ = await provision(ctx)
    assert (await verify.verify(ctx, key, "insights", 1)).valid
    inner.lookups = 0
    inner.hold.clear()
    monotonic.now += TTL * 0.95
    assert (await verify.verify(ctx, key, "insights", 1)).valid  # served, not waiting
    await settle()
    assert inner.lookups == 1  # the reload is under way
    inner.hold.set()
    await settle()
    monotonic.now += TTL * 0.4  # past the first admission's end, early in the reloaded one's
    assert (await verify.verify(ctx, key, "insights", 1)).valid
    assert inner.lookups == 1


async def test_a_reload_that_finds_the_key_revoked_elsewhere_drops_it_at_once() -> None:
    """A background reload that sees another node's revocation forgets the admission."""
    shared, clock, monotonic = SlowKeys(), FakeClock(), Monotonic()
    here, there = await node(shared, clock, monotonic), await node(shared, clock, monotonic)
    key, record = await provision(here)
    assert (await verify.verify(here, key, "insights", 1)).valid
    await admin.revoke_key(there, record.id)
    monotonic.now += TTL * 0.95
    assert (await verify.verify(here, key, "insights", 1)).valid  # within the bound
    await settle()  # the reload ran and saw the revocation
    verdict = await verify.verify(here, key, "insights", 1)
    assert (verdict.valid, verdict.code) == (False, "INVALID_AUTHORIZATION")


async def test_a_lookup_racing_a_revocation_does_not_put_the_old_key_back() -> None:
    """A key read before a revocation and returned after it is not cached."""
    inner = SlowKeys()
    ctx = await node(inner, FakeClock(), Monotonic())
    key, record = await provision(ctx)
    inner.hold.clear()
    racing = asyncio.ensure_future(verify.verify(ctx, key, "insights", 1))
    await settle()  # until it holds the key record
    await admin.revoke_key(ctx, record.id)  # while the verify holds the old record
    inner.hold.set()
    assert (await racing).valid  # it began before the revocation
    verdict = await verify.verify(ctx, key, "insights", 1)
    assert (verdict.valid, verdict.code) == (False, "INVALID_AUTHORIZATION")


async def test_a_verify_after_a_revocation_does_not_join_a_lookup_begun_before_it() -> None:
    """A resolution under way when a write clears the cache is not shared with later callers."""
    inner = SlowKeys()
    ctx = await node(inner, FakeClock(), Monotonic())
    key, record = await provision(ctx)
    inner.hold.clear()
    before = asyncio.ensure_future(verify.verify(ctx, key, "insights", 1))
    await settle()
    await admin.revoke_key(ctx, record.id)
    after = asyncio.ensure_future(verify.verify(ctx, key, "insights", 1))
    await settle()
    inner.hold.set()
    assert (await before).valid
    verdict = await after
    assert (verdict.valid, verdict.code) == (False, "INVALID_AUTHORIZATION")


async def test_a_stored_operator_token_reset_through_this_node_is_refused_at_once() -> None:
    """An operator header accepted before a token reset on this node is refused after it."""
    ctx = await node(MemoryStore(), FakeClock(), Monotonic(), admin_token=None)
    first = await auth.ensure_operator_token(ctx)
    assert first is not None
    header = f"Bearer {first}"
    await auth.authenticate_operator(ctx, header)
    assert auth.operator_accepted(ctx, header)
    second = await auth.reset_operator_token(ctx)
    assert not auth.operator_accepted(ctx, header)
    await auth.authenticate_operator(ctx, f"Bearer {second}")
    with pytest.raises(AuthError, match="not valid"):
        await auth.authenticate_operator(ctx, header)


async def test_a_key_is_read_with_its_account_and_plan_in_one_step(stores: Stores) -> None:
    """``find_key_records`` answers the key, its account and their plan, as they are now."""
    ctx = Context(stores, make_settings(stores.url, record_cache_seconds=0), FakeClock())
    _, record = await provision(ctx, total=40)
    found = await stores.records.find_key_records(record.digest)
    assert found is not None
    key, account, plan = found
    assert (key.id, account.id, plan.id, plan.quotas["insights"].total) == (
        record.id,
        "acme",
        "free",
        40,
    )
    await admin.replace_plan(ctx, "free", {"insights": Quota.daily(9)}, [], "")
    changed = await stores.records.find_key_records(record.digest)
    assert changed is not None
    assert changed[2].quotas["insights"].total == 9
    assert await stores.records.find_key_records("0" * 64) is None


SQL = [param for param in STORES if param.values[0] in ("sqlite", "postgresql")]


@pytest.mark.parametrize("kind", SQL)
async def test_lookups_asked_for_together_share_one_query(kind: str, tmp_path: Path) -> None:
    """Twenty keys looked up at once (a node's keys after an idle spell) cost two queries."""
    with store_url(kind, tmp_path) as url:
        store = SqlStore(url)
        await store.open()
        try:
            ctx = Context(Stores.of(store), make_settings(url, record_cache_seconds=0), FakeClock())
            _, first = await provision(ctx)
            records = [first] + [
                (await admin.create_key(ctx, "acme", f"k{i}")).record for i in range(19)
            ]
            queries: list[str] = []

            def count(_conn: Any, _cursor: Any, statement: str, *_: Any) -> None:
                if "api_keys" in statement:
                    queries.append(statement)

            engine = store._db.reader.sync_engine  # type: ignore[union-attr]
            event.listen(engine, "before_cursor_execute", count)
            found = await asyncio.gather(*(store.find_key_records(r.digest) for r in records))
            event.remove(engine, "before_cursor_execute", count)
            assert [f[0].id for f in found if f is not None] == [r.id for r in records]
            assert len(queries) <= 2  # the first alone, the rest together
        finally:
            await store.close()


# The records version (SQL): one number read instead of every key reloaded ----------------
class CountedSql(SqlStore):
    """A SQL store that counts its key lookups and its records version reads."""

    def __init__(self, url: str) -> None:
        super().__init__(url)
        self.lookups = 0
        self.version_reads = 0
        self.hold = asyncio.Event()
        self.hold.set()

    async def find_key_records(self, digest: str) -> tuple[ApiKey, Account, Plan] | None:
        """The key's records, counted, handed over once the test lets them."""
        self.lookups += 1
        found = await super().find_key_records(digest)
        await self.hold.wait()
        return found

    async def records_version(self) -> int | None:
        """The records version, counted."""
        self.version_reads += 1
        return await super().records_version()


async def checked(ctx: Context) -> None:
    """Wait for the version read the record cache has under way, if any."""
    assert ctx.cache is not None
    pending = ctx.cache._checking  # the background read to wait on
    if pending is not None:
        await asyncio.wait_for(asyncio.shield(pending), 10)


async def raw_write(store: SqlStore, statement: str) -> None:
    """A write made in plain SQL, as an operator with psql would make it."""
    async with store._db.write() as conn:  # SQL the store does not write
        await conn.execute(sa.text(statement))


class TwoNodes(NamedTuple):
    """Two nodes' contexts over one counted SQL store, on one hand-moved clock."""

    store: CountedSql
    here: Context
    there: Context
    monotonic: Monotonic


@asynccontextmanager
async def two_nodes(kind: str, tmp_path: Path) -> AsyncIterator[TwoNodes]:
    """Two nodes with record caches of ``TTL`` over a fresh SQL store of ``kind``."""
    with store_url(kind, tmp_path) as url:
        store = CountedSql(url)
        await store.open()
        try:
            clock, monotonic = FakeClock(), Monotonic()
            settings = make_settings(url, record_cache_seconds=TTL)
            here = Context(Stores.of(store), settings, clock, monotonic)
            there = Context(Stores.of(store), settings, clock, monotonic)
            yield TwoNodes(store, here, there, monotonic)
        finally:
            store.hold.set()
            await store.close()


@pytest.mark.parametrize("kind", SQL)
async def test_every_change_to_what_verify_reads_moves_the_records_version(
    kind: str, tmp_path: Path
) -> None:
    """Each kind of record verify or auth reads, changed through quotad or in plain SQL,
    moves the version; usage does not."""
    with store_url(kind, tmp_path) as url:
        store = SqlStore(url)
        await store.open()
        try:
            ctx = Context(Stores.of(store), make_settings(url, record_cache_seconds=0), FakeClock())
            changes: list[tuple[str, Callable[[], Any]]] = [
                ("a service", lambda: admin.create_service(ctx, "insights", "")),
                ("a price", lambda: admin.update_service(ctx, "insights", credit_price=2)),
                (
                    "a plan",
                    lambda: admin.create_plan(ctx, "free", {"insights": Quota.daily(5)}, [], ""),
                ),
                (
                    "an account",
                    lambda: admin.create_account(ctx, "acme", "A", "free", "UTC", Overrides()),
                ),
                ("a key", lambda: admin.create_key(ctx, "acme", "k")),
                ("a grant", lambda: credits.grant(ctx, "acme", 1000)),
                ("an operator token", lambda: tokens.create_token(ctx, "ops", Role.READ)),
                ("the bootstrap token", lambda: auth.reset_operator_token(ctx)),
                ("psql", lambda: raw_write(store, "UPDATE accounts SET name = 'B'")),
                ("a deletion", lambda: admin.delete_account(ctx, "acme")),
            ]
            for what, change in changes:
                before = await store.records_version()
                await change()
                after = await store.records_version()
                assert before is not None, what
                assert after is not None, what
                assert after > before, what
            version = await store.records_version()
            await admin.create_account(ctx, "other", "O", "free", "UTC", Overrides())
            key = (await admin.create_key(ctx, "other", "k")).secret
            await credits.grant(ctx, "other", 1000)
            moved = await store.records_version()
            assert (await verify.verify(ctx, key, "insights", 1)).valid
            assert await store.records_version() == moved != version  # usage is no record
        finally:
            await store.close()


@pytest.mark.parametrize("kind", SQL)
async def test_a_node_keeps_keys_in_use_current_with_one_version_read_not_reloads(
    kind: str, tmp_path: Path
) -> None:
    """While the records stand still a node reloads no key in use, however long; another
    node's revocation, and a suspension made in plain SQL, are refused within the ttl."""
    async with two_nodes(kind, tmp_path) as (store, here, there, monotonic):
        key, record = await provision(here, total=10_000)
        spare = (await admin.create_key(here, "acme", "spare")).secret

        async def spell(seconds: float) -> float | None:
            """Verify every 0.1 s for ``seconds``: when a verify was first refused."""
            for step in range(round(seconds * 10)):
                monotonic.now += 0.1
                for secret in (key, spare):
                    if not (await verify.verify(here, secret, "insights", 1)).valid:
                        return (step + 1) / 10
                await checked(here)
            return None

        assert await spell(2 * TTL) is None  # warm: keys read, and read again once versioned
        store.lookups, store.version_reads = 0, 0
        assert await spell(5 * TTL) is None
        assert store.lookups == 0  # two keys, five ttls of verifies
        assert 5 <= store.version_reads <= 11  # about one every half ttl

        await admin.revoke_key(there, record.id)
        refused = await spell(2 * TTL)
        assert refused is not None
        assert refused <= TTL

        await raw_write(store, "UPDATE accounts SET status = 'suspended'")
        key = spare
        refused = await spell(2 * TTL)
        assert refused is not None
        assert refused <= TTL


@pytest.mark.parametrize("kind", SQL)
async def test_after_a_change_elsewhere_keys_in_use_are_reloaded_without_a_caller_waiting(
    kind: str, tmp_path: Path
) -> None:
    """A new records version has each key in use reloaded in the background, while the
    copy the last version read vouched for goes on being served."""
    async with two_nodes(kind, tmp_path) as (store, here, there, monotonic):
        key, _ = await provision(here, total=10_000)

        async def verified(steps: int, until_a_lookup: bool = False) -> None:
            for _ in range(steps):
                monotonic.now += 0.1
                verdict = await asyncio.wait_for(verify.verify(here, key, "insights", 1), 5)
                assert verdict.valid
                await checked(here)
                await settle()
                if until_a_lookup and store.lookups:
                    return

        await verified(round(3 * TTL * 10))  # past the key's first copy's own ttl
        store.lookups = 0
        store.hold.clear()  # from now on, a caller that waits for a lookup times out
        await admin.create_account(there, "other", "Other", "free", "UTC", Overrides())
        # Within half a ttl and a step the change is seen; the key goes on being served.
        await verified(round(TTL * 10 / 2) + 2, until_a_lookup=True)
        assert store.lookups == 1  # its reload, under way
        store.hold.set()
        await settle()
        await verified(round(3 * TTL * 10))
        assert store.lookups == 1  # the reloaded copy, vouched for again


@asynccontextmanager
async def provisioned(kind: str, tmp_path: Path) -> AsyncIterator[tuple[str, SqlStore]]:
    """A fresh SQL store of ``kind``, open and provisioned, and its URL."""
    with store_url(kind, tmp_path) as url:
        store = SqlStore(url)
        await store.open()
        try:
            ctx = Context(Stores.of(store), make_settings(url, record_cache_seconds=0), FakeClock())
            await provision(ctx)
            yield url, store
        finally:
            await store.close()


@pytest.mark.postgresql
async def test_record_writes_crossing_on_postgresql_wait_for_each_other_not_deadlock(
    tmp_path: Path,
) -> None:
    """Two transactions that lock a plan and an account in opposite turns both commit:
    the version's row is locked at commit, last, so it closes no cycle of locks."""
    import psycopg

    async with provisioned("postgresql", tmp_path) as (url, store):
        before = await store.records_version()
        first, second = psycopg.connect(url), psycopg.connect(url)
        try:
            for conn in (first, second):  # a lock not granted fails the test, not hangs it
                conn.execute("SET lock_timeout = '5s'")
            first.execute("UPDATE plans SET description = 'one' WHERE id = 'free'")
            second.execute("UPDATE accounts SET name = 'two' WHERE id = 'acme'")
            # Waits for ``second``'s lock on the account, which its commit releases.
            crossing = asyncio.get_running_loop().run_in_executor(
                None, first.execute, "UPDATE accounts SET name = 'one' WHERE id = 'acme'"
            )
            await asyncio.sleep(0.2)
            await asyncio.to_thread(second.commit)
            await asyncio.wait_for(crossing, 10)
            first.commit()
        finally:
            first.close()
            second.close()
        assert before is not None
        assert await store.records_version() == before + 2  # a move per transaction


@pytest.mark.postgresql
async def test_a_bulk_write_on_postgresql_moves_the_version_once(tmp_path: Path) -> None:
    """A transaction writing many rows moves the version once, at its commit: updating
    that one row per row written made a bulk insert (a restore) take quadratic time."""
    async with provisioned("postgresql", tmp_path) as (_, store):
        before = await store.records_version()
        await raw_write(
            store,
            "INSERT INTO accounts (id, name, plan_id, timezone, status, overrides, created_at)"
            " SELECT 'bulk-' || n, 'Bulk', 'free', 'UTC', 'active', '{}', 0"
            " FROM generate_series(1, 2000) AS n",
        )
        assert before is not None
        assert await store.records_version() == before + 1


# The cache against the records protocol -----------------------------------------------
RECORD_METHODS = sorted(  # the calls (``atomic`` is a block: tested on its own below)
    name
    for name, value in vars(RecordStore).items()
    if inspect.iscoroutinefunction(value) and name[0] != "_"
)
CACHED_READS = ["find_key", "get_account", "get_plan", "get_service"]  # what verify reads


class Spy:
    """A records store that answers every call with a fresh value, noting each call with
    the cache generation it ran in."""

    def __init__(self, generation: Callable[[], int]) -> None:
        self.generation = generation
        self.calls: list[tuple[str, int]] = []

    def __getattr__(self, name: str) -> Any:
        async def call(*_args: Any, **_kwargs: Any) -> object:
            self.calls.append((name, self.generation()))
            return object()

        return call


def spied() -> tuple[RecordCache, Spy]:
    """A record cache over a spy, and the spy."""
    cache: RecordCache | None = None
    spy = Spy(lambda: 0 if cache is None else cache.generation)
    cache = RecordCache(spy, TTL, monotonic=Monotonic())  # type: ignore[arg-type]
    return cache, spy


async def call(cache: RecordCache, name: str) -> None:
    """Call the cache's method ``name`` with a placeholder for each required argument."""
    method = getattr(cache, name)
    required = [
        p
        for p in inspect.signature(method).parameters.values()
        if p.default is p.empty and p.kind is p.POSITIONAL_OR_KEYWORD
    ]
    await method(*[None] * len(required))


def test_the_cache_names_only_methods_of_the_protocol_as_reads() -> None:
    """Every method the cache exempts from clearing is a method of the records protocol."""
    assert RecordCache.READS.issubset(RECORD_METHODS)
    assert set(CACHED_READS) <= RecordCache.READS


@pytest.mark.parametrize("name", [n for n in RECORD_METHODS if n not in RecordCache.READS])
async def test_every_record_write_clears_the_cache_before_and_after_it(name: str) -> None:
    """Each method of the protocol the cache does not name a read clears it around the write."""
    cache, spy = spied()
    before = cache.generation
    await call(cache, name)
    assert spy.calls == [(name, before + 1)]  # cleared before the write reached the store
    assert cache.generation == before + 2  # and again once it was done


@pytest.mark.parametrize("name", sorted(RecordCache.READS))
async def test_a_record_read_leaves_the_cache_as_it_is(name: str) -> None:
    """A read reaches the store (when not cached) without clearing anything."""
    cache, spy = spied()
    await call(cache, name)
    assert spy.calls == [(name, 0)]
    assert cache.generation == 0


@pytest.mark.parametrize("name", CACHED_READS)
async def test_verify_reads_are_kept_until_a_write(name: str) -> None:
    """A cached read reaches the store once; after any write it reaches it again."""
    cache, spy = spied()
    await call(cache, name)
    await call(cache, name)
    assert [called for called, _ in spy.calls] == [name]
    await call(cache, "put_setting")
    await call(cache, name)
    assert [called for called, _ in spy.calls] == [name, "put_setting", name]


async def test_a_transaction_clears_the_cache_before_and_after_it() -> None:
    """What is read inside a transaction may be rolled back: none of it is kept after."""
    ctx = await node(MemoryStore(), FakeClock(), Monotonic())
    assert ctx.cache is not None
    before = ctx.cache.generation
    async with ctx.records.atomic():
        assert ctx.cache.generation == before + 1
    assert ctx.cache.generation == before + 2
