"""SQL for document_embeddings: bulk writes through binary COPY, nearest-neighbour search, deletes."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import Any, Final
from uuid import UUID

from psycopg import sql

from sony_rag.sql import Params, Query
from sony_rag.sql.filters import ParsedFilter, compile_filter, filter_kind, filter_shape

# A filter as the statements take it: a dict in the filter grammar, or one parsed once (sony_rag.retrieval).
Filter = Mapping[str, Any] | ParsedFilter | None

# Column order of every COPY into document_embeddings (and of the staging table used for upserts).
COPY_COLUMNS: Final = ("embedding_id", "source_type", "source_id", "content_chunk", "embedding", "metadata",
                       "document_id")
COPY_TYPES: Final = ("uuid", "varchar", "text", "text", "vector", "jsonb", "text")

_RESULT_COLUMN_NAMES = ("embedding_id", "source_type", "source_id", "content_chunk", "metadata", "created_at",
                        "updated_at", "document_id")
_RESULT_COLUMNS = sql.SQL(", ").join(sql.Identifier(name) for name in _RESULT_COLUMN_NAMES)
# What a LangChain Document is made of (``document_from_row``): the other columns, timestamps above all, cost the
# client more to parse than anything else in a search's rows.
_DOCUMENT_COLUMN_NAMES = ("embedding_id", "document_id", "content_chunk", "metadata")
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


class _Slot:
    """Stands for one of a call's own values while a statement is composed for its shape."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name


# (statement kind, flags, filter shape) -> the statement's text and, per placeholder in order, the name of the
# call's value it binds (None: the filter's next value). Bounded: shapes are few, but nothing checks that.
_SHAPES: dict[tuple[Any, ...], tuple[sql.SQL, list[tuple[str, str | None]]]] = {}
_MAX_SHAPES: Final = 512


def _per_shape(kind: str, flags: tuple[Any, ...], filter: Filter, values: Mapping[str, Any],
               compose: Callable[[Mapping[str, Any]], Query]) -> Query:
    """Return ``compose(values)``'s statement, composed once per shape of call and filled with this call's values.

    ``compose`` must depend on ``values`` only through the placeholders it binds them to (``flags`` carries
    everything else that changes the text). Raises InvalidFilterError for a malformed filter.
    """
    shape, filter_values = filter_shape(filter)
    key = (kind, flags, shape)
    entry = _SHAPES.get(key)
    if entry is None:
        statement, params = compose({name: _Slot(name) for name in values})
        order = [(name, value.name if isinstance(value, _Slot) else None) for name, value in params.items()]
        entry = (sql.SQL(statement.as_string(None)), order)
        if len(_SHAPES) >= _MAX_SHAPES:
            _SHAPES.clear()
        _SHAPES[key] = entry
    text, order = entry
    from_filter = iter(filter_values)
    return text, {name: values[slot] if slot is not None else next(from_filter) for name, slot in order}


def _conditions(p: Params, q: sql.Composable, filter: Filter,
                max_distance: float | None) -> sql.Composable:
    where = [compile_filter(filter, p)]
    if max_distance is not None:
        where.append(sql.SQL("(embedding <=> {}) <= {}").format(q, p.add(max_distance, "float8")))
    return sql.SQL(" AND ").join(where)


def _joined_columns(with_embedding: bool) -> sql.Composable:
    # Result columns of the row aliased ``d`` in queries that rank ids first and join the rows after.
    columns = sql.SQL(", ").join(sql.SQL("d.") + sql.Identifier(name) for name in _RESULT_COLUMN_NAMES)
    return columns + sql.SQL(", d.embedding") if with_embedding else columns


def _fenced_scan(columns: sql.Composable, q: sql.Composable, where: sql.Composable) -> sql.Composable:
    # ``columns`` and the distance of every row matching ``where``: ``OFFSET 0`` fences the distance computation
    # off from an ORDER BY around it, so even a cached generic plan cannot turn it into an (approximate) index
    # scan, while btree indexes still serve ``where``.
    return sql.SQL("SELECT {columns}, embedding <=> {q} AS distance FROM document_embeddings WHERE {where} OFFSET 0"
                   ).format(columns=columns, q=q, where=where)


def _fenced_nearest(q: sql.Composable, where: sql.Composable, limit: sql.Composable) -> sql.Composable:
    # The nearest ``limit`` ids and distances by an exact scan.
    return sql.SQL("SELECT embedding_id, distance FROM ({}) AS f ORDER BY distance LIMIT {}").format(
        _fenced_scan(sql.SQL("embedding_id"), q, where), limit)


