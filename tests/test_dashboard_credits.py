"""Credits on the dashboard and the portal (SPEC 10), in-process over HTTP, over every store:
the account page's balance, grants and ledger; granting and voiding through its forms
(audited); the whole ledger and its CSV; read sessions and CSRF; the portal's balance."""

from __future__ import annotations

import csv
import io
import re
from datetime import timedelta
from typing import Any

import httpx2
import pytest

from quotad.domain.credits import to_micros
from quotad.http.credit_views import ledger_entry_view
from quotad.service import credits
from quotad.service.context import Context
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment
from tests.test_dashboard import csrf_of, operator_signed_in, sign_in
from tests.test_dashboard_webhooks import token_signed_in

ACCOUNT = "/dashboard/accounts/acme"
WRITE_FORM = re.compile(r'<form method="post" action="/dashboard/accounts/acme/(grants|keys)')
VOID_FORM = re.compile(
    r'<form method="post" action="/dashboard/accounts/acme/grants/([^/"]+)/void" '
    r'class="inline" data-confirm="([^"]+)">'
)


def balance_of(html: str) -> int:
    """The balance the page shows, in micro-credits."""
    match = re.search(r'<strong id="credit-balance" data-micros="(-?\d+)">', html)
    assert match is not None, html
    return int(match.group(1))


def grant_rows(html: str) -> dict[str, tuple[str, int]]:
    """``{grant id: (status, remaining micro-credits)}`` of the grants table."""
    found = re.findall(
        r'<tr data-grant="([^"]+)" data-status="([^"]+)" data-remaining="(\d+)">', html
    )
    return {grant_id: (status, int(left)) for grant_id, status, left in found}


def ledger_rows(html: str) -> list[tuple[str, str, int, int]]:
    """``(entry id, kind, amount, balance after)`` of a ledger table, in page order."""
    found = re.findall(
        r'<tr data-entry="([^"]+)" data-kind="(\w+)" data-amount="(-?\d+)" '
        r'data-balance-after="(-?\d+)">',
        html,
    )
    return [(entry_id, kind, int(amount), int(after)) for entry_id, kind, amount, after in found]


async def credit_audit(http: httpx2.AsyncClient) -> list[tuple[str, str]]:
    """``(action, actor)`` of the credit entries of the audit log, oldest first."""
    response = await http.get("/admin/v1/audit", params={"limit": 500}, headers=OPERATOR)
    assert response.status_code == 200, response.text
    items = reversed(response.json()["items"])
    return [(e["action"], e["actor"]) for e in items if e["action"].startswith("credits.")]


async def post_grant(http: httpx2.AsyncClient, **fields: str) -> httpx2.Response:
    """Post the account page's grant form with the page's CSRF token."""
    page = await http.get(ACCOUNT)
    assert page.status_code == 200, page.text
    form = {"amount": "", "expires_at": "", "priority": "0", "note": ""} | fields
    return await http.post(f"{ACCOUNT}/grants", data={"csrf": csrf_of(page.text), **form})


# Sessions, roles, CSRF -----------------------------------------------------------
@pytest.mark.parametrize("path", [f"{ACCOUNT}/credits/ledger", f"{ACCOUNT}/credits/ledger.csv"])
async def test_credit_pages_need_a_session(client: httpx2.AsyncClient, path: str) -> None:
    """Without a session the ledger and its CSV redirect (303) to the sign-in form."""
    response = await client.get(path)
    assert response.status_code == 303
    assert response.headers["location"] == "/dashboard/login"


