"""SonyVectorStore behaviour a user relies on, each test run through the sync and the async API."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding, Embeddings
from langchain_core.output_parsers import StrOutputParser
from langchain_core.runnables import RunnableLambda, RunnablePassthrough

from sony_rag import (
    Database,
    InvalidEmbeddingError,
    InvalidFilterError,
    InvalidIdentifierError,
    InvalidInputError,
    InvalidSourceTypeError,
    SonyVectorStore,
)

DIM = 384


class AxisEmbeddings(Embeddings):
    """Texts 'axis:N[:w]' embed near basis vector N, so expected neighbours are known exactly."""

    def _one(self, text: str) -> list[float]:
        vector = np.full(DIM, 1e-3)
        for part in text.split():
            if part.startswith("axis:"):
                fields = part.split(":")
                vector[int(fields[1])] += float(fields[2]) if len(fields) > 2 else 1.0
        return (vector / np.linalg.norm(vector)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._one(text)


@pytest.fixture
def store(db: Database) -> SonyVectorStore:
    return SonyVectorStore(AxisEmbeddings(), db)


CATALOG = [
    ("p1", "axis:1 oak dining table", {"source_type": "product", "source_id": "oak-table", "price": 449,
                                       "material": "oak", "tags": ["dining", "sale"]}),
    ("p2", "axis:1:0.9 axis:2:0.3 ash dining table", {"source_type": "product", "source_id": "ash-table",
                                                     "price": 429, "material": "ash"}),
    ("p3", "axis:3 velvet sofa", {"source_type": "product", "source_id": "velvet-sofa", "price": 1899,
                                  "material": "velvet", "dimensions": {"width_cm": 220}}),
    ("f1", "axis:4 how do I track my order", {"source_type": "faq", "source_id": "faq-tracking"}),
    ("s1", "axis:5 free shipping on orders over $500", {"source_type": "policy", "source_id": "shipping",
                                                        "in_stock": True}),
]


def load(store: SonyVectorStore, call: Callable[..., Any]) -> None:
    texts = [text for _, text, _ in CATALOG]
    metas = [meta for _, _, meta in CATALOG]
    ids = [doc_id for doc_id, _, _ in CATALOG]
    assert call(store, "add_texts", texts, metas, ids=ids) == ids


def test_metadata_maps_to_columns_and_reads_back_exactly(store: SonyVectorStore, call: Callable[..., Any],
                                                         db: Database) -> None:
    load(store, call)
    with db.pool().connection() as conn:
        row = conn.execute("SELECT source_type, source_id FROM document_embeddings WHERE document_id = 'p3'"
                           ).fetchone()
    assert row == ("product", "velvet-sofa")
    [doc] = call(store, "get_by_ids", ["p3"])
    assert doc.metadata == CATALOG[2][2]
    assert doc.id == "p3"


def test_metadata_numbers_read_back_exactly_beyond_64_bits(store: SonyVectorStore, call: Callable[..., Any]) -> None:
    # Rows are parsed with orjson, which reads an integer outside 64 bits as a float: those must come back exact.
    metadata = {"big": 123456789012345678901234567890, "edge": 2**64, "negative": -(2**63) - 1, "max": 2**63 - 1,
                "fraction": 0.1 + 0.2, "tiny": 5e-324, "nested": {"list": [2**70, 1.5, "2**70"]}}
    call(store, "add_texts", ["axis:3 numbers"], [metadata], ids=["n1"])
    [found] = call(store, "similarity_search", "axis:3", k=1)
    [read] = call(store, "get_by_ids", ["n1"])
    for doc in (found, read):
        assert doc.metadata == metadata
        assert type(doc.metadata["big"]) is int and type(doc.metadata["nested"]["list"][0]) is int


def test_default_source_type_and_bad_source_type(db: Database, call: Callable[..., Any]) -> None:
    store = SonyVectorStore(AxisEmbeddings(), db, source_type="faq")
    call(store, "add_texts", ["axis:7 returns"], ids=["x"])
    assert call(store, "similarity_search", "axis:7", k=1, filter={"source_type": "faq"})[0].id == "x"
    with pytest.raises(InvalidSourceTypeError):
        call(store, "add_texts", ["axis:8"], [{"source_type": "blog"}])
    with pytest.raises(InvalidSourceTypeError):
        SonyVectorStore(AxisEmbeddings(), db, source_type="blog")


@pytest.mark.parametrize(
    ("filter", "expected"),
    [
        ({"source_type": "product"}, {"p1", "p2", "p3"}),
        ({"source_type": {"$in": ["faq", "policy"]}}, {"f1", "s1"}),
        ({"price": {"$lt": 500}}, {"p1", "p2"}),
        ({"price": {"$between": [430, 2000]}}, {"p1", "p3"}),
        ({"material": {"$ne": "oak"}}, {"p2", "p3"}),
        ({"material": {"$nin": ["oak", "ash"]}}, {"p3"}),
        ({"material": {"$like": "%a%"}}, {"p1", "p2"}),
        ({"material": {"$ilike": "VEL%"}}, {"p3"}),
        ({"dimensions.width_cm": {"$gte": 220}}, {"p3"}),
        ({"in_stock": True}, {"s1"}),
        ({"price": {"$exists": False}}, {"f1", "s1"}),
        ({"$or": [{"source_id": "shipping"}, {"price": {"$gt": 1000}}]}, {"s1", "p3"}),
        ({"$and": [{"source_type": "product"}, {"$not": {"material": "oak"}}]}, {"p2", "p3"}),
        ({"tags": "sale"}, {"p1"}),
        ({"price": "449"}, set()),  # a string never equals a number
    ],
)
def test_filters_select_expected_documents(store: SonyVectorStore, call: Callable[..., Any],
                                           filter: dict[str, Any], expected: set[str]) -> None:
    load(store, call)
    found = call(store, "similarity_search", "axis:1", k=10, filter=filter)
    assert {doc.id for doc in found} == expected


@pytest.mark.parametrize("bad", [{"price": {"$regex": "x"}}, {"$or": {}}, {"a;drop": 1}, {"price": {"$in": 3}},
                                 {"source_type": "blog"}])
def test_bad_filters_raise_our_error(store: SonyVectorStore, call: Callable[..., Any], bad: dict[str, Any]) -> None:
    load(store, call)
    with pytest.raises(InvalidFilterError):
        call(store, "similarity_search", "axis:1", k=3, filter=bad)


def test_scores_order_and_threshold(store: SonyVectorStore, call: Callable[..., Any]) -> None:
    load(store, call)
    pairs = call(store, "similarity_search_with_score", "axis:1", k=3)
    assert [doc.id for doc, _ in pairs][:2] == ["p1", "p2"]
    distances = [distance for _, distance in pairs]
    assert distances == sorted(distances) and distances[0] < 1e-3
    relevance = call(store, "similarity_search_with_relevance_scores", "axis:1", k=5, score_threshold=0.9)
    assert [doc.id for doc, _ in relevance] == ["p1", "p2"]
    assert all(score >= 0.9 for _, score in relevance)


def test_mmr_prefers_diversity(store: SonyVectorStore, call: Callable[..., Any]) -> None:
    load(store, call)
    plain = call(store, "similarity_search", "axis:1 axis:3:0.2", k=2)
    diverse = call(store, "max_marginal_relevance_search", "axis:1 axis:3:0.2", k=2, fetch_k=5, lambda_mult=0.2)
    assert [d.id for d in plain] == ["p1", "p2"]
    assert diverse[0].id == "p1" and diverse[1].id != "p2"


def test_upsert_replaces_and_delete(store: SonyVectorStore, call: Callable[..., Any]) -> None:
    load(store, call)
    call(store, "add_texts", ["axis:9 walnut dining table"], [{"source_type": "product", "price": 999}],
         ids=["p1"])
    [doc] = call(store, "get_by_ids", ["p1"])
    assert doc.page_content == "axis:9 walnut dining table" and doc.metadata == {"source_type": "product",
                                                                                  "price": 999}
    assert call(store, "delete", ["p1", "missing"]) is True
    assert call(store, "get_by_ids", ["p1", "p2"]) == [Document(id="p2", page_content=CATALOG[1][1],
                                                                metadata=CATALOG[1][2])]
    call(store, "delete", filter={"source_type": "product"})
    remaining = call(store, "similarity_search", "axis:1", k=10)
    assert {d.id for d in remaining} == {"f1", "s1"}
    with pytest.raises(InvalidInputError):
        call(store, "delete")


def test_delete_with_ids_and_filter_deletes_only_rows_matching_both(store: SonyVectorStore,
                                                                      call: Callable[..., Any]) -> None:
    load(store, call)
    # langchain-postgres's reading: the rows that match the ids AND the filter (here none of them).
    assert call(store, "delete", ["p1", "f1"], filter={"source_type": "policy"}) is True
    assert {doc.id for doc in call(store, "similarity_search", "axis:1", k=10)} == {"p1", "p2", "p3", "f1", "s1"}
    # p1 matches both, f1 only the ids, p2 only the filter: p1 alone goes.
    call(store, "delete", ["p1", "f1"], filter={"source_type": "product"})
    assert {doc.id for doc in call(store, "similarity_search", "axis:1", k=10)} == {"p2", "p3", "f1", "s1"}
    # An empty id list selects nothing, whatever the filter.
    call(store, "delete", [], filter={"source_type": "product"})
    assert {doc.id for doc in call(store, "similarity_search", "axis:1", k=10)} == {"p2", "p3", "f1", "s1"}


def test_uuid_ids_map_to_embedding_id(store: SonyVectorStore, call: Callable[..., Any], db: Database) -> None:
    given = "0b7f0c56-2f4e-4bde-9f55-3a3b1f0f7e11"
    call(store, "add_texts", ["axis:2"], ids=[given])
    with db.pool().connection() as conn:
        row = conn.execute("SELECT embedding_id::text, document_id FROM document_embeddings").fetchone()
    assert row == (given, None)
    generated = call(store, "add_texts", ["axis:3"])
    assert call(store, "get_by_ids", generated)[0].id == generated[0]


def test_bad_input_raises_before_writing(store: SonyVectorStore, call: Callable[..., Any], db: Database) -> None:
    with pytest.raises(InvalidIdentifierError):
        call(store, "add_texts", ["axis:1", "axis:2"], ids=["ok", ""])
    with pytest.raises(InvalidEmbeddingError):
        call(store, "add_embeddings", ["a"], [[0.1] * 10])
    with pytest.raises(InvalidInputError):
        call(store, "add_texts", ["axis:1", "bad\x00text"])
    small = SonyVectorStore(DeterministicFakeEmbedding(size=6), db)
    with pytest.raises(InvalidEmbeddingError, match="6-dimensional"):
        call(small, "add_texts", ["x"])
    with db.pool().connection() as conn:
        assert conn.execute("SELECT count(*) FROM document_embeddings").fetchone() == (0,)


@contextmanager
def ivfflat_of(db: Database, lists: int) -> Iterator[None]:
    """Give the table an IVFFlat index of ``lists`` lists and fresh statistics; put the migration's back after."""
    def index(count: int) -> None:
        with db.pool().connection() as conn:
            conn.execute("DROP INDEX idx_document_embeddings_vector")
            conn.execute("CREATE INDEX idx_document_embeddings_vector ON document_embeddings "
                         f"USING ivfflat (embedding vector_cosine_ops) WITH (lists = {count})")
            conn.execute("ANALYZE document_embeddings")
        db.forget_capabilities()

    index(lists)
    try:
        yield
    finally:
        index(100)


