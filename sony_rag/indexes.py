"""Rebuilding the vector index on document_embeddings, and the statistics ``sony-rag stats`` prints.

A rebuild sizes the index from the rows present (IVFFlat ``lists`` = rows/1000 up to 1M rows, sqrt(rows)
beyond), checks the memory pgvector's k-means will ask for against ``maintenance_work_mem`` (raising the
setting for the build alone when ``max_memory_mb`` allows, else raising IndexBuildError saying how much is
needed), builds the new index under a temporary name and swaps it in, so ``idx_document_embeddings_vector``
always exists, then runs ``ANALYZE``. With ``concurrently=True`` the build uses ``CREATE INDEX
CONCURRENTLY`` on a dedicated autocommit connection, so writes continue during the build.

The steps are written once (``_rebuild_steps``), as one plan: in one transaction (``db.run`` / ``db.arun``),
or, for concurrent builds, made with ``transactional=False`` and driven statement by statement by the
executor on a connection of its own (its settings are session settings there).
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Final, Literal

import psycopg
from psycopg import errors as pg_errors

from sony_rag.database import Database
from sony_rag.errors import (
    DatabaseUnavailableError,
    IndexBuildError,
    InvalidInputError,
    SonyRagError,
    translate_database_error,
)
from sony_rag.executor import Atomic, Plan, PlanGenerator, SetLocal, adrive, drive, execute, fetch, plan
from sony_rag.sql import Query
from sony_rag.sql import documents as document_sql
from sony_rag.sql import indexes as index_sql
from sony_rag.vector_index import (
    DEFAULT_EF_SEARCH,
    REBUILD_COMMAND,
    auto_lists,
    default_probes,
    hnsw_build_memory,
    index_problems,
    ivfflat_build_memory,
    ivfflat_is_stale,
    parse_version,
    trained_comment,
    vector_index_from_row,
)

logger = logging.getLogger("sony_rag")

VECTOR_INDEX: Final = index_sql.VECTOR_INDEX
DEFAULT_MAX_MEMORY_MB: Final = 1024
_MIB: Final = 1024 * 1024


@dataclass(frozen=True)
class IndexReport:
    """What a rebuild did: the index built, the rows it was trained on, the memory and time it took."""

    index_name: str
    method: str
    lists: int | None
    m: int | None
    ef_construction: int | None
    rows: int
    concurrently: bool
    memory_required_bytes: int
    maintenance_work_mem_bytes: int
    seconds: float
    size_bytes: int
    default_probes: int | None
    default_ef_search: int | None
    notes: tuple[str, ...] = ()

    def as_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return {name: (list(value) if isinstance(value, tuple) else value)
                for name, value in self.__dict__.items()}


def _ceil_mb(size: int) -> int:
    return -(-size // _MIB)


# -- the request --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Request:
    method: Literal["ivfflat", "hnsw"]
    lists: int | None  # None: from the row count
    m: int
    ef_construction: int
    concurrently: bool
    max_memory_mb: int
    pooled: bool  # a transaction pooler: session settings would not stay with this build


@dataclass
class _Outcome:
    rows: int = 0
    lists: int | None = None
    memory_required: int = 0
    maintenance_work_mem: int = 0
    pgvector_version: tuple[int, ...] = (0,)
    size_bytes: int = 0
    notes: list[str] = field(default_factory=list)


def _int_in(value: object, name: str, bounds: tuple[int, int]) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise InvalidInputError(f"{name} must be an integer in [{bounds[0]}, {bounds[1]}], got {value!r}")
    return value


def _request(db: Database, method: object, lists: object, m: object, ef_construction: object,
             concurrently: object, max_memory_mb: object) -> _Request:
    if method not in ("ivfflat", "hnsw"):
        raise InvalidInputError(f"method must be 'ivfflat' or 'hnsw', got {method!r}")
    if lists != "auto" and method == "hnsw":
        raise InvalidInputError("lists applies to ivfflat only; hnsw takes m and ef_construction")
    checked_lists = None if lists == "auto" else _int_in(lists, "lists", index_sql.LISTS_RANGE)
    checked_m = _int_in(m, "m", index_sql.M_RANGE)
    checked_ef = _int_in(ef_construction, "ef_construction", index_sql.EF_CONSTRUCTION_RANGE)
    if method == "hnsw" and checked_ef < 2 * checked_m:
        raise InvalidInputError(f"ef_construction must be at least 2 * m ({2 * checked_m}), got {checked_ef}")
    if not isinstance(concurrently, bool):
        raise InvalidInputError(f"concurrently must be True or False, got {concurrently!r}")
    memory = _int_in(max_memory_mb, "max_memory_mb", (1, 2**31 // 1024))
    return _Request(method, checked_lists, checked_m, checked_ef, concurrently, memory,  # type: ignore[arg-type]
                    pooled=db.transaction_pooler)


def _memory_settings(request: _Request, outcome: _Outcome, lists: int | None) -> dict[str, str]:
    """Decide maintenance_work_mem for the build; raises IndexBuildError when k-means cannot have enough."""
    current = outcome.maintenance_work_mem
    if request.method == "ivfflat":
        assert lists is not None
        needed = ivfflat_build_memory(outcome.rows, lists, pgvector_version=outcome.pgvector_version)
    else:
        needed = hnsw_build_memory(outcome.rows, request.m)
    outcome.memory_required = needed
    if needed <= current:
        return {}
    needed_mb, current_mb = _ceil_mb(needed), current // _MIB
    if request.concurrently and request.pooled:
        if request.method == "ivfflat":
            raise IndexBuildError(
                f"IVFFlat k-means with lists={lists} on {outcome.rows} rows needs about {needed_mb} MB of "
                f"maintenance_work_mem and the server gives {current_mb} MB; behind a transaction pooler a "
                "concurrent build cannot raise it: connect to the direct (non-pooled) endpoint, or run "
                f"ALTER ROLE ... SET maintenance_work_mem = '{needed_mb}MB', or pass fewer lists"
            )
        outcome.notes.append(f"the HNSW graph needs about {needed_mb} MB but maintenance_work_mem is "
                             f"{current_mb} MB behind a pooler: the build spills to disk and is slower")
        return {}
    if needed_mb > request.max_memory_mb:
        if request.method == "ivfflat":
            raise IndexBuildError(
                f"IVFFlat k-means with lists={lists} on {outcome.rows} rows needs about {needed_mb} MB of "
                f"maintenance_work_mem; the server gives {current_mb} MB and max_memory_mb="
                f"{request.max_memory_mb} forbids raising it that far: pass max_memory_mb={needed_mb} (or "
                "more) if the server has the memory, or fewer lists"
            )
        outcome.notes.append(f"the HNSW graph needs about {needed_mb} MB, more than max_memory_mb="
                             f"{request.max_memory_mb}: the build spills to disk and is slower")
        needed_mb = request.max_memory_mb
        if needed_mb * _MIB <= current:
            return {}
    outcome.maintenance_work_mem = needed_mb * _MIB
    return {"maintenance_work_mem": f"{needed_mb}MB"}


def _rebuild_steps(request: _Request) -> PlanGenerator[_Outcome]:
    """Yield the rebuild's steps; in one transaction, or (concurrently) statement by statement."""
    rows = yield fetch(index_sql.build_facts())
    facts = rows[0]
    if not facts["pgvector_version"]:
        raise IndexBuildError("the pgvector extension is not installed in this database: run `sony-rag migrate`")
    outcome = _Outcome(rows=int(facts["row_count"]), maintenance_work_mem=int(facts["maintenance_work_mem"]),
                       pgvector_version=parse_version(facts["pgvector_version"]))
    existing = set(facts["indexes"] or ())
    lists = None
    if request.method == "ivfflat":
        lists = request.lists if request.lists is not None else auto_lists(outcome.rows)
        if lists > max(1, outcome.rows):
            outcome.notes.append(
                f"{outcome.rows} rows for {lists} lists: most lists are empty until the table grows; searches "
                "stay exact-count (an under-filled scan falls back to an exact one) but rebuild after loading")
    outcome.lists = lists
    settings = _memory_settings(request, outcome, lists)
    if not (request.concurrently and request.pooled):
        # An index build legitimately outlasts the per-statement timeout that protects queries.
        settings["statement_timeout"] = "0"
    if settings:
        yield SetLocal(settings)
    concurrently = request.concurrently
    for leftover in (index_sql.REBUILD_INDEX, index_sql.RETIRED_INDEX):
        if leftover in existing:  # from an interrupted earlier rebuild
            yield execute(index_sql.drop_index(leftover, concurrently=concurrently))
    yield execute(index_sql.create_vector_index(
        index_sql.REBUILD_INDEX, request.method, lists=lists, m=request.m, ef_construction=request.ef_construction,
        concurrently=concurrently))
    # PostgreSQL keeps no record of the rows k-means saw; health checks (stats, search, ingest) read this one.
    yield execute(index_sql.comment_index(index_sql.REBUILD_INDEX, trained_comment(outcome.rows)))
    # Table statistics do not depend on the index: gathering them before the swap keeps the exclusive lock
    # that the swap takes (in a transaction, until commit) as short as possible.
    yield execute(index_sql.analyze())
    if concurrently:
        swap: list[Query] = []
        if VECTOR_INDEX in existing:
            swap.append(index_sql.rename_index(VECTOR_INDEX, index_sql.RETIRED_INDEX))
        swap.append(index_sql.rename_index(index_sql.REBUILD_INDEX, VECTOR_INDEX))
        # Readers see the old index or the new one under the documented name, never none.
        yield Atomic([execute(query) for query in swap])
        if VECTOR_INDEX in existing:
            yield execute(index_sql.drop_index(index_sql.RETIRED_INDEX, concurrently=True))
    else:
        yield execute(index_sql.drop_index(VECTOR_INDEX))
        yield execute(index_sql.rename_index(index_sql.REBUILD_INDEX, VECTOR_INDEX))
    size = yield fetch(index_sql.index_size(VECTOR_INDEX))
    outcome.size_bytes = int(size[0]["size_bytes"] or 0)
    return outcome


