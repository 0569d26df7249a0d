"""``quotad webhooks …`` and ``quotad alerts`` on a local SQLite store, and through the API.

The events come from real use: a consume crossing 80 % of a plan's quota writes a
``quota.threshold`` event, and one delivery round sends it to a real receiver process.
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import time
from pathlib import Path
from typing import Any

import httpx2
import pytest
from typer.testing import CliRunner, Result

from quotad.cli import app
from quotad.cli.console import console as cli_out
from quotad.service import deliveries, verify, webhook_sender
from quotad.service.context import Context
from quotad.settings import Settings
from quotad.storage import stores_from_url
from tests.processes import ADMIN_TOKEN, OPERATOR, quotad_serve
from tests.webhook_fixtures import WebhookReceiver

runner = CliRunner()
SECRET_RE = re.compile(r"whsec_[A-Za-z0-9+/=]{20,}")


def run(store: str, *args: str, stdin: str | None = None) -> Result:
    """``quotad ARGS --store STORE``."""
    return runner.invoke(app, [*args, "--store", store], input=stdin)


def ok(store: str, *args: str) -> Result:
    """Run a command that must succeed."""
    result = run(store, *args)
    assert result.exit_code == 0, result.output
    return result


def data(store: str, *args: str) -> Any:
    """The parsed ``--json`` output of a command that must succeed."""
    return json.loads(ok(store, *args, "--json").stdout)


def refused(store: str, *args: str) -> Result:
    """Run a command that must fail with VALIDATION_FAILED (exit 1, nothing on stdout)."""
    result = run(store, *args)
    assert result.exit_code == 1, result.output
    assert "error VALIDATION_FAILED:" in result.stderr
    assert result.stdout == ""
    return result


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A migrated SQLite store with service insights, plan ``small`` (10 a day) and account
    ``acme``; no QUOTAD_* environment but QUOTAD_WEBHOOK_ALLOW_PRIVATE=1 (the receiver
    listens on loopback), on a terminal wide enough that no cell wraps."""
    monkeypatch.chdir(tmp_path)
    for name in [n for n in os.environ if n.startswith("QUOTAD_")]:
        monkeypatch.delenv(name)
    monkeypatch.setenv("QUOTAD_WEBHOOK_ALLOW_PRIVATE", "1")
    monkeypatch.setenv("COLUMNS", "250")
    # Rich fixes a console's width when COLUMNS is set as it is made (an xdist worker's
    # is, at 80): set it on the console too.
    monkeypatch.setattr(cli_out, "width", 250)
    url = f"sqlite:///{tmp_path / 'q.db'}"
    ok(url, "migrate")
    ok(url, "services", "create", "insights")
    ok(url, "plans", "create", "small", "--quota", "insights=10")
    ok(url, "accounts", "create", "--name", "Acme", "--plan", "small", "--id", "acme")
    return url


def create(store: str, url: str = "http://127.0.0.1:9/hook", *events: str) -> dict[str, Any]:
    """Register an endpoint (for quota.threshold unless ``events``); its JSON view."""
    chosen = events or ("quota.threshold",)
    args = [arg for event in chosen for arg in ("--event", event)]
    view: dict[str, Any] = data(store, "webhooks", "create", url, *args)
    return view


async def _with_ctx(store: str, action: Any) -> Any:
    settings = Settings(_env_file=None, store_url=store, webhook_allow_private=True)
    ctx = Context(stores_from_url(store), settings)
    await ctx.stores.open()
    try:
        return await action(ctx)
    finally:
        await ctx.stores.close()


def consume(store: str, cost: int) -> None:
    """Use ``cost`` insights units of acme, as a verify call would, and wait until the
    alert events it noticed are written."""

    async def action(ctx: Context) -> None:
        assert (await verify.verify_account(ctx, "acme", "insights", cost)).valid
        await ctx.noticer.drain()

    asyncio.run(_with_ctx(store, action))


def deliver_once(store: str) -> int:
    """One delivery round, as a serving node runs it; how many deliveries it attempted."""

    async def action(ctx: Context) -> int:
        async with webhook_sender.new_client() as client:
            return await deliveries.deliver_due(ctx, client, deliveries.new_claim())

    attempted: int = asyncio.run(_with_ctx(store, action))
    return attempted


