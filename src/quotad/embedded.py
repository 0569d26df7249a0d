"""Provisioning quotad from Python, without a server: the embedded mode's public API.

An app that meters itself with ``QuotadMiddleware`` and ``EmbeddedBackend`` has no quotad
server whose admin API could create its services, plans, accounts and keys. This module
does that on the store directly, with the same checks as the admin API (an invalid name
or a plan naming an unknown service raises ``ValidationFailed``, a duplicate
``Conflict``)::

    from quotad.embedded import open_store

    async with open_store("sqlite:///quotad.db") as store:
        await store.create_service("insights", "Insights API", exist_ok=True)
        await store.create_plan("starter", {"insights": 250}, exist_ok=True)
        await store.create_account("acme", "Acme Inc.", plan="starter", exist_ok=True)
        key = await store.create_key("acme", "example")
        print(key.secret)          # shown once: only its digest is stored

The names here, ``quotad.asgi`` and ``quotad.sdk`` are quotad's public Python API; the
other modules are internals that may change between releases.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping, Sequence
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import pydantic

from quotad.api import schemas
from quotad.api.server import proxy_options
from quotad.asgi import EmbeddedBackend
from quotad.domain.clock import Clock, SystemClock
from quotad.domain.models import Account, AccountStatus, Limit, Overrides, Plan, Quota, Service
from quotad.errors import (
    Conflict,
    FieldError,
    NotFound,
    QuotadError,
    StorageError,
    ValidationFailed,
)
from quotad.service import admin
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url

__all__ = [
    "Account",
    "Conflict",
    "EmbeddedStore",
    "NewKey",
    "NotFound",
    "Plan",
    "QuotadError",
    "Service",
    "StorageError",
    "ValidationFailed",
    "open_store",
    "uvicorn_options",
]

LimitValue = int | tuple[int, str]
# A service's quota: units a day, or its limits as the API takes them (SPEC 9).
QuotaValue = int | Sequence[Mapping[str, Any]]


@dataclass(frozen=True, slots=True)
class NewKey:
    """A key just issued. ``secret`` is the key itself, shown this once (only its
    SHA-256 digest is stored); ``hint`` (``qd_…abcd``) is what is shown afterwards."""

    id: str
    account_id: str
    name: str
    secret: str
    hint: str
    scopes: tuple[str, ...] | None
    expires_at: datetime | None


def _checked(model: type[pydantic.BaseModel], **values: Any) -> Any:
    """``values`` checked by the admin API's request schema (so both refuse the same input)."""
    try:
        return model.model_validate(values)
    except pydantic.ValidationError as exc:
        problems = [
            FieldError("/" + "/".join(str(part) for part in item["loc"]), item["msg"], item["type"])
            for item in exc.errors()
        ]
        raise ValidationFailed("the input failed validation", validation_errors=problems) from exc


