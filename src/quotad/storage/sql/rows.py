"""Domain values to table rows and back.

Instants are stored as integer microseconds since the epoch (UTC) and dates as ISO text
(see ``storage/schema.py``).
"""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta
from types import SimpleNamespace
from typing import Any

import sqlalchemy as sa
from sqlalchemy.ext.asyncio import AsyncConnection

from quotad.domain import credits, limits
from quotad.domain.models import (
    Account,
    AccountStatus,
    ApiKey,
    Limit,
    Overrides,
    Plan,
    Quota,
    Service,
    UsageDay,
)
from quotad.domain.operators import AuditEntry, OperatorToken, Role
from quotad.storage.write_behind import StoredClaim

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_micros(instant: datetime) -> int:
    """An aware datetime as integer microseconds since the epoch (a naive one is taken as
    local time)."""
    if instant.tzinfo is None:
        instant = instant.astimezone(UTC)
    return (instant - _EPOCH) // _MICROSECOND  # exact: no float on the way


def from_micros(value: int) -> datetime:
    """Integer microseconds since the epoch as an aware UTC datetime."""
    seconds, micros = divmod(value, 1_000_000)
    return datetime.fromtimestamp(seconds, UTC).replace(microsecond=micros)


def opt_micros(instant: datetime | None) -> int | None:
    """``to_micros``, None kept."""
    return None if instant is None else to_micros(instant)


def opt_dt(value: int | None) -> datetime | None:
    """``from_micros``, None kept."""
    return None if value is None else from_micros(value)


async def affects_a_row(conn: AsyncConnection, stmt: Any) -> bool:
    """Whether an INSERT, UPDATE or DELETE touched a row.

    Asked with RETURNING rather than ``rowcount``, which psycopg's async cursor
    leaves at -1 for these statements.
    """
    returning = stmt.returning(*stmt.table.primary_key.columns)
    return (await conn.execute(returning)).first() is not None


def columns(row: sa.Row[Any], table: sa.Table) -> Any:
    """One table's columns of a joined row, by name, as that table's own rows have them."""
    return SimpleNamespace(**{column.name: row._mapping[column] for column in table.c})


def service_of(row: sa.Row[Any]) -> Service:
    """A ``services`` row as a Service."""
    return Service(row.name, row.description, from_micros(row.created_at), row.credit_price)


def plan_values(plan: Plan) -> dict[str, Any]:
    """A Plan as a ``plans`` row."""
    return {
        "id": plan.id,
        "description": plan.description,
        "quotas": limits.encode_all({name: q.limits for name, q in plan.quotas.items()}),
        "limits": [
            {"name": lim.name, "description": lim.description, "limit": lim.limit}
            for lim in plan.limits
        ],
        "created_at": to_micros(plan.created_at),
        "alerts": _plan_alerts(plan),
        "refill": None if plan.refill is None else plan.refill.to_json(),
    }


def plan_of(row: Any) -> Plan:
    """A ``plans`` row as a Plan."""
    return Plan(
        id=row.id,
        quotas={name: Quota(q) for name, q in limits.decode_all(row.quotas).items()},
        limits=tuple(
            Limit(lim["name"], lim["description"], int(lim["limit"])) for lim in row.limits
        ),
        created_at=from_micros(row.created_at),
        description=row.description,
        alert_thresholds=_thresholds((row.alerts or {}).get("thresholds")),
        refill=credits.decode_refill(row.refill),
        low_credits=_micros((row.alerts or {}).get("low_credits")),
    )


def _plan_alerts(plan: Plan) -> dict[str, Any] | None:
    # The low-credits mark shares the alerts column (no migration): NULL while neither is set.
    alerts: dict[str, Any] = {}
    if plan.alert_thresholds is not None:
        alerts["thresholds"] = list(plan.alert_thresholds)
    if plan.low_credits is not None:
        alerts["low_credits"] = plan.low_credits
    return alerts or None


def _micros(value: Any) -> int | None:
    return None if value is None else int(value)


def _thresholds(value: Any) -> tuple[int, ...] | None:
    return None if value is None else tuple(int(x) for x in value)


def account_values(account: Account) -> dict[str, Any]:
    """An Account as an ``accounts`` row."""
    return {
        "id": account.id,
        "name": account.name,
        "plan_id": account.plan_id,
        "timezone": account.timezone,
        "status": account.status.value,
        "overrides": {
            "quotas": limits.encode_all(account.overrides.quotas),
            "limits": account.overrides.limits,
            **_anchor(account),
            **_alerts(account),
        },
        "created_at": to_micros(account.created_at),
    }


