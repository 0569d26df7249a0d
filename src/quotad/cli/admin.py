"""Administration: ``services``, ``plans``, ``accounts`` and ``keys``.

Each command checks its input with the API's request schema, then asks the
``Operator`` of its target (a local store or, with ``--url``, a running quotad) and
prints the views it answers.
"""

from __future__ import annotations

from enum import StrEnum
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.markup import escape

from quotad.cli.console import (
    App,
    JsonOption,
    cli_errors,
    console,
    fail,
    handle_errors,
    print_json,
    print_record,
    print_rows,
    print_secret,
    show,
    validated,
)
from quotad.cli.operator import PlanLimit
from quotad.cli.stores import StoreOption
from quotad.cli.target import CreateOption, TokenOption, UrlOption, run, target
from quotad.errors import FieldError, ValidationFailed

if TYPE_CHECKING:
    from quotad.domain.credits import Refill
    from quotad.domain.limits import Limits

# Services ---------------------------------------------------------------------
services_app = App(help="Metered services.")
SERVICE_COLUMNS = ("name", "description", "credit_price", "created_at")
CreditPriceOption = Annotated[
    str | None,
    typer.Option(
        "--credit-price",
        help="Credits each unit of cost also debits (> 0, at most 6 decimals)",
    ),
]


def credit_price_option(text: str | None) -> int | None:
    """``--credit-price`` in micro-credits, checked as the API checks ``credit_price``."""
    if text is None:
        return None
    from quotad.domain.credits import to_micros

    try:
        return to_micros(text.strip())
    except ValueError as exc:
        raise ValidationFailed.at("/body/credit_price", f"credit_price {exc}", "range") from exc


