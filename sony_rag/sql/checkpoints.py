"""SQL for LangGraph checkpoints: chat_checkpoints, chat_checkpoint_blobs, chat_checkpoint_writes, and the
chat_messages rows that the root ``messages`` channel refers to (see ``sony_rag.checkpointer``)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from psycopg import sql
from psycopg.types.json import Jsonb

from sony_rag.sql import Params, Query

_CHECKPOINT_COLUMNS = sql.SQL(
    "c.session_id, c.checkpoint_ns, c.checkpoint_id, c.parent_checkpoint_id, c.checkpoint, c.metadata, "
    "s.metadata ->> 'langgraph_thread_id' AS thread_name"
)


def _compact(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


def upsert_session(session_id: UUID, thread_name: str | None, current_page: str | None) -> Query:
    """Return an INSERT of a thread's session that, when it exists, marks it active (and locks its row)."""
    p = Params()
    metadata = {"langgraph_thread_id": thread_name} if thread_name is not None else {}
    return sql.SQL(
        "INSERT INTO chat_sessions (session_id, current_page, metadata) VALUES ({}, {}, {}) "
        "ON CONFLICT (session_id) DO UPDATE SET updated_at = NOW(), "
        "current_page = COALESCE(EXCLUDED.current_page, chat_sessions.current_page)"
    ).format(p.add(session_id, "uuid"), p.add(current_page, "text"), p.add(Jsonb(metadata))), p.values


def touch_session(session_id: UUID, thread_name: str | None, current_page: str | None, channel: str) -> Query:
    """Return ``upsert_session`` (which locks the session's row) and, in the same round trip, a SELECT of the
    session's root-namespace pending writes to ``channel`` still stored as blobs; every row has the session's
    new ``updated_at`` (one row with NULL write columns when there are none)."""
    upsert, p = upsert_session(session_id, thread_name, current_page)
    params = Params(dict(p))
    return sql.SQL(
        "WITH touched AS ({} RETURNING updated_at) SELECT t.updated_at, w.checkpoint_id, w.task_id, w.idx, w.type, "
        "w.blob FROM touched t LEFT JOIN chat_checkpoint_writes w ON w.session_id = {} AND w.checkpoint_ns = '' "
        "AND w.channel = {} AND w.message_runs IS NULL AND w.blob IS NOT NULL"
    ).format(upsert, params.add(session_id, "uuid"), params.add(channel, "text")), params.values


def message_keys(session_id: UUID) -> Query:
    """Return a SELECT of every message row of a session in writing order: seq, message_key, and for rows
    written without a key (by the history class) the message id they decode to (``adoptable``)."""
    p = Params()
    return sql.SQL(
        "SELECT seq, message_key, CASE WHEN message_key IS NULL THEN "
        "coalesce(metadata -> 'data' ->> 'id', message_id::text) END AS adoptable "
        "FROM chat_messages WHERE session_id = {} ORDER BY seq"
    ).format(p.add(session_id)), p.values


def adopt_rows(session_id: UUID, seqs: Sequence[int], keys: Sequence[str]) -> Query:
    """Return an UPDATE giving rows written without a key (``seqs``) the message keys of the agent's state."""
    p = Params()
    return sql.SQL(
        "UPDATE chat_messages m SET message_key = a.message_key FROM unnest({}, {}) AS a(seq, message_key) "
        "WHERE m.session_id = {} AND m.seq = a.seq AND m.message_key IS NULL"
    ).format(p.add(list(seqs), "bigint[]"), p.add(list(keys), "text[]"), p.add(session_id, "uuid")), p.values


@dataclass(frozen=True)
class Guard:
    """A put's condition, for one statement without a transaction: the session is as the saver left it.

    The session's ``updated_at`` (which every writer of the session changes, read on its newest version by the
    upsert that locks it) is still ``updated_at``, and its rows are still ``count`` with the highest seq
    ``max_seq``. The upsert also marks the session active, like ``upsert_session``.
    """

    thread_name: str | None
    current_page: str | None
    updated_at: Any
    count: int
    max_seq: int


@dataclass(frozen=True)
class NewMessages:
    """Message rows to write with a checkpoint, in list order: the columns of each, and the page they share."""

    keys: Sequence[str]
    roles: Sequence[str]
    contents: Sequence[str]
    token_usages: Sequence[int | None]
    page_context: str | None
    metadatas: Sequence[dict[str, Any]]


