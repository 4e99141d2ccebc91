"""Vector index management on a real Postgres: rebuilds on empty, tiny and medium tables keep searches
exact-count; lists sized from the rows; HNSW; CONCURRENTLY; the memory check; per-query probes; stats."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from langchain_core.embeddings import DeterministicFakeEmbedding

from sony_rag import Database, SonyVectorStore
from sony_rag.errors import IndexBuildError, InvalidInputError
from sony_rag.indexes import (
    VECTOR_INDEX,
    arebuild_vector_index,
    avector_index_stats,
    ivfflat_build_memory,
    rebuild_if_stale,
    rebuild_vector_index,
    vector_index_stats,
)
from sony_rag.operations import batch_insert_embeddings, search_similar_embeddings

MIB = 1024 * 1024
MANAGED_NAMES = ("idx_document_embeddings_vector_rebuild", "idx_document_embeddings_vector_old")


@pytest.fixture
def idb(db: Database) -> Iterator[Database]:
    """Return the emptied test database, and put back the migration's index (IVFFlat, lists=100) afterwards."""
    yield db
    with db.pool().connection() as conn:
        conn.execute("TRUNCATE document_embeddings")
    rebuild_vector_index(db, lists=100)


def unit_vectors(count: int, seed: int) -> npt.NDArray[np.float32]:
    """Return ``count`` random 384-d unit vectors."""
    vectors = np.random.default_rng(seed).standard_normal((count, 384)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)


def load(db: Database, vectors: npt.NDArray[np.float32], source_types: list[str] | None = None,
         start: int = 0) -> None:
    """Insert one row per vector, metadata ``i`` counting from ``start``; source types cycle (default 'product')."""
    types = source_types or ["product"]
    items = [{"source_type": types[i % len(types)], "source_id": f"s{i}", "content_chunk": f"chunk {i}",
              "embedding": vector, "metadata": {"i": i}} for i, vector in enumerate(vectors, start)]
    asyncio.run(batch_insert_embeddings(items, db=db))


def exact_top(vectors: npt.NDArray[np.float32], query: npt.NDArray[np.float32], k: int,
              among: list[int] | None = None) -> list[int]:
    """Return the ``i`` metadata of the ``k`` rows nearest ``query`` by cosine (restricted to ``among``)."""
    candidates = np.arange(len(vectors)) if among is None else np.asarray(among)
    distances = 1.0 - vectors[candidates] @ query
    return [int(candidates[j]) for j in np.argsort(distances, kind="stable")[:k]]


def index_row(db: Database) -> dict[str, Any]:
    """Return the vector index's access method and options as the catalog reports them."""
    with db.pool().connection() as conn:
        rows = conn.execute(
            "SELECT c.relname, am.amname, c.reloptions, i.indisvalid FROM pg_index i "
            "JOIN pg_class c ON c.oid = i.indexrelid JOIN pg_am am ON am.oid = c.relam "
            "WHERE i.indrelid = 'document_embeddings'::regclass AND am.amname IN ('ivfflat', 'hnsw')"
        ).fetchall()
    assert [row[0] for row in rows] == [VECTOR_INDEX], f"expected only the documented index, got {rows}"
    _name, method, options, valid = rows[0]
    assert valid
    return {"method": method, "options": sorted(options or [])}


def store(db: Database, **kwargs: Any) -> SonyVectorStore:
    """Return a store over ``db`` with 384-d fake embeddings."""
    return SonyVectorStore(DeterministicFakeEmbedding(size=384), db, **kwargs)


# -- rebuilds keep searches exact-count ---------------------------------------------------------------


def test_rebuild_on_empty_table_uses_one_list_and_later_searches_return_k(idb: Database) -> None:
    report = rebuild_vector_index(idb)
    assert (report.method, report.lists, report.rows, report.default_probes) == ("ivfflat", 1, 0, 1)
    assert index_row(idb) == {"method": "ivfflat", "options": ["lists=1"]}
    vectors = unit_vectors(60, seed=1)
    load(idb, vectors)
    for q in range(5):
        results = store(idb).similarity_search_with_score_by_vector(vectors[q], k=10)
        assert [doc.metadata["i"] for doc, _ in results] == exact_top(vectors, vectors[q], 10)


