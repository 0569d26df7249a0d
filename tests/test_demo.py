"""The demo deployment (``quotad serve --demo``): seeding twice adds nothing the second time."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from quotad.demo import DEMO_ACCOUNT, seed
from quotad.service import admin
from quotad.service.context import Context
from tests.processes import BIN, free_port


async def test_a_second_seed_adds_no_key_and_reports_the_existing_one(ctx: Context) -> None:
    """The first seed makes one demo key; the second makes none and names the first by its hint."""
    first = await seed(ctx)
    second = await seed(ctx)
    keys = await admin.list_keys(ctx, DEMO_ACCOUNT)
    assert len(keys) == 1
    assert first.key is not None
    assert first.key_hint == keys[0].hint == second.key_hint
    assert first.key_hint.endswith(first.key[-4:])
    assert second.key is None
    assert second.new_key_command == f"quotad keys create {DEMO_ACCOUNT} --name demo"
    assert (second.history_start, second.today) == (first.history_start, first.today)


async def test_a_revoked_demo_key_is_replaced_by_a_new_one(ctx: Context) -> None:
    """Once the demo key is revoked, the next seed makes (and shows) a new one."""
    first = await seed(ctx)
    [key] = await admin.list_keys(ctx, DEMO_ACCOUNT)
    await admin.revoke_key(ctx, key.id)
    again = await seed(ctx)
    assert again.key is not None
    assert again.key != first.key
    assert len(await admin.list_keys(ctx, DEMO_ACCOUNT)) == 2


async def test_the_demo_limit_describes_cohorts(ctx: Context) -> None:
    """The demo plan's only resource limit is described as what it counts: cohorts."""
    await seed(ctx)
    plan = await admin.require_plan(ctx, "starter")
    assert [(limit.name, limit.description, limit.limit) for limit in plan.limits] == [
        ("cohort.max_count", "Cohorts allowed", 10)
    ]


def start_demo(store_url: str, workdir: Path) -> subprocess.Popen[str]:
    """``quotad serve --demo`` on ``store_url``, in a session of its own, its stdout piped."""
    env = {
        **os.environ,
        "QUOTAD_STORE_URL": store_url,
        "QUOTAD_PORT": str(free_port()),
        "QUOTAD_LOG_FORMAT": "json",
    }
    env.pop("QUOTAD_ADMIN_TOKEN", None)
    return subprocess.Popen(
        [str(BIN / "quotad"), "serve", "--demo"],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )


def up_to_the_banner(process: subprocess.Popen[str]) -> str:
    """What the process printed up to its ``API docs`` line."""
    assert process.stdout is not None
    lines: list[str] = []
    for line in process.stdout:
        lines.append(line)
        if "API docs" in line:
            break
    return "".join(lines)


def banner(store_url: str, workdir: Path) -> str:
    """What ``quotad serve --demo`` prints up to its ``API docs`` line (then it is stopped)."""
    process = start_demo(store_url, workdir)
    try:
        return up_to_the_banner(process)
    finally:
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=30)
        assert process.stdout is not None
        process.stdout.close()


def test_serve_demo_twice_on_one_store_prints_how_to_make_a_key(tmp_path: Path) -> None:
    """The second `serve --demo` adds no key, says the first cannot be shown, and how to make one."""
    store_url = f"sqlite:///{tmp_path / 'demo.db'}"
    first = banner(store_url, tmp_path)
    assert "new API key: qd_" in first, first
    second = banner(store_url, tmp_path)
    assert "new API key" not in second, second
    assert "already has its demo key qd_…" in second
    assert f"quotad keys create acme --name demo --store {store_url}" in second
    assert "-H 'x-api-key: <API key>'" in second
    listing = subprocess.run(
        [str(BIN / "quotad"), "keys", "list", "acme", "--json", "--store", store_url],
        capture_output=True,
        text=True,
        check=True,
        cwd=tmp_path,
    )
    assert listing.stdout.count('"name": "demo"') == 1, listing.stdout


@pytest.mark.parametrize("delay", [0.0, 0.02, 0.05, 0.1])
def test_ctrl_c_right_after_the_banner_stops_the_server(tmp_path: Path, delay: float) -> None:
    """Ctrl-C just after the banner, while the server is still starting, stops it at once
    (it used to be lost in a garbage-collection callback, and the server served on)."""
    process = start_demo(f"sqlite:///{tmp_path / 'demo.db'}", tmp_path)
    try:
        up_to_the_banner(process)
        time.sleep(delay)
        os.killpg(process.pid, signal.SIGINT)
        process.wait(timeout=10)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        assert process.stdout is not None
        process.stdout.close()
    assert process.returncode in (0, 130)
