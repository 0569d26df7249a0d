"""Limits v2's domain (SPEC 9): parsing, rendering, merging, calendar windows, the decision.

Pure functions of ``quotad.domain.limits``: no store, no clock but the instants given.
"""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from quotad.domain import days
from quotad.domain.limits import (
    HARD,
    MAX_TOTAL,
    RATE_PERIOD,
    SHADOW,
    SOFT,
    TALLY,
    LimitError,
    LimitSpec,
    Mode,
    Per,
    Slot,
    Span,
    Window,
    advanced,
    anchor_date,
    decode,
    encode,
    exhausted_at,
    fits,
    interval_us,
    merged,
    narrowed,
    parse_limits,
    rate_state,
    rate_wait,
    refusing,
    render,
    render_override,
    span,
    usage_item_name,
    wider_than,
    windows_of,
)

ZONES = (
    "UTC",
    "America/New_York",
    "Australia/Lord_Howe",
    "Asia/Kathmandu",
    "Pacific/Kiritimati",
)


def at(*parts: int) -> datetime:
    """A UTC instant."""
    return datetime(*parts, tzinfo=UTC)  # type: ignore[misc]


def problems_of(value: object) -> list[tuple[tuple[str | int, ...], str]]:
    """The problems ``parse_limits`` raises for ``value`` (the test fails if it accepts it)."""
    with pytest.raises(LimitError) as raised:
        parse_limits(value, ("quotas", "insights"))
    return raised.value.problems


def locations(value: object) -> list[tuple[str | int, ...]]:
    """Where each problem of ``value`` is."""
    return [where for where, _ in problems_of(value)]


# Parsing ------------------------------------------------------------------------------
def test_the_version_1_form_is_one_hard_daily_quota() -> None:
    """``{"total": N}`` (with or without ``"period": "day"``) is one hard daily total."""
    assert parse_limits({"total": 250}) == (LimitSpec(250),)
    assert parse_limits({"total": 250, "period": "day"}) == (LimitSpec(250, Window.DAY),)
    assert parse_limits({"total": 250.0}) == (LimitSpec(250),)  # a JSON number with .0


def test_a_version_2_list_parses_every_kind_of_limit() -> None:
    """Windows, rates, anchors, modes and per come through as given."""
    parsed = parse_limits(
        [
            {"rate": {"per_second": 10, "burst": 20}},
            {"window": "day", "total": 1000},
            {"window": "month", "total": 20000, "anchor": "billing", "mode": "soft"},
            {"window": "minute", "total": 5, "per": "key", "mode": "shadow"},
        ]
    )
    assert parsed == (
        LimitSpec(20, None, 10.0),
        LimitSpec(1000, Window.DAY),
        LimitSpec(20000, Window.MONTH, billing=True, mode=Mode.SOFT),
        LimitSpec(5, Window.MINUTE, mode=Mode.SHADOW, per=Per.KEY),
    )
    assert parse_limits([]) == ()


@pytest.mark.parametrize(
    ("value", "where"),
    [
        ([{"window": "fortnight", "total": 5}], (0, "window")),
        ([{"total": 5}], (0, "window")),  # a list item names its window
        ([{"window": "day", "total": 0}], (0, "total")),
        ([{"window": "day", "total": -3}], (0, "total")),
        ([{"window": "day", "total": 2.5}], (0, "total")),
        ([{"window": "day", "total": True}], (0, "total")),
        ([{"window": "day", "total": "5"}], (0, "total")),
        ([{"window": "day", "total": MAX_TOTAL + 1}], (0, "total")),
        ([{"window": "day"}], (0, "total")),
        ([{"rate": {"per_second": 5}}], (0, "rate", "burst")),
        ([{"rate": {"per_second": 5, "burst": 0}}], (0, "rate", "burst")),
        ([{"rate": {"per_second": 0, "burst": 5}}], (0, "rate", "per_second")),
        ([{"rate": {"per_second": -1, "burst": 5}}], (0, "rate", "per_second")),
        ([{"rate": {"per_second": float("inf"), "burst": 5}}], (0, "rate", "per_second")),
        ([{"rate": {"per_second": 2e6, "burst": 5}}], (0, "rate", "per_second")),
        ([{"rate": {"per_second": True, "burst": 5}}], (0, "rate", "per_second")),
        ([{"rate": 5}], (0, "rate")),
        ([{"rate": {"per_second": 1, "burst": 1, "jitter": 1}}], (0, "rate")),
        ([{"rate": {"per_second": 1, "burst": 1}, "window": "day"}], (0,)),
        ([{"window": "week", "total": 5, "anchor": "billing"}], (0, "anchor")),
        ([{"window": "day", "total": 5, "anchor": "billing"}], (0, "anchor")),
        ([{"window": "month", "total": 5, "anchor": "payday"}], (0, "anchor")),
        ([{"window": "day", "total": 5, "colour": "red"}], (0,)),
        ([{"window": "day", "total": 5, "mode": "loud"}], (0, "mode")),
        ([{"window": "day", "total": 5, "per": "team"}], (0, "per")),
        ([{"window": "day", "total": 5, "name": "insights.day"}], (0,)),  # derived, never given
        ([5], (0,)),
        ({"total": 5, "window": "day"}, ()),
        ({"total": 5, "period": "week"}, ("period",)),
        ({"total": -1}, ("total",)),  # version 1 took 0 (nothing a day), never less
        ("lots", ()),
    ],
)
def test_a_bad_limit_is_refused_where_it_is(value: object, where: tuple[str | int, ...]) -> None:
    """Each malformed limit is reported at its own location, under the caller's prefix."""
    assert ("quotas", "insights", *where) in locations(value)


