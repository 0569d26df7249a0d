"""Request and response bodies, as pydantic models (they also make the OpenAPI document)."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import (
    AfterValidator,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    JsonValue,
    StringConstraints,
    WithJsonSchema,
)
from pydantic.json_schema import SkipJsonSchema

from quotad.domain.credits import MAX_TTL_SECONDS
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


def _integral(value: object) -> object:
    """A float with no fraction as the integer it is (``3.0`` is JSON Schema's integer 3).

    Everything else goes on to the strict integer check: ``true``, ``"5"`` and ``1.5``
    are not numbers of units.
    """
    if type(value) is float and value.is_integer():
        return int(value)
    return value


Integral = BeforeValidator(_integral)
Count = Annotated[int, Field(strict=True, ge=0, le=10**15), Integral]
Amount = Annotated[int, Field(strict=True, ge=0, le=10**9), Integral]
Scope = Annotated[
    str, StringConstraints(pattern=r"^(usage:read|consume:\*|consume:[a-z][a-z0-9_-]{0,63})$")
]

# What ``views.encode_cursor`` writes, and all ``views.decode_cursor`` reads: unpadded
# base64url (a length of 4n + 1 is no base64).
CURSOR_PATTERN = r"^(?:[A-Za-z0-9_-]{4})*(?:[A-Za-z0-9_-]{2,3})?$"
CursorText = Annotated[
    str,
    StringConstraints(min_length=2, max_length=200, pattern=CURSOR_PATTERN),
    Field(description="Opaque: the next_cursor of the previous page"),
]

# A date as the API reads it (``quotad.service.usage`` parses and refuses it).
DATE_FORMAT: dict[str, JsonValue] = {"format": "date", "pattern": r"^[0-9]{4}-[0-9]{2}-[0-9]{2}$"}

START_DATE = (
    "First day, YYYY-MM-DD in the account's timezone (default: today); not after today, "
    "nor after end_date"
)
END_DATE = (
    "Last day, YYYY-MM-DD (default: today); only with start_date, not after today, at "
    "most 90 days from start_date"
)

TIMEZONE = "An IANA timezone name this server knows, e.g. UTC or Europe/Paris"

T = TypeVar("T")

# A service's limits (SPEC 9), read as plain JSON: ``quotad.service.admin.parse_quotas``
# checks it, so every problem is reported at its JSON pointer with the domain's message.
_MODE_AND_PER: dict[str, JsonValue] = {
    "mode": {"enum": ["hard", "soft", "shadow"], "default": "hard"},
    "per": {"enum": ["account", "key"], "default": "account"},
}


def _total(minimum: int) -> dict[str, JsonValue]:
    return {"type": "integer", "minimum": minimum, "maximum": 10**15}


def _window_schema(windows: list[JsonValue], anchor: bool, minimum: int) -> dict[str, JsonValue]:
    properties: dict[str, JsonValue] = {"window": {"enum": windows}, "total": _total(minimum)}
    if anchor:
        properties["anchor"] = {"enum": ["calendar", "billing"], "default": "calendar"}
    return {
        "type": "object",
        "properties": {**properties, **_MODE_AND_PER},
        "required": ["window", "total"],
        "additionalProperties": False,
    }


def _limit_schema(minimum: int) -> dict[str, JsonValue]:
    """One limit: a window quota, a month (which may take the billing anchor) or a rate."""
    return {
        "oneOf": [
            _window_schema(["minute", "hour", "day", "week", "year"], False, minimum),
            _window_schema(["month"], True, minimum),  # billing: the account's billing_anchor
            {
                "type": "object",
                "properties": {
                    "rate": {
                        "type": "object",
                        "properties": {
                            "per_second": {
                                "type": "number",
                                "exclusiveMinimum": 0,
                                "maximum": 1_000_000,
                            },
                            "burst": _total(max(minimum, 1)),
                        },
                        "required": ["per_second", "burst"],
                        "additionalProperties": False,
                    },
                    **_MODE_AND_PER,
                },
                "required": ["rate"],
                "additionalProperties": False,
            },
        ]
    }


def _limits_schema(minimum: int) -> dict[str, JsonValue]:
    """A service's limits; ``minimum`` the least total of a listed limit."""
    return {
        "description": (
            'Version 1\'s {"total": N} (N a day), or a list of limits: window quotas '
            '{"window", "total"} and rates {"rate": {"per_second", "burst"}}, each with '
            'optional "mode" and "per"; one per window (or rate) and per'
        ),
        "oneOf": [
            {
                "type": "object",
                "properties": {
                    "total": {"type": "integer", "minimum": 0, "maximum": 10**15},
                    "period": {"enum": ["day"], "default": "day"},
                },
                "required": ["total"],
                "additionalProperties": False,
            },
            {"type": "array", "items": _limit_schema(minimum), "maxItems": 20},
        ],
        "examples": [
            {"total": 250},
            [
                {"rate": {"per_second": 10, "burst": 20}},
                {"window": "day", "total": 1000},
                {"window": "month", "total": 20000, "anchor": "billing", "mode": "soft"},
            ],
        ],
    }


LimitsIn = Annotated[JsonValue, WithJsonSchema(_limits_schema(1))]
# What is stored may hold version 1's total of 0, which a key's list shows as a day of 0.
LimitsOut = Annotated[JsonValue, WithJsonSchema(_limits_schema(0))]
# Read as plain JSON: ``quotad.service.admin.parse_alert_thresholds`` checks it, so every
# problem is reported at /body/alert_thresholds with the domain's message.
_THRESHOLDS_SCHEMA: dict[str, JsonValue] = {
    "anyOf": [
        {
            "type": "array",
            "items": {"type": "integer", "minimum": 1, "maximum": 1000},
            "minItems": 1,
            "maxItems": 10,
            "uniqueItems": True,
        },
        {"type": "null"},
    ],
    "description": (
        "Percentages of a window quota at which a quota.threshold alert is sent "
        "(null: the default [80, 100])"
    ),
    "examples": [[80, 100]],
}
ThresholdsIn = Annotated[JsonValue, WithJsonSchema(_THRESHOLDS_SCHEMA)]
ThresholdsOut = Annotated[list[int] | None, Field(examples=[[80, 100]])]
BillingAnchor = Annotated[
    int,
    Field(strict=True, ge=1, le=31, description="Day of the month billing months start on"),
    Integral,
]


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

    path: str = Field(examples=["/query/start_date"])
    message: str
    context: ValidationErrorContext
    # Omitted when there is none (never null).
    suggestion: str | SkipJsonSchema[None] = Field(None, examples=["add start_date=YYYY-MM-DD"])


class Error(BaseModel):
    """Every non-2xx answer (SPEC 5.1): a code, a fresh id (also in the server log), a
    sentence, and one item per failed check of the input (``[]`` unless it failed)."""

    error: str = Field(examples=["VALIDATION_FAILED"])
    id: str = Field(examples=["082f9513-901c-4308-8081-902a8fe22d7e"])
    note: str = Field(examples=["end_date requires start_date"])
    validationErrors: list[ValidationErrorItem]


ErrorBody = Error  # the name the routers use


# Customer ---------------------------------------------------------------------
class UsageLineOut(BaseModel):
    """One limit or quota of ``GET /v1/usages``."""

    description: str
    limit: int
    name: str
    usage: int


class RateOut(BaseModel):
    """A rate: tokens a second and the bucket's size."""

    per_second: float
    burst: int


class QuotaStateOut(BaseModel):
    """One limit of ``GET /v1/quotas``: ``window`` for a window quota, ``rate`` for a rate
    (then ``total`` is its burst, ``used`` the tokens taken, ``exhausted_at`` null)."""

    service: str
    name: str = Field(examples=["insights.day"])
    window: str | SkipJsonSchema[None] = Field(None, examples=["day"])
    rate: RateOut | SkipJsonSchema[None] = None
    per: Literal["account", "key"]
    mode: Literal["hard", "soft", "shadow"]
    used: int
    remaining: int
    total: int
    reset: str = Field(description="RFC 3339: when the window ends (a rate: when it is full)")
    exhausted_at: str | None = Field(
        description="RFC 3339: when the window runs out at its pace so far (null: it will not)"
    )


class UsageDayOut(BaseModel):
    """One day of ``GET /usage/{service}``."""

    used: int
    remaining: int
    total: int
    date: str = Field(examples=["2024-11-01"])


# Credits (SPEC 10) --------------------------------------------------------------
# Read as plain JSON: ``credits.to_micros`` checks it, so every problem (zero, negative,
# more than 6 decimals) is reported at its field with the domain's message.
_CREDITS_SCHEMA: dict[str, JsonValue] = {
    "type": "number",
    "exclusiveMinimum": 0,
    "maximum": 1_000_000_000,
    "description": "Credits: above 0, at most 6 decimal places",
    "examples": [1000, 2.5],
}
CreditsIn = Annotated[JsonValue, WithJsonSchema(_CREDITS_SCHEMA)]
_PRICE_SCHEMA: dict[str, JsonValue] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000_000},
        {"type": "null"},
    ],
    "description": "Credits a unit of cost (at most 6 decimal places); null: unpriced",
    "examples": [0.002, None],
}
PriceIn = Annotated[JsonValue, WithJsonSchema(_PRICE_SCHEMA)]
_LOW_CREDITS_SCHEMA: dict[str, JsonValue] = {
    "anyOf": [
        {"type": "number", "exclusiveMinimum": 0, "maximum": 1_000_000_000},
        {"type": "null"},
    ],
    "description": "credits.low is sent when the balance falls below it "
    "(credits, at most 6 decimal places); null: never",
    "examples": [100, None],
}
# Read as plain JSON: ``quotad.http.credit_views.low_credits_at`` checks it, so every
# problem is reported at /body/low_credits with the domain's message.
LowCreditsIn = Annotated[JsonValue, WithJsonSchema(_LOW_CREDITS_SCHEMA)]
_REFILL_SCHEMA: dict[str, JsonValue] = {
    "anyOf": [
        {
            "type": "object",
            "properties": {
                "amount": _CREDITS_SCHEMA,
                "window": {
                    "type": "string",
                    "enum": ["minute", "hour", "day", "week", "month", "year"],
                },
                "anchor": {"type": "string", "enum": ["calendar", "billing"]},
                "mode": {"type": "string", "enum": ["reset", "top_up"]},
            },
            "required": ["amount", "window"],
            "additionalProperties": False,
        },
        {"type": "null"},
    ],
    "description": "Credits given every window (SPEC 10); null: none",
    "examples": [{"amount": 1000, "window": "month", "anchor": "billing", "mode": "reset"}],
}
RefillIn = Annotated[JsonValue, WithJsonSchema(_REFILL_SCHEMA)]
CreditsOut = Annotated[float, Field(examples=[1000, 2.5])]


