"""SQL for managing the vector index on document_embeddings and reading index statistics.

Index names, methods and option names come from the fixed sets below. Index options (``lists``, ``m``,
``ef_construction``) cannot be bind parameters in ``CREATE INDEX ... WITH (...)``: they are checked to be
ints within pgvector's limits here and rendered with ``sql.Literal``.
"""

from __future__ import annotations

from typing import Final, Literal

from psycopg import sql

from sony_rag.sql import Params, Query

VECTOR_INDEX: Final = "idx_document_embeddings_vector"
# A rebuild creates the new index under this name and swaps it in, so VECTOR_INDEX always exists.
REBUILD_INDEX: Final = "idx_document_embeddings_vector_rebuild"
RETIRED_INDEX: Final = "idx_document_embeddings_vector_old"
_INDEX_NAMES: Final = frozenset({VECTOR_INDEX, REBUILD_INDEX, RETIRED_INDEX})

IndexMethod = Literal["ivfflat", "hnsw"]

# pgvector's limits for the index options (ivfflat.c / hnsw.c).
LISTS_RANGE: Final = (1, 32768)
M_RANGE: Final = (2, 100)
EF_CONSTRUCTION_RANGE: Final = (4, 1000)

# The tables whose row counts and indexes `stats` reports; a fixed set, never taken from input.
TABLES: Final = ("chat_sessions", "chat_messages", "document_embeddings", "user_text_selections")


def _index(name: str) -> sql.Identifier:
    if name not in _INDEX_NAMES:
        raise ValueError(f"index name {name!r} is not one sony-rag manages")
    return sql.Identifier(name)


def _option(name: str, value: int, bounds: tuple[int, int]) -> sql.Composable:
    if isinstance(value, bool) or not isinstance(value, int) or not bounds[0] <= value <= bounds[1]:
        raise ValueError(f"{name} must be an int in [{bounds[0]}, {bounds[1]}], got {value!r}")
    return sql.SQL("{} = {}").format(sql.SQL(name), sql.Literal(value))


def build_facts() -> Query:
    """Return a SELECT of what a rebuild decides from: row count, maintenance_work_mem and existing indexes."""
    p = Params()
    query = sql.SQL(
        "SELECT (SELECT count(*) FROM document_embeddings) AS row_count, "
        "pg_size_bytes(current_setting('maintenance_work_mem')) AS maintenance_work_mem, "
        "(SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector_version, "
        "ARRAY(SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid "
        " WHERE i.indrelid = to_regclass('document_embeddings') AND c.relname = ANY({names})) AS indexes"
    ).format(names=p.add(sorted(_INDEX_NAMES), "text[]"))
    return query, p.values


def create_vector_index(name: str, method: IndexMethod, *, lists: int | None = None, m: int | None = None,
                        ef_construction: int | None = None, concurrently: bool = False) -> Query:
    """Return a CREATE INDEX for the cosine vector index; raises ValueError for an option out of range."""
    if method == "ivfflat":
        if lists is None:
            raise ValueError("an ivfflat index needs lists")
        options = [_option("lists", lists, LISTS_RANGE)]
    elif method == "hnsw":
        if m is None or ef_construction is None:
            raise ValueError("an hnsw index needs m and ef_construction")
        options = [_option("m", m, M_RANGE), _option("ef_construction", ef_construction, EF_CONSTRUCTION_RANGE)]
    else:
        raise ValueError(f"unknown index method {method!r}")
    query = sql.SQL(
        "CREATE INDEX {concurrently}{name} ON document_embeddings USING {method} (embedding vector_cosine_ops) "
        "WITH ({options})"
    ).format(concurrently=sql.SQL("CONCURRENTLY ") if concurrently else sql.SQL(""), name=_index(name),
             method=sql.SQL(method), options=sql.SQL(", ").join(options))
    return query, {}


def comment_index(name: str, comment: str) -> Query:
    """Return a COMMENT ON INDEX for one of the managed index names (a utility statement: the text is a literal)."""
    return sql.SQL("COMMENT ON INDEX {} IS {}").format(_index(name), sql.Literal(comment)), {}


def drop_index(name: str, *, concurrently: bool = False) -> Query:
    """Return a DROP INDEX IF EXISTS of one of the managed index names."""
    return sql.SQL("DROP INDEX {}IF EXISTS {}").format(
        sql.SQL("CONCURRENTLY ") if concurrently else sql.SQL(""), _index(name)), {}


def rename_index(old: str, new: str) -> Query:
    """Return an ALTER INDEX ... RENAME between two managed index names."""
    return sql.SQL("ALTER INDEX {} RENAME TO {}").format(_index(old), _index(new)), {}


def analyze() -> Query:
    """Return an ANALYZE of document_embeddings (fresh statistics for the planner after a rebuild)."""
    return sql.SQL("ANALYZE document_embeddings"), {}


def index_size(name: str) -> Query:
    """Return a SELECT of one managed index's size in bytes (NULL when it does not exist)."""
    p = Params()
    return sql.SQL("SELECT pg_relation_size(to_regclass({})) AS size_bytes").format(p.add(name)), p.values


def table_counts() -> Query:
    """Return a SELECT of the exact row count of each sony-rag table (one row, one column per table)."""
    counts = sql.SQL(", ").join(
        sql.SQL("(SELECT count(*) FROM {}) AS {}").format(sql.Identifier(table), sql.Identifier(table))
        for table in TABLES
    )
    return sql.SQL("SELECT ") + counts, {}


def source_type_counts() -> Query:
    """Return a SELECT of document_embeddings rows per source type."""
    return sql.SQL(
        "SELECT source_type, count(*) AS row_count FROM document_embeddings GROUP BY source_type "
        "ORDER BY source_type"
    ), {}


def index_usage() -> Query:
    """Return the spec's monitoring query for sony-rag's tables: each index's scans and size, most used first.

    DATABASE.md names the columns ``tablename``/``indexname``; pg_stat_user_indexes calls them ``relname``/
    ``indexrelname``, so they are aliased to the spec's names.
    """
    p = Params()
    return sql.SQL(
        "SELECT schemaname, relname AS tablename, indexrelname AS indexname, idx_scan, "
        "pg_relation_size(indexrelid) AS size_bytes FROM pg_stat_user_indexes "
        "WHERE schemaname = current_schema() AND relname = ANY({}) ORDER BY idx_scan DESC, indexrelname"
    ).format(p.add(list(TABLES), "text[]")), p.values
