"""Credits and reservations (SPEC 10): grants, refills, the ledger, and the slots a debit
is decided through.

Amounts are kept in micro-credits (integers): a service's ``credit_price`` may be a
fraction (0.002 credits a token), and a debit of ``cost * price`` must still be exact so
that the ledger sums to the balance to the unit. The API shows credits as numbers.

A debit is decided by the counter store in the same atomic step as the call's limits
(``limits.decide``), through two slots per live grant, in draw order:

- ``CREDIT``: the grant's cumulative debit, period ``GRANT_PERIOD``, held to the grant's
  amount. The pool of a call's CREDIT slots owes the call's whole debit (each slot's
  ``cost``); each takes what it can of what is still owed, in order. A hard pool that
  cannot pay it all refuses the call (CREDITS_EXHAUSTED); nothing moves.
- ``LEDGER``: what the grant gave on the call's local day (period: the ISO date), moved by
  the take of the CREDIT slot just before it. The ledger's debits are these counters.

A give-back (a reservation settled for less, cancelled or expired) moves the CREDIT slot
by minus what it gives and a ``back:<day>`` counter (TALLY) by plus: the ledger shows it
as an ``adjustment``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from decimal import Decimal, InvalidOperation
from enum import StrEnum
from typing import Any, NamedTuple

from quotad.domain import days
from quotad.domain.limits import CREDIT, LEDGER, TALLY, Slot, Window, span

# Builds a named tuple without its Python-level ``__new__`` (a reserve builds a few).
_new = tuple.__new__

MICROS = 1_000_000
MAX_CREDITS = 10**9  # a grant's amount, in credits: 10^15 micro-credits, MAX_TOTAL
GRANT_PERIOD = "grant"  # the period of a grant's cumulative debit counter
BACK_PREFIX = "back:"  # the period of a grant's give-backs on a day: back:<ISO date>
REFILL_PREFIX = "refill-"  # a refill grant's id: refill-<window>-<period>
DEFAULT_TTL_SECONDS = 300
MAX_TTL_SECONDS = 7 * 86_400


def counter_name(grant_id: str) -> str:
    """The name of a grant's counters (a dot: never a service's day row)."""
    return f"credits.{grant_id}"


def to_micros(value: object, *, allow_zero: bool = False) -> int:
    """Credits given as a JSON number, in micro-credits. Raises ``ValueError``.

    At most six decimals; above zero (or zero with ``allow_zero``); at most a billion.
    """
    if isinstance(value, bool) or not isinstance(value, int | float | str | Decimal):
        raise ValueError("must be a number")  # noqa: TRY004 - one error for bad input
    try:
        exact = Decimal(str(value))
    except InvalidOperation:
        raise ValueError("must be a number") from None
    if not exact.is_finite():
        raise ValueError("must be a finite number")
    micros = exact * MICROS
    if micros != micros.to_integral_value():
        raise ValueError("at most 6 decimal places")
    if micros < 0 or (micros == 0 and not allow_zero):
        raise ValueError("must be above 0" if not allow_zero else "must not be negative")
    if micros > MAX_CREDITS * MICROS:
        raise ValueError(f"must be at most {MAX_CREDITS}")
    return int(micros)


def from_micros(micros: int) -> int | float:
    """Micro-credits as the API shows them: a whole number when whole."""
    if micros % MICROS == 0:
        return micros // MICROS
    return micros / MICROS


def debit_of(cost: int, price_micros: int) -> int:
    """The micro-credits a call of ``cost`` units debits at ``price_micros`` a unit."""
    return cost * price_micros


class GrantKind(StrEnum):
    """Where a grant came from."""

    GRANT = "grant"  # an operator's
    REFILL = "refill"  # a plan's refill, one per window


@dataclass(frozen=True, slots=True)
class Grant:
    """Credits given to an account (``amount`` micro-credits), drawn from until they run
    out, expire or are voided. What is left is the counter store's (its CREDIT slot)."""

    id: str
    account_id: str
    amount: int
    created_at: datetime
    expires_at: datetime | None = None
    priority: int = 0
    note: str = ""
    kind: GrantKind = GrantKind.GRANT
    voided_at: datetime | None = None
    voided: int = 0  # what was left when voided (micro-credits)

    def live(self, now: datetime) -> bool:
        """Whether it may be drawn from at ``now``."""
        if self.voided_at is not None and self.voided_at <= now:
            return False
        return self.expires_at is None or now < self.expires_at


