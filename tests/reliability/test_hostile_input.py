"""Hostile and malformed input: whatever the web sends is stored and read back exactly, or refused.

"Refused" means one of our documented ``InvalidInputError`` exceptions (or ``NotFoundError`` for a
well-formed id that does not exist), raised before anything is written: never a raw database error, never
a partial write, and never SQL injection (a canary table must survive every generated filter).
"""

from __future__ import annotations

import asyncio
import math
import os
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from datetime import UTC
from typing import Any, TypeVar

import numpy as np
import pytest
from helpers import test_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, HumanMessage

from sony_rag.chat_history import SonyChatMessageHistory
from sony_rag.database import Database
from sony_rag.errors import InvalidInputError, NotFoundError, SonyRagError
from sony_rag.operations import (
    batch_insert_embeddings,
    create_chat_session,
    delete_chat_session,
    get_chat_history,
    get_chat_session,
    get_session_selections,
    insert_chat_message,
    insert_embedding,
    insert_text_selection,
    search_similar_embeddings,
)
from sony_rag.types import ROLES
from sony_rag.vectorstore import DOCUMENT_ID_NAMESPACE, SonyVectorStore

T = TypeVar("T")
CANARY = "reliability_canary"
# Modest by default so the folder stays fast; RELIABILITY_EXAMPLES=2000 for a deeper hunt.
SETTINGS = settings(max_examples=int(os.environ.get("RELIABILITY_EXAMPLES", "40")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                           HealthCheck.function_scoped_fixture])
TABLES = ("chat_sessions", "chat_messages", "document_embeddings", "user_text_selections")


@dataclass
class Hostile:
    """A Database with its own event loop, so hypothesis examples can call the async API in sequence."""

    db: Database
    runner: asyncio.Runner
    store: SonyVectorStore

    def run(self, coroutine: Awaitable[T]) -> T:
        """Return the coroutine's result, run on this module's event loop."""
        async def wrapper() -> T:
            return await coroutine

        return self.runner.run(wrapper())

    def counts(self) -> dict[str, int]:
        """Return the row count of every table (the canary included)."""
        with self.db.pool().connection() as conn:
            return {table: int(conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0])  # type: ignore[index]
                    for table in (*TABLES, CANARY)}

    def outcome(self, call: Callable[[], Awaitable[T] | T]) -> tuple[T | None, SonyRagError | None]:
        """Run a call; return (result, None) or (None, the documented refusal). Anything else fails the test."""
        before = self.counts()
        try:
            result = call()
            if asyncio.iscoroutine(result):
                result = self.run(result)
        except (InvalidInputError, NotFoundError) as refusal:
            assert self.counts() == before, "a refused call wrote something"
            return None, refusal
        except Exception as error:  # pragma: no cover - the assertion message is the point
            raise AssertionError(f"not a documented refusal: {type(error).__module__}.{type(error).__name__}: "
                                 f"{error}") from error
        return result, None  # type: ignore[return-value]


@pytest.fixture(scope="module")
def hostile(database_url: str) -> Iterator[Hostile]:
    """Return the module's Database, loop and store, with a canary table that must survive everything."""
    runner = asyncio.Runner()
    db = Database(database_url, settings=test_settings())
    with db.pool().connection() as conn:
        conn.execute(f"CREATE TABLE IF NOT EXISTS {CANARY} (alive int)")
        conn.execute(f"TRUNCATE {CANARY}")
        conn.execute(f"INSERT INTO {CANARY} VALUES (1)")
    try:
        yield Hostile(db, runner, SonyVectorStore(DeterministicFakeEmbedding(size=384), db))
    finally:
        with db.pool().connection() as conn:
            conn.execute(f"DROP TABLE IF EXISTS {CANARY}")
        runner.run(db.aclose())
        runner.close()


# -- strategies --------------------------------------------------------------------------------------------

SQLISH = [
    f"'; DROP TABLE {CANARY}; --", f'"; DROP TABLE {CANARY}; --', f"x') OR 1=1; DELETE FROM {CANARY}; --",
    f"$$; DROP TABLE {CANARY}; $$", "metadata->>'a'", "1; SELECT pg_sleep(10)", "' OR ''='", "\\", "\\'",
    "%", "_", "%%", "a%b\\", "\\x00", "*/", "/*", "--", ";", "'", '"', "$1", "%(p0)s", "{}", "{p0}",
    "a.b", "a..b", ".a", "a.", " a", "a ", "a  b", "", "source_type", "source_id", "created_at",
    "embedding", "metadata", "embedding_id", "é", "𝔘nicode", "\u202e", "a" * 65, "a." * 17,
]
OPERATORS = ["$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$in", "$nin", "$between", "$like", "$ilike",
             "$exists", "$and", "$or", "$not", "$AND", "$Or", "$where", "$regex", "$", "$$", "$eq "]