def _index_scan(columns: sql.Composable, q: sql.Composable, where: sql.Composable,
                limit: sql.Composable) -> sql.Composed:
    # The only form the vector index serves: ascending distance, LIMIT.
    return sql.SQL(
        "SELECT {columns}, embedding <=> {q} AS distance FROM document_embeddings WHERE {where}"
        " ORDER BY embedding <=> {q} LIMIT {limit}").format(columns=columns, q=q, where=where, limit=limit)


def planned_matches(filter: Filter) -> Query:
    """Return an EXPLAIN whose plan's ``Plan Rows`` is the planner's estimate of the rows ``filter`` matches.

    For filters of btree-indexed columns, whose statistics (most common values, histograms) the planner reads
    itself; nothing runs. The answer is one row whose ``QUERY PLAN`` is the JSON plan.
    """
    p = Params()
    return sql.SQL("EXPLAIN (FORMAT JSON) SELECT 1 FROM document_embeddings WHERE {}").format(
        compile_filter(filter, p)), p.values


def estimated_matches(filter: Filter) -> Query:
    """Return a SELECT of ``rows``: how many rows a metadata-only filter matches, estimated from ANALYZE's statistics.

    Estimated as the planner estimates an opaque operator (PostgreSQL's generic_restriction_selectivity): the
    filter is evaluated on what ANALYZE keeps for the metadata column from a random sample, its most common values
    (each with its frequency) and its histogram of the rest (each bound the edge of a bucket holding 1/(n-1) of
    those rows; the two end bounds count half, as each closes one bucket only), times the table's row estimate.
    ``rows`` is NULL without statistics (never analysed). Good to about a histogram bucket, 1 % of the table.
    """
    p = Params()
    # In the filter, ``metadata`` is the sampled value of each subquery.
    condition = compile_filter(filter, p)
    return sql.SQL(
        "SELECT (SELECT greatest(c.reltuples, 0) * ("
        "coalesce((SELECT sum(m.freq) FROM unnest(s.most_common_vals::text::jsonb[], s.most_common_freqs)"
        " AS m(metadata, freq) WHERE {filter}), 0)"
        " + (1 - s.null_frac - coalesce((SELECT sum(f) FROM unnest(s.most_common_freqs) AS f), 0))"
        " * coalesce((SELECT sum(CASE WHEN NOT {filter} THEN 0 WHEN h.n IN (1, h.total) THEN 0.5 ELSE 1 END)"
        " / nullif(max(h.total) - 1, 0) FROM (SELECT b.metadata, b.n, count(*) OVER () AS total"
        " FROM unnest(s.histogram_bounds::text::jsonb[]) WITH ORDINALITY AS b(metadata, n)) AS h), 0))"
        " FROM pg_class AS c, pg_stats AS s WHERE c.oid = to_regclass('document_embeddings')"
        # Constants, so the view's catalog scans go through their indexes.
        " AND s.tablename = 'document_embeddings' AND s.attname = 'metadata' AND NOT s.inherited"
        " AND s.schemaname = (SELECT n.nspname FROM pg_namespace AS n WHERE n.oid = c.relnamespace)) AS rows"
    ).format(filter=condition), p.values


def _rows_of(columns: Sequence[str], ranked: sql.Composable) -> sql.Composable:
    # ``columns`` and ``distance`` of the rows ``ranked`` (a query of ids and distances) returns: itself when only
    # ids are wanted (hybrid's vector leg), else its rows joined back by id.
    if tuple(columns) == ("embedding_id",):
        return ranked
    joined = sql.SQL(", ").join(sql.SQL("d.") + sql.Identifier(name) for name in columns)
    return sql.SQL("SELECT {joined}, n.distance FROM ({ranked}) AS n JOIN document_embeddings AS d"
                   " USING (embedding_id)").format(joined=joined, ranked=ranked)


