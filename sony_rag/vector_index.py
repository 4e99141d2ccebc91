"""What sony-rag knows about the vector index, with no I/O: capabilities, ANN settings, sizing, health, plan choice.

Everything here is a pure function of facts the server reported (``sql.documents.capabilities()`` and
``sql.indexes.build_facts()``), so it is tested without a database and shared by searches, rebuilds and ``stats``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Final

from sony_rag.sql.filters import ParsedFilter, parse_filter
from sony_rag.types import EMBEDDING_DIMENSIONS

logger = logging.getLogger("sony_rag")

# pgvector's default hnsw.ef_search, which ann_settings raises to 2k for larger k: HNSW needs ef_search >= k
# to return k rows. pgvector caps ef_search at 1000.
DEFAULT_EF_SEARCH: Final = 40
MAX_EF_SEARCH: Final = 1000
# pgvector allows at most 32,768 IVFFlat lists, so no more probes.
MAX_PROBES: Final = 32_768
LISTS_RANGE: Final = (1, 32_768)
# pgvector 0.8's default hnsw.max_scan_tuples: an iterative HNSW scan visits at most this many tuples.
DEFAULT_MAX_SCAN_TUPLES: Final = 20_000

# A filtered search scans the matching rows exactly when fewer than this many match (counted, at most this far,
# in the search's own statement). Measured on 100k clustered 384-d rows (docs/pgvector.md): an exact scan of
# 2,000 rows found through the source_type btree costs about what one HNSW or IVFFlat query does, and below it
# the exact scan is both faster and exact.
EXACT_SCAN_ROWS: Final = 2_000

# The most rows a search counts before deciding (the count reads at most this many btree entries or rows).
MAX_EXACT_SCAN_ROWS: Final = 25_000

# A metadata filter has no index: counting its matches reads the table until EXACT_SCAN_ROWS match, up to all of
# it. Worth it (the rows are then exact, and the count's pass is the exact scan's) only on tables this small, and
# only where ANALYZE's statistics cannot estimate the filter instead (see below).
METADATA_PROBE_ROWS: Final = 10_000

# A metadata-only filter is not counted but estimated from ANALYZE's statistics of the
# metadata column (a histogram of about 100 buckets: good to about 1 % of the table). It is scanned exactly when
# the estimate says the index would answer it badly (measured on 100k clustered rows, docs/pgvector.md):
# - IVFFlat finds the nearest rows among the probed lists' matches: recall@10 was 0.77 with about 20 of them
#   (0.1 % of the table, 20 of 100 lists probed) and 0.98 with about 200, so below this many matches per k
#   in the probed lists the exact scan runs;
IVFFLAT_PROBED_MATCHES_PER_K: Final = 15
# - HNSW with an iterative scan (pgvector 0.8) gave recall 0.84-0.88 at 0.1-1 % and >= 0.99 from 10 %, so
#   below this share of the table the exact scan runs (without iterative scans the index comes back short
#   below k / ef_search of the table and the exact fallback runs anyway: that share is used instead).
HNSW_ITERATIVE_MIN_SHARE: Final = 0.03

# An IVFFlat index is stale once the table holds this many times the rows its k-means saw.
STALE_GROWTH: Final = 2
# The comment a rebuild leaves on the index: how many rows k-means was trained on (PostgreSQL keeps no record).
TRAINED_COMMENT_PREFIX: Final = "sony-rag: trained on "
REBUILD_COMMAND: Final = "sony-rag index rebuild"

_MIB: Final = 1024 * 1024

WordStatistics = tuple[tuple[str, float], ...]


@dataclass(frozen=True)
class VectorIndex:
    """The approximate index on document_embeddings.embedding, as the server reports it.

    ``trained_rows`` is the row count recorded by the last ``rebuild_vector_index`` (None when the index was
    made elsewhere, e.g. by the migration on an empty table).
    """

    method: str  # "ivfflat" or "hnsw"
    lists: int | None
    m: int | None
    ef_construction: int | None
    trained_rows: int | None = None


@dataclass(frozen=True)
class Capabilities:
    """What the connected server can do, read once and cached for a minute."""

    pgvector_version: tuple[int, ...]
    vector_index: VectorIndex | None
    # The planner's row count of document_embeddings (pg_class.reltuples; -1 before the first ANALYZE).
    table_rows: int = -1
    invalid_indexes: tuple[str, ...] = ()
    # Matches of metadata-only filters estimated from ANALYZE's statistics (``estimate_key`` -> rows, None
    # without statistics): as fresh as these capabilities (read again every minute), and bounded.
    estimates: dict[str, float | None] = field(default_factory=dict, compare=False, hash=False, repr=False)
    # The words ANALYZE's statistics count as common in the text index's column, (lexeme, estimated rows), read by
    # the first hybrid search with these capabilities (None until then), so refreshed with them.
    word_statistics: WordStatistics | None = field(default=None, compare=False, hash=False, repr=False)

    @property
    def iterative_scan(self) -> bool:
        """Return True when pgvector has iterative index scans (0.8.0 and later)."""
        return self.pgvector_version >= (0, 8, 0)


def parse_version(text: object) -> tuple[int, ...]:
    """Return pgvector's ``extversion`` as a tuple of ints, ``(0,)`` when the extension is missing."""
    parts = tuple(int(part) for part in str(text or "0").split(".") if part.isdigit())
    return parts or (0,)


