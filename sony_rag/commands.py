"""The library behind each ``sony-rag`` command: one function per verb, returning data (``cli.py`` prints it).

Every function takes an open ``Database`` and raises only ``SonyRagError`` subclasses, so a script can call
these directly: ``commands.search(db, "oak table", embeddings=get_embeddings("fake"))``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from uuid import UUID

from sony_rag import plans, retrieval
from sony_rag import validation as check
from sony_rag.database import Database
from sony_rag.durations import parse_age
from sony_rag.errors import InvalidInputError, SessionNotFoundError
from sony_rag.operations import match_from_row
from sony_rag.retrieval import SearchRequest, require_pgvector, search_mode
from sony_rag.types import EmbeddingMatch

if TYPE_CHECKING:
    # Each command imports what only it needs when it runs: `sony-rag stats` should not wait for LangChain's
    # language-model machinery, nor `search` for the schema check's.
    from langchain_core.embeddings import Embeddings
    from langchain_core.messages import BaseMessage

    from sony_rag.ingest import IngestReport, OnError, Progress
    from sony_rag.schema_check import CheckResult

# -- migrate ---------------------------------------------------------------------------------------------


@dataclass
class MigrateOutcome:
    """What ``migrate`` did: the migrations applied and, with ``test``, each check's result."""

    applied: list[str] = field(default_factory=list)
    checks: list[CheckResult] = field(default_factory=list)

    @property
    def failed(self) -> list[CheckResult]:
        """Return the checks that failed."""
        return [result for result in self.checks if not result.passed]

    def as_dict(self) -> dict[str, Any]:
        """Return the outcome as a JSON-ready dict."""
        return {"applied": self.applied, "checks": [{"name": c.name, "passed": c.passed, "detail": c.detail}
                                                    for c in self.checks], "ok": not self.failed}


def migrate(db: Database, *, test: bool = False, log: Callable[[str], None] = lambda line: None) -> MigrateOutcome:
    """Apply pending migrations (and, with ``test``, check the database); raises MigrationError."""
    from sony_rag.migrate import migrate as apply_migrations
    from sony_rag.schema_check import check_database

    outcome = MigrateOutcome(applied=apply_migrations(db, log=log))
    if test:
        outcome.checks = check_database(db)
    return outcome


# -- ingest ----------------------------------------------------------------------------------------------


def ingest(db: Database, paths: Sequence[str | Path], *, embeddings: Embeddings, source_type: str | None = None,
           on_error: OnError = "stop", progress: Progress | None = None, reembed: bool = False) -> IngestReport:
    """Ingest JSONL, CSV, Markdown and text files (see ``sony_rag.ingest``) and return the report.

    Raises BadRecordError (``on_error="stop"``), InvalidInputError or DatabaseError subclasses.
    """
    from sony_rag.ingest import ingest_paths

    # The command retrains an IVFFlat index that no longer describes the data (the migration's is built on an
    # empty table): a newcomer's first ingest would otherwise leave 100 lists over a few hundred rows.
    return ingest_paths(db, paths, embeddings, source_type=source_type, on_error=on_error, progress=progress,
                        reembed=reembed, rebuild_stale_index=True)


# -- search ----------------------------------------------------------------------------------------------


RANKED_BY = {"vector": "similarity", "keyword": "text", "hybrid": "fused"}


