"""A schemathesis check for the CLI run of ``tests/test_fuzz.py`` (``SCHEMATHESIS_HOOKS``).

``positive_data_acceptance`` lets the operations of ``SEMANTIC_400`` answer 400 to
schema-valid data: their refusals depend on what no schema states (what exists, what time
it is, how two fields relate). This check keeps that allowance narrow: such a 400 must name
only those refusals, each at its own pointer with its own error type.
"""

from __future__ import annotations

import re
from typing import Any

import schemathesis

_DATES = (r"/query/(start|end)_date", {"required", "order", "maximum"})
# Either credential header will do, but both at once must carry the same key.
_TWO_KEYS = (r"/header/x-api-key", {"conflict"})
# Limits v2: one limit per window (or rate) and per, which no schema can say; a key's
# limits only for a service its plan has, and never wider than the account's.
_DUPLICATES = (r"/body/(quotas|overrides/quotas|limits)/[^/]+/\d+", {"duplicate"})
_KEY_LIMITS = (r"/body/limits/[^/]+(/\d+)?", {"unknown", "maximum", "duplicate"})
# A webhook URL (SPEC 11): only a public host that resolves, unless private ones are
# allowed; the schema says "a string", not what a URL is nor where its host points.
_WEBHOOK_URL = (
    r"/body/url",
    {"format", "forbidden", "unresolvable", "enum", "required", "maxLength"},
)
# Credits (SPEC 10): at most 6 decimal places (a JSON number's precision no schema holds
# exactly); a month window alone has a billing anchor.
_PRICE = (r"/body/credit_price", {"invalid"})
_REFILL = (r"/body/refill/(amount|anchor)", {"invalid"})
_LOW = (r"/body/(overrides/)?low_credits", {"invalid"})
SEMANTIC_400: dict[str, list[tuple[str, set[str]]]] = {
    "POST /admin/v1/plans": [
        (r"/body/quotas/.+", {"unknown"}),
        (r"/body/limits/\d+/name", {"invalid"}),
        _DUPLICATES,
        _REFILL,
        _LOW,
    ],
    "PUT /admin/v1/plans/{plan_id}": [
        (r"/body/quotas/.+", {"unknown"}),
        (r"/body/limits/\d+/name", {"invalid"}),
        _DUPLICATES,
        _REFILL,
        _LOW,
    ],
    "POST /admin/v1/services": [_PRICE],
    "PATCH /admin/v1/services/{service}": [_PRICE],
    # The expiry must be in the future (what time it is, no schema knows).
    "POST /admin/v1/accounts/{account_id}/grants": [
        (r"/body/amount", {"invalid"}),
        (r"/body/expires_at", {"range"}),
    ],
    "POST /admin/v1/accounts": [
        (r"/body/plan", {"unknown"}),
        (r"/body/timezone", {"format"}),
        _DUPLICATES,
        _LOW,
    ],
    "PATCH /admin/v1/accounts/{account_id}": [
        (r"/body/plan", {"unknown"}),
        (r"/body/timezone", {"format"}),
        _DUPLICATES,
        _LOW,
    ],
    "POST /admin/v1/accounts/{account_id}/keys": [(r"/body/expires_at", {"minimum"}), _KEY_LIMITS],
    "PATCH /admin/v1/keys/{key_id}": [_KEY_LIMITS],
    "POST /v1/events": [
        (r"/body/events/\d+/(account_id|service)", {"unknown"}),
        (r"/body/events/\d+/timestamp", {"range"}),
    ],
    # One item per service (the schema cannot say "unique by service").
    "POST /v1/verify": [
        (r"/body/items/\d+/service", {"unique"}),
        (r"/body/ttl_seconds", {"dependent"}),  # only beside reserve: true (SPEC 10)
    ],
    "GET /v1/usages": [_TWO_KEYS],
    "GET /v1/quotas": [_TWO_KEYS],
    "GET /usage/{service}": [_DATES, _TWO_KEYS],
    "GET /admin/v1/accounts/{account_id}/usage/{service}": [_DATES],
    "POST /admin/v1/accounts/{account_id}/usage/{service}/adjust": [
        (r"/body/date", {"maximum", "format"})
    ],
    "POST /admin/v1/webhooks": [_WEBHOOK_URL],
    "PATCH /admin/v1/webhooks/{webhook_id}": [_WEBHOOK_URL],
}


def unexplained_refusal(item: dict[str, Any], allowed: list[tuple[str, set[str]]]) -> bool:
    """Whether a validation error is none of the operation's semantic refusals."""
    error_type = item.get("context", {}).get("errorType")
    return not any(
        re.fullmatch(pattern, str(item.get("path", ""))) and error_type in types
        for pattern, types in allowed
    )


@schemathesis.check
def only_semantic_refusals(ctx: Any, response: Any, case: Any) -> bool | None:
    """A 400 to schema-valid data names only what no schema can state."""
    del ctx
    meta = case.meta
    if meta is None or not meta.generation.mode.is_positive or response.status_code != 400:
        return None
    allowed = SEMANTIC_400.get(case.operation.label)
    if allowed is None:
        return None  # positive_data_acceptance refuses it already
    items = response.json().get("validationErrors") or []
    unexplained = [item for item in items if unexplained_refusal(item, allowed)]
    if not items or unexplained:
        raise AssertionError(f"schema-valid data refused for another reason: {response.text}")
    return None
