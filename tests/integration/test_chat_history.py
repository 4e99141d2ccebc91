"""SonyChatMessageHistory on a real Postgres: round trips, order, windowing, sessions, chains and agents."""

from __future__ import annotations

import asyncio
import importlib.util
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest
from langchain_core.language_models.fake_chat_models import FakeListChatModel, GenericFakeChatModel
from langchain_core.messages import (
    AIMessage,
    BaseMessage,
    HumanMessage,
    RemoveMessage,
    SystemMessage,
    ToolMessage,
)
from langchain_core.prompt_values import PromptValue
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableLambda
from langchain_core.runnables.history import RunnableWithMessageHistory
from langchain_core.tools import tool
from langgraph.graph import START, MessagesState, StateGraph
from langgraph.prebuilt import ToolNode, tools_condition

from sony_rag import (
    Database,
    InvalidIdentifierError,
    InvalidInputError,
    SessionNotFoundError,
    SonyChatMessageHistory,
    create_chat_session,
    delete_chat_session,
    get_chat_history,
    get_chat_session,
    get_session_selections,
    insert_text_selection,
)


def _codec_cases() -> list[BaseMessage]:
    # The codec's unit tests keep the one list of every message class with every field filled; loading
    # it by path works whatever pytest's import mode, so both suites always test the same messages.
    path = Path(__file__).parents[1] / "unit" / "test_message_codec.py"
    spec = importlib.util.spec_from_file_location("_sony_rag_codec_cases", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return list(module.RICH_MESSAGES)


RICH_MESSAGES = _codec_cases()


async def read(history: SonyChatMessageHistory, mode: str) -> list[BaseMessage]:
    """Return the history's messages through ``messages`` or ``aget_messages``."""
    return history.messages if mode == "sync" else await history.aget_messages()


async def add(history: SonyChatMessageHistory, messages: Sequence[BaseMessage], mode: str,
              **kwargs: Any) -> None:
    """Add a batch through ``add_messages`` or ``aadd_messages``."""
    if mode == "sync":
        history.add_messages(messages, **kwargs)
    else:
        await history.aadd_messages(messages, **kwargs)


async def clear(history: SonyChatMessageHistory, mode: str) -> None:
    """Clear through ``clear`` or ``aclear``."""
    if mode == "sync":
        history.clear()
    else:
        await history.aclear()


def new_id() -> str:
    """Return a fresh session id as a string, as web apps hold them."""
    return str(uuid.uuid4())


# -- lossless round trip ---------------------------------------------------------------------------------


async def test_every_message_type_round_trips_equal(db: Database, mode: str) -> None:
    history = SonyChatMessageHistory(new_id(), db)
    await add(history, RICH_MESSAGES, mode)

    restored = await read(SonyChatMessageHistory(history.session_id, db), mode)

    assert len(restored) == len(RICH_MESSAGES)
    for got, sent in zip(restored, RICH_MESSAGES, strict=True):
        assert type(got) is type(sent)
        assert got == sent
        assert got.model_dump() == sent.model_dump()


async def test_numbers_of_every_size_read_back_exactly(db: Database, mode: str) -> None:
    # Integers beyond 64 bits and long fractions: the reader parses the metadata text itself, and must keep them.
    kwargs = {"big": 123456789012345678901234567890, "edge": 2**64, "max": 2**63 - 1, "fraction": 0.1 + 0.2,
              "tiny": 1e-24}
    sent = [AIMessage("numbers", additional_kwargs=kwargs), HumanMessage("plain")]
    history = SonyChatMessageHistory(new_id(), db)
    await add(history, sent, mode)

    restored = await read(SonyChatMessageHistory(history.session_id, db), mode)

    assert restored == sent
    assert type(restored[0].additional_kwargs["big"]) is int


async def test_columns_hold_the_documented_role_and_token_usage(db: Database) -> None:
    history = SonyChatMessageHistory(new_id(), db, page_context="/products/sofa-123")
    history.add_messages([
        SystemMessage("Be brief."),
        HumanMessage("Price?"),
        AIMessage("$1,299", usage_metadata={"input_tokens": 7, "output_tokens": 3, "total_tokens": 10}),
        ToolMessage("ok", tool_call_id="c1"),
    ])

    rows = await get_chat_history(history.session_id, db=db)

    assert [row["role"] for row in rows] == ["system", "user", "assistant", "assistant"]
    assert [row["token_usage"] for row in rows] == [None, None, 10, None]
    assert {row["page_context"] for row in rows} == {"/products/sofa-123"}
    assert [row["content"] for row in rows] == ["Be brief.", "Price?", "$1,299", "ok"]


def test_convenience_methods_store_one_message_each(db: Database) -> None:
    history = SonyChatMessageHistory(new_id(), db)
    history.add_user_message("Is the oak table in stock?")
    history.add_ai_message("Yes, three left.")

    assert history.messages == [HumanMessage("Is the oak table in stock?"), AIMessage("Yes, three left.")]


async def test_a_bad_message_in_a_batch_writes_nothing(db: Database, mode: str) -> None:
    history = SonyChatMessageHistory(new_id(), db)
    await add(history, [HumanMessage("kept?")], mode)

    with pytest.raises(InvalidInputError):
        await add(history, [HumanMessage("first"), RemoveMessage(id="x")], mode)
    with pytest.raises(InvalidInputError):
        await add(history, [HumanMessage("nul \x00 byte")], mode)

    assert await read(history, mode) == [HumanMessage("kept?")]


# -- order -----------------------------------------------------------------------------------------------


async def test_a_batch_keeps_its_order_at_one_timestamp(db: Database, mode: str) -> None:
    history = SonyChatMessageHistory(new_id(), db)
    batch: list[BaseMessage] = [
        HumanMessage(f"m{i:02d}") if i % 2 else AIMessage(f"m{i:02d}") for i in range(40)
    ]
    # Contents that sort differently from insertion order, so a sort by content would show.
    batch.reverse()

    await add(history, batch, mode)

    assert await read(history, mode) == batch
    rows = await get_chat_history(history.session_id, limit=None, db=db)
    assert len({row["created_at"] for row in rows}) == 1  # the order cannot come from timestamps


def _check_interleaving(messages: Sequence[BaseMessage], writers: int, batches: int, size: int) -> None:
    contents = [str(message.content) for message in messages]
    assert len(contents) == writers * batches * size
    assert len(set(contents)) == len(contents)
    # Every batch is contiguous and in its own order.
    for start in range(0, len(contents), size):
        author, batch, _ = contents[start].split("-")
        assert contents[start:start + size] == [f"{author}-{batch}-{i}" for i in range(size)]
    # Each writer's batches come in the order that writer added them.
    for number in range(writers):
        own = [c for c in contents if c.startswith(f"w{number}-")]
        assert own == [f"w{number}-b{b}-{i}" for b in range(batches) for i in range(size)]


def _batch(writer: int, batch: int, size: int) -> list[BaseMessage]:
    return [HumanMessage(f"w{writer}-b{batch}-{i}") if i % 2 == 0 else AIMessage(f"w{writer}-b{batch}-{i}")
            for i in range(size)]


async def test_twenty_concurrent_async_writers_keep_order(db: Database) -> None:
    session_id = new_id()
    writers, batches, size = 20, 4, 3

    async def writer(number: int) -> None:
        history = SonyChatMessageHistory(session_id, db)
        for batch in range(batches):
            await history.aadd_messages(_batch(number, batch, size))

    await asyncio.gather(*(writer(number) for number in range(writers)))

    messages = await SonyChatMessageHistory(session_id, db).aget_messages()
    _check_interleaving(messages, writers, batches, size)
    rows = await get_chat_history(session_id, limit=None, db=db)
    assert [row["seq"] for row in rows] == sorted(row["seq"] for row in rows)


def test_twenty_threads_writing_one_session_keep_order(db: Database) -> None:
    session_id = new_id()
    writers, batches, size = 20, 4, 3
    history = SonyChatMessageHistory(session_id, db)  # one object shared by every thread

    def writer(number: int) -> None:
        for batch in range(batches):
            history.add_messages(_batch(number, batch, size))

    with ThreadPoolExecutor(max_workers=writers) as pool:
        list(pool.map(writer, range(writers)))

    _check_interleaving(history.messages, writers, batches, size)


# -- windowing -------------------------------------------------------------------------------------------


async def test_max_messages_returns_the_newest_in_order(db: Database, mode: str) -> None:
    session_id = new_id()
    everything: list[BaseMessage] = [HumanMessage(f"q{i}") if i % 2 == 0 else AIMessage(f"a{i}")
                                     for i in range(12)]
    await add(SonyChatMessageHistory(session_id, db), everything[:5], mode)
    await add(SonyChatMessageHistory(session_id, db), everything[5:], mode)

    assert await read(SonyChatMessageHistory(session_id, db, max_messages=4), mode) == everything[-4:]
    assert await read(SonyChatMessageHistory(session_id, db, max_messages=1), mode) == everything[-1:]
    assert await read(SonyChatMessageHistory(session_id, db, max_messages=100), mode) == everything
    assert await read(SonyChatMessageHistory(session_id, db), mode) == everything


@pytest.mark.parametrize("bad", [0, -1, 2.5, True, "3"])
def test_max_messages_must_be_a_positive_integer(db: Database, bad: Any) -> None:
    with pytest.raises(InvalidInputError):
        SonyChatMessageHistory(new_id(), db, max_messages=bad)


# -- sessions --------------------------------------------------------------------------------------------


async def test_writing_updates_the_session_activity_and_page(db: Database, mode: str) -> None:
    session_id = await create_chat_session(current_page="/home", db=db)
    before = await get_chat_session(session_id, db=db)
    assert before is not None
    history = SonyChatMessageHistory(str(session_id), db, page_context="/products/sofa-123")

    await add(history, [HumanMessage("Is this sofa in stock?")], mode)
    after_first = await get_chat_session(session_id, db=db)
    await add(history, [AIMessage("Shipping on this order?")], mode, page_context="/cart")
    after_second = await get_chat_session(session_id, db=db)

    assert after_first is not None and after_second is not None
    assert after_first["current_page"] == "/products/sofa-123"
    assert after_first["updated_at"] > before["updated_at"]
    assert after_second["current_page"] == "/cart"
    assert after_second["updated_at"] > after_first["updated_at"]
    rows = await get_chat_history(session_id, db=db)
    assert [row["page_context"] for row in rows] == ["/products/sofa-123", "/cart"]


async def test_missing_session_without_create_raises_everywhere(db: Database, mode: str) -> None:
    session_id = new_id()
    history = SonyChatMessageHistory(session_id, db, create_session=False)

    with pytest.raises(SessionNotFoundError):
        await read(history, mode)
    with pytest.raises(SessionNotFoundError):
        await add(history, [HumanMessage("hello")], mode)
    with pytest.raises(SessionNotFoundError):
        await clear(history, mode)

    assert await get_chat_session(session_id, db=db) is None


async def test_missing_session_is_created_on_first_read_with_its_columns(db: Database, mode: str) -> None:
    session_id = new_id()
    history = SonyChatMessageHistory(session_id, db, user_agent="Mozilla/5.0", current_page="/products",
                                      metadata={"source": "widget"})
    assert await get_chat_session(session_id, db=db) is None  # construction does no I/O

    assert await read(history, mode) == []

    row = await get_chat_session(session_id, db=db)
    assert row is not None
    assert (row["user_agent"], row["current_page"], row["metadata"]) == ("Mozilla/5.0", "/products",
                                                                         {"source": "widget"})


async def test_missing_session_is_created_on_first_write_and_by_clear(db: Database, mode: str) -> None:
    written, cleared = new_id(), new_id()

    await add(SonyChatMessageHistory(written, db, metadata={"a": 1}), [HumanMessage("hi")], mode)
    await clear(SonyChatMessageHistory(cleared, db, metadata={"b": 2}), mode)

    first = await get_chat_session(written, db=db)
    second = await get_chat_session(cleared, db=db)
    assert first is not None and first["metadata"] == {"a": 1}
    assert second is not None and second["metadata"] == {"b": 2}
    assert await read(SonyChatMessageHistory(written, db, create_session=False), mode) == [HumanMessage("hi")]


async def test_existing_session_keeps_its_columns(db: Database, mode: str) -> None:
    session_id = await create_chat_session(user_agent="Safari", metadata={"source": "app"}, db=db)
    history = SonyChatMessageHistory(session_id, db, user_agent="Firefox", metadata={"source": "widget"},
                                     create_session=False)

    await add(history, [HumanMessage("hello")], mode)

    row = await get_chat_session(session_id, db=db)
    assert row is not None
    assert (row["user_agent"], row["metadata"]) == ("Safari", {"source": "app"})


@pytest.mark.parametrize("bad", ["not-a-uuid", "", 42, None])
def test_bad_session_id_is_refused_at_construction(db: Database, bad: Any) -> None:
    with pytest.raises(InvalidIdentifierError):
        SonyChatMessageHistory(bad, db)


async def test_clear_empties_one_session_only(db: Database, mode: str) -> None:
    mine, other = SonyChatMessageHistory(new_id(), db), SonyChatMessageHistory(new_id(), db)
    await add(mine, [HumanMessage("a"), AIMessage("b")], mode)
    await add(other, [HumanMessage("c")], mode)

    await clear(mine, mode)

    assert await read(mine, mode) == []
    assert await read(other, mode) == [HumanMessage("c")]
    assert await get_chat_session(mine.session_id, db=db) is not None  # the session stays


async def test_deleting_the_session_cascades(db: Database, mode: str) -> None:
    session_id = new_id()
    await add(SonyChatMessageHistory(session_id, db), [HumanMessage("hi"), AIMessage("hello")], mode)
    await insert_text_selection(session_id, "free shipping on orders over $500", db=db)

    assert await delete_chat_session(session_id, db=db)

    assert await get_chat_history(session_id, limit=None, db=db) == []
    assert await get_session_selections(session_id, db=db) == []
    with pytest.raises(SessionNotFoundError):
        await read(SonyChatMessageHistory(session_id, db, create_session=False), mode)


# -- LangChain integration -------------------------------------------------------------------------------


async def test_runnable_with_message_history_remembers_across_invocations(db: Database, mode: str) -> None:
    prompt = ChatPromptTemplate.from_messages([
        ("system", "You are the Sony Interior shop assistant."),
        MessagesPlaceholder("history"),
        ("human", "{question}"),
    ])
    seen: list[list[BaseMessage]] = []

    def record(value: PromptValue) -> PromptValue:
        seen.append(value.to_messages())
        return value

    model = FakeListChatModel(responses=["The Oslo sofa is $1,299.", "Yes: orders over $500 ship free."])
    chain = RunnableWithMessageHistory(
        prompt | RunnableLambda(record) | model,
        lambda session_id: SonyChatMessageHistory(session_id, db, page_context="/products/oslo-sofa"),
        input_messages_key="question",
        history_messages_key="history",
    )
    config: Any = {"configurable": {"session_id": new_id()}}

    if mode == "sync":
        first = chain.invoke({"question": "How much is the Oslo sofa?"}, config)
        second = chain.invoke({"question": "Does it ship free?"}, config)
    else:
        first = await chain.ainvoke({"question": "How much is the Oslo sofa?"}, config)
        second = await chain.ainvoke({"question": "Does it ship free?"}, config)

    assert seen[0] == [SystemMessage("You are the Sony Interior shop assistant."),
                       HumanMessage("How much is the Oslo sofa?")]
    assert seen[1] == [SystemMessage("You are the Sony Interior shop assistant."),
                       HumanMessage("How much is the Oslo sofa?"), first, HumanMessage("Does it ship free?")]
    stored = SonyChatMessageHistory(config["configurable"]["session_id"], db).messages
    assert stored == [HumanMessage("How much is the Oslo sofa?"), first, HumanMessage("Does it ship free?"),
                      second]
    rows = await get_chat_history(config["configurable"]["session_id"], db=db)
    assert {row["page_context"] for row in rows} == {"/products/oslo-sofa"}


@tool
def shipping_cost(order_total: float) -> str:
    """Return the shipping cost for an order of this total, in dollars."""
    return "free" if order_total >= 500 else "$49"


def _agent(replies: list[AIMessage]) -> Any:
    """Return a LangGraph agent loop (model -> tools -> model) whose model plays back ``replies``."""
    model = GenericFakeChatModel(messages=iter(replies))

    def call_model(state: MessagesState) -> dict[str, list[BaseMessage]]:
        return {"messages": [model.invoke(state["messages"])]}

    graph = StateGraph(MessagesState)
    graph.add_node("agent", call_model)
    graph.add_node("tools", ToolNode([shipping_cost]))
    graph.add_edge(START, "agent")
    graph.add_conditional_edges("agent", tools_condition)
    graph.add_edge("tools", "agent")
    return graph.compile()


def _turn_replies(total: float, call_id: str, answer: str) -> list[AIMessage]:
    return [
        AIMessage("", id=f"ai-{call_id}", tool_calls=[{"name": "shipping_cost", "args": {"order_total": total},
                                                       "id": call_id, "type": "tool_call"}],
                  usage_metadata={"input_tokens": 40, "output_tokens": 12, "total_tokens": 52}),
        AIMessage(answer, id=f"ai-{call_id}-answer", response_metadata={"finish_reason": "stop"}),
    ]


async def test_agent_turns_with_tool_calls_are_saved_and_restored(db: Database) -> None:
    session_id = new_id()
    history = SonyChatMessageHistory(session_id, db, page_context="/products/oslo-sofa")
    history.add_messages([SystemMessage("You are the Sony Interior shop assistant.", id="sys")])

    # Turn 1, sync: load memory, run the agent, save what the turn added.
    prior = history.messages
    agent = _agent(_turn_replies(1299.0, "call-1", "Shipping is free for the Oslo sofa."))
    result = agent.invoke({"messages": [*prior, HumanMessage("Does the Oslo sofa ship free?", id="h1")]})
    turn_one = result["messages"][len(prior):]
    history.add_messages(turn_one)

    assert [type(m) for m in turn_one] == [HumanMessage, AIMessage, ToolMessage, AIMessage]
    assert isinstance(turn_one[2], ToolMessage) and turn_one[2].content == "free"
    assert turn_one[2].tool_call_id == "call-1"

    # Turn 2, async, from a fresh history object: the agent sees turn 1 as restored from the database.
    restored = await SonyChatMessageHistory(session_id, db).aget_messages()
    assert restored == [*prior, *turn_one]
    agent = _agent(_turn_replies(120.0, "call-2", "A $120 lamp ships for $49."))
    result = await agent.ainvoke({"messages": [*restored, HumanMessage("And a $120 lamp?", id="h2")]})
    turn_two = result["messages"][len(restored):]
    await history.aadd_messages(turn_two)

    final = SonyChatMessageHistory(session_id, db).messages
    assert final == result["messages"]
    assert len(final) == 9
    calls = [m for m in final if isinstance(m, AIMessage) and m.tool_calls]
    assert [c.tool_calls[0]["args"] for c in calls] == [{"order_total": 1299.0}, {"order_total": 120.0}]
    assert [m.content for m in final if isinstance(m, ToolMessage)] == ["free", "$49"]
    rows = await get_chat_history(session_id, limit=None, db=db)
    assert [row["token_usage"] for row in rows if row["token_usage"] is not None] == [52, 52]


# -- reading the same conversation again -------------------------------------------------------------------


async def test_a_row_corrected_in_sql_is_read_as_corrected(db: Database, mode: str) -> None:
    session = uuid.uuid4()
    await add(SonyChatMessageHistory(session, db), [HumanMessage("hi"), AIMessage("Hello, how can I help?")], mode)
    assert [m.content for m in await read(SonyChatMessageHistory(session, db), mode)][1] == "Hello, how can I help?"
    with db.connect() as conn:
        conn.execute("UPDATE chat_messages SET content = 'Hello! How can I help?' "
                     "WHERE session_id = %s AND role = 'assistant'", (session,))
    again = await read(SonyChatMessageHistory(session, db, max_messages=5), mode)
    assert again == [HumanMessage("hi"), AIMessage("Hello! How can I help?")]


async def test_changing_a_message_read_changes_no_later_read(db: Database, mode: str) -> None:
    session = uuid.uuid4()
    stored = AIMessage("Two sofas match.", additional_kwargs={"sources": [{"id": "sofa-1"}]},
                       response_metadata={"model": "m"}, id="a1")
    await add(SonyChatMessageHistory(session, db), [stored], mode)
    first = (await read(SonyChatMessageHistory(session, db), mode))[0]
    first.additional_kwargs["sources"][0]["id"] = "changed"
    first.response_metadata["model"] = "changed"
    first.content = "changed"
    assert await read(SonyChatMessageHistory(session, db), mode) == [stored]


async def test_messages_dropped_from_the_shared_cache_meanwhile_are_read_again(db: Database, mode: str) -> None:
    from sony_rag.message_cache import MessageCache

    class Forgetful(MessageCache):
        """Names the rows it holds, then has lost them by the time the answer comes (other reads evicted them)."""

        def get(self, session_id: uuid.UUID, seq: int, version: int) -> None:  # type: ignore[override]
            return None

    session = uuid.uuid4()
    messages = [HumanMessage(f"question {index}") for index in range(4)]
    await add(SonyChatMessageHistory(session, db), messages, mode)
    db._decoded_messages = Forgetful()
    try:
        assert await read(SonyChatMessageHistory(session, db), mode) == messages  # fills the cache
        assert await read(SonyChatMessageHistory(session, db), mode) == messages  # known, lost, read again
    finally:
        db._decoded_messages = None
