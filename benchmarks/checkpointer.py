"""LangGraph checkpointers: storage after a 200-turn agent conversation, one turn's checkpoint writes, and loading
the thread (``get_tuple``), for sony-rag's SonyCheckpointer beside langgraph-checkpoint-postgres's PostgresSaver.

    python -m benchmarks.checkpointer [--smoke]

Both run the same agent (``create_agent`` with a scripted model and one tool, so every turn is a human message, an
AI tool call, a tool result and an AI answer) on the same server, each in a fresh database of its own.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, message_to_dict
from langchain_core.tools import tool
from psycopg.conninfo import make_conninfo

from benchmarks.common import Bench, Report, percentiles, run_standalone, why_not
from sony_rag.checkpointer import SonyCheckpointer
from sony_rag.database import Database
from sony_rag.migrate import migrate
from sony_rag.settings import Settings

COLUMNS = ["contender", "turns", "messages", "storage KiB", "x message bytes", "turn writes p50 ms",
           "turn writes p95 ms", "get_tuple p50 ms", "get_tuple p95 ms", "new saver get_tuple p50 ms"]
TURNS = 200
SMOKE_TURNS = 10
LOADS = 50
SMOKE_LOADS = 5
OUR_TABLES = ("chat_sessions", "chat_messages", "chat_checkpoints", "chat_checkpoint_blobs", "chat_checkpoint_writes")
PEER_TABLES = ("checkpoints", "checkpoint_blobs", "checkpoint_writes")

PASSAGE = ("[{n}] Hallwyl 3-seat sofa in oat boucle, solid oak legs, 214 x 92 x 78 cm, removable covers; price $1,299; "
           "in stock at the Oslo showroom; delivery in 5-7 working days; 10-year frame warranty. ")


@tool
def search_catalog(query: str) -> str:
    """Return passages of the shop's catalogue and policies that match the query."""
    return "".join(PASSAGE.format(n=n) for n in range(1, 5))  # four passages, about 1 KB like a real search


class _ScriptedModel(GenericFakeChatModel):
    """A chat model that replays scripted replies and accepts tools, so no model runs in the benchmark."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> _ScriptedModel:  # type: ignore[override]
        return self


def script(turns: int) -> Iterator[BaseMessage]:
    """Yield the model's replies for ``turns`` turns: a tool call, then an answer citing the tool's passages."""
    for turn in range(turns):
        yield AIMessage("", tool_calls=[{"name": "search_catalog", "args": {"query": f"oak sofa under ${turn + 500}"},
                                         "id": f"call_{uuid.uuid4().hex[:24]}", "type": "tool_call"}],
                        usage_metadata={"input_tokens": 812, "output_tokens": 24, "total_tokens": 836})
        yield AIMessage(f"Turn {turn}: the Hallwyl 3-seat sofa in oat boucle costs $1,299 and is in stock at the Oslo "
                        "showroom [1]. It has solid oak legs and removable covers, delivery takes 5-7 working days, "
                        "and the frame has a 10-year warranty [1]. Would you like me to check a fabric sample?",
                        usage_metadata={"input_tokens": 1290, "output_tokens": 61, "total_tokens": 1351})


def question(turn: int) -> HumanMessage:
    """Return the shopper's message of a turn."""
    return HumanMessage(f"Turn {turn}: do you have an oak sofa under ${turn + 500} that can be delivered next week?")