class RefillOut(BaseModel):
    """A plan's refill."""

    amount: CreditsOut
    window: str
    mode: Literal["reset", "top_up"]
    anchor: Literal["billing"] | SkipJsonSchema[None] = None


class CreditsQuotaOut(BaseModel):
    """The account's credits as an item of ``GET /v1/quotas`` (SPEC 10): ``used`` is what
    its live grants have given, ``remaining`` the balance; no service, total or reset."""

    service: None
    name: Literal["credits"]
    per: Literal["account"]
    mode: Literal["hard"]
    used: CreditsOut
    remaining: CreditsOut
    total: None
    reset: None
    exhausted_at: None


# Services and plans -----------------------------------------------------------
class ServiceIn(Strict):
    """A service to register."""

    name: ServiceName
    description: Annotated[str, Field(max_length=500)] = ""
    credit_price: PriceIn = None


class ServiceOut(BaseModel):
    """A registered service."""

    name: str
    description: str
    created_at: str
    credit_price: float | None = Field(
        None, description="Credits a unit of cost (null: unpriced)", examples=[0.002]
    )


class LimitIn(Strict):
    """A resource limit of a plan."""

    name: LimitName
    description: Annotated[str, Field(max_length=500)] = ""
    limit: Count


class PlanIn(Strict):
    """A plan to create."""

    id: Identifier
    description: Annotated[str, Field(max_length=500)] = ""
    quotas: dict[ServiceName, LimitsIn] = Field(
        default_factory=dict, max_length=100, description="By registered service name"
    )
    limits: list[LimitIn] = Field(
        default_factory=list, max_length=100, description="Each name once within the plan"
    )
    alert_thresholds: ThresholdsIn = None
    refill: RefillIn = None
    low_credits: LowCreditsIn = None


