"""Plans and the executor's placement of statements, without a database: plans driven with scripted rows.

A plan holds an operation's logic once, for the sync and the async driver; ``executor._operations`` decides,
without I/O, what each round trip sends. Both are exercised here by answering each step with rows chosen by the
test. (Replica routing flags: tests/unit/test_replicas.py. The search plans' index choices: test_vector_index.py.)
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any
from uuid import UUID

import numpy as np
import pytest
from psycopg import sql

from sony_rag import plans
from sony_rag.errors import SessionNotFoundError
from sony_rag.executor import (
    AfterCommit,
    Atomic,
    Copy,
    Execute,
    Fetch,
    Plan,
    PlanGenerator,
    SetLocal,
    _Done,
    _explicit_transaction,
    _operations,
    _Round,
    plan,
)
from sony_rag.plans import HybridOptions
from sony_rag.retrieval import SearchRequest, search_plan
from sony_rag.vector_index import Capabilities, VectorIndex

SESSION = UUID(int=7)
VECTOR = np.ones(384, dtype=np.float32)
NEW_SESSION = {"user_agent": "widget", "current_page": "/sofa", "metadata": {"locale": "en"}}


def text(step: Fetch | Execute) -> str:
    """Return a step's SQL text."""
    return step.query.as_string(None)


def run(plan_: Plan[Any], replies: Sequence[Any]) -> tuple[Any, list[Any]]:
    """Drive ``plan_`` answering its steps with ``replies`` in order; return its result and the steps it yielded."""
    generator = plan_.start()
    steps: list[Any] = []
    pending = list(replies)
    reply: Any = None
    while True:
        try:
            step = generator.send(reply)
        except StopIteration as stop:
            assert pending == [], f"replies left unused: {pending}"
            return stop.value, steps
        steps.append(step)
        reply = pending.pop(0)


# -- sessions and messages -----------------------------------------------------------------------------


def test_clearing_a_missing_session_raises_and_writes_nothing_more() -> None:
    deleted_none, session_missing = 0, []
    with pytest.raises(SessionNotFoundError, match=str(SESSION)):
        run(plans.clear_session_messages(SESSION), [deleted_none, session_missing])


def test_clearing_a_missing_session_creates_it_when_told_how() -> None:
    result, steps = run(plans.clear_session_messages(SESSION, create_session=NEW_SESSION), [0, [], []])
    assert result == 0
    create = steps[-1]
    assert isinstance(create, Fetch)
    assert text(create).startswith("INSERT INTO chat_sessions")
    assert "ON CONFLICT (session_id) DO NOTHING" in text(create)
    # The id and the columns given are bound, in the statement's order.
    values = list(create.params.values())
    assert values[:3] == [SESSION, "widget", "/sofa"] and values[3].obj == {"locale": "en"}


def test_clearing_an_existing_session_looks_it_up_only_when_nothing_was_deleted() -> None:
    result, steps = run(plans.clear_session_messages(SESSION, create_session=NEW_SESSION), [3])
    assert (result, len(steps)) == (3, 1)  # messages deleted: the session exists, no second statement
    assert text(steps[0]).startswith("DELETE FROM chat_messages")
    result, steps = run(plans.clear_session_messages(SESSION), [0, [{"session_id": SESSION}]])
    assert (result, len(steps)) == (0, 2)  # an empty session is found and left as it is


def test_an_append_is_one_statement_that_creates_the_session_only_when_told() -> None:
    touch, _ = run(plans.add_messages(SESSION, [UUID(int=1)], ["user"], ["hi"], [None], "/sofa", [{}]),
                   [[{"sessions": 1}]])
    assert touch is None
    appended = plans.add_messages(SESSION, [UUID(int=1)], ["user"], ["hi"], [None], "/sofa", [{}])
    assert (appended.single_statement, appended.idempotent, appended.read_only) == (True, True, False)
    _, [step] = run(appended, [[{"sessions": 1}]])
    assert isinstance(step, Fetch)
    statement = text(step)
    assert statement.startswith("WITH session AS (UPDATE chat_sessions SET updated_at = NOW()")
    assert "INSERT INTO chat_messages" in statement and "ON CONFLICT (message_id) DO NOTHING" in statement
    assert "INSERT INTO chat_sessions" not in statement  # an unknown session is not created behind the caller

    creating = plans.add_messages(SESSION, [UUID(int=1)], ["user"], ["hi"], [None], "/sofa", [{}],
                                  create_session=NEW_SESSION)
    _, [step] = run(creating, [[{"sessions": 1}]])
    assert text(step).startswith("WITH session AS (INSERT INTO chat_sessions")
    assert "ON CONFLICT (session_id) DO UPDATE" in text(step)


