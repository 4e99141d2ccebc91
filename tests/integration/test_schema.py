"""``sony_rag.schema`` (SQLAlchemy Core) against the migrated database reflected by SQLAlchemy: they must be
equal in columns, types, nullability, defaults, keys, cascades, indexes and check constraints."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pgvector.sqlalchemy  # registers the vector type, so that reflection knows it
import psycopg
import pytest
from conftest import test_settings
from psycopg.conninfo import make_conninfo
from sqlalchemy import CheckConstraint, Column, Engine, Index, MetaData, String, Table, Text, create_engine, inspect
from sqlalchemy.dialects import postgresql

from sony_rag import schema
from sony_rag.database import Database
from sony_rag.migrate import migrate

DIALECT = postgresql.dialect()  # type: ignore[no-untyped-call]


@pytest.fixture(scope="module")
def migrated_url(request: pytest.FixtureRequest) -> Iterator[str]:
    """Return a database that only the migrations have touched (other tests rebuild the shared one's index)."""
    if os.environ.get("TEST_DATABASE_URL"):  # that server may not allow CREATE DATABASE: use it as it is
        yield request.getfixturevalue("database_url")
        return
    server_url: str = request.getfixturevalue("server_url")
    name = f"sony_rag_schema_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(server_url, dbname=name)
    with Database(url, settings=test_settings()) as db:
        migrate(db)
    yield url
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture(scope="module")
def engine(migrated_url: str) -> Iterator[Engine]:
    """Return a SQLAlchemy engine (psycopg 3 driver) on the migrated database."""
    engine = create_engine("postgresql+psycopg://", creator=lambda: psycopg.connect(migrated_url))
    yield engine
    engine.dispose()


@pytest.fixture(scope="module")
def reflected(engine: Engine) -> dict[str, Table]:
    """Return the four tables as SQLAlchemy reflects them from the live database."""
    metadata = MetaData()
    return {table.name: Table(table.name, metadata, autoload_with=engine) for table in schema.TABLES}


def _sql(element: Any) -> str:
    return str(element.compile(dialect=DIALECT)).lower()


def _default(column: Column[Any]) -> str | None:
    default = column.server_default
    if default is None or not hasattr(default, "arg"):
        return None
    arg = default.arg
    return arg.lower() if isinstance(arg, str) else _sql(arg)


def describe(table: Table) -> dict[str, Any]:
    """Return everything the schema promises about a table, in a form where declared and reflected agree."""
    columns = {
        column.name: {
            "type": _sql(column.type),
            "nullable": bool(column.nullable),
            "default": _default(column),
            "identity": None if column.identity is None else bool(column.identity.always),
            "generated": None if column.computed is None else bool(column.computed.persisted in (True, None)),
        }
        for column in table.columns
    }
    foreign_keys = {
        constraint.name: {
            "columns": tuple(constraint.column_keys),
            "references": tuple(f"{e.column.table.name}.{e.column.name}" for e in constraint.elements),
            "ondelete": (constraint.ondelete or "NO ACTION").upper(),
        }
        for constraint in table.foreign_key_constraints
    }
    indexes = {}
    for index in table.indexes:
        options = index.dialect_options["postgresql"]
        indexes[index.name] = {
            "columns": tuple(column.name for column in index.columns),
            "unique": bool(index.unique),
            "using": (options["using"] or "btree").lower(),
            "ops": dict(options["ops"] or {}),
            "with": {key: str(value) for key, value in (options["with"] or {}).items()},
        }
    checks = sorted(str(c.name) for c in table.constraints if isinstance(c, CheckConstraint))
    return {
        "columns": columns,
        "primary_key": tuple(column.name for column in table.primary_key.columns),
        "foreign_keys": foreign_keys,
        "indexes": indexes,
        "check_constraints": checks,
    }


def differences(expected: Table, actual: Table) -> list[str]:
    """Return one line per way in which ``actual`` differs from ``expected`` (empty when equal)."""
    want, got = describe(expected), describe(actual)
    found: list[str] = []
    for part, label in (("columns", "column"), ("foreign_keys", "foreign key"), ("indexes", "index")):
        for name in sorted(set(want[part]) | set(got[part])):
            if name not in got[part]:
                found.append(f"{expected.name}: {label} {name} missing from the database")
            elif name not in want[part]:
                found.append(f"{expected.name}: {label} {name} is not in sony_rag.schema")
            else:
                for key in sorted(want[part][name]):
                    if want[part][name][key] != got[part][name][key]:
                        found.append(f"{expected.name}: {label} {name} {key} is {got[part][name][key]!r}, "
                                     f"schema says {want[part][name][key]!r}")
    for part in ("primary_key", "check_constraints"):
        if want[part] != got[part]:
            found.append(f"{expected.name}: {part} is {got[part]!r}, schema says {want[part]!r}")
    return found


def test_the_database_has_every_table_of_the_schema(engine: Engine) -> None:
    names = set(inspect(engine).get_table_names())
    assert {table.name for table in schema.TABLES} <= names
    assert set(schema.metadata.tables) == {table.name for table in schema.TABLES}


@pytest.mark.parametrize("table", schema.TABLES, ids=lambda table: table.name)
def test_schema_equals_the_migrated_database(table: Table, reflected: dict[str, Table]) -> None:
    assert differences(table, reflected[table.name]) == []


def test_reflection_sees_the_documented_details(reflected: dict[str, Table]) -> None:
    # A few promises spelled out, so that a comparison that compared nothing could not pass.
    embeddings = describe(reflected["document_embeddings"])
    assert embeddings["columns"]["embedding"] == {"type": "vector(384)", "nullable": False, "default": None,
                                                  "identity": None, "generated": None}
    assert embeddings["columns"]["embedding_id"]["default"] == "gen_random_uuid()"
    assert embeddings["columns"]["source_type"]["type"] == "varchar(50)"
    assert embeddings["columns"]["created_at"]["type"] == "timestamp with time zone"
    assert embeddings["columns"]["metadata"]["default"] == "'{}'::jsonb"
    assert embeddings["indexes"]["idx_document_embeddings_vector"] == {
        "columns": ("embedding",), "unique": False, "using": "ivfflat", "ops": {"embedding": "vector_cosine_ops"},
        "with": {"lists": "100"}}
    assert embeddings["indexes"]["idx_document_embeddings_source"]["columns"] == ("source_type", "source_id")
    assert embeddings["check_constraints"] == ["document_embeddings_source_type_check"]
    messages = describe(reflected["chat_messages"])
    assert messages["foreign_keys"] == {"chat_messages_session_id_fkey": {
        "columns": ("session_id",), "references": ("chat_sessions.session_id",), "ondelete": "CASCADE"}}
    assert messages["columns"]["role"]["type"] == "varchar(20)"
    assert messages["columns"]["seq"]["identity"] is True
    assert messages["primary_key"] == ("message_id",)
    assert messages["check_constraints"] == ["chat_messages_role_check"]
    selections = describe(reflected["user_text_selections"])
    assert selections["foreign_keys"]["user_text_selections_session_id_fkey"]["ondelete"] == "CASCADE"
    assert selections["columns"]["embedding"]["nullable"] is True
    assert set(describe(reflected["chat_sessions"])["indexes"]) == {"idx_chat_sessions_created_at",
                                                                     "idx_chat_sessions_updated_at"}


def _copy(name: str) -> Table:
    """Return a copy of one schema table (with the tables it references) that a test may alter."""
    metadata = MetaData()
    for table in schema.TABLES:
        table.to_metadata(metadata)
    return metadata.tables[name]


def _drop_index(table: Table, name: str) -> None:
    table.indexes.discard(next(index for index in table.indexes if index.name == name))


def _no_cascade(table: Table) -> None:
    for foreign_key in table.foreign_keys:
        foreign_key.ondelete = None
    for constraint in table.foreign_key_constraints:
        constraint.ondelete = None


def _replace_index(table: Table, name: str, *columns: str, **options: Any) -> None:
    _drop_index(table, name)
    Index(name, *(table.c[column] for column in columns), **options)  # attaches itself to the table


def _rename_check(table: Table) -> None:
    for constraint in table.constraints:
        if isinstance(constraint, CheckConstraint):
            constraint.name = "role_check_renamed"


ALTERATIONS: list[tuple[str, str, Callable[[Table], None], str]] = [
    ("type", "chat_messages", lambda t: setattr(t.c.role, "type", String(30)), "column role type"),
    ("vector size", "document_embeddings",
     lambda t: setattr(t.c.embedding, "type", pgvector.sqlalchemy.Vector(1536)), "column embedding type"),
    ("nullable", "document_embeddings", lambda t: setattr(t.c.source_id, "nullable", False),
     "column source_id nullable"),
    ("extra column", "chat_sessions", lambda t: t.append_column(Column("locale", Text)),
     "column locale missing from the database"),
    ("missing index", "chat_messages", lambda t: _drop_index(t, "idx_chat_messages_role"),
     "index idx_chat_messages_role is not in sony_rag.schema"),
    ("index columns", "user_text_selections",
     lambda t: _replace_index(t, "idx_user_text_selections_page_url", "page_url", "created_at"),
     "index idx_user_text_selections_page_url columns"),
    ("index method", "document_embeddings",
     lambda t: _replace_index(t, "idx_document_embeddings_vector", "embedding", postgresql_using="hnsw",
                              postgresql_ops={"embedding": "vector_cosine_ops"}, postgresql_with={"lists": 100}),
     "index idx_document_embeddings_vector using"),
    ("no cascade", "user_text_selections", _no_cascade, "foreign key user_text_selections_session_id_fkey ondelete"),
    ("check name", "chat_messages", _rename_check, "check_constraints"),
    ("default", "chat_sessions", lambda t: setattr(t.c.metadata, "server_default", None), "column metadata default"),
]


@pytest.mark.parametrize(("table_name", "alter", "expected"), [(t, a, e) for _, t, a, e in ALTERATIONS],
                         ids=[name for name, _, _, _ in ALTERATIONS])
def test_the_comparison_fails_when_the_schema_differs(reflected: dict[str, Table], table_name: str,
                                                      alter: Callable[[Table], None], expected: str) -> None:
    altered = _copy(table_name)
    assert differences(altered, reflected[table_name]) == []  # an unaltered copy still matches
    alter(altered)
    found = differences(altered, reflected[table_name])
    assert found, "an altered schema must not compare equal"
    assert any(expected in line for line in found), found
