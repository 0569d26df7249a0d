"""The CLI against a running quotad (``--url``/``--token``) and its rough edges.

Every administrative command prints the same through the operator API as on a local
store; a missing local store is an error; messages speak the CLI's words; ``usage show``
covers 30 days; help has no ``<bool>``; ``quotad.cli`` starts without the server's modules.
"""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, get_args

import pytest
from click.testing import Result
from typer.main import get_command
from typer.testing import CliRunner

from quotad.api import schemas
from quotad.cli import app
from quotad.cli.console import PATTERN_WORDS
from quotad.sdk import Client, NotFoundError
from tests.processes import ADMIN_TOKEN, Running, free_port, quotad_serve

runner = CliRunner()
pytestmark = pytest.mark.slow


@pytest.fixture(autouse=True)
def no_quotad_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test runs in its own directory without QUOTAD_* variables, on a terminal wide
    enough that no table cell wraps (times and generated ids differ run to run)."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("QUOTAD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "250")
    # A console made before (by another test in this worker) read COLUMNS once, then.
    consoles = importlib.import_module("quotad.cli.console")  # the package names a Console
    for made in (consoles.console, consoles.err_console):
        monkeypatch.setattr(made, "_width", 250)


def cli(*args: str, stdin: str | None = None) -> Result:
    """``quotad ARGS``, in process."""
    return runner.invoke(app, list(args), input=stdin)


def today(offset: int = 0) -> str:
    """Today's UTC date plus ``offset`` days."""
    return (datetime.now(UTC).date() + timedelta(days=offset)).isoformat()


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Running, str]]:
    """A ``quotad serve`` process on a SQLite store, and that store's URL, with services
    insights and scoring, plan free (insights 250, scoring 100, a cohort limit) and
    account acme in UTC."""
    workdir = tmp_path_factory.mktemp("remote")
    store = f"sqlite:///{workdir / 'server.db'}"
    with quotad_serve(store, workdir) as handle:
        remote = ("--url", handle.base, "--token", ADMIN_TOKEN)
        for args in (
            ("services", "create", "insights"),
            ("services", "create", "scoring"),
            ("plans", "create", "free", "--quota", "insights=250", "--quota", "scoring=100"),
            ("accounts", "create", "--name", "Acme", "--plan", "free", "--id", "acme"),
        ):
            result = cli(*args, *remote)
            assert result.exit_code == 0, result.output
        yield handle, store


def remote_args(server: tuple[Running, str]) -> tuple[str, ...]:
    """``--url`` and ``--token`` of the test server."""
    return ("--url", server[0].base, "--token", ADMIN_TOKEN)


# The same output, remotely and locally -------------------------------------------------
TIME = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d+)?Z")
GENERATED = re.compile(
    r"\b(?:key|acct|tok|wh)_[0-9A-Za-z]{16}\b|\bqd(?:tok)?_[0-9A-Za-z]{36}\b|qd(?:tok)?_…[0-9A-Za-z]{4}"
    r"|whsec_[0-9A-Za-z+/=]{20,}|whsec_…[0-9A-Za-z+/=]{4}"
)


def normalized(transcript: list[str]) -> list[str]:
    """A transcript with times, generated ids, secrets and hints replaced by stable labels
    (numbered by first appearance) and table padding collapsed."""
    labels: dict[str, str] = {}

    def label(found: re.Match[str]) -> str:
        return labels.setdefault(found.group(0), f"<id{len(labels)}>")

    out = []
    for text in transcript:
        labelled = GENERATED.sub(label, TIME.sub("<time>", text))
        out.append(re.sub(r"[ ─━]+", " ", labelled))
    return out


