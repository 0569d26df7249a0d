"""Getting the machine ready: peer libraries, Redis, PostgreSQL, wrk; and describing it.

Each ``ensure_*`` returns ``None`` when the thing is usable, else the reason it is not
(printed by the harness as the reason a section or subject is skipped). With
``allow_changes`` false nothing is installed or started: only checked.
"""

from __future__ import annotations

import importlib
import importlib.metadata
import os
import platform
import shutil
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

PEER_PACKAGES = ["limits[async-redis]>=4", "slowapi>=0.1.9"]
# The import that proves each peer usable: limits' async Redis storage needs coredis.
PEER_MODULES = {"limits": "limits", "coredis": "coredis", "slowapi": "slowapi"}
PACKAGES_REPORTED = (
    *("quotad", "limits", "coredis", "slowapi", "redis", "psycopg", "psycopg-pool"),
    *("sqlalchemy", "aiosqlite", "uvicorn", "uvloop", "httptools", "fastapi"),
)
REDIS_START = [
    "redis-server",
    "--daemonize",
    "yes",
    "--bind",
    "127.0.0.1",
    "--port",
    "6379",
    "--save",
    "",
    "--appendonly",
    "no",
]


def log(message: str) -> None:
    """Progress goes to stderr, so stdout holds only the results."""
    print(message, file=sys.stderr, flush=True)


def _importable(module: str) -> bool:
    try:
        importlib.import_module(module)
    except ImportError:
        return False
    return True


def ensure_peer_libraries(allow_changes: bool) -> dict[str, str | None]:
    """Per peer module, ``None`` if importable, else why not (installing it if allowed)."""
    missing = [m for m in PEER_MODULES.values() if not _importable(m)]
    if missing and allow_changes:
        log(
            f"peer libraries missing ({', '.join(missing)}): installing {PEER_PACKAGES} "
            "into this environment (same as `pip install -e '.[bench]'`)"
        )
        result = subprocess.run(
            [sys.executable, "-m", "pip", "install", "--quiet", *PEER_PACKAGES],
            capture_output=True,
            text=True,
            check=False,
        )
        if result.returncode != 0:
            log(f"pip install failed:\n{result.stderr.strip()[-2000:]}")
        importlib.invalidate_caches()
    hint = "missing: run `.venv/bin/pip install -e '.[bench]'`"
    return {name: None if _importable(mod) else hint for name, mod in PEER_MODULES.items()}


def redis_reason(url: str) -> str | None:
    """``None`` if Redis answers PING at ``url``, else why not."""
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2, socket_timeout=2)
    try:
        client.ping()
    except redis.RedisError as exc:
        return f"Redis is not reachable at {url} ({exc})"
    finally:
        client.close()
    return None


def ensure_redis(url: str, allow_changes: bool) -> str | None:
    """``None`` if Redis answers, starting a local one first if allowed and needed."""
    reason = redis_reason(url)
    if reason is None or not allow_changes:
        return reason
    if shutil.which("redis-server") is None:
        return f"{reason}; redis-server is not installed (`apt-get install -y redis-server`)"
    log(f"{reason}: starting one with `{' '.join(REDIS_START)}`")
    subprocess.run(REDIS_START, capture_output=True, check=False)
    for _ in range(50):
        time.sleep(0.1)
        if redis_reason(url) is None:
            return None
    return redis_reason(url)


def postgres_reason(url: str) -> str | None:
    """``None`` if PostgreSQL accepts a connection at ``url``, else why not."""
    import psycopg

    try:
        with psycopg.connect(url, connect_timeout=3) as conn:
            conn.execute("SELECT 1")
    except psycopg.OperationalError as exc:
        return f"PostgreSQL is not reachable at {url} ({str(exc).strip()})"
    return None


def ensure_postgres(url: str, allow_changes: bool) -> str | None:
    """``None`` if PostgreSQL answers, starting the local cluster / creating the db if allowed."""
    try:
        import psycopg  # noqa: F401
        import psycopg_pool  # noqa: F401
    except ImportError:
        return "psycopg / psycopg_pool are missing: `.venv/bin/pip install -e '.[postgres]'`"
    reason = postgres_reason(url)
    if reason is None or not allow_changes:
        return reason
    if "does not exist" in reason:
        _create_database(url)
        return postgres_reason(url)
    versions = sorted(os.listdir("/etc/postgresql")) if Path("/etc/postgresql").is_dir() else []
    if not versions or shutil.which("pg_ctlcluster") is None:
        return f"{reason}; no local cluster to start"
    for version in versions:
        command = ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "start"]
        log(f"{reason}: starting it with `{' '.join(command)}`")
        subprocess.run(command, capture_output=True, check=False)
    for _ in range(100):
        time.sleep(0.1)
        reason = postgres_reason(url)
        if reason is None:
            return None
    if reason is not None and "does not exist" in reason:
        _create_database(url)
        reason = postgres_reason(url)
    return reason


def _create_database(url: str) -> None:
    import psycopg
    from psycopg import sql

    base, _, name = url.partition("?")[0].rpartition("/")
    log(f"creating database {name!r}")
    with psycopg.connect(f"{base}/postgres", autocommit=True, connect_timeout=3) as conn:
        conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))


def ensure_wrk(allow_changes: bool) -> str | None:
    """The path of wrk, installing it with apt-get if allowed; ``None`` if unavailable."""
    found = shutil.which("wrk")
    if found is not None or not allow_changes:
        return found
    if shutil.which("apt-get") is None or os.geteuid() != 0:
        return None
    log("wrk is missing: `apt-get install -y wrk`")
    install = ["apt-get", "install", "-y", "-qq", "wrk"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(install, capture_output=True, env=env, check=False).returncode != 0:
        subprocess.run(["apt-get", "update", "-qq"], capture_output=True, env=env, check=False)
        subprocess.run(install, capture_output=True, env=env, check=False)
    return shutil.which("wrk")


def _cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def _version(package: str) -> str | None:
    try:
        return importlib.metadata.version(package)
    except importlib.metadata.PackageNotFoundError:
        return None


def _redis_version(url: str) -> str | None:
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        return str(client.info("server")["redis_version"])
    except redis.RedisError:
        return None
    finally:
        client.close()


def _postgres_settings(url: str) -> dict[str, str] | None:
    try:
        import psycopg

        with psycopg.connect(url, connect_timeout=3) as conn:
            names = ("server_version", "synchronous_commit", "fsync", "wal_sync_method")
            return {n: str(conn.execute(f"SHOW {n}").fetchone()[0]) for n in names}  # type: ignore[index]
    except Exception:
        return None


def _tool_version(command: list[str]) -> str | None:
    if shutil.which(command[0]) is None:
        return None
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    text = (result.stdout or result.stderr).strip().splitlines()
    return text[0].split(" Copyright")[0] if text else None


def machine(redis_url: str, postgres_url: str, wrk: str | None) -> dict[str, Any]:
    """What the numbers were measured on."""
    load = os.getloadavg() if hasattr(os, "getloadavg") else None
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "cpu": _cpu_model(),
        "cores": os.cpu_count(),
        "platform": platform.platform(),
        "python": platform.python_version(),
        "load_average_at_start": None if load is None else [round(x, 2) for x in load],
        "redis": _redis_version(redis_url),
        "postgresql": _postgres_settings(postgres_url),
        "wrk": _tool_version([wrk, "-v"]) if wrk else None,
        "packages": {name: _version(name) for name in PACKAGES_REPORTED},
    }
