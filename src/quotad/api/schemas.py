"""Request and response bodies, as pydantic models (they also make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from quotad.http import verify_body

ServiceName = Annotated[
    str, StringConstraints(pattern=r"^[a-z][a-z0-9_-]{0,63}$"), Field(examples=["insights"])
]
Identifier = Annotated[
    str, StringConstraints(pattern=r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$"), Field(examples=["acme"])
]
LimitName = Annotated[
    str,
    StringConstraints(pattern=r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$"),
    Field(examples=["cohort.max_count"]),
]
Count = Annotated[int, Field(strict=True, ge=0, le=10**15)]
Amount = Annotated[int, Field(strict=True, ge=0, le=10**9)]
Scope = Annotated[
    str, StringConstraints(pattern=r"^(usage:read|consume:\*|consume:[a-z][a-z0-9_-]{0,63})$")
]

T = TypeVar("T")


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        msg = "timestamp must carry a timezone offset (RFC 3339), e.g. 2024-11-01T12:00:00Z"
        raise ValueError(msg)
    return value


AwareDatetime = Annotated[datetime, AfterValidator(_aware)]


class Strict(BaseModel):
    """Request bodies refuse unknown fields, so a typo is an error rather than ignored.

    Integer fields are strict as well: ``true`` or ``"5"`` is not a number of units.
    """

    model_config = ConfigDict(extra="forbid")


# Errors -----------------------------------------------------------------------
class ValidationErrorContext(BaseModel):
    """Context of one validation error."""

    errorType: str


class ValidationErrorItem(BaseModel):
    """One JSON Schema validation error."""

    path: str
    message: str
    context: ValidationErrorContext
    suggestion: str | None = None


class ErrorBody(BaseModel):
    """Every non-2xx answer (SPEC 5.1)."""

    error: str = Field(examples=["VALIDATION_FAILED"])
    id: str = Field(examples=["082f9513-901c-4308-8081-902a8fe22d7e"])
    note: str
    validationErrors: list[ValidationErrorItem]


# Customer ---------------------------------------------------------------------
class UsageLineOut(BaseModel):
    """One limit or quota of ``GET /v1/usages``."""

    description: str
    limit: int
    name: str
    usage: int


class UsageDayOut(BaseModel):
    """One day of ``GET /usage/{service}``."""

    used: int
    remaining: int
    total: int
    date: str = Field(examples=["2024-11-01"])


# Services and plans -----------------------------------------------------------
class ServiceIn(Strict):
    """A service to register."""

    name: ServiceName
    description: Annotated[str, Field(max_length=500)] = ""


class ServiceOut(BaseModel):
    """A registered service."""

    name: str
    description: str
    created_at: str


class QuotaIn(Strict):
    """A service's quota in a plan."""

    total: Count
    period: Literal["day"] = "day"


class LimitIn(Strict):
    """A resource limit of a plan."""

    name: LimitName
    description: Annotated[str, Field(max_length=500)] = ""
    limit: Count


class PlanIn(Strict):
    """A plan to create."""

    id: Identifier
    description: Annotated[str, Field(max_length=500)] = ""
    quotas: dict[ServiceName, QuotaIn] = Field(default_factory=dict, max_length=100)
    limits: list[LimitIn] = Field(default_factory=list, max_length=100)


class PlanReplaceIn(Strict):
    """A plan's new content."""

    description: Annotated[str, Field(max_length=500)] = ""
    quotas: dict[ServiceName, QuotaIn] = Field(default_factory=dict, max_length=100)
    limits: list[LimitIn] = Field(default_factory=list, max_length=100)


class PlanOut(BaseModel):
    """A plan."""

    id: str
    description: str
    quotas: dict[str, dict[str, Any]]
    limits: list[dict[str, Any]]
    created_at: str


# Accounts ---------------------------------------------------------------------
class OverridesIn(Strict):
    """Per-account replacements of plan totals and limits."""

    quotas: dict[ServiceName, QuotaIn] = Field(default_factory=dict, max_length=100)
    limits: dict[LimitName, Count] = Field(default_factory=dict, max_length=100)