def _nearest_ctes(q: sql.Composable, filter_sql: sql.Composable | None, distance_cond: sql.Composable | None,
                  limit: sql.Composable, exact_below: sql.Composable | None, *, use_index: bool,
                  columns: Sequence[str], few_matches: bool = False, count_reads_rows: bool = False
                  ) -> sql.Composable:
    # CTEs ending in ``nearest_rows``: ``columns`` and ``distance`` of up to ``limit`` nearest rows that satisfy
    # the filter and the distance condition, the plan chosen in the statement itself:
    # - ``choice`` (with ``exact_below``): whether at least that many rows match the filter (all rows without
    #   one), counted no further than that, through the filter column's btree when there is one (an index-only
    #   scan once the table is vacuumed);
    # - ``index_rows``: when that many match, the vector index's answer...
    # - ``exact_rows``: ...when fewer match, or the index found fewer than ``limit`` rows (IVFFlat trained on few
    #   rows, a filter starving an approximate scan): an exact scan of the matching rows (btree, then heap).
    # A CTE is computed only when read and each branch's CASE reads only what it needs, so one branch runs.
    # ``count_reads_rows``: no btree serves the filter (a metadata key, or no filter), so the count reads the
    # table itself; see ``_counted_rows``.
    parts = [part for part in (filter_sql, distance_cond) if part is not None]
    where = sql.SQL(" AND ").join(parts) if parts else sql.SQL("TRUE")
    plain = sql.SQL(", ").join(sql.Identifier(name) for name in columns)
    if not use_index and few_matches:
        # The filter matches few rows (``few_matches``): cheaper to read whole in the scan than to join for the
        # winners (see plans.FEW_MATCHES).
        exact: sql.Composable = sql.SQL("SELECT * FROM ({}) AS f ORDER BY distance LIMIT {}").format(
            _fenced_scan(plain, q, where), limit)
    else:
        exact = _rows_of(columns, _fenced_nearest(q, where, limit))
    if not use_index:
        return sql.SQL("nearest_rows AS ({})").format(exact)
    many: sql.Composable = sql.SQL("TRUE")
    choice: sql.Composable = sql.SQL("")
    if exact_below is not None and count_reads_rows:
        many = sql.SQL("(SELECT many FROM choice)")
        choice, exact = _counted_rows(q, where, limit, exact_below, columns, exact, many)
    elif exact_below is not None:
        many = sql.SQL("(SELECT many FROM choice)")
        choice = sql.SQL(
            "choice AS (SELECT count(*) >= {bound} AS many FROM ("
            "SELECT 1 FROM document_embeddings WHERE {filter} LIMIT {bound}) AS m), "
        ).format(filter=filter_sql if filter_sql is not None else sql.SQL("TRUE"), bound=exact_below)
    return sql.SQL(
        "{choice}index_rows AS ({index_rows}), exact_rows AS ({exact}), nearest_rows AS ("
        "SELECT * FROM index_rows WHERE CASE WHEN {many} THEN (SELECT count(*) FROM index_rows) >= {limit}"
        " ELSE FALSE END"
        " UNION ALL SELECT * FROM exact_rows WHERE CASE WHEN {many} THEN (SELECT count(*) FROM index_rows) < {limit}"
        " ELSE TRUE END)"
    ).format(choice=choice, index_rows=_index_scan(plain, q, where, limit), exact=exact, many=many, limit=limit)


def _counted_rows(q: sql.Composable, where: sql.Composable, limit: sql.Composable, bound: sql.Composable,
                  columns: Sequence[str], exact: sql.Composable,
                  many: sql.Composable) -> tuple[sql.Composable, sql.Composable]:
    # The ``choice`` CTE and the exact branch of a count that reads the rows themselves (a metadata filter, no
    # filter: no btree to count through). The count keeps the id and distance of every row it reads, so when
    # fewer than the bound match, the rows it read are all the matching rows and the exact answer is their
    # nearest ``limit``: one pass over the table where counting and then scanning took two (at 3,000 rows, a
    # metadata filter costs about 1.7 us a row to evaluate). When the bound is reached, the index answers and
    # the exact scan runs only if it comes back short, reading everything as before.
    choice = sql.SQL(
        "matching AS MATERIALIZED (SELECT embedding_id, embedding <=> {q} AS distance FROM document_embeddings"
        " WHERE {where} LIMIT {bound}), choice AS (SELECT count(*) >= {bound} AS many FROM matching), "
    ).format(q=q, where=where, bound=bound)
    few = _rows_of(columns, sql.SQL("SELECT embedding_id, distance FROM matching ORDER BY distance LIMIT {}"
                                    ).format(limit))
    # Each branch behind a condition that needs no row (a one-time filter): only one of them runs.
    return choice, sql.SQL("SELECT * FROM ({few}) AS c WHERE NOT {many}"
                           " UNION ALL SELECT * FROM ({exact}) AS e WHERE {many}").format(few=few, exact=exact,
                                                                                         many=many)


