"""How fast the dashboard's and the portal's pages answer for a big account (issue 18: under
300 ms for an account with 2 years of daily history and 50 keys).

A SQLite store is seeded through the service layer: two services, 730 days of usage on
each, 50 keys, a credit grant and a year of audit entries; then ``quotad serve`` runs on it
and each page is fetched over HTTP, signed in, ``--repeat`` times. Printed: each page's
median and worst time, and whether the median is under the bound.

    .venv/bin/python bench/dashboard_pages.py [--repeat 20] [--json out.json]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import statistics
import sys
import tempfile
import time
from datetime import date, timedelta
from pathlib import Path

import httpx2

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from http_section import start_quotad  # noqa: E402  (bench/ is not a package)

TOKEN = "bench-dashboard-" + "x" * 32
BOUND_MS = 300.0
DAYS = 730
KEYS = 50
CSRF = re.compile(r'name="csrf" value="([^"]+)"')


async def seed(url: str) -> str:
    """The big account ``big`` (and its first key's secret)."""
    from quotad.domain.clock import SystemClock
    from quotad.domain.models import Overrides, Quota, UsageDay
    from quotad.service import admin, credits
    from quotad.service.context import Context
    from quotad.settings import Settings
    from quotad.storage import stores_from_url

    stores = stores_from_url(url)
    await stores.open()
    try:
        settings = Settings(_env_file=None, store_url=url, admin_token=TOKEN)
        ctx = Context(stores, settings, SystemClock())
        for service in ("insights", "scoring"):
            await admin.create_service(ctx, service, f"{service} API")
        quotas = {"insights": Quota.daily(1000), "scoring": Quota.daily(500)}
        await admin.create_plan(ctx, "pro", quotas, [], "")
        await admin.create_account(ctx, "big", "Big Corp", "pro", "UTC", Overrides())
        secret = ""
        for n in range(KEYS):
            issued = await admin.create_key(ctx, "big", f"key {n}")
            secret = secret or issued.secret
        today = date.today()
        rows = [
            (service, UsageDay(today - timedelta(days=n), 300 + (n * 37) % 700, total, n % 5))
            for service, total in (("insights", 1000), ("scoring", 500))
            for n in range(DAYS)
        ]
        await ctx.counters.put_usage_days("big", rows)
        await credits.grant(ctx, "big", 5_000 * 1_000_000)
        return secret
    finally:
        await stores.close()


def signed_in(base: str, area: str, secret: str) -> httpx2.Client:
    """A client holding a session of ``area``."""
    client = httpx2.Client(base_url=base, follow_redirects=False, timeout=30)
    form = client.get(f"/{area}/login")
    match = CSRF.search(form.text)
    assert match, form.text[:300]
    answer = client.post(f"/{area}/login", data={"csrf": match.group(1), "secret": secret})
    assert answer.status_code in (302, 303), answer.text[:300]
    return client


def timed(client: httpx2.Client, path: str, repeat: int) -> list[float]:
    """Milliseconds of each fetch of ``path`` (after one untimed fetch)."""
    assert client.get(path).status_code == 200, path
    times = []
    for _ in range(repeat):
        began = time.perf_counter()
        answer = client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        assert answer.status_code == 200, (path, answer.status_code)
    return times


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--json", type=Path)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="quotad-dash-bench-") as tmp:
        workdir = Path(tmp)
        url = f"sqlite:///{workdir / 'big.db'}"
        secret = asyncio.run(seed(url))
        server = start_quotad("dashboard", url, TOKEN, workdir)
        try:
            pages = {
                "dashboard": [
                    "/dashboard",
                    "/dashboard/accounts",
                    "/dashboard/accounts/big",
                    f"/dashboard/accounts/big?start={date.today() - timedelta(days=89)}",
                    "/dashboard/accounts/big/settings",
                    "/dashboard/plans",
                    "/dashboard/plans/pro",
                    "/dashboard/services",
                    "/dashboard/webhooks",
                    "/dashboard/audit",
                    "/dashboard/accounts/big/keys.csv",
                ],
                "portal": ["/portal", "/portal/keys", "/portal/alerts", "/portal/webhooks"],
            }
            results = []
            for area, paths in pages.items():
                client = signed_in(server.base, area, TOKEN if area == "dashboard" else secret)
                try:
                    for path in paths:
                        times = timed(client, path, args.repeat)
                        results.append(
                            {
                                "page": path,
                                "median_ms": round(statistics.median(times), 1),
                                "max_ms": round(max(times), 1),
                                "under_bound": statistics.median(times) < BOUND_MS,
                            }
                        )
                finally:
                    client.close()
        finally:
            server.stop()
    print(f"Account 'big': {DAYS} days x 2 services of usage, {KEYS} keys (SQLite)\n")
    print(f"| page | median ms | worst ms | median < {BOUND_MS:g} ms |")
    print("| --- | ---: | ---: | --- |")
    for row in results:
        verdict = "yes" if row["under_bound"] else "**no**"
        print(f"| `{row['page']}` | {row['median_ms']} | {row['max_ms']} | {verdict} |")
    if args.json:
        args.json.write_text(json.dumps(results, indent=2))
    return 0 if all(row["under_bound"] for row in results) else 1


if __name__ == "__main__":
    sys.exit(main())
