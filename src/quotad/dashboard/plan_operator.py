"""``/dashboard/plans`` and ``/dashboard/services``: the operator's plans (their limits in
words, the accounts on each) and services, and the forms creating, replacing and deleting
plans and registering and editing services.

A plan is edited as the JSON body of ``PUT /admin/v1/plans/{id}``, read by the API's own
parsers (``admin.parse_quotas`` and friends), so every limit kind of SPEC 9 can be written
and a mistake is named by its JSON pointer as the API names it. Every change goes through
``quotad.service.admin`` (audited with the session's token name as its actor); a read
session sees the pages without their forms, and a form it posts anyway is refused (403)
before anything is read from the store.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any, NamedTuple, TypeGuard
from urllib.parse import quote

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import web
from quotad.dashboard.credit_pages import amount_text
from quotad.dashboard.operator import AREA, account_url, admin_form, operator_session
from quotad.dashboard.sessions import Session
from quotad.domain import limits
from quotad.domain.credits import MICROS, Refill, from_micros, to_micros
from quotad.domain.limits import LimitSpec, Mode, Per, Window
from quotad.domain.models import Account, Limit, Plan, Quota, Service
from quotad.domain.webhooks import DEFAULT_THRESHOLDS
from quotad.errors import Conflict, QuotadError, ValidationFailed
from quotad.http.credit_views import low_credits_at, refill_at
from quotad.service import admin
from quotad.service.context import Context

MAX_ID = 200  # an id in a page's address (longer ones are refused, not looked up)
MAX_DESCRIPTION = 500  # as the API's descriptions
MAX_ITEMS = 100  # services of a plan, and resource limits of a plan, as the API allows
MAX_COUNT = 10**15  # a resource limit's largest value, as the API's
PLANS_PAGE = 500  # plans read per page
LISTED = 5  # accounts named on the plans page (the count says how many there are)
SHOWN_ON_PAGE = 500  # accounts named on a plan's page (past that, the accounts list filters)
# The API's patterns (``quotad.api.schemas``, which the dashboard may not import).
PLAN_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$")
SERVICE_NAME = re.compile(r"^[a-z][a-z0-9_-]{0,63}$")
LIMIT_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_.-]{0,127}$")
BODY_FIELDS = ("description", "quotas", "limits", "alert_thresholds", "refill", "low_credits")
LIMIT_FIELDS = ("name", "description", "limit")
# The set-limit form's window choices: a month on the billing anchor is a window of its own
# there, and a rate is chosen in place of a window.
WINDOW_CHOICES = (
    *((w.value, w.value) for w in Window),
    ("month-billing", "month (billing)"),
    ("rate", "rate (per second, with a burst)"),
)
EMPTY_LIMIT_FORM = {
    "service": "",
    "window": "day",
    "total": "",
    "per_second": "",
    "mode": "hard",
    "per": "account",
}
NOTICES = {
    "limit-set": "The limit was set; accounts on the plan count against it now.",
    "limit-removed": "The limit was removed from the plan.",
    "created": "The plan was created.",
    "replaced": "The plan was replaced; accounts on it count against its new limits now.",
    "deleted": "The plan was deleted.",
    "service-created": "The service was registered.",
    "service-updated": "The service was changed.",
}


class FormError(ValueError):
    """A form the dashboard refuses before calling the service (why, in words)."""


def plan_url(plan_id: str) -> str:
    """The address of a plan's page."""
    return f"/dashboard/plans/{quote(plan_id, safe='')}"


# Plans in words -----------------------------------------------------------------------
def _count(value: int) -> str:
    return f"{value:,}"


def limit_words(spec: LimitSpec) -> str:
    """One limit as the pages say it: ``250 / day``, ``10/s burst 20``,
    ``20,000 / month (billing)``, with ``soft``/``shadow`` and ``per key`` when so."""
    if spec.window is None:
        per_second = spec.per_second
        rate = f"{int(per_second):,}" if float(per_second).is_integer() else f"{per_second:g}"
        text = f"{rate}/s burst {_count(spec.total)}"
    else:
        text = f"{_count(spec.total)} / {spec.window.value}"
        if spec.billing:
            text += " (billing)"
    extras = []
    if spec.mode is not Mode.HARD:
        extras.append(spec.mode.value)
    if spec.per is Per.KEY:
        extras.append("per key")
    return ", ".join([text, *extras])


