"""The migration runner and ``--test``: the live database checked against the schema, one line per check.

Run ``sony-rag migrate [--test]`` or ``python -m sony_rag.migrate [--test]``. Each pending file is applied in
its own transaction under a Postgres advisory lock, so concurrent runners apply everything exactly once,
and is recorded with its SHA-256 in ``sony_rag_migrations``; an applied file that changed is refused.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import numpy as np
import psycopg
from psycopg import sql
from psycopg.rows import dict_row, tuple_row
from psycopg.types.json import Jsonb
from sqlalchemy.dialects import postgresql

from sony_rag import schema
from sony_rag.conninfo import normalize_url
from sony_rag.database import Database
from sony_rag.errors import ChecksumMismatchError, MigrationError, SonyRagError
from sony_rag.sql import documents as document_sql
from sony_rag.sql import messages as message_sql
from sony_rag.sql import selections as selection_sql
from sony_rag.sql import sessions as session_sql

# An arbitrary constant shared by every runner ("SonyRAG" in ASCII) so they queue on one advisory lock.
MIGRATION_LOCK_KEY = 0x536F6E79524147

_TRACKING_TABLE = sql.SQL(
    "CREATE TABLE IF NOT EXISTS sony_rag_migrations (version TEXT PRIMARY KEY, name TEXT NOT NULL, "
    "checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())"
)


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file shipped in ``migrations/``."""

    version: str
    name: str
    sql_text: str

    @property
    def checksum(self) -> str:
        """Return the SHA-256 of the file's text."""
        return hashlib.sha256(self.sql_text.encode("utf-8")).hexdigest()


@dataclass(frozen=True)
class CheckResult:
    """One line of ``migrate --test``."""

    name: str
    passed: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}" + (f": {self.detail}" if self.detail else "")


