"""The quotad Python SDK: ``Client`` (blocking) and ``AsyncClient`` (asyncio).

Both cover every operator and customer endpoint with typed results, raise the contract's
errors as typed exceptions (``quotad.sdk.errors``), and retry idempotent calls after a
5xx or a connection failure. Their logic is one sans-I/O core; the two clients only
perform its requests::

    from quotad.sdk import Client

    with Client("http://127.0.0.1:8080", operator_token="...") as quotad:
        verdict = quotad.verify(key, "insights", cost=1, idempotency_key=request_id)
        if not verdict.valid:
            ...  # verdict.code is QUOTA_EXCEEDED, INVALID_AUTHORIZATION, ...
"""

from quotad.sdk._client import AsyncClient, Client
from quotad.sdk._core import RetryPolicy
from quotad.sdk.errors import (
    AuthenticationError,
    ConflictError,
    FieldProblem,
    InvalidRequestError,
    MaxResourcesReachedError,
    NotFoundError,
    PermissionDeniedError,
    QuotadAPIError,
    QuotadConnectionError,
    QuotadSDKError,
    QuotadTimeoutError,
    QuotaExceededError,
    RateLimitedError,
    ServerError,
    TooManyRequestsError,
    UnexpectedResponseError,
    ValidationFailedError,
)
from quotad.sdk.models import (
    Account,
    AlertEventInfo,
    AuditEntry,
    CreatedWebhook,
    Event,
    EventsResult,
    ExportRow,
    Gauge,
    IssuedKey,
    IssuedOperatorToken,
    Key,
    Limit,
    LimitState,
    OperatorToken,
    Overrides,
    Page,
    Plan,
    Quota,
    QuotaLimit,
    QuotaState,
    Service,
    UsageDay,
    UsageLine,
    Verdict,
    Webhook,
    WebhookAttempt,
    WebhookDelivery,
)
from quotad.sdk.webhooks import WebhookVerificationError, verify_webhook

__all__ = [
    "Account",
    "AlertEventInfo",
    "AsyncClient",
    "AuditEntry",
    "AuthenticationError",
    "Client",
    "ConflictError",
    "CreatedWebhook",
    "Event",
    "EventsResult",
    "ExportRow",
    "FieldProblem",
    "Gauge",
    "InvalidRequestError",
    "IssuedKey",
    "IssuedOperatorToken",
    "Key",
    "Limit",
    "LimitState",
    "MaxResourcesReachedError",
    "NotFoundError",
    "OperatorToken",
    "Overrides",
    "Page",
    "PermissionDeniedError",
    "Plan",
    "Quota",
    "QuotaExceededError",
    "QuotaLimit",
    "QuotaState",
    "QuotadAPIError",
    "QuotadConnectionError",
    "QuotadSDKError",
    "QuotadTimeoutError",
    "RateLimitedError",
    "RetryPolicy",
    "ServerError",
    "Service",
    "TooManyRequestsError",
    "UnexpectedResponseError",
    "UsageDay",
    "UsageLine",
    "ValidationFailedError",
    "Verdict",
    "Webhook",
    "WebhookAttempt",
    "WebhookDelivery",
    "WebhookVerificationError",
    "verify_webhook",
]
