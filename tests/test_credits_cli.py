"""``quotad credits …``, ``services create --credit-price``, ``services update`` and
``plans create --refill`` on a local SQLite store, and through the API (same output)."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner, Result

from quotad.cli import app
from quotad.cli.console import console as cli_out
from tests.processes import ADMIN_TOKEN, quotad_serve

runner = CliRunner()


def run(store: str, *args: str) -> Result:
    """``quotad ARGS --store STORE``."""
    return runner.invoke(app, [*args, "--store", store])


def ok(store: str, *args: str) -> Result:
    """Run a command that must succeed."""
    result = run(store, *args)
    assert result.exit_code == 0, result.output
    return result


def data(store: str, *args: str) -> Any:
    """The parsed ``--json`` output of a command that must succeed."""
    return json.loads(ok(store, *args, "--json").stdout)


def refused(store: str, *args: str) -> str:
    """Run a command that must fail with VALIDATION_FAILED; its stderr."""
    result = run(store, *args)
    assert result.exit_code == 1, result.output
    assert "error VALIDATION_FAILED:" in result.stderr
    assert result.stdout == ""
    return result.stderr


def later(days: int = 30) -> str:
    """A time ``days`` from now, RFC 3339."""
    return (datetime.now(UTC) + timedelta(days=days)).isoformat()


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite store with service llm, plan ``small`` and account ``acme``; no
    QUOTAD_* environment, on a terminal wide enough that no cell wraps."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("QUOTAD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("COLUMNS", "250")
    monkeypatch.setattr(cli_out, "width", 250)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    ok(url, "migrate")
    ok(url, "services", "create", "llm")
    ok(url, "plans", "create", "small", "--quota", "llm=10")
    ok(url, "accounts", "create", "--name", "Acme", "--plan", "small", "--id", "acme")
    return url


def test_grant_show_ledger_and_void(store: str) -> None:
    """A grant prints its view; show lists it with the balance; the ledger pages; void
    leaves nothing of it."""
    grant = data(store, "credits", "grant", "acme", "12.5", "--note", "welcome", "--priority", "3")
    assert (grant["amount"], grant["remaining"], grant["note"], grant["priority"]) == (
        12.5,
        12.5,
        "welcome",
        3,
    )
    second = data(store, "credits", "grant", "acme", "5", "--expires-at", later())
    assert second["expires_at"] is not None
    shown = data(store, "credits", "show", "acme")
    assert shown["balance"] == 17.5
    assert {g["id"] for g in shown["grants"]} == {grant["id"], second["id"]}
    table = ok(store, "credits", "show", "acme").stdout
    assert "balance of acme: 17.5 credits" in table
    assert grant["id"] in table
    first = data(store, "credits", "ledger", "acme", "--limit", "1")
    assert [e["kind"] for e in first["items"]] == ["grant"]
    assert first["next_cursor"] is not None
    assert "more: --cursor" in ok(store, "credits", "ledger", "acme", "--limit", "1").stdout
    rest = data(store, "credits", "ledger", "acme", "--cursor", first["next_cursor"])
    assert rest["items"][-1]["balance_after"] == 17.5
    voided = data(store, "credits", "void", "acme", grant["id"])
    assert (voided["remaining"], voided["voided_at"] is not None) == (0, True)
    assert data(store, "credits", "show", "acme")["balance"] == 5
    assert data(store, "credits", "ledger", "acme")["items"][-1]["kind"] == "void"


def test_bad_grants_are_refused_and_change_nothing(store: str) -> None:
    """Zero, seven decimals, a past, an unparseable or an offset-less expiry are
    VALIDATION_FAILED at the CLI's names; an unknown account is NOT_FOUND."""
    assert "AMOUNT" in refused(store, "credits", "grant", "acme", "0")
    assert "AMOUNT" in refused(store, "credits", "grant", "acme", "1.0000001")
    assert "AMOUNT" in refused(store, "credits", "grant", "acme", "lots")
    past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
    for expiry in (past, "tomorrow", "2099-01-01T00:00:00"):
        assert "--expires-at" in refused(
            store, "credits", "grant", "acme", "1", "--expires-at", expiry
        )
    assert "--limit" in refused(store, "credits", "ledger", "acme", "--limit", "0")
    missing = run(store, "credits", "grant", "nobody", "1")
    assert missing.exit_code == 1
    assert "NOT_FOUND" in missing.stderr
    assert data(store, "credits", "show", "acme") == {"balance": 0, "grants": []}