def nearest(query_vector: Any, limit: int, filter: Filter, *, use_index: bool = True,
            exact_below: int | None = None, max_distance: float | None = None,
            with_embedding: bool = False, literal_limit: bool = False, documents_only: bool = False,
            few_matches: bool = False) -> Query:
    """Return one statement for the ``limit`` nearest rows (cosine), closest first, each with ``distance``.

    With ``use_index`` the vector index answers, except that a filter matching fewer than ``exact_below`` rows
    (counted that far in the same statement) is answered by an exact scan of those rows, and so is any search
    the index answers with fewer than ``limit`` rows. Rows come back sorted by distance even when the index
    returned them in relaxed order. The text is composed once per shape of call. With ``literal_limit`` the
    limit (an int, checked here) is written into the text instead of bound, so that a prepared statement's
    generic plan costs what a custom one does (one text per limit). ``documents_only``: only the columns a
    LangChain Document is made of (and ``distance``). ``few_matches`` (without ``use_index``): the filter is
    known to match few rows, so the exact scan reads them whole instead of joining its winners back.
    """
    counted = exact_below is not None
    if literal_limit and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"a literal limit must be a positive int, not {limit!r}")
    flags = (use_index, counted, max_distance is not None, with_embedding, limit if literal_limit else None,
             documents_only, few_matches)

    def compose(v: Mapping[str, Any]) -> Query:
        p = Params()
        q = p.add(v["query_vector"])
        filter_sql = compile_filter(filter, p) if filter else None
        distance_cond = None if max_distance is None else sql.SQL("(embedding <=> {}) <= {}").format(
            q, p.add(v["max_distance"], "float8"))
        columns = _selected(with_embedding, documents_only)
        bound = p.add(v["exact_below"]) if counted else None
        limit_sql = sql.Literal(limit) if literal_limit else p.add(v["limit"])
        ctes = _nearest_ctes(q, filter_sql, distance_cond, limit_sql, bound, use_index=use_index,
                             columns=columns, few_matches=few_matches,
                             count_reads_rows=filter_kind(filter) != "columns")
        return sql.SQL("WITH {} SELECT * FROM nearest_rows ORDER BY distance").format(ctes), p.values

    return _per_shape("nearest", flags, filter, {"query_vector": query_vector, "limit": limit,
                                                 "exact_below": exact_below, "max_distance": max_distance}, compose)


# The settings an index query may set in its own statement (``index_nearest``'s ``hnsw_settings``).
_IN_STATEMENT_SETTINGS: Final = frozenset({"hnsw.iterative_scan", "hnsw.ef_search", "hnsw.max_scan_tuples"})


def index_nearest(query_vector: Any, limit: int, filter: Filter = None, *, resort: bool = False,
                  with_embedding: bool = False, literal_limit: bool = False, documents_only: bool = False,
                  hnsw_settings: Mapping[str, str] | None = None) -> Query:
    """Return the vector index's own query for the ``limit`` nearest rows matching ``filter``, closest first.

    Nothing around it: the caller falls back to ``exact_nearest`` when it comes back short. ``resort``: sorted
    again (an index scan in relaxed order). ``literal_limit`` and ``documents_only`` as for ``nearest``.
    ``hnsw_settings``: HNSW scan settings the statement sets itself, for its transaction, before its scan
    returns a row (see ``_settings_gate``). Raises InvalidFilterError for a malformed filter, ValueError for a
    setting not in ``_IN_STATEMENT_SETTINGS``.
    """
    if literal_limit and (not isinstance(limit, int) or isinstance(limit, bool) or limit < 1):
        raise ValueError(f"a literal limit must be a positive int, not {limit!r}")
    names = tuple(sorted(hnsw_settings or ()))
    if not set(names) <= _IN_STATEMENT_SETTINGS:
        raise ValueError(f"setting(s) an index query cannot set itself: {sorted(set(names) - _IN_STATEMENT_SETTINGS)}")
    flags = (resort, with_embedding, limit if literal_limit else None, documents_only, names)
    values: dict[str, Any] = {"query_vector": query_vector, "limit": limit}
    values.update((f"setting {name}", (hnsw_settings or {})[name]) for name in names)

    def compose(v: Mapping[str, Any]) -> Query:
        p = Params()
        q = p.add(v["query_vector"])
        columns = _selected(with_embedding, documents_only)
        where = compile_filter(filter, p) if filter else sql.SQL("TRUE")
        if names:
            where = sql.SQL("{} AND {}").format(where, _settings_gate(p, names, v))
        scan = _index_scan(sql.SQL(", ").join(sql.Identifier(name) for name in columns), q, where,
                           sql.Literal(limit) if literal_limit else p.add(v["limit"]))
        if resort:
            scan = sql.SQL("SELECT * FROM ({}) AS i ORDER BY distance").format(scan)
        return scan, p.values

    return _per_shape("index_nearest", flags, filter, values, compose)


