"""One table of searches run through every entry point: the same rows in the same order, the same errors.

The entry points are SonyVectorStore (sync and async, with scores and with relevance scores, MMR candidates with
lambda_mult=1, the retriever), the documented async ``search_similar_embeddings`` and the CLI's
``commands.search``. An entry point that cannot express a case (the documented function has no keyword mode,
the CLI no metadata filter, MMR ranks by vector only) skips it; every case runs through at least three.
"""

from __future__ import annotations

import asyncio
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from langchain_core.embeddings import Embeddings

from sony_rag import Database, SonyVectorStore, search_similar_embeddings
from sony_rag.commands import search as cli_search
from sony_rag.errors import (
    InvalidFilterError,
    InvalidInputError,
    InvalidSourceTypeError,
    InvalidTextError,
    SonyRagError,
)
from sony_rag.vectorstore import resolve_id

DIM = 384


class WordEmbeddings(Embeddings):
    """Deterministic: a text is the normalised sum of one fixed random vector per word, so shared words mean near."""

    def _one(self, text: str) -> list[float]:
        vector = np.zeros(DIM)
        for word in text.lower().split():
            rng = np.random.default_rng(zlib.crc32(word.strip(".,?!").encode()))
            vector += rng.standard_normal(DIM)
        vector[0] += 0.5  # never all zeros, even for text without words
        return (vector / np.linalg.norm(vector)).tolist()

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        return [self._one(text) for text in texts]

    def embed_query(self, text: str) -> list[float]:
        return self._one(text)


DOCS = [
    ("oak-table", "oak dining table for six", "product", {"price": 900, "color": "brown"}),
    ("oak-desk", "oak writing desk with two drawers", "product", {"price": 450, "color": "brown"}),
    ("walnut-table", "walnut coffee table low", "product", {"price": 300, "color": "brown"}),
    ("velvet-sofa", "green velvet sofa three seats", "product", {"price": 1200, "color": "green"}),
    ("linen-sofa", "linen sofa compact two seats", "product", {"price": 800, "color": "white"}),
    ("brass-lamp", "brass reading lamp dimmable", "product", {"price": 120, "color": "gold"}),
    ("oak-shelf", "oak shelf for books SX-1123", "product", {"price": 200, "color": "brown"}),
    ("ship", "free shipping on orders over 500", "policy", {"topic": "shipping"}),
    ("returns", "returns within 30 days for a sofa or a table", "policy", {"topic": "returns"}),
    ("care-oak", "how do I care for an oak table", "faq", {"topic": "care"}),
    ("care-velvet", "how do I clean a velvet sofa", "faq", {"topic": "care"}),
    ("hours", "showroom opening hours and address", "page_content", {"topic": "visit"}),
    ("about", "about our workshop and oak suppliers", "page_content", {"topic": "visit"}),
]


@dataclass(frozen=True)
class Case:
    """One search: its arguments in the entry points' shared vocabulary, and what every entry point must do."""

    name: str
    query: str
    k: Any = 4
    mode: Any = "vector"
    filter: dict[str, Any] | None = None
    source_type: Any = None
    threshold: Any = None
    rows: int | None = None  # how many rows come back (None: raises)
    error: type[SonyRagError] | None = None
    store_error: type[SonyRagError] | None = None  # where the store's spelling of the case raises another type
    skip: frozenset[str] = field(default_factory=frozenset)