def test_service_prices_and_plan_refills(store: str) -> None:
    """--credit-price sets a service's price, services update changes or removes it, and
    --refill sets a plan's refill; bad values are refused at their option."""
    created = data(store, "services", "create", "gen", "--credit-price", "0.002")
    assert created["credit_price"] == 0.002
    assert data(store, "services", "update", "gen", "--credit-price", "2")["credit_price"] == 2
    updated = data(store, "services", "update", "gen", "--unpriced", "--description", "d")
    assert (updated["credit_price"], updated["description"]) == (None, "d")
    assert "--credit-price" in refused(store, "services", "update", "gen", "--credit-price", "0")
    nothing = run(store, "services", "update", "gen")
    assert nothing.exit_code == 2
    plan = data(
        store,
        "plans",
        "create",
        "topped",
        "--quota",
        "llm=10",
        "--refill",
        "1000/month/top_up/billing",
    )
    assert plan["refill"] == {
        "amount": 1000,
        "window": "month",
        "mode": "top_up",
        "anchor": "billing",
    }
    assert "refill: 1000/month/top_up/billing" in ok(store, "plans", "show", "topped").stdout
    replaced = data(store, "plans", "replace", "topped", "--quota", "llm=10", "--refill", "5/day")
    assert replaced["refill"] == {"amount": 5, "window": "day", "mode": "reset"}
    assert "--refill" in refused(store, "plans", "create", "x", "--refill", "5/day/billing")
    assert "--refill" in refused(store, "plans", "create", "x", "--refill", "5/fortnight")
    assert "--refill" in refused(store, "plans", "create", "x", "--refill", "5/day/weekly")


# Through the operator API -----------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.serial
def test_through_the_api_the_commands_print_what_the_store_holds(
    store: str, tmp_path: Path
) -> None:
    """With --url, grant, show, ledger, void, services and plans print what --store prints
    (JSON and tables), and refuse bad input the same way."""
    with quotad_serve(store, tmp_path) as server:
        remote = ("--url", server.base, "--token", ADMIN_TOKEN)

        def through_api(*args: str) -> Result:
            result = runner.invoke(app, [*args, *remote])
            assert result.exit_code == 0, result.output
            return result

        def same(*args: str) -> Any:
            local = ok(store, *args, "--json").stdout
            assert through_api(*args, "--json").stdout == local
            assert through_api(*args).stdout == ok(store, *args).stdout
            return json.loads(local)

        expires = later()
        grant = json.loads(
            through_api(
                "credits", "grant", "acme", "2.25", "--expires-at", expires, "--json"
            ).stdout
        )
        through_api("credits", "grant", "acme", "1", "--note", "n", "--priority", "-2")
        assert same("credits", "show", "acme")["balance"] == 3.25
        assert len(same("credits", "ledger", "acme")["items"]) == 2
        voided = json.loads(through_api("credits", "void", "acme", grant["id"], "--json").stdout)
        assert voided["voided_at"] is not None
        assert same("credits", "show", "acme")["balance"] == 1
        through_api("services", "create", "gen", "--credit-price", "0.5")
        through_api("services", "update", "gen", "--credit-price", "0.000001")
        prices = {s["name"]: s["credit_price"] for s in same("services", "list")}
        assert prices == {"gen": 0.000001, "llm": None}
        through_api("plans", "create", "refilled", "--quota", "gen=5", "--refill", "3.5/week")
        assert same("plans", "show", "refilled")["refill"]["amount"] == 3.5
        bad = runner.invoke(app, ["credits", "grant", "acme", "0", *remote])
        assert (bad.exit_code, bad.stdout) == (1, "")
        assert "AMOUNT" in bad.stderr
        past = (datetime.now(UTC) - timedelta(minutes=1)).isoformat()
        late = runner.invoke(app, ["credits", "grant", "acme", "1", "--expires-at", past, *remote])
        assert late.exit_code == 1
        assert "--expires-at" in late.stderr