async def test_a_read_session_sees_credits_without_forms_and_cannot_forge_one(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """A read session sees balance, grants and ledger but no grant or void form; a grant or
    void it posts with its own valid CSRF token is a 403 and changes nothing."""
    made = await credits.grant(ctx, "acme", to_micros(100))
    await token_signed_in(client, "auditor", "read")
    page = await client.get(ACCOUNT)
    assert page.status_code == 200
    assert balance_of(page.text) == to_micros(100)
    assert grant_rows(page.text) == {made.id: ("live", to_micros(100))}
    assert [row[1] for row in ledger_rows(page.text)] == ["grant"]
    assert not WRITE_FORM.search(page.text)
    assert not VOID_FORM.search(page.text)
    assert 'id="credits-read-only"' in page.text
    csrf = csrf_of(page.text)  # the sign-out form's
    for path, fields in (
        (f"{ACCOUNT}/grants", {"amount": "5"}),
        (f"{ACCOUNT}/grants/{made.id}/void", {}),
    ):
        response = await client.post(path, data={"csrf": csrf, **fields})
        assert response.status_code == 403, path
        assert "Read-only session" in response.text
    assert (await credits.balance(ctx, "acme")).balance == to_micros(100)
    assert await credit_audit(client) == [("credits.grant", "local")]


@pytest.mark.parametrize("csrf", [None, "forged"], ids=["missing", "wrong"])
async def test_credit_forms_need_the_csrf_token(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment, csrf: str | None
) -> None:
    """An admin's grant or void form without its CSRF token (or with another) is a 403
    and changes nothing."""
    made = await credits.grant(ctx, "acme", to_micros(100))
    await operator_signed_in(client)
    form: dict[str, str] = {} if csrf is None else {"csrf": csrf}
    for path, fields in (
        (f"{ACCOUNT}/grants", {"amount": "5"}),
        (f"{ACCOUNT}/grants/{made.id}/void", {}),
    ):
        response = await client.post(path, data={**form, **fields})
        assert response.status_code == 403, path
        assert "Form refused" in response.text
    found = await credits.balance(ctx, "acme")
    assert found.balance == to_micros(100)
    assert [g.voided_at for g, _ in found.grants] == [None]


# The account page ------------------------------------------------------------------
async def test_account_page_shows_balance_grants_and_ledger(
    client: httpx2.AsyncClient, ctx: Context, clock: FakeClock, deployment: Deployment
) -> None:
    """The Credits section shows the balance, every grant (amount, remaining, ISO expiry,
    priority, note, kind, state) and the ledger newest first, with the balance after each."""
    soon = clock.now() + timedelta(days=30)
    first = await credits.grant(ctx, "acme", to_micros(1000), soon, 0, "launch")
    clock.advance(minutes=1)
    second = await credits.grant(ctx, "acme", to_micros("2.5"), None, 7, "goodwill <b>")
    clock.advance(minutes=1)
    voided = await credits.grant(ctx, "acme", to_micros(40))
    clock.advance(minutes=1)
    await credits.void(ctx, "acme", voided.id)
    await operator_signed_in(client)
    page = await client.get(ACCOUNT)
    assert page.status_code == 200
    html = page.text
    assert balance_of(html) == to_micros("1002.5")
    assert ">1,002.5</strong> credits" in html
    assert grant_rows(html) == {
        voided.id: ("voided", 0),
        second.id: ("live", to_micros("2.5")),
        first.id: ("live", to_micros(1000)),
    }
    assert soon.strftime("%Y-%m-%d %H:%M:%S") in html  # ISO, UTC
    assert "goodwill &lt;b&gt;" in html  # a note is text, never markup
    assert ">never</td>" in html
    rows = ledger_rows(html)
    assert [kind for _, kind, _, _ in rows] == ["void", "grant", "grant", "grant"]
    assert rows[0][2:] == (-to_micros(40), to_micros("1002.5"))
    assert rows[-1][2:] == (to_micros(1000), to_micros(1000))
    assert {grant_id for grant_id, _ in re.findall(VOID_FORM, html)} == {first.id, second.id}
    assert 'id="whole-ledger"' not in html  # everything is shown already
    assert f'href="{ACCOUNT}/credits/ledger.csv"' in html
    # Wide tables scroll inside their card: the page never scrolls sideways at 390 px.
    assert re.search(r'<div class="scroll">\s*<table id="grants"', html)
    assert re.search(r'<div class="scroll">\s*<table class="ledger" id="ledger">', html)
    assert "<script>" not in html  # CSP: no inline script


async def test_an_account_without_credits_says_so(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """An account with no grant shows a zero balance, an empty ledger and the grant form."""
    await operator_signed_in(client)
    html = (await client.get(ACCOUNT)).text
    assert balance_of(html) == 0
    assert 'id="no-grants"' in html
    assert 'id="no-ledger"' in html
    assert 'id="grant-form"' in html


# Granting and voiding --------------------------------------------------------------
async def test_a_grant_through_the_form_moves_the_balance_and_is_audited(
    client: httpx2.AsyncClient, ctx: Context, clock: FakeClock, deployment: Deployment
) -> None:
    """The grant form gives the credits (expiry in UTC, priority, note), redirects to the
    page showing the new balance, and the audit log (and the page's Changes) names the
    session's token."""
    await operator_signed_in(client)
    expires = (clock.now() + timedelta(days=10)).strftime("%Y-%m-%dT%H:%M")
    response = await post_grant(
        client, amount="1234.000001", expires_at=expires, priority="-3", note="pilot"
    )
    assert response.status_code == 303, response.text
    assert response.headers["location"] == f"{ACCOUNT}?notice=granted#credits-h"
    page = await client.get(response.headers["location"])
    assert "The credits were granted." in page.text
    assert balance_of(page.text) == 1_234_000_001
    assert ">1,234.000001</strong>" in page.text
    [(made, left)] = (await credits.balance(ctx, "acme")).grants
    assert (made.amount, left, made.priority, made.note) == (
        1_234_000_001,
        1_234_000_001,
        -3,
        "pilot",
    )
    assert made.expires_at is not None
    assert made.expires_at.isoformat() == f"{expires}:00+00:00"
    assert await credit_audit(client) == [("credits.grant", "bootstrap")]
    changes = page.text.split('id="changes"', 1)[1]
    assert "<td>bootstrap</td>" in changes
    assert "<code>credits.grant</code>" in changes
    assert "account:acme" in changes


async def test_a_grant_form_sent_twice_grants_once(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """The grant form carries a once-key of its own: the same form posted twice (a double
    click, a resend) grants once and audits once; the next form the page shows has
    another key and grants anew."""
    await operator_signed_in(client)
    page = await client.get(ACCOUNT)
    found = re.search(r'name="once" value="([0-9a-f]{32})"', page.text)
    assert found is not None
    form = {"csrf": csrf_of(page.text), "once": found.group(1), "amount": "7", "priority": "0"}
    for _ in range(2):
        sent = await client.post(f"{ACCOUNT}/grants", data=form)
        assert sent.status_code == 303, sent.text
    assert balance_of((await client.get(ACCOUNT)).text) == 7_000_000
    assert await credit_audit(client) == [("credits.grant", "bootstrap")]
    again = await client.get(ACCOUNT)
    fresh = re.search(r'name="once" value="([0-9a-f]{32})"', again.text)
    assert fresh is not None
    assert fresh.group(1) != found.group(1)
    assert (await post_grant(client, amount="7", once=fresh.group(1))).status_code == 303
    assert len((await credits.balance(ctx, "acme")).grants) == 2


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"amount": "0"}, "The amount must be above 0"),
        ({"amount": "-5"}, "The amount must be above 0"),
        ({"amount": "1.0000001"}, "at most 6 decimal places"),
        ({"amount": "ten"}, "The amount must be a number"),
        ({"amount": "5", "expires_at": "tomorrow"}, "The expiry is a date and time"),
        ({"amount": "5", "expires_at": "2024-11-01T00:00"}, "must be in the future"),
        ({"amount": "5", "priority": "1001"}, "The priority is a whole number"),
        ({"amount": "5", "priority": "high"}, "The priority is a whole number"),
        ({"amount": "5", "note": "x" * 501}, "at most 500 characters"),
    ],
    ids=["zero", "negative", "decimals", "text", "bad-expiry", "past", "priority", "nan", "note"],
)
async def test_a_refused_grant_says_why_and_keeps_the_form(
    client: httpx2.AsyncClient,
    ctx: Context,
    deployment: Deployment,
    fields: dict[str, str],
    words: str,
) -> None:
    """A grant the form or the service (an expiry already past) refuses is a 400 page
    saying why, with what was entered; no credit is granted and nothing is audited."""
    await operator_signed_in(client)
    response = await post_grant(client, **fields)
    assert response.status_code == 400, response.text
    said = re.search(r'<p class="error" role="alert" id="grant-error">([^<]*)</p>', response.text)
    assert said is not None  # beside the form, not only at the top of a long page
    assert words in said.group(1)
    assert f'value="{fields["amount"]}"' in response.text
    assert (await credits.balance(ctx, "acme")).grants == []
    assert await credit_audit(client) == []


