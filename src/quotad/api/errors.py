"""Where the API's exceptions become HTTP answers (SPEC 5.1), rendered by ``quotad.http.errors``.

Every error body is ``{"error", "id", "note", "validationErrors"}``; ``id`` is a fresh
UUID written to the log with the request, so a bug report can be matched.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.responses import Response

from quotad.dashboard.errors import allowed_methods
from quotad.errors import AuthError, ErrorCode, FieldError, QuotadError
from quotad.http.errors import (
    STATUS,
    ErrorAnswer,
    error_answer,
    quotad_error_answer,
    unexpected_error_answer,
)

# Set on a request by routes whose clients expect 403 for every key problem (seed 003).
AUTH_FAILURE_STATUS = "quotad_auth_failure_status"


def as_response(answer: ErrorAnswer) -> Response:
    """An error answer as the Starlette response an exception handler returns."""
    response = Response(answer.body, status_code=answer.status)
    response.raw_headers = list(answer.headers)
    return response


def error_response(
    code: ErrorCode,
    note: str,
    validation_errors: Sequence[FieldError] | None = None,
    status: int | None = None,
) -> Response:
    """An error answer; logged with its id (never with the request's secrets)."""
    return as_response(error_answer(code, note, validation_errors, status))


def _status_for(request: Request, exc: QuotadError) -> int:
    if isinstance(exc, AuthError):
        override = getattr(request.state, AUTH_FAILURE_STATUS, None)
        if override is not None:
            return int(override)
    return STATUS[exc.code]


async def _quotad_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, QuotadError)  # noqa: S101 - registered for this type only
    return as_response(quotad_error_answer(exc, _status_for(request, exc)))


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


async def http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, StarletteHTTPException)  # noqa: S101 - registered for this type only
    if exc.status_code == 404:
        path = request.url.path
        if len(path) > 1 and path.endswith("/"):
            # Slashes are never redirected: a redirect would be built from the Host header.
            note = "no such path (no path of quotad ends in a trailing slash)"
            return error_response(ErrorCode.NOT_FOUND, note)
        return error_response(ErrorCode.NOT_FOUND, "no such path")
    if exc.status_code == 405:
        # RFC 9110: a 405 lists the methods the path takes (every route of it, not only
        # the first one Starlette's router found).
        allow = allowed_methods(request.app.router.routes, request.scope)
        return as_response(
            error_answer(
                ErrorCode.BAD_REQUEST,
                "method not allowed on this path",
                status=405,
                headers=((b"allow", allow.encode("latin-1")),),
            )
        )
    code = ErrorCode.INTERNAL_SERVER_ERROR if exc.status_code >= 500 else ErrorCode.BAD_REQUEST
    return error_response(code, str(exc.detail), status=exc.status_code)


async def last_resort(_request: Request, exc: Exception) -> Response:
    return as_response(unexpected_error_answer(exc))


def install(app: FastAPI) -> None:
    """Register the handlers that turn expected failures into the contract's error body.

    The handler of ``Exception`` is Starlette's last resort, which would otherwise answer
    a plain-text 500: it answers the contract's 500 and logs it once (Starlette then raises
    on, and ``quotad.http.middleware.RequestContext`` lets the answered error end there).
    """
    app.add_exception_handler(QuotadError, _quotad_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(StarletteHTTPException, http_error)
    app.add_exception_handler(Exception, last_resort)
