"""Outages: callers share one connection attempt, fail together, fail fast in the cool-down, recover unaided.

A chat widget with 100 open conversations during a Neon outage must not hold requests for minutes: while
the database is unreachable every caller waits for the one retry cycle in flight and fails with it. A
refused connection on this machine is no waking compute: it fails at once. The figures are printed (run
with ``-s`` to see them); docs/faults.md quotes them.
"""

from __future__ import annotations

import asyncio
import statistics
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from helpers import test_settings

from sony_rag import plans
from sony_rag.database import Database
from sony_rag.errors import DatabaseUnavailableError
from sony_rag.operations import create_chat_session, get_chat_history
from sony_rag.retry import backoff_delays, retry_cycle_seconds

from .support import FAULT_DATABASE, FaultServer, OutageProxy

CALLERS = 100
CONNECT_TIMEOUT = 1.0
RETRIES = 2
BACKOFF = 0.5
CYCLE = retry_cycle_seconds(CONNECT_TIMEOUT, RETRIES, BACKOFF)  # 3 attempts of 2 s (libpq's least) + 0.5 + 1 s
LONGEST_STEP = max(backoff_delays(BACKOFF, RETRIES))


@pytest.fixture(scope="module")
def fault_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultServer]:
    """Return a private migrated server for this module; stopped and deleted afterwards."""
    server = FaultServer(tmp_path_factory.mktemp("outages"))
    try:
        yield server
    finally:
        server.close()


@pytest.fixture
def proxy(fault_server: FaultServer) -> Iterator[OutageProxy]:
    """Return a proxy in front of the private server (direct, never through PgBouncer: the client is tested)."""
    outage = OutageProxy(str(fault_server.socket_dir / ".s.PGSQL.5432"))
    try:
        yield outage
    finally:
        outage.close()


def _database(url: str) -> Database:
    return Database(url, settings=test_settings(
        connect_timeout=CONNECT_TIMEOUT, connect_retries=RETRIES, connect_backoff=BACKOFF, pool_min_size=1,
        pool_max_size=8, pool_timeout=30.0, transaction_pooler=False))


def _call_sync(db: Database, session_id: UUID) -> Any:
    return db.run(plans.history(session_id, 50))


async def _many_tasks(db: Database, session_id: UUID, then: Callable[[], Awaitable[object]] | None = None
                      ) -> tuple[list[tuple[float, BaseException | None]], tuple[float, BaseException | None] | None]:
    """Run CALLERS concurrent reads as tasks; return each one's duration and error, and ``then`` timed.

    ``then`` is awaited by the first task whose call ends, at once (as in ``_many_threads``).
    """
    after: list[tuple[float, BaseException | None]] = []

    async def one() -> tuple[float, BaseException | None]:
        started = time.monotonic()
        try:
            await get_chat_history(session_id, db=db)
        except Exception as error:
            outcome: tuple[float, BaseException | None] = (time.monotonic() - started, error)
        else:
            outcome = (time.monotonic() - started, None)
        if then is not None and not after:
            after.append((0.0, None))  # taken: later tasks must not run ``then`` too
            after[0] = await _atimed(then())
        return outcome

    return list(await asyncio.gather(*(one() for _ in range(CALLERS)))), (after[0] if after else None)


