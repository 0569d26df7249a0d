"""Every exception the SDK raises.

Hierarchy::

    QuotadSDKError                     anything the SDK raises
    ├── QuotadConnectionError          no answer: refused, reset, unreachable (after retries)
    │   └── QuotadTimeoutError         no answer within the configured timeout
    ├── UnexpectedResponseError        a 2xx answer that is not the documented shape
    └── QuotadAPIError                 a non-2xx answer: status, error, id, note, validation_errors
        ├── AuthenticationError        MISSING_API_KEY, INVALID_AUTHORIZATION,
        │                              MALFORMED_API_KEY, EXPIRED_API_KEY
        ├── PermissionDeniedError      FORBIDDEN
        ├── NotFoundError              NOT_FOUND
        ├── InvalidRequestError        BAD_REQUEST, PAYLOAD_TOO_LARGE
        │   └── ValidationFailedError  VALIDATION_FAILED
        ├── ConflictError              CONFLICT
        ├── MaxResourcesReachedError   MAX_RESOURCES_REACHED
        ├── TooManyRequestsError       (with retry_after)
        │   ├── QuotaExceededError     QUOTA_EXCEEDED
        │   ├── RateLimitedError       RATE_LIMITED
        │   └── CreditsExhaustedError  CREDITS_EXHAUSTED (alias CreditsExhausted)
        └── ServerError                INTERNAL_SERVER_ERROR, SERVICE_UNAVAILABLE, any other 5xx

A ``QuotadAPIError`` carries the contract's error body (``error``, ``id``, ``note``,
``validationErrors``) and the HTTP ``status``; ``id`` is the one in the server's log line,
so quote it in a bug report. A ``POST /v1/verify`` that refuses a call is not an error:
it answers 200 with ``Verdict.valid`` false.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = [
    "AuthenticationError",
    "ConflictError",
    "CreditsExhausted",
    "CreditsExhaustedError",
    "FieldProblem",
    "InvalidRequestError",
    "MaxResourcesReachedError",
    "NotFoundError",
    "PermissionDeniedError",
    "QuotaExceededError",
    "QuotadAPIError",
    "QuotadConnectionError",
    "QuotadSDKError",
    "QuotadTimeoutError",
    "RateLimitedError",
    "ServerError",
    "TooManyRequestsError",
    "UnexpectedResponseError",
    "ValidationFailedError",
]


class QuotadSDKError(Exception):
    """Base of everything the SDK raises."""


class QuotadConnectionError(QuotadSDKError):
    """quotad could not be reached, or the connection broke before an answer."""


class QuotadTimeoutError(QuotadConnectionError):
    """quotad did not answer within the configured timeout."""


class UnexpectedResponseError(QuotadSDKError):
    """A successful answer whose body is not what the contract documents."""


@dataclass(frozen=True, slots=True)
class FieldProblem:
    """One item of ``validationErrors``: which input failed and why."""

    path: str
    message: str
    error_type: str
    suggestion: str | None = None


class QuotadAPIError(QuotadSDKError):
    """quotad answered with an error (any non-2xx status).

    Attributes:
        status: the HTTP status.
        error: the contract's error code, e.g. ``"VALIDATION_FAILED"``.
        id: the error's id, also in the server's log ("" when the body had none).
        note: the human sentence of the body.
        validation_errors: what failed validation (empty unless ``VALIDATION_FAILED``).
        retry_after: seconds from ``Retry-After``, when the answer carried it.
        headers: the answer's headers.
    """

    def __init__(
        self,
        status: int,
        error: str,
        id: str,
        note: str,
        validation_errors: tuple[FieldProblem, ...] = (),
        retry_after: int | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(f"{status} {error}: {note}" + (f" (error id {id})" if id else ""))
        self.status = status
        self.error = error
        self.id = id
        self.note = note
        self.validation_errors = validation_errors
        self.retry_after = retry_after
        self.headers: dict[str, str] = dict(headers or {})

    def body(self) -> dict[str, Any]:
        """The error in the contract's JSON shape (to relay it unchanged)."""
        problems = []
        for item in self.validation_errors:
            problem: dict[str, Any] = {
                "path": item.path,
                "message": item.message,
                "context": {"errorType": item.error_type},
            }
            if item.suggestion:
                problem["suggestion"] = item.suggestion
            problems.append(problem)
        return {"error": self.error, "id": self.id, "note": self.note, "validationErrors": problems}


