"""Limits version 2 (SPEC 9): window quotas and rates, their modes, and their counters.

A plan gives each service a tuple of ``LimitSpec``; an account's overrides replace a
plan's limit of the same identity (window or rate, and ``per``) or add one; a key's own
limits only narrow. ``applicable`` resolves the tuple that applies to one call.

Every limit is decided through a *slot*: one counter of the store, named and keyed by
its window, with the total it is held to. A verify hands the store every slot of the
call, and the store runs ``refusing`` and ``advanced`` over the stored values in one
atomic step (memory and SQL call these functions; Redis's script mirrors them).
"""

from __future__ import annotations

import calendar
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta, tzinfo
from enum import StrEnum
from typing import Any, NamedTuple, TypeVar

from quotad.domain import days

_E = TypeVar("_E", bound=StrEnum)


class Window(StrEnum):
    """The calendar windows a quota can count over."""

    MINUTE = "minute"
    HOUR = "hour"
    DAY = "day"
    WEEK = "week"
    MONTH = "month"
    YEAR = "year"


class Mode(StrEnum):
    """What a limit does when a call would pass it."""

    HARD = "hard"  # refuse
    SOFT = "soft"  # let it through; report the overage
    SHADOW = "shadow"  # let it through; report that it would have refused


class Per(StrEnum):
    """Whose counter a limit keeps."""

    ACCOUNT = "account"
    KEY = "key"


# Version-1 customer names of each window's usage item (``<service>.<adjective>_queries``).
ADJECTIVES = {
    Window.MINUTE: "minutely",
    Window.HOUR: "hourly",
    Window.DAY: "daily",
    Window.WEEK: "weekly",
    Window.MONTH: "monthly",
    Window.YEAR: "yearly",
}
# From the shortest window to the longest: a day row's fallback total is the first longer one.
WINDOW_ORDER = tuple(Window)


@dataclass(frozen=True, slots=True)
class LimitSpec:
    """One limit of one service: a window quota (``window`` set) or a rate (``per_second``).

    For a rate, ``total`` is its burst.
    """

    total: int
    window: Window | None = Window.DAY
    per_second: float = 0.0
    billing: bool = False  # a month window anchored on the account's billing day
    mode: Mode = Mode.HARD
    per: Per = Per.ACCOUNT

    @property
    def is_rate(self) -> bool:
        """Whether this is a rate (a token bucket) rather than a window quota."""
        return self.window is None

    @property
    def identity(self) -> tuple[str, Per]:
        """What an override of the same limit shares with it: window or rate, and ``per``."""
        return ("rate" if self.window is None else self.window.value, self.per)

    @property
    def is_v1(self) -> bool:
        """Whether this is version 1's quota: a hard daily total the account shares."""
        return (
            self.window is Window.DAY
            and self.mode is Mode.HARD
            and self.per is Per.ACCOUNT
            and not self.billing
        )

    def name(self, service: str) -> str:
        """``<service>.<window>`` or ``<service>.rate``, with ``.key`` when per key."""
        base = f"{service}.{self.identity[0]}"
        return f"{base}.key" if self.per is Per.KEY else base

    def to_json(self) -> dict[str, Any]:
        """The limit as the API writes it (SPEC 9's shape)."""
        body: dict[str, Any]
        if self.window is None:
            per_second: float | int = self.per_second
            if float(per_second).is_integer():
                per_second = int(per_second)
            body = {"rate": {"per_second": per_second, "burst": self.total}}
        else:
            body = {"window": self.window.value, "total": self.total}
            if self.billing:
                body["anchor"] = "billing"
        if self.mode is not Mode.HARD:
            body["mode"] = self.mode.value
        if self.per is not Per.ACCOUNT:
            body["per"] = self.per.value
        return body


Limits = tuple[LimitSpec, ...]


def daily(total: int) -> Limits:
    """Version 1's quota, ``{"total": N}``: one hard daily total the account shares."""
    return (LimitSpec(total),)


