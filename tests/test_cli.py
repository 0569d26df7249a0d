"""The administration commands of the ``quotad`` CLI, against a SQLite file."""

from __future__ import annotations

import asyncio
import json
import os
import re
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from click.testing import Result
from typer.testing import CliRunner

from quotad.cli import app
from quotad.domain.clock import Clock, SystemClock
from quotad.errors import QuotadError
from quotad.service import auth
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url
from quotad.testing import FakeClock

KEY_RE = re.compile(r"\bqd_[0-9A-Za-z]{36}\b")
runner = CliRunner()


def run(url: str, *args: str, stdin: str | None = None) -> Result:
    """``quotad ARGS --store URL``."""
    return runner.invoke(app, [*args, "--store", url], input=stdin)


def ok(url: str, *args: str) -> Result:
    """Run a command that must succeed."""
    result = run(url, *args)
    assert result.exit_code == 0, result.output
    return result


def data(url: str, *args: str) -> Any:
    """The parsed ``--json`` output of a command that must succeed."""
    return json.loads(ok(url, *args, "--json").stdout)


def fails(url: str, code: str, *args: str) -> Result:
    """Run a command that must exit 1 with ``error CODE:`` on stderr and nothing on stdout."""
    result = run(url, *args)
    assert result.exit_code == 1, result.output
    assert f"error {code}:" in result.stderr
    assert result.stdout == ""
    return result


def secret_in(output: str) -> str:
    """The one API key printed in ``output``."""
    found = KEY_RE.findall(output)
    assert len(found) == 1, output
    return str(found[0])


def authenticate(url: str, key: str, clock: Clock | None = None) -> str:
    """The account ``key`` authenticates as, or the code of the error refusing it."""

    async def check() -> str:
        stores = stores_from_url(url)
        await stores.open()
        settings = Settings(_env_file=None, store_url=url)  # type: ignore[call-arg]
        try:
            caller = await auth.authenticate(Context(stores, settings, clock or SystemClock()), key)
        except QuotadError as exc:
            return exc.code.value
        finally:
            await stores.close()
        return caller.account.id

    return asyncio.run(check())


def today(offset: int = 0) -> str:
    """Today's UTC date plus ``offset`` days, as YYYY-MM-DD."""
    return (datetime.now(UTC).date() + timedelta(days=offset)).isoformat()


@pytest.fixture
def url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """The URL of a fresh SQLite store (made by ``quotad migrate``), with no QUOTAD_*
    environment or .env around."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("QUOTAD_")]:
        monkeypatch.delenv(name)
    store = f"sqlite:///{tmp_path / 'q.db'}"
    ok(store, "migrate")
    return store


@pytest.fixture
def seeded(url: str) -> str:
    """Services insights and scoring, plan ``free`` and account ``acme``."""
    ok(url, "services", "create", "insights")
    ok(url, "services", "create", "scoring")
    ok(
        url,
        *("plans", "create", "free", "--quota", "insights=250", "--quota", "scoring=100"),
        *("--limit", "cohort.max_count=10:Number of known contacts"),
    )
    ok(url, "accounts", "create", "--name", "Acme", "--plan", "free", "--id", "acme")
    return url


def new_key(url: str, *args: str) -> tuple[str, str]:
    """Issue a key for ``acme``; its id and secret."""
    view = data(url, "keys", "create", "acme", *args)
    return view["id"], view["key"]


# Services ---------------------------------------------------------------------
def test_services_create_and_list(url: str) -> None:
    """Created services show in the table and in the JSON list."""
    result = ok(url, "services", "create", "insights", "--description", "Insights API")
    assert "insights" in result.stdout
    ok(url, "services", "create", "scoring")
    assert "Insights API" in ok(url, "services", "list").stdout
    listed = data(url, "services", "list")
    assert [(s["name"], s["description"]) for s in listed] == [
        ("insights", "Insights API"),
        ("scoring", ""),
    ]


def test_services_create_duplicate_is_conflict(url: str) -> None:
    """Registering a service twice fails with CONFLICT."""
    ok(url, "services", "create", "insights")
    fails(url, "CONFLICT", "services", "create", "insights")


def test_services_create_refuses_a_name_the_api_refuses(url: str) -> None:
    """A service name outside the API's pattern is VALIDATION_FAILED naming the argument."""
    result = fails(url, "VALIDATION_FAILED", "services", "create", "Bad Name")
    assert "NAME: use lowercase letters" in result.stderr
    assert data(url, "services", "list") == []


