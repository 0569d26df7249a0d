"""A command's start-up runs without the garbage collector; its work runs with it.

``quotad.cli.startup``: the collector is off while a command imports what it runs, and on
(with the start-up's objects frozen out of its sight) once the command's work begins.
Start-up time itself is measured by ``bench/cli_startup.py``.
"""

from __future__ import annotations

import gc
import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from quotad.cli import startup
from tests.processes import free_port, probed_cli

# Run as the ``quotad`` script runs; count the collections before anything was frozen
# (while the command starts) and after (while it works), and whether the collector is on
# once the command has ended.
PROBE = """
import gc, json, sys
from quotad.cli import main
out = sys.argv.pop(1)
sys.argv[0] = "quotad"
seen = {"starting": 0, "working": 0}
def count(phase, info):
    if phase == "start":
        seen["working" if gc.get_freeze_count() else "starting"] += 1
gc.callbacks.append(count)
try:
    main()
finally:
    seen["enabled_after"] = gc.isenabled()
    with open(out, "w") as file:
        json.dump(seen, file)
"""


@pytest.fixture
def collector() -> Iterator[None]:
    """Leave the test process's collector as it was: on, nothing frozen."""
    yield
    gc.unfreeze()
    gc.enable()


def run_probe(
    tmp_path: Path, *argv: str
) -> tuple[subprocess.CompletedProcess[str], dict[str, int]]:
    """Run ``quotad *argv`` in a fresh interpreter; its result and the collections seen."""
    out = tmp_path / "collections.json"
    done = probed_cli(PROBE, out, *argv)
    return done, json.loads(out.read_text())


def test_a_local_command_collects_only_once_its_work_begins(tmp_path: Path) -> None:
    """``quotad migrate`` and ``services list`` on SQLite: no collection while they import,
    collections while they work, and the collector on when they end."""
    store = f"sqlite:///{tmp_path / 'q.db'}"
    for argv in (["migrate", "--store", store], ["services", "list", "--store", store]):
        done, seen = run_probe(tmp_path, *argv)
        assert done.returncode == 0, done.stderr[-2000:]
        assert seen["starting"] == 0, argv
        assert seen["working"] > 0, argv
        assert seen["enabled_after"], argv


def test_a_remote_command_collects_once_its_work_begins(tmp_path: Path) -> None:
    """``quotad --url … services list`` turns the collector on before it connects (here to
    a port nothing listens on), after a start-up without collections."""
    done, seen = run_probe(
        tmp_path, "--url", "http://127.0.0.1:9", "--token", "t" * 40, "services", "list"
    )
    assert done.returncode == 1
    assert "cannot reach quotad" in done.stderr
    assert seen["starting"] == 0
    assert seen["working"] > 0
    assert seen["enabled_after"]


# Run ``quotad serve`` as the script runs it; once its port answers, note whether the
# collector is on, and stop it with Ctrl-C (SIGINT), as an operator would.
SERVE_PROBE = """
import gc, json, os, signal, socket, sys, threading, time
from quotad.cli import main
out = sys.argv.pop(1)
sys.argv[0] = "quotad"
port = int(sys.argv[sys.argv.index("--port") + 1])
seen = {}
def watch():
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.2).close()
            break
        except OSError:
            time.sleep(0.1)
    seen["serving"] = time.monotonic() < deadline
    seen["enabled_while_serving"] = gc.isenabled()
    os.kill(os.getpid(), signal.SIGINT)
threading.Thread(target=watch, daemon=True).start()
try:
    main()
finally:
    with open(out, "w") as file:
        json.dump(seen, file)
"""


def test_a_server_serves_with_the_collector_on(tmp_path: Path) -> None:
    """``quotad serve`` started by the script answers on its port with the collector on
    (its start-up ran without it)."""
    store = f"sqlite:///{tmp_path / 'q.db'}"
    out = tmp_path / "serving.json"
    argv = ["serve", "--store", store, "--host", "127.0.0.1", "--port", str(free_port())]
    done = probed_cli(SERVE_PROBE, out, *argv)
    seen = json.loads(out.read_text())
    assert seen["serving"], done.stderr[-2000:]
    assert seen["enabled_while_serving"]


def test_help_ends_with_the_collector_on(tmp_path: Path) -> None:
    """``quotad --help`` never reaches a command's work; the collector is on again at its end."""
    done, seen = run_probe(tmp_path, "--help")
    assert done.returncode == 0
    assert seen["enabled_after"]


@pytest.mark.usefixtures("collector")
def test_imported_freezes_and_turns_the_collector_on() -> None:
    """Within ``collector_held`` the collector is off; ``imported`` freezes what exists and
    turns it on; leaving the block keeps it on."""
    with startup.collector_held():
        assert not gc.isenabled()
        startup.imported()
        assert gc.isenabled()
        assert gc.get_freeze_count() > 0
    assert gc.isenabled()


@pytest.mark.usefixtures("collector")
def test_imported_outside_a_held_start_up_changes_nothing() -> None:
    """A command run in-process (``CliRunner``) or by an embedding application: ``imported``
    neither freezes nor turns on a collector its caller turned off."""
    startup.imported()
    assert gc.get_freeze_count() == 0
    gc.disable()
    startup.imported()
    assert not gc.isenabled()
    with startup.collector_held():
        startup.imported()
        assert not gc.isenabled()
    assert not gc.isenabled()
    assert gc.get_freeze_count() == 0
