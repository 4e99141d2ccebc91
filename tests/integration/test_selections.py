"""Text selections on a real Postgres: recording them, and retrieval steered by them."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import numpy as np
import pytest
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings

from sony_rag import (
    Database,
    InvalidEmbeddingError,
    InvalidIdentifierError,
    InvalidInputError,
    InvalidTextError,
    SelectionAwareRetriever,
    SessionNotFoundError,
    SonyVectorStore,
    arecord_selection,
    create_chat_session,
    get_session_selections,
    insert_text_selection,
    record_selection,
)
from sony_rag.selections import blend_query_vector

DIMENSIONS = 384

SHIPPING = "Free shipping on orders over $500 to any address in the continental US."
RETURNS = "Returns are accepted within 30 days of delivery in the original packaging."
PRICE_MATCH = "Price match: does a lower price elsewhere apply here? Yes, we match any authorised dealer."
SOFA = "Oslo three-seat sofa in oak and linen, $1,299, delivered in two weeks."

CORPUS = {
    "shipping": (SHIPPING, {"source_type": "policy", "topic": "shipping"}),
    "returns": (RETURNS, {"source_type": "policy", "topic": "returns"}),
    "price-match": (PRICE_MATCH, {"source_type": "faq", "topic": "price"}),
    "oslo-sofa": (SOFA, {"source_type": "product", "sku": "oslo-3"}),
}
QUESTION = "does this apply here?"
SELECTED = "free shipping on orders over $500"


class KeywordBagEmbeddings(Embeddings):
    """Deterministic bag-of-words vectors over the test's own vocabulary, so similarity means shared words.

    A question like "does this apply here?" then matches the FAQ that literally says "does ... apply here"
    rather than the shipping policy; only the shopper's selection can point at the shipping policy.
    """

    def __init__(self) -> None:
        words = sorted({word for text in [*(t for t, _ in CORPUS.values()), QUESTION, SELECTED]
                        for word in self.words(text)})
        assert len(words) < DIMENSIONS
        self.index = {word: position for position, word in enumerate(words)}
        self.calls = 0

    @staticmethod
    def words(text: str) -> list[str]:
        """Return the lower-case words of ``text``."""
        return re.findall(r"[a-z0-9]+", text.lower())

    def embed_query(self, text: str) -> list[float]:
        """Return the word-count vector of ``text`` (plus a small constant so it is never zero)."""
        self.calls += 1
        vector = [0.0] * DIMENSIONS
        vector[-1] = 0.1
        for word in self.words(text):
            if word in self.index:
                vector[self.index[word]] += 1.0
        return vector

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Return one word-count vector per text."""
        return [self.embed_query(text) for text in texts]


@pytest.fixture
def store(db: Database) -> SonyVectorStore:
    """Return a store holding the four-document corpus, embedded with keyword bags, searched exactly."""
    # The rankings asserted here are the exact ones: an IVFFlat index trained on an empty table may miss
    # the best row when it probes fewer than all of its lists.
    index = db.capabilities().vector_index
    probes = index.lists if index is not None and index.lists else None
    vector_store = SonyVectorStore(KeywordBagEmbeddings(), db, probes=probes)
    vector_store.add_texts([text for text, _ in CORPUS.values()], [meta for _, meta in CORPUS.values()],
                           ids=list(CORPUS))
    return vector_store


async def search(retriever: SelectionAwareRetriever, mode: str, question: str = QUESTION) -> list[Document]:
    """Return the retriever's documents through ``invoke`` or ``ainvoke``."""
    return retriever.invoke(question) if mode == "sync" else await retriever.ainvoke(question)


async def record(store: SonyVectorStore, session_id: Any, text: str, mode: str, **kwargs: Any) -> uuid.UUID:
    """Record a selection through ``record_selection`` or ``arecord_selection``."""
    if mode == "sync":
        return record_selection(store, None, session_id, text, **kwargs)
    return await arecord_selection(store, None, session_id, text, **kwargs)


def ids(documents: list[Document]) -> list[str | None]:
    """Return the documents' ids in order."""
    return [document.id for document in documents]


# -- selection-aware retrieval ---------------------------------------------------------------------------