# Create, list, show ---------------------------------------------------------------------
def test_create_prints_the_secret_once_and_list_and_show_never(store: str) -> None:
    """``webhooks create`` prints the endpoint and its whsec_ secret once, with a warning;
    list, show and their JSON show only the secret's hint."""
    result = ok(
        store,
        *("webhooks", "create", "http://127.0.0.1:9/hook", "--event", "quota.threshold"),
        *("--event", "quota.exceeded", "--description", "on-call"),
    )
    secrets = SECRET_RE.findall(result.stdout)
    assert len(secrets) == 1, result.stdout
    assert "shown ONCE" in result.stdout
    assert "Keep it" in result.stdout
    endpoint = data(store, "webhooks", "list")[0]
    assert endpoint["secret_hint"] == f"whsec_…{secrets[0][-4:]}"
    assert endpoint["events"] == ["quota.threshold", "quota.exceeded"]
    assert endpoint["description"] == "on-call"
    assert endpoint["enabled"] is True
    assert "secret" not in endpoint
    for args in (
        ("webhooks", "list"),
        ("webhooks", "list", "--json"),
        ("webhooks", "show", endpoint["id"]),
        ("webhooks", "show", endpoint["id"], "--json"),
        ("audit", "--json"),
    ):
        shown = ok(store, *args).stdout
        assert secrets[0] not in shown
        assert not SECRET_RE.search(shown), args
    assert endpoint["id"] in ok(store, "webhooks", "list").stdout


def test_create_json_carries_the_secret(store: str) -> None:
    """``webhooks create --json`` answers the API's create body: the view and its secret."""
    view = create(store)
    assert SECRET_RE.fullmatch(view["secret"])
    assert view["id"].startswith("wh_")
    assert view["secret_hint"] == f"whsec_…{view['secret'][-4:]}"


@pytest.mark.parametrize(
    ("args", "where", "words"),
    [
        (("ftp://example.com/x", "--event", "quota.threshold"), "URL:", "http:// or https://"),
        (("", "--event", "quota.threshold"), "URL:", "at least 1 character"),
        (("http://u:p@127.0.0.1/x", "--event", "quota.threshold"), "URL:", "credentials"),
        (("http://127.0.0.1:9/x", "--event", "nope"), "--event #1:", "'quota.threshold'"),
        (("http://127.0.0.1:9/x",), "--event:", "at least 1 item"),
        (
            ("http://127.0.0.1:9/x", "--event", "quota.exceeded", "--event", "quota.exceeded"),
            "--event:",
            "given twice",
        ),
    ],
)
def test_invalid_endpoints_are_refused_in_the_commands_words(
    store: str, args: tuple[str, ...], where: str, words: str
) -> None:
    """A bad URL or event list exits 1 with VALIDATION_FAILED naming the argument or option,
    and registers nothing."""
    result = refused(store, "webhooks", "create", *args)
    assert where in result.stderr
    assert words in result.stderr
    assert data(store, "webhooks", "list") == []