class PlanReplaceIn(Strict):
    """A plan's new content."""

    description: Annotated[str, Field(max_length=500)] = ""
    quotas: dict[ServiceName, LimitsIn] = Field(
        default_factory=dict, max_length=100, description="By registered service name"
    )
    limits: list[LimitIn] = Field(
        default_factory=list, max_length=100, description="Each name once within the plan"
    )
    alert_thresholds: ThresholdsIn = None
    refill: RefillIn = None
    low_credits: LowCreditsIn = None


class LimitOut(BaseModel):
    """A resource limit of a plan."""

    name: str = Field(examples=["cohort.max_count"])
    description: str
    limit: int


class PlanOut(BaseModel):
    """A plan."""

    id: str
    description: str
    quotas: dict[str, LimitsOut] = Field(examples=[{"insights": {"total": 250, "period": "day"}}])
    limits: list[LimitOut]
    created_at: str
    alert_thresholds: ThresholdsOut = Field(description="null: the default [80, 100] apply")
    refill: RefillOut | None = Field(None, description="Credits given every window (null: none)")
    low_credits: CreditsOut | None = Field(
        None, description="credits.low is sent when the balance falls below it (null: never)"
    )


# Accounts ---------------------------------------------------------------------
class OverridesIn(Strict):
    """Per-account replacements of the plan's limits (``quotas``, by service: each replaces
    the plan's limit of the same window or rate and per, or adds one) and resource limits
    (``limits``, by limit name), e.g.
    ``{"quotas": {"insights": {"total": 500}}, "limits": {"cohort.max_count": 20}}``.
    A PATCH replaces the overrides whole."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {"quotas": {"insights": {"total": 500}}, "limits": {"cohort.max_count": 20}}
            ]
        },
    )

    quotas: dict[ServiceName, LimitsIn] = Field(default_factory=dict, max_length=100)
    limits: dict[LimitName, Count] = Field(default_factory=dict, max_length=100)
    alert_thresholds: ThresholdsIn = None
    low_credits: LowCreditsIn = None


class AccountIn(Strict):
    """An account to create."""

    id: Identifier | None = None
    name: Annotated[str, Field(min_length=1, max_length=200)]
    plan: Annotated[Identifier, Field(description="The id of an existing plan")]
    timezone: Annotated[str, Field(max_length=64, description=TIMEZONE)] = "UTC"
    status: Literal["active", "suspended"] = "active"
    overrides: OverridesIn = Field(default_factory=OverridesIn)
    billing_anchor: BillingAnchor | None = Field(
        None, description="1-31 (default: the day of the account's creation, local)"
    )


class AccountPatch(Strict):
    """Fields of an account to change."""

    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    plan: Annotated[Identifier, Field(description="The id of an existing plan")] | None = None
    timezone: Annotated[str, Field(max_length=64, description=TIMEZONE)] | None = None
    status: Literal["active", "suspended"] | None = None
    overrides: OverridesIn | None = None
    billing_anchor: BillingAnchor | None = None


class OverridesOut(BaseModel):
    """An account's replacements of its plan's totals and limits (both empty when none)."""

    quotas: dict[str, LimitsOut] = Field(examples=[{"insights": {"total": 500}}])
    limits: dict[str, int] = Field(examples=[{"cohort.max_count": 20}])
    alert_thresholds: list[int] | SkipJsonSchema[None] = Field(
        None, examples=[[50, 90, 100]], description="Omitted when unset: the plan's apply"
    )
    low_credits: CreditsOut | SkipJsonSchema[None] = Field(
        None, description="Replaces the plan's low_credits; omitted when unset: the plan's applies"
    )


class AccountOut(BaseModel):
    """An account."""

    id: str
    name: str
    plan: str
    timezone: str
    status: Literal["active", "suspended"]
    overrides: OverridesOut
    billing_anchor: int = Field(description="Day of the month billing months start on")
    created_at: str


# Keys -------------------------------------------------------------------------
class KeyIn(Strict):
    """A key to create."""

    name: Annotated[str, Field(max_length=200)] = ""
    expires_at: Annotated[AwareDatetime, Field(description="RFC 3339, in the future")] | None = None
    scopes: list[Scope] | None = Field(
        None, description="None: every scope. Known: usage:read, consume:*, consume:<service>."
    )
    limits: dict[ServiceName, LimitsIn] = Field(
        default_factory=dict,
        max_length=100,
        description="The key's own limits by service (SPEC 9): they only narrow the account's",
    )


class KeyPatch(Strict):
    """A key's new own limits (replacing the old ones; ``{}``: none)."""

    limits: dict[ServiceName, LimitsIn] = Field(max_length=100)


