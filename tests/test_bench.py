"""``bench/run.py`` runs every section against the real servers and reports every ratio.

Only that the harness works is checked here; its figures are for the README, never for
assertions (a timed test on a shared machine proves nothing).
"""

from __future__ import annotations

import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from tests.servers import postgres_schema, redis_available, unavailable

ROOT = Path(__file__).parent.parent


@pytest.mark.postgresql
@pytest.mark.redis
def test_a_quick_benchmark_run_measures_every_section(tmp_path: Path) -> None:
    """``--quick`` completes every section and gives each comparison a positive ratio."""
    redis_available()
    with postgres_schema():  # only to skip (or fail under CI) when PostgreSQL is away
        pass
    if shutil.which("redis-benchmark") is None:
        unavailable("redis-benchmark is not installed (Debian package redis-tools)")
    out = tmp_path / "results.json"
    run = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=240,
        check=False,
    )
    assert run.returncode == 0, run.stderr[-3000:]
    results = json.loads(out.read_text())
    assert {name: s["status"] for name, s in results["sections"].items()} == dict.fromkeys(
        ("memory", "redis", "sqlite", "postgresql", "http", "scaling"), "ok"
    )
    compared = [row for row in results["table"] if row.get("ratio") is not None]
    assert len(compared) >= 10
    assert all(math.isfinite(row["ratio"]) and row["ratio"] > 0 for row in compared)
    assert "| section | subject |" in run.stdout
