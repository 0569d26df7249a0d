"""The quota headers of SPEC 5.2, built once for every answer that carries them.

The IETF ``RateLimit-Policy``/``RateLimit`` fields and the common ``X-RateLimit-*``, as
ASGI header pairs named in lower case. ``X-RateLimit-Reset`` is a Unix time in seconds
(the GitHub convention); the IETF ``t`` parameter is the number of seconds until the
reset. Every verify answer carries them, so what one service's answers share on one day
is built once.

A version-2 verdict (SPEC 9) lists every limit in ``RateLimit-Policy`` (one item per
limit: ``"<name>";q=<total>;w=<seconds>``, a rate's ``q`` its burst and ``w`` the time
it takes to refill it); ``RateLimit`` and ``X-RateLimit-*`` describe the limit the
verdict's own fields come from (the refusing one, else the one with the least room), and
a ``RATE_LIMITED`` refusal's ``Retry-After`` is the wait until its tokens are there.
"""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache

from quotad.domain.limits import LimitSpec, LimitState
from quotad.service.verify import Verdict, rate_seconds, span_seconds

Header = tuple[bytes, bytes]
DEFAULT_WINDOW = 86_400


def verdict_headers(verdict: Verdict, now_epoch: float) -> list[Header]:
    """A verdict's quota headers, with ``Retry-After`` when quota ran out; none without a quota."""
    total, reset, remaining = verdict.total, verdict.reset, verdict.remaining
    if total is None or reset is None or remaining is None:
        return []
    if verdict.limits:
        return _limits_headers(verdict, verdict.limits, total, reset, remaining, now_epoch)
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


def shown_limit(verdict: Verdict) -> LimitState | None:
    """The limit a v2 verdict's own fields describe: the refusing one, else the least room."""
    if verdict.shown is not None or not verdict.limits:
        return verdict.shown
    for state in verdict.limits:
        if state.name == verdict.refused_by:
            return state
    return min(verdict.limits, key=lambda state: state.remaining)


def _policy_item(state: LimitState) -> bytes:
    """One limit's item of ``RateLimit-Policy``."""
    limit = state.limit
    if limit.window is None:  # a rate's item is the same at every verify
        return _rate_item(state.name, state.total, limit)
    # A window's, for as long as the window lasts (its start and end are the same objects
    # for every verify of one prepared call, their hashes kept by the datetimes).
    return _window_item(state.name, state.total, state.window_start, state.reset)


@lru_cache(maxsize=4096)
def _rate_item(name: str, burst: int, limit: LimitSpec) -> bytes:
    return f'"{name}";q={burst};w={rate_seconds(limit)}'.encode("latin-1")


@lru_cache(maxsize=4096)
def _window_item(name: str, total: int, start: datetime | None, end: datetime) -> bytes:
    return f'"{name}";q={total};w={span_seconds(start, end)}'.encode("latin-1")


def _limits_headers(
    verdict: Verdict,
    states: tuple[LimitState, ...],
    total: int,
    reset: datetime,
    remaining: int,
    now_epoch: float,
) -> list[Header]:
    shown = shown_limit(verdict)
    name = verdict.service if shown is None else shown.name
    policy = b", ".join([_policy_item(state) for state in states])
    reset_epoch = int(reset.timestamp())
    reset_in = max(reset_epoch - int(now_epoch), 0)
    headers = [
        (b"ratelimit-policy", policy),
        (b"ratelimit", f'"{name}";r={remaining};t={reset_in}'.encode("latin-1")),
        (b"x-ratelimit-limit", b"%d" % total),
        (b"x-ratelimit-remaining", b"%d" % remaining),
        (b"x-ratelimit-reset", b"%d" % reset_epoch),
    ]
    if not verdict.valid:
        if verdict.code == "RATE_LIMITED":
            if verdict.retry_after is not None:  # None: no wait would let it pass
                headers.append((b"retry-after", b"%d" % max(verdict.retry_after, 1)))
        else:
            headers.append((b"retry-after", b"%d" % max(reset_in, 1)))
    return headers
