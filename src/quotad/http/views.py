"""Domain records as JSON bodies, one rendering for the API's routes and the local CLI."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from typing import Any

from quotad.domain import credits, days, limits
from quotad.domain.models import (
    Account,
    ApiKey,
    GaugeChange,
    Overrides,
    Plan,
    Service,
    UsageDay,
)
from quotad.domain.operators import AuditEntry, AuditQuery, OperatorToken
from quotad.errors import ValidationFailed
from quotad.service import audit
from quotad.service.admin import IssuedKey, key_status
from quotad.service.context import Context
from quotad.service.quotas import QuotaState
from quotad.service.usage import UsageLine


def _time(value: datetime | None) -> str | None:
    return None if value is None else days.rfc3339(value)


def _thresholds(found: tuple[int, ...] | None) -> list[int] | None:
    return None if found is None else list(found)


def service_view(service: Service) -> dict[str, Any]:
    """A service."""
    return {
        "name": service.name,
        "description": service.description,
        "created_at": days.rfc3339(service.created_at),
    }


def plan_view(plan: Plan) -> dict[str, Any]:
    """A plan."""
    return {
        "id": plan.id,
        "description": plan.description,
        "quotas": {k: limits.render(q.limits) for k, q in sorted(plan.quotas.items())},
        "limits": [
            {"name": x.name, "description": x.description, "limit": x.limit} for x in plan.limits
        ],
        "created_at": days.rfc3339(plan.created_at),
        "alert_thresholds": _thresholds(plan.alert_thresholds),
    }


def account_view(account: Account) -> dict[str, Any]:
    """An account."""
    return {
        "id": account.id,
        "name": account.name,
        "plan": account.plan_id,
        "timezone": account.timezone,
        "status": account.status.value,
        "overrides": overrides_view(account.overrides),
        "billing_anchor": account.anchor_day,
        "created_at": days.rfc3339(account.created_at),
    }


def overrides_view(overrides: Overrides) -> dict[str, Any]:
    """An account's overrides; ``alert_thresholds`` only when set (else the plan's apply)."""
    view: dict[str, Any] = {
        "quotas": {k: limits.render_override(v) for k, v in sorted(overrides.quotas.items())},
        "limits": dict(sorted(overrides.limits.items())),
    }
    if overrides.alert_thresholds is not None:
        view["alert_thresholds"] = list(overrides.alert_thresholds)
    if overrides.low_credits is not None:
        view["low_credits"] = credits.from_micros(overrides.low_credits)
    return view


def key_view(key: ApiKey, now: datetime) -> dict[str, Any]:
    """A key record, never its secret."""
    return {
        "id": key.id,
        "account_id": key.account_id,
        "name": key.name,
        "prefix": key.prefix,
        "hint": key.hint,
        "scopes": None if key.scopes is None else list(key.scopes),
        "status": key_status(key, now),
        "created_at": days.rfc3339(key.created_at),
        "expires_at": _time(key.expires_at),
        "revoked_at": _time(key.revoked_at),
        "replaced_by": key.replaced_by,
        # Always the list: a key's own limits had no version-1 form to keep.
        "limits": {k: [x.to_json() for x in v] for k, v in sorted(key.limits.items())},
    }


def issued_key_view(issued: IssuedKey, now: datetime) -> dict[str, Any]:
    """A new key with its secret, shown this once."""
    return {**key_view(issued.record, now), "key": issued.secret}


def usage_day_view(row: UsageDay) -> dict[str, Any]:
    """A usage day in the seed's shape."""
    return {
        "used": row.used,
        "remaining": row.remaining,
        "total": row.total,
        "date": row.day.isoformat(),
    }


def usage_line_view(line: UsageLine) -> dict[str, Any]:
    """One line of ``GET /v1/usages``: a resource limit or a daily quota."""
    return {
        "description": line.description,
        "limit": line.limit,
        "name": line.name,
        "usage": line.usage,
    }


def quota_state_view(state: QuotaState) -> dict[str, Any]:
    """One limit of ``GET /v1/quotas``: a window's or a rate's counter as it stands."""
    limit = state.limit
    body: dict[str, Any] = {"service": state.service, "name": state.name}
    if limit.is_rate:
        body["rate"] = limit.to_json()["rate"]
    else:
        body["window"] = limit.identity[0]
    body.update(
        per=limit.per.value,
        mode=limit.mode.value,
        used=state.used,
        remaining=state.remaining,
        total=state.total,
        reset=days.rfc3339(state.reset),
        exhausted_at=_time(state.exhausted_at),
    )
    return body


def gauge_view(change: GaugeChange) -> dict[str, Any]:
    """A resource limit's usage."""
    return {"name": change.name, "usage": change.usage, "limit": change.limit}


def encode_cursor(last_id: str) -> str:
    """An opaque cursor pointing after ``last_id``."""
    return base64.urlsafe_b64encode(last_id.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None) -> str | None:
    """The id a cursor points after (None: from the start).

    A cursor is opaque, but any text of its documented shape (unpadded base64url of 2 or
    more characters, ``schemas.CURSOR_PATTERN``) is a position in the id order: one that is
    not ours pages from wherever it points. Bytes that are not UTF-8 read as U+FFFD, and
    the text ends at a NUL (no id holds one, so the position is the same).
    """
    if cursor is None:
        return None
    try:
        padded = cursor + "=" * (-len(cursor) % 4)
        raw = base64.b64decode(padded, altchars=b"-_", validate=True)
    except (binascii.Error, ValueError) as exc:
        raise ValidationFailed.at("/query/cursor", "the cursor is not valid", "format") from exc
    decoded = raw.decode("utf-8", "replace").split("\0", 1)[0]
    return decoded or None


def token_view(token: OperatorToken, now: datetime) -> dict[str, Any]:
    """A token record, never the token."""
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role.value,
        "prefix": token.prefix,
        "hint": token.hint,
        "status": "revoked" if token.revoked(now) else "active",
        "created_at": days.rfc3339(token.created_at),
        "revoked_at": None if token.revoked_at is None else days.rfc3339(token.revoked_at),
    }


def audit_view(entry: AuditEntry) -> dict[str, Any]:
    """An audit entry."""
    return {
        "id": entry.id,
        "at": days.rfc3339(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
        "request_id": entry.request_id,
    }


async def audit_page(
    ctx: Context,
    target: str | None,
    actor: str | None,
    since: datetime | None,
    limit: int,
    cursor: str | None,
) -> dict[str, Any]:
    """A page of the audit log, newest first: ``items`` and ``next_cursor``."""
    query = AuditQuery(
        limit=limit + 1,
        before_id=decode_cursor(cursor),
        targets=() if target is None else (target,),
        actor=actor,
        since=since,
    )
    found = await audit.entries(ctx, query)
    page = found[:limit]
    more = len(found) > limit
    return {
        "items": [audit_view(e) for e in page],
        "next_cursor": encode_cursor(page[-1].id) if more else None,
    }