async def test_void_asks_first_then_empties_the_grant_and_is_audited(
    client: httpx2.AsyncClient, ctx: Context, clock: FakeClock, deployment: Deployment
) -> None:
    """Each live grant's void form asks for confirmation (naming the grant and what is left);
    voiding takes what is left out of the balance, adds a void entry, and is audited."""
    kept = await credits.grant(ctx, "acme", to_micros(10))
    gone = await credits.grant(ctx, "acme", to_micros(25), note="mistake")
    clock.advance(minutes=5)
    await operator_signed_in(client)
    page = await client.get(ACCOUNT)
    questions = dict(re.findall(VOID_FORM, page.text))
    assert questions[gone.id].startswith(f"Void grant {gone.id}? The 25 credits left")
    response = await client.post(
        f"{ACCOUNT}/grants/{gone.id}/void", data={"csrf": csrf_of(page.text)}
    )
    assert response.status_code == 303, response.text
    page = await client.get(response.headers["location"])
    assert "The grant was voided" in page.text
    assert balance_of(page.text) == to_micros(10)
    assert grant_rows(page.text) == {gone.id: ("voided", 0), kept.id: ("live", to_micros(10))}
    assert set(dict(re.findall(VOID_FORM, page.text))) == {kept.id}
    [newest, *_] = ledger_rows(page.text)
    assert newest[1:] == ("void", -to_micros(25), to_micros(10))
    assert await credit_audit(client) == [
        ("credits.grant", "local"),
        ("credits.grant", "local"),
        ("credits.void", "bootstrap"),
    ]


