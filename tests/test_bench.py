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
sys.path.insert(0, str(ROOT / "bench"))  # the harness's modules import one another by name

from common import Measurement  # noqa: E402
from report import TIMES, Section, Target, targets_table  # noqa: E402

# Quick, and each in-process measurement shorter still: the smoke test checks the harness.
BENCH_QUICK = [sys.executable, str(ROOT / "bench" / "run.py"), "--quick", "--seconds", "0.25"]


def _run(ops: float, rep: int) -> Measurement:
    return Measurement(ops, 1.0, 2.0, int(ops), 1.0, rep=rep)


def test_a_target_is_the_median_of_the_ratios_taken_in_each_repetition() -> None:
    """Each repetition's ratio pairs the two runs of that repetition; the median decides."""
    section = Section("s")
    section.subject("quotad", "").runs = [_run(100, 1), _run(60, 2), _run(90, 3)]
    # The peer's fast run is in the repetition where quotad was slow: paired, that
    # repetition's ratio is low, where a ratio of the medians would hide it.
    section.subject("peer", "").runs = [_run(20, 1), _run(30, 2), _run(10, 3)]
    section.targets = [Target("quotad", "peer", min_ratio=4.5)]
    row = section.targets[0].evaluate(section.subjects)
    assert row["per_rep"] == {"1": 5.0, "2": 2.0, "3": 9.0}
    assert (row["ratio"], row["min"], row["max"]) == (5.0, 2.0, 9.0)
    assert row["ratio_of_medians"] == 4.5
    assert (row["met"], row["reps_met"]) == (True, 2)
    table = targets_table([section]).replace(TIMES, "x")
    assert (
        "| s | quotad vs peer ≥ 4.5x | 5.00x | 2.00 to 9.00x (5.00 2.00 9.00) | yes (2/3 reps) |"
        in table
    )


def test_the_cpu_ratio_counts_every_party_of_a_run_but_not_the_rest_of_the_machine() -> None:
    """CPU per operation sums the subject's process, server and Redis, not other programs."""
    section = Section("s")
    mine = _run(1000, 1)
    mine.cpu = {"wall_s": 1.0, "self_s": 0.01, "redis_s": 0.01, "others_s": 1.5, "busy_s": 2.0}
    theirs = _run(100, 1)
    theirs.cpu = {"wall_s": 1.0, "self_s": 0.05, "redis_s": 0.03, "others_s": 0.2}
    section.subject("quotad", "").runs = [mine]
    section.subject("peer", "").runs = [theirs]
    row = Target("quotad", "peer", min_ratio=5).evaluate(section.subjects)
    # quotad: 0.02 s / 1000 ops = 20 µs; the peer: 0.08 s / 100 ops = 800 µs.
    assert row["cpu_ratio"] == pytest.approx(40.0)
    assert row["others_cores"] == pytest.approx(0.85)  # the median over both runs


def test_a_repetition_missing_on_one_side_is_left_out_of_the_ratios() -> None:
    """A repetition where the peer failed gives no ratio rather than an unpaired one."""
    section = Section("s")
    section.subject("quotad", "").runs = [_run(100, 1), _run(100, 2)]
    section.subject("peer", "").runs = [_run(50, 2)]
    row = Target("quotad", "peer", min_ratio=3).evaluate(section.subjects)
    assert row["per_rep"] == {"2": 2.0}
    assert row["met"] is False


@pytest.mark.slow
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
        [*BENCH_QUICK, "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
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
    assert "| section | target | median |" in run.stdout
    assert len(results["targets"]) >= 9
    errors = {
        name: subject["error"]
        for s in results["sections"].values()
        for name, subject in s["subjects"].items()
        if subject["error"]
    }
    unmeasured = [t["subject"] for t in results["targets"] if not t["per_rep"] or t["met"] is None]
    assert not unmeasured, f"targets not measured: {unmeasured}; subjects' errors: {errors}"
    runs = [
        run
        for s in results["sections"].values()
        for subject in s["subjects"].values()
        for run in subject["runs"]
    ]
    assert all(run["rep"] == 1 and run["cpu"]["wall_s"] > 0 for run in runs)