def available_migrations() -> list[Migration]:
    """Return the shipped migration files in the order they apply."""
    folder = resources.files("sony_rag.migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            stem = entry.name.removesuffix(".sql")
            found.append(Migration(stem.split("_", 1)[0], stem, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda migration: migration.version)


def applied_migrations(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Return ``{version: checksum}`` of the migrations recorded in the database (empty when none)."""
    cursor = conn.cursor(row_factory=tuple_row)
    exists = cursor.execute("SELECT to_regclass('sony_rag_migrations') IS NOT NULL").fetchone()
    if not exists or not exists[0]:
        return {}
    return {row[0]: row[1] for row in cursor.execute("SELECT version, checksum FROM sony_rag_migrations")}


def migrate(db: Database, *, log: Callable[[str], None] = lambda line: None) -> list[str]:
    """Apply pending migrations and return the names applied; raises ChecksumMismatchError or MigrationError."""
    migrations = available_migrations()
    applied_names: list[str] = []
    # A plain connection: the vector type that the pools register does not exist before 001 has run.
    with db.connect() as conn:
        for migration in migrations:
            with conn.transaction():
                conn.execute("SELECT pg_advisory_xact_lock(%s)", (MIGRATION_LOCK_KEY,))
                conn.execute(_TRACKING_TABLE)
                applied = applied_migrations(conn)
                _check_checksums(migrations, applied)
                if migration.version in applied:
                    continue
                try:
                    conn.execute(migration.sql_text.encode("utf-8"))  # type: ignore[call-overload]
                except psycopg.Error as error:
                    raise MigrationError(f"{migration.name} failed and was rolled back: {error}") from error
                conn.execute(
                    "INSERT INTO sony_rag_migrations (version, name, checksum) VALUES (%s, %s, %s)",
                    (migration.version, migration.name, migration.checksum),
                )
            applied_names.append(migration.name)
            log(f"applied {migration.name}")
    if applied_names:
        db.reset()  # pools opened before the vector type existed must register it
    return applied_names


def _check_checksums(migrations: Sequence[Migration], applied: dict[str, str]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise ChecksumMismatchError(
                f"{migration.name} was changed after it was applied (checksum {recorded[:12]}... in the database,"
                f" {migration.checksum[:12]}... on disk); restore the file and put the change in a new migration"
            )


# -- --test ------------------------------------------------------------------------------------------


def check_database(db: Database) -> list[CheckResult]:
    """Return one result per check of the live database against the schema, including a rolled-back round trip."""
    results: list[CheckResult] = []
    with db.connect() as conn:
        conn.row_factory = dict_row  # type: ignore[assignment]
        results.append(_check_extension(conn))
        results.extend(_check_migrations(conn))
        for table in schema.TABLES:
            results.extend(_check_table(conn, table))
        if all(result.passed for result in results):
            results.extend(_round_trip(conn))
        else:
            results.append(CheckResult("round trip", False, "skipped: the schema checks above failed"))
    return results


def _check_extension(conn: psycopg.Connection[Any]) -> CheckResult:
    row = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    if not row:
        return CheckResult("extension vector", False, "not installed: run `sony-rag migrate`")
    return CheckResult("extension vector", True, f"version {row['extversion']}")  # type: ignore[call-overload]


def _check_migrations(conn: psycopg.Connection[Any]) -> list[CheckResult]:
    applied = applied_migrations(conn)
    results = []
    for migration in available_migrations():
        recorded = applied.get(migration.version)
        if recorded is None:
            results.append(CheckResult(f"migration {migration.name}", False, "not applied"))
        elif recorded != migration.checksum:
            results.append(CheckResult(f"migration {migration.name}", False, "file changed after it was applied"))
        else:
            results.append(CheckResult(f"migration {migration.name}", True, "applied, checksum matches"))
    return results


_TYPE_NAMES = {"VARCHAR": "character varying", "TIMESTAMP WITH TIME ZONE": "timestamp with time zone"}


def expected_type(column: Any) -> str:
    """Return the Postgres ``format_type`` spelling of a SQLAlchemy column's type."""
    compiled = str(column.type.compile(dialect=postgresql.dialect()))  # type: ignore[no-untyped-call]
    for short, long in _TYPE_NAMES.items():
        if compiled.startswith(short):
            compiled = long + compiled[len(short):]
    return compiled.lower()


def _check_table(conn: psycopg.Connection[Any], table: Any) -> list[CheckResult]:
    name = table.name
    live = {
        row["attname"]: row for row in conn.execute(
            "SELECT a.attname, format_type(a.atttypid, a.atttypmod) AS type, a.attnotnull "
            "FROM pg_attribute a WHERE a.attrelid = to_regclass(%s) AND a.attnum > 0 AND NOT a.attisdropped",
            (name,))
    }
    if not live:
        return [CheckResult(f"table {name}", False, "missing")]
    problems = []
    for column in table.columns:
        found = live.get(column.name)
        if found is None:
            problems.append(f"column {column.name} missing")
        elif found["type"] != expected_type(column):
            problems.append(f"column {column.name} is {found['type']}, expected {expected_type(column)}")
        elif bool(found["attnotnull"]) != (not column.nullable):
            problems.append(f"column {column.name} nullability differs")
    results = [CheckResult(f"table {name} columns", not problems, "; ".join(problems) or
                           f"{len(table.columns)} columns with the expected types")]

    indexes = {row["indexname"]: row["indexdef"] for row in conn.execute(
        "SELECT indexname, indexdef FROM pg_indexes WHERE tablename = %s", (name,))}
    missing = [index.name for index in table.indexes if index.name not in indexes]
    vector_index = indexes.get("idx_document_embeddings_vector", "")
    if name == "document_embeddings" and vector_index and "vector_cosine_ops" not in vector_index:
        missing.append("idx_document_embeddings_vector (not on cosine distance)")
    results.append(CheckResult(f"table {name} indexes", not missing, "missing: " + ", ".join(missing) if missing
                               else f"{len(table.indexes)} indexes present"))

    constraints = {row["conname"]: row for row in conn.execute(
        "SELECT conname, contype, confdeltype FROM pg_constraint WHERE conrelid = to_regclass(%s)", (name,))}
    expected = [c for c in table.constraints if c.name and not c.name.startswith(("pk_", name + "_pkey"))]
    constraint_problems = []
    for constraint in expected:
        found = constraints.get(constraint.name)
        if found is None:
            constraint_problems.append(f"{constraint.name} missing")
        elif found["contype"] == "f" and found["confdeltype"] != "c":
            constraint_problems.append(f"{constraint.name} does not cascade on delete")
    if not any(row["contype"] == "p" for row in constraints.values()):
        constraint_problems.append("primary key missing")
    results.append(CheckResult(f"table {name} constraints", not constraint_problems,
                               "; ".join(constraint_problems) or "primary key, foreign keys and checks present"))

    trigger = schema.UPDATED_AT_TRIGGERS.get(name)
    if trigger is not None:
        row = conn.execute("SELECT 1 FROM pg_trigger WHERE tgrelid = to_regclass(%s) AND tgname = %s",
                           (name, trigger)).fetchone()
        results.append(CheckResult(f"table {name} updated_at trigger", row is not None,
                                   trigger if row else f"{trigger} missing"))
    return results


class _Rollback(Exception):
    pass


def _round_trip(conn: psycopg.Connection[Any]) -> list[CheckResult]:
    from pgvector.psycopg import register_vector

    register_vector(conn)
    results: list[CheckResult] = []

    def record(name: str, passed: bool, detail: str = "") -> None:
        results.append(CheckResult(f"round trip: {name}", passed, detail))

    def run(query: tuple[Any, dict[str, Any]]) -> list[dict[str, Any]]:
        cursor = conn.execute(*query)
        return cursor.fetchall() if cursor.description else []

    try:
        with conn.transaction():
            session = run(session_sql.insert(None, "sony-rag migrate --test", "/check", {"check": True}))[0]
            session_id = session["session_id"]
            record("create session", True, str(session_id))
            run(message_sql.insert_many(session_id, [uuid.uuid4(), uuid.uuid4()], ["user", "assistant"],
                                        ["first", "second"], [None, 7], ["/check", "/check"], [{}, {}]))
            history = run(message_sql.newest(session_id, 50))
            record("messages in order", [m["content"] for m in history] == ["first", "second"],
                   f"read back {[m['content'] for m in history]}")
            vector = np.zeros(384, dtype=np.float32)
            vector[0] = 1.0
            embedding_id = uuid.uuid4()
            with conn.cursor().copy(document_sql.copy_into_table()) as copy:
                copy.set_types(list(document_sql.COPY_TYPES))
                copy.write_row((embedding_id, "policy", "check", "round trip", vector, Jsonb({}), None))
            found = run(document_sql.exact_nearest(vector, 1, {"source_id": "check"}))
            record("vector search", bool(found) and found[0]["embedding_id"] == embedding_id
                   and abs(float(found[0]["distance"])) < 1e-6,
                   f"similarity {1 - float(found[0]['distance']):.3f}" if found else "no row found")
            run(selection_sql.insert(session_id, "free shipping", "/check", vector, {}))
            conn.execute("UPDATE chat_sessions SET updated_at = NOW() - interval '1 day' WHERE session_id = %s",
                         (session_id,))
            conn.execute("UPDATE chat_sessions SET user_agent = 'touched' WHERE session_id = %s", (session_id,))
            touched = conn.execute("SELECT updated_at >= NOW() - interval '1 minute' AS fresh FROM chat_sessions "
                                   "WHERE session_id = %s", (session_id,)).fetchone()
            record("updated_at trigger", bool(touched and touched["fresh"]))  # type: ignore[call-overload]
            run(session_sql.delete(session_id))
            left = conn.execute(
                "SELECT (SELECT count(*) FROM chat_messages WHERE session_id = %(s)s) + "
                "(SELECT count(*) FROM user_text_selections WHERE session_id = %(s)s) AS n", {"s": session_id},
            ).fetchone()
            children = int(left["n"]) if left else -1  # type: ignore[call-overload, index]
            record("cascade delete", children == 0, f"{children} child rows left")
            try:
                conn.execute("SAVEPOINT bad_role")
                conn.execute("INSERT INTO chat_messages (session_id, role, content) VALUES (%s, 'robot', 'x')",
                             (uuid.uuid4(),))
                record("constraints refuse bad rows", False, "a bad role was accepted")
            except psycopg.errors.IntegrityError:
                conn.execute("ROLLBACK TO SAVEPOINT bad_role")
                record("constraints refuse bad rows", True, "bad role refused")
            raise _Rollback
    except _Rollback:
        record("rolled back", True, "nothing written")
    except psycopg.Error as error:
        record("completed", False, str(error).splitlines()[0])
    return results


def main(argv: Sequence[str] | None = None) -> int:
    """Run the migration command line and return its exit code (0 ok, 1 a check failed, 2 an error)."""
    parser = argparse.ArgumentParser(prog="sony-rag migrate", description=__doc__.splitlines()[0])
    parser.add_argument("--test", action="store_true", help="after migrating, check the database against the schema")
    parser.add_argument("--database-url", help="Postgres URL (default: DATABASE_URL, else the embedded server)")
    args = parser.parse_args(argv)
    try:
        # A malformed URL or setting is a ConfigurationError that never quotes the URL: a line, not a traceback.
        db = Database(None if args.database_url is None else normalize_url(args.database_url,
                                                                            source="--database-url"))
    except SonyRagError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return run_cli(db, test=args.test)


def run_cli(db: Database, *, test: bool) -> int:
    """Migrate ``db`` (and check it when ``test``), printing one line per step; return the exit code."""
    try:
        print(f"database: {db.description}")
        applied = migrate(db, log=print)
        if not applied:
            print("up to date: no migration to apply")
        if test:
            results = check_database(db)
            for result in results:
                print(result)
            failed = [r for r in results if not r.passed]
            print(f"{len(results) - len(failed)} passed, {len(failed)} failed")
            return 1 if failed else 0
        return 0
    except SonyRagError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    finally:
        db.close()


if __name__ == "__main__":
    sys.exit(main())
