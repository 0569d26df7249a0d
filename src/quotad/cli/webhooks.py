"""Webhook endpoints and alert events: ``webhooks create|list|show|update|delete|
rotate-secret|deliveries|resend`` and ``alerts`` (SPEC 11).

As every administrative command, each runs on a local store or, with ``--url``, through
the operator API, and prints the same either way. A signing secret is printed only by
``create`` and ``rotate-secret``, once.
"""

from __future__ import annotations

from typing import Annotated, Any

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
from quotad.cli.stores import StoreOption
from quotad.cli.target import TokenOption, UrlOption, run, target
from quotad.errors import ValidationFailed

webhooks_app = App(
    help="Webhook endpoints that receive alert events (their secrets are shown only when made)."
)
WEBHOOK_COLUMNS = (
    "id",
    "url",
    "description",
    "events",
    "secret_hint",
    "enabled",
    "disabled_at",
    "disabled_reason",
    "failing_since",
    "created_at",
    "updated_at",
)
WEBHOOK_LIST_COLUMNS = ("id", "url", "events", "enabled", "failing_since", "description")
DELIVERY_COLUMNS = ("id", "type", "status", "attempts", "last_answer", "next_attempt_at")
ALERT_COLUMNS = ("id", "type", "timestamp", "account_id", "limit", "threshold", "used", "total")
DELIVERY_FIELDS = (
    "id",
    "event_id",
    "type",
    "status",
    "attempts",
    "last_answer",
    "created_at",
    "next_attempt_at",
)
MAX_PAGE = 500  # the largest page the API serves
# The API's fields the commands take as arguments or under another option's name.
WEBHOOK_ARGUMENTS = {"url": "URL", "events": "--event"}
UPDATE_ARGUMENTS = {"url": "--new-url", "events": "--event"}

EventOption = Annotated[
    list[str] | None,
    typer.Option(
        "--event",
        help="An event type to receive (repeatable): quota.threshold, quota.exceeded, "
        "credits.low, credits.exhausted, key.expiring, webhook.disabled",
    ),
]
LimitOption = Annotated[int, typer.Option(help=f"How many, newest first (1 to {MAX_PAGE})")]


def _check_limit(limit: int) -> int:
    """``--limit`` checked as the API checks a page's ``limit``."""
    if not 1 <= limit <= MAX_PAGE:
        raise ValidationFailed.at("/query/limit", f"limit is 1 to {MAX_PAGE}", "range")
    return limit


def _print_created(title: str, view: dict[str, Any]) -> None:
    print_record(title, view, WEBHOOK_COLUMNS)
    print_secret("Signing secret", view["secret"])
    console.print("Keep it where the receiver verifies deliveries: quotad shows only its hint.")