# Plans ------------------------------------------------------------------------
def test_plans_create_show_and_list(seeded: str) -> None:
    """A plan's --quota and --limit options become its quotas and limits."""
    shown = data(seeded, "plans", "show", "free")
    assert shown["quotas"] == {
        "insights": {"total": 250, "period": "day"},
        "scoring": {"total": 100, "period": "day"},
    }
    assert shown["limits"] == [
        {"name": "cohort.max_count", "description": "Number of known contacts", "limit": 10}
    ]
    created = data(
        seeded, "plans", "create", "pro", "--quota", "insights=5000", "--description", "Pro"
    )
    assert created["description"] == "Pro"
    assert [p["id"] for p in data(seeded, "plans", "list")] == ["free", "pro"]
    table = ok(seeded, "plans", "list").stdout
    assert "insights=5000/day" in table
    assert "cohort.max_count=10" in table
    assert "Number of known contacts" in ok(seeded, "plans", "show", "free").stdout


def test_plans_create_with_unknown_service_is_validation_failed(seeded: str) -> None:
    """A quota naming an unregistered service is refused, naming the --quota."""
    result = fails(seeded, "VALIDATION_FAILED", "plans", "create", "x", "--quota", "nope=1")
    assert "--quota nope: service 'nope' is not registered" in result.stderr


@pytest.mark.parametrize(
    ("option", "path"),
    [
        (("--quota", "insights"), "--quota: 'insights' is not SERVICE=TOTAL"),
        (("--quota", "insights=many"), "--quota insights (total): "),
        (("--quota", "insights=-1"), "--quota insights (total): "),
        (("--limit", "cohort.max_count"), "--limit #1: "),
        (("--limit", "cohort.max_count=ten"), "--limit #1 (limit): "),
    ],
)
def test_plans_create_refuses_malformed_options(
    seeded: str, option: tuple[str, str], path: str
) -> None:
    """Malformed --quota and --limit values are VALIDATION_FAILED, naming the option."""
    result = fails(seeded, "VALIDATION_FAILED", "plans", "create", "x", *option)
    assert path in result.stderr


def test_plans_create_duplicate_is_conflict(seeded: str) -> None:
    """Creating a plan whose id exists fails with CONFLICT."""
    fails(seeded, "CONFLICT", "plans", "create", "free")


def test_plans_show_unknown_is_not_found(url: str) -> None:
    """Showing a plan that does not exist fails with NOT_FOUND."""
    fails(url, "NOT_FOUND", "plans", "show", "nope")


def test_plans_delete(seeded: str) -> None:
    """A plan in use cannot be deleted (CONFLICT); an unused one can, once."""
    fails(seeded, "CONFLICT", "plans", "delete", "free")
    ok(seeded, "plans", "create", "spare")
    assert "deleted" in ok(seeded, "plans", "delete", "spare").stdout
    fails(seeded, "NOT_FOUND", "plans", "delete", "spare")
    assert [p["id"] for p in data(seeded, "plans", "list")] == ["free"]


# Accounts ---------------------------------------------------------------------
def test_accounts_create_list_and_search(seeded: str) -> None:
    """Accounts get a generated id when none is given and can be searched by name."""
    created = data(
        seeded,
        "accounts",
        "create",
        "--name",
        "Globex",
        "--plan",
        "free",
        "--timezone",
        "Europe/Paris",
    )
    assert created["id"].startswith("acct_")
    assert created["timezone"] == "Europe/Paris"
    assert {a["id"] for a in data(seeded, "accounts", "list")} == {"acme", created["id"]}
    assert [a["name"] for a in data(seeded, "accounts", "list", "--search", "glob")] == ["Globex"]
    assert "Acme" in ok(seeded, "accounts", "list").stdout


def test_accounts_create_with_unknown_plan_is_refused(seeded: str) -> None:
    """An account on a plan that does not exist is VALIDATION_FAILED naming --plan."""
    result = fails(
        seeded, "VALIDATION_FAILED", "accounts", "create", "--name", "X", "--plan", "nope"
    )
    assert "  --plan: " in result.stderr


def test_accounts_create_with_bad_timezone_is_refused(seeded: str) -> None:
    """An unknown IANA timezone is VALIDATION_FAILED."""
    fails(
        seeded,
        "VALIDATION_FAILED",
        *("accounts", "create", "--name", "X", "--plan", "free", "--timezone", "Mars/Olympus"),
    )


def test_accounts_create_duplicate_id_is_conflict(seeded: str) -> None:
    """An account id that is taken fails with CONFLICT."""
    fails(seeded, "CONFLICT", "accounts", "create", "--name", "X", "--plan", "free", "--id", "acme")


