"""The quotad SDK: set up a plan, an account and a key, then meter calls, sync and async.

Start quotad first, with a known operator token::

    export QUOTAD_ADMIN_TOKEN=change-me
    quotad serve &
    python examples/sdk_example.py          # QUOTAD_URL defaults to http://127.0.0.1:8080
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import secrets

from quotad.sdk import (
    AsyncClient,
    Client,
    ConflictError,
    Limit,
    NotFoundError,
    QuotadAPIError,
    RetryPolicy,
)

URL = os.environ.get("QUOTAD_URL", "http://127.0.0.1:8080")
TOKEN = os.environ.get("QUOTAD_ADMIN_TOKEN")


def setup(quotad: Client) -> tuple[str, str]:
    """Service, plan (3 insights a day), a fresh account and its key."""
    with contextlib.suppress(ConflictError):  # registered by an earlier run
        quotad.create_service("insights", "Insights API queries")
    with contextlib.suppress(ConflictError):
        quotad.create_plan(
            "sdk-example", {"insights": 3}, [Limit("cohort.max_count", 10, "Cohorts allowed")]
        )
    account = quotad.create_account(
        "SDK example", "sdk-example", account_id=f"sdk-{secrets.token_hex(4)}"
    )
    key = quotad.create_key(account.id, "example")
    print(f"account {account.id}, key {key.hint} (secret shown once)")
    return account.id, key.key


def meter(quotad: Client, key: str) -> None:
    """Four calls against a quota of three: the fourth is refused."""
    for n in range(1, 5):
        verdict = quotad.verify(key, "insights", cost=1, idempotency_key=f"call-{n}-{key[-6:]}")
        state = "allowed" if verdict.valid else f"refused ({verdict.code})"
        print(f"call {n}: {state}; used {verdict.used}/{verdict.total}, resets {verdict.reset}")
        if not verdict.valid:
            print(f"  tell the customer: Retry-After {verdict.retry_after}s, {verdict.headers}")


async def meter_async(key: str) -> None:
    """The same client API, awaited: three checks at once (all refused by now)."""
    async with AsyncClient(URL, operator_token=TOKEN, retry=RetryPolicy(retries=3)) as quotad:
        verdicts = await asyncio.gather(*(quotad.verify(key, "insights") for _ in range(3)))
        print("async:", [v.code for v in verdicts])
        for line in await quotad.usages(key=key):  # the customer's own view
            print(f"  {line.name}: {line.usage}/{line.limit}")


def main() -> None:
    """Run the tour."""
    if not TOKEN:
        raise SystemExit("set QUOTAD_ADMIN_TOKEN to the operator token of the quotad at QUOTAD_URL")
    with Client(URL, operator_token=TOKEN, timeout=5.0) as quotad:
        account_id, key = setup(quotad)
        meter(quotad, key)
        for day in quotad.account_usage(account_id, "insights"):
            print(f"{day.date}: used {day.used}, remaining {day.remaining} of {day.total}")
        try:
            quotad.get_account("no-such-account")
        except NotFoundError as exc:
            print(f"typed error: {exc.error} (status {exc.status}, id {exc.id})")
        except QuotadAPIError as exc:  # every other contract error
            print(f"unexpected: {exc}")
    asyncio.run(meter_async(key))


if __name__ == "__main__":
    main()
