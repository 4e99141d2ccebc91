"""``sony_rag.schema`` against a database that only the migrations have touched: equal in every column, type,
nullability, default, identity, generated expression, key, cascade, check, index and trigger, with nothing more."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator

import psycopg
import pytest
from helpers import test_settings
from psycopg.conninfo import make_conninfo

from sony_rag import schema
from sony_rag.database import Database
from sony_rag.migrate import migrate
from sony_rag.schema_check import differences, read_table


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
def live(migrated_url: str) -> dict[str, schema.Table]:
    """Return every table of the public schema as ``read_table`` reads it from the catalog."""
    # No prepared statements: the pooled CI pass reads this database through PgBouncer in transaction mode.
    with psycopg.connect(migrated_url, prepare_threshold=None) as conn:
        names = [row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")]
        tables = {name: read_table(conn, name) for name in names}
    return {name: table for name, table in tables.items() if table is not None}


def test_the_migrations_create_exactly_the_described_tables(live: dict[str, schema.Table]) -> None:
    described = {table.name for table in schema.TABLES} | {"sony_rag_migrations"}
    if os.environ.get("TEST_DATABASE_URL"):  # the shared database: other tests leave tables of their own there
        assert described <= set(live)
    else:
        assert set(live) == described


@pytest.mark.parametrize("table", schema.TABLES, ids=lambda table: table.name)
def test_the_description_equals_the_migrated_database(table: schema.Table, live: dict[str, schema.Table]) -> None:
    # Extras count here too: a column or index that a migration adds must be described.
    assert [str(difference) for difference in differences(table, live[table.name])] == []


def test_the_catalog_is_read_in_full(live: dict[str, schema.Table]) -> None:
    # A few promises spelled out against the live reading alone, so that a reader that saw nothing could not pass.
    embeddings = live["document_embeddings"]
    columns = {column.name: column for column in embeddings.columns}
    assert columns["embedding"] == schema.Column("embedding", "vector(384)", nullable=False)
    assert columns["embedding_id"].default == "gen_random_uuid()"
    assert columns["source_type"].type == "character varying(50)"
    assert columns["created_at"].type == "timestamp with time zone"
    assert columns["metadata"].default == "'{}'::jsonb"
    assert columns["search_vector"].generated is not None and "to_tsvector" in columns["search_vector"].generated
    indexes = {index.name: index for index in embeddings.indexes}
    assert indexes["idx_document_embeddings_vector"].definition == (
        "USING ivfflat (embedding vector_cosine_ops) WITH (lists='100')")
    assert indexes["idx_document_embeddings_source"].definition == "USING btree (source_type, source_id)"
    assert embeddings.checks == ("document_embeddings_source_type_check",)
    assert embeddings.triggers == ("update_document_embeddings_updated_at",)
    messages = live["chat_messages"]
    assert messages.foreign_keys == {"chat_messages_session_id_fkey":
                                     "FOREIGN KEY (session_id) REFERENCES chat_sessions(session_id) ON DELETE CASCADE"}
    assert next(column for column in messages.columns if column.name == "seq").identity == "always"
    assert messages.primary_key == ("message_id",)
    assert [index.unique for index in messages.indexes if index.name == "idx_chat_messages_session_key"] == [True]
    assert live["chat_checkpoint_writes"].primary_key == ("session_id", "checkpoint_ns", "checkpoint_id", "task_id",
                                                          "idx")
    assert next(column for column in live["user_text_selections"].columns if column.name == "embedding").nullable
