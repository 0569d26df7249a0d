"""The data behind the dashboard's charts as CSV or JSON: an account's days per service
(``/dashboard/accounts/{id}/usage.csv`` and ``.json``, over the page's range) and the
overview's trend (``/dashboard/trend.csv`` and ``.json``).

Read sessions may download too: a download is a view of what the pages show.
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from quotad.dashboard import pages, web
from quotad.dashboard.operator import AREA, no_account, operator_session

USAGE_FIELDS = ("date", "service", "used", "total", "refused")
TREND_FIELDS = ("date", "granted", "refused")
FORMATS = {"csv": "text/csv; charset=utf-8", "json": "application/json"}


def usage_rows(view: pages.UsageView) -> list[dict[str, Any]]:
    """One row per service and day, as the account page's charts draw them."""
    return [
        {
            "date": bar.day.isoformat(),
            "service": chart.service,
            "used": bar.used,
            "total": bar.total,
            "refused": bar.refused,
        }
        for chart in view.charts
        for bar in chart.bars
    ]


def trend_rows(trend: pages.Trend) -> list[dict[str, Any]]:
    """One row per day of the overview's trend."""
    return [
        {"date": row.day.isoformat(), "granted": row.granted, "refused": row.refused}
        for row in trend.days
    ]


def encoded(
    kind: str, fields: Sequence[str], rows: list[dict[str, Any]], meta: dict[str, Any]
) -> str:
    """``rows`` as CSV (a header line, then one line each) or as a JSON object."""
    if kind == "json":
        return json.dumps({**meta, "rows": rows}, indent=1) + "\n"
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=list(fields), lineterminator="\r\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def attachment(kind: str, body: str, name: str) -> Response:
    """A download named ``name``.``kind``, with the pages' headers."""
    headers = {**web.HEADERS, "Content-Disposition": f'attachment; filename="{name}.{kind}"'}
    return Response(body, media_type=FORMATS[kind], headers=headers)


async def account_usage(request: Request, kind: str) -> Response:
    """An account's chart data over a range (default: the last 30 days)."""
    ctx = web.context(request)
    account_id: str = request.path_params["account_id"]
    start = web.query(request, "start", web.MAX_DATE) or None
    end = web.query(request, "end", web.MAX_DATE) or None
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    account = await ctx.records.get_account(account_id)
    if account is None:
        return no_account(session, account_id)
    view = await pages.usage_view(ctx, account, start, end)
    if view.range_error is not None:
        return web.message(AREA, 400, "Wrong range", view.range_error, session=session)
    meta = {
        "account_id": account.id,
        "timezone": account.timezone,
        "start": view.start.isoformat(),
        "end": view.end.isoformat(),
    }
    body = encoded(kind, USAGE_FIELDS, usage_rows(view), meta)
    name = f"usage-{account.id}-{view.start.isoformat()}-{view.end.isoformat()}"
    return attachment(kind, body, name)


async def overview_trend(request: Request, kind: str) -> Response:
    """The overview's last 30 days, granted and refused per day over every account."""
    ctx = web.context(request)
    session = await operator_session(ctx, request)
    if session is None:
        return web.to_login(AREA)
    trend = await pages.trend(ctx)
    first, last = trend.days[0].day.isoformat(), trend.days[-1].day.isoformat()
    body = encoded(kind, TREND_FIELDS, trend_rows(trend), {"start": first, "end": last})
    return attachment(kind, body, f"trend-{first}-{last}")


async def usage_csv(request: Request) -> Response:
    """An account's chart data as CSV."""
    return await account_usage(request, "csv")


async def usage_json(request: Request) -> Response:
    """An account's chart data as JSON."""
    return await account_usage(request, "json")


async def trend_csv(request: Request) -> Response:
    """The overview's trend as CSV."""
    return await overview_trend(request, "csv")


async def trend_json(request: Request) -> Response:
    """The overview's trend as JSON."""
    return await overview_trend(request, "json")


# One route per format (not a ``{kind}`` parameter): any other suffix is simply not found.
ROUTES: list[BaseRoute] = [
    Route("/dashboard/trend.csv", trend_csv, methods=["GET"]),
    Route("/dashboard/trend.json", trend_json, methods=["GET"]),
    Route("/dashboard/accounts/{account_id}/usage.csv", usage_csv, methods=["GET"]),
    Route("/dashboard/accounts/{account_id}/usage.json", usage_json, methods=["GET"]),
]
