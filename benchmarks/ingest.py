"""Ingest: sony-rag's batch_insert_embeddings and SonyVectorStore.add_embeddings against a bare binary COPY
of the same rows into the same table (the physical limit) and against langchain-postgres.

    python -m benchmarks.ingest [--rows 100000] [--lc-rows 10000] [--smoke]
"""

from __future__ import annotations

import asyncio
import statistics
import sys
import uuid
from collections.abc import Callable
from typing import Any

from benchmarks.common import (
    COPY_COLUMNS,
    COPY_TYPES,
    Bench,
    Report,
    VectorsOnly,
    run_standalone,
    sqlalchemy_url,
    timed,
    why_not,
)
from sony_rag import SonyVectorStore
from sony_rag.operations import batch_insert_embeddings

LC_V1_BATCH = 5_000  # one INSERT ... VALUES per call; 5 parameters a row must stay under Postgres's 65,535
BARE_V1_TABLE = "bare psycopg binary COPY into PGVector's own table"
BARE = "bare psycopg binary COPY (prepared tuples)"
ASYNC = "sony-rag batch_insert_embeddings (async)"
STORE = "sony-rag SonyVectorStore.add_embeddings"
ROUNDS = 3
COLUMNS = ["method", "rows", "seconds", "rows/s", "x bare COPY", "x PGVector.add_embeddings"]


def count_rows(bench: Bench, table: str) -> int:
    """Return the number of rows in one of the benchmark's tables."""
    assert table in ("document_embeddings", "langchain_pg_embedding", "lc_v2_embeddings")
    with bench.connect() as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else 0


def bare_copy(bench: Bench, rows: list[tuple[Any, ...]]) -> None:
    """COPY prepared rows into document_embeddings on a plain connection, in one transaction."""
    statement = f"COPY document_embeddings ({', '.join(COPY_COLUMNS)}) FROM STDIN WITH (FORMAT BINARY)"
    with bench.connect() as conn, conn.transaction(), conn.cursor() as cursor, cursor.copy(statement) as copy:
        copy.set_types(list(COPY_TYPES))
        for row in rows:
            copy.write_row(row)


def bare_copy_v1_table(bench: Bench, rows: list[tuple[Any, ...]]) -> None:
    """COPY the same rows into PGVector's own table (emptied first), in one transaction."""
    with bench.connect() as conn:
        conn.execute("TRUNCATE langchain_pg_embedding")
        found = conn.execute("SELECT uuid FROM langchain_pg_collection WHERE name = 'bench'").fetchone()
        assert found is not None
        statement = ("COPY langchain_pg_embedding (id, collection_id, embedding, document, cmetadata) "
                     "FROM STDIN WITH (FORMAT BINARY)")
        with conn.transaction(), conn.cursor() as cursor, cursor.copy(statement) as copy:
            copy.set_types(["varchar", "uuid", "vector", "varchar", "jsonb"])
            for row in rows:
                copy.write_row((str(row[0]), found[0], row[4], row[3], row[5]))