@services_app.command("list")
@handle_errors
def services_list(
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the registered services."""
    rows = run(target(store, url, token), lambda op: op.list_services())
    show(rows, as_json, lambda: print_rows("services", rows, SERVICE_COLUMNS))


@services_app.command("create")
@cli_errors({"name": "NAME"})
def services_create(
    name: str,
    description: Annotated[str, typer.Option(help="What the service is")] = "",
    credit_price: CreditPriceOption = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    create: CreateOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Register a service."""
    from quotad.api import schemas

    body = validated(schemas.ServiceIn, name=name, description=description)
    price = credit_price_option(credit_price)
    where = target(store, url, token, create)
    view = run(where, lambda op: op.create_service(body.name, body.description, price))
    show(
        view,
        as_json,
        lambda: print_record(f"service {view['name']} created", view, SERVICE_COLUMNS),
    )


@services_app.command("update")
@handle_errors
def services_update(
    name: str,
    description: Annotated[str | None, typer.Option(help="What the service is")] = None,
    credit_price: CreditPriceOption = None,
    unpriced: Annotated[
        bool, typer.Option("--unpriced", help="Remove the price: calls debit no credits")
    ] = False,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Change a service's description or credit price."""
    from quotad.service.admin import UNCHANGED, Unchanged

    if credit_price is not None and unpriced:
        raise fail("give --credit-price or --unpriced, not both")
    if credit_price is None and not unpriced and description is None:
        raise fail("nothing to change: give --description, --credit-price or --unpriced")
    if description is not None and len(description) > MAX_DESCRIPTION:
        raise ValidationFailed.at(
            "/body/description", f"description is at most {MAX_DESCRIPTION} characters", "length"
        )
    price: int | Unchanged | None = None if unpriced else UNCHANGED
    if credit_price is not None:
        price = credit_price_option(credit_price)
    where = target(store, url, token)
    view = run(where, lambda op: op.update_service(name, description, price))
    show(
        view,
        as_json,
        lambda: print_record(f"service {view['name']} updated", view, SERVICE_COLUMNS),
    )


MAX_DESCRIPTION = 500  # as the API's ServicePatch


# Plans ------------------------------------------------------------------------
plans_app = App(help="Plans: quotas per service and resource limits.")


def _number(text: str) -> int | str:
    # The API's integers are strict; a command-line number arrives as text.
    stripped = text.strip()
    return int(stripped) if stripped.lstrip("-").isdigit() else text


def _quota_options(items: list[str]) -> dict[str, dict[str, int | str]]:
    quotas: dict[str, dict[str, int | str]] = {}
    for text in items:
        name, sep, total = text.partition("=")
        if not sep:
            raise ValidationFailed.at(
                "/body/quotas", f"{text!r} is not SERVICE=TOTAL", "format", "e.g. insights=250"
            )
        quotas[name] = {"total": _number(total)}
    return quotas


WINDOWS = ("minute", "hour", "day", "week", "month", "year")
FLAGS = {
    "billing": ("anchor", "billing"),
    "hard": ("mode", "hard"),
    "soft": ("mode", "soft"),
    "shadow": ("mode", "shadow"),
    "account": ("per", "account"),
    "key": ("per", "key"),
}
LIMIT_HELP = (
    "SERVICE=WINDOW:TOTAL[:billing][:soft|shadow][:key] (WINDOW minute...year), "
    "SERVICE=rate:PER_SECOND/BURST[:soft|shadow][:key], or a resource limit "
    "NAME=LIMIT[:DESCRIPTION] (repeatable)"
)


def _real(text: str) -> float | str:
    try:
        return float(text)
    except ValueError:
        return text  # parse_limits names it


def limit_option(text: str, where: str) -> tuple[str, dict[str, Any]] | None:
    """A ``--limit`` naming a window quota or a rate (SPEC 9) as ``(service, the limit's
    JSON)``; ``None`` for anything else (a resource limit, ``NAME=LIMIT``)."""
    service, sep, rest = text.partition("=")
    kind, _, tail = rest.partition(":")
    if not sep or kind not in (*WINDOWS, "rate"):
        return None
    first, *flags = tail.split(":")
    body: dict[str, Any]
    if kind == "rate":
        per_second, slash, burst = first.partition("/")
        if not slash:
            raise ValidationFailed.at(
                where,
                f"{text!r} is not SERVICE=rate:PER_SECOND/BURST",
                "format",
                "e.g. x=rate:10/20",
            )
        body = {"rate": {"per_second": _real(per_second), "burst": _number(burst)}}
    else:
        body = {"window": kind, "total": _number(first)}
    for flag in flags:
        if flag not in FLAGS:
            allowed = ", ".join(FLAGS)
            raise ValidationFailed.at(
                where, f"{text!r}: unknown {flag!r} (one of {allowed})", "format"
            )
        field, value = FLAGS[flag]
        body[field] = value
    return service, body


def parse_quotas(raw: dict[str, Any], where: str) -> dict[str, Limits]:
    """Each service's limits, checked as the API checks them (every problem at its JSON
    pointer under ``where``)."""
    from quotad.domain.limits import LimitError, parse_limits

    parsed: dict[str, Limits] = {}
    problems: list[FieldError] = []
    for service, value in raw.items():
        try:
            parsed[service] = parse_limits(value)
        except LimitError as exc:
            problems += [
                FieldError("/".join([f"{where}/{service}", *map(str, at)]), message, "limits")
                for at, message in exc.problems
            ]
    if problems:
        raise ValidationFailed("the limits are not valid", validation_errors=problems)
    return parsed


def split_limits(
    quota: list[str], limit: list[str]
) -> tuple[dict[str, Any], dict[str, list[dict[str, Any]]], list[str]]:
    """``--quota`` and ``--limit`` options as version 1's daily totals, version 2's lists
    (a ``--quota`` of a service with ``--limit`` options joins its list as a day limit),
    and the resource limits."""
    daily = _quota_options(quota)
    lists: dict[str, list[dict[str, Any]]] = {}
    resources = []
    for text in limit:
        found = limit_option(text, "/body/quotas")
        if found is None:
            resources.append(text)
        else:
            lists.setdefault(found[0], []).append(found[1])
    for service, items in lists.items():
        if service in daily:
            items.insert(0, {"window": "day", **daily.pop(service)})
    return daily, lists, resources


def key_limits(items: list[str]) -> dict[str, Limits]:
    """``keys create --limit`` options: a key's own limits by service."""
    lists: dict[str, list[dict[str, Any]]] = {}
    for text in items:
        found = limit_option(text, "/body/limits")
        if found is None:
            raise ValidationFailed.at(
                "/body/limits",
                f"{text!r} is not SERVICE=WINDOW:TOTAL or SERVICE=rate:PER_SECOND/BURST",
                "format",
                "e.g. insights=day:100",
            )
        lists.setdefault(found[0], []).append(found[1])
    return parse_quotas(lists, "/body/limits")


def _limit_options(items: list[str]) -> list[dict[str, int | str]]:
    limits = []
    for index, text in enumerate(items):
        name, sep, rest = text.partition("=")
        value, _, description = rest.partition(":")
        if not sep:
            raise ValidationFailed.at(
                f"/body/limits/{index}",
                f"{text!r} is not NAME=LIMIT[:DESCRIPTION]",
                "format",
                "e.g. cohort.max_count=10:Number of known contacts",
            )
        limits.append({"name": name, "limit": _number(value), "description": description})
    return limits


def limit_rows(quotas: dict[str, Any]) -> list[dict[str, Any]]:
    """A row per limit of a plan's (or a key's) quotas, either form."""
    rows = []
    for service, value in quotas.items():
        items = value if isinstance(value, list) else [{"window": "day", **value}]
        for item in items:
            rate = item.get("rate")
            rows.append(
                {
                    "service": service,
                    "window": "rate" if rate else item["window"],
                    "total": f"{rate['burst']} at {rate['per_second']}/s"
                    if rate
                    else item["total"],
                    "anchor": item.get("anchor", ""),
                    "mode": item.get("mode", "hard"),
                    "per": item.get("per", "account"),
                }
            )
    return rows


def limits_text(value: Any) -> str:
    """A service's limits, short: version 1's ``250/day``, or a list in the ``--limit``
    syntax, ``day:1000 rate:10/20``."""
    if isinstance(value, dict):
        return f"{value['total']}/{value.get('period', 'day')}"
    parts = []
    for row in limit_rows({"": value}):
        total = str(row["total"]).replace(" at ", "@").removesuffix("/s")
        extra = [x for x in (row["anchor"], row["mode"], row["per"]) if x not in FLAG_DEFAULTS]
        parts.append(":".join([row["window"], total, *extra]))
    return " ".join(parts)


FLAG_DEFAULTS = ("", "hard", "account")
LIMIT_COLUMNS = ("service", "window", "total", "anchor", "mode", "per")


AlertThresholdOption = Annotated[
    list[int] | None,
    typer.Option(
        "--alert-threshold",
        help="A percentage of a window quota at which quota.threshold is sent (repeat it; "
        "default 80 and 100)",
    ),
]


def refill_text(refill: dict[str, Any]) -> str:
    """A refill in the ``--refill`` syntax: ``1000/month/reset/billing``."""
    parts = [str(refill["amount"]), refill["window"], refill.get("mode", "reset")]
    return "/".join(parts + (["billing"] if refill.get("anchor") == "billing" else []))


def print_plan(title: str, view: dict[str, Any]) -> None:
    """A plan with its quotas and limits."""
    print_record(title, view, ("id", "description", "created_at"))
    if view.get("alert_thresholds") is not None:
        shown = ", ".join(f"{t} %" for t in view["alert_thresholds"])
        console.print(f"alert thresholds: {shown}", soft_wrap=True)
    if view.get("refill") is not None:
        console.print(f"refill: {refill_text(view['refill'])}", soft_wrap=True)
    if view.get("low_credits") is not None:
        console.print(f"low credits: below {view['low_credits']}", soft_wrap=True)
    print_rows("quotas", limit_rows(view["quotas"]), LIMIT_COLUMNS)
    print_rows("limits", view["limits"], ("name", "limit", "description"))


@plans_app.command("list")
@handle_errors
def plans_list(
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the plans."""
    rows = run(target(store, url, token), lambda op: op.list_plans())
    if as_json:
        print_json(rows)
        return
    for row in rows:
        row["quotas"] = [f"{name}={limits_text(q)}" for name, q in row["quotas"].items()]
        row["limits"] = [f"{x['name']}={x['limit']}" for x in row["limits"]]
    print_rows("plans", rows, ("id", "description", "quotas", "limits"))


@plans_app.command("show")
@handle_errors
def plans_show(
    plan_id: str,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show one plan."""
    view = run(target(store, url, token), lambda op: op.get_plan(plan_id))
    show(view, as_json, lambda: print_plan(f"plan {view['id']}", view))


RefillOption = Annotated[
    str | None,
    typer.Option(
        "--refill",
        metavar="AMOUNT/WINDOW[/MODE][/billing]",
        help="Credits given every window: e.g. 1000/month/reset/billing or 50/day/top_up "
        "(MODE reset, the default, or top_up)",
    ),
]


def refill_option(text: str | None) -> Refill | None:
    """``--refill`` as the plan's refill, checked as the API checks ``refill``."""
    if text is None:
        return None
    from quotad.domain.credits import CreditError, parse_refill

    amount, _, rest = text.strip().partition("/")
    window, *flags = rest.split("/") if rest else [""]
    body: dict[str, Any] = {"amount": amount, "window": window}
    for flag in flags:
        if flag in ("reset", "top_up"):
            body["mode"] = flag
        elif flag in ("billing", "calendar"):
            body["anchor"] = flag
        else:
            raise ValidationFailed.at(
                "/body/refill", f"{text!r}: unknown {flag!r} (reset, top_up or billing)", "format"
            )
    try:
        return parse_refill(body, ())
    except CreditError as exc:
        problems = [
            FieldError("/".join(["/body/refill", *map(str, where)]), message, "refill")
            for where, message in exc.problems
        ]
        raise ValidationFailed(str(exc), validation_errors=problems) from None


LowCreditsOption = Annotated[
    str | None,
    typer.Option(
        "--low-credits",
        metavar="CREDITS",
        help="Send credits.low when the balance falls below CREDITS (a number above 0)",
    ),
]


def low_credits_option(text: str | None) -> int | None:
    """``--low-credits`` in micro-credits, checked as the API checks ``low_credits``."""
    if text is None:
        return None
    from decimal import Decimal, InvalidOperation

    from quotad.http.credit_views import low_credits_at

    try:
        given = Decimal(text.strip())
    except InvalidOperation:
        raise ValidationFailed.at(
            "/body/low_credits", f"{text!r}: low_credits must be a number", "type"
        ) from None
    return low_credits_at(given, "/body/low_credits")


QuotaOption = Annotated[
    list[str] | None, typer.Option("--quota", help="SERVICE=TOTAL per day (repeatable)")
]
LimitOption = Annotated[list[str] | None, typer.Option("--limit", help=LIMIT_HELP)]


def plan_content(
    plan_id: str | None, quota: list[str], limit: list[str], description: str
) -> tuple[dict[str, Limits], list[PlanLimit]]:
    """A plan's quotas and resource limits from the command line, checked as the API does."""
    from quotad.api import schemas

    daily, lists, resources = split_limits(quota, limit)
    # The schema checks the id, description and resource limits; the domain's parser
    # every service's limits, in either form, as the API's does.
    fields = {"description": description, "limits": _limit_options(resources)}
    body = (
        validated(schemas.PlanReplaceIn, **fields)
        if plan_id is None
        else validated(schemas.PlanIn, id=plan_id, **fields)
    )
    quotas = parse_quotas({**daily, **lists}, "/body/quotas")
    return quotas, [PlanLimit(x.name, x.limit, x.description) for x in body.limits]


@plans_app.command("create")
@cli_errors({"id": "PLAN_ID"})
def plans_create(
    plan_id: str,
    *,
    quota: QuotaOption = None,
    limit: LimitOption = None,
    description: Annotated[str, typer.Option(help="What the plan is")] = "",
    alert_threshold: AlertThresholdOption = None,
    refill: RefillOption = None,
    low_credits: LowCreditsOption = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    create: CreateOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create a plan whose quotas name registered services.

    A service's quota is a daily total (--quota insights=250) or a list of limits:
    --limit insights=day:1000 --limit insights=month:20000:billing:soft
    --limit insights=rate:10/20.
    """
    quotas, limits = plan_content(plan_id, quota or [], limit or [], description)
    refills = refill_option(refill)
    low = low_credits_option(low_credits)
    where = target(store, url, token, create)
    view = run(
        where,
        lambda op: op.create_plan(
            plan_id, quotas, limits, description, alert_threshold, refills, low
        ),
    )
    show(view, as_json, lambda: print_plan(f"plan {view['id']} created", view))


@plans_app.command("replace")
@handle_errors
def plans_replace(
    plan_id: str,
    *,
    quota: QuotaOption = None,
    limit: LimitOption = None,
    description: Annotated[str, typer.Option(help="What the plan is")] = "",
    alert_threshold: AlertThresholdOption = None,
    refill: RefillOption = None,
    low_credits: LowCreditsOption = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Replace a plan's quotas, resource limits, alert thresholds and description (as plans
    create takes them); the new limits apply from now, past windows keep theirs."""
    quotas, limits = plan_content(None, quota or [], limit or [], description)
    refills = refill_option(refill)
    low = low_credits_option(low_credits)
    where = target(store, url, token)
    view = run(
        where,
        lambda op: op.replace_plan(
            plan_id, quotas, limits, description, alert_threshold, refills, low
        ),
    )
    show(view, as_json, lambda: print_plan(f"plan {view['id']} replaced", view))


@plans_app.command("delete")
@handle_errors
def plans_delete(
    plan_id: str,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete a plan that no account uses."""
    run(target(store, url, token), lambda op: op.delete_plan(plan_id))
    console.print(f"plan {escape(plan_id)} deleted")


# Accounts ---------------------------------------------------------------------
accounts_app = App(help="Customer accounts.")
ACCOUNT_COLUMNS = ("id", "name", "plan", "timezone", "status", "created_at")


BillingAnchorOption = Annotated[
    int | None,
    typer.Option("--billing-anchor", help="Day of the month (1-31) its billing months start on"),
]


class Status(StrEnum):
    """An account's status (``quotad.domain.models.AccountStatus``)."""

    ACTIVE = "active"
    SUSPENDED = "suspended"


@accounts_app.command("list")
@handle_errors
def accounts_list(
    search: Annotated[str | None, typer.Option(help="Only ids or names containing this")] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the accounts."""
    rows = run(target(store, url, token), lambda op: op.list_accounts(search))
    show(rows, as_json, lambda: print_rows("accounts", rows, ACCOUNT_COLUMNS))


@accounts_app.command("show")
@handle_errors
def accounts_show(
    account_id: str,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show one account with today's usage of each quota and resource limit."""
    view = run(target(store, url, token), lambda op: op.show_account(account_id))
    if as_json:
        print_json(view)
        return
    print_record(f"account {view['id']}", view, ACCOUNT_COLUMNS)
    print_rows("usage today", view["usage"], ("name", "usage", "limit", "description"))


@accounts_app.command("create")
@handle_errors
def accounts_create(
    *,
    name: Annotated[str, typer.Option(help="Display name")],
    plan: Annotated[str, typer.Option(help="Plan id")],
    account_id: Annotated[str | None, typer.Option("--id", help="Id (default: generated)")] = None,
    timezone: Annotated[str, typer.Option(help="IANA timezone of its usage days")] = "UTC",
    billing_anchor: BillingAnchorOption = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    create: CreateOption = False,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Create an account on an existing plan."""
    from quotad.api import schemas

    anchor = {} if billing_anchor is None else {"billing_anchor": billing_anchor}
    body = validated(
        schemas.AccountIn, id=account_id, name=name, plan=plan, timezone=timezone, **anchor
    )
    where = target(store, url, token, create)
    view = run(
        where,
        lambda op: op.create_account(body.id, body.name, body.plan, body.timezone, billing_anchor),
    )
    show(
        view, as_json, lambda: print_record(f"account {view['id']} created", view, ACCOUNT_COLUMNS)
    )


@accounts_app.command("update")
@handle_errors
def accounts_update(
    account_id: str,
    *,
    name: Annotated[str | None, typer.Option(help="New display name")] = None,
    plan: Annotated[str | None, typer.Option(help="New plan id")] = None,
    timezone: Annotated[str | None, typer.Option(help="New IANA timezone")] = None,
    status: Annotated[Status | None, typer.Option(help="active or suspended")] = None,
    billing_anchor: BillingAnchorOption = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Change an account's name, plan, timezone, status or billing day."""
    from quotad.api import schemas

    anchor = {} if billing_anchor is None else {"billing_anchor": billing_anchor}
    body = validated(
        schemas.AccountPatch,
        name=name,
        plan=plan,
        timezone=timezone,
        status=None if status is None else status.value,
        **anchor,
    )
    where = target(store, url, token)
    view = run(
        where,
        lambda op: op.update_account(
            account_id, body.name, body.plan, body.timezone, body.status, billing_anchor
        ),
    )
    show(
        view, as_json, lambda: print_record(f"account {view['id']} updated", view, ACCOUNT_COLUMNS)
    )


@accounts_app.command("delete")
@handle_errors
def accounts_delete(
    account_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete an account with its keys, usage and gauges."""
    where = target(store, url, token)
    if not yes:
        typer.confirm(f"Delete account {account_id} with its keys and usage?", abort=True)
    run(where, lambda op: op.delete_account(account_id))
    console.print(f"account {escape(account_id)} deleted")


# Keys -------------------------------------------------------------------------
keys_app = App(help="API keys (secrets are shown only when issued).")
KEY_COLUMNS = ("id", "name", "hint", "status", "scopes", "created_at", "expires_at", "replaced_by")
KEY_LIST_COLUMNS = ("id", "name", "hint", "status", "scopes", "expires_at", "replaced_by")


@keys_app.command("list")
@handle_errors
def keys_list(
    account_id: str,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List an account's keys (never their secrets)."""
    rows = run(target(store, url, token), lambda op: op.list_keys(account_id))
    show(rows, as_json, lambda: print_rows(f"keys of {account_id}", rows, KEY_LIST_COLUMNS))


@keys_app.command("create")
@handle_errors
def keys_create(
    account_id: str,
    *,
    name: Annotated[str, typer.Option(help="A label for the key")] = "",
    expires_at: Annotated[
        str | None, typer.Option("--expires-at", help="RFC 3339 expiry, e.g. 2025-01-01T00:00:00Z")
    ] = None,
    scope: Annotated[
        list[str] | None,
        typer.Option("--scope", help="usage:read, consume:* or consume:SERVICE (default: all)"),
    ] = None,
    limit: Annotated[
        list[str] | None,
        typer.Option(
            "--limit",
            help="The key's own limit, counted per key, only narrowing the account's: "
            "SERVICE=WINDOW:TOTAL[:soft|shadow] or SERVICE=rate:PER_SECOND/BURST (repeatable)",
        ),
    ] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Issue a key for an account and print its secret once."""
    from quotad.api import schemas

    body = validated(schemas.KeyIn, name=name, expires_at=expires_at, scopes=scope)
    own = key_limits(limit or []) or None
    where = target(store, url, token)
    view = run(
        where,
        lambda op: op.create_key(account_id, body.name, body.expires_at, body.scopes, own),
    )
    if as_json:
        print_json(view)
        return
    print_record(f"key {view['id']} created", view, KEY_COLUMNS)
    print_secret("API key", view["key"])


@keys_app.command("revoke")
@handle_errors
def keys_revoke(
    key_id: str,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Revoke a key now."""
    view = run(target(store, url, token), lambda op: op.revoke_key(key_id))
    show(view, as_json, lambda: print_record(f"key {view['id']} revoked", view, KEY_COLUMNS))


@keys_app.command("rotate")
@handle_errors
def keys_rotate(
    key_id: str,
    grace_seconds: Annotated[int, typer.Option(help="How long the old key keeps working")] = 3600,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Issue a replacement key and print its secret once; the old one works for the grace period."""
    from quotad.api import schemas

    body = validated(schemas.RotateIn, grace_seconds=grace_seconds)
    where = target(store, url, token)
    view, old_until = run(where, lambda op: op.rotate_key(key_id, body.grace_seconds))
    if as_json:
        print_json(view)
        return
    print_record(f"key {key_id} rotated to {view['id']}", view, KEY_COLUMNS)
    if old_until is not None:
        console.print(f"the old key {escape(key_id)} stays valid until {old_until}")
    print_secret("new API key", view["key"])
