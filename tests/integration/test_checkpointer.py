"""SonyCheckpointer on a real Postgres: the official conformance suite (sync and async), agents built with
``create_agent(checkpointer=...)``, exact restore after removals and forks, and the thread's rows in the chat tables."""

from __future__ import annotations

import os
import uuid
from collections.abc import AsyncIterator, Sequence
from typing import Any

import psycopg
import pytest
from conftest import test_settings
from langchain.agents import create_agent
from langchain_core.language_models.fake_chat_models import GenericFakeChatModel
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage, RemoveMessage
from langchain_core.runnables import RunnableConfig
from langchain_core.tools import tool
from langgraph.checkpoint.base import ChannelVersions, Checkpoint, CheckpointMetadata, CheckpointTuple
from langgraph.checkpoint.conformance import checkpointer_test, validate
from langgraph.graph import START, MessagesState, StateGraph
from psycopg.conninfo import make_conninfo

from sony_rag import Database, InvalidInputError, SonyChatMessageHistory, delete_chat_session, get_chat_history
from sony_rag.checkpointer import SonyCheckpointer, session_id_for_thread
from sony_rag.migrate import migrate


class _SyncDriven(SonyCheckpointer):
    """The saver's sync methods behind the async names, so the conformance suite (async only) tests them."""

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        return self.get_tuple(config)

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        for item in self.list(config, filter=filter, before=before, limit=limit):
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        return self.put(config, checkpoint, metadata, new_versions)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        self.put_writes(config, writes, task_id, task_path)

    async def adelete_thread(self, thread_id: str) -> None:
        self.delete_thread(thread_id)

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        self.delete_for_runs(run_ids)

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        self.copy_thread(source_thread_id, target_thread_id)

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        self.prune(thread_ids, strategy=strategy)


async def test_conformance_suite_passes_every_capability(db: Database, mode: str) -> None:
    saver_class = _SyncDriven if mode == "sync" else SonyCheckpointer

    @checkpointer_test(name=f"SonyCheckpointer-{mode}")
    async def factory() -> AsyncIterator[SonyCheckpointer]:
        yield saver_class(db)

    report = await validate(factory)
    failures = {name: result.failures for name, result in report.results.items() if result.passed is not True}
    assert failures == {}
    # Base and extended capabilities were all detected and run, not skipped.
    assert set(report.results) == {"put", "put_writes", "get_tuple", "list", "delete_thread", "delete_for_runs",
                                   "copy_thread", "prune"}
    assert all(result.detected and result.tests_passed > 0 for result in report.results.values())


# -- agents and graphs ------------------------------------------------------------------------------------


@tool
def price_of(product: str) -> str:
    """Return the price of a product."""
    return f"{product} costs $499"


class _ToolCallingFake(GenericFakeChatModel):
    """A scripted chat model that accepts tools (create_agent binds them)."""

    def bind_tools(self, tools: Any, **kwargs: Any) -> _ToolCallingFake:  # type: ignore[override]
        return self


def _agent_model(turns: int) -> GenericFakeChatModel:
    replies: list[BaseMessage] = []
    for turn in range(turns):
        replies.append(AIMessage("", id=f"call-{turn}", tool_calls=[
            {"name": "price_of", "args": {"product": f"Sofa {turn}"}, "id": f"tool-{turn}", "type": "tool_call"}],
            usage_metadata={"input_tokens": 10, "output_tokens": 5, "total_tokens": 15}))
        replies.append(AIMessage(f"Sofa {turn} costs $499.", id=f"answer-{turn}",
                                 usage_metadata={"input_tokens": 20, "output_tokens": 7, "total_tokens": 27}))
    return _ToolCallingFake(messages=iter(replies))


async def _invoke(graph: Any, mode: str, payload: Any, config: RunnableConfig) -> Any:
    if mode == "sync":
        return graph.invoke(payload, config)
    return await graph.ainvoke(payload, config)


async def _state(graph: Any, mode: str, config: RunnableConfig) -> Any:
    return graph.get_state(config) if mode == "sync" else await graph.aget_state(config)