def script(run: Callable[..., Result]) -> list[str]:
    """Every administrative command (successes and refusals, tables and JSON) in order;
    each step's exit code, stdout and stderr."""
    transcript: list[str] = []

    def step(*args: str, stdin: str | None = None) -> Result:
        result = run(*args, stdin=stdin)
        transcript.append(f"$ {' '.join(args)} -> {result.exit_code}\n{result.stdout}")
        transcript.append(result.stderr)
        return result

    def both(*args: str) -> Any:
        step(*args)
        return json.loads(step(*args, "--json").stdout)

    step("services", "create", "insights", "--description", "Insights API")
    step("services", "create", "scoring", "--json")
    step("services", "create", "insights")  # CONFLICT
    step("services", "create", "Bad Name")  # VALIDATION_FAILED
    both("services", "list")
    step(
        "plans",
        "create",
        "free",
        "--quota",
        "insights=250",
        "--quota",
        "scoring=100",
        "--limit",
        "cohort.max_count=10:Number of known contacts",
    )
    step("plans", "create", "pro", "--quota", "insights=5000", "--description", "Pro", "--json")
    step("plans", "create", "spare", "--quota", "nope=1")  # unknown service
    step("plans", "create", "spare", "--quota", "insights=-1", "--limit", "x")
    step("plans", "create", "spare")
    step("plans", "replace", "spare", "--quota", "insights=9", "--alert-threshold", "90",
         "--alert-threshold", "50")  # fmt: skip
    step("plans", "replace", "spare", "--quota", "insights=9", "--alert-threshold", "0")
    both("plans", "list")
    both("plans", "show", "free")
    step("plans", "show", "nope")
    step("plans", "delete", "spare")
    step("plans", "delete", "spare")  # NOT_FOUND
    step("accounts", "create", "--name", "Acme", "--plan", "free", "--id", "acme")
    generated = json.loads(
        step(
            "accounts",
            "create",
            "--name",
            "Globex",
            "--plan",
            "pro",
            "--timezone",
            "Europe/Paris",
            "--json",
        ).stdout
    )["id"]
    step("accounts", "create", "--name", "X", "--plan", "nope")
    step("accounts", "create", "--name", "X", "--plan", "free", "--timezone", "Mars/Olympus")
    both("accounts", "list")
    both("accounts", "list", "--search", "glob")
    step("accounts", "update", generated, "--name", "Globex Inc", "--status", "suspended")
    step("accounts", "update", generated, "--plan", "free", "--json")
    step("accounts", "update", "nobody", "--name", "X")
    step("plans", "delete", "free")  # in use: CONFLICT
    step("usage", "adjust", "acme", "--service", "insights", "--date", today(-1), "--delta", "30")
    step(
        "usage",
        "adjust",
        "acme",
        "--service",
        "insights",
        "--date",
        today(),
        "--delta",
        "7",
        "--json",
    )
    step("usage", "adjust", "acme", "--service", "nope", "--date", today(), "--delta", "1")
    step("usage", "adjust", "acme", "--service", "insights", "--date", today(2), "--delta", "1")
    both("usage", "show", "acme", "--service", "insights")
    both("usage", "show", "acme", "--service", "insights", "--from", today(-2))
    step("usage", "show", "acme", "--service", "insights", "--from", today(-100))
    step("usage", "show", "acme", "--service", "scoring", "--to", today(-1))
    step("usage", "show", "nobody", "--service", "insights")
    both("accounts", "show", "acme")
    step("accounts", "show", "nobody")
    key_id = json.loads(step("keys", "create", "acme", "--name", "ci", "--json").stdout)["id"]
    step(
        "keys",
        "create",
        "acme",
        "--name",
        "table",
        "--scope",
        "usage:read",
        "--expires-at",
        "2999-01-01T00:00:00Z",
    )
    step("keys", "create", "acme", "--scope", "admin")
    step("keys", "create", "nobody")
    both("keys", "list", "acme")
    step("keys", "rotate", key_id, "--grace-seconds", "60")
    step("keys", "rotate", key_id)  # already replaced: CONFLICT
    step("keys", "rotate", key_id, "--grace-seconds", "-1")
    both("keys", "revoke", key_id)
    step("keys", "revoke", "key_nope")
    both("keys", "list", "acme")
    step("export")
    token_id = json.loads(step("tokens", "create", "reader", "--role", "read", "--json").stdout)[
        "id"
    ]
    step("tokens", "create", "reader", "--role", "read")  # CONFLICT: names are unique
    step("tokens", "create", "boss", "--role", "boss")  # VALIDATION_FAILED
    both("tokens", "list")
    both("tokens", "revoke", token_id)
    step("tokens", "revoke", "tok_nope")
    step("audit", "--since", "yesterday")  # VALIDATION_FAILED
    step("audit", "--target", "token:nope", "--json")  # nothing
    hook = "http://127.0.0.1:9/hook"
    webhook = json.loads(
        step("webhooks", "create", hook, "--event", "quota.threshold", "--json").stdout
    )["id"]
    step("webhooks", "create", hook, "--event", "quota.exceeded", "--description", "Ops")
    step("webhooks", "create", "ftp://example.com/x", "--event", "quota.threshold")
    step("webhooks", "create", hook, "--event", "nope")  # VALIDATION_FAILED
    step("webhooks", "create", hook)  # no event: VALIDATION_FAILED
    both("webhooks", "list")
    both("webhooks", "show", webhook)
    step("webhooks", "show", "wh_nope")  # NOT_FOUND
    step("webhooks", "update", webhook, "--disable")
    step("webhooks", "update", webhook, "--enable", "--event", "credits.low", "--json")
    step("webhooks", "update", webhook, "--new-url", "ftp://example.com/x")
    step("webhooks", "update", webhook)  # nothing to change
    step("webhooks", "rotate-secret", webhook, "--grace-seconds", "60")
    step("webhooks", "rotate-secret", webhook, "--json")
    step("webhooks", "rotate-secret", webhook, "--grace-seconds", "-1")
    both("webhooks", "deliveries", webhook)
    step("webhooks", "deliveries", webhook, "--limit", "0")
    step("webhooks", "resend", webhook, "dlv_nope")  # NOT_FOUND
    both("alerts")
    both("alerts", "--account", "acme", "--limit", "5")
    step("webhooks", "delete", webhook, stdin="n\n")
    step("webhooks", "delete", webhook, "--yes")
    step("webhooks", "delete", webhook, "--yes")  # NOT_FOUND
    step("accounts", "delete", "acme", stdin="n\n")
    step("accounts", "delete", generated, "--yes")
    step("accounts", "delete", generated, "--yes")
    both("accounts", "list")
    return transcript


