"""SQL for document_embeddings: bulk writes through binary COPY, nearest-neighbour search, deletes."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Final
from uuid import UUID

from psycopg import sql

from sony_rag.sql import Params, Query
from sony_rag.sql.filters import compile_filter

# Column order of every COPY into document_embeddings (and of the staging table used for upserts).
COPY_COLUMNS: Final = ("embedding_id", "source_type", "source_id", "content_chunk", "embedding", "metadata",
                       "document_id")
COPY_TYPES: Final = ("uuid", "varchar", "text", "text", "vector", "jsonb", "text")

_RESULT_COLUMN_NAMES = ("embedding_id", "source_type", "source_id", "content_chunk", "metadata", "created_at",
                        "updated_at", "document_id")
_RESULT_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in _RESULT_COLUMN_NAMES)
_STAGING = sql.Identifier("sony_rag_staging")


def _column_list() -> sql.Composable:
    return sql.SQL(", ").join(sql.Identifier(name) for name in COPY_COLUMNS)


def copy_into_table() -> sql.Composed:
    """Return the binary COPY statement that appends rows straight to document_embeddings."""
    return sql.SQL("COPY document_embeddings ({}) FROM STDIN WITH (FORMAT BINARY)").format(_column_list())


def create_staging() -> Query:
    """Return a CREATE of the transaction-scoped staging table that upserts are copied into first."""
    return sql.SQL(
        "CREATE TEMP TABLE {} (LIKE document_embeddings INCLUDING DEFAULTS) ON COMMIT DROP"
    ).format(_STAGING), {}


def copy_into_staging() -> sql.Composed:
    """Return the binary COPY statement into the staging table."""
    return sql.SQL("COPY {} ({}) FROM STDIN WITH (FORMAT BINARY)").format(_STAGING, _column_list())


def upsert_from_staging() -> Query:
    """Return the INSERT ... ON CONFLICT that moves staged rows in, replacing rows with the same id."""
    updates = sql.SQL(", ").join(
        sql.SQL("{0} = EXCLUDED.{0}").format(sql.Identifier(name)) for name in COPY_COLUMNS[1:]
    )
    # Sorted by id so that concurrent upserts of overlapping ids lock rows in one order and cannot deadlock.
    return sql.SQL(
        "INSERT INTO document_embeddings ({cols}) SELECT {cols} FROM {staging} ORDER BY embedding_id "
        "ON CONFLICT (embedding_id) DO UPDATE SET {updates}, updated_at = NOW()"
    ).format(cols=_column_list(), staging=_STAGING, updates=updates), {}


def _conditions(p: Params, q: sql.Composable, filter: Mapping[str, Any] | None,
                max_distance: float | None) -> sql.Composable:
    where = [compile_filter(filter, p)]
    if max_distance is not None:
        where.append(sql.SQL("(embedding <=> {}) <= {}").format(q, p.add(max_distance, "float8")))
    return sql.SQL(" AND ").join(where)


def _joined_columns(with_embedding: bool) -> sql.Composable:
    # Result columns of the row aliased ``d`` in queries that rank ids first and join the rows after.
    columns = sql.SQL(", ").join(sql.SQL("d.") + sql.Identifier(name) for name in _RESULT_COLUMN_NAMES)
    return columns + sql.SQL(", d.embedding") if with_embedding else columns


def nearest(query_vector: Any, limit: int, filter: Mapping[str, Any] | None, *,
            max_distance: float | None = None, with_embedding: bool = False) -> Query:
    """Return the ``ORDER BY embedding <=> q LIMIT n`` search (the form the vector index serves)."""
    p = Params()
    q = p.add(query_vector)
    where = _conditions(p, q, filter, max_distance)
    columns = _RESULT_COLUMNS + sql.SQL(", embedding") if with_embedding else _RESULT_COLUMNS
    query = sql.SQL(
        "SELECT {cols}, embedding <=> {q} AS distance FROM document_embeddings WHERE {where} "
        "ORDER BY embedding <=> {q} LIMIT {limit}"
    ).format(cols=columns, q=q, where=where, limit=p.add(limit))
    return query, p.values


def exact_nearest(query_vector: Any, limit: int, filter: Mapping[str, Any] | None, *,
                  max_distance: float | None = None, with_embedding: bool = False) -> Query:
    """Return an exact nearest-neighbour search that no vector index can serve, whatever the settings.

    ``OFFSET 0`` fences the distance computation off from the ORDER BY, so even a cached generic plan
    cannot turn it into an (approximate) index scan; btree indexes still serve the filter.
    """
    p = Params()
    q = p.add(query_vector)
    where = _conditions(p, q, filter, max_distance)
    columns = _joined_columns(with_embedding)
    query = sql.SQL(
        "SELECT {cols}, n.distance FROM ("
        " SELECT embedding_id, distance FROM ("
        "  SELECT embedding_id, embedding <=> {q} AS distance FROM document_embeddings WHERE {where} OFFSET 0"
        " ) AS f ORDER BY distance LIMIT {limit}"
        ") AS n JOIN document_embeddings AS d USING (embedding_id) ORDER BY n.distance"
    ).format(cols=columns, q=q, where=where, limit=p.add(limit))
    return query, p.values


def _keyword_leg(p: Params, query_text: str, config: str, limit: sql.Composable,
                 filter: Mapping[str, Any] | None, *, loose_fallback: bool) -> sql.Composable:
    # websearch_to_tsquery accepts any user text (quotes, operators, emoji) without a syntax error, and
    # requires every word. With ``loose_fallback``, when that matches nothing the same words are OR-ed, so a
    # question with extra words ("TB-2040 price") still finds the code; hybrid search does not use it, since
    # a loose leg drowns the vector leg (benchmarks/relevance.py measures both).
    cfg = p.add(config, "regconfig")
    text = p.add(query_text)
    strict = sql.SQL("websearch_to_tsquery({}, {})").format(cfg, text)
    tsquery: sql.Composable = strict
    if loose_fallback:
        loose = sql.SQL("replace(websearch_to_tsquery({}, {})::text, ' & ', ' | ')::tsquery").format(cfg, text)
        tsquery = sql.SQL(
            "CASE WHEN EXISTS (SELECT 1 FROM document_embeddings WHERE {where} AND search_vector @@ {strict})"
            " THEN {strict} ELSE {loose} END"
        ).format(where=compile_filter(filter, p), strict=strict, loose=loose)
    return sql.SQL(
        "SELECT embedding_id, row_number() OVER (ORDER BY score DESC, embedding_id) AS rank FROM ("
        " SELECT e.embedding_id, ts_rank_cd(e.search_vector, t.q) AS score"
        " FROM document_embeddings AS e, (SELECT {tsquery} AS q) AS t"
        " WHERE {where} AND e.search_vector @@ t.q ORDER BY score DESC, e.embedding_id LIMIT {limit}"
        ") AS keyword_hits"
    ).format(tsquery=tsquery, where=compile_filter(filter, p), limit=limit)


def _vector_leg(p: Params, q: sql.Composable, limit: sql.Composable, filter: Mapping[str, Any] | None,
                exact: bool) -> sql.Composable:
    where = compile_filter(filter, p)
    fence = sql.SQL(" OFFSET 0") if exact else sql.SQL("")
    inner = sql.SQL("SELECT embedding_id, embedding <=> {q} AS distance FROM document_embeddings WHERE {where}").format(
        q=q, where=where)
    if exact:
        # The fence keeps the vector index out, as in exact_nearest.
        inner = sql.SQL("SELECT * FROM ({inner}{fence}) AS f ORDER BY distance LIMIT {limit}").format(
            inner=inner, fence=fence, limit=limit)
    else:
        inner = inner + sql.SQL(" ORDER BY embedding <=> {q} LIMIT {limit}").format(q=q, limit=limit)
    return sql.SQL(
        "SELECT embedding_id, row_number() OVER (ORDER BY distance, embedding_id) AS rank FROM ({}) AS vector_hits"
    ).format(inner)


def hybrid(query_vector: Any, query_text: str, limit: int, fetch_k: int, filter: Mapping[str, Any] | None, *,
           config: str, rrf_k: float, vector_weight: float, keyword_weight: float, exact: bool = False,
           with_embedding: bool = False) -> Query:
    """Return one statement fusing the vector and the keyword leg by reciprocal rank fusion.

    Each leg ranks up to ``fetch_k`` rows that match the filter; a row scores the sum over legs of
    ``weight / (rrf_k + rank)``; the best ``limit`` rows come back with their cosine ``distance`` and ``rrf``.
    """
    p = Params()
    q = p.add(query_vector)
    legs_limit = p.add(fetch_k)
    vector_leg = _vector_leg(p, q, legs_limit, filter, exact)
    keyword_leg = _keyword_leg(p, query_text, config, legs_limit, filter, loose_fallback=False)
    columns = _joined_columns(with_embedding)
    query = sql.SQL(
        "WITH vector_leg AS ({vector_leg}), keyword_leg AS ({keyword_leg}), fused AS ("
        " SELECT embedding_id, sum(score) AS rrf FROM ("
        "  SELECT embedding_id, {wv} / ({c} + rank) AS score FROM vector_leg"
        "  UNION ALL SELECT embedding_id, {wk} / ({c} + rank) AS score FROM keyword_leg"
        " ) AS scored GROUP BY embedding_id ORDER BY rrf DESC, embedding_id LIMIT {limit}"
        ") SELECT {cols}, d.embedding <=> {q} AS distance, f.rrf FROM fused AS f"
        " JOIN document_embeddings AS d USING (embedding_id) ORDER BY f.rrf DESC, d.embedding_id"
    ).format(vector_leg=vector_leg, keyword_leg=keyword_leg, wv=p.add(vector_weight, "float8"),
             wk=p.add(keyword_weight, "float8"), c=p.add(rrf_k, "float8"), limit=p.add(limit), cols=columns,
             q=q)
    return query, p.values


def keyword(query_vector: Any, query_text: str, limit: int, filter: Mapping[str, Any] | None, *,
            config: str, with_embedding: bool = False) -> Query:
    """Return a full-text search alone (all words, else any word; ranked by ts_rank_cd) with cosine ``distance``."""
    p = Params()
    q = p.add(query_vector)
    leg = _keyword_leg(p, query_text, config, p.add(limit), filter, loose_fallback=True)
    columns = _joined_columns(with_embedding)
    query = sql.SQL(
        "SELECT {cols}, d.embedding <=> {q} AS distance FROM ({leg}) AS k"
        " JOIN document_embeddings AS d USING (embedding_id) ORDER BY k.rank"
    ).format(cols=columns, q=q, leg=leg)
    return query, p.values


def by_ids(ids: Sequence[UUID]) -> Query:
    """Return a SELECT of the rows with the given ids."""
    p = Params()
    return sql.SQL("SELECT {} FROM document_embeddings WHERE embedding_id = ANY({})").format(
        _RESULT_COLUMNS, p.add(list(ids), "uuid[]")), p.values


def delete_ids(ids: Sequence[UUID]) -> Query:
    """Return a DELETE of the rows with the given ids."""
    p = Params()
    return sql.SQL("DELETE FROM document_embeddings WHERE embedding_id = ANY({})").format(
        p.add(list(ids), "uuid[]")), p.values


def delete_matching(filter: Mapping[str, Any]) -> Query:
    """Return a DELETE of the rows a metadata filter matches."""
    p = Params()
    return sql.SQL("DELETE FROM document_embeddings WHERE {}").format(compile_filter(filter, p)), p.values


def delete_source(source_type: str, source_id: str | None) -> Query:
    """Return a DELETE of one source's rows (all rows of the type when ``source_id`` is None)."""
    p = Params()
    query = sql.SQL("DELETE FROM document_embeddings WHERE source_type = {}").format(p.add(source_type))
    if source_id is not None:
        query += sql.SQL(" AND source_id = {}").format(p.add(source_id))
    return query, p.values