def run(bench: Bench) -> Report:
    """Measure every ingest path and return the report."""
    data, n = bench.data, bench.options.rows
    report = Report("ingest", f"Ingest {n:,} rows of 384-d vectors (rows/s, higher is better)", COLUMNS)
    # Inputs are built before the clock starts, once per contender, from the same vectors and texts.
    copy_rows = list(data.copy_rows())
    items = [{"source_type": row[1], "source_id": row[2], "content_chunk": row[3], "embedding": row[4],
              "metadata": data.metadata(i)} for i, row in enumerate(copy_rows)]
    texts = data.texts
    vectors = [data.vectors[i] for i in range(n)]
    metadatas = [{**data.metadata(i), "source_type": data.source_types[i], "source_id": f"src-{i // 4}"}
                 for i in range(n)]
    speeds: dict[str, float] = {}

    def measure(name: str, rows: int, table: str, call: Any) -> None:
        seconds, _ = timed(call)
        stored = count_rows(bench, table)
        if stored != rows:
            raise RuntimeError(f"{name} stored {stored} rows, expected {rows}")
        speeds[name] = rows / seconds
        report.add(method=name, rows=rows, seconds=seconds, **{"rows/s": rows / seconds})

    # No statement timeout: on a loaded shared machine one 100k-row COPY has taken longer than the default 30 s,
    # and the bare COPY it is compared with has none either.
    db = bench.database(statement_timeout_ms=0)
    store = SonyVectorStore(VectorsOnly(), db)
    contenders: dict[str, Callable[[], Any]] = {
        BARE: lambda: bare_copy(bench, copy_rows),
        ASYNC: lambda: asyncio.run(batch_insert_embeddings(items, db=db)),
        STORE: lambda: store.add_embeddings(texts, vectors, metadatas),
    }
    # In rounds, each contender once per round into the emptied table: on a shared machine the load drifts,
    # and each round's ratio compares ours with the bare COPY under the same load.
    rates: dict[str, list[float]] = {name: [] for name in contenders}
    for _ in range(1 if bench.options.smoke else ROUNDS):
        for name, call in contenders.items():
            bench.truncate()
            seconds, _ = timed(call)
            stored = count_rows(bench, "document_embeddings")
            if stored != n:
                raise RuntimeError(f"{name} stored {stored} rows, expected {n}")
            rates[name].append(n / seconds)
    bench.truncate()
    db.close()
    for name, rounds in rates.items():
        speeds[name] = statistics.median(rounds)
        report.add(method=name, rows=n, seconds=n / speeds[name], **{"rows/s": speeds[name]})

    lc_n = min(bench.options.lc_rows, n)
    # langchain-postgres declares list[list[float]] (PGVectorStore refuses numpy arrays): lists, made untimed.
    lc_vectors = [vector.tolist() for vector in vectors[:lc_n]]
    if bench.options.langchain:
        try:
            pgvector_v1 = langchain_pgvector(bench)
            ids = [str(uuid.uuid4()) for _ in range(lc_n)]

            def add_v1() -> None:
                for start in range(0, lc_n, LC_V1_BATCH):
                    end = min(lc_n, start + LC_V1_BATCH)
                    pgvector_v1.add_embeddings(texts[start:end], lc_vectors[start:end], metadatas[start:end],
                                               ids=ids[start:end])

            measure("langchain-postgres PGVector.add_embeddings", lc_n, "langchain_pg_embedding", add_v1)
            report.notes.append(f"PGVector.add_embeddings is called with {LC_V1_BATCH:,} rows at a time: it sends "
                                "one INSERT with 5 bind parameters per row, and Postgres allows 65,535.")
            measure(BARE_V1_TABLE, n, "langchain_pg_embedding", lambda: bare_copy_v1_table(bench, copy_rows))
        except Exception as error:
            report.notes.append(f"langchain-postgres PGVector.add_embeddings not measured: {why_not(error)}")
        try:
            engine, store_v2 = _langchain_v2(bench)
            try:
                measure("langchain-postgres PGVectorStore.aadd_embeddings", lc_n, "lc_v2_embeddings",
                        lambda: asyncio.run(store_v2.aadd_embeddings(texts[:lc_n], lc_vectors,
                                                                     metadatas=metadatas[:lc_n])))
            finally:
                asyncio.run(engine.close())
        except Exception as error:
            report.notes.append(f"langchain-postgres PGVectorStore.aadd_embeddings not measured: {why_not(error)}")
    else:
        report.notes.append("langchain-postgres comparisons skipped (--no-langchain)")

    bare = speeds.get(BARE)
    v1 = speeds.get("langchain-postgres PGVector.add_embeddings")
    for row in report.rows:
        rate = row["rows/s"]
        row["x bare COPY"] = rate / bare if bare else None
        row["x PGVector.add_embeddings"] = rate / v1 if v1 else None
    for name in (ASYNC, STORE):
        short = name.split(" ", 1)[1]
        if bare and name in speeds:
            ratios = sorted(ours / copy for ours, copy in zip(rates[name], rates[BARE], strict=True))
            ratio = statistics.median(ratios)
            report.target(f"{short} vs bare COPY", ratio, ">= 0.9x", ratio >= 0.9,
                          f"per round {ratios[0]:.2f}-{ratios[-1]:.2f}x over {len(ratios)} rounds")
        if v1 and name in speeds:
            ratio = speeds[name] / v1
            report.target(f"{short} vs PGVector.add_embeddings", ratio, ">= 15x", ratio >= 15)
    if BARE_V1_TABLE in speeds and v1:
        report.notes.append(
            f"On PGVector's own table (no full-text column, no vector or btree indexes) even a bare COPY is "
            f"{speeds[BARE_V1_TABLE] / v1:.0f}x PGVector.add_embeddings; on document_embeddings, whose generated "
            "tsvector column with its GIN index, IVFFlat index and four btree indexes are maintained per row, the "
            f"bare COPY is {bare / v1 if bare else float('nan'):.0f}x: that table work bounds the ratio.")
    report.notes.append(
        f"Every contender writes the same {n:,} rows (langchain-postgres: the first {lc_n:,}) of text, 384-d "
        "numpy vector and jsonb metadata; sony-rag and the bare COPY into document_embeddings with all its "
        "indexes, langchain-postgres into its own tables (PGVector: langchain_pg_embedding; PGVectorStore: a "
        "table of the same shape made by init_vectorstore_table). sony-rag's calls include validating every "
        "row; the bare COPY gets ready-made tuples. The bare COPY and sony-rag's two paths run in rounds (each "
        "once per round, into the emptied table); rows/s is the median over rounds.")
    return report


def langchain_pgvector(bench: Bench, probes: int | None = None) -> Any:
    """Return langchain-postgres's PGVector (v1) on the benchmark database, collection 'bench'."""
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_postgres import PGVector

    args: dict[str, Any] = {}
    if probes is not None:
        # PGVector has no setting for it; a connection option sets it for every session of its engine.
        args = {"connect_args": {"options": f"-c ivfflat.probes={probes}"}}
    return PGVector(DeterministicFakeEmbedding(size=384), connection=sqlalchemy_url(bench, "psycopg"),
                    embedding_length=384, collection_name="bench", use_jsonb=True, engine_args=args)


def _langchain_v2(bench: Bench) -> tuple[Any, Any]:
    """Return (PGEngine, PGVectorStore) on a new table of document_embeddings' shape."""
    from langchain_core.embeddings import DeterministicFakeEmbedding
    from langchain_postgres import Column, PGEngine, PGVectorStore

    engine = PGEngine.from_connection_string(sqlalchemy_url(bench, "psycopg"))
    engine.init_vectorstore_table(
        "lc_v2_embeddings", 384, metadata_columns=[Column("source_type", "VARCHAR(50)"), Column("source_id", "TEXT")],
        overwrite_existing=True)
    store = PGVectorStore.create_sync(engine, DeterministicFakeEmbedding(size=384), "lc_v2_embeddings",
                                      metadata_columns=["source_type", "source_id"])
    return engine, store


def main(argv: list[str] | None = None) -> int:
    """Run the ingest benchmark alone; return the exit code."""
    return run_standalone("ingest", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