CASES = [
    Case("vector", "oak table", rows=4),
    Case("vector k=1", "velvet sofa", k=1, rows=1),
    Case("vector every row", "oak table", k=1000, rows=len(DOCS)),
    Case("vector source_type", "oak table", source_type="faq", rows=2),
    Case("vector column filter", "oak", filter={"source_id": {"$in": ["oak-table", "oak-desk"]}}, rows=2),
    Case("vector metadata filter", "table", filter={"price": {"$lt": 500}}, rows=4),
    Case("vector filter and source_type", "oak", filter={"color": "brown"}, source_type="product", rows=4),
    Case("vector threshold", "oak dining table for six", k=10, threshold=0.3, rows=None),
    Case("vector threshold above all", "oak table", threshold=0.9999, rows=0),
    Case("hybrid", "oak table", mode="hybrid", rows=4),
    Case("hybrid code", "SX-1123", mode="hybrid", k=3, rows=3),
    Case("hybrid source_type", "sofa", mode="hybrid", source_type="policy", rows=2),
    Case("hybrid metadata filter", "sofa", mode="hybrid", filter={"color": {"$ne": "green"}}, rows=4),
    Case("hybrid threshold", "velvet sofa", mode="hybrid", k=10, threshold=0.3, rows=None),
    Case("keyword", "oak", mode="keyword", k=10, rows=None),
    Case("keyword source_type", "sofa", mode="keyword", source_type="faq", rows=1),
    Case("keyword threshold", "sofa", mode="keyword", k=10, threshold=0.3, rows=None),
    # Bad input: refused with the same exception type, before anything is sent.
    Case("k zero", "oak", k=0, error=InvalidInputError),
    Case("k over 1000", "oak", k=1001, error=InvalidInputError),
    Case("k not an int", "oak", k="3", error=InvalidInputError),
    Case("k bool", "oak", k=True, error=InvalidInputError),
    Case("threshold over 1", "oak", threshold=1.5, error=InvalidInputError),
    Case("threshold under -1", "oak", mode="hybrid", threshold=-2, error=InvalidInputError),
    Case("threshold nan", "oak", threshold=float("nan"), error=InvalidInputError),
    Case("threshold not a number", "oak", threshold="0.5", error=InvalidInputError),
    Case("keyword threshold over 1", "oak", mode="keyword", threshold=3, error=InvalidInputError),
    Case("unknown mode", "oak", mode="fuzzy", error=InvalidInputError),
    # The store takes the source type as a filter: there it is a malformed filter.
    Case("unknown source_type", "oak", source_type="blog", error=InvalidSourceTypeError,
         store_error=InvalidFilterError),
    Case("malformed filter", "oak", filter={"$bad": 1}, error=InvalidFilterError),
    Case("filter bad operand", "oak", mode="hybrid", filter={"price": {"$lt": [1]}}, error=InvalidFilterError),
    Case("NUL in hybrid text", "oak\x00table", mode="hybrid", error=InvalidTextError),
]


def _store_filter(case: Case) -> dict[str, Any] | None:
    # The store has no source_type argument: it is a filter there.
    if case.source_type is None:
        return case.filter
    by_type = {"source_type": case.source_type}
    return by_type if case.filter is None else {"$and": [by_type, case.filter]}


def _ids(documents: list[Any]) -> list[UUID]:
    return [resolve_id(document.id)[0] for document in documents]


def _store_kwargs(case: Case) -> dict[str, Any]:
    kwargs: dict[str, Any] = {"k": case.k, "filter": _store_filter(case), "search_mode": case.mode}
    if case.threshold is not None:
        kwargs["score_threshold"] = case.threshold
    return kwargs


def store_sync(store: SonyVectorStore, db: Database, case: Case) -> list[UUID]:
    return _ids([doc for doc, _ in store.similarity_search_with_score(case.query, **_store_kwargs(case))])


def store_async(store: SonyVectorStore, db: Database, case: Case) -> list[UUID]:
    pairs = asyncio.run(store.asimilarity_search_with_score(case.query, **_store_kwargs(case)))
    return _ids([doc for doc, _ in pairs])


def store_relevance(store: SonyVectorStore, db: Database, case: Case) -> list[UUID]:
    pairs = store.similarity_search_with_relevance_scores(case.query, **_store_kwargs(case))
    return _ids([doc for doc, _ in pairs])


def store_relevance_async(store: SonyVectorStore, db: Database, case: Case) -> list[UUID]:
    pairs = asyncio.run(store.asimilarity_search_with_relevance_scores(case.query, **_store_kwargs(case)))
    return _ids([doc for doc, _ in pairs])


def store_by_vector(store: SonyVectorStore, db: Database, case: Case) -> list[UUID]:
    vector = store.embeddings.embed_query(case.query)
    pairs = store.similarity_search_with_score_by_vector(vector, query_text=case.query, **_store_kwargs(case))
    return _ids([doc for doc, _ in pairs])


def store_mmr(store: SonyVectorStore, db: Database, case: Case) -> list[UUID]:
    # lambda_mult=1 ranks by relevance alone: MMR's candidates in their own order.
    kwargs = _store_kwargs(case)
    return _ids(store.max_marginal_relevance_search(case.query, fetch_k=kwargs["k"], lambda_mult=1.0, **kwargs))