def test_two_limits_of_the_same_window_and_per_are_refused() -> None:
    """A second day (or rate) limit per account is refused; per key is a different limit."""
    assert locations([{"window": "day", "total": 5}, {"window": "day", "total": 9}]) == [
        ("quotas", "insights", 1)
    ]
    two_rates = [
        {"rate": {"per_second": 1, "burst": 1}},
        {"rate": {"per_second": 2, "burst": 2}},
    ]
    assert locations(two_rates) == [("quotas", "insights", 1)]
    assert (
        "same 'day' and per 'account'"
        in problems_of([{"window": "day", "total": 5}, {"window": "day", "total": 9}])[0][1]
    )
    both = parse_limits(
        [{"window": "day", "total": 5}, {"window": "day", "total": 9, "per": "key"}]
    )
    assert [limit.per for limit in both] == [Per.ACCOUNT, Per.KEY]


def test_every_problem_of_a_list_is_reported_at_once() -> None:
    """A list with several bad limits names each of them, not only the first."""
    found = locations(
        [
            {"window": "day", "total": 0},
            {"window": "hour", "total": 5},
            {"window": "decade", "total": 5, "mode": "loud"},
        ]
    )
    assert ("quotas", "insights", 0, "total") in found
    assert ("quotas", "insights", 2, "window") in found
    assert ("quotas", "insights", 2, "mode") in found
    assert not any(where[2] == 1 for where in found)


def test_an_error_message_says_what_is_allowed() -> None:
    """An unknown window's message lists the windows there are."""
    (problem,) = problems_of([{"window": "fortnight", "total": 5}])
    assert "'minute'" in problem[1]
    assert "'year'" in problem[1]
    assert str(LimitError([((), "a"), ((), "b")])) == "a; b"


# Rendering and the stored form ----------------------------------------------------------
def test_a_version_1_quota_renders_back_in_the_version_1_form() -> None:
    """A version-1 client reads back what it wrote; an override keeps its 0.1 shape."""
    assert render(parse_limits({"total": 250})) == {"total": 250, "period": "day"}
    assert render(parse_limits([{"window": "day", "total": 250}])) == {
        "total": 250,
        "period": "day",
    }
    assert render_override(parse_limits({"total": 250})) == {"total": 250}
    assert parse_limits(render(parse_limits({"total": 7}))) == (LimitSpec(7),)


def test_anything_beyond_one_hard_daily_total_renders_as_the_list() -> None:
    """A soft, per-key, billing or non-day limit, or two limits, are written as the list."""
    for value in (
        [{"window": "day", "total": 5, "mode": "soft"}],
        [{"window": "day", "total": 5, "per": "key"}],
        [{"window": "month", "total": 5, "anchor": "billing"}],
        [{"window": "week", "total": 5}],
        [{"window": "day", "total": 5}, {"window": "month", "total": 50}],
    ):
        assert render(parse_limits(value)) == value
        assert render_override(parse_limits(value)) == value


