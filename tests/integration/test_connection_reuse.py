"""Which pooled connection a call gets: the one returned last, so one caller stays on one warm server process."""

from __future__ import annotations

import asyncio

import pytest

from sony_rag.database import Database
from sony_rag.settings import get_settings


@pytest.fixture
def three_connections(database_url: str) -> Database:
    """Return a Database whose pools keep three connections open."""
    return Database(database_url, settings=get_settings().model_copy(update={"pool_min_size": 3, "pool_max_size": 3}))


def test_calls_one_after_another_reuse_the_connection_returned_last(three_connections: Database) -> None:
    with three_connections as db:
        pool = db.pool()
        pool.wait()
        pids = []
        for _ in range(6):
            with pool.connection() as conn:
                pids.append(conn.info.backend_pid)
        assert len(set(pids)) == 1  # handed out in turn, three server processes would take turns

        first, second = pool.getconn(), pool.getconn()
        pool.putconn(first)
        pool.putconn(second)
        with pool.connection() as conn:
            assert conn is second


def test_async_calls_one_after_another_reuse_the_connection_returned_last(three_connections: Database) -> None:
    async def scenario() -> None:
        async with three_connections as db:
            pool = await db.apool()
            await pool.wait()
            pids = []
            for _ in range(6):
                async with pool.connection() as conn:
                    pids.append(conn.info.backend_pid)
            assert len(set(pids)) == 1

            first, second = await pool.getconn(), await pool.getconn()
            await pool.putconn(first)
            await pool.putconn(second)
            async with pool.connection() as conn:
                assert conn is second

    asyncio.run(scenario())
