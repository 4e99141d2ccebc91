"""Faults: connections cut mid-call, a server restart under load, a server that wakes late, timeouts, cancels.

Everything runs against a private server (``fault_server``) that the tests stop, start and whose backends
they terminate; in the pooler pass it sits behind its own PgBouncer in transaction mode.
"""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import traceback
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from helpers import test_settings
from langchain_core.embeddings import DeterministicFakeEmbedding
from pgbouncer import PgBouncer, pgbouncer_available
from psycopg import sql

from sony_rag.database import Database
from sony_rag.errors import DatabaseError, DatabaseUnavailableError, QueryTimeoutError
from sony_rag.executor import PlanGenerator, fetch, plan
from sony_rag.operations import (
    create_chat_session,
    get_chat_history,
    get_chat_session,
    insert_chat_message,
    search_similar_embeddings,
)
from sony_rag.sql import Query
from sony_rag.sql import sessions as session_sql
from sony_rag.vectorstore import SonyVectorStore

from .support import FAULT_DATABASE, FaultServer, OutageProxy, pooler_pass

# -- test-only plans: a statement that takes a while, tagged so that the test can find its backend ---------


def _tag() -> str:
    return f"reliability_{uuid.uuid4().hex}"


def _slow_query(seconds: float, tag: str) -> Query:
    # The tag is a comment, so pg_stat_activity shows which statement to interrupt; it is a hex literal
    # made by _tag(), never input.
    return sql.SQL("SELECT pg_sleep({}) AS slept, count(*) AS sessions FROM chat_sessions /* {} */").format(
        sql.Placeholder("seconds"), sql.SQL(tag)), {"seconds": seconds}


@plan(read_only=True)
def slow_count(seconds: float, tag: str) -> PlanGenerator[int]:
    """Sleep, then return the number of chat sessions (a read)."""
    rows = yield fetch(_slow_query(seconds, tag))
    return int(rows[0]["sessions"])