def draw_order(grants: Iterable[Grant]) -> list[Grant]:
    """Grants in the order a debit draws from them: the one expiring first, then the
    highest priority, then the oldest (then by id, so every node agrees)."""

    def key(grant: Grant) -> tuple[bool, float, int, float, str]:
        expires = grant.expires_at.timestamp() if grant.expires_at is not None else 0.0
        return (
            grant.expires_at is None,
            expires,
            -grant.priority,
            grant.created_at.timestamp(),
            grant.id,
        )

    return sorted(grants, key=key)


def credit_slots(grants: Sequence[Grant], debit: int, day: date, now: datetime) -> tuple[Slot, ...]:
    """The slots of a debit of ``debit`` micro-credits on ``day``: a CREDIT and a LEDGER
    slot per grant live at ``now``, in draw order. No live grant: one CREDIT slot of a
    total of 0, so the pool still refuses (``NO_GRANT``)."""
    iso = day.isoformat()
    slots: list[Slot] = []
    for grant in draw_order(g for g in grants if g.live(now)):
        name = counter_name(grant.id)
        slots.append(Slot(name, GRANT_PERIOD, grant.amount, CREDIT, debit))
        slots.append(Slot(name, iso, 0, LEDGER, 0))
    if not slots:
        slots.append(Slot(NO_GRANT, GRANT_PERIOD, 0, CREDIT, debit))
    return tuple(slots)


NO_GRANT = "credits.none"  # the CREDIT slot of an account without a live grant


def credits_until(grants: Iterable[Grant], now: datetime) -> datetime | None:
    """The first instant after ``now`` at which the set of live grants changes by itself
    (the next expiry or void): prepared slots are good until then."""
    moments = [
        moment
        for grant in grants
        for moment in (grant.expires_at, grant.voided_at)
        if moment is not None and moment > now
    ]
    return min(moments, default=None)


def takes(slots: Sequence[Slot], before: Sequence[int], after: Sequence[int]) -> dict[str, int]:
    """What each grant gave to a granted call (by grant id), from its CREDIT slots' values
    before and after."""
    given: dict[str, int] = {}
    for index, slot in enumerate(slots):
        if slot.mode == CREDIT and slot.name != NO_GRANT:
            taken = after[index] - before[index]
            if taken:
                given[slot.name.removeprefix("credits.")] = taken
    return given


def give_back_slots(given: Mapping[str, int], day: date) -> tuple[Slot, ...]:
    """The TALLY slots that give ``given`` (micro-credits by grant id) back: each grant's
    cumulative debit down, and its ``back:<day>`` counter (the ledger's adjustment) up."""
    slots: list[Slot] = []
    for grant_id, amount in given.items():
        if amount <= 0:
            continue
        name = counter_name(grant_id)
        slots.append(Slot(name, GRANT_PERIOD, 0, TALLY, -amount))
        slots.append(Slot(name, f"{BACK_PREFIX}{day.isoformat()}", 0, TALLY, amount))
    return tuple(slots)


# Refills ------------------------------------------------------------------------------
class RefillMode(StrEnum):
    """What a refill does at each window's start."""

    RESET = "reset"  # the window's refill is ``amount``; what is left expires at its end
    TOP_UP = "top_up"  # brings what is left of refills up to ``amount``; it carries over


@dataclass(frozen=True, slots=True)
class Refill:
    """A plan's refill: ``amount`` micro-credits every ``window``."""

    amount: int
    window: Window
    mode: RefillMode = RefillMode.RESET
    billing: bool = False  # a month window on the account's billing anchor

    def to_json(self) -> dict[str, Any]:
        """The refill as the API writes it."""
        body: dict[str, Any] = {
            "amount": from_micros(self.amount),
            "window": self.window.value,
            "mode": self.mode.value,
        }
        if self.billing:
            body["anchor"] = "billing"
        return body


