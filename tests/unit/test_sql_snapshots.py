"""The text of every SQL builder in ``sony_rag/sql/`` (search statements aside) against a committed snapshot.

Each case renders one builder with fixed arguments and compares ``query.as_string(None)`` and the names of its
bound parameters with ``tests/unit/snapshots/<case>.sql``. A change of a statement then shows in review as a
diff of that file. After changing a builder on purpose, refresh the files and read the diff:

    SNAPSHOT_UPDATE=1 python -m pytest -q tests/unit/test_sql_snapshots.py

The search statements of ``sql/documents.py`` (nearest, hybrid, keyword) and ``sql/filters.py`` are covered by
their own tests (tests/unit/test_filters_sql.py, tests/unit/test_vector_index.py).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from sony_rag.sql import (
    Query,
    catalog,
    checkpoints,
    deletes,
    documents,
    indexes,
    messages,
    migrations,
    replicas,
    selections,
)
from sony_rag.sql import sessions as session_sql

SNAPSHOTS = Path(__file__).parent / "snapshots"
UPDATE = os.environ.get("SNAPSHOT_UPDATE") == "1"

S1, S2, M1, M2 = (UUID(int=n) for n in (1, 2, 3, 4))
_NEW = checkpoints.NewMessages(["k1"], ["user"], ["hi"], [None], "/p", [{}])
DAY = timedelta(days=1)
SESSION_COLUMNS = {"user_agent": "agent", "current_page": "/p", "metadata": {"k": "v"}}

Built = Query | list[Query] | Any  # a Query, a list of them (one case, several statements) or a bare statement
CASES: dict[str, Callable[[], Built]] = {
    # sessions
    "sessions.insert": lambda: session_sql.insert(None, "agent", "/p", {}),
    "sessions.insert_if_missing": lambda: session_sql.insert(S1, "agent", "/p", {}, if_missing=True),
    "sessions.get": lambda: session_sql.get(S1),
    "sessions.update_all": lambda: session_sql.update(S1, user_agent="a", current_page="/p", metadata={"k": 1}),
    "sessions.update_touch_only": lambda: session_sql.update(S1, user_agent=None, current_page=None, metadata=None),
    "sessions.delete": lambda: session_sql.delete(S1),
    "sessions.prune": lambda: session_sql.prune(DAY),
    "sessions.prune_candidates": lambda: session_sql.prune_candidates(DAY),
    "sessions.prune_listed": lambda: session_sql.prune_listed(DAY, [S1, S2]),
    "sessions.recent": lambda: session_sql.recent(10),
    # messages
    "messages.insert_many": lambda: messages.insert_many(S1, [M1, M2], ["user", "assistant"], ["a", "b"], [None, 3],
                                                         ["/p", None], [{}, {}]),
    "messages.append": lambda: messages.append(S1, [M1], ["user"], ["hi"], [None], "/p", [{}], create_session=None),
    "messages.append_creating_the_session": lambda: messages.append(S1, [M1], ["user"], ["hi"], [None], "/p", [{}],
                                                                    create_session=SESSION_COLUMNS),
    "messages.append_nothing": lambda: messages.append(S1, [], [], [], [], None, [], create_session=None),
    "messages.newest": lambda: messages.newest(S1, 20),
    "messages.newest_all": lambda: messages.newest(S1, None),
    "messages.newest_messages": lambda: messages.newest_messages(S1, 20, [3, 4], [700, 701]),
    "messages.newest_messages_all": lambda: messages.newest_messages(S1, None, [], []),
    "messages.delete_for_session": lambda: messages.delete_for_session(S1),
    # selections
    "selections.insert": lambda: selections.insert(S1, "free shipping", "/p", [0.0, 1.0], {}),
    "selections.recent": lambda: selections.recent(S1, 3),
    "selections.recent_max_age": lambda: selections.recent(S1, 3, timedelta(minutes=30)),
    # deletes
    "deletes.by_ids": lambda: deletes.delete_embeddings([M1], None, None),
    "deletes.by_source": lambda: deletes.delete_embeddings(None, None, ("faq", "shipping")),
    "deletes.by_source_type": lambda: deletes.delete_embeddings(None, None, ("faq", None)),
    # documents: writes and reads that are not searches
    "documents.copy_into_table": documents.copy_into_table,
    "documents.create_staging": documents.create_staging,
    "documents.copy_into_staging": documents.copy_into_staging,
    "documents.upsert_from_staging": documents.upsert_from_staging,
    "documents.by_ids": lambda: documents.by_ids([M1, M2]),
    "documents.capabilities": documents.capabilities,
    "documents.source_states": lambda: documents.source_states("faq", ["a", "b"]),
    "documents.sources_of_other_models": lambda: documents.sources_of_other_models("fake"),
    "documents.delete_sources": lambda: documents.delete_sources("faq", ["a", "b"]),
    "documents.lock_sources": lambda: documents.lock_sources(["faq:a", "faq:b"]),
    # checkpoints
    "checkpoints.upsert_session": lambda: checkpoints.upsert_session(S1, "thread-1", "/p"),
    "checkpoints.touch_session": lambda: checkpoints.touch_session(S1, "thread-1", "/p", "messages"),
    "checkpoints.message_keys": lambda: checkpoints.message_keys(S1),
    "checkpoints.adopt_rows": lambda: checkpoints.adopt_rows(S1, [1, 2], ["k1", "k2"]),
    "checkpoints.insert_checkpoint": lambda: checkpoints.insert_checkpoint(
        S1, "", "c1", None, {"v": 1}, {}, [("channel", "1", "json", b"x")], [("c0", "t1", 0, [1, 2])], "messages",
        "runs", ("messages", [1, 2, -1, -1]), _NEW),
    "checkpoints.insert_checkpoint_guarded": lambda: checkpoints.insert_checkpoint(
        S1, "", "c1", None, {"v": 1}, {}, [], [], "messages", "runs", None, _NEW,
        checkpoints.Guard("thread-1", "/p", "2026-01-01T00:00:00+00:00", 2, 2)),
    "checkpoints.select_checkpoint_whole": lambda: checkpoints.select_checkpoint_whole(S1, "", None, "runs", [1],
                                                                                       [7]),
    "checkpoints.select_message_rows": lambda: checkpoints.select_message_rows(S1, [1, 2]),
    "checkpoints.insert_writes": lambda: checkpoints.insert_writes(S1, "thread-1", "", "c1", "t1", "",
                                                                   [(0, "channel", "json", b"x", None)],
                                                                   replace=False),
    "checkpoints.insert_writes_replace": lambda: checkpoints.insert_writes(S1, "thread-1", "", "c1", "t1", "",
                                                                           [(0, "channel", "json", b"x", None)],
                                                                           replace=True),
    "checkpoints.select_checkpoints": lambda: checkpoints.select_checkpoints(S1, "", None, None, None, None),
    "checkpoints.select_checkpoints_filtered": lambda: checkpoints.select_checkpoints(S1, "", "c2", {"step": 1},
                                                                                      "c3", 5),
    "checkpoints.select_blobs": lambda: checkpoints.select_blobs([(S1, "", "channel", "1")]),
    "checkpoints.select_writes": lambda: checkpoints.select_writes([(S1, "", "c1")]),
    "checkpoints.select_runs": lambda: checkpoints.select_runs([S1], [1], [2]),
    "checkpoints.delete_session": lambda: checkpoints.delete_session(S1),
    "checkpoints.delete_sessions": lambda: checkpoints.delete_sessions([S1, S2]),
    "checkpoints.delete_runs": lambda: checkpoints.delete_runs(["r1"]),
    "checkpoints.keep_latest": lambda: checkpoints.keep_latest([S1]),
    "checkpoints.copy_messages": lambda: checkpoints.copy_messages(S1, S2),
    "checkpoints.source_checkpoints": lambda: checkpoints.source_checkpoints(S1),
    "checkpoints.insert_checkpoints": lambda: checkpoints.insert_checkpoints(
        S2, [{"checkpoint_ns": "", "checkpoint_id": "c1", "parent_checkpoint_id": None, "checkpoint": {},
              "metadata": {}}]),
    "checkpoints.copy_blobs_and_writes": lambda: checkpoints.copy_blobs_and_writes(S1, S2, [1, 2], [5, 6]),
    # indexes
    "indexes.build_facts": indexes.build_facts,
    "indexes.create_ivfflat": lambda: indexes.create_vector_index("idx_document_embeddings_vector", "ivfflat",
                                                                  lists=100),
    "indexes.create_hnsw_concurrently": lambda: indexes.create_vector_index(
        "idx_document_embeddings_vector", "hnsw", m=16, ef_construction=64, concurrently=True),
    "indexes.comment_index": lambda: indexes.comment_index("idx_document_embeddings_vector", "built by sony-rag"),
    "indexes.drop_index_concurrently": lambda: indexes.drop_index("idx_document_embeddings_vector",
                                                                  concurrently=True),
    "indexes.analyze": indexes.analyze,
    "indexes.index_size": lambda: indexes.index_size("idx_document_embeddings_vector"),
    "indexes.table_counts": indexes.table_counts,
    "indexes.source_type_counts": indexes.source_type_counts,
    "indexes.index_usage": indexes.index_usage,
    # the migration runner and migrate --test
    "migrations.lock": migrations.lock,
    "migrations.create_ledger": migrations.create_ledger,
    "migrations.ledger_exists": migrations.ledger_exists,
    "migrations.applied": migrations.applied,
    "migrations.record": lambda: migrations.record("001", "001_initial_schema", "0" * 64),
    "catalog.extension_version": catalog.extension_version,
    "catalog.columns": lambda: catalog.columns("chat_messages"),
    "catalog.indexes": lambda: catalog.indexes("chat_messages"),
    "catalog.constraints": lambda: catalog.constraints("chat_messages"),
    "catalog.triggers": lambda: catalog.triggers("chat_sessions"),
    "catalog.backdate_session": lambda: catalog.backdate_session(S1),
    "catalog.touch_session": lambda: catalog.touch_session(S1),
    "catalog.session_is_fresh": lambda: catalog.session_is_fresh(S1),
    "catalog.child_rows": lambda: catalog.child_rows(S1),
    "catalog.insert_bad_role": lambda: catalog.insert_bad_role(S1),
    # read replicas
    "replicas.write_position": replicas.write_position,
    "replicas.replay_state": replicas.replay_state,
}


def render(built: Built) -> str:
    """Return the snapshot text of a builder's result: each statement's SQL, then its parameter names."""
    statements = built if isinstance(built, list) else [built]
    parts = []
    for statement in statements:
        query, params = statement if isinstance(statement, tuple) else (statement, {})
        text = query.as_string(None) if hasattr(query, "as_string") else str(query)
        parts.append(text + "\n-- params: " + (", ".join(params) or "none") + "\n")
    return "\n".join(parts)


@pytest.mark.parametrize("case", sorted(CASES))
def test_the_statement_matches_its_snapshot(case: str) -> None:
    path = SNAPSHOTS / f"{case}.sql"
    text = render(CASES[case]())
    if UPDATE:
        path.write_text(text, encoding="utf-8")
    assert path.exists(), f"no snapshot for {case}: run with SNAPSHOT_UPDATE=1 and commit {path.name}"
    assert text == path.read_text(encoding="utf-8"), (
        f"{case} changed: if on purpose, run with SNAPSHOT_UPDATE=1 and review the diff of {path.name}")


def test_a_builder_renders_the_same_text_for_other_values() -> None:
    # Values are bound, never pasted: the snapshot holds for any arguments of the same shape.
    assert render(session_sql.get(S1)) == render(session_sql.get(S2))
    assert render(messages.append(S1, [M1], ["user"], ["hi"], [None], "/p", [{}], create_session=None)) == render(
        messages.append(S2, [M2], ["assistant"], ["'; DROP TABLE x; --"], [7], None, [{"a": 1}],
                        create_session=None))


def test_every_snapshot_file_belongs_to_a_case() -> None:
    stale = sorted(path.stem for path in SNAPSHOTS.glob("*.sql") if path.stem not in CASES)
    if UPDATE:
        for name in stale:
            (SNAPSHOTS / f"{name}.sql").unlink()
        stale = []
    assert stale == [], "snapshots without a case (delete them, or run with SNAPSHOT_UPDATE=1)"
