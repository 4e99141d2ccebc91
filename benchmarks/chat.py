"""Chat memory: append one message, and read the newest 50 of a session, p50/p95, for sony-rag (its LangChain
history and the documented async functions) beside langchain-postgres's PostgresChatMessageHistory, in
interleaved rounds (ours, then the peer's, per round) with the per-round ratio's median and spread.

Each row also says where the time goes: the client's CPU per call (this thread: encoding, pool, driver,
decoding) and the server's (the CPU of the backends the call used, from /proc when the server runs on this
machine). What is left of the wall time is waiting: for the commit's WAL flush, and for a core on a busy machine.

    python -m benchmarks.chat [--chat-ops 1000] [--smoke]
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import statistics
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import psycopg
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from psycopg.types.json import Jsonb

from benchmarks.common import Bench, Report, percentiles, run_standalone, why_not
from sony_rag.message_codec import encode_message
from sony_rag.operations import create_chat_session, get_chat_history, insert_chat_message
from sony_rag.sql import messages as message_sql

COLUMNS = ["contender", "operation", "ops", "p50 ms", "p95 ms", "vs peer", "client cpu us", "server cpu us"]
READ = 50
LC_TABLE = "lc_chat_history"


def text(index: int) -> str:
    """Return the index-th message's text (~150 characters)."""
    return (f"Message {index}: do you have the walnut sideboard in stock, and could it be delivered to a third "
            "floor flat without a lift before the end of next week?")


def message(index: int) -> BaseMessage:
    """Return the index-th message of a conversation (alternating shopper and assistant)."""
    return HumanMessage(text(index)) if index % 2 == 0 else AIMessage(text(index))


ROUNDS = 10


@dataclass
class Contender:
    """One way to do one operation: its name, the operation, and a sync or async call taking the op index."""

    contender: str
    operation: str
    call: Callable[[int], Any]
    is_async: bool = False
    backends: Callable[[], list[int]] = list  # the server processes its calls run on
    durations: list[float] = field(default_factory=list)
    round_p50s: list[float] = field(default_factory=list)
    client_cpu: float = 0.0  # seconds, over all timed calls
    server_cpu: float | None = 0.0  # seconds, over all timed calls; None when /proc cannot tell


_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def _process_cpu(pids: Sequence[int]) -> float | None:
    """Return the CPU seconds (user + system) these processes used so far; None if /proc does not show them."""
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as stat:
                fields = stat.read().rsplit(")", 1)[1].split()
        except OSError:
            return None
        total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
    return total / _TICK


def _block(runner: asyncio.Runner, contender: Contender, count: int) -> None:
    """Time ``count`` calls of ``contender`` (after one warm-up call), adding to its durations and CPU."""
    if contender.is_async:
        runner.run(contender.call(-1))
    else:
        contender.call(-1)
    pids = contender.backends()
    server_before, client_before = _process_cpu(pids), time.thread_time()
    if contender.is_async:
        durations = runner.run(_time_in_loop(contender.call, count))
    else:
        durations = []
        for index in range(count):
            started = time.perf_counter()
            contender.call(index)
            durations.append(time.perf_counter() - started)
    contender.client_cpu += time.thread_time() - client_before
    server_after = _process_cpu(pids)
    if contender.server_cpu is not None and server_before is not None and server_after is not None:
        contender.server_cpu += server_after - server_before
    else:
        contender.server_cpu = None
    contender.durations.extend(durations)
    contender.round_p50s.append(statistics.median(durations) * 1000)


async def _time_in_loop(operation: Callable[[int], Awaitable[Any]], count: int) -> list[float]:
    durations = []
    for index in range(count):
        started = time.perf_counter()
        await operation(index)
        durations.append(time.perf_counter() - started)
    return durations


FLOOR = "append 1: the statement alone, bare connection (server floor)"
ROW_FLOOR = "append 1: the message row alone, no session touch, bare connection"
# The documented chat_messages row with nothing of our append around it: no session touch, no row lock, no
# created-if-missing. What the table itself costs (five documented indexes, the foreign key), beside the peer.
ROW_ONLY = ("INSERT INTO chat_messages (message_id, session_id, role, content, metadata)"
            " VALUES (%(id)s, %(session)s, %(role)s, %(content)s, %(metadata)s)")