ANY_TEXT = st.text(st.characters(codec=None), max_size=40)  # includes NUL and lone surrogates
keys = st.one_of(st.sampled_from(SQLISH), st.sampled_from(OPERATORS), ANY_TEXT)
filter_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(), st.integers(min_value=-(2**2000), max_value=2**2000),
    st.floats(), st.sampled_from(SQLISH), ANY_TEXT, st.datetimes(timezones=st.just(UTC)), st.datetimes(),
    st.sampled_from(["product", "faq", "policy", "page_content", "2024-01-01T00:00:00+00:00"]),
    st.builds(object), st.binary(max_size=5), st.sets(st.integers(), max_size=2),
)
filter_values = st.recursive(
    filter_scalars,
    lambda children: st.lists(children, max_size=3) | st.dictionaries(keys, children, max_size=3),
    max_leaves=10,
)
filters = st.one_of(
    st.dictionaries(keys, filter_values, max_size=3),
    st.dictionaries(st.sampled_from(["material", "price", "tags", "source_id", "source_type", "created_at"]),
                    st.dictionaries(st.sampled_from(OPERATORS), filter_values, max_size=2), max_size=2),
    filter_values,  # not even a dict
)

json_scalars = st.one_of(
    st.none(), st.booleans(), st.integers(min_value=-(2**80), max_value=2**80),
    st.floats(allow_nan=False, allow_infinity=False), ANY_TEXT, st.sampled_from(SQLISH),
)
not_json = st.one_of(
    st.sampled_from([math.nan, math.inf, -math.inf]), st.sets(st.integers(), max_size=2),
    st.frozensets(st.integers(), max_size=2), st.tuples(st.integers()), st.binary(max_size=4),
    st.datetimes(), st.dates(), st.decimals(allow_nan=True), st.uuids(), st.complex_numbers(),
    st.builds(object), st.just(np.float32(1.5)), st.just(np.arange(3)),
)
metadata_keys = st.one_of(ANY_TEXT, st.sampled_from(SQLISH), st.integers(), st.none(), st.tuples(st.integers()))


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {"leaf": True}
    for level in range(depth):
        value = {f"l{level}": value} if level % 2 else {f"l{level}": [value]}
    return value


metadatas = st.one_of(
    st.dictionaries(ANY_TEXT, st.recursive(
        json_scalars, lambda c: st.lists(c, max_size=3) | st.dictionaries(ANY_TEXT, c, max_size=3), max_leaves=15),
        max_size=4),
    st.dictionaries(metadata_keys, st.recursive(
        st.one_of(json_scalars, not_json),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(metadata_keys, c, max_size=3), max_leaves=10),
        max_size=4),
    st.integers(min_value=1, max_value=120).map(_nested),
    st.one_of(st.lists(json_scalars, max_size=2), ANY_TEXT, st.integers(), st.none()),  # not a dict at all
)

id_values = st.one_of(
    st.uuids().map(str), st.uuids(), st.uuids().map(lambda u: str(u).upper()), st.uuids().map(lambda u: u.hex),
    st.uuids().map(lambda u: "{" + str(u) + "}"), st.uuids().map(lambda u: f"urn:uuid:{u}"),
    ANY_TEXT, st.sampled_from(SQLISH), st.integers(), st.none(), st.binary(max_size=16), st.just(""),
    st.text(min_size=500, max_size=3000),
)

vector_elements = st.one_of(st.floats(width=32), st.floats(), st.integers(-(2**70), 2**70), st.none(),
                            st.just("0.5"), st.just([1.0]))
vectors = st.one_of(
    st.lists(st.floats(-1e6, 1e6, width=32), min_size=384, max_size=384),  # usually valid
    st.lists(st.floats(-1, 1, width=32), min_size=0, max_size=5),  # wrong size
    st.sampled_from([383, 385, 768]).flatmap(lambda n: st.lists(st.floats(-1, 1, width=32), min_size=n, max_size=n)),
    st.lists(vector_elements, min_size=384, max_size=384),  # NaN, inf, too large for float32, None, strings
    st.just([0.0] * 384), st.just(np.zeros(384)), st.just(np.ones((2, 384))), st.just(np.ones(384, dtype=np.int64)),
    st.none(), ANY_TEXT, st.dictionaries(ANY_TEXT, st.floats(), max_size=2), st.binary(max_size=8),
)

