"""Behind PgBouncer in transaction mode, statements pipelined with their settings must leave no server connection
linked to an idle client. psycopg ends a pipeline with a Sync and, when results are still on their way, a Flush;
PgBouncer gives a Flush that arrives after the Sync's reply released the server a server connection of its own,
until that client's next query. A proxy that holds every such trailing Flush back a moment makes that happen on
every call, so with one server connection two clients taking turns would wait for it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from helpers import test_settings
from pgbouncer import PgBouncer, pgbouncer_available
from psycopg import sql

from sony_rag.database import Database
from sony_rag.errors import SonyRagError
from sony_rag.executor import PlanGenerator, SetLocal, fetch, plan

from . import test_faults
from .support import FAULT_DATABASE, FaultServer

# The fault tests' fixtures: a private server for this module, started again before a test if one left it down.
fault_server = test_faults.fault_server
server_up = test_faults.server_up

FLUSH = b"H\x00\x00\x00\x04"  # the protocol's Flush message: type byte and length


@plan(read_only=True)
def read_with_settings() -> PlanGenerator[str]:
    """Return work_mem as this read set it."""
    yield SetLocal({"work_mem": "5MB"})
    rows = yield fetch((sql.SQL("SELECT current_setting('work_mem') AS work_mem"), {}))
    return str(rows[0]["work_mem"])


@contextlib.asynccontextmanager
async def flush_delaying_proxy(port: int) -> AsyncIterator[int]:
    """Forward a loopback port to ``port``, holding each client chunk that ends in a Flush back by 0.2 s."""

    async def pipe(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, from_client: bool) -> None:
        with contextlib.suppress(ConnectionError):
            while chunk := await reader.read(65536):
                if from_client and chunk.endswith(FLUSH):
                    writer.write(chunk[:-len(FLUSH)])
                    await writer.drain()
                    await asyncio.sleep(0.2)  # the Sync's reply reaches PgBouncer first
                    chunk = FLUSH
                writer.write(chunk)
                await writer.drain()
        writer.close()

    async def serve(client_reader: asyncio.StreamReader, client_writer: asyncio.StreamWriter) -> None:
        server_reader, server_writer = await asyncio.open_connection("127.0.0.1", port)
        await asyncio.gather(pipe(client_reader, server_writer, True), pipe(server_reader, client_writer, False))

    server = await asyncio.start_server(serve, "127.0.0.1", 0)
    try:
        yield int(server.sockets[0].getsockname()[1])
    finally:
        server.close()


@pytest.mark.skipif(not pgbouncer_available(), reason="needs Debian's pgbouncer (apt-get install -y pgbouncer)")
async def test_reads_with_settings_leave_no_server_connection_linked_to_an_idle_client(fault_server: FaultServer,
                                                                                      mode: str) -> None:
    with PgBouncer(fault_server.socket_dir, pool_size=1, settings={"query_wait_timeout": "2"}) as bouncer:
        async with flush_delaying_proxy(bouncer.port) as port:
            url = bouncer.url(FAULT_DATABASE).replace(f":{bouncer.port}/", f":{port}/")
            settings = test_settings(transaction_pooler=True, pool_min_size=1, pool_max_size=1, pool_timeout=5.0)
            clients = [Database(url, settings=settings) for _ in range(2)]
            try:
                async def read(db: Database) -> Any:
                    if mode == "sync":
                        return await asyncio.to_thread(db.run, read_with_settings())
                    return await db.arun(read_with_settings())

                for db in [*clients, *clients]:  # a server connection left linked to the other client fails this one
                    try:
                        assert await read(db) == "5MB"
                    except SonyRagError as error:
                        pytest.fail(f"a client waited for PgBouncer's only server connection: {error}")
                    await asyncio.sleep(0.4)  # the held-back Flush arrives while this client is idle
            finally:
                for db in clients:
                    await db.aclose()
