"""Start-up cost of simple local ``quotad`` commands: wall time and CPU per run.

Each command runs in a fresh interpreter (``python -c`` calling ``quotad.cli.main``, as the
``quotad`` script does) against a migrated SQLite store in a temporary directory holding one
service, one plan and one account. Every run's wall time is timed around the child and its
user+sys CPU seconds come from ``os.wait4``'s rusage; the script prints the median and the
minimum of each. Wall time moves with the machine's load, CPU seconds much less: quote both.
To compare two checkouts on a loaded machine, give each one's ``src`` with ``--src``: their
runs are interleaved, so both see the same load.

    .venv/bin/python bench/cli_startup.py [--runs 15] [--src src] [--src ../other/src]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

COMMANDS: dict[str, list[str]] = {
    "--help": ["--help"],
    "services list": ["services", "list", "--store", "{store}"],
    "accounts list": ["accounts", "list", "--store", "{store}"],
    "plans list": ["plans", "list", "--store", "{store}"],
    "keys list": ["keys", "list", "acme", "--store", "{store}"],
    "usage show": ["usage", "show", "acme", "--service", "search", "--store", "{store}"],
    "credits show": ["credits", "show", "acme", "--store", "{store}"],
    "tokens list": ["tokens", "list", "--store", "{store}"],
    "webhooks list": ["webhooks", "list", "--store", "{store}"],
    "audit": ["audit", "--store", "{store}"],
}

RUNNER = "import sys; from quotad.cli import main; sys.argv = ['quotad', *sys.argv[1:]]; main()"


def child_env(directory: Path, src: str | None) -> dict[str, str]:
    """This environment, importing quotad from ``src``, with bytecode caching on.

    An installed quotad has its ``.pyc`` files; a checkout run with
    ``PYTHONDONTWRITEBYTECODE`` would compile every module of its own on every run.
    """
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    env["PYTHONPYCACHEPREFIX"] = str(directory / "pycache")
    if src is not None:
        env["PYTHONPATH"] = str(Path(src).resolve())
    return env


def run_once(
    python: str, argv: list[str], cwd: Path, src: str | None = None
) -> tuple[float, float]:
    """Run one command in ``cwd``; return its wall seconds and its user+sys CPU seconds."""
    started = time.perf_counter()
    # Popen + wait4 rather than subprocess.run: wait4 gives this child's own rusage.
    child = subprocess.Popen(
        [python, "-c", RUNNER, *argv],
        cwd=cwd,
        env=child_env(cwd, src),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    _, status, usage = os.wait4(child.pid, 0)
    wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    stderr = child.stderr.read().decode() if child.stderr else ""
    if child.stderr:
        child.stderr.close()
    if child.returncode != 0:
        raise SystemExit(f"quotad {' '.join(argv)} exited {child.returncode}: {stderr}")
    return wall, usage.ru_utime + usage.ru_stime


def prepare(python: str, directory: Path) -> str:
    """Make a migrated store with a service, a plan and an account; return its URL."""
    store = f"sqlite:///{directory / 'q.db'}"
    for argv in (
        ["migrate", "--store", store],
        ["services", "create", "search", "--store", store],
        ["plans", "create", "pro", "--quota", "search=1000", "--store", store],
        ["accounts", "create", "--id", "acme", "--name", "Acme", "--plan", "pro", "--store", store],
        ["keys", "create", "acme", "--store", store],
    ):
        run_once(python, argv, directory)
    return store


def main() -> None:
    """Measure every command and print one line of figures per command (and source)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--runs", type=int, default=15, help="runs per command (>= 10)")
    parser.add_argument("--python", default=sys.executable, help="interpreter to run quotad")
    parser.add_argument(
        "--src", action="append", help="a checkout's src to import quotad from (repeatable)"
    )
    args = parser.parse_args()
    sources: list[str | None] = list(args.src or [None])
    with tempfile.TemporaryDirectory() as tmp:
        directory = Path(tmp)
        store = prepare(args.python, directory)
        print(f"{args.runs} runs each; seconds; load average {os.getloadavg()[0]:.2f}")
        print(f"{'command':<16} {'wall p50':>9} {'wall min':>9} {'cpu p50':>8} {'cpu min':>8}  src")
        for name, template in COMMANDS.items():
            argv = [part.format(store=store) for part in template]
            runs: dict[str | None, list[tuple[float, float]]] = {src: [] for src in sources}
            for src in sources:
                run_once(args.python, argv, directory, src)  # warm the caches and .pyc files
            for _ in range(args.runs):
                for src in sources:
                    runs[src].append(run_once(args.python, argv, directory, src))
            for src, timed in runs.items():
                walls = [wall for wall, _ in timed]
                cpus = [cpu for _, cpu in timed]
                print(
                    f"{name:<16} {statistics.median(walls):9.3f} {min(walls):9.3f}"
                    f" {statistics.median(cpus):8.3f} {min(cpus):8.3f}  {src or '(PYTHONPATH)'}"
                )


if __name__ == "__main__":
    main()