def _many_threads(db: Database, session_id: UUID, then: Callable[[], object] | None = None
                  ) -> tuple[list[tuple[float, BaseException | None]], tuple[float, BaseException | None] | None]:
    """Run CALLERS concurrent reads on threads; return each one's duration and error, and ``then`` timed.

    ``then`` runs on the first thread whose call ends, at once: waiting for a hundred threads to wake and
    finish on a loaded machine can outlast the cool-down ``then`` is meant to meet.
    """
    results: list[tuple[float, BaseException | None]] = []
    after: list[tuple[float, BaseException | None]] = []
    go = threading.Barrier(CALLERS)
    first = threading.Lock()

    def worker() -> None:
        go.wait()
        started = time.monotonic()
        try:
            _call_sync(db, session_id)
        except Exception as error:
            results.append((time.monotonic() - started, error))
        else:
            results.append((time.monotonic() - started, None))
        if then is not None and first.acquire(blocking=False):
            after.append(_timed(then))

    threads = [threading.Thread(target=worker) for _ in range(CALLERS)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return results, (after[0] if after else None)


def _timed(call: Callable[[], object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        call()
    except Exception as error:
        return time.monotonic() - started, error
    return time.monotonic() - started, None


async def _atimed(call: Awaitable[object]) -> tuple[float, BaseException | None]:
    started = time.monotonic()
    try:
        await call
    except Exception as error:
        return time.monotonic() - started, error
    return time.monotonic() - started, None


def _report(label: str, results: list[tuple[float, BaseException | None]]) -> float:
    seconds = sorted(duration for duration, _ in results)
    print(f"\n{label}: {len(results)} calls failed after min {seconds[0]:.2f} s, median "
          f"{statistics.median(seconds):.2f} s, max {seconds[-1]:.2f} s; one retry cycle {CYCLE:.2f} s, "
          f"limit 1.2x = {1.2 * CYCLE:.2f} s")
    return seconds[-1]


@pytest.mark.parametrize("pool", ["open", "never opened"])
def test_concurrent_calls_during_an_outage_fail_together_within_one_retry_cycle(
        proxy: OutageProxy, mode: str, pool: str) -> None:
    db = _database(proxy.url(FAULT_DATABASE))
    try:
        session_id = asyncio.run(create_chat_session(db=db)) if pool == "open" else UUID(int=1)
        # ``after``: a call made as soon as the outage's callers learn of the failure, in the cool-down.
        if mode == "sync":
            if pool == "open":
                _many_threads(db, session_id)  # the pool's connections in use, then idle
            proxy.down()
            results, after = _many_threads(db, session_id, then=lambda: _call_sync(db, session_id))
        else:
            async def outage() -> tuple[list[tuple[float, BaseException | None]],
                                        tuple[float, BaseException | None] | None]:
                if pool == "open":
                    await _many_tasks(db, session_id)  # on the loop the outage then meets
                proxy.down()
                return await _many_tasks(db, session_id, then=lambda: get_chat_history(session_id, db=db))

            results, after = asyncio.run(outage())
        assert after is not None
        assert all(isinstance(error, DatabaseUnavailableError) for _, error in results), results[:3]
        messages = {str(error) for _, error in results}
        assert len(messages) == 1, messages  # the same error for everyone: the shared attempt's
        assert _report(f"outage, {mode}, pool {pool}", results) <= 1.2 * CYCLE
        # In the cool-down that follows, a call fails at once with the same error.
        assert isinstance(after[1], DatabaseUnavailableError) and str(after[1]) in messages
        assert after[0] < BACKOFF / 2
    finally:
        db.close()


def test_the_first_call_after_recovery_succeeds_within_one_backoff_step(proxy: OutageProxy, mode: str) -> None:
    db = _database(proxy.url(FAULT_DATABASE))
    try:
        session_id = asyncio.run(create_chat_session(db=db))
        proxy.down()
        recovered_at: list[float] = []
        first_success: list[float] = []
        failures = 0

        async def keep_calling() -> None:
            nonlocal failures
            # A widget's steady trickle of requests: one every 20 ms, through the outage and past its end.
            while not first_success:
                try:
                    if mode == "async":
                        await get_chat_history(session_id, db=db)
                    else:
                        await asyncio.to_thread(_call_sync, db, session_id)
                except DatabaseUnavailableError:
                    failures += 1
                    await asyncio.sleep(0.02)
                else:
                    first_success.append(time.monotonic())

        async def outage_then_recovery() -> None:
            task = asyncio.create_task(keep_calling())
            await asyncio.sleep(CYCLE + 0.7)  # into the second retry cycle of the outage
            proxy.up()
            recovered_at.append(time.monotonic())
            await asyncio.wait_for(task, timeout=3 * CYCLE)

        asyncio.run(outage_then_recovery())
        delay = first_success[0] - recovered_at[0]
        print(f"\nrecovery, {mode}: first success {delay:.2f} s after the server was back ({failures} calls failed "
              f"during the outage); longest backoff step {LONGEST_STEP:.2f} s")
        assert failures > 0 and delay <= LONGEST_STEP
    finally:
        db.close()


@pytest.mark.parametrize("where", ["127.0.0.1:1", "localhost:1", "a missing socket folder"])
def test_a_refused_local_connection_fails_at_once(tmp_path: Path, mode: str, where: str,
                                                  caplog: pytest.LogCaptureFixture) -> None:
    if where == "a missing socket folder":
        url = f"postgresql://u:secretpw@/db?host={tmp_path / 'no-server-here'}"
    else:
        url = f"postgresql://u:secretpw@{where}/db"
    # Five retries from 1 s would wait 1 + 2 + 4 + 5 + 5 s before the error.
    db = Database(url, settings=test_settings(connect_retries=5, connect_backoff=1.0))
    started = time.monotonic()
    try:
        with pytest.raises(DatabaseUnavailableError) as caught:
            if mode == "sync":
                db.run(plans.history(UUID(int=1), 1))
            else:
                asyncio.run(db.arun(plans.history(UUID(int=1), 1)))
    finally:
        db.close()
    assert time.monotonic() - started < 1.0  # less than the first backoff step: never retried
    assert "retrying" not in caplog.text
    assert "secretpw" not in str(caught.value) and "secretpw" not in caplog.text
