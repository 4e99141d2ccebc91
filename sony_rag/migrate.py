"""The migration runner: applies ``migrations/*.sql`` in order, once each, and records what it applied.

Each pending file is applied in its own transaction under a Postgres advisory lock, so concurrent runners
apply everything exactly once, and is recorded with its SHA-256 in ``sony_rag_migrations``; an applied file
that changed is refused. The command is ``sony-rag migrate [--test]``; ``python -m sony_rag.migrate`` is the
same command under another name (same options, output and exit codes). ``--test`` is ``sony_rag.schema_check``.
"""

from __future__ import annotations

import hashlib
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from typing import Any

import psycopg
from psycopg.rows import dict_row

from sony_rag.database import Database
from sony_rag.errors import ChecksumMismatchError, MigrationError
from sony_rag.sql import migrations as migration_sql

__all__ = ["Migration", "applied_migrations", "available_migrations", "main", "migrate"]


@dataclass(frozen=True)
class Migration:
    """One numbered SQL file shipped in ``migrations/``."""

    version: str
    name: str
    sql_text: str

    @property
    def checksum(self) -> str:
        """Return the SHA-256 of the file's text."""
        return hashlib.sha256(self.sql_text.encode("utf-8")).hexdigest()


def available_migrations() -> list[Migration]:
    """Return the shipped migration files in the order they apply."""
    folder = resources.files("sony_rag.migrations")
    found = []
    for entry in folder.iterdir():
        if entry.name.endswith(".sql"):
            stem = entry.name.removesuffix(".sql")
            found.append(Migration(stem.split("_", 1)[0], stem, entry.read_text(encoding="utf-8")))
    return sorted(found, key=lambda migration: migration.version)


def applied_migrations(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """Return ``{version: checksum}`` of the migrations recorded in the database (empty when none)."""
    cursor = conn.cursor(row_factory=dict_row)
    exists = cursor.execute(*migration_sql.ledger_exists()).fetchone()
    if not exists or not exists["exists"]:
        return {}
    return {row["version"]: row["checksum"] for row in cursor.execute(*migration_sql.applied())}


def migrate(db: Database, *, log: Callable[[str], None] = lambda line: None) -> list[str]:
    """Apply pending migrations and return the names applied; raises ChecksumMismatchError or MigrationError."""
    migrations = available_migrations()
    applied_names: list[str] = []
    # A plain connection: the vector type that the pools register does not exist before 001 has run.
    with db.connect() as conn:
        for migration in migrations:
            with conn.transaction():
                conn.execute(*migration_sql.lock())
                conn.execute(*migration_sql.create_ledger())
                applied = applied_migrations(conn)
                _check_checksums(migrations, applied)
                if migration.version in applied:
                    continue
                try:
                    # A file is a script of many statements: psycopg sends bytes without parsing placeholders.
                    conn.execute(migration.sql_text.encode("utf-8"))  # type: ignore[call-overload]
                except psycopg.Error as error:
                    raise MigrationError(f"{migration.name} failed and was rolled back: {error}") from error
                conn.execute(*migration_sql.record(migration.version, migration.name, migration.checksum))
            applied_names.append(migration.name)
            log(f"applied {migration.name}")
    if applied_names:
        db.reset()  # pools opened before the vector type existed must register it
    return applied_names


def _check_checksums(migrations: Sequence[Migration], applied: dict[str, str]) -> None:
    for migration in migrations:
        recorded = applied.get(migration.version)
        if recorded is not None and recorded != migration.checksum:
            raise ChecksumMismatchError(
                f"{migration.name} was changed after it was applied (checksum {recorded[:12]}... in the database,"
                f" {migration.checksum[:12]}... on disk); restore the file and put the change in a new migration"
            )


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sony-rag migrate`` with ``argv`` (default: the process arguments) and return its exit code."""
    from sony_rag.cli import main as cli_main

    return cli_main(["migrate", *(sys.argv[1:] if argv is None else argv)])


if __name__ == "__main__":
    sys.exit(main())
