"""The comparison behind ``migrate --test`` without a database: every kind of change to a table is named, what
a database has beyond the description is marked extra, and the check imports no SQLAlchemy."""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable

import pytest

from sony_rag import schema
from sony_rag.schema_check import differences


def _column(table: schema.Table, name: str, **changes: object) -> schema.Table:
    columns = tuple(dataclasses.replace(c, **changes) if c.name == name else c for c in table.columns)  # type: ignore[arg-type]
    return dataclasses.replace(table, columns=columns)


def _index(table: schema.Table, name: str, **changes: object) -> schema.Table:
    indexes = tuple(dataclasses.replace(i, **changes) if i.name == name else i for i in table.indexes)  # type: ignore[arg-type]
    return dataclasses.replace(table, indexes=indexes)


def _without_index(table: schema.Table, name: str) -> schema.Table:
    return dataclasses.replace(table, indexes=tuple(i for i in table.indexes if i.name != name))


ALTERATIONS: list[tuple[str, str, Callable[[schema.Table], schema.Table], str]] = [
    ("type", "chat_messages", lambda t: _column(t, "role", type="text"),
     "column role is text, expected character varying(20)"),
    ("vector size", "document_embeddings", lambda t: _column(t, "embedding", type="vector(1536)"),
     "column embedding is vector(1536), expected vector(384)"),
    ("nullable", "document_embeddings", lambda t: _column(t, "source_id", nullable=False),
     "column source_id nullable is False, expected True"),
    ("default", "chat_sessions", lambda t: _column(t, "metadata", default=None),
     "column metadata default is None, expected '{}'::jsonb"),
    ("identity", "chat_messages", lambda t: _column(t, "seq", identity=None),
     "column seq identity is None, expected always"),
    ("generated", "document_embeddings", lambda t: _column(t, "search_vector", generated="to_tsvector(content_chunk)"),
     "column search_vector generated as to_tsvector(content_chunk), expected to_tsvector('english'"),
    ("missing column", "chat_sessions",
     lambda t: dataclasses.replace(t, columns=tuple(c for c in t.columns if c.name != "user_agent")),
     "column user_agent missing"),
    ("missing index", "chat_messages", lambda t: _without_index(t, "idx_chat_messages_role"),
     "idx_chat_messages_role missing"),
    ("index columns", "user_text_selections",
     lambda t: _index(t, "idx_user_text_selections_page_url", definition="USING btree (page_url, created_at)"),
     "idx_user_text_selections_page_url is USING btree (page_url, created_at), expected USING btree (page_url)"),
    ("index method", "document_embeddings",
     lambda t: _index(t, "idx_document_embeddings_vector", definition="USING hnsw (embedding vector_cosine_ops)"),
     "idx_document_embeddings_vector is USING hnsw"),
    ("unique", "chat_messages", lambda t: _index(t, "idx_chat_messages_session_key", unique=False),
     "expected UNIQUE USING btree (session_id, message_key)"),
    ("no cascade", "user_text_selections",
     lambda t: dataclasses.replace(t, foreign_keys={name: definition.removesuffix(" ON DELETE CASCADE")
                                                    for name, definition in t.foreign_keys.items()}),
     "expected FOREIGN KEY (session_id) REFERENCES chat_sessions(session_id) ON DELETE CASCADE"),
    ("primary key", "chat_checkpoints", lambda t: dataclasses.replace(t, primary_key=("session_id",)),
     "primary key is (session_id), expected (session_id, checkpoint_ns, checkpoint_id)"),
    ("check", "chat_messages", lambda t: dataclasses.replace(t, checks=()), "chat_messages_role_check missing"),
    ("trigger", "chat_sessions", lambda t: dataclasses.replace(t, triggers=()),
     "update_chat_sessions_updated_at missing"),
]


@pytest.mark.parametrize(("table_name", "alter", "expected"), [(t, a, e) for _, t, a, e in ALTERATIONS],
                         ids=[name for name, _, _, _ in ALTERATIONS])
def test_every_kind_of_change_is_named(table_name: str, alter: Callable[[schema.Table], schema.Table],
                                       expected: str) -> None:
    described = schema.table(table_name)
    assert differences(described, described) == []
    live = alter(described)
    found = [str(difference) for difference in differences(described, live)]
    assert found, "an altered table must not compare equal"
    assert any(expected in line for line in found), found


def test_what_only_the_database_has_is_marked_extra() -> None:
    described = schema.table("chat_sessions")
    live = dataclasses.replace(
        described, columns=(*described.columns, schema.Column("locale", "text")),
        indexes=(*described.indexes, schema.Index("idx_shop_locale", "USING btree (locale)")),
        triggers=(*described.triggers, "audit_sessions"))
    found = differences(described, live)
    assert [(d.part, d.name, d.extra) for d in found] == [
        ("columns", "column locale", True), ("indexes", "idx_shop_locale", True), ("triggers", "audit_sessions", True)]
    # Reversed, the same things are missing, and missing is never extra.
    assert {(d.name, d.problem, d.extra) for d in differences(live, described)} == {
        ("column locale", "missing", False), ("idx_shop_locale", "missing", False),
        ("audit_sessions", "missing", False)}


def test_every_table_has_a_primary_key_and_unique_names() -> None:
    assert len({table.name for table in schema.TABLES}) == len(schema.TABLES)
    for table in schema.TABLES:
        names = [column.name for column in table.columns]
        assert len(set(names)) == len(names), table.name
        assert table.primary_key and set(table.primary_key) <= set(names), table.name
    with pytest.raises(KeyError):
        schema.table("orders")


def test_migrate_and_its_check_import_no_sqlalchemy() -> None:
    code = ("import sys, sony_rag.migrate, sony_rag.schema_check, sony_rag.commands, sony_rag.cli; "
            "sony_rag.cli.build_parser(); "
            "print(sorted(name for name in sys.modules if name.split('.')[0] == 'sqlalchemy'))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert done.stdout.strip() == "[]"
