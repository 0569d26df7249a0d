"""Chart and gauge geometry, computed here and drawn as inline SVG by the templates.

Keeping the arithmetic in Python (not in the templates) keeps it testable: a chart is
plain data, one ``DayBar`` per day carrying its date, ``used`` and ``total``, which the
template also writes into ``data-*`` attributes and a ``<title>`` per day.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from datetime import date

from quotad.domain.models import UsageDay

WIDTH = 760
HEIGHT = 280
LEFT, RIGHT, TOP, BOTTOM = 64, 16, 16, 56
MAX_X_LABELS = 6  # ISO dates, about 80 units each: six fit the plot with room between


@dataclass(frozen=True, slots=True)
class DayBar:
    """One day of a usage chart: its numbers and where its bar sits."""

    day: date
    used: int
    total: int
    x: float
    width: float
    y: float
    height: float
    slot_x: float
    slot_width: float
    over: bool
    refused: int = 0
    spent: bool = False  # nothing left after the day (of its window, for a longer one)

    @property
    def remaining(self) -> int:
        """Units left that day."""
        return max(self.total - self.used, 0)

    @property
    def full(self) -> bool:
        """Whether the day reached its total and calls were refused (not merely close)."""
        return not self.over and self.spent and self.refused > 0

    @property
    def state(self) -> str:
        """The bar's class beyond ``bar``: ``over``, ``full`` or nothing."""
        if self.over:
            return "over"
        return "full" if self.full else ""

    @property
    def label(self) -> str:
        """What a tooltip says about the day."""
        text = f"{self.day.isoformat()}: used {self.used:,} of {self.total:,}"
        if self.over:
            text += f" ({self.used - self.total:,} over the total)"
        if self.refused:
            text += f"; {self.refused:,} calls refused"
        return text


@dataclass(frozen=True, slots=True)
class Tick:
    """An axis tick: its position along the axis and its label."""

    at: float
    label: str


@dataclass(frozen=True, slots=True)
class UsageChart:
    """Daily used (bars) against the daily total (a step line) of one service."""

    service: str
    start: date
    end: date
    bars: tuple[DayBar, ...]
    total_path: str
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    total_label: str = "Daily total"
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_width: int = WIDTH - LEFT - RIGHT
    plot_height: int = HEIGHT - TOP - BOTTOM

    @property
    def empty(self) -> bool:
        """Whether nothing was used in the whole range."""
        return not self.bars

    @property
    def any_over(self) -> bool:
        """Whether some day went past its total (late metering events)."""
        return any(bar.over for bar in self.bars)

    @property
    def any_full(self) -> bool:
        """Whether some day reached its total and refused calls."""
        return any(bar.full for bar in self.bars)

    @property
    def refused_sum(self) -> int:
        """Calls refused over the range."""
        return sum(bar.refused for bar in self.bars)

    @property
    def used_sum(self) -> int:
        """Units used over the range."""
        return sum(bar.used for bar in self.bars)

    @property
    def bottom(self) -> int:
        """The y of the x axis."""
        return self.top + self.plot_height

    @property
    def empty_message(self) -> str:
        """What an empty range says instead of a chart."""
        return (
            f"No {self.service} usage between {self.start.isoformat()} and {self.end.isoformat()}."
        )

    @property
    def summary(self) -> str:
        """A sentence describing the chart, for screen readers."""
        if self.empty:
            return self.empty_message
        peak = max(self.bars, key=lambda bar: bar.used)
        return (
            f"Daily {self.service} use from {self.start.isoformat()} to {self.end.isoformat()}: "
            f"{self.used_sum:,} units in {len(self.bars)} days; the busiest day was "
            f"{peak.day.isoformat()} with {peak.used:,} of {peak.total:,}."
        )


def nice_step(top: float, ticks: int = 5) -> int:
    """A round step (1, 2 or 5 times a power of ten) giving about ``ticks`` intervals."""
    raw = max(top / ticks, 1.0)
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 5, 10):
        if factor * power >= raw:
            return int(factor * power)
    return int(10 * power)  # pragma: no cover - the loop always returns


def axis_date(day: date) -> str:
    """``2024-11-07``: ISO 8601 on the axis too, as everywhere on the pages."""
    return day.isoformat()


