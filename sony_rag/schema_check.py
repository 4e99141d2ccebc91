"""``migrate --test``: the live database compared with ``sony_rag.schema``, one result per check.

Reading the catalog (``read_table``) and comparing (``differences``) are separate, so the test that keeps
``sony_rag.schema`` equal to what the migrations create uses the same comparison as the command.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb

from sony_rag import schema
from sony_rag.database import Database
from sony_rag.migrate import applied_migrations, available_migrations
from sony_rag.sql import Query
from sony_rag.sql import catalog as catalog_sql
from sony_rag.sql import documents as document_sql
from sony_rag.sql import messages as message_sql
from sony_rag.sql import selections as selection_sql
from sony_rag.sql import sessions as session_sql

__all__ = ["CheckResult", "Difference", "check_database", "differences", "read_table"]


@dataclass(frozen=True)
class CheckResult:
    """One line of ``migrate --test``."""

    name: str
    passed: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{'PASS' if self.passed else 'FAIL'}  {self.name}" + (f": {self.detail}" if self.detail else "")


@dataclass(frozen=True)
class Difference:
    """One way a live table differs from its description: ``part`` is columns, indexes, constraints or triggers.

    ``extra`` marks something the database has and the description lacks (an index a team added, say):
    ``migrate --test`` reports it without failing, the schema test fails on it.
    """

    part: str
    name: str
    problem: str
    extra: bool = False

    def __str__(self) -> str:
        return f"{self.name} {self.problem}"


def read_table(conn: psycopg.Connection[Any], name: str) -> schema.Table | None:
    """Return the live table ``name`` described as ``sony_rag.schema`` describes tables; None when it is missing."""

    def rows(query: Query) -> list[dict[str, Any]]:
        return conn.cursor(row_factory=dict_row).execute(*query).fetchall()

    columns = tuple(schema.Column(row["name"], row["type"], nullable=row["nullable"], default=row["default"],
                                  identity=row["identity"], generated=row["generated"])
                    for row in rows(catalog_sql.columns(name)))
    if not columns:
        return None
    constraints = rows(catalog_sql.constraints(name))
    primary = next((row["definition"] for row in constraints if row["kind"] == "p"), "")
    return schema.Table(
        name, columns,
        primary_key=tuple(primary.removeprefix("PRIMARY KEY (").removesuffix(")").split(", ")) if primary else (),
        foreign_keys={row["name"]: row["definition"] for row in constraints if row["kind"] == "f"},
        checks=tuple(row["name"] for row in constraints if row["kind"] == "c"),
        indexes=tuple(schema.Index(row["name"], row["definition"], unique=row["unique"])
                      for row in rows(catalog_sql.indexes(name))),
        triggers=tuple(row["name"] for row in rows(catalog_sql.triggers(name))),
    )


def differences(expected: schema.Table, live: schema.Table) -> list[Difference]:
    """Return every way ``live`` differs from ``expected`` (empty when they are the same)."""
    found: list[Difference] = []
    live_columns = {column.name: column for column in live.columns}
    for column in expected.columns:
        got = live_columns.pop(column.name, None)
        if got is None:
            found.append(Difference("columns", f"column {column.name}", "missing"))
            continue
        for attribute, label in (("type", "is"), ("nullable", "nullable is"), ("default", "default is"),
                                 ("identity", "identity is"), ("generated", "generated as")):
            want, have = getattr(column, attribute), getattr(got, attribute)
            if want != have:
                found.append(Difference("columns", f"column {column.name}", f"{label} {have}, expected {want}"))
    found += [Difference("columns", f"column {name}", "is not in sony_rag.schema", extra=True) for name in live_columns]

    live_indexes = {index.name: index for index in live.indexes}
    for index in expected.indexes:
        got_index = live_indexes.pop(index.name, None)
        if got_index is None:
            found.append(Difference("indexes", index.name, "missing"))
        elif (got_index.definition, got_index.unique) != (index.definition, index.unique):
            found.append(Difference("indexes", index.name, f"is {_index_text(got_index)}, expected "
                                                           f"{_index_text(index)}"))
    found += [Difference("indexes", name, "is not in sony_rag.schema", extra=True) for name in live_indexes]

    if live.primary_key != expected.primary_key:
        found.append(Difference("constraints", "primary key",
                                f"is ({', '.join(live.primary_key)}), expected ({', '.join(expected.primary_key)})"
                                if live.primary_key else "missing"))
    for name, definition in expected.foreign_keys.items():
        got_key = live.foreign_keys.get(name)
        if got_key is None:
            found.append(Difference("constraints", name, "missing"))
        elif got_key != definition:
            found.append(Difference("constraints", name, f"is {got_key}, expected {definition}"))
    found += [Difference("constraints", name, "is not in sony_rag.schema", extra=True)
              for name in live.foreign_keys if name not in expected.foreign_keys]
    found += [Difference("constraints", name, "missing") for name in expected.checks if name not in live.checks]
    found += [Difference("constraints", name, "is not in sony_rag.schema", extra=True)
              for name in live.checks if name not in expected.checks]

    found += [Difference("triggers", name, "missing") for name in expected.triggers if name not in live.triggers]
    found += [Difference("triggers", name, "is not in sony_rag.schema", extra=True)
              for name in live.triggers if name not in expected.triggers]
    return found


def _index_text(index: schema.Index) -> str:
    return ("UNIQUE " if index.unique else "") + index.definition


def check_database(db: Database) -> list[CheckResult]:
    """Return one result per check of the live database against the schema, including a rolled-back round trip."""
    results: list[CheckResult] = []
    with db.connect() as conn:
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
    row = conn.cursor(row_factory=dict_row).execute(*catalog_sql.extension_version()).fetchone()
    if not row:
        return CheckResult("extension vector", False, "not installed: run `sony-rag migrate`")
    return CheckResult("extension vector", True, f"version {row['extversion']}")


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


_PASSED: dict[str, Callable[[schema.Table], str]] = {
    "columns": lambda table: f"{len(table.columns)} columns with the expected types",
    "indexes": lambda table: f"{len(table.indexes)} indexes as described",
    "constraints": lambda table: "primary key, foreign keys and checks present",
    "triggers": lambda table: ", ".join(table.triggers),
}


def _check_table(conn: psycopg.Connection[Any], table: schema.Table) -> list[CheckResult]:
    live = read_table(conn, table.name)
    if live is None:
        return [CheckResult(f"table {table.name}", False, "missing")]
    found = differences(table, live)
    results = []
    for part, describe in _PASSED.items():
        if part == "triggers" and not table.triggers:
            continue
        failures = [d for d in found if d.part == part and not d.extra]
        extras = [d for d in found if d.part == part and d.extra]
        missing = [d.name for d in failures if d.problem == "missing"]
        problems = ([f"missing: {', '.join(missing)}"] if missing else []) + [
            str(d) for d in failures if d.problem != "missing"]
        detail = "; ".join(problems) or describe(table)
        if extras:
            detail += "; also " + ", ".join(d.name for d in extras) + " (not in sony_rag.schema)"
        results.append(CheckResult(f"table {table.name} {part}", not failures, detail))
    return results


class _Rollback(Exception):
    pass


def _round_trip(conn: psycopg.Connection[Any]) -> list[CheckResult]:
    from pgvector.psycopg import register_vector

    register_vector(conn)
    results: list[CheckResult] = []

    def record(name: str, passed: bool, detail: str = "") -> None:
        results.append(CheckResult(f"round trip: {name}", passed, detail))

    def run(query: Query) -> list[dict[str, Any]]:
        cursor = conn.cursor(row_factory=dict_row).execute(*query)
        return cursor.fetchall() if cursor.description else []

    try:
        with conn.transaction():
            session_id = run(session_sql.insert(None, "sony-rag migrate --test", "/check", {"check": True})
                             )[0]["session_id"]
            record("create session", True, str(session_id))
            run(message_sql.insert_many(session_id, [uuid.uuid4(), uuid.uuid4()], ["user", "assistant"],
                                        ["first", "second"], [None, 7], ["/check", "/check"], [{}, {}]))
            history = [m["content"] for m in run(message_sql.newest(session_id, 50))]
            record("messages in order", history == ["first", "second"], f"read back {history}")
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
            run(catalog_sql.backdate_session(session_id))
            run(catalog_sql.touch_session(session_id))
            touched = run(catalog_sql.session_is_fresh(session_id))
            record("updated_at trigger", bool(touched and touched[0]["fresh"]))
            try:
                with conn.transaction():  # a savepoint: the refused row leaves the round trip usable
                    run(catalog_sql.insert_bad_role(session_id))
                record("constraints refuse bad rows", False, "a bad role was accepted")
            except psycopg.errors.CheckViolation:
                record("constraints refuse bad rows", True, "bad role refused")
            run(session_sql.delete(session_id))
            children = int(run(catalog_sql.child_rows(session_id))[0]["n"])
            record("cascade delete", children == 0, f"{children} child rows left")
            raise _Rollback
    except _Rollback:
        record("rolled back", True, "nothing written")
    except psycopg.Error as error:
        record("completed", False, str(error).splitlines()[0])
    return results
