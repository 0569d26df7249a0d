"""What the operator's key forms show and read: scopes, an ISO expiry date, per-key limits.

Nothing here writes: the handlers in ``key_operator`` hand what is read to
``quotad.service.admin`` (as the admin API does), which checks the limits against the
account's and audits the change. The account page (``operator.render_account``) shows the
create form from ``KeyForm``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

from quotad.dashboard import portal_pages
from quotad.domain.limits import Limits
from quotad.domain.models import ApiKey
from quotad.errors import QuotadError
from quotad.service import admin
from quotad.service.context import Context

SCOPE_FIELD = "scope:"  # one checkbox per scope: the form keeps one value per name
MAX_KEY_NAME = 128  # as the dashboard's first key form
MAX_LIMITS_TEXT = 16 * 1024  # far more than any plan's limits written out
BODY = "/body/"  # the API's pointers start here; a form has no body to name


class Wrong(Exception):
    """A form with a mistake the operator can correct: the page again, 400, with ``note``."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


@dataclass(frozen=True, slots=True)
class KeyForm:
    """The create-key form: the scopes offered and what was entered (kept on a mistake)."""

    choices: list[str]
    name: str = ""
    expires_on: str = ""
    scopes: list[str] = field(default_factory=list)
    limits: str = ""


async def scope_choices(ctx: Context) -> list[str]:
    """Every scope the API knows: ``usage:read``, ``consume:*``, one per registered service."""
    return portal_pages.scope_choices(None, await portal_pages.service_names(ctx))


async def empty_form(ctx: Context) -> KeyForm:
    """The create form as a fresh page shows it."""
    return KeyForm(await scope_choices(ctx))


def chosen_scopes(form: dict[str, str]) -> list[str]:
    """The scope checkboxes ticked, in name order."""
    return sorted(
        name[len(SCOPE_FIELD) :]
        for name, value in form.items()
        if name.startswith(SCOPE_FIELD) and value
    )


def parse_scopes(chosen: list[str]) -> tuple[str, ...] | None:
    """The new key's scopes; none ticked means every scope, as the API's default."""
    if not chosen:
        return None
    unknown = [scope for scope in chosen if not portal_pages.SCOPE.match(scope)]
    if unknown:
        raise Wrong(f"Unknown scope: {', '.join(unknown)}.")
    return tuple(chosen)


def parse_name(text: str) -> str:
    """The new key's name (``dashboard`` when blank, as before scopes were offered)."""
    name = text.strip() or "dashboard"
    if len(name) > MAX_KEY_NAME:
        raise Wrong(f"A key name has at most {MAX_KEY_NAME} characters.")
    return name


def parse_expiry(text: str, now: datetime) -> datetime | None:
    """00:00 UTC of the ISO date entered (none when blank); it must be in the future."""
    text = text.strip()
    if not text:
        return None
    try:
        day = date.fromisoformat(text)
    except ValueError:
        raise Wrong(f"Expiry “{text}” is not a date: write it as YYYY-MM-DD.") from None
    if len(text) != len("YYYY-MM-DD"):
        # fromisoformat also reads 20241107; the form promises one spelling only.
        raise Wrong(f"Expiry “{text}” is not a date: write it as YYYY-MM-DD.")
    expires_at = datetime(day.year, day.month, day.day, tzinfo=UTC)
    if expires_at <= now:
        raise Wrong(f"Expiry {text} is not in the future: a key expires at 00:00 UTC of it.")
    return expires_at


def parse_limits(text: str) -> dict[str, Limits]:
    """The key's own limits from the textarea: the API's ``limits`` JSON (``{}`` when
    blank), read by the API's own parser, its problems named by where they are."""
    text = text.strip()
    if not text:
        return {}
    if len(text) > MAX_LIMITS_TEXT:
        raise Wrong(f"The limits are at most {MAX_LIMITS_TEXT} characters of JSON.")
    try:
        raw: Any = json.loads(text)
    except ValueError as exc:
        raise Wrong(f"The limits are not JSON: {exc}.") from None
    if not isinstance(raw, dict):
        raise Wrong('The limits are a JSON object by service, e.g. {"insights": [...]}.')
    return admin.parse_quotas(raw, "/body/limits")


def problems(exc: QuotadError) -> str:
    """A refusal in words: its note, then each problem where it is (``limits/insights/0``)."""
    found = [f"{item.path.removeprefix(BODY)}: {item.message}" for item in exc.validation_errors]
    if not found:
        return exc.note
    if any(item.message == exc.note for item in exc.validation_errors):
        return "; ".join(found)  # the note only repeats the one problem
    return f"{exc.note.rstrip('.')}: " + "; ".join(found)


def limits_json(key: ApiKey, indent: int | None = None) -> str:
    """A key's own limits as the API writes them (the textarea's starting text)."""
    if not key.limits:
        return ""
    shown = {k: [x.to_json() for x in v] for k, v in sorted(key.limits.items())}
    return json.dumps(shown, indent=indent, ensure_ascii=False)