def test_accounts_show_includes_today_usage(seeded: str) -> None:
    """accounts show lists each limit and each quota with today's usage."""
    ok(
        seeded,
        "usage",
        "adjust",
        "acme",
        "--service",
        "insights",
        "--date",
        today(),
        "--delta",
        "7",
    )
    shown = data(seeded, "accounts", "show", "acme")
    assert shown["id"] == "acme"
    assert shown["usage"] == [
        {
            "description": "Number of known contacts",
            "limit": 10,
            "name": "cohort.max_count",
            "usage": 0,
        },
        {
            "description": "Daily insights queries",
            "limit": 250,
            "name": "insights.daily_queries",
            "usage": 7,
        },
        {
            "description": "Daily scoring queries",
            "limit": 100,
            "name": "scoring.daily_queries",
            "usage": 0,
        },
    ]
    table = ok(seeded, "accounts", "show", "acme").stdout
    assert "insights.daily_queries" in table
    assert "cohort.max_count" in table
    fails(seeded, "NOT_FOUND", "accounts", "show", "nobody")


def test_accounts_update(seeded: str) -> None:
    """accounts update changes only the given fields and validates the plan and status."""
    ok(seeded, "plans", "create", "pro", "--quota", "insights=5000")
    updated = data(seeded, "accounts", "update", "acme", "--plan", "pro", "--status", "suspended")
    assert (updated["name"], updated["plan"], updated["status"]) == ("Acme", "pro", "suspended")
    updated = data(seeded, "accounts", "update", "acme", "--name", "Acme Inc", "--status", "active")
    assert (updated["name"], updated["plan"], updated["status"]) == ("Acme Inc", "pro", "active")
    fails(seeded, "VALIDATION_FAILED", "accounts", "update", "acme", "--plan", "nope")
    fails(seeded, "NOT_FOUND", "accounts", "update", "nobody", "--name", "X")
    assert run(seeded, "accounts", "update", "acme", "--status", "closed").exit_code == 2


def test_suspended_account_keys_are_refused(seeded: str) -> None:
    """Suspending an account through the CLI makes its keys FORBIDDEN until reactivated."""
    _, key = new_key(seeded)
    ok(seeded, "accounts", "update", "acme", "--status", "suspended")
    assert authenticate(seeded, key) == "FORBIDDEN"
    ok(seeded, "accounts", "update", "acme", "--status", "active")
    assert authenticate(seeded, key) == "acme"


def test_accounts_delete_asks_for_confirmation(seeded: str) -> None:
    """Without --yes, delete asks first and does nothing when the answer is no."""
    result = run(seeded, "accounts", "delete", "acme", stdin="n\n")
    assert result.exit_code == 1
    assert data(seeded, "accounts", "show", "acme")["id"] == "acme"
    result = run(seeded, "accounts", "delete", "acme", stdin="y\n")
    assert result.exit_code == 0, result.output
    fails(seeded, "NOT_FOUND", "accounts", "show", "acme")


def test_accounts_delete_with_yes_removes_account_and_keys(seeded: str) -> None:
    """delete --yes removes the account at once, and its keys stop working."""
    _, key = new_key(seeded)
    assert "deleted" in ok(seeded, "accounts", "delete", "acme", "--yes").stdout
    assert data(seeded, "accounts", "list") == []
    assert authenticate(seeded, key) == "INVALID_AUTHORIZATION"
    fails(seeded, "NOT_FOUND", "accounts", "delete", "acme", "--yes")


# Keys -------------------------------------------------------------------------
def test_keys_create_prints_a_key_that_authenticates(seeded: str) -> None:
    """The secret printed once by keys create authenticates as the account."""
    result = ok(seeded, "keys", "create", "acme", "--name", "ci")
    assert "ONCE" in result.stdout
    key = secret_in(result.stdout)
    assert authenticate(seeded, key) == "acme"


def test_keys_list_shows_the_hint_never_the_secret(seeded: str) -> None:
    """keys list, as a table or JSON, shows prefix_…last4 and never the secret."""
    key_id, key = new_key(seeded, "--name", "ci")
    for result in (
        ok(seeded, "keys", "list", "acme"),
        ok(seeded, "keys", "list", "acme", "--json"),
    ):
        assert key not in result.stdout
        assert key[3:-4] not in result.stdout
        assert KEY_RE.search(result.stdout) is None
    listed = data(seeded, "keys", "list", "acme")
    assert [(k["id"], k["hint"], k["status"]) for k in listed] == [
        (key_id, f"qd_…{key[-4:]}", "active")
    ]
    assert "key" not in listed[0]
    assert f"qd_…{key[-4:]}" in ok(seeded, "keys", "list", "acme").stdout
    fails(seeded, "NOT_FOUND", "keys", "list", "nobody")


