"""Every database operation of more than one step, written once for the sync and the async executor.

Each plan is a generator function decorated with ``@plan``: it yields steps (``fetch``, ``execute``,
``Copy``, ``SetLocal``), receives their results, and returns the operation's result. Plans do no I/O and
run inside one transaction, so an exception anywhere (ours or the database's) leaves nothing written.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt
from psycopg.types.json import Jsonb

from sony_rag.connection import Capabilities, VectorIndex
from sony_rag.errors import SessionNotFoundError
from sony_rag.executor import Copy, PlanGenerator, SetLocal, execute, fetch, plan
from sony_rag.settings import Settings
from sony_rag.sql import embeddings as embedding_sql
from sony_rag.sql import messages as message_sql
from sony_rag.sql import selections as selection_sql
from sony_rag.sql import sessions as session_sql

Row = dict[str, Any]

# pgvector's default hnsw.ef_search, which ann_settings raises to 2k for larger k: HNSW needs ef_search >= k
# to return k rows. pgvector caps ef_search at 1000.
DEFAULT_EF_SEARCH = 40
MAX_EF_SEARCH = 1000
# pgvector allows at most 32,768 IVFFlat lists, so no more probes.
MAX_PROBES = 32_768


@plan(read_only=True)
def read_capabilities() -> PlanGenerator[Capabilities]:
    """Read the pgvector version and the vector index's method and options."""
    rows = yield fetch(embedding_sql.capabilities())
    row = rows[0]
    version = tuple(int(part) for part in str(row["pgvector_version"] or "0").split(".") if part.isdigit())
    return Capabilities(pgvector_version=version, vector_index=vector_index_from_row(row))


def vector_index_from_row(row: Row) -> VectorIndex | None:
    """Return the vector index described by a row of ``sql.embeddings.capabilities()``, or None if there is none."""
    method = row["index_method"]
    if not method:
        return None
    options = dict(option.split("=", 1) for option in (row["index_options"] or []))
    return VectorIndex(
        method=method,
        lists=int(options.get("lists", 100)) if method == "ivfflat" else None,
        m=int(options.get("m", 16)) if method == "hnsw" else None,
        ef_construction=int(options.get("ef_construction", 64)) if method == "hnsw" else None,
    )


# -- sessions ----------------------------------------------------------------------------------------


@plan(read_only=False, session="session_id")
def create_session(session_id: UUID | None, user_agent: str | None, current_page: str | None,
                   metadata: dict[str, Any], *, if_missing: bool = False) -> PlanGenerator[Row | None]:
    """Insert a session; with ``if_missing`` an existing id is left alone and None is returned."""
    rows = yield fetch(session_sql.insert(session_id, user_agent, current_page, metadata, if_missing=if_missing))
    return rows[0] if rows else None


@plan(read_only=True, replica=True, session="session_id")
def get_session(session_id: UUID) -> PlanGenerator[Row | None]:
    """Return one session row, or None."""
    rows = yield fetch(session_sql.get(session_id))
    return rows[0] if rows else None


@plan(read_only=False, session="session_id")
def update_session(session_id: UUID, user_agent: str | None, current_page: str | None,
                   metadata: dict[str, Any] | None) -> PlanGenerator[Row]:
    """Update a session and return its row; raises SessionNotFoundError."""
    rows = yield fetch(session_sql.update(session_id, user_agent=user_agent, current_page=current_page,
                                          metadata=metadata))
    if not rows:
        raise SessionNotFoundError(f"chat session {session_id} does not exist")
    return rows[0]  # type: ignore[no-any-return]


@plan(read_only=False, session="session_id")
def delete_session(session_id: UUID) -> PlanGenerator[bool]:
    """Delete a session (messages and selections cascade); return whether it existed."""
    count = yield execute(session_sql.delete(session_id))
    return bool(count)


@plan(read_only=False)
def prune_sessions(older_than: timedelta) -> PlanGenerator[int]:
    """Delete sessions idle for longer than ``older_than``; return how many."""
    count = yield execute(session_sql.prune(older_than))
    return int(count)


@plan(read_only=True)
def recent_sessions(limit: int) -> PlanGenerator[list[Row]]:
    """Return the most recently active sessions with their message counts."""
    rows = yield fetch(session_sql.recent(limit))
    return rows  # type: ignore[no-any-return]


# -- messages ----------------------------------------------------------------------------------------