def insert_checkpoint(session_id: UUID, checkpoint_ns: str, checkpoint_id: str, parent_id: str | None,
                      checkpoint: dict[str, Any], metadata: dict[str, Any],
                      blobs: Sequence[tuple[str, str, str, bytes | None]],
                      compacted: Sequence[tuple[str, str, int, list[int]]], rows_type: str, runs_key: str,
                      runs: tuple[str, Sequence[int]] | None, new: NewMessages, guard: Guard | None = None) -> Query:
    """Return one statement writing new message rows, new channel versions ``(channel, version, type, blob)``
    and a checkpoint, and pointing root-namespace writes ``(checkpoint_id, task_id, idx, runs)`` at message rows.

    ``runs`` (channel, flat pairs of row seqs) goes into the checkpoint's body under ``runs_key``. In it and in
    ``compacted``, -1, -2, ... stand for the rows of ``new`` in order: their seqs once inserted (``seq`` is an
    identity, given in the order of the INSERT). A checkpoint stored again under its id is replaced; a channel
    version already stored is kept as it is.

    Returns one row: ``ok`` (false when ``guard`` did not hold: then nothing was written), ``updated_at`` (the
    session's, when guarded), ``seqs`` (of the new rows, in order) and ``compacted`` (the writes pointed at rows,
    as [checkpoint_id, task_id, idx]; a write not committed yet is not among them).
    """
    p = Params()
    ok: sql.Composable = sql.SQL("")
    guarded = sql.SQL("true")
    if guard is not None:
        upsert, upsert_params = upsert_session(session_id, guard.thread_name, guard.current_page)
        p = Params(dict(upsert_params))
        ok = sql.SQL(
            "touched AS ({} WHERE chat_sessions.updated_at = {} RETURNING updated_at), "
            "ok AS MATERIALIZED (SELECT EXISTS (SELECT 1 FROM touched) AND (SELECT count(*) = {} "
            "AND coalesce(max(seq), 0) = {} FROM chat_messages WHERE session_id = {}) AS ok), "
        ).format(upsert, p.add(guard.updated_at, "timestamptz"), p.add(guard.count, "bigint"),
                 p.add(guard.max_seq, "bigint"), p.add(session_id, "uuid"))
        guarded = sql.SQL("(SELECT ok FROM ok)")
    channels, versions, types, data = (list(column) for column in zip(*blobs, strict=True)) if blobs \
        else ([], [], [], [])
    session = p.add(session_id, "uuid")
    namespace = p.add(checkpoint_ns, "text")
    ids, tasks, indexes, write_runs = (list(column) for column in zip(*compacted, strict=True)) if compacted \
        else ([], [], [], [])
    # The body is compact JSON text of an object with at least channel_values: the runs are spliced in as its
    # first key, in SQL, once the new rows' seqs are known.
    text = p.add(_compact(checkpoint), "text")
    body = sql.SQL("{}::json").format(text)
    if runs is not None:
        body = sql.SQL(
            "('{{' || to_json({})::text || ':{{' || to_json({})::text || ':' || array_to_json(coalesce((SELECT "
            "array_agg(coalesce(n.seq, r.v) ORDER BY r.o) FROM unnest({}) WITH ORDINALITY AS r(v, o) "
            "LEFT JOIN numbered n ON n.ref = r.v), '{{}}'))::text || '}},' || substr({}, 2))::json"
        ).format(p.add(runs_key, "text"), p.add(runs[0], "text"), p.add(list(runs[1]), "bigint[]"), text)
    query = sql.SQL(
        "WITH {ok}new_rows AS (INSERT INTO chat_messages (session_id, role, content, token_usage, page_context, "
        "metadata, message_key) SELECT {session}, m.role, m.content, m.token_usage, {}, m.metadata, m.message_key "
        "FROM unnest({}, {}, {}, {}, {}) WITH ORDINALITY AS m(message_key, role, content, token_usage, metadata, "
        "position) WHERE {guarded} ORDER BY m.position RETURNING seq), "
        "numbered AS (SELECT seq, -row_number() OVER (ORDER BY seq) AS ref FROM new_rows), "
        "blobs AS (INSERT INTO chat_checkpoint_blobs (session_id, checkpoint_ns, channel, version, type, blob) "
        "SELECT {session}, {namespace}, b.channel, b.version, b.type, b.blob "
        "FROM unnest({}, {}, {}, {}::bytea[]) AS b(channel, version, type, blob) WHERE {guarded} "
        "ON CONFLICT DO NOTHING), "
        "compacted AS (UPDATE chat_checkpoint_writes w SET type = {}, blob = NULL, message_runs = "
        "(SELECT array_agg(coalesce(n.seq, r.v) ORDER BY r.o) FROM unnest(u.runs::bigint[]) WITH ORDINALITY "
        "AS r(v, o) LEFT JOIN numbered n ON n.ref = r.v) "
        "FROM unnest({}, {}, {}, {}) AS u(checkpoint_id, task_id, idx, runs) WHERE w.session_id = {session} "
        "AND w.checkpoint_ns = '' AND w.checkpoint_id = u.checkpoint_id AND w.task_id = u.task_id "
        "AND w.idx = u.idx AND w.message_runs IS NULL AND {guarded} RETURNING w.checkpoint_id, w.task_id, w.idx), "
        "checkpoint AS (INSERT INTO chat_checkpoints (session_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, "
        "checkpoint, metadata) SELECT {session}, {namespace}, {}, {}, {}, {} WHERE {guarded} "
        "ON CONFLICT (session_id, checkpoint_ns, checkpoint_id) DO UPDATE SET checkpoint = EXCLUDED.checkpoint, "
        "metadata = EXCLUDED.metadata) "
        "SELECT {guarded} AS ok, {updated} AS updated_at, "
        "(SELECT array_agg(seq ORDER BY seq) FROM new_rows) AS seqs, "
        "(SELECT json_agg(json_build_array(checkpoint_id, task_id, idx)) FROM compacted) AS compacted"
    ).format(
        p.add(new.page_context, "text"), p.add(list(new.keys), "text[]"), p.add(list(new.roles), "text[]"),
        p.add(list(new.contents), "text[]"), p.add(list(new.token_usages), "int[]"),
        p.add([Jsonb(m) for m in new.metadatas], "jsonb[]"),
        p.add(channels, "text[]"), p.add(versions, "text[]"), p.add(types, "text[]"), p.add(data),
        p.add(rows_type, "text"), p.add(ids, "text[]"), p.add(tasks, "text[]"), p.add(indexes, "int[]"),
        p.add([_runs_text(r) for r in write_runs], "text[]"),
        p.add(checkpoint_id, "text"), p.add(parent_id, "text"), body, p.add(Jsonb(metadata)),
        session=session, namespace=namespace, ok=ok, guarded=guarded,
        updated=sql.SQL("(SELECT updated_at FROM touched)" if guard is not None else "NULL::timestamptz"),
    )
    return query, p.values


