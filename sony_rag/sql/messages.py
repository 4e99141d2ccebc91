"""SQL for chat_messages."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb

from sony_rag.sql import Params, Query

COLUMNS = sql.SQL("message_id, session_id, role, content, created_at, token_usage, page_context, metadata, seq")


def insert_many(session_id: UUID, message_ids: Sequence[UUID], roles: Sequence[str], contents: Sequence[str],
                token_usages: Sequence[int | None], page_contexts: Sequence[str | None],
                metadatas: Sequence[dict[str, Any]]) -> Query:
    """Return one INSERT of many messages whose ``seq`` follows the order of the given lists."""
    p = Params()
    # ORDER BY the array position makes the identity values follow the caller's order within one statement.
    query = sql.SQL(
        "INSERT INTO chat_messages (message_id, session_id, role, content, token_usage, page_context, metadata) "
        "SELECT m.message_id, {}, m.role, m.content, m.token_usage, m.page_context, m.metadata "
        "FROM unnest({}, {}, {}, {}, {}, {}) WITH ORDINALITY "
        "AS m(message_id, role, content, token_usage, page_context, metadata, position) ORDER BY m.position"
    ).format(
        p.add(session_id, "uuid"), p.add(list(message_ids), "uuid[]"), p.add(list(roles), "text[]"),
        p.add(list(contents), "text[]"), p.add(list(token_usages), "int[]"),
        p.add(list(page_contexts), "text[]"), p.add([Jsonb(m) for m in metadatas], "jsonb[]"),
    )
    return query, p.values


def newest(session_id: UUID, limit: int | None) -> Query:
    """Return a SELECT of a session's newest ``limit`` messages (all when None), oldest first."""
    p = Params()
    if limit is None:
        return sql.SQL("SELECT {} FROM chat_messages WHERE session_id = {} ORDER BY seq").format(
            COLUMNS, p.add(session_id)), p.values
    # The inner ORDER BY seq DESC LIMIT reads only `limit` index entries, however long the session is.
    return sql.SQL(
        "SELECT * FROM (SELECT {} FROM chat_messages WHERE session_id = {} ORDER BY seq DESC LIMIT {}) newest "
        "ORDER BY seq"
    ).format(COLUMNS, p.add(session_id), p.add(limit)), p.values


def delete_for_session(session_id: UUID) -> Query:
    """Return a DELETE of every message of one session."""
    p = Params()
    return sql.SQL("DELETE FROM chat_messages WHERE session_id = {}").format(p.add(session_id)), p.values
