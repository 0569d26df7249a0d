"""Receiving quotad's webhooks: check a delivery's signature before trusting its payload.

quotad signs every delivery the Standard Webhooks way (SPEC 11)::

    from quotad.sdk import WebhookVerificationError, verify_webhook

    try:
        event = verify_webhook(request.headers, raw_body, secret)  # the whsec_… secret
    except WebhookVerificationError:
        return 400
    if event["type"] == "quota.threshold":
        ...

Pass the body exactly as received (before any JSON parsing): the signature covers its bytes.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from quotad.domain import signatures
from quotad.sdk.errors import QuotadSDKError

__all__ = ["WebhookVerificationError", "verify_webhook"]


class WebhookVerificationError(QuotadSDKError, signatures.WebhookVerificationError):
    """A delivery whose headers, timestamp or signature do not check out (also a ValueError)."""


def verify_webhook(
    headers: Mapping[str, str],
    body: bytes | str,
    secret: str,
    *,
    tolerance_seconds: int = signatures.DEFAULT_TOLERANCE_SECONDS,
) -> dict[str, Any]:
    """Verify a delivery signed with ``secret`` and return its JSON payload.

    Raises:
        WebhookVerificationError: a header is missing, the timestamp is malformed or more
            than ``tolerance_seconds`` away from now, no signature matches, or the signed
            body is not a JSON object.
    """
    raw = body.encode() if isinstance(body, str) else body
    try:
        signatures.verify(headers, raw, secret, tolerance_seconds=tolerance_seconds)
    except signatures.WebhookVerificationError as exc:
        raise WebhookVerificationError(str(exc)) from None
    try:
        payload = json.loads(raw)
    except ValueError:
        raise WebhookVerificationError("the signed body is not JSON") from None
    if not isinstance(payload, dict):
        raise WebhookVerificationError("the signed body is not a JSON object")
    return payload