def _runs_text(runs: list[int] | None) -> str | None:
    return None if runs is None else "{" + ",".join(str(value) for value in runs) + "}"


def insert_writes(session_id: UUID, thread_name: str | None, checkpoint_ns: str, checkpoint_id: str,
                  task_id: str, task_path: str, writes: Sequence[tuple[int, str, str, bytes | None, list[int] | None]],
                  *, replace: bool) -> Query:
    """Return an INSERT of pending writes ``(idx, channel, type, blob, runs)``; ``replace`` overwrites same idx.

    The thread's session is created when missing, without touching an existing one: LangGraph writes a step's
    tasks from several threads at once, beside the put that locks the session's row. (An INSERT ... ON CONFLICT
    alone would wait for that put to commit; NOT EXISTS reads the committed row and does not.)
    """
    p = Params()
    metadata = {"langgraph_thread_id": thread_name} if thread_name is not None else {}
    indexes, channels, types, data, runs = (list(column) for column in zip(*writes, strict=True))
    conflict = (sql.SQL("DO UPDATE SET channel = EXCLUDED.channel, type = EXCLUDED.type, blob = EXCLUDED.blob, "
                        "message_runs = EXCLUDED.message_runs") if replace else sql.SQL("DO NOTHING"))
    session = p.add(session_id, "uuid")
    return sql.SQL(
        "WITH session AS (INSERT INTO chat_sessions (session_id, metadata) SELECT {session}, {} "
        "WHERE NOT EXISTS (SELECT 1 FROM chat_sessions WHERE session_id = {session}) "
        "ON CONFLICT (session_id) DO NOTHING) "
        "INSERT INTO chat_checkpoint_writes (session_id, checkpoint_ns, checkpoint_id, task_id, task_path, idx, "
        "channel, type, blob, message_runs) SELECT {session}, {}, {}, {}, {}, w.idx, w.channel, w.type, w.blob, "
        "w.runs::bigint[] FROM unnest({}, {}, {}, {}::bytea[], {}) AS w(idx, channel, type, blob, runs) "
        "ON CONFLICT (session_id, checkpoint_ns, checkpoint_id, task_id, idx) {}"
    ).format(
        p.add(Jsonb(metadata)), p.add(checkpoint_ns, "text"), p.add(checkpoint_id, "text"),
        p.add(task_id, "text"), p.add(task_path, "text"), p.add(indexes, "int[]"), p.add(channels, "text[]"),
        p.add(types, "text[]"), p.add(data), p.add([_runs_text(r) for r in runs], "text[]"), conflict,
        session=session,
    ), p.values