def sony(bench: Bench, runner: asyncio.Runner, stack: contextlib.ExitStack) -> list[Contender]:
    """Return sony-rag's contenders: SonyChatMessageHistory, the documented async functions, the bare statement."""
    from sony_rag.chat_history import SonyChatMessageHistory

    db = bench.db
    reader = SonyChatMessageHistory(uuid.uuid4(), db, max_messages=READ)
    reader.add_messages([message(i) for i in range(READ)])
    assert len(reader.messages) == READ
    writer = SonyChatMessageHistory(uuid.uuid4(), db)

    async def documented() -> tuple[Any, Any]:
        session = await create_chat_session(db=db)
        for i in range(READ):
            await insert_chat_message(session, "user" if i % 2 == 0 else "assistant", text(i), db=db)
        return session, await create_chat_session(db=db)

    read_session, write_session = runner.run(documented())

    async def append(i: int) -> Any:
        return await insert_chat_message(write_session, "user", text(i), db=db)

    async def read(i: int) -> Any:
        rows = await get_chat_history(read_session, limit=READ, db=db)
        assert len(rows) == READ
        return rows

    # What the server alone spends on our append (session touch, insert, the documented indexes): the same
    # statement the history sends, on a plain connection, with no pool, plan or message encoding around it.
    bare = stack.enter_context(bench.connect())
    encoded = encode_message(message(1))

    def statement_alone(i: int) -> None:
        query, params = message_sql.append(writer._session_id, [uuid.uuid4()], [encoded.role], [encoded.content],
                                           [None], None, [encoded.metadata], create_session={})
        bare.execute(query, params).fetchall()

    row_only = stack.enter_context(bench.connect())

    def row_alone(i: int) -> None:
        row_only.execute(ROW_ONLY, {"id": uuid.uuid4(), "session": writer._session_id, "role": encoded.role,
                                    "content": encoded.content, "metadata": Jsonb(encoded.metadata)})

    # The pools' backends (both pools: the idle ones add nothing), read before each block.
    monitor = stack.enter_context(psycopg.connect(bench.url, autocommit=True))

    def pooled() -> list[int]:
        return [row[0] for row in monitor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND application_name = 'sony-rag'")]

    history = "sony-rag SonyChatMessageHistory"
    functions = "sony-rag insert_chat_message / get_chat_history (async)"
    return [
        Contender(history, "append 1 (add_message)", lambda i: writer.add_message(message(i)), backends=pooled),
        Contender(history, f"read newest {READ} (.messages)", lambda i: reader.messages, backends=pooled),
        Contender(functions, "append 1", append, is_async=True, backends=pooled),
        Contender(functions, f"read newest {READ}", read, is_async=True, backends=pooled),
        Contender("sony-rag append statement", FLOOR, statement_alone, backends=lambda: [bare.info.backend_pid]),
        Contender("sony-rag chat_messages INSERT", ROW_FLOOR, row_alone,
                  backends=lambda: [row_only.info.backend_pid]),
    ]


def langchain(bench: Bench, runner: asyncio.Runner, stack: contextlib.ExitStack) -> list[Contender]:
    """Return langchain-postgres's PostgresChatMessageHistory contenders, sync and async, on its own table."""
    from langchain_postgres import PostgresChatMessageHistory

    conn = stack.enter_context(psycopg.connect(bench.url, autocommit=True))
    PostgresChatMessageHistory.create_tables(conn, LC_TABLE)
    read_session_id = str(uuid.uuid4())
    reader = PostgresChatMessageHistory(LC_TABLE, read_session_id, sync_connection=conn)
    reader.add_messages([message(i) for i in range(READ)])
    assert len(reader.messages) == READ
    writer = PostgresChatMessageHistory(LC_TABLE, str(uuid.uuid4()), sync_connection=conn)
    aconn = runner.run(psycopg.AsyncConnection.connect(bench.url, autocommit=True))
    stack.callback(lambda: runner.run(aconn.close()))
    read_history = PostgresChatMessageHistory(LC_TABLE, read_session_id, async_connection=aconn)
    write_history = PostgresChatMessageHistory(LC_TABLE, str(uuid.uuid4()), async_connection=aconn)

    async def append(i: int) -> None:
        await write_history.aadd_messages([message(i)])

    async def read(i: int) -> Any:
        return await read_history.aget_messages()

    def sync_backend() -> list[int]:
        return [conn.info.backend_pid]

    def async_backend() -> list[int]:
        return [aconn.info.backend_pid]

    name = "langchain-postgres PostgresChatMessageHistory"
    return [
        Contender(name, "append 1 (add_message)", lambda i: writer.add_message(message(i)), backends=sync_backend),
        Contender(name, f"read newest {READ} (.messages)", lambda i: reader.messages, backends=sync_backend),
        Contender(f"{name} (async)", "append 1", append, is_async=True, backends=async_backend),
        Contender(f"{name} (async)", f"read newest {READ}", read, is_async=True, backends=async_backend),
        # Its add_message is one INSERT on the connection it was given: the peer's floor is its append itself.
        Contender(name, "append 1 (add_message), beside our floor", lambda i: writer.add_message(message(i)),
                  backends=sync_backend),
        Contender(name, "append 1 (add_message), beside our row alone", lambda i: writer.add_message(message(i)),
                  backends=sync_backend),
    ]


def run(bench: Bench) -> Report:
    """Measure chat memory, ours and the peer's interleaved in rounds, and return the report."""
    ops = bench.options.chat_ops
    rounds = 2 if bench.options.smoke else ROUNDS
    per_round = max(1, ops // rounds)
    report = Report("chat", f"Chat memory: append one message, read the newest {READ} ({per_round * rounds:,} ops "
                            f"each, in {rounds} interleaved rounds)", COLUMNS)
    with asyncio.Runner() as runner, contextlib.ExitStack() as stack:
        ours = sony(bench, runner, stack)
        peers: list[Contender | None] = [None] * len(ours)
        if bench.options.langchain:
            try:
                peers = list(langchain(bench, runner, stack))
            except Exception as error:
                report.notes.append(f"langchain-postgres PostgresChatMessageHistory not measured: {why_not(error)}")
        # Ours and the peer's take turns, a block each per round: on a shared machine the load drifts, and
        # each round's ratio compares the two under the same load.
        for _ in range(rounds):
            for mine, peer in zip(ours, peers, strict=True):
                _block(runner, mine, per_round)
                if peer is not None:
                    _block(runner, peer, per_round)
        for mine, peer in zip(ours, peers, strict=True):
            for contender in (mine, peer):
                if contender is None:
                    continue
                p50, p95 = percentiles(contender.durations)
                ratio = ""
                if contender is mine and peer is not None:
                    ratios = sorted(a / b for a, b in zip(mine.round_p50s, peer.round_p50s, strict=True))
                    middle = statistics.median(ratios)
                    ratio = f"{middle:.2f}x ({ratios[0]:.2f}-{ratios[-1]:.2f})"
                    if mine.operation not in (FLOOR, ROW_FLOOR):
                        report.target(f"{mine.contender} {mine.operation} vs {peer.contender}", middle, "<= 1.0x",
                                      middle <= 1.0)
                ops = len(contender.durations)
                server = None if contender.server_cpu is None else contender.server_cpu / ops * 1e6
                report.add(contender=contender.contender, operation=contender.operation, ops=ops,
                           **{"p50 ms": p50, "p95 ms": p95, "vs peer": ratio,
                              "client cpu us": contender.client_cpu / ops * 1e6, "server cpu us": server})
    for row in report.rows:
        if row["contender"].startswith("sony-rag") and row["operation"].startswith("read"):
            report.target(f"{row['contender']} read of {READ} p50", row["p50 ms"], "< 2 ms", row["p50 ms"] < 2.0)
    report.notes.append(
        f"Reads are of a session holding exactly {READ} messages, so every contender returns {READ} "
        "(PostgresChatMessageHistory has no limit: it always reads the whole session). sony-rag's history is a "
        "pooled Database; PostgresChatMessageHistory is given one open connection. Appends go to a session "
        "that grows by one message per call. 'vs peer' is the median over rounds of our p50 / the peer's p50 "
        "in the same round, with the lowest and highest round in brackets. The server-floor row runs our append "
        "statement alone on a plain connection: what the server spends on it (a session touch, a message row, "
        "the documented indexes of both tables), beside the peer's one-table INSERT. "
        "The row-alone row is less than any append of ours can be: one plain INSERT of the message row into "
        "chat_messages (its five documented indexes and its foreign key), without the session touch, lock or "
        "creation. 'client cpu us' is this "
        "thread's CPU per call (encoding, pool, driver, decoding); 'server cpu us' the CPU per call of the "
        "server processes the call ran on (clock ticks from /proc, summed over all rounds; '-' when the server "
        "is not on this machine). Neither counts the wait for the commit's WAL flush, which every append, ours "
        "and the peer's, spends once.")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chat benchmark alone; return the exit code."""
    return run_standalone("chat", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
