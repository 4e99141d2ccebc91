"""``SonyVectorStore``: a LangChain VectorStore on the documented ``document_embeddings`` table."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, ClassVar, cast
from uuid import UUID

import numpy as np
import numpy.typing as npt
from langchain_core.documents import Document
from langchain_core.embeddings import Embeddings
from langchain_core.vectorstores import VectorStore
from langchain_core.vectorstores.utils import maximal_marginal_relevance

from sony_rag import plans, retrieval
from sony_rag import validation as check
from sony_rag.database import Database
from sony_rag.errors import InvalidEmbeddingError, InvalidIdentifierError, InvalidInputError
from sony_rag.executor import Plan
from sony_rag.json_values import checked_jsonb
from sony_rag.langchain_documents import document
from sony_rag.operations import get_db
from sony_rag.retrieval import SearchRequest
from sony_rag.sql.filters import validate_filter
from sony_rag.types import EMBEDDING_DIMENSIONS

# UUIDv5 namespace for LangChain ids that are not UUIDs ("1", "foo"): the same id always maps to one row.
DOCUMENT_ID_NAMESPACE = uuid.UUID("6f1c3c1e-9a51-5d4e-9d55-736f6e79722a")

Row = dict[str, Any]


class SonyVectorStore(VectorStore):
    """LangChain vector store over ``document_embeddings`` (pgvector cosine search, exact counts, filters).

    Setup:
        ``pip install sony-rag`` and ``sony-rag migrate`` (or ``sony_rag.migrate.migrate(db)``).

    Instantiate:
        .. code-block:: python

            from sony_rag import Database, SonyVectorStore
            store = SonyVectorStore(embeddings, Database())  # DATABASE_URL, else the embedded server

    Add:
        ``store.add_texts(["Oak table"], metadatas=[{"source_type": "product", "price": 449}], ids=["sku-1"])``
        A document's ``source_type`` and ``source_id`` metadata fill those columns (else the store's defaults).
        Adding an existing id replaces it; a batch is one transaction written through binary COPY.

    Delete:
        ``store.delete(["sku-1"])`` or ``store.delete(filter={"source_type": "faq"})``. Given both, a row is
        deleted only when it has one of the ids AND matches the filter (as langchain-postgres).

    Search:
        ``store.similarity_search("oak table", k=4)``; ``similarity_search_with_score`` returns cosine
        *distance* (lower is closer, as langchain-postgres); ``similarity_search_with_relevance_scores``
        returns cosine *similarity* (1 - distance), as ``search_similar_embeddings``.

    Search with filter:
        ``store.similarity_search("oak", filter={"source_type": "product", "price": {"$lt": 500}})`` with the
        langchain-postgres grammar ($eq $ne $lt $lte $gt $gte $in $nin $between $like $ilike $exists $and
        $or $not). Whenever ``k`` rows match, ``k`` are returned, whatever the index or filter.

    Hybrid search:
        ``store.similarity_search("SX-1123", k=5, hybrid=True)`` (or ``SonyVectorStore(..., hybrid=True)``, or
        ``as_retriever(search_kwargs={"k": 5, "hybrid": True})``) fuses the vector ranking with Postgres
        full-text search by reciprocal rank fusion, in one statement; ``search_mode="keyword"`` runs the
        full-text leg alone. Order is the fused order; scores stay cosine distance / similarity.

    Async:
        Every method has a native async twin (``aadd_texts``, ``asimilarity_search``, ...).

    Use as Retriever:
        ``store.as_retriever(search_kwargs={"k": 5, "filter": {"source_type": "policy"}})``.
    """

    _ID_KEYS: ClassVar[tuple[str, ...]] = ("source_type", "source_id")

    def __init__(self, embeddings: Embeddings, db: Database | None = None, *,
                 source_type: str = "page_content", source_id: str | None = None,
                 probes: int | None = None, ef_search: int | None = None, hybrid: bool = False,
                 hybrid_options: plans.HybridOptions | None = None) -> None:
        """Create a store; raises InvalidSourceTypeError or InvalidInputError (probes, ef_search) for bad defaults.

        ``hybrid=True`` makes text searches fuse vector and full-text search by default (per call:
        ``hybrid=`` or ``search_mode="vector"|"keyword"|"hybrid"``); ``hybrid_options`` tunes the fusion.
        """
        self._embeddings = embeddings
        self._db = get_db(db)
        self.search_mode = "hybrid" if hybrid else "vector"
        self.hybrid_options = hybrid_options or plans.HybridOptions.from_settings(self._db.settings)
        self.default_source_type = check.source_type(source_type)
        self.default_source_id = check.text(source_id, "source_id", optional=True)
        self.probes = check.search_option(probes, "probes", plans.MAX_PROBES)
        self.ef_search = check.search_option(ef_search, "ef_search", plans.MAX_EF_SEARCH)

    @property
    def embeddings(self) -> Embeddings:
        """Return the embeddings model the store embeds texts and queries with."""
        return self._embeddings

    @property
    def db(self) -> Database:
        """Return the Database the store reads and writes."""
        return self._db

    # -- adding --------------------------------------------------------------------------------------

    def add_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                  ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Embed and store texts (upserting by id) and return their ids; raises InvalidInputError subclasses."""
        texts = list(texts)
        vectors = self._checked_embeddings(self._embeddings.embed_documents(texts), len(texts))
        return self.add_embeddings(texts, vectors, metadatas, ids=ids, **kwargs)

    async def aadd_texts(self, texts: Iterable[str], metadatas: list[dict[str, Any]] | None = None, *,
                         ids: list[str] | None = None, **kwargs: Any) -> list[str]:
        """Embed and store texts (upserting by id) and return their ids; raises InvalidInputError subclasses."""
        texts = list(texts)
        vectors = self._checked_embeddings(await self._embeddings.aembed_documents(texts), len(texts))
        return await self.aadd_embeddings(texts, vectors, metadatas, ids=ids, **kwargs)

    def add_embeddings(self, texts: Iterable[str], embeddings: Iterable[Sequence[float] | npt.NDArray[Any]],
                       metadatas: list[dict[str, Any]] | None = None, *, ids: Sequence[str | None] | None = None,
                       **kwargs: Any) -> list[str]:
        """Store texts with precomputed embeddings (upserting by id) and return their ids."""
        write_plan, returned = self._write_plan(texts, embeddings, metadatas, ids)
        if write_plan is not None:
            self._db.run(write_plan)
        return returned

    async def aadd_embeddings(self, texts: Iterable[str],
                              embeddings: Iterable[Sequence[float] | npt.NDArray[Any]],
                              metadatas: list[dict[str, Any]] | None = None, *,
                              ids: Sequence[str | None] | None = None, **kwargs: Any) -> list[str]:
        """Store texts with precomputed embeddings (upserting by id) and return their ids."""
        write_plan, returned = self._write_plan(texts, embeddings, metadatas, ids)
        if write_plan is not None:
            await self._db.arun(write_plan)
        return returned

    def _write_plan(self, texts: Iterable[str], embeddings: Iterable[Any],
                    metadatas: Sequence[Mapping[str, Any] | None] | None,
                    ids: Sequence[str | None] | None) -> tuple[Plan[int] | None, list[str]]:
        texts = list(texts)
        vectors = list(embeddings)
        count = len(texts)
        if len(vectors) != count:
            raise InvalidInputError(f"got {count} texts but {len(vectors)} embeddings")
        if metadatas is not None and len(metadatas) != count:
            raise InvalidInputError(f"got {count} texts but {len(metadatas)} metadatas")
        if ids is not None and len(ids) != count:
            raise InvalidInputError(f"got {count} texts but {len(ids)} ids")
        resolved = [resolve_id(ids[index] if ids is not None else None) for index in range(count)]
        if not resolved:
            return None, []
        last = {embedding_id: index for index, (embedding_id, _, _) in enumerate(resolved)}
        vectors_checked = check.vectors_pass_in_bulk(vectors)
        # A repeated id in one batch: the last one wins. Rows are checked as they stream into the COPY (float32
        # arrays' vectors all at once above, when they pass), so the checks overlap the server's work; a bad row
        # aborts the COPY and its transaction.
        rows = (self._row(index, resolved[index], texts[index], vectors[index],
                          metadatas[index] if metadatas is not None else None, vector_checked=vectors_checked)
                for index in sorted(last.values()))
        any_given_id = ids is not None and any(given is not None for given in ids)
        # Fresh random ids cannot collide, so they skip the staging table and go straight in.
        write_plan = plans.upsert_embeddings(rows) if any_given_id else plans.insert_embeddings(rows)
        return write_plan, [public_id for _, _, public_id in resolved]

    def _row(self, index: int, resolved: tuple[UUID, str | None, str], text: object, vector: object,
             metadata: Mapping[str, Any] | None, *, vector_checked: bool) -> plans.EmbeddingRow:
        checked = check.metadata(metadata, f"metadatas[{index}]")
        return (
            resolved[0],
            check.source_type(checked.get("source_type", self.default_source_type)),
            _source_id(checked.get("source_id", self.default_source_id), index),
            check.required_text(text, f"texts[{index}]"),
            cast("npt.NDArray[np.float32]", vector) if vector_checked else check.vector(vector, f"embeddings[{index}]"),
            checked_jsonb(checked),
            resolved[1],
        )

    def _checked_embeddings(self, vectors: list[list[float]], expected: int) -> list[list[float]]:
        if len(vectors) != expected:
            raise InvalidEmbeddingError(
                f"{type(self._embeddings).__name__} returned {len(vectors)} vectors for {expected} texts")
        for vector in vectors[:1]:
            check.dimensions_of(vector, type(self._embeddings).__name__)
        return vectors

    # -- searching -----------------------------------------------------------------------------------

    def _request(self, vector: object, k: int, filter: Mapping[str, Any] | None, kwargs: Mapping[str, Any], *,
                 embedded: bool = False, fetch_k: int | None = None,
                 lambda_mult: float | None = None) -> SearchRequest:
        """Return the checked request for a search with the store's defaults; raises InvalidInputError subclasses."""
        mode = kwargs.get("search_mode")
        if mode is None:
            hybrid = kwargs.get("hybrid")
            mode = self.search_mode if hybrid is None else ("hybrid" if hybrid else "vector")
        return SearchRequest.of(
            vector, k=k, mode=mode, text=kwargs.get("query_text"), filter=filter,
            score_threshold=kwargs.get("score_threshold"), probes=kwargs.get("probes", self.probes),
            ef_search=kwargs.get("ef_search", self.ef_search), fetch_k=fetch_k, lambda_mult=lambda_mult,
            embedded_by=type(self._embeddings).__name__ if embedded else None)

    def _rows(self, request: SearchRequest) -> list[Row]:
        return retrieval.run(self._db, request, self.hybrid_options, documents_only=True)

    async def _arows(self, request: SearchRequest) -> list[Row]:
        return await retrieval.arun(self._db, request, self.hybrid_options, documents_only=True)

    def similarity_search(self, query: str, k: int = 4, filter: dict[str, Any] | None = None,
                          **kwargs: Any) -> list[Document]:
        """Return the ``k`` documents most similar to ``query`` that match ``filter``."""
        return [doc for doc, _ in self.similarity_search_with_score(query, k, filter, **kwargs)]

    async def asimilarity_search(self, query: str, k: int = 4, filter: dict[str, Any] | None = None,
                                 **kwargs: Any) -> list[Document]:
        """Return the ``k`` documents most similar to ``query`` that match ``filter``."""
        return [doc for doc, _ in await self.asimilarity_search_with_score(query, k, filter, **kwargs)]

    def similarity_search_with_score(self, query: str, k: int = 4, filter: dict[str, Any] | None = None,
                                     **kwargs: Any) -> list[tuple[Document, float]]:
        """Return ``(document, cosine distance)`` pairs, closest first."""
        kwargs.setdefault("query_text", query)
        request = self._request(self._embeddings.embed_query(query), k, filter, kwargs, embedded=True)
        return _scored(self._rows(request))

    async def asimilarity_search_with_score(self, query: str, k: int = 4, filter: dict[str, Any] | None = None,
                                            **kwargs: Any) -> list[tuple[Document, float]]:
        """Return ``(document, cosine distance)`` pairs, closest first."""
        kwargs.setdefault("query_text", query)
        request = self._request(await self._embeddings.aembed_query(query), k, filter, kwargs, embedded=True)
        return _scored(await self._arows(request))

    def similarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                    filter: dict[str, Any] | None = None, **kwargs: Any) -> list[Document]:
        """Return the ``k`` documents nearest to ``embedding`` that match ``filter``."""
        return [doc for doc, _ in self.similarity_search_with_score_by_vector(embedding, k, filter, **kwargs)]

    async def asimilarity_search_by_vector(self, embedding: list[float], k: int = 4,
                                           filter: dict[str, Any] | None = None, **kwargs: Any) -> list[Document]:
        """Return the ``k`` documents nearest to ``embedding`` that match ``filter``."""
        pairs = await self.asimilarity_search_with_score_by_vector(embedding, k, filter, **kwargs)
        return [doc for doc, _ in pairs]

    def similarity_search_with_score_by_vector(self, embedding: Sequence[float] | npt.NDArray[Any], k: int = 4,
                                               filter: dict[str, Any] | None = None,
                                               **kwargs: Any) -> list[tuple[Document, float]]:
        """Return ``(document, cosine distance)`` pairs nearest to ``embedding``, closest first."""
        return _scored(self._rows(self._request(embedding, k, filter, kwargs)))

    async def asimilarity_search_with_score_by_vector(self, embedding: Sequence[float] | npt.NDArray[Any],
                                                      k: int = 4, filter: dict[str, Any] | None = None,
                                                      **kwargs: Any) -> list[tuple[Document, float]]:
        """Return ``(document, cosine distance)`` pairs nearest to ``embedding``, closest first."""
        return _scored(await self._arows(self._request(embedding, k, filter, kwargs)))

    def _select_relevance_score_fn(self) -> Callable[[float], float]:
        return _similarity_from_distance

    # langchain-core's similarity_search_with_relevance_scores pops score_threshold and filters the k rows it
    # got: k rows that an approximate index found close, partly below the threshold, would hide rows above it
    # that the index missed. Overridden so the threshold goes into the statement (and so into its exact
    # fallback); as_retriever(search_type="similarity_score_threshold") calls these.

    def similarity_search_with_relevance_scores(self, query: str, k: int = 4,
                                                **kwargs: Any) -> list[tuple[Document, float]]:
        """Return ``(document, cosine similarity)`` pairs, best first; ``score_threshold`` is a minimum similarity.

        Whenever ``k`` rows at or above ``score_threshold`` exist (and match ``filter``), ``k`` are returned.
        """
        pairs = self.similarity_search_with_score(query, k, **kwargs)
        return [(doc, _similarity_from_distance(distance)) for doc, distance in pairs]

    async def asimilarity_search_with_relevance_scores(self, query: str, k: int = 4,
                                                       **kwargs: Any) -> list[tuple[Document, float]]:
        """Return ``(document, cosine similarity)`` pairs, best first; ``score_threshold`` is a minimum similarity.

        Whenever ``k`` rows at or above ``score_threshold`` exist (and match ``filter``), ``k`` are returned.
        """
        pairs = await self.asimilarity_search_with_score(query, k, **kwargs)
        return [(doc, _similarity_from_distance(distance)) for doc, distance in pairs]

    def _similarity_search_with_relevance_scores(self, query: str, k: int = 4,
                                                 **kwargs: Any) -> list[tuple[Document, float]]:
        return self.similarity_search_with_relevance_scores(query, k, **kwargs)

    async def _asimilarity_search_with_relevance_scores(self, query: str, k: int = 4,
                                                        **kwargs: Any) -> list[tuple[Document, float]]:
        return await self.asimilarity_search_with_relevance_scores(query, k, **kwargs)

    # -- maximal marginal relevance -------------------------------------------------------------------

    def max_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                      filter: dict[str, Any] | None = None, **kwargs: Any) -> list[Document]:
        """Return ``k`` documents chosen for relevance to ``query`` and diversity among themselves."""
        kwargs.setdefault("query_text", query)
        request = self._request(self._embeddings.embed_query(query), k, filter, kwargs, embedded=True,
                                fetch_k=fetch_k, lambda_mult=lambda_mult)
        return _mmr_select(request, self._rows(request))

    async def amax_marginal_relevance_search(self, query: str, k: int = 4, fetch_k: int = 20,
                                             lambda_mult: float = 0.5, filter: dict[str, Any] | None = None,
                                             **kwargs: Any) -> list[Document]:
        """Return ``k`` documents chosen for relevance to ``query`` and diversity among themselves."""
        kwargs.setdefault("query_text", query)
        request = self._request(await self._embeddings.aembed_query(query), k, filter, kwargs, embedded=True,
                                fetch_k=fetch_k, lambda_mult=lambda_mult)
        return _mmr_select(request, await self._arows(request))

    def max_marginal_relevance_search_by_vector(self, embedding: Sequence[float] | npt.NDArray[Any], k: int = 4,
                                                fetch_k: int = 20, lambda_mult: float = 0.5,
                                                filter: dict[str, Any] | None = None,
                                                **kwargs: Any) -> list[Document]:
        """Return ``k`` diverse documents among the ``fetch_k`` nearest to ``embedding``."""
        request = self._request(embedding, k, filter, kwargs, fetch_k=fetch_k, lambda_mult=lambda_mult)
        return _mmr_select(request, self._rows(request))

    async def amax_marginal_relevance_search_by_vector(self, embedding: Sequence[float] | npt.NDArray[Any],
                                                       k: int = 4, fetch_k: int = 20, lambda_mult: float = 0.5,
                                                       filter: dict[str, Any] | None = None,
                                                       **kwargs: Any) -> list[Document]:
        """Return ``k`` diverse documents among the ``fetch_k`` nearest to ``embedding``."""
        request = self._request(embedding, k, filter, kwargs, fetch_k=fetch_k, lambda_mult=lambda_mult)
        return _mmr_select(request, await self._arows(request))

    # -- reading and deleting by id -------------------------------------------------------------------

    def get_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Return the documents with these ids, in the order given, skipping ids that do not exist."""
        mapped = [resolve_id(i)[0] for i in ids]
        return _in_order(mapped, self._db.run(plans.get_embeddings_by_ids(mapped)))

    async def aget_by_ids(self, ids: Sequence[str], /) -> list[Document]:
        """Return the documents with these ids, in the order given, skipping ids that do not exist."""
        mapped = [resolve_id(i)[0] for i in ids]
        return _in_order(mapped, await self._db.arun(plans.get_embeddings_by_ids(mapped)))

    def delete(self, ids: list[str] | None = None, filter: dict[str, Any] | None = None,
               **kwargs: Any) -> bool:
        """Delete the rows with these ids (missing ones ignored) AND matching ``filter``; return True.

        Raises InvalidInputError when neither is given (nothing is deleted) or either is malformed.
        """
        self._db.run(self._delete_plan(ids, filter))
        return True

    async def adelete(self, ids: list[str] | None = None, filter: dict[str, Any] | None = None,
                      **kwargs: Any) -> bool:
        """Delete the rows with these ids (missing ones ignored) AND matching ``filter``; return True.

        Raises InvalidInputError when neither is given (nothing is deleted) or either is malformed.
        """
        await self._db.arun(self._delete_plan(ids, filter))
        return True

    def _delete_plan(self, ids: list[str] | None, filter: Mapping[str, Any] | None) -> Plan[int]:
        if ids is None and not filter:
            raise InvalidInputError("delete needs ids or a non-empty filter (refusing to delete everything)")
        if filter:
            validate_filter(filter)
        mapped = None if ids is None else [resolve_id(i)[0] for i in ids]
        return plans.delete_embeddings(ids=mapped, filter=filter or None)

    # -- construction ---------------------------------------------------------------------------------

    @classmethod
    def from_texts(cls, texts: list[str], embedding: Embeddings, metadatas: list[dict[str, Any]] | None = None,
                   *, ids: list[str] | None = None, db: Database | None = None,
                   **kwargs: Any) -> SonyVectorStore:
        """Return a store on ``db`` (or the default Database) after adding ``texts``."""
        store = cls(embedding, db, **kwargs)
        store.add_texts(texts, metadatas, ids=list(ids) if ids is not None else None)
        return store

    @classmethod
    async def afrom_texts(cls, texts: list[str], embedding: Embeddings,
                          metadatas: list[dict[str, Any]] | None = None, *, ids: list[str] | None = None,
                          db: Database | None = None, **kwargs: Any) -> SonyVectorStore:
        """Return a store on ``db`` (or the default Database) after adding ``texts``."""
        store = cls(embedding, db, **kwargs)
        await store.aadd_texts(texts, metadatas, ids=list(ids) if ids is not None else None)
        return store


def resolve_id(given: object) -> tuple[UUID, str | None, str]:
    """Return ``(embedding_id, document_id column, id shown to LangChain)`` for a document id (None: a new one)."""
    if given is None:
        new = uuid.uuid4()
        return new, None, str(new)
    if not isinstance(given, str) or not given:
        raise InvalidIdentifierError(f"document ids must be non-empty strings, got {given!r}")
    check.text(given, "document id")
    try:
        parsed = UUID(given)
    except ValueError:
        parsed = None
    if parsed is not None and str(parsed) == given:
        return parsed, None, given
    return uuid.uuid5(DOCUMENT_ID_NAMESPACE, given), given, given


def document_from_row(row: Mapping[str, Any]) -> Document:
    """Return the LangChain Document for a document_embeddings row."""
    return document(row["document_id"] or str(row["embedding_id"]), row["content_chunk"], row["metadata"])


def _source_id(value: object, index: int) -> str | None:
    if value is None or isinstance(value, str):
        return check.text(value, f"metadatas[{index}].source_id", optional=True)
    if isinstance(value, int | float) and not isinstance(value, bool):
        return str(value)
    raise InvalidInputError(f"metadatas[{index}].source_id must be a string or number, got {type(value).__name__}")


def _similarity_from_distance(distance: float) -> float:
    return 1.0 - distance


def _in_order(ids: Sequence[UUID], rows: list[Row]) -> list[Document]:
    by_id = {row["embedding_id"]: row for row in rows}
    seen: set[UUID] = set()
    documents = []
    for embedding_id in ids:
        if embedding_id in by_id and embedding_id not in seen:
            seen.add(embedding_id)
            documents.append(document_from_row(by_id[embedding_id]))
    return documents


def _as_array(vector: Any) -> npt.NDArray[np.float32]:
    return np.asarray(vector.to_numpy() if hasattr(vector, "to_numpy") else vector, dtype=np.float32)


def _scored(rows: list[Row]) -> list[tuple[Document, float]]:
    return [(document_from_row(row), float(row["distance"])) for row in rows]


def _mmr_select(request: SearchRequest, rows: list[Row]) -> list[Document]:
    if not rows:
        return []
    assert request.lambda_mult is not None
    candidates = [_as_array(row["embedding"]) for row in rows]
    chosen = maximal_marginal_relevance(request.vector, cast(list[list[float]], candidates),
                                        lambda_mult=request.lambda_mult, k=min(request.k, len(rows)))
    return [document_from_row(rows[index]) for index in chosen]


__all__ = ["DOCUMENT_ID_NAMESPACE", "EMBEDDING_DIMENSIONS", "SonyVectorStore", "document_from_row", "resolve_id"]