def select_checkpoints(session_id: UUID | None, checkpoint_ns: str | None, checkpoint_id: str | None,
                       metadata_filter: Mapping[str, Any] | None, before: str | None, limit: int | None) -> Query:
    """Return a SELECT of checkpoints matching every given condition, newest (highest id) first."""
    p = Params()
    conditions: list[sql.Composable] = []
    if session_id is not None:
        conditions.append(sql.SQL("c.session_id = {}").format(p.add(session_id, "uuid")))
    if checkpoint_ns is not None:
        conditions.append(sql.SQL("c.checkpoint_ns = {}").format(p.add(checkpoint_ns, "text")))
    if checkpoint_id is not None:
        conditions.append(sql.SQL("c.checkpoint_id = {}").format(p.add(checkpoint_id, "text")))
    if metadata_filter:
        conditions.append(sql.SQL("c.metadata @> {}").format(p.add(Jsonb(dict(metadata_filter)))))
    if before is not None:
        conditions.append(sql.SQL("c.checkpoint_id < {}").format(p.add(before, "text")))
    where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
    query = sql.SQL(
        "SELECT {} FROM chat_checkpoints c JOIN chat_sessions s ON s.session_id = c.session_id{} "
        "ORDER BY c.checkpoint_id DESC"
    ).format(_CHECKPOINT_COLUMNS, where)
    if limit is not None:
        query += sql.SQL(" LIMIT {}").format(p.add(limit, "bigint"))
    return query, p.values


def select_blobs(keys: Sequence[tuple[UUID, str, str, str]]) -> Query:
    """Return a SELECT of the channel versions ``(session_id, checkpoint_ns, channel, version)`` asked for."""
    p = Params()
    sessions, namespaces, channels, versions = (list(column) for column in zip(*keys, strict=True))
    return sql.SQL(
        "SELECT b.session_id, b.checkpoint_ns, b.channel, b.version, b.type, b.blob "
        "FROM unnest({}, {}, {}, {}) AS k(session_id, checkpoint_ns, channel, version) "
        "JOIN chat_checkpoint_blobs b USING (session_id, checkpoint_ns, channel, version)"
    ).format(p.add(sessions, "uuid[]"), p.add(namespaces, "text[]"), p.add(channels, "text[]"),
             p.add(versions, "text[]")), p.values


def select_writes(keys: Sequence[tuple[UUID, str, str]]) -> Query:
    """Return a SELECT of the pending writes of the checkpoints ``(session_id, checkpoint_ns, checkpoint_id)``."""
    p = Params()
    sessions, namespaces, ids = (list(column) for column in zip(*keys, strict=True))
    return sql.SQL(
        "SELECT w.session_id, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.task_path, w.idx, w.channel, w.type, "
        "w.blob, w.message_runs FROM unnest({}, {}, {}) AS k(session_id, checkpoint_ns, checkpoint_id) "
        "JOIN chat_checkpoint_writes w USING (session_id, checkpoint_ns, checkpoint_id) "
        "ORDER BY w.task_path, w.task_id, w.idx"
    ).format(p.add(sessions, "uuid[]"), p.add(namespaces, "text[]"), p.add(ids, "text[]")), p.values