async def test_selected_shipping_policy_ranks_first(store: SonyVectorStore, db: Database, mode: str) -> None:
    session_id = await create_chat_session(current_page="/products/oslo-sofa", db=db)
    retriever = SelectionAwareRetriever(vector_store=store, session_id=session_id, k=3)

    # Without the selection the question alone finds the FAQ that shares its words, not the policy.
    plain = store.similarity_search(QUESTION, k=3)
    assert ids(plain)[0] == "price-match"
    assert ids(await search(retriever, mode)) == ids(plain)

    await record(store, session_id, SELECTED, mode, page_url="/products/oslo-sofa")

    steered = await search(retriever, mode)
    assert ids(steered)[0] == "shipping"
    assert steered[0].page_content == SHIPPING
    assert steered[0].metadata == {"source_type": "policy", "topic": "shipping"}
    assert len(steered) == 3


async def test_search_kwargs_filter_applies_to_the_blended_search(store: SonyVectorStore, db: Database,
                                                                  mode: str) -> None:
    session_id = await create_chat_session(db=db)
    await record(store, session_id, SELECTED, mode)
    retriever = SelectionAwareRetriever(vector_store=store, session_id=session_id, k=4,
                                        search_kwargs={"filter": {"source_type": "policy"}})

    found = await search(retriever, mode)

    assert ids(found) == ["shipping", "returns"]


async def test_no_selection_weight_means_the_plain_search(store: SonyVectorStore, db: Database,
                                                          mode: str) -> None:
    session_id = await create_chat_session(db=db)
    await record(store, session_id, SELECTED, mode)
    retriever = SelectionAwareRetriever(vector_store=store, session_id=session_id, k=4, selection_weight=0)

    assert ids(await search(retriever, mode)) == ids(store.similarity_search(QUESTION, k=4))


async def test_an_unknown_session_has_no_selections(store: SonyVectorStore, mode: str) -> None:
    retriever = SelectionAwareRetriever(vector_store=store, session_id=uuid.uuid4(), k=4)

    assert ids(await search(retriever, mode)) == ids(store.similarity_search(QUESTION, k=4))


async def test_selections_older_than_max_age_are_ignored(store: SonyVectorStore, db: Database,
                                                         mode: str) -> None:
    session_id = await create_chat_session(db=db)
    await record(store, session_id, SELECTED, mode)
    # The shopper made this selection two hours ago.
    with db.pool().connection() as conn:
        conn.execute("UPDATE user_text_selections SET created_at = created_at - interval '2 hours'")

    recent_only = SelectionAwareRetriever(vector_store=store, session_id=session_id, k=2,
                                          max_age=timedelta(minutes=30))
    any_age = SelectionAwareRetriever(vector_store=store, session_id=session_id, k=2, max_age=None)
    day = SelectionAwareRetriever(vector_store=store, session_id=session_id, k=2, max_age=timedelta(days=1))

    assert ids(await search(recent_only, mode)) == ids(store.similarity_search(QUESTION, k=2))
    assert ids(await search(any_age, mode))[0] == "shipping"
    assert ids(await search(day, mode))[0] == "shipping"


async def test_only_the_newest_selections_count(store: SonyVectorStore, db: Database, mode: str) -> None:
    session_id = await create_chat_session(db=db)
    await record(store, session_id, SELECTED, mode)
    await record(store, session_id, "returns accepted within 30 days", mode)

    newest_only = SelectionAwareRetriever(vector_store=store, session_id=session_id, k=2, max_selections=1)
    none = SelectionAwareRetriever(vector_store=store, session_id=session_id, k=2, max_selections=0)
    # With the older selection weighted as much as the newer, the policies share the top two places.
    both = SelectionAwareRetriever(vector_store=store, session_id=session_id, k=2, recency_decay=1.0,
                                   selection_weight=0.8)

    assert ids(await search(newest_only, mode))[0] == "returns"
    assert ids(await search(none, mode)) == ids(store.similarity_search(QUESTION, k=2))
    assert sorted(ids(await search(both, mode))) == ["returns", "shipping"]  # type: ignore[type-var]


async def test_a_selection_stored_without_a_vector_is_embedded(store: SonyVectorStore, db: Database,
                                                               mode: str) -> None:
    session_id = await create_chat_session(db=db)
    await insert_text_selection(session_id, SELECTED, page_url="/products/oslo-sofa", db=db)
    retriever = SelectionAwareRetriever(vector_store=store, session_id=session_id, k=3)

    assert ids(await search(retriever, mode))[0] == "shipping"


# -- recording -------------------------------------------------------------------------------------------


