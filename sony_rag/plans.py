"""Every database operation of more than one step, written once for the sync and the async executor.

Each plan is a generator function decorated with ``@plan``: it yields steps (``fetch``, ``execute``,
``Copy``, ``SetLocal``), receives their results, and returns the operation's result. Plans do no I/O and
run inside one transaction, so an exception anywhere (ours or the database's) leaves nothing written.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, Final
from uuid import UUID

import numpy as np
import numpy.typing as npt
from psycopg.types.json import Jsonb

from sony_rag.errors import SessionNotFoundError
from sony_rag.executor import Copy, PlanGenerator, SetLocal, execute, fetch, plan
from sony_rag.settings import Settings
from sony_rag.sql import deletes as delete_sql
from sony_rag.sql import documents as document_sql
from sony_rag.sql import messages as message_sql
from sony_rag.sql import selections as selection_sql
from sony_rag.sql import sessions as session_sql
from sony_rag.sql.filters import ParsedFilter, filter_kind, filter_shape
from sony_rag.vector_index import (
    DEFAULT_EF_SEARCH,
    MAX_EF_SEARCH,
    MAX_PROBES,
    Capabilities,
    ann_settings,
    capabilities_from_row,
    default_probes,
    estimate_key,
    estimated_scan_bound,
    exact_scan_bound,
    pgvector_defaults_suffice,
    remember_estimate,
    remember_word_statistics,
    vector_index_from_row,
)

Row = dict[str, Any]

# How far above the exact-scan bound a column filter's planned matches must be for the index to answer without
# counting: the planner's estimates of our columns are good to well within this (most common values, histograms).
# Below the bound no margin is needed: an exact scan is exact however many rows match, a wrong estimate costs
# only time.
ESTIMATE_MARGIN: Final = 2

# Up to how many estimated matches an exact scan reads its rows whole rather than joining its winners back by id.
# Measured at 100k rows with 800-character chunks, p50: 0.68 against 0.78 ms at 100 matches, even at 1,000
# (9.8 ms), 69 against 66 ms at 10,000 (wide rows through the sort); with 10-character chunks 0.63 against 0.81 ms
# at 100, even at 1,000 (3.9 ms).
FEW_MATCHES: Final = 1_000

# Re-exported: callers and tests reach them through plans.
__all__ = ["DEFAULT_EF_SEARCH", "MAX_EF_SEARCH", "MAX_PROBES", "ann_settings", "default_probes",
           "vector_index_from_row"]


@plan(read_only=True)
def read_capabilities() -> PlanGenerator[Capabilities]:
    """Read the pgvector version, the vector index's method, options and training, and index validity."""
    rows = yield fetch(document_sql.capabilities())
    return capabilities_from_row(rows[0])


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


@plan(read_only=True)
def prune_candidates(older_than: timedelta) -> PlanGenerator[list[Row]]:
    """Return the sessions a prune would delete, least recently active first, with message and selection counts."""
    rows = yield fetch(session_sql.prune_candidates(older_than))
    return rows  # type: ignore[no-any-return]


@plan(read_only=False)
def prune_listed_sessions(older_than: timedelta, session_ids: Sequence[UUID]) -> PlanGenerator[int]:
    """Delete the listed sessions still idle for longer than ``older_than``; return how many."""
    count = yield execute(session_sql.prune_listed(older_than, list(session_ids)))
    return int(count)


# -- messages ----------------------------------------------------------------------------------------


@plan(read_only=False, single_statement=True, idempotent=True, session="session_id")
def add_messages(session_id: UUID, message_ids: Sequence[UUID], roles: Sequence[str], contents: Sequence[str],
                 token_usages: Sequence[int | None], page_context: str | None,
                 metadatas: Sequence[dict[str, Any]], *, create_session: Row | None = None) -> PlanGenerator[None]:
    """Append messages in order and mark the session active; ``create_session`` holds columns for a new one.

    One statement (one round trip, atomic without a transaction around it); running it twice appends the
    messages once. Raises SessionNotFoundError when the session is missing and may not be created.
    """
    rows = yield fetch(message_sql.append(session_id, message_ids, roles, contents, token_usages, page_context,
                                          metadatas, create_session=create_session))
    if not rows[0]["sessions"]:
        raise SessionNotFoundError(f"chat session {session_id} does not exist")


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
def history_if_session(session_id: UUID, limit: int | None, known_seqs: Sequence[int] = (),
                       known_versions: Sequence[int] = ()) -> PlanGenerator[list[Row] | None]:
    """Return a session's newest ``limit`` rows for a message reader (``newest_messages``), oldest first; None if the
    session is missing. Rows the reader holds (``known_seqs`` at ``known_versions``) come without their columns.
    """
    rows: list[Row] = yield fetch(message_sql.newest_messages(session_id, limit, known_seqs, known_versions))
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
    count = yield Copy(document_sql.copy_into_table(), document_sql.COPY_TYPES, rows)
    return int(count)