def refill_words(plan: Plan) -> str | None:
    """A plan's refill in words (None: it has none)."""
    refill = plan.refill
    if refill is None:
        return None
    text = f"{amount_text(refill.amount)} credits / {refill.window.value}"
    if refill.billing:
        text += " (billing)"
    return f"{text}, {refill.mode.value.replace('_', ' ')}"


def credits_input(micros: int) -> str:
    """Micro-credits as a form's field holds them: plain digits, no grouping."""
    text = f"{Decimal(micros) / MICROS:f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


class LimitLine(NamedTuple):
    """One limit of a plan's service as the pages list it."""

    words: str  # as ``limit_words`` says it
    name: str  # its limit name (``insights.day.key``): what the remove form names it by


@dataclass(frozen=True, slots=True)
class PlanRow:
    """A plan as the pages show it, with the accounts on it."""

    plan: Plan
    accounts: list[Account] = field(default_factory=list)  # those shown (the first by id)
    count: int = 0  # all of them

    @property
    def services(self) -> list[tuple[str, list[LimitLine]]]:
        """Each service's limits in words, by service name."""
        return [
            (name, [LimitLine(limit_words(spec), spec.name(name)) for spec in quota.limits])
            for name, quota in sorted(self.plan.quotas.items())
        ]

    @property
    def thresholds(self) -> str:
        """The alert thresholds, saying when they are the defaults."""
        given = self.plan.alert_thresholds
        if given is None:
            return ", ".join(f"{t} %" for t in DEFAULT_THRESHOLDS) + " (the defaults)"
        return ", ".join(f"{t} %" for t in given)

    @property
    def refill(self) -> str | None:
        """The refill in words."""
        return refill_words(self.plan)

    @property
    def low_credits(self) -> str | None:
        """The low-credits mark in credits."""
        mark = self.plan.low_credits
        return None if mark is None else f"{amount_text(mark)} credits"


async def plan_row(ctx: Context, plan: Plan, counts: dict[str, int], shown: int) -> PlanRow:
    """A plan with its number of accounts and the first ``shown`` of them (an indexed
    read: a plan's page stays fast whatever the number of accounts)."""
    first = (
        await admin.list_accounts(ctx, shown, None, None, plan.id) if counts.get(plan.id) else []
    )
    return PlanRow(plan, first, counts.get(plan.id, 0))


async def _all_plans(ctx: Context) -> list[Plan]:
    plans: list[Plan] = []
    after: str | None = None
    while True:
        page = await admin.list_plans(ctx, PLANS_PAGE, after)
        plans += page
        if len(page) < PLANS_PAGE:
            return plans
        after = page[-1].id


# The plan body (the API's PUT body) -----------------------------------------------------
def plan_body(plan: Plan | None) -> str:
    """The JSON a plan's form starts from: the plan as ``PUT`` takes it, or an empty plan."""
    if plan is None:
        body: dict[str, Any] = {
            "description": "",
            "quotas": {},
            "limits": [],
            "alert_thresholds": None,
            "refill": None,
            "low_credits": None,
        }
    else:
        body = {
            "description": plan.description,
            "quotas": {
                name: limits.render(quota.limits) for name, quota in sorted(plan.quotas.items())
            },
            "limits": [
                {"name": x.name, "description": x.description, "limit": x.limit}
                for x in plan.limits
            ],
            "alert_thresholds": (
                None if plan.alert_thresholds is None else list(plan.alert_thresholds)
            ),
            "refill": None if plan.refill is None else plan.refill.to_json(),
            "low_credits": None if plan.low_credits is None else from_micros(plan.low_credits),
        }
    return json.dumps(body, indent=2, ensure_ascii=False)


@dataclass(frozen=True, slots=True)
class PlanBody:
    """A plan's content as ``admin.create_plan``/``replace_plan`` take it."""

    description: str
    quotas: dict[str, Quota]
    limits: list[Limit]
    alert_thresholds: tuple[int, ...] | None
    refill: Refill | None
    low_credits: int | None


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and 0 <= value <= MAX_COUNT