class CreditError(ValueError):
    """Bad credits input; ``problems`` are ``(location, message)`` pairs."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


def parse_refill(value: object, where: tuple[str | int, ...] = ("refill",)) -> Refill | None:
    """A plan's ``refill`` from JSON (None stays None). Raises ``CreditError``."""
    if value is None:
        return None
    if not isinstance(value, Mapping):
        raise CreditError([(where, 'expected {"amount", "window", "anchor"?, "mode"?}')])
    problems: list[tuple[tuple[str | int, ...], str]] = []
    unknown = set(value) - {"amount", "window", "anchor", "mode"}
    if unknown:
        problems.append((where, f"unknown field(s) {sorted(unknown)}"))
    amount = 0
    try:
        amount = to_micros(value.get("amount"))
    except ValueError as exc:
        problems.append(((*where, "amount"), f"amount {exc}"))
    window = value.get("window")
    # Each membership test only on text: a JSON object is not hashable.
    if not isinstance(window, str) or window not in Window._value2member_map_:
        allowed = ", ".join(repr(w.value) for w in Window)
        problems.append(((*where, "window"), f"unknown window {window!r}: one of {allowed}"))
    mode = value.get("mode", "reset")
    if not isinstance(mode, str) or mode not in RefillMode._value2member_map_:
        problems.append(((*where, "mode"), "mode is 'reset' or 'top_up'"))
    anchor = value.get("anchor", "calendar")
    if not isinstance(anchor, str) or anchor not in ("calendar", "billing"):
        problems.append(((*where, "anchor"), "anchor is 'calendar' or 'billing'"))
    elif anchor == "billing" and window != "month":
        problems.append(((*where, "anchor"), "only a month window has a billing anchor"))
    if problems:
        raise CreditError(problems)
    return Refill(amount, Window(str(window)), RefillMode(mode), anchor == "billing")


def decode_refill(value: object) -> Refill | None:
    """A stored refill back (``Refill.to_json``'s form)."""
    return parse_refill(value)


def refill_grant(
    refill: Refill, account_id: str, timezone: str, anchor_day: int, now: datetime, left: int
) -> Grant:
    """The grant of the refill window holding ``now``: made at the window's start, its id
    the window's (``refill-<window>-<period>``: one per window, whoever makes it).

    ``left`` is what earlier refills still hold (for ``top_up``: the grant brings it up to
    the amount). A reset refill expires at the window's end.
    """
    window = span(refill.window, now, timezone, anchor_day if refill.billing else None)
    grant_id = f"{REFILL_PREFIX}{refill.window.value}-{window.period}"
    if refill.mode is RefillMode.RESET:
        return Grant(
            grant_id, account_id, refill.amount, window.start, window.end, 0, "", GrantKind.REFILL
        )
    return Grant(
        grant_id,
        account_id,
        max(refill.amount - left, 0),
        window.start,
        None,
        0,
        "",
        GrantKind.REFILL,
    )


def refill_window_end(refill: Refill, timezone: str, anchor_day: int, now: datetime) -> datetime:
    """When the refill window holding ``now`` ends (the next refill is due)."""
    return span(refill.window, now, timezone, anchor_day if refill.billing else None).end


# The ledger -----------------------------------------------------------------------------
class LedgerKind(StrEnum):
    """The kinds of ledger entries (SPEC 10)."""

    GRANT = "grant"
    REFILL = "refill"
    EXPIRY = "expiry"
    DEBIT = "debit"
    VOID = "void"
    ADJUSTMENT = "adjustment"


@dataclass(frozen=True, slots=True)
class LedgerEntry:
    """One line of an account's ledger; ``amount`` is signed (micro-credits)."""

    id: str
    at: datetime
    kind: LedgerKind
    grant_id: str
    amount: int
    balance_after: int = 0


@dataclass(frozen=True, slots=True)
class GrantUse:
    """What a grant's counters say: its cumulative debit, and per local day its debits and
    give-backs (each counter as the store holds it)."""

    debited: int
    debits: Mapping[date, int]
    backs: Mapping[date, int]


def remaining(grant: Grant, use: GrantUse, now: datetime) -> int:
    """What is left of a grant to draw from at ``now`` (0 once expired or voided)."""
    if not grant.live(now):
        return 0
    return max(grant.amount - use.debited, 0)