class RotateIn(Strict):
    """How long the old key keeps working after a rotation."""

    grace_seconds: Annotated[int, Field(strict=True, ge=0, le=30 * 86_400), Integral] = 3600


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
    limits: dict[str, LimitsOut] = Field(examples=[{"insights": [{"window": "day", "total": 50}]}])


class IssuedKeyOut(KeyOut):
    """A new key: ``key`` is shown this once."""

    key: str


# Usage, limits, metering ------------------------------------------------------
class AdjustIn(Strict):
    """A correction of one day's use."""

    date: Annotated[str, Field(examples=["2024-11-01"], json_schema_extra=DATE_FORMAT)]
    delta: Annotated[int, Field(strict=True, ge=-(10**12), le=10**12), Integral]


class GaugeSetIn(Strict):
    """How many units of a resource limit are in use now (the gauge's new value)."""

    usage: Count


class GaugeAmountIn(Strict):
    """Units to acquire or release."""

    amount: Annotated[int, Field(strict=True, ge=1, le=10**9), Integral] = 1


class GaugeOut(BaseModel):
    """A resource limit's gauge: units in use (``usage``) and allowed (``limit``)."""

    name: str
    usage: int
    limit: int


# Documentation only: quotad.http.verify_body reads this body, to the same bounds.
VerifyCost = Annotated[int, Field(strict=True, ge=0, le=verify_body.COST_MAX), Integral]
# A verify's reservation fields (SPEC 10), the same with one service or with items.
Reserve = Annotated[
    bool, Field(strict=True, description="Hold the cost as a reservation (SPEC 10)")
]
TtlSeconds = Annotated[
    Annotated[int, Field(strict=True, ge=1, le=MAX_TTL_SECONDS), Integral] | SkipJsonSchema[None],
    Field(description="With reserve only (default 300)"),
]
VerifyService = Annotated[str, Field(min_length=1, max_length=verify_body.SERVICE_MAX_LENGTH)]