def test_rebuild_with_more_lists_than_rows_still_returns_k_rows(idb: Database) -> None:
    vectors = unit_vectors(80, seed=2)
    load(idb, vectors[:40], ["product", "faq"])
    report = rebuild_vector_index(idb, lists=200)
    assert report.lists == 200 and report.rows == 40
    assert any("rebuild after loading" in note for note in report.notes)
    load(idb, vectors[40:], ["product", "faq"], start=40)  # lands in whichever near-empty list is nearest
    faqs = [i for i in range(80) if i % 2 == 1]
    for q in range(5):
        query = unit_vectors(1, seed=100 + q)[0]
        found = store(idb).similarity_search_by_vector(query.tolist(), k=10, filter={"source_type": "faq"})
        assert [doc.metadata["i"] for doc in found] == exact_top(vectors, query, 10, faqs)
        matches = asyncio.run(search_similar_embeddings(query, limit=10, db=idb))
        assert [m["metadata"]["i"] for m in matches] == exact_top(vectors, query, 10)


def test_rebuild_sizes_lists_from_rows_and_searches_stay_exact_count(idb: Database) -> None:
    vectors = unit_vectors(3000, seed=4)
    load(idb, vectors)
    report = rebuild_vector_index(idb)
    assert (report.lists, report.rows, report.default_probes) == (3, 3000, 3)
    assert report.size_bytes > 0 and report.seconds > 0
    assert index_row(idb) == {"method": "ivfflat", "options": ["lists=3"]}
    capabilities = idb.capabilities()  # not the cached pre-rebuild facts
    assert capabilities.vector_index is not None and capabilities.vector_index.lists == 3
    query = unit_vectors(1, seed=5)[0]
    results = store(idb).similarity_search_by_vector(query.tolist(), k=10)
    assert [doc.metadata["i"] for doc in results] == exact_top(vectors, query, 10)


async def test_async_rebuild_matches_the_sync_one(idb: Database) -> None:
    vectors = unit_vectors(2500, seed=6)
    await batch_insert_embeddings([{"source_type": "product", "content_chunk": f"c{i}", "embedding": v,
                                    "metadata": {"i": i}} for i, v in enumerate(vectors)], db=idb)
    report = await arebuild_vector_index(idb)
    assert (report.lists, report.rows, report.concurrently) == (2, 2500, False)
    assert index_row(idb) == {"method": "ivfflat", "options": ["lists=2"]}
    results = await store(idb).asimilarity_search_by_vector(vectors[0].tolist(), k=10)
    assert [doc.metadata["i"] for doc in results] == exact_top(vectors, vectors[0], 10)


def test_hnsw_rebuild_keeps_exact_counts_under_a_one_percent_filter(idb: Database) -> None:
    vectors = unit_vectors(2000, seed=7)
    types = ["policy" if i % 100 == 0 else "product" for i in range(2000)]
    load(idb, vectors, types)
    report = rebuild_vector_index(idb, method="hnsw", m=8, ef_construction=32)
    assert (report.method, report.m, report.ef_construction, report.lists) == ("hnsw", 8, 32, None)
    assert report.default_ef_search == 40
    assert index_row(idb) == {"method": "hnsw", "options": ["ef_construction=32", "m=8"]}
    policies = [i for i, kind in enumerate(types) if kind == "policy"]
    for q in range(3):
        query = unit_vectors(1, seed=200 + q)[0]
        for extra in ({}, {"ef_search": 10}):
            found = store(idb).similarity_search_by_vector(query.tolist(), k=10, filter={"source_type": "policy"},
                                                           **extra)
            assert [doc.metadata["i"] for doc in found] == exact_top(vectors, query, 10, policies)
        unfiltered = store(idb).similarity_search_by_vector(query.tolist(), k=10)
        assert len(unfiltered) == 10


