"""Search at k=10: p50/p95 latency, recall@10 against exact search and rows returned, for IVFFlat (lists and
probes chosen automatically) and HNSW (defaults), unfiltered and with a source_type filter matching 1 % of
rows; sony-rag beside a bare psycopg query and langchain-postgres on the same data and index.

    python -m benchmarks.search [--rows 100000] [--queries 200] [--smoke]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
from psycopg.types.json import Jsonb

from benchmarks.common import (
    FILTER_TYPE,
    Bench,
    Dataset,
    K,
    Report,
    VectorsOnly,
    percentiles,
    run_standalone,
    sqlalchemy_url,
    why_not,
)
from sony_rag import SonyVectorStore, plans
from sony_rag.operations import search_similar_embeddings

COLUMNS = ["index", "contender", "filter", "p50 ms", "p95 ms", "recall@10", "rows min", "rows mean", "x bare"]
RESULT_COLUMNS = ("embedding_id, source_type, source_id, content_chunk, metadata, created_at, updated_at, "
                  "document_id")
SONY_STORE = "sony-rag SonyVectorStore"
SONY_ASYNC = "sony-rag search_similar_embeddings (async)"
BARE = "bare psycopg ORDER BY <=> LIMIT"
BARE_EXACT = "bare psycopg exact scan"
LC_V2 = "langchain-postgres PGVectorStore"
LC_V1 = "langchain-postgres PGVector (own table)"
SONY_HYBRID = "sony-rag hybrid (SonyVectorStore)"
# Shopper-like texts over the benchmark's vocabulary, where every word is held by about 20 % of rows (a worst
# case for the text index): two words together (about 2 % of rows), a sentence with one catalogue word and
# words no row holds, and codes and numbers only a few rows hold.
HYBRID_TEXTS = ("walnut sofa", "oak table", "something in brass for a narrow hallway", "collection 417 walnut",
                "velvet chair", "a linen thing for the guest room", "chunk 5150")

Search = Callable[[np.ndarray, bool], list[int]]  # (query, filtered) -> row indexes, closest first


def measure(name: str, search: Search, data: Dataset, filtered: bool, limit: int | None = None) -> dict[str, Any]:
    """Time ``search`` over the queries and score it against the exact answers."""
    truth = data.filtered_truth if filtered else data.truth
    queries = data.queries if limit is None else data.queries[:limit]
    search(queries[0], filtered)  # warm up: prepared statements, pools, caches
    durations, recalls, counts = [], [], []
    for index, query in enumerate(queries):
        started = time.perf_counter()
        found = search(query, filtered)
        durations.append(time.perf_counter() - started)
        recalls.append(len(set(found) & set(truth[index])) / K)
        counts.append(len(found))
    p50, p95 = percentiles(durations)
    return {"contender": name, "filter": "1 % source_type" if filtered else "none", "p50 ms": p50, "p95 ms": p95,
            "recall@10": float(np.mean(recalls)), "rows min": min(counts), "rows mean": float(np.mean(counts))}


def measure_async(name: str, search: Callable[[np.ndarray, bool], Any], data: Dataset,
                  filtered: bool) -> dict[str, Any]:
    """Time an async search over the queries inside one event loop."""
    async def run() -> dict[str, Any]:
        results: list[list[int]] = []
        durations: list[float] = []
        await search(data.queries[0], filtered)
        for query in data.queries:
            started = time.perf_counter()
            results.append(await search(query, filtered))
            durations.append(time.perf_counter() - started)
        truth = data.filtered_truth if filtered else data.truth
        p50, p95 = percentiles(durations)
        return {"contender": name, "filter": "1 % source_type" if filtered else "none", "p50 ms": p50,
                "p95 ms": p95,
                "recall@10": float(np.mean([len(set(r) & set(t)) / K for r, t in zip(results, truth, strict=True)])),
                "rows min": min(len(r) for r in results), "rows mean": float(np.mean([len(r) for r in results]))}

    return asyncio.run(run())


def _bare_statements(conn: Any, unfiltered: str, filtered: str) -> Search:
    """Return a search running one of two fixed statements on ``conn`` (``filtered`` takes the 1 % type)."""

    def search(query: np.ndarray, with_filter: bool) -> list[int]:
        if with_filter:
            rows = conn.execute(filtered, {"q": query, "t": FILTER_TYPE}).fetchall()
        else:
            rows = conn.execute(unfiltered, {"q": query}).fetchall()
        return [Dataset.index_of(row[0]) for row in rows]

    return search


def bare_search(bench: Bench, settings: dict[str, str]) -> tuple[Search, Any]:
    """Return a bare psycopg search on one connection with the index settings sony-rag would use."""
    conn = bench.connect()
    for name, value in settings.items():
        conn.execute("SELECT set_config(%s, %s, false)", (name, value))
    unfiltered = (f"SELECT {RESULT_COLUMNS}, embedding <=> %(q)s AS distance FROM document_embeddings "
                  "ORDER BY embedding <=> %(q)s LIMIT 10")
    filtered = (f"SELECT {RESULT_COLUMNS}, embedding <=> %(q)s AS distance FROM document_embeddings "
                "WHERE source_type = %(t)s ORDER BY embedding <=> %(q)s LIMIT 10")

    return _bare_statements(conn, unfiltered, filtered), conn


def bare_exact(bench: Bench) -> tuple[Search, Any]:
    """Return a bare exact search (the distance is fenced off from ORDER BY, so no vector index serves it)."""
    conn = bench.connect()
    base = ("SELECT {cols}, distance FROM (SELECT *, embedding <=> %(q)s AS distance FROM document_embeddings "
            "{where} OFFSET 0) AS d ORDER BY distance LIMIT 10")
    unfiltered = base.format(cols=RESULT_COLUMNS, where="")
    filtered = base.format(cols=RESULT_COLUMNS, where="WHERE source_type = %(t)s")

    return _bare_statements(conn, unfiltered, filtered), conn


def sony_searches(bench: Bench) -> tuple[Search, Callable[[np.ndarray, bool], Any]]:
    """Return sony-rag's LangChain store search and its documented async search."""
    store = SonyVectorStore(VectorsOnly(), bench.db)

    def store_search(query: np.ndarray, with_filter: bool) -> list[int]:
        documents = store.similarity_search_with_score_by_vector(
            query, k=K, filter={"source_type": FILTER_TYPE} if with_filter else None)
        return [Dataset.index_of(str(document.id)) for document, _ in documents]

    async def documented(query: np.ndarray, with_filter: bool) -> list[int]:
        matches = await search_similar_embeddings(query, source_type=FILTER_TYPE if with_filter else None,
                                                  limit=K, db=bench.db)
        return [Dataset.index_of(match["embedding_id"]) for match in matches]

    return store_search, documented


