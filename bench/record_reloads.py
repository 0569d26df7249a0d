"""What a node's record cache asks of its store while keys are in steady use.

One node in-process opens a fresh store, makes ``--keys`` accounts with a key each, and
verifies every key concurrently, over and over: ``--warmup`` seconds, then ``--seconds``
counted. It prints how many verifies it made, and how often the store was asked for a key's
records (a reload) and for the records version. A subclass of the SQL store counts both.
To compare two checkouts, run this script from each with ``PYTHONPATH=<checkout>/src``,
alternating (an older checkout without a records version reports 0 version reads).

    .venv/bin/python bench/record_reloads.py [--store sqlite|postgresql://…] [--keys 50]
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time
from pathlib import Path
from typing import Any

from quotad.domain.clock import SystemClock
from quotad.domain.models import Overrides, Quota
from quotad.service import admin, verify
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import Stores
from quotad.storage.sql import SqlStore


class CountedStore(SqlStore):
    """A SQL store counting key lookups and records version reads."""

    lookups = 0
    version_reads = 0

    async def find_key_records(self, digest: str) -> Any:
        """The key's records, counted."""
        self.lookups += 1
        return await super().find_key_records(digest)

    async def records_version(self) -> int | None:
        """The records version, counted."""
        self.version_reads += 1
        return await super().records_version()


async def measure(url: str, keys: int, warmup: float, seconds: float) -> str:
    """One node's counts over ``seconds`` of verifying ``keys`` keys, as a line."""
    store = CountedStore(url)
    await store.open()
    try:
        settings = Settings(_env_file=None, store_url=url, admin_token="bench-" + "x" * 32)
        ctx = Context(Stores.of(store), settings, SystemClock())
        await admin.create_service(ctx, "bench", "")
        await admin.create_plan(ctx, "bench", {"bench": Quota.daily(10**12)}, [], "")
        secrets = []
        for n in range(keys):
            await admin.create_account(ctx, f"acct-{n}", "bench", "bench", "UTC", Overrides())
            secrets.append((await admin.create_key(ctx, f"acct-{n}", "bench")).secret)

        async def spell(length: float) -> int:
            end, made = time.monotonic() + length, 0
            while time.monotonic() < end:
                await asyncio.gather(*(verify.verify(ctx, s, "bench", 1) for s in secrets))
                made += len(secrets)
            return made

        await spell(warmup)  # past the first version read and the reloads it starts
        store.lookups = store.version_reads = 0
        made = await spell(seconds)
    finally:
        await store.close()
    scheme = url.split(":", 1)[0]
    return (
        f"{scheme}: {made:,} verifies in {seconds:g} s over {keys} keys: "
        f"{store.lookups} key reloads ({store.lookups / seconds:.1f}/s), "
        f"{store.version_reads} version reads ({store.version_reads / seconds:.1f}/s)"
    )


def main() -> None:
    """Parse the options and print one line of counts."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--store", default="sqlite", help="sqlite (a temporary file) or a URL")
    parser.add_argument("--keys", type=int, default=50)
    parser.add_argument("--warmup", type=float, default=3.0)
    parser.add_argument("--seconds", type=float, default=10.0)
    options = parser.parse_args()
    url = options.store
    if url == "sqlite":
        url = f"sqlite:///{Path(tempfile.mkdtemp()) / 'quotad.db'}"
    print(asyncio.run(measure(url, options.keys, options.warmup, options.seconds)))


if __name__ == "__main__":
    main()