def _rebuild_plan(request: _Request) -> Plan[_Outcome]:
    # CREATE INDEX CONCURRENTLY cannot run inside a transaction: a concurrent build runs outside one.
    return Plan(functools.partial(_rebuild_steps, request), read_only=False, transactional=not request.concurrently)


def _build_error(error: BaseException) -> SonyRagError:
    cause = error if isinstance(error, psycopg.Error) else error.__cause__
    if isinstance(cause, pg_errors.ProgramLimitExceeded | pg_errors.OutOfMemory | pg_errors.DiskFull):
        first = str(cause).strip().splitlines()[0] if str(cause).strip() else type(cause).__name__
        return IndexBuildError(f"the server could not build the vector index: {first}; raise "
                               "maintenance_work_mem (max_memory_mb) or pass fewer lists")
    if isinstance(error, SonyRagError):
        return error
    assert isinstance(error, psycopg.Error)
    return translate_database_error(error)


def _cleanup_failed_concurrent_build(db: Database) -> None:
    # A failed CREATE INDEX CONCURRENTLY leaves an INVALID index behind that every write still maintains.
    try:
        with db.connect() as conn:
            conn.execute(*index_sql.drop_index(index_sql.REBUILD_INDEX, concurrently=True))
    except (psycopg.Error, SonyRagError):
        pass  # the next rebuild drops it first


