"""``/dashboard/audit``: every change, newest first, filtered and paged, and downloadable.

The entries are the audit log's own (``quotad.service.audit``), which never hold a secret:
a key or token appears by its id, name and hint. Read and admin sessions see the same page;
it has no form that changes anything. ``?format=csv`` or ``?format=json`` downloads the
entries the page shows (the same filters and page).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import pages, web
from quotad.dashboard.operator import AREA, operator_session
from quotad.dashboard.table_export import FORMATS, MAX_FORMAT, download, kind_of
from quotad.domain import days
from quotad.domain.operators import AuditEntry, AuditQuery
from quotad.service import audit

PAGE_ROWS = 50
MAX_FILTER = 200  # an actor, a target or an entry id in the address
ENTRY_FIELDS = ("id", "at", "actor", "action", "target", "request_id", "before", "after")


class BadFilter(Exception):
    """A filter the page cannot read: the page again, 400, with ``note``."""

    def __init__(self, note: str) -> None:
        super().__init__(note)
        self.note = note


@dataclass(frozen=True, slots=True)
class Filters:
    """What the page was asked for, as entered (kept in its form and links)."""

    actor: str = ""
    target: str = ""
    since: str = ""
    before: str = ""

    def link(self, path: str = "/dashboard/audit", **changes: str) -> str:
        """The address ``path`` (this page's or a download's) with these filters and
        ``changes`` (blank values left out)."""
        values = {
            "actor": self.actor,
            "target": self.target,
            "since": self.since,
            "before": self.before,
            **changes,
        }
        shown = {name: value for name, value in values.items() if value}
        return path + ("?" + urlencode(shown) if shown else "")


def parse_since(text: str) -> datetime | None:
    """The ``since`` filter: an ISO date (from 00:00 UTC) or an ISO time with its offset."""
    if not text:
        return None
    try:
        if len(text) == len("YYYY-MM-DD"):
            day = date.fromisoformat(text)
            return datetime(day.year, day.month, day.day, tzinfo=UTC)
        moment = datetime.fromisoformat(text)
    except ValueError:
        raise BadFilter(
            f"“since” is not a date: write YYYY-MM-DD or YYYY-MM-DDTHH:MM:SSZ, not “{text}”."
        ) from None
    if moment.tzinfo is None:
        raise BadFilter(f"“since” needs its UTC offset (e.g. {text}Z): it reads “{text}”.")
    return moment


def entry_row(entry: AuditEntry) -> dict[str, Any]:
    """An entry as the downloads write it: the admin API's ``/audit`` fields."""
    return {
        "id": entry.id,
        "at": days.rfc3339(entry.at),
        "actor": entry.actor,
        "action": entry.action,
        "target": entry.target,
        "request_id": entry.request_id,
        "before": entry.before,
        "after": entry.after,
    }


async def audit_page(request: Request) -> Response:
    """The audit log's entries, newest first, ``PAGE_ROWS`` at a time."""
    ctx = web.context(request)
    filters = Filters(
        actor=web.query(request, "actor", MAX_FILTER).strip(),
        target=web.query(request, "target", MAX_FILTER).strip(),
        since=web.query(request, "since", web.MAX_DATE).strip(),
        before=web.query(request, "before", MAX_FILTER).strip(),
    )
    kind = kind_of(request.url.path, web.query(request, "format", MAX_FORMAT))
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    if kind and kind not in FORMATS:
        return web.message(
            AREA,
            400,
            "Unknown format",
            "Download the entries as CSV or JSON: audit.csv or audit.json (or ?format=csv|json).",
            session=session,
        )
    try:
        since = parse_since(filters.since)
    except BadFilter as exc:
        return web.render(
            AREA,
            "audit.html",
            400,
            session=session,
            filters=filters,
            rows=[],
            next_link=None,
            error=exc.note,
            nav="audit",
        )
    query = AuditQuery(
        limit=PAGE_ROWS + 1,
        before_id=filters.before or None,
        targets=(filters.target,) if filters.target else (),
        actor=filters.actor or None,
        since=since,
    )
    found = await audit.entries(ctx, query)
    shown = found[:PAGE_ROWS]
    if kind:
        stamp = days.rfc3339(ctx.clock.now()).replace(":", "")
        return download([entry_row(e) for e in shown], ENTRY_FIELDS, kind, f"audit-{stamp}")
    more = len(found) > PAGE_ROWS
    return web.render(
        AREA,
        "audit.html",
        session=session,
        filters=filters,
        rows=[pages.ChangeRow(entry, pages.changes_of(entry)) for entry in shown],
        next_link=filters.link(before=shown[-1].id) if more and shown else None,
        nav="audit",
    )


# A download has its own path too (``audit.csv``): its links then say what they are, and
# the page crawlers of the browser tests skip them by their suffix. One route per format
# (not a ``{kind}`` parameter), as the charts' downloads: any other suffix is not found.
ROUTES: list[BaseRoute] = [
    Route("/dashboard/audit", audit_page, methods=["GET"]),
    *(Route(f"/dashboard/audit.{kind}", audit_page, methods=["GET"]) for kind in FORMATS),
]