def test_exact_count_under_selective_filter_with_many_lists(db: Database, call: Callable[..., Any]) -> None:
    """An IVFFlat index of 50 lists with probes=1 would starve a 1% filter; k rows must still come back."""
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(2000, DIM)).astype(np.float32)
    # A metadata filter has no btree index, so the planner scans the vector index and filters afterwards.
    metas = [{"rare": i % 100 == 0} for i in range(2000)]
    store = SonyVectorStore(AxisEmbeddings(), db, probes=1)
    store.add_embeddings([f"doc {i}" for i in range(2000)], list(vectors), metas)
    with ivfflat_of(db, 50):
        query = rng.normal(size=DIM).tolist()
        found = call(store, "similarity_search_by_vector", query, k=10, filter={"rare": True})
        assert len(found) == 10 and all(d.metadata["rare"] for d in found)
        exact = sorted(range(0, 2000, 100), key=lambda i: -float(
            np.dot(vectors[i], query) / np.linalg.norm(vectors[i]) / np.linalg.norm(query)))[:10]
        assert [d.page_content for d in found] == [f"doc {i}" for i in exact]
        # Hybrid search ranks the same exact vector leg; no text matches, so its order is the vector order.
        hybrid = call(store, "similarity_search_with_score_by_vector", query, k=10, filter={"rare": True},
                      search_mode="hybrid", query_text="zzzz")
        assert [d.page_content for d, _ in hybrid] == [f"doc {i}" for i in exact]


