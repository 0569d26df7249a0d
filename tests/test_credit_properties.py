"""Every store's credit slots (SPEC 10) against a plain model of the balance.

Random grants (amounts, expiries, priorities, creation times) see random debits (from a
hard pool, CREDIT, or one that takes what there is, CREDIT_TAKE), give-backs and clock
steps. The model is SPEC 10 written out with dictionaries, without ``limits.decide``:

- a debit draws from the grants live at the clock (not yet expired), the one expiring
  first, then the highest priority, then the oldest; each gives ``min(owed, left)`` and
  the debit goes on into the next;
- a hard pool that cannot pay the whole debit refuses the call and nothing moves; so
  does the call's day limit (a hard day row, cost 1), which is checked first; a taking
  pool takes what there is and never refuses;
- each grant's debit on the day is recorded (its LEDGER counter), a give-back lowers its
  cumulative debit and raises its ``back:<day>`` counter.

After every call the outcome (granted, the refusing slot) and every counter (each grant's
cumulative debit, its day's debit and give-backs, the day row's use) equal the model's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st

from quotad.domain.credits import (
    BACK_PREFIX,
    GRANT_PERIOD,
    Grant,
    counter_name,
    credit_slots,
    give_back_slots,
    scaled,
)
from quotad.domain.limits import CREDIT, CREDIT_TAKE, HARD, TALLY, Slot
from quotad.domain.models import Account, AccountStatus, Overrides
from quotad.storage import CounterStore
from tests.conftest import STORES, create_account
from tests.test_limits_properties import SERVICE, harness

START = datetime(2024, 2, 28, 20, tzinfo=UTC)  # a day's end and a leap day within reach
EXAMPLES = {"memory": 150, "sqlite": 50, "postgresql": 15, "redis": 15}
IN_PROCESS = ("memory", "sqlite")


@dataclass(frozen=True)
class Debit:
    """A call of cost 1 debiting ``amount``, from a hard pool or a taking one."""

    amount: int
    take: bool


@dataclass(frozen=True)
class GiveBack:
    """Give back up to ``amount`` of what grant ``index`` (modulo their number) gave."""

    index: int
    amount: int


@dataclass(frozen=True)
class Step:
    """The clock moves on ``hours``."""

    hours: int


Op = Debit | GiveBack | Step

grant_specs = st.lists(
    st.tuples(
        st.integers(1, 20),  # amount
        st.none() | st.integers(1, 8),  # expires this many hours after START
        st.integers(0, 2),  # priority
        st.integers(0, 5),  # created this many hours before START
    ),
    min_size=0,
    max_size=4,
)
operations = st.one_of(
    st.builds(Debit, st.integers(1, 15), st.booleans()),
    st.builds(GiveBack, st.integers(0, 3), st.integers(1, 10)),
    st.builds(Step, st.integers(1, 3)),
)


def make_grants(account: str, specs: list[tuple[int, int | None, int, int]]) -> list[Grant]:
    """The grants of a sequence, ``g1``… in the order given."""
    return [
        Grant(
            f"g{n}",
            account,
            amount,
            START - timedelta(hours=before),
            None if expires is None else START + timedelta(hours=expires),
            priority,
        )
        for n, (amount, expires, priority, before) in enumerate(specs, start=1)
    ]


@dataclass
class Model:
    """The balance as SPEC 10 states it: counters by ``(name, period)``."""

    grants: list[Grant]
    day_total: int
    values: dict[tuple[str, str], int] = field(default_factory=dict)

    def get(self, name: str, period: str) -> int:
        """A counter's value (0 when never moved)."""
        return self.values.get((name, period), 0)

    def add(self, name: str, period: str, amount: int) -> None:
        """Move a counter."""
        self.values[name, period] = self.get(name, period) + amount

    def ordered(self, now: datetime) -> list[Grant]:
        """The grants live at ``now``, in the order a debit draws from them."""
        live = [g for g in self.grants if g.expires_at is None or now < g.expires_at]

        def first(grant: Grant) -> tuple[int, datetime, int, datetime, str]:
            never = grant.expires_at is None
            expires = START + timedelta(days=365) if grant.expires_at is None else grant.expires_at
            return (int(never), expires, -grant.priority, grant.created_at, grant.id)

        return sorted(live, key=first)

    def debit(self, op: Debit, now: datetime) -> tuple[bool, int]:
        """Apply a debit: (granted, the refusing slot's index, -1 none)."""
        day = now.date().isoformat()
        if self.get(SERVICE, day) + 1 > self.day_total:
            return False, 0
        live = self.ordered(now)
        left = {g.id: max(g.amount - self.get(counter_name(g.id), GRANT_PERIOD), 0) for g in live}
        if not op.take and sum(left.values()) < op.amount:
            return False, 1
        self.add(SERVICE, day, 1)
        owed = op.amount
        for grant in live:
            given = min(owed, left[grant.id])
            owed -= given
            self.add(counter_name(grant.id), GRANT_PERIOD, given)
            self.add(counter_name(grant.id), day, given)
        return True, -1

    def give_back(self, grant_id: str, amount: int, day: str) -> None:
        """Give ``amount`` back to a grant."""
        self.add(counter_name(grant_id), GRANT_PERIOD, -amount)
        self.add(counter_name(grant_id), f"{BACK_PREFIX}{day}", amount)