def store_mmr_async(store: SonyVectorStore, db: Database, case: Case) -> list[UUID]:
    kwargs = _store_kwargs(case)
    return _ids(asyncio.run(store.amax_marginal_relevance_search(case.query, fetch_k=kwargs["k"], lambda_mult=1.0,
                                                                 **kwargs)))


def retriever(store: SonyVectorStore, db: Database, case: Case) -> list[UUID]:
    kwargs = _store_kwargs(case)
    search_type = "similarity" if case.threshold is None else "similarity_score_threshold"
    return _ids(store.as_retriever(search_type=search_type, search_kwargs=kwargs).invoke(case.query))


def operations(store: SonyVectorStore, db: Database, case: Case) -> list[UUID]:
    # The documented function ranks by vector, or hybrid when given the text; it has no mode argument.
    matches = asyncio.run(search_similar_embeddings(
        store.embeddings.embed_query(case.query), source_type=case.source_type, limit=case.k,
        similarity_threshold=case.threshold, filter=case.filter,
        query_text=case.query if case.mode == "hybrid" else None, db=db))
    return [match["embedding_id"] for match in matches]


def cli(store: SonyVectorStore, db: Database, case: Case) -> list[UUID]:
    hits = cli_search(db, case.query, embeddings=store.embeddings, source_type=case.source_type, k=case.k,
                      threshold=case.threshold, mode=case.mode)
    return [hit.match["embedding_id"] for hit in hits]


Entry = Callable[[SonyVectorStore, Database, Case], list[UUID]]
ENTRIES: dict[str, Entry] = {
    "store": store_sync, "store async": store_async, "store relevance": store_relevance,
    "store relevance async": store_relevance_async, "store by vector": store_by_vector, "store mmr": store_mmr,
    "store mmr async": store_mmr_async, "retriever": retriever, "operations": operations, "cli": cli,
}


def applies(entry: str, case: Case) -> bool:
    """Return True when ``entry`` can express ``case``."""
    if entry == "operations" and case.mode not in ("vector", "hybrid"):
        return False
    if entry == "cli" and case.filter is not None:
        return False
    if entry.startswith("store mmr") and case.mode != "vector":
        return False
    # The retriever (langchain-core) applies its own check to score_threshold before the store sees it.
    return not (entry == "retriever" and case.error is not None and case.threshold is not None)


@pytest.fixture
def store(db: Database) -> Iterator[SonyVectorStore]:
    """Return a store over DOCS (the document ids are the DOCS keys)."""
    store = SonyVectorStore(WordEmbeddings(), db)
    store.add_texts([text for _, text, _, _ in DOCS],
                    [{**meta, "source_type": kind, "source_id": key} for key, _, kind, meta in DOCS],
                    ids=[key for key, _, _, _ in DOCS])
    yield store


@pytest.mark.parametrize("case", CASES, ids=[case.name for case in CASES])
def test_every_entry_point_returns_the_same_rows(store: SonyVectorStore, db: Database, case: Case) -> None:
    entries = [name for name in ENTRIES if applies(name, case)]
    assert len(entries) >= 3
    if case.error is not None:
        for name in entries:
            expected = case.store_error if case.store_error and name.startswith(("store", "retriever")) else case.error
            with pytest.raises(expected) as raised:
                ENTRIES[name](store, db, case)
            assert isinstance(raised.value, InvalidInputError), name
        return
    results = {name: ENTRIES[name](store, db, case) for name in entries}
    reference = results[entries[0]]
    if case.rows is not None:
        assert len(reference) == case.rows
    else:
        assert 0 < len(reference) < len(DOCS)  # the threshold (or the words) left some rows out, not all
    for name, found in results.items():
        assert found == reference, f"{name} differs from {entries[0]}"


def test_the_threshold_holds_in_every_mode(store: SonyVectorStore) -> None:
    """Rows at or above the threshold only, and k of them whenever k exist."""
    for mode in ("vector", "keyword", "hybrid"):
        pairs = store.similarity_search_with_relevance_scores("oak table", k=3, score_threshold=0.2, search_mode=mode)
        everything = store.similarity_search_with_relevance_scores("oak table", k=1000, search_mode=mode)
        above = [pair for pair in everything if pair[1] >= 0.2]
        assert all(score >= 0.2 for _, score in pairs)
        assert len(pairs) == min(3, len(above)) > 0, mode
