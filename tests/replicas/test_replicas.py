"""Read replicas against a real primary and streaming standby: routing, read-your-writes, failures, figures."""

from __future__ import annotations

import asyncio
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from helpers import test_settings
from langchain_core.messages import AIMessage, HumanMessage

from sony_rag import operations as api
from sony_rag import plans
from sony_rag.chat_history import SonyChatMessageHistory
from sony_rag.database import Database
from sony_rag.embeddings import fake_embeddings
from sony_rag.errors import DatabaseUnavailableError, InvalidInputError
from sony_rag.vectorstore import SonyVectorStore

from .conftest import FIGURES, Cluster

DIM = 384
# Between a write and its read: time for the standby to receive the write's WAL and replay it up to the commit
# record, where recovery_min_apply_delay holds it. A position read before the COMMIT would pass as replayed then.
PAUSE = 0.02


def _vector(seed: int) -> list[float]:
    values = np.random.default_rng(seed).standard_normal(DIM)
    return [float(x) for x in values / np.linalg.norm(values)]


def _settings(**overrides: Any) -> Any:
    values: dict[str, Any] = {"replica_max_lag": 2.0, "replica_retry": 0.5, "pool_max_size": 12}
    values.update(overrides)
    return test_settings(**values)


def _scans(db: Database, url: str) -> int:
    """Return how many scans of document_embeddings the server at ``url`` has counted (its own statistics).

    A backend reports its statistics about once a second, and at the latest when it exits: ``db``'s pools are
    closed first (they reopen on next use), then the count is read until it stops moving.
    """
    db.reset()
    counts: list[int] = []
    deadline = time.monotonic() + 5
    while len(counts) < 3 or counts[-1] != counts[-3]:
        with psycopg.connect(url, autocommit=True) as conn:
            row = conn.execute("SELECT coalesce(seq_scan, 0) + coalesce(idx_scan, 0) FROM pg_stat_user_tables "
                               "WHERE relname = 'document_embeddings'").fetchone()
        assert row is not None
        counts.append(int(row[0]))
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)
    return counts[-1]


@pytest.fixture
def replicated(cluster: Cluster) -> Iterator[Database]:
    """Return a Database on the primary with the standby as its read replica; empty tables, no apply delay."""
    cluster.set_apply_delay(0)
    with psycopg.connect(cluster.primary_url, autocommit=True) as conn:
        conn.execute("TRUNCATE chat_sessions, chat_messages, document_embeddings, user_text_selections CASCADE")
    with Database(cluster.primary_url, settings=_settings(), read_urls=[cluster.standby_url]) as db:
        yield db
    cluster.set_apply_delay(0)


def _documents(db: Database, count: int) -> None:
    asyncio.run(api.batch_insert_embeddings(
        [{"source_type": "page_content", "source_id": f"p{i}", "content_chunk": f"sofa {i}", "embedding": _vector(i)}
         for i in range(count)], db=db))


def test_retrieval_reads_from_the_replica_and_writes_stay_on_the_primary(cluster: Cluster,
                                                                         replicated: Database) -> None:
    _documents(replicated, 20)
    cluster.wait_for_standby()
    before_replica, before_primary = _scans(replicated, cluster.standby_url), _scans(replicated, cluster.primary_url)
    for seed in range(10):
        rows = asyncio.run(api.search_similar_embeddings(_vector(seed), limit=3, db=replicated))
        assert rows[0]["source_id"] == f"p{seed}"
    assert _scans(replicated, cluster.standby_url) - before_replica >= 10
    assert _scans(replicated, cluster.primary_url) == before_primary
    assert replicated.replicas is not None
    assert replicated.replicas.served().get("primary", 0) == 0


def test_a_search_right_after_an_insert_sees_it_even_on_a_delayed_replica(cluster: Cluster,
                                                                          replicated: Database) -> None:
    cluster.set_apply_delay(400)
    _documents(replicated, 5)
    rows = asyncio.run(api.search_similar_embeddings(_vector(3), limit=1, db=replicated))
    assert rows and rows[0]["source_id"] == "p3"