async def test_an_agent_leaves_its_conversation_readable_in_chat_messages(db: Database, mode: str) -> None:
    agent = create_agent(_agent_model(2), [price_of], checkpointer=SonyCheckpointer(db))
    thread = str(uuid.uuid4())
    config: RunnableConfig = {"configurable": {"thread_id": thread, "page_context": "/products/sofa"}}
    await _invoke(agent, mode, {"messages": [HumanMessage("How much is Sofa 0?", id="h0")]}, config)
    result = await _invoke(agent, mode, {"messages": [HumanMessage("And Sofa 1?", id="h1")]}, config)
    assert [m.content for m in result["messages"]][-1] == "Sofa 1 costs $499."

    rows = await get_chat_history(thread, limit=None, db=db)
    assert [(row["role"], row["content"]) for row in rows] == [
        ("user", "How much is Sofa 0?"), ("assistant", ""), ("assistant", "Sofa 0 costs $499"),
        ("assistant", "Sofa 0 costs $499."),
        ("user", "And Sofa 1?"), ("assistant", ""), ("assistant", "Sofa 1 costs $499"),
        ("assistant", "Sofa 1 costs $499."),
    ]
    assert [row["token_usage"] for row in rows][:4] == [None, 15, None, 27]
    assert {row["page_context"] for row in rows} == {"/products/sofa"}
    # Each message written once, however many checkpoints list it.
    assert len(rows) == len(result["messages"]) == 8
    # The history class reads the same rows, lossless.
    history = SonyChatMessageHistory(thread, db)
    assert history.messages == result["messages"]


def _graph(saver: SonyCheckpointer) -> Any:
    def respond(state: MessagesState) -> dict[str, Any]:
        last = state["messages"][-1]
        return {"messages": [AIMessage(f"echo: {last.content}", id=f"ai-{last.id}")]}

    builder = StateGraph(MessagesState)
    builder.add_node("respond", respond)
    builder.add_edge(START, "respond")
    return builder.compile(checkpointer=saver)


async def test_a_checkpoint_restores_exactly_its_messages_after_removal_and_in_a_fork(db: Database,
                                                                                      mode: str) -> None:
    graph = _graph(SonyCheckpointer(db))
    config: RunnableConfig = {"configurable": {"thread_id": "shop-visitor-7"}}
    for index in range(3):
        await _invoke(graph, mode, {"messages": [HumanMessage(f"q{index}", id=f"q{index}")]}, config)
    full = (await _state(graph, mode, config)).values["messages"]
    assert [m.content for m in full] == ["q0", "echo: q0", "q1", "echo: q1", "q2", "echo: q2"]
    before_removal = (await _state(graph, mode, config)).config

    # Remove two messages from the middle, as a trimming or summarising step would.
    if mode == "sync":
        graph.update_state(config, {"messages": [RemoveMessage(id="q1"), RemoveMessage(id="ai-q1")]})
    else:
        await graph.aupdate_state(config, {"messages": [RemoveMessage(id="q1"), RemoveMessage(id="ai-q1")]})
    trimmed = (await _state(graph, mode, config)).values["messages"]
    assert [m.content for m in trimmed] == ["q0", "echo: q0", "q2", "echo: q2"]

    # Time travel: the earlier checkpoint still has all six.
    assert (await _state(graph, mode, before_removal)).values["messages"] == full

    # A fork from the first turn's checkpoint continues from exactly that list.
    history = list(graph.get_state_history(config)) if mode == "sync" else \
        [s async for s in graph.aget_state_history(config)]
    first_turn = next(s for s in history if [m.content for m in s.values.get("messages", [])] == ["q0", "echo: q0"])
    forked = await _invoke(graph, mode, {"messages": [HumanMessage("other", id="fork-q")]}, first_turn.config)
    assert [m.content for m in forked["messages"]] == ["q0", "echo: q0", "other", "echo: other"]
    # The fork is the thread's newest checkpoint now; the checkpoints it branched from are untouched.
    assert [m.content for m in (await _state(graph, mode, config)).values["messages"]] == \
        ["q0", "echo: q0", "other", "echo: other"]
    assert (await _state(graph, mode, before_removal)).values["messages"] == full

    # The session keeps every row ever written, in writing order (removed ones too).
    rows = await get_chat_history(session_id_for_thread("shop-visitor-7"), limit=None, db=db)
    assert [row["content"] for row in rows] == ["q0", "echo: q0", "q1", "echo: q1", "q2", "echo: q2", "other",
                                                "echo: other"]