def timed(saver_class: type) -> type:
    """Return a subclass of ``saver_class`` that records how long each put and put_writes took."""

    class Timed(saver_class):  # type: ignore[valid-type,misc]
        durations: list[float]

        def put(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().put(*args, **kwargs)
            finally:
                self.durations.append(time.perf_counter() - started)

        def put_writes(self, *args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return super().put_writes(*args, **kwargs)
            finally:
                self.durations.append(time.perf_counter() - started)

    Timed.__name__ = f"Timed{saver_class.__name__}"
    return Timed


def converse(saver: Any, turns: int) -> tuple[list[float], list[BaseMessage], dict[str, Any]]:
    """Run the agent for ``turns`` turns on a new thread; return each turn's write seconds, messages and config."""
    from langchain.agents import create_agent

    agent = create_agent(_ScriptedModel(messages=script(turns)), [search_catalog], checkpointer=saver)
    config: dict[str, Any] = {"configurable": {"thread_id": str(uuid.uuid4())}}
    per_turn: list[float] = []
    result: dict[str, Any] = {}
    for turn in range(turns):
        saver.durations = []
        result = agent.invoke({"messages": [question(turn)]}, config)
        per_turn.append(sum(saver.durations))
    return per_turn, result["messages"], config


def message_bytes(messages: Sequence[BaseMessage]) -> int:
    """Return the bytes of the messages themselves: each as LangChain's JSON (``message_to_dict``), UTF-8."""
    return sum(len(json.dumps(message_to_dict(message)).encode()) for message in messages)


def storage(url: str, tables: Sequence[str]) -> dict[str, int]:
    """Return the bytes of each table (heap, TOAST and indexes) after VACUUM FULL, so dead rows do not count."""
    sizes: dict[str, int] = {}
    with psycopg.connect(url, autocommit=True) as conn:
        for table in tables:
            conn.execute(f"VACUUM FULL {table}")
            row = conn.execute("SELECT pg_total_relation_size(to_regclass(%s))", (table,)).fetchone()
            sizes[table] = int(row[0]) if row and row[0] is not None else 0
    return sizes


def load_times(load: Callable[[], Any], count: int) -> tuple[float, float]:
    """Return (p50, p95) in ms of ``count`` loads, after one warm-up."""
    load()
    durations = []
    for _ in range(count):
        started = time.perf_counter()
        load()
        durations.append(time.perf_counter() - started)
    return percentiles(durations)


@contextmanager
def fresh_database(bench: Bench, name: str) -> Iterator[str]:
    """Yield the URL of a new empty database on the benchmark's server, dropped afterwards."""
    with psycopg.connect(bench.server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    try:
        yield make_conninfo(bench.server_url, dbname=name)
    finally:
        with psycopg.connect(bench.server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def measure(report: Report, name: str, saver: Any, url: str, tables: Sequence[str], turns: int, loads: int,
            new_saver: Callable[[], Any]) -> None:
    """Converse, then add one row for ``saver``: storage, per-turn write time, and get_tuple time on the saver
    that ran the conversation and on a new one (``new_saver``: a process that has not loaded the thread yet)."""
    per_turn, messages, config = converse(saver, turns)
    assert len(messages) == 4 * turns, f"{name}: expected {4 * turns} messages, got {len(messages)}"
    loaded = saver.get_tuple(config)
    assert loaded.checkpoint["channel_values"]["messages"] == messages, f"{name} did not restore the conversation"
    sizes = storage(url, tables)
    size = sum(sizes.values())
    report.notes.append(f"{name}, bytes per table: " + ", ".join(f"{table} {value / 1024:,.0f} KiB"
                                                                  for table, value in sizes.items())
                        + f"; the messages themselves: {message_bytes(messages) / 1024:,.0f} KiB")
    writes = percentiles(per_turn)
    reads = load_times(lambda: saver.get_tuple(config), loads)
    first_reads = load_times(lambda: new_saver().get_tuple(config), loads)
    report.add(contender=name, turns=turns, messages=len(messages), **{
        "storage KiB": size / 1024, "x message bytes": size / message_bytes(messages),
        "turn writes p50 ms": writes[0], "turn writes p95 ms": writes[1],
        "get_tuple p50 ms": reads[0], "get_tuple p95 ms": reads[1], "new saver get_tuple p50 ms": first_reads[0]})


def sony(bench: Bench, report: Report, turns: int, loads: int) -> None:
    """Measure SonyCheckpointer in a fresh migrated database."""
    with fresh_database(bench, "sony_rag_checkpointer") as url:
        settings = Settings(pool_min_size=1, pool_max_size=4, embeddings="fake")  # type: ignore[call-arg]
        with Database(url, settings=settings) as db:
            migrate(db)
            saver = timed(SonyCheckpointer)(db)
            measure(report, "sony-rag SonyCheckpointer", saver, url, OUR_TABLES, turns, loads,
                    lambda: SonyCheckpointer(db))


def peer(bench: Bench, report: Report, turns: int, loads: int) -> None:
    """Measure langgraph-checkpoint-postgres's PostgresSaver in a fresh database (its own setup())."""
    from langgraph.checkpoint.postgres import PostgresSaver
    from psycopg.rows import dict_row

    with fresh_database(bench, "sony_rag_checkpointer_peer") as url, \
            psycopg.connect(url, autocommit=True, prepare_threshold=0, row_factory=dict_row) as conn:
        saver = timed(PostgresSaver)(conn)  # what PostgresSaver.from_conn_string builds, timed
        saver.setup()
        measure(report, "langgraph-checkpoint-postgres PostgresSaver", saver, url, PEER_TABLES, turns, loads,
                lambda: PostgresSaver(conn))


def run(bench: Bench) -> Report:
    """Measure both checkpointers and return the report."""
    turns = SMOKE_TURNS if bench.options.smoke else TURNS
    loads = SMOKE_LOADS if bench.options.smoke else LOADS
    report = Report("checkpointer", f"LangGraph checkpointers: a {turns}-turn agent conversation (4 messages a turn)",
                    COLUMNS)
    sony(bench, report, turns, loads)
    try:
        peer(bench, report, turns, loads)
    except Exception as error:
        report.notes.append(f"langgraph-checkpoint-postgres PostgresSaver not measured: {why_not(error)}")
    ours, theirs = report.rows[0], (report.rows[1] if len(report.rows) > 1 else None)
    report.target("SonyCheckpointer storage / message bytes", ours["x message bytes"], "<= 1.5",
                  ours["x message bytes"] <= 1.5)
    if theirs is not None:
        report.target("SonyCheckpointer turn writes p50 (ms) vs PostgresSaver", ours["turn writes p50 ms"],
                      f"<= {theirs['turn writes p50 ms']:.2f}",
                      ours["turn writes p50 ms"] <= theirs["turn writes p50 ms"])
        report.target("SonyCheckpointer get_tuple p50 (ms) vs PostgresSaver", ours["get_tuple p50 ms"],
                      f"<= {theirs['get_tuple p50 ms']:.2f}", ours["get_tuple p50 ms"] <= theirs["get_tuple p50 ms"])
        report.target("SonyCheckpointer get_tuple p50 (ms) on a new saver vs PostgresSaver",
                      ours["new saver get_tuple p50 ms"], f"<= {theirs['new saver get_tuple p50 ms']:.2f}",
                      ours["new saver get_tuple p50 ms"] <= theirs["new saver get_tuple p50 ms"])
    report.notes.append(
        "Storage: every table of the saver (heap, TOAST, indexes) after VACUUM FULL, in a database holding only "
        "this conversation; message bytes: each message as LangChain's JSON (message_to_dict), UTF-8. Turn writes: "
        "the time of all put and put_writes calls of one agent turn (LangGraph makes them on background threads). "
        "get_tuple: the newest checkpoint of the thread with all its messages, on the saver that ran the "
        "conversation (an agent's next turn; SonyCheckpointer decodes only rows it has not decoded before) and on a "
        "new saver each time (a process that has not loaded the thread: every message decoded). PostgresSaver gets "
        "one open "
        "connection (as from_conn_string builds it); SonyCheckpointer a pooled Database.")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the checkpointer benchmark alone; return the exit code."""
    return run_standalone("checkpointer", run, __doc__.splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