def test_an_append_to_a_missing_session_raises() -> None:
    appended = plans.add_messages(SESSION, [UUID(int=1)], ["user"], ["hi"], [None], None, [{}])
    with pytest.raises(SessionNotFoundError, match=str(SESSION)):
        run(appended, [[{"sessions": 0}]])


def test_an_update_of_a_missing_session_raises() -> None:
    with pytest.raises(SessionNotFoundError):
        run(plans.update_session(SESSION, "agent", None, None), [[]])
    row = {"session_id": SESSION}
    assert run(plans.update_session(SESSION, "agent", None, None), [[row]])[0] == row


def test_history_tells_an_empty_session_from_a_missing_one() -> None:
    messages = [{"role": "user", "content": "hi", "metadata": {}}]
    result, steps = run(plans.history_if_session(SESSION, 10), [messages])
    assert (result, len(steps)) == (messages, 1)  # messages found: no second look
    assert run(plans.history_if_session(SESSION, 10), [[], [{"session_id": SESSION}]])[0] == []
    assert run(plans.history_if_session(SESSION, 10), [[], []])[0] is None


def test_creating_a_session_if_missing_returns_none_for_an_existing_id() -> None:
    created = {"session_id": SESSION}
    assert run(plans.create_session(SESSION, None, None, {}, if_missing=True), [[created]])[0] == created
    assert run(plans.create_session(SESSION, None, None, {}, if_missing=True), [[]])[0] is None


def test_replacing_sources_locks_deletes_per_type_then_copies_once() -> None:
    sources = [("faq", "b"), ("policy", "x"), ("faq", "a")]
    deleted, steps = run(plans.replace_sources(sources, [("row",)]), [[], 2, 1, 3])  # type: ignore[list-item]
    assert deleted == 3
    assert [type(step) for step in steps] == [Fetch, Execute, Execute, Copy]
    # Locked in one order whatever the caller's, so two replacements of overlapping sources queue, never deadlock.
    assert list(steps[0].params.values()) == [["sony-rag-source:faq:a", "sony-rag-source:faq:b",
                                               "sony-rag-source:policy:x"]]
    assert [list(step.params.values()) for step in steps[1:3]] == [["faq", ["b", "a"]], ["policy", ["x"]]]
    _, steps = run(plans.replace_sources([("faq", "a")], []), [[], 1])
    assert [type(step) for step in steps] == [Fetch, Execute]  # nothing to copy: no COPY


# -- searches ------------------------------------------------------------------------------------------


def _common_words(statement: Any) -> list[Any]:
    """Return the text[] values a hybrid statement binds: the common words its text leg does not look up."""
    assert isinstance(statement, Fetch)
    return [value for value in statement.params.values() if isinstance(value, list)]


def _reads_word_statistics(step: Any) -> bool:
    return isinstance(step, Fetch) and "most_common_elems" in text(step)


def test_hybrid_reads_the_word_statistics_once_then_takes_them_from_the_capabilities() -> None:
    capabilities = Capabilities((0, 6, 2), VectorIndex("hnsw", None, 16, 64), table_rows=100_000)
    hybrid = SearchRequest.of(VECTOR, mode="hybrid", text="oak sofa")
    statistics = [{"lexeme": "sofa", "rows": 5000.0}, {"lexeme": "brass", "rows": 3.0}]
    rows, steps = run(search_plan(hybrid, capabilities, HybridOptions()), [statistics, None, [{"id": 1}]])
    assert rows == [{"id": 1}]
    # First, in a statement of its own with no settings; then the search's settings and its one statement.
    assert _reads_word_statistics(steps[0]) and [type(step) for step in steps[1:]] == [SetLocal, Fetch]
    assert _common_words(steps[2]) == [["sofa"]]  # more rows than the text leg ranks (200)
    assert capabilities.word_statistics == (("sofa", 5000.0), ("brass", 3.0))
    # The next hybrid search with these capabilities sends its settings and its statement only, the same words bound.
    again = SearchRequest.of(VECTOR, mode="hybrid", text="sofa", k=5)
    rows, steps = run(search_plan(again, capabilities, HybridOptions()), [None, []])
    assert rows == [] and [type(step) for step in steps] == [SetLocal, Fetch]
    assert _common_words(steps[1]) == [["sofa"]]
    # A table ANALYZE never saw has no common words: that answer is kept too, not asked for again.
    unanalysed = Capabilities((0, 6, 2), VectorIndex("hnsw", None, 16, 64), table_rows=-1)
    run(search_plan(hybrid, unanalysed, HybridOptions()), [[], None, []])
    assert unanalysed.word_statistics == ()
    _, steps = run(search_plan(hybrid, unanalysed, HybridOptions()), [None, []])
    assert not any(_reads_word_statistics(step) for step in steps)
    # Vector and keyword searches never ask for them.
    for request, replies in ((SearchRequest.of(VECTOR, k=30), [None, [], []]),
                             (SearchRequest.of(VECTOR, mode="keyword", text="oak"), [[]])):
        fresh = Capabilities((0, 6, 2), VectorIndex("hnsw", None, 16, 64), table_rows=100_000)
        _, steps = run(search_plan(request, fresh, HybridOptions()), replies)
        assert not any(_reads_word_statistics(step) for step in steps) and fresh.word_statistics is None


