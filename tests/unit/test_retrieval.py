"""SearchRequest: every argument checked once, before the query is embedded or anything is sent (no database)."""

from __future__ import annotations

from typing import Any

import numpy as np
import pytest

from sony_rag.errors import InvalidEmbeddingError, InvalidInputError, InvalidSourceTypeError, SchemaNotReadyError
from sony_rag.executor import Fetch, SetLocal
from sony_rag.plans import HybridOptions
from sony_rag.retrieval import SearchRequest, search_plan
from sony_rag.sql import Params
from sony_rag.sql.filters import compile_filter, filter_shape
from sony_rag.vector_index import Capabilities, VectorIndex

VECTOR = np.ones(384, dtype=np.float32)


def test_source_type_is_anded_to_the_filter_as_one_parsed_tree() -> None:
    request = SearchRequest.of(VECTOR, filter={"price": {"$lt": 5}}, source_type="faq")
    assert request.filter is not None and request.filter.kind == "metadata"
    spelled = {"$and": [{"source_type": "faq"}, {"price": {"$lt": 5}}]}
    assert filter_shape(request.filter)[0] == filter_shape(spelled)[0]
    assert compile_filter(request.filter, Params()).as_string(None) == compile_filter(spelled, Params()).as_string(None)
    only_type = SearchRequest.of(VECTOR, source_type="faq").filter
    assert only_type is not None and only_type.kind == "columns"


def test_the_query_is_embedded_only_after_every_other_argument_passed() -> None:
    embedded: list[str] = []

    def embed() -> np.ndarray:
        embedded.append("yes")
        return VECTOR

    for bad in ({"k": 0}, {"k": 1001}, {"score_threshold": 1.01}, {"mode": "fuzzy"}, {"source_type": "blog"},
                {"filter": {"$nope": 1}}, {"probes": 0}, {"mode": "hybrid"}):
        with pytest.raises(InvalidInputError):
            SearchRequest.of(embed, **bad)  # type: ignore[arg-type]
    assert embedded == []
    assert SearchRequest.of(embed, k=3).k == 3 and embedded == ["yes"]


def test_an_embedding_model_of_the_wrong_size_is_named() -> None:
    with pytest.raises(InvalidEmbeddingError, match="Tiny produces 6-dimensional vectors"):
        SearchRequest.of([0.1] * 6, embedded_by="Tiny")
    with pytest.raises(InvalidSourceTypeError):
        SearchRequest.of(VECTOR, source_type="blog")


def test_mmr_fetches_its_candidates_with_their_embeddings() -> None:
    request = SearchRequest.of(VECTOR, k=4, fetch_k=20, lambda_mult=0.3)
    assert (request.rows_wanted, request.with_embedding, request.lambda_mult) == (20, True, 0.3)
    plain = SearchRequest.of(VECTOR, k=4)
    assert (plain.rows_wanted, plain.with_embedding) == (4, False)
    with pytest.raises(InvalidInputError, match="lambda_mult"):
        SearchRequest.of(VECTOR, fetch_k=5, lambda_mult=1.5)


def test_a_server_without_pgvector_is_refused_before_any_statement() -> None:
    with pytest.raises(SchemaNotReadyError, match="sony-rag migrate"):
        search_plan(SearchRequest.of(VECTOR), Capabilities(pgvector_version=(0,), vector_index=None), HybridOptions())


HNSW = Capabilities(pgvector_version=(0, 6, 2), vector_index=VectorIndex("hnsw", None, 16, 64), table_rows=100_000)
HNSW_08 = Capabilities(pgvector_version=(0, 8, 0), vector_index=VectorIndex("hnsw", None, 16, 64), table_rows=100_000)
IVFFLAT = Capabilities(pgvector_version=(0, 6, 2), vector_index=VectorIndex("ivfflat", 100, None, None),
                       table_rows=100_000)


def _first_steps(request: SearchRequest, statistics: tuple[tuple[str, float], ...] = ()) -> tuple[Any, Any]:
    # Fresh capabilities each time: a plan keeps what it reads (word statistics, estimates) with them.
    capabilities = Capabilities(HNSW.pgvector_version, HNSW.vector_index, table_rows=HNSW.table_rows)
    steps = search_plan(request, capabilities, HybridOptions()).start()
    settings = next(steps)
    while isinstance(settings, Fetch):  # hybrid's word statistics, a filter's estimate: read first
        text = settings.query.as_string(None)
        if "most_common_elems" in text:
            settings = steps.send([{"lexeme": word, "rows": rows} for word, rows in statistics])
        elif text.startswith("EXPLAIN"):  # a column filter the planner says most rows match: the index answers
            settings = steps.send([{"QUERY PLAN": [{"Plan": {"Plan Rows": 90_000}}]}])
        else:
            settings = steps.send([{"rows": None}])
    return settings, steps.send(None)


def test_an_unfiltered_hnsw_search_at_pgvectors_defaults_sends_no_settings_and_its_limit_as_a_literal() -> None:
    # pgvector 0.8 too: without a filter an iterative scan has no dropped rows to go on past.
    for capabilities in (HNSW, HNSW_08):
        steps = search_plan(SearchRequest.of(VECTOR, k=7), capabilities, HybridOptions()).start()
        statement = next(steps)
        assert isinstance(statement, Fetch)
        text = str(statement.query)
        assert "LIMIT 7" in text and not any(isinstance(value, int) for value in statement.params.values())
    # Anything else pgvector would not do unset still sends its settings, with a forced plan and a bound limit.
    counted = Capabilities((0, 6, 2), VectorIndex("hnsw", None, 16, 64), table_rows=1_000)
    for request, capabilities in ((SearchRequest.of(VECTOR, k=21), HNSW), (SearchRequest.of(VECTOR, k=21), HNSW_08),
                                  (SearchRequest.of(VECTOR, ef_search=41), HNSW),
                                  (SearchRequest.of(VECTOR), IVFFLAT), (SearchRequest.of(VECTOR), counted)):
        settings = search_plan(request, capabilities, HybridOptions()).start().send(None)
        assert isinstance(settings, SetLocal) and settings.settings["plan_cache_mode"] == "force_generic_plan"


