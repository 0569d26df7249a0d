"""``quotad.embedded``: provisioning a store from Python, and examples that use only public names."""

from __future__ import annotations

import ast
import importlib
import importlib.util
import re
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import httpx2
import pytest

from quotad.embedded import (
    Conflict,
    EmbeddedStore,
    NotFound,
    ValidationFailed,
    open_store,
    uvicorn_options,
)
from tests.conftest import store_url
from tests.processes import ROOT, running

PUBLIC_MODULES = frozenset({"quotad", "quotad.asgi", "quotad.embedded", "quotad.sdk"})
EXAMPLES = sorted((ROOT / "examples").glob("*.py"))


@pytest.fixture
async def store(store_kind: str, tmp_path: Path) -> AsyncIterator[EmbeddedStore]:
    """An open, empty store of each kind, through ``open_store``."""
    with store_url(store_kind, tmp_path) as url:
        async with open_store(url) as opened:
            yield opened


async def provision(store: EmbeddedStore) -> str:
    """insights (3 a day) on plan p for account acme; a new key's secret."""
    await store.create_service("insights", "Insights API")
    await store.create_plan("p", {"insights": 3}, {"cohort.max_count": (10, "Cohorts allowed")})
    await store.create_account("acme", "Acme Inc.", plan="p", timezone="Europe/Paris")
    return (await store.create_key("acme", "k")).secret


async def test_a_provisioned_key_is_metered_on_every_store(store: EmbeddedStore) -> None:
    """Service, plan, account and key made with quotad.embedded: the key consumes its quota."""
    secret = await provision(store)
    backend = store.backend()
    verdicts = [await backend.consume(secret, "insights", 1) for _ in range(4)]
    assert [(v.valid, v.used, v.total) for v in verdicts[:3]] == [
        (True, 1, 3),
        (True, 2, 3),
        (True, 3, 3),
    ]
    assert (verdicts[3].valid, verdicts[3].code) == (False, "QUOTA_EXCEEDED")
    assert verdicts[0].account_id == "acme"


async def test_exist_ok_returns_the_stored_record_else_conflict(store: EmbeddedStore) -> None:
    """A second create raises Conflict; with exist_ok=True it returns what is stored."""
    await provision(store)
    with pytest.raises(Conflict):
        await store.create_service("insights")
    with pytest.raises(Conflict):
        await store.create_plan("p", {"insights": 9})
    with pytest.raises(Conflict):
        await store.create_account("acme", "Other", plan="p")
    service = await store.create_service("insights", "ignored", exist_ok=True)
    plan = await store.create_plan("p", {"insights": 9}, exist_ok=True)
    account = await store.create_account("acme", "Other", plan="p", exist_ok=True)
    assert service.description == "Insights API"
    assert plan.quotas["insights"].total == 3
    assert [(item.name, item.description, item.limit) for item in plan.limits] == [
        ("cohort.max_count", "Cohorts allowed", 10)
    ]
    assert (account.name, account.timezone) == ("Acme Inc.", "Europe/Paris")


@pytest.fixture
async def memory() -> AsyncIterator[EmbeddedStore]:
    """An open memory store, through ``open_store``."""
    async with open_store("memory://") as opened:
        yield opened


async def test_bad_input_is_refused_as_the_admin_api_refuses_it(memory: EmbeddedStore) -> None:
    """Invalid names, unknown services and plans are ValidationFailed; a missing account NotFound."""
    await provision(memory)
    with pytest.raises(ValidationFailed) as bad_name:
        await memory.create_service("not a name")
    assert bad_name.value.validation_errors[0].path == "/name"
    with pytest.raises(ValidationFailed, match="not valid"):
        await memory.create_plan("q", {"nope": 1})
    with pytest.raises(ValidationFailed) as negative:
        await memory.create_plan("q", {"insights": -1})
    assert negative.value.validation_errors[0].path == "/quotas/insights/total"
    with pytest.raises(ValidationFailed, match="does not exist"):
        await memory.create_account("b", "B", plan="nope")
    with pytest.raises(ValidationFailed):
        await memory.create_account("c", "C", plan="p", timezone="Mars/Olympus")
    with pytest.raises(ValidationFailed):
        await memory.create_key("acme", scopes=["everything"])
    with pytest.raises(NotFound):
        await memory.create_key("nobody")