def _settings_gate(p: Params, names: Sequence[str], v: Mapping[str, Any]) -> sql.Composable:
    # A condition that sets the settings for the rest of the transaction and is true. It reads no row, so the
    # planner runs it once, as an InitPlan, in a Result node gating the scan: before the scan's first row, which
    # is when pgvector (0.8) reads hnsw.ef_search, hnsw.iterative_scan and hnsw.max_scan_tuples. So the settings
    # travel inside the statement, with no second statement in a pipeline: that cost psycopg about 0.4 ms of
    # client time per search. Were a pgvector release to read them earlier, the scan would run on the server's
    # own settings: with iterative scans off it may come back short, and the caller's exact fallback answers.
    calls = [sql.SQL("set_config({}, {}, true) IS NOT NULL").format(sql.Literal(name), p.add(v[f"setting {name}"]))
             for name in names]
    return sql.SQL("(SELECT {})").format(sql.SQL(" AND ").join(calls))


def exact_nearest(query_vector: Any, limit: int, filter: Filter, *, max_distance: float | None = None,
                  with_embedding: bool = False, documents_only: bool = False) -> Query:
    """Return an exact nearest-neighbour search that no vector index can serve, whatever the settings."""
    return nearest(query_vector, limit, filter, use_index=False, max_distance=max_distance,
                   with_embedding=with_embedding, documents_only=documents_only)


def _selected(with_embedding: bool, documents_only: bool) -> tuple[str, ...]:
    columns = _DOCUMENT_COLUMN_NAMES if documents_only else _RESULT_COLUMN_NAMES
    return (*columns, "embedding") if with_embedding else columns


def ann_nearest(query_vector: Any, limit: int, filter: Filter) -> Query:
    """Return the bare ``ORDER BY embedding <=> q LIMIT n`` query alone (what the vector index answers)."""
    p = Params()
    q = p.add(query_vector)
    return _index_scan(_RESULT_COLUMNS, q, _conditions(p, q, filter, None), p.add(limit)), p.values


def _text_ctes(p: Params, query_text: str, config: str, where: sql.Composable, candidates: int,
               extra_columns: Callable[[sql.Composable], sql.Composable], *,
               common_words: object = None) -> sql.Composable:
    # The text leg's CTEs, read lazily so that each costs only when reached:
    # - text_query: websearch_to_tsquery accepts any text (quotes, operators, emoji) without a syntax error and
    #   requires every word;
    # - common_words: ``common_words`` (a text[] value; None: none), the lexemes ANALYZE's statistics say more
    #   rows hold than the leg may rank (``common_word_statistics``, read by the client and cached). Looking such
    #   a word up in the GIN index costs in proportion to its rows and can only return an arbitrary
    #   ``candidates`` of them, so it is not looked up: it still counts for the rows the caller ranks anyway (the
    #   vector leg's). Read from pg_stats in the statement, it cost more planning and execution than the rest
    #   of the text leg.
    # - all_word_hits: rows holding every word (coverage 1), looked up unless every word is common;
    # - known_words / any_word_hits: for the case that no row holds every word, the text's words that some row
    #   holds (a word no row holds cannot tell rows apart, so it must not dilute coverage) and the rows holding
    #   any of the uncommon ones, each with the share of known words it holds (counted by deleting them from
    #   its tsvector). The any-word query ORs lexemes, each quoted the way tsquery input expects, so no operator
    #   of the user's survives.
    # Each hit list stops at ``candidates`` rows. ``extra_columns`` adds columns from the tsquery each matched.
    cfg = p.add(config, "regconfig")
    text = p.add(query_text)
    cap = p.add(candidates)
    common: sql.Composable = sql.SQL("SELECT NULL::text AS lexeme WHERE FALSE")
    if common_words is not None:
        common = sql.SQL("SELECT unnest({}) AS lexeme").format(p.add(common_words, "text[]"))
    return sql.SQL(
        "text_query AS (SELECT websearch_to_tsquery({cfg}, {text}) AS all_words,"
        "  tsvector_to_array(to_tsvector({cfg}, {text})) AS lexemes),"
        " common_words AS ({common}),"
        " known_words AS ("
        "  SELECT coalesce(array_agg(w.lexeme), '{{}}') AS lexemes, count(w.lexeme) AS word_count,"
        "  (string_agg(w.quoted, ' | ') FILTER (WHERE NOT w.common))::tsquery AS any_word FROM ("
        "   SELECT l AS lexeme, l IN (SELECT lexeme FROM common_words) AS common,"
        "   format('''%%s''', replace(replace(l, '\\', '\\\\'), '''', '''''')) AS quoted"
        "   FROM unnest((SELECT lexemes FROM text_query)) AS l"
        "  ) AS w WHERE CASE WHEN w.common THEN TRUE ELSE EXISTS ("
        "   SELECT 1 FROM document_embeddings AS k WHERE k.search_vector @@ w.quoted::tsquery) END"
        " ), all_word_hits AS ("
        "  SELECT e.embedding_id, 1.0::float8 AS coverage{extra_all} FROM document_embeddings AS e, text_query AS t"
        "  WHERE NOT (SELECT lexemes <@ ARRAY(SELECT lexeme FROM common_words) FROM text_query)"
        "  AND {where} AND e.search_vector @@ t.all_words LIMIT {cap}"
        " ), any_word_hits AS ("
        "  SELECT e.embedding_id, (length(e.search_vector) - length(ts_delete(e.search_vector, w.lexemes)))::float8"
        "  / w.word_count AS coverage{extra_any} FROM document_embeddings AS e, known_words AS w"
        "  WHERE NOT EXISTS (SELECT 1 FROM all_word_hits) AND {where} AND e.search_vector @@ w.any_word"
        "  LIMIT {cap})"
    ).format(cfg=cfg, text=text, cap=cap, common=common,
             extra_all=extra_columns(sql.SQL("t.all_words")),
             extra_any=extra_columns(sql.SQL("w.any_word")), where=where)