class AuthenticationError(QuotadAPIError):
    """The API key or operator token is missing, unparseable, malformed, unknown or expired."""


class PermissionDeniedError(QuotadAPIError):
    """The caller is known but may not do this (missing scope, suspended account)."""


class NotFoundError(QuotadAPIError):
    """No such path, service, plan, account, key or limit."""


class InvalidRequestError(QuotadAPIError):
    """The request could not be used: unparseable body, wrong content type, too large."""


class ValidationFailedError(InvalidRequestError):
    """The input failed its schema or a rule; see ``validation_errors``."""


class ConflictError(QuotadAPIError):
    """A duplicate id, a record still in use, or an Idempotency-Key reused differently."""


class MaxResourcesReachedError(QuotadAPIError):
    """Acquiring would take a resource limit past its maximum; nothing changed."""


class TooManyRequestsError(QuotadAPIError):
    """A 429: wait ``retry_after`` seconds."""


class QuotaExceededError(TooManyRequestsError):
    """The daily quota is used up until the next reset."""


class RateLimitedError(TooManyRequestsError):
    """The per-key request throttle refused the call."""


class CreditsExhaustedError(TooManyRequestsError):
    """The account's credits do not cover the call's price; nothing was consumed."""


# The name SPEC 10's clients use; the same class.
CreditsExhausted = CreditsExhaustedError


class ServerError(QuotadAPIError):
    """quotad failed (5xx); idempotent calls were retried before this was raised."""


BY_CODE: dict[str, type[QuotadAPIError]] = {
    "MISSING_API_KEY": AuthenticationError,
    "INVALID_AUTHORIZATION": AuthenticationError,
    "MALFORMED_API_KEY": AuthenticationError,
    "EXPIRED_API_KEY": AuthenticationError,
    "FORBIDDEN": PermissionDeniedError,
    "NOT_FOUND": NotFoundError,
    "VALIDATION_FAILED": ValidationFailedError,
    "BAD_REQUEST": InvalidRequestError,
    "PAYLOAD_TOO_LARGE": InvalidRequestError,
    "CONFLICT": ConflictError,
    "MAX_RESOURCES_REACHED": MaxResourcesReachedError,
    "QUOTA_EXCEEDED": QuotaExceededError,
    "RATE_LIMITED": RateLimitedError,
    "CREDITS_EXHAUSTED": CreditsExhaustedError,
    "INTERNAL_SERVER_ERROR": ServerError,
    "SERVICE_UNAVAILABLE": ServerError,
}

# The code to report when an answer has no contract body (a load balancer's 502, say).
CODE_BY_STATUS: dict[int, str] = {
    400: "BAD_REQUEST",
    401: "INVALID_AUTHORIZATION",
    403: "FORBIDDEN",
    404: "NOT_FOUND",
    409: "CONFLICT",
    413: "PAYLOAD_TOO_LARGE",
    429: "RATE_LIMITED",
    503: "SERVICE_UNAVAILABLE",
}


# The status a refusing verdict's code would have had as an error answer (SPEC 6 and 10):
# what a client raising for a refused verify reports.
STATUS_BY_CODE: dict[str, int] = {
    "MISSING_API_KEY": 401,
    "INVALID_AUTHORIZATION": 401,
    "MALFORMED_API_KEY": 401,
    "EXPIRED_API_KEY": 401,
    "FORBIDDEN": 403,
    "NOT_FOUND": 404,
    "QUOTA_EXCEEDED": 429,
    "RATE_LIMITED": 429,
    "CREDITS_EXHAUSTED": 429,
}


def error_class(status: int, error: str) -> type[QuotadAPIError]:
    """The exception class for an error code, falling back on the status family."""
    if status >= 500:
        return ServerError
    return BY_CODE.get(error, QuotadAPIError)