# -- where the executor puts statements and settings -----------------------------------------------------


SETTINGS = {"ivfflat.probes": "10", "plan_cache_mode": "force_custom_plan"}


def _statement(sql_text: str) -> Fetch:
    return Fetch(sql.SQL(sql_text))


@plan(read_only=True)
def _two_reads() -> PlanGenerator[list[Any]]:
    yield SetLocal(SETTINGS)
    first = yield _statement("SELECT 'first'")
    second = yield _statement("SELECT 'second'")
    return [first, second]


@plan(read_only=False)
def _two_writes() -> PlanGenerator[None]:
    yield SetLocal({"lock_timeout": "1s"})
    yield _statement("UPDATE a")
    yield _statement("UPDATE b")


@plan(read_only=False, transactional=False)
def _index_build() -> PlanGenerator[None]:
    yield SetLocal({"maintenance_work_mem": "64MB"})
    yield _statement("CREATE INDEX CONCURRENTLY x")
    yield Atomic([_statement("DROP INDEX a"), _statement("ALTER INDEX x RENAME TO a")])


@plan(read_only=False, single_statement=True)
def _one_statement_plan(count: int) -> PlanGenerator[None]:
    for _ in range(count):
        yield _statement("INSERT one")


def rounds(plan_: Plan[Any], *, pooled: bool, initial: dict[str, str] | None = None) -> list[list[str]]:
    """Return what each round trip of ``plan_`` sends: ``set_config local|session [names]`` or the SQL text."""
    operations = _operations(plan_, initial, pooled)
    sent: list[list[str]] = []
    operation = next(operations)
    while not isinstance(operation, _Done):
        assert isinstance(operation, _Round)
        parts = []
        for query, params in operation.statements:
            if isinstance(query, bytes):  # the settings statement, rendered once per count of settings
                scope = "local" if query.endswith(b"true)") else "session"
                parts.append(f"set_config {scope} {sorted(v for k, v in params.items() if k.startswith('n'))}")
            else:
                parts.append(query.as_string(None))
        sent.append(parts + (["(one transaction)"] if operation.atomic else []))
        operation = operations.send([] if operation.rows else 0)
    return sent


def test_a_read_on_a_direct_connection_sends_its_settings_with_every_statement() -> None:
    # No explicit transaction: each statement is its own implicit one, so SET LOCAL must travel with each.
    assert not _explicit_transaction(_two_reads(), pooled=False)
    assert rounds(_two_reads(), pooled=False) == [
        ["set_config local ['ivfflat.probes', 'plan_cache_mode']", "SELECT 'first'"],
        ["set_config local ['ivfflat.probes', 'plan_cache_mode']", "SELECT 'second'"]]


def test_a_read_behind_a_transaction_pooler_sends_its_settings_once_inside_its_transaction() -> None:
    assert _explicit_transaction(_two_reads(), pooled=True)
    assert rounds(_two_reads(), pooled=True) == [
        ["set_config local ['ivfflat.probes', 'plan_cache_mode']", "SELECT 'first'"], ["SELECT 'second'"]]


@pytest.mark.parametrize("pooled", [False, True], ids=["direct", "pooled"])
def test_a_write_runs_in_one_transaction_with_its_settings_sent_once(pooled: bool) -> None:
    assert _explicit_transaction(_two_writes(), pooled=pooled)
    assert rounds(_two_writes(), pooled=pooled) == [["set_config local ['lock_timeout']", "UPDATE a"], ["UPDATE b"]]


