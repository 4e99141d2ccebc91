"""The executor steps replicas use, on the shared test server: Together and AfterCommit, sync and async."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from helpers import test_settings
from psycopg import sql

from sony_rag.database import Database
from sony_rag.executor import AfterCommit, PlanGenerator, SetLocal, Together, fetch, plan
from sony_rag.replicas import parse_position
from sony_rag.sql import replicas as replica_sql
from sony_rag.sql import sessions as session_sql


@pytest.fixture(params=["direct", "pooled"])
def database(request: pytest.FixtureRequest, database_url: str) -> Iterator[Database]:
    """Return a Database on the test server, as a direct connection and as if behind a transaction pooler."""
    # "direct" keeps the run's own setting: the pooler pass reaches the server through PgBouncer.
    pooled: dict[str, Any] = {"transaction_pooler": True} if request.param == "pooled" else {}
    with Database(database_url, settings=test_settings(**pooled)) as db:
        yield db


def run(db: Database, plan_: Any, mode: str) -> Any:
    return db.run(plan_) if mode == "sync" else asyncio.run(db.arun(plan_))


@plan(read_only=False)
def create_then_position(session_id: uuid.UUID, url: str) -> PlanGenerator[tuple[int, str]]:
    """Insert a session, then read the WAL position after the commit (and look from ``url`` before it)."""
    yield fetch(session_sql.insert(session_id, None, None, {}))
    with psycopg.connect(url) as other:  # before the commit: another connection cannot see the row yet
        hidden = other.execute("SELECT count(*) FROM chat_sessions WHERE session_id = %s", [session_id]).fetchone()
    rows = yield AfterCommit(fetch(replica_sql.write_position()))
    return int(hidden[0]) if hidden else -1, str(rows[0]["position"])


def test_after_commit_runs_its_statement_once_the_write_is_committed(database: Database, database_url: str,
                                                                     mode: str) -> None:
    session = uuid.uuid4()
    with psycopg.connect(database_url) as conn:
        before = conn.execute("SELECT pg_current_wal_insert_lsn()::text").fetchone()
    hidden, position = run(database, create_then_position(session, database_url), mode)
    assert hidden == 0
    assert before is not None and parse_position(position) > parse_position(before[0])
    with psycopg.connect(database_url) as conn:
        assert conn.execute("SELECT count(*) FROM chat_sessions WHERE session_id = %s", [session]).fetchone() == (1,)
        assert conn.execute("SELECT pg_current_wal_insert_lsn() >= %s::pg_lsn", [position]).fetchone() == (True,)
        conn.execute("DELETE FROM chat_sessions WHERE session_id = %s", [session])
        conn.commit()


@plan(read_only=False)
def step_after_the_commit() -> PlanGenerator[None]:
    """Misuse: a step after AfterCommit."""
    yield AfterCommit(fetch(replica_sql.write_position()))
    yield fetch((sql.SQL("SELECT 1"), {}))


@plan(read_only=True)
def commit_in_a_read() -> PlanGenerator[None]:
    """Misuse: AfterCommit in a read-only plan."""
    yield AfterCommit(fetch(replica_sql.write_position()))


def test_after_commit_is_refused_outside_the_end_of_a_write(database: Database, mode: str) -> None:
    with pytest.raises(TypeError, match="last step"):
        run(database, step_after_the_commit(), mode)
    with pytest.raises(TypeError, match="write plan"):
        run(database, commit_in_a_read(), mode)


@plan(read_only=True)
def two_together() -> PlanGenerator[list[list[dict[str, Any]]]]:
    """Read a setting and a constant in one round trip."""
    yield SetLocal({"work_mem": "7MB"})
    results = yield Together([fetch((sql.SQL("SELECT current_setting('work_mem') AS value"), {})),
                              fetch((sql.SQL("SELECT x AS value FROM generate_series(1, 3) AS x"), {}))])
    return results  # type: ignore[no-any-return]


def test_together_returns_each_statements_rows_in_order_with_the_plans_settings(database: Database,
                                                                                mode: str) -> None:
    first, second = run(database, two_together(), mode)
    assert first == [{"value": "7MB"}]
    assert second == [{"value": 1}, {"value": 2}, {"value": 3}]
