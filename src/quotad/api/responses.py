"""Fast JSON responses and the quota headers of SPEC 5.2."""

from __future__ import annotations

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
        "reset": None if verdict.reset is None else days.rfc3339(verdict.reset),
    }
    if verdict.note:
        body["note"] = verdict.note
    return body
