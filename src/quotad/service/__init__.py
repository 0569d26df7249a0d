"""Use cases: plain async functions over a ``Context``, raising the errors of ``quotad.errors``."""

from quotad.service.context import Context

__all__ = ["Context"]