def test_history_reads_after_writes_are_never_stale_on_a_delayed_replica(cluster: Cluster, replicated: Database,
                                                                         mode: str) -> None:
    cluster.set_apply_delay(150)
    sessions = [uuid.uuid4() for _ in range(12)]
    histories = {session: SonyChatMessageHistory(session, replicated) for session in sessions}
    turns, stale, blind_stale = 60, 0, 0

    def blind(session: uuid.UUID) -> tuple[Any, ...] | None:
        # The same read made blindly on the replica: what read-your-writes protects against.
        with psycopg.connect(cluster.standby_url, autocommit=True) as conn:
            return conn.execute("SELECT content FROM chat_messages WHERE session_id = %s ORDER BY seq DESC "
                                "LIMIT 1", [session]).fetchone()

    async def turns_async() -> tuple[int, int]:
        stale = blind_stale = 0
        for number in range(turns):
            session, text = sessions[number % len(sessions)], f"turn {number}"
            await histories[session].aadd_messages([HumanMessage(text)])
            await asyncio.sleep(PAUSE)
            rows = await api.get_chat_history(session, None, db=replicated)
            stale += [row["content"] for row in rows][-1:] != [text]
            blind_stale += blind(session) != (text,)
        return stale, blind_stale

    if mode == "sync":
        for number in range(turns):
            session, text = sessions[number % len(sessions)], f"turn {number}"
            histories[session].add_messages([HumanMessage(text)])
            time.sleep(PAUSE)
            stale += [str(message.content) for message in histories[session].messages][-1:] != [text]
            blind_stale += blind(session) != (text,)
    else:
        stale, blind_stale = asyncio.run(turns_async())
    # An earlier session, written more than the apply delay ago, is read from the replica.
    time.sleep(0.3)
    assert [str(m.content) for m in histories[sessions[0]].messages][-1] == f"turn {turns - len(sessions)}"
    assert replicated.replicas is not None
    served = replicated.replicas.served()
    assert stale == 0
    assert blind_stale > 0  # the delay is real: the replica alone would have answered stale
    assert served.get(replicated.replicas.replicas[0].description, 0) >= 1
    FIGURES.append(f"read-your-writes ({mode}): {turns} write-then-read turns on {len(sessions)} sessions, replica "
                   f"delayed 150 ms: stale history reads 0 (the same reads sent blindly to the replica: "
                   f"{blind_stale} stale)")


def test_a_position_passed_from_another_process_is_respected(cluster: Cluster, replicated: Database) -> None:
    cluster.set_apply_delay(300)
    session = uuid.uuid4()
    writer = SonyChatMessageHistory(session, replicated)
    writer.add_messages([HumanMessage("hello"), AIMessage("hi there")])
    position = writer.position
    assert position is not None and position == api.get_write_position(session, db=replicated)
    # Another process: a Database of its own, which knows nothing of the write but its position.
    with Database(cluster.primary_url, settings=_settings(), read_urls=[cluster.standby_url]) as other:
        reader = SonyChatMessageHistory(session, other, min_position=position, create_session=False)
        assert [str(m.content) for m in reader.messages] == ["hello", "hi there"]
        rows = asyncio.run(api.get_chat_history(session, None, min_position=position, db=other))
        assert [row["content"] for row in rows] == ["hello", "hi there"]
        with pytest.raises(InvalidInputError):
            SonyChatMessageHistory(session, other, min_position="not a position")


def test_a_closed_database_reads_from_no_replica_either(cluster: Cluster) -> None:
    db = Database(cluster.primary_url, settings=_settings(), read_urls=[cluster.standby_url])
    assert db.run(plans.get_session(uuid.uuid4())) is None
    db.close()
    with pytest.raises(DatabaseUnavailableError, match="closed"):
        db.run(plans.get_session(uuid.uuid4()))