async def test_a_message_replaced_under_its_id_gets_a_row_of_its_own(db: Database, mode: str) -> None:
    graph = _graph(SonyCheckpointer(db))
    config: RunnableConfig = {"configurable": {"thread_id": str(uuid.uuid4())}}
    await _invoke(graph, mode, {"messages": [HumanMessage("hello", id="h")]}, config)
    before = (await _state(graph, mode, config)).config
    edit = {"messages": [AIMessage("edited answer", id="ai-h")]}
    if mode == "sync":
        graph.update_state(config, edit)
    else:
        await graph.aupdate_state(config, edit)
    assert [m.content for m in (await _state(graph, mode, config)).values["messages"]] == ["hello", "edited answer"]
    assert [m.content for m in (await _state(graph, mode, before)).values["messages"]] == ["hello", "echo: hello"]


async def test_deleting_the_chat_session_removes_the_thread_completely(db: Database) -> None:
    saver = SonyCheckpointer(db)
    graph = _graph(saver)
    thread = str(uuid.uuid4())
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    await graph.ainvoke({"messages": [HumanMessage("hi", id="h")]}, config)
    assert await saver.aget_tuple(config) is not None
    assert await delete_chat_session(thread, db=db) is True
    assert await saver.aget_tuple(config) is None
    with db.pool().connection() as conn:
        counts = conn.execute(
            "SELECT (SELECT count(*) FROM chat_checkpoints), (SELECT count(*) FROM chat_checkpoint_blobs), "
            "(SELECT count(*) FROM chat_checkpoint_writes), (SELECT count(*) FROM chat_messages)").fetchone()
    assert counts == (0, 0, 0, 0)


async def test_messages_written_through_the_history_class_are_rows_of_the_same_session(db: Database) -> None:
    saver = SonyCheckpointer(db)
    graph = _graph(saver)
    thread = str(uuid.uuid4())
    await graph.ainvoke({"messages": [HumanMessage("hi", id="h")]}, {"configurable": {"thread_id": thread}})
    history = SonyChatMessageHistory(thread, db)
    await history.aadd_messages([HumanMessage("typed in the widget")])
    assert [m.content for m in await history.aget_messages()] == ["hi", "echo: hi", "typed in the widget"]
    # The checkpoint still restores exactly its own list: a row written elsewhere never slips into a run.
    await graph.ainvoke({"messages": [HumanMessage("again", id="h2")]}, {"configurable": {"thread_id": thread}})
    state = await graph.aget_state({"configurable": {"thread_id": thread}})
    assert [m.content for m in state.values["messages"]] == ["hi", "echo: hi", "again", "echo: again"]


async def test_storage_stays_linear_in_the_conversation(db: Database) -> None:
    saver = SonyCheckpointer(db)
    graph = _graph(saver)
    config: RunnableConfig = {"configurable": {"thread_id": str(uuid.uuid4())}}
    for index in range(30):
        await graph.ainvoke({"messages": [HumanMessage(f"question {index}", id=f"q{index}")]}, config)
    with db.pool().connection() as conn:
        rows, runs, write_blobs, write_runs = conn.execute(
            "SELECT (SELECT count(*) FROM chat_messages), "
            "(SELECT max(json_array_length(checkpoint -> 'sony_rag_message_runs' -> 'messages')) "
            "FROM chat_checkpoints), "
            "(SELECT count(*) FROM chat_checkpoint_writes WHERE channel = 'messages' AND blob IS NOT NULL), "
            "(SELECT count(*) FROM chat_checkpoint_writes WHERE message_runs IS NOT NULL)").fetchone()  # type: ignore[misc]
    assert rows == 60
    assert runs == 2  # every checkpoint's list is one run: its first and last row
    # Pending writes of messages point at the rows too: the put after each step points them there. LangGraph
    # stores a step's writes beside the next put, so the last step's write may wait for the thread's next put.
    assert write_runs + write_blobs == 60
    assert write_blobs <= 1