def test_a_single_statement_write_needs_no_transaction_except_behind_a_pooler() -> None:
    assert not _explicit_transaction(_one_statement_plan(1), pooled=False)
    assert _explicit_transaction(_one_statement_plan(1), pooled=True)
    assert rounds(_one_statement_plan(1), pooled=False) == [["INSERT one"]]
    with pytest.raises(TypeError, match="exactly one statement"):
        rounds(_one_statement_plan(2), pooled=False)


def test_initial_settings_travel_like_the_plans_own() -> None:
    assert rounds(_two_reads(), pooled=True, initial={"statement_timeout": "5s"}) == [
        ["set_config local ['ivfflat.probes', 'plan_cache_mode', 'statement_timeout']", "SELECT 'first'"],
        ["SELECT 'second'"]]


def test_a_plan_outside_a_transaction_sets_session_settings_in_a_round_of_their_own() -> None:
    assert not _explicit_transaction(_index_build(), pooled=True)
    assert rounds(_index_build(), pooled=False) == [
        ["set_config session ['maintenance_work_mem']"], ["CREATE INDEX CONCURRENTLY x"],
        ["DROP INDEX a", "ALTER INDEX x RENAME TO a", "(one transaction)"]]


def test_a_setting_outside_the_allowed_set_is_refused_where_the_plan_yields_it() -> None:
    @plan(read_only=True)
    def sneaky() -> PlanGenerator[None]:
        yield SetLocal({"search_path": "evil"})
        yield _statement("SELECT 1")

    with pytest.raises(ValueError, match="search_path"):
        rounds(sneaky(), pooled=False)


def test_steps_that_belong_to_other_kinds_of_plan_are_refused() -> None:
    @plan(read_only=True)
    def reads_then_copies() -> PlanGenerator[None]:
        yield Copy(_statement("COPY t FROM STDIN").query, [], [])

    @plan(read_only=True)
    def reads_then_commits() -> PlanGenerator[None]:
        yield AfterCommit(_statement("SELECT 1"))

    @plan(read_only=False)
    def atomic_inside_a_transaction() -> PlanGenerator[None]:
        yield Atomic([_statement("SELECT 1")])

    for refused, message in ((reads_then_copies(), "cannot COPY"), (reads_then_commits(), "write plan"),
                             (atomic_inside_a_transaction(), "transactional=False")):
        with pytest.raises(TypeError, match=message):
            rounds(refused, pooled=False)


def test_a_search_of_the_whole_table_sends_the_index_query_alone_and_scans_exactly_only_when_it_comes_back_short(
) -> None:
    hnsw = Capabilities((0, 6, 2), VectorIndex("hnsw", None, 16, 64), table_rows=100_000)
    ten = [{"embedding_id": index} for index in range(10)]
    rows, steps = run(search_plan(SearchRequest.of(VECTOR, k=10), hnsw, HybridOptions()), [ten])
    assert rows == ten and len(steps) == 1  # pgvector's defaults: no settings, one statement
    statement = text(steps[0])
    assert "ORDER BY embedding <=>" in statement and "LIMIT 10" in statement
    assert "WITH" not in statement and "count(" not in statement  # nothing around the index's query

    exact = [{"embedding_id": index} for index in range(10, 20)]
    rows, steps = run(search_plan(SearchRequest.of(VECTOR, k=10), hnsw, HybridOptions()), [ten[:3], exact])
    assert rows == exact and len(steps) == 2  # short: an exact scan, which no index can serve, answers
    assert "OFFSET 0" in text(steps[1])

    # A threshold or a filter keeps the one statement that chooses and falls back by itself.
    for request, replies in ((SearchRequest.of(VECTOR, k=10, score_threshold=0.5), [ten[:3]]),
                             (SearchRequest.of(VECTOR, k=10, filter={"source_type": "product"}),
                              [[{"QUERY PLAN": [{"Plan": {"Plan Rows": 30_000}}]}], None, ten[:3]])):
        capabilities = Capabilities((0, 6, 2), VectorIndex("hnsw", None, 16, 64), table_rows=100_000)
        rows, steps = run(search_plan(request, capabilities, HybridOptions()), replies)
        assert rows == ten[:3] and "nearest_rows" in text(steps[-1])


def test_an_ivfflat_search_on_pgvector_08_sorts_the_index_answer_again() -> None:
    ivfflat = Capabilities((0, 8, 1), VectorIndex("ivfflat", 100, None, None), table_rows=100_000)
    ten = [{"embedding_id": index} for index in range(10)]
    _, steps = run(search_plan(SearchRequest.of(VECTOR, k=10), ivfflat, HybridOptions()), [None, ten])
    assert isinstance(steps[0], SetLocal) and text(steps[1]).endswith("ORDER BY distance")
