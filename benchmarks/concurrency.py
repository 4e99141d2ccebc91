"""Throughput under concurrency: N async clients (default 16) searching for S seconds (default 20) on the
IVFFlat index sony-rag builds by default; queries per second and latency under load, beside a bare
psycopg async pool and langchain-postgres's PGVectorStore on the same table and index.

    python -m benchmarks.concurrency [--clients 16] [--seconds 20] [--smoke]
"""

from __future__ import annotations

import asyncio
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import numpy as np

from benchmarks.common import Bench, K, Report, VectorsOnly, percentiles, run_standalone, sqlalchemy_url, why_not
from sony_rag import SonyVectorStore, plans

COLUMNS = ["contender", "clients", "seconds", "queries", "qps", "p50 ms", "p95 ms", "x bare qps"]
SONY = "sony-rag SonyVectorStore.asimilarity_search_by_vector"
BARE = "bare psycopg AsyncConnectionPool"
LC_V2 = "langchain-postgres PGVectorStore.asimilarity_search_by_vector"

AsyncSearch = Callable[[np.ndarray], Awaitable[Any]]


async def hammer(search: AsyncSearch, queries: np.ndarray, clients: int, seconds: float) -> dict[str, Any]:
    """Run ``clients`` tasks calling ``search`` back to back for ``seconds``; return counts and latencies."""
    durations: list[float] = []
    deadline = time.perf_counter() + seconds

    async def client(offset: int) -> None:
        index = offset
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await search(queries[index % len(queries)])
            durations.append(time.perf_counter() - started)
            index += clients

    await asyncio.gather(*(search(queries[i % len(queries)]) for i in range(clients)))  # warm every connection
    started = time.perf_counter()
    await asyncio.gather(*(client(i) for i in range(clients)))
    elapsed = time.perf_counter() - started
    p50, p95 = percentiles(durations)
    return {"clients": clients, "seconds": elapsed, "queries": len(durations), "qps": len(durations) / elapsed,
            "p50 ms": p50, "p95 ms": p95}


async def sony_run(bench: Bench) -> dict[str, Any]:
    """Measure sony-rag's async store search with a pool of ``clients`` connections."""
    db = bench.database(pool_min_size=bench.options.clients, pool_max_size=bench.options.clients)
    try:
        store = SonyVectorStore(VectorsOnly(), db)

        async def search(query: np.ndarray) -> Any:
            return await store.asimilarity_search_with_score_by_vector(query, k=K)

        return await hammer(search, bench.data.queries, bench.options.clients, bench.options.seconds)
    finally:
        await db.aclose()


async def bare_run(bench: Bench, settings: dict[str, str]) -> dict[str, Any]:
    """Measure a bare psycopg async pool running the same statement with the same index settings."""
    from pgvector.psycopg import register_vector_async
    from psycopg_pool import AsyncConnectionPool

    async def configure(conn: Any) -> None:
        await register_vector_async(conn)
        for name, value in settings.items():
            await conn.execute("SELECT set_config(%s, %s, false)", (name, value))

    statement = ("SELECT embedding_id, source_type, source_id, content_chunk, metadata, created_at, updated_at, "
                 "document_id, embedding <=> %(q)s AS distance FROM document_embeddings "
                 "ORDER BY embedding <=> %(q)s LIMIT 10")
    clients = bench.options.clients
    async with AsyncConnectionPool(bench.url, min_size=clients, max_size=clients, configure=configure,
                                   kwargs={"autocommit": True}, open=False) as pool:
        await pool.open(wait=True)

        async def search(query: np.ndarray) -> Any:
            async with pool.connection() as conn:
                cursor = await conn.execute(statement, {"q": query})
                return await cursor.fetchall()

        return await hammer(search, bench.data.queries, clients, bench.options.seconds)


async def langchain_run(bench: Bench, settings: dict[str, str]) -> dict[str, Any]:
    """Measure langchain-postgres PGVectorStore on document_embeddings with an engine pool of ``clients``."""
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_postgres import PGEngine, PGVectorStore
    from langchain_postgres.v2.indexes import IVFFlatQueryOptions
    from sqlalchemy.ext.asyncio import create_async_engine

    clients = bench.options.clients
    # An engine on this loop (from_engine): PGEngine.from_connection_string would run every call on its
    # own background thread's loop.
    engine = PGEngine.from_engine(create_async_engine(sqlalchemy_url(bench, "psycopg"), pool_size=clients,
                                                      max_overflow=0))
    try:
        store = await PGVectorStore.create(
            engine, DeterministicFakeEmbedding(size=384), "document_embeddings", content_column="content_chunk",
            embedding_column="embedding", id_column="embedding_id", metadata_json_column="metadata",
            metadata_columns=["source_type"],
            index_query_options=IVFFlatQueryOptions(probes=int(settings["ivfflat.probes"])))

        async def search(query: np.ndarray) -> Any:
            return await store.asimilarity_search_with_score_by_vector(query.tolist(), k=K)

        return await hammer(search, bench.data.queries, clients, bench.options.seconds)
    finally:
        await engine.close()


def run(bench: Bench) -> Report:
    """Measure throughput of each contender and return the report."""
    build = bench.ensure_index("ivfflat")
    settings = plans.ann_settings(bench.db.capabilities(), K)
    options = bench.options
    report = Report("concurrency", f"Throughput, {options.clients} async clients x {options.seconds:g} s, "
                                   f"{options.rows:,} rows, IVFFlat lists={build.lists} "
                                   f"probes={settings.get('ivfflat.probes')}", COLUMNS)
    results: dict[str, dict[str, Any]] = {}
    results[BARE] = asyncio.run(bare_run(bench, settings))
    results[SONY] = asyncio.run(sony_run(bench))
    if options.langchain:
        try:
            results[LC_V2] = asyncio.run(langchain_run(bench, settings))
        except Exception as error:
            report.notes.append(f"{LC_V2} not measured: {why_not(error)}")
    bare_qps = results[BARE]["qps"]
    for name, result in results.items():
        report.add(contender=name, **result, **{"x bare qps": result["qps"] / bare_qps})
    report.notes.append(f"{bench.machine['cpus']} CPU cores shared by the client process and the server; every "
                        "contender has a pool of exactly as many connections as clients.")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the concurrency benchmark alone; return the exit code."""
    return run_standalone("concurrency", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