@plan(read_only=False)
def upsert_embeddings(rows: Iterable[EmbeddingRow]) -> PlanGenerator[int]:
    """Insert rows or replace those whose ids exist, through COPY into a staging table; return the count."""
    yield execute(document_sql.create_staging())
    yield Copy(document_sql.copy_into_staging(), document_sql.COPY_TYPES, rows)
    count = yield execute(document_sql.upsert_from_staging())
    return int(count)


@dataclass(frozen=True)
class _VectorPlan:
    use_index: bool  # False: an exact scan answers (no index, or a metadata filter estimated to match few rows)
    exact_below: int | None  # with the index: count the filter's matches this far, and scan exactly below
    literal_limit: bool = False  # no settings sent: the statement must carry its limit as a literal
    few_matches: bool = False  # the exact scan's filter is estimated to match at most FEW_MATCHES rows
    in_statement: Mapping[str, str] | None = None  # HNSW settings the index's own query sets itself


def _metadata_only(shape: Any) -> bool:
    # A filter shape is a nest of tuples whose leaves start with "m" (metadata key) or "c" (column).
    if not isinstance(shape, tuple) or not shape:
        return True
    if shape[0] == "c":
        return False
    return all(_metadata_only(item) for item in shape[1:] if isinstance(item, tuple))


def _remembered_estimate(capabilities: Capabilities, filter: Mapping[str, Any] | ParsedFilter, *,
                         planner: bool) -> PlanGenerator[float | None]:
    """Return how many rows ``filter`` matches by statistics, asked once per filter while the capabilities last.

    ``planner``: the planner's own estimate (column filters); else ``estimated_matches`` over the metadata
    column's statistics (None when the table was never analysed).
    """
    key = estimate_key(filter)
    if key in capabilities.estimates:
        return capabilities.estimates[key]
    if planner:
        rows = yield fetch(document_sql.planned_matches(filter))
        estimate: float | None = float(rows[0]["QUERY PLAN"][0]["Plan"]["Plan Rows"])
    else:
        rows = yield fetch(document_sql.estimated_matches(filter))
        estimate = None if rows[0]["rows"] is None else float(rows[0]["rows"])
    remember_estimate(capabilities, key, estimate)
    return estimate