page_urls = st.one_of(
    ANY_TEXT, st.sampled_from(SQLISH), st.none(), st.integers(), st.binary(max_size=8),
    st.sampled_from(["/products/sofa-123", "javascript:alert(1)", "https://shop.example/?q=' OR 1=1 --",
                     "data:text/html,<script>alert(1)</script>", "/p?x=%00", "/\x00/", "/\ud800"]),
    st.text(min_size=2000, max_size=20000),
)

roles = st.one_of(st.sampled_from(sorted(ROLES)), st.sampled_from(["User", "ASSISTANT", " user", "user ", "tool",
                                                                    "human", "ai", "function", "", "system\x00"]),
                  ANY_TEXT, st.integers(), st.none())


# -- filters -----------------------------------------------------------------------------------------------

SEED_IDS = [f"seed-{n}" for n in range(8)]
SEED_METADATA: list[dict[str, Any]] = [
    {"material": "oak", "price": 449, "tags": ["4k", "hdr"], "source_type": "product", "source_id": "a"},
    {"material": "ash", "price": 429.5, "dimensions": {"width_cm": 120}, "source_type": "product"},
    {"material": "Oak", "price": "449", "source_type": "faq", "source_id": "b"},
    {"price": None, "tags": [], "note": "it's 50% off \\ today", "source_type": "policy"},
    {"nested": {"a": {"b": [1, 2, {"c": "d"}]}}, "source_type": "page_content", "source_id": "c"},
    {"flag": True, "count": 0, "source_type": "faq"},
    {"unicode": "𝔘nicode é", "empty": "", "source_type": "product", "source_id": "d'; DROP"},
    {},
]


def _seed(hostile: Hostile) -> None:
    hostile.store.add_texts([f"seed {n}" for n in range(len(SEED_IDS))], metadatas=SEED_METADATA,
                            ids=list[str | None](SEED_IDS))


@SETTINGS
@given(filter=filters)
def test_hostile_filters_search_or_are_refused_and_the_canary_survives(hostile: Hostile, filter: Any) -> None:
    _seed(hostile)
    query = [1.0] * 384
    found, refused = hostile.outcome(lambda: search_similar_embeddings(query, limit=50, filter=filter,
                                                                       db=hostile.db))
    via_store, store_refused = hostile.outcome(lambda: hostile.store.similarity_search_by_vector(
        query, k=50, filter=filter))
    assert (refused is None) == (store_refused is None)  # one grammar, one validator
    if found is not None and via_store is not None:
        assert {str(m["embedding_id"]) for m in found} <= {str(uuid.uuid5(DOCUMENT_ID_NAMESPACE, i)) for i in SEED_IDS}
        assert len(found) == len(via_store)
    assert hostile.counts()[CANARY] == 1


@SETTINGS
@given(filter=filters)
def test_hostile_filters_delete_exactly_what_they_match(hostile: Hostile, filter: Any) -> None:
    _seed(hostile)
    before = hostile.counts()["document_embeddings"]
    matched, refused = hostile.outcome(lambda: hostile.store.similarity_search_by_vector(
        [1.0] * 384, k=50, filter=filter))
    _, delete_refused = hostile.outcome(lambda: hostile.store.delete(filter=filter))
    if refused is not None or not filter:
        assert delete_refused is not None  # an invalid or empty filter deletes nothing
    else:
        assert delete_refused is None and matched is not None
        assert hostile.counts()["document_embeddings"] == before - len(matched)
    assert hostile.counts()[CANARY] == 1


# -- metadata, ids, roles, vectors, URLs -------------------------------------------------------------------


@SETTINGS
@given(metadata=metadatas)
def test_metadata_is_stored_exactly_or_refused(hostile: Hostile, metadata: Any) -> None:
    session_id, refused = hostile.outcome(lambda: create_chat_session(metadata=metadata, db=hostile.db))
    if refused is None:
        expected = metadata or {}
        row = hostile.run(get_chat_session(session_id, db=hostile.db))  # type: ignore[arg-type]
        assert row is not None and row["metadata"] == expected
        hostile.run(insert_chat_message(session_id, "user", "hi", metadata=metadata,  # type: ignore[arg-type]
                                        db=hostile.db))
        message = hostile.run(get_chat_history(session_id, db=hostile.db))[-1]  # type: ignore[arg-type]
        assert message["metadata"] == expected
        [doc_id] = hostile.store.add_texts(["meta"], metadatas=[{**expected, "source_type": "faq"}])
        [document] = hostile.store.get_by_ids([doc_id])
        assert document.metadata == {**expected, "source_type": "faq"}
    else:
        # Every place that takes metadata refuses the same value the same way.
        _, again = hostile.outcome(lambda: insert_embedding("faq", None, "x", [1.0] * 384, metadata=metadata,
                                                            db=hostile.db))
        assert again is not None
        if isinstance(metadata, dict):
            _, via_store = hostile.outcome(lambda: hostile.store.add_texts(["x"], metadatas=[metadata]))
            assert via_store is not None