class LimitError(ValueError):
    """A limit list that cannot be used; ``problems`` are ``(location, message)`` pairs."""

    def __init__(self, problems: list[tuple[tuple[str | int, ...], str]]) -> None:
        super().__init__("; ".join(message for _, message in problems))
        self.problems = problems


MAX_TOTAL = 10**15
DUPLICATE = "two limits of the same"  # how a duplicate limit's problem begins
_LIMIT_FIELDS = {"window", "total", "anchor", "mode", "per", "rate"}


def parse_limits(value: object, where: tuple[str | int, ...] = ()) -> Limits:
    """A service's limits from the JSON the API takes: version 1's ``{"total": N}`` (with an
    optional ``"period": "day"``) or version 2's list. Raises ``LimitError``."""
    problems: list[tuple[tuple[str | int, ...], str]] = []
    if isinstance(value, Mapping):
        unknown = set(value) - {"total", "period"}
        if unknown:
            problems.append((where, f"unknown field(s) {sorted(unknown)}"))
        if value.get("period", "day") != "day":
            problems.append(((*where, "period"), "the version-1 form counts per day only"))
        # Version 1 took a total of 0 (nothing a day): its form still does.
        total = _positive_int(value.get("total"), (*where, "total"), problems, minimum=0)
        if problems:
            raise LimitError(problems)
        return daily(total)
    if not isinstance(value, list):
        raise LimitError([(where, 'expected a list of limits (or {"total": N})')])
    limits: list[LimitSpec] = []
    seen: set[tuple[str, Per]] = set()
    for index, item in enumerate(value):
        spec = _parse_one(item, (*where, index), problems)
        if spec is None:
            continue
        if spec.identity in seen:
            problems.append(
                (
                    (*where, index),
                    f"{DUPLICATE} {spec.identity[0]!r} and per {spec.per.value!r}",
                )
            )
        seen.add(spec.identity)
        limits.append(spec)
    if problems:
        raise LimitError(problems)
    return tuple(limits)


def _parse_one(
    item: object, where: tuple[str | int, ...], problems: list[tuple[tuple[str | int, ...], str]]
) -> LimitSpec | None:
    if not isinstance(item, Mapping):
        problems.append((where, 'a limit is an object: {"window", "total"} or {"rate"}'))
        return None
    before = len(problems)
    unknown = set(item) - _LIMIT_FIELDS
    if unknown:
        problems.append((where, f"unknown field(s) {sorted(unknown)}"))
    mode = _choice(item.get("mode", "hard"), Mode, (*where, "mode"), problems)
    per = _choice(item.get("per", "account"), Per, (*where, "per"), problems)
    if "rate" in item:
        if "window" in item or "total" in item or "anchor" in item:
            problems.append((where, "a rate has no window, total or anchor"))
        rate = item["rate"]
        if not isinstance(rate, Mapping):
            problems.append(((*where, "rate"), 'expected {"per_second": R, "burst": B}'))
            return None
        if set(rate) - {"per_second", "burst"}:
            problems.append(((*where, "rate"), "a rate has only per_second and burst"))
        if "burst" not in rate:
            problems.append(((*where, "rate", "burst"), "a rate needs a burst"))
            return None
        per_second = rate.get("per_second")
        if (
            isinstance(per_second, bool)
            or not isinstance(per_second, int | float)
            or not math.isfinite(per_second)
            or per_second <= 0
            or per_second > 1e6
        ):
            problems.append(((*where, "rate", "per_second"), "per_second must be a number above 0"))
        burst = _positive_int(rate.get("burst"), (*where, "rate", "burst"), problems)
        if len(problems) > before or mode is None or per is None:
            return None
        return LimitSpec(burst, None, float(per_second), False, mode, per)  # type: ignore[arg-type]
    window = _choice(item.get("window"), Window, (*where, "window"), problems)
    total = _positive_int(item.get("total"), (*where, "total"), problems)
    anchor = item.get("anchor", "calendar")
    if anchor not in ("calendar", "billing"):
        problems.append(((*where, "anchor"), "anchor is 'calendar' or 'billing'"))
    elif anchor == "billing" and window is not Window.MONTH:
        problems.append(((*where, "anchor"), "only a month window has a billing anchor"))
    if len(problems) > before or window is None or mode is None or per is None:
        return None
    return LimitSpec(total, window, 0.0, anchor == "billing", mode, per)


