"""The dashboard's audit page, in-process over HTTP: every change newest first, filters by
actor, target and since, paging, CSV and JSON downloads without secrets, read sessions."""

from __future__ import annotations

import csv
import io
import re

import httpx2
import pytest

from quotad.dashboard import audit_operator
from quotad.service.context import Context
from quotad.storage import Stores
from quotad.storage.memory import MemoryStore
from quotad.testing import FakeClock
from tests.conftest import OPERATOR, Deployment, make_settings, seed
from tests.test_dashboard import operator_signed_in
from tests.test_dashboard_webhooks import WRITE_FORM, token_signed_in

ROW = re.compile(r'<tr data-audit="([^"]+)">')


@pytest.fixture
def ctx(clock: FakeClock) -> Context:
    """The page reads through the service layer: a memory store is enough here."""
    return Context(Stores.of(MemoryStore()), make_settings("memory://"), clock)


async def api_entries(http: httpx2.AsyncClient, **params: str) -> list[dict[str, object]]:
    """The admin API's audit entries for ``params``, newest first (the page's reference)."""
    response = await http.get(
        "/admin/v1/audit", params={"limit": "200", **params}, headers=OPERATOR
    )
    assert response.status_code == 200, response.text
    items: list[dict[str, object]] = response.json()["items"]
    return items


async def test_the_audit_page_needs_a_session(client: httpx2.AsyncClient) -> None:
    """Without a session the page and its downloads redirect (303) to the sign-in form."""
    for path in ("/dashboard/audit", "/dashboard/audit.csv"):
        response = await client.get(path)
        assert response.status_code == 303, path
        assert response.headers["location"] == "/dashboard/login"


@pytest.mark.parametrize("role", ["admin", "read"])
async def test_every_change_is_listed_newest_first_for_both_roles(
    client: httpx2.AsyncClient, deployment: Deployment, role: str
) -> None:
    """Both roles see every entry, newest first, under the Audit nav link; no form writes."""
    del deployment
    if role == "admin":
        await operator_signed_in(client)
    else:
        await token_signed_in(client, "auditor", "read")
    page = await client.get("/dashboard/audit")
    assert page.status_code == 200
    assert '<a href="/dashboard/audit" aria-current="page">Audit</a>' in page.text
    expected = [str(e["id"]) for e in await api_entries(client)]
    assert ROW.findall(page.text) == expected
    assert "account.create" in page.text
    assert "key.create" in page.text
    assert not WRITE_FORM.search(page.text)


async def test_filters_by_actor_target_and_since(
    client: httpx2.AsyncClient, clock: FakeClock, deployment: Deployment
) -> None:
    """Each filter narrows the entries as the admin API's does, and the form keeps it."""
    await operator_signed_in(client)
    target = f"key:{deployment.key_id}"
    page = (await client.get("/dashboard/audit", params={"target": target})).text
    assert ROW.findall(page) == [str(e["id"]) for e in await api_entries(client, target=target)]
    assert len(ROW.findall(page)) == 1
    assert f'value="{target}"' in page
    made = await client.post(
        "/admin/v1/tokens", json={"name": "ops", "role": "admin"}, headers=OPERATOR
    )
    ops = {"Authorization": f"Bearer {made.json()['token']}"}
    body = {"id": "beta", "name": "Beta", "plan": "plan-acme"}
    assert (await client.post("/admin/v1/accounts", json=body, headers=ops)).status_code == 201
    by_ops = (await client.get("/dashboard/audit", params={"actor": "ops"})).text
    [entry] = await api_entries(client, actor="ops")
    assert ROW.findall(by_ops) == [entry["id"]]
    assert "account:beta" in by_ops
    by_bootstrap = (await client.get("/dashboard/audit", params={"actor": "bootstrap"})).text
    assert entry["id"] not in ROW.findall(by_bootstrap)
    assert len(ROW.findall(by_bootstrap)) == len(await api_entries(client, actor="bootstrap"))
    clock.advance(days=1)
    await seed(client, "gamma")
    await operator_signed_in(client)  # the session of yesterday has expired
    today = (await client.get("/dashboard/audit", params={"since": "2024-11-08"})).text
    gamma = await api_entries(client, since="2024-11-08T00:00:00Z")
    assert ROW.findall(today) == [str(e["id"]) for e in gamma]
    assert sorted(str(e["action"]) for e in gamma) == [
        "account.create",
        "key.create",
        "plan.create",
    ]
    exact = await client.get("/dashboard/audit", params={"since": "2024-11-08T00:00:00+00:00"})
    assert ROW.findall(exact.text) == ROW.findall(today)


@pytest.mark.parametrize(
    ("since", "words"),
    [("08/11/2024", "not a date"), ("2024-11-08T10:00:00", "needs its UTC offset")],
    ids=["format", "no-offset"],
)
async def test_a_bad_since_is_a_400_page_saying_why(
    client: httpx2.AsyncClient, deployment: Deployment, since: str, words: str
) -> None:
    """A ``since`` that is not an ISO date or time with an offset is a 400 page naming it."""
    del deployment
    await operator_signed_in(client)
    response = await client.get("/dashboard/audit", params={"since": since})
    assert response.status_code == 400
    assert words in response.text
    assert ROW.findall(response.text) == []


async def test_pages_of_entries_follow_one_another_without_overlap(
    client: httpx2.AsyncClient, ctx: Context, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past a page's worth, an "Older changes" link shows the rest; together they are all."""
    monkeypatch.setattr(audit_operator, "PAGE_ROWS", 3)
    await seed(client, "acme")
    await seed(client, "beta")
    await operator_signed_in(client)
    everything = [str(e["id"]) for e in await api_entries(client)]
    assert len(everything) > 6
    seen: list[str] = []
    path: str | None = "/dashboard/audit"
    while path is not None:
        page = (await client.get(path)).text
        rows = ROW.findall(page)
        assert 1 <= len(rows) <= 3
        seen += rows
        older = re.search(r'<a href="([^"]+)" id="audit-older"', page)
        path = older.group(1).replace("&amp;", "&") if older else None
    assert seen == everything


async def test_downloads_hold_the_entries_shown_and_no_secret(
    client: httpx2.AsyncClient, deployment: Deployment
) -> None:
    """CSV and JSON hold exactly the filtered entries, with before and after, never a key."""
    await operator_signed_in(client)
    target = f"key:{deployment.key_id}"
    page = (await client.get("/dashboard/audit", params={"target": target})).text
    assert f'href="/dashboard/audit.csv?target=key%3A{deployment.key_id}"' in page
    [expected] = await api_entries(client, target=target)
    as_json = await client.get("/dashboard/audit.json", params={"target": target})
    assert as_json.status_code == 200
    assert as_json.headers["content-type"] == "application/json"
    assert as_json.headers["content-disposition"].startswith('attachment; filename="audit-')
    assert as_json.json()["items"] == [expected]
    as_csv = await client.get("/dashboard/audit", params={"target": target, "format": "csv"})
    assert as_csv.status_code == 200
    assert as_csv.headers["content-type"].startswith("text/csv")
    [row] = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert (row["id"], row["action"], row["target"]) == (expected["id"], "key.create", target)
    assert '"hint"' in row["after"]
    everything = await client.get("/dashboard/audit.json")
    assert len(everything.json()["items"]) == len(await api_entries(client))
    for body in (as_json.text, as_csv.text, everything.text):
        assert deployment.key not in body
        assert "digest" not in body
    assert (await client.get("/dashboard/audit", params={"format": "xml"})).status_code == 400