@SETTINGS
@given(session_id=id_values)
def test_session_ids_are_parsed_or_refused(hostile: Hostile, session_id: Any) -> None:
    row, refused = hostile.outcome(lambda: get_chat_session(session_id, db=hostile.db))
    assert row is None  # nothing exists under a random id
    _, write_refused = hostile.outcome(lambda: insert_chat_message(session_id, "user", "hi", db=hostile.db))
    assert write_refused is not None  # malformed, or well-formed but unknown (SessionNotFoundError)
    assert (refused is None) == isinstance(write_refused, NotFoundError)
    created, create_refused = hostile.outcome(lambda: SonyChatMessageHistory(session_id, hostile.db))
    assert (create_refused is None) == (refused is None)
    if created is not None:
        created.add_messages([HumanMessage("hello"), AIMessage("hi!")])
        assert [m.content for m in created.messages] == ["hello", "hi!"]
        assert hostile.run(get_chat_session(session_id, db=hostile.db)) is not None
        # Hypothesis may draw the same id again: leave nothing under it.
        assert hostile.run(delete_chat_session(session_id, db=hostile.db))


@SETTINGS
@given(document_id=id_values)
def test_document_ids_round_trip_or_are_refused(hostile: Hostile, document_id: Any) -> None:
    ids, refused = hostile.outcome(lambda: hostile.store.add_texts(["a document"], ids=[document_id]))
    if refused is None:
        assert ids == [document_id if document_id is not None else ids[0]]  # type: ignore[index]
        [document] = hostile.store.get_by_ids(ids)  # type: ignore[arg-type]
        assert document.id == ids[0] and document.page_content == "a document"  # type: ignore[index]
        hostile.store.delete(ids)  # type: ignore[arg-type]
        assert hostile.store.get_by_ids(ids) == []  # type: ignore[arg-type]


@SETTINGS
@given(role=roles)
def test_roles_are_one_of_three_or_refused(hostile: Hostile, role: Any) -> None:
    session_id = hostile.run(create_chat_session(db=hostile.db))
    message_id, refused = hostile.outcome(lambda: insert_chat_message(session_id, role, "hi", db=hostile.db))
    assert (refused is None) == (isinstance(role, str) and role in ROLES)
    if message_id is not None:
        [row] = hostile.run(get_chat_history(session_id, db=hostile.db))
        assert row["role"] == role and row["message_id"] == message_id


@SETTINGS
@given(vector=vectors)
def test_vectors_are_stored_exactly_or_refused(hostile: Hostile, vector: Any) -> None:
    session_id = hostile.run(create_chat_session(db=hostile.db))
    selection_id, refused = hostile.outcome(lambda: insert_text_selection(
        session_id, "a selection", "/p", embedding=vector, db=hostile.db))
    _, as_document = hostile.outcome(lambda: insert_embedding("product", "v", "vector", vector, db=hostile.db))
    _, as_query = hostile.outcome(lambda: search_similar_embeddings(vector, limit=1, db=hostile.db))
    assert (as_document is None) == (as_query is None)
    if vector is None:  # a selection's embedding is optional; a document's and a query's are not
        assert refused is None and as_document is not None
    else:
        assert (refused is None) == (as_document is None)
    if selection_id is not None:
        [selection] = hostile.run(get_session_selections(session_id, db=hostile.db))
        expected = None if vector is None else [float(x) for x in np.asarray(vector, dtype=np.float32)]
        assert selection["embedding"] == expected


