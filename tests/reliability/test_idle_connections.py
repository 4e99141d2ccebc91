"""Connections given back to the pool moments ago are reused without the pool's liveness check; when one turns
out dead (a restart or terminated backends right after a call), reads are retried and a write whose BEGIN met the
dead connection is retried too, since nothing of it ran. Connections idle for longer are still checked."""

from __future__ import annotations

import asyncio
import logging
import uuid
from typing import Any

import psycopg
import pytest
from helpers import test_settings
from langchain_core.embeddings import DeterministicFakeEmbedding

from sony_rag import database as database_module
from sony_rag.database import Database
from sony_rag.errors import DatabaseUnavailableError
from sony_rag.vectorstore import SonyVectorStore

from . import test_faults
from .support import FAULT_DATABASE, FaultServer, pooler_pass

# The fault tests' fixtures: a private server for this module, started again before a test if one left it down.
fault_server = test_faults.fault_server
server_up = test_faults.server_up


def _database(server: FaultServer) -> Database:
    # One connection per pool: the pool hands out its least recently used one, and it must be the one just used.
    return Database(server.url, settings=test_settings(pool_min_size=1, pool_max_size=1, pool_timeout=10.0,
                                                       connect_timeout=2.0, connect_retries=5,
                                                       connect_backoff=0.1))


async def _call(mode: str, sync: Any, asynchronous: Any) -> Any:
    """Call ``sync`` on a thread, or await ``asynchronous``: the two halves of one public API."""
    if mode == "sync":
        return await asyncio.to_thread(sync)
    return await asynchronous()


def _retries(caplog: pytest.LogCaptureFixture, what: str) -> int:
    return sum(1 for record in caplog.records if record.name == "sony_rag" and what in record.getMessage())


def _backends(server: FaultServer) -> int:
    """Return how many connections sony-rag holds to the private server's database."""
    with psycopg.connect(server.direct_url, autocommit=True, application_name="reliability-admin") as conn:
        row = conn.execute("SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND application_name = %s",
                           (FAULT_DATABASE, "sony-rag")).fetchone()
    return int(row[0]) if row else 0


def _store(db: Database) -> SonyVectorStore:
    return SonyVectorStore(DeterministicFakeEmbedding(size=384), db, source_type="faq")


async def _add(store: SonyVectorStore, mode: str, texts: list[str], tag: str) -> list[str]:
    """Store ``texts`` (fresh ids: one COPY straight into the table, no upsert) tagged ``batch=tag``."""
    metadatas = [{"batch": tag} for _ in texts]
    return list(await _call(mode, lambda: store.add_texts(texts, metadatas),
                            lambda: store.aadd_texts(texts, metadatas)))


async def _tagged(store: SonyVectorStore, mode: str, tag: str) -> list[str]:
    """Return the texts stored with ``batch=tag``."""
    found = await _call(mode, lambda: store.similarity_search("x", k=50, filter={"batch": tag}),
                        lambda: store.asimilarity_search("x", k=50, filter={"batch": tag}))
    return sorted(document.page_content for document in found)


@pytest.mark.parametrize(("call", "retried"), [("read", "lost during a read"),
                                               ("write", "before a write began")])
async def test_a_call_right_after_backends_are_terminated_is_retried_once_and_succeeds(
        fault_server: FaultServer, mode: str, caplog: pytest.LogCaptureFixture, call: str, retried: str) -> None:
    # Moments after the first call the pool does not check its connection: the second call meets it dead. A read
    # is retried; so is the write, whose BEGIN found the connection dead before anything of it was sent. Its
    # rows stream from a generator into the COPY: a retry after any was consumed would lose them.
    caplog.set_level(logging.WARNING, logger="sony_rag")
    tag = uuid.uuid4().hex
    async with _database(fault_server) as db:
        store = _store(db)
        first = ["one", "three", "two"] if call == "read" else []
        await (_add(store, mode, first, tag) if first else _tagged(store, mode, tag))
        assert fault_server.terminate_backends() >= 1
        if call == "write":
            await _add(store, mode, ["one", "two", "three"], tag)
        assert await _tagged(store, mode, tag) == ["one", "three", "two"]  # all of them, exactly once
    if not pooler_pass():  # PgBouncer's client connections survive: only its server side was cut
        assert _retries(caplog, retried) == 1


async def test_reads_and_writes_right_after_a_restart_succeed(fault_server: FaultServer, mode: str) -> None:
    tag = uuid.uuid4().hex
    async with _database(fault_server) as db:
        store = _store(db)
        await _add(store, mode, ["before"], tag)
        await asyncio.to_thread(fault_server.restart, 0.05)
        assert await _tagged(store, mode, tag) == ["before"]
        await asyncio.to_thread(fault_server.restart, 0.05)
        await _add(store, mode, ["after"], tag)
        assert await _tagged(store, mode, tag) == ["after", "before"]


async def test_connections_idle_longer_than_the_threshold_are_checked_first(
        fault_server: FaultServer, mode: str, caplog: pytest.LogCaptureFixture,
        monkeypatch: pytest.MonkeyPatch) -> None:
    # With no idle time trusted, the pool's check finds the dead connections before a plan runs: no retry.
    monkeypatch.setattr(database_module, "_TRUSTED_IDLE_SECONDS", 0.0)
    caplog.set_level(logging.WARNING, logger="sony_rag")
    tag = uuid.uuid4().hex
    async with _database(fault_server) as db:
        store = _store(db)
        await _add(store, mode, ["first"], tag)
        assert fault_server.terminate_backends() >= 1
        await _add(store, mode, ["second"], tag)
        assert await _tagged(store, mode, tag) == ["first", "second"]
    assert _retries(caplog, "retrying once") == 0


async def test_closing_a_database_while_calls_run_fails_them_and_opens_no_new_connections(
        fault_server: FaultServer) -> None:
    db = Database(fault_server.url, settings=test_settings(pool_min_size=2, pool_max_size=4, pool_timeout=5.0))
    store, tag = _store(db), uuid.uuid4().hex
    await _add(store, "async", ["x"], tag)
    await _tagged(store, "sync", tag)  # both pools open

    async def reader(mode: str) -> None:
        while True:
            await _tagged(store, mode, tag)

    readers = [asyncio.create_task(reader(mode)) for mode in ("sync", "async") for _ in range(3)]
    await asyncio.sleep(0.2)
    await db.aclose()
    outcomes = await asyncio.gather(*readers, return_exceptions=True)
    assert all(isinstance(outcome, DatabaseUnavailableError) for outcome in outcomes), outcomes
    if not pooler_pass():  # through PgBouncer the server connections are its own
        await test_faults._eventually(lambda: _backends(fault_server) == 0, "no sony-rag connection left")