def test_selective_metadata_filter_on_a_large_table_is_exact_when_statistics_say_few_match(
        db: Database, call: Callable[..., Any]) -> None:
    """Too many rows to count a metadata filter, so ANALYZE's statistics estimate it: a 10 % filter that one
    probed list of 50 would answer with the wrong rows is ranked exactly (search, MMR's candidates, hybrid)."""
    rows = 12_000
    rng = np.random.default_rng(11)
    vectors = rng.normal(size=(rows, DIM)).astype(np.float32)
    metas = [{"i": i, "tenth": i % 10 == 0} for i in range(rows)]
    store = SonyVectorStore(AxisEmbeddings(), db, probes=1)
    store.add_embeddings([f"doc {i}" for i in range(rows)], list(vectors), metas)
    with ivfflat_of(db, 50):
        query = rng.normal(size=DIM)
        cosine = vectors[::10] @ query / np.linalg.norm(vectors[::10], axis=1) / np.linalg.norm(query)
        exact = [f"doc {10 * int(j)}" for j in np.argsort(-cosine, kind="stable")[:10]]
        found = call(store, "similarity_search_by_vector", query.tolist(), k=10, filter={"tenth": True})
        assert [d.page_content for d in found] == exact
        hybrid = call(store, "similarity_search_with_score_by_vector", query.tolist(), k=10,
                      filter={"tenth": True}, search_mode="hybrid", query_text="zzzz")
        assert [d.page_content for d, _ in hybrid] == exact
        mmr = call(store, "max_marginal_relevance_search_by_vector", query.tolist(), k=3, fetch_k=10,
                   lambda_mult=1.0, filter={"tenth": True})
        assert [d.page_content for d in mmr] == exact[:3]


