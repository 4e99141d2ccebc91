"""Bulk writes through SonyVectorStore check numpy batches a chunk at a time and metadata without a call per plain
value: every bad row is still refused with InvalidInputError naming it, nothing is written, and what is accepted
reads back exactly."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from sony_rag import Database, InvalidEmbeddingError, InvalidMetadataError, SonyVectorStore
from sony_rag.validation import MAX_METADATA_DEPTH

DIM = 384
ROWS = 2500  # more than one chunk of the bulk check


@pytest.fixture
def add(call: Callable[..., Any], db: Database) -> Callable[..., list[str]]:
    """Return a function that calls add_embeddings through the sync or the async API."""
    store = SonyVectorStore(DeterministicFakeEmbedding(size=DIM), db, source_type="product")

    def run(texts: list[str], embeddings: Any, metadatas: list[dict[str, Any]] | None = None) -> list[str]:
        return list(call(store, "add_embeddings", texts, embeddings, metadatas))

    return run


def _vectors(count: int, seed: int = 3) -> npt.NDArray[np.float32]:
    vectors = np.random.default_rng(seed).standard_normal((count, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def _count(db: Database) -> int:
    with db.pool().connection() as conn:
        row = conn.execute("SELECT count(*) FROM document_embeddings").fetchone()
    return int(row[0]) if row else 0


def _stored(db: Database, ids: list[str]) -> list[npt.NDArray[np.float32]]:
    """Return the stored embeddings of ``ids``, in that order."""
    with db.pool().connection() as conn:
        rows = conn.execute("SELECT embedding_id::text, embedding FROM document_embeddings "
                            "WHERE embedding_id = ANY(%s::uuid[])", [ids]).fetchall()
    by_id = {row[0]: np.asarray(row[1].to_numpy() if hasattr(row[1], "to_numpy") else row[1]) for row in rows}
    return [by_id[embedding_id] for embedding_id in ids]


@pytest.mark.parametrize(("row", "spoil", "message"), [
    (2300, lambda v: v.__setitem__(7, np.nan), "contains NaN or infinity"),
    (2300, lambda v: v.__setitem__(0, np.inf), "contains NaN or infinity"),
    (1999, lambda v: v.__setitem__(slice(None), 0.0), "is all zeros"),
], ids=["nan", "inf", "zeros"])
def test_a_bad_row_in_a_numpy_batch_is_named_and_nothing_is_written(
        db: Database, add: Callable[..., list[str]], row: int, spoil: Callable[[Any], None], message: str) -> None:
    vectors = list(_vectors(ROWS))
    spoil(vectors[row])
    with pytest.raises(InvalidEmbeddingError, match=rf"embeddings\[{row}\] {message}"):
        add([f"text {i}" for i in range(ROWS)], vectors)
    assert _count(db) == 0


def test_a_row_of_the_wrong_dimension_or_type_in_a_numpy_batch_is_named(
        db: Database, add: Callable[..., list[str]]) -> None:
    vectors: list[Any] = list(_vectors(ROWS))
    vectors[2400] = vectors[2400][:-1]
    with pytest.raises(InvalidEmbeddingError, match=r"embeddings\[2400\] must have 384 dimensions"):
        add([f"text {i}" for i in range(ROWS)], vectors)
    vectors[2400] = np.array(["0.5"] * DIM)
    with pytest.raises(InvalidEmbeddingError, match=r"embeddings\[2400\] must contain only numbers"):
        add([f"text {i}" for i in range(ROWS)], vectors)
    assert _count(db) == 0


def test_a_matrix_and_mixed_arrays_are_stored_exactly(db: Database, add: Callable[..., list[str]]) -> None:
    matrix = _vectors(ROWS)
    ids = add([f"text {i}" for i in range(ROWS)], matrix)  # a 2-D array: its rows are the embeddings
    assert _count(db) == ROWS
    assert all(np.array_equal(stored, expected) for stored, expected in zip(_stored(db, ids[-5:]), matrix[-5:],
                                                                               strict=True))
    mixed: list[Any] = list(_vectors(4, seed=5))
    mixed[1] = mixed[1].astype(np.float64)  # converted, as row by row
    mixed[2] = mixed[2].astype(">f4")  # big-endian float32: the same numbers
    mixed[3] = mixed[3].tolist()
    more = add([f"more {i}" for i in range(4)], mixed)
    for stored, expected in zip(_stored(db, more), mixed, strict=True):
        assert np.array_equal(stored, np.asarray(expected, dtype=np.float32))


def _nested(levels: int) -> dict[str, Any]:
    """Return a document whose plain leaf is ``levels`` objects deep."""
    document: Any = "leaf"
    for _ in range(levels):
        document = {"x": document}
    return dict(document)


@pytest.mark.parametrize(("metadata", "message"), [
    ({"ok": 1, "bad": "a\x00b"}, r"metadatas\[1\]\.bad contains a NUL byte"),
    ({"ok": "plain", "bad": "\udc80"}, r"metadatas\[1\]\.bad contains a lone surrogate"),
    ({"x": {"y": float("nan")}}, r"metadatas\[1\]\.x\.y is nan"),
    (_nested(MAX_METADATA_DEPTH + 1), "nested deeper"),
])
def test_bad_metadata_is_named_and_nothing_is_written(db: Database, add: Callable[..., list[str]],
                                                      metadata: dict[str, Any], message: str) -> None:
    with pytest.raises(InvalidMetadataError, match=message):
        add(["a", "b", "c"], _vectors(3), [{"n": 1}, metadata, {"n": 3}])
    assert _count(db) == 0


def test_metadata_as_deep_as_allowed_is_stored(db: Database, add: Callable[..., list[str]]) -> None:
    store = SonyVectorStore(DeterministicFakeEmbedding(size=DIM), db)
    metadata = {**_nested(MAX_METADATA_DEPTH), "café": "crème", "n": None, "flag": True, "count": 3}
    [document_id] = add(["deep"], _vectors(1), [metadata])
    [document] = store.get_by_ids([document_id])
    assert document.metadata == metadata