@plan(read_only=False, session="session_id")
def add_messages(session_id: UUID, message_ids: Sequence[UUID], roles: Sequence[str], contents: Sequence[str],
                 token_usages: Sequence[int | None], page_context: str | None,
                 metadatas: Sequence[dict[str, Any]], *, create_session: Row | None = None) -> PlanGenerator[None]:
    """Append messages in order and mark the session active; ``create_session`` holds columns for a new one.

    Raises SessionNotFoundError when the session is missing and may not be created.
    """
    # Touching the session first takes its row lock: concurrent writers to one session queue here, so the
    # order of their seq values is the order in which they committed.
    touched = yield fetch(session_sql.touch(session_id, page_context))
    if not touched:
        if create_session is None:
            raise SessionNotFoundError(f"chat session {session_id} does not exist")
        yield fetch(session_sql.insert(session_id, create_session.get("user_agent"),
                                       page_context or create_session.get("current_page"),
                                       create_session.get("metadata") or {}, if_missing=True))
        yield fetch(session_sql.touch(session_id, page_context))
    if message_ids:
        yield execute(message_sql.insert_many(session_id, message_ids, roles, contents, token_usages,
                                              [page_context] * len(message_ids), metadatas))


@plan(read_only=True, replica=True, session="session_id")
def history(session_id: UUID, limit: int | None) -> PlanGenerator[list[Row]]:
    """Return the newest ``limit`` messages of a session (all when None), oldest first."""
    rows = yield fetch(message_sql.newest(session_id, limit))
    return rows  # type: ignore[no-any-return]


@plan(read_only=False, session="session_id")
def clear_messages(session_id: UUID) -> PlanGenerator[int]:
    """Delete every message of a session; return how many."""
    count = yield execute(message_sql.delete_for_session(session_id))
    return int(count)


@plan(read_only=True, replica=True, session="session_id")
def history_if_session(session_id: UUID, limit: int | None) -> PlanGenerator[list[Row] | None]:
    """Return a session's newest ``limit`` messages (all when None), oldest first; None if it is missing."""
    rows: list[Row] = yield fetch(message_sql.newest(session_id, limit))
    if rows:
        return rows
    # Only an empty answer needs the second look: a session with messages exists.
    found = yield fetch(session_sql.get(session_id))
    return rows if found else None


@plan(read_only=False, session="session_id")
def clear_session_messages(session_id: UUID, *, create_session: Row | None = None) -> PlanGenerator[int]:
    """Delete every message of a session and return how many; raises SessionNotFoundError.

    A missing session is created from ``create_session``'s columns when given, else it raises.
    """
    count = yield execute(message_sql.delete_for_session(session_id))
    if count:
        return int(count)
    found = yield fetch(session_sql.get(session_id))
    if not found:
        if create_session is None:
            raise SessionNotFoundError(f"chat session {session_id} does not exist")
        yield fetch(session_sql.insert(session_id, create_session.get("user_agent"),
                                       create_session.get("current_page"),
                                       create_session.get("metadata") or {}, if_missing=True))
    return 0


# -- embeddings --------------------------------------------------------------------------------------

EmbeddingRow = tuple[UUID, str, str | None, str, npt.NDArray[np.float32], Jsonb, str | None]


@plan(read_only=False)
def insert_embeddings(rows: Iterable[EmbeddingRow]) -> PlanGenerator[int]:
    """Append rows whose ids are new (freshly generated) through one binary COPY; return the count.

    ``rows`` may be a generator that validates as it goes: it is consumed once, while the server is already
    storing earlier rows, and an exception from it aborts the transaction (nothing is written).
    """
    count = yield Copy(embedding_sql.copy_into_table(), embedding_sql.COPY_TYPES, rows)
    return int(count)


@plan(read_only=False)
def upsert_embeddings(rows: Iterable[EmbeddingRow]) -> PlanGenerator[int]:
    """Insert rows or replace those whose ids exist, through COPY into a staging table; return the count."""
    yield execute(embedding_sql.create_staging())
    yield Copy(embedding_sql.copy_into_staging(), embedding_sql.COPY_TYPES, rows)
    count = yield execute(embedding_sql.upsert_from_staging())
    return int(count)


def ann_settings(capabilities: Capabilities, k: int, *, probes: int | None = None,
                 ef_search: int | None = None) -> dict[str, str]:
    """Return the SET LOCAL settings that make the vector index find ``k`` rows well."""
    index = capabilities.vector_index
    if index is None:
        return {}
    if index.method == "ivfflat":
        lists = index.lists or 100
        settings = {"ivfflat.probes": str(probes or default_probes(lists))}
        if capabilities.iterative_scan:
            settings["ivfflat.iterative_scan"] = "relaxed_order"
        return settings
    settings = {"hnsw.ef_search": str(min(MAX_EF_SEARCH, ef_search or max(DEFAULT_EF_SEARCH, 2 * k)))}
    if capabilities.iterative_scan:
        settings["hnsw.iterative_scan"] = "strict_order"
    return settings


