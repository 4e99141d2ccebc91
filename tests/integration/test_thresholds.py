"""score_threshold goes into the statement: k rows at or above it come back whenever k exist.

langchain-core's ``similarity_search_with_relevance_scores`` filters the k rows it got; with an approximate index
those k can be close by the index's reckoning yet below the threshold, hiding rows above it. These tests build
such an index on purpose: IVFFlat with two lists, trained so that the query's list holds only rows below the
threshold while the rows above it sit in the other list (probes=1 looks in one list only).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from langchain_core.embeddings import Embeddings

from sony_rag import Database, SonyVectorStore
from sony_rag.commands import search as cli_search
from sony_rag.indexes import rebuild_vector_index

DIM = 384
THRESHOLD = 0.7


def vec(**weights: float) -> npt.NDArray[np.float32]:
    """Return the unit vector with these weights on axes named ``a<N>``."""
    vector = np.zeros(DIM, dtype=np.float32)
    for name, weight in weights.items():
        vector[int(name[1:])] = weight
    return vector / np.linalg.norm(vector)


QUERY = vec(a0=1.0)
# Similarity 0.5 to the query: below the threshold, and nearer the query's centroid (a0) than the other one.
BELOW = [vec(a0=0.5, **{f"a{10 + i}": 0.866}) for i in range(5)]
# Similarity about 0.8: above the threshold, in the list of the second centroid.
ABOVE = [vec(a0=0.8, a1=0.6, **{f"a{50 + i}": 0.02}) for i in range(3)]


class QueryEmbeddings(Embeddings):
    """Every text embeds to the query vector (the documents are added with their own vectors)."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [QUERY.tolist() for _ in texts]

    def embed_query(self, text: str) -> list[float]:
        return QUERY.tolist()


@pytest.fixture
def skewed(db: Database) -> Iterator[SonyVectorStore]:
    """Return a store (probes=1) whose IVFFlat index probes only rows below THRESHOLD for QUERY."""
    store = SonyVectorStore(QueryEmbeddings(), db, probes=1)
    # Two training rows become the two centroids; then they go, and the real rows fall into their lists.
    store.add_embeddings(["train one", "train two"], [QUERY, vec(a0=0.8, a1=0.6)], ids=["t1", "t2"])
    rebuild_vector_index(db, lists=2)
    store.delete(["t1", "t2"])
    # The rows below the threshold say "sofa" more often: the text ranking prefers them too.
    store.add_embeddings([f"sofa sofa sofa sofa velvet sofa {i}" for i in range(len(BELOW))], BELOW,
                         [{"source_type": "product"} for _ in BELOW], ids=[f"below{i}" for i in range(len(BELOW))])
    store.add_embeddings([f"velvet sofa {i}" for i in range(len(ABOVE))], ABOVE,
                         [{"source_type": "product"} for _ in ABOVE], ids=[f"above{i}" for i in range(len(ABOVE))])
    # Far rows (similarity 0) make the table big enough for the planner to choose the index over a scan.
    far = np.random.default_rng(7).standard_normal((3000, DIM)).astype(np.float32)
    far[:, :100] = 0.0
    far /= np.linalg.norm(far, axis=1, keepdims=True)
    store.add_embeddings([f"filler {i}" for i in range(len(far))], list(far))
    with db.pool().connection() as conn:
        conn.execute("ANALYZE document_embeddings")
    db.forget_capabilities()
    yield store
    with db.pool().connection() as conn:
        conn.execute("TRUNCATE document_embeddings")
    rebuild_vector_index(db, lists=100)  # the migration's index, as the other tests expect


EXPECTED = {"above0", "above1", "above2"}


def test_the_index_really_under_fills_without_the_threshold(skewed: SonyVectorStore, db: Database) -> None:
    # The premise: the approximate query alone returns k rows, all below the threshold.
    with db.pool().connection() as conn, conn.transaction():
        conn.execute("SET LOCAL ivfflat.probes = 1")
        rows = conn.execute("SELECT document_id FROM document_embeddings ORDER BY embedding <=> %s::vector LIMIT 3",
                            (str(QUERY.tolist()),)).fetchall()
    assert {row[0] for row in rows} <= {f"below{i}" for i in range(len(BELOW))} and len(rows) == 3


def test_relevance_scores_return_k_rows_above_the_threshold(skewed: SonyVectorStore,
                                                            call: Callable[..., Any]) -> None:
    pairs = call(skewed, "similarity_search_with_relevance_scores", "velvet sofa", k=3, score_threshold=THRESHOLD)
    assert {doc.id for doc, _ in pairs} == EXPECTED
    assert all(score >= THRESHOLD for _, score in pairs)


def test_threshold_retriever_returns_k_rows_above_the_threshold(skewed: SonyVectorStore) -> None:
    retriever = skewed.as_retriever(search_type="similarity_score_threshold",
                                    search_kwargs={"k": 3, "score_threshold": THRESHOLD})
    assert {doc.id for doc in retriever.invoke("velvet sofa")} == EXPECTED
    assert {doc.id for doc in asyncio.run(retriever.ainvoke("velvet sofa"))} == EXPECTED


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_every_search_mode_honours_the_threshold(skewed: SonyVectorStore, call: Callable[..., Any],
                                                  mode: str) -> None:
    pairs = call(skewed, "similarity_search_with_relevance_scores", "velvet sofa", k=3, score_threshold=THRESHOLD,
                 search_mode=mode)
    assert {doc.id for doc, _ in pairs} == EXPECTED


@pytest.mark.parametrize("mode", ["vector", "keyword", "hybrid"])
def test_the_cli_search_applies_the_same_rule(skewed: SonyVectorStore, db: Database, mode: str) -> None:
    hits = cli_search(db, "velvet sofa", embeddings=QueryEmbeddings(), k=3, threshold=THRESHOLD, mode=mode)
    assert {str(hit.match["content_chunk"]).rsplit(" ", 1)[0] for hit in hits} == {"velvet sofa"}
    assert len(hits) == 3 and all(hit.similarity >= THRESHOLD for hit in hits)
