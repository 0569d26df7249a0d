"""The one renderer of the contract's error answers (SPEC 5.1).

Every error body is ``{"error", "id", "note", "validationErrors"}``; ``id`` is a fresh
UUID written to the log with the request, so a bug report can be matched. An
``ErrorAnswer`` is a plain ASGI app: the API's exception handlers, its middleware, the
verify endpoint and the ASGI middleware for other apps all send the same bytes.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import orjson
import structlog

from quotad.errors import ErrorCode, FieldError, QuotadError
from quotad.http.types import Receive, Scope, Send

log = structlog.get_logger("quotad.api")

STATUS: dict[ErrorCode, int] = {
    ErrorCode.MISSING_API_KEY: 401,
    ErrorCode.INVALID_AUTHORIZATION: 401,
    ErrorCode.MALFORMED_API_KEY: 401,
    ErrorCode.EXPIRED_API_KEY: 401,
    ErrorCode.FORBIDDEN: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.VALIDATION_FAILED: 400,
    ErrorCode.BAD_REQUEST: 400,
    ErrorCode.CONFLICT: 409,
    ErrorCode.MAX_RESOURCES_REACHED: 403,
    ErrorCode.QUOTA_EXCEEDED: 429,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.CREDITS_EXHAUSTED: 429,
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.INTERNAL_SERVER_ERROR: 500,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
}

Header = tuple[bytes, bytes]
JSON_TYPE: Header = (b"content-type", b"application/json")


def error_body(
    code: ErrorCode, note: str, validation_errors: Sequence[FieldError] | None = None
) -> dict[str, Any]:
    """The contract's error body, with a fresh id."""
    return {
        "error": code.value,
        "id": str(uuid.uuid4()),
        "note": note,
        "validationErrors": [item.as_dict() for item in validation_errors or ()],
    }


def logged_error_body(
    code: ErrorCode,
    note: str,
    status: int,
    validation_errors: Sequence[FieldError] | None = None,
) -> dict[str, Any]:
    """The contract's error body, logged with its id (never with the request's secrets)."""
    body = error_body(code, note, validation_errors)
    log_method = log.error if status >= 500 else log.info
    log_method("request refused", error=body["error"], error_id=body["id"], status=status)
    return body


@dataclass(frozen=True, slots=True)
class ErrorAnswer:
    """A whole error answer: status, the headers to send (as ASGI pairs) and the body."""

    status: int
    headers: list[Header]
    body: bytes

    @classmethod
    def of(
        cls, status: int, document: dict[str, Any], headers: Sequence[Header] = ()
    ) -> ErrorAnswer:
        """The answer carrying ``document``: ``headers`` first, then ``content-length`` and
        ``content-type``, in the order Starlette sends a response's own headers."""
        body = orjson.dumps(document)
        return cls(status, [*headers, (b"content-length", b"%d" % len(body)), JSON_TYPE], body)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Send the answer (an ASGI app, so that it can stand in for one)."""
        # A copy: whoever sends it on may add to the list it is given.
        headers = list(self.headers)
        await send({"type": "http.response.start", "status": self.status, "headers": headers})
        await send({"type": "http.response.body", "body": self.body})


def error_answer(
    code: ErrorCode,
    note: str,
    validation_errors: Sequence[FieldError] | None = None,
    status: int | None = None,
    headers: Sequence[Header] = (),
) -> ErrorAnswer:
    """An error answer; logged with its id (never with the request's secrets)."""
    status = status or STATUS[code]
    return ErrorAnswer.of(status, logged_error_body(code, note, status, validation_errors), headers)


def quotad_error_answer(exc: QuotadError, status: int | None = None) -> ErrorAnswer:
    """The answer to an expected failure, with ``Retry-After`` when it says when to retry."""
    headers = () if exc.retry_after is None else ((b"retry-after", b"%d" % exc.retry_after),)
    return error_answer(exc.code, exc.note, exc.validation_errors, status, headers)


def unexpected_error_answer(exc: BaseException) -> ErrorAnswer:
    """A 500 for an exception no handler expected; the details go to the log only."""
    log.error("unexpected error", exc_info=exc)
    return error_answer(ErrorCode.INTERNAL_SERVER_ERROR, "an unexpected error occurred")
