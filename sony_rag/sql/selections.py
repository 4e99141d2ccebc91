"""SQL for user_text_selections."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb

from sony_rag.sql import Params, Query

COLUMNS = sql.SQL("selection_id, session_id, selected_text, page_url, created_at, embedding, metadata")


def insert(session_id: UUID, selected_text: str, page_url: str | None, embedding: Any,
           metadata: dict[str, Any]) -> Query:
    """Return an INSERT of one selection returning its id."""
    p = Params()
    return sql.SQL(
        "INSERT INTO user_text_selections (session_id, selected_text, page_url, embedding, metadata, created_at) "
        "VALUES ({}, {}, {}, {}, {}, clock_timestamp()) RETURNING selection_id"
    ).format(p.add(session_id), p.add(selected_text), p.add(page_url), p.add(embedding),
             p.add(Jsonb(metadata))), p.values


def recent(session_id: UUID, limit: int, max_age: timedelta | None = None) -> Query:
    """Return a SELECT of a session's newest selections (optionally not older than ``max_age``), newest first."""
    p = Params()
    age: sql.Composable = sql.SQL("")
    if max_age is not None:
        age = sql.SQL(" AND created_at >= NOW() - {}").format(p.add(max_age, "interval"))
    return sql.SQL(
        "SELECT {} FROM user_text_selections WHERE session_id = {}{} "
        "ORDER BY created_at DESC, selection_id DESC LIMIT {}"
    ).format(COLUMNS, p.add(session_id), age, p.add(limit)), p.values