limit_json = st.one_of(
    st.builds(
        lambda window, total: {"window": window, "total": total},
        st.sampled_from([w.value for w in Window]),
        st.integers(1, MAX_TOTAL),
    ),
    st.builds(
        lambda rate, burst: {"rate": {"per_second": rate, "burst": burst}},
        st.one_of(st.integers(1, 1_000_000), st.sampled_from([0.5, 2.5, 1e-3])),
        st.integers(1, MAX_TOTAL),
    ),
).flatmap(
    lambda body: st.builds(
        lambda mode, per, billing: {
            **body,
            **({"anchor": "billing"} if billing and body.get("window") == "month" else {}),
            **({"mode": mode} if mode != "hard" else {}),
            **({"per": per} if per != "account" else {}),
        },
        st.sampled_from(["hard", "soft", "shadow"]),
        st.sampled_from(["account", "key"]),
        st.booleans(),
    )
)


def _unique(items: list[dict[str, Any]]) -> list[dict[str, Any]]:
    seen: set[tuple[object, object]] = set()
    kept = []
    for item in items:
        identity = (item.get("window", "rate"), item.get("per", "account"))
        if identity not in seen:
            seen.add(identity)
            kept.append(item)
    return kept


@settings(max_examples=200, deadline=None)
@given(st.lists(limit_json, max_size=6).map(_unique))
def test_render_and_parse_round_trip(value: list[dict[str, Any]]) -> None:
    """Rendering parsed limits gives back the JSON they came from, and parses to them again."""
    parsed = parse_limits(value)
    rendered = render(parsed)
    if isinstance(rendered, dict):  # one hard daily total: written in the version-1 form
        assert value == [{"window": "day", "total": rendered["total"]}]
    else:
        assert rendered == value
    assert parse_limits(rendered) == parsed
    assert decode(encode(parsed)) == parsed


def test_decode_keeps_what_0_1_stored() -> None:
    """An override stored as a bare number, or a total of 0, reads back as a daily total."""
    assert decode(40) == (LimitSpec(40),)
    assert decode(0) == (LimitSpec(0),)
    assert decode({"total": 0}) == (LimitSpec(0),)
    assert decode({"total": 9, "period": "day"}) == (LimitSpec(9),)
    with pytest.raises(LimitError):
        decode("9")
    with pytest.raises(LimitError):
        decode(True)


def test_a_rate_renders_its_per_second_as_given() -> None:
    """A whole rate is written as an integer, a fractional one as a number."""
    assert LimitSpec(3, None, 2.0).to_json() == {"rate": {"per_second": 2, "burst": 3}}
    assert LimitSpec(3, None, 2.5).to_json() == {"rate": {"per_second": 2.5, "burst": 3}}


def test_names_and_usage_items() -> None:
    """A limit's name is derived from its service, window or rate, and per."""
    assert LimitSpec(5, Window.DAY).name("insights") == "insights.day"
    assert LimitSpec(5, None, 1.0, per=Per.KEY).name("insights") == "insights.rate.key"
    assert LimitSpec(5, Window.MONTH, billing=True).name("insights") == "insights.month"
    assert usage_item_name("insights", Window.DAY) == "insights.daily_queries"
    assert usage_item_name("insights", Window.MINUTE) == "insights.minutely_queries"
    assert usage_item_name("insights", Window.YEAR) == "insights.yearly_queries"
    mixed = (LimitSpec(1, Window.YEAR), LimitSpec(1, None, 1.0), LimitSpec(1, Window.HOUR))
    assert windows_of((*mixed, LimitSpec(1, Window.HOUR, per=Per.KEY))) == [
        Window.HOUR,
        Window.YEAR,
    ]


# Merging -----------------------------------------------------------------------------
DAY = LimitSpec(1000, Window.DAY)
MONTH = LimitSpec(20000, Window.MONTH, billing=True, mode=Mode.SOFT)
RATE = LimitSpec(20, None, 10.0)


def test_an_override_replaces_the_limit_of_its_identity_in_place_or_adds_one() -> None:
    """Same window (or rate) and per: replaced where it was; anything else: appended."""
    plan = (RATE, DAY, MONTH)
    day_override = LimitSpec(50, Window.DAY)
    key_day = LimitSpec(7, Window.DAY, per=Per.KEY)
    hour = LimitSpec(9, Window.HOUR)
    assert merged(plan, (day_override,)) == (RATE, day_override, MONTH)
    assert merged(plan, (hour, key_day, day_override)) == (RATE, day_override, MONTH, hour, key_day)
    # A calendar month override replaces a billing one: the identity is the window.
    calendar_month = LimitSpec(5, Window.MONTH)
    assert merged(plan, (calendar_month,)) == (RATE, DAY, calendar_month)
    assert merged(plan, None) == plan
    assert merged(plan, ()) == plan
    assert merged((), (DAY,)) == (DAY,)