@plan(read_only=False)
def two_sessions_with_a_pause(first: UUID, second: UUID, seconds: float, tag: str) -> PlanGenerator[None]:
    """Insert a session, sleep, insert another: a write that can be cut off half-way."""
    yield fetch(session_sql.insert(first, None, None, {}))
    yield fetch(_slow_query(seconds, tag))
    yield fetch(session_sql.insert(second, None, None, {}))


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    """Return a private migrated server for this module; stopped and deleted afterwards."""
    server = FaultServer(tmp_path_factory.mktemp("faults"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture(autouse=True)
def server_up(fault_server: FaultServer) -> Iterator[None]:
    """Make sure the private server runs before and after each test (a failed test may leave it down)."""
    if not fault_server.running:
        fault_server.start()
    yield
    if not fault_server.running:
        fault_server.start()


def _database(server: FaultServer, **overrides: Any) -> Database:
    values: dict[str, Any] = {"pool_timeout": 5.0, "connect_timeout": 2.0}
    values.update(overrides)
    return Database(server.url, settings=test_settings(**values))


async def _eventually(condition: Callable[[], bool], what: str, within: float = 15.0) -> None:
    deadline = time.monotonic() + within
    while not await asyncio.to_thread(condition):
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {within}s: {what}")
        await asyncio.sleep(0.02)


async def _run(db: Database, mode: str, plan_: Any) -> Any:
    if mode == "sync":
        return await asyncio.to_thread(db.run, plan_)
    return await db.arun(plan_)


# -- connections lost in the middle of a call --------------------------------------------------------------


async def test_a_read_cut_off_midway_is_retried_once(fault_server: FaultServer, mode: str) -> None:
    async with _database(fault_server) as db:
        session_id = await create_chat_session(db=db)
        tag = _tag()
        killer = asyncio.create_task(asyncio.to_thread(fault_server.terminate_when_running, tag))
        count = await _run(db, mode, slow_count(0.5, tag))
        assert await killer == 1  # the first attempt really lost its connection
        assert count >= 1
        assert await get_chat_session(session_id, db=db) is not None


async def test_a_read_cut_off_twice_raises_database_unavailable(fault_server: FaultServer, mode: str) -> None:
    async with _database(fault_server) as db:
        tag = _tag()
        killer = asyncio.create_task(asyncio.to_thread(fault_server.terminate_when_running, tag, times=2))
        with pytest.raises(DatabaseUnavailableError):
            await _run(db, mode, slow_count(2.0, tag))
        assert await killer == 2
        assert await _run(db, mode, slow_count(0, _tag())) >= 0  # and the pool still serves


async def test_a_write_cut_off_midway_raises_and_writes_nothing(fault_server: FaultServer, mode: str) -> None:
    async with _database(fault_server) as db:
        first, second, tag = uuid.uuid4(), uuid.uuid4(), _tag()
        killer = asyncio.create_task(asyncio.to_thread(fault_server.terminate_when_running, tag))
        with pytest.raises(DatabaseUnavailableError):
            # Had the write been retried, the second attempt would have succeeded (only one kill).
            await _run(db, mode, two_sessions_with_a_pause(first, second, 2.0, tag))
        assert await killer == 1
        assert await get_chat_session(first, db=db) is None
        assert await get_chat_session(second, db=db) is None


class _StallingMetadata(dict[str, Any]):
    """Metadata whose check waits until ``released`` is set: the COPY it belongs to stays open until then."""

    def __init__(self, released: threading.Event) -> None:
        super().__init__()
        self._released = released

    def items(self) -> Any:
        """Return the items once released (at most 20 s later)."""
        self._released.wait(20)
        return super().items()


async def test_a_bulk_write_cut_off_during_copy_raises_and_writes_nothing(fault_server: FaultServer,
                                                                          mode: str) -> None:
    rng = np.random.default_rng(7)
    vectors = rng.normal(size=(20_000, 384)).astype(np.float32)
    texts = [f"chunk {index}" for index in range(len(vectors))]
    ids = [f"bulk-{index}" for index in range(len(vectors))]  # explicit ids: the staging-table upsert path
    # Row 10,000's metadata is checked as it streams into the COPY: holding it there keeps the COPY open (half
    # written) until the killer has cut the connection, however fast the rest streams.
    killed = threading.Event()
    metadatas: list[dict[str, Any]] = [{} for _ in texts]
    metadatas[10_000] = _StallingMetadata(killed)

    def kill_the_copy() -> int:
        try:
            return fault_server.terminate_when_running("COPY ")
        finally:
            killed.set()

    async with _database(fault_server) as db:
        store = SonyVectorStore(DeterministicFakeEmbedding(size=384), db, source_type="product")
        killer = asyncio.create_task(asyncio.to_thread(kill_the_copy))
        await asyncio.sleep(0)  # the killer's thread starts before the async write may hold the loop
        with pytest.raises(DatabaseUnavailableError):
            if mode == "sync":
                await asyncio.to_thread(store.add_embeddings, texts, vectors, metadatas, ids=ids)
            else:
                await store.aadd_embeddings(texts, vectors, metadatas, ids=ids)
        assert await killer == 1
        assert await store.aget_by_ids(ids[:10] + ids[-10:]) == []
        assert await search_similar_embeddings(vectors[0], limit=1, db=db) == []


async def test_both_pools_recover_after_every_backend_is_terminated(fault_server: FaultServer) -> None:
    # Six idle connections, all dead at once (a restart, a Neon compute that slept): found one per request
    # with growing pauses (1 s, 2 s, 4 s...), they would outlast the 5 s pool timeout.
    async with _database(fault_server, pool_min_size=6, pool_max_size=8, pool_timeout=5.0) as db:
        session_id = await create_chat_session(db=db)
        await insert_chat_message(session_id, "user", "before", db=db)
        assert db.run(slow_count(0, _tag())) >= 1  # opens the sync pool too
        await _eventually(lambda: db.pool().get_stats()["pool_available"] >= 6, "the sync pool is full")
        # In the pooler pass the client connections to PgBouncer survive; only its server side is cut.
        assert fault_server.terminate_backends() >= 1

        await insert_chat_message(session_id, "user", "after", db=db)  # a write, not retried: must just work
        assert db.run(slow_count(0, _tag())) >= 1
        history = await get_chat_history(session_id, db=db)
        assert [row["content"] for row in history] == ["before", "after"]
        stats = (await db.apool()).get_stats()
        assert stats.get("requests_waiting", 0) == 0
        assert stats["pool_size"] <= 8


# -- a server restart in the middle of a workload ----------------------------------------------------------


async def test_a_restart_under_load_loses_nothing_acknowledged(fault_server: FaultServer) -> None:
    settings: dict[str, Any] = {"pool_min_size": 2, "pool_max_size": 6, "pool_timeout": 4.0,
                                "connect_retries": 3, "connect_backoff": 0.1}
    restarted = threading.Event()
    async with _database(fault_server, **settings) as db:
        sessions = [await create_chat_session(db=db) for _ in range(4)]
        acked: dict[UUID, set[int]] = {sid: set() for sid in sessions}
        failed: dict[UUID, set[int]] = {sid: set() for sid in sessions}
        attempted: dict[UUID, int] = {}
        deadline = time.monotonic() + 60

        async def message_writer(session_id: UUID) -> int:
            index = successes_after = 0
            while (successes_after < 10 or not restarted.is_set()) and time.monotonic() < deadline:
                after = restarted.is_set()
                try:
                    await insert_chat_message(session_id, "user", str(index), db=db)
                    acked[session_id].add(index)
                    successes_after += after
                except DatabaseUnavailableError:
                    failed[session_id].add(index)
                index += 1
                await asyncio.sleep(0.005)
            attempted[session_id] = index
            return successes_after

        store = SonyVectorStore(DeterministicFakeEmbedding(size=384), db, source_type="faq")
        batches_acked: set[int] = set()
        batches_failed: set[int] = set()

        def batch_writer() -> int:
            # Sync API on its own thread: batches of five documents with explicit ids, all or nothing.
            batch = successes_after = 0
            while (successes_after < 5 or not restarted.is_set()) and time.monotonic() < deadline:
                after = restarted.is_set()
                ids = [f"batch-{batch}-{item}" for item in range(5)]
                try:
                    store.add_texts([f"text of {id_}" for id_ in ids], ids=list(ids))
                    batches_acked.add(batch)
                    successes_after += after
                except DatabaseUnavailableError:
                    batches_failed.add(batch)
                batch += 1
                time.sleep(0.01)
            return batch

        async def restarter() -> None:
            while sum(len(done) for done in acked.values()) < 40:
                await asyncio.sleep(0.01)
            await asyncio.to_thread(fault_server.restart)
            restarted.set()

        results = await asyncio.gather(
            *(message_writer(sid) for sid in sessions), asyncio.to_thread(batch_writer), restarter())
        # The pools recovered by themselves: every writer got its successful calls after the restart.
        assert all(count >= 10 for count in results[:4]), results
        batches = results[4]

        for session_id in sessions:
            stored = [int(row["content"]) for row in await get_chat_history(session_id, limit=None, db=db)]
            assert stored == sorted(stored), "a session's order changed"
            assert len(stored) == len(set(stored)), "a message was stored twice"
            assert acked[session_id] <= set(stored), "an acknowledged message was lost"
            # Anything stored but not acknowledged was a call that raised (its commit's reply was lost).
            assert set(stored) - acked[session_id] <= failed[session_id]
            assert max(stored) < attempted[session_id]

        documents = store.get_by_ids([f"batch-{b}-{i}" for b in range(batches) for i in range(5)])
        found: dict[int, set[int]] = {}
        for document in documents:
            _, batch_no, item = str(document.id).split("-")
            found.setdefault(int(batch_no), set()).add(int(item))
            assert document.page_content == f"text of {document.id}"
        assert all(items == set(range(5)) for items in found.values()), "a batch was half-applied"
        assert batches_acked <= set(found), "an acknowledged batch was lost"
        assert set(found) - batches_acked <= batches_failed


# -- connecting: a server that is not there, or that comes up late -----------------------------------------


class _CountingListener:
    """A loopback TCP port that accepts connections and closes them at once, counting them."""

    def __init__(self, *, silent: bool = False) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(64)
        self._socket.settimeout(0.1)
        self.port = int(self._socket.getsockname()[1])
        self.accepted = 0
        self._silent = silent
        self._held: list[socket.socket] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._serve, daemon=True)

    def _serve(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._socket.accept()
            except TimeoutError:
                continue
            self.accepted += 1
            if self._silent:
                self._held.append(conn)  # never answers, like a host that swallows packets
            else:
                conn.close()

    def __enter__(self) -> _CountingListener:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        for conn in self._held:
            conn.close()
        self._socket.close()


def _assert_no_secret(error: BaseException, secret: str, log_text: str) -> None:
    shown = "".join(traceback.format_exception(error))
    assert secret not in shown
    assert secret not in repr(error)
    assert secret not in log_text


def test_connecting_retries_a_bounded_number_of_times(caplog: pytest.LogCaptureFixture) -> None:
    with _CountingListener() as listener:
        url = (f"postgresql://shopper:secretpw@127.0.0.1:{listener.port}/shopdb"
               "?sslmode=disable&gssencmode=disable")
        db = Database(url, settings=test_settings(connect_retries=3, connect_backoff=0.01, transaction_pooler=False))
        with pytest.raises(DatabaseUnavailableError) as caught:
            db.connect()
        assert listener.accepted == 4  # the first attempt and three retries, then it gave up
    message = str(caught.value)
    assert "127.0.0.1" in message and "shopdb" in message
    _assert_no_secret(caught.value, "secretpw", caplog.text)


async def test_a_closed_port_gives_a_clear_error_without_the_password(
        mode: str, caplog: pytest.LogCaptureFixture) -> None:
    db = Database("postgresql://u:secretpw@127.0.0.1:1/db",
                  settings=test_settings(connect_retries=2, connect_backoff=0.01))
    try:
        with pytest.raises(DatabaseUnavailableError) as caught:
            await _run(db, mode, slow_count(0, _tag()))
    finally:
        await db.aclose()
    message = str(caught.value)
    assert "127.0.0.1:1/db" in message
    _assert_no_secret(caught.value, "secretpw", caplog.text)


async def test_a_server_that_does_not_answer_fails_within_the_connect_timeout(mode: str) -> None:
    with _CountingListener(silent=True) as listener:
        db = Database(f"postgresql://u:pw@127.0.0.1:{listener.port}/db?sslmode=disable",
                      settings=test_settings(connect_timeout=1.0, connect_retries=0))
        try:
            with pytest.raises(DatabaseUnavailableError):
                await _run(db, mode, slow_count(0, _tag()))
        finally:
            await db.aclose()
        assert listener.accepted == 1  # one attempt, ended by the connect timeout rather than waiting forever


async def test_a_server_that_comes_up_late_is_waited_for(fault_server: FaultServer, mode: str) -> None:
    # Unreachable the way a waking compute is (attempts time out), not refused: that is retried with backoff.
    proxy = OutageProxy(str(fault_server.socket_dir / ".s.PGSQL.5432"))
    proxy.down()
    starter = threading.Timer(1.0, proxy.up)
    starter.start()
    try:
        db = Database(proxy.url(FAULT_DATABASE), settings=test_settings(
            connect_retries=8, connect_backoff=0.2, connect_timeout=2.0, transaction_pooler=False))
        async with db:
            assert await _run(db, mode, slow_count(0, _tag())) >= 0
    finally:
        starter.join()
        proxy.close()


async def test_a_stopped_local_server_fails_at_once(fault_server: FaultServer, mode: str) -> None:
    # Its socket file is gone: no compute is waking here, so no backoff (8 retries from 0.2 s would take 10 s).
    # Directly: through PgBouncer a stopped server looks like a waking one (its login retry errors), retried.
    fault_server.stop()
    started = time.monotonic()
    db = Database(fault_server.direct_url, settings=test_settings(connect_retries=8, connect_backoff=0.2,
                                                                  transaction_pooler=False))
    async with db:
        with pytest.raises(DatabaseUnavailableError):
            await _run(db, mode, slow_count(0, _tag()))
    assert time.monotonic() - started < 1.0


# -- a transaction-mode pooler -----------------------------------------------------------------------------


@pytest.mark.skipif(not pgbouncer_available(), reason="needs Debian's pgbouncer (apt-get install -y pgbouncer)")
@pytest.mark.parametrize("pooler", [True, False], ids=["pooler-rules", "psycopg-defaults"])
async def test_many_clients_share_two_server_connections_through_pgbouncer(fault_server: FaultServer,
                                                                         pooler: bool) -> None:
    # Two server connections for every client: each transaction may land on either, as on Neon's pooler.
    with PgBouncer(fault_server.socket_dir, pool_size=2) as bouncer:
        url = bouncer.url(FAULT_DATABASE)
        overrides: dict[str, Any] = {"transaction_pooler": pooler, "pool_min_size": 1, "pool_max_size": 3}
        if not pooler:
            overrides["statement_timeout_ms"] = 0  # PgBouncer refuses the startup option that would carry it
        dbs = [Database(url, settings=test_settings(**overrides)) for _ in range(3)]
        try:
            async def client(db: Database) -> None:
                # psycopg prepares a statement after its fifth run on a connection.
                for _ in range(15):
                    await db.arun(slow_count(0, "same_statement"))
                    await asyncio.to_thread(db.run, slow_count(0, "same_statement"))

            if pooler:
                await asyncio.gather(*(client(db) for db in dbs))
            else:
                # The control: without the pooler rules the same workload breaks, so the test can tell.
                with pytest.raises(DatabaseError, match="prepared statement"):
                    await asyncio.gather(*(client(db) for db in dbs))
        finally:
            for db in dbs:
                await db.aclose()


# -- statement timeout and cancellation --------------------------------------------------------------------


def _pooler_modes() -> list[bool]:
    # Through PgBouncer only the pooler rules work (it refuses the startup option the direct mode sends).
    return [True] if pooler_pass() else [False, True]


@pytest.mark.parametrize("pooler", _pooler_modes(), ids=lambda value: "set-local" if value else "startup-option")
async def test_statement_timeout_is_honoured_and_does_not_leak(fault_server: FaultServer, pooler: bool) -> None:
    async with _database(fault_server, statement_timeout_ms=200, transaction_pooler=pooler,
                         pool_min_size=1, pool_max_size=1) as db:
        with pytest.raises(QueryTimeoutError):
            db.run(slow_count(5, _tag()))
        assert db.run(slow_count(0, _tag())) >= 0
        with pytest.raises(QueryTimeoutError):
            await db.arun(slow_count(5, _tag()))
        assert await db.arun(slow_count(0, _tag())) >= 0

        with db.pool().connection() as conn:
            row = conn.execute("SHOW statement_timeout").fetchone()
        # Behind a pooler the limit is SET LOCAL: the connection (shared with other clients) keeps its default.
        assert row is not None and row[0] == ("0" if pooler else "200ms")


async def test_cancelled_async_calls_leave_the_pool_healthy(fault_server: FaultServer) -> None:
    async with _database(fault_server, pool_min_size=1, pool_max_size=2) as db:
        for _ in range(4):
            tag = _tag()
            task = asyncio.create_task(db.arun(slow_count(30, tag)))
            await _eventually(lambda tag=tag: fault_server.active_statements(tag) == 1, "the query runs")
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            # The statement was cancelled on the server too, not left running on a connection.
            await _eventually(lambda tag=tag: fault_server.active_statements(tag) == 0, "the query stopped")

        first, second, tag = uuid.uuid4(), uuid.uuid4(), _tag()
        task = asyncio.create_task(db.arun(two_sessions_with_a_pause(first, second, 30, tag)))
        await _eventually(lambda: fault_server.active_statements(tag) == 1, "the write runs")
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        assert await get_chat_session(first, db=db) is None  # the cancelled write was rolled back

        # Five cancelled calls on a two-connection pool: a leaked connection would make these time out.
        counts = await asyncio.gather(*(db.arun(slow_count(0.05, _tag())) for _ in range(6)))
        assert len(counts) == 6
        stats = (await db.apool()).get_stats()
        assert stats.get("requests_waiting", 0) == 0
        assert stats["pool_size"] <= 2
        assert stats.get("pool_available", 0) == stats["pool_size"]
