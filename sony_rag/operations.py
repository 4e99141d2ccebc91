"""The documented async database operations (DATABASE.md, "Using Database Operations").

Each function takes an optional ``db``; without one it uses the process-wide default ``Database``, opened
lazily (or by ``init_db``) and closed by ``close_db``. Results are plain dicts keyed by column name.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterable, Mapping, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

from sony_rag import plans, retrieval
from sony_rag import validation as check
from sony_rag.database import Database
from sony_rag.durations import parse_age
from sony_rag.errors import InvalidInputError, InvalidSourceTypeError
from sony_rag.json_values import checked_jsonb
from sony_rag.replicas import observe_position, write_position
from sony_rag.retrieval import SearchRequest
from sony_rag.types import ChatMessage, ChatSession, EmbeddingInput, EmbeddingMatch, TextSelection

_default_lock = threading.Lock()
_default_db: Database | None = None


def init_db(url: str | None = None) -> Database:
    """Return the process-wide default Database, creating it for ``url`` (or the settings) if needed."""
    global _default_db
    with _default_lock:
        if _default_db is None:
            _default_db = Database(url)
        return _default_db


def get_db(db: Database | None = None) -> Database:
    """Return ``db`` if given, else the process-wide default Database (created on first use)."""
    return db if db is not None else init_db()


async def close_db() -> None:
    """Close the process-wide default Database's pools (a later call opens a new one)."""
    global _default_db
    with _default_lock:
        db, _default_db = _default_db, None
    if db is not None:
        await db.aclose()


# -- chat sessions -------------------------------------------------------------------------------------


async def create_chat_session(user_agent: str | None = None, current_page: str | None = None,
                              metadata: Mapping[str, Any] | None = None, *, session_id: UUID | str | None = None,
                              db: Database | None = None) -> UUID:
    """Create a chat session and return its id; raises InvalidInputError for bad input."""
    new_id = check.as_uuid(session_id, "session_id") if session_id is not None else uuid.uuid4()
    row = await get_db(db).arun(plans.create_session(
        new_id, check.text(user_agent, "user_agent", optional=True),
        check.text(current_page, "current_page", optional=True), check.metadata(metadata)))
    assert row is not None
    return row["session_id"]  # type: ignore[no-any-return]


async def get_chat_session(session_id: UUID | str, *, db: Database | None = None) -> ChatSession | None:
    """Return the session's row, or None when it does not exist; raises InvalidIdentifierError for a bad id."""
    row = await get_db(db).arun(plans.get_session(check.as_uuid(session_id, "session_id")))
    return row  # type: ignore[return-value]


async def update_chat_session(session_id: UUID | str, current_page: str | None = None,
                              metadata: Mapping[str, Any] | None = None, *, user_agent: str | None = None,
                              db: Database | None = None) -> ChatSession:
    """Update the given fields (metadata merged key by key) and return the row; raises SessionNotFoundError."""
    row = await get_db(db).arun(plans.update_session(
        check.as_uuid(session_id, "session_id"), check.text(user_agent, "user_agent", optional=True),
        check.text(current_page, "current_page", optional=True),
        None if metadata is None else check.metadata(metadata)))
    return row  # type: ignore[return-value]


async def delete_chat_session(session_id: UUID | str, *, db: Database | None = None) -> bool:
    """Delete a session with its messages and selections; return False when it did not exist."""
    return await get_db(db).arun(plans.delete_session(check.as_uuid(session_id, "session_id")))


async def prune_chat_sessions(older_than: timedelta | str, *, db: Database | None = None) -> int:
    """Delete sessions idle for longer than ``older_than`` (a timedelta or "30d", "12h", "90min"); return the count."""
    return await get_db(db).arun(plans.prune_sessions(parse_age(older_than)))


# -- chat messages -------------------------------------------------------------------------------------


async def insert_chat_message(session_id: UUID | str, role: str, content: str, page_context: str | None = None,
                              token_usage: int | None = None, metadata: Mapping[str, Any] | None = None, *,
                              db: Database | None = None) -> UUID:
    """Append a message to a session and return its id; raises SessionNotFoundError or InvalidInputError."""
    if token_usage is not None and (isinstance(token_usage, bool) or not isinstance(token_usage, int)
                                    or not 0 <= token_usage < 2**31):
        raise InvalidInputError(f"token_usage must be a non-negative 32-bit int, got {token_usage!r}")
    message_id = uuid.uuid4()
    await get_db(db).arun(plans.add_messages(
        check.as_uuid(session_id, "session_id"), [message_id], [check.role(role)],
        [check.required_text(content, "content")], [token_usage],
        check.text(page_context, "page_context", optional=True), [check.metadata(metadata)]))
    return message_id


