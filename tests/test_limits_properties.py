"""Every store's multi-slot consume (Limits v2) against a plain Python model.

Random plans of one to four limits (calendar windows and rates; hard, soft and shadow;
per account and per key) see random calls, clock steps and changes of their totals.
The model is SPEC 9's decision written out with dictionaries:

- a call's slots are its service's day row (the per-account day limit, or a ``TALLY``
  row that only counts) and one slot per other limit, keyed by the window the clock is
  in (``limits.span``) or ``rate``;
- the call is granted iff every hard slot has room: a window's ``used + cost <= total``;
  a rate's GCRA bucket, its theoretical arrival time ``tat``, has room iff
  ``max(tat, now) + cost * interval - now <= burst * interval``;
- granted, every window moves by ``cost`` (soft and shadow past their totals) and every
  rate with room moves its ``tat``; refused, nothing moves and the day row counts one
  rejection.

The store is told the simulated clock (``now``); a rate is decided at the clock the store
reports (``at_us``), so a store that keeps its own clock is held to the same rule. After
every call the outcome (granted, the first refusing slot, every counter before) and every
counter the sequence has touched (``read_counters``, and the day rows' ``usage``) equal
the model's.
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

from quotad.domain.limits import (
    HARD,
    MODES,
    RATE_PERIOD,
    TALLY,
    Mode,
    Per,
    Slot,
    Window,
    interval_us,
    span,
)
from quotad.domain.models import Account, AccountStatus, Overrides, Plan, Quota, Service
from quotad.storage import CounterStore, stores_from_url
from tests.conftest import STORES, create_account, store_url

SERVICE = "insights"
START = datetime(2024, 2, 28, 23, 58, 30, tzinfo=UTC)  # near a day, month and leap-day edge
CREATED = datetime(2024, 1, 1, tzinfo=UTC)
ZONES = ("UTC", "America/New_York", "Asia/Kathmandu", "Australia/Lord_Howe")
KEYS = ("k1", "k2")
# Examples per store: every example is a fresh account on one opened store; the
# networked stores get fewer (and no shrinking, which can take minutes over a network).
EXAMPLES = {"memory": 120, "sqlite": 40, "postgresql": 20, "redis": 20}
IN_PROCESS = ("memory", "sqlite")


# A plan and the operations on it ----------------------------------------------------------
@dataclass(frozen=True)
class Limit:
    """One limit of the random plan: a window (``window`` set) or a rate."""

    window: Window | None
    total: int  # a window's total, a rate's burst
    mode: Mode
    per: Per
    per_second: float = 0.0

    @property
    def name(self) -> str:
        """The counter's name, before the key id a per-key limit adds."""
        base = f"{SERVICE}.{'rate' if self.window is None else self.window.value}"
        return f"{base}.key" if self.per is Per.KEY else base

    @property
    def is_day_row(self) -> bool:
        """Whether this limit is the service's day row (the per-account day limit)."""
        return self.window is Window.DAY and self.per is Per.ACCOUNT


@dataclass(frozen=True)
class Call:
    """One verify: ``cost`` units through key ``key``."""

    cost: int
    key: str


@dataclass(frozen=True)
class Step:
    """The clock moves on by ``seconds``."""

    seconds: float


@dataclass(frozen=True)
class Retotal:
    """The plan's limit ``index`` (modulo the plan's size) gets a new total (or burst)."""

    index: int
    total: int


Op = Call | Step | Retotal

totals = st.integers(min_value=1, max_value=12)
window_limits = st.builds(
    Limit,
    window=st.sampled_from(list(Window)),
    total=totals,
    mode=st.sampled_from(list(Mode)),
    per=st.sampled_from(list(Per)),
)
rate_limits = st.builds(
    Limit,
    window=st.none(),
    total=st.integers(min_value=1, max_value=6),
    mode=st.sampled_from(list(Mode)),
    per=st.sampled_from(list(Per)),
    per_second=st.sampled_from([0.5, 1.0, 2.0, 10.0]),
)
plans = st.lists(
    st.one_of(window_limits, rate_limits),
    min_size=1,
    max_size=4,
    unique_by=lambda limit: (limit.window, limit.per),
)
operations: st.SearchStrategy[Op] = st.one_of(
    st.builds(Call, cost=st.integers(min_value=0, max_value=5), key=st.sampled_from(KEYS)),
    st.builds(Call, cost=st.integers(min_value=0, max_value=5), key=st.sampled_from(KEYS)),
    # From "the same microsecond" to past every window's end.
    st.builds(Step, seconds=st.sampled_from([0, 0.1, 0.5, 1, 7, 45, 3600, 86400, 40 * 86400])),
    st.builds(Retotal, index=st.integers(0, 3), total=totals),
)