def capabilities() -> Query:
    """Return a SELECT of the pgvector version and the method and options of the vector index, if any."""
    return sql.SQL(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector_version, "
        "idx.amname AS index_method, idx.reloptions AS index_options "
        "FROM (SELECT 1) AS one LEFT JOIN LATERAL ("
        " SELECT am.amname, c.reloptions FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " JOIN pg_am am ON am.oid = c.relam WHERE i.indrelid = to_regclass('document_embeddings')"
        " AND am.amname IN ('ivfflat', 'hnsw') AND i.indisvalid ORDER BY c.relname LIMIT 1"
        ") AS idx ON TRUE"
    ), {}


def source_states(source_type: str, source_ids: Sequence[str]) -> Query:
    """Return, per source id of one type, its chunk count and distinct ``metadata->>'content_hash'`` values."""
    p = Params()
    return sql.SQL(
        "SELECT source_id, count(*) AS chunks, array_agg(DISTINCT metadata->>'content_hash') AS content_hashes "
        "FROM document_embeddings WHERE source_type = {} AND source_id = ANY({}) GROUP BY source_id"
    ).format(p.add(source_type), p.add(list(source_ids), "text[]")), p.values


def delete_sources(source_type: str, source_ids: Sequence[str]) -> Query:
    """Return a DELETE of the rows of several sources of one type."""
    p = Params()
    return sql.SQL("DELETE FROM document_embeddings WHERE source_type = {} AND source_id = ANY({})").format(
        p.add(source_type), p.add(list(source_ids), "text[]")), p.values


def lock_sources(keys: Sequence[str]) -> Query:
    """Return a SELECT taking a transaction-scoped advisory lock per source key, in one fixed order."""
    p = Params()
    # Sorted keys: two writers of overlapping sources take the locks in the same order and cannot deadlock.
    return sql.SQL(
        "SELECT count(pg_advisory_xact_lock(hashtextextended(key, 0))) AS locked "
        "FROM (SELECT DISTINCT unnest({}) AS key ORDER BY 1) AS keys"
    ).format(p.add(sorted(set(keys)), "text[]")), p.values