class VerifyItemIn(Strict):
    """One service of a verify with ``items`` and its cost."""

    service: VerifyService
    cost: VerifyCost = verify_body.COST_DEFAULT


class VerifyIn(Strict):
    """A key to verify and the quota of one service to consume with it."""

    key: Annotated[str, Field(min_length=1, max_length=verify_body.KEY_MAX_LENGTH)]
    service: VerifyService
    cost: VerifyCost = verify_body.COST_DEFAULT
    reserve: Reserve = False
    ttl_seconds: TtlSeconds = None


class VerifyItemsIn(Strict):
    """A key to verify and several services to consume with it, which pass together or
    not at all (SPEC 9); service and cost are then given per item, never beside items."""

    key: Annotated[str, Field(min_length=1, max_length=verify_body.KEY_MAX_LENGTH)]
    items: Annotated[
        list[VerifyItemIn],
        Field(
            min_length=1,
            max_length=verify_body.ITEMS_MAX,
            description="Each service at most once",
        ),
    ]
    reserve: Reserve = False
    ttl_seconds: TtlSeconds = None


class VerifyLimitOut(BaseModel):
    """One limit a verify checked, as it stands afterwards (SPEC 9): ``window`` for a
    window quota, ``rate`` for a rate (``total`` its burst, ``used`` the tokens taken)."""

    name: str = Field(examples=["insights.day"])
    window: str | SkipJsonSchema[None] = Field(None, examples=["day"])
    rate: RateOut | SkipJsonSchema[None] = None
    per: Literal["account", "key"]
    mode: Literal["hard", "soft", "shadow"]
    used: int
    remaining: int
    total: int
    reset: str
    overage: int | SkipJsonSchema[None] = Field(
        None, description="A soft limit past its total: by how much"
    )


class VerifyCreditsOut(BaseModel):
    """What a priced call debited, and the balance it left (credits)."""

    debited: CreditsOut
    remaining: CreditsOut


class VerifyOut(BaseModel):
    """The verdict (SPEC 4.2, with SPEC 9's limits): the version-1 fields are those of
    the limit that refused, else of the one with the least room left."""

    valid: bool
    code: str
    account_id: str | None
    service: str
    used: int | None
    remaining: int | None
    total: int | None
    reset: str | None
    note: str | SkipJsonSchema[None] = None  # omitted when there is none
    limits: list[VerifyLimitOut] = Field(default_factory=list)
    overage: int = 0
    would_refuse: list[str] = Field(default_factory=list)
    refused_by: str | None = None
    reservation_id: str | SkipJsonSchema[None] = None  # a granted verify with reserve
    expires_at: str | SkipJsonSchema[None] = None  # the reservation's deadline
    credits: VerifyCreditsOut | SkipJsonSchema[None] = Field(
        None, description="A priced service's call (SPEC 10); omitted otherwise"
    )