def ledger(
    grants: Sequence[Grant], uses: Mapping[str, GrantUse], timezone: str, now: datetime
) -> list[LedgerEntry]:
    """Every entry of an account's ledger, oldest first, with the balance after each.

    Derived from the grants and their counters, so it sums to the balance exactly: a
    grant (or refill) adds its amount when made; each local day's debits of a grant are
    one entry (at the end of that day, or now for today), its give-backs another; what was
    left of a grant when it expired or was voided leaves in one entry then.
    """
    entries: list[LedgerEntry] = []
    for grant in grants:
        use = uses.get(grant.id, GrantUse(0, {}, {}))
        kind = LedgerKind.REFILL if grant.kind is GrantKind.REFILL else LedgerKind.GRANT
        entries.append(LedgerEntry(f"{grant.id}:0", grant.created_at, kind, grant.id, grant.amount))
        for day, amount in use.debits.items():
            if amount:
                at = min(days.next_reset(day, timezone) - timedelta(microseconds=1), now)
                entries.append(
                    LedgerEntry(
                        f"{grant.id}:d:{day.isoformat()}", at, LedgerKind.DEBIT, grant.id, -amount
                    )
                )
        for day, amount in use.backs.items():
            if amount:
                at = min(days.next_reset(day, timezone) - timedelta(microseconds=1), now)
                entries.append(
                    LedgerEntry(
                        f"{grant.id}:b:{day.isoformat()}",
                        at,
                        LedgerKind.ADJUSTMENT,
                        grant.id,
                        amount,
                    )
                )
        left = max(grant.amount - use.debited, 0)
        ended = _ended(grant, now)
        if ended is not None and left:
            kind_end = LedgerKind.VOID if ended[1] else LedgerKind.EXPIRY
            entries.append(LedgerEntry(f"{grant.id}:x", ended[0], kind_end, grant.id, -left))
    # At one instant (today's entries are all at now): what expired (a window's reset
    # refill ends as the next begins), what came in, what was drawn, what was given back,
    # then what was voided; so no balance shows more than was there.
    entries.sort(key=lambda entry: (entry.at, _RANK[entry.kind], entry.id))
    balance = 0
    result = []
    for entry in entries:
        balance += entry.amount
        result.append(replace(entry, balance_after=balance))
    return result


_RANK = {
    LedgerKind.EXPIRY: -1,  # never at its own grant's creation (it expires after it)
    LedgerKind.GRANT: 0,
    LedgerKind.REFILL: 0,
    LedgerKind.DEBIT: 1,
    LedgerKind.ADJUSTMENT: 2,
    LedgerKind.VOID: 3,
}


def _ended(grant: Grant, now: datetime) -> tuple[datetime, bool] | None:
    """When a grant stopped being drawn from, and whether by a void (None: it has not)."""
    voided = grant.voided_at if grant.voided_at is not None and grant.voided_at <= now else None
    expired = grant.expires_at if grant.expires_at is not None and grant.expires_at <= now else None
    if voided is not None and (expired is None or voided <= expired):
        return voided, True
    if expired is not None:
        return expired, False
    return None


def ledger_days(grant: Grant, timezone: str, now: datetime) -> list[date]:
    """The local days a grant could have been drawn from (or given back to): from its
    creation to now (give-backs may come after it ended, while reservations settle)."""
    first = days.local_day(grant.created_at, timezone)
    last = days.local_day(now, timezone)
    count = max((last - first).days + 1, 1)
    return [first + timedelta(days=n) for n in range(count)]


# Reservations ---------------------------------------------------------------------------
class ReservationStatus(StrEnum):
    """Where a reservation stands."""

    PENDING = "pending"
    COMMITTED = "committed"
    CANCELLED = "cancelled"
    EXPIRED = "expired"


class Reservation(NamedTuple):
    """Units a verify consumed at once (``reserve``), settled later by commit or cancel, or
    given back when ``expires_at`` passes.

    A named tuple rather than a frozen dataclass: as immutable, and built several times
    faster (a frozen dataclass sets each of its 14 fields through ``object.__setattr__``),
    which a reserve and its commit each do.

    ``moved`` are the counters the verify moved (day rows and window quotas; not rates,
    not credit slots), each the slot as the verify decided it (name, period, total, mode)
    but with ``cost`` = what it moved; ``given`` is what each grant gave (micro-credits by
    grant id). A settlement gives back from exactly these, and a larger commit checks its
    extra against the same slots. ``items`` are the verify's ``(service, cost)`` pairs;
    ``reserved`` their summed cost.
    """

    id: str
    account_id: str
    key_id: str | None
    items: tuple[tuple[str, int], ...]
    day: date
    moved: tuple[Slot, ...]
    given: Mapping[str, int]
    price: int  # micro-credits a unit of cost (0: unpriced), for a larger commit's extra
    created_at: datetime
    expires_at: datetime
    status: ReservationStatus = ReservationStatus.PENDING
    committed: int = 0
    overage: int = 0
    settled_at: datetime | None = None

    @property
    def reserved(self) -> int:
        """The units reserved: the items' costs summed."""
        return sum(cost for _, cost in self.items)

    def settled_as(
        self, status: ReservationStatus, committed: int, overage: int, at: datetime
    ) -> Reservation:
        """This reservation settled (``_replace``'s result, built directly: a commit builds
        one)."""
        fields = (*self[:10], status, committed, overage, at)
        return _new(Reservation, fields)