def _vector_leg_ctes(q: sql.Composable, limit: sql.Composable, filter_sql: sql.Composable | None,
                     exact_below: sql.Composable | None, use_index: bool, count_reads_rows: bool) -> sql.Composable:
    # vector_leg: up to ``limit`` nearest rows, ranked, chosen as a plain search chooses them (_nearest_ctes).
    return sql.SQL(
        "{nearest}, vector_leg AS (SELECT embedding_id, distance,"
        " row_number() OVER (ORDER BY distance, embedding_id) AS rank FROM nearest_rows)"
    ).format(nearest=_nearest_ctes(q, filter_sql, None, limit, exact_below, use_index=use_index,
                                   columns=("embedding_id",), count_reads_rows=count_reads_rows))


def hybrid(query_vector: Any, query_text: str, limit: int, fetch_k: int, filter: Filter, *,
           config: str, rrf_k: float, vector_weight: float, keyword_weight: float, text_candidates: int,
           similarity_tie: float, use_index: bool = True, exact_below: int | None = None,
           with_embedding: bool = False, max_distance: float | None = None,
           common_words: Sequence[str] = ()) -> Query:
    """Return one statement fusing the vector and the text leg by score-weighted reciprocal rank fusion.

    Each leg ranks up to ``fetch_k`` rows that match the filter: the vector leg by cosine distance, chosen as
    ``nearest`` chooses (``use_index``, ``exact_below``), the text
    leg by word coverage (all words, else the share of words present), then distance, over the vector leg's
    rows and up to ``text_candidates`` rows the text index finds (``common_words``, the lexemes the statistics
    say more rows hold than that, are not looked up, only counted in the vector leg's rows). Every row either
    leg found scores
    ``vector_weight * max(similarity, 0) / (rrf_k + vector_rank) + keyword_weight * coverage / (rrf_k + text_rank)``
    where ``vector_rank`` is 1 + the vector leg's rows closer by more than ``similarity_tie`` (so rows the
    embedding cannot tell apart share a rank, and a text hit outside the vector leg keeps its similarity's due)
    and the text term is 0 outside the text leg. The best ``limit`` rows within ``max_distance`` (when given)
    come back with their cosine ``distance`` and that score as ``rrf``.
    """
    counted = exact_below is not None
    bounded = max_distance is not None

    def compose(v: Mapping[str, Any]) -> Query:
        p = Params()
        q = p.add(v["query_vector"])
        legs_limit = p.add(v["fetch_k"])
        filter_sql = compile_filter(filter, p) if filter else None
        where = filter_sql if filter_sql is not None else sql.SQL("TRUE")
        bound = p.add(v["exact_below"]) if counted else None
        vector_ctes = _vector_leg_ctes(q, legs_limit, filter_sql, bound, use_index, filter_kind(filter) != "columns")
        text_ctes = _text_ctes(p, v["query_text"], v["config"], where, v["text_candidates"],
                               lambda _: sql.SQL(", e.embedding <=> {} AS distance").format(q),
                               common_words=v["common_words"])
        columns = _joined_columns(with_embedding)
        c = p.add(v["rrf_k"], "float8")
        # The vector leg's own rows are checked against the words too: the head of the text leg (rows both near and
        # matching) is then exact even when the text index matched more rows than it may rank, or was not asked.
        # Rows are fetched by id through LATERAL ... LIMIT 1 (a nested loop on the primary key, whatever the row
        # estimates): the unfiltered statement runs a generic plan, which guesses a tenth of the table for a
        # ``LIMIT $n`` and chose a merge join over the whole primary key (400 ms instead of 2).
        query = sql.SQL(
            "WITH {text_ctes}, {vector_ctes}, vector_rows AS ("
            " SELECT v.embedding_id, v.distance, e.search_vector @@ (SELECT all_words FROM text_query) AS all_words,"
            "  (length(e.search_vector) - length(ts_delete(e.search_vector, (SELECT lexemes FROM known_words))))"
            "  ::float8 / nullif((SELECT word_count FROM known_words), 0) AS share"
            " FROM vector_leg AS v CROSS JOIN LATERAL (SELECT k.search_vector FROM document_embeddings AS k"
            "  WHERE k.embedding_id = v.embedding_id LIMIT 1) AS e"
            "), all_words_found AS ("
            " SELECT EXISTS (SELECT 1 FROM all_word_hits)"
            " OR EXISTS (SELECT 1 FROM vector_rows WHERE all_words) AS found"
            "), vector_text_hits AS ("
            " SELECT embedding_id, CASE WHEN (SELECT found FROM all_words_found) THEN 1.0::float8 ELSE share END"
            " AS coverage, distance FROM vector_rows"
            " WHERE CASE WHEN (SELECT found FROM all_words_found) THEN all_words ELSE share > 0 END"
            "), keyword_leg AS ("
            " SELECT embedding_id, coverage, distance,"
            " row_number() OVER (ORDER BY coverage DESC, distance, embedding_id) AS rank"
            " FROM (SELECT embedding_id, max(coverage) AS coverage, min(distance) AS distance FROM ("
            "  SELECT * FROM all_word_hits"
            "  UNION ALL SELECT * FROM any_word_hits WHERE NOT (SELECT found FROM all_words_found)"
            "  UNION ALL SELECT * FROM vector_text_hits"
            " ) AS hits GROUP BY embedding_id ORDER BY 2 DESC, 3, 1 LIMIT {legs_limit}) AS text_hits"
            "), fused AS ("
            " SELECT r.embedding_id, r.distance, {wv} * greatest(1 - r.distance, 0) / ({c} + 1 + ("
            "  SELECT count(*) FROM vector_leg AS v WHERE v.distance < r.distance - {tie}))"
            "  + coalesce((SELECT {wk} * k.coverage / ({c} + k.rank) FROM keyword_leg AS k"
            "  WHERE k.embedding_id = r.embedding_id), 0) AS rrf"
            " FROM (SELECT embedding_id, min(distance) AS distance FROM ("
            "  SELECT embedding_id, distance FROM vector_leg UNION ALL SELECT embedding_id, distance FROM keyword_leg"
            " ) AS both_legs GROUP BY embedding_id) AS r{within} ORDER BY rrf DESC, r.distance, r.embedding_id"
            " LIMIT {limit}"
            ") SELECT {cols}, f.distance, f.rrf FROM fused AS f CROSS JOIN LATERAL (SELECT * FROM document_embeddings"
            " AS k WHERE k.embedding_id = f.embedding_id LIMIT 1) AS d ORDER BY f.rrf DESC, f.distance, d.embedding_id"
        ).format(text_ctes=text_ctes, vector_ctes=vector_ctes, legs_limit=legs_limit,
                 tie=p.add(v["similarity_tie"], "float8"),
                 wv=p.add(v["vector_weight"], "float8"), wk=p.add(v["keyword_weight"], "float8"), c=c,
                 limit=p.add(v["limit"]), cols=columns, q=q,
                 # The threshold applies before the LIMIT: k rows at or above it come back whenever k exist.
                 within=sql.SQL(" WHERE r.distance <= {}").format(p.add(v["max_distance"], "float8"))
                 if bounded else sql.SQL(""))
        return query, p.values

    values = {"query_vector": query_vector, "query_text": query_text, "limit": limit, "fetch_k": fetch_k,
              "config": config, "rrf_k": rrf_k, "vector_weight": vector_weight, "keyword_weight": keyword_weight,
              "text_candidates": text_candidates, "similarity_tie": similarity_tie, "exact_below": exact_below,
              "max_distance": max_distance, "common_words": list(common_words)}
    return _per_shape("hybrid", (use_index, counted, with_embedding, bounded), filter, values, compose)


