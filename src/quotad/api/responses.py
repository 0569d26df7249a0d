"""Fast JSON responses, and the body of a verify answer (its headers: ``quotad.http.quota``)."""

from __future__ import annotations

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


# Every verify of a day answers with the same reset instant: format it once.
reset_text = lru_cache(maxsize=1024)(days.rfc3339)


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
        "reset": None if verdict.reset is None else reset_text(verdict.reset),
    }
    if verdict.note:
        body["note"] = verdict.note
    return body
