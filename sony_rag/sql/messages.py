"""SQL for chat_messages."""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb

from sony_rag.json_values import checked_jsonb
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


def append(session_id: UUID, message_ids: Sequence[UUID], roles: Sequence[str], contents: Sequence[str],
           token_usages: Sequence[int | None], page_context: str | None, metadatas: Sequence[dict[str, Any]], *,
           create_session: Mapping[str, Any] | None) -> Query:
    """Return one statement that marks the session active and appends the messages, returning ``sessions``.

    ``sessions`` is 1 when the session existed (or was created from ``create_session``'s columns), else 0
    and nothing was written. One statement is atomic on its own, so it needs no transaction around it.
    Sending it twice appends the messages once (their ids are the primary key): it may be retried when the
    connection is lost before its outcome is known.
    """
    # Bound in the order _append_text adds its placeholders.
    values: list[Any] = [session_id, page_context]
    if create_session is not None:
        values += [create_session.get("user_agent"), create_session.get("current_page"),
                   Jsonb(create_session.get("metadata") or {})]
    count = len(message_ids)
    if count == 1:
        values += [message_ids[0], roles[0], contents[0], token_usages[0], checked_jsonb(metadatas[0])]
    elif count:
        values += [list(message_ids), list(roles), list(contents), list(token_usages),
                   [checked_jsonb(m) for m in metadatas]]
    return _append_text(create_session is not None, min(count, 2)), _named(values)


@functools.lru_cache(maxsize=8)
def _append_text(create: bool, messages: int) -> sql.SQL:
    """Return the append statement for no messages, one (``messages`` 1) or a batch (2)."""
    # Composed once per shape: composing it on every append cost about 0.1 ms, a tenth of the server's work.
    p = Params()  # placeholders only; append() binds the values in this order
    sid = p.add(None, "uuid")
    page = p.add(None, "text")
    if not create:
        session = sql.SQL(
            "UPDATE chat_sessions SET updated_at = NOW(), current_page = COALESCE({page}, current_page)"
            " WHERE session_id = {sid} RETURNING session_id"
        ).format(page=page, sid=sid)
    else:
        # Created when missing, else touched: the conflict takes the row lock an UPDATE would take.
        session = sql.SQL(
            "INSERT INTO chat_sessions (session_id, user_agent, current_page, metadata)"
            " VALUES ({sid}, {agent}, COALESCE({page}, {current}), {metadata})"
            " ON CONFLICT (session_id) DO UPDATE SET updated_at = NOW(),"
            " current_page = COALESCE({page}, chat_sessions.current_page) RETURNING session_id"
        ).format(sid=sid, agent=p.add(None, "text"), page=page, current=p.add(None, "text"),
                 metadata=p.add(None, "jsonb"))
    if not messages:
        return _rendered(sql.SQL("WITH session AS ({}) SELECT count(*) AS sessions FROM session").format(session))
    # The messages are read from the session CTE, so its row lock is held before any seq value is drawn:
    # concurrent writers to one session queue there, and seq order is commit order.
    if messages == 1:
        # The common call (add_message, insert_chat_message) binds plain values: arrays cost the client their
        # text encoding (a jsonb[] escapes every quote) and the server their parsing, unnest and sort.
        rows = sql.SQL(
            "SELECT {id}, s.session_id, {role}, {content}, {usage}, {page}, {metadata} FROM session AS s"
        ).format(id=p.add(None, "uuid"), role=p.add(None, "text"), content=p.add(None, "text"),
                 usage=p.add(None, "int"), page=page, metadata=p.add(None, "jsonb"))
    else:
        # ORDER BY the array position makes seq follow the caller's order within the batch.
        rows = sql.SQL(
            "SELECT m.message_id, s.session_id, m.role, m.content, m.token_usage, {page}, m.metadata "
            "FROM session AS s, unnest({ids}, {roles}, {contents}, {usages}, {metadatas}) WITH ORDINALITY "
            "AS m(message_id, role, content, token_usage, metadata, position) ORDER BY m.position"
        ).format(page=page, ids=p.add(None, "uuid[]"), roles=p.add(None, "text[]"), contents=p.add(None, "text[]"),
                 usages=p.add(None, "int[]"), metadatas=p.add(None, "jsonb[]"))
    return _rendered(sql.SQL(
        "WITH session AS ({session}), inserted AS ("
        "INSERT INTO chat_messages (message_id, session_id, role, content, token_usage, page_context, metadata) "
        "{rows} ON CONFLICT (message_id) DO NOTHING) "
        "SELECT count(*) AS sessions FROM session"
    ).format(session=session, rows=rows))