def test_every_command_prints_the_same_through_the_api_as_on_a_local_store(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same commands print the same (tables, JSON, errors, exit codes) with --url as
    with --store, up to times, generated ids and secrets."""
    # Both the server and the local store take webhooks on loopback.
    monkeypatch.setenv("QUOTAD_WEBHOOK_ALLOW_PRIVATE", "1")
    local = f"sqlite:///{tmp_path / 'local.db'}"
    assert cli("migrate", "--store", local).exit_code == 0
    with quotad_serve(f"sqlite:///{tmp_path / 'remote.db'}", tmp_path) as handle:
        remote = ("--url", handle.base, "--token", ADMIN_TOKEN)
        through_api = script(lambda *args, stdin=None: cli(*args, *remote, stdin=stdin))
    on_store = script(lambda *args, stdin=None: cli(*args, "--store", local, stdin=stdin))
    assert normalized(through_api) == normalized(on_store)
    assert "error CONFLICT" in "".join(on_store)  # the script does reach the refusals
    assert '"date": "' + today(-1) in "".join(on_store)


@pytest.mark.parametrize(
    "args",
    [
        ("services", "list"),
        ("plans", "list"),
        ("plans", "show", "free"),
        ("accounts", "list"),
        ("accounts", "show", "acme"),
        ("keys", "list", "acme"),
        ("usage", "show", "acme", "--service", "insights"),
        ("export",),
        ("tokens", "list"),
        ("audit", "--limit", "3"),
        ("webhooks", "list"),
        ("alerts",),
    ],
)
def test_reads_of_one_store_are_identical_either_way(
    server: tuple[Running, str], args: tuple[str, ...]
) -> None:
    """Reading the server's own store with --store prints exactly what --url prints."""
    _, store = server
    for extra in ((), ("--json",)) if args != ("export",) else ((),):
        remote = cli(*args, *extra, *remote_args(server))
        local = cli(*args, *extra, "--store", store)
        assert remote.exit_code == local.exit_code == 0, remote.output + local.output
        assert remote.stdout == local.stdout


def test_url_and_token_before_the_command_or_from_the_environment(
    server: tuple[Running, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """``quotad --url … --token … CMD`` and QUOTAD_URL/QUOTAD_TOKEN work as the options do."""
    expected = cli("services", "list", "--json", *remote_args(server))
    assert expected.exit_code == 0
    before = cli(*remote_args(server), "services", "list", "--json")
    assert before.exit_code == 0, before.output
    assert before.stdout == expected.stdout
    monkeypatch.setenv("QUOTAD_URL", server[0].base)
    monkeypatch.setenv("QUOTAD_TOKEN", ADMIN_TOKEN)
    from_env = cli("services", "list", "--json")
    assert from_env.exit_code == 0, from_env.output
    assert from_env.stdout == expected.stdout
    # An explicit --store wins over QUOTAD_URL.
    local = f"sqlite:///{Path.cwd() / 'own.db'}"
    assert cli("migrate", "--store", local).exit_code == 0
    assert json.loads(cli("services", "list", "--json", "--store", local).stdout) == []


def test_a_refused_token_is_a_clear_error_that_never_shows_the_token(
    server: tuple[Running, str],
) -> None:
    """A wrong token exits 1 with INVALID_AUTHORIZATION and a hint; the token is not printed."""
    secret = "not-the-token-7f3a9c"
    result = cli("services", "list", "--url", server[0].base, "--token", secret)
    assert result.exit_code == 1
    assert "error INVALID_AUTHORIZATION" in result.stderr
    assert "check --token or QUOTAD_TOKEN" in result.stderr
    assert secret not in result.output
    assert result.stdout == ""


def test_a_server_that_does_not_answer_is_a_clear_error() -> None:
    """Nothing listening at --url: exit 1 with one line naming the URL, no traceback."""
    base = f"http://127.0.0.1:{free_port()}"
    result = cli("services", "list", "--url", base, "--token", "t0ken-secret")
    assert result.exit_code == 1
    assert f"error: cannot reach quotad at {base}" in result.stderr
    assert "t0ken-secret" not in result.output
    assert len(result.stderr.strip().splitlines()) == 1
    assert isinstance(result.exception, SystemExit)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("services", "list", "--url", "http://127.0.0.1:1"), "needs the operator token"),
        (("services", "list", "--url", "127.0.0.1:8080", "--token", "t"), "http(s) URL"),
        (
            ("services", "list", "--url", "http://h:1", "--token", "t", "--store", "memory://"),
            "not both",
        ),
        (("--url", "http://h:1", "--token", "t", "migrate"), "local store only"),
        (("--url", "http://h:1", "--token", "t", "serve"), "local store only"),
        (("--url", "http://h:1", "--token", "t", "token", "reset"), "local store only"),
        (("--url", "http://h:1", "--token", "t", "import", "x.jsonl"), "local store only"),
        (
            (
                "--url",
                "http://h:1",
                "--token",
                "t",
                "proxy",
                "--upstream",
                "http://u:1",
                "--service",
                "s",
            ),
            "local store only",
        ),
    ],
)
def test_misused_url_options_are_usage_errors(args: tuple[str, ...], message: str) -> None:
    """--url without a token, a URL without a scheme, --url with --store, and --url before
    a command that only works on a local store exit 2 with a message."""
    result = cli(*args)
    assert result.exit_code == 2, result.output
    assert message in result.stderr