def test_keys_create_with_scopes_and_expiry(seeded: str) -> None:
    """--scope and --expires-at are stored on the key; an expired key stops authenticating."""
    expires = (datetime.now(UTC) + timedelta(days=1)).replace(microsecond=0)
    view = data(
        seeded,
        *("keys", "create", "acme", "--scope", "usage:read", "--scope", "consume:insights"),
        *("--expires-at", expires.isoformat().replace("+00:00", "Z")),
    )
    assert view["scopes"] == ["usage:read", "consume:insights"]
    assert view["expires_at"] == expires.isoformat().replace("+00:00", "Z")
    assert authenticate(seeded, view["key"]) == "acme"
    later = FakeClock(expires + timedelta(seconds=1))
    assert authenticate(seeded, view["key"], later) == "EXPIRED_API_KEY"
    assert data(seeded, "keys", "create", "acme")["scopes"] is None


@pytest.mark.parametrize(
    "option",
    [
        ("--expires-at", "2020-01-01T00:00:00Z"),
        ("--expires-at", "2999-01-01T00:00:00"),
        ("--expires-at", "tomorrow"),
        ("--scope", "admin"),
    ],
)
def test_keys_create_refuses_bad_options(seeded: str, option: tuple[str, str]) -> None:
    """A past or naive expiry, or an unknown scope, is VALIDATION_FAILED and issues nothing."""
    fails(seeded, "VALIDATION_FAILED", "keys", "create", "acme", *option)
    assert data(seeded, "keys", "list", "acme") == []


def test_keys_create_for_unknown_account_is_not_found(seeded: str) -> None:
    """Issuing a key for an account that does not exist fails with NOT_FOUND."""
    fails(seeded, "NOT_FOUND", "keys", "create", "nobody")


def test_keys_revoke(seeded: str) -> None:
    """A revoked key stops authenticating and lists as revoked; unknown ids are NOT_FOUND."""
    key_id, key = new_key(seeded)
    result = ok(seeded, "keys", "revoke", key_id)
    assert key not in result.stdout
    assert authenticate(seeded, key) == "INVALID_AUTHORIZATION"
    assert data(seeded, "keys", "list", "acme")[0]["status"] == "revoked"
    assert data(seeded, "keys", "revoke", key_id)["status"] == "revoked"
    fails(seeded, "NOT_FOUND", "keys", "revoke", "key_nope")


def test_keys_rotate_keeps_the_old_key_for_the_grace_period(seeded: str) -> None:
    """After rotate both keys work; past the grace period only the new one does."""
    key_id, old = new_key(seeded)
    result = ok(seeded, "keys", "rotate", key_id, "--grace-seconds", "3600")
    new = secret_in(result.stdout)
    assert new != old
    assert "ONCE" in result.stdout
    assert authenticate(seeded, old) == "acme"
    assert authenticate(seeded, new) == "acme"
    later = FakeClock(datetime.now(UTC) + timedelta(hours=2))
    assert authenticate(seeded, old, later) == "EXPIRED_API_KEY"
    assert authenticate(seeded, new, later) == "acme"
    listed = {k["id"]: k for k in data(seeded, "keys", "list", "acme")}
    assert listed[key_id]["replaced_by"] in listed
    fails(seeded, "CONFLICT", "keys", "rotate", key_id)


def test_keys_rotate_json_and_zero_grace(seeded: str) -> None:
    """rotate --json returns the new secret; with no grace the old key ends at once."""
    key_id, old = new_key(seeded)
    view = data(seeded, "keys", "rotate", key_id, "--grace-seconds", "0")
    assert view["id"] != key_id
    assert authenticate(seeded, view["key"]) == "acme"
    assert authenticate(seeded, old) == "EXPIRED_API_KEY"


def test_keys_rotate_refuses_bad_input(seeded: str) -> None:
    """A negative grace period is VALIDATION_FAILED; an unknown or revoked key is refused."""
    key_id, _ = new_key(seeded)
    fails(seeded, "VALIDATION_FAILED", "keys", "rotate", key_id, "--grace-seconds", "-1")
    fails(seeded, "NOT_FOUND", "keys", "rotate", "key_nope")
    ok(seeded, "keys", "revoke", key_id)
    fails(seeded, "CONFLICT", "keys", "rotate", key_id)


