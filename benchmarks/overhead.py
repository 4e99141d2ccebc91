"""Python overhead per search: the server's own execution time (EXPLAIN ANALYZE), a no-op round trip, a bare
psycopg query and sony-rag's search, per query, on each index kind; the differences are what the client
side costs, in microseconds.

    python -m benchmarks.overhead [--queries 200] [--smoke]
"""

from __future__ import annotations

import statistics
import sys
import time
from collections.abc import Sequence
from typing import Any

from benchmarks.common import Bench, K, Report, VectorsOnly, run_standalone
from sony_rag import SonyVectorStore, plans

COLUMNS = ["index", "measure", "p50 us", "p95 us", "us over bare"]
STATEMENT = ("SELECT embedding_id, source_type, source_id, content_chunk, metadata, created_at, updated_at, "
             "document_id, embedding <=> %(q)s AS distance FROM document_embeddings "
             "ORDER BY embedding <=> %(q)s LIMIT 10")


def _p(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]


def run_index(bench: Bench, method: str, report: Report) -> None:
    """Measure server, round-trip, bare and sony-rag times for every query on ``method``'s index."""
    bench.ensure_index(method)
    settings = plans.ann_settings(bench.db.capabilities(), K)
    store = SonyVectorStore(VectorsOnly(), bench.db)
    planning: list[float] = []
    execution: list[float] = []
    noop: list[float] = []
    bare: list[float] = []
    sony: list[float] = []
    with bench.connect() as conn:
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        queries = bench.data.queries
        for query in queries[:5]:  # warm up: prepared statements, caches, the pool
            conn.execute(STATEMENT, {"q": query}).fetchall()
            store.similarity_search_with_score_by_vector(query, k=K)
        for query in queries:
            plan = conn.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + STATEMENT, {"q": query}).fetchone()
            assert plan is not None
            explained: dict[str, Any] = plan[0][0]
            planning.append(explained["Planning Time"] * 1000)
            execution.append(explained["Execution Time"] * 1000)
            started = time.perf_counter()
            conn.execute("SELECT 1").fetchall()
            noop.append((time.perf_counter() - started) * 1e6)
            started = time.perf_counter()
            rows = conn.execute(STATEMENT, {"q": query}).fetchall()
            bare.append((time.perf_counter() - started) * 1e6)
            started = time.perf_counter()
            found = store.similarity_search_with_score_by_vector(query, k=K)
            sony.append((time.perf_counter() - started) * 1e6)
            if len(found) != K or len(rows) != K:
                raise RuntimeError(f"expected {K} rows, got {len(found)} from sony-rag and {len(rows)} bare")
    bare_p50 = _p(bare)[0]
    label = "IVFFlat" if method == "ivfflat" else "HNSW"
    for name, values in (("server execution (EXPLAIN ANALYZE, TIMING OFF)", execution),
                         ("server planning (EXPLAIN ANALYZE)", planning),
                         ("no-op round trip (SELECT 1)", noop),
                         ("bare psycopg: one prepared statement", bare),
                         ("sony-rag SonyVectorStore search", sony)):
        p50, p95 = _p(values)
        report.add(index=label, measure=name, **{"p50 us": p50, "p95 us": p95,
                                                 "us over bare": p50 - bare_p50 if values is sony else None})


def run(bench: Bench) -> Report:
    """Measure per-search overhead on both index kinds (HNSW first when it is already built)."""
    report = Report("overhead", f"Client-side cost per search, k=10, {bench.options.rows:,} rows "
                                f"({bench.options.queries} queries, microseconds)", COLUMNS)
    methods = ["hnsw", "ivfflat"] if bench.index == "hnsw" else ["ivfflat", "hnsw"]
    for method in methods:
        run_index(bench, method, report)
    report.notes.append(
        "EXPLAIN ANALYZE plans the statement for the given vector and counts rows as it runs, so its times can "
        "exceed the whole round trip of the bare statement, which psycopg has prepared (planned once). "
        "The column that matters is sony-rag's time over the bare statement: the same server work, so the "
        "difference is what sony-rag's client side costs per search. "
        "The bare statement runs on one dedicated connection with the index settings set once for the session. "
        "sony-rag's search checks the query vector and filter, takes a pooled connection (checked with an "
        "empty query only when idle for over a second), sends the index settings (set_config, local) and the "
        "statement in one pipelined round trip (settings that also work behind PgBouncer), and builds "
        "LangChain Documents from the rows.")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the overhead benchmark alone; return the exit code."""
    return run_standalone("overhead", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
