"""A concurrency model check (issue 6): two store connections, one model, SPEC 1's invariants.

A hypothesis ``RuleBasedStateMachine`` opens TWO store instances on one database (two
quotad nodes, in effect: on one SQLite file, and on PostgreSQL when it is available) and
interleaves, each step through either of them, chosen by hypothesis:

- consumes (``service.verify.verify``: authenticate a key, then the store's atomic consume),
- metering events (``service.usage.record_events``, ids drawn from a small pool so some
  repeat), operator adjustments of today or a past day (``service.usage.adjust``),
- key creation, revocation and rotation with a grace period (``service.admin``),
- the clock moving on, by minutes or to the next day.

A plain model predicts every answer. After each step, read back through either
connection:

- ``0 <= used`` on every day, and ``used`` equals the model's;
- a granted consume never leaves ``used > total`` (only events and adjustments may);
- the consumes granted through either connection, plus the events and adjustments the
  model accepted, sum exactly to the stored ``used`` of each day (exactly, as long as no
  adjustment was floored at zero that day; the model's value otherwise);
- a revoked key never authenticates (``service.auth.authenticate``), a rotated key's old
  secret works during its grace period and stops after it, the new one works.

Each machine instance gets its own ``asyncio.Runner`` (SQL connections belong to the loop
that opened them), its own pair of opened stores and its own account, on a database that
lives for the whole test. The contexts run without the per-node record cache
(``record_cache_seconds=0``): this checks what the two store connections guarantee, and a
cache in front of either would by design serve a revoked key for a few seconds more.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Coroutine, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import pytest
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from quotad.domain.models import Account, AccountStatus, Overrides, Plan, Quota, Service
from quotad.errors import AuthError, Conflict
from quotad.service import admin, auth, usage, verify
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import Stores, stores_from_url
from quotad.testing import FakeClock
from tests.conftest import ADMIN_TOKEN, create_account
from tests.servers import postgres_schema

SERVICE, PLAN = "insights", "stateful"
TOTAL = 5  # small, so consumes meet the total often
START = datetime(2024, 11, 7, 12, 0, tzinfo=UTC)
CREATED = datetime(2024, 11, 1, tzinfo=UTC)
EVENT_IDS = tuple(f"ev-{n}" for n in range(6))
CONNECTIONS = st.integers(min_value=0, max_value=1)
MAX_KEYS = 5  # each is authenticated after every step
T = TypeVar("T")
KINDS = [
    pytest.param("sqlite", marks=pytest.mark.sqlite, id="sqlite"),
    pytest.param("postgresql", marks=pytest.mark.postgresql, id="postgresql"),
]


@contextmanager
def database(kind: str, tmp_path: Path) -> Iterator[str]:
    """A store URL (SQLite file, or a fresh PostgreSQL schema) with the service and plan."""
    if kind == "sqlite":
        url = f"sqlite:///{tmp_path / 'stateful.db'}"
        asyncio.run(prepare(url))
        yield url
    else:
        with postgres_schema() as url:
            asyncio.run(prepare(url))
            yield url


async def prepare(url: str) -> None:
    """Create the schema, the service and the plan every machine's account uses."""
    stores = stores_from_url(url)
    await stores.open()
    try:
        await stores.records.create_service(Service(SERVICE, "", CREATED))
        await stores.records.create_plan(Plan(PLAN, {SERVICE: Quota.daily(TOTAL)}, (), CREATED))
    finally:
        await stores.close()


@dataclass
class KeyModel:
    """What the model knows of a key."""

    secret: str
    key_id: str
    revoked_at: datetime | None = None
    expires_at: datetime | None = None
    replaced: bool = False

    def valid(self, now: datetime) -> bool:
        """Whether the key authenticates at ``now``."""
        revoked = self.revoked_at is not None and now >= self.revoked_at
        expired = self.expires_at is not None and now >= self.expires_at
        return not revoked and not expired


@dataclass
class DayModel:
    """One day's use as the model sees it."""

    used: int = 0
    granted: int = 0  # units granted by consumes, through either connection
    events: int = 0  # units accepted from metering events
    adjusted: int = 0  # the sum of adjustment deltas
    floored: bool = False  # an adjustment hit the floor of zero
    raised: bool = False  # an event or a positive adjustment added to it (may pass the total)


@dataclass
class Model:
    """Days and keys as they should be."""

    days: dict[date, DayModel] = field(default_factory=dict)
    keys: list[KeyModel] = field(default_factory=list)
    seen_events: set[str] = field(default_factory=set)

    def day(self, day: date) -> DayModel:
        """The day's model, created empty."""
        return self.days.setdefault(day, DayModel())