def usage_chart(
    service: str,
    start: date,
    end: date,
    rows: list[UsageDay],
    refused: dict[date, int] | None = None,
    total_label: str = "Daily total",
) -> UsageChart:
    """The chart of ``rows`` (one per day, as ``usage.history`` returns them; ``[]`` if none).

    ``refused`` gives the calls refused per day; it is passed apart because the days of a
    service counted against a longer window do not carry the stored refusals.
    ``total_label`` names the line: that window's total for such a service.
    """
    refused = refused or {}
    if not rows:
        return UsageChart(service, start, end, (), "", (), (), total_label)
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max(max(row.used, row.total) for row in rows) or 1
    step = nice_step(peak)
    y_max = step * math.ceil(peak / step)

    def y_of(value: int) -> float:
        return round(TOP + plot_height - value / y_max * plot_height, 2)

    slot = plot_width / len(rows)
    bar_width = max(slot * 0.7, 1.0)
    bars = []
    path: list[str] = []
    for index, row in enumerate(rows):
        slot_x = LEFT + index * slot
        top = y_of(row.used)
        bars.append(
            DayBar(
                day=row.day,
                used=row.used,
                total=row.total,
                x=round(slot_x + (slot - bar_width) / 2, 2),
                width=round(bar_width, 2),
                y=top,
                height=round(TOP + plot_height - top, 2),
                slot_x=round(slot_x, 2),
                slot_width=round(slot, 2),
                over=row.used > row.total,
                refused=refused.get(row.day, row.rejected),
                spent=row.remaining == 0,
            )
        )
        line_y = y_of(row.total)
        path.append(f"{'M' if index == 0 else 'L'}{slot_x:.2f},{line_y:.2f}")
        path.append(f"H{slot_x + slot:.2f}")
    every = math.ceil(len(rows) / MAX_X_LABELS)
    x_ticks = tuple(
        Tick(round(LEFT + (index + 0.5) * slot, 2), axis_date(row.day))
        for index, row in enumerate(rows)
        if index % every == 0
    )
    y_ticks = tuple(Tick(y_of(value), f"{value:,}") for value in range(0, y_max + 1, step))
    return UsageChart(
        service, start, end, tuple(bars), " ".join(path), y_ticks, x_ticks, total_label
    )


@dataclass(frozen=True, slots=True)
class Gauge:
    """A resource limit's current usage against its limit."""

    name: str
    description: str
    usage: int
    limit: int

    @property
    def percent(self) -> int:
        """Usage as a whole percentage of the limit (100 for a full or zero limit)."""
        if self.limit <= 0:
            return 100 if self.usage > 0 else 0
        return round(self.usage / self.limit * 100)

    @property
    def fill(self) -> float:
        """The filled fraction of the gauge, between 0 and 1."""
        return min(self.percent, 100) / 100

    @property
    def level(self) -> str:
        """``ok`` below 80 %, ``high`` from 80 %, ``full`` at 100 %."""
        if self.percent >= 100:
            return "full"
        return "high" if self.percent >= 80 else "ok"


@dataclass(frozen=True, slots=True)
class SeriesBar:
    """One day of a single-series chart (the overview's trend): its value and its bar."""

    day: date
    value: int
    x: float
    width: float
    y: float
    height: float

    @property
    def label(self) -> str:
        """What a tooltip says about the day."""
        return f"{self.day.isoformat()}: {self.value:,}"


@dataclass(frozen=True, slots=True)
class SeriesChart:
    """One value per day as bars, with no total line (sums over accounts have none)."""

    name: str
    unit: str
    bars: tuple[SeriesBar, ...]
    y_ticks: tuple[Tick, ...]
    x_ticks: tuple[Tick, ...]
    width: int = WIDTH
    height: int = HEIGHT
    left: int = LEFT
    top: int = TOP
    plot_width: int = WIDTH - LEFT - RIGHT
    plot_height: int = HEIGHT - TOP - BOTTOM

    @property
    def bottom(self) -> int:
        """The y of the x axis."""
        return self.top + self.plot_height

    @property
    def value_sum(self) -> int:
        """The values added up over every day."""
        return sum(bar.value for bar in self.bars)

    @property
    def summary(self) -> str:
        """A sentence describing the chart, for screen readers."""
        if not self.bars:
            return f"No days to show for {self.name}."
        peak = max(self.bars, key=lambda bar: bar.value)
        return (
            f"{self.name} per day from {self.bars[0].day.isoformat()} to "
            f"{self.bars[-1].day.isoformat()}: {self.value_sum:,} {self.unit} in "
            f"{len(self.bars)} days; the most on {peak.day.isoformat()} with {peak.value:,}."
        )


def series_chart(name: str, unit: str, points: list[tuple[date, int]]) -> SeriesChart:
    """The chart of ``points`` (one ``(day, value)`` per day, ascending, every day present)."""
    if not points:
        return SeriesChart(name, unit, (), (), ())
    plot_width, plot_height = WIDTH - LEFT - RIGHT, HEIGHT - TOP - BOTTOM
    peak = max(value for _, value in points) or 1
    step = nice_step(peak)
    y_max = step * math.ceil(peak / step)

    def y_of(value: int) -> float:
        return round(TOP + plot_height - value / y_max * plot_height, 2)

    slot = plot_width / len(points)
    bar_width = max(slot * 0.7, 1.0)
    bars = tuple(
        SeriesBar(
            day=day,
            value=value,
            x=round(LEFT + index * slot + (slot - bar_width) / 2, 2),
            width=round(bar_width, 2),
            y=y_of(value),
            height=round(TOP + plot_height - y_of(value), 2),
        )
        for index, (day, value) in enumerate(points)
    )
    every = math.ceil(len(points) / MAX_X_LABELS)
    x_ticks = tuple(
        Tick(round(LEFT + (index + 0.5) * slot, 2), axis_date(day))
        for index, (day, _) in enumerate(points)
        if index % every == 0
    )
    y_ticks = tuple(Tick(y_of(value), f"{value:,}") for value in range(0, y_max + 1, step))
    return SeriesChart(name, unit, bars, y_ticks, x_ticks)