def test_a_keys_own_limits_only_narrow() -> None:
    """A key limit keeps the smaller of itself and the per-key limit of its window."""
    per_key_day = LimitSpec(100, Window.DAY, per=Per.KEY)
    account = (DAY, per_key_day)
    smaller = narrowed(account, (LimitSpec(40, Window.DAY),))
    assert smaller == (DAY, LimitSpec(40, Window.DAY, per=Per.KEY))
    larger = narrowed(account, (LimitSpec(400, Window.DAY),))
    assert larger == account
    added = narrowed(account, (LimitSpec(3, Window.MINUTE, mode=Mode.SOFT),))
    assert added == (*account, LimitSpec(3, Window.MINUTE, mode=Mode.SOFT, per=Per.KEY))
    # A per-account limit of the same window stays: the key's counts beside it.
    assert narrowed((DAY,), (LimitSpec(40, Window.DAY),)) == (
        DAY,
        LimitSpec(40, Window.DAY, per=Per.KEY),
    )
    assert narrowed(account, None) == account
    # A rate narrower in one way and wider in the other is not narrower: the account's stays.
    key_rate = LimitSpec(20, None, 10.0, per=Per.KEY)
    assert narrowed((key_rate,), (LimitSpec(5, None, 50.0),)) == (key_rate,)
    assert narrowed((key_rate,), (LimitSpec(5, None, 5.0),)) == (
        LimitSpec(5, None, 5.0, per=Per.KEY),
    )


def test_wider_than_names_each_key_limit_above_the_accounts() -> None:
    """A key's total above the account's of that window, or a faster or deeper rate, is named."""
    account = (RATE, DAY)
    own = (
        LimitSpec(999, Window.DAY),  # narrower
        LimitSpec(1001, Window.DAY, per=Per.KEY),  # wider, whatever its per
        LimitSpec(20, None, 11.0),  # faster
        LimitSpec(21, None, 1.0),  # deeper
        LimitSpec(10**6, Window.HOUR),  # no account limit of that window
    )
    found = wider_than(own, account)
    assert [index for index, _ in found] == [1, 2, 3]
    assert "day total" in found[0][1]
    assert "1000" in found[0][1]
    assert "rate" in found[1][1]
    assert wider_than((LimitSpec(1000, Window.DAY), LimitSpec(20, None, 10.0)), account) == []


# Calendar windows ----------------------------------------------------------------------
def hours(value: timedelta) -> float:
    """A duration in hours."""
    return value.total_seconds() / 3600


def test_a_minute_is_a_utc_minute_whatever_the_zone() -> None:
    """Minutes start on the UTC minute (every zone's offset is whole minutes) and are named by it."""
    for tz in ZONES:
        window = span(Window.MINUTE, at(2024, 3, 10, 7, 5, 59, 999_999), tz)
        assert window == Span(at(2024, 3, 10, 7, 5), at(2024, 3, 10, 7, 6), "2024-03-10T07:05Z")


@pytest.mark.parametrize(
    ("tz", "instant", "start"),
    [
        ("UTC", at(2024, 6, 1, 10, 59, 59), at(2024, 6, 1, 10)),
        ("America/New_York", at(2024, 6, 1, 10, 30), at(2024, 6, 1, 10)),
        ("Asia/Kathmandu", at(2024, 6, 1, 10, 14, 59), at(2024, 6, 1, 9, 15)),  # +05:45
        ("Asia/Kathmandu", at(2024, 6, 1, 10, 15), at(2024, 6, 1, 10, 15)),
        ("Australia/Lord_Howe", at(2024, 6, 1, 10, 29), at(2024, 6, 1, 9, 30)),  # +10:30
        ("Pacific/Kiritimati", at(2024, 6, 1, 10, 0), at(2024, 6, 1, 10)),  # +14
    ],
)
def test_an_hour_starts_when_the_local_clock_reads_00(
    tz: str, instant: datetime, start: datetime
) -> None:
    """An hour window runs from local :00 to local :00, named by its UTC start."""
    window = span(Window.HOUR, instant, tz)
    assert window == Span(start, start + timedelta(hours=1), start.strftime("%Y-%m-%dT%H:%MZ"))
    assert window.start.astimezone(days.zone(tz)).minute == 0


