"""Chat memory: append one message, and read the newest 50 of a session, p50/p95, for sony-rag (its LangChain
history and the documented async functions) beside langchain-postgres's PostgresChatMessageHistory.

    python -m benchmarks.chat [--chat-ops 1000] [--smoke]
"""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

from langchain_core.messages import AIMessage, BaseMessage, HumanMessage

from benchmarks.common import Bench, Report, percentiles, run_standalone, why_not
from sony_rag.database import create_chat_session, get_chat_history, insert_chat_message

COLUMNS = ["contender", "operation", "ops", "p50 ms", "p95 ms"]
READ = 50
LC_TABLE = "lc_chat_history"


def text(index: int) -> str:
    """Return the index-th message's text (~150 characters)."""
    return (f"Message {index}: do you have the walnut sideboard in stock, and could it be delivered to a third "
            "floor flat without a lift before the end of next week?")


def message(index: int) -> BaseMessage:
    """Return the index-th message of a conversation (alternating shopper and assistant)."""
    return HumanMessage(text(index)) if index % 2 == 0 else AIMessage(text(index))


def time_sync(operation: Callable[[int], Any], count: int) -> tuple[float, float]:
    """Return (p50, p95) in ms of ``count`` calls."""
    operation(-1)  # warm up
    durations = []
    for index in range(count):
        started = time.perf_counter()
        operation(index)
        durations.append(time.perf_counter() - started)
    return percentiles(durations)


def time_async(operation: Callable[[int], Awaitable[Any]], count: int) -> tuple[float, float]:
    """Return (p50, p95) in ms of ``count`` awaited calls inside one event loop."""
    return asyncio.run(_time_in_loop(operation, count))


def sony(bench: Bench, report: Report, ops: int) -> None:
    """Measure sony-rag's SonyChatMessageHistory and its documented async functions."""
    from sony_rag.chat_history import SonyChatMessageHistory

    db = bench.db
    reader = SonyChatMessageHistory(uuid.uuid4(), db, max_messages=READ)
    reader.add_messages([message(i) for i in range(READ)])
    assert len(reader.messages) == READ
    writer = SonyChatMessageHistory(uuid.uuid4(), db)
    name = "sony-rag SonyChatMessageHistory"
    report.add(contender=name, operation="append 1 (add_message)", ops=ops,
               **_cells(time_sync(lambda i: writer.add_message(message(i)), ops)))
    report.add(contender=name, operation=f"read newest {READ} (.messages)", ops=ops,
               **_cells(time_sync(lambda i: reader.messages, ops)))

    async def documented() -> tuple[Any, Any]:
        session = await create_chat_session(db=db)
        for i in range(READ):
            await insert_chat_message(session, "user" if i % 2 == 0 else "assistant", text(i), db=db)
        return session, await create_chat_session(db=db)

    read_session, write_session = asyncio.run(documented())

    async def append(i: int) -> Any:
        return await insert_chat_message(write_session, "user", text(i), db=db)

    async def read(i: int) -> Any:
        rows = await get_chat_history(read_session, limit=READ, db=db)
        assert len(rows) == READ
        return rows

    name = "sony-rag insert_chat_message / get_chat_history (async)"
    report.add(contender=name, operation="append 1", ops=ops, **_cells(time_async(append, ops)))
    report.add(contender=name, operation=f"read newest {READ}", ops=ops, **_cells(time_async(read, ops)))


def langchain(bench: Bench, report: Report, ops: int) -> None:
    """Measure langchain-postgres's PostgresChatMessageHistory, sync and async, on its own table."""
    import psycopg
    from langchain_postgres import PostgresChatMessageHistory

    with psycopg.connect(bench.url, autocommit=True) as conn:
        PostgresChatMessageHistory.create_tables(conn, LC_TABLE)
        read_session_id = str(uuid.uuid4())
        reader = PostgresChatMessageHistory(LC_TABLE, read_session_id, sync_connection=conn)
        reader.add_messages([message(i) for i in range(READ)])
        assert len(reader.messages) == READ
        writer = PostgresChatMessageHistory(LC_TABLE, str(uuid.uuid4()), sync_connection=conn)
        name = "langchain-postgres PostgresChatMessageHistory"
        report.add(contender=name, operation="append 1 (add_message)", ops=ops,
                   **_cells(time_sync(lambda i: writer.add_message(message(i)), ops)))
        report.add(contender=name, operation=f"read newest {READ} (.messages)", ops=ops,
                   **_cells(time_sync(lambda i: reader.messages, ops)))

    async def run_async() -> None:
        async with await psycopg.AsyncConnection.connect(bench.url, autocommit=True) as aconn:
            read_history = PostgresChatMessageHistory(LC_TABLE, read_session_id, async_connection=aconn)
            write_history = PostgresChatMessageHistory(LC_TABLE, str(uuid.uuid4()), async_connection=aconn)

            async def append(i: int) -> None:
                await write_history.aadd_messages([message(i)])

            async def read(i: int) -> Any:
                return await read_history.aget_messages()

            report.add(contender="langchain-postgres PostgresChatMessageHistory (async)", operation="append 1",
                       ops=ops, **_cells(await _time_in_loop(append, ops)))
            report.add(contender="langchain-postgres PostgresChatMessageHistory (async)",
                       operation=f"read newest {READ}", ops=ops, **_cells(await _time_in_loop(read, ops)))

    asyncio.run(run_async())


async def _time_in_loop(operation: Callable[[int], Awaitable[Any]], count: int) -> tuple[float, float]:
    await operation(-1)  # warm up
    durations = []
    for index in range(count):
        started = time.perf_counter()
        await operation(index)
        durations.append(time.perf_counter() - started)
    return percentiles(durations)


def _cells(p50_p95: tuple[float, float]) -> dict[str, float]:
    return {"p50 ms": p50_p95[0], "p95 ms": p50_p95[1]}


def run(bench: Bench) -> Report:
    """Measure chat memory and return the report."""
    ops = bench.options.chat_ops
    report = Report("chat", f"Chat memory: append one message, read the newest {READ} ({ops:,} ops each)", COLUMNS)
    sony(bench, report, ops)
    if bench.options.langchain:
        try:
            langchain(bench, report, ops)
        except Exception as error:
            report.notes.append(f"langchain-postgres PostgresChatMessageHistory not measured: {why_not(error)}")
    for row in report.rows:
        if row["contender"].startswith("sony-rag") and row["operation"].startswith("read"):
            report.target(f"{row['contender']} read of {READ} p50", row["p50 ms"], "< 2 ms", row["p50 ms"] < 2.0)
    report.notes.append(
        f"Reads are of a session holding exactly {READ} messages, so every contender returns {READ} "
        "(PostgresChatMessageHistory has no limit: it always reads the whole session). sony-rag's history is a "
        "pooled Database; PostgresChatMessageHistory is given one open connection. Appends go to a session "
        "that grows by one message per call.")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chat benchmark alone; return the exit code."""
    return run_standalone("chat", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