def _vector_plan_choice(capabilities: Capabilities, filter: document_sql.Filter, k: int, probes: int | None,
                        ef_search: int | None, *, generic_unfiltered: bool = False,
                        literal_limit: bool = False, index_alone: bool = False) -> PlanGenerator[_VectorPlan]:
    """Set the index's settings for a search of ``k`` rows; return whether to use the index and when to scan exactly.

    The one choice behind search, MMR's candidates and hybrid's vector leg: a filter is counted in the search's
    statement (``exact_scan_bound``), or, when only metadata keys make it and the table is too large to count
    it, estimated from ANALYZE's statistics (``estimated_scan_bound``; one statement the first time a filter is
    seen while the capabilities are cached) and scanned exactly when the estimate is below the bound.
    ``generic_unfiltered``: without a filter, run the statement's generic plan (see below). ``literal_limit``:
    the caller can write ``k`` into its statement as a literal; then, where the settings would be pgvector's own
    defaults, none are sent and the returned choice says so (see below). ``index_alone``: where the index
    answers uncounted, the caller sends the index's own query (no fallback, no threshold in the statement).
    """
    use_index = capabilities.vector_index is not None
    kind = filter_kind(filter)
    exact_below = exact_scan_bound(capabilities, kind, k=k, probes=probes)
    known = exact_below is not None
    if use_index and filter and kind == "columns" and exact_below is not None:
        # The planner's own estimate of a column filter (its statistics: exact for source_type's few values), asked
        # once per filter while the capabilities are cached, settles the plan here below the bound and far above
        # it: the statement then holds one branch and no count, which the server plans in a fraction of the time
        # (planning the counted statement took 1.4-2.3 ms of a 1-6 ms search at 100k rows). Just above the bound
        # the statement still counts.
        planned = yield from _remembered_estimate(capabilities, filter, planner=True)
        if planned is not None and planned < exact_below:
            return _VectorPlan(use_index=False, exact_below=None, few_matches=planned <= FEW_MATCHES)
        if planned is not None and planned > exact_below * ESTIMATE_MARGIN:
            exact_below = None  # the index answers; a short answer still falls back to the exact scan
    if use_index and filter and kind == "metadata":
        # Statistics first, on a table of any size: a metadata filter has no index, so counting it (small tables
        # only, ``exact_scan_bound``) reads the table row by row, and planning the counted statement took longer
        # than an exact scan of 3,000 rows. Only without statistics (a table never analysed) is it counted.
        bound = estimated_scan_bound(capabilities, k=k, probes=probes)
        if bound is not None and _metadata_only(filter_shape(filter)[0]):
            estimate = yield from _remembered_estimate(capabilities, filter, planner=False)
            if estimate is not None and estimate < bound:
                return _VectorPlan(use_index=False, exact_below=None, few_matches=estimate <= FEW_MATCHES)
            if estimate is not None:
                exact_below = None  # the index answers; a short answer still falls back to the exact scan
            known = known or estimate is not None  # the index is asked only when at least the bound's rows match
    if use_index:
        # With a filter, a forced custom plan: a generic cached plan would ignore how selective this call's filter
        # is (one of the hybrid statement ran 5-40x slower at 100k rows). Without one (``generic_unfiltered``),
        # no value of the call changes the best plan, and the generic plan of the prepared statement saves
        # planning it on every call: 0.5 ms of a 2.8 ms HNSW search, 1.2-1.8 ms of hybrid's 15 CTEs. Postgres's
        # own choice keeps planning, as the generic cost of ``LIMIT $n`` looks higher.
        generic = generic_unfiltered and kind == "none"
        # The index's own query under a filter known to match many rows (``own_plan``): whatever its values, the
        # best plan is the index scan, so Postgres' own plan cache choice stands (a generic plan after five
        # custom ones, when it costs no more). Forcing a custom plan cost its planning on every call: with the
        # settings statement below, 0.8 ms of 3.2 at 100k rows.
        literal_uncounted = literal_limit and exact_below is None
        own_plan = literal_uncounted and index_alone and bool(filter)
        if (own_plan or (generic and literal_uncounted)) and pgvector_defaults_suffice(
                capabilities, k, ef_search=ef_search, filtered=bool(filter)):
            # No settings statement (its pipelined second statement costs 0.15-0.2 ms of client CPU per call):
            # with ``k`` a literal (validated int) the generic plan costs what a custom one does, so Postgres's
            # own choice (plan_cache_mode auto) runs the generic plan from the sixth execution on. Sound whatever
            # the server's settings: ef_search is what pgvector uses unset, and a server default that differs is
            # the operator's; one below k comes back short and the statement's exact fallback answers; a
            # plan_cache_mode forced by the server only costs planning. Only where nothing else is set: not
            # counted (exact_below), not a filter on pgvector 0.8 (iterative scans), not IVFFlat (probes 1 is
            # never ours).
            return _VectorPlan(use_index, exact_below, literal_limit=True)
        settings = ann_settings(capabilities, k, probes=probes, ef_search=ef_search, counted=known)
        index = capabilities.vector_index
        if own_plan and capabilities.iterative_scan and index is not None and index.method == "hnsw":
            # pgvector 0.8's iterative scan: the statement sets it itself (``index_nearest``'s hnsw_settings),
            # so nothing is pipelined before it (tested against the server). IVFFlat reads its probes when
            # the scan begins: a SetLocal.
            return _VectorPlan(use_index, exact_below, literal_limit=True, in_statement=settings)
        if own_plan:
            yield SetLocal(settings)
            return _VectorPlan(use_index, exact_below, literal_limit=True)
        yield SetLocal({**settings, "plan_cache_mode": "force_generic_plan" if generic else "force_custom_plan"})
    return _VectorPlan(use_index, exact_below)