def test_new_york_hours_across_its_dst_changes() -> None:
    """The skipped 02:00 hour does not exist; the repeated 01:00 hour is two windows."""
    # 2024-03-10: 01:59:59 EST (06:59:59Z) is followed by 03:00 EDT (07:00Z).
    assert span(Window.HOUR, at(2024, 3, 10, 6, 30), "America/New_York")[:2] == (
        at(2024, 3, 10, 6),
        at(2024, 3, 10, 7),
    )
    # 2024-11-03: 01:00 EDT (05:00Z) and 01:00 EST (06:00Z) each start an hour.
    first = span(Window.HOUR, at(2024, 11, 3, 5, 30), "America/New_York")
    second = span(Window.HOUR, at(2024, 11, 3, 6, 30), "America/New_York")
    assert first[:2] == (at(2024, 11, 3, 5), at(2024, 11, 3, 6))
    assert second[:2] == (at(2024, 11, 3, 6), at(2024, 11, 3, 7))
    assert first.period != second.period


def test_lord_howe_hours_across_its_half_hour_dst_changes() -> None:
    """Lord Howe moves its clock by 30 minutes: the hour holding a change lasts 90 minutes."""
    tz = "Australia/Lord_Howe"
    # 2024-10-06 02:00 (+10:30, 15:30Z) becomes 02:30 (+11): the clock reads 01:00 at
    # 14:30Z and next reads :00 at 03:00 (16:00Z).
    for instant in (at(2024, 10, 5, 14, 30), at(2024, 10, 5, 15, 29), at(2024, 10, 5, 15, 59)):
        assert span(Window.HOUR, instant, tz) == Span(
            at(2024, 10, 5, 14, 30), at(2024, 10, 5, 16), "2024-10-05T14:30Z"
        )
    assert span(Window.HOUR, at(2024, 10, 5, 16), tz)[:2] == (
        at(2024, 10, 5, 16),
        at(2024, 10, 5, 17),
    )
    assert span(Window.HOUR, at(2024, 10, 5, 14, 29), tz)[:2] == (
        at(2024, 10, 5, 13, 30),
        at(2024, 10, 5, 14, 30),
    )
    # 2024-04-07 02:00 (+11, 15:00Z) becomes 01:30 (+10:30): 01:00 (14:00Z) to 02:00
    # (15:30Z), the half hour 01:30-02:00 read twice.
    for instant in (at(2024, 4, 6, 14), at(2024, 4, 6, 15), at(2024, 4, 6, 15, 29)):
        assert span(Window.HOUR, instant, tz) == Span(
            at(2024, 4, 6, 14), at(2024, 4, 6, 15, 30), "2024-04-06T14:00Z"
        )
    assert span(Window.HOUR, at(2024, 4, 6, 15, 30), tz)[:2] == (
        at(2024, 4, 6, 15, 30),
        at(2024, 4, 6, 16, 30),
    )


@pytest.mark.parametrize(
    ("tz", "day", "length"),
    [
        ("America/New_York", date(2024, 3, 10), 23),
        ("America/New_York", date(2024, 11, 3), 25),
        ("America/New_York", date(2024, 11, 4), 24),
        ("Australia/Lord_Howe", date(2024, 10, 6), 23.5),
        ("Australia/Lord_Howe", date(2024, 4, 7), 24.5),
        ("Asia/Kathmandu", date(2024, 3, 10), 24),
        ("Pacific/Kiritimati", date(2024, 3, 10), 24),
    ],
)
def test_a_day_runs_from_local_midnight_to_local_midnight(
    tz: str, day: date, length: float
) -> None:
    """DST days last 23 and 25 hours (23.5 and 24.5 on Lord Howe), named by the local date."""
    noon = days.day_start(day, tz) + timedelta(hours=12)
    window = span(Window.DAY, noon, tz)
    assert window.period == day.isoformat()
    assert hours(window.end - window.start) == length
    assert window.start.astimezone(days.zone(tz)).replace(tzinfo=None) == datetime(
        day.year, day.month, day.day
    )