class TwoConnections(RuleBasedStateMachine):
    """Consumes, events, adjustments, key changes and time, through two store instances."""

    url = ""  # set per test

    keys = Bundle("keys")

    def __init__(self) -> None:
        super().__init__()
        self.runner = asyncio.Runner()
        self.clock = FakeClock(START)
        self.stores: list[Stores] = [stores_from_url(self.url), stores_from_url(self.url)]
        settings_ = Settings(
            _env_file=None,
            store_url=self.url,
            admin_token=ADMIN_TOKEN,
            # The stores' own guarantees, not a node's record cache: with one (its default
            # is a few seconds), a key revoked through one connection still authenticates
            # through the other until that connection's cached copy of the key expires.
            record_cache_seconds=0,
        )
        self.ctxs = [Context(stores, settings_, self.clock) for stores in self.stores]
        self.account_id = f"acct-{uuid.uuid4().hex[:12]}"
        self.model = Model()
        self.checks = 0
        self.run(self._open())

    def run(self, coroutine: Coroutine[Any, Any, T]) -> T:
        """Run one step on this machine's event loop."""
        return self.runner.run(coroutine)

    async def _open(self) -> None:
        for stores in self.stores:
            await stores.open()
        account = Account(
            self.account_id, "Stateful", PLAN, "UTC", AccountStatus.ACTIVE, Overrides(), CREATED
        )
        await create_account(self.stores[0], account)

    def teardown(self) -> None:
        """Close both stores and the loop."""
        try:
            for stores in self.stores:
                self.run(stores.close())
        finally:
            self.runner.close()

    @property
    def today(self) -> date:
        """The account's current day (UTC)."""
        return self.clock.now().date()

    # Keys ------------------------------------------------------------------------------
    @precondition(lambda self: len(self.model.keys) < MAX_KEYS)
    @rule(target=keys, via=CONNECTIONS)
    def create_key(self, via: int) -> KeyModel:
        """Issue a key through either connection."""
        issued = self.run(admin.create_key(self.ctxs[via], self.account_id, "k"))
        key = KeyModel(issued.secret, issued.record.id)
        self.model.keys.append(key)
        return key

    @rule(key=keys, via=CONNECTIONS)
    def revoke(self, key: KeyModel, via: int) -> None:
        """Revoke a key now (kept if it already ended earlier)."""
        self.run(admin.revoke_key(self.ctxs[via], key.key_id))
        now = self.clock.now()
        if key.revoked_at is None or key.revoked_at > now:
            key.revoked_at = now

    @precondition(lambda self: len(self.model.keys) < MAX_KEYS)
    @rule(
        target=keys,
        key=keys,
        grace=st.sampled_from([0, 60, 3600]),
        via=CONNECTIONS,
    )
    def rotate(self, key: KeyModel, grace: int, via: int) -> KeyModel:
        """Rotate a key: the model predicts whether that is allowed and what follows."""
        now = self.clock.now()
        allowed = key.valid(now) and not key.replaced
        try:
            issued = self.run(admin.rotate_key(self.ctxs[via], key.key_id, grace))
        except Conflict:
            assert not allowed, "a valid, unrotated key could not be rotated"
            return key  # the bundle gets the same key again; harmless
        assert allowed, "a revoked, expired or already rotated key was rotated"
        until = now + timedelta(seconds=grace)
        key.expires_at = until if key.expires_at is None else min(key.expires_at, until)
        key.replaced = True
        fresh = KeyModel(issued.secret, issued.record.id)
        self.model.keys.append(fresh)
        return fresh

    # Usage -----------------------------------------------------------------------------
    @rule(key=keys, cost=st.integers(min_value=0, max_value=3), via=CONNECTIONS)
    def consume(self, key: KeyModel, cost: int, via: int) -> None:
        """Verify-and-consume with a key: granted iff the key is valid and the cost fits."""
        verdict = self.run(verify.verify(self.ctxs[via], key.secret, SERVICE, cost))
        if not key.valid(self.clock.now()):
            assert not verdict.valid, "a revoked or expired key consumed"
            assert verdict.code in ("INVALID_AUTHORIZATION", "EXPIRED_API_KEY"), verdict
            return
        day = self.model.day(self.today)
        fits = day.used + cost <= TOTAL
        assert verdict.valid is fits, (verdict, day)
        if fits:
            day.used += cost
            day.granted += cost
        assert verdict.used == day.used, (verdict, day)
        if verdict.valid:
            assert verdict.used is not None
            assert verdict.used <= TOTAL, "a consume made used > total"

    @rule(
        ids=st.lists(st.sampled_from(EVENT_IDS), min_size=1, max_size=3),
        amount=st.integers(min_value=0, max_value=6),
        days_back=st.integers(min_value=0, max_value=2),
        via=CONNECTIONS,
    )
    def events(self, ids: list[str], amount: int, days_back: int, via: int) -> None:
        """Record metering events; repeated ids count once, across both connections."""
        when = self.clock.now() - timedelta(days=days_back)
        batch = [usage.EventInput(i, self.account_id, SERVICE, amount, when) for i in ids]
        outcome = self.run(usage.record_events(self.ctxs[via], batch))
        fresh = 0
        for event_id in ids:
            if event_id not in self.model.seen_events:
                self.model.seen_events.add(event_id)
                fresh += 1
        assert (outcome.accepted, outcome.duplicates) == (fresh, len(ids) - fresh)
        if fresh:
            day = self.model.day(when.date())
            day.used += fresh * amount
            day.events += fresh * amount
            day.raised = day.raised or amount > 0

    @rule(
        delta=st.integers(min_value=-8, max_value=8),
        days_back=st.integers(min_value=0, max_value=2),
        via=CONNECTIONS,
    )
    def adjust(self, delta: int, days_back: int, via: int) -> None:
        """An operator's correction: adds ``delta``, flooring at zero."""
        day_value = self.today - timedelta(days=days_back)
        row = self.run(
            usage.adjust(self.ctxs[via], self.account_id, SERVICE, day_value.isoformat(), delta)
        )
        day = self.model.day(day_value)
        if day.used + delta < 0:
            day.floored = True
        day.used = max(day.used + delta, 0)
        day.adjusted += delta
        day.raised = day.raised or delta > 0
        assert row.used == day.used, (row, day)

    # Time ------------------------------------------------------------------------------
    @rule(minutes=st.sampled_from([1, 30, 61]))
    def later(self, minutes: int) -> None:
        """Minutes pass (grace periods of 60 s and 3600 s run out)."""
        self.clock.advance(minutes=minutes)

    @precondition(lambda self: self.clock.now() < START + timedelta(days=6))
    @rule()
    def next_day(self) -> None:
        """The next day begins: a fresh quota."""
        self.clock.advance(days=1)

    # Invariants ------------------------------------------------------------------------
    @invariant()
    def stored_usage_matches(self) -> None:
        """Through each connection in turn: 0 <= used, as modelled, granted + events + adjusts."""
        if not self.model.days:
            return
        first, last = min(self.model.days), max(self.model.days)
        self.checks += 1
        counters = self.stores[self.checks % 2].counters  # each connection in turn
        rows = {r.day: r for r in self.run(counters.usage(self.account_id, SERVICE, first, last))}
        for day_value, day in self.model.days.items():
            stored = rows[day_value].used if day_value in rows else 0
            assert stored >= 0
            assert stored == day.used, (day_value, stored, day)
            if not day.floored:
                assert stored == day.granted + day.events + day.adjusted, (day_value, day)
            if not day.raised:
                # Only consumes ever raised it: they never pass the total.
                assert stored <= TOTAL, (day_value, stored, day)

    @invariant()
    def keys_authenticate_as_modelled(self) -> None:
        """Revoked keys never authenticate; rotated ones stop after their grace."""
        now = self.clock.now()
        for n, key in enumerate(self.model.keys):
            ctx = self.ctxs[n % 2]
            try:
                caller = self.run(auth.authenticate(ctx, key.secret))
            except AuthError as exc:
                refused: str | None = exc.code.value
            else:
                refused = None
                assert caller.account.id == self.account_id
            if key.valid(now):
                assert refused is None, f"a valid key was refused: {refused}"
            else:
                assert refused is not None, "a revoked or expired key authenticated"


@pytest.mark.parametrize("kind", KINDS)
def test_two_connections_keep_spec_invariants(kind: str, tmp_path: Path) -> None:
    """Interleaved consumes, events, adjusts, key changes and days over two connections keep SPEC 1."""
    with database(kind, tmp_path) as url:
        machine = type("TwoConnectionsOn" + kind.title(), (TwoConnections,), {"url": url})
        run_state_machine_as_test(
            machine,
            settings=settings(
                max_examples=25,
                stateful_step_count=20,
                deadline=None,
                derandomize=True,
                database=None,
                phases=(Phase.explicit, Phase.generate),
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
            ),
        )