def keyword(query_vector: Any, query_text: str, limit: int, filter: Filter, *,
            config: str, text_candidates: int, with_embedding: bool = False,
            max_distance: float | None = None) -> Query:
    """Return a full-text search alone (all words, else most words; then ts_rank_cd) with cosine ``distance``.

    It ranks up to ``max(text_candidates, limit)`` of the rows the text index finds; ``max_distance`` keeps
    only rows within that cosine distance of the query vector. Rows also carry what ranks them:
    ``word_coverage`` (the share of the query's words the row holds) first, then ``text_score``.
    """
    bounded = max_distance is not None

    def compose(v: Mapping[str, Any]) -> Query:
        p = Params()
        q = p.add(v["query_vector"])
        rank = sql.SQL(", ts_rank_cd(e.search_vector, {}) AS score")
        where = compile_filter(filter, p)
        if bounded:
            # Applied where the hits are found, before their LIMITs: k rows above the threshold come back when k
            # exist.
            where = sql.SQL("({}) AND embedding <=> {} <= {}").format(where, q, p.add(v["max_distance"], "float8"))
        text_ctes = _text_ctes(p, v["query_text"], v["config"], where, v["text_candidates"], rank.format)
        columns = _joined_columns(with_embedding)
        query = sql.SQL(
            "WITH {text_ctes} SELECT {cols}, d.embedding <=> {q} AS distance,"
            " k.coverage AS word_coverage, k.score AS text_score FROM ("
            " SELECT * FROM all_word_hits UNION ALL SELECT * FROM any_word_hits"
            " ORDER BY coverage DESC, score DESC, embedding_id LIMIT {limit}"
            ") AS k JOIN document_embeddings AS d USING (embedding_id)"
            " ORDER BY k.coverage DESC, k.score DESC, d.embedding_id"
        ).format(text_ctes=text_ctes, cols=columns, q=q, limit=p.add(v["limit"]))
        return query, p.values

    values = {"query_vector": query_vector, "max_distance": max_distance, "query_text": query_text,
              "config": config, "text_candidates": max(text_candidates, limit), "limit": limit}
    return _per_shape("keyword", (with_embedding, bounded), filter, values, compose)