def test_a_server_that_is_not_in_recovery_is_left_out_and_named_without_its_password(
        cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    # The primary given as a replica stands for a promoted one: pg_is_in_recovery() is false.
    promoted = cluster.primary_url.replace("postgres@", "postgres:s3cret-pw@")
    with Database(cluster.primary_url, settings=_settings(replica_retry=30), read_urls=[promoted]) as db, \
            caplog.at_level(logging.WARNING, logger="sony_rag"):
        _documents(db, 3)
        for _ in range(3):
            assert asyncio.run(api.search_similar_embeddings(_vector(1), limit=1, db=db))[0]["source_id"] == "p1"
        assert db.replicas is not None and db.replicas.served() == {"primary": 3}
    lines = [record.getMessage() for record in caplog.records if "left out" in record.getMessage()]
    assert len(lines) == 1
    assert f"postgres@127.0.0.1:{cluster.primary_port}/sony_rag_replicas" in lines[0]
    assert "not in recovery" in lines[0]
    assert "s3cret" not in caplog.text


def test_a_replica_lagging_past_the_bound_is_left_out(cluster: Cluster, caplog: pytest.LogCaptureFixture) -> None:
    cluster.set_apply_delay(2000)
    with Database(cluster.primary_url, settings=_settings(replica_max_lag=0.3, replica_retry=30),
                  read_urls=[cluster.standby_url]) as db, caplog.at_level(logging.WARNING, logger="sony_rag"):
        session = uuid.uuid4()
        asyncio.run(api.create_chat_session(session_id=session, db=db))
        time.sleep(0.5)
        assert asyncio.run(api.get_chat_session(uuid.uuid4(), db=db)) is None  # another session: any replica...
        assert db.replicas is not None and db.replicas.served() == {"primary": 1}  # ...but this one lags
    assert any("left out" in record.getMessage() and "more than 0.3s ago" in record.getMessage()
               for record in caplog.records)


def _mixed_load(db: Database, stop: threading.Event, failures: list[BaseException], calls: list[int]) -> None:
    """Chat turns and retrievals until ``stop``: a write, a history read, two searches and an MMR search each."""
    history = SonyChatMessageHistory(uuid.uuid4(), db)
    store = SonyVectorStore(fake_embeddings(), db)
    seed = 0
    while not stop.is_set():
        seed += 1
        try:
            history.add_messages([HumanMessage(f"question {seed}")])
            assert [str(m.content) for m in history.messages][-1] == f"question {seed}"
            assert store.similarity_search_by_vector(_vector(seed % 20), k=3)[0].metadata is not None
            store.similarity_search_by_vector(_vector((seed + 1) % 20), k=3)
            store.max_marginal_relevance_search_by_vector(_vector((seed + 2) % 20), k=2, fetch_k=6)
            calls[0] += 5
        except BaseException as error:  # every failed call counts
            failures.append(error)


def _run_load(db: Database, threads: int, until: Any) -> tuple[list[BaseException], int]:
    stop, failures, calls = threading.Event(), [], [0]
    workers = [threading.Thread(target=_mixed_load, args=(db, stop, failures, calls)) for _ in range(threads)]
    for worker in workers:
        worker.start()
    try:
        until()
    finally:
        stop.set()
        for worker in workers:
            worker.join(60)
    return failures, calls[0]


def test_share_of_retrieval_served_by_the_replica_under_mixed_load(cluster: Cluster, replicated: Database) -> None:
    _documents(replicated, 20)
    cluster.wait_for_standby()
    assert replicated.replicas is not None
    before_replica, before_primary = _scans(replicated, cluster.standby_url), _scans(replicated, cluster.primary_url)
    failures, calls = _run_load(replicated, 4, lambda: time.sleep(2))
    assert not failures
    replica_scans = _scans(replicated, cluster.standby_url) - before_replica
    primary_scans = _scans(replicated, cluster.primary_url) - before_primary
    share = replica_scans / max(1, replica_scans + primary_scans)
    assert share > 0.9
    served = replicated.replicas.served()
    turns = calls // 5
    history_on_replica = sum(count for name, count in served.items() if name != "primary") - 3 * turns
    FIGURES.append(f"mixed load (4 threads, 2 s; each turn: 1 write, 1 history read, 2 searches, 1 MMR): {calls} "
                   f"calls; scans of document_embeddings on the replica {replica_scans}, on the primary "
                   f"{primary_scans}: retrieval share on the replica {share:.1%}; history reads right after their "
                   f"write on the replica {history_on_replica}, on the primary {served.get('primary', 0)}")


def test_a_replica_killed_mid_run_fails_no_call_and_serves_again_after_it_returns(
        cluster: Cluster, replicated: Database, caplog: pytest.LogCaptureFixture) -> None:
    _documents(replicated, 20)
    cluster.wait_for_standby()
    assert replicated.replicas is not None
    replica = replicated.replicas.replicas[0].description
    marks: dict[str, Any] = {}

    def scenario() -> None:
        time.sleep(0.8)
        cluster.kill_standby()
        marks["killed"] = replicated.replicas.served().get(replica, 0)  # type: ignore[union-attr]
        time.sleep(1.0)
        marks["down"] = replicated.replicas.served().get(replica, 0)  # type: ignore[union-attr]
        cluster.start_standby()
        restarted = time.monotonic()
        while time.monotonic() - restarted < 10:
            if replicated.replicas.served().get(replica, 0) > marks["down"] + 20:  # type: ignore[union-attr]
                marks["back_after"] = time.monotonic() - restarted
                break
            time.sleep(0.05)

    with caplog.at_level(logging.WARNING, logger="sony_rag"):
        failures, calls = _run_load(replicated, 4, scenario)
    assert not failures, failures[:3]
    assert "back_after" in marks
    assert any("left out" in record.getMessage() for record in caplog.records)
    assert any("back in use" in record.getMessage() for record in caplog.records)
    FIGURES.append(f"replica killed mid-run (4 threads): {calls} calls, failed calls 0; reads back on the replica "
                   f"{marks['back_after']:.2f} s after it restarted (retry after 0.5 s)")