def _resource_limits(raw: object) -> list[Limit]:
    """The plan's resource limits (``[{"name", "description", "limit"}]``), checked as the
    API's schema checks them."""
    if not isinstance(raw, list):
        raise ValidationFailed.at("/body/limits", "limits must be a list", "type")
    if len(raw) > MAX_ITEMS:
        raise ValidationFailed.at("/body/limits", f"at most {MAX_ITEMS} limits", "maximum")
    found: list[Limit] = []
    for index, item in enumerate(raw):
        where = f"/body/limits/{index}"
        if not isinstance(item, dict):
            raise ValidationFailed.at(where, "a limit is an object", "type")
        for name in item:
            if name not in LIMIT_FIELDS:
                raise ValidationFailed.at(f"{where}/{name}", f"unknown field {name!r}", "extra")
        name = item.get("name")
        if not isinstance(name, str) or not LIMIT_NAME.match(name):
            raise ValidationFailed.at(
                f"{where}/name", "name is a letter, then letters, digits, _ . or -", "pattern"
            )
        description = item.get("description", "")
        if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
            raise ValidationFailed.at(
                f"{where}/description", f"at most {MAX_DESCRIPTION} characters", "type"
            )
        value = item.get("limit")
        if not _is_count(value):
            raise ValidationFailed.at(
                f"{where}/limit", f"limit is a whole number from 0 to {MAX_COUNT}", "range"
            )
        found.append(Limit(name, description, value))
    return found


def parse_plan_body(text: str) -> PlanBody:
    """The plan the textarea holds, read as the API reads ``PUT /admin/v1/plans/{id}``.

    Raises ``FormError`` for text that is not a JSON object, ``ValidationFailed`` (each
    problem at its ``/body/…`` pointer) for content the API would refuse.
    """
    try:
        raw = json.loads(text)
    except json.JSONDecodeError as exc:
        raise FormError(
            f"The plan is not valid JSON: {exc.msg} (line {exc.lineno}, column {exc.colno})."
        ) from None
    if not isinstance(raw, dict):
        raise FormError('The plan is a JSON object: {"quotas": {…}, "limits": […], …}.')
    for name in raw:
        if name not in BODY_FIELDS:
            raise ValidationFailed.at(f"/body/{name}", f"unknown field {name!r}", "extra")
    description = raw.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        raise ValidationFailed.at(
            "/body/description", f"description is text of at most {MAX_DESCRIPTION} characters"
        )
    quotas = raw.get("quotas", {})
    if not isinstance(quotas, dict):
        raise ValidationFailed.at("/body/quotas", "quotas is an object by service", "type")
    if len(quotas) > MAX_ITEMS:
        raise ValidationFailed.at("/body/quotas", f"at most {MAX_ITEMS} services", "maximum")
    for name in quotas:
        if not SERVICE_NAME.match(name):
            raise ValidationFailed.at(
                f"/body/quotas/{name}", f"{name!r} is not a service name", "pattern"
            )
    parsed = admin.parse_quotas(quotas, "/body/quotas")
    return PlanBody(
        description,
        {name: Quota(specs) for name, specs in parsed.items()},
        _resource_limits(raw.get("limits", [])),
        admin.parse_alert_thresholds(raw.get("alert_thresholds")),
        refill_at(raw.get("refill")),
        low_credits_at(raw.get("low_credits")),
    )


def said(exc: QuotadError) -> str:
    """What a refusal says: each field's problem at its pointer, else its note."""
    problems = "; ".join(f"{item.path}: {item.message}" for item in exc.validation_errors)
    return problems or exc.note