def test_account_usages_of_the_operator_api(server: tuple[Running, str]) -> None:
    """GET /admin/v1/accounts/{id}/usages answers an account's limits and quotas with
    today's use (what accounts show prints); an unknown account is NOT_FOUND."""
    with Client(server[0].base, operator_token=ADMIN_TOKEN) as client:
        lines = client.account_usages("acme")
        assert [line.name for line in lines] == ["insights.daily_queries", "scoring.daily_queries"]
        assert lines[0].limit == 250
        with pytest.raises(NotFoundError):
            client.account_usages("nobody")


# Local stores are never created by accident --------------------------------------------
@pytest.mark.parametrize(
    "args",
    [
        ("services", "list"),
        ("services", "create", "insights"),
        ("accounts", "show", "acme"),
        ("usage", "show", "acme", "--service", "insights"),
        ("token", "reset"),
        ("export",),
    ],
)
def test_a_missing_local_store_is_an_error_naming_it(tmp_path: Path, args: tuple[str, ...]) -> None:
    """Without --url, a SQLite store that does not exist is an error naming its path, and
    no file is created."""
    path = tmp_path / "nothing" / "here.db"
    result = cli(*args, "--store", f"sqlite:///{path}")
    assert result.exit_code == 2, result.output
    assert f"no store at {path}" in result.stderr
    assert not path.exists()
    assert not path.parent.exists()
    default = cli(*args)  # the default store, ./quotad.db
    assert default.exit_code == 2
    assert f"no store at {tmp_path / 'quotad.db'}" in default.stderr
    assert not (tmp_path / "quotad.db").exists()


def test_create_and_migrate_make_a_new_store(tmp_path: Path) -> None:
    """``--create`` on a create command, and ``quotad migrate``, make the store."""
    first = tmp_path / "first.db"
    made = cli("services", "create", "insights", "--create", "--store", f"sqlite:///{first}")
    assert made.exit_code == 0, made.output
    assert first.exists()
    listed = cli("services", "list", "--json", "--store", f"sqlite:///{first}")
    assert [s["name"] for s in json.loads(listed.stdout)] == ["insights"]
    second = tmp_path / "second.db"
    assert cli("migrate", "--store", f"sqlite:///{second}").exit_code == 0
    assert second.exists()