@dataclass(frozen=True)
class SearchHit:
    """One search result: the documented match, its rank, and the score that ranked it.

    ``score`` is what orders the results: the cosine similarity (vector), the fused score (hybrid), or the
    full-text score (keyword, after ``word_coverage``, the share of the query's words the chunk holds). The
    cosine similarity is always ``match["similarity"]``, whichever mode ranked.
    """

    rank: int
    match: EmbeddingMatch
    score: float
    ranked_by: str
    word_coverage: float | None = None

    @property
    def similarity(self) -> float:
        """Return the cosine similarity of the chunk to the query."""
        return float(self.match["similarity"])

    def __getitem__(self, key: str) -> Any:
        """Return the documented match's field ``key`` (``hit["metadata"]``), as before hits had scores."""
        return self.match[key]  # type: ignore[literal-required]

    def as_dict(self) -> dict[str, Any]:
        """Return the hit as a JSON-ready dict (the ranking score and the similarity side by side)."""
        match = self.match
        metadata = match["metadata"] if isinstance(match["metadata"], dict) else {}
        hit: dict[str, Any] = {"rank": self.rank, "score": round(self.score, 6), "ranked_by": self.ranked_by,
                               "similarity": round(self.similarity, 6)}
        if self.word_coverage is not None:
            hit["word_coverage"] = round(self.word_coverage, 6)
        return {**hit, "source_type": match["source_type"], "source_id": match["source_id"],
                "title": metadata.get("title"), "content": match["content_chunk"], "metadata": match["metadata"],
                "embedding_id": match["embedding_id"]}


def search(db: Database, query: str, *, embeddings: Embeddings, source_type: str | None = None, k: int = 5,
           threshold: float | None = None, mode: str = "hybrid") -> list[SearchHit]:
    """Return up to ``k`` hits for ``query``, best first: by cosine similarity, full text, or both fused.

    ``mode`` defaults to hybrid, the best of the three on benchmarks/relevance.py.

    Raises InvalidInputError for an empty query, a bad ``k``, threshold or source type, and
    SchemaNotReadyError before ``migrate``.
    """
    text = check.required_text(query, "query")
    if not text.strip():
        raise InvalidInputError("the query is empty")
    capabilities = db.capabilities()

    def embed() -> list[float]:
        # Called once every other argument passed its check and the schema is known to be there: loading a
        # model takes a while, and would be wasted on a call that fails anyway.
        require_pgvector(capabilities)
        return embeddings.embed_query(text)

    request = SearchRequest.of(embed, k=k, mode=search_mode(mode, "mode"), text=text, source_type=source_type,
                               score_threshold=threshold, threshold_name="threshold",
                               embedded_by=type(embeddings).__name__)
    rows = retrieval.run(db, request, plans.HybridOptions.from_settings(db.settings))
    return [_hit(rank, row, request.mode) for rank, row in enumerate(rows, start=1)]


def _hit(rank: int, row: dict[str, Any], mode: str) -> SearchHit:
    match = match_from_row(row)
    if mode == "hybrid":
        score = float(row["rrf"])
    elif mode == "keyword":
        score = float(row["text_score"])
    else:
        score = float(match["similarity"])
    coverage = row.get("word_coverage")
    return SearchHit(rank=rank, match=match, score=score, ranked_by=RANKED_BY[mode],
                     word_coverage=None if coverage is None else float(coverage))


def model_mismatch(matches: Sequence[EmbeddingMatch | SearchHit], embeddings: Embeddings) -> str | None:
    """Return a warning when the matches were embedded by another model than ``embeddings`` (else None)."""
    from sony_rag.embeddings import embeddings_name

    rows = [item.match if isinstance(item, SearchHit) else item for item in matches]
    used = embeddings_name(embeddings)
    stored = sorted({str(m["metadata"]["embedding_model"]) for m in rows
                     if isinstance(m["metadata"], dict) and m["metadata"].get("embedding_model")} - {used})
    if not stored:
        return None
    return (f"these chunks were embedded with {', '.join(stored)} but the query with {used}: similarities "
            "are meaningless; search with the same embeddings or run `sony-rag ingest` again")


# -- sessions --------------------------------------------------------------------------------------------


def list_sessions(db: Database, *, limit: int = 20) -> list[dict[str, Any]]:
    """Return the most recently active sessions with their message counts, newest first."""
    if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
        raise InvalidInputError(f"limit must be a positive integer, got {limit!r}")
    return db.run(plans.recent_sessions(limit))


@dataclass
class SessionTranscript:
    """A session's row and its messages, oldest first, each described for reading."""

    session: dict[str, Any]
    messages: list[dict[str, Any]]

    def as_dict(self) -> dict[str, Any]:
        """Return the transcript as a JSON-ready dict."""
        return {"session": self.session, "messages": self.messages}


