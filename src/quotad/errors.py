"""Every error quotad raises, each carrying one code of the contract (SPEC 5.1).

Hierarchy::

    QuotadError
    ├── AuthError            MISSING_API_KEY, INVALID_AUTHORIZATION,
    │                        MALFORMED_API_KEY, EXPIRED_API_KEY
    ├── Forbidden            FORBIDDEN
    ├── NotFound             NOT_FOUND
    ├── ValidationFailed     VALIDATION_FAILED (with validation errors)
    ├── BadRequest           BAD_REQUEST
    ├── Conflict             CONFLICT
    ├── MaxResourcesReached  MAX_RESOURCES_REACHED
    ├── QuotaExceeded        QUOTA_EXCEEDED
    ├── RateLimited          RATE_LIMITED
    ├── CreditsExhausted     CREDITS_EXHAUSTED
    ├── PayloadTooLarge      PAYLOAD_TOO_LARGE
    └── StorageError         SERVICE_UNAVAILABLE (a store could not be reached)

The HTTP layer maps codes to statuses in one place (``quotad.api.errors``); nothing
else knows about statuses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class ErrorCode(StrEnum):
    """The error codes of the contract."""

    MISSING_API_KEY = "MISSING_API_KEY"
    INVALID_AUTHORIZATION = "INVALID_AUTHORIZATION"
    MALFORMED_API_KEY = "MALFORMED_API_KEY"
    EXPIRED_API_KEY = "EXPIRED_API_KEY"
    FORBIDDEN = "FORBIDDEN"
    NOT_FOUND = "NOT_FOUND"
    VALIDATION_FAILED = "VALIDATION_FAILED"
    BAD_REQUEST = "BAD_REQUEST"
    CONFLICT = "CONFLICT"
    MAX_RESOURCES_REACHED = "MAX_RESOURCES_REACHED"
    QUOTA_EXCEEDED = "QUOTA_EXCEEDED"
    RATE_LIMITED = "RATE_LIMITED"
    CREDITS_EXHAUSTED = "CREDITS_EXHAUSTED"
    PAYLOAD_TOO_LARGE = "PAYLOAD_TOO_LARGE"
    INTERNAL_SERVER_ERROR = "INTERNAL_SERVER_ERROR"
    SERVICE_UNAVAILABLE = "SERVICE_UNAVAILABLE"


@dataclass(frozen=True, slots=True)
class FieldError:
    """One failed input check, in the shape of the contract's ``validationErrors`` items."""

    path: str
    message: str
    error_type: str = "invalid"
    suggestion: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The JSON form of this error."""
        body: dict[str, Any] = {
            "path": self.path,
            "message": self.message,
            "context": {"errorType": self.error_type},
        }
        if self.suggestion:
            body["suggestion"] = self.suggestion
        return body


@dataclass(eq=False)
class QuotadError(Exception):
    """Base of every error quotad reports to a caller."""

    note: str
    code: ErrorCode = ErrorCode.INTERNAL_SERVER_ERROR
    validation_errors: list[FieldError] = field(default_factory=list)
    retry_after: int | None = None

    def __post_init__(self) -> None:
        super().__init__(self.note)


@dataclass(eq=False)
class AuthError(QuotadError):
    """The caller's API key is missing, unparseable, malformed, unknown, revoked or expired."""


@dataclass(eq=False)
class Forbidden(QuotadError):
    """The caller is known but may not do this."""

    code: ErrorCode = ErrorCode.FORBIDDEN


@dataclass(eq=False)
class NotFound(QuotadError):
    """The path, service, account, plan, key or limit does not exist."""

    code: ErrorCode = ErrorCode.NOT_FOUND


@dataclass(eq=False)
class ValidationFailed(QuotadError):
    """The input failed its schema or a rule of the contract."""

    code: ErrorCode = ErrorCode.VALIDATION_FAILED

    @classmethod
    def at(
        cls,
        path: str,
        message: str,
        error_type: str = "invalid",
        suggestion: str | None = None,
    ) -> ValidationFailed:
        """A validation failure of one field, with the message as the note."""
        return cls(message, validation_errors=[FieldError(path, message, error_type, suggestion)])


@dataclass(eq=False)
class BadRequest(QuotadError):
    """The body could not be parsed, or came with the wrong content type."""

    code: ErrorCode = ErrorCode.BAD_REQUEST


@dataclass(eq=False)
class Conflict(QuotadError):
    """A duplicate id, a resource still in use, or a reused Idempotency-Key."""

    code: ErrorCode = ErrorCode.CONFLICT


@dataclass(eq=False)
class MaxResourcesReached(QuotadError):
    """Acquiring would take a resource limit past its maximum."""

    code: ErrorCode = ErrorCode.MAX_RESOURCES_REACHED


@dataclass(eq=False)
class QuotaExceeded(QuotadError):
    """A consume would take a daily quota past its total."""

    code: ErrorCode = ErrorCode.QUOTA_EXCEEDED


@dataclass(eq=False)
class RateLimited(QuotadError):
    """The per-key request throttle refuses the call."""

    code: ErrorCode = ErrorCode.RATE_LIMITED


@dataclass(eq=False)
class CreditsExhausted(QuotadError):
    """A call would debit more credits than the account's live grants hold (SPEC 10)."""

    code: ErrorCode = ErrorCode.CREDITS_EXHAUSTED


@dataclass(eq=False)
class PayloadTooLarge(QuotadError):
    """The request body is larger than the configured maximum."""

    code: ErrorCode = ErrorCode.PAYLOAD_TOO_LARGE


@dataclass(eq=False)
class StorageError(QuotadError):
    """The store failed or could not be reached; raised ``from`` the driver's exception."""

    code: ErrorCode = ErrorCode.SERVICE_UNAVAILABLE
