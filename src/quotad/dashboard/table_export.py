"""Tables of the operator's pages (keys, audit entries) as CSV or JSON attachments: lists and
objects as JSON in a CSV cell, and no cell a spreadsheet would run as a formula."""

from __future__ import annotations

import csv
import io
import json
from typing import Any

from starlette.responses import Response

FORMATS = ("csv", "json")
SUFFIXES = tuple(f".{kind}" for kind in FORMATS)
MAX_FORMAT = 8  # the ``format`` query parameter's longest accepted length


def csv_cell(value: object) -> str:
    """A value as a CSV cell: JSON for lists and objects, blank for none, and text that a
    spreadsheet would run as a formula made inert with a leading apostrophe."""
    if value is None:
        return ""
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False)
    return "'" + text if text[:1] in ("=", "+", "-", "@", "\t", "\r") else text


def download(rows: list[dict[str, Any]], fields: tuple[str, ...], kind: str, name: str) -> Response:
    """``rows`` as a CSV or JSON attachment named ``name`` (``kind``: ``csv`` or ``json``)."""
    headers = {"Cache-Control": "no-store", **_attachment(f"{name}.{kind}")}
    if kind == "json":
        body = json.dumps({"items": rows}, ensure_ascii=False, indent=1)
        return Response(body, media_type="application/json", headers=headers)
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\r\n")
    writer.writerow(fields)
    for row in rows:
        writer.writerow([csv_cell(row[field]) for field in fields])
    return Response(out.getvalue(), media_type="text/csv; charset=utf-8", headers=headers)


def _attachment(filename: str) -> dict[str, str]:
    # The name is built from ids, but keep it to safe characters whatever an id holds.
    safe = "".join(c if (c.isascii() and c.isalnum()) or c in "-_." else "_" for c in filename)
    return {"Content-Disposition": f'attachment; filename="{safe}"'}


def kind_of(path: str, asked: str) -> str:
    """The format a download is asked in: its path's suffix (``keys.csv``), else ``asked``
    (the ``format`` query parameter; blank for the page itself)."""
    return path.rsplit(".", 1)[-1] if path.endswith(SUFFIXES) else asked