def default_probes(lists: int) -> int:
    """Return the IVFFlat probes used when none is given: twice sqrt(lists), at most all lists."""
    return max(1, min(lists, math.ceil(2 * math.sqrt(lists))))


@plan(read_only=True, replica=True)
def search(query_vector: npt.NDArray[np.float32], k: int, filter: Mapping[str, Any] | None,
           capabilities: Capabilities, *, min_similarity: float | None = None, with_embedding: bool = False,
           probes: int | None = None, ef_search: int | None = None) -> PlanGenerator[list[Row]]:
    """Return up to ``k`` nearest rows (cosine), closest first, each with ``distance``.

    Exact count: the index is tried first; when it yields fewer than ``k`` rows (an IVFFlat index trained on
    few rows, or a selective filter that post-filtering starves), an exact scan of the matching rows follows.
    """
    max_distance = None if min_similarity is None else 1.0 - min_similarity
    settings = ann_settings(capabilities, k, probes=probes, ef_search=ef_search)
    if settings:
        # A generic cached plan would ignore how selective this call's filter is.
        yield SetLocal({**settings, "plan_cache_mode": "force_custom_plan"})
    # The threshold goes into the index query too: k rows that are close by the index's reckoning but partly
    # below it would otherwise hide rows above it that the probed lists missed.
    rows: list[Row] = yield fetch(embedding_sql.nearest(query_vector, k, filter, max_distance=max_distance,
                                                        with_embedding=with_embedding))
    if len(rows) < k and capabilities.vector_index is not None:
        rows = yield fetch(embedding_sql.exact_nearest(query_vector, k, filter, max_distance=max_distance,
                                                       with_embedding=with_embedding))
    # Iterative scans in relaxed order may return rows slightly out of order.
    rows.sort(key=lambda row: row["distance"])
    if max_distance is not None:
        rows = [row for row in rows if row["distance"] <= max_distance]
    return rows


@dataclass(frozen=True)
class HybridOptions:
    """How hybrid search fuses its legs: rank constant, leg weights, rows per leg, text rows ranked, text config."""

    config: str = "english"
    rrf_k: float = 1.0
    vector_weight: float = 1.0
    keyword_weight: float = 0.4
    fetch_k: int = 20
    text_candidates: int = 200
    # Cosine similarities closer than this are ties: below what all-MiniLM-L6-v2 can tell apart, so rank order
    # among them is noise that the steep 1 / (rrf_k + rank) would otherwise amplify.
    similarity_tie: float = 0.005

    @classmethod
    def from_settings(cls, settings: Settings) -> HybridOptions:
        """Return the options configured in settings (SONY_RAG_RRF_K, SONY_RAG_HYBRID_*_WEIGHT, ...)."""
        return cls(config=settings.text_search_config, rrf_k=settings.rrf_k,
                   vector_weight=settings.hybrid_vector_weight, keyword_weight=settings.hybrid_keyword_weight)


@plan(read_only=True, replica=True)
def hybrid_search(query_vector: npt.NDArray[np.float32], query_text: str, k: int,
                  filter: Mapping[str, Any] | None, capabilities: Capabilities, options: HybridOptions, *,
                  min_similarity: float | None = None, with_embedding: bool = False, probes: int | None = None,
                  ef_search: int | None = None) -> PlanGenerator[list[Row]]:
    """Return up to ``k`` rows ranked by fusing vector and keyword search, in one statement.

    Exact count: when the index finds fewer than ``fetch_k`` rows for the vector leg, the same statement ranks
    them exactly instead. Rows carry ``distance`` (cosine) and ``rrf``; ``min_similarity`` drops rows below it.
    """
    fetch_k = max(k, options.fetch_k)
    settings = ann_settings(capabilities, fetch_k, probes=probes, ef_search=ef_search)
    if settings:
        # A forced custom plan, as in search: a generic plan of this statement ran 5-40x slower at 100k rows.
        yield SetLocal({**settings, "plan_cache_mode": "force_custom_plan"})
    rows: list[Row] = yield fetch(embedding_sql.hybrid(
        query_vector, query_text, k, fetch_k, filter, config=options.config, rrf_k=options.rrf_k,
        vector_weight=options.vector_weight, keyword_weight=options.keyword_weight,
        text_candidates=max(options.text_candidates, fetch_k), similarity_tie=options.similarity_tie,
        exact_fallback=capabilities.vector_index is not None,
        with_embedding=with_embedding))
    if min_similarity is not None:
        rows = [row for row in rows if 1.0 - row["distance"] >= min_similarity]
    return rows