@plan(read_only=True, replica=True)
def search(query_vector: npt.NDArray[np.float32], k: int, filter: document_sql.Filter,
           capabilities: Capabilities, *, min_similarity: float | None = None, with_embedding: bool = False,
           probes: int | None = None, ef_search: int | None = None,
           documents_only: bool = False) -> PlanGenerator[list[Row]]:
    """Return up to ``k`` nearest rows (cosine), closest first, each with ``distance``.

    The statement picks its plan (``sql.documents.nearest``): a filter matching fewer than
    ``vector_index.exact_scan_bound`` rows is answered by an exact scan of those rows; otherwise the vector
    index answers, and when it finds fewer than ``k`` rows (an IVFFlat index trained on few rows, a filter
    starving the scan) an exact scan replaces its answer. So the count is exact, and so are the rows whenever
    few match. Where the index answers without a count or a threshold (the whole table, a filter known to match
    many rows), the index's query goes alone, and the exact scan only when it comes back short.
    ``documents_only``: rows of only what a LangChain Document is made of.
    """
    max_distance = None if min_similarity is None else 1.0 - min_similarity
    choice = yield from _vector_plan_choice(capabilities, filter, k, probes, ef_search, generic_unfiltered=True,
                                            literal_limit=True, index_alone=max_distance is None)
    if choice.use_index and choice.exact_below is None and max_distance is None:
        # The index answers (the whole table, or a filter known to match many rows) and no threshold: its own
        # query, with nothing around it that the server would spend time on (a CTE, counting its rows, a sort:
        # 10 % of an HNSW search). Short answers are rare here (a table of fewer than k rows, ef_search set below
        # k on the server, a filter that matches fewer rows than estimated): then an exact scan replaces it.
        index = capabilities.vector_index
        rows: list[Row] = yield fetch(document_sql.index_nearest(
            query_vector, k, filter,
            resort=capabilities.iterative_scan and index is not None and index.method == "ivfflat",
            with_embedding=with_embedding, literal_limit=choice.literal_limit, documents_only=documents_only,
            hnsw_settings=choice.in_statement))
        if len(rows) < k:
            rows = yield fetch(document_sql.exact_nearest(query_vector, k, filter, with_embedding=with_embedding,
                                                          documents_only=documents_only))
        return rows
    # The threshold goes into the index query too: k rows that are close by the index's reckoning but partly
    # below it would otherwise hide rows above it that the probed lists missed.
    rows = yield fetch(document_sql.nearest(query_vector, k, filter, use_index=choice.use_index,
                                                        exact_below=choice.exact_below, max_distance=max_distance,
                                                        with_embedding=with_embedding,
                                                        literal_limit=choice.literal_limit,
                                                        documents_only=documents_only,
                                                        few_matches=choice.few_matches))
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
                  filter: document_sql.Filter, capabilities: Capabilities, options: HybridOptions, *,
                  min_similarity: float | None = None, with_embedding: bool = False, probes: int | None = None,
                  ef_search: int | None = None) -> PlanGenerator[list[Row]]:
    """Return up to ``k`` rows ranked by fusing vector and keyword search, in one statement.

    The vector leg picks its plan as ``search`` does (exact when few rows match the filter or the index comes
    back short). Rows carry ``distance`` (cosine) and ``rrf``; ``min_similarity`` drops rows below it (in the
    statement, before its limit). The text leg does not look up a word more rows hold than it may rank, by
    ANALYZE's statistics: read in a statement of their own the first time, then kept with ``capabilities``
    (``word_statistics``).
    """
    fetch_k = max(k, options.fetch_k)
    text_candidates = max(options.text_candidates, fetch_k)
    word_statistics = capabilities.word_statistics
    if word_statistics is None:
        # Read once per capabilities (a minute at most): read in the hybrid statement itself, pg_stats cost more
        # than half of the statement's server time at 100k rows. First, so no settings travel with it.
        common = yield fetch(document_sql.common_word_statistics())
        word_statistics = tuple((str(row["lexeme"]), float(row["rows"])) for row in common)
        remember_word_statistics(capabilities, word_statistics)
    choice = yield from _vector_plan_choice(capabilities, filter, fetch_k, probes, ef_search, generic_unfiltered=True)
    rows: list[Row] = yield fetch(document_sql.hybrid(
        query_vector, query_text, k, fetch_k, filter, config=options.config, rrf_k=options.rrf_k,
        vector_weight=options.vector_weight, keyword_weight=options.keyword_weight,
        text_candidates=text_candidates, similarity_tie=options.similarity_tie,
        use_index=choice.use_index, exact_below=choice.exact_below, with_embedding=with_embedding,
        max_distance=None if min_similarity is None else 1.0 - min_similarity,
        common_words=[word for word, rows in word_statistics if rows > text_candidates]))
    return rows