def moved_counters(
    slots: Sequence[Slot],
    before: Sequence[int],
    after: Sequence[int],
    items: tuple[tuple[str, int], ...],
    day: str,
) -> tuple[Slot, ...]:
    """What a granted call of ``items`` moved (a ``Reservation``'s ``moved``): every window
    and day row among ``slots`` (not rates, not credits), as decided, with ``cost`` what
    it moved; ``day`` is the call's day (ISO), which each item's day row is of."""
    if len(slots) == 1:  # a version-1 call: its day row alone, kept whatever it moved
        name, period, total, mode, _, interval = slots[0]
        return (_new(Slot, (name, period, total, mode, after[0] - before[0], interval)),)
    # Nothing reserved: keep the first item's counters though they did not move, for a
    # larger commit's extra is theirs (as its debit is at the first item's price).
    nothing = not any(cost for _, cost in items)
    moved = []
    item = 0
    for index, slot in enumerate(slots):
        if (
            index
            and item + 1 < len(items)
            and (slot.name, slot.period) == (items[item + 1][0], day)
        ):
            item += 1  # the next item's day row: its slots follow
        if slot.interval or slot.mode >= CREDIT:
            continue
        cost = after[index] - before[index]
        # The first day row stays: a settlement's consume leads with it.
        if cost or index == 0 or (nothing and item == 0):
            # The slot with this cost, built directly (``_replace`` costs several times more).
            name, period, total, mode, _, interval = slot
            moved.append(_new(Slot, (name, period, total, mode, cost, interval)))
    return tuple(moved)


@dataclass(slots=True)
class Hold:
    """A reservation a verify asks its consume to make in the same atomic step (SPEC 10):
    everything but what the consume decides. A store that keeps reservations with its
    counters stores ``reservation_of`` a granted consume and sets ``made`` once that is
    committed; one that keeps them elsewhere (Redis) leaves ``made`` None."""

    id: str
    items: tuple[tuple[str, int], ...]
    created_at: datetime
    expires_at: datetime
    price: int = 0  # the first item's service's, set by verify from what it admitted
    made: Reservation | None = None

    def reservation_of(
        self,
        account_id: str,
        day: date,
        slots: Sequence[Slot],
        before: Sequence[int],
        after: Sequence[int],
    ) -> Reservation:
        """The pending reservation of a granted consume of ``slots`` (the first its day row
        of ``day``), their values ``before`` and ``after`` it."""
        moved = moved_counters(slots, before, after, self.items, day.isoformat())
        given = takes(slots, before, after)
        fields = (self.id, account_id, None, self.items, day, moved, given, self.price)
        pending = (ReservationStatus.PENDING, 0, 0, None)
        return _new(Reservation, (*fields, self.created_at, self.expires_at, *pending))


def reservation_ttl(value: object) -> int:
    """A verify's ``ttl_seconds`` (None: the default). Raises ``ValueError``."""
    if value is None:
        return DEFAULT_TTL_SECONDS
    if isinstance(value, float) and value.is_integer():
        value = int(value)  # 300.0 is JSON Schema's integer 300
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_TTL_SECONDS:
        raise ValueError(f"ttl_seconds must be a whole number from 1 to {MAX_TTL_SECONDS}")
    return value


def scaled(moved: Sequence[Slot], reserved: int, actual: int) -> tuple[Slot, ...]:
    """The give-back of settling ``reserved`` units at ``actual`` (< reserved): each moved
    counter down by its share of the difference (whole units, never more than it moved)."""
    if reserved <= 0:
        return ()
    back = []
    for slot in moved:
        share = slot.cost - slot.cost * actual // reserved  # integers: exact past 2**53
        if share:
            back.append(slot._replace(cost=-share))
    return tuple(back)
