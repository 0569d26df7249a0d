"""Every store against a plain in-memory model, over random sequences of usage operations.

The model is the CounterStore protocol's usage contract written as dictionaries:

- consume grants iff ``used + cost <= total`` (all or nothing); a refusal counts one
  rejection and changes no use; either way the day's stored total becomes ``total``;
- adjust adds ``delta`` flooring at zero, and ``total`` only matters for a new day row;
- events add their amount once per unseen id (they may push ``used`` past ``total``),
  and a new day row takes the event's total.

Each test drives one store on one ``asyncio.Runner`` (SQL connections are bound to the
loop that opened them); each example runs on a fresh account and compares
``usage`` with the model after every step.
"""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from quotad.domain.models import (
    Account,
    AccountStatus,
    Overrides,
    Plan,
    Quota,
    Service,
    UsageEvent,
)
from quotad.storage import CounterStore, stores_from_url
from tests.conftest import STORES, create_account, store_url

SERVICES = ("insights", "scoring")
FIRST_DAY = date(2024, 11, 1)
DAYS = tuple(FIRST_DAY + timedelta(days=offset) for offset in range(4))
CREATED = datetime(2024, 11, 1, tzinfo=UTC)
EVENT_IDS = tuple(f"ev-{n}" for n in range(8))
# Examples per store: the in-process ones are cheap, the networked ones bound the run time
# (and skip shrinking, which can take minutes over the network; a failure is still shown,
# unshrunk, and test_model_edge_cases holds readable fixed sequences).
EXAMPLES = {"memory": 150, "sqlite": 60, "postgresql": 25, "redis": 25}
IN_PROCESS = ("memory", "sqlite")


# Operations ---------------------------------------------------------------------------
@dataclass(frozen=True)
class Consume:
    """consume(service, cost) on the current day against ``total``."""

    service: str
    cost: int
    total: int


@dataclass(frozen=True)
class Adjust:
    """adjust(day, delta) with ``total`` for a new day row."""

    service: str
    day: date
    delta: int
    total: int


@dataclass(frozen=True)
class Event:
    """One metering event of a batch."""

    id: str
    service: str
    day: date
    amount: int


@dataclass(frozen=True)
class Events:
    """record_events(batch), each event carrying ``total`` for a new day row.

    One total per batch: the store writes whatever total it is given (the service layer
    gives each event the total in force on its day).
    """

    batch: tuple[Event, ...]
    total: int


@dataclass(frozen=True)
class MoveTo:
    """The current day becomes ``day``."""

    day: date


Op = Consume | Adjust | Events | MoveTo

services = st.sampled_from(SERVICES)
days = st.sampled_from(DAYS)
totals = st.integers(min_value=0, max_value=12)
events = st.builds(
    Event,
    id=st.sampled_from(EVENT_IDS),
    service=services,
    day=days,
    amount=st.integers(min_value=0, max_value=6),
)
operations: st.SearchStrategy[Op] = st.one_of(
    st.builds(Consume, service=services, cost=st.integers(min_value=0, max_value=6), total=totals),
    st.builds(
        Adjust,
        service=services,
        day=days,
        delta=st.integers(min_value=-8, max_value=8),
        total=totals,
    ),
    st.builds(Events, batch=st.lists(events, min_size=1, max_size=4).map(tuple), total=totals),
    st.builds(MoveTo, day=days),
)


# The model ----------------------------------------------------------------------------
Row = tuple[int, int, int]  # used, total, rejected


@dataclass
class Model:
    """What the stores should hold, kept in plain dictionaries."""

    today: date = FIRST_DAY
    rows: dict[tuple[str, date], Row] = field(default_factory=dict)
    seen: set[str] = field(default_factory=set)

    def consume(self, op: Consume) -> tuple[bool, int]:
        """Grant or refuse; returns (granted, used after)."""
        used, _total, rejected = self.rows.get((op.service, self.today), (0, op.total, 0))
        granted = used + op.cost <= op.total
        if granted:
            used += op.cost
        else:
            rejected += 1
        self.rows[(op.service, self.today)] = (used, op.total, rejected)
        return granted, used

    def adjust(self, op: Adjust) -> Row:
        """Add delta, flooring at zero."""
        used, total, rejected = self.rows.get((op.service, op.day), (0, op.total, 0))
        row = (max(used + op.delta, 0), total, rejected)
        self.rows[(op.service, op.day)] = row
        return row

    def record(self, op: Events) -> tuple[int, int]:
        """Add unseen events; returns (accepted, duplicates)."""
        accepted = 0
        for item in op.batch:
            if item.id in self.seen:
                continue
            self.seen.add(item.id)
            accepted += 1
            used, total, rejected = self.rows.get((item.service, item.day), (0, op.total, 0))
            self.rows[(item.service, item.day)] = (used + item.amount, total, rejected)
        return accepted, len(op.batch) - accepted

    def usage(self, service: str) -> list[tuple[date, int, int, int]]:
        """The stored days of a service, ascending."""
        return sorted((day, *row) for (svc, day), row in self.rows.items() if svc == service)