async def drive(
    counters: CounterStore, account: str, grants: list[Grant], day_total: int, ops: list[Op]
) -> None:
    """Run ``ops`` on the store and the model, comparing after every call."""
    model = Model(grants, day_total)
    now = START
    days: set[str] = set()
    for op in ops:
        day = now.date()
        days.add(day.isoformat())
        if isinstance(op, Step):
            now += timedelta(hours=op.hours)
            continue
        if isinstance(op, GiveBack):
            if not grants:
                continue
            grant = grants[op.index % len(grants)]
            amount = min(op.amount, model.get(counter_name(grant.id), GRANT_PERIOD))
            if amount <= 0:
                continue
            outcome = await counters.consume(
                account,
                SERVICE,
                day,
                0,
                day_total,
                now=now,
                extra=give_back_slots({grant.id: amount}, day),
                day_mode=TALLY,
            )
            assert outcome.granted, op
            model.give_back(grant.id, amount, day.isoformat())
        else:
            extra = credit_slots(grants, op.amount, day, now)
            if op.take:
                extra = tuple(
                    s._replace(mode=CREDIT_TAKE) if s.mode == CREDIT else s for s in extra
                )
            outcome = await counters.consume(
                account, SERVICE, day, 1, day_total, now=now, extra=extra, day_mode=HARD
            )
            expected = model.debit(op, now)
            assert (outcome.granted, outcome.refused) == expected, (op, now)
        keys = [(SERVICE, d) for d in sorted(days)]
        for grant in grants:
            name = counter_name(grant.id)
            keys.append((name, GRANT_PERIOD))
            for d in sorted(days):
                keys += [(name, d), (name, f"{BACK_PREFIX}{d}")]
        stored = await counters.read_counters(account, keys)
        assert stored == [model.get(*key) for key in keys], (op, now)


@pytest.mark.parametrize("kind", STORES)
def test_credit_slots_match_the_model(kind: str, tmp_path: Path) -> None:
    """Random grants, debits (hard or taking pools), give-backs and clock steps: each store
    draws, refuses and records exactly as the model does."""
    with harness(kind, tmp_path) as run:

        @settings(
            max_examples=EXAMPLES.get(kind, 15),
            phases=tuple(Phase) if kind in IN_PROCESS else (Phase.explicit, Phase.generate),
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            specs=grant_specs,
            day_total=st.integers(1, 12),
            ops=st.lists(operations, min_size=1, max_size=25),
        )
        def check(
            specs: list[tuple[int, int | None, int, int]], day_total: int, ops: list[Op]
        ) -> None:
            account = f"acct-{next(run.sequences)}"
            run.runner.run(
                create_account(
                    run.stores,
                    Account(
                        account, "Acct", "plan", "UTC", AccountStatus.ACTIVE, Overrides(), START
                    ),
                )
            )
            grants = make_grants(account, specs)
            run.runner.run(drive(run.counters, account, grants, day_total, ops))

        check()


def test_scaled_gives_back_exactly_at_large_costs() -> None:
    """A give-back's share is exact integer division, even past a float's 53 bits."""
    moved = (Slot("insights", "2024-11-07", 0, TALLY, 600_000_000),)
    (back,) = scaled(moved, 999_999_937, 121_693_114)
    assert back.cost == -(600_000_000 - 600_000_000 * 121_693_114 // 999_999_937)