def show_session(db: Database, session_id: str, *, limit: int | None = None) -> SessionTranscript:
    """Return a session and its messages (the newest ``limit``, all when None); raises SessionNotFoundError."""
    from sony_rag.message_codec import decode_message

    wanted = check.as_uuid(session_id, "session id")
    session = db.run(plans.get_session(wanted))
    if session is None:
        raise SessionNotFoundError(f"chat session {wanted} does not exist")
    rows = db.run(plans.history(wanted, limit))
    messages = []
    for row in rows:
        message = decode_message(row["role"], row["content"], row["metadata"])
        messages.append({"role": row["role"], "type": message.type, "created_at": row["created_at"],
                         "page_context": row["page_context"], "text": describe_message(message)})
    return SessionTranscript(session=session, messages=messages)


def describe_message(message: BaseMessage) -> str:
    """Return a one-paragraph reading of a stored message (tool calls and results summarised)."""
    from langchain_core.messages import AIMessage, ToolMessage

    if isinstance(message, AIMessage) and message.tool_calls:
        calls = ", ".join(f"{call['name']}({', '.join(f'{k}={v!r}' for k, v in call['args'].items())})"
                          for call in message.tool_calls)
        return (message.text + "\n" if message.text else "") + f"[calls {calls}]"
    if isinstance(message, ToolMessage):
        found = len(message.artifact) if isinstance(message.artifact, list) else None
        return f"[{message.name or 'tool'} returned {found if found is not None else 'a'} result(s)]"
    return message.text


# -- prune -----------------------------------------------------------------------------------------------


def prune_preview(db: Database, older_than: str | timedelta) -> list[dict[str, Any]]:
    """Return the sessions ``prune`` would delete (least recently active first) with message and selection counts.

    Raises InvalidInputError for an age that is not a positive ``90min``, ``12h``, ``30d``, ``2w``...
    """
    return db.run(plans.prune_candidates(parse_age(older_than)))


def prune(db: Database, older_than: str | timedelta, *, only: Sequence[UUID] | None = None) -> int:
    """Delete sessions idle for longer than ``older_than`` ("90min", "12h", "30d", "2w"); return how many.

    With ``only`` (the ids a preview listed), no other session is deleted, nor one active again since.
    Raises InvalidInputError for a bad age.
    """
    age = parse_age(older_than)
    if only is not None:
        return db.run(plans.prune_listed_sessions(age, list(only))) if only else 0
    return db.run(plans.prune_sessions(age))


# -- stats and index management --------------------------------------------------------------------------


def stats(db: Database) -> dict[str, Any]:
    """Return rows per table and source type, index sizes and scans, the vector index and pgvector version."""
    from sony_rag.indexes import vector_index_stats

    return vector_index_stats(db)


def rebuild_index(db: Database, *, lists: str = "auto", hnsw: bool = False,
                  concurrently: bool = False) -> dict[str, Any]:
    """Rebuild the vector index (IVFFlat with ``lists`` "auto" or a number, or HNSW); return what was built.

    Raises InvalidInputError for a bad ``lists`` and IndexBuildError when the server cannot build it.
    """
    from sony_rag.indexes import rebuild_vector_index

    if hnsw and lists != "auto":
        raise InvalidInputError("--lists applies to IVFFlat only; leave it out with --hnsw")
    list_count: int | Literal["auto"] = "auto"
    if lists != "auto":
        try:
            list_count = int(lists)
        except ValueError:
            raise InvalidInputError(f"--lists must be 'auto' or a positive integer, got {lists!r}") from None
    report = rebuild_vector_index(db, method="hnsw" if hnsw else "ivfflat", lists=list_count,
                                  concurrently=concurrently)
    return report.as_dict()


__all__ = ["MigrateOutcome", "SearchHit", "SessionTranscript", "describe_message", "ingest",
           "list_sessions", "migrate", "model_mismatch", "prune", "prune_preview", "rebuild_index",
           "search", "show_session", "stats"]