def test_bad_arguments_are_refused_before_anything_is_written(db: Database) -> None:
    saver = SonyCheckpointer(db)
    with pytest.raises(InvalidInputError, match="thread_id"):
        saver.get_tuple({"configurable": {}})
    with pytest.raises(InvalidInputError, match="strategy"):
        saver.prune(["t"], strategy="keep_some")
    with pytest.raises(InvalidInputError, match="page_context"):
        _graph(saver).invoke({"messages": [HumanMessage("hi")]},
                             {"configurable": {"thread_id": "t", "page_context": 42}})
    with pytest.raises(InvalidInputError, match="db"):
        SonyCheckpointer("postgresql://example")  # type: ignore[arg-type]
    with db.pool().connection() as conn:
        assert conn.execute("SELECT count(*) FROM chat_sessions").fetchone() == (0,)


def test_thread_ids_that_are_not_uuids_map_to_a_stable_session(db: Database) -> None:
    assert session_id_for_thread("visitor-1") == session_id_for_thread("visitor-1")
    assert session_id_for_thread("visitor-1") != session_id_for_thread("visitor-2")
    known = uuid.uuid4()
    assert session_id_for_thread(str(known)) == known
    saver = SonyCheckpointer(db)
    _graph(saver).invoke({"messages": [HumanMessage("hi", id="h")]}, {"configurable": {"thread_id": "visitor-1"}})
    listed = list(saver.list(None))
    assert {item.config["configurable"]["thread_id"] for item in listed} == {"visitor-1"}



async def test_get_tuple_reads_every_checkpoint_exactly_as_list_does(db: Database, mode: str) -> None:
    saver = SonyCheckpointer(db)
    graph = _graph(saver)
    config: RunnableConfig = {"configurable": {"thread_id": str(uuid.uuid4())}}
    for index in range(3):  # the input messages have no ids: their pending writes stay blobs
        await _invoke(graph, mode, {"messages": [HumanMessage(f"q{index}")]}, config)
    if mode == "sync":
        graph.update_state(config, {"messages": [RemoveMessage(id=_state_ids(graph, config)[0])]})
    else:
        await graph.aupdate_state(config, {"messages": [RemoveMessage(id=_state_ids(graph, config)[0])]})
    listed = list(saver.list(config)) if mode == "sync" else [item async for item in saver.alist(config)]
    assert len(listed) > 8
    for item in listed:
        got = saver.get_tuple(item.config) if mode == "sync" else await saver.aget_tuple(item.config)
        assert got is not None
        assert (got.config, got.checkpoint, got.metadata, got.parent_config, got.pending_writes) == \
            (item.config, item.checkpoint, item.metadata, item.parent_config, item.pending_writes)
    newest = saver.get_tuple(config) if mode == "sync" else await saver.aget_tuple(config)
    assert newest is not None and newest.config == listed[0].config
    assert [m.content for m in newest.checkpoint["channel_values"]["messages"]] == \
        ["echo: q0", "q1", "echo: q1", "q2", "echo: q2"]


def _state_ids(graph: Any, config: RunnableConfig) -> list[str]:
    return [message.id for message in graph.get_state(config).values["messages"]]


async def test_a_thread_loaded_again_shows_what_its_rows_hold_now(db: Database) -> None:
    saver = SonyCheckpointer(db)
    graph = _graph(saver)
    thread = str(uuid.uuid4())
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    graph.invoke({"messages": [HumanMessage("hello", id="h")]}, config)
    first = saver.get_tuple(config)
    assert first is not None
    # A caller changing a message it got does not change what the next load returns.
    first.checkpoint["channel_values"]["messages"][0].content = "changed in memory"
    again = saver.get_tuple(config)
    assert again is not None
    assert [m.content for m in again.checkpoint["channel_values"]["messages"]] == ["hello", "echo: hello"]
    # A row corrected in SQL (support staff fixing a typo) is read anew, not served from the saver's cache.
    with db.pool().connection() as conn:
        conn.execute("UPDATE chat_messages SET content = 'hello!' WHERE session_id = %s AND content = 'hello'",
                     (session_id_for_thread(thread),))
    fixed = await saver.aget_tuple(config)
    assert fixed is not None
    assert [m.content for m in fixed.checkpoint["channel_values"]["messages"]] == ["hello!", "echo: hello"]


@pytest.mark.skipif(bool(os.environ.get("TEST_DATABASE_URL")),
                    reason="creates a database: the server given by TEST_DATABASE_URL may not allow CREATE DATABASE")