@SETTINGS
@given(url=page_urls)
def test_page_urls_are_stored_exactly_or_refused(hostile: Hostile, url: Any) -> None:
    session_id, refused = hostile.outcome(lambda: create_chat_session(current_page=url, db=hostile.db))
    fallback = hostile.run(create_chat_session(db=hostile.db))
    _, message_refused = hostile.outcome(lambda: insert_chat_message(fallback, "user", "hi", page_context=url,
                                                                     db=hostile.db))
    _, selection_refused = hostile.outcome(lambda: insert_text_selection(fallback, "text", page_url=url,
                                                                         db=hostile.db))
    assert (refused is None) == (message_refused is None) == (selection_refused is None)
    if refused is None:
        session = hostile.run(get_chat_session(session_id, db=hostile.db))  # type: ignore[arg-type]
        assert session is not None and session["current_page"] == url
        [message] = hostile.run(get_chat_history(fallback, db=hostile.db))
        assert message["page_context"] == url
        [selection] = hostile.run(get_session_selections(fallback, db=hostile.db))
        assert selection["page_url"] == url


# -- very large inputs -------------------------------------------------------------------------------------

MEGABYTE_TEXT = ("Ünïcødé sofa 🛋️ — " * 60_000)[:1_000_000]


async def test_a_one_megabyte_chunk_message_and_metadata_round_trip(db: Database) -> None:
    assert len(MEGABYTE_TEXT.encode("utf-8")) > 1_000_000
    store = SonyVectorStore(DeterministicFakeEmbedding(size=384), db)
    embedding_id = await insert_embedding("page_content", "big", MEGABYTE_TEXT, [0.5] * 384,
                                          metadata={"blob": MEGABYTE_TEXT}, db=db)
    [document] = await store.aget_by_ids([str(embedding_id)])
    assert document.page_content == MEGABYTE_TEXT
    assert document.metadata == {"blob": MEGABYTE_TEXT}
    session_id = await create_chat_session(db=db)
    await insert_chat_message(session_id, "user", MEGABYTE_TEXT, db=db)
    [message] = await get_chat_history(session_id, db=db)
    assert message["content"] == MEGABYTE_TEXT


async def test_a_ten_thousand_document_batch_is_all_or_nothing(db: Database) -> None:
    rng = np.random.default_rng(3)
    items = [{"source_type": "product", "source_id": f"sku-{n}", "content_chunk": f"item {n}",
              "embedding": rng.normal(size=384).astype(np.float32), "metadata": {"n": n}} for n in range(10_000)]
    broken = [*items[:-1], {**items[-1], "embedding": [float("nan")] * 384}]
    with pytest.raises(InvalidInputError):
        await batch_insert_embeddings(broken, db=db)
    store = SonyVectorStore(DeterministicFakeEmbedding(size=384), db)
    assert await search_similar_embeddings(items[0]["embedding"], limit=1, db=db) == []  # nothing written

    ids = await batch_insert_embeddings(items, db=db)
    assert len(set(ids)) == 10_000
    [nearest] = await search_similar_embeddings(items[1234]["embedding"], limit=1, db=db)
    assert nearest["embedding_id"] == ids[1234] and nearest["metadata"] == {"n": 1234}

    # The upsert path (explicit ids through the staging table) with the same 10,000 rows, twice.
    texts = [str(item["content_chunk"]) for item in items]
    vectors = [item["embedding"] for item in items]
    doc_ids = [f"doc-{n}" for n in range(10_000)]
    await store.aadd_embeddings(texts, vectors, [{"n": n} for n in range(10_000)], ids=doc_ids)
    await store.aadd_embeddings(texts, vectors, [{"n": -n} for n in range(10_000)], ids=doc_ids)
    documents = await store.aget_by_ids(doc_ids)
    assert len(documents) == 10_000
    assert all(d.metadata == {"n": -int(str(d.id)[4:])} for d in documents)


async def test_a_five_thousand_message_session_is_read_through_a_window(db: Database) -> None:
    session_id = str(uuid.uuid4())
    history = SonyChatMessageHistory(session_id, db)
    messages = [HumanMessage(f"m{n}") if n % 2 == 0 else AIMessage(f"m{n}") for n in range(5_000)]
    for start in range(0, 5_000, 1_000):
        await history.aadd_messages(messages[start:start + 1_000])

    windowed = await SonyChatMessageHistory(session_id, db, max_messages=50).aget_messages()
    assert [m.content for m in windowed] == [f"m{n}" for n in range(4_950, 5_000)]
    newest = await get_chat_history(session_id, limit=20, db=db)
    assert [row["content"] for row in newest] == [f"m{n}" for n in range(4_980, 5_000)]
    everything = await get_chat_history(session_id, limit=None, db=db)
    assert [row["content"] for row in everything] == [f"m{n}" for n in range(5_000)]

