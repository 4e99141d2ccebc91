"""The migration runner on fresh databases: applies every file once, records checksums, is idempotent and
safe to run twice at once, refuses edited files, and ``sony-rag migrate --test`` reports a damaged schema check by
check. ``python -m sony_rag.migrate`` is the same command: the subprocess tests run it under that name."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
from helpers import test_settings
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from sony_rag.cli import EXIT_FAILED
from sony_rag.cli import main as cli_main
from sony_rag.database import Database
from sony_rag.errors import ChecksumMismatchError, MigrationError
from sony_rag.migrate import applied_migrations, available_migrations, migrate
from sony_rag.schema_check import check_database

pytestmark = pytest.mark.skipif(
    bool(os.environ.get("TEST_DATABASE_URL")),
    reason="creates databases: the server given by TEST_DATABASE_URL may not allow CREATE DATABASE",
)

ALL_VERSIONS = [m.version for m in available_migrations()]


@pytest.fixture
def fresh_url(server_url: str) -> Iterator[str]:
    """Return the URL of a new, empty database on the test server; dropped afterwards."""
    name = f"sony_rag_migrations_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield make_conninfo(server_url, dbname=name)
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def sql(url: str, statement: str, params: tuple[object, ...] = ()) -> list[tuple[object, ...]]:
    """Run one statement on ``url`` (autocommit) and return its rows."""
    with psycopg.connect(url, autocommit=True) as conn:
        cursor = conn.execute(statement.encode(), params)
        return cursor.fetchall() if cursor.description else []


def recorded(url: str) -> list[tuple[object, ...]]:
    """Return (version, name, checksum) of every recorded migration, in order."""
    return sql(url, "SELECT version, name, checksum FROM sony_rag_migrations ORDER BY version")


def main(arguments: list[str]) -> int:
    """Run ``sony-rag migrate`` with ``arguments`` in this process and return its exit code."""
    return cli_main(["migrate", *arguments])


def test_there_are_numbered_migrations_starting_with_the_documented_schema() -> None:
    migrations = available_migrations()
    assert [m.name for m in migrations[:2]] == ["001_initial_schema", "002_ordering_and_document_ids"]
    assert sorted(ALL_VERSIONS) == ALL_VERSIONS and len(set(ALL_VERSIONS)) == len(ALL_VERSIONS)
    assert all(len(m.checksum) == 64 for m in migrations)
    assert "CREATE EXTENSION IF NOT EXISTS vector" in migrations[0].sql_text


def test_migrate_applies_every_file_and_records_its_checksum(fresh_url: str) -> None:
    lines: list[str] = []
    with Database(fresh_url, settings=test_settings()) as db:
        applied = migrate(db, log=lines.append)
    assert applied == [m.name for m in available_migrations()]
    assert lines == [f"applied {name}" for name in applied]
    assert recorded(fresh_url) == [(m.version, m.name, m.checksum) for m in available_migrations()]
    tables = {row[0] for row in sql(fresh_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert {"chat_sessions", "chat_messages", "document_embeddings", "user_text_selections",
            "sony_rag_migrations"} <= tables
    assert sql(fresh_url, "SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == [(1,)]
    # 001 and 002 both took effect
    assert sql(fresh_url, "SELECT count(*) FROM information_schema.columns "
                          "WHERE table_name = 'chat_messages' AND column_name = 'seq'") == [(1,)]


def test_second_run_is_a_no_op(fresh_url: str) -> None:
    with Database(fresh_url, settings=test_settings()) as db:
        migrate(db)
        before = sql(fresh_url, "SELECT version, applied_at FROM sony_rag_migrations ORDER BY version")
        lines: list[str] = []
        assert migrate(db, log=lines.append) == []
        assert lines == []
    assert sql(fresh_url, "SELECT version, applied_at FROM sony_rag_migrations ORDER BY version") == before


def test_the_pools_see_the_vector_type_after_migrating(fresh_url: str) -> None:
    with Database(fresh_url, settings=test_settings()) as db:
        with db.pool().connection() as conn:  # opened before the extension exists
            conn.execute("SELECT 1")
        migrate(db)
        with db.pool().connection() as conn:
            row = conn.execute("SELECT '[1,2,3]'::vector").fetchone()
    assert row is not None
    assert list(row[0].to_numpy() if hasattr(row[0], "to_numpy") else row[0]) == [1.0, 2.0, 3.0]


def test_two_concurrent_runners_apply_everything_exactly_once(fresh_url: str) -> None:
    runners = 2
    barrier = threading.Barrier(runners)
    results: list[list[str]] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with Database(fresh_url, settings=test_settings()) as db:
                barrier.wait(timeout=10)
                results.append(migrate(db))
        except BaseException as error:  # reported by the assertion below
            errors.append(error)

    threads = [threading.Thread(target=run) for _ in range(runners)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert errors == []
    assert len(results) == runners
    names = [name for result in results for name in result]
    assert sorted(names) == [m.name for m in available_migrations()]  # each applied by exactly one runner
    assert [row[0] for row in recorded(fresh_url)] == ALL_VERSIONS


@pytest.mark.slow  # subprocesses
def test_two_concurrent_processes_apply_everything_exactly_once(fresh_url: str) -> None:
    command = [sys.executable, "-m", "sony_rag.migrate", "--database-url", fresh_url]
    processes = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for _ in range(2)]
    outputs = [process.communicate(timeout=120) for process in processes]
    for process, (out, err) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, out + err
    applied = [line for out, _ in outputs for line in out.splitlines() if line.startswith("applied ")]
    assert sorted(applied) == [f"applied {m.name}" for m in available_migrations()]
    assert [row[0] for row in recorded(fresh_url)] == ALL_VERSIONS


def test_a_changed_checksum_is_refused_and_nothing_is_applied(fresh_url: str) -> None:
    with Database(fresh_url, settings=test_settings()) as db:
        migrate(db)
    first, last = available_migrations()[0], available_migrations()[-1]
    # Pretend the last file is still pending and the first one was edited after it was applied.
    sql(fresh_url, "DELETE FROM sony_rag_migrations WHERE version = %s", (last.version,))
    sql(fresh_url, "UPDATE sony_rag_migrations SET checksum = %s WHERE version = %s", ("0" * 64, first.version))

    with Database(fresh_url, settings=test_settings()) as db, pytest.raises(ChecksumMismatchError) as raised:
        migrate(db)
    message = str(raised.value)
    assert first.name in message
    assert "changed after it was applied" in message
    assert "new migration" in message  # says what to do
    assert isinstance(raised.value, MigrationError)
    # Refused before applying anything: the pending file is still unrecorded (re-running it would also fail).
    assert [row[0] for row in recorded(fresh_url)] == ALL_VERSIONS[:-1]


def test_a_changed_checksum_makes_the_command_exit_1(fresh_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    with Database(fresh_url, settings=test_settings()) as db:
        migrate(db)
    sql(fresh_url, "UPDATE sony_rag_migrations SET checksum = 'edited' WHERE version = %s", (ALL_VERSIONS[0],))
    # An inconsistent migration history is exit 1 (docs/cli.md, "Exit codes"), like a failed check.
    assert main(["--test", "--database-url", fresh_url]) == EXIT_FAILED == 1
    assert "changed after it was applied" in capsys.readouterr().err


def test_a_failing_migration_is_rolled_back_whole(fresh_url: str) -> None:
    # A table that 001 creates already exists with another shape: 001 fails and leaves nothing behind.
    sql(fresh_url, "CREATE TABLE chat_messages (message_id integer)")
    with Database(fresh_url, settings=test_settings()) as db, pytest.raises(MigrationError, match="001"):
        migrate(db)
    tables = {row[0] for row in sql(fresh_url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public'")}
    assert "chat_sessions" not in tables and "document_embeddings" not in tables
    assert sql(fresh_url, "SELECT count(*) FROM pg_extension WHERE extname = 'vector'") == [(0,)]
    with psycopg.connect(fresh_url) as conn:
        assert applied_migrations(conn) == {}


# -- --test ------------------------------------------------------------------------------------------------


def test_migrate_test_on_a_good_database_passes_every_check(fresh_url: str,
                                                            capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--test", "--database-url", fresh_url]) == 0
    out = capsys.readouterr().out
    checks = [line for line in out.splitlines() if line.startswith(("PASS", "FAIL"))]
    assert checks and all(line.startswith("PASS") for line in checks), out
    for expected in ("extension vector", "table chat_messages columns", "table document_embeddings indexes",
                     "table chat_messages constraints", "table chat_sessions triggers",
                     "round trip: vector search", "round trip: cascade delete", "round trip: rolled back"):
        assert any(expected in line for line in checks), expected
    assert f"{len(checks)} passed, 0 failed" in out
    # The round trip was rolled back.
    assert sql(fresh_url, "SELECT (SELECT count(*) FROM chat_sessions) + (SELECT count(*) FROM chat_messages)"
                          " + (SELECT count(*) FROM document_embeddings)") == [(0,)]
    # A second run finds nothing to apply and still passes.
    assert main(["--test", "--database-url", fresh_url]) == 0
    assert "up to date" in capsys.readouterr().out


DAMAGE = [
    ("DROP INDEX idx_chat_messages_role", "table chat_messages indexes", "idx_chat_messages_role"),
    ("DROP INDEX idx_document_embeddings_vector", "table document_embeddings indexes",
     "idx_document_embeddings_vector"),
    ("DROP INDEX idx_document_embeddings_vector; CREATE INDEX idx_document_embeddings_vector ON "
     "document_embeddings USING ivfflat (embedding vector_l2_ops) WITH (lists = 100)",
     "table document_embeddings indexes", "cosine"),
    ("DROP TRIGGER update_chat_sessions_updated_at ON chat_sessions", "table chat_sessions triggers",
     "missing: update_chat_sessions_updated_at"),
    ("ALTER TABLE chat_messages ALTER COLUMN role TYPE TEXT", "table chat_messages columns", "column role is text"),
    ("ALTER TABLE document_embeddings ALTER COLUMN content_chunk DROP NOT NULL",
     "table document_embeddings columns", "content_chunk"),
    ("ALTER TABLE user_text_selections DROP COLUMN page_url", "table user_text_selections columns",
     "missing: column page_url"),
    ("ALTER TABLE chat_messages DROP CONSTRAINT chat_messages_role_check", "table chat_messages constraints",
     "chat_messages_role_check"),
    ("ALTER TABLE user_text_selections DROP CONSTRAINT user_text_selections_session_id_fkey, ADD CONSTRAINT "
     "user_text_selections_session_id_fkey FOREIGN KEY (session_id) REFERENCES chat_sessions (session_id)",
     "table user_text_selections constraints", "expected FOREIGN KEY (session_id) REFERENCES "
     "chat_sessions(session_id) ON DELETE CASCADE"),
    ("ALTER TABLE chat_sessions ALTER COLUMN metadata DROP DEFAULT", "table chat_sessions columns",
     "column metadata default is None, expected '{}'::jsonb"),
    ("ALTER TABLE chat_messages ALTER COLUMN seq DROP IDENTITY", "table chat_messages columns",
     "column seq identity is None, expected always"),
    ("DROP INDEX idx_chat_messages_session_key; CREATE INDEX idx_chat_messages_session_key ON chat_messages "
     "(session_id, message_key)", "table chat_messages indexes", "expected UNIQUE USING btree"),
    ("DROP TABLE user_text_selections", "table user_text_selections", "missing"),
]


@pytest.mark.parametrize(("damage", "check", "detail"), DAMAGE, ids=[d[0][:48] for d in DAMAGE])
def test_migrate_test_on_a_damaged_schema_fails_naming_the_check(
        fresh_url: str, capsys: pytest.CaptureFixture[str], damage: str, check: str, detail: str) -> None:
    with Database(fresh_url, settings=test_settings()) as db:
        migrate(db)
    sql(fresh_url, damage)
    assert main(["--test", "--database-url", fresh_url]) == 1
    out = capsys.readouterr().out
    failed = [line for line in out.splitlines() if line.startswith("FAIL")]
    assert any(line.startswith(f"FAIL  {check}") and detail in line for line in failed), out
    assert "0 failed" not in out


def test_check_database_results_are_data(fresh_url: str) -> None:
    with Database(fresh_url, settings=test_settings()) as db:
        migrate(db)
        sql(fresh_url, "DROP INDEX idx_chat_sessions_updated_at")
        results = check_database(db)
    failed = [r for r in results if not r.passed]
    assert [r.name for r in failed] == ["table chat_sessions indexes", "round trip"]
    assert "idx_chat_sessions_updated_at" in failed[0].detail
    assert str(failed[0]).startswith("FAIL  table chat_sessions indexes: missing:")


def test_what_a_team_added_is_reported_without_failing(fresh_url: str,
                                                      capsys: pytest.CaptureFixture[str]) -> None:
    with Database(fresh_url, settings=test_settings()) as db:
        migrate(db)
    sql(fresh_url, "CREATE INDEX idx_shop_brand ON document_embeddings ((metadata->>'brand'))")
    sql(fresh_url, "ALTER TABLE chat_sessions ADD COLUMN locale TEXT")
    assert main(["--test", "--database-url", fresh_url]) == 0
    out = capsys.readouterr().out
    assert "PASS  table document_embeddings indexes: 5 indexes as described; also idx_shop_brand" in out
    assert "PASS  table chat_sessions columns: 6 columns with the expected types; also column locale" in out


def test_migrate_test_on_an_empty_database_migrates_first(fresh_url: str) -> None:
    with Database(fresh_url, settings=test_settings()) as db, db.connect() as conn:
        assert applied_migrations(conn) == {}
    assert main(["--test", "--database-url", fresh_url]) == 0


@pytest.mark.slow  # subprocesses
def test_python_dash_m_migrate_test_in_a_subprocess(fresh_url: str) -> None:
    env = {key: value for key, value in os.environ.items() if key not in ("DATABASE_URL", "SONY_RAG_DATABASE_URL")}
    done = subprocess.run([sys.executable, "-m", "sony_rag.migrate", "--test", "--database-url", fresh_url],
                          capture_output=True, text=True, timeout=120, env=env, cwd=Path(__file__).parent)
    assert done.returncode == 0, done.stdout + done.stderr
    lines = done.stdout.splitlines()
    assert lines[0].startswith("database: ")
    assert str(conninfo_to_dict(fresh_url)["dbname"]) in lines[0]
    assert all(line.startswith("PASS") for line in lines if line.startswith(("PASS", "FAIL")))
    assert any(line.startswith("applied 001_initial_schema") for line in lines)

    sql(fresh_url, "DROP INDEX idx_chat_messages_role")
    damaged = subprocess.run([sys.executable, "-m", "sony_rag.migrate", "--test", "--database-url", fresh_url],
                             capture_output=True, text=True, timeout=120, env=env)
    assert damaged.returncode == 1
    assert "FAIL  table chat_messages indexes: missing: idx_chat_messages_role" in damaged.stdout

    # The alias takes every option of `sony-rag migrate`, --json included.
    as_json = subprocess.run([sys.executable, "-m", "sony_rag.migrate", "--test", "--json", "--database-url",
                              fresh_url], capture_output=True, text=True, timeout=120, env=env)
    assert as_json.returncode == 1
    assert json.loads(as_json.stdout)["ok"] is False


def test_the_command_never_prints_a_password(fresh_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    # The embedded server trusts local connections, so any password is accepted and must not be echoed.
    with_password = make_conninfo(fresh_url, password="hunter2-secret")
    assert main(["--test", "--database-url", with_password]) == 0
    captured = capsys.readouterr()
    assert "hunter2" not in captured.out + captured.err