async def _acleanup_failed_concurrent_build(db: Database) -> None:
    try:
        async with await _aconnect(db) as conn:
            await conn.execute(*index_sql.drop_index(index_sql.REBUILD_INDEX, concurrently=True))
    except (psycopg.Error, SonyRagError):
        pass


async def _aconnect(db: Database) -> psycopg.AsyncConnection[Any]:
    attempts = db.settings.connect_retries + 1
    delay = db.settings.connect_backoff
    for attempt in range(attempts):
        try:
            return await psycopg.AsyncConnection.connect(db.conninfo, **db.connection_kwargs())
        except psycopg.OperationalError:
            if attempt + 1 == attempts:
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 5.0)
    raise DatabaseUnavailableError(f"could not connect to {db.description} after {attempts} attempts")


def _report(request: _Request, outcome: _Outcome, seconds: float) -> IndexReport:
    hnsw = request.method == "hnsw"
    return IndexReport(
        index_name=VECTOR_INDEX, method=request.method, lists=outcome.lists, m=request.m if hnsw else None,
        ef_construction=request.ef_construction if hnsw else None, rows=outcome.rows,
        concurrently=request.concurrently, memory_required_bytes=outcome.memory_required,
        maintenance_work_mem_bytes=outcome.maintenance_work_mem, seconds=seconds, size_bytes=outcome.size_bytes,
        default_probes=None if outcome.lists is None else default_probes(outcome.lists),
        default_ef_search=DEFAULT_EF_SEARCH if hnsw else None, notes=tuple(outcome.notes),
    )


