"""Helpers shared by the test modules (fixtures stay in conftest.py): ``from helpers import test_settings``.

pytest puts tests/ on sys.path (rootdir conftest, no package), so every test folder imports this module by name.
"""

from __future__ import annotations

from sony_rag.database import Database
from sony_rag.settings import Settings

__all__ = ["restore_migration_vector_index", "test_settings"]


def test_settings(**overrides: object) -> Settings:
    """Return Settings for tests: small pools, quick retries, the environment's pooler flag."""
    values: dict[str, object] = {"pool_min_size": 1, "pool_max_size": 8, "connect_retries": 2,
                                 "connect_backoff": 0.05, "pool_timeout": 10.0, "embeddings": "fake"}
    values.update(overrides)
    return Settings(**values)  # type: ignore[arg-type]


test_settings.__test__ = False  # type: ignore[attr-defined]


def restore_migration_vector_index(db: Database) -> None:
    """Put the vector index back as migration 001 makes it (IVFFlat, lists=100) when a test changed it.

    ``sony-rag ingest`` retrains a stale IVFFlat index and ``index rebuild`` replaces it; the next test (and the
    schema comparison, which reads the shared database behind a pooler) expects the migration's index.
    """
    with db.pool().connection() as conn:
        row = conn.execute("SELECT indexdef FROM pg_indexes WHERE indexname = 'idx_document_embeddings_vector'"
                           ).fetchone()
        definition = "" if row is None else str(row[0]).replace(" ", "")
        if "USINGivfflat" not in definition or "lists='100'" not in definition:
            conn.execute("DROP INDEX IF EXISTS idx_document_embeddings_vector")
            conn.execute("CREATE INDEX idx_document_embeddings_vector ON document_embeddings "
                         "USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100)")
    db.forget_capabilities()
