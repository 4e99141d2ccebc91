"""SQL that ``migrate --test`` runs: the live schema read from the catalog, and the probes of its round trip."""

from __future__ import annotations

from uuid import UUID

from psycopg import sql

from sony_rag.sql import Params, Query


def _table(p: Params, name: str) -> sql.Composable:
    return sql.SQL("to_regclass({})").format(p.add(name, "text"))


def extension_version() -> Query:
    """Return a SELECT of ``extversion`` of the vector extension (no row when it is not installed)."""
    return sql.SQL("SELECT extversion FROM pg_extension WHERE extname = 'vector'"), {}


def columns(table: str) -> Query:
    """Return a SELECT of a table's columns in order: name, type, nullable, default, identity, generated."""
    p = Params()
    return sql.SQL(
        "SELECT a.attname AS name, format_type(a.atttypid, a.atttypmod) AS type, NOT a.attnotnull AS nullable, "
        "CASE WHEN a.attgenerated = '' THEN pg_get_expr(d.adbin, d.adrelid) END AS default, "
        "CASE a.attidentity WHEN 'a' THEN 'always' WHEN 'd' THEN 'by default' END AS identity, "
        "CASE WHEN a.attgenerated <> '' THEN pg_get_expr(d.adbin, d.adrelid) END AS generated "
        "FROM pg_attribute a LEFT JOIN pg_attrdef d ON d.adrelid = a.attrelid AND d.adnum = a.attnum "
        "WHERE a.attrelid = {} AND a.attnum > 0 AND NOT a.attisdropped ORDER BY a.attnum"
    ).format(_table(p, table)), p.values


def indexes(table: str) -> Query:
    """Return a SELECT of a table's indexes but the primary key's: name, unique, definition from ``USING`` on."""
    p = Params()
    return sql.SQL(
        "SELECT c.relname AS name, i.indisunique AS unique, "
        "substring(pg_get_indexdef(i.indexrelid) from ' (USING .*)$') AS definition "
        "FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        "WHERE i.indrelid = {} AND NOT i.indisprimary ORDER BY c.relname"
    ).format(_table(p, table)), p.values


def constraints(table: str) -> Query:
    """Return a SELECT of a table's constraints: name, kind (``p``, ``f``, ``c``, ...) and definition."""
    p = Params()
    return sql.SQL(
        "SELECT conname AS name, contype AS kind, pg_get_constraintdef(oid) AS definition "
        "FROM pg_constraint WHERE conrelid = {} ORDER BY conname"
    ).format(_table(p, table)), p.values


def triggers(table: str) -> Query:
    """Return a SELECT of the names of a table's own triggers (not those PostgreSQL makes for foreign keys)."""
    p = Params()
    return sql.SQL("SELECT tgname AS name FROM pg_trigger WHERE tgrelid = {} AND NOT tgisinternal ORDER BY tgname"
                   ).format(_table(p, table)), p.values


# -- the round trip's probes: each touches only the session that the round trip created --------------------


def backdate_session(session_id: UUID) -> Query:
    """Return an UPDATE moving one session's ``updated_at`` a day back."""
    p = Params()
    return sql.SQL("UPDATE chat_sessions SET updated_at = NOW() - interval '1 day' WHERE session_id = {}").format(
        p.add(session_id)), p.values


def touch_session(session_id: UUID) -> Query:
    """Return an UPDATE of one session's ``user_agent`` only, so that a fresh ``updated_at`` is the trigger's."""
    p = Params()
    return sql.SQL("UPDATE chat_sessions SET user_agent = 'touched' WHERE session_id = {}").format(
        p.add(session_id)), p.values


def session_is_fresh(session_id: UUID) -> Query:
    """Return a SELECT of ``fresh``: whether the session's ``updated_at`` is within the last minute."""
    p = Params()
    return sql.SQL("SELECT updated_at >= NOW() - interval '1 minute' AS fresh FROM chat_sessions "
                   "WHERE session_id = {}").format(p.add(session_id)), p.values


def child_rows(session_id: UUID) -> Query:
    """Return a SELECT of ``n``: the messages and selections still pointing at a session."""
    p = Params()
    session = p.add(session_id)
    return sql.SQL("SELECT (SELECT count(*) FROM chat_messages WHERE session_id = {0}) + "
                   "(SELECT count(*) FROM user_text_selections WHERE session_id = {0}) AS n").format(
        session), p.values


def insert_bad_role(session_id: UUID) -> Query:
    """Return an INSERT of a message whose role the check constraint must refuse."""
    p = Params()
    return sql.SQL("INSERT INTO chat_messages (session_id, role, content) VALUES ({}, 'robot', 'x')").format(
        p.add(session_id)), p.values
