"""What a simple local command loads: the store and the service layer, nothing of the server.

Start-up time itself is measured by ``bench/cli_startup.py``; these tests pin the imports
that made it slow (the API package, Prometheus, Alembic, the web framework) and the
command conversion that ``quotad.cli.main`` limits to the command asked for.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import typer

from quotad.cli import app, app_for
from tests.processes import probed_cli

# Run as the ``quotad`` script runs (``main()``), then list every module loaded, whether
# the command succeeded or not (Click ends with SystemExit either way).
PROBE = """
import json, sys
from quotad.cli import main
out = sys.argv.pop(1)
sys.argv[0] = "quotad"
try:
    main()
finally:
    with open(out, "w") as file:
        json.dump(sorted(sys.modules), file)
"""

# None of these serves a local command on SQLite: they are the HTTP server's, the remote
# client's, the migrations' (a migrated store needs none), the metrics endpoint's,
# PostgreSQL's or the logs' (a command that logs nothing).
NOT_FOR_LOCAL = (
    "quotad.api",
    "quotad.asgi",
    "quotad.dashboard",
    "quotad.sdk",
    "fastapi",
    "starlette",
    "uvicorn",
    "httpx2",
    "alembic",
    "prometheus_client",
    "sqlalchemy.dialects.postgresql",
    "structlog",
)


def loaded_by(tmp_path: Path, *argv: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    """Run ``quotad *argv`` in a fresh interpreter; its result and the modules it loaded."""
    out = tmp_path / "modules.json"
    done = probed_cli(PROBE, out, *argv)
    return done, set(json.loads(out.read_text()))


def within(modules: set[str], packages: tuple[str, ...]) -> set[str]:
    """The modules that are one of ``packages`` or inside one."""
    return {m for m in modules if any(m == p or m.startswith(p + ".") for p in packages)}


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A migrated SQLite store."""
    url = f"sqlite:///{tmp_path_factory.mktemp('startup') / 'q.db'}"
    done = subprocess.run(
        [sys.executable, "-c", "from quotad.cli import main; main()", "migrate", "--store", url],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return url


@pytest.mark.parametrize("group", ["services", "accounts", "plans"])
def test_a_local_listing_loads_nothing_of_the_server(
    tmp_path: Path, store: str, group: str
) -> None:
    """``quotad <group> list --store`` on SQLite loads SQLAlchemy but no API, framework,
    Alembic, Prometheus or PostgreSQL module."""
    done, modules = loaded_by(tmp_path, group, "list", "--store", store)
    assert done.returncode == 0, done.stderr[-2000:]
    assert group in done.stdout
    assert "sqlalchemy" in modules  # the probe sees what the store's opening imported
    assert within(modules, NOT_FOR_LOCAL) == set()


def test_the_service_layer_imports_no_prometheus() -> None:
    """Importing the service layer's context and verify leaves prometheus_client unloaded."""
    probe = (
        "import sys, quotad.service.context, quotad.service.verify; "
        "print('prometheus_client' in sys.modules)"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "False"


def test_a_scrape_before_any_count_shows_every_metric() -> None:
    """A fresh process's exposition lists quotad's metrics although none was counted yet."""
    probe = "from quotad import metrics; print(metrics.exposition()[0].decode())"
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    for name in ("quotad_consumes_total", "quotad_consume_seconds", "quotad_rate_limited_total"):
        assert f"# TYPE {name} " in done.stdout, name


def registered(typer_app: typer.Typer) -> list[str | None]:
    """The names of the commands and groups an app would convert."""
    commands = [
        c.name or getattr(c.callback, "__name__", None) for c in typer_app.registered_commands
    ]
    return commands + [g.name for g in typer_app.registered_groups]


@pytest.mark.parametrize(
    ("argv", "kept"),
    [
        (["services", "list", "--store", "x"], ["services"]),
        (["--url", "http://h", "--token", "t", "accounts", "list"], ["accounts"]),
        (["--url=http://h", "plans", "list"], ["plans"]),
        (["migrate", "--store", "x"], ["migrate"]),
        (["import", "f.jsonl"], ["import"]),
    ],
)
def test_a_command_line_converts_only_the_command_it_names(
    argv: list[str], kept: list[str]
) -> None:
    """The app run for a command line holds only the command or group it names."""
    assert registered(app_for(argv)) == kept


@pytest.mark.parametrize("argv", [[], ["--help"], ["--version"], ["servics", "list"], ["--x"]])
def test_help_version_and_unknown_names_get_the_whole_app(argv: list[str]) -> None:
    """Help, --version, a typo and an unknown option are answered by the whole app."""
    assert app_for(argv) is app


def test_a_typo_is_answered_with_every_command(tmp_path: Path) -> None:
    """``quotad servics list`` still suggests ``services`` (the whole app answered)."""
    done, _ = loaded_by(tmp_path, "servics", "list")
    assert done.returncode == 2
    assert "services" in done.stderr


def test_a_listing_runs_while_another_process_holds_the_write_lock(
    tmp_path: Path, store: str
) -> None:
    """Opening a store already at the head takes no write lock: a listing does not wait
    for (or fail behind) a writer such as a running server."""
    writer = sqlite3.connect(store.removeprefix("sqlite:///"), isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        done, _ = loaded_by(tmp_path, "services", "list", "--store", store)
    finally:
        writer.execute("ROLLBACK")
        writer.close()
    assert done.returncode == 0, done.stderr[-2000:]
    assert "services" in done.stdout