def test_kiritimati_and_kathmandu_days_start_at_their_local_midnights() -> None:
    """A +14 day starts at 10:00Z the day before; a +05:45 one at 18:15Z the day before."""
    assert span(Window.DAY, at(2024, 6, 1, 9, 59), "Pacific/Kiritimati") == Span(
        at(2024, 5, 31, 10), at(2024, 6, 1, 10), "2024-06-01"
    )
    assert span(Window.DAY, at(2024, 6, 1, 10), "Pacific/Kiritimati").period == "2024-06-02"
    assert span(Window.DAY, at(2024, 6, 1, 18, 15), "Asia/Kathmandu") == Span(
        at(2024, 6, 1, 18, 15), at(2024, 6, 2, 18, 15), "2024-06-02"
    )


def test_a_week_starts_on_monday_and_a_year_on_january_1st() -> None:
    """Week and year windows start at local midnight of a Monday and of January 1st."""
    week = span(Window.WEEK, at(2024, 3, 10, 12), "America/New_York")  # a Sunday, DST day
    assert week.period == "2024-03-04"
    assert week[:2] == (at(2024, 3, 4, 5), at(2024, 3, 11, 4))  # 167 hours
    assert span(Window.WEEK, at(2024, 3, 11, 4), "America/New_York").period == "2024-03-11"
    year = span(Window.YEAR, at(2024, 12, 31, 10), "Pacific/Kiritimati")
    assert year == Span(at(2024, 12, 31, 10), at(2025, 12, 31, 10), "2025-01-01")


@pytest.mark.parametrize("tz", ZONES)
def test_a_month_read_on_its_first_and_last_second_is_the_same_window(tz: str) -> None:
    """The first and the last second of a month (leap February) give one span."""
    start = days.day_start(date(2024, 2, 1), tz)
    end = days.day_start(date(2024, 3, 1), tz)
    first = span(Window.MONTH, start, tz)
    last = span(Window.MONTH, end - timedelta(seconds=1), tz)
    assert first == last == Span(start, end, "2024-02-01")
    assert span(Window.MONTH, end, tz).period == "2024-03-01"
    assert span(Window.MONTH, start - timedelta(microseconds=1), tz).period == "2024-01-01"


@pytest.mark.parametrize(
    ("anchor", "year", "starts"),
    [
        # Leap year: February's 29th stands in for the 30th and 31st.
        (29, 2024, ["2024-01-29", "2024-02-29", "2024-03-29"]),
        (30, 2024, ["2024-01-30", "2024-02-29", "2024-03-30"]),
        (31, 2024, ["2024-01-31", "2024-02-29", "2024-03-31"]),
        # Non-leap: the 28th stands in for the 29th, 30th and 31st.
        (29, 2023, ["2023-01-29", "2023-02-28", "2023-03-29"]),
        (30, 2023, ["2023-01-30", "2023-02-28", "2023-03-30"]),
        (31, 2023, ["2023-01-31", "2023-02-28", "2023-03-31"]),
    ],
)
def test_billing_months_across_february(anchor: int, year: int, starts: list[str]) -> None:
    """A billing month starts on the anchor day, or the month's last day when it has none."""
    tz = "America/New_York"
    bounds = [date.fromisoformat(start) for start in starts]
    for first, following in itertools.pairwise(bounds):
        expected = Span(days.day_start(first, tz), days.day_start(following, tz), first.isoformat())
        assert span(Window.MONTH, expected.start, tz, anchor) == expected
        last = expected.end - timedelta(seconds=1)
        assert span(Window.MONTH, last, tz, anchor) == expected
    # Every day of January 1st to the anchor is in December's billing month.
    december = span(Window.MONTH, days.day_start(date(year, 1, 1), tz), tz, anchor)
    assert december.period == f"{year - 1}-12-{anchor}"
    assert december.end == days.day_start(bounds[0], tz)


def test_anchor_date_falls_back_to_the_months_last_day() -> None:
    """The 31st of April is the 30th; of February, the 28th or 29th."""
    assert anchor_date(2024, 4, 31) == date(2024, 4, 30)
    assert anchor_date(2023, 2, 30) == date(2023, 2, 28)
    assert anchor_date(2024, 2, 30) == date(2024, 2, 29)
    assert anchor_date(2024, 5, 1) == date(2024, 5, 1)


instants = st.datetimes(
    min_value=datetime(2023, 1, 1), max_value=datetime(2026, 12, 31), timezones=st.just(UTC)
)