# -- the public API ------------------------------------------------------------------------------------


def rebuild_vector_index(db: Database, *, method: Literal["ivfflat", "hnsw"] = "ivfflat",
                         lists: int | Literal["auto"] = "auto", m: int = 16, ef_construction: int = 64,
                         concurrently: bool = False, max_memory_mb: int = DEFAULT_MAX_MEMORY_MB) -> IndexReport:
    """Rebuild ``idx_document_embeddings_vector`` sized to the table and return what was built.

    Args:
        db: The database to rebuild the index in.
        method: ``"ivfflat"`` (default, as the spec) or ``"hnsw"``.
        lists: IVFFlat lists, or ``"auto"``: rows/1000 up to 1M rows, sqrt(rows) beyond, at least 1.
        m: HNSW connections per node.
        ef_construction: HNSW candidate list size while building (at least 2 * m).
        concurrently: Build with ``CREATE INDEX CONCURRENTLY`` so writes continue (slower; not in a transaction).
        max_memory_mb: The most ``maintenance_work_mem`` the build may set for itself.

    Raises:
        InvalidInputError: an option is out of range (nothing was changed).
        IndexBuildError: k-means needs more memory than ``max_memory_mb`` allows, or the server refused.
    """
    request = _request(db, method, lists, m, ef_construction, concurrently, max_memory_mb)
    started = time.perf_counter()
    try:
        if request.concurrently:
            try:
                with db.connect() as conn:
                    outcome = drive(conn, _rebuild_plan(request))
            except psycopg.Error as error:
                _cleanup_failed_concurrent_build(db)
                raise _build_error(error) from error
        else:
            try:
                outcome = db.run(_rebuild_plan(request))
            except SonyRagError as error:
                translated = _build_error(error)
                if translated is error:
                    raise
                raise translated from error.__cause__
    finally:
        db.forget_capabilities()
    return _report(request, outcome, time.perf_counter() - started)


async def arebuild_vector_index(db: Database, *, method: Literal["ivfflat", "hnsw"] = "ivfflat",
                                lists: int | Literal["auto"] = "auto", m: int = 16, ef_construction: int = 64,
                                concurrently: bool = False,
                                max_memory_mb: int = DEFAULT_MAX_MEMORY_MB) -> IndexReport:
    """Rebuild ``idx_document_embeddings_vector`` sized to the table and return what was built (see the sync twin).

    Raises:
        InvalidInputError: an option is out of range (nothing was changed).
        IndexBuildError: k-means needs more memory than ``max_memory_mb`` allows, or the server refused.
    """
    request = _request(db, method, lists, m, ef_construction, concurrently, max_memory_mb)
    started = time.perf_counter()
    try:
        if request.concurrently:
            try:
                async with await _aconnect(db) as conn:
                    outcome = await adrive(conn, _rebuild_plan(request))
            except psycopg.Error as error:
                await _acleanup_failed_concurrent_build(db)
                raise _build_error(error) from error
        else:
            try:
                outcome = await db.arun(_rebuild_plan(request))
            except SonyRagError as error:
                translated = _build_error(error)
                if translated is error:
                    raise
                raise translated from error.__cause__
    finally:
        db.forget_capabilities()
    return _report(request, outcome, time.perf_counter() - started)


