"""One search request, checked once, and the one plan choice that answers it.

Every search entry point goes through here: ``SonyVectorStore``'s searches (with scores, relevance scores, MMR
candidates, the retriever), the documented async ``search_similar_embeddings`` and the CLI's
``commands.search``. Each builds a ``SearchRequest`` from its own arguments and runs ``search_plan``; they
differ only in how they name their arguments and shape the rows they get back.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Final

import numpy as np
import numpy.typing as npt

from sony_rag import plans
from sony_rag import validation as check
from sony_rag.errors import InvalidInputError, SchemaNotReadyError
from sony_rag.executor import Plan
from sony_rag.sql.filters import ParsedFilter, parse_filter
from sony_rag.vector_index import MAX_EF_SEARCH, MAX_PROBES, Capabilities

if TYPE_CHECKING:
    from sony_rag.database import Database

# The most rows one search returns (and MMR fetches): HNSW cannot return more than ef_search, at most 1000.
MAX_K: Final = 1000
SEARCH_MODES: Final = ("vector", "keyword", "hybrid")

Row = dict[str, Any]


@dataclass(frozen=True, slots=True)
class SearchRequest:
    """A search, every part checked: build it with ``SearchRequest.of``, which raises InvalidInputError subclasses.

    ``k`` rows are wanted (``fetch_k`` are fetched: more for MMR, whose candidates carry their embedding);
    ``min_similarity`` is a minimum cosine similarity applied in the statement in every mode; ``filter`` is
    parsed once, into what the SQL builders compile.
    """

    vector: npt.NDArray[np.float32]
    k: int
    mode: str = "vector"
    text: str | None = None
    filter: ParsedFilter | None = None
    min_similarity: float | None = None
    probes: int | None = None
    ef_search: int | None = None
    fetch_k: int = 0
    lambda_mult: float | None = None

    @classmethod
    def of(cls, vector: object | Callable[[], object], *, k: object = 4, mode: object = "vector", text: object = None,
           filter: Mapping[str, Any] | ParsedFilter | None = None, source_type: object = None,
           score_threshold: object = None, probes: object = None, ef_search: object = None,
           fetch_k: object = None, lambda_mult: object = None, embedded_by: str | None = None,
           k_name: str = "k", threshold_name: str = "score_threshold",
           vector_name: str = "query embedding") -> SearchRequest:
        """Return the checked request; raises InvalidInputError (or a subclass) naming the bad argument.

        ``embedded_by`` names the embedding model the vector came from (its dimensions are then checked first,
        with a message about the model); ``*_name`` are the caller's names for its arguments, used in messages.
        ``fetch_k`` and ``lambda_mult`` ask for MMR's candidates. ``vector`` may be a function returning it
        (embedding the query text), called only once every other argument passed its check.
        """
        count = _count(k, k_name)
        checked_mode = search_mode(mode)
        checked_text = None
        if checked_mode != "vector":
            if text is None:
                raise InvalidInputError(f"search mode {checked_mode!r} needs the query text (query_text=...)")
            checked_text = check.required_text(text, "query text")
        parsed = parse_filter(filter) if filter else None
        if source_type is not None:
            kind = check.source_type(source_type)
            parsed = (ParsedFilter.column_equals("source_type", kind) if parsed is None
                      else parsed.and_column("source_type", kind))
        threshold = similarity(score_threshold, threshold_name)
        checked_probes = check.search_option(probes, "probes", MAX_PROBES)
        checked_ef = check.search_option(ef_search, "ef_search", MAX_EF_SEARCH)
        fetched = count
        checked_lambda = None
        if fetch_k is not None or lambda_mult is not None:
            fetched = max(count, _count(20 if fetch_k is None else fetch_k, "fetch_k"))
            checked_lambda = _fraction(0.5 if lambda_mult is None else lambda_mult, "lambda_mult")
        if callable(vector):
            vector = vector()
        if embedded_by is not None and hasattr(vector, "__len__"):
            check.dimensions_of(vector, embedded_by)  # type: ignore[arg-type]
        return cls(check.vector(vector, vector_name), count, checked_mode, checked_text, parsed, threshold,
                   checked_probes, checked_ef, fetched, checked_lambda)

    @property
    def with_embedding(self) -> bool:
        """Return True when the rows must carry their embedding (MMR's candidates)."""
        return self.lambda_mult is not None

    @property
    def rows_wanted(self) -> int:
        """Return how many rows the statement returns: ``k``, or MMR's ``fetch_k`` candidates."""
        return max(self.k, self.fetch_k)


def run(db: Database, request: SearchRequest, options: plans.HybridOptions, *,
        documents_only: bool = False) -> list[Row]:
    """Return the rows answering ``request`` on ``db`` (see ``search_plan``); raises SonyRagError subclasses."""
    return db.run(search_plan(request, db.capabilities(), options, documents_only=documents_only))


async def arun(db: Database, request: SearchRequest, options: plans.HybridOptions, *,
               documents_only: bool = False) -> list[Row]:
    """Return the rows answering ``request`` on ``db``, from async code (see ``run``)."""
    return await db.arun(search_plan(request, await db.acapabilities(), options, documents_only=documents_only))


def search_plan(request: SearchRequest, capabilities: Capabilities, options: plans.HybridOptions, *,
                documents_only: bool = False) -> Plan[list[Row]]:
    """Return the plan answering ``request``: rows closest first (vector), fused (hybrid) or by text (keyword).

    Each row carries ``distance`` (cosine); hybrid rows ``rrf``, keyword rows ``word_coverage`` and
    ``text_score``. What the plan learns on the way (a metadata filter's estimated matches, hybrid's common
    words) is kept with ``capabilities``, so the next search of its kind sends one statement.
    ``documents_only``: rows may carry only what ``vectorstore.document_from_row`` reads (vector searches then
    send and parse nothing more). Raises SchemaNotReadyError when pgvector is missing.
    """
    require_pgvector(capabilities)
    k = request.rows_wanted
    if request.mode == "vector":
        return plans.search(request.vector, k, request.filter, capabilities, min_similarity=request.min_similarity,
                            with_embedding=request.with_embedding, probes=request.probes,
                            ef_search=request.ef_search, documents_only=documents_only)
    assert request.text is not None
    if request.mode == "keyword":
        return plans.keyword_search(request.vector, request.text, k, request.filter, options,
                                    min_similarity=request.min_similarity, with_embedding=request.with_embedding)
    return plans.hybrid_search(request.vector, request.text, k, request.filter, capabilities, options,
                               min_similarity=request.min_similarity, with_embedding=request.with_embedding,
                               probes=request.probes, ef_search=request.ef_search)


def require_pgvector(capabilities: Capabilities) -> None:
    """Raise SchemaNotReadyError when the server has no pgvector extension (searches could not even be sent)."""
    if not any(capabilities.pgvector_version):  # (0,) when the extension is missing
        raise SchemaNotReadyError("the pgvector extension and tables are missing: run `sony-rag migrate` first")


def search_mode(value: object, name: str = "search_mode") -> str:
    """Return ``value`` if it is one of SEARCH_MODES; raises InvalidInputError."""
    if not isinstance(value, str) or value not in SEARCH_MODES:
        raise InvalidInputError(f"{name} must be one of {', '.join(SEARCH_MODES)}, got {value!r}")
    return value


def similarity(value: object, name: str) -> float | None:
    """Return ``value`` as a float if it is None or a cosine similarity from -1 to 1; raises InvalidInputError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not -1.0 <= float(value) <= 1.0:
        raise InvalidInputError(f"{name} must be a cosine similarity from -1 to 1, got {value!r}")
    return float(value)


def _count(value: object, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= MAX_K:
        raise InvalidInputError(f"{name} must be an integer from 1 to {MAX_K}, got {value!r}")
    return int(value)


def _fraction(value: object, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0 \
            or math.isnan(float(value)):
        raise InvalidInputError(f"{name} must be a number from 0 to 1, got {value!r}")
    return float(value)


__all__ = ["MAX_K", "SEARCH_MODES", "SearchRequest", "arun", "require_pgvector", "run", "search_mode", "search_plan",
           "similarity"]