def select_runs(session_ids: Sequence[UUID], starts: Sequence[int], ends: Sequence[int]) -> Query:
    """Return a SELECT of the message rows in each run ``(session, first seq, last seq)``, run by run, in order."""
    p = Params()
    return sql.SQL(
        "SELECT r.run, m.seq, m.message_id, m.message_key, m.role, m.content, m.metadata "
        "FROM unnest({}, {}, {}) WITH ORDINALITY AS r(session_id, first_seq, last_seq, run) "
        "JOIN chat_messages m ON m.session_id = r.session_id AND m.seq BETWEEN r.first_seq AND r.last_seq "
        "ORDER BY r.run, m.seq"
    ).format(p.add(list(session_ids), "uuid[]"), p.add(list(starts), "bigint[]"),
             p.add(list(ends), "bigint[]")), p.values


def select_message_rows(session_id: UUID, seqs: Sequence[int]) -> Query:
    """Return a SELECT of some message rows of a session (by seq), with what decoding them needs."""
    p = Params()
    return sql.SQL(
        "SELECT seq, message_id, message_key, role, content, metadata FROM chat_messages "
        "WHERE session_id = {} AND seq = ANY({})"
    ).format(p.add(session_id, "uuid"), p.add(list(seqs), "bigint[]")), p.values


def delete_session(session_id: UUID) -> Query:
    """Return a DELETE of a thread's session: its messages, checkpoints, blobs and writes cascade."""
    p = Params()
    return sql.SQL("DELETE FROM chat_sessions WHERE session_id = {}").format(p.add(session_id, "uuid")), p.values


def delete_sessions(session_ids: Sequence[UUID]) -> Query:
    """Return a DELETE of several threads' sessions (everything of theirs cascades)."""
    p = Params()
    return sql.SQL("DELETE FROM chat_sessions WHERE session_id = ANY({})").format(
        p.add(list(session_ids), "uuid[]")), p.values


def delete_runs(run_ids: Sequence[str]) -> Query:
    """Return one statement deleting the checkpoints made by the given runs and their pending writes."""
    p = Params()
    return sql.SQL(
        "WITH gone AS (DELETE FROM chat_checkpoints WHERE metadata ->> 'run_id' = ANY({}) "
        "RETURNING session_id, checkpoint_ns, checkpoint_id) "
        "DELETE FROM chat_checkpoint_writes w USING gone WHERE w.session_id = gone.session_id "
        "AND w.checkpoint_ns = gone.checkpoint_ns AND w.checkpoint_id = gone.checkpoint_id"
    ).format(p.add(list(run_ids), "text[]")), p.values


def keep_latest(session_ids: Sequence[UUID]) -> list[Query]:
    """Return the statements that keep only the newest checkpoint per namespace of each session (and its data)."""
    p = Params()
    sessions = p.add(list(session_ids), "uuid[]")
    checkpoints = sql.SQL(
        "DELETE FROM chat_checkpoints c WHERE c.session_id = ANY({s}) AND c.checkpoint_id < "
        "(SELECT max(n.checkpoint_id) FROM chat_checkpoints n WHERE n.session_id = c.session_id "
        "AND n.checkpoint_ns = c.checkpoint_ns)"
    ).format(s=sessions)
    writes = sql.SQL(
        "DELETE FROM chat_checkpoint_writes w WHERE w.session_id = ANY({s}) AND NOT EXISTS (SELECT 1 FROM "
        "chat_checkpoints c WHERE c.session_id = w.session_id AND c.checkpoint_ns = w.checkpoint_ns "
        "AND c.checkpoint_id = w.checkpoint_id)"
    ).format(s=sessions)
    # A channel version outlives the checkpoint that wrote it while a later checkpoint still points at it.
    blobs = sql.SQL(
        "DELETE FROM chat_checkpoint_blobs b WHERE b.session_id = ANY({s}) AND NOT EXISTS (SELECT 1 FROM "
        "chat_checkpoints c WHERE c.session_id = b.session_id AND c.checkpoint_ns = b.checkpoint_ns "
        "AND c.checkpoint -> 'channel_versions' ->> b.channel = b.version)"
    ).format(s=sessions)
    return [(checkpoints, p.values), (writes, p.values), (blobs, p.values)]


def copy_messages(source: UUID, target: UUID) -> Query:
    """Return an INSERT copying a session's message rows to another, in order, returning the new seqs in order."""
    p = Params()
    return sql.SQL(
        "INSERT INTO chat_messages (session_id, role, content, created_at, token_usage, page_context, metadata, "
        "message_key) SELECT {}, role, content, created_at, token_usage, page_context, metadata, message_key "
        "FROM chat_messages WHERE session_id = {} ORDER BY seq RETURNING seq"
    ).format(p.add(target, "uuid"), p.add(source, "uuid")), p.values