# Driving a store ----------------------------------------------------------------------
class Harness:
    """One opened store on one event loop; each sequence runs on an account of its own.

    Opening (and migrating) a SQL store per example would dominate the run time, so the
    store lives for the whole test and every example gets a fresh account; event ids are
    prefixed with the account id because stores de-duplicate them globally.
    """

    def __init__(self, runner: asyncio.Runner, url: str) -> None:
        self.runner = runner
        self.stores = stores_from_url(url)
        self.sequences = itertools.count()
        runner.run(self._open())

    async def _open(self) -> None:
        await self.stores.open()
        for name in SERVICES:
            await self.stores.records.create_service(Service(name, "", CREATED))
        plan = Plan("plan", {name: Quota.daily(10) for name in SERVICES}, (), CREATED)
        await self.stores.records.create_plan(plan)

    def close(self) -> None:
        """Close the store."""
        self.runner.run(self.stores.close())

    def run_sequence(self, ops: list[Op]) -> None:
        """Apply ``ops`` to a new account and to the model, comparing after each step."""
        account = f"acct-{next(self.sequences)}"
        self.runner.run(
            create_account(
                self.stores,
                Account(account, "Acct", "plan", "UTC", AccountStatus.ACTIVE, Overrides(), CREATED),
            )
        )
        model = Model()
        for op in ops:
            self.runner.run(apply(self.stores.counters, account, model, op))
            self.runner.run(compare(self.stores.counters, account, model))


@contextmanager
def harness(kind: str, tmp_path: Path) -> Iterator[Harness]:
    """A harness over a fresh store of ``kind``."""
    with asyncio.Runner() as runner, store_url(kind, tmp_path) as url:
        opened = Harness(runner, url)
        try:
            yield opened
        finally:
            opened.close()


async def apply(counters: CounterStore, account: str, model: Model, op: Op) -> None:
    """Run one operation on the store and the model and compare what they answer."""
    if isinstance(op, Consume):
        outcome = await counters.consume(account, op.service, model.today, op.cost, op.total)
        expected = model.consume(op)
        assert (outcome.granted, outcome.used) == expected, op
        assert (outcome.total, outcome.day, outcome.replayed) == (op.total, model.today, False)
    elif isinstance(op, Adjust):
        row = await counters.adjust(account, op.service, op.day, op.delta, op.total)
        assert (row.day, row.used, row.total, row.rejected) == (op.day, *model.adjust(op)), op
    elif isinstance(op, Events):
        batch = [
            UsageEvent(
                f"{account}/{item.id}",
                account,
                item.service,
                item.amount,
                item.day,
                op.total,
                datetime.combine(item.day, datetime.min.time(), tzinfo=UTC),
            )
            for item in op.batch
        ]
        recorded = await counters.record_events(batch)
        assert (recorded.accepted, recorded.duplicates) == model.record(op), op
    else:
        model.today = op.day


async def compare(counters: CounterStore, account: str, model: Model) -> None:
    """Every stored day of both services equals the model's."""
    for service in SERVICES:
        rows = await counters.usage(account, service, DAYS[0], DAYS[-1])
        stored = [(r.day, r.used, r.total, r.rejected) for r in rows]
        assert stored == model.usage(service), service
        for r in rows:
            assert r.used >= 0
            assert r.remaining == max(r.total - r.used, 0)


@pytest.mark.parametrize("kind", STORES)
def test_store_matches_model(kind: str, tmp_path: Path) -> None:
    """Consume, adjust, events and day changes leave each store's days equal to the model's."""
    with harness(kind, tmp_path) as run:

        @settings(
            max_examples=EXAMPLES.get(kind, 25),
            phases=tuple(Phase) if kind in IN_PROCESS else (Phase.explicit, Phase.generate),
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(ops=st.lists(operations, min_size=1, max_size=25))
        def check(ops: list[Op]) -> None:
            run.run_sequence(ops)

        check()


@pytest.mark.parametrize("kind", STORES)
def test_model_edge_cases(kind: str, tmp_path: Path) -> None:
    """Fixed sequences hit the rules random ones might miss: zero totals, floors, repeats."""
    ev = Event
    with harness(kind, tmp_path) as run:
        run.run_sequence(
            [
                Consume("insights", 3, 3),  # exactly reaches the total
                Consume("insights", 0, 3),  # cost 0 at the total is granted
                Consume("insights", 1, 3),  # refused: rejected 1, used unchanged
                Consume("insights", 1, 5),  # a higher total: granted, stored total follows
                Consume("insights", 4, 2),  # a lower total than used: refused, total becomes 2
                Adjust("insights", DAYS[0], -100, 9),  # floors at 0, keeps the stored total 2
                Adjust("scoring", DAYS[1], -5, 7),  # a new row floored at 0 with total 7
                Adjust("scoring", DAYS[2], 4, 7),  # a new row with used 4
                Events((ev("ev-0", "scoring", DAYS[2], 9), ev("ev-0", "scoring", DAYS[2], 9)), 1),
                Events((ev("ev-0", "scoring", DAYS[3], 2), ev("ev-1", "scoring", DAYS[3], 2)), 1),
                MoveTo(DAYS[2]),
                Consume("scoring", 0, 20),  # 13 + 0 <= 20
                Consume("scoring", 8, 20),  # 13 + 8 > 20: refused
                Consume("scoring", 0, 0),  # past the total through events: even cost 0 is refused
                MoveTo(DAYS[3]),
                Consume("scoring", 0, 1),  # 2 + 0 > 1: refused, total stays 1
                Consume("insights", 0, 0),  # a new row with cost 0 and total 0 is granted
                # a duplicate id on a day with no row adds nothing and creates no row...
                Events((ev("ev-2", "insights", DAYS[1], 0), ev("ev-2", "insights", DAYS[2], 5)), 4),
                # ...so a later adjust of that day makes it, with the adjust's total
                Adjust("insights", DAYS[2], 1, 6),
            ],
        )