def sony_hybrid(bench: Bench) -> Search:
    """Return sony-rag's hybrid search, each query paired with one of HYBRID_TEXTS."""
    store = SonyVectorStore(VectorsOnly(), bench.db)
    texts = {query.tobytes(): HYBRID_TEXTS[index % len(HYBRID_TEXTS)] for index, query in enumerate(bench.data.queries)}

    def search(query: np.ndarray, with_filter: bool) -> list[int]:
        documents = store.similarity_search_with_score_by_vector(
            query, k=K, filter={"source_type": FILTER_TYPE} if with_filter else None, search_mode="hybrid",
            query_text=texts[query.tobytes()])
        return [Dataset.index_of(str(document.id)) for document, _ in documents]

    return search


def langchain_v2(bench: Bench, method: str, settings: dict[str, str]) -> tuple[Search, Any]:
    """Return langchain-postgres PGVectorStore searching document_embeddings itself (same rows, same index)."""
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_postgres import PGEngine, PGVectorStore
    from langchain_postgres.v2.indexes import HNSWQueryOptions, IVFFlatQueryOptions

    options: Any = (IVFFlatQueryOptions(probes=int(settings["ivfflat.probes"])) if method == "ivfflat"
                    else HNSWQueryOptions(ef_search=int(settings["hnsw.ef_search"])))
    engine = PGEngine.from_connection_string(sqlalchemy_url(bench, "psycopg"))
    store = PGVectorStore.create_sync(
        engine, DeterministicFakeEmbedding(size=384), "document_embeddings", content_column="content_chunk",
        embedding_column="embedding", id_column="embedding_id", metadata_json_column="metadata",
        metadata_columns=["source_type"], index_query_options=options)

    def search(query: np.ndarray, with_filter: bool) -> list[int]:
        pairs = store.similarity_search_with_score_by_vector(
            query.tolist(), k=K, filter={"source_type": {"$eq": FILTER_TYPE}} if with_filter else None)
        return [Dataset.index_of(str(document.id)) for document, _ in pairs]

    return search, engine


