"""The one place where errors become HTTP answers (SPEC 5.1).

Every error body is ``{"error", "id", "note", "validationErrors"}``; ``id`` is a fresh
UUID written to the log with the request, so a bug report can be matched.
"""

from __future__ import annotations

import uuid
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from quotad.api.responses import ORJSONResponse
from quotad.errors import AuthError, ErrorCode, FieldError, QuotadError

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
    ErrorCode.PAYLOAD_TOO_LARGE: 413,
    ErrorCode.INTERNAL_SERVER_ERROR: 500,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
}

# Set on a request by routes whose clients expect 403 for every key problem (seed 003).
AUTH_FAILURE_STATUS = "quotad_auth_failure_status"


def error_body(
    code: ErrorCode, note: str, validation_errors: list[FieldError] | None = None
) -> dict[str, Any]:
    """The contract's error body, with a fresh id."""
    return {
        "error": code.value,
        "id": str(uuid.uuid4()),
        "note": note,
        "validationErrors": [item.as_dict() for item in validation_errors or []],
    }


def logged_error_body(
    code: ErrorCode, note: str, status: int, validation_errors: list[FieldError] | None = None
) -> dict[str, Any]:
    """The contract's error body, logged with its id (never with the request's secrets)."""
    body = error_body(code, note, validation_errors)
    log_method = log.error if status >= 500 else log.info
    log_method("request refused", error=body["error"], error_id=body["id"], status=status)
    return body


def error_response(
    code: ErrorCode,
    note: str,
    validation_errors: list[FieldError] | None = None,
    status: int | None = None,
    headers: dict[str, str] | None = None,
) -> Response:
    """An error answer; logged with its id (never with the request's secrets)."""
    status = status or STATUS[code]
    body = logged_error_body(code, note, status, validation_errors)
    return ORJSONResponse(body, status_code=status, headers=headers)


def _status_for(request: Request, exc: QuotadError) -> int:
    if isinstance(exc, AuthError):
        override = getattr(request.state, AUTH_FAILURE_STATUS, None)
        if override is not None:
            return int(override)
    return STATUS[exc.code]


def quotad_error_response(exc: QuotadError, status: int | None = None) -> Response:
    """The answer to an expected failure, with ``Retry-After`` when it says when to retry."""
    headers = {"Retry-After": str(exc.retry_after)} if exc.retry_after is not None else None
    return error_response(exc.code, exc.note, exc.validation_errors, status, headers)


async def _quotad_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuotadError)  # noqa: S101 - registered for this type only
    return quotad_error_response(exc, _status_for(request, exc))


def _pointer(location: tuple[Any, ...]) -> str:
    return "/" + "/".join(str(part) for part in location)


async def _validation_error(_request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestValidationError)  # noqa: S101 - registered for this type only
    errors = list(exc.errors())
    if any(item.get("type") == "json_invalid" for item in errors):
        return error_response(ErrorCode.BAD_REQUEST, "the request body is not valid JSON")
    problems = [
        FieldError(
            _pointer(tuple(item.get("loc", ()))),
            str(item.get("msg", "invalid")),
            str(item.get("type", "invalid")),
        )
        for item in errors
    ]
    missing_body = any(
        item.get("loc") == ("body",) and item.get("type") == "missing" for item in errors
    )
    note = "a JSON body is required" if missing_body else "the request failed validation"
    return error_response(ErrorCode.VALIDATION_FAILED, note, problems)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this type only
    if exc.status_code == 404:
        path = request.url.path
        if len(path) > 1 and path.endswith("/"):
            # Slashes are never redirected: a redirect would be built from the Host header.
            note = "no such path (no path of quotad ends in a trailing slash)"
            return error_response(ErrorCode.NOT_FOUND, note)
        return error_response(ErrorCode.NOT_FOUND, "no such path")
    if exc.status_code == 405:
        return error_response(ErrorCode.BAD_REQUEST, "method not allowed on this path", status=405)
    code = ErrorCode.INTERNAL_SERVER_ERROR if exc.status_code >= 500 else ErrorCode.BAD_REQUEST
    return error_response(code, str(exc.detail), status=exc.status_code)


def unexpected_error(exc: BaseException) -> Response:
    """A 500 for an exception no handler expected; the details go to the log only."""
    log.error("unexpected error", exc_info=exc)
    return error_response(ErrorCode.INTERNAL_SERVER_ERROR, "an unexpected error occurred")


async def _last_resort(_request: Request, exc: Exception) -> Response:
    return unexpected_error(exc)


def install(app: FastAPI) -> None:
    """Register the handlers that turn expected failures into the contract's error body.

    Unexpected exceptions are caught by ``RequestGuard`` (see ``unexpected_error``), so
    the server does not log them a second time. The handler of ``Exception`` is Starlette's
    last resort for what fails outside the guard (middleware added after it), which would
    otherwise answer a plain-text 500.
    """
    app.add_exception_handler(QuotadError, _quotad_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, _http_error)
    app.add_exception_handler(Exception, _last_resort)