# Pages ----------------------------------------------------------------------------------
async def _plans_page(
    ctx: Context,
    session: Session,
    status: int = 200,
    *,
    entered: Mapping[str, str] | None = None,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    counts = await admin.count_accounts_by_plan(ctx)
    rows = [await plan_row(ctx, plan, counts, LISTED) for plan in await _all_plans(ctx)]
    return web.render(
        AREA,
        "plans.html",
        status,
        session=session,
        rows=rows,
        entered=entered or {"id": "", "body": plan_body(None)},
        account_url=account_url,
        plan_url=plan_url,
        notice=notice,
        error=error,
        nav="plans",
    )


async def _plan_page(
    ctx: Context,
    session: Session,
    plan: Plan,
    status: int = 200,
    *,
    body: str | None = None,
    entered_limit: Mapping[str, str] | None = None,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    row = await plan_row(ctx, plan, await admin.count_accounts_by_plan(ctx), SHOWN_ON_PAGE)
    return web.render(
        AREA,
        "plan.html",
        status,
        session=session,
        row=row,
        truncated=row.count > len(row.accounts),
        body=plan_body(plan) if body is None else body,
        services=await admin.list_services(ctx),
        window_choices=WINDOW_CHOICES,
        entered_limit=entered_limit or EMPTY_LIMIT_FORM,
        account_url=account_url,
        plan_url=plan_url,
        when=_when,
        notice=notice,
        error=error,
        nav="plans",
    )


def _when(plan: Plan) -> str:
    return plan.created_at.strftime("%Y-%m-%d %H:%M:%S")


def _no_plan(session: Session, plan_id: str) -> Response:
    return web.message(AREA, 404, "No such plan", f"There is no plan “{plan_id}”.", session=session)


async def plans_page(request: Request) -> Response:
    """Every plan, its limits in words and the accounts on it; the form creating one."""
    ctx = web.context(request)
    notice = web.query(request, "notice", MAX_ID)
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    return await _plans_page(ctx, session, notice=NOTICES.get(notice))


async def plan_page(request: Request) -> Response:
    """One plan: its limits, its accounts, and the forms replacing and deleting it."""
    ctx = web.context(request)
    plan_id: str = request.path_params["plan_id"]
    notice = web.query(request, "notice", MAX_ID)
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    plan = await ctx.records.get_plan(plan_id) if len(plan_id) <= MAX_ID else None
    if plan is None:
        return _no_plan(session, plan_id)
    return await _plan_page(ctx, session, plan, notice=NOTICES.get(notice))


async def _plan_form(
    ctx: Context, request: Request
) -> tuple[Session | None, Plan | None, dict[str, str], Response | None]:
    """As ``operator.admin_form``, with the plan the address names (or its 404 page)."""
    session, form, refusal = await admin_form(ctx, request)
    if refusal is not None or session is None:
        return session, None, form, refusal or web.to_login(AREA)
    plan_id: str = request.path_params["plan_id"]
    plan = await ctx.records.get_plan(plan_id) if len(plan_id) <= MAX_ID else None
    if plan is None:
        return session, None, form, _no_plan(session, plan_id)
    return session, plan, form, None


async def create_plan(request: Request) -> Response:
    """Create a plan from its id and its JSON body (audited ``plan.create``)."""
    ctx = web.context(request)
    session, form, refusal = await admin_form(ctx, request)
    if refusal is not None or session is None:
        return refusal or web.to_login(AREA)
    plan_id = form.get("id", "").strip()
    text = form.get("body", "")
    entered = {"id": plan_id, "body": text}
    if not PLAN_ID.match(plan_id):
        error = (
            "A plan id is 1 to 64 letters, digits, “.”, “_” or “-”, starting with a letter "
            "or digit."
        )
        return await _plans_page(ctx, session, 400, entered=entered, error=error)
    try:
        body = parse_plan_body(text)
        await admin.create_plan(
            ctx,
            plan_id,
            body.quotas,
            body.limits,
            body.description,
            body.alert_thresholds,
            body.refill,
            body.low_credits,
        )
    except FormError as exc:
        return await _plans_page(ctx, session, 400, entered=entered, error=str(exc))
    except QuotadError as exc:
        return await _plans_page(ctx, session, web.status_of(exc), entered=entered, error=said(exc))
    return web.redirect(f"{plan_url(plan_id)}?notice=created")


async def replace_plan(request: Request) -> Response:
    """Replace a plan with the form's JSON body (audited ``plan.replace``)."""
    ctx = web.context(request)
    session, plan, form, refusal = await _plan_form(ctx, request)
    if refusal is not None or session is None or plan is None:
        return refusal or web.to_login(AREA)
    text = form.get("body", "")
    try:
        body = parse_plan_body(text)
        await admin.replace_plan(
            ctx,
            plan.id,
            body.quotas,
            body.limits,
            body.description,
            body.alert_thresholds,
            body.refill,
            body.low_credits,
        )
    except FormError as exc:
        return await _plan_page(ctx, session, plan, 400, body=text, error=str(exc))
    except QuotadError as exc:
        return await _plan_page(ctx, session, plan, web.status_of(exc), body=text, error=said(exc))
    return web.redirect(f"{plan_url(plan.id)}?notice=replaced")


async def delete_plan(request: Request) -> Response:
    """Delete a plan no account uses (audited ``plan.delete``); refused while one does."""
    ctx = web.context(request)
    session, plan, _form, refusal = await _plan_form(ctx, request)
    if refusal is not None or session is None or plan is None:
        return refusal or web.to_login(AREA)
    try:
        await admin.delete_plan(ctx, plan.id)
    except Conflict:
        error = (
            f"Plan {plan.id} is not deleted: accounts use it. Move them to another plan "
            "first (listed below)."
        )
        return await _plan_page(ctx, session, plan, 409, error=error)
    except QuotadError as exc:
        return await _plan_page(ctx, session, plan, web.status_of(exc), error=said(exc))
    return web.redirect("/dashboard/plans?notice=deleted")


def limit_item(form: Mapping[str, str]) -> dict[str, Any]:
    """The set-limit form's limit as the API's JSON writes it (SPEC 9), for
    ``admin.parse_quotas`` to check. Raises ``FormError`` for numbers that are not."""
    if not SERVICE_NAME.match(form.get("service", "")):
        raise FormError("Choose a registered service.")
    window = form.get("window", "")
    total_text = form.get("total", "").strip().replace(",", "").replace("_", "")
    if not total_text.isdigit():
        raise FormError("The total (a rate's burst) is a whole number.")
    item: dict[str, Any]
    if window == "rate":
        try:
            per_second = float(form.get("per_second", "").strip())
        except ValueError:
            raise FormError("A rate's “per second” is a number, e.g. 10 or 0.5.") from None
        item = {"rate": {"per_second": per_second, "burst": int(total_text)}}
    elif window == "month-billing":
        item = {"window": "month", "total": int(total_text), "anchor": "billing"}
    else:
        item = {"window": window, "total": int(total_text)}
    for name, default in (("mode", "hard"), ("per", "account")):
        value = form.get(name, default)
        if value != default:
            item[name] = value
    return item


async def _replace_quotas(ctx: Context, plan: Plan, quotas: dict[str, Quota]) -> None:
    """Replace the plan with other quotas, the rest of it as it is (audited ``plan.replace``)."""
    await admin.replace_plan(
        ctx,
        plan.id,
        quotas,
        list(plan.limits),
        plan.description,
        plan.alert_thresholds,
        plan.refill,
        plan.low_credits,
    )


def _messages(exc: QuotadError) -> str:
    """A refusal's problems without their pointers (the form has no JSON to point into)."""
    problems = "; ".join(item.message for item in exc.validation_errors)
    return problems or exc.note


async def set_limit(request: Request) -> Response:
    """Set one limit of a service in the plan: the limit of the same identity (window or
    rate, and per) is replaced, else it is added (audited ``plan.replace``)."""
    ctx = web.context(request)
    session, plan, form, refusal = await _plan_form(ctx, request)
    if refusal is not None or session is None or plan is None:
        return refusal or web.to_login(AREA)
    entered = {name: form.get(name, default) for name, default in EMPTY_LIMIT_FORM.items()}
    service = form.get("service", "")
    try:
        [new] = admin.parse_quotas({service: [limit_item(form)]}, "/body")[service]
        kept = plan.quotas[service].limits if service in plan.quotas else ()
        specs = [spec for spec in kept if spec.identity != new.identity]
        quotas = {**plan.quotas, service: Quota((*specs, new))}
        await _replace_quotas(ctx, plan, quotas)
    except FormError as exc:
        return await _plan_page(ctx, session, plan, 400, entered_limit=entered, error=str(exc))
    except QuotadError as exc:
        return await _plan_page(
            ctx, session, plan, web.status_of(exc), entered_limit=entered, error=_messages(exc)
        )
    return web.redirect(f"{plan_url(plan.id)}?notice=limit-set")


async def remove_limit(request: Request) -> Response:
    """Remove one limit, named by its limit name, from the plan (audited ``plan.replace``);
    a service left without limits leaves the plan."""
    ctx = web.context(request)
    session, plan, form, refusal = await _plan_form(ctx, request)
    if refusal is not None or session is None or plan is None:
        return refusal or web.to_login(AREA)
    name = form.get("limit", "")
    quotas = dict(plan.quotas)
    for service, quota in plan.quotas.items():
        kept = tuple(spec for spec in quota.limits if spec.name(service) != name)
        if len(kept) == len(quota.limits):
            continue
        if kept:
            quotas[service] = Quota(kept)
        else:
            del quotas[service]
        break
    else:
        error = f"Plan {plan.id} has no limit “{name}” (changed meanwhile?); nothing was removed."
        return await _plan_page(ctx, session, plan, 409, error=error)
    try:
        await _replace_quotas(ctx, plan, quotas)
    except QuotadError as exc:
        return await _plan_page(ctx, session, plan, web.status_of(exc), error=_messages(exc))
    return web.redirect(f"{plan_url(plan.id)}?notice=limit-removed")


# Services -------------------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class ServiceRow:
    """A service as the page lists it."""

    service: Service
    plans: list[str] = field(default_factory=list)  # ids of the plans limiting it

    @property
    def price(self) -> str:
        """The credit price in words."""
        price = self.service.credit_price
        return "unpriced" if price is None else f"{amount_text(price)} credits a unit"

    @property
    def price_input(self) -> str:
        """The credit price as its form field holds it (empty: unpriced)."""
        price = self.service.credit_price
        return "" if price is None else credits_input(price)


def parse_price(text: str) -> int | None:
    """A credit price field in micro-credits (empty: unpriced). Raises ``FormError``."""
    text = text.strip()
    if not text:
        return None
    try:
        return to_micros(text)
    except ValueError as exc:
        raise FormError(
            f"The credit price {exc} (credits a unit, at most 6 decimal places; empty: unpriced)."
        ) from None


def _check_service_name(name: str) -> None:
    if not SERVICE_NAME.match(name):
        raise FormError(
            "A service name is 1 to 64 lower-case letters, digits, “_” or “-”, starting "
            "with a letter."
        )


def _service_description(form: Mapping[str, str]) -> str:
    description = form.get("description", "").strip()
    if len(description) > MAX_DESCRIPTION:
        raise FormError(f"A description has at most {MAX_DESCRIPTION} characters.")
    return description


async def _services_page(
    ctx: Context,
    session: Session,
    status: int = 200,
    *,
    entered: Mapping[str, str] | None = None,
    notice: str | None = None,
    error: str | None = None,
) -> Response:
    plans = await _all_plans(ctx)
    rows = [
        ServiceRow(service, [plan.id for plan in plans if service.name in plan.quotas])
        for service in await admin.list_services(ctx)
    ]
    return web.render(
        AREA,
        "services.html",
        status,
        session=session,
        rows=rows,
        plan_url=plan_url,
        entered=entered or {"name": "", "description": "", "credit_price": ""},
        notice=notice,
        error=error,
        nav="services",
    )


async def services_page(request: Request) -> Response:
    """Every service (name, description, credit price); the forms registering and editing."""
    ctx = web.context(request)
    notice = web.query(request, "notice", MAX_ID)
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    return await _services_page(ctx, session, notice=NOTICES.get(notice))


async def create_service(request: Request) -> Response:
    """Register a service (audited ``service.create``)."""
    ctx = web.context(request)
    session, form, refusal = await admin_form(ctx, request)
    if refusal is not None or session is None:
        return refusal or web.to_login(AREA)
    name = form.get("name", "").strip()
    entered = {
        "name": name,
        "description": form.get("description", "").strip(),
        "credit_price": form.get("credit_price", "").strip(),
    }
    try:
        _check_service_name(name)
        description = _service_description(form)
        price = parse_price(form.get("credit_price", ""))
        await admin.create_service(ctx, name, description, price)
    except FormError as exc:
        return await _services_page(ctx, session, 400, entered=entered, error=str(exc))
    except QuotadError as exc:
        return await _services_page(
            ctx, session, web.status_of(exc), entered=entered, error=said(exc)
        )
    return web.redirect("/dashboard/services?notice=service-created")


async def update_service(request: Request) -> Response:
    """Change a service's description and credit price (audited ``service.update``)."""
    ctx = web.context(request)
    session, form, refusal = await admin_form(ctx, request)
    if refusal is not None or session is None:
        return refusal or web.to_login(AREA)
    name: str = request.path_params["name"]
    try:
        description = _service_description(form)
        price = parse_price(form.get("credit_price", ""))
        await admin.update_service(ctx, name, description, price)
    except FormError as exc:
        return await _services_page(ctx, session, 400, error=f"{name}: {exc}")
    except QuotadError as exc:
        return await _services_page(ctx, session, web.status_of(exc), error=said(exc))
    return web.redirect("/dashboard/services?notice=service-updated")


_PLAN = "/dashboard/plans/{plan_id}"
ROUTES: list[BaseRoute] = [
    Route("/dashboard/plans", plans_page, methods=["GET"]),
    Route("/dashboard/plans", create_plan, methods=["POST"]),
    Route(_PLAN, plan_page, methods=["GET"]),
    Route(f"{_PLAN}/replace", replace_plan, methods=["POST"]),
    Route(f"{_PLAN}/limits", set_limit, methods=["POST"]),
    Route(f"{_PLAN}/limits/remove", remove_limit, methods=["POST"]),
    Route(f"{_PLAN}/delete", delete_plan, methods=["POST"]),
    Route("/dashboard/services", services_page, methods=["GET"]),
    Route("/dashboard/services", create_service, methods=["POST"]),
    Route("/dashboard/services/{name}/update", update_service, methods=["POST"]),
]