@plan(read_only=True, replica=True)
def _stats_plan() -> PlanGenerator[dict[str, Any]]:
    counts = yield fetch(index_sql.table_counts())
    by_type = yield fetch(index_sql.source_type_counts())
    usage = yield fetch(index_sql.index_usage())
    capabilities = yield fetch(document_sql.capabilities())
    version = capabilities[0]["pgvector_version"]
    rows = int(counts[0]["document_embeddings"])
    index = None
    vector_index = vector_index_from_row(capabilities[0])
    if vector_index is not None:
        index = {
            "name": VECTOR_INDEX, "method": vector_index.method, "lists": vector_index.lists,
            "m": vector_index.m, "ef_construction": vector_index.ef_construction,
            "trained_rows": vector_index.trained_rows,
            "default_probes": None if vector_index.lists is None else default_probes(vector_index.lists),
            "default_ef_search": DEFAULT_EF_SEARCH if vector_index.method == "hnsw" else None,
            "size_bytes": next((int(row["size_bytes"]) for row in usage if row["indexname"] == VECTOR_INDEX), None),
        }
    problems = index_problems(vector_index, rows, tuple(capabilities[0]["invalid_indexes"] or ()))
    return {
        "pgvector_version": version,
        "tables": {table: int(counts[0][table]) for table in index_sql.TABLES},
        "document_embeddings_by_source_type": {row["source_type"]: int(row["row_count"]) for row in by_type},
        "vector_index": index,
        "index_problems": [problem.as_dict() for problem in problems],
        "indexes": [
            {"table": row["tablename"], "index": row["indexname"], "idx_scan": int(row["idx_scan"] or 0),
             "size_bytes": int(row["size_bytes"] or 0)}
            for row in usage
        ],
    }


def vector_index_stats(db: Database) -> dict[str, Any]:
    """Return rows per table and per source type, each index's scans and size, the vector index and pgvector version.

    Raises SchemaNotReadyError when the tables do not exist yet.
    """
    return db.run(_stats_plan())


async def avector_index_stats(db: Database) -> dict[str, Any]:
    """Return the same statistics as ``vector_index_stats``, from async code."""
    return await db.arun(_stats_plan())


@plan(read_only=True)
def _staleness_plan() -> PlanGenerator[tuple[bool, int]]:
    rows = yield fetch(index_sql.build_facts())
    capabilities = yield fetch(document_sql.capabilities())
    count = int(rows[0]["row_count"])
    return ivfflat_is_stale(vector_index_from_row(capabilities[0]), count), count


def _rebuilt_line(rows: int, report: IndexReport) -> str:
    return (f"rebuilt the IVFFlat index for {rows} rows ({report.lists} lists, {report.seconds:.1f}s): it was "
            f"trained on far fewer rows than the table holds (as `{REBUILD_COMMAND}` would)")


def rebuild_if_stale(db: Database, *, log: Callable[[str], None] | None = None) -> IndexReport | None:
    """Rebuild an IVFFlat index trained on far fewer rows than the table holds, sized for it; return the report.

    Returns None when the index is fine (or is HNSW, or there is none). ``log`` (default: the sony_rag logger)
    hears one line saying what was rebuilt and why. Raises IndexBuildError as ``rebuild_vector_index`` does.
    """
    stale, rows = db.run(_staleness_plan())
    if not stale:
        return None
    report = rebuild_vector_index(db, method="ivfflat")
    (log or logger.info)(_rebuilt_line(rows, report))
    return report


async def arebuild_if_stale(db: Database, *, log: Callable[[str], None] | None = None) -> IndexReport | None:
    """Rebuild a stale IVFFlat index sized for the table and return the report, from async code (see the sync twin).

    Returns None when the index is fine, HNSW or absent. Raises IndexBuildError as ``rebuild_vector_index`` does.
    """
    stale, rows = await db.arun(_staleness_plan())
    if not stale:
        return None
    report = await arebuild_vector_index(db, method="ivfflat")
    (log or logger.info)(_rebuilt_line(rows, report))
    return report


__all__ = [
    "DEFAULT_MAX_MEMORY_MB", "VECTOR_INDEX", "IndexReport", "arebuild_if_stale", "arebuild_vector_index", "auto_lists",
    "avector_index_stats", "hnsw_build_memory", "ivfflat_build_memory", "rebuild_if_stale", "rebuild_vector_index",
    "vector_index_stats",
]
