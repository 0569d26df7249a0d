"""A logger whose module does not import structlog: structlog is imported at its first line.

The modules of the service layer and of the SQL store that a short command loads (``quotad
services list``) log only when something goes wrong; importing structlog for them (and,
through ``structlog.dev``, rich's tracebacks and pygments) was a twentieth of that
command's start-up. A line logged through one goes exactly where ``structlog.get_logger``'s
would: the logger is looked up, with the configuration of the moment, at each call.
"""

from __future__ import annotations

from typing import Any


class LazyLogger:
    """``structlog.get_logger(name)``, imported and looked up when a line is logged."""

    __slots__ = ("_name",)

    def __init__(self, name: str) -> None:
        self._name = name

    def __getattr__(self, method: str) -> Any:
        import structlog

        return getattr(structlog.get_logger(self._name), method)
