"""What sony-rag decides about the vector index without a database: settings per pgvector version, which
filters are counted before a search, k-means memory per version, and index health."""

from __future__ import annotations

import logging

import pytest

from sony_rag import plans, vector_index
from sony_rag.executor import SetLocal
from sony_rag.sql import documents as document_sql
from sony_rag.sql.documents import hybrid, nearest
from sony_rag.sql.filters import filter_kind, parse_filter
from sony_rag.vector_index import (
    EXACT_SCAN_ROWS,
    MAX_EXACT_SCAN_ROWS,
    METADATA_PROBE_ROWS,
    Capabilities,
    VectorIndex,
    ann_settings,
    capabilities_from_row,
    estimated_scan_bound,
    exact_scan_bound,
    index_problems,
    ivfflat_build_memory,
    parse_version,
    trained_comment,
    trained_rows_from_comment,
    warn_once,
)

IVFFLAT = VectorIndex("ivfflat", lists=100, m=None, ef_construction=None, trained_rows=100_000)
HNSW = VectorIndex("hnsw", lists=None, m=16, ef_construction=64)


def caps(index: VectorIndex | None, version: tuple[int, ...] = (0, 8, 1), rows: int = 100_000) -> Capabilities:
    return Capabilities(pgvector_version=version, vector_index=index, table_rows=rows)


def test_pgvector_06_gets_no_iterative_scan_settings() -> None:
    assert ann_settings(caps(IVFFLAT, (0, 6, 2)), 10) == {"ivfflat.probes": "20"}
    assert ann_settings(caps(HNSW, (0, 6, 2)), 10) == {"hnsw.ef_search": "40"}


def test_pgvector_08_hnsw_scans_in_strict_order_with_room_for_k_matches() -> None:
    settings = ann_settings(caps(HNSW), 10, counted=True)
    assert settings["hnsw.iterative_scan"] == "strict_order"
    # The index answers only when >= EXACT_SCAN_ROWS of 100k rows match: 10 matches need ~500 tuples at that
    # selectivity, so pgvector's default limit (20,000) stands; a larger k or table raises it.
    assert int(settings["hnsw.max_scan_tuples"]) == 20_000
    assert int(ann_settings(caps(HNSW, rows=1_000_000), 100, counted=True)["hnsw.max_scan_tuples"]) > 20_000
    # Not counted (a metadata filter on a large table): the selectivity is unknown, pgvector's limits stand.
    assert "hnsw.max_scan_tuples" not in ann_settings(caps(HNSW), 10)


def test_pgvector_08_ivfflat_relaxed_order_probes_at_most_what_k_needs() -> None:
    settings = ann_settings(caps(IVFFLAT), 10, counted=True)
    assert settings["ivfflat.iterative_scan"] == "relaxed_order"
    # At >= 2 % selectivity the first 20 of 100 lists hold about 400 matches: no need to probe further.
    assert int(settings["ivfflat.max_probes"]) == 20
    assert "ivfflat.max_probes" not in ann_settings(caps(IVFFLAT), 10)
    assert ann_settings(caps(IVFFLAT), 10, probes=3)["ivfflat.probes"] == "3"


def test_only_column_filters_are_counted_on_large_tables() -> None:
    assert filter_kind({"source_type": "faq"}) == "columns"
    assert filter_kind({"$or": [{"source_type": "faq"}, {"source_id": {"$like": "sku-%"}}]}) == "columns"
    assert filter_kind({"source_type": "faq", "color": "red"}) == "metadata"
    assert filter_kind(None) == filter_kind({}) == "none"
    big, small = caps(HNSW), caps(HNSW, rows=METADATA_PROBE_ROWS)
    assert exact_scan_bound(big, "columns") == EXACT_SCAN_ROWS
    assert exact_scan_bound(big, "metadata") is None
    assert exact_scan_bound(small, "metadata") == EXACT_SCAN_ROWS
    # Unfiltered: counted only on a table smaller than the bound (or never analyzed), where scanning is exact.
    assert exact_scan_bound(big, "none") is None and exact_scan_bound(small, "none") is None
    assert exact_scan_bound(caps(HNSW, rows=-1), "none") == EXACT_SCAN_ROWS
    assert exact_scan_bound(caps(None), "columns") is None  # no index: every search is exact