def newest(session_id: UUID, limit: int | None) -> Query:
    """Return a SELECT of a session's newest ``limit`` messages (all when None), oldest first."""
    values: list[Any] = [session_id] if limit is None else [session_id, limit]
    return _newest_text(limit is not None), _named(values)


@functools.lru_cache(maxsize=4)
def _newest_text(limited: bool) -> sql.SQL:
    p = Params()  # placeholders only; newest() binds the values in this order
    if not limited:
        return _rendered(sql.SQL("SELECT {} FROM chat_messages WHERE session_id = {} ORDER BY seq").format(
            COLUMNS, p.add(None)))
    # The inner ORDER BY seq DESC LIMIT reads only `limit` index entries, however long the session is.
    return _rendered(sql.SQL(
        "SELECT {} FROM (SELECT {} FROM chat_messages WHERE session_id = {} ORDER BY seq DESC LIMIT {}) newest "
        "ORDER BY seq"
    ).format(COLUMNS, COLUMNS, p.add(None), p.add(None)))


def newest_messages(session_id: UUID, limit: int | None, known_seqs: Sequence[int],
                    known_versions: Sequence[int]) -> Query:
    """Return a SELECT of a session's newest ``limit`` rows (all when None), oldest first, for a message reader.

    Each row has ``seq`` and ``version`` (its xmin, which every UPDATE changes) and, unless the reader already holds
    that row at that version (``known_seqs`` at ``known_versions``), what a LangChain message is made of: ``role``,
    ``content`` and ``metadata`` as JSON text (parsed by the reader, faster than psycopg would); for a known row
    they are NULL, so the server neither reads nor sends them.
    """
    known = Jsonb({str(seq): str(version) for seq, version in zip(known_seqs, known_versions, strict=True)})
    values: list[Any] = [known, session_id] if limit is None else [known, session_id, limit]
    return _newest_messages_text(limit is not None), _named(values)


@functools.lru_cache(maxsize=2)
def _newest_messages_text(limited: bool) -> sql.SQL:
    p = Params()  # placeholders only; newest_messages() binds the values in this order
    known = p.add(None, "jsonb")
    session = p.add(None, "uuid")
    limit = sql.SQL(" ORDER BY seq DESC LIMIT {}").format(p.add(None, "int")) if limited else sql.SQL("")
    # The known rows go as one jsonb object {seq: version}, looked up per row (no join the planner could misjudge);
    # the lateral subquery yields the columns only for rows the reader lacks.
    return _rendered(sql.SQL(
        "SELECT m.seq, m.version, k.role, k.content, k.metadata FROM ("
        "SELECT seq, xmin::text::bigint AS version, role, content, metadata FROM chat_messages"
        " WHERE session_id = {session}{limit}) AS m"
        " LEFT JOIN LATERAL (SELECT m.role::text AS role, m.content, m.metadata::text AS metadata"
        " WHERE {known} ->> m.seq::text IS DISTINCT FROM m.version::text) AS k ON true"
        " ORDER BY m.seq"
    ).format(session=session, limit=limit, known=known))


def _rendered(statement: sql.Composable) -> sql.SQL:
    # The final text, placeholders included, as one SQL object: psycopg then only encodes it per call.
    return sql.SQL(statement.as_string(None))


def _named(values: Sequence[Any]) -> dict[str, Any]:
    # The names Params hands out, in order: p0, p1, ...
    return {f"p{index}": value for index, value in enumerate(values)}


def delete_for_session(session_id: UUID) -> Query:
    """Return a DELETE of every message of one session."""
    p = Params()
    return sql.SQL("DELETE FROM chat_messages WHERE session_id = {}").format(p.add(session_id)), p.values