def _anchor(account: Account) -> dict[str, int]:
    # Kept in the overrides' JSON: no column needed, and a 0.1 row simply has none.
    return {} if account.billing_anchor is None else {"billing_anchor": account.billing_anchor}


def _alerts(account: Account) -> dict[str, Any]:
    alerts: dict[str, Any] = {}
    found = account.overrides.alert_thresholds
    if found is not None:
        alerts["alert_thresholds"] = list(found)
    if account.overrides.low_credits is not None:
        alerts["low_credits"] = account.overrides.low_credits
    return alerts


def account_of(row: Any) -> Account:
    """An ``accounts`` row as an Account."""
    overrides = row.overrides or {}
    return Account(
        id=row.id,
        name=row.name,
        plan_id=row.plan_id,
        timezone=row.timezone,
        status=AccountStatus(row.status),
        overrides=Overrides(
            quotas=limits.decode_all(overrides.get("quotas")),
            limits={k: int(v) for k, v in overrides.get("limits", {}).items()},
            alert_thresholds=_thresholds(overrides.get("alert_thresholds")),
            low_credits=_micros(overrides.get("low_credits")),
        ),
        created_at=from_micros(row.created_at),
        billing_anchor=overrides.get("billing_anchor"),
    )


def key_values(key: ApiKey) -> dict[str, Any]:
    """An ApiKey as an ``api_keys`` row."""
    return {
        "id": key.id,
        "account_id": key.account_id,
        "name": key.name,
        "digest": key.digest,
        "prefix": key.prefix,
        "last4": key.last4,
        "scopes": None if key.scopes is None else list(key.scopes),
        "created_at": to_micros(key.created_at),
        "expires_at": opt_micros(key.expires_at),
        "revoked_at": opt_micros(key.revoked_at),
        "replaced_by": key.replaced_by,
        "limits": limits.encode_all(key.limits) if key.limits else None,
    }


def key_of(row: Any) -> ApiKey:
    """An ``api_keys`` row as an ApiKey."""
    return ApiKey(
        id=row.id,
        account_id=row.account_id,
        name=row.name,
        digest=row.digest,
        prefix=row.prefix,
        last4=row.last4,
        scopes=None if row.scopes is None else tuple(row.scopes),
        created_at=from_micros(row.created_at),
        expires_at=opt_dt(row.expires_at),
        revoked_at=opt_dt(row.revoked_at),
        replaced_by=row.replaced_by,
        limits=limits.decode_all(row.limits),
    )


def operator_token_values(token: OperatorToken) -> dict[str, Any]:
    """An OperatorToken as an ``operator_tokens`` row."""
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role.value,
        "digest": token.digest,
        "prefix": token.prefix,
        "last4": token.last4,
        "created_at": to_micros(token.created_at),
        "revoked_at": opt_micros(token.revoked_at),
    }


def operator_token_of(row: Any) -> OperatorToken:
    """An ``operator_tokens`` row as an OperatorToken."""
    return OperatorToken(
        id=row.id,
        name=row.name,
        role=Role(row.role),
        digest=row.digest,
        prefix=row.prefix,
        last4=row.last4,
        created_at=from_micros(row.created_at),
        revoked_at=opt_dt(row.revoked_at),
    )


def audit_values(entry: AuditEntry) -> dict[str, Any]:
    """An AuditEntry as an ``audit_log`` row."""
    return {
        "id": entry.id,
        "at": to_micros(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "before": entry.before,
        "after": entry.after,
        "request_id": entry.request_id,
    }


def audit_of(row: Any) -> AuditEntry:
    """An ``audit_log`` row as an AuditEntry."""
    return AuditEntry(
        id=row.id,
        at=from_micros(row.at),
        actor=row.actor,
        action=row.action,
        target=row.target,
        before=row.before,
        after=row.after,
        request_id=row.request_id,
    )


def claim_values(claim: StoredClaim) -> dict[str, Any]:
    """A claim kept by a counter store's node as an ``idempotency`` row."""
    return {
        "account_id": claim.account_id,
        "key": claim.key,
        "fingerprint": claim.fingerprint,
        "expires_at": claim.expires_ms * 1000,
        "granted": claim.granted,
        "used": claim.used,
        "total": claim.total,
        "day": claim.day,
    }


def usage_day_of(row: Any) -> UsageDay:
    """A ``usage_days`` row as a UsageDay."""
    return UsageDay(date.fromisoformat(row.day), int(row.used), int(row.total), int(row.rejected))
