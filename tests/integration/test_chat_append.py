"""The one-statement chat append: atomic without a transaction, and harmless when sent twice."""

from __future__ import annotations

import asyncio
from uuid import uuid4

import pytest

from sony_rag import plans
from sony_rag.database import Database
from sony_rag.errors import SessionNotFoundError
from sony_rag.executor import PlanGenerator, fetch, plan
from sony_rag.operations import create_chat_session, get_chat_history, get_chat_session
from sony_rag.sql import sessions as session_sql


def _append_plan(session_id: object, texts: list[str], *, create: bool) -> plans.Plan[None]:
    ids = [uuid4() for _ in texts]
    return plans.add_messages(session_id, ids, ["user"] * len(texts), texts, [None] * len(texts), "/cart",
                              [{} for _ in texts],
                              create_session={"user_agent": "ua", "current_page": "/home", "metadata": {"a": 1}}
                              if create else None)


@pytest.mark.parametrize("texts", [["one"], ["one", "two", "three"]], ids=["one message", "a batch"])
@pytest.mark.parametrize("create", [True, False])
def test_an_append_sent_twice_appends_once_in_order(db: Database, create: bool, texts: list[str]) -> None:
    session_id = asyncio.run(create_chat_session(db=db))
    append = _append_plan(session_id, texts, create=create)
    db.run(append)
    db.run(append)  # as a retry after a lost connection would: the same message ids
    rows = asyncio.run(get_chat_history(session_id, db=db))
    assert [row["content"] for row in rows] == texts
    assert {row["page_context"] for row in rows} == {"/cart"}


def test_an_append_to_a_missing_session_creates_it_with_its_columns(db: Database) -> None:
    session_id = uuid4()
    db.run(_append_plan(session_id, ["hello"], create=True))
    session = asyncio.run(get_chat_session(session_id, db=db))
    assert session is not None
    assert (session["user_agent"], session["current_page"], session["metadata"]) == ("ua", "/cart", {"a": 1})


def test_an_append_to_a_missing_session_without_create_writes_nothing(db: Database) -> None:
    session_id = uuid4()
    with pytest.raises(SessionNotFoundError):
        db.run(_append_plan(session_id, ["hello"], create=False))
    assert asyncio.run(get_chat_session(session_id, db=db)) is None
    assert asyncio.run(get_chat_history(session_id, db=db)) == []


@plan(read_only=False, single_statement=True)
def _two_statements() -> PlanGenerator[None]:
    yield fetch(session_sql.get(uuid4()))
    yield fetch(session_sql.get(uuid4()))


def test_a_single_statement_plan_that_sends_two_is_refused(db: Database) -> None:
    with pytest.raises(TypeError, match="exactly one statement"):
        db.run(_two_statements())