async def get_chat_history(session_id: UUID | str, limit: int | None = 50, *, min_position: str | None = None,
                           db: Database | None = None) -> list[ChatMessage]:
    """Return the session's newest ``limit`` messages (all when None), oldest first, in insertion order.

    With read replicas the read sees every write of the session made through ``db``, and every write up to
    ``min_position`` (from ``get_write_position``, e.g. in another process); raises InvalidInputError.
    """
    database, session = get_db(db), check.as_uuid(session_id, "session_id")
    count = _limit(limit, True)
    if min_position is not None:
        observe_position(database, session, min_position)
    rows = await database.arun(plans.history(session, count))
    return rows  # type: ignore[return-value]


def get_write_position(session_id: UUID | str, *, db: Database | None = None) -> str | None:
    """Return the WAL position (``16/B374D848``) a read must see to include this process's writes to the session.

    None without read replicas, or when ``db`` wrote nothing to the session lately. Pass it as ``min_position``.
    """
    return write_position(get_db(db), check.as_uuid(session_id, "session_id"))


# -- embeddings ----------------------------------------------------------------------------------------


async def insert_embedding(source_type: str, source_id: str | None, content_chunk: str, embedding: Any,
                           metadata: Mapping[str, Any] | None = None, *, db: Database | None = None) -> UUID:
    """Store one chunk with its 384-d embedding and return its id; raises InvalidInputError subclasses."""
    ids = await batch_insert_embeddings(
        [{"source_type": source_type, "source_id": source_id, "content_chunk": content_chunk,
          "embedding": embedding, "metadata": metadata}], db=db)
    return ids[0]


async def batch_insert_embeddings(embeddings_data: Iterable[Mapping[str, Any] | EmbeddingInput], *,
                                  db: Database | None = None, rebuild_stale_index: bool = False) -> list[UUID]:
    """Store many chunks in one transaction through binary COPY and return their ids in input order.

    Every item is checked; a bad one raises InvalidInputError naming it and nothing is written. With
    ``rebuild_stale_index``, after the rows are committed an IVFFlat index trained on far fewer rows than the
    table then holds (the migration's, built on an empty table) is rebuilt sized for the data, as ``sony-rag
    ingest`` does (``indexes.arebuild_if_stale``; the sony_rag logger says so); a rebuild that fails raises
    IndexBuildError, and the inserted rows stay.
    """
    if not isinstance(rebuild_stale_index, bool):
        raise InvalidInputError(f"rebuild_stale_index must be True or False, got {rebuild_stale_index!r}")
    items = list(embeddings_data)
    ids = [uuid.uuid4() for _ in items]
    if items:
        database = get_db(db)
        # Items are checked as they stream into the COPY, so the checks overlap the server's work (float32 arrays'
        # vectors all at once first, when they pass: per row, numpy's call overhead was a third of the checks);
        # a bad item aborts the COPY and its transaction.
        vectors_checked = all(isinstance(item, Mapping) for item in items) and check.vectors_pass_in_bulk(
            [item.get("embedding") for item in items])
        rows = (embedding_row(item, index, embedding_id=ids[index], vector_checked=vectors_checked)
                for index, item in enumerate(items))
        await database.arun(plans.insert_embeddings(rows))
        if rebuild_stale_index:
            # Imported here: sony_rag.indexes imports sony_rag.database, which imports this module (the spec's path).
            from sony_rag.indexes import arebuild_if_stale

            await arebuild_if_stale(database)
    return ids


def embedding_row(item: Mapping[str, Any], index: int = 0, *, embedding_id: UUID | None = None,
                  document_id: str | None = None, vector_checked: bool = False) -> plans.EmbeddingRow:
    """Return one validated COPY row for document_embeddings; raises InvalidInputError naming item ``index``.

    ``vector_checked``: the item's embedding already passed ``validation.vectors_pass_in_bulk``.
    """
    if not isinstance(item, Mapping):
        raise InvalidInputError(f"item {index} must be a dict, got {type(item).__name__}")
    unknown = set(item) - {"source_type", "source_id", "content_chunk", "embedding", "metadata"}
    if unknown:
        raise InvalidInputError(f"item {index} has unknown keys {sorted(unknown)}")
    for key in ("source_type", "content_chunk", "embedding"):
        if key not in item:
            raise InvalidInputError(f"item {index} is missing {key!r}")
    try:
        source_type = check.source_type(item["source_type"])
    except InvalidSourceTypeError as error:
        raise InvalidSourceTypeError(f"item {index} {error}") from None
    return (
        embedding_id or uuid.uuid4(),
        source_type,
        check.text(item.get("source_id"), f"item {index} source_id", optional=True),
        check.required_text(item["content_chunk"], f"item {index} content_chunk"),
        item["embedding"] if vector_checked else check.vector(item["embedding"], f"item {index} embedding"),
        checked_jsonb(check.metadata(item.get("metadata"), f"item {index} metadata")),
        document_id,
    )


