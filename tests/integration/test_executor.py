"""The executors on a real Postgres: settings sent with a plan's statements (pipelined in one round trip) reach
every statement and end with the plan; an error anywhere rolls a write back whole; plans outside a transaction
(index builds) run statement by statement, with Atomic groups and session settings."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import psycopg
import pytest
from helpers import test_settings
from psycopg import sql

from sony_rag import executor
from sony_rag.database import Database
from sony_rag.errors import DatabaseError, SessionNotFoundError
from sony_rag.executor import Atomic, Copy, PlanGenerator, SetLocal, adrive, drive, execute, fetch, plan
from sony_rag.operations import get_chat_session
from sony_rag.sql import Query
from sony_rag.sql import sessions as session_sql

# -- test-only statements and plans --------------------------------------------------------------------------


def _settings_query() -> Query:
    return sql.SQL("SELECT current_setting('work_mem') AS work_mem, current_setting('plan_cache_mode') AS cache, "
                   "current_setting('statement_timeout') AS timeout, pg_backend_pid() AS pid"), {}


def _failing_query() -> Query:
    return sql.SQL("SELECT 1 / 0 AS never"), {}


@plan(read_only=True)
def read_settings_twice(settings: dict[str, str]) -> PlanGenerator[list[dict[str, Any]]]:
    """Set ``settings`` (if any), then read the settings in two separate statements."""
    if settings:
        yield SetLocal(settings)
    first = yield fetch(_settings_query())
    second = yield fetch(_settings_query())
    return [first[0], second[0]]


@plan(read_only=False)
def write_then_read_settings(session_id: UUID, settings: dict[str, str]) -> PlanGenerator[dict[str, Any]]:
    """Insert a session, set ``settings``, and read the settings in the same transaction."""
    yield fetch(session_sql.insert(session_id, None, None, {}))
    yield SetLocal(settings)
    rows = yield fetch(_settings_query())
    return rows[0]  # type: ignore[no-any-return]


@plan(read_only=False)
def write_then_fail(session_id: UUID, settings: dict[str, str]) -> PlanGenerator[None]:
    """Insert a session, then send ``settings`` with a statement that fails."""
    yield fetch(session_sql.insert(session_id, None, None, {}))
    yield SetLocal(settings)
    yield fetch(_failing_query())


@plan(read_only=True)
def read_only_copy() -> PlanGenerator[int]:
    """A read-only plan that wrongly asks for a COPY."""
    count = yield Copy(sql.SQL("COPY chat_sessions (session_id) FROM STDIN WITH (FORMAT BINARY)"), ["uuid"], [])
    return int(count)


@plan(read_only=False, transactional=False)
def outside_a_transaction(first: UUID, second: UUID, settings: dict[str, str]) -> PlanGenerator[dict[str, Any]]:
    """Insert ``first`` alone, then ``second`` twice in one Atomic group (which fails), after session settings."""
    if settings:
        yield SetLocal(settings)
    yield execute(session_sql.insert(first, None, None, {}))
    yield Atomic([execute(session_sql.insert(second, None, None, {})),
                  execute(session_sql.insert(second, None, None, {}))])
    return {}


@plan(read_only=False, transactional=False)
def atomic_pair(first: UUID, second: UUID, settings: dict[str, str]) -> PlanGenerator[list[dict[str, Any]]]:
    """After session settings, insert two sessions in one Atomic group (receiving the last one's rows); read them."""
    if settings:
        yield SetLocal(settings)
    rows = yield Atomic([execute(session_sql.insert(first, None, None, {})),
                         fetch(session_sql.insert(second, None, None, {}))])
    settings = yield fetch(_settings_query())
    return [rows[0], settings[0]]


# -- helpers ---------------------------------------------------------------------------------------------------


@pytest.fixture
def one_connection(database_url: str, db: Database) -> Iterator[Database]:
    """Return a Database whose pools hold one connection, so consecutive plans share it."""
    single = Database(database_url, settings=test_settings(pool_min_size=1, pool_max_size=1))
    yield single
    single.close()


async def _run(db: Database, mode: str, plan_: Any) -> Any:
    if mode == "sync":
        return await asyncio.to_thread(db.run, plan_)
    return await db.arun(plan_)


def _session_settings(db: Database) -> dict[str, str]:
    # Behind a transaction pooler a session setting would stay on whichever server connection got it, for
    # other clients to find: there (as index builds do) a plan outside a transaction sets nothing.
    return {} if db.transaction_pooler else {"work_mem": "9MB"}


async def _drive_alone(db: Database, mode: str, plan_: Any) -> tuple[Any, str | None]:
    """Drive ``plan_`` on a connection of its own; return its result and the connection's work_mem after it."""
    if mode == "sync":
        with db.connect() as conn:
            result = drive(conn, plan_)
            row = conn.execute("SELECT current_setting('work_mem')").fetchone()
    else:
        async with await psycopg.AsyncConnection.connect(db.conninfo, **db.connection_kwargs()) as aconn:
            result = await adrive(aconn, plan_)
            row = await (await aconn.execute("SELECT current_setting('work_mem')")).fetchone()
    return result, None if row is None else str(row[0])


def _defaults(database_url: str) -> dict[str, Any]:
    with psycopg.connect(database_url) as conn:
        row = conn.execute("SELECT current_setting('work_mem'), current_setting('plan_cache_mode')").fetchone()
    assert row is not None
    return {"work_mem": row[0], "cache": row[1]}


# -- settings --------------------------------------------------------------------------------------------------


async def test_a_read_plans_settings_reach_each_of_its_statements_and_end_with_it(
        one_connection: Database, database_url: str, mode: str) -> None:
    defaults = _defaults(database_url)
    assert defaults["work_mem"] != "7MB" and defaults["cache"] != "force_custom_plan"
    first, second = await _run(one_connection, mode, read_settings_twice(
        {"work_mem": "7MB", "plan_cache_mode": "force_custom_plan"}))
    for row in (first, second):
        assert (row["work_mem"], row["cache"]) == ("7MB", "force_custom_plan")
    after, _ = await _run(one_connection, mode, read_settings_twice({}))
    assert (after["work_mem"], after["cache"]) == (defaults["work_mem"], defaults["cache"])
    if not one_connection.transaction_pooler:
        assert first["pid"] == second["pid"] == after["pid"]  # the same connection: nothing leaked into it


async def test_a_write_plans_settings_last_until_its_commit(one_connection: Database, database_url: str,
                                                            mode: str) -> None:
    session_id = uuid.uuid4()
    row = await _run(one_connection, mode, write_then_read_settings(session_id, {"work_mem": "6MB"}))
    assert row["work_mem"] == "6MB"
    assert await get_chat_session(session_id, db=one_connection) is not None
    after, _ = await _run(one_connection, mode, read_settings_twice({}))
    assert after["work_mem"] == _defaults(database_url)["work_mem"]


async def test_behind_a_pooler_the_statement_timeout_reaches_every_statement(database_url: str, db: Database,
                                                                            mode: str) -> None:
    # Behind a transaction pooler the timeout cannot be a startup option: it travels with each statement.
    with Database(database_url, settings=test_settings(transaction_pooler=True,
                                                       statement_timeout_ms=4321)) as pooled:
        first, second = await _run(pooled, mode, read_settings_twice({"work_mem": "5MB"}))
        written = await _run(pooled, mode, write_then_read_settings(uuid.uuid4(), {"work_mem": "5MB"}))
        await pooled.aclose()
    for row in (first, second, written):
        assert (row["timeout"], row["work_mem"]) == ("4321ms", "5MB")


async def test_without_pipeline_mode_settings_still_reach_each_statement_and_errors_roll_back(
        one_connection: Database, mode: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # A system libpq older than 14 has no pipeline mode: a round's statements then go one by one.
    monkeypatch.setattr(executor, "_PIPELINE", False)
    first, second = await _run(one_connection, mode, read_settings_twice({"work_mem": "7MB"}))
    assert first["work_mem"] == second["work_mem"] == "7MB"
    written, failed = uuid.uuid4(), uuid.uuid4()
    assert (await _run(one_connection, mode, write_then_read_settings(written, {"work_mem": "6MB"})))["work_mem"] \
        == "6MB"
    with pytest.raises(DatabaseError):
        await _run(one_connection, mode, write_then_fail(failed, {"work_mem": "8MB"}))
    assert await get_chat_session(written, db=one_connection) is not None
    assert await get_chat_session(failed, db=one_connection) is None


# -- errors ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("settings", [{"work_mem": "8MB"}, {"work_mem": "not a size"}],
                         ids=["failing-statement", "failing-setting"])
async def test_an_error_in_a_pipelined_round_rolls_the_whole_write_back(
        one_connection: Database, mode: str, settings: dict[str, str]) -> None:
    session_id = uuid.uuid4()
    with pytest.raises(DatabaseError):
        await _run(one_connection, mode, write_then_fail(session_id, settings))
    assert await get_chat_session(session_id, db=one_connection) is None
    rows = await _run(one_connection, mode, read_settings_twice({}))  # the connection serves on
    assert len(rows) == 2


async def test_a_read_plan_with_a_refused_setting_raises_and_the_connection_serves_on(
        one_connection: Database, mode: str) -> None:
    with pytest.raises(DatabaseError, match="work_mem"):
        await _run(one_connection, mode, read_settings_twice({"work_mem": "not a size"}))
    rows = await _run(one_connection, mode, read_settings_twice({"work_mem": "3MB"}))
    assert rows[1]["work_mem"] == "3MB"


async def test_an_error_raised_by_a_plan_itself_rolls_back_what_it_wrote(db: Database, mode: str) -> None:
    @plan(read_only=False)
    def insert_then_refuse(session_id: UUID) -> PlanGenerator[None]:
        yield SetLocal({"work_mem": "8MB"})
        yield fetch(session_sql.insert(session_id, None, None, {}))
        raise SessionNotFoundError("refused by the plan after its first write")

    session_id = uuid.uuid4()
    with pytest.raises(SessionNotFoundError):
        await _run(db, mode, insert_then_refuse(session_id))
    assert await get_chat_session(session_id, db=db) is None


async def test_a_read_only_plan_may_not_copy(db: Database, mode: str) -> None:
    with pytest.raises(TypeError, match="read-only"):
        await _run(db, mode, read_only_copy())


async def test_a_plan_outside_a_transaction_is_refused_by_the_pools(db: Database, mode: str) -> None:
    # Its settings are session settings: on a pooled connection they would outlive the plan.
    with pytest.raises(ValueError, match="transactional=False"):
        await _run(db, mode, outside_a_transaction(uuid.uuid4(), uuid.uuid4(), {}))


# -- plans outside a transaction (on a connection of their own) ---------------------------------------------------


async def test_outside_a_transaction_each_statement_commits_and_atomic_groups_are_all_or_nothing(
        db: Database, mode: str) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    with pytest.raises(psycopg.errors.UniqueViolation):
        await _drive_alone(db, mode, outside_a_transaction(first, second, _session_settings(db)))
    assert await get_chat_session(first, db=db) is not None  # committed on its own before the group failed
    assert await get_chat_session(second, db=db) is None  # the group's first insert was rolled back with it


async def test_outside_a_transaction_settings_are_session_settings_and_atomic_returns_the_last_result(
        db: Database, mode: str) -> None:
    first, second = uuid.uuid4(), uuid.uuid4()
    settings = _session_settings(db)
    (rows, after_plan), kept = await _drive_alone(db, mode, atomic_pair(first, second, settings))
    assert rows["session_id"] == second
    assert await get_chat_session(first, db=db) is not None
    if settings:
        assert after_plan["work_mem"] == kept == "9MB"  # still set after the plan: the connection's own