def source_checkpoints(source: UUID) -> Query:
    """Return a SELECT of every checkpoint of a session, for copying."""
    p = Params()
    return sql.SQL(
        "SELECT checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, metadata FROM chat_checkpoints "
        "WHERE session_id = {}"
    ).format(p.add(source, "uuid")), p.values


def insert_checkpoints(target: UUID, rows: Sequence[Mapping[str, Any]]) -> Query:
    """Return one INSERT of checkpoint rows (as ``source_checkpoints`` returns them) into a session."""
    p = Params()
    return sql.SQL(
        "INSERT INTO chat_checkpoints (session_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, "
        "metadata) SELECT {}, c.ns, c.id, c.parent, c.checkpoint::json, c.metadata FROM unnest({}, {}, {}, {}, {}) "
        "AS c(ns, id, parent, checkpoint, metadata) ON CONFLICT DO NOTHING"
    ).format(p.add(target, "uuid"), p.add([r["checkpoint_ns"] for r in rows], "text[]"),
             p.add([r["checkpoint_id"] for r in rows], "text[]"),
             p.add([r["parent_checkpoint_id"] for r in rows], "text[]"),
             p.add([_compact(r["checkpoint"]) for r in rows], "text[]"),
             p.add([Jsonb(r["metadata"]) for r in rows], "jsonb[]")), p.values


def copy_blobs_and_writes(source: UUID, target: UUID, old_seqs: Sequence[int],
                          new_seqs: Sequence[int]) -> list[Query]:
    """Return the statements copying a session's channel versions and writes, with message runs renumbered."""
    p = Params()
    src, dst = p.add(source, "uuid"), p.add(target, "uuid")
    old, new = p.add(list(old_seqs), "bigint[]"), p.add(list(new_seqs), "bigint[]")
    write_runs = sql.SQL(
        "CASE WHEN w.message_runs IS NOT NULL THEN coalesce((SELECT array_agg(m.new_seq ORDER BY r.position) "
        "FROM unnest(w.message_runs) WITH ORDINALITY AS r(seq, position) JOIN unnest({old}, {new}) "
        "AS m(old_seq, new_seq) ON m.old_seq = r.seq), '{{}}') END"
    ).format(old=old, new=new)
    blobs = sql.SQL(
        "INSERT INTO chat_checkpoint_blobs (session_id, checkpoint_ns, channel, version, type, blob) "
        "SELECT {dst}, checkpoint_ns, channel, version, type, blob "
        "FROM chat_checkpoint_blobs WHERE session_id = {src} ON CONFLICT DO NOTHING"
    ).format(src=src, dst=dst)
    writes = sql.SQL(
        "INSERT INTO chat_checkpoint_writes (session_id, checkpoint_ns, checkpoint_id, task_id, idx, channel, type, "
        "blob, message_runs, task_path) SELECT {dst}, w.checkpoint_ns, w.checkpoint_id, w.task_id, w.idx, "
        "w.channel, w.type, w.blob, {runs}, w.task_path FROM chat_checkpoint_writes w WHERE w.session_id = {src} "
        "ON CONFLICT DO NOTHING"
    ).format(src=src, dst=dst, runs=write_runs)
    return [(blobs, p.values), (writes, p.values)]


