"""A PostgreSQL URL naming a database that does not exist: the error says which and how to create it."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg
import pytest
from psycopg import sql

from quotad.errors import StorageError
from quotad.storage.sql import SqlStore
from tests.servers import POSTGRES_URL, START_POSTGRES, unavailable

pytestmark = pytest.mark.postgresql

SERVER = POSTGRES_URL.split("?", 1)[0].rpartition("/")[0]  # postgresql://postgres@127.0.0.1:5432
PASSWORD = "s3cret-never-shown"


def with_password(url: str) -> str:
    """``url`` with a password for its user (trust auth ignores it)."""
    return url.replace("postgres@", f"postgres:{PASSWORD}@", 1)


@pytest.fixture
def admin() -> Iterator[psycopg.Connection]:
    """An autocommit connection to the server's ``postgres`` database."""
    try:
        conn = psycopg.connect(f"{SERVER}/postgres", autocommit=True, connect_timeout=3)
    except psycopg.OperationalError:
        unavailable(f"PostgreSQL is not reachable at {SERVER}: {START_POSTGRES}")
    with conn:
        yield conn


def check_note(note: str, name: str) -> None:
    """The note names the database, shows the URL masked and gives the createdb line."""
    assert f'the PostgreSQL database "{name}" does not exist' in note
    assert f"postgresql://postgres:***@127.0.0.1:5432/{name}" in note
    assert f"create it with: createdb -h 127.0.0.1 -p 5432 -U postgres {name}" in note
    assert PASSWORD not in note
    assert "could not complete" not in note


async def test_opening_a_store_on_a_missing_database_says_which_and_how_to_create_it(
    admin: psycopg.Connection,
) -> None:
    """Opening names the missing database, masks the password and prints the createdb line."""
    name = f"quotad_missing_{uuid.uuid4().hex[:12]}"
    store = SqlStore(with_password(f"{SERVER}/{name}?connect_timeout=3"))
    with pytest.raises(StorageError) as caught:
        await store.open()
    await store.close()
    check_note(caught.value.note, name)
    assert PASSWORD not in str(caught.value)
    assert admin.execute("SELECT 1 FROM pg_database WHERE datname = %s", [name]).fetchone() is None


async def test_a_read_after_the_database_was_dropped_says_which_is_missing(
    admin: psycopg.Connection,
) -> None:
    """A read on a store whose database went away names it, instead of a generic failure."""
    name = f"quotad_dropped_{uuid.uuid4().hex[:12]}"
    admin.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
    store = SqlStore(with_password(f"{SERVER}/{name}"))
    try:
        await store.open()
        await store.ping()
        admin.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(sql.Identifier(name)))
        with pytest.raises(StorageError) as caught:
            await store.ping()
        check_note(caught.value.note, name)
    finally:
        await store.close()
        admin.execute(
            sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(sql.Identifier(name))
        )


@pytest.mark.parametrize("command", [("migrate",), ("token", "reset"), ("services", "list")])
def test_the_cli_reports_a_missing_database_in_one_line(
    admin: psycopg.Connection, command: tuple[str, ...]
) -> None:
    """A CLI command on a missing database exits 1 with the clear note, no traceback, no password."""
    from typer.testing import CliRunner

    from quotad.cli import app

    name = f"quotad_missing_{uuid.uuid4().hex[:8]}"
    result = CliRunner().invoke(app, [*command, "--store", with_password(f"{SERVER}/{name}")])
    assert result.exit_code == 1, result.output
    check_note(result.output.replace("\n", " "), name)
    assert "Traceback" not in result.output
    assert PASSWORD not in result.output