class EmbeddedStore:
    """An open store and the operations that provision it (get one from ``open_store``).

    Every ``create_*`` raises ``ValidationFailed`` for bad input (an invalid name, a plan
    quota for an unregistered service, an account on a plan that does not exist),
    ``NotFound`` for a key of an account that does not exist, and ``Conflict`` when the
    record exists, unless ``exist_ok`` (then the stored record is returned as it is, not
    compared with the arguments).
    """

    def __init__(self, ctx: Context) -> None:
        self._ctx = ctx
        self._backend: EmbeddedBackend | None = None

    @property
    def url(self) -> str:
        """The store's URL."""
        return self._ctx.stores.url

    async def create_service(
        self, name: str, description: str = "", *, exist_ok: bool = False
    ) -> Service:
        """Register a service (what a plan's quotas and the middleware's ``service`` name)."""
        body = _checked(schemas.ServiceIn, name=name, description=description)
        try:
            return await admin.create_service(self._ctx, body.name, body.description)
        except Conflict:
            if not exist_ok:
                raise
            return await admin.require_service(self._ctx, body.name)

    async def create_plan(
        self,
        plan_id: str,
        quotas: Mapping[str, QuotaValue],
        limits: Mapping[str, LimitValue] | None = None,
        *,
        description: str = "",
        exist_ok: bool = False,
    ) -> Plan:
        """Create a plan: the limits of each service, and resource limits.

        Args:
            plan_id: the plan's id (letters, digits, ``-``, ``_``, ``.``).
            quotas: per registered service, units a day (``{"insights": 250}``) or a list of
                limits as the API takes them (``{"insights": [{"window": "day", "total":
                1000}, {"rate": {"per_second": 10, "burst": 20}}]}``).
            limits: resource limits by name, each ``10`` or ``(10, "Cohorts allowed")``.
            description: shown to the operator.
            exist_ok: return the stored plan when one has this id.
        """
        limit_items = []
        for name, value in (limits or {}).items():
            amount, text = value if isinstance(value, tuple) else (value, "")
            limit_items.append({"name": name, "limit": amount, "description": text})
        body = _checked(schemas.PlanIn, id=plan_id, description=description, limits=limit_items)
        raw = {
            service: {"total": value} if isinstance(value, int) else list(value)
            for service, value in quotas.items()
        }
        parsed = admin.parse_quotas(raw, "/quotas")
        try:
            return await admin.create_plan(
                self._ctx,
                body.id,
                {name: Quota(given) for name, given in parsed.items()},
                [Limit(item.name, item.description, item.limit) for item in body.limits],
                body.description,
            )
        except Conflict:
            if not exist_ok:
                raise
            return await admin.require_plan(self._ctx, body.id)

    async def create_account(
        self,
        account_id: str,
        name: str,
        *,
        plan: str,
        timezone: str = "UTC",
        billing_anchor: int | None = None,
        exist_ok: bool = False,
    ) -> Account:
        """Create an account on a plan; its days are dates in ``timezone`` (IANA name), its
        billing months start on ``billing_anchor`` (1-31; default: the day it is created)."""
        body = _checked(schemas.AccountIn, id=account_id, name=name, plan=plan, timezone=timezone)
        try:
            return await admin.create_account(
                self._ctx,
                body.id,
                body.name,
                body.plan,
                body.timezone,
                Overrides(),
                AccountStatus.ACTIVE,
                billing_anchor,
            )
        except Conflict:
            if not exist_ok:
                raise
            return await admin.require_account(self._ctx, body.id)

    async def create_key(
        self,
        account_id: str,
        name: str = "",
        *,
        scopes: Sequence[str] | None = None,
        expires_at: datetime | None = None,
        limits: Mapping[str, Sequence[Mapping[str, Any]]] | None = None,
    ) -> NewKey:
        """Issue an API key for an account; its secret is in the answer only.

        Args:
            account_id: the account the key belongs to.
            name: a label for the key.
            scopes: ``usage:read``, ``consume:*``, ``consume:<service>``; ``None``: all.
            expires_at: when the key stops working (timezone-aware), or never.
            limits: the key's own limits by service, as the API takes them (counted per
                key; they only narrow the account's).
        """
        own = admin.parse_quotas(
            {service: list(given) for service, given in (limits or {}).items()}, "/limits"
        )
        body = _checked(
            schemas.KeyIn,
            name=name,
            scopes=None if scopes is None else list(scopes),
            expires_at=expires_at,
        )
        issued = await admin.create_key(
            self._ctx,
            account_id,
            body.name,
            body.expires_at,
            None if body.scopes is None else tuple(body.scopes),
            own,
        )
        record = issued.record
        return NewKey(
            record.id,
            record.account_id,
            record.name,
            issued.secret,
            record.hint,
            record.scopes,
            record.expires_at,
        )

    def backend(self) -> EmbeddedBackend:
        """An ``EmbeddedBackend`` over this open store (the caller keeps it open)."""
        if self._backend is None:
            self._backend = EmbeddedBackend(ctx=self._ctx, manage_store=False)
        return self._backend


@asynccontextmanager
async def open_store(
    url: str | None = None, *, clock: Clock | None = None
) -> AsyncIterator[EmbeddedStore]:
    """Open (and create or migrate) the store at ``url``; close it on the way out.

    Args:
        url: ``sqlite:///quotad.db``, ``postgresql://…``, ``redis://…?records=…`` or
            ``memory://``; default ``QUOTAD_STORE_URL`` (else ``sqlite:///./quotad.db``).
        clock: the time source (``quotad.testing.FakeClock`` in tests).

    Raises:
        ValueError: the URL names no known store.
        StorageError: the store cannot be opened (a missing database is named).
    """
    settings = Settings() if url is None else Settings(store_url=url)
    ctx = Context(stores_from_url(settings.store_url), settings, clock or SystemClock())
    await ctx.stores.open()
    try:
        yield EmbeddedStore(ctx)
    finally:
        await ctx.stores.close()


def uvicorn_options() -> dict[str, Any]:
    """``uvicorn.run`` options believing ``X-Forwarded-For`` only from
    ``QUOTAD_TRUSTED_PROXIES`` (uvicorn's own default believes any local client, who could
    then pick the address its failed authentications are counted against)."""
    return proxy_options(Settings().trusted_proxies)
