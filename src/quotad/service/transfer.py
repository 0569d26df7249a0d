"""Usage days out and in: the JSON Lines of ``GET /admin/v1/export`` and ``quotad import``.

One usage day per line: ``{"account_id", "service", "date", "used", "total", "rejected"}``.
An import writes each day's absolute values (so importing the same lines twice changes
nothing the second time); the accounts and services it names must exist.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable, Iterable
from dataclasses import dataclass
from typing import Any

import orjson
import pydantic

from quotad.domain.models import UsageDay
from quotad.errors import FieldError, ValidationFailed
from quotad.service import admin, audit, usage
from quotad.service.context import Context

BATCH_ROWS = 1000


# Export -----------------------------------------------------------------------
def export_row(account_id: str, service: str, row: UsageDay) -> dict[str, Any]:
    """One usage day as an export line holds it."""
    return {
        "account_id": account_id,
        "service": service,
        "date": row.day.isoformat(),
        "used": row.used,
        "total": row.total,
        "rejected": row.rejected,
    }


async def export_lines(ctx: Context) -> AsyncIterator[bytes]:
    """Every stored usage day as a JSON line (with its newline)."""
    async for account_id, service, row in ctx.counters.export_usage():
        yield orjson.dumps(export_row(account_id, service, row)) + b"\n"


# Import -----------------------------------------------------------------------
class UsageRowIn(pydantic.BaseModel):
    """One line of an export."""

    model_config = pydantic.ConfigDict(extra="ignore", strict=True)

    account_id: str = pydantic.Field(min_length=1, max_length=64)
    service: str = pydantic.Field(min_length=1, max_length=64)
    date: str
    used: int = pydantic.Field(ge=0)
    total: int = pydantic.Field(ge=0)
    rejected: int = pydantic.Field(0, ge=0)


@dataclass
class ImportOutcome:
    """What an import wrote."""

    rows: int = 0
    accounts: int = 0


def _refuse(number: int, written: int, problems: list[FieldError]) -> ValidationFailed:
    return ValidationFailed(
        f"line {number} is not a valid usage row; the {written:,} rows before it were imported "
        "(importing is idempotent: fix the line and import the whole file again)",
        validation_errors=problems,
    )


def _parse(number: int, raw: bytes) -> tuple[UsageRowIn, UsageDay] | list[FieldError]:
    path = f"/line/{number}"
    try:
        data = orjson.loads(raw)
    except orjson.JSONDecodeError:
        return [FieldError(path, "not a JSON object", "format")]
    try:
        item = UsageRowIn.model_validate(data)
    except pydantic.ValidationError as exc:
        return [
            FieldError(
                path + "/" + "/".join(str(p) for p in problem["loc"]),
                problem["msg"],
                problem["type"],
            )
            for problem in exc.errors()
        ]
    try:
        day = usage.parse_date(item.date, f"{path}/date")
    except ValidationFailed as exc:
        return list(exc.validation_errors)
    return item, UsageDay(day, item.used, item.total, item.rejected)


async def import_lines(
    ctx: Context, lines: Iterable[bytes], advance: Callable[[int], None] = lambda _n: None
) -> ImportOutcome:
    """Write the usage days of ``lines`` (JSON Lines), in batches, checking each line.

    Args:
        ctx: the context whose store receives the rows.
        lines: the file's lines (blank ones are skipped).
        advance: called with each line's length in bytes, for a progress bar.

    Raises:
        ValidationFailed: a line is not a usage row, or names an unknown account or
            service; the rows before it have been written.
    """
    services = {s.name for s in await admin.list_services(ctx)}
    accounts: dict[str, bool] = {}
    pending: dict[str, list[tuple[str, UsageDay]]] = {}
    outcome = ImportOutcome()
    waiting = 0

    async def flush() -> None:
        nonlocal waiting
        for account_id, rows in pending.items():
            # The rows' values are usage, not records: the log keeps what was written where.
            dates = [row.day.isoformat() for _service, row in rows]
            after = {"rows": len(rows), "from": min(dates), "to": max(dates)}
            async with audit.with_counters(ctx):
                await ctx.counters.put_usage_days(account_id, rows)
                await audit.record(ctx, "usage.import", f"account:{account_id}", None, after)
            outcome.rows += len(rows)
        pending.clear()
        waiting = 0

    for number, raw in enumerate(lines, start=1):
        advance(len(raw))
        if not raw.strip():
            continue
        parsed = _parse(number, raw)
        if isinstance(parsed, list):
            await flush()
            raise _refuse(number, outcome.rows, parsed)
        item, row = parsed
        if item.account_id not in accounts:
            accounts[item.account_id] = await ctx.records.get_account(item.account_id) is not None
        problems = []
        if not accounts[item.account_id]:
            problems.append(
                FieldError(
                    f"/line/{number}/account_id",
                    f"account {item.account_id!r} does not exist",
                    "unknown",
                    "create the accounts (and their plans) before importing their usage",
                )
            )
        if item.service not in services:
            problems.append(
                FieldError(
                    f"/line/{number}/service",
                    f"service {item.service!r} is not registered",
                    "unknown",
                    "register it with `quotad services create` first",
                )
            )
        if problems:
            await flush()
            raise _refuse(number, outcome.rows, problems)
        pending.setdefault(item.account_id, []).append((item.service, row))
        waiting += 1
        if waiting >= BATCH_ROWS:
            await flush()
    await flush()
    outcome.accounts = sum(accounts.values())
    return outcome