def trained_rows_from_comment(comment: object) -> int | None:
    """Return the row count a rebuild recorded in the index's comment, or None when there is none."""
    text = str(comment or "")
    if not text.startswith(TRAINED_COMMENT_PREFIX):
        return None
    number = text[len(TRAINED_COMMENT_PREFIX):].split(" ", 1)[0]
    return int(number) if number.isdigit() else None


def trained_comment(rows: int) -> str:
    """Return the index comment recording that k-means saw ``rows`` rows."""
    return f"{TRAINED_COMMENT_PREFIX}{int(rows)} rows"


def vector_index_from_row(row: Mapping[str, Any]) -> VectorIndex | None:
    """Return the vector index described by a row of ``sql.documents.capabilities()``, or None if there is none."""
    method = row["index_method"]
    if not method:
        return None
    options = dict(option.split("=", 1) for option in (row["index_options"] or []))
    return VectorIndex(
        method=method,
        lists=int(options.get("lists", 100)) if method == "ivfflat" else None,
        m=int(options.get("m", 16)) if method == "hnsw" else None,
        ef_construction=int(options.get("ef_construction", 64)) if method == "hnsw" else None,
        trained_rows=trained_rows_from_comment(row.get("index_comment")),
    )


def capabilities_from_row(row: Mapping[str, Any]) -> Capabilities:
    """Return the Capabilities described by the row of ``sql.documents.capabilities()``."""
    table_rows = row.get("table_rows")
    return Capabilities(pgvector_version=parse_version(row["pgvector_version"]),
                        vector_index=vector_index_from_row(row),
                        table_rows=-1 if table_rows is None else int(table_rows),
                        invalid_indexes=tuple(row.get("invalid_indexes") or ()))


# -- search settings -----------------------------------------------------------------------------------------


def default_probes(lists: int) -> int:
    """Return the IVFFlat probes used when none is given: twice sqrt(lists), at most all lists."""
    return max(1, min(lists, math.ceil(2 * math.sqrt(lists))))