# The model ---------------------------------------------------------------------------
def slots_of(plan: list[Limit], call: Call, now: datetime, tz: str) -> tuple[Slot, ...]:
    """The call's slots, the day row first (as a verify hands them to the store)."""
    day = span(Window.DAY, now, tz).period
    day_limit = next((limit for limit in plan if limit.is_day_row), None)
    first = (
        Slot(SERVICE, day, day_limit.total, MODES[day_limit.mode], call.cost)
        if day_limit is not None
        else Slot(SERVICE, day, 0, TALLY, call.cost)
    )
    others = []
    for limit in plan:
        if limit.is_day_row:
            continue
        name = f"{limit.name}:{call.key}" if limit.per is Per.KEY else limit.name
        if limit.window is None:
            interval = interval_us(limit.per_second)
            others.append(
                Slot(name, RATE_PERIOD, limit.total, MODES[limit.mode], call.cost, interval)
            )
        else:
            period = span(limit.window, now, tz).period
            others.append(Slot(name, period, limit.total, MODES[limit.mode], call.cost))
    return (first, *others)


def has_room(slot: Slot, value: int, now_us: int) -> bool:
    """Whether a window has ``cost`` units left, or a rate's bucket ``cost`` tokens."""
    if slot.interval:
        return max(value, now_us) + slot.cost * slot.interval - now_us <= slot.total * slot.interval
    return value + slot.cost <= slot.total


@dataclass
class Model:
    """Counters by ``(name, period)``; day rows also keep ``[total, rejected]``."""

    values: dict[tuple[str, str], int] = field(default_factory=dict)
    day_rows: dict[str, list[int]] = field(default_factory=dict)  # period -> [total, rejected]

    def consume(self, slots: tuple[Slot, ...], now_us: int) -> tuple[bool, int, tuple[int, ...]]:
        """(granted, index of the first refusing hard slot or -1, every value before)."""
        before = tuple(self.values.get((slot.name, slot.period), 0) for slot in slots)
        refused = next(
            (
                index
                for index, slot in enumerate(slots)
                if slot.mode == HARD and not has_room(slot, before[index], now_us)
            ),
            -1,
        )
        for index, slot in enumerate(slots):
            key = (slot.name, slot.period)
            if "." not in slot.name:  # the day row: its total follows every call
                row = self.day_rows.setdefault(slot.period, [slot.total, 0])
                row[0] = slot.total
                if refused >= 0:
                    row[1] += 1
            if refused >= 0:
                self.values[key] = before[index]  # read back as it was (0 if never set)
                continue
            if slot.interval:  # a rate moves only when its tokens are there
                tat = max(before[index], now_us) + slot.cost * slot.interval
                has = has_room(slot, before[index], now_us)
                self.values[key] = tat if has else before[index]
            else:
                self.values[key] = before[index] + slot.cost
        return refused < 0, refused, before


# Driving a store -----------------------------------------------------------------------
class Harness:
    """One opened store on one event loop; each example runs on an account of its own."""

    def __init__(self, runner: asyncio.Runner, url: str) -> None:
        self.runner = runner
        self.stores = stores_from_url(url)
        self.sequences = itertools.count()
        runner.run(self._open())

    async def _open(self) -> None:
        await self.stores.open()
        await self.stores.records.create_service(Service(SERVICE, "", CREATED))
        await self.stores.records.create_plan(Plan("plan", {SERVICE: Quota.daily(10)}, (), CREATED))

    @property
    def counters(self) -> CounterStore:
        """The store under test."""
        return self.stores.counters

    def close(self) -> None:
        """Close the store."""
        self.runner.run(self.stores.close())

    def run_sequence(self, tz: str, plan: list[Limit], ops: list[Op]) -> None:
        """Apply ``ops`` to a new account and to the model, comparing after each call."""
        account = f"acct-{next(self.sequences)}"
        self.runner.run(
            create_account(
                self.stores,
                Account(account, "Acct", "plan", tz, AccountStatus.ACTIVE, Overrides(), CREATED),
            )
        )
        self.runner.run(drive(self.counters, account, tz, list(plan), ops))


async def drive(
    counters: CounterStore, account: str, tz: str, plan: list[Limit], ops: list[Op]
) -> None:
    """Run ``ops`` on the store and the model, comparing after every call."""
    model = Model()
    now = START
    for op in ops:
        if isinstance(op, Step):
            now += timedelta(seconds=op.seconds)
            continue
        if isinstance(op, Retotal):
            index = op.index % len(plan)
            plan[index] = Limit(
                plan[index].window,
                op.total,
                plan[index].mode,
                plan[index].per,
                plan[index].per_second,
            )
            continue
        slots = slots_of(plan, op, now, tz)
        first = slots[0]
        outcome = await counters.consume(
            account,
            SERVICE,
            date.fromisoformat(first.period),
            op.cost,
            first.total,
            now=now,
            extra=slots[1:],
            day_mode=first.mode,
        )
        granted, refused, before = model.consume(slots, outcome.at_us)
        where = (op, now.isoformat(), slots)
        assert outcome.before == before, where
        assert (outcome.granted, outcome.refused) == (granted, refused), where
        assert outcome.used == model.values.get((first.name, first.period), 0), where
        await compare(counters, account, model)