@webhooks_app.command("create")
@cli_errors(WEBHOOK_ARGUMENTS)
def webhooks_create(
    endpoint_url: Annotated[str, typer.Argument(metavar="URL", help="Where to POST the events")],
    *,
    event: EventOption = None,
    description: Annotated[str, typer.Option(help="What the endpoint is")] = "",
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Register an endpoint for the given events and print its signing secret once."""
    from quotad.api import schemas

    body = validated(
        schemas.WebhookIn, url=endpoint_url, events=event or [], description=description
    )
    where = target(store, url, token)
    view = run(where, lambda op: op.create_webhook(body.url, list(body.events), body.description))
    if as_json:
        print_json(view)
        return
    _print_created(f"webhook {view['id']} created", view)


@webhooks_app.command("list")
@handle_errors
def webhooks_list(
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the endpoints (never their secrets), disabled ones included."""
    rows = run(target(store, url, token), lambda op: op.list_webhooks())
    show(rows, as_json, lambda: print_rows("webhooks", rows, WEBHOOK_LIST_COLUMNS))


@webhooks_app.command("show")
@handle_errors
def webhooks_show(
    endpoint_id: str,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Show one endpoint."""
    view = run(target(store, url, token), lambda op: op.get_webhook(endpoint_id))
    show(view, as_json, lambda: print_record(f"webhook {view['id']}", view, WEBHOOK_COLUMNS))


@webhooks_app.command("update")
@cli_errors(UPDATE_ARGUMENTS)
def webhooks_update(
    endpoint_id: str,
    *,
    new_url: Annotated[
        str | None, typer.Option("--new-url", help="The new URL to POST the events to")
    ] = None,
    event: EventOption = None,
    description: Annotated[str | None, typer.Option(help="What the endpoint is")] = None,
    enable: Annotated[
        bool | None,
        typer.Option(
            "--enable/--disable",
            help="Enable it again (its pending deliveries resume) or stop sending to it",
        ),
    ] = None,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Change an endpoint's URL, events or description, or enable or disable it."""
    if new_url is None and event is None and description is None and enable is None:
        raise fail(
            "nothing to change: give --new-url, --event, --description, --enable or --disable"
        )
    from quotad.api import schemas

    body = validated(
        schemas.WebhookPatch, url=new_url, events=event, description=description, enabled=enable
    )
    events: list[str] | None = None if body.events is None else list(body.events)
    where = target(store, url, token)
    view = run(
        where,
        lambda op: op.update_webhook(endpoint_id, body.url, events, body.description, body.enabled),
    )
    show(
        view,
        as_json,
        lambda: print_record(f"webhook {view['id']} updated", view, WEBHOOK_COLUMNS),
    )


@webhooks_app.command("delete")
@handle_errors
def webhooks_delete(
    endpoint_id: str,
    yes: Annotated[bool, typer.Option("--yes", "-y", help="Do not ask for confirmation")] = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Delete an endpoint and its deliveries."""
    where = target(store, url, token)
    if not yes:
        typer.confirm(f"Delete webhook {endpoint_id} and its deliveries?", abort=True)
    run(where, lambda op: op.delete_webhook(endpoint_id))
    console.print(f"webhook {escape(endpoint_id)} deleted")


@webhooks_app.command("rotate-secret")
@handle_errors
def webhooks_rotate_secret(
    endpoint_id: str,
    grace_seconds: Annotated[
        int, typer.Option(help="How long the old secret also signs deliveries (0 to 604800)")
    ] = 0,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Sign deliveries with a new secret from now, and print it once."""
    from quotad.api import schemas

    body = validated(schemas.RotateSecretIn, grace_seconds=grace_seconds)
    where = target(store, url, token)
    view = run(where, lambda op: op.rotate_webhook_secret(endpoint_id, body.grace_seconds))
    if as_json:
        print_json(view)
        return
    _print_created(f"webhook {view['id']} has a new secret", view)
    if grace_seconds:
        console.print(f"the old secret also signs deliveries for {grace_seconds} s")


def delivery_row(view: dict[str, Any]) -> dict[str, Any]:
    """A delivery as a table row: its attempt count and the last answer (a status code, or
    the error when there was no answer)."""
    attempts = view["attempts"]
    last = attempts[-1] if attempts else None
    answer = None if last is None else last["status_code"] or last["error"]
    return {**view, "attempts": len(attempts), "last_answer": answer}


@webhooks_app.command("deliveries")
@handle_errors
def webhooks_deliveries(
    endpoint_id: str,
    limit: LimitOption = 20,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List an endpoint's latest deliveries, newest first, with their attempts."""
    count = _check_limit(limit)
    rows = run(target(store, url, token), lambda op: op.webhook_deliveries(endpoint_id, count))
    show(
        rows,
        as_json,
        lambda: print_rows(
            f"deliveries of webhook {endpoint_id}",
            [delivery_row(r) for r in rows],
            DELIVERY_COLUMNS,
        ),
    )


@webhooks_app.command("resend")
@handle_errors
def webhooks_resend(
    endpoint_id: str,
    delivery_id: str,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """Send a delivery again (with the same webhook-id), as soon as a node is free to."""
    view = run(
        target(store, url, token),
        lambda op: op.resend_webhook_delivery(endpoint_id, delivery_id),
    )
    if as_json:
        print_json(view)
        return
    print_record("delivery", delivery_row(view), DELIVERY_FIELDS)
    console.print(f"delivery {escape(view['id'])} will be sent again", soft_wrap=True)


def alert_row(view: dict[str, Any]) -> dict[str, Any]:
    """An alert event as a table row: what its data says of the limit it is about."""
    data = view["data"]
    return {**view, **{name: data.get(name) for name in ("limit", "threshold", "used", "total")}}


@handle_errors
def alerts_command(
    account: Annotated[str | None, typer.Option(help="Only the events of this account")] = None,
    limit: LimitOption = 20,
    as_json: JsonOption = False,
    store: StoreOption = None,
    url: UrlOption = None,
    token: TokenOption = None,
) -> None:
    """List the latest alert events, newest first: thresholds crossed, quotas exceeded..."""
    count = _check_limit(limit)
    rows = run(target(store, url, token), lambda op: op.alerts(account, count))
    show(
        rows,
        as_json,
        lambda: print_rows("alert events", [alert_row(r) for r in rows], ALERT_COLUMNS),
    )
