"""Text selections: record what a shopper highlights on a page, and let it steer retrieval.

``record_selection`` / ``arecord_selection`` store a selection in ``user_text_selections`` with its
embedding; ``SelectionAwareRetriever`` answers a question with the question *and* the session's newest
selections, so "does this apply here?" after highlighting "free shipping on orders over $500" finds the
shipping policy.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import timedelta
from typing import Any
from uuid import UUID

import numpy as np
import numpy.typing as npt
from langchain_core.callbacks import AsyncCallbackManagerForRetrieverRun, CallbackManagerForRetrieverRun
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.retrievers import BaseRetriever
from pydantic import Field

from sony_rag import plans
from sony_rag import validation as check
from sony_rag.database import Database
from sony_rag.errors import InvalidEmbeddingError, InvalidInputError
from sony_rag.executor import Plan
from sony_rag.operations import get_db
from sony_rag.vectorstore import SonyVectorStore

DEFAULT_MAX_AGE = timedelta(minutes=30)

# Below this norm the blend of question and selections points nowhere in particular (they cancel out).
_MIN_BLEND_NORM = 1e-6

Vector = npt.NDArray[np.float32]


# -- recording -----------------------------------------------------------------------------------------


def record_selection(vector_store_or_embeddings: SonyVectorStore | Embeddings | None, db: Database | None,
                     session_id: str | UUID, selected_text: str, page_url: str | None = None,
                     embedding: Sequence[float] | npt.NDArray[Any] | None = None,
                     metadata: Mapping[str, Any] | None = None) -> UUID:
    """Store a selection (embedding its text when no vector is given) and return its id.

    ``db`` defaults to the store's Database, else the default one. Raises InvalidInputError (or a
    subclass) before embedding or writing, and SessionNotFoundError when the session does not exist.
    """
    embeddings, database, values = _selection_inputs(vector_store_or_embeddings, db, session_id,
                                                     selected_text, page_url, embedding, metadata)
    vector = values["embedding"]
    if vector is None:
        assert embeddings is not None
        vector = _embedded(embeddings.embed_documents([values["selected_text"]]), embeddings, 1)[0]
    return database.run(_insert_plan(values, vector))


async def arecord_selection(vector_store_or_embeddings: SonyVectorStore | Embeddings | None,
                            db: Database | None, session_id: str | UUID, selected_text: str,
                            page_url: str | None = None,
                            embedding: Sequence[float] | npt.NDArray[Any] | None = None,
                            metadata: Mapping[str, Any] | None = None) -> UUID:
    """Store a selection (embedding its text when no vector is given) and return its id.

    ``db`` defaults to the store's Database, else the default one. Raises InvalidInputError (or a
    subclass) before embedding or writing, and SessionNotFoundError when the session does not exist.
    """
    embeddings, database, values = _selection_inputs(vector_store_or_embeddings, db, session_id,
                                                     selected_text, page_url, embedding, metadata)
    vector = values["embedding"]
    if vector is None:
        assert embeddings is not None
        vector = _embedded(await embeddings.aembed_documents([values["selected_text"]]), embeddings, 1)[0]
    return await database.arun(_insert_plan(values, vector))


def _selection_inputs(source: SonyVectorStore | Embeddings | None, db: Database | None, session_id: object,
                      selected_text: object, page_url: object, embedding: object,
                      metadata: object) -> tuple[Embeddings | None, Database, dict[str, Any]]:
    if isinstance(source, SonyVectorStore):
        embeddings: Embeddings | None = source.embeddings
        database = db if db is not None else source.db
    elif isinstance(source, Embeddings) or source is None:
        embeddings = source
        database = get_db(db)
    else:
        raise InvalidInputError(
            f"vector_store_or_embeddings must be a SonyVectorStore, an Embeddings or None, got "
            f"{type(source).__name__}")
    values = {
        "session_id": check.as_uuid(session_id, "session_id"),
        "selected_text": check.required_text(selected_text, "selected_text"),
        "page_url": check.text(page_url, "page_url", optional=True),
        "embedding": None if embedding is None else check.vector(embedding, "embedding"),
        "metadata": check.metadata(metadata),
    }
    if values["embedding"] is None and embeddings is None:
        raise InvalidInputError("give an embedding, or a vector store or embeddings to compute one with")
    return embeddings, database, values


def _insert_plan(values: Mapping[str, Any], vector: Vector) -> Plan[UUID]:
    return plans.insert_selection(values["session_id"], values["selected_text"], values["page_url"], vector,
                                  values["metadata"])


def _embedded(vectors: list[list[float]], embeddings: Embeddings, expected: int) -> list[Vector]:
    if len(vectors) != expected:
        raise InvalidEmbeddingError(
            f"{type(embeddings).__name__} returned {len(vectors)} vectors for {expected} texts")
    for vector in vectors[:1]:
        check.dimensions_of(vector, type(embeddings).__name__)
    return check.vectors(vectors, "selection embedding")


# -- blending ------------------------------------------------------------------------------------------


def blend_query_vector(question: Sequence[float] | npt.NDArray[Any],
                       selections: Sequence[Sequence[float] | npt.NDArray[Any]], *,
                       selection_weight: float = 0.5, recency_decay: float = 0.5) -> list[float]:
    """Return the vector to search with: the question steered toward the selections (newest first).

    ``normalize((1 - w) * normalize(q) + w * normalize(sum_i decay**i * normalize(s_i)))`` with
    ``w = selection_weight``, ``s_0`` the newest selection. With no selections or ``w == 0`` the question
    vector is returned unchanged; when question and selections cancel out, too.
    """
    if not selections or selection_weight == 0:
        return [float(x) for x in question]
    q = _unit(np.asarray(question, dtype=np.float64))
    steer = np.zeros_like(q)
    for rank, selection in enumerate(selections):
        steer += recency_decay**rank * _unit(np.asarray(selection, dtype=np.float64))
    blended = (1.0 - selection_weight) * q + selection_weight * _unit(steer)
    norm = float(np.linalg.norm(blended))
    if norm < _MIN_BLEND_NORM:
        return [float(x) for x in question]
    return [float(x) for x in blended / norm]


def _unit(vector: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    norm = float(np.linalg.norm(vector))
    return vector / norm if norm > 0 else vector


# -- retrieval -----------------------------------------------------------------------------------------


class SelectionAwareRetriever(BaseRetriever):
    """Retriever that searches with the question blended with the session's newest text selections.

    Blending rule:
        1. Embed the question with the store's embeddings: ``q``.
        2. Read the session's newest ``max_selections`` selections made within ``max_age`` (None: any
           age). A selection stored without a vector is embedded with the store's embeddings.
        3. Weigh them by recency: the newest counts 1, the next ``recency_decay``, the next
           ``recency_decay ** 2``, ...; their weighted sum of unit vectors, normalized, is ``s``.
        4. Search with ``normalize((1 - selection_weight) * normalize(q) + selection_weight * s)``,
           through the store's exact-count ``similarity_search_by_vector`` (``k`` results, with
           ``search_kwargs`` such as ``filter``).

        With no selections in the window (or ``selection_weight=0`` or ``max_selections=0``) the search
        is exactly ``vector_store.similarity_search(question, k, **search_kwargs)``. ``selection_weight=1``
        searches with the selections alone. A session that does not exist has no selections.

    Example:
        .. code-block:: python

            retriever = SelectionAwareRetriever(vector_store=store, session_id=session_id,
                                                search_kwargs={"filter": {"source_type": "policy"}})
            docs = retriever.invoke("does this apply here?")

    Both ``invoke`` and ``ainvoke`` are native (the async path uses the async pool and ``aembed_*``).
    """

    vector_store: SonyVectorStore
    session_id: UUID
    k: int = 4
    max_selections: int = 3
    max_age: timedelta | None = DEFAULT_MAX_AGE
    selection_weight: float = 0.5
    recency_decay: float = 0.5
    search_kwargs: dict[str, Any] = Field(default_factory=dict)

    def __init__(self, *, vector_store: SonyVectorStore, session_id: str | UUID, k: int = 4,
                 max_selections: int = 3, max_age: timedelta | None = DEFAULT_MAX_AGE,
                 selection_weight: float = 0.5, recency_decay: float = 0.5,
                 search_kwargs: Mapping[str, Any] | None = None, **kwargs: Any) -> None:
        """Create the retriever; raises InvalidInputError (or a subclass) for a bad setting."""
        # Checked here rather than in pydantic validators, which would wrap our errors in ValidationError.
        if not isinstance(vector_store, SonyVectorStore):
            raise InvalidInputError(
                f"vector_store must be a SonyVectorStore, got {type(vector_store).__name__}")
        _count(k, "k", minimum=1)
        _count(max_selections, "max_selections", minimum=0)
        if max_age is not None and (not isinstance(max_age, timedelta) or max_age <= timedelta(0)):
            raise InvalidInputError(f"max_age must be a positive timedelta or None, got {max_age!r}")
        _fraction(selection_weight, "selection_weight")
        _fraction(recency_decay, "recency_decay")
        if search_kwargs is not None and not isinstance(search_kwargs, Mapping):
            raise InvalidInputError(f"search_kwargs must be a dict, got {type(search_kwargs).__name__}")
        if search_kwargs and "k" in search_kwargs:
            raise InvalidInputError("give k as the retriever's k, not in search_kwargs")
        fields: dict[str, Any] = {
            "vector_store": vector_store, "session_id": check.as_uuid(session_id, "session_id"), "k": k,
            "max_selections": max_selections, "max_age": max_age, "selection_weight": float(selection_weight),
            "recency_decay": float(recency_decay), "search_kwargs": dict(search_kwargs or {}),
        }
        super().__init__(**fields, **kwargs)

    def _reads_selections(self) -> bool:
        return self.max_selections > 0 and self.selection_weight > 0

    def _selections_plan(self) -> Plan[list[plans.Row]]:
        return plans.recent_selections(self.session_id, self.max_selections, self.max_age)

    def _get_relevant_documents(self, query: str, *,
                                run_manager: CallbackManagerForRetrieverRun) -> list[Document]:
        """Return the ``k`` documents nearest to the question blended with the session's selections."""
        embeddings = self.vector_store.embeddings
        question = _embedded([embeddings.embed_query(query)], embeddings, 1)[0]
        rows = self.vector_store.db.run(self._selections_plan()) if self._reads_selections() else []
        missing = [row["selected_text"] for row in rows if row["embedding"] is None]
        computed = _embedded(embeddings.embed_documents(missing), embeddings, len(missing)) if missing else []
        vector = self._blend(question, rows, computed)
        return self.vector_store.similarity_search_by_vector(vector, k=self.k,
                                                             **self._search_arguments(query))

    async def _aget_relevant_documents(self, query: str, *,
                                       run_manager: AsyncCallbackManagerForRetrieverRun) -> list[Document]:
        """Return the ``k`` documents nearest to the question blended with the session's selections."""
        embeddings = self.vector_store.embeddings
        question = _embedded([await embeddings.aembed_query(query)], embeddings, 1)[0]
        rows = await self.vector_store.db.arun(self._selections_plan()) if self._reads_selections() else []
        missing = [row["selected_text"] for row in rows if row["embedding"] is None]
        computed = (_embedded(await embeddings.aembed_documents(missing), embeddings, len(missing))
                    if missing else [])
        vector = self._blend(question, rows, computed)
        return await self.vector_store.asimilarity_search_by_vector(vector, k=self.k,
                                                                    **self._search_arguments(query))

    def _search_arguments(self, query: str) -> dict[str, Any]:
        # The question text rides along so a store in hybrid or keyword mode can run its keyword leg.
        return {"query_text": query, **self.search_kwargs}

    def _blend(self, question: Vector, rows: Sequence[Mapping[str, Any]],
               computed: Sequence[Vector]) -> list[float]:
        remaining = iter(computed)
        # Rows come newest first, which is the order the recency weights expect.
        selections = [next(remaining) if row["embedding"] is None
                      else check.vector(row["embedding"], "stored selection embedding") for row in rows]
        return blend_query_vector(question, selections, selection_weight=self.selection_weight,
                                  recency_decay=self.recency_decay)


def _count(value: object, what: str, *, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise InvalidInputError(f"{what} must be an integer >= {minimum}, got {value!r}")


def _fraction(value: object, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise InvalidInputError(f"{what} must be a number from 0 to 1, got {value!r}")


__all__ = ["DEFAULT_MAX_AGE", "SelectionAwareRetriever", "arecord_selection", "blend_query_vector",
           "record_selection"]