async def test_a_thread_stored_before_migration_005_continues_after_it(server_url: str) -> None:
    name = f"sony_rag_checkpoints_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    url = make_conninfo(server_url, dbname=name)
    try:
        with Database(url, settings=test_settings()) as db:
            migrate(db)
            thread = str(uuid.uuid4())
            config: RunnableConfig = {"configurable": {"thread_id": thread}}
            graph = _graph(SonyCheckpointer(db))
            graph.invoke({"messages": [HumanMessage("q0", id="q0")]}, config)
            first_turn = graph.get_state(config).config
            # The thread as 004 stored it: keys "<message id>:<digest>", bodies as jsonb holding their id.
            with psycopg.connect(url, autocommit=True) as conn:
                conn.execute("ALTER TABLE chat_checkpoints ALTER COLUMN checkpoint TYPE jsonb USING checkpoint::jsonb")
                conn.execute("UPDATE chat_checkpoints SET checkpoint = checkpoint || jsonb_build_object('id', "
                             "checkpoint_id)")
                conn.execute("UPDATE chat_messages SET message_key = (metadata -> 'data' ->> 'id') || ':' || "
                             "message_key")
                conn.execute("DELETE FROM sony_rag_migrations WHERE version = '005'")
            assert migrate(db) == ["005_compact_checkpoints"]

            graph = _graph(SonyCheckpointer(db))  # a new process: nothing cached
            graph.invoke({"messages": [HumanMessage("q1", id="q1")]}, config)
            assert [m.content for m in graph.get_state(config).values["messages"]] == \
                ["q0", "echo: q0", "q1", "echo: q1"]
            assert [m.content for m in graph.get_state(first_turn).values["messages"]] == ["q0", "echo: q0"]
            # The rows written before the migration are recognised: each message is still one row.
            rows = await get_chat_history(thread, limit=None, db=db)
            assert [row["content"] for row in rows] == ["q0", "echo: q0", "q1", "echo: q1"]
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def test_a_load_whose_cached_rows_are_evicted_meanwhile_reads_them_again(db: Database) -> None:
    from sony_rag.message_cache import MessageCache

    class Forgetful(MessageCache):
        """Reports rows as cached when the statement is planned, then has lost them (another load evicted them)."""

        def get(self, session_id: uuid.UUID, seq: int, version: int) -> None:  # type: ignore[override]
            return None

    saver = SonyCheckpointer(db)
    graph = _graph(saver)
    config: RunnableConfig = {"configurable": {"thread_id": str(uuid.uuid4())}}
    graph.invoke({"messages": [HumanMessage("hello", id="h")]}, config)
    expected = saver.get_tuple(config)
    assert expected is not None
    forgetful = Forgetful()
    for seq, version in zip(*saver._messages.known(session_id_for_thread(config["configurable"]["thread_id"])),
                            strict=True):
        forgetful.put(session_id_for_thread(config["configurable"]["thread_id"]), seq, version, None,
                      HumanMessage("stale"))
    saver._messages = forgetful
    again = saver.get_tuple(config)
    assert again is not None and again.checkpoint == expected.checkpoint
    assert [m.content for m in again.checkpoint["channel_values"]["messages"]] == ["hello", "echo: hello"]


async def test_two_processes_taking_turns_on_a_thread_keep_it_exact(db: Database) -> None:
    first, second = _graph(SonyCheckpointer(db)), _graph(SonyCheckpointer(db))  # two savers: two processes
    thread = str(uuid.uuid4())
    config: RunnableConfig = {"configurable": {"thread_id": thread}}
    for index, graph in enumerate([first, first, first, second, first]):
        await graph.ainvoke({"messages": [HumanMessage(f"q{index}", id=f"q{index}")]}, config)
        if index == 1:  # a row written with plain SQL, as another application might: not in the agent's state
            with db.pool().connection() as conn:
                conn.execute("INSERT INTO chat_messages (session_id, role, content) VALUES (%s, 'user', 'typed')",
                             (session_id_for_thread(thread),))
    expected = [text for index in range(5) for text in (f"q{index}", f"echo: q{index}")]
    for graph in (first, second):
        assert [m.content for m in (await graph.aget_state(config)).values["messages"]] == expected
    rows = await get_chat_history(thread, limit=None, db=db)
    assert [row["content"] for row in rows] == [*expected[:4], "typed", *expected[4:]]