def common_word_statistics() -> Query:
    """Return a SELECT of each lexeme ANALYZE counted as common in ``search_vector``, with its estimated ``rows``.

    No rows before the first ANALYZE (or without the table).
    """
    return sql.SQL(
        "SELECT m.lexeme, m.frequency * c.reltuples AS rows FROM pg_stats AS s JOIN pg_class AS c"
        " ON c.relname = s.tablename AND c.relnamespace::regnamespace::name = s.schemaname,"
        " unnest(s.most_common_elems::text::text[], s.most_common_elem_freqs) AS m(lexeme, frequency)"
        " WHERE c.oid = to_regclass('document_embeddings') AND s.attname = 'search_vector'"
        " AND m.frequency * c.reltuples > 0 ORDER BY 2 DESC, 1"
    ), {}


def by_ids(ids: Sequence[UUID]) -> Query:
    """Return a SELECT of the rows with the given ids."""
    p = Params()
    return sql.SQL("SELECT {} FROM document_embeddings WHERE embedding_id = ANY({})").format(
        _RESULT_COLUMNS, p.add(list(ids), "uuid[]")), p.values


def capabilities() -> Query:
    """Return a SELECT of pgvector's version, the vector index (method, options, comment), rows, invalid indexes.

    The row estimate is the planner's (``reltuples``); the comment is where a rebuild records its training rows.
    """
    return sql.SQL(
        "SELECT (SELECT extversion FROM pg_extension WHERE extname = 'vector') AS pgvector_version, "
        "idx.amname AS index_method, idx.reloptions AS index_options, "
        "obj_description(idx.oid, 'pg_class') AS index_comment, "
        "(SELECT reltuples::bigint FROM pg_class WHERE oid = to_regclass('document_embeddings')) AS table_rows, "
        "ARRAY(SELECT c.relname::text FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
        " WHERE i.indrelid = to_regclass('document_embeddings') AND NOT i.indisvalid ORDER BY 1)"
        " AS invalid_indexes "
        "FROM (SELECT 1) AS one LEFT JOIN LATERAL ("
        " SELECT c.oid, am.amname, c.reloptions FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid"
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


def sources_of_other_models(model: str) -> Query:
    """Return a SELECT of each source (type, id) whose chunks name an ``embedding_model`` other than ``model``."""
    p = Params()
    # Rows without the key (written through the vector store, not ingest) name no model: they are left out.
    return sql.SQL(
        "SELECT source_type, source_id, metadata->>'embedding_model' AS model, count(*) AS chunks "
        "FROM document_embeddings WHERE metadata ? 'embedding_model' AND metadata->>'embedding_model' <> {} "
        "GROUP BY 1, 2, 3 ORDER BY 1, 2, 3"
    ).format(p.add(model)), p.values


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
