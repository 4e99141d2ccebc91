"""The statements read replicas need: where a primary's WAL ends, and how far a replica has replayed it."""

from __future__ import annotations

from psycopg import sql

from sony_rag.sql import Query


def write_position() -> Query:
    """Return the primary's WAL insert position as text: sent right after a COMMIT, it is at or past the commit."""
    return sql.SQL("SELECT pg_current_wal_insert_lsn()::text AS position"), {}


def replay_state() -> Query:
    """Return whether the server is a standby and how far it has replayed the primary's WAL (NULL on a primary)."""
    return sql.SQL("SELECT pg_is_in_recovery() AS in_recovery, pg_last_wal_replay_lsn()::text AS replayed"), {}