def test_a_redis_store_without_records_is_an_error(tmp_path: Path) -> None:
    """``--store redis://…`` without records= (or QUOTAD_RECORDS_URL) exits 2 saying so; with
    records= naming a missing SQLite file it names that file."""
    result = cli("services", "list", "--store", "redis://127.0.0.1:6379/0")
    assert result.exit_code == 2
    assert "records=<SQL URL>" in result.stderr
    assert not (tmp_path / "quotad.db").exists()
    records = tmp_path / "records.db"
    result = cli(
        "services", "list", "--store", f"redis://127.0.0.1:6379/0?records=sqlite:///{records}"
    )
    assert result.exit_code == 2
    assert f"no store at {records}" in result.stderr
    assert not records.exists()


def test_serve_refuses_a_redis_store_without_records(tmp_path: Path) -> None:
    """``quotad serve --store redis://…`` without records= exits 2 before serving anything."""
    done = subprocess.run(
        [
            sys.executable,
            "-c",
            "from quotad.cli import main; main()",
            "serve",
            "--store",
            "redis://127.0.0.1:6379/0",
            "--port",
            str(free_port()),
        ],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
        cwd=tmp_path,
        env={k: v for k, v in os.environ.items() if not k.startswith("QUOTAD_")},
    )
    assert done.returncode == 2, done.stdout + done.stderr
    assert "records=<SQL URL>" in done.stderr
    assert not (tmp_path / "quotad.db").exists()


# Messages in the CLI's words -----------------------------------------------------------
@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
def test_messages_name_commands_and_options_not_http(
    server: tuple[Running, str], remote: bool
) -> None:
    """An unregistered service points at `quotad services create`, a long window at --to,
    a bad scope lists the scopes in words; no HTTP method, path or pattern is shown."""
    where = remote_args(server) if remote else ("--store", server[1])
    cases = [
        (
            ("plans", "create", "x", "--quota", "nope=1"),
            "--quota nope: service 'nope' is not registered "
            "(register it with `quotad services create nope` first)",
        ),
        (
            ("usage", "show", "acme", "--service", "insights", "--from", today(-100)),
            "--to: the window may cover at most 90 days (pick a --to within 89 days of --from)",
        ),
        (
            ("keys", "create", "acme", "--scope", "admin"),
            "--scope #1: must be usage:read, consume:* or consume:SERVICE",
        ),
        (("services", "create", "Bad Name"), "NAME: use lowercase letters"),
        (
            (
                "usage",
                "show",
                "acme",
                "--service",
                "insights",
                "--from",
                today(-1),
                "--to",
                today(-3),
            ),
            "--from must not be after --to",
        ),
    ]
    for args, message in cases:
        result = cli(*args, *where)
        assert result.exit_code == 1, result.output
        text = " ".join(result.stderr.split())
        assert message in text, text
        for http in ("POST", "/admin/v1", "/body/", "/query/", "start_date", "end_date", "^("):
            assert http not in text


def test_every_api_name_pattern_has_words() -> None:
    """Each name pattern of the API's schemas is described in words by the CLI."""
    patterns = {
        getattr(meta, "pattern", None)
        for alias in (schemas.ServiceName, schemas.Identifier, schemas.LimitName, schemas.Scope)
        for meta in get_args(alias)[1:]
    } - {None}
    assert len(patterns) == 4
    assert patterns <= set(PATTERN_WORDS)


@pytest.mark.parametrize("remote", [False, True], ids=["local", "remote"])
def test_usage_show_covers_the_last_30_days_by_default(
    server: tuple[Running, str], remote: bool
) -> None:
    """Without --from, usage show lists the 30 days up to today (29 days back included,
    30 not); with only --to, the 30 days up to it."""
    where = remote_args(server) if remote else ("--store", server[1])
    for day, delta in ((today(-29), 3), (today(-30), 5)):
        adjusted = cli(
            "usage",
            "adjust",
            "acme",
            "--service",
            "scoring",
            "--date",
            day,
            "--delta",
            str(delta),
            *where,
        )
        assert adjusted.exit_code == 0, adjusted.output
    rows = json.loads(cli("usage", "show", "acme", "--service", "scoring", "--json", *where).stdout)
    assert [row["date"] for row in rows] == [today(n) for n in range(-29, 1)]
    assert rows[0]["used"] >= 3
    ending = cli(
        "usage", "show", "acme", "--service", "scoring", "--to", today(-1), "--json", *where
    )
    assert [row["date"] for row in json.loads(ending.stdout)] == [today(n) for n in range(-30, 0)]


