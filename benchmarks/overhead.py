"""Python overhead per search: the server's own execution time (EXPLAIN ANALYZE), a no-op round trip, a bare
psycopg query and sony-rag's search, per query, on each index kind; the differences are what the client
side costs, in microseconds. Two steps in between split sony-rag's cost: its own statement alone (prepared, the
settings set once for the session) and that statement with its settings sent as sony-rag sends them (SET LOCAL,
pipelined in the same round trip).

    python -m benchmarks.overhead [--queries 200] [--smoke]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from langchain_core.documents import Document
from psycopg.rows import dict_row

from benchmarks.common import Bench, K, Report, VectorsOnly, run_standalone, why_not
from sony_rag import SonyVectorStore, plans
from sony_rag.executor import Fetch, SetLocal, _settings_statement
from sony_rag.retrieval import SearchRequest, search_plan

COLUMNS = ["index", "measure", "p50 us", "p95 us", "us over bare", "x bare"]
STATEMENT = ("SELECT embedding_id, source_type, source_id, content_chunk, metadata, created_at, updated_at, "
             "document_id, embedding <=> %(q)s AS distance FROM document_embeddings "
             "ORDER BY embedding <=> %(q)s LIMIT 10")
# The same search for what a LangChain Document is made of, as a store's caller gets it: the floor any vector
# store on this table stands on.
DOCUMENT_STATEMENT = ("SELECT embedding_id, document_id, content_chunk, metadata, embedding <=> %(q)s AS distance "
                      "FROM document_embeddings ORDER BY embedding <=> %(q)s LIMIT 10")
STORE = "sony-rag SonyVectorStore search"
FLOOR = "bare psycopg + LangChain Documents from its rows"
PEER = "langchain-postgres PGVectorStore search (same table, same index)"


def _p(values: list[float]) -> tuple[float, float]:
    ordered = sorted(values)
    return statistics.median(ordered), ordered[min(len(ordered) - 1, round(0.95 * len(ordered)) - 1)]


def sony_statement(bench: Bench, query: Any) -> tuple[dict[str, str], Fetch]:
    """Return the settings and the statement sony-rag's store sends for an unfiltered search of ``query``."""
    steps = search_plan(SearchRequest.of(query, k=K), bench.db.capabilities(), plans.HybridOptions()).start()
    step = next(steps)
    settings: dict[str, str] = {}
    if isinstance(step, SetLocal):
        settings = dict(step.settings)
        step = steps.send(None)
    assert isinstance(step, Fetch)
    return settings, step


