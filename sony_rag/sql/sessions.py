"""SQL for chat_sessions."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb

from sony_rag.sql import Params, Query

_COLUMNS = sql.SQL("session_id, created_at, updated_at, user_agent, current_page, metadata")


def insert(session_id: UUID | None, user_agent: str | None, current_page: str | None,
           metadata: dict[str, Any], *, if_missing: bool = False) -> Query:
    """Return an INSERT of one session (``if_missing``: do nothing when the id exists) returning the row."""
    p = Params()
    id_value = p.add(session_id, "uuid") if session_id is not None else sql.SQL("gen_random_uuid()")
    query = sql.SQL(
        "INSERT INTO chat_sessions (session_id, user_agent, current_page, metadata) VALUES ({}, {}, {}, {})"
    ).format(id_value, p.add(user_agent), p.add(current_page), p.add(Jsonb(metadata)))
    if if_missing:
        query += sql.SQL(" ON CONFLICT (session_id) DO NOTHING")
    return query + sql.SQL(" RETURNING ") + _COLUMNS, p.values


def get(session_id: UUID) -> Query:
    """Return a SELECT of one session by id."""
    p = Params()
    return sql.SQL("SELECT {} FROM chat_sessions WHERE session_id = {}").format(
        _COLUMNS, p.add(session_id)), p.values


def update(session_id: UUID, *, user_agent: str | None, current_page: str | None,
           metadata: dict[str, Any] | None) -> Query:
    """Return an UPDATE that sets the given fields (metadata merged key by key) returning the row."""
    p = Params()
    assignments: list[sql.Composable] = [sql.SQL("updated_at = NOW()")]
    if user_agent is not None:
        assignments.append(sql.SQL("user_agent = {}").format(p.add(user_agent)))
    if current_page is not None:
        assignments.append(sql.SQL("current_page = {}").format(p.add(current_page)))
    if metadata is not None:
        assignments.append(sql.SQL("metadata = metadata || {}").format(p.add(Jsonb(metadata))))
    return sql.SQL("UPDATE chat_sessions SET {} WHERE session_id = {} RETURNING {}").format(
        sql.SQL(", ").join(assignments), p.add(session_id), _COLUMNS), p.values


def delete(session_id: UUID) -> Query:
    """Return a DELETE of one session (its messages and selections cascade)."""
    p = Params()
    return sql.SQL("DELETE FROM chat_sessions WHERE session_id = {}").format(p.add(session_id)), p.values


def prune(older_than: timedelta) -> Query:
    """Return a DELETE of sessions with no activity for longer than ``older_than``."""
    p = Params()
    return sql.SQL("DELETE FROM chat_sessions WHERE updated_at < NOW() - {}").format(
        p.add(older_than, "interval")), p.values


def prune_candidates(older_than: timedelta) -> Query:
    """Return a SELECT of the sessions idle for longer than ``older_than``, with their message and selection counts."""
    p = Params()
    return sql.SQL(
        "SELECT s.session_id, s.created_at, s.updated_at, s.current_page,"
        " (SELECT count(*) FROM chat_messages m WHERE m.session_id = s.session_id) AS message_count,"
        " (SELECT count(*) FROM user_text_selections t WHERE t.session_id = s.session_id) AS selection_count"
        " FROM chat_sessions s WHERE s.updated_at < NOW() - {} ORDER BY s.updated_at, s.session_id"
    ).format(p.add(older_than, "interval")), p.values


def prune_listed(older_than: timedelta, session_ids: list[UUID]) -> Query:
    """Return a DELETE of the listed sessions that are still idle for longer than ``older_than``."""
    # Both conditions: a session shown to the user and confirmed, but active again since, stays.
    p = Params()
    return sql.SQL(
        "DELETE FROM chat_sessions WHERE session_id = ANY({}) AND updated_at < NOW() - {}"
    ).format(p.add(session_ids, "uuid[]"), p.add(older_than, "interval")), p.values


def recent(limit: int) -> Query:
    """Return a SELECT of the most recently active sessions with their message counts."""
    p = Params()
    return sql.SQL(
        "SELECT s.session_id, s.created_at, s.updated_at, s.user_agent, s.current_page, s.metadata, "
        "(SELECT count(*) FROM chat_messages m WHERE m.session_id = s.session_id) AS message_count "
        "FROM chat_sessions s ORDER BY s.updated_at DESC LIMIT {}"
    ).format(p.add(limit)), p.values
