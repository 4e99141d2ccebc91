"""Hybrid retrieval: full-text search fused with vector search by reciprocal rank fusion."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import numpy as np
import psycopg
import pytest
from langchain_core.embeddings import Embeddings

from sony_rag import Database, SonyVectorStore, plans, search_similar_embeddings
from sony_rag.migrate import migrate

DIM = 384


class TopicEmbeddings(Embeddings):
    """Deterministic fake: meaning is carried by topic words only; codes and rare names carry none.

    So a query made of a product code lands on whatever its topic words suggest: vector search alone cannot
    find the product by code, which is exactly what the keyword leg must add.
    """

    TOPICS = ("sofa", "table", "shipping", "lamp", "bed", "linen", "velvet", "oak")

    def _one(self, text: str) -> list[float]:
        vector = np.zeros(DIM)
        lowered = text.lower()
        for index, topic in enumerate(self.TOPICS):
            if topic in lowered:
                vector[index] += 1.0
        vector[100] += 0.2
        return (vector / np.linalg.norm(vector)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._one(t) for t in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._one(text)


DOCS = [
    ("hallwyl", "Hallwyl 3-seat sofa in bouclé, 220 cm wide. Model SX-1123.", "product", "hallwyl-sofa"),
    ("norrby", "Norrby sofa in green velvet with oak legs. Model SX-2210.", "product", "norrby-sofa"),
    ("kvarn", "Kvarn two-seat sofa, linen, compact for small rooms. Model SX-3001.", "product", "kvarn-sofa"),
    ("tallnas", "Tallnas oak dining table for six. Model TB-2040.", "product", "tallnas-table"),
    ("ship", "Free shipping on orders over $500 within the contiguous US.", "policy", "shipping"),
    ("lamp", "Glasvik reading lamp with a warm dimmable bulb.", "product", "glasvik-lamp"),
]


@pytest.fixture
def search(call: Callable[..., Any]) -> Callable[..., list[Any]]:
    """Return a function running similarity_search through the sync or the async API."""

    def run(store: SonyVectorStore, query: str, **kwargs: Any) -> list[Any]:
        return list(call(store, "similarity_search", query, **kwargs))

    return run


@pytest.fixture
def store(db: Database) -> SonyVectorStore:
    store = SonyVectorStore(TopicEmbeddings(), db)
    store.add_texts([text for _, text, _, _ in DOCS],
                    [{"source_type": kind, "source_id": source_id} for _, _, kind, source_id in DOCS],
                    ids=[doc_id for doc_id, _, _, _ in DOCS])
    return store


@pytest.mark.parametrize("query", ["SX-3001", "is SX-3001 in stock"])
def test_code_query_found_by_hybrid_not_by_vector(store: SonyVectorStore, search: Callable[..., list[Any]],
                                                  query: str) -> None:
    """A code carries no meaning for the embeddings; the text leg finds it, with or without extra words."""
    assert search(store, query, k=3)[0].id != "kvarn"
    assert search(store, query, k=3, hybrid=True)[0].id == "kvarn"
    assert search(store, query, k=1, search_mode="keyword")[0].id == "kvarn"


@pytest.mark.parametrize("query", ["Norrby", "does the Norrby come in other colours"])
def test_rare_name_found_by_hybrid(store: SonyVectorStore, search: Callable[..., list[Any]], query: str) -> None:
    assert search(store, query, k=2)[0].id != "norrby"
    assert search(store, query, k=2, hybrid=True)[0].id == "norrby"


def test_text_leg_ranks_rows_by_how_many_words_they_hold(store: SonyVectorStore,
                                                         search: Callable[..., list[Any]]) -> None:
    """No row holds every word: the row holding most of them leads the text leg (and, here, the fusion)."""
    found = search(store, "Tallnas table SX-9999", k=3, search_mode="keyword")
    assert found[0].id == "tallnas"
    assert search(store, "Glasvik bulb SX-9999", k=1, hybrid=True)[0].id == "lamp"


def test_confident_meaning_is_not_overridden_by_one_shared_word(store: SonyVectorStore,
                                                                search: Callable[..., list[Any]]) -> None:
    """A single common word shared with another row must not push the clear semantic match down."""
    assert search(store, "oak", k=1)[0].id == search(store, "oak", k=1, hybrid=True)[0].id


def test_keyword_mode_falls_back_to_any_word(store: SonyVectorStore, search: Callable[..., list[Any]]) -> None:
    """Keyword mode wants all words; a question with words beyond the chunk falls back to any word matching."""
    assert search(store, "what is the price of TB-2040", k=1, search_mode="keyword")[0].id == "tallnas"
    assert search(store, "TB-2040", k=1, hybrid=True)[0].id == "tallnas"


def test_filters_hold_in_both_legs(store: SonyVectorStore, search: Callable[..., list[Any]]) -> None:
    found = search(store, "shipping SX-1123", k=6, hybrid=True, filter={"source_type": "policy"})
    assert [d.id for d in found] == ["ship"]
    found = search(store, "SX-1123", k=6, hybrid=True, filter={"source_id": {"$ne": "hallwyl-sofa"}})
    assert "hallwyl" not in {d.id for d in found} and len(found) == 5


def test_k_rows_when_k_match_even_without_keyword_hits(store: SonyVectorStore,
                                                       search: Callable[..., list[Any]]) -> None:
    assert len(search(store, "zzzz qqqq", k=4, hybrid=True)) == 4
    assert len(search(store, "sofa", k=6, hybrid=True)) == 6


@pytest.mark.parametrize("text", ['"unbalanced', "a & b | !c", "(x:*)", "back\\slash\\", "emoji 🛋️✨", "", "   ",
                                  "the and of", "'; DROP TABLE document_embeddings; --", "SX-1123 OR -sofa"])
def test_hostile_query_text_never_raises(store: SonyVectorStore, search: Callable[..., list[Any]], text: str) -> None:
    assert len(search(store, text, k=3, hybrid=True)) == 3
    assert isinstance(search(store, text, k=3, search_mode="keyword"), list)


def test_retriever_and_store_default(store: SonyVectorStore, db: Database) -> None:
    retriever = store.as_retriever(search_kwargs={"k": 1, "hybrid": True})
    assert retriever.invoke("SX-2210")[0].id == "norrby"
    hybrid_store = SonyVectorStore(TopicEmbeddings(), db, hybrid=True)
    assert hybrid_store.similarity_search("SX-2210", k=1)[0].id == "norrby"


def test_sync_and_async_agree(store: SonyVectorStore) -> None:
    for query in ["SX-1123", "oak table", "free shipping", "reading lamp Glasvik"]:
        sync = [d.id for d in store.similarity_search(query, k=4, hybrid=True)]
        asynchronous = [d.id for d in asyncio.run(store.asimilarity_search(query, k=4, hybrid=True))]
        assert sync == asynchronous


def test_search_similar_embeddings_with_query_text(store: SonyVectorStore, db: Database) -> None:
    vector = TopicEmbeddings().embed_query("SX-3001")
    plain = asyncio.run(search_similar_embeddings(vector, source_type="product", limit=2, db=db))
    hybrid = asyncio.run(search_similar_embeddings(vector, source_type="product", limit=2, query_text="SX-3001",
                                                   db=db))
    assert plain[0]["source_id"] != "kvarn-sofa"
    assert hybrid[0]["source_id"] == "kvarn-sofa"
    assert 0.0 < hybrid[0]["similarity"] <= 1.0


def test_migration_fills_existing_rows(server_url: str) -> None:
    """003 on a database that already holds chunks: the generated column is computed for them."""
    import os

    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs CREATE DATABASE on the embedded server")
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("DROP DATABASE IF EXISTS sony_rag_hybrid_migration WITH (FORCE)")
        conn.execute("CREATE DATABASE sony_rag_hybrid_migration")
    url = psycopg.conninfo.make_conninfo(server_url, dbname="sony_rag_hybrid_migration")
    from sony_rag import migrate as migrate_module

    only_two = [m for m in migrate_module.available_migrations() if m.version in ("001", "002")]
    original = migrate_module.available_migrations
    migrate_module.available_migrations = lambda: only_two  # type: ignore[assignment]
    from sony_rag.settings import Settings

    def test_settings() -> Settings:
        return Settings(pool_min_size=1, pool_max_size=2)

    try:
        with Database(url, settings=test_settings()) as db:
            migrate(db)
    finally:
        migrate_module.available_migrations = original  # type: ignore[assignment]
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("INSERT INTO document_embeddings (source_type, source_id, content_chunk, embedding) "
                     "VALUES ('product', 'kvarn-sofa', 'Kvarn sofa SX-3001', %s::vector)", (str([0.1] * DIM),))
    with Database(url, settings=test_settings()) as db:
        # 003 first; later migrations (004, ...) follow it.
        assert [name for name in migrate(db)][:1] == ["003_full_text_search"]
    with psycopg.connect(url, autocommit=True) as conn:
        matched = conn.execute("SELECT count(*) FROM document_embeddings WHERE search_vector @@ "
                               "websearch_to_tsquery('english', 'SX-3001')").fetchone()
    assert matched == (1,)


def test_words_most_rows_hold_are_not_looked_up_but_still_count(db: Database) -> None:
    """With statistics saying a word is in more rows than the text leg ranks, it is only counted in the vector
    leg's rows: a rare name beside it still leads, and a text of common words alone still gives k rows."""
    names = [f"Model{i:03d}" for i in range(60)]
    store = SonyVectorStore(TopicEmbeddings(), db, hybrid_options=plans.HybridOptions(text_candidates=5))
    store.add_texts([f"{name} oak table with care notes" for name in names], ids=names)
    with db.pool().connection() as conn:
        conn.execute("ANALYZE document_embeddings")
    assert store.similarity_search("Model042 oak", k=3, hybrid=True)[0].id == "Model042"
    assert store.similarity_search("is Model017 an oak piece", k=3, hybrid=True)[0].id == "Model017"
    assert len(store.similarity_search("oak table", k=8, hybrid=True)) == 8
    assert [d.id for d in store.similarity_search("oak table", k=8, hybrid=True)] == \
        [d.id for d in asyncio.run(store.asimilarity_search("oak table", k=8, hybrid=True))]