async def compare(counters: CounterStore, account: str, model: Model) -> None:
    """Every counter touched so far, and every day row, equals the model's."""
    keys = sorted(model.values)
    stored = await counters.read_counters(account, [*keys, (SERVICE, "2000-01-01")])
    assert stored == [*(model.values[key] for key in keys), 0]
    days = sorted(model.day_rows)
    rows = await counters.usage(
        account, SERVICE, date.fromisoformat(days[0]), date.fromisoformat(days[-1])
    )
    assert [(row.day.isoformat(), row.used, row.total, row.rejected) for row in rows] == [
        (day, model.values.get((SERVICE, day), 0), *model.day_rows[day]) for day in days
    ]


@contextmanager
def harness(kind: str, tmp_path: Path) -> Iterator[Harness]:
    """A harness over a fresh store of ``kind``."""
    with asyncio.Runner() as runner, store_url(kind, tmp_path) as url:
        opened = Harness(runner, url)
        try:
            yield opened
        finally:
            opened.close()


@pytest.mark.parametrize("kind", STORES)
def test_multi_slot_consume_matches_the_model(kind: str, tmp_path: Path) -> None:
    """Random plans, calls, clock steps and total changes: each store decides and counts
    exactly as the model does."""
    with harness(kind, tmp_path) as run:

        @settings(
            max_examples=EXAMPLES.get(kind, 20),
            phases=tuple(Phase) if kind in IN_PROCESS else (Phase.explicit, Phase.generate),
            deadline=None,
            derandomize=True,
            database=None,
            suppress_health_check=[HealthCheck.too_slow],
        )
        @given(
            tz=st.sampled_from(ZONES),
            plan=plans,
            ops=st.lists(operations, min_size=1, max_size=30),
        )
        def check(tz: str, plan: list[Limit], ops: list[Op]) -> None:
            run.run_sequence(tz, plan, ops)

        check()


@pytest.mark.parametrize("kind", STORES)
def test_fixed_sequences_hit_each_rule(kind: str, tmp_path: Path) -> None:
    """Readable sequences for the rules random ones might miss: all or nothing, a soft limit
    past its total, a shadow rate, per-key counters, a burst then the steady rate, the new
    windows after a month's end, a total lowered below the use."""
    day = Limit(Window.DAY, 9, Mode.HARD, Per.ACCOUNT)
    month_soft = Limit(Window.MONTH, 3, Mode.SOFT, Per.ACCOUNT)
    minute_key = Limit(Window.MINUTE, 2, Mode.HARD, Per.KEY)
    rate = Limit(None, 2, Mode.HARD, Per.ACCOUNT, 1.0)  # one token a second, two at most
    with harness(kind, tmp_path) as run:
        run.run_sequence(  # from 2024-02-28 23:58:30 UTC
            "UTC",
            [day, month_soft, minute_key, rate],
            [
                Call(1, "k1"),  # every slot moves
                Call(1, "k1"),  # the burst is spent; k1's minute is full
                Call(1, "k2"),  # refused by the rate: nothing moves, the day counts a rejection
                Step(1),
                Call(1, "k1"),  # a token is back, but k1's minute refuses
                Call(1, "k2"),  # k2 has a minute of its own: granted; the month reaches 3
                Call(0, "k1"),  # cost 0 passes a full minute and an empty bucket
                Step(0.5),
                Call(1, "k2"),  # half a token: refused by the rate
                Step(0.5),
                Call(1, "k2"),  # the whole token: granted, the soft month past its total
                Step(60),
                Call(2, "k1"),  # a new minute, the bucket full again: cost 2 fits exactly
                Retotal(0, 1),  # the day's total drops below its use
                Call(0, "k2"),  # refused by the day: 6 used > 1, even at cost 0
                Step(86400),
                Step(60),  # 2024-03-01 00:00:32: a new day, month and minute
                Call(1, "k2"),  # granted: the new day reaches its total of 1
                Call(1, "k1"),  # refused by the day
            ],
        )
        run.run_sequence(  # from 10:58:30 local (+11)
            "Australia/Lord_Howe",
            [
                Limit(None, 3, Mode.SHADOW, Per.KEY, 10.0),
                Limit(Window.HOUR, 6, Mode.HARD, Per.ACCOUNT),
            ],
            [
                Call(1, "k1"),
                Call(1, "k1"),
                Call(1, "k1"),  # the shadow burst is spent
                Call(1, "k1"),  # granted: a shadow never refuses; its bucket does not move
                Step(3600),
                Call(5, "k2"),  # more than the shadow burst: granted; the new hour takes 5
                Call(2, "k2"),  # refused by the hour: 5 + 2 > 6
            ],
        )