def test_the_bound_rises_where_the_index_would_read_more_rows_than_an_exact_scan() -> None:
    # IVFFlat probing 20 of 100 lists reads 20 % of 100k rows: up to 20,000 matches rank faster exactly.
    assert exact_scan_bound(caps(IVFFLAT), "columns") == 20_000
    assert exact_scan_bound(caps(IVFFLAT), "columns", probes=5) == 5_000
    assert exact_scan_bound(caps(IVFFLAT, rows=10**7), "columns") == MAX_EXACT_SCAN_ROWS
    # HNSW on pgvector 0.6 (no iterative scan) finds ~ selectivity x ef_search matches: below k / ef_search of
    # the table it would come back short, so those are ranked exactly (up to the cap).
    assert exact_scan_bound(caps(HNSW, (0, 6, 2)), "columns") == MAX_EXACT_SCAN_ROWS
    assert exact_scan_bound(caps(HNSW, (0, 6, 2), rows=20_000), "columns") == 10_000


def test_metadata_only_filters_are_estimated_from_statistics() -> None:
    # IVFFlat probing 20 of 100 lists: exact below 15 * k matches in the probed 20 %, i.e. 750 rows for k=10.
    assert estimated_scan_bound(caps(IVFFLAT), k=10) == 750
    assert estimated_scan_bound(caps(IVFFLAT), k=20) == 1_500
    assert estimated_scan_bound(caps(IVFFLAT), k=10, probes=50) == 300
    # HNSW with iterative scans: exact below 3 % of the table; without them below k / ef_search of it.
    assert estimated_scan_bound(caps(HNSW), k=10) == 3_000
    assert estimated_scan_bound(caps(HNSW, (0, 6, 2)), k=10) == 25_000
    assert estimated_scan_bound(caps(HNSW, (0, 6, 2)), k=40) == 50_000
    # Small tables too (counted only without statistics), with no floor: however few rows match, a metadata
    # filter's exact scan evaluates it on every row, so only the index's own limits decide.
    assert estimated_scan_bound(caps(HNSW, (0, 6, 2), rows=3_000), k=10) == 750
    assert estimated_scan_bound(caps(HNSW, rows=METADATA_PROBE_ROWS), k=10) == 300
    assert estimated_scan_bound(caps(HNSW, rows=-1), k=10) == 0  # never analysed: no estimate either
    assert estimated_scan_bound(caps(None), k=10) is None


def test_the_estimate_reads_analyzes_statistics_of_the_metadata_column() -> None:
    statement, params = document_sql.estimated_matches({"tenth": True})
    text = str(statement)
    assert "pg_stats" in text and "histogram_bounds" in text and "most_common_vals" in text
    assert "FROM document_embeddings" not in text  # statistics only: no row is read
    assert "tenth" in params.values()


def run_choice(capabilities: Capabilities, flt: dict[str, object] | None, estimate: float | None = None,
               planned: float = 0.0) -> tuple[plans._VectorPlan, list[object]]:
    """Drive the plan choice with no database, answering a metadata estimate with ``estimate`` and the planner's
    estimate of a column filter with ``planned``; return the choice and the steps it yielded."""
    steps = plans._vector_plan_choice(capabilities, flt, 10, None, None)
    yielded: list[object] = []
    answer: object = None
    try:
        while True:
            step = steps.send(answer)
            yielded.append(step)
            if isinstance(step, SetLocal):
                answer = None
            elif step.query.as_string(None).startswith("EXPLAIN"):  # type: ignore[attr-defined]
                answer = [{"QUERY PLAN": [{"Plan": {"Plan Rows": planned}}]}]
            else:
                answer = [{"rows": estimate}]
    except StopIteration as done:
        return done.value, yielded


def test_a_metadata_only_filter_on_a_large_table_is_estimated_once_and_ranked_exactly_when_few_match() -> None:
    big = caps(IVFFLAT)  # bound: 750 estimated matches
    choice, steps = run_choice(big, {"tenth": True}, estimate=480.0)
    # The estimate, then the exact scan, which reads so few rows whole rather than joining its winners back.
    assert choice == plans._VectorPlan(False, None, few_matches=True) and len(steps) == 1
    # Remembered with the capabilities: the same filter again asks nothing.
    choice, steps = run_choice(big, {"tenth": True}, estimate=99_999.0)
    assert choice == plans._VectorPlan(False, None, few_matches=True) and steps == []
    assert run_choice(big, {"half": True}, estimate=700.0)[0] == plans._VectorPlan(False, None, few_matches=True)
    # Many match: the index answers, with the settings sized for at least the bound's selectivity.
    choice, steps = run_choice(big, {"$or": [{"a": 1}, {"$not": {"b": {"$lt": 2}}}]}, estimate=5_000.0)
    assert choice == plans._VectorPlan(True, None) and isinstance(steps[-1], SetLocal)
    # No statistics (never analysed): the index answers, as before.
    choice, _ = run_choice(caps(HNSW), {"tenth": True}, estimate=None)
    assert choice == plans._VectorPlan(True, None)
    # A column leaf beside the metadata one: the metadata column's statistics cannot estimate it.
    choice, steps = run_choice(big, {"source_type": "faq", "tenth": True})
    assert choice == plans._VectorPlan(True, None) and len(steps) == 1
    assert run_choice(big, {"source_type": "faq"}, planned=20_000.0)[0] == plans._VectorPlan(True, 20_000)
    # A small table is counted in the statement instead.
    assert run_choice(caps(IVFFLAT, rows=5_000), {"tenth": True})[0] == plans._VectorPlan(True, 2_000)