def test_probes_override_per_store_and_per_query(idb: Database) -> None:
    vectors = unit_vectors(2000, seed=8)
    load(idb, vectors)
    rebuild_vector_index(idb, lists=40)
    exhaustive = store(idb, probes=40)
    for q in range(5):
        query = unit_vectors(1, seed=300 + q)[0]
        truth = exact_top(vectors, query, 10)
        assert [d.metadata["i"] for d in exhaustive.similarity_search_by_vector(query.tolist(), k=10)] == truth
        per_query = store(idb).similarity_search_by_vector(query.tolist(), k=10, probes=40)
        assert [d.metadata["i"] for d in per_query] == truth


# -- concurrently ------------------------------------------------------------------------------------


def test_concurrent_rebuild_swaps_in_the_new_index_and_drops_leftovers(idb: Database) -> None:
    vectors = unit_vectors(2100, seed=9)
    load(idb, vectors)
    with idb.pool().connection() as conn:  # as an interrupted earlier rebuild would leave it
        conn.execute(f"CREATE INDEX {MANAGED_NAMES[0]} ON document_embeddings "
                     "USING ivfflat (embedding vector_cosine_ops) WITH (lists = 5)")
    report = rebuild_vector_index(idb, concurrently=True)
    assert (report.concurrently, report.lists, report.rows) == (True, 2, 2100)
    assert index_row(idb) == {"method": "ivfflat", "options": ["lists=2"]}  # and no leftover indexes
    results = store(idb).similarity_search_by_vector(vectors[3].tolist(), k=10)
    assert [doc.metadata["i"] for doc in results] == exact_top(vectors, vectors[3], 10)


async def test_async_concurrent_hnsw_rebuild(idb: Database) -> None:
    vectors = unit_vectors(1500, seed=10)
    await batch_insert_embeddings([{"source_type": "faq", "content_chunk": f"c{i}", "embedding": v,
                                    "metadata": {"i": i}} for i, v in enumerate(vectors)], db=idb)
    report = await arebuild_vector_index(idb, method="hnsw", m=8, ef_construction=16, concurrently=True)
    assert (report.method, report.concurrently, report.rows) == ("hnsw", True, 1500)
    assert index_row(idb) == {"method": "hnsw", "options": ["ef_construction=16", "m=8"]}
    results = await store(idb).asimilarity_search_by_vector(vectors[0].tolist(), k=10)
    # HNSW is approximate on random vectors: the count is exact, the order need not be.
    assert len(results) == 10 and results[0].metadata["i"] == 0


def test_concurrent_rebuild_without_an_existing_index_creates_it(idb: Database) -> None:
    with idb.pool().connection() as conn:
        conn.execute(f"DROP INDEX {VECTOR_INDEX}")
    idb.forget_capabilities()
    load(idb, unit_vectors(30, seed=11))
    report = rebuild_vector_index(idb, concurrently=True)
    assert report.lists == 1
    assert index_row(idb) == {"method": "ivfflat", "options": ["lists=1"]}


# -- memory ------------------------------------------------------------------------------------------


def build_memory(db: Database, rows: int, lists: int) -> int:
    """Return the k-means memory the connected server's pgvector version checks (its arithmetic changed in 0.7)."""
    return ivfflat_build_memory(rows, lists, pgvector_version=db.capabilities().pgvector_version)


def test_memory_estimate_agrees_with_pgvector(idb: Database, database_url: str) -> None:
    load(idb, unit_vectors(1200, seed=12))
    with psycopg.connect(database_url) as conn:  # a transaction: nothing is kept
        conn.execute("SET LOCAL maintenance_work_mem = '1MB'")
        with pytest.raises(psycopg.errors.ProgramLimitExceeded) as raised:
            conn.execute("CREATE INDEX ON document_embeddings USING ivfflat (embedding vector_cosine_ops) "
                         "WITH (lists = 1000)")
    reported_mb = int(str(raised.value).split("memory required is ")[1].split(" MB")[0])
    # pgvector prints the requirement as whole MB rounded down, plus one.
    assert reported_mb == build_memory(idb, 1200, 1000) // MIB + 1