def _positive_int(
    value: object,
    where: tuple[str | int, ...],
    problems: list[tuple[tuple[str | int, ...], str]],
    minimum: int = 1,
) -> int:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int) or not minimum <= value <= MAX_TOTAL:
        problems.append((where, f"must be a whole number from {minimum} to {MAX_TOTAL}"))
        return 0
    return value


def _choice(
    value: object,
    kind: type[_E],
    where: tuple[str | int, ...],
    problems: list[tuple[tuple[str | int, ...], str]],
) -> _E | None:
    if not isinstance(value, str) or value not in kind._value2member_map_:
        allowed = ", ".join(repr(member.value) for member in kind)
        problems.append((where, f"unknown {where[-1]} {value!r}: one of {allowed}"))
        return None
    return kind(value)


def render(limits: Limits) -> dict[str, Any] | list[dict[str, Any]]:
    """A service's limits as the API writes them: version 1's ``{"total": N}`` when that is
    all they are (so a version-1 client reads back what it wrote), else the list."""
    if len(limits) == 1 and limits[0].is_v1:
        return {"total": limits[0].total, "period": "day"}
    return [limit.to_json() for limit in limits]


def render_override(limits: Limits) -> dict[str, Any] | list[dict[str, Any]]:
    """An account's override of a service as the API writes it: version 1's
    ``{"total": N}`` when it is only a daily total, else the list."""
    if len(limits) == 1 and limits[0].is_v1:
        return {"total": limits[0].total}
    return [limit.to_json() for limit in limits]


def merged(base: Limits, overrides: Limits | None) -> Limits:
    """``base`` with each limit of ``overrides`` replacing the one of its identity, or added."""
    if not overrides:
        return base
    replaced = {limit.identity: limit for limit in overrides}
    kept = [replaced.pop(limit.identity, limit) for limit in base]
    return (*kept, *[limit for limit in overrides if limit.identity in replaced])


def narrowed(limits: Limits, own: Limits | None) -> Limits:
    """``limits`` with a key's own limits (each per key): a key limit of the same window or
    rate as a per-key limit keeps the smaller of the two; any other is added."""
    if not own:
        return limits
    result = list(limits)
    for limit in own:
        keyed = LimitSpec(
            limit.total, limit.window, limit.per_second, limit.billing, limit.mode, Per.KEY
        )
        for index, present in enumerate(result):
            if present.identity == keyed.identity:
                if _wider(keyed, present):
                    keyed = present
                result[index] = keyed
                break
        else:
            result.append(keyed)
    return tuple(result)


def _wider(limit: LimitSpec, other: LimitSpec) -> bool:
    if limit.is_rate:
        return limit.total > other.total or limit.per_second > other.per_second
    return limit.total > other.total


def wider_than(own: Limits, account: Limits) -> list[tuple[int, str]]:
    """The key limits in ``own`` wider than the account's limit of the same window or rate:
    ``(index, reason)`` pairs (a key's limits only narrow)."""
    problems = []
    for index, limit in enumerate(own):
        for present in account:
            if present.identity[0] == limit.identity[0] and _wider(limit, present):
                what = "rate" if limit.is_rate else f"{limit.identity[0]} total"
                problems.append(
                    (
                        index,
                        f"a key's {what} cannot be wider than the account's ({present.to_json()})",
                    )
                )
                break
    return problems