@settings(max_examples=600, deadline=None)
@given(
    window=st.sampled_from(list(Window)),
    instant=instants,
    tz=st.sampled_from(ZONES),
    anchor=st.one_of(st.none(), st.integers(1, 31)),
)
def test_consecutive_windows_tile_time(
    window: Window, instant: datetime, tz: str, anchor: int | None
) -> None:
    """A window holds its instant; the next starts at its end, the previous ends at its start."""
    anchor = anchor if window is Window.MONTH else None
    current = span(window, instant, tz, anchor)
    assert current.start <= instant < current.end
    following = span(window, current.end, tz, anchor)
    assert following.start == current.end
    assert following.period != current.period
    previous = span(window, current.start - timedelta(microseconds=1), tz, anchor)
    assert previous.end == current.start
    assert span(window, current.end - timedelta(microseconds=1), tz, anchor) == current
    if window in (Window.MINUTE, Window.HOUR):
        assert current.period == current.start.strftime("%Y-%m-%dT%H:%MZ")
    else:
        assert current.period == days.local_day(current.start, tz).isoformat()


@settings(max_examples=200, deadline=None)
@given(tz=st.sampled_from(ZONES), instant=instants)
def test_hours_around_lord_howe_and_new_york_changes_tile(tz: str, instant: datetime) -> None:
    """An instant within two hours of a DST change lies in one hour window, 30 to 90 minutes long."""
    for change in (at(2024, 10, 5, 15, 30), at(2024, 4, 6, 15), at(2024, 3, 10, 7)):
        moment = change + timedelta(seconds=(instant.timestamp() % 14400) - 7200)
        current = span(Window.HOUR, moment, tz)
        assert current.start <= moment < current.end
        assert span(Window.HOUR, current.end, tz).start == current.end
        assert timedelta(minutes=30) <= current.end - current.start <= timedelta(minutes=90)


# The decision ----------------------------------------------------------------------------
NOW = 1_700_000_000_000_000  # µs


def window_slot(total: int, cost: int, mode: int = HARD, name: str = "insights.month") -> Slot:
    """A window counter's slot."""
    return Slot(name, "2024-02-01", total, mode, cost)


def rate_slot(per_second: float, burst: int, cost: int = 1, mode: int = HARD) -> Slot:
    """A rate's slot."""
    return Slot("insights.rate", RATE_PERIOD, burst, mode, cost, interval_us(per_second))


def test_a_window_fits_up_to_its_total_exactly() -> None:
    """``used + cost <= total``: reaching the total fits, passing it does not; cost 0 at it fits."""
    assert fits(window_slot(10, 3), 7, NOW)
    assert not fits(window_slot(10, 4), 7, NOW)
    assert fits(window_slot(10, 0), 10, NOW)
    assert not fits(window_slot(10, 0), 11, NOW)


def test_refusing_names_the_first_hard_slot_without_room() -> None:
    """Soft, shadow and tally slots never refuse; the first hard one without room does."""
    slots = [
        Slot("insights", "2024-02-01", 1, TALLY, 5),
        window_slot(1, 5, SOFT),
        window_slot(1, 5, SHADOW, "insights.week"),
        window_slot(100, 5, HARD, "insights.year"),
        window_slot(4, 5, HARD, "insights.hour"),
        window_slot(3, 5, HARD, "insights.minute"),
    ]
    assert refusing([0] * 6, slots, NOW) == 4
    assert refusing([0] * 4, slots[:4], NOW) == -1
    assert refusing([0, 0, 0, 96, 0, 0], slots, NOW) == 3


def test_advanced_moves_every_window_by_its_cost_even_past_a_soft_total() -> None:
    """Windows move by cost whatever their mode; a rate moves only when its tokens are there."""
    slots = [
        Slot("insights", "2024-02-01", 1, TALLY, 4),
        window_slot(5, 4, SOFT),
        window_slot(5, 4, SHADOW, "insights.week"),
        rate_slot(1, 2, cost=1, mode=SHADOW),
    ]
    full = NOW + 2_000_000  # the rate's bucket is empty: no room for a token
    assert advanced([3, 3, 3, full], slots, NOW) == [7, 7, 7, full]
    assert advanced([0, 0, 0, 0], slots, NOW) == [4, 4, 4, NOW + 1_000_000]