def test_remembered_estimates_are_bounded() -> None:
    capabilities = caps(HNSW)
    for i in range(vector_index.MAX_ESTIMATES + 1):
        vector_index.remember_estimate(capabilities, vector_index.estimate_key({"i": i}), float(i))
    assert len(capabilities.estimates) == 1
    # The search path hands over parsed filters: one filter, parsed or not, is one key; other values, another.
    assert vector_index.estimate_key(parse_filter({"a": 2, "b": 1})) == vector_index.estimate_key({"a": 2, "b": 1})
    assert vector_index.estimate_key(parse_filter({"a": 2})) != vector_index.estimate_key({"a": 3})


def test_the_statement_counts_only_when_told_and_only_for_a_filter() -> None:
    def text(query: object) -> str:
        return str(query)

    assert "choice" in text(nearest([1.0], 10, {"source_type": "faq"}, exact_below=2000)[0])
    assert "choice" in text(nearest([1.0], 10, None, exact_below=2000)[0])
    assert "choice" not in text(nearest([1.0], 10, None)[0])
    assert "choice" not in text(nearest([1.0], 10, {"source_type": "faq"})[0])
    assert "index_rows" not in text(nearest([1.0], 10, {"source_type": "faq"}, use_index=False)[0])
    statement, params = hybrid([1.0], "oak", 4, 20, {"source_type": "faq"}, config="english", rrf_k=1.0,
                               vector_weight=1.0, keyword_weight=0.4, text_candidates=200, similarity_tie=0.005,
                               exact_below=2000)
    assert "choice" in text(statement) and 2000 in params.values()


def test_kmeans_memory_follows_the_version() -> None:
    # pgvector 0.7 added the new centers' float aggregate (lists x dimensions) to the memory it checks.
    assert ivfflat_build_memory(1200, 1000, pgvector_version=(0, 8, 1)) - ivfflat_build_memory(1200, 1000) \
        == 4 * 1000 * 384
    assert ivfflat_build_memory(50, 100, pgvector_version=(0, 8, 1)) == 0


def test_capabilities_parse_the_catalog_row() -> None:
    row = {"pgvector_version": "0.8.1", "index_method": "ivfflat", "index_options": ["lists=7"],
           "index_comment": trained_comment(7000), "table_rows": 9000, "invalid_indexes": ["x_rebuild"]}
    parsed = capabilities_from_row(row)
    assert parsed.pgvector_version == (0, 8, 1) and parsed.iterative_scan
    assert parsed.vector_index == VectorIndex("ivfflat", 7, None, None, trained_rows=7000)
    assert (parsed.table_rows, parsed.invalid_indexes) == (9000, ("x_rebuild",))
    assert parse_version(None) == (0,)
    assert trained_rows_from_comment("made by hand") is None


def test_index_health() -> None:
    migrated = VectorIndex("ivfflat", 100, None, None)  # built on the empty table: no training recorded
    problems = index_problems(migrated, 152)
    assert [p.kind for p in problems] == ["stale_ivfflat"]
    assert "152" in problems[0].message and problems[0].fix == "sony-rag index rebuild"
    assert index_problems(VectorIndex("ivfflat", 1, None, None, trained_rows=152), 300) == []
    assert [p.kind for p in index_problems(VectorIndex("ivfflat", 1, None, None, trained_rows=152), 305)] \
        == ["stale_ivfflat"]
    assert index_problems(HNSW, 10**6) == []
    assert [p.kind for p in index_problems(HNSW, 10, ("idx_document_embeddings_vector_rebuild",))] \
        == ["invalid_index"]


