"""Usage days: which calendar day an instant falls on for an account, and when it ends.

A usage day is a calendar date in the account's IANA timezone. Its quota resets at
the next local midnight, which is not always 24 hours away (DST), so the reset is
computed from the zone rather than by adding a day in UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError, available_timezones

MAX_WINDOW_DAYS = 90
# Events older than this are refused: their ids are only remembered this long.
EVENT_RETENTION = timedelta(days=MAX_WINDOW_DAYS)


@lru_cache(maxsize=1024)
def zone(name: str) -> ZoneInfo:
    """The ZoneInfo for an IANA name; raises ``ValueError`` for an unknown one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown timezone {name!r}") from exc


def is_timezone(name: str) -> bool:
    """Whether ``name`` is an IANA timezone this machine knows."""
    return name in _known_zones()


@lru_cache(maxsize=1)
def _known_zones() -> frozenset[str]:
    return frozenset(available_timezones()) | {"UTC"}


def local_day(instant: datetime, tz: str) -> date:
    """The calendar date of ``instant`` in zone ``tz``."""
    return instant.astimezone(zone(tz)).date()


def day_start(day: date, tz: str) -> datetime:
    """The UTC instant at which ``day`` begins in zone ``tz``."""
    local = datetime.combine(day, time.min, tzinfo=zone(tz))
    return local.astimezone(UTC)


def next_reset(day: date, tz: str) -> datetime:
    """The UTC instant at which the quota of ``day`` resets (the next local midnight)."""
    return day_start(day + timedelta(days=1), tz)


def seconds_until(instant: datetime, now: datetime) -> int:
    """Whole seconds from ``now`` to ``instant``, rounded up, never negative."""
    delta = (instant - now).total_seconds()
    whole = int(delta)
    if whole < delta:
        whole += 1
    return max(whole, 0)


def days_between(start: date, end: date) -> list[date]:
    """Every date from ``start`` to ``end`` inclusive, ascending."""
    return [start + timedelta(days=offset) for offset in range((end - start).days + 1)]


def parse_rfc3339(text: str) -> datetime | None:
    """``text`` as an RFC 3339 instant (a date, ``T``, a time and its offset, any case);
    ``None`` for anything looser: a bare date or number, a time without its offset."""
    upper = text.upper()
    try:
        instant = datetime.fromisoformat(upper) if "T" in upper else None
    except ValueError:
        return None
    return instant if instant is not None and instant.tzinfo is not None else None


def rfc3339(instant: datetime) -> str:
    """``instant`` as an RFC 3339 string in UTC with a ``Z`` suffix."""
    return instant.astimezone(UTC).isoformat().replace("+00:00", "Z")