# Windows -----------------------------------------------------------------------------
class Span(NamedTuple):
    """One window: when it starts and ends (UTC), and the id its counter is stored under."""

    start: datetime
    end: datetime
    period: str


def anchor_date(year: int, month: int, anchor: int) -> date:
    """The billing day ``anchor`` in a month; a shorter month's last day stands in."""
    return date(year, month, min(anchor, calendar.monthrange(year, month)[1]))


def _months(day: date, months: int) -> tuple[int, int]:
    index = day.year * 12 + day.month - 1 + months
    return index // 12, index % 12 + 1


def span(window: Window, instant: datetime, tz: str, anchor: int | None = None) -> Span:
    """The window of kind ``window`` holding ``instant`` in zone ``tz``.

    ``anchor`` (1-31) anchors a month window on the billing day. Minute and hour windows
    start when the local clock reads :00 (so a +05:45 zone's hours start at :15 UTC);
    their ids are their UTC start instants, unambiguous across a DST change. Day and
    longer windows start at local midnight, their ids the local date they start on.
    """
    if window is Window.MINUTE:
        start = instant.astimezone(UTC).replace(second=0, microsecond=0)
        return Span(start, start + timedelta(minutes=1), start.strftime("%Y-%m-%dT%H:%MZ"))
    if window is Window.HOUR:
        return _hour_span(instant, days.zone(tz))
    today = days.local_day(instant, tz)
    first: date
    following: date
    if window is Window.DAY:
        first, following = today, today + timedelta(days=1)
    elif window is Window.WEEK:
        first = today - timedelta(days=today.weekday())
        following = first + timedelta(days=7)
    elif window is Window.MONTH:
        if anchor is None:
            first = today.replace(day=1)
            following = date(*_months(first, 1), 1)
        else:
            first = anchor_date(today.year, today.month, anchor)
            if today < first:
                first = anchor_date(*_months(today, -1), anchor)
            following = anchor_date(*_months(first, 1), anchor)
    else:
        first, following = date(today.year, 1, 1), date(today.year + 1, 1, 1)
    return Span(days.day_start(first, tz), days.day_start(following, tz), first.isoformat())


def _hour_span(instant: datetime, zone: tzinfo) -> Span:
    """The hour window holding ``instant``: from the last instant the local clock read :00
    to the next one. Away from an offset change that is the local hour; across a
    half-hour change (Lord Howe) the clock may read :00 after 30 or 90 minutes, and across
    a fold it reads the same :00 twice."""
    utc = instant.astimezone(UTC)
    local = utc.astimezone(zone)
    start = utc - timedelta(
        minutes=local.minute, seconds=local.second, microseconds=local.microsecond
    )
    end = start + timedelta(hours=1)
    offset = local.utcoffset()
    if start.astimezone(zone).utcoffset() == offset == end.astimezone(zone).utcoffset():
        return Span(start, end, start.strftime("%Y-%m-%dT%H:%MZ"))
    # An offset changes within the hour: every instant around it at which the clock
    # reads :00 (a wall time in a gap reads nothing; one in a fold reads twice).
    wall = local.replace(tzinfo=None, minute=0, second=0, microsecond=0)
    marks = set()
    for hours in range(-3, 4):
        for fold in (0, 1):
            at = (wall + timedelta(hours=hours)).replace(tzinfo=zone, fold=fold).astimezone(UTC)
            if at.astimezone(zone).replace(tzinfo=None) == wall + timedelta(hours=hours):
                marks.add(at)
    start = max(mark for mark in marks if mark <= utc)
    end = min(mark for mark in marks if mark > utc)
    return Span(start, end, start.strftime("%Y-%m-%dT%H:%MZ"))