class AccountIn(Strict):
    """An account to create."""

    id: Identifier | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    plan: Identifier
    timezone: Annotated[str, Field(max_length=64)] = "UTC"
    status: Literal["active", "suspended"] = "active"
    overrides: OverridesIn = Field(default_factory=OverridesIn)


class AccountPatch(Strict):
    """Fields of an account to change."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    plan: Identifier | None = None
    timezone: Annotated[str, Field(max_length=64)] | None = None
    status: Literal["active", "suspended"] | None = None
    overrides: OverridesIn | None = None


class AccountOut(BaseModel):
    """An account."""

    id: str
    name: str
    plan: str
    timezone: str
    status: str
    overrides: dict[str, Any]
    created_at: str


# Keys -------------------------------------------------------------------------
class KeyIn(Strict):
    """A key to create."""

    name: Annotated[str, Field(max_length=200)] = ""
    expires_at: AwareDatetime | None = None
    scopes: list[Scope] | None = Field(
        None, description="None: every scope. Known: usage:read, consume:*, consume:<service>."
    )


class RotateIn(Strict):
    """How long the old key keeps working after a rotation."""

    grace_seconds: Annotated[int, Field(strict=True, ge=0, le=30 * 86_400)] = 3600


class KeyOut(BaseModel):
    """A key as listed: never the secret."""

    id: str
    account_id: str
    name: str
    prefix: str
    hint: str
    scopes: list[str] | None
    status: str
    created_at: str
    expires_at: str | None
    revoked_at: str | None
    replaced_by: str | None


class IssuedKeyOut(KeyOut):
    """A new key: ``key`` is shown this once."""

    key: str


# Usage, limits, metering ------------------------------------------------------
class AdjustIn(Strict):
    """A correction of one day's use."""

    date: Annotated[str, Field(examples=["2024-11-01"])]
    delta: Annotated[int, Field(strict=True, ge=-(10**12), le=10**12)]


class GaugeSetIn(Strict):
    """A gauge's new usage."""

    usage: Count


class GaugeAmountIn(Strict):
    """Units to acquire or release."""

    amount: Annotated[int, Field(strict=True, ge=1, le=10**9)] = 1


class GaugeOut(BaseModel):
    """A resource limit's usage."""

    name: str
    usage: int
    limit: int


# Documentation only: quotad.http.verify_body reads this body, to the same bounds.
class VerifyIn(Strict):
    """A key to verify and the quota to consume with it."""

    key: Annotated[str, Field(min_length=1, max_length=verify_body.KEY_MAX_LENGTH)]
    service: Annotated[str, Field(min_length=1, max_length=verify_body.SERVICE_MAX_LENGTH)]
    cost: Annotated[int, Field(strict=True, ge=0, le=verify_body.COST_MAX)] = (
        verify_body.COST_DEFAULT
    )


class VerifyOut(BaseModel):
    """The verdict (SPEC 4.2)."""

    valid: bool
    code: str
    account_id: str | None
    service: str
    used: int | None
    remaining: int | None
    total: int | None
    reset: str | None
    note: str | None = None


class EventIn(Strict):
    """A usage that already happened."""

    id: Annotated[str, Field(min_length=1, max_length=128)]
    account_id: Annotated[str, Field(min_length=1, max_length=64)]
    service: Annotated[str, Field(min_length=1, max_length=64)]
    amount: Amount
    timestamp: AwareDatetime


class EventsIn(Strict):
    """A batch of up to 1,000 events."""

    events: Annotated[list[EventIn], Field(min_length=1, max_length=1000)]


class EventsOut(BaseModel):
    """How many events were new and how many were duplicates."""

    accepted: int
    duplicates: int


class Page(BaseModel, Generic[T]):
    """A page of a list, with the cursor of the next one."""

    items: list[T]
    next_cursor: str | None