@plan(read_only=True, replica=True)
def keyword_search(query_vector: npt.NDArray[np.float32], query_text: str, k: int,
                   filter: Mapping[str, Any] | None, options: HybridOptions, *,
                   with_embedding: bool = False) -> PlanGenerator[list[Row]]:
    """Return up to ``k`` rows matching the words of ``query_text``, best text rank first."""
    rows = yield fetch(embedding_sql.keyword(query_vector, query_text, k, filter, config=options.config,
                                             text_candidates=options.text_candidates,
                                             with_embedding=with_embedding))
    return rows  # type: ignore[no-any-return]


@plan(read_only=True, replica=True)
def get_embeddings_by_ids(ids: Sequence[UUID]) -> PlanGenerator[list[Row]]:
    """Return the rows with the given ids (in no particular order)."""
    rows = yield fetch(embedding_sql.by_ids(ids))
    return rows  # type: ignore[no-any-return]


@plan(read_only=False)
def delete_embeddings(ids: Sequence[UUID] | None = None, filter: Mapping[str, Any] | None = None,
                      source: tuple[str, str | None] | None = None) -> PlanGenerator[int]:
    """Delete the rows matched by each selector given (ids, filter, source); return how many were deleted."""
    total = 0
    if ids is not None:
        total += yield execute(embedding_sql.delete_ids(ids))
    if filter is not None:
        total += yield execute(embedding_sql.delete_matching(filter))
    if source is not None:
        total += yield execute(embedding_sql.delete_source(*source))
    return total


@plan(read_only=True)
def source_states(sources: Sequence[tuple[str, str]]) -> PlanGenerator[dict[tuple[str, str], Row]]:
    """Return ``{(source_type, source_id): {"chunks": n, "content_hashes": [...]}}`` for the stored sources."""
    by_type: dict[str, list[str]] = {}
    for source_type, source_id in sources:
        by_type.setdefault(source_type, []).append(source_id)
    found: dict[tuple[str, str], Row] = {}
    for source_type, source_ids in sorted(by_type.items()):
        rows = yield fetch(embedding_sql.source_states(source_type, source_ids))
        for row in rows:
            found[(source_type, row["source_id"])] = row
    return found


@plan(read_only=False)
def replace_sources(sources: Sequence[tuple[str, str]], rows: Sequence[EmbeddingRow]) -> PlanGenerator[int]:
    """Replace the chunks of each ``(source_type, source_id)`` by ``rows``: delete, then one COPY; return deleted.

    One transaction: a source is never seen half-replaced. Advisory locks per source make two concurrent
    replacements of one source queue instead of both inserting.
    """
    yield fetch(embedding_sql.lock_sources([f"sony-rag-source:{t}:{i}" for t, i in sources]))
    by_type: dict[str, list[str]] = {}
    for source_type, source_id in sources:
        by_type.setdefault(source_type, []).append(source_id)
    deleted = 0
    for source_type, source_ids in sorted(by_type.items()):
        deleted += yield execute(embedding_sql.delete_sources(source_type, source_ids))
    if rows:
        yield Copy(embedding_sql.copy_into_table(), embedding_sql.COPY_TYPES, rows)
    return deleted


# -- selections --------------------------------------------------------------------------------------


@plan(read_only=False, session="session_id")
def insert_selection(session_id: UUID, selected_text: str, page_url: str | None,
                     embedding: npt.NDArray[np.float32] | None, metadata: dict[str, Any]) -> PlanGenerator[UUID]:
    """Insert one selection and return its id; raises SessionNotFoundError for an unknown session."""
    rows = yield fetch(selection_sql.insert(session_id, selected_text, page_url, embedding, metadata))
    return rows[0]["selection_id"]  # type: ignore[no-any-return]


@plan(read_only=True, replica=True, session="session_id")
def recent_selections(session_id: UUID, limit: int, max_age: timedelta | None = None) -> PlanGenerator[list[Row]]:
    """Return a session's newest selections, newest first."""
    rows = yield fetch(selection_sql.recent(session_id, limit, max_age))
    return rows  # type: ignore[no-any-return]