def test_a_private_address_is_refused_unless_allowed(
    store: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without QUOTAD_WEBHOOK_ALLOW_PRIVATE a loopback URL is refused, saying how to allow it."""
    monkeypatch.delenv("QUOTAD_WEBHOOK_ALLOW_PRIVATE")
    result = refused(store, "webhooks", "create", "http://127.0.0.1:9/x", "--event", "key.expiring")
    assert "loopback" in result.stderr
    assert "QUOTAD_WEBHOOK_ALLOW_PRIVATE=1" in result.stderr


def test_a_missing_endpoint_is_not_found(store: str) -> None:
    """show, update, delete, rotate-secret, deliveries and resend of an unknown id exit 1
    with NOT_FOUND."""
    for args in (
        ("show", "wh_nope"),
        ("update", "wh_nope", "--disable"),
        ("delete", "wh_nope", "--yes"),
        ("rotate-secret", "wh_nope"),
        ("deliveries", "wh_nope"),
        ("resend", "wh_nope", "dlv_nope"),
    ):
        result = run(store, "webhooks", *args)
        assert result.exit_code == 1, args
        assert "error NOT_FOUND:" in result.stderr


# Update, rotate, delete -----------------------------------------------------------------
def test_update_changes_only_what_is_given(store: str) -> None:
    """``webhooks update`` sets the URL, the events and the description it is given and
    keeps the rest; an invalid value is refused and changes nothing."""
    endpoint = create(store, "http://127.0.0.1:9/a", "quota.threshold")
    changed = data(
        store,
        *("webhooks", "update", endpoint["id"], "--new-url", "http://127.0.0.1:9/b"),
        *("--event", "credits.low", "--event", "credits.exhausted"),
    )
    assert changed["url"] == "http://127.0.0.1:9/b"
    assert changed["events"] == ["credits.low", "credits.exhausted"]
    assert changed["description"] == ""
    described = data(store, "webhooks", "update", endpoint["id"], "--description", "billing")
    assert described["description"] == "billing"
    assert described["url"] == "http://127.0.0.1:9/b"
    bad_url = refused(store, "webhooks", "update", endpoint["id"], "--new-url", "ftp://x")
    assert "--new-url:" in bad_url.stderr
    bad_event = refused(store, "webhooks", "update", endpoint["id"], "--event", "nope")
    assert "--event #1:" in bad_event.stderr
    assert data(store, "webhooks", "show", endpoint["id"]) == described


def test_update_without_a_change_is_a_usage_error(store: str) -> None:
    """``webhooks update ID`` alone exits 2 naming the options that change something."""
    endpoint = create(store)
    result = run(store, "webhooks", "update", endpoint["id"])
    assert result.exit_code == 2
    assert "nothing to change" in result.stderr
    assert "--enable or --disable" in result.stderr


def test_disable_and_enable_again(store: str) -> None:
    """--disable marks the endpoint disabled by an operator; --enable clears it."""
    endpoint = create(store)
    disabled = data(store, "webhooks", "update", endpoint["id"], "--disable")
    assert disabled["enabled"] is False
    assert disabled["disabled_at"] is not None
    assert disabled["disabled_reason"] == "disabled by an operator"
    table = ok(store, "webhooks", "list").stdout
    assert "False" in table
    enabled = data(store, "webhooks", "update", endpoint["id"], "--enable")
    assert enabled["enabled"] is True
    assert enabled["disabled_at"] is None
    assert enabled["disabled_reason"] is None


def test_rotate_secret_prints_a_new_secret_once(store: str) -> None:
    """``rotate-secret`` prints a secret unlike the old one, once, and the hint follows it;
    a grace period outside 0..604800 is refused."""
    endpoint = create(store)
    result = ok(store, "webhooks", "rotate-secret", endpoint["id"], "--grace-seconds", "60")
    secrets = SECRET_RE.findall(result.stdout)
    assert len(secrets) == 1
    assert secrets[0] != endpoint["secret"]
    assert "60 s" in result.stdout
    assert data(store, "webhooks", "show", endpoint["id"])["secret_hint"].endswith(secrets[0][-4:])
    again = data(store, "webhooks", "rotate-secret", endpoint["id"])
    assert again["secret"] not in (secrets[0], endpoint["secret"])
    too_long = refused(
        store, "webhooks", "rotate-secret", endpoint["id"], "--grace-seconds", "604801"
    )
    assert "--grace-seconds:" in too_long.stderr


def test_delete_asks_first_unless_yes(store: str) -> None:
    """``webhooks delete`` asks for confirmation (no keeps it), --yes deletes it."""
    endpoint = create(store)
    kept = run(store, "webhooks", "delete", endpoint["id"], stdin="n\n")
    assert kept.exit_code == 1
    assert [e["id"] for e in data(store, "webhooks", "list")] == [endpoint["id"]]
    gone = ok(store, "webhooks", "delete", endpoint["id"], "--yes")
    assert f"webhook {endpoint['id']} deleted" in gone.stdout
    assert data(store, "webhooks", "list") == []
    assert run(store, "webhooks", "show", endpoint["id"]).exit_code == 1


# Deliveries and alerts ------------------------------------------------------------------
def test_deliveries_table_after_an_event_and_resend(store: str, receiver: WebhookReceiver) -> None:
    """Crossing 80 % writes a quota.threshold event; after a round against a receiver
    answering 500, ``deliveries`` shows it pending with one attempt answered 500 and a next
    attempt; ``resend`` makes it due again, attempts kept."""
    endpoint = create(store, receiver.url, "quota.threshold")
    assert data(store, "webhooks", "deliveries", endpoint["id"]) == []
    receiver.set_mode(status=500)
    consume(store, 8)
    assert deliver_once(store) == 1
    [delivery] = data(store, "webhooks", "deliveries", endpoint["id"])
    assert delivery["type"] == "quota.threshold"
    assert delivery["status"] == "pending"
    assert [a["status_code"] for a in delivery["attempts"]] == [500]
    assert delivery["next_attempt_at"] is not None
    table = ok(store, "webhooks", "deliveries", endpoint["id"]).stdout
    row = next(line for line in table.splitlines() if delivery["id"] in line)
    assert re.search(r"quota\.threshold\s*│\s*pending\s*│\s*1\s*│\s*500\s*│", row), row
    resent = data(store, "webhooks", "resend", endpoint["id"], delivery["id"])
    assert resent["id"] == delivery["id"]
    assert resent["status"] == "pending"
    assert len(resent["attempts"]) == 1
    shown = ok(store, "webhooks", "resend", endpoint["id"], delivery["id"]).stdout
    assert f"delivery {delivery['id']} will be sent again" in shown
    refused_limit = refused(store, "webhooks", "deliveries", endpoint["id"], "--limit", "0")
    assert "--limit:" in refused_limit.stderr


def test_alerts_lists_the_events_newest_first(store: str) -> None:
    """``alerts`` lists the threshold events of a real consume (80 then 100), newest first,
    filtered by --account and cut by --limit, as a table and as JSON."""
    assert data(store, "alerts") == []
    consume(store, 8)
    consume(store, 2)
    events = data(store, "alerts")
    assert [(e["type"], e["data"]["threshold"]) for e in events] == [
        ("quota.threshold", 100),
        ("quota.threshold", 80),
    ]
    assert {e["account_id"] for e in events} == {"acme"}
    assert data(store, "alerts", "--account", "acme", "--limit", "1") == events[:1]
    assert data(store, "alerts", "--account", "nobody") == []
    table = ok(store, "alerts").stdout
    assert events[0]["id"] in table
    assert events[1]["id"] in table
    assert table.index(events[0]["id"]) < table.index(events[1]["id"])
    assert "alert events" in table
    assert refused(store, "alerts", "--limit", "501").stderr.count("--limit:") == 1


# Through the operator API -----------------------------------------------------------------
@pytest.mark.slow
def test_through_the_api_the_commands_print_what_the_store_holds(
    store: str, tmp_path: Path, receiver: WebhookReceiver
) -> None:
    """With --url, a server's own delivery of a real threshold crossing is listed exactly as
    --store lists it (tables and JSON), and create, resend, disable and delete work."""
    with quotad_serve(store, tmp_path) as server:
        remote = ("--url", server.base, "--token", ADMIN_TOKEN)

        def through_api(*args: str) -> Result:
            result = runner.invoke(app, [*args, *remote])
            assert result.exit_code == 0, result.output
            return result

        created = through_api("webhooks", "create", receiver.url, "--event", "quota.threshold")
        assert len(SECRET_RE.findall(created.stdout)) == 1
        endpoint = data(store, "webhooks", "list")[0]
        receiver.set_mode(status=500)
        key = json.loads(through_api("keys", "create", "acme", "--json").stdout)["key"]
        answer = httpx2.post(
            f"{server.base}/v1/verify",
            json={"key": key, "service": "insights", "cost": 8},
            headers=OPERATOR,
            timeout=10,
        )
        assert answer.status_code == 200, answer.text
        deadline = time.monotonic() + 30
        while not any(d["attempts"] for d in data(store, "webhooks", "deliveries", endpoint["id"])):
            assert time.monotonic() < deadline, "the server attempted no delivery"
            time.sleep(0.2)
        for args in (
            ("webhooks", "list"),
            ("webhooks", "show", endpoint["id"]),
            ("webhooks", "deliveries", endpoint["id"]),
            ("alerts",),
            ("alerts", "--account", "acme"),
        ):
            for extra in ((), ("--json",)):
                assert through_api(*args, *extra).stdout == ok(store, *args, *extra).stdout
        [delivery] = data(store, "webhooks", "deliveries", endpoint["id"])
        resent = json.loads(
            through_api("webhooks", "resend", endpoint["id"], delivery["id"], "--json").stdout
        )
        assert resent["id"] == delivery["id"]
        assert resent["status"] == "pending"
        disabled = json.loads(
            through_api("webhooks", "update", endpoint["id"], "--disable", "--json").stdout
        )
        assert disabled["enabled"] is False
        refusal = runner.invoke(app, ["webhooks", "create", "ftp://x", "--event", "nope", *remote])
        assert refusal.exit_code == 1
        assert (
            refusal.stderr == run(store, "webhooks", "create", "ftp://x", "--event", "nope").stderr
        )
        through_api("webhooks", "delete", endpoint["id"], "--yes")
        assert data(store, "webhooks", "list") == []


def test_a_plan_takes_alert_thresholds_and_refuses_bad_ones(store: str) -> None:
    """--alert-threshold sets a plan's thresholds (shown, sorted); a bad one names the option."""
    shown = ok(store, "plans", "create", "pro", "--quota", "insights=10", "--alert-threshold",
               "90", "--alert-threshold", "50")  # fmt: skip
    assert "alert thresholds: 50 %, 90 %" in shown.stdout
    assert data(store, "plans", "show", "pro")["alert_thresholds"] == [50, 90]
    replaced = data(store, "plans", "replace", "pro", "--quota", "insights=10")
    assert replaced["alert_thresholds"] is None
    result = refused(store, "plans", "replace", "pro", "--quota", "insights=10",
                     "--alert-threshold", "0")  # fmt: skip
    assert "--alert-threshold" in result.stderr
    assert data(store, "plans", "show", "pro")["alert_thresholds"] is None
