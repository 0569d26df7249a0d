"""The quota headers of SPEC 5.2, built once for every answer that carries them.

The IETF ``RateLimit-Policy``/``RateLimit`` fields and the common ``X-RateLimit-*``, as
ASGI header pairs named in lower case. ``X-RateLimit-Reset`` is a Unix time in seconds
(the GitHub convention); the IETF ``t`` parameter is the number of seconds until the
reset. Every verify answer carries them, so what one service's answers share on one day
is built once.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from quotad.service.verify import Verdict

Header = tuple[bytes, bytes]
DEFAULT_WINDOW = 86_400


def verdict_headers(verdict: Verdict, now_epoch: float) -> list[Header]:
    """A verdict's quota headers, with ``Retry-After`` when quota ran out; none without a quota."""
    total, reset, remaining = verdict.total, verdict.reset, verdict.remaining
    if total is None or reset is None or remaining is None:
        return []
    service = verdict.service
    policy, limit, reset_header, reset_epoch = _fixed_headers(
        service, total, verdict.window_seconds or DEFAULT_WINDOW, reset
    )
    reset_in = max(reset_epoch - int(now_epoch), 0)
    headers = [
        policy,
        (b"ratelimit", f'"{service}";r={remaining};t={reset_in}'.encode("latin-1")),
        limit,
        (b"x-ratelimit-remaining", b"%d" % remaining),
        reset_header,
    ]
    if not verdict.valid:
        headers.append((b"retry-after", b"%d" % max(reset_in, 1)))
    return headers


@lru_cache(maxsize=4096)
def _fixed_headers(
    service: str, total: int, window: int, reset: datetime
) -> tuple[Header, Header, Header, int]:
    # What every answer of one service, total and day shares: built once per day.
    reset_epoch = int(reset.timestamp())
    return (
        (b"ratelimit-policy", f'"{service}";q={total};w={window}'.encode("latin-1")),
        (b"x-ratelimit-limit", b"%d" % total),
        (b"x-ratelimit-reset", b"%d" % reset_epoch),
        reset_epoch,
    )
