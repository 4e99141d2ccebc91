"""SonyCheckpointer's pure parts: thread ids to sessions, message runs, row keys, versions (no database)."""

from __future__ import annotations

import uuid

import pytest
from langchain_core.documents import Document
from langchain_core.messages import AIMessage, HumanMessage, ToolMessage

from sony_rag.checkpointer import SonyCheckpointer, message_from_row, message_key, runs_of, session_id_for_thread
from sony_rag.database import Database
from sony_rag.errors import InvalidInputError
from sony_rag.message_codec import encode_message


def test_runs_cover_rows_that_follow_one_another_in_the_session() -> None:
    order = {seq: position for position, seq in enumerate([3, 7, 8, 15, 21, 22])}  # other sessions took 4-6, ...
    assert runs_of([3, 7, 8, 15, 21, 22], order) == [3, 22]
    assert runs_of([3, 7, 15, 21], order) == [3, 7, 15, 21]          # 8 removed: two runs
    assert runs_of([21, 22, 3], order) == [21, 22, 3, 3]             # a summary first, then older rows
    assert runs_of([], order) == []


def test_thread_ids_map_to_sessions() -> None:
    known = uuid.uuid4()
    assert session_id_for_thread(str(known)) == known
    assert session_id_for_thread(known) == known
    assert session_id_for_thread("visitor-7") == session_id_for_thread("visitor-7") != session_id_for_thread("v-8")
    assert session_id_for_thread(str(known).upper()) != known  # not the canonical text: a name of its own
    for bad in ("", None, 1.5, True):
        with pytest.raises(InvalidInputError):
            session_id_for_thread(bad)


def test_a_message_read_back_from_its_row_has_the_key_it_was_written_under() -> None:
    tool = ToolMessage("two passages", tool_call_id="call-1", name="search", id="t1",
                       artifact=[Document(page_content="Hallwyl sofa", metadata={"price": 1899.0}, id="d1")])
    for message in (HumanMessage("hi", id="h1"), AIMessage("", id="a1", tool_calls=[
            {"name": "search", "args": {"query": "sofa"}, "id": "call-1", "type": "tool_call"}]), tool):
        encoded = encode_message(message)
        # jsonb gives keys back in its own order; the key must not depend on it.
        reordered = {key: encoded.metadata[key] for key in sorted(encoded.metadata, reverse=True)}
        row = {"role": encoded.role, "content": encoded.content, "metadata": reordered, "message_id": uuid.uuid4()}
        assert message_key(message_from_row(row)) == message_key(message)


def test_a_replaced_message_gets_a_new_key_and_a_row_without_id_gets_the_row_id() -> None:
    assert message_key(AIMessage("a", id="x")) != message_key(AIMessage("b", id="x"))
    row_id = uuid.uuid4()
    message = message_from_row({"role": "user", "content": "typed", "metadata": {}, "message_id": row_id})
    assert message == HumanMessage("typed", id=str(row_id))


def test_versions_increase_and_differ_between_forks() -> None:
    saver = SonyCheckpointer(Database("postgresql://unused.invalid/db"))  # no I/O happens here
    first = saver.get_next_version(None)
    second = saver.get_next_version(first)
    assert 1 < first < 2 < second < 3
    assert saver.get_next_version(7) > 8
    forks = {saver.get_next_version(first) for _ in range(50)}
    assert len(forks) == 50 and all(2 < version < 3 for version in forks)


def test_the_message_cache_keeps_at_most_its_limit_and_only_matching_row_versions() -> None:
    from sony_rag.message_cache import MessageCache

    cache = MessageCache(limit=3)
    first, second = uuid.uuid4(), uuid.uuid4()
    cache.put(first, 1, 100, "ka", HumanMessage("a", id="a"))
    cache.put(first, 2, 100, None, HumanMessage("b", id="b"))
    assert cache.known(first) == ([1, 2], [100, 100])
    assert cache.get(first, 1, 101) is None  # the row changed since: decoded again
    assert cache.get(first, 1, 100) == ("ka", HumanMessage("a", id="a"))
    cache.put(second, 7, 5, "kc", HumanMessage("c", id="c"))
    cache.put(second, 8, 5, "kd", HumanMessage("d", id="d"))  # four messages: the least recently loaded goes
    assert cache.known(first) == ([], [])
    assert cache.get(second, 8, 5) == ("kd", HumanMessage("d", id="d"))


def test_a_copied_message_is_equal_and_independent() -> None:
    from sony_rag.message_cache import shallow_copy as _copy

    original = AIMessage("answer", id="x", tool_calls=[{"name": "f", "args": {}, "id": "c", "type": "tool_call"}])
    copy = _copy(original)
    assert copy == original and copy is not original and type(copy) is AIMessage
    copy.content = "changed"
    assert original.content == "answer"
    assert copy.model_dump()["content"] == "changed"