# Usage ------------------------------------------------------------------------
def test_usage_show_is_empty_until_something_is_used(seeded: str) -> None:
    """With nothing used in the window, usage show prints a note (JSON: [])."""
    assert data(seeded, "usage", "show", "acme", "--service", "insights") == []
    assert (
        "no insights usage" in ok(seeded, "usage", "show", "acme", "--service", "insights").stdout
    )


def test_usage_adjust_then_show(seeded: str) -> None:
    """Adjusted days show in the history with used, remaining and total per day."""
    adjusted = data(
        seeded,
        "usage",
        "adjust",
        "acme",
        "--service",
        "insights",
        "--date",
        today(-1),
        "--delta",
        "30",
    )
    assert adjusted == {"used": 30, "remaining": 220, "total": 250, "date": today(-1)}
    credited = data(
        seeded,
        "usage",
        "adjust",
        "acme",
        "--service",
        "insights",
        "--date",
        today(-1),
        "--delta",
        "-10",
    )
    assert credited["used"] == 20
    rows = data(seeded, "usage", "show", "acme", "--service", "insights", "--from", today(-2))
    assert rows == [
        {"used": 0, "remaining": 250, "total": 250, "date": today(-2)},
        {"used": 20, "remaining": 230, "total": 250, "date": today(-1)},
        {"used": 0, "remaining": 250, "total": 250, "date": today()},
    ]
    window = ("--from", today(-1), "--to", today(-1))
    assert len(data(seeded, "usage", "show", "acme", "--service", "insights", *window)) == 1
    table = ok(seeded, "usage", "show", "acme", "--service", "insights", "--from", today(-2)).stdout
    assert today(-1) in table
    assert "230" in table


@pytest.mark.parametrize(
    ("args", "code"),
    [
        (("--service", "nope"), "NOT_FOUND"),
        (("--service", "insights", "--from", today(-100)), "VALIDATION_FAILED"),
        (("--service", "insights", "--to", "2024-02-30"), "VALIDATION_FAILED"),
        (("--service", "insights", "--from", today(-1), "--to", today(-2)), "VALIDATION_FAILED"),
        (("--service", "insights", "--from", "2024-02-30"), "VALIDATION_FAILED"),
        (("--service", "insights", "--from", today(2)), "VALIDATION_FAILED"),
    ],
)
def test_usage_show_refuses_bad_windows(seeded: str, args: tuple[str, ...], code: str) -> None:
    """usage show refuses an unknown service, unreal or future days, and bad windows."""
    fails(seeded, code, "usage", "show", "acme", *args)


def test_usage_show_for_unknown_account_is_not_found(seeded: str) -> None:
    """usage show for an account that does not exist fails with NOT_FOUND."""
    fails(seeded, "NOT_FOUND", "usage", "show", "nobody", "--service", "insights")


@pytest.mark.parametrize(
    ("account", "service", "day", "code"),
    [
        ("nobody", "insights", today(), "NOT_FOUND"),
        ("acme", "nope", today(), "NOT_FOUND"),
        ("acme", "insights", "2024-02-30", "VALIDATION_FAILED"),
        ("acme", "insights", today(2), "VALIDATION_FAILED"),
    ],
)
def test_usage_adjust_refuses_bad_input(
    seeded: str, account: str, service: str, day: str, code: str
) -> None:
    """usage adjust refuses unknown accounts and services, unreal dates and future days."""
    fails(
        seeded,
        code,
        "usage",
        "adjust",
        account,
        "--service",
        service,
        "--date",
        day,
        "--delta",
        "1",
    )


# Plumbing ---------------------------------------------------------------------
def test_store_url_comes_from_the_environment(url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --store the commands use QUOTAD_STORE_URL."""
    monkeypatch.setenv("QUOTAD_STORE_URL", url)
    assert runner.invoke(app, ["services", "create", "insights"]).exit_code == 0
    assert [s["name"] for s in data(url, "services", "list")] == ["insights"]


def test_validation_errors_list_each_path_on_stderr(seeded: str) -> None:
    """Every validation error of a refused command is printed with its option and message."""
    result = fails(
        seeded, "VALIDATION_FAILED", "plans", "create", "x", "--quota", "a=-1", "--quota", "b=-2"
    )
    assert "--quota a (total)" in result.stderr
    assert "--quota b (total)" in result.stderr
    assert "must be a whole number from 0" in result.stderr


def test_unknown_store_scheme_is_a_usage_error(url: str) -> None:
    """A --store URL with an unknown scheme exits 2 with a message on stderr, no traceback."""
    result = run("nosuch://db", "services", "list")
    assert result.exit_code == 2
    assert "invalid store URL" in result.stderr
    assert result.exception is None or isinstance(result.exception, SystemExit)
