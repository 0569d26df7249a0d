"""A command's start-up without the garbage collector's passes over what it imports.

Importing what a local command runs (Typer, SQLAlchemy, the service layer) makes some
100,000 objects that live as long as the process. With the collector on, its passes over
them while they are made (about 200 on ``quotad services list``), and those of the
interpreter's exit, scan them all and find nothing to free. ``main`` turns the collector
off before it parses the command line (``collector_held``), and ``imported`` turns it back
on once a command has imported what it runs, having first moved everything made so far out
of the collector's sight (``gc.freeze``), as ``quotad.api.server`` does before serving.
Every command that works on a store or a server passes through ``imported``
(``run_with_store``, the remote operator) before its work begins; the few that pass
through neither (``--help``, ``openapi``) end at once, and ``main`` turns the collector
back on however the command ends.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from contextlib import contextmanager


class _Start:
    """Whether the collector is off for a command's start-up (and so ours to turn on)."""

    held = False


@contextmanager
def collector_held() -> Iterator[None]:
    """Turn the collector off for a command's start-up; on again when the command ends.

    Leaves it alone where it is already off: then it is not ours to turn on.
    """
    if not gc.isenabled():
        yield
        return
    gc.disable()
    _Start.held = True
    try:
        yield
    finally:
        if _Start.held:
            _Start.held = False
            gc.enable()


def imported() -> None:
    """The command has imported what it runs: freeze what exists, collect from here on.

    Does nothing unless ``collector_held`` turned the collector off (a command run by
    ``CliRunner`` in a test, say, starts with it on and keeps it on).
    """
    if _Start.held:
        _Start.held = False
        gc.freeze()
        gc.enable()
