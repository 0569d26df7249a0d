"""Identifiers that sort in the order they were made (audit entries, alert events)."""

from __future__ import annotations

import itertools
import secrets
from datetime import datetime

_SEQUENCE = itertools.count()


def sortable_id(prefix: str, at: datetime) -> str:
    """An id that sorts after every id this process made before (for an instant not
    earlier), and by instant between processes: microseconds, a sequence, random bits.

    Lowercase hex after the prefix, so it sorts the same in every collation.
    """
    micros = int(at.timestamp() * 1_000_000)
    sequence = next(_SEQUENCE) % 0x1000000
    return f"{prefix}_{micros:014x}{sequence:06x}{secrets.token_hex(4)}"