@plan(read_only=True, replica=True)
def keyword_search(query_vector: npt.NDArray[np.float32], query_text: str, k: int,
                   filter: document_sql.Filter, options: HybridOptions, *,
                   min_similarity: float | None = None, with_embedding: bool = False) -> PlanGenerator[list[Row]]:
    """Return up to ``k`` rows matching the words of ``query_text``, best text rank first.

    ``min_similarity`` keeps only rows at or above that cosine similarity (in the statement, before its limit).
    """
    max_distance = None if min_similarity is None else 1.0 - min_similarity
    rows = yield fetch(document_sql.keyword(query_vector, query_text, k, filter, config=options.config,
                                             text_candidates=options.text_candidates,
                                             with_embedding=with_embedding, max_distance=max_distance))
    return rows  # type: ignore[no-any-return]


@plan(read_only=True, replica=True)
def get_embeddings_by_ids(ids: Sequence[UUID]) -> PlanGenerator[list[Row]]:
    """Return the rows with the given ids (in no particular order)."""
    rows = yield fetch(document_sql.by_ids(ids))
    return rows  # type: ignore[no-any-return]


@plan(read_only=False)
def delete_embeddings(ids: Sequence[UUID] | None = None, filter: Mapping[str, Any] | None = None,
                      source: tuple[str, str | None] | None = None) -> PlanGenerator[int]:
    """Delete the rows that match every selector given (ids AND filter AND source); return how many.

    Never wider than the narrowest reading of the arguments: ``ids=[a, c], filter={"source": "web"}`` deletes
    a and c only if they match the filter. Raises ValueError when no selector is given.
    """
    count = yield execute(delete_sql.delete_embeddings(ids, filter, source))
    return int(count)


@plan(read_only=True)
def source_states(sources: Sequence[tuple[str, str]]) -> PlanGenerator[dict[tuple[str, str], Row]]:
    """Return ``{(source_type, source_id): {"chunks": n, "content_hashes": [...]}}`` for the stored sources."""
    by_type: dict[str, list[str]] = {}
    for source_type, source_id in sources:
        by_type.setdefault(source_type, []).append(source_id)
    found: dict[tuple[str, str], Row] = {}
    for source_type, source_ids in sorted(by_type.items()):
        rows = yield fetch(document_sql.source_states(source_type, source_ids))
        for row in rows:
            found[(source_type, row["source_id"])] = row
    return found


@plan(read_only=True)
def sources_of_other_models(model: str) -> PlanGenerator[list[Row]]:
    """Return ``{source_type, source_id, model, chunks}`` for each source stored with another embedding model."""
    rows: list[Row] = yield fetch(document_sql.sources_of_other_models(model))
    return rows


@plan(read_only=False)
def replace_sources(sources: Sequence[tuple[str, str]], rows: Sequence[EmbeddingRow]) -> PlanGenerator[int]:
    """Replace the chunks of each ``(source_type, source_id)`` by ``rows``: delete, then one COPY; return deleted.

    One transaction: a source is never seen half-replaced. Advisory locks per source make two concurrent
    replacements of one source queue instead of both inserting.
    """
    yield fetch(document_sql.lock_sources([f"sony-rag-source:{t}:{i}" for t, i in sources]))
    by_type: dict[str, list[str]] = {}
    for source_type, source_id in sources:
        by_type.setdefault(source_type, []).append(source_id)
    deleted = 0
    for source_type, source_ids in sorted(by_type.items()):
        deleted += yield execute(document_sql.delete_sources(source_type, source_ids))
    if rows:
        yield Copy(document_sql.copy_into_table(), document_sql.COPY_TYPES, rows)
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