# Slots and the decision --------------------------------------------------------------
HARD, SOFT, SHADOW, TALLY = 0, 1, 2, 3  # a slot's mode; TALLY only counts (a day row)
# Credits (SPEC 10, ``quotad.domain.credits``): a grant's cumulative debit, drawn from as
# one pool with the call's other CREDIT slots; and what it gave on a day (follows the
# CREDIT slot just before it). CREDIT_TAKE is a pool that takes what there is, never
# refusing (a reservation's extra, settled as overage past what is left).
CREDIT, LEDGER, CREDIT_TAKE = 4, 5, 6
MODES = {Mode.HARD: HARD, Mode.SOFT: SOFT, Mode.SHADOW: SHADOW}
RATE_PERIOD = "rate"  # the period of a rate's slot: it has one bucket, not windows


class Slot(NamedTuple):
    """One counter a consume checks and moves.

    ``name`` is the service for the account's day row, else the limit's name (with
    ``:<key id>`` when per key); ``period`` the window's id (``RATE_PERIOD`` for a rate).
    A window counter holds units used; a rate's holds its GCRA theoretical arrival time
    in microseconds since the epoch, and ``interval`` is its microseconds per token
    (0 for a window). ``total`` is the window's total, or the rate's burst.
    """

    name: str
    period: str
    total: int
    mode: int
    cost: int
    interval: int = 0


def fits(slot: Slot, value: int, now_us: int) -> bool:
    """Whether ``slot`` has room for its cost, its counter at ``value``."""
    if slot.interval:
        return max(value, now_us) + slot.cost * slot.interval - now_us <= slot.total * slot.interval
    return value + slot.cost <= slot.total


def decide(values: Sequence[int], slots: Sequence[Slot], now_us: int) -> tuple[int, list[int]]:
    """The decision of a consume, in one pass: the index of the first hard slot without
    room (-1: the call passes) and every counter as it is if the call passes.

    Windows move by their cost (past the total for a soft or shadow limit); a rate's
    bucket moves only when the tokens are there (``fits``, written out here: this runs
    on every verify). Credit slots (mode CREDIT or above) form one pool that owes the
    first one's cost: each takes ``min(owed, total - value)`` in order, and each LEDGER
    slot moves by the take before it; a hard pool left owing refuses at its first slot.
    """
    refused = -1
    after = []
    owed = -1  # what the credit pool still owes (-1: no pool yet)
    taken = pool = 0
    index = -1
    # Unpacked, not read by attribute: a slot's fields by name cost a lookup each.
    for _name, _period, total, mode, cost, interval in slots:
        index += 1
        value = values[index]
        if mode >= CREDIT:
            if mode == LEDGER:
                after.append(value + taken)
                continue
            if owed < 0:
                owed, pool = cost, index
            left = total - value
            taken = owed if owed < left else (left if left > 0 else 0)
            owed -= taken
            after.append(value + taken)
            continue
        if interval:
            moved = (value if value > now_us else now_us) + cost * interval
            room = moved - now_us <= total * interval
            after.append(moved if room else value)
        else:
            moved = value + cost
            room = moved <= total
            after.append(moved)
        if not room and refused < 0 and mode == HARD:
            refused = index
    if owed > 0 and slots[pool].mode == CREDIT and (refused < 0 or pool < refused):
        refused = pool
    return refused, after


def refusing(values: Sequence[int], slots: Sequence[Slot], now_us: int) -> int:
    """The index of the first hard slot without room (-1: the call passes)."""
    return decide(values, slots, now_us)[0]


def advanced(values: Sequence[int], slots: Sequence[Slot], now_us: int) -> list[int]:
    """Every counter after a granted call (``decide``)."""
    return decide(values, slots, now_us)[1]


def with_day_row(
    service: str, day: date, total: int, mode: int, cost: int, extra: tuple[Slot, ...]
) -> tuple[Slot, ...]:
    """A consume's slots: its day row (``service`` on ``day``, within ``total``), then
    ``extra``. (Built without the named tuple's keyword ``__new__``: once per consume.)"""
    return (tuple.__new__(Slot, (service, day.isoformat(), total, mode, cost, 0)), *extra)