def test_only_a_statement_whose_best_plan_depends_on_the_filter_forces_a_custom_plan() -> None:
    for request in (SearchRequest.of(VECTOR, k=30), SearchRequest.of(VECTOR, mode="hybrid", text="oak")):
        settings, _ = _first_steps(request)
        assert isinstance(settings, SetLocal) and settings.settings["plan_cache_mode"] == "force_generic_plan"
    settings, _ = _first_steps(SearchRequest.of(VECTOR, mode="hybrid", text="oak", source_type="faq"))
    assert isinstance(settings, SetLocal) and settings.settings["plan_cache_mode"] == "force_custom_plan"


def test_the_index_answering_a_filter_that_matches_many_rows_leaves_the_plan_to_postgres() -> None:
    # The planner says 90,000 of 100,000 rows match: the index's own query, whose best plan is the index scan
    # whatever the filter's values; nothing is sent before it. pgvector 0.6's defaults suffice; on 0.8 the
    # statement sets its iterative scan itself.
    for capabilities, in_statement in ((HNSW, {}), (HNSW_08, {"hnsw.iterative_scan": "strict_order",
                                                              "hnsw.ef_search": "40",
                                                              "hnsw.max_scan_tuples": "20000"})):
        steps = search_plan(SearchRequest.of(VECTOR, k=7, source_type="faq"), Capabilities(
            capabilities.pgvector_version, capabilities.vector_index, table_rows=100_000), HybridOptions()).start()
        step = next(steps)
        assert isinstance(step, Fetch) and str(step.query).startswith("Composed([SQL('EXPLAIN")
        step = steps.send([{"QUERY PLAN": [{"Plan": {"Plan Rows": 90_000}}]}])
        assert isinstance(step, Fetch) and "LIMIT 7" in str(step.query) and "exact" not in str(step.query)
        assert str(step.query).count("set_config") == len(in_statement)
        assert {value for value in step.params.values() if isinstance(value, str)} >= set(in_statement.values())
    # IVFFlat reads its probes when the scan begins: those settings go before the statement.
    ivfflat_08 = Capabilities((0, 8, 0), IVFFLAT.vector_index, table_rows=100_000)
    steps = search_plan(SearchRequest.of(VECTOR, k=7, source_type="faq"), ivfflat_08, HybridOptions()).start()
    next(steps)
    step = steps.send([{"QUERY PLAN": [{"Plan": {"Plan Rows": 90_000}}]}])
    assert isinstance(step, SetLocal) and step.settings["ivfflat.iterative_scan"] == "relaxed_order"


def test_an_index_query_sets_only_the_scan_settings_it_may_set_itself() -> None:
    from sony_rag.sql.documents import index_nearest

    with pytest.raises(ValueError, match="statement_timeout"):
        index_nearest(VECTOR, 10, {"source_type": "faq"}, hnsw_settings={"statement_timeout": "0"})


def test_a_metadata_filter_on_a_small_table_is_estimated_and_counted_only_without_statistics() -> None:
    # 3,000 rows, HNSW on pgvector 0.6: the index would come back short below k / ef_search (a quarter) of them.
    def statement_for(estimated: float | None) -> str:
        small = Capabilities((0, 6, 2), VectorIndex("hnsw", None, 16, 64), table_rows=3_000)  # no estimate kept
        steps = search_plan(SearchRequest.of(VECTOR, k=10, filter={"r": {"$lt": 5}}), small,
                            HybridOptions()).start()
        step = next(steps)
        assert isinstance(step, Fetch) and "pg_stats" in str(step.query)  # the statistics, not the table
        step = steps.send([{"rows": estimated}])
        while isinstance(step, SetLocal):
            step = steps.send(None)
        assert isinstance(step, Fetch)
        return str(step.query)

    few, many, unknown = statement_for(30.0), statement_for(2_500.0), statement_for(None)
    assert "index_rows" not in few and "choice" not in few  # an exact scan, one pass
    assert "ORDER BY embedding <=>" in many and "choice" not in many  # the index, uncounted
    assert "matching" in unknown and "choice" in unknown  # no statistics: counted, ranked from the count's pass


def _lists(statement: Any) -> list[Any]:
    assert isinstance(statement, Fetch)
    return [value for value in statement.params.values() if isinstance(value, list)]


def test_hybrid_skips_the_words_more_rows_hold_than_its_text_leg_ranks() -> None:
    statistics = (("sofa", 5000.0), ("oak", 201.0), ("walnut", 200.0), ("brass", 3.0))
    _, statement = _first_steps(SearchRequest.of(VECTOR, mode="hybrid", text="oak sofa"), statistics)
    assert _lists(statement) == [["sofa", "oak"]]  # more than text_candidates (200) rows
    _, wide = _first_steps(SearchRequest.of(VECTOR, k=300, mode="hybrid", text="oak sofa"), statistics)
    assert _lists(wide) == [["sofa"]]  # k=300 ranks up to 300 text rows