def langchain_v1(bench: Bench, lists: int, probes: int) -> Search:
    """Return langchain-postgres PGVector on its own table, loaded with the same rows and an equal IVFFlat index."""
    from benchmarks.ingest import langchain_pgvector

    store = langchain_pgvector(bench, probes=probes)
    with bench.connect() as conn:
        conn.execute("TRUNCATE langchain_pg_embedding")
        collection = conn.execute("SELECT uuid FROM langchain_pg_collection WHERE name = 'bench'").fetchone()
        assert collection is not None
        with conn.cursor() as cursor, cursor.copy(
                "COPY langchain_pg_embedding (id, collection_id, embedding, document, cmetadata) "
                "FROM STDIN WITH (FORMAT BINARY)") as copy:
            copy.set_types(["varchar", "uuid", "vector", "varchar", "jsonb"])
            data = bench.data
            for i in range(data.rows):
                copy.write_row((str(i), collection[0], data.vectors[i], data.texts[i],
                                Jsonb({**data.metadata(i), "source_type": data.source_types[i]})))
        conn.execute("DROP INDEX IF EXISTS lc_v1_vector")
        conn.execute(f"CREATE INDEX lc_v1_vector ON langchain_pg_embedding USING ivfflat "
                     f"(embedding vector_cosine_ops) WITH (lists = {int(lists)})")
        conn.execute("VACUUM ANALYZE langchain_pg_embedding")

    def search(query: np.ndarray, with_filter: bool) -> list[int]:
        pairs = store.similarity_search_with_score_by_vector(
            query.tolist(), k=K, filter={"source_type": {"$eq": FILTER_TYPE}} if with_filter else None)
        return [int(document.id) for document, _ in pairs]

    return search


