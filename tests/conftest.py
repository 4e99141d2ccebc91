"""Shared fixtures: one real PostgreSQL with pgvector per test run (embedded, or TEST_DATABASE_URL)."""

from __future__ import annotations

import asyncio
import os
import sys
import types
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from helpers import restore_migration_vector_index, test_settings, without_fsync
from psycopg.conninfo import make_conninfo

from sony_rag.database import Database
from sony_rag.migrate import migrate

TEST_DATABASE = "sony_rag_test"

# Whole folders and files whose tests start servers, subprocesses or large batches: `pytest -m "not slow"` skips them
# for a quick loop; CI runs everything. A slow test elsewhere carries @pytest.mark.slow itself (the real embedding
# model, a subprocess).
SLOW_PLACES = ("tests/reliability/", "tests/replicas/", "test_examples.py", "test_cli.py", "test_docs.py")


# Whole folders and files whose tests need no PostgreSQL at all: pure logic, a model, or connections to addresses
# where nothing listens. CI's first pass runs them with everything else; its PgBouncer and pgvector 0.8 passes, which
# are there to run the database tests against another server, leave them out (`-m "not no_database"`). Checked:
# asking for a server's fixture here is a collection error, and starting the embedded server fails the test.
NO_DATABASE_PLACES = ("tests/unit/", "tests/reliability/test_secrets.py")
SERVER_FIXTURES = frozenset({"server_url", "database_url", "shared_db", "db", "cluster", "fault_server"})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Mark the tests under SLOW_PLACES as slow and those under NO_DATABASE_PLACES as no_database."""
    for item in items:
        where = item.nodeid.replace("\\", "/")
        if any(place in where for place in SLOW_PLACES):
            item.add_marker(pytest.mark.slow)
        if any(place in where for place in NO_DATABASE_PLACES):
            servers = sorted(SERVER_FIXTURES.intersection(getattr(item, "fixturenames", ())))
            if servers:
                raise pytest.UsageError(f"{item.nodeid} uses {', '.join(servers)} but is under NO_DATABASE_PLACES "
                                        "(tests/conftest.py): CI's second and third passes would not run it")
            item.add_marker(pytest.mark.no_database)


class _NoEmbeddedServer(types.ModuleType):
    """Stands in for the pgserver module during a no_database test: using it fails the test."""

    def __getattr__(self, name: str) -> Any:
        if name.startswith("__"):  # what the import machinery and inspect.getmodule look up on every module
            raise AttributeError(name)
        pytest.fail(f"a no_database test (NO_DATABASE_PLACES in tests/conftest.py) used pgserver.{name}: "
                    "move it out, or CI's second and third passes would not run it")


@pytest.fixture(autouse=True)
def _no_embedded_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> None:
    """Make a no_database test fail if it starts an embedded server (sony_rag imports pgserver when it does)."""
    if request.node.get_closest_marker("no_database") is not None:
        monkeypatch.setitem(sys.modules, "pgserver", _NoEmbeddedServer("pgserver"))


def _fresh_database(server_url: str, name: str) -> str:
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    return make_conninfo(server_url, dbname=name)


@pytest.fixture(scope="session")
def server_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return a URL of the server's maintenance database: TEST_DATABASE_URL, else a new embedded server."""
    given = os.environ.get("TEST_DATABASE_URL")
    if given:
        yield given
        return
    import pgserver

    server = pgserver.get_server(Path(tmp_path_factory.mktemp("pgdata")), cleanup_mode="delete")
    without_fsync(server.get_uri())
    yield server.get_uri()


@pytest.fixture(scope="session")
def database_url(server_url: str) -> str:
    """Return the URL of a migrated database for this test run."""
    # A given test database is used as it is: its server may not allow CREATE DATABASE.
    url = server_url if os.environ.get("TEST_DATABASE_URL") else _fresh_database(server_url, TEST_DATABASE)
    with Database(url, settings=test_settings()) as db:
        migrate(db)
    return url


@pytest.fixture(params=["sync", "async"])
def mode(request: pytest.FixtureRequest) -> str:
    """Run a test once through the sync API ("sync") and once through its async twin ("async")."""
    return str(request.param)


@pytest.fixture
def call(mode: str) -> Callable[..., Any]:
    """Return a caller that runs a method by name through the sync API, or its ``a``-prefixed async twin."""

    def invoke(target: Any, method: str, *args: Any, **kwargs: Any) -> Any:
        if mode == "sync":
            return getattr(target, method)(*args, **kwargs)
        return asyncio.run(getattr(target, "a" + method)(*args, **kwargs))

    return invoke


@pytest.fixture(scope="session")
def shared_db(database_url: str) -> Iterator[Database]:
    """Return one Database for the whole run (its async pool follows each test's event loop)."""
    db = Database(database_url, settings=test_settings())
    yield db
    db.close()


@pytest.fixture
def db(shared_db: Database) -> Iterator[Database]:
    """Return the shared Database with empty tables, emptied again after the test."""
    _truncate(shared_db)
    yield shared_db
    _truncate(shared_db)


# The tables `db` empties before and after each test: these and, as TRUNCATE ... CASCADE would, every table whose
# foreign key reaches them. Each is emptied only when it is not already as a TRUNCATE leaves it (no file pages,
# planner statistics unset): most tests write to one or two tables, and the teardown of the test before has
# emptied everything, so re-truncating untouched tables (new files for each table and index, ~50 ms with fsync
# each time) changed nothing but the run's length.
EMPTIED_TABLES = ("chat_sessions", "chat_messages", "document_embeddings", "user_text_selections")
_NOT_FRESHLY_TRUNCATED = """
WITH RECURSIVE emptied(oid) AS (
    SELECT unnest(%s::regclass[])::oid
    UNION
    SELECT con.conrelid FROM pg_constraint AS con JOIN emptied ON con.confrelid = emptied.oid WHERE con.contype = 'f'
)
SELECT c.oid::regclass::text FROM emptied JOIN pg_class AS c ON c.oid = emptied.oid
WHERE pg_relation_size(c.oid) > 0 OR c.reltuples <> -1 OR c.relpages <> 0 OR c.relallvisible <> 0
ORDER BY 1
"""


def _truncate(db: Database) -> None:
    with db.pool().connection() as conn:
        written = [str(name) for (name,) in conn.execute(_NOT_FRESHLY_TRUNCATED, (list(EMPTIED_TABLES),))]
        if written:
            conn.execute(f"TRUNCATE {', '.join(written)} CASCADE")
    restore_migration_vector_index(db)