class EventIn(Strict):
    """A usage that already happened."""

    id: Annotated[str, Field(min_length=1, max_length=128)]
    account_id: Annotated[
        str, Field(min_length=1, max_length=64, description="An existing account's id")
    ]
    service: Annotated[
        str,
        Field(
            min_length=1,
            max_length=64,
            description="A registered service for which the account's plan has a quota",
        ),
    ]
    amount: Amount
    timestamp: Annotated[
        AwareDatetime,
        Field(description="RFC 3339 with an offset; within the last 90 days, not in the future"),
    ]


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


# Webhooks and alerts (SPEC 11) --------------------------------------------------
WebhookUrl = Annotated[
    str,
    Field(
        min_length=1,
        max_length=2048,
        description="http(s), without credentials; not a private address unless allowed",
        examples=["https://example.com/hooks/quotad"],
    ),
]
EventType = Literal[
    "quota.threshold",
    "quota.exceeded",
    "credits.low",
    "credits.exhausted",
    "key.expiring",
    "webhook.disabled",
]
WebhookEvents = Annotated[
    list[EventType], Field(min_length=1, max_length=6, json_schema_extra={"uniqueItems": True})
]
WebhookDescription = Annotated[str, Field(max_length=500)]


class WebhookIn(Strict):
    """A webhook endpoint to register."""

    url: WebhookUrl
    events: WebhookEvents
    description: WebhookDescription = ""


class WebhookPatch(Strict):
    """Fields of a webhook endpoint to change; ``enabled`` true also resumes a disabled one."""

    url: WebhookUrl | None = None
    events: WebhookEvents | None = None
    description: WebhookDescription | None = None
    enabled: Annotated[bool, Field(strict=True)] | None = None


class RotateSecretIn(Strict):
    """How long the previous secret keeps signing beside the new one."""

    grace_seconds: Annotated[int, Field(strict=True, ge=0, le=7 * 86_400), Integral] = 0


class WebhookOut(BaseModel):
    """A webhook endpoint: never its secret, only a hint of it."""

    id: str
    url: str
    description: str
    events: list[str]
    secret_hint: str = Field(examples=["whsec_…a1b2"])
    enabled: bool
    disabled_at: str | None
    disabled_reason: str | None
    failing_since: str | None = Field(
        description="RFC 3339: the first failed attempt since the last success (null: none)"
    )
    created_at: str
    updated_at: str
    account_id: str | None = Field(
        None,
        description="the account whose own endpoint this is (its events only); "
        "null: the operator's, receiving every account's",
    )


class CreatedWebhookOut(WebhookOut):
    """A new (or rotated) endpoint: ``secret`` is shown this once."""

    secret: str = Field(examples=["whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw"])


class AttemptOut(BaseModel):
    """One try at a delivery and what the receiver answered."""

    at: str
    status_code: int | None = Field(description="null: no HTTP answer (refused, timed out)")
    latency_ms: int
    error: str | None
    response: str = Field(description="The first characters of the answer")


class DeliveryOut(BaseModel):
    """One event for one endpoint, with every attempt made."""

    id: str
    event_id: str
    type: str
    status: Literal["pending", "delivered", "failed"]
    created_at: str
    next_attempt_at: str | None
    attempts: list[AttemptOut]


class AlertEventOut(BaseModel):
    """An alert event, as its deliveries carry it."""

    id: str
    type: str
    timestamp: str
    account_id: str | None
    data: dict[str, JsonValue]


class ServicePatch(Strict):
    """Fields of a service to change."""

    description: Annotated[str, Field(max_length=500)] | None = None
    credit_price: PriceIn = None


class GrantIn(Strict):
    """Credits to give an account."""

    amount: CreditsIn
    expires_at: AwareDatetime | None = Field(None, description="RFC 3339, in the future")
    priority: Annotated[int, Field(strict=True, ge=-1000, le=1000), Integral] = 0
    note: Annotated[str, Field(max_length=500)] = ""


class GrantOut(BaseModel):
    """A grant and what is left of it."""

    id: str
    kind: Literal["grant", "refill"]
    amount: CreditsOut
    remaining: CreditsOut
    expires_at: str | None
    priority: int
    note: str
    created_at: str
    voided_at: str | None


class BalanceOut(BaseModel):
    """An account's balance and every grant."""

    balance: CreditsOut
    grants: list[GrantOut]


class LedgerEntryOut(BaseModel):
    """One line of an account's ledger (``amount`` signed)."""

    id: str
    at: str
    kind: Literal["grant", "refill", "expiry", "debit", "void", "adjustment"]
    grant_id: str
    amount: CreditsOut
    balance_after: CreditsOut