async def test_voiding_an_unknown_grant_is_a_404_page(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """A void of a grant the account does not have answers 404 and changes nothing."""
    await credits.grant(ctx, "acme", to_micros(10))
    await operator_signed_in(client)
    page = await client.get(ACCOUNT)
    response = await client.post(
        f"{ACCOUNT}/grants/grt_nope/void", data={"csrf": csrf_of(page.text)}
    )
    assert response.status_code == 404, response.text
    assert (await credits.balance(ctx, "acme")).balance == to_micros(10)


@pytest.mark.parametrize("path", ["/grants", "/grants/grt_x/void"])
async def test_credit_forms_of_an_unknown_account_are_404(
    client: httpx2.AsyncClient, deployment: Deployment, path: str
) -> None:
    """A grant or void form posted for an account that does not exist answers 404."""
    await operator_signed_in(client)
    page = await client.get(ACCOUNT)
    response = await client.post(
        f"/dashboard/accounts/nobody{path}", data={"csrf": csrf_of(page.text), "amount": "5"}
    )
    assert response.status_code == 404
    assert "No such account" in response.text


# The whole ledger and its CSV --------------------------------------------------------
async def test_the_whole_ledger_pages_by_cursor_and_downloads_as_csv(
    client: httpx2.AsyncClient, ctx: Context, clock: FakeClock, deployment: Deployment
) -> None:
    """With more than 50 entries the account page shows the latest 50 and links to the whole
    ledger, paged oldest first by cursor; the CSV holds every entry as the API renders it."""
    made = []
    for n in range(1, 56):
        made.append(await credits.grant(ctx, "acme", to_micros(n)))
        clock.advance(seconds=1)
    await operator_signed_in(client)
    html = (await client.get(ACCOUNT)).text
    rows = ledger_rows(html)
    assert len(rows) == 50
    assert rows[0][2:] == (to_micros(55), to_micros(sum(range(1, 56))))
    assert 'id="whole-ledger"' in html
    first = await client.get(f"{ACCOUNT}/credits/ledger")
    assert first.status_code == 200
    first_rows = ledger_rows(first.text)
    assert [amount for _, _, amount, _ in first_rows] == [to_micros(n) for n in range(1, 51)]
    later = re.search(r'href="([^"]+)" id="later-entries"', first.text)
    assert later is not None
    second = await client.get(later.group(1).replace("&amp;", "&"))
    assert second.status_code == 200
    assert [amount for _, _, amount, _ in ledger_rows(second.text)] == [
        to_micros(n) for n in range(51, 56)
    ]
    assert 'id="later-entries"' not in second.text
    download = await client.get(f"{ACCOUNT}/credits/ledger.csv")
    assert download.status_code == 200
    assert download.headers["content-type"] == "text/csv; charset=utf-8"
    assert download.headers["content-disposition"] == 'attachment; filename="ledger-acme.csv"'
    table = list(csv.DictReader(io.StringIO(download.text)))
    entries, _ = await credits.ledger_page(ctx, "acme", 100, None)
    items: list[dict[str, Any]] = [ledger_entry_view(entry) for entry in entries]
    assert len(table) == len(items) == 55
    for row, item in zip(table, items, strict=True):
        assert row == {name: "" if value is None else str(value) for name, value in item.items()}
    assert table[-1]["balance_after"] == str(sum(range(1, 56)))
    assert [row["grant_id"] for row in table] == [g.id for g in made]


async def test_a_cursor_not_of_the_ledger_reads_past_its_end(
    client: httpx2.AsyncClient, ctx: Context, deployment: Deployment
) -> None:
    """The whole ledger with a cursor that names none of its entries is an empty page (as
    the API's); a cursor longer than 200 characters is a 400, refused before any read."""
    await credits.grant(ctx, "acme", to_micros(1))
    await operator_signed_in(client)
    response = await client.get(f"{ACCOUNT}/credits/ledger", params={"cursor": "nope"})
    assert response.status_code == 200
    assert ledger_rows(response.text) == []
    assert 'id="first-entries"' in response.text
    response = await client.get(f"{ACCOUNT}/credits/ledger", params={"cursor": "x" * 201})
    assert response.status_code == 400


async def test_the_ledger_of_an_unknown_account_is_a_404_page(client: httpx2.AsyncClient) -> None:
    """The ledger and its CSV of an account that does not exist answer 404."""
    await operator_signed_in(client)
    for path in (
        "/dashboard/accounts/nobody/credits/ledger",
        "/dashboard/accounts/nobody/credits/ledger.csv",
    ):
        response = await client.get(path)
        assert response.status_code == 404, path


# The portal --------------------------------------------------------------------------
async def test_the_portal_shows_the_balance_and_the_grants_expiry(
    client: httpx2.AsyncClient, ctx: Context, clock: FakeClock, deployment: Deployment
) -> None:
    """The customer sees its balance and each live grant's remaining credits and expiry,
    first to expire first, never an operator's note or a voided grant."""
    soon = clock.now() + timedelta(days=3)
    await credits.grant(ctx, "acme", to_micros(500), None, 0, "internal: churn risk")
    await credits.grant(ctx, "acme", to_micros("0.25"), soon)
    voided = await credits.grant(ctx, "acme", to_micros(9))
    await credits.void(ctx, "acme", voided.id)
    signed = await sign_in(client, "portal", deployment.key)
    assert signed.status_code == 303, signed.text
    page = await client.get("/portal")
    assert page.status_code == 200
    assert balance_of(page.text) == to_micros("500.25")
    assert re.findall(r'<tr data-remaining="(\d+)">', page.text) == [
        str(to_micros("0.25")),
        str(to_micros(500)),
    ]
    assert soon.strftime("%Y-%m-%d %H:%M:%S") in page.text
    assert "churn risk" not in page.text
    assert voided.id not in page.text


async def test_the_portal_of_an_account_without_credits_has_no_credit_section(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """A customer without grants or a refill sees no Credits section."""
    signed = await sign_in(client, "portal", deployment.key)
    assert signed.status_code == 303, signed.text
    page = await client.get("/portal")
    assert page.status_code == 200
    assert 'id="credits-h"' not in page.text


async def test_the_portal_shows_a_plans_refill(
    client: httpx2.AsyncClient, clock: FakeClock, deployment: Deployment
) -> None:
    """On a plan that refills credits the customer sees the refill in words, and this
    window's refill grant with its expiry (a reset refill ends with its window)."""
    plan = {"id": "metered", "refill": {"amount": 100, "window": "month", "mode": "reset"}}
    response = await client.post("/admin/v1/plans", json=plan, headers=OPERATOR)
    assert response.status_code == 201, response.text
    response = await client.patch(
        "/admin/v1/accounts/acme", json={"plan": "metered"}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    signed = await sign_in(client, "portal", deployment.key)
    assert signed.status_code == 303, signed.text
    page = await client.get("/portal")
    assert page.status_code == 200
    assert balance_of(page.text) == to_micros(100)
    assert "credits are reset to 100 every month." in page.text
    assert re.findall(r'<tr data-remaining="(\d+)">', page.text) == [str(to_micros(100))]
    assert "2024-12-01 00:00:00" in page.text  # the window's end, in UTC
