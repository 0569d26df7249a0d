"""Helpers for testing code that uses quotad: a clock you can move."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta


class FakeClock:
    """A clock that stands still until moved."""

    def __init__(self, start: datetime | None = None) -> None:
        self._now = start or datetime(2024, 11, 7, 12, 0, tzinfo=UTC)
        if self._now.tzinfo is None:
            msg = "FakeClock needs an aware datetime"
            raise ValueError(msg)

    def now(self) -> datetime:
        """The current fake time."""
        return self._now

    def advance(self, **delta: float) -> datetime:
        """Move forward by ``timedelta(**delta)``; returns the new time."""
        self._now += timedelta(**delta)
        return self._now

    def set(self, instant: datetime) -> None:
        """Jump to ``instant``."""
        if instant.tzinfo is None:
            msg = "FakeClock needs an aware datetime"
            raise ValueError(msg)
        self._now = instant