async def test_record_selection_stores_the_embedded_text(store: SonyVectorStore, db: Database,
                                                         mode: str) -> None:
    session_id = await create_chat_session(db=db)

    selection_id = await record(store, str(session_id), SELECTED, mode, page_url="/products/oslo-sofa",
                                metadata={"element": "p.shipping-note"})

    rows = await get_session_selections(session_id, db=db)
    assert len(rows) == 1
    row = rows[0]
    assert row["selection_id"] == selection_id
    assert (row["selected_text"], row["page_url"], row["metadata"]) == (
        SELECTED, "/products/oslo-sofa", {"element": "p.shipping-note"})
    assert row["embedding"] is not None
    np.testing.assert_allclose(row["embedding"], store.embeddings.embed_query(SELECTED), rtol=1e-6)


async def test_record_selection_keeps_a_given_vector(db: Database, mode: str) -> None:
    session_id = await create_chat_session(db=db)
    given = [0.0] * DIMENSIONS
    given[7] = 0.5
    embeddings = KeywordBagEmbeddings()

    if mode == "sync":
        record_selection(embeddings, db, session_id, "anything", embedding=given)
        record_selection(None, db, session_id, "no model needed", embedding=np.asarray(given))
    else:
        await arecord_selection(embeddings, db, session_id, "anything", embedding=given)
        await arecord_selection(None, db, session_id, "no model needed", embedding=np.asarray(given))

    rows = await get_session_selections(session_id, db=db)
    assert [row["embedding"] for row in rows] == [given, given]
    assert embeddings.calls == 0


async def test_record_selection_refuses_bad_input_before_embedding(db: Database, mode: str) -> None:
    session_id = await create_chat_session(db=db)
    embeddings = KeywordBagEmbeddings()

    async def attempt(**overrides: Any) -> None:
        source = overrides.pop("source", embeddings)
        arguments: dict[str, Any] = {"session_id": session_id, "selected_text": SELECTED, **overrides}
        if mode == "sync":
            record_selection(source, db, **arguments)
        else:
            await arecord_selection(source, db, **arguments)

    with pytest.raises(InvalidIdentifierError):
        await attempt(session_id="sofa")
    with pytest.raises(InvalidTextError):
        await attempt(selected_text="bad \x00 text")
    with pytest.raises(InvalidEmbeddingError):
        await attempt(embedding=[1.0, 2.0])
    with pytest.raises(InvalidInputError):
        await attempt(metadata={"when": object()})
    with pytest.raises(InvalidInputError):
        await attempt(source=None)  # neither a vector nor a model to compute one
    with pytest.raises(InvalidInputError):
        await attempt(source="not embeddings")
    assert embeddings.calls == 0

    with pytest.raises(SessionNotFoundError):
        await attempt(session_id=uuid.uuid4())
    assert await get_session_selections(session_id, db=db) == []


# -- configuration and the blending rule -----------------------------------------------------------------


@pytest.mark.parametrize(
    "overrides",
    [{"k": 0}, {"k": True}, {"max_selections": -1}, {"max_age": timedelta(0)}, {"max_age": 30},
     {"selection_weight": 1.5}, {"selection_weight": -0.1}, {"recency_decay": 2}, {"search_kwargs": {"k": 9}},
     {"search_kwargs": ["filter"]}, {"session_id": "nope"}, {"vector_store": object()}],
)
def test_bad_settings_are_refused(store: SonyVectorStore, overrides: dict[str, Any]) -> None:
    arguments: dict[str, Any] = {"vector_store": store, "session_id": uuid.uuid4(), **overrides}
    with pytest.raises(InvalidInputError):
        SelectionAwareRetriever(**arguments)


def test_blend_follows_the_documented_rule() -> None:
    question = np.array([3.0, 0.0, 0.0, 0.0])
    newest = np.array([0.0, 2.0, 0.0, 0.0])
    older = np.array([0.0, 0.0, 5.0, 0.0])

    assert blend_query_vector(question, []) == [3.0, 0.0, 0.0, 0.0]
    assert blend_query_vector(question, [newest], selection_weight=0) == [3.0, 0.0, 0.0, 0.0]
    np.testing.assert_allclose(blend_query_vector(question, [newest], selection_weight=1), [0, 1, 0, 0])

    steer = np.array([0.0, 1.0, 0.5, 0.0]) / np.linalg.norm([1.0, 0.5])
    expected = 0.75 * np.array([1.0, 0.0, 0.0, 0.0]) + 0.25 * steer
    blended = blend_query_vector(question, [newest, older], selection_weight=0.25, recency_decay=0.5)
    np.testing.assert_allclose(blended, expected / np.linalg.norm(expected))
    # Opposite question and selection cancel out: the question alone is searched.
    assert blend_query_vector(question, [-question], selection_weight=0.5) == [3.0, 0.0, 0.0, 0.0]
