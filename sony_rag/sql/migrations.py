"""SQL of the migration runner: the advisory lock every runner queues on, and the ledger of applied files."""

from __future__ import annotations

from psycopg import sql

from sony_rag.sql import Params, Query

# An arbitrary constant shared by every runner ("SonyRAG" in ASCII) so they queue on one advisory lock.
MIGRATION_LOCK_KEY = 0x536F6E79524147


def lock() -> Query:
    """Return the transaction-scoped advisory lock that serialises concurrent runners."""
    p = Params()
    return sql.SQL("SELECT pg_advisory_xact_lock({})").format(p.add(MIGRATION_LOCK_KEY, "bigint")), p.values


def create_ledger() -> Query:
    """Return the CREATE of the ``sony_rag_migrations`` ledger when it does not exist yet."""
    return sql.SQL(
        "CREATE TABLE IF NOT EXISTS sony_rag_migrations (version TEXT PRIMARY KEY, name TEXT NOT NULL, "
        "checksum TEXT NOT NULL, applied_at TIMESTAMPTZ NOT NULL DEFAULT NOW())"
    ), {}


def ledger_exists() -> Query:
    """Return a SELECT of one boolean column ``exists``: whether the ledger table is there."""
    return sql.SQL("SELECT to_regclass('sony_rag_migrations') IS NOT NULL AS exists"), {}


def applied() -> Query:
    """Return a SELECT of ``(version, checksum)`` of every recorded migration."""
    return sql.SQL("SELECT version, checksum FROM sony_rag_migrations ORDER BY version"), {}


def record(version: str, name: str, checksum: str) -> Query:
    """Return the INSERT recording one applied migration."""
    p = Params()
    return sql.SQL("INSERT INTO sony_rag_migrations (version, name, checksum) VALUES ({}, {}, {})").format(
        p.add(version), p.add(name), p.add(checksum)), p.values