def run_index(bench: Bench, method: str, report: Report) -> None:
    """Build ``method``'s index with sony-rag's defaults and measure every contender on it."""
    build = bench.ensure_index(method)
    capabilities = bench.db.capabilities()
    settings = plans.ann_settings(capabilities, K)
    label = (f"IVFFlat lists={build.lists} probes={settings.get('ivfflat.probes')}" if method == "ivfflat"
             else f"HNSW m={build.m} ef_construction={build.ef_construction} "
                  f"ef_search={settings.get('hnsw.ef_search')}")
    report.notes.append(f"{label}: built by rebuild_vector_index in {build.seconds:.1f} s "
                        f"(maintenance_work_mem {build.maintenance_work_mem_bytes // 2**20} MB, "
                        f"index {build.size_bytes / 2**20:.0f} MB)")
    data = bench.data
    store_search, documented = sony_searches(bench)
    hybrid = sony_hybrid(bench)
    bare, bare_conn = bare_search(bench, settings)
    rows: list[dict[str, Any]] = []
    try:
        for filtered in (False, True):
            bare_row = measure(BARE, bare, data, filtered)
            rows.append(bare_row)
            rows.append(measure(SONY_STORE, store_search, data, filtered))
            rows.append(measure_async(SONY_ASYNC, documented, data, filtered))
            rows.append(measure(SONY_HYBRID, hybrid, data, filtered))
    finally:
        bare_conn.close()
    exact, exact_conn = bare_exact(bench)
    try:
        rows.append(measure(BARE_EXACT, exact, data, True))
        if method == "ivfflat":
            rows.append(measure(BARE_EXACT, exact, data, False, limit=min(50, len(data.queries))))
    finally:
        exact_conn.close()
    if bench.options.langchain:
        try:
            lc_search, engine = langchain_v2(bench, method, settings)
            try:
                for filtered in (False, True):
                    rows.append(measure(LC_V2, lc_search, data, filtered))
            finally:
                asyncio.run(engine.close())
        except Exception as error:
            report.notes.append(f"{LC_V2} on {method} not measured: {why_not(error)}")
        if method == "ivfflat":
            try:
                assert build.lists is not None
                v1 = langchain_v1(bench, build.lists, int(settings["ivfflat.probes"]))
                for filtered in (False, True):
                    rows.append(measure(LC_V1, v1, data, filtered))
            except Exception as error:
                report.notes.append(f"{LC_V1} not measured: {why_not(error)}")
    bare_p50 = {row["filter"]: row["p50 ms"] for row in rows if row["contender"] == BARE}
    exact_p50 = {row["filter"]: row["p50 ms"] for row in rows if row["contender"] == BARE_EXACT}
    for row in rows:
        row["index"] = "IVFFlat" if method == "ivfflat" else "HNSW"
        row["x bare"] = row["p50 ms"] / bare_p50[row["filter"]] if row["contender"] != BARE else 1.0
        report.add(**row)
    sony = {(row["contender"], row["filter"]): row for row in rows if row["contender"].startswith("sony-rag")}
    name = "IVFFlat" if method == "ivfflat" else "HNSW"
    for contender in (SONY_STORE, SONY_ASYNC):
        plain = sony[(contender, "none")]
        report.target(f"{name} {contender} p50 vs bare", plain["x bare"], "<= 1.2x", plain["x bare"] <= 1.2)
    plain = sony[(SONY_STORE, "none")]
    report.target(f"{name} recall@10 at defaults", plain["recall@10"], ">= 0.95", plain["recall@10"] >= 0.95)
    minimum = min(sony[(c, "1 % source_type")]["rows min"] for c in (SONY_STORE, SONY_ASYNC))
    report.target(f"{name} filtered search returns 10 rows", float(minimum), "always 10", minimum == K)
    for filter_label in ("none", "1 % source_type"):
        ratio = sony[(SONY_HYBRID, filter_label)]["p50 ms"] / sony[(SONY_STORE, filter_label)]["p50 ms"]
        report.target(f"{name} hybrid p50 vs vector p50, filter {filter_label}", ratio, "<= 2x", ratio <= 2.0)
    filtered_store = sony[(SONY_STORE, "1 % source_type")]
    if "1 % source_type" in exact_p50:
        ratio = filtered_store["p50 ms"] / exact_p50["1 % source_type"]
        report.notes.append(f"{name}, 1 % filter: sony-rag returns the exact top-10 in {ratio:.2f}x the time of a "
                            "bare exact filtered scan (it counts the 1 % and ranks them exactly).")


def run(bench: Bench) -> Report:
    """Measure search on both index kinds and return the report."""
    report = Report("search", f"Search, k=10, {bench.options.rows:,} rows, {bench.options.queries} queries "
                              f"({bench.options.data} data)", COLUMNS)
    run_index(bench, "ivfflat", report)
    run_index(bench, "hnsw", report)
    report.notes.append(
        f"'{BARE}' is one statement on one connection with the same probes/ef_search sony-rag sets; it returns "
        "whatever the index yields. sony-rag runs the same statement inside a transaction that sets them with "
        "SET LOCAL (so it also works behind PgBouncer) and picks its plan in the statement: a source_type filter "
        "matching fewer than 2,000 rows is ranked exactly, and when the index yields fewer than k rows an exact "
        f"scan follows (docs/pgvector.md). "
        f"'{BARE_EXACT}' fences the distance off from ORDER BY (exact; filtered rows via the btree). "
        f"{LC_V2} searches document_embeddings itself with the same probes/ef_search (index_query_options); "
        f"{LC_V1} uses its own tables, loaded with the same rows and an IVFFlat index with the same lists and "
        "probes (set as a connection option; PGVector has no setting for it); it is not measured on HNSW, "
        "which would take a second HNSW build. "
        f"'{SONY_HYBRID}' fuses the same vector search with the text leg, over texts cycling through "
        f"{list(HYBRID_TEXTS)}; its recall@10 is against the vector-only truth, so it only shows how far the "
        "text leg moves the ranking.")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the search benchmark alone; return the exit code."""
    return run_standalone("search", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