def run_index(bench: Bench, method: str, report: Report) -> None:
    """Measure server, round-trip, bare and sony-rag times for every query on ``method``'s index."""
    bench.ensure_index(method)
    settings = plans.ann_settings(bench.db.capabilities(), K)
    store = SonyVectorStore(VectorsOnly(), bench.db)
    planning: list[float] = []
    execution: list[float] = []
    noop: list[float] = []
    bare: list[float] = []
    statement: list[float] = []
    pipelined: list[float] = []
    sony: list[float] = []
    floor: list[float] = []
    peer: list[float] = []
    peer_search, engine = _peer(bench, method, settings, report)
    with bench.connect() as conn, bench.connect() as session, bench.connect() as local, \
            bench.connect() as probe, bench.connect() as documents:
        for name, value in settings.items():
            documents.execute("SELECT set_config(%s, %s, false)", (name, value))
        for name, value in settings.items():
            probe.execute("SELECT set_config(%s, %s, false)", (name, value))
            conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        for name, value in sony_statement(bench, bench.data.queries[0])[0].items():
            session.execute("SELECT set_config(%s, %s, false)", (name, value))

        def statement_alone(query: Any) -> list[Any]:
            step = sony_statement(bench, query)[1]
            return session.cursor(row_factory=dict_row).execute(step.query, step.params).fetchall()

        # Where the store sends no settings (HNSW on pgvector 0.6 at pgvector's defaults), this row sends the
        # ones it would otherwise: what skipping them saves.
        sent = sony_statement(bench, bench.data.queries[0])[0] or {**settings, "plan_cache_mode": "force_generic_plan"}

        def statement_pipelined(query: Any) -> list[Any]:
            step = sony_statement(bench, query)[1]
            step_settings = sent
            cursor = local.cursor(row_factory=dict_row)
            with local.pipeline():
                local.execute(*_settings_statement(step_settings, local=True))
                cursor.execute(step.query, step.params)
            return cursor.fetchall()

        def bare_statement(query: Any) -> list[Any]:
            return conn.execute(STATEMENT, {"q": query}).fetchall()

        def store_search(query: Any) -> list[Any]:
            return store.similarity_search_with_score_by_vector(query, k=K)

        def bare_documents(query: Any) -> list[Any]:
            return [(Document(id=row[1] or str(row[0]), page_content=row[2], metadata=row[3]), row[4])
                    for row in documents.execute(DOCUMENT_STATEMENT, {"q": query}).fetchall()]

        # Timed in turn, each query starting with the next contender: the first to meet a query vector pays for
        # bringing its part of the index into the CPU caches, which the later ones find warm.
        contenders: list[tuple[Callable[[Any], list[Any]], list[float]]] = [
            (bare_statement, bare), (statement_alone, statement), (statement_pipelined, pipelined),
            (store_search, sony), (bare_documents, floor)]
        if peer_search is not None:
            contenders.append((peer_search, peer))
        queries = bench.data.queries
        for query in queries[:5]:  # warm up: prepared statements, caches, the pools
            for search, _ in contenders:
                search(query)

        for turn, query in enumerate(queries):
            first = turn % len(contenders)
            for search, durations in contenders[first:] + contenders[:first]:
                started = time.perf_counter()
                found = search(query)
                durations.append((time.perf_counter() - started) * 1e6)
                if len(found) != K:
                    raise RuntimeError(f"expected {K} rows from {search.__name__}, got {len(found)}")
            plan = probe.execute("EXPLAIN (ANALYZE, TIMING OFF, FORMAT JSON) " + STATEMENT, {"q": query}).fetchone()
            assert plan is not None
            explained: dict[str, Any] = plan[0][0]
            planning.append(explained["Planning Time"] * 1000)
            execution.append(explained["Execution Time"] * 1000)
            started = time.perf_counter()
            probe.execute("SELECT 1").fetchall()
            noop.append((time.perf_counter() - started) * 1e6)
    if engine is not None:
        asyncio.run(engine.close())
    bare_p50 = _p(bare)[0]
    label = "IVFFlat" if method == "ivfflat" else "HNSW"
    rows = [("server execution (EXPLAIN ANALYZE, TIMING OFF)", execution),
            ("server planning (EXPLAIN ANALYZE)", planning),
            ("no-op round trip (SELECT 1)", noop),
            ("bare psycopg: one prepared statement", bare),
            ("sony-rag's statement alone (prepared, session settings)", statement),
            ("sony-rag's statement with its settings pipelined (SET LOCAL)", pipelined),
            (STORE, sony), (FLOOR, floor)]
    if peer:
        rows.append((PEER, peer))
    for name, values in rows:
        p50, p95 = _p(values)
        compared = any(values is timed for timed in (sony, statement, pipelined, floor, peer))
        report.add(index=label, measure=name, **{"p50 us": p50, "p95 us": p95,
                                                 "us over bare": p50 - bare_p50 if compared else None,
                                                 "x bare": p50 / bare_p50 if compared else None})
    if label == "HNSW":
        ratio = _p(sony)[0] / bare_p50
        report.target("HNSW SonyVectorStore search vs bare prepared statement", ratio, "<= 1.10x", ratio <= 1.10)
        if peer:
            to_peer = _p(sony)[0] / _p(peer)[0]
            report.target("HNSW SonyVectorStore search vs langchain-postgres PGVectorStore", to_peer, "<= 1.0x",
                          to_peer <= 1.0)


def _peer(bench: Bench, method: str, settings: dict[str, str],
          report: Report) -> tuple[Callable[[Any], list[Any]] | None, Any]:
    """Return langchain-postgres PGVectorStore's search on the same table and index (and its engine), if installed."""
    if not bench.options.langchain:
        return None, None
    try:
        from benchmarks.search import langchain_v2

        search, engine = langchain_v2(bench, method, settings)
    except Exception as error:  # the peer is optional: its absence is reported, not fatal
        report.notes.append(f"langchain-postgres PGVectorStore not measured: {why_not(error)}")
        return None, None
    return (lambda query: search(query, False)), engine


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
        "The timed searches take turns query by query, each query starting with the next one (the first to "
        "meet a query vector finds the index pages it needs cold in the CPU caches); EXPLAIN and SELECT 1 run on "
        "a fifth connection, after them. "
        "sony-rag's search checks the query vector and filter, takes a pooled connection (checked with an "
        "empty query only when idle for over a second), sends the index settings (set_config, local) and the "
        "statement in one pipelined round trip (settings that also work behind PgBouncer; none at all for HNSW "
        "on pgvector 0.6 at pgvector's defaults, where the row with settings sends those it would otherwise), "
        "and builds "
        "LangChain Documents from the rows. The two rows in between split that: sony-rag's statement alone "
        "(its plan choice and exact fallback in one statement, prepared, run by its generic plan) on a "
        "connection whose settings were set once, then the same with the settings sent per call as sony-rag "
        "sends them; what remains is the pool, the executor, the checks and the Documents. "
        f"'{FLOOR}' is the floor any LangChain vector store on this table stands on: the same index query for "
        "the columns a Document is made of, on a dedicated connection, and Documents built from its rows with no "
        f"check of the input. '{PEER}' is langchain-postgres's current store searching document_embeddings itself "
        "(same rows, same index, the same ef_search/probes), through its sync API.")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the overhead benchmark alone; return the exit code."""
    return run_standalone("overhead", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