def test_retriever_in_lcel_chain(store: SonyVectorStore, call: Callable[..., Any]) -> None:
    load(store, call)
    retriever = store.as_retriever(search_kwargs={"k": 1, "filter": {"source_type": "policy"}})
    chain = (
        {"context": retriever | RunnableLambda(lambda docs: docs[0].page_content), "question": RunnablePassthrough()}
        | RunnableLambda(lambda x: f"Q: {x['question']} A: {x['context']}")
        | StrOutputParser()
    )
    answer = chain.invoke("axis:1 is shipping free?")
    assert answer.endswith("free shipping on orders over $500")
    threshold = store.as_retriever(search_type="similarity_score_threshold",
                                   search_kwargs={"k": 5, "score_threshold": 0.95})
    assert [d.id for d in threshold.invoke("axis:4")] == ["f1"]
    mmr = store.as_retriever(search_type="mmr", search_kwargs={"k": 2, "fetch_k": 5})
    assert len(mmr.invoke("axis:1")) == 2


@pytest.mark.parametrize("option", [{"probes": 0}, {"probes": -3}, {"probes": 40_000}, {"probes": 2.5},
                                    {"probes": True}, {"ef_search": 0}, {"ef_search": 1001}, {"ef_search": "64"}])
def test_bad_index_search_options_raise_our_error(db: Database, call: Callable[..., Any],
                                                  option: dict[str, Any]) -> None:
    """probes and ef_search are checked before the query, per call and as store defaults."""
    store = SonyVectorStore(AxisEmbeddings(), db)
    call(store, "add_texts", ["axis:1 oak"])
    with pytest.raises(InvalidInputError, match=next(iter(option))):
        call(store, "similarity_search", "axis:1", k=1, **option)
    with pytest.raises(InvalidInputError, match=next(iter(option))):
        SonyVectorStore(AxisEmbeddings(), db, **option)
    good = {name: 5 for name in option}
    assert len(call(store, "similarity_search", "axis:1", k=1, **good)) == 1


def test_metadata_statistics_tell_a_tenth_of_a_percent_from_one_percent(db: Database) -> None:
    """Migration 006's finer statistics: the estimate that picks exact scan or index for a metadata filter."""
    from sony_rag.sql import documents as document_sql
    from sony_rag.sql.filters import parse_filter

    with db.connect() as conn:
        conn.execute("INSERT INTO document_embeddings (embedding_id, source_type, content_chunk, embedding, metadata)"
                     " SELECT gen_random_uuid(), 'product', 'x', array_fill(0.1, ARRAY[384])::vector,"
                     " jsonb_build_object('r', i % 1000) FROM generate_series(1, 60000) AS i")
        conn.execute("ANALYZE document_embeddings")
        estimates = {bound: conn.execute(*document_sql.estimated_matches(parse_filter({"r": {"$lt": bound}})))
                     .fetchone()[0] for bound in (1, 10, 100)}
    # 60, 600 and 6,000 rows match. At the default statistics target (ANALYZE samples half the rows) the first
    # two come out alike, near half a histogram bucket.
    assert 30 <= estimates[1] <= 120 and 300 <= estimates[10] <= 1_200 and 3_000 <= estimates[100] <= 12_000
