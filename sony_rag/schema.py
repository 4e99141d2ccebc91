"""The tables that ``migrations/`` creates, in plain Python and in PostgreSQL's own spelling of each part.

The migration files are the source of truth. This description is what ``sony-rag migrate --test`` compares a
live database with, and a test migrates an empty database, reads its catalog and fails when the two differ in
anything (a column, type, nullability, default, identity, index, key, check or trigger), so a migration that
changes the schema must change this file too. Types are ``format_type`` spellings, defaults ``pg_get_expr``,
indexes and foreign keys the text PostgreSQL prints for them: ``migrate --test`` compares strings.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from sony_rag.types import EMBEDDING_DIMENSIONS

__all__ = ["TABLES", "Column", "Index", "Table", "table"]


@dataclass(frozen=True)
class Column:
    """One column: its ``format_type`` type, nullability, default expression, identity or generation expression."""

    name: str
    type: str
    nullable: bool = True
    default: str | None = None
    identity: str | None = None  # "always" or "by default"
    generated: str | None = None  # the expression of a stored generated column


@dataclass(frozen=True)
class Index:
    """One index (primary keys aside): unique or not, and ``pg_get_indexdef`` from ``USING`` on."""

    name: str
    definition: str
    unique: bool = False


@dataclass(frozen=True)
class Table:
    """One table: columns in order, primary key, foreign keys (``pg_get_constraintdef``), checks, indexes, triggers."""

    name: str
    columns: tuple[Column, ...]
    primary_key: tuple[str, ...]
    foreign_keys: dict[str, str] = field(default_factory=dict)
    checks: tuple[str, ...] = ()
    indexes: tuple[Index, ...] = ()
    triggers: tuple[str, ...] = ()


_NOW = "now()"
_EMPTY_JSON = "'{}'::jsonb"
_VECTOR = f"vector({EMBEDDING_DIMENSIONS})"
_TIMESTAMP = "timestamp with time zone"
_CASCADE_TO_SESSION = "FOREIGN KEY (session_id) REFERENCES chat_sessions(session_id) ON DELETE CASCADE"


def _id(name: str) -> Column:
    return Column(name, "uuid", nullable=False, default="gen_random_uuid()")


def _timestamp(name: str) -> Column:
    return Column(name, _TIMESTAMP, nullable=False, default=_NOW)


def _metadata() -> Column:
    return Column("metadata", "jsonb", nullable=False, default=_EMPTY_JSON)


def _btree(name: str, *columns: str, unique: bool = False) -> Index:
    return Index(name, f"USING btree ({', '.join(columns)})", unique=unique)


CHAT_SESSIONS = Table(
    "chat_sessions",
    (_id("session_id"), _timestamp("created_at"), _timestamp("updated_at"), Column("user_agent", "text"),
     Column("current_page", "text"), _metadata()),
    primary_key=("session_id",),
    indexes=(_btree("idx_chat_sessions_created_at", "created_at"),
             _btree("idx_chat_sessions_updated_at", "updated_at")),
    triggers=("update_chat_sessions_updated_at",),
)

CHAT_MESSAGES = Table(
    "chat_messages",
    (_id("message_id"), Column("session_id", "uuid", nullable=False),
     Column("role", "character varying(20)", nullable=False), Column("content", "text", nullable=False),
     _timestamp("created_at"), Column("token_usage", "integer"), Column("page_context", "text"), _metadata(),
     Column("seq", "bigint", nullable=False, identity="always"),  # 002
     Column("message_key", "text")),  # 004
    primary_key=("message_id",),
    foreign_keys={"chat_messages_session_id_fkey": _CASCADE_TO_SESSION},
    checks=("chat_messages_role_check",),
    indexes=(_btree("idx_chat_messages_session_id", "session_id"), _btree("idx_chat_messages_role", "role"),
             _btree("idx_chat_messages_session_seq", "session_id", "seq"),
             _btree("idx_chat_messages_session_key", "session_id", "message_key", unique=True)),
)

DOCUMENT_EMBEDDINGS = Table(
    "document_embeddings",
    (_id("embedding_id"), Column("source_type", "character varying(50)", nullable=False),
     Column("source_id", "text"), Column("content_chunk", "text", nullable=False),
     Column("embedding", _VECTOR, nullable=False), _metadata(), _timestamp("created_at"),
     _timestamp("updated_at"),
     Column("document_id", "text"),  # 002
     Column("search_vector", "tsvector",  # 003
            generated="to_tsvector('english'::regconfig, ((content_chunk || ' '::text) || COALESCE(source_id, "
                      "''::text)))")),
    primary_key=("embedding_id",),
    checks=("document_embeddings_source_type_check",),
    indexes=(Index("idx_document_embeddings_vector",
                   "USING ivfflat (embedding vector_cosine_ops) WITH (lists='100')"),
             _btree("idx_document_embeddings_source_type", "source_type"),
             _btree("idx_document_embeddings_source_id", "source_id"),
             _btree("idx_document_embeddings_source", "source_type", "source_id"),
             Index("idx_document_embeddings_search_vector", "USING gin (search_vector)")),
    triggers=("update_document_embeddings_updated_at",),
)

USER_TEXT_SELECTIONS = Table(
    "user_text_selections",
    (_id("selection_id"), Column("session_id", "uuid", nullable=False),
     Column("selected_text", "text", nullable=False), Column("page_url", "text"), _timestamp("created_at"),
     Column("embedding", _VECTOR), _metadata()),
    primary_key=("selection_id",),
    foreign_keys={"user_text_selections_session_id_fkey": _CASCADE_TO_SESSION},
    indexes=(_btree("idx_user_text_selections_session_id", "session_id"),
             _btree("idx_user_text_selections_page_url", "page_url"),
             _btree("idx_user_text_selections_session_created", "session_id", "created_at")),  # 002
)


def _checkpoint_key() -> tuple[Column, Column]:
    return Column("session_id", "uuid", nullable=False), Column("checkpoint_ns", "text", nullable=False,
                                                                default="''::text")


# LangGraph checkpoints of SonyCheckpointer (migrations 004, 005: a compact json body): a thread is a chat session.
CHAT_CHECKPOINTS = Table(
    "chat_checkpoints",
    (*_checkpoint_key(), Column("checkpoint_id", "text", nullable=False), Column("parent_checkpoint_id", "text"),
     Column("checkpoint", "json", nullable=False), _metadata()),
    primary_key=("session_id", "checkpoint_ns", "checkpoint_id"),
    foreign_keys={"chat_checkpoints_session_id_fkey": _CASCADE_TO_SESSION},
)

CHAT_CHECKPOINT_BLOBS = Table(
    "chat_checkpoint_blobs",
    (*_checkpoint_key(), Column("channel", "text", nullable=False), Column("version", "text", nullable=False),
     Column("type", "text", nullable=False), Column("blob", "bytea")),
    primary_key=("session_id", "checkpoint_ns", "channel", "version"),
    foreign_keys={"chat_checkpoint_blobs_session_id_fkey": _CASCADE_TO_SESSION},
)

CHAT_CHECKPOINT_WRITES = Table(
    "chat_checkpoint_writes",
    (*_checkpoint_key(), Column("checkpoint_id", "text", nullable=False), Column("task_id", "text", nullable=False),
     Column("idx", "integer", nullable=False), Column("channel", "text", nullable=False),
     Column("type", "text", nullable=False), Column("blob", "bytea"), Column("message_runs", "bigint[]"),
     Column("task_path", "text", nullable=False, default="''::text")),
    primary_key=("session_id", "checkpoint_ns", "checkpoint_id", "task_id", "idx"),
    foreign_keys={"chat_checkpoint_writes_session_id_fkey": _CASCADE_TO_SESSION},
    indexes=(Index("idx_chat_checkpoint_writes_pending_messages",
                   "USING btree (session_id) WHERE ((checkpoint_ns = ''::text) AND (channel = 'messages'::text) "
                   "AND (message_runs IS NULL) AND (blob IS NOT NULL))"),),
)

TABLES: tuple[Table, ...] = (CHAT_SESSIONS, CHAT_MESSAGES, DOCUMENT_EMBEDDINGS, USER_TEXT_SELECTIONS,
                             CHAT_CHECKPOINTS, CHAT_CHECKPOINT_BLOBS, CHAT_CHECKPOINT_WRITES)


def table(name: str) -> Table:
    """Return the description of one table; raises KeyError for a name the migrations do not create."""
    for candidate in TABLES:
        if candidate.name == name:
            return candidate
    raise KeyError(name)