# Help and start-up ---------------------------------------------------------------------
def command_paths() -> list[tuple[str, ...]]:
    """Every command and group of the CLI, as argv prefixes."""
    found: list[tuple[str, ...]] = [()]

    def walk(group: Any, prefix: tuple[str, ...]) -> None:
        for name, command in getattr(group, "commands", {}).items():
            found.append((*prefix, name))
            walk(command, (*prefix, name))

    walk(get_command(app), ())
    return found


@pytest.mark.parametrize("path", command_paths(), ids=lambda p: " ".join(p) or "quotad")
def test_help_shows_no_bool_metavar(path: tuple[str, ...]) -> None:
    """No ``--help`` page shows ``<bool>`` after a flag."""
    result = cli(*path, "--help")
    assert result.exit_code == 0, result.output
    assert "--help" in result.stdout
    assert "<bool>" not in result.stdout


HEAVY = ("sqlalchemy", "alembic", "fastapi", "starlette", "uvicorn", "redis", "psycopg")


def test_importing_the_cli_loads_no_server_module() -> None:
    """``import quotad.cli`` imports neither the stores' libraries nor the web framework."""
    probe = (
        "import sys, quotad.cli; "
        f"print([m for m in {HEAVY!r} + ('quotad.storage', 'quotad.service', 'quotad.api') "
        "if m in sys.modules])"
    )
    done = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, timeout=60, check=True
    )
    assert done.stdout.strip() == "[]", done.stdout


@pytest.mark.parametrize("remote", [False, True], ids=["help", "services-list-url"])
def test_help_and_remote_commands_load_no_store_module(
    server: tuple[Running, str], remote: bool
) -> None:
    """``quotad --help`` and ``quotad services list --url …`` run without importing
    SQLAlchemy, Alembic, FastAPI or a store driver."""
    program = "import sys; from quotad.cli import main; sys.argv[0] = 'quotad'; main()"
    args = ["services", "list", *remote_args(server)] if remote else ["--help"]
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", program, *args],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert ("insights" if remote else "services") in done.stdout
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert not {name for name in imported if name.split(".")[0] in HEAVY}


def test_the_scripts_head_is_alembics() -> None:
    """The head read from the migration scripts without Alembic is the one Alembic finds."""
    from alembic.config import Config
    from alembic.script import ScriptDirectory

    from quotad.storage.sql.engine import MIGRATIONS, script_head

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert script_head() == ScriptDirectory.from_config(config).get_current_head()


def test_a_local_command_on_a_migrated_store_does_not_load_alembic(tmp_path: Path) -> None:
    """Opening a store whose schema is at the head skips Alembic; a new one is migrated."""
    store = f"sqlite:///{tmp_path / 'q.db'}"
    program = "import sys; from quotad.cli import main; sys.argv[0] = 'quotad'; main()"

    def imported(*args: str) -> set[str]:
        done = subprocess.run(
            [sys.executable, "-X", "importtime", "-c", program, *args, "--store", store],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, done.stderr[-2000:]
        return {line.rsplit("|", 1)[-1].strip().split(".")[0] for line in done.stderr.splitlines()}

    assert "alembic" in imported("migrate")
    assert "alembic" not in imported("services", "list")


@pytest.mark.parametrize(
    "command", [("services", "list"), ("tokens", "list"), ("audit",), ("webhooks", "list")]
)
def test_local_commands_load_no_web_framework(tmp_path: Path, command: tuple[str, ...]) -> None:
    """A command on a local store opens it without importing FastAPI or Starlette (the
    views it prints are framework-free), nor Alembic once the schema is current."""
    store = f"sqlite:///{tmp_path / 'local.db'}"
    assert cli("migrate", "--store", store).exit_code == 0
    program = "import sys; from quotad.cli import main; sys.argv[0] = 'quotad'; main()"
    done = subprocess.run(
        [sys.executable, "-X", "importtime", "-c", program, *command, "--store", store],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    imported = {line.rsplit("|", 1)[-1].strip() for line in done.stderr.splitlines()}
    assert not {
        name for name in imported if name.split(".")[0] in {"fastapi", "starlette", "alembic"}
    }