def test_memory_estimate_matches_the_field_note() -> None:
    # FIELD-NOTES: 384-d, lists=500 on 500k rows needs ~88 MB (pgvector: "memory required is 88 MB").
    assert ivfflat_build_memory(500_000, 500) // MIB + 1 == 88
    # pgvector 0.7 added a float aggregate of the new centers (lists x dimensions) to the same check.
    assert ivfflat_build_memory(500_000, 500, pgvector_version=(0, 8, 1)) - ivfflat_build_memory(500_000, 500) \
        == 4 * 500 * 384
    assert ivfflat_build_memory(50, 100) == 0  # fewer rows than lists: no k-means, nothing checked


def maintenance_work_mem(db: Database) -> int:
    """Return the maintenance_work_mem a pooled connection has, in bytes."""
    with db.pool().connection() as conn:
        row = conn.execute("SELECT pg_size_bytes(current_setting('maintenance_work_mem'))").fetchone()
    assert row is not None
    return int(row[0])


def load_more_than_memory_allows(db: Database, seed: int) -> tuple[int, int]:
    """Load 1,200 rows, whose IVFFlat build with 1,000 lists needs more than the server's maintenance_work_mem;
    return (bytes needed, bytes the server gives), or skip when the server gives enough."""
    load(db, unit_vectors(1200, seed=seed))
    needed, current = build_memory(db, 1200, 1000), maintenance_work_mem(db)
    if current >= needed:
        pytest.skip("this server's maintenance_work_mem already covers the build")
    return needed, current


def test_build_needing_more_memory_than_allowed_raises_and_changes_nothing(idb: Database) -> None:
    needed, current = load_more_than_memory_allows(idb, seed=13)
    before = index_row(idb)
    with pytest.raises(IndexBuildError, match=f"needs about {-(-needed // MIB)} MB") as raised:
        rebuild_vector_index(idb, lists=1000, max_memory_mb=8)
    assert "max_memory_mb" in str(raised.value)
    assert index_row(idb) == before
    # Allowed to raise the setting for the build alone, the same build succeeds.
    report = rebuild_vector_index(idb, lists=1000)
    assert report.memory_required_bytes == needed
    assert report.maintenance_work_mem_bytes >= needed
    assert maintenance_work_mem(idb) == current  # SET LOCAL: pooled connections keep their setting


def test_concurrent_build_raises_maintenance_work_mem_on_its_own_connection_only(idb: Database, mode: str) -> None:
    needed, current = load_more_than_memory_allows(idb, seed=14)

    def rebuild() -> Any:
        if mode == "sync":
            return rebuild_vector_index(idb, lists=1000, concurrently=True)
        return asyncio.run(arebuild_vector_index(idb, lists=1000, concurrently=True))

    if idb.transaction_pooler:  # a session setting would not stay with the build behind a pooler
        with pytest.raises(IndexBuildError, match="behind a transaction pooler"):
            rebuild()
        return
    # CREATE INDEX CONCURRENTLY runs outside a transaction: the setting is a session one, on the build's connection.
    report = rebuild()
    assert (report.concurrently, report.lists) == (True, 1000)
    assert report.maintenance_work_mem_bytes >= needed
    assert index_row(idb) == {"method": "ivfflat", "options": ["lists=1000"]}
    assert maintenance_work_mem(idb) == current


@pytest.mark.parametrize("kwargs", [
    {"method": "flat"}, {"lists": 0}, {"lists": 40000}, {"lists": "many"}, {"lists": True},
    {"method": "hnsw", "lists": 10}, {"method": "hnsw", "m": 1}, {"method": "hnsw", "m": 16, "ef_construction": 20},
    {"concurrently": "yes"}, {"max_memory_mb": 0},
])
def test_invalid_options_raise_before_anything_changes(idb: Database, kwargs: dict[str, Any]) -> None:
    before = index_row(idb)
    with pytest.raises(InvalidInputError):
        rebuild_vector_index(idb, **kwargs)
    assert index_row(idb) == before


