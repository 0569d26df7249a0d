"""The audit log: who changed what, with the record before and after (SPEC 12).

Every change an operator makes goes through the service layer, whatever the entry point
(the API, the CLI, the dashboard), and the use case that makes it writes one entry right
after it, here. What counts as a change: services, plans, accounts, keys and operator
tokens created, changed, rotated, revoked or deleted; usage adjusted; a limit's usage
set. Metering is not a change: verify, events, and a limit's acquire and release are
usage, counted in the counters and not logged here.

Who: each entry point says who acts with ``acting_as`` (the API: the token's name; the
CLI: ``cli``; the dashboard: its session's token's name). The actor is bound to the
request id the request's log lines carry, so it never outlives its request; an in-process
call outside any request with no actor named is ``local`` (quotad embedded in a program).

Before and after are the records' views without secrets: a key or token appears by its
id, name and hint (prefix and last four characters), never by its digest.
"""

from __future__ import annotations

import sys
from contextlib import AbstractAsyncContextManager, nullcontext
from contextvars import ContextVar
from datetime import datetime
from typing import Any, cast

from quotad.domain import credits, days, ids, limits
from quotad.domain.models import Account, ApiKey, Plan, Service, UsageDay
from quotad.domain.operators import AuditEntry, AuditQuery, OperatorToken
from quotad.service.context import Context

LOCAL_ACTOR = "local"
CLI_ACTOR = "cli"

# (the request id it was named for, the actor); see ``acting_as``.
_ACTOR: ContextVar[tuple[str | None, str] | None] = ContextVar("quotad_audit_actor", default=None)


def request_id() -> str | None:
    """The id of the request being answered (bound to the log context), if any."""
    # Not imported here: a command of the CLI, where no request is answered, never loads
    # structlog. Where it is not loaded, nothing has bound a request id.
    contextvars = sys.modules.get("structlog.contextvars")
    if contextvars is None:
        return None
    value = contextvars.get_contextvars().get("request_id")
    return value if isinstance(value, str) else None


def acting_as(actor: str) -> None:
    """Name who makes the changes of the current request (or, outside one, of this task)."""
    _ACTOR.set((request_id(), actor))


def current_actor() -> str:
    """Who makes the changes now: as named for this request, else ``local``."""
    named = _ACTOR.get()
    if named is None or named[0] != request_id():
        return LOCAL_ACTOR
    return named[1]


def new_entry_id(at: datetime) -> str:
    """An audit entry's id (``ids.sortable_id``)."""
    return ids.sortable_id("aud", at)


def with_counters(ctx: Context) -> AbstractAsyncContextManager[None]:
    """One transaction for a counter change and its entry, where the counters are kept
    with the records (SQL, memory); none with Redis counters, whose change comes first.

    Redis counters write their durable copy to the records from tasks of their own, which
    would wait for a transaction held here.
    """
    if ctx.stores.counters is cast(object, ctx.stores.records):  # one store, both roles
        return ctx.records.atomic()
    return nullcontext()


async def record(
    ctx: Context,
    action: str,
    target: str,
    before: dict[str, Any] | None,
    after: dict[str, Any] | None,
) -> AuditEntry:
    """Append one entry: ``action`` on ``target`` by the current actor, now."""
    now = ctx.clock.now()
    entry = AuditEntry(
        id=new_entry_id(now),
        at=now,
        actor=current_actor(),
        action=action,
        target=target,
        before=before,
        after=after,
        request_id=request_id(),
    )
    await ctx.records.append_audit(entry)
    return entry


async def entries(ctx: Context, query: AuditQuery) -> list[AuditEntry]:
    """The entries ``query`` matches, newest first."""
    return await ctx.records.audit_entries(query)


# Views without secrets ------------------------------------------------------------------
def _time(value: datetime | None) -> str | None:
    return None if value is None else days.rfc3339(value)


def service_state(service: Service) -> dict[str, Any]:
    """A service as the log keeps it."""
    return {"name": service.name, "description": service.description}


def plan_state(plan: Plan) -> dict[str, Any]:
    """A plan as the log keeps it (its alert thresholds only when set)."""
    state: dict[str, Any] = {
        "id": plan.id,
        "description": plan.description,
        "quotas": {k: limits.render(q.limits) for k, q in sorted(plan.quotas.items())},
        "limits": [{"name": x.name, "limit": x.limit} for x in plan.limits],
    }
    if plan.alert_thresholds is not None:
        state["alert_thresholds"] = list(plan.alert_thresholds)
    if plan.low_credits is not None:
        state["low_credits"] = credits.from_micros(plan.low_credits)
    return state


def account_state(account: Account) -> dict[str, Any]:
    """An account as the log keeps it (its alert thresholds only when set)."""
    overrides: dict[str, Any] = {
        "quotas": {
            k: limits.render_override(v) for k, v in sorted(account.overrides.quotas.items())
        },
        "limits": dict(sorted(account.overrides.limits.items())),
    }
    if account.overrides.alert_thresholds is not None:
        overrides["alert_thresholds"] = list(account.overrides.alert_thresholds)
    if account.overrides.low_credits is not None:
        overrides["low_credits"] = credits.from_micros(account.overrides.low_credits)
    return {
        "id": account.id,
        "name": account.name,
        "plan": account.plan_id,
        "timezone": account.timezone,
        "status": account.status.value,
        "overrides": overrides,
    }


def key_state(key: ApiKey) -> dict[str, Any]:
    """A key as the log keeps it: never the key, never its digest."""
    return {
        "id": key.id,
        "account_id": key.account_id,
        "name": key.name,
        "hint": key.hint,
        "scopes": None if key.scopes is None else list(key.scopes),
        "expires_at": _time(key.expires_at),
        "revoked_at": _time(key.revoked_at),
        "replaced_by": key.replaced_by,
        # Only when it has any: a version-1 key's entries stay as they were.
        **({"limits": limits.encode_all(key.limits)} if key.limits else {}),
    }


def token_state(token: OperatorToken) -> dict[str, Any]:
    """An operator token as the log keeps it: never the token, never its digest."""
    return {
        "id": token.id,
        "name": token.name,
        "role": token.role.value,
        "hint": token.hint,
        "revoked_at": _time(token.revoked_at),
    }


def usage_state(service: str, row: UsageDay) -> dict[str, Any]:
    """A usage day as the log keeps it."""
    return {"service": service, "date": row.day.isoformat(), "used": row.used, "total": row.total}


def target(kind: str, ident: str) -> str:
    """A target as the log writes it: ``<kind>:<id>``."""
    return f"{kind}:{ident}"