def is_day_row(slot: Slot) -> bool:
    """Whether ``slot`` is a service's day row (where refused calls are counted)."""
    return "." not in slot.name


def interval_us(per_second: float) -> int:
    """Microseconds per token of a rate, at least 1."""
    return max(round(1_000_000 / per_second), 1)


class LimitState(NamedTuple):
    """Where one limit stands after a verify (a verdict's ``limits`` entry)."""

    name: str
    service: str
    limit: LimitSpec
    used: int
    total: int
    reset: datetime
    overage: int = 0
    would_refuse: bool = False
    retry_after: int | None = None  # a refusing rate: seconds until the tokens are there
    window_start: datetime | None = None

    @property
    def remaining(self) -> int:
        """Units (or tokens) left, never negative."""
        return max(self.total - self.used, 0)


def rate_state(value: int, slot: Slot, now_us: int) -> tuple[int, datetime]:
    """A rate bucket's tokens in use and when it is full again, its counter at ``value``."""
    # Fields by index and no min(): this runs for every rate of every verify.
    ahead = value - now_us
    if ahead <= 0:  # a full bucket
        return 0, _moment(now_us / 1e6, UTC)
    used = -(-ahead // slot[5])  # the tokens ``ahead`` holds (interval each), rounded up
    total = slot[2]
    return (used if used < total else total), _moment(value / 1e6, UTC)


_moment = datetime.fromtimestamp


def rate_wait(value: int, slot: Slot, now_us: int) -> int:
    """Whole seconds (rounded up) until a rate has room for ``slot.cost``."""
    needed = max(value, now_us) + slot.cost * slot.interval - slot.total * slot.interval - now_us
    return max(math.ceil(needed / 1e6), 0)


def exhausted_at(used: int, total: int, window: Span, now: datetime) -> datetime | None:
    """When a window's total runs out at the pace of its use so far; ``None`` if it will not
    within the window (or nothing is used yet). Already exhausted: ``now``."""
    if used >= total:
        return now
    elapsed = (now - window.start).total_seconds()
    if used <= 0 or elapsed <= 0:
        return None
    at = now + timedelta(seconds=(total - used) * elapsed / used)
    return at if at < window.end else None


def usage_item_name(service: str, window: Window) -> str:
    """A window's ``/v1/usages`` item name, ``<service>.<adjective>_queries``."""
    return f"{service}.{ADJECTIVES[window]}_queries"


def windows_of(limits: Iterable[LimitSpec]) -> list[Window]:
    """The distinct windows of ``limits`` (rates have none), shortest first."""
    present = {limit.window for limit in limits if limit.window is not None}
    return [window for window in WINDOW_ORDER if window in present]


# Stored forms -------------------------------------------------------------------------
def encode(limits: Limits) -> dict[str, Any] | list[dict[str, Any]]:
    """A service's limits as stored (plans, dump lines): ``render``'s form."""
    return render(limits)


def decode(value: object) -> Limits:
    """Stored limits back: version 1's ``{"total": N}`` or ``N`` (an account's override as
    0.1 stored it), or the list. Raises ``LimitError`` for anything else."""
    if isinstance(value, int) and not isinstance(value, bool):
        return (LimitSpec(value),)  # 0.1 allowed a total of 0 (nothing a day): kept as is
    if isinstance(value, Mapping) and isinstance(value.get("total"), int) and value["total"] == 0:
        return (LimitSpec(0),)
    return parse_limits(value)


def encode_all(quotas: Mapping[str, Limits]) -> dict[str, Any]:
    """Every service's limits as stored."""
    return {service: encode(limits) for service, limits in quotas.items()}


def decode_all(value: Mapping[str, object] | None) -> dict[str, Limits]:
    """Every service's stored limits back."""
    return {service: decode(stored) for service, stored in (value or {}).items()}