def ann_settings(capabilities: Capabilities, k: int, *, probes: int | None = None, ef_search: int | None = None,
                 counted: bool = False) -> dict[str, str]:
    """Return the SET LOCAL settings that make the vector index find ``k`` rows well.

    On pgvector 0.8 they turn on iterative scans: HNSW in strict order, IVFFlat in relaxed order (the statement
    re-sorts). With ``counted`` the index is only asked when at least ``EXACT_SCAN_ROWS`` rows match the filter,
    so the scan's limits are sized for that selectivity: HNSW visits up to ``max_scan_tuples`` tuples (enough
    for ``k`` matches, never below pgvector's default) and IVFFlat probes at most the lists that hold that many.
    Without it (a metadata filter on a large table) pgvector's own limits stand. When the scan still comes back
    short, the statement's exact fallback runs.
    """
    index = capabilities.vector_index
    if index is None:
        return {}
    rows = max(capabilities.table_rows, EXACT_SCAN_ROWS)
    # Tuples an iterative scan expects to visit to meet k matches at the lowest selectivity it is used for.
    expected = math.ceil(4 * k * rows / EXACT_SCAN_ROWS)
    if index.method == "ivfflat":
        lists = index.lists or 100
        first = probes or default_probes(lists)
        settings = {"ivfflat.probes": str(first)}
        if capabilities.iterative_scan:
            settings["ivfflat.iterative_scan"] = "relaxed_order"
            if counted:
                per_list = max(1, rows // lists)
                settings["ivfflat.max_probes"] = str(min(lists, max(first, math.ceil(expected / per_list))))
        return settings
    settings = {"hnsw.ef_search": str(min(MAX_EF_SEARCH, ef_search or max(DEFAULT_EF_SEARCH, 2 * k)))}
    if capabilities.iterative_scan:
        settings["hnsw.iterative_scan"] = "strict_order"
        if counted:
            settings["hnsw.max_scan_tuples"] = str(max(DEFAULT_MAX_SCAN_TUPLES, expected))
    return settings


def pgvector_defaults_suffice(capabilities: Capabilities, k: int, *, ef_search: int | None = None,
                              filtered: bool = True) -> bool:
    """Return True when pgvector's defaults (HNSW, ef_search 40) find the rows ``ann_settings`` would for ``k``.

    Before 0.8 whenever the settings are only that ef_search; on 0.8 only without a filter: an iterative scan
    goes on past rows a filter drops, and with none every row the first pass finds is kept.
    """
    index = capabilities.vector_index
    if index is None or index.method != "hnsw" or (capabilities.iterative_scan and filtered):
        return False
    return ann_settings(capabilities, k, ef_search=ef_search).get("hnsw.ef_search") == str(DEFAULT_EF_SEARCH)


def exact_scan_bound(capabilities: Capabilities, filter_kind: str, *, k: int = 10,
                     probes: int | None = None) -> int | None:
    """Return below how many matching rows a search scans them exactly; None: let the index answer.

    ``filter_kind`` is ``"columns"`` (every leaf a btree-indexed column: source_type, source_id, created_at),
    ``"metadata"`` (some leaf a metadata key) or ``"none"``. A column filter is counted through the btrees,
    cheaply. A metadata filter has no index: it is counted only on a small table (``METADATA_PROBE_ROWS``); on
    a larger one the index answers (on pgvector 0.8 with an iterative scan), and an exact scan only when it
    comes back short. An unfiltered search is counted only on a table the planner thinks smaller than the bound,
    where the exact scan is both cheap and exact (an index trained on few rows is not).

    The bound is ``EXACT_SCAN_ROWS``, raised (up to ``MAX_EXACT_SCAN_ROWS``) where the index would read more:
    IVFFlat reads ``probes / lists`` of the table, so fewer matching rows than that are cheaper to rank exactly;
    HNSW without iterative scans (pgvector 0.6) finds about ``selectivity * ef_search`` matches, so below
    ``k / ef_search`` of the table it comes back short and the exact scan runs anyway.
    """
    index = capabilities.vector_index
    if index is None:
        return None
    rows = capabilities.table_rows
    if not (filter_kind == "columns" or (filter_kind == "metadata" and rows <= METADATA_PROBE_ROWS)
            or (filter_kind == "none" and rows < EXACT_SCAN_ROWS)):
        return None
    index_reads = 0
    if index.method == "ivfflat":
        lists = index.lists or 100
        index_reads = math.ceil(max(rows, 0) * min(lists, probes or default_probes(lists)) / lists)
    elif not capabilities.iterative_scan:
        index_reads = math.ceil(max(rows, 0) * 2 * k / max(DEFAULT_EF_SEARCH, 2 * k))
    return max(EXACT_SCAN_ROWS, min(MAX_EXACT_SCAN_ROWS, index_reads))


def estimated_scan_bound(capabilities: Capabilities, *, k: int = 10, probes: int | None = None) -> int | None:
    """Return below how many estimated matches a metadata-only filter is scanned exactly; None: the index answers.

    On a table of any size (a small one is counted only when it has no statistics, ``exact_scan_bound``). The
    estimate comes from ANALYZE's statistics (``sql.documents.estimated_matches``, asked once per filter while
    the capabilities are cached); without statistics a large table's index answers. IVFFlat: below
    ``IVFFLAT_PROBED_MATCHES_PER_K * k`` matches in the lists a search probes. HNSW: below
    ``HNSW_ITERATIVE_MIN_SHARE`` of the table with iterative scans (pgvector 0.8), below ``k / ef_search`` of it
    without (where the index would come back short and the exact scan run anyway). The exact scan reads the
    whole table: it buys exact answers where the index's would be poor, not speed.
    """
    index = capabilities.vector_index
    if index is None:
        return None
    if index.method == "ivfflat":
        lists = index.lists or 100
        probed_share = min(lists, probes or default_probes(lists)) / lists
        return math.ceil(IVFFLAT_PROBED_MATCHES_PER_K * k / probed_share)
    share = HNSW_ITERATIVE_MIN_SHARE if capabilities.iterative_scan else k / max(DEFAULT_EF_SEARCH, 2 * k)
    # No floor of EXACT_SCAN_ROWS here: that many rows found through a btree cost one index query, but a
    # metadata filter's exact scan evaluates it on every row of the table however few match.
    return math.ceil(max(capabilities.table_rows, 0) * share)


MAX_ESTIMATES: Final = 1024


def estimate_key(filter: Mapping[str, Any] | ParsedFilter) -> str:
    """Return the key a filter's estimate is remembered under: its shape and bound values, parsed or not alike.

    Raises InvalidFilterError when ``filter`` is malformed.
    """
    parsed = parse_filter(filter)
    return "[null,[]]" if parsed is None else parsed.key


def remember_estimate(capabilities: Capabilities, key: str, rows: float | None) -> None:
    """Remember a filter's estimated matches with these capabilities (forgetting all at ``MAX_ESTIMATES``)."""
    if len(capabilities.estimates) >= MAX_ESTIMATES:
        capabilities.estimates.clear()
    capabilities.estimates[key] = rows


def remember_word_statistics(capabilities: Capabilities, statistics: WordStatistics) -> None:
    """Remember the text index's common-word statistics with these capabilities (see ``word_statistics``)."""
    # Frozen for comparison and hashing, which ignore this field: a cache filled in later, like ``estimates``.
    object.__setattr__(capabilities, "word_statistics", statistics)


# -- sizing ----------------------------------------------------------------------------------------------------


def auto_lists(rows: int) -> int:
    """Return pgvector's recommended IVFFlat lists for ``rows``: rows/1000 up to 1M rows, sqrt(rows) beyond, >= 1.

    A tiny or empty table gets one list, which an IVFFlat scan reads whole: exact, and it cannot under-fill.
    """
    if rows <= 1_000_000:
        return max(1, rows // 1000)
    return min(LISTS_RANGE[1], math.isqrt(rows))


def _vector_bytes(dimensions: int) -> int:
    return 8 + 4 * dimensions  # varlena header, dim, unused, then float4s (pgvector's VECTOR_SIZE)


def ivfflat_build_memory(rows: int, lists: int, dimensions: int = EMBEDDING_DIMENSIONS, *,
                         pgvector_version: tuple[int, ...] = (0, 6, 2)) -> int:
    """Return the bytes pgvector's k-means checks against maintenance_work_mem (0 when it runs no k-means).

    Mirrors ElkanKmeans in ivfkmeans.c: ``max(10000, 50 * lists)`` sample slots, and per sample a lower bound
    for every list. From 0.7.0 the new centers are summed in a separate float array (lists x dimensions), which
    the check counts too. With no more sampled rows than lists, pgvector copies the rows as centers and checks
    nothing.
    """
    slots = max(10_000, 50 * lists)
    samples = min(rows, slots)
    if samples <= lists:
        return 0
    array_header = 24
    vector = _vector_bytes(dimensions)
    total = (array_header + slots * vector            # samples
             + 2 * (array_header + lists * vector)    # centers and new centers
             + 4 * lists                              # center counts
             + 4 * samples * 2                        # closest centers, upper bounds
             + 4 * samples * lists                    # lower bounds
             + 4 * lists * 2                          # s, new center distances
             + 4 * lists * lists)                     # half distances between centers
    if pgvector_version >= (0, 7, 0):
        total += 4 * lists * dimensions               # the float aggregate of the new centers
    return total


def hnsw_build_memory(rows: int, m: int, dimensions: int = EMBEDDING_DIMENSIONS) -> int:
    """Return the bytes an HNSW build needs to keep its whole graph in maintenance_work_mem (an estimate).

    Mirrors HnswInitElement in pgvector 0.6: per row an element (128 B), its vector, a layer-0 neighbour
    array of 2m candidates (16 B each) and, on average, 1/(m-1) upper layers of m candidates.
    """
    layer0 = 8 + 2 * m * 16
    upper = (8 + 8 + m * 16) / max(1, m - 1)
    per_row = 128 + 8 + layer0 + upper + _vector_bytes(dimensions)
    # Allocation alignment and the parallel build's bookkeeping: a 5 % margin, measured on pgvector 0.6.2.
    return int(rows * per_row * 1.05) + _MIB


# -- health ----------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class IndexProblem:
    """Something wrong with the vector index: what (``kind``), a sentence for people, and the command that fixes it."""

    kind: str  # "stale_ivfflat" or "invalid_index"
    message: str
    fix: str

    def as_dict(self) -> dict[str, str]:
        """Return the problem as a JSON-ready dict."""
        return {"kind": self.kind, "message": self.message, "fix": self.fix}


def ivfflat_is_stale(index: VectorIndex | None, rows: int) -> bool:
    """Return True when an IVFFlat index was trained on far fewer rows than the table holds (``rows``).

    An index with no recorded training (the migration's, built on an empty table) counts as trained on none.
    """
    if index is None or index.method != "ivfflat" or rows <= 0:
        return False
    trained = index.trained_rows or 0
    return rows > STALE_GROWTH * trained


def index_problems(index: VectorIndex | None, rows: int, invalid_indexes: tuple[str, ...] = ()) -> list[IndexProblem]:
    """Return what is wrong with the vector index given the table's ``rows`` and the indexes marked not valid."""
    problems: list[IndexProblem] = []
    if ivfflat_is_stale(index, rows):
        assert index is not None
        trained = "an unrecorded number of" if index.trained_rows is None else f"{index.trained_rows}"
        problems.append(IndexProblem(
            "stale_ivfflat",
            f"the IVFFlat index ({index.lists} lists) was trained on {trained} rows and the table now holds "
            f"{rows}: its centroids do not describe the data, so searches are slower and less accurate "
            f"(sized for now: {auto_lists(rows)} lists)",
            REBUILD_COMMAND))
    for name in invalid_indexes:
        problems.append(IndexProblem(
            "invalid_index",
            f"index {name} is not valid (a failed or interrupted CREATE INDEX CONCURRENTLY): no query uses it, "
            "yet every write still maintains it",
            REBUILD_COMMAND))
    return problems


_warned: set[str] = set()


def warn_once(capabilities: Capabilities) -> None:
    """Log each index problem the capabilities show, at most once per process and kind."""
    for problem in index_problems(capabilities.vector_index, capabilities.table_rows, capabilities.invalid_indexes):
        if problem.kind not in _warned:
            _warned.add(problem.kind)
            logger.warning("sony-rag: %s; fix: %s", problem.message, problem.fix)


__all__ = [
    "DEFAULT_EF_SEARCH",
    "EXACT_SCAN_ROWS",
    "HNSW_ITERATIVE_MIN_SHARE",
    "IVFFLAT_PROBED_MATCHES_PER_K",
    "MAX_EF_SEARCH",
    "MAX_ESTIMATES",
    "MAX_EXACT_SCAN_ROWS",
    "MAX_PROBES",
    "METADATA_PROBE_ROWS",
    "Capabilities",
    "IndexProblem",
    "VectorIndex",
    "WordStatistics",
    "ann_settings",
    "auto_lists",
    "capabilities_from_row",
    "default_probes",
    "estimate_key",
    "estimated_scan_bound",
    "exact_scan_bound",
    "hnsw_build_memory",
    "index_problems",
    "ivfflat_build_memory",
    "ivfflat_is_stale",
    "parse_version",
    "remember_estimate",
    "remember_word_statistics",
    "trained_comment",
    "vector_index_from_row",
    "warn_once",
]