async def test_a_new_key_is_returned_once_with_its_hint(memory: EmbeddedStore) -> None:
    """create_key returns the secret and a hint of its last four characters, scopes kept."""
    await provision(memory)
    key = await memory.create_key("acme", "read-only", scopes=["usage:read"])
    assert key.secret.startswith("qd_")
    assert key.hint == f"qd_…{key.secret[-4:]}"
    assert (key.account_id, key.name, key.scopes) == ("acme", "read-only", ("usage:read",))
    refused = await memory.backend().consume(key.secret, "insights", 1)
    assert not refused.valid


def test_uvicorn_options_believe_forwarded_headers_only_from_trusted_proxies(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Without QUOTAD_TRUSTED_PROXIES no X-Forwarded-For is read; with it, only theirs."""
    monkeypatch.delenv("QUOTAD_TRUSTED_PROXIES", raising=False)
    assert uvicorn_options() == {"proxy_headers": False}
    monkeypatch.setenv("QUOTAD_TRUSTED_PROXIES", "10.0.0.5")
    assert uvicorn_options() == {"proxy_headers": True, "forwarded_allow_ips": ["10.0.0.5"]}


def quotad_imports(path: Path) -> set[str]:
    """The quotad modules a file imports (``from quotad.x import y`` counts ``quotad.x``)."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.split(".")[0] == "quotad"}
        elif isinstance(node, ast.ImportFrom) and (node.module or "").split(".")[0] == "quotad":
            assert node.module is not None
            found.add(node.module)
            package = importlib.import_module(node.module)
            for alias in node.names:  # ``from quotad import demo`` imports quotad.demo
                submodule = f"{node.module}.{alias.name}"
                if hasattr(package, "__path__") and importlib.util.find_spec(submodule):
                    found.add(submodule)
    return found


@pytest.mark.parametrize("example", EXAMPLES, ids=lambda path: path.name)
def test_examples_import_only_public_modules(example: Path) -> None:
    """Every example imports quotad only through quotad, quotad.asgi, quotad.embedded, quotad.sdk."""
    used = quotad_imports(example)
    assert used <= PUBLIC_MODULES, sorted(used - PUBLIC_MODULES)


def test_the_public_modules_import_and_export_what_they_document() -> None:
    """Each public module imports and every name of its __all__ exists."""
    for name in sorted(PUBLIC_MODULES - {"quotad"}):
        module = importlib.import_module(name)
        missing = [item for item in module.__all__ if not hasattr(module, item)]
        assert missing == [], (name, missing)


@pytest.mark.slow
def test_the_fastapi_example_provisions_and_serves_twice_on_one_store(tmp_path: Path) -> None:
    """examples/fastapi_app.py makes its account once and a key each start; the key works."""
    db = f"sqlite:///{tmp_path / 'example.db'}"
    argv = [sys.executable, str(ROOT / "examples" / "fastapi_app.py")]
    keys = []
    for run in range(2):
        with running(
            argv, tmp_path, "example", "/", QUOTAD_STORE_URL=db, PYTHONUNBUFFERED="1"
        ) as app:
            [key] = re.findall(r"new API key of account acme: (qd_\w+)", app.output())
            keys.append(key)
            answer = httpx2.get(f"{app.base}/insights/ai", headers={"x-api-key": key}, timeout=10)
            docs = httpx2.get(f"{app.base}/openapi.json", timeout=10)
            missing = httpx2.get(f"{app.base}/nowhere", headers={"x-api-key": key}, timeout=10)
        assert (answer.status_code, answer.headers["x-ratelimit-limit"]) == (200, "250")
        assert docs.status_code == 200
        assert "x-ratelimit-remaining" not in docs.headers
        left = str(249 - run)  # one account, one quota, whichever key
        assert answer.headers["x-ratelimit-remaining"] == left
        assert (missing.status_code, missing.headers["x-ratelimit-remaining"]) == (404, left)
    assert keys[0] != keys[1]


async def test_open_store_defaults_to_quotad_store_url(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without a URL, open_store opens QUOTAD_STORE_URL (and creates the SQLite schema)."""
    url = f"sqlite:///{tmp_path / 'env.db'}"
    monkeypatch.setenv("QUOTAD_STORE_URL", url)
    async with open_store() as store:
        assert store.url == url
        await store.create_service("insights")
    async with open_store(url) as again:
        assert (await again.create_service("insights", exist_ok=True)).name == "insights"
