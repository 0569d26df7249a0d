"""Fast JSON responses and the quota headers of SPEC 5.2."""

from __future__ import annotations

from datetime import datetime
from functools import lru_cache
from typing import Any

import orjson
from starlette.responses import JSONResponse

from quotad.domain import days
from quotad.service.verify import Verdict


class ORJSONResponse(JSONResponse):
    """A JSON response rendered by orjson."""

    def render(self, content: Any) -> bytes:
        """Serialise ``content`` with orjson."""
        return orjson.dumps(content)


def quota_headers(
    name: str,
    total: int,
    remaining: int,
    reset_epoch: int,
    reset_in: int,
    window: int,
) -> dict[str, str]:
    """The IETF ``RateLimit-Policy``/``RateLimit`` fields and the common ``X-RateLimit-*``.

    ``X-RateLimit-Reset`` is a Unix time in seconds (the GitHub convention); the IETF
    ``t`` parameter is the number of seconds until the reset.
    """
    return {
        "RateLimit-Policy": f'"{name}";q={total};w={window}',
        "RateLimit": f'"{name}";r={remaining};t={reset_in}',
        "X-RateLimit-Limit": str(total),
        "X-RateLimit-Remaining": str(remaining),
        "X-RateLimit-Reset": str(reset_epoch),
    }


def verdict_headers(verdict: Verdict, now_epoch: float) -> dict[str, str]:
    """Quota headers for a verify answer, with ``Retry-After`` when quota ran out."""
    if verdict.total is None or verdict.reset is None or verdict.remaining is None:
        return {}
    reset_epoch = int(verdict.reset.timestamp())
    reset_in = max(reset_epoch - int(now_epoch), 0)
    headers = quota_headers(
        verdict.service,
        verdict.total,
        verdict.remaining,
        reset_epoch,
        reset_in,
        verdict.window_seconds or 86_400,
    )
    if not verdict.valid:
        headers["Retry-After"] = str(max(reset_in, 1))
    return headers


def verdict_raw_headers(verdict: Verdict, now_epoch: float) -> list[tuple[bytes, bytes]]:
    """``verdict_headers`` as ASGI header pairs, named in lower case as Starlette sends them.

    Built directly, in a third of the time of converting the dict: every verify answer
    has them (``tests/test_fastpath.py`` holds the two forms equal).
    """
    total, reset, remaining = verdict.total, verdict.reset, verdict.remaining
    if total is None or reset is None or remaining is None:
        return []
    service = verdict.service
    policy, limit, reset_header, reset_epoch = _fixed_headers(
        service, total, verdict.window_seconds or 86_400, reset
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


_Header = tuple[bytes, bytes]


@lru_cache(maxsize=4096)
def _fixed_headers(
    service: str, total: int, window: int, reset: datetime
) -> tuple[_Header, _Header, _Header, int]:
    # What every answer of one service, total and day shares: built once per day.
    reset_epoch = int(reset.timestamp())
    return (
        (b"ratelimit-policy", f'"{service}";q={total};w={window}'.encode("latin-1")),
        (b"x-ratelimit-limit", b"%d" % total),
        (b"x-ratelimit-reset", b"%d" % reset_epoch),
        reset_epoch,
    )


# Every verify of a day answers with the same reset instant: format it once.
_reset_text = lru_cache(maxsize=1024)(days.rfc3339)


def verdict_body(verdict: Verdict) -> dict[str, Any]:
    """The JSON body of a verify answer."""
    body: dict[str, Any] = {
        "valid": verdict.valid,
        "code": verdict.code,
        "account_id": verdict.account_id,
        "service": verdict.service,
        "used": verdict.used,
        "remaining": verdict.remaining,
        "total": verdict.total,
        "reset": None if verdict.reset is None else _reset_text(verdict.reset),
    }
    if verdict.note:
        body["note"] = verdict.note
    return body
