"""SQLAlchemy Core description of the tables that ``migrations/`` creates, for applications using SQLAlchemy.

The migration files are the source of truth; a test reflects a migrated database and fails when this
description differs from it, and ``sony-rag migrate --test`` checks a live database against it.
"""

from __future__ import annotations

from pgvector.sqlalchemy import Vector
from sqlalchemy import (
    BigInteger,
    CheckConstraint,
    Column,
    Computed,
    DateTime,
    ForeignKey,
    Identity,
    Index,
    Integer,
    LargeBinary,
    MetaData,
    String,
    Table,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSON, JSONB, TSVECTOR, UUID

from sony_rag.types import EMBEDDING_DIMENSIONS

metadata = MetaData()


def _timestamp(name: str) -> Column[object]:
    return Column(name, DateTime(timezone=True), nullable=False, server_default=func.now())


def _jsonb(name: str = "metadata") -> Column[object]:
    return Column(name, JSONB, nullable=False, server_default=text("'{}'::jsonb"))


chat_sessions = Table(
    "chat_sessions", metadata,
    Column("session_id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    _timestamp("created_at"),
    _timestamp("updated_at"),
    Column("user_agent", Text),
    Column("current_page", Text),
    _jsonb(),
    Index("idx_chat_sessions_created_at", "created_at"),
    Index("idx_chat_sessions_updated_at", "updated_at"),
)

chat_messages = Table(
    "chat_messages", metadata,
    Column("message_id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    Column("session_id", UUID(as_uuid=True),
           ForeignKey("chat_sessions.session_id", ondelete="CASCADE", name="chat_messages_session_id_fkey"),
           nullable=False),
    Column("role", String(20), nullable=False),
    Column("content", Text, nullable=False),
    _timestamp("created_at"),
    Column("token_usage", Integer),
    Column("page_context", Text),
    _jsonb(),
    Column("seq", BigInteger, Identity(always=True), nullable=False),
    Column("message_key", Text),
    CheckConstraint("role IN ('user', 'assistant', 'system')", name="chat_messages_role_check"),
    Index("idx_chat_messages_session_id", "session_id"),
    Index("idx_chat_messages_role", "role"),
    Index("idx_chat_messages_session_seq", "session_id", "seq"),
    Index("idx_chat_messages_session_key", "session_id", "message_key", unique=True),
)

document_embeddings = Table(
    "document_embeddings", metadata,
    Column("embedding_id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    Column("source_type", String(50), nullable=False),
    Column("source_id", Text),
    Column("content_chunk", Text, nullable=False),
    Column("embedding", Vector(EMBEDDING_DIMENSIONS), nullable=False),
    _jsonb(),
    _timestamp("created_at"),
    _timestamp("updated_at"),
    Column("document_id", Text),
    Column("search_vector", TSVECTOR,
           Computed("to_tsvector('english'::regconfig, content_chunk || ' ' || coalesce(source_id, ''))")),
    CheckConstraint("source_type IN ('product', 'page_content', 'faq', 'policy')",
                    name="document_embeddings_source_type_check"),
    Index("idx_document_embeddings_vector", "embedding", postgresql_using="ivfflat",
          postgresql_with={"lists": 100}, postgresql_ops={"embedding": "vector_cosine_ops"}),
    Index("idx_document_embeddings_source_type", "source_type"),
    Index("idx_document_embeddings_source_id", "source_id"),
    Index("idx_document_embeddings_source", "source_type", "source_id"),
    Index("idx_document_embeddings_search_vector", "search_vector", postgresql_using="gin"),
)

user_text_selections = Table(
    "user_text_selections", metadata,
    Column("selection_id", UUID(as_uuid=True), primary_key=True, server_default=func.gen_random_uuid()),
    Column("session_id", UUID(as_uuid=True),
           ForeignKey("chat_sessions.session_id", ondelete="CASCADE",
                      name="user_text_selections_session_id_fkey"),
           nullable=False),
    Column("selected_text", Text, nullable=False),
    Column("page_url", Text),
    _timestamp("created_at"),
    Column("embedding", Vector(EMBEDDING_DIMENSIONS)),
    _jsonb(),
    Index("idx_user_text_selections_session_id", "session_id"),
    Index("idx_user_text_selections_page_url", "page_url"),
    Index("idx_user_text_selections_session_created", "session_id", "created_at"),
)



def _session_key(table: str) -> Column[object]:
    return Column("session_id", UUID(as_uuid=True),
                  ForeignKey("chat_sessions.session_id", ondelete="CASCADE", name=f"{table}_session_id_fkey"),
                  primary_key=True)


def _namespace() -> Column[object]:
    return Column("checkpoint_ns", Text, primary_key=True, server_default=text("''::text"))


# LangGraph checkpoints of SonyCheckpointer (migrations 004, 005): a thread is a chat session.
chat_checkpoints = Table(
    "chat_checkpoints", metadata,
    _session_key("chat_checkpoints"),
    _namespace(),
    Column("checkpoint_id", Text, primary_key=True),
    Column("parent_checkpoint_id", Text),
    Column("checkpoint", JSON, nullable=False),  # compact text (migration 005)
    _jsonb(),
)

chat_checkpoint_blobs = Table(
    "chat_checkpoint_blobs", metadata,
    _session_key("chat_checkpoint_blobs"),
    _namespace(),
    Column("channel", Text, primary_key=True),
    Column("version", Text, primary_key=True),
    Column("type", Text, nullable=False),
    Column("blob", LargeBinary),
)

chat_checkpoint_writes = Table(
    "chat_checkpoint_writes", metadata,
    _session_key("chat_checkpoint_writes"),
    _namespace(),
    Column("checkpoint_id", Text, primary_key=True),
    Column("task_id", Text, primary_key=True),
    Column("idx", Integer, primary_key=True),
    Column("channel", Text, nullable=False),
    Column("type", Text, nullable=False),
    Column("blob", LargeBinary),
    Column("message_runs", ARRAY(BigInteger)),
    Column("task_path", Text, nullable=False, server_default=text("''::text")),
    Index("idx_chat_checkpoint_writes_pending_messages", "session_id",
          postgresql_where=text("checkpoint_ns = '' AND channel = 'messages' AND message_runs IS NULL "
                                "AND blob IS NOT NULL")),
)

# Tables whose updated_at a trigger keeps current, with the trigger's name.
UPDATED_AT_TRIGGERS = {
    "chat_sessions": "update_chat_sessions_updated_at",
    "document_embeddings": "update_document_embeddings_updated_at",
}

TABLES = (chat_sessions, chat_messages, document_embeddings, user_text_selections, chat_checkpoints,
          chat_checkpoint_blobs, chat_checkpoint_writes)

__all__ = ["TABLES", "UPDATED_AT_TRIGGERS", "chat_checkpoint_blobs", "chat_checkpoint_writes", "chat_checkpoints",
           "chat_messages", "chat_sessions", "document_embeddings", "metadata", "user_text_selections"]