# -- stats -------------------------------------------------------------------------------------------


def test_stats_report_rows_indexes_and_the_vector_index(idb: Database) -> None:
    load(idb, unit_vectors(30, seed=14), ["product", "product", "faq"])
    rebuild_vector_index(idb)
    store(idb).similarity_search_by_vector(unit_vectors(1, seed=15)[0].tolist(), k=3)
    stats = vector_index_stats(idb)
    assert set(stats) == {"pgvector_version", "tables", "document_embeddings_by_source_type", "vector_index",
                          "index_problems", "indexes"}
    assert stats["index_problems"] == [] and stats["vector_index"]["trained_rows"] == 30
    assert stats["tables"]["document_embeddings"] == 30
    assert set(stats["tables"]) == {"chat_sessions", "chat_messages", "document_embeddings", "user_text_selections"}
    assert stats["document_embeddings_by_source_type"] == {"faq": 10, "product": 20}
    assert stats["vector_index"]["name"] == VECTOR_INDEX
    assert (stats["vector_index"]["method"], stats["vector_index"]["lists"]) == ("ivfflat", 1)
    assert stats["vector_index"]["default_probes"] == 1 and stats["vector_index"]["size_bytes"] > 0
    assert str(stats["pgvector_version"]).count(".") == 2
    names = {row["index"] for row in stats["indexes"]}
    assert {VECTOR_INDEX, "idx_document_embeddings_source_type", "idx_chat_messages_session_id"} <= names
    assert all(set(row) == {"table", "index", "idx_scan", "size_bytes"} for row in stats["indexes"])
    scans = [row["idx_scan"] for row in stats["indexes"]]
    assert scans == sorted(scans, reverse=True)
    assert asyncio.run(avector_index_stats(idb))["tables"] == stats["tables"]


# -- index health ------------------------------------------------------------------------------------


def test_stats_report_an_ivfflat_index_trained_on_far_fewer_rows_and_ingest_rebuilds_it(idb: Database) -> None:
    with idb.pool().connection() as conn:  # as migrated: 100 lists built on the empty table
        conn.execute(f"DROP INDEX {VECTOR_INDEX}")
        conn.execute(f"CREATE INDEX {VECTOR_INDEX} ON document_embeddings USING ivfflat "
                     "(embedding vector_cosine_ops) WITH (lists = 100)")
    idb.forget_capabilities()
    load(idb, unit_vectors(152, seed=21))
    problems = vector_index_stats(idb)["index_problems"]
    assert [p["kind"] for p in problems] == ["stale_ivfflat"]
    assert "152" in problems[0]["message"] and problems[0]["fix"] == "sony-rag index rebuild"

    said: list[str] = []
    report = rebuild_if_stale(idb, log=said.append)
    assert report is not None and (report.lists, report.rows) == (1, 152)
    assert len(said) == 1 and "152 rows" in said[0]
    stats = vector_index_stats(idb)
    assert stats["index_problems"] == [] and stats["vector_index"]["trained_rows"] == 152
    assert rebuild_if_stale(idb, log=said.append) is None  # trained on what the table holds: left alone
    load(idb, unit_vectors(200, seed=22), start=152)  # the table more than doubles
    assert rebuild_if_stale(idb, log=said.append) is not None


def migration_index(db: Database) -> None:
    """Put back the index as the migration makes it: IVFFlat, 100 lists, built on the empty table, no comment."""
    with db.pool().connection() as conn:
        conn.execute("TRUNCATE document_embeddings")
        conn.execute(f"DROP INDEX {VECTOR_INDEX}")
        conn.execute(f"CREATE INDEX {VECTOR_INDEX} ON document_embeddings USING ivfflat "
                     "(embedding vector_cosine_ops) WITH (lists = 100)")
    db.forget_capabilities()