def test_the_search_warning_comes_once_per_process(caplog: pytest.LogCaptureFixture,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(vector_index, "_warned", set())  # as in a fresh process
    stale = Capabilities((0, 6, 2), VectorIndex("ivfflat", 100, None, None), table_rows=152)
    with caplog.at_level(logging.WARNING, logger="sony_rag"):
        warn_once(stale)
        warn_once(stale)
    assert sum("sony-rag index rebuild" in record.getMessage() for record in caplog.records) == 1


def test_statements_are_composed_once_per_shape_and_bind_each_calls_values(monkeypatch: pytest.MonkeyPatch) -> None:
    def plain(params: dict[str, object]) -> dict[str, object]:
        return {name: getattr(value, "obj", value) for name, value in params.items()}  # Jsonb -> its object

    first = nearest([1.0], 10, {"price": {"$between": [1, 5]}, "source_type": "faq"}, exact_below=2000)
    second = nearest([2.0], 7, {"price": {"$between": [2, 9]}, "source_type": "policy"}, exact_below=2000)
    assert first[0] is second[0]  # the same composed text, reused
    monkeypatch.setattr(document_sql, "_SHAPES", {})  # compose the second call afresh
    fresh = nearest([2.0], 7, {"price": {"$between": [2, 9]}, "source_type": "policy"}, exact_below=2000)
    assert fresh[0] is not second[0] and str(fresh[0]) == str(second[0])
    assert plain(fresh[1]) == plain(second[1])
    assert {"lo": 2, "hi": 9} in plain(second[1]).values() and "policy" in plain(second[1]).values()
    # Another shape (string bounds render another jsonpath type test) gets its own text.
    other = nearest([1.0], 10, {"price": {"$between": ["a", "b"]}, "source_type": "faq"}, exact_below=2000)
    assert '"string"' in str(other[0]) and '"string"' not in str(second[0])


def test_a_column_filter_far_from_the_bound_is_settled_by_the_planners_estimate_without_counting() -> None:
    big = caps(HNSW)
    bound = vector_index.exact_scan_bound(big, "columns")
    assert bound is not None
    # Few match by the planner's estimate: the exact scan alone, no settings, no count; asked once per filter.
    # So few (bound 2,000 on pgvector 0.8) that the scan reads the rows whole instead of joining winners back.
    assert bound / 4 <= plans.FEW_MATCHES
    choice, steps = run_choice(big, {"source_type": "policy"}, planned=bound / 4)
    assert choice == plans._VectorPlan(False, None, few_matches=True) and len(steps) == 1
    choice, steps = run_choice(big, {"source_type": "policy"}, planned=bound * 100)
    assert choice == plans._VectorPlan(False, None, few_matches=True) and steps == []
    # pgvector 0.6's HNSW bound is 25,000: 6,000 matches are scanned exactly, their winners joined back.
    choice, _ = run_choice(caps(HNSW, (0, 6, 2)), {"source_type": "faq"}, planned=6_000.0)
    assert choice == plans._VectorPlan(False, None, few_matches=False)
    # Most match: the index answers without a count (its short answers still fall back in the statement).
    choice, steps = run_choice(big, {"source_type": "product"}, planned=bound * 4)
    assert choice == plans._VectorPlan(True, None) and isinstance(steps[-1], SetLocal)
    # Just above the bound: the statement counts, as without an estimate.
    choice, _ = run_choice(big, {"source_type": "faq"}, planned=bound * 1.5)
    assert choice == plans._VectorPlan(True, bound)
    # Just below it: exact, whatever the true count (a wrong estimate costs time, never rows).
    choice, _ = run_choice(big, {"source_type": "page_content"}, planned=bound * 0.9)
    assert choice == plans._VectorPlan(False, None, few_matches=False)


def test_an_exact_scan_joins_its_winners_back_only_when_many_rows_match_and_whole_rows_are_wanted() -> None:
    def statement(**options: object) -> str:
        return nearest([1.0], 10, {"source_type": "faq"}, use_index=False, **options)[0].as_string(None)  # type: ignore[arg-type]

    assert "JOIN document_embeddings" in statement()
    few = statement(few_matches=True)
    assert "JOIN" not in few and "OFFSET 0" in few and '"content_chunk"' in few
    # The fence keeps every form exact whatever the plan cache does.
    assert "OFFSET 0" in statement()
    # Hybrid's vector leg wants ids only: its exact branch never joins.
    fused = hybrid([1.0], "sofa", 10, 20, {"source_type": "faq"}, config="english", rrf_k=1.0, vector_weight=1.0,
                   keyword_weight=0.4, text_candidates=200, similarity_tie=0.005, exact_below=2000)
    assert "JOIN document_embeddings AS d" not in fused[0].as_string(None)