def test_a_rate_grants_its_burst_then_its_steady_rate() -> None:
    """10/s with a burst of 5: 5 calls at once, then one every 100 ms, never more."""
    slot = rate_slot(10, 5)
    value, now, granted = 0, NOW, 0
    for _ in range(8):
        if fits(slot, value, now):
            granted += 1
            (value,) = advanced([value], [slot], now)
    assert granted == 5
    assert not fits(slot, value, now + 99_999)
    assert fits(slot, value, now + 100_000)
    # Over the next 10 s, exactly 100 more: the steady rate.
    steady = 0
    for step in range(1, 100_001):
        moment = now + step * 100  # every 100 µs
        if fits(slot, value, moment):
            steady += 1
            (value,) = advanced([value], [slot], moment)
    assert steady == 100
    # Idle long enough, the bucket is full again, and no fuller.
    idle = value + 60_000_000
    count = 0
    while fits(slot, value, idle):
        (value,) = advanced([value], [slot], idle)
        count += 1
    assert count == 5


def test_a_cost_above_the_burst_never_fits() -> None:
    """A call costing more tokens than the bucket holds is refused even on a full bucket."""
    assert not fits(rate_slot(1000, 5, cost=6), 0, NOW)
    assert not fits(rate_slot(1000, 5, cost=6), 0, NOW + 10**12)
    assert fits(rate_slot(1000, 5, cost=5), 0, NOW)
    assert refusing([0], [rate_slot(1000, 5, cost=6)], NOW) == 0


def test_rate_wait_is_the_wait_for_cost_tokens_rounded_up_to_the_second() -> None:
    """Retry-After: whole seconds until ``cost`` tokens are there; 0 when they are."""
    slot = rate_slot(1, 2, cost=1)  # one token a second, two at most
    empty = NOW + 2_000_000  # both tokens taken
    assert rate_wait(empty, slot, NOW) == 1
    assert rate_wait(empty, slot._replace(cost=2), NOW) == 2
    assert rate_wait(empty, slot, NOW + 1_000_000) == 0
    assert rate_wait(empty, slot, NOW + 999_999) == 1  # 1 µs short: still a second
    assert rate_wait(empty + 1, slot, NOW) == 2  # 1 µs past a whole second rounds up
    assert rate_wait(0, slot, NOW) == 0
    fast = rate_slot(10, 5, cost=3)
    assert rate_wait(NOW + 500_000, fast, NOW) == 1  # 0.3 s
    # After waiting the answer, the call fits.
    for value in (empty, empty + 1, NOW + 1_234_567):
        for cost in (1, 2):
            wait = rate_wait(value, slot._replace(cost=cost), NOW)
            assert fits(slot._replace(cost=cost), value, NOW + wait * 1_000_000)


def test_rate_state_reports_tokens_taken_and_when_the_bucket_is_full() -> None:
    """Tokens in use round up; the bucket is full again at its theoretical arrival time."""
    slot = rate_slot(10, 5)
    assert rate_state(NOW + 250_000, slot, NOW) == (
        3,
        datetime.fromtimestamp((NOW + 250_000) / 1e6, UTC),
    )
    assert rate_state(0, slot, NOW) == (0, datetime.fromtimestamp(NOW / 1e6, UTC))
    assert rate_state(NOW + 10**9, slot, NOW)[0] == 5  # never more than the burst


def test_interval_us_is_microseconds_per_token_and_at_least_one() -> None:
    """A rate's interval rounds to the microsecond and never reaches 0."""
    assert interval_us(10) == 100_000
    assert interval_us(3) == 333_333
    assert interval_us(1_000_000) == 1
    assert interval_us(0.5) == 2_000_000


def test_exhausted_at_projects_the_pace_so_far() -> None:
    """Half the total used in a quarter of a day runs out at half past; never past the end."""
    day = Span(at(2024, 6, 1), at(2024, 6, 2), "2024-06-01")
    now = at(2024, 6, 1, 6)
    assert exhausted_at(50, 100, day, now) == at(2024, 6, 1, 12)
    assert exhausted_at(25, 100, day, now) is None  # would run out exactly at the end
    assert exhausted_at(26, 100, day, now) == now + timedelta(seconds=74 * 6 * 3600 / 26)
    assert exhausted_at(100, 100, day, now) == now
    assert exhausted_at(120, 100, day, now) == now
    assert exhausted_at(0, 100, day, now) is None
    assert exhausted_at(5, 100, day, day.start) is None  # no time elapsed: no pace