def items(vectors: npt.NDArray[np.float32]) -> list[dict[str, Any]]:
    """Return one batch_insert_embeddings item per vector."""
    return [{"source_type": "product", "source_id": f"s{i}", "content_chunk": f"chunk {i}", "embedding": vector,
             "metadata": {"i": i}} for i, vector in enumerate(vectors)]


def test_batch_insert_retrains_the_migrations_ivfflat_index_when_told_to(
        idb: Database, caplog: pytest.LogCaptureFixture) -> None:
    migration_index(idb)
    vectors = unit_vectors(1_500, seed=24)
    asyncio.run(batch_insert_embeddings(items(vectors[:1_200]), db=idb))
    assert index_row(idb) == {"method": "ivfflat", "options": ["lists=100"]}  # not told: untouched
    assert vector_index_stats(idb)["vector_index"]["trained_rows"] is None

    with caplog.at_level("INFO", logger="sony_rag"):
        ids = asyncio.run(batch_insert_embeddings(items(vectors[1_200:]), db=idb, rebuild_stale_index=True))
    assert len(ids) == 300
    assert index_row(idb) == {"method": "ivfflat", "options": ["lists=1"]}  # sized for 1,500 rows
    stats = vector_index_stats(idb)
    assert stats["vector_index"]["trained_rows"] == 1_500 and stats["index_problems"] == []
    assert any("rebuilt the IVFFlat index for 1500 rows" in record.getMessage() for record in caplog.records)
    # Trained on what the table holds: a further small batch leaves it alone.
    asyncio.run(batch_insert_embeddings(items(vectors[:10]), db=idb, rebuild_stale_index=True))
    assert vector_index_stats(idb)["vector_index"]["trained_rows"] == 1_500
    found = asyncio.run(search_similar_embeddings(vectors[7], limit=1, db=idb))
    assert found[0]["similarity"] > 0.999


def test_batch_insert_leaves_an_hnsw_index_alone_and_refuses_a_non_bool_flag(idb: Database) -> None:
    load(idb, unit_vectors(30, seed=25))
    rebuild_vector_index(idb, method="hnsw")
    asyncio.run(batch_insert_embeddings(items(unit_vectors(100, seed=26)), db=idb, rebuild_stale_index=True))
    assert index_row(idb)["method"] == "hnsw"
    with pytest.raises(InvalidInputError, match="rebuild_stale_index"):
        asyncio.run(batch_insert_embeddings(items(unit_vectors(1, seed=27)), db=idb,
                                            rebuild_stale_index="yes"))  # type: ignore[arg-type]
    assert vector_index_stats(idb)["tables"]["document_embeddings"] == 130  # nothing written


def test_stats_report_an_index_left_invalid_by_a_failed_concurrent_build(idb: Database, database_url: str) -> None:
    load(idb, unit_vectors(20, seed=23))
    with psycopg.connect(database_url, autocommit=True) as conn:
        # A unique index over duplicate values fails after CREATE INDEX CONCURRENTLY registered it: left INVALID.
        conn.execute("INSERT INTO document_embeddings (source_type, source_id, content_chunk, embedding) "
                     "SELECT source_type, source_id, content_chunk, embedding FROM document_embeddings LIMIT 1")
        with pytest.raises(psycopg.errors.UniqueViolation):
            conn.execute("CREATE UNIQUE INDEX CONCURRENTLY idx_document_embeddings_vector_rebuild "
                         "ON document_embeddings (source_id)")
    try:
        problems = vector_index_stats(idb)["index_problems"]
        assert [p["kind"] for p in problems if p["kind"] == "invalid_index"] == ["invalid_index"]
        assert "idx_document_embeddings_vector_rebuild" in problems[-1]["message"]
        rebuild_vector_index(idb)  # the fix the report names drops the leftover first
        assert [p for p in vector_index_stats(idb)["index_problems"] if p["kind"] == "invalid_index"] == []
    finally:
        with psycopg.connect(database_url, autocommit=True) as conn:
            conn.execute("DROP INDEX IF EXISTS idx_document_embeddings_vector_rebuild")
