"""The Makefile: `make demo` installs only what serving needs and takes PORT=; `make test` the dev extras."""

from __future__ import annotations

import importlib
import importlib.util
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.processes import ROOT

pytestmark = pytest.mark.skipif(shutil.which("make") is None, reason="make is not installed")

UV_INSTALL = ".venv/bin/uv pip install --quiet --compile-bytecode --python .venv/bin/python"
COMPILE_SRC = ".venv/bin/python -m compileall -q src"


def planned(*args: str) -> list[str]:
    """The commands ``make`` would run for ``args``, every target taken as out of date."""
    result = subprocess.run(
        ["make", "--dry-run", "--always-make", "--no-print-directory", *args],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    )
    return [" ".join(line.split()) for line in result.stdout.splitlines()]


def installs(commands: list[str]) -> list[str]:
    """The ``uv pip install`` lines of the package itself among ``commands``."""
    return [line for line in commands if "pip install" in line and "-e" in line.split()]


def test_make_demo_installs_the_package_without_extras() -> None:
    """`make demo` and `make serve` install `-e .` only, never the dev extras."""
    for target in ("demo", "serve"):
        commands = planned(target)
        assert installs(commands) == [UV_INSTALL + " -e ."], commands
        assert not any("[dev]" in line for line in commands)


def test_make_demo_takes_port_and_host() -> None:
    """`make demo PORT=9000 HOST=0.0.0.0` serves there; without them, quotad's defaults."""
    assert planned("demo", "PORT=9000", "HOST=0.0.0.0")[-1] == (
        ".venv/bin/quotad serve --demo --host 0.0.0.0 --port 9000"
    )
    assert planned("demo")[-1] == ".venv/bin/quotad serve --demo"


def test_make_test_still_installs_the_dev_extras() -> None:
    """`make test` installs `.[dev]`, then runs the linters, mypy and pytest."""
    commands = planned("test")
    assert installs(commands) == [UV_INSTALL + " -e '.[dev]'"], commands
    assert ".venv/bin/mypy src" in commands
    pytest = [command for command in commands if command.startswith(".venv/bin/pytest")]
    assert pytest == [
        '.venv/bin/pytest -n 3 --dist loadfile --no-loadscope-reorder -m "not serial"',
        ".venv/bin/pytest -m serial",
    ], commands


def test_every_install_leaves_bytecode_for_the_dependencies_and_the_package() -> None:
    """Both installs compile bytecode: uv's ``--compile-bytecode``, then ``compileall`` on src."""
    for target in ("serve", "test"):
        commands = planned(target)
        uv_lines = [line for line in commands if line.startswith(".venv/bin/uv pip install")]
        assert uv_lines, commands
        assert all("--compile-bytecode" in line for line in uv_lines), commands
        assert COMPILE_SRC in commands, commands
        assert commands.index(COMPILE_SRC) > commands.index(uv_lines[-1]), commands


@pytest.mark.parametrize("module", ["sqlalchemy", "fastapi", "pydantic", "quotad.api.app"])
def test_the_venv_holds_bytecode_for_what_a_server_imports(module: str) -> None:
    """What `make` installed has its bytecode on disk, so no process compiles it again."""
    source = importlib.import_module(module).__file__
    assert source is not None
    assert Path(importlib.util.cache_from_source(source)).exists(), source