def select_checkpoint_whole(session_id: UUID, checkpoint_ns: str, checkpoint_id: str | None, runs_key: str,
                            known_seqs: Sequence[int], known_versions: Sequence[int]) -> Query:
    """Return one SELECT of a thread's checkpoint (its newest when ``checkpoint_id`` is None) with everything
    ``get_tuple`` needs, as rows told apart by ``part``, in order:

    - 0: the checkpoint (``name`` its id, ``detail`` its parent, ``body``, ``metadata``);
    - 1: its channel versions stored as blobs (``name`` channel, ``detail`` version, ``type``, ``blob``);
    - 2: its pending writes in task order (``name`` task id, ``detail`` channel, ``type``, ``path`` task path,
      ``number`` idx, ``blob``, ``runs``);
    - 3: the message rows its runs and its writes' runs cover, by ``position`` (seq), with ``number`` the row's
      version (xmin), and only for rows not among ``known_seqs`` at ``known_versions`` (the caller has them):
      ``name`` message key, ``detail`` message id, ``type`` role, ``path`` content, ``fields`` metadata (as
      JSON text: the caller parses it with a faster parser than psycopg's).

    The known rows go as one jsonb object {seq: version}, looked up per row (no join the planner could misjudge).
    """
    p = Params()
    session = p.add(session_id, "uuid")
    which = sql.SQL(" AND checkpoint_id = {}").format(p.add(checkpoint_id, "text")) if checkpoint_id is not None \
        else sql.SQL("")
    return sql.SQL(
        "WITH c AS MATERIALIZED (SELECT session_id, checkpoint_ns, checkpoint_id, parent_checkpoint_id, checkpoint, "
        "metadata FROM chat_checkpoints WHERE session_id = {session} AND checkpoint_ns = {}{} "
        "ORDER BY checkpoint_id DESC LIMIT 1), "
        "w AS MATERIALIZED (SELECT w.task_id, w.task_path, w.idx, w.channel, w.type, w.blob, w.message_runs "
        "FROM c JOIN chat_checkpoint_writes w ON w.session_id = c.session_id AND w.checkpoint_ns = c.checkpoint_ns "
        "AND w.checkpoint_id = c.checkpoint_id), "
        "ranges AS MATERIALIZED (SELECT (e.runs ->> (2 * g))::bigint AS first_seq, "
        "(e.runs ->> (2 * g + 1))::bigint AS last_seq FROM c, json_each(c.checkpoint -> {runs}) AS e(channel, runs), "
        "generate_series(0, json_array_length(e.runs) / 2 - 1) AS g "
        "UNION ALL SELECT w.message_runs[2 * g + 1], w.message_runs[2 * g + 2] FROM w, "
        "generate_series(0, cardinality(w.message_runs) / 2 - 1) AS g WHERE w.message_runs IS NOT NULL) "
        "SELECT 0 AS part, NULL::bigint AS position, c.checkpoint_id AS name, c.parent_checkpoint_id AS detail, "
        "NULL::text AS type, NULL::text AS path, NULL::bigint AS number, NULL::bytea AS blob, c.checkpoint AS body, "
        "c.metadata, NULL::bigint[] AS runs, NULL::text AS fields FROM c "
        "UNION ALL SELECT 1, NULL, b.channel, b.version, b.type, NULL, NULL, b.blob, NULL, NULL, NULL, NULL "
        "FROM c CROSS JOIN LATERAL json_each_text(c.checkpoint -> 'channel_versions') AS v(channel, version) "
        "CROSS JOIN LATERAL (SELECT b.channel, b.version, b.type, b.blob FROM chat_checkpoint_blobs b "
        "WHERE b.session_id = c.session_id AND b.checkpoint_ns = c.checkpoint_ns AND b.channel = v.channel "
        "AND b.version = v.version LIMIT 1) AS b "
        "WHERE c.checkpoint -> 'channel_values' -> v.channel IS NULL "
        "AND c.checkpoint -> {runs} -> v.channel IS NULL "
        "UNION ALL SELECT 2, row_number() OVER (ORDER BY w.task_path, w.task_id, w.idx), w.task_id, w.channel, "
        "w.type, w.task_path, w.idx, w.blob, NULL, NULL, w.message_runs, NULL FROM w "
        "UNION ALL SELECT 3, m.seq, k.message_key, k.message_id::text, k.role::text, k.content, "
        "m.xmin::text::bigint, NULL, NULL, NULL, NULL, k.metadata::text "
        "FROM chat_messages m LEFT JOIN LATERAL (SELECT m.message_key, m.message_id, m.role, m.content, m.metadata "
        "WHERE {known} ->> m.seq::text IS DISTINCT FROM m.xmin::text) AS k ON true "
        "WHERE m.session_id = {session} AND m.seq >= (SELECT min(first_seq) FROM ranges) "
        "AND m.seq <= (SELECT max(last_seq) FROM ranges) "
        "AND EXISTS (SELECT 1 FROM ranges r WHERE m.seq BETWEEN r.first_seq AND r.last_seq) "
        "ORDER BY part, position"
    ).format(
        p.add(checkpoint_ns, "text"), which, session=session, runs=p.add(runs_key, "text"),
        known=p.add(Jsonb({str(seq): str(version) for seq, version in zip(known_seqs, known_versions, strict=True)}),
                    "jsonb"),
    ), p.values