async def search_similar_embeddings(query_embedding: Any, source_type: str | None = None, limit: int = 5,
                                    similarity_threshold: float | None = None, *,
                                    filter: Mapping[str, Any] | None = None, query_text: str | None = None,
                                    db: Database | None = None) -> list[EmbeddingMatch]:
    """Return up to ``limit`` chunks by cosine similarity, highest first, at or above the threshold.

    Exact count: never fewer than ``limit`` when that many rows match, whatever the index. ``filter`` takes
    the metadata filter grammar. With ``query_text`` the ranking is hybrid (vector and full-text search fused
    by reciprocal rank fusion) and ``similarity`` is still each row's cosine similarity.
    Raises InvalidEmbeddingError, InvalidSourceTypeError, InvalidFilterError or InvalidTextError.
    """
    request = SearchRequest.of(query_embedding, k=limit, mode="vector" if query_text is None else "hybrid",
                               text=query_text, filter=filter, source_type=source_type,
                               score_threshold=similarity_threshold, k_name="limit",
                               threshold_name="similarity_threshold", vector_name="query_embedding")
    database = get_db(db)
    rows = await retrieval.arun(database, request, plans.HybridOptions.from_settings(database.settings))
    return [match_from_row(row) for row in rows]


def match_from_row(row: Mapping[str, Any]) -> EmbeddingMatch:
    """Return the documented search result for a row carrying ``distance``."""
    return EmbeddingMatch(
        embedding_id=row["embedding_id"], source_type=row["source_type"], source_id=row["source_id"],
        content_chunk=row["content_chunk"], metadata=row["metadata"], created_at=row["created_at"],
        updated_at=row["updated_at"], similarity=1.0 - float(row["distance"]),
    )


def _limit(value: int | None, allow_none: bool) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise InvalidInputError(f"limit must be a positive integer, got {value!r}")
    return value


async def delete_embeddings_by_source(source_type: str, source_id: str | None = None, *,
                                      db: Database | None = None) -> int:
    """Delete the chunks of this type AND this source id (every chunk of the type when None); return how many."""
    return await get_db(db).arun(plans.delete_embeddings(
        source=(check.source_type(source_type), check.text(source_id, "source_id", optional=True))))


# -- text selections -----------------------------------------------------------------------------------


async def insert_text_selection(session_id: UUID | str, selected_text: str, page_url: str | None = None,
                                embedding: Any | None = None, metadata: Mapping[str, Any] | None = None, *,
                                db: Database | None = None) -> UUID:
    """Record a shopper's text selection and return its id; raises SessionNotFoundError or InvalidInputError."""
    return await get_db(db).arun(plans.insert_selection(
        check.as_uuid(session_id, "session_id"), check.required_text(selected_text, "selected_text"),
        check.text(page_url, "page_url", optional=True),
        None if embedding is None else check.vector(embedding), check.metadata(metadata)))


async def get_session_selections(session_id: UUID | str, limit: int = 10, *,
                                 db: Database | None = None) -> list[TextSelection]:
    """Return the session's newest ``limit`` selections, newest first."""
    rows = await get_db(db).arun(plans.recent_selections(check.as_uuid(session_id, "session_id"),
                                                         _limit(limit, False) or 10))
    return [selection_from_row(row) for row in rows]


def selection_from_row(row: Mapping[str, Any]) -> TextSelection:
    """Return the documented selection dict for a row (embedding as a list of floats)."""
    vector = row["embedding"]
    if vector is not None:
        vector = [float(x) for x in (vector.to_numpy() if hasattr(vector, "to_numpy") else vector)]
    return TextSelection(
        selection_id=row["selection_id"], session_id=row["session_id"], selected_text=row["selected_text"],
        page_url=row["page_url"], created_at=row["created_at"], embedding=vector, metadata=row["metadata"],
    )


__all__: Sequence[str] = [
    "batch_insert_embeddings", "close_db", "create_chat_session", "delete_chat_session",
    "delete_embeddings_by_source", "get_chat_history", "get_chat_session", "get_db", "get_session_selections",
    "get_write_position", "init_db", "insert_chat_message", "insert_embedding", "insert_text_selection",
    "prune_chat_sessions", "search_similar_embeddings", "update_chat_session",
]
