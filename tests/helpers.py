"""Helpers shared by the test modules (fixtures stay in conftest.py): ``from helpers import test_settings``.

pytest puts tests/ on sys.path (rootdir conftest, no package), so every test folder imports this module by name.
"""

from __future__ import annotations

import os
from pathlib import Path

import psycopg

from sony_rag.database import Database
from sony_rag.settings import Settings

__all__ = ["HIDE_LANGCHAIN", "env_without_shop_extra", "restore_migration_vector_index", "test_settings",
           "without_fsync"]

# Two ways a Python without the shop extra looks (``sitecustomize`` bodies): langchain, not langchain_core, absent
# from sys.modules' point of view (find_spec returns None, import raises), or refused by an import hook in front
# of sys.meta_path (find_spec and import raise ModuleNotFoundError).
HIDE_LANGCHAIN = {
    "sys.modules": "import sys\nsys.modules['langchain'] = None\n",
    "meta path finder": (
        "import sys\n"
        "class HideLangchain:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        "        if name == 'langchain' or name.startswith('langchain.'):\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "        return None\n"
        "sys.meta_path.insert(0, HideLangchain)\n"
    ),
}


def env_without_shop_extra(folder: Path, how: str = "meta path finder", **variables: str) -> dict[str, str]:
    """Return an environment whose Python cannot import langchain (``HIDE_LANGCHAIN[how]``), plus ``variables``.

    Writes ``folder/sitecustomize.py``: a subprocess given this environment stands in for an install without the
    shop extra (``langchain_core`` and ``langgraph`` stay importable).
    """
    (folder / "sitecustomize.py").write_text(HIDE_LANGCHAIN[how], encoding="utf-8")
    return {**os.environ, "PYTHONPATH": str(folder), **variables}


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


def without_fsync(server_url: str) -> None:
    """Turn fsync off on a throwaway server this run started (PostgreSQL's non-durable settings for tests).

    Commits still write their WAL, so a stopped or killed server loses nothing acknowledged; only a crash of
    the machine could, and no test crashes the machine. Each commit and TRUNCATE stops waiting for the disk:
    a sixth off the database modules' time on CI's machine.
    """
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET fsync = off")
        conn.execute("SELECT pg_reload_conf()")
