"""The documented async operations of DATABASE.md ("Using Database Operations") against a real Postgres.

Every call is made as the spec shows it (plus ``db=`` for the test database), and again without ``db=``
through the module-level default pool. Bad input must raise sony-rag's exceptions before anything is
written; the database's own constraints, cascades and triggers are checked with raw SQL too.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterator, Callable, Coroutine, Iterator
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import numpy.typing as npt
import psycopg
import pytest
from pgvector.psycopg import register_vector
from psycopg.rows import dict_row

import sony_rag
from sony_rag import operations as api
from sony_rag import plans
from sony_rag.database import Database
from sony_rag.errors import (
    DatabaseError,
    DatabaseUnavailableError,
    InvalidEmbeddingError,
    InvalidFilterError,
    InvalidIdentifierError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidRoleError,
    InvalidSourceTypeError,
    InvalidTextError,
    SessionNotFoundError,
    SonyRagError,
)
from sony_rag.operations import (
    batch_insert_embeddings,
    close_db,
    create_chat_session,
    delete_chat_session,
    delete_embeddings_by_source,
    get_chat_history,
    get_chat_session,
    get_db,
    get_session_selections,
    init_db,
    insert_chat_message,
    insert_embedding,
    insert_text_selection,
    prune_chat_sessions,
    search_similar_embeddings,
    update_chat_session,
)
from sony_rag.sql import documents as document_sql

DIM = 384
Vec = npt.NDArray[np.float32]


# -- helpers ---------------------------------------------------------------------------------------------


def axis(i: int) -> list[float]:
    """Return the one-hot unit vector on axis ``i``."""
    values = [0.0] * DIM
    values[i] = 1.0
    return values


def at_similarity(cos: float, other_axis: int = 1) -> list[float]:
    """Return a unit vector whose cosine similarity to ``axis(0)`` is exactly ``cos``."""
    values = [0.0] * DIM
    values[0] = cos
    values[other_axis] = math.sqrt(max(0.0, 1.0 - cos * cos))
    return values


def cosine(a: Any, b: Any) -> float:
    """Return the cosine similarity of two vectors, computed in float64."""
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


def sql_rows(db: Database, query: str, params: Any = None) -> list[dict[str, Any]]:
    """Run raw SQL on a pooled connection (autocommit) and return its rows as dicts."""
    with db.pool().connection() as conn, conn.cursor(row_factory=dict_row) as cursor:
        cursor.execute(query.encode(), params)
        return cursor.fetchall() if cursor.description else []


def counts(db: Database) -> dict[str, int]:
    """Return the number of rows in each of the four tables."""
    row = sql_rows(db, "SELECT (SELECT count(*) FROM chat_sessions) AS chat_sessions, "
                       "(SELECT count(*) FROM chat_messages) AS chat_messages, "
                       "(SELECT count(*) FROM document_embeddings) AS document_embeddings, "
                       "(SELECT count(*) FROM user_text_selections) AS user_text_selections")[0]
    return {name: int(value) for name, value in row.items()}


def item(source_type: str = "product", source_id: str | None = "sofa-1", content: str = "Description...",
         embedding: Any = None, metadata: dict[str, Any] | None = None) -> dict[str, Any]:
    """Return one item of batch_insert_embeddings as the spec writes it."""
    return {"source_type": source_type, "source_id": source_id, "content_chunk": content,
            "embedding": axis(0) if embedding is None else embedding,
            "metadata": {} if metadata is None else metadata}


# -- chat sessions ---------------------------------------------------------------------------------------


async def test_create_get_update_session_as_documented(db: Database) -> None:
    session_id = await create_chat_session(
        user_agent="Mozilla/5.0...",
        current_page="/products",
        metadata={"source": "widget"},
        db=db,
    )
    assert isinstance(session_id, UUID)

    session = await get_chat_session(session_id, db=db)
    assert session is not None
    assert set(session) == {"session_id", "created_at", "updated_at", "user_agent", "current_page", "metadata"}
    assert session["session_id"] == session_id
    assert session["user_agent"] == "Mozilla/5.0..."
    assert session["current_page"] == "/products"
    assert session["metadata"] == {"source": "widget"}
    assert isinstance(session["created_at"], datetime) and session["created_at"].tzinfo is not None
    assert session["updated_at"] == session["created_at"]

    updated = await update_chat_session(
        session_id=session_id,
        current_page="/about",
        metadata={"last_question": "shipping info"},
        db=db,
    )
    assert updated["current_page"] == "/about"
    assert updated["user_agent"] == "Mozilla/5.0..."  # fields not given are kept
    # metadata is merged key by key, not replaced
    assert updated["metadata"] == {"source": "widget", "last_question": "shipping info"}
    assert updated["updated_at"] > session["updated_at"]
    assert updated["created_at"] == session["created_at"]
    assert await get_chat_session(str(session_id), db=db) == updated  # a UUID's text works as well


async def test_update_overwrites_a_merged_key_and_keeps_metadata_when_none_given(db: Database) -> None:
    session_id = await create_chat_session(metadata={"a": 1, "b": {"x": 1}}, db=db)
    after = await update_chat_session(session_id, metadata={"b": {"y": 2}, "c": None}, db=db)
    assert after["metadata"] == {"a": 1, "b": {"y": 2}, "c": None}  # top-level keys merge
    again = await update_chat_session(session_id, current_page="/cart", db=db)
    assert again["metadata"] == after["metadata"]
    assert again["updated_at"] > after["updated_at"]


async def test_create_session_with_no_arguments(db: Database) -> None:
    session_id = await create_chat_session(db=db)
    session = await get_chat_session(session_id, db=db)
    assert session is not None
    assert session["user_agent"] is None and session["current_page"] is None
    assert session["metadata"] == {}


async def test_create_session_with_a_chosen_id(db: Database) -> None:
    chosen = uuid4()
    assert await create_chat_session(session_id=str(chosen), db=db) == chosen
    assert (await get_chat_session(chosen, db=db)) is not None


async def test_unknown_session(db: Database) -> None:
    assert await get_chat_session(uuid4(), db=db) is None
    with pytest.raises(SessionNotFoundError):
        await update_chat_session(uuid4(), current_page="/x", db=db)
    assert await delete_chat_session(uuid4(), db=db) is False
    assert await get_chat_history(uuid4(), db=db) == []
    assert await get_session_selections(uuid4(), db=db) == []
    assert counts(db) == {"chat_sessions": 0, "chat_messages": 0, "document_embeddings": 0,
                          "user_text_selections": 0}


async def test_delete_session_cascades_to_messages_and_selections(db: Database) -> None:
    keep = await create_chat_session(db=db)
    await insert_chat_message(keep, "user", "kept", db=db)
    await insert_text_selection(keep, "kept", db=db)
    session_id = await create_chat_session(db=db)
    for n in range(3):
        await insert_chat_message(session_id=session_id, role="user", content=f"m{n}", db=db)
        await insert_text_selection(session_id=session_id, selected_text=f"s{n}", embedding=axis(n), db=db)
    assert counts(db)["chat_messages"] == 4

    assert await delete_chat_session(session_id, db=db) is True
    assert await get_chat_session(session_id, db=db) is None
    assert await get_chat_history(session_id, db=db) == []
    assert counts(db) == {"chat_sessions": 1, "chat_messages": 1, "document_embeddings": 0,
                          "user_text_selections": 1}
    assert await delete_chat_session(str(session_id), db=db) is False


async def test_cascade_is_enforced_by_the_database_itself(db: Database) -> None:
    session_id = await create_chat_session(db=db)
    await insert_chat_message(session_id, "user", "hello", db=db)
    await insert_text_selection(session_id, "text", db=db)
    sql_rows(db, "DELETE FROM chat_sessions WHERE session_id = %s", (session_id,))
    assert counts(db)["chat_messages"] == 0
    assert counts(db)["user_text_selections"] == 0


async def test_prune_deletes_sessions_idle_longer_than_the_age(db: Database) -> None:
    # Inserted directly: the updated_at trigger only fires on UPDATE, so old timestamps stay as written.
    old_ids = [uuid4(), uuid4()]
    for days, sid in zip((40, 31), old_ids, strict=True):
        sql_rows(db, "INSERT INTO chat_sessions (session_id, created_at, updated_at) "
                     "VALUES (%s, NOW() - make_interval(days => %s), NOW() - make_interval(days => %s))",
                 (sid, days, days))
    recent_but_created_long_ago = uuid4()
    sql_rows(db, "INSERT INTO chat_sessions (session_id, created_at, updated_at) "
                 "VALUES (%s, NOW() - interval '90 days', NOW() - interval '1 day')",
             (recent_but_created_long_ago,))
    fresh = await create_chat_session(db=db)
    sql_rows(db, "INSERT INTO chat_messages (session_id, role, content) VALUES (%s, 'user', 'old')", (old_ids[0],))
    sql_rows(db, "INSERT INTO user_text_selections (session_id, selected_text) VALUES (%s, 'old')", (old_ids[1],))

    assert await prune_chat_sessions(older_than="30d", db=db) == 2
    remaining = {row["session_id"] for row in sql_rows(db, "SELECT session_id FROM chat_sessions")}
    assert remaining == {recent_but_created_long_ago, fresh}
    assert counts(db)["chat_messages"] == 0 and counts(db)["user_text_selections"] == 0
    assert await prune_chat_sessions(older_than=timedelta(days=30), db=db) == 0
    assert await prune_chat_sessions(older_than=timedelta(hours=12), db=db) == 1
    with pytest.raises(InvalidInputError):
        await prune_chat_sessions(older_than="soon", db=db)
    with pytest.raises(InvalidInputError):
        await prune_chat_sessions(older_than=timedelta(0), db=db)
    assert counts(db)["chat_sessions"] == 1


async def test_updated_at_trigger_bumps_on_any_update(db: Database) -> None:
    session_id = await create_chat_session(db=db)
    before = sql_rows(db, "SELECT updated_at FROM chat_sessions WHERE session_id = %s", (session_id,))[0]
    # Even an UPDATE that tries to set an old updated_at gets NOW(): the trigger owns the column.
    sql_rows(db, "UPDATE chat_sessions SET user_agent = 'x', updated_at = '2000-01-01' WHERE session_id = %s",
             (session_id,))
    after = sql_rows(db, "SELECT updated_at FROM chat_sessions WHERE session_id = %s", (session_id,))[0]
    assert after["updated_at"] > before["updated_at"]

    [embedding_id] = await batch_insert_embeddings([item()], db=db)
    row = sql_rows(db, "SELECT created_at, updated_at FROM document_embeddings WHERE embedding_id = %s",
                   (embedding_id,))[0]
    assert row["created_at"] == row["updated_at"]
    sql_rows(db, "UPDATE document_embeddings SET content_chunk = 'changed', updated_at = '2000-01-01' "
                 "WHERE embedding_id = %s", (embedding_id,))
    changed = sql_rows(db, "SELECT created_at, updated_at FROM document_embeddings WHERE embedding_id = %s",
                       (embedding_id,))[0]
    assert changed["updated_at"] > row["updated_at"]
    assert changed["created_at"] == row["created_at"]


# -- chat messages ---------------------------------------------------------------------------------------


async def test_insert_message_and_history_as_documented(db: Database) -> None:
    session_id = await create_chat_session(current_page="/home", db=db)
    before = await get_chat_session(session_id, db=db)
    assert before is not None

    message_id = await insert_chat_message(
        session_id=session_id,
        role="user",
        content="What sofas are available?",
        page_context="/products",
        db=db,
    )
    assert isinstance(message_id, UUID)
    await insert_chat_message(session_id, "assistant", "We have three.", token_usage=42,
                              metadata={"model": "x"}, db=db)

    messages = await get_chat_history(
        session_id=session_id,
        limit=50,
        db=db,
    )
    assert [m["content"] for m in messages] == ["What sofas are available?", "We have three."]
    first, second = messages
    assert first["message_id"] == message_id
    assert first["session_id"] == session_id
    assert first["role"] == "user" and second["role"] == "assistant"
    assert first["page_context"] == "/products"
    assert first["token_usage"] is None and second["token_usage"] == 42
    assert first["metadata"] == {} and second["metadata"] == {"model": "x"}
    assert {"message_id", "session_id", "role", "content", "created_at", "token_usage", "page_context",
            "metadata"} <= set(first)

    after = await get_chat_session(session_id, db=db)
    assert after is not None
    assert after["updated_at"] > before["updated_at"]  # a message marks the session active
    assert after["current_page"] == "/products"  # and records the page it was sent from


async def test_history_returns_the_newest_limit_oldest_first(db: Database) -> None:
    session_id = await create_chat_session(db=db)
    roles = ["user", "assistant", "system"]
    for n in range(60):
        await insert_chat_message(session_id, roles[n % 3], f"message {n}", db=db)
    other = await create_chat_session(db=db)
    await insert_chat_message(other, "user", "not mine", db=db)

    newest = await get_chat_history(session_id, limit=50, db=db)
    assert [m["content"] for m in newest] == [f"message {n}" for n in range(10, 60)]
    assert [m["content"] for m in await get_chat_history(session_id, limit=3, db=db)] == [
        "message 57", "message 58", "message 59"]
    everything = await get_chat_history(session_id, limit=None, db=db)
    assert [m["content"] for m in everything] == [f"message {n}" for n in range(60)]
    assert [m["content"] for m in await get_chat_history(session_id, db=db)] == [m["content"] for m in newest]
    assert [m["content"] for m in await get_chat_history(session_id, limit=1000, db=db)] == [
        m["content"] for m in everything]


async def test_history_keeps_insertion_order_within_one_transaction(db: Database) -> None:
    session_id = await create_chat_session(db=db)
    contents = [f"turn {n:02d}" for n in range(30)]
    # Random UUIDs and one shared timestamp: neither can give the order, only the insertion sequence.
    await db.arun(plans.add_messages(session_id, [uuid4() for _ in contents],
                                     ["user" if n % 2 == 0 else "assistant" for n in range(30)], contents,
                                     [None] * 30, "/p", [{} for _ in contents]))
    history = await get_chat_history(session_id, limit=None, db=db)
    assert [m["content"] for m in history] == contents
    assert len({m["created_at"] for m in history}) == 1
    assert [m["content"] for m in await get_chat_history(session_id, limit=7, db=db)] == contents[-7:]


async def test_history_keeps_insertion_order_of_rows_written_with_one_timestamp_by_raw_sql(db: Database) -> None:
    session_id = await create_chat_session(db=db)
    contents = [f"raw {n}" for n in (5, 3, 9, 1, 7, 2, 8, 0, 6, 4)]  # not sorted in any other way
    with db.pool().connection() as conn, conn.transaction():
        for text in contents:
            conn.execute("INSERT INTO chat_messages (message_id, session_id, role, content) "
                         "VALUES (%s, %s, 'user', %s)", (uuid4(), session_id, text))
    history = await get_chat_history(session_id, limit=None, db=db)
    assert [m["content"] for m in history] == contents
    assert len({m["created_at"] for m in history}) == 1
    assert [m["content"] for m in await get_chat_history(session_id, limit=4, db=db)] == contents[-4:]


@pytest.mark.parametrize("limit", [0, -1, 2.5, "10", True])
async def test_history_refuses_a_bad_limit(db: Database, limit: Any) -> None:
    session_id = await create_chat_session(db=db)
    with pytest.raises(InvalidInputError, match="limit"):
        await get_chat_history(session_id, limit=limit, db=db)


# -- bad input is refused before anything is written -----------------------------------------------------

NUL = "bad\x00text"

BadCall = Callable[[Database, UUID], Coroutine[Any, Any, object]]

BAD_CALLS: list[tuple[str, BadCall, type[SonyRagError]]] = [
    ("unknown role", lambda db, s: insert_chat_message(s, "robot", "hi", db=db), InvalidRoleError),
    ("role case", lambda db, s: insert_chat_message(s, "User", "hi", db=db), InvalidRoleError),
    ("role None", lambda db, s: insert_chat_message(s, None, "hi", db=db), InvalidRoleError),  # type: ignore[arg-type]
    ("message to unknown session", lambda db, s: insert_chat_message(uuid4(), "user", "hi", db=db),
     SessionNotFoundError),
    ("message to malformed session id", lambda db, s: insert_chat_message("abc", "user", "hi", db=db),
     InvalidIdentifierError),
    ("message NUL content", lambda db, s: insert_chat_message(s, "user", NUL, db=db), InvalidTextError),
    ("message None content", lambda db, s: insert_chat_message(s, "user", None, db=db),  # type: ignore[arg-type]
     InvalidTextError),
    ("message NUL page", lambda db, s: insert_chat_message(s, "user", "hi", page_context=NUL, db=db),
     InvalidTextError),
    ("message non-JSON metadata",
     lambda db, s: insert_chat_message(s, "user", "hi", metadata={"at": datetime.now()}, db=db),
     InvalidMetadataError),
    ("message NaN metadata", lambda db, s: insert_chat_message(s, "user", "hi", metadata={"x": math.nan}, db=db),
     InvalidMetadataError),
    ("message negative tokens", lambda db, s: insert_chat_message(s, "user", "hi", token_usage=-1, db=db),
     InvalidInputError),
    ("message huge tokens", lambda db, s: insert_chat_message(s, "user", "hi", token_usage=2**31, db=db),
     InvalidInputError),
    ("session NUL user agent", lambda db, s: create_chat_session(user_agent=NUL, db=db), InvalidTextError),
    ("session list metadata", lambda db, s: create_chat_session(metadata=["x"], db=db),  # type: ignore[arg-type]
     InvalidMetadataError),
    ("session set metadata", lambda db, s: create_chat_session(metadata={"tags": {"a"}}, db=db),
     InvalidMetadataError),
    ("session malformed chosen id", lambda db, s: create_chat_session(session_id="nope", db=db),
     InvalidIdentifierError),
    ("update NUL page", lambda db, s: update_chat_session(s, current_page=NUL, db=db), InvalidTextError),
    ("update bad metadata", lambda db, s: update_chat_session(s, metadata={1: "x"}, db=db),  # type: ignore[dict-item]
     InvalidMetadataError),
    ("update malformed id", lambda db, s: update_chat_session("123", current_page="/x", db=db),
     InvalidIdentifierError),
    ("get malformed id", lambda db, s: get_chat_session("not-a-uuid", db=db), InvalidIdentifierError),
    ("history malformed id", lambda db, s: get_chat_history("not-a-uuid", db=db), InvalidIdentifierError),
    ("delete malformed id", lambda db, s: delete_chat_session("", db=db), InvalidIdentifierError),
    ("embedding 383 dims", lambda db, s: insert_embedding("product", "x", "c", [0.1] * 383, db=db),
     InvalidEmbeddingError),
    ("embedding 385 dims", lambda db, s: insert_embedding("product", "x", "c", [0.1] * 385, db=db),
     InvalidEmbeddingError),
    ("embedding NaN", lambda db, s: insert_embedding("product", "x", "c", [math.nan] + [0.1] * 383, db=db),
     InvalidEmbeddingError),
    ("embedding inf", lambda db, s: insert_embedding("product", "x", "c", [0.1] * 383 + [math.inf], db=db),
     InvalidEmbeddingError),
    ("embedding zero", lambda db, s: insert_embedding("product", "x", "c", [0.0] * DIM, db=db),
     InvalidEmbeddingError),
    ("embedding None", lambda db, s: insert_embedding("product", "x", "c", None, db=db), InvalidEmbeddingError),
    ("embedding strings", lambda db, s: insert_embedding("product", "x", "c", ["0.1"] * DIM, db=db),
     InvalidEmbeddingError),
    ("embedding text", lambda db, s: insert_embedding("product", "x", "c", "[0.1, 0.2]", db=db),
     InvalidEmbeddingError),
    ("embedding unknown source type", lambda db, s: insert_embedding("blog", "x", "c", axis(0), db=db),
     InvalidSourceTypeError),
    ("embedding NUL chunk", lambda db, s: insert_embedding("product", "x", NUL, axis(0), db=db), InvalidTextError),
    ("embedding NUL source id", lambda db, s: insert_embedding("product", NUL, "c", axis(0), db=db),
     InvalidTextError),
    ("embedding non-JSON metadata",
     lambda db, s: insert_embedding("product", "x", "c", axis(0), metadata={"id": uuid4()}, db=db),
     InvalidMetadataError),
    ("selection unknown session", lambda db, s: insert_text_selection(uuid4(), "text", db=db),
     SessionNotFoundError),
    ("selection malformed session", lambda db, s: insert_text_selection("x", "text", db=db),
     InvalidIdentifierError),
    ("selection NUL text", lambda db, s: insert_text_selection(s, NUL, db=db), InvalidTextError),
    ("selection NUL url", lambda db, s: insert_text_selection(s, "text", page_url=NUL, db=db), InvalidTextError),
    ("selection bad embedding", lambda db, s: insert_text_selection(s, "text", embedding=[1.0] * 12, db=db),
     InvalidEmbeddingError),
    ("selection NaN embedding",
     lambda db, s: insert_text_selection(s, "text", embedding=[math.nan] * DIM, db=db), InvalidEmbeddingError),
    ("selection bad metadata",
     lambda db, s: insert_text_selection(s, "text", metadata={"x": math.inf}, db=db), InvalidMetadataError),
    ("selections malformed id", lambda db, s: get_session_selections("x", db=db), InvalidIdentifierError),
    ("selections bad limit", lambda db, s: get_session_selections(s, limit=0, db=db), InvalidInputError),
    ("delete unknown source type", lambda db, s: delete_embeddings_by_source("blog", "x", db=db),
     InvalidSourceTypeError),
    ("delete NUL source id", lambda db, s: delete_embeddings_by_source("product", NUL, db=db), InvalidTextError),
]


@pytest.mark.parametrize(("call", "error"), [(c, e) for _, c, e in BAD_CALLS], ids=[n for n, _, _ in BAD_CALLS])
async def test_bad_input_raises_our_error_and_writes_nothing(db: Database, call: BadCall,
                                                             error: type[SonyRagError]) -> None:
    session_id = await create_chat_session(metadata={"k": "v"}, db=db)
    await insert_embedding("faq", "keep", "kept chunk", axis(3), db=db)
    before = counts(db)
    session_before = await get_chat_session(session_id, db=db)

    with pytest.raises(error) as raised:
        await call(db, session_id)

    assert not isinstance(raised.value, psycopg.Error)
    assert counts(db) == before
    assert await get_chat_session(session_id, db=db) == session_before  # not even touched


async def test_unknown_session_is_our_error_not_a_foreign_key_error(db: Database) -> None:
    missing = uuid4()
    with pytest.raises(SessionNotFoundError, match=str(missing)) as raised:
        await insert_chat_message(session_id=missing, role="user", content="hi", db=db)
    assert isinstance(raised.value, LookupError)
    with pytest.raises(SessionNotFoundError) as raised_selection:
        await insert_text_selection(session_id=missing, selected_text="text", db=db)
    assert not isinstance(raised_selection.value, psycopg.Error)
    assert counts(db)["chat_sessions"] == 0  # nothing was created on the way


async def test_invalid_input_errors_are_value_errors(db: Database) -> None:
    with pytest.raises(ValueError):
        await search_similar_embeddings([0.0] * DIM, db=db)
    with pytest.raises(InvalidInputError):
        await search_similar_embeddings(axis(0), source_type="blog", db=db)


# -- constraints enforced by the database itself ---------------------------------------------------------


def test_check_constraints_refuse_bad_rows_written_with_raw_sql(db: Database) -> None:
    with db.pool().connection() as conn:
        conn.execute("INSERT INTO chat_sessions (session_id) VALUES (%s)", (session_id := uuid4(),))
        with pytest.raises(psycopg.errors.CheckViolation, match="chat_messages_role_check"):
            conn.execute("INSERT INTO chat_messages (session_id, role, content) VALUES (%s, 'robot', 'x')",
                         (session_id,))
        with pytest.raises(psycopg.errors.CheckViolation, match="document_embeddings_source_type_check"):
            conn.execute("INSERT INTO document_embeddings (source_type, content_chunk, embedding) "
                         "VALUES ('blog', 'x', %s::vector)", (str(axis(0)),))
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="chat_messages_session_id_fkey"):
            conn.execute("INSERT INTO chat_messages (session_id, role, content) VALUES (%s, 'user', 'x')",
                         (uuid4(),))
        with pytest.raises(psycopg.errors.ForeignKeyViolation, match="user_text_selections_session_id_fkey"):
            conn.execute("INSERT INTO user_text_selections (session_id, selected_text) VALUES (%s, 'x')",
                         (uuid4(),))
        with pytest.raises(psycopg.errors.DataException, match="384"):
            conn.execute("INSERT INTO document_embeddings (source_type, content_chunk, embedding) "
                         "VALUES ('faq', 'x', '[1,2,3]'::vector)")
        with pytest.raises(psycopg.errors.NotNullViolation):
            conn.execute("INSERT INTO chat_messages (session_id, role, content) VALUES (%s, 'user', NULL)",
                         (session_id,))
        with pytest.raises(psycopg.errors.StringDataRightTruncation):
            conn.execute("INSERT INTO document_embeddings (source_type, content_chunk, embedding) "
                         "VALUES (%s, 'x', %s::vector)", ("p" * 51, str(axis(0))))
    assert counts(db) == {"chat_sessions": 1, "chat_messages": 0, "document_embeddings": 0,
                          "user_text_selections": 0}


def test_a_database_refusal_reaches_the_caller_as_our_error(db: Database) -> None:
    # Validation normally stops bad values first; a plan that slips one past it still gets our exception.
    with pytest.raises(InvalidInputError, match="chat_messages_role_check"):
        db.run(plans.add_messages(uuid4(), [uuid4()], ["robot"], ["x"], [None], None, [{}],
                                  create_session={"metadata": {}}))
    assert counts(db)["chat_sessions"] == 0  # the session created in the same plan was rolled back


# -- embeddings ------------------------------------------------------------------------------------------


async def test_insert_embedding_as_documented(db: Database) -> None:
    embedding = [0.1, 0.2] + [0.05] * (DIM - 2)
    embedding_id = await insert_embedding(
        source_type="product",
        source_id="vintage-sofa-123",
        content_chunk="Vintage leather sofa...",
        embedding=embedding,
        metadata={"category": "sofas"},
        db=db,
    )
    assert isinstance(embedding_id, UUID)
    with db.pool().connection() as conn:
        register_vector(conn)
        row = conn.execute("SELECT source_type, source_id, content_chunk, embedding, metadata "
                           "FROM document_embeddings WHERE embedding_id = %s", (embedding_id,)).fetchone()
    assert row is not None
    source_type, source_id, chunk, stored, metadata = row
    assert (source_type, source_id, chunk, metadata) == ("product", "vintage-sofa-123", "Vintage leather sofa...",
                                                         {"category": "sofas"})
    assert np.allclose(np.asarray(stored.to_numpy() if hasattr(stored, "to_numpy") else stored), embedding)


async def test_insert_embedding_without_source_id_or_metadata(db: Database) -> None:
    await insert_embedding("faq", None, "What is the return policy?", axis(2), db=db)
    row = sql_rows(db, "SELECT source_id, metadata FROM document_embeddings")[0]
    assert row == {"source_id": None, "metadata": {}}


async def test_batch_insert_as_documented(db: Database) -> None:
    rng = np.random.default_rng(1)
    embeddings_data = [
        {
            "source_type": "product",
            "source_id": "sofa-1",
            "content_chunk": "Description...",
            "embedding": rng.normal(size=DIM).tolist(),
            "metadata": {},
        },
        {"source_type": "faq", "source_id": "faq-1", "content_chunk": "Shipping is free over $500.",
         "embedding": rng.normal(size=DIM).astype(np.float32), "metadata": {"topic": "shipping"}},
        {"source_type": "policy", "content_chunk": "No source id, no metadata.", "embedding": axis(9)},
    ]
    embedding_ids = await batch_insert_embeddings(embeddings_data, db=db)
    assert len(embedding_ids) == 3 and len(set(embedding_ids)) == 3
    rows = {row["embedding_id"]: row for row in sql_rows(
        db, "SELECT embedding_id, source_type, source_id, content_chunk, metadata FROM document_embeddings")}
    # ids come back in input order
    assert [rows[i]["content_chunk"] for i in embedding_ids] == [d["content_chunk"] for d in embeddings_data]
    assert rows[embedding_ids[1]]["metadata"] == {"topic": "shipping"}
    assert rows[embedding_ids[2]]["source_id"] is None and rows[embedding_ids[2]]["metadata"] == {}


async def test_batch_insert_accepts_any_iterable_and_an_empty_one(db: Database) -> None:
    assert await batch_insert_embeddings([], db=db) == []
    ids = await batch_insert_embeddings((item(source_id=f"g{n}", embedding=axis(n)) for n in range(5)), db=db)
    assert len(ids) == 5
    assert counts(db)["document_embeddings"] == 5


BAD_ITEMS: list[tuple[str, Any, type[SonyRagError]]] = [
    ("383 dimensions", item(embedding=[0.1] * 383), InvalidEmbeddingError),
    ("NaN", item(embedding=[0.1] * 383 + [math.nan]), InvalidEmbeddingError),
    ("infinity", item(embedding=[math.inf] * DIM), InvalidEmbeddingError),
    ("zero vector", item(embedding=[0.0] * DIM), InvalidEmbeddingError),
    ("strings", item(embedding=["1"] * DIM), InvalidEmbeddingError),
    ("source type", item(source_type="blog"), InvalidSourceTypeError),
    ("NUL content", item(content="a\x00b"), InvalidTextError),
    ("non-JSON metadata", item(metadata={"when": datetime(2024, 1, 1)}), InvalidMetadataError),
    ("missing embedding", {"source_type": "faq", "content_chunk": "x"}, InvalidInputError),
    ("unknown key", {**item(), "embeddings": axis(0)}, InvalidInputError),
    ("not a dict", ["product", "x", "c", axis(0), {}], InvalidInputError),
]


@pytest.mark.parametrize(("bad", "error"), [(b, e) for _, b, e in BAD_ITEMS], ids=[n for n, _, _ in BAD_ITEMS])
async def test_batch_insert_is_all_or_nothing(db: Database, bad: Any, error: type[SonyRagError]) -> None:
    valid = [item(source_id=f"ok-{n}", embedding=axis(n)) for n in range(6)]
    with pytest.raises(error, match="item 4"):
        await batch_insert_embeddings([*valid[:4], bad, *valid[4:]], db=db)
    assert counts(db)["document_embeddings"] == 0


async def test_a_batch_failing_inside_the_database_leaves_no_row(db: Database) -> None:
    # Two rows with one id: the primary key refuses the second after the first was copied in.
    same = uuid4()
    rows = [api.embedding_row(item(source_id=f"r{n}", embedding=axis(n)), n, embedding_id=uuid4())
            for n in range(50)]
    rows.append(api.embedding_row(item(), 50, embedding_id=same))
    rows.append(api.embedding_row(item(), 51, embedding_id=same))
    with pytest.raises(DatabaseError):
        await db.arun(plans.insert_embeddings(rows))
    assert counts(db)["document_embeddings"] == 0


async def test_delete_embeddings_by_source_as_documented(db: Database) -> None:
    await batch_insert_embeddings([
        item("product", "old-product-123", "a", axis(0)), item("product", "old-product-123", "b", axis(1)),
        item("product", "new-product-456", "c", axis(2)), item("faq", "old-product-123", "d", axis(3)),
        item("product", None, "e", axis(4)),
    ], db=db)
    count = await delete_embeddings_by_source(
        source_type="product",
        source_id="old-product-123",
        db=db,
    )
    assert count == 2
    left = sorted(row["content_chunk"] for row in sql_rows(db, "SELECT content_chunk FROM document_embeddings"))
    assert left == ["c", "d", "e"]
    assert await delete_embeddings_by_source("product", "old-product-123", db=db) == 0
    assert await delete_embeddings_by_source("product", db=db) == 2  # every chunk of the type
    assert [row["content_chunk"] for row in sql_rows(db, "SELECT content_chunk FROM document_embeddings")] == ["d"]


# -- similarity search -----------------------------------------------------------------------------------


@pytest.fixture
async def graded(db: Database) -> dict[str, float]:
    """Store chunks at known cosine similarities to axis(0); return chunk -> similarity."""
    grades = {"p95": 0.95, "p85": 0.85, "p75": 0.75, "p65": 0.65, "p40": 0.4, "p10": 0.1, "pm50": -0.5}
    data = [item("product", name, name, at_similarity(cos, 1 + n), {"grade": cos})
            for n, (name, cos) in enumerate(grades.items())]
    data += [item("faq", "f90", "f90", at_similarity(0.9, 50)), item("faq", "f70", "f70", at_similarity(0.7, 51))]
    await batch_insert_embeddings(data, db=db)
    return {**grades, "f90": 0.9, "f70": 0.7}


async def test_search_as_documented(db: Database, graded: dict[str, float]) -> None:
    results = await search_similar_embeddings(
        query_embedding=axis(0),
        source_type="product",  # Optional filter
        limit=5,
        similarity_threshold=0.7,
        db=db,
    )
    assert [result["content_chunk"] for result in results] == ["p95", "p85", "p75"]
    for result in results:
        assert result["similarity"] == pytest.approx(graded[result["content_chunk"]], abs=1e-5)
        assert isinstance(result["similarity"], float)
        assert result["source_type"] == "product"
        assert result["metadata"] == {"grade": graded[result["content_chunk"]]}
        assert {"embedding_id", "source_type", "source_id", "content_chunk", "metadata", "similarity"} <= set(result)


async def test_search_orders_by_cosine_similarity_highest_first(db: Database, graded: dict[str, float]) -> None:
    results = await search_similar_embeddings(axis(0), limit=20, db=db)
    assert [r["content_chunk"] for r in results] == sorted(graded, key=lambda name: -graded[name])
    similarities = [r["similarity"] for r in results]
    assert similarities == sorted(similarities, reverse=True)
    assert similarities[-1] == pytest.approx(-0.5, abs=1e-5)


async def test_search_similarity_is_cosine_not_dot_product(db: Database) -> None:
    rng = np.random.default_rng(3)
    vectors = [rng.normal(size=DIM) * scale for scale in (0.01, 1.0, 100.0)]
    await batch_insert_embeddings([item("policy", f"v{n}", f"v{n}", v) for n, v in enumerate(vectors)], db=db)
    query = rng.normal(size=DIM) * 7.0
    results = await search_similar_embeddings(query, limit=3, db=db)
    expected = sorted(((cosine(query, v), f"v{n}") for n, v in enumerate(vectors)), reverse=True)
    assert [r["content_chunk"] for r in results] == [name for _, name in expected]
    for result, (similarity, _) in zip(results, expected, strict=True):
        assert result["similarity"] == pytest.approx(similarity, abs=1e-5)


async def test_search_threshold_and_limit(db: Database, graded: dict[str, float]) -> None:
    over_60 = await search_similar_embeddings(axis(0), limit=10, similarity_threshold=0.6, db=db)
    assert [r["content_chunk"] for r in over_60] == ["p95", "f90", "p85", "p75", "f70", "p65"]
    assert [r["content_chunk"] for r in await search_similar_embeddings(axis(0), limit=2, db=db)] == ["p95", "f90"]
    assert len(await search_similar_embeddings(axis(0), db=db)) == 5  # the default limit
    assert await search_similar_embeddings(axis(0), similarity_threshold=0.99, db=db) == []
    inclusive = await search_similar_embeddings(axis(0), source_type="faq", similarity_threshold=0.69, db=db)
    assert [r["content_chunk"] for r in inclusive] == ["f90", "f70"]
    faq = await search_similar_embeddings(axis(0), source_type="faq", limit=5, db=db)
    assert [r["content_chunk"] for r in faq] == ["f90", "f70"]
    assert await search_similar_embeddings(axis(0), source_type="policy", db=db) == []


async def test_search_takes_a_metadata_filter_beside_the_source_type(db: Database, graded: dict[str, float]) -> None:
    results = await search_similar_embeddings(axis(0), source_type="product", limit=10,
                                              filter={"grade": {"$lt": 0.8}}, db=db)
    assert [r["content_chunk"] for r in results] == ["p75", "p65", "p40", "p10", "pm50"]
    with pytest.raises(InvalidFilterError):
        await search_similar_embeddings(axis(0), filter={"grade": {"$near": 1}}, db=db)


@pytest.mark.parametrize(("kwargs", "error"), [
    ({"query_embedding": [0.1] * 383}, InvalidEmbeddingError),
    ({"query_embedding": [math.nan] * DIM}, InvalidEmbeddingError),
    ({"query_embedding": [0.0] * DIM}, InvalidEmbeddingError),
    ({"query_embedding": None}, InvalidEmbeddingError),
    ({"query_embedding": ["0.5"] * DIM}, InvalidEmbeddingError),
    ({"query_embedding": axis(0), "source_type": "products"}, InvalidSourceTypeError),
    ({"query_embedding": axis(0), "limit": 0}, InvalidInputError),
    ({"query_embedding": axis(0), "limit": "5"}, InvalidInputError),
    ({"query_embedding": axis(0), "similarity_threshold": 1.5}, InvalidInputError),
    ({"query_embedding": axis(0), "similarity_threshold": math.nan}, InvalidInputError),
    ({"query_embedding": axis(0), "similarity_threshold": "0.7"}, InvalidInputError),
])
async def test_search_refuses_bad_arguments(db: Database, kwargs: dict[str, Any], error: type[Exception]) -> None:
    with pytest.raises(error):
        await search_similar_embeddings(db=db, **kwargs)


def _random_unit(rng: np.random.Generator, n: int) -> Vec:
    vectors = rng.normal(size=(n, DIM)).astype(np.float32)
    return vectors / np.linalg.norm(vectors, axis=1, keepdims=True)  # type: ignore[no-any-return]


def _exact_top(vectors: Vec, query: Vec, mask: npt.NDArray[np.bool_], k: int) -> list[str]:
    sims = vectors @ query
    order = [i for i in np.argsort(-sims) if mask[i]]
    return [f"doc-{i}" for i in order[:k]]


def build_documented_index(db: Database) -> None:
    """(Re)build the vector index exactly as migration 001 does, whatever an earlier test left behind."""
    sql_rows(db, "DROP INDEX IF EXISTS idx_document_embeddings_vector")
    sql_rows(db, "CREATE INDEX idx_document_embeddings_vector ON document_embeddings "
                 "USING ivfflat (embedding vector_cosine_ops) WITH (lists = 100)")
    db.forget_capabilities()


def _assert_ranked(results: list[Any], vectors: Vec, query: Vec) -> None:
    """Assert each result's similarity is its true cosine similarity and the list is highest first."""
    for result in results:
        index = int(result["content_chunk"].removeprefix("doc-"))
        assert result["similarity"] == pytest.approx(float(vectors[index] @ query), abs=1e-5)
    similarities = [r["similarity"] for r in results]
    assert similarities == sorted(similarities, reverse=True)


def _first_step_count(db: Database, query: Vec, k: int, flt: dict[str, Any] | None,
                      *, force_index: bool = False) -> tuple[int, str]:
    """Return how many rows the vector index's query alone finds, and its plan, with the search's settings."""
    caps = db.capabilities()
    statement, params = document_sql.ann_nearest(query, k, flt)
    with db.pool().connection() as conn, conn.transaction():
        settings = {**plans.ann_settings(caps, k), "plan_cache_mode": "force_custom_plan"}
        if force_index:  # PostgreSQL 18 plans a sequential scan of a small table that was never analyzed
            settings["enable_seqscan"] = "off"
        for name, value in settings.items():
            conn.execute("SELECT set_config(%s, %s, true)", (name, value))
        plan = "\n".join(row[0] for row in conn.execute(psycopg.sql.Composed([psycopg.sql.SQL("EXPLAIN "), statement]),
                                                         params))
        found = len(conn.execute(psycopg.sql.Composed([statement]), params).fetchall())
    return found, plan


@pytest.fixture
async def many_rows(db: Database) -> tuple[Vec, npt.NDArray[np.bool_]]:
    """Store 2,000 random chunks (1 % of them faq with metadata group 'rare') and build the index on them."""
    rng = np.random.default_rng(20240601)
    vectors = _random_unit(rng, 2000)
    rare = np.zeros(2000, dtype=bool)
    rare[::100] = True
    await batch_insert_embeddings([
        item("faq" if rare[i] else "product", f"doc-{i}", f"doc-{i}", vectors[i],
             {"group": "rare" if rare[i] else "common"}) for i in range(2000)], db=db)
    build_documented_index(db)  # trained on these rows
    sql_rows(db, "ANALYZE document_embeddings")
    assert db.capabilities().vector_index is not None
    assert db.capabilities().vector_index.lists == 100  # type: ignore[union-attr]
    return vectors, rare


async def test_search_count_is_exact_under_a_selective_source_type_filter(
        db: Database, many_rows: tuple[Vec, npt.NDArray[np.bool_]]) -> None:
    vectors, rare = many_rows
    query = _random_unit(np.random.default_rng(5), 1)[0]
    # The trap: the vector index alone, with the probes the search uses, sees few of the 20 faq rows.
    with db.pool().connection() as conn, conn.transaction():
        register_vector(conn)
        conn.execute("SELECT set_config('ivfflat.probes', %s, true), set_config('enable_sort', 'off', true)",
                     (str(plans.default_probes(100)),))
        naive = conn.execute("SELECT 1 FROM document_embeddings WHERE source_type = 'faq' "
                             "ORDER BY embedding <=> %s LIMIT 10", (query,)).fetchall()
    assert len(naive) < 10

    results = await search_similar_embeddings(query, source_type="faq", limit=10, db=db)
    assert len(results) == 10
    assert {r["source_type"] for r in results} == {"faq"}
    _assert_ranked(results, vectors, query)
    # 20 rows match: the search counts them through the source_type btree and ranks them exactly (on pgvector
    # 0.6 and 0.8 alike, whatever the index would have answered).
    assert [r["content_chunk"] for r in results] == _exact_top(vectors, query, rare, 10)
    everything = await search_similar_embeddings(query, source_type="faq", limit=50, db=db)
    assert len(everything) == 20


async def test_search_count_is_exact_under_a_selective_metadata_filter(
        db: Database, many_rows: tuple[Vec, npt.NDArray[np.bool_]]) -> None:
    vectors, rare = many_rows
    query = _random_unit(np.random.default_rng(6), 1)[0]
    found, plan = _first_step_count(db, query, 10, {"group": "rare"})
    # The vector index alone, filtering afterwards, starves (pgvector 0.6) or answers approximately (0.8's
    # iterative scan); the search counts the 20 matching rows first and ranks them exactly, on both.
    assert "idx_document_embeddings_vector" in plan
    if not db.capabilities().iterative_scan:
        assert found < 10

    results = await search_similar_embeddings(query, limit=10, filter={"group": "rare"}, db=db)
    assert len(results) == 10
    assert {r["metadata"]["group"] for r in results} == {"rare"}
    _assert_ranked(results, vectors, query)
    assert [r["content_chunk"] for r in results] == _exact_top(vectors, query, rare, 10)


def _passes_over_the_table(db: Database, statement: Any, params: Any) -> int:
    """Return how many scans of document_embeddings (not by primary key) ran in the statement (EXPLAIN ANALYZE)."""
    with db.pool().connection() as conn, conn.transaction():
        register_vector(conn)
        conn.execute("SELECT set_config('plan_cache_mode', 'force_custom_plan', true)")
        plan = conn.execute(psycopg.sql.Composed([psycopg.sql.SQL("EXPLAIN (ANALYZE, FORMAT JSON) "), statement]),
                            params).fetchone()[0][0]["Plan"]

    def scans(node: dict[str, Any]) -> int:
        own = (node.get("Relation Name") == "document_embeddings" and node.get("Actual Loops", 0) > 0
               and node.get("Index Name") != "document_embeddings_pkey")
        return int(own) + sum(scans(child) for child in node.get("Plans", []))

    return scans(plan)


async def test_a_counted_filter_is_ranked_from_the_rows_its_count_read(
        db: Database, many_rows: tuple[Vec, npt.NDArray[np.bool_]]) -> None:
    """A filter the statistics cannot estimate (a metadata key beside a column) on a small table is counted in
    the search's statement; when fewer rows than the bound match, the count's own pass ranks them exactly."""
    from sony_rag.sql.filters import parse_filter

    vectors, rare = many_rows
    query = _random_unit(np.random.default_rng(7), 1)[0]
    rare_faq = {"group": "rare", "source_type": "faq"}
    results = await search_similar_embeddings(query, limit=10, filter=rare_faq, db=db)
    assert [r["content_chunk"] for r in results] == _exact_top(vectors, query, rare, 10)
    _assert_ranked(results, vectors, query)
    # The statement the search sends reads the table once (the count), not twice (the count, then a scan).
    statement, params = document_sql.nearest(query, 10, parse_filter(rare_faq), exact_below=2000)
    assert _passes_over_the_table(db, statement, params) == 1
    # Every row matches the filter, few pass the threshold: the count (of both) is below the bound, and the rows
    # are exactly those above the threshold, closest first.
    everything = {"group": {"$in": ["rare", "common"]}, "source_type": {"$in": ["faq", "product"]}}
    threshold = float(np.sort(vectors @ query)[-4])  # four rows at or above it
    above = await search_similar_embeddings(query, limit=10, filter=everything, similarity_threshold=threshold,
                                            db=db)
    assert [r["content_chunk"] for r in above] == _exact_top(vectors, query, np.ones(len(vectors), bool), 4)


async def test_an_hnsw_query_sets_its_iterative_scan_itself_for_its_transaction_only(db: Database) -> None:
    """pgvector 0.8: the index's own query carries its scan settings (no statement pipelined before it), and
    they take effect on its scan: under a 5 % filter, pgvector's defaults come back short, the query does not."""
    if not db.capabilities().iterative_scan:
        pytest.skip("iterative index scans arrived in pgvector 0.8")
    rng = np.random.default_rng(8)
    vectors = _random_unit(rng, 2000)
    await batch_insert_embeddings([item("faq" if i % 20 == 0 else "product", f"doc-{i}", f"doc-{i}", vectors[i])
                                   for i in range(2000)], db=db)
    sql_rows(db, "DROP INDEX IF EXISTS idx_document_embeddings_vector")
    sql_rows(db, "CREATE INDEX idx_document_embeddings_vector ON document_embeddings "
                 "USING hnsw (embedding vector_cosine_ops)")
    sql_rows(db, "ANALYZE document_embeddings")
    db.forget_capabilities()
    faq = {"source_type": "faq"}
    settings = plans.ann_settings(db.capabilities(), 10)
    assert settings["hnsw.iterative_scan"] == "strict_order"
    found: dict[bool, list[int]] = {False: [], True: []}
    with db.pool().connection() as conn:
        register_vector(conn)
        for query in _random_unit(rng, 8):
            for with_settings in (False, True):
                statement, params = document_sql.index_nearest(
                    query, 10, faq, literal_limit=True, hnsw_settings=settings if with_settings else None)
                with conn.transaction():
                    # Only the vector index can give this order: the scan under test.
                    conn.execute("SELECT set_config('enable_seqscan', 'off', true), "
                                 "set_config('enable_bitmapscan', 'off', true), set_config('enable_sort', 'off', true)")
                    rows = conn.execute(statement, params).fetchall()
                found[with_settings].append(len(rows))
        # For its transaction only: nothing is left on the connection.
        assert conn.execute("SELECT current_setting('hnsw.iterative_scan')").fetchone()[0] == "off"
    assert min(found[False]) < 10  # about 2 of the 40 candidates match: the defaults come back short
    assert found[True] == [10] * 8


async def test_an_unfiltered_hnsw_search_is_exact_in_count_whatever_the_servers_ef_search(
        database_url: str, db: Database, many_rows: tuple[Vec, npt.NDArray[np.bool_]]) -> None:
    from helpers import test_settings

    vectors, _ = many_rows
    sql_rows(db, "DROP INDEX idx_document_embeddings_vector")
    sql_rows(db, "CREATE INDEX idx_document_embeddings_vector ON document_embeddings "
                 "USING hnsw (embedding vector_cosine_ops)")
    db.forget_capabilities()
    query = _random_unit(np.random.default_rng(11), 1)[0]
    exact = _exact_top(vectors, query, np.ones(len(vectors), dtype=bool), 10)
    # pgvector's default ef_search (40): the index answers, k rows closest first.
    for _ in range(8):  # past the executions after which Postgres may run the statement's generic plan
        found = await search_similar_embeddings(query, limit=10, db=db)
        assert len(found) == 10
        _assert_ranked(found, vectors, query)
    if db.transaction_pooler:
        return  # PgBouncer refuses the startup option below
    # A server whose ef_search is below k: the search sends no settings (pgvector's defaults, on 0.6 and 0.8
    # alike without a filter), so the index comes back short and the exact scan answers.
    # (A statement timeout would replace the connection's options.)
    low = Database(psycopg.conninfo.make_conninfo(database_url, options="-c hnsw.ef_search=3"),
                   settings=test_settings(statement_timeout_ms=0))
    try:
        for _ in range(8):
            found = await search_similar_embeddings(query, limit=10, db=low)
            assert len(found) == 10
            _assert_ranked(found, vectors, query)
            assert [r["content_chunk"] for r in found] == exact
    finally:
        low.close()


async def test_search_count_is_exact_with_a_threshold(
        db: Database, many_rows: tuple[Vec, npt.NDArray[np.bool_]]) -> None:
    vectors, _ = many_rows
    for seed, above in ((11, 10), (12, 12), (13, 15), (14, 25), (15, 3)):
        query = _random_unit(np.random.default_rng(seed), 1)[0]
        sims = np.sort(vectors @ query)[::-1]
        threshold = float((sims[above - 1] + sims[above]) / 2)  # exactly `above` rows pass
        results = await search_similar_embeddings(query, limit=10, similarity_threshold=threshold, db=db)
        _assert_ranked(results, vectors, query)
        assert len(results) == min(10, above), seed
        assert all(r["similarity"] >= threshold for r in results)
        assert len(await search_similar_embeddings(query, limit=50, similarity_threshold=threshold, db=db)) == above


async def test_search_count_is_exact_on_the_index_built_on_an_empty_table(db: Database) -> None:
    # As migrated: the IVFFlat index exists before any row does, so its lists were never trained on data.
    build_documented_index(db)
    rng = np.random.default_rng(9)
    vectors = _random_unit(rng, 300)
    await batch_insert_embeddings([item("product", f"doc-{i}", f"doc-{i}", vectors[i]) for i in range(300)], db=db)
    query = _random_unit(rng, 1)[0]
    found, plan = _first_step_count(db, query, 150, None, force_index=True)
    assert "idx_document_embeddings_vector" in plan
    if not db.capabilities().iterative_scan:
        assert found < 150

    results = await search_similar_embeddings(query, limit=150, db=db)
    assert len(results) == 150
    _assert_ranked(results, vectors, query)
    assert len(await search_similar_embeddings(query, limit=1000, db=db)) == 300


# -- text selections -------------------------------------------------------------------------------------


async def test_selections_as_documented(db: Database) -> None:
    session_id = await create_chat_session(db=db)
    embedding = [0.1] + [0.02] * (DIM - 1)
    selection_id = await insert_text_selection(
        session_id=session_id,
        selected_text="free shipping on orders over $500",
        page_url="/products/sofa-123",
        embedding=embedding,  # Optional
        db=db,
    )
    assert isinstance(selection_id, UUID)
    second = await insert_text_selection(session_id, "leather care", page_url="/care", metadata={"n": 2}, db=db)

    selections = await get_session_selections(
        session_id=session_id,
        limit=10,
        db=db,
    )
    assert [s["selection_id"] for s in selections] == [second, selection_id]  # newest first
    newest, oldest = selections
    assert set(oldest) == {"selection_id", "session_id", "selected_text", "page_url", "created_at", "embedding",
                           "metadata"}
    assert oldest["selected_text"] == "free shipping on orders over $500"
    assert oldest["page_url"] == "/products/sofa-123"
    assert oldest["session_id"] == session_id
    assert oldest["metadata"] == {}
    assert oldest["embedding"] is not None and len(oldest["embedding"]) == DIM
    assert all(isinstance(x, float) for x in oldest["embedding"])
    assert np.allclose(oldest["embedding"], embedding)
    assert newest["embedding"] is None and newest["metadata"] == {"n": 2}


async def test_selections_newest_limit(db: Database) -> None:
    session_id = await create_chat_session(db=db)
    other = await create_chat_session(db=db)
    for n in range(15):
        await insert_text_selection(session_id, f"s{n}", db=db)
    await insert_text_selection(other, "other", db=db)
    assert [s["selected_text"] for s in await get_session_selections(session_id, db=db)] == [
        f"s{n}" for n in range(14, 4, -1)]
    assert [s["selected_text"] for s in await get_session_selections(session_id, limit=3, db=db)] == [
        "s14", "s13", "s12"]


# -- the module-level default pool -----------------------------------------------------------------------


@pytest.fixture
def no_default() -> Iterator[None]:
    """Set aside any process-wide default Database for one test and put it back afterwards."""
    previous, api._default_db = api._default_db, None
    yield
    api._default_db = previous


@pytest.fixture
async def default_database(database_url: str, db: Database, no_default: None) -> AsyncIterator[Database]:
    """Make the test database the process-wide default for one test, and close it afterwards."""
    default = init_db(database_url)
    yield default
    await close_db()


async def test_the_spec_section_runs_as_written_on_the_default_pool(default_database: Database,
                                                                    db: Database) -> None:
    from sony_rag.database import (  # the spec's import path, still served by sony_rag.database
        create_chat_session,
        get_chat_history,
        insert_chat_message,
        insert_embedding,
        search_similar_embeddings,
    )

    session_id = await create_chat_session(
        user_agent="Mozilla/5.0...",
        current_page="/products",
        metadata={"source": "widget"}
    )
    session = await get_chat_session(session_id)
    await update_chat_session(
        session_id=session_id,
        current_page="/about",
        metadata={"last_question": "shipping info"}
    )
    message_id = await insert_chat_message(
        session_id=session_id,
        role="user",
        content="What sofas are available?",
        page_context="/products"
    )
    messages = await get_chat_history(
        session_id=session_id,
        limit=50
    )
    embedding_id = await insert_embedding(
        source_type="product",
        source_id="vintage-sofa-123",
        content_chunk="Vintage leather sofa...",
        embedding=at_similarity(0.95),  # 384 dimensions
        metadata={"category": "sofas"}
    )
    embeddings_data = [
        {
            "source_type": "product",
            "source_id": "sofa-1",
            "content_chunk": "Description...",
            "embedding": at_similarity(0.8, 2),
            "metadata": {}
        },
    ]
    embedding_ids = await batch_insert_embeddings(embeddings_data)
    results = await search_similar_embeddings(
        query_embedding=axis(0),
        source_type="product",  # Optional filter
        limit=5,
        similarity_threshold=0.7
    )
    lines = [f"Content: {result['content_chunk']} Similarity: {result['similarity']:.2f}" for result in results]
    count = await delete_embeddings_by_source(
        source_type="product",
        source_id="old-product-123"
    )
    selection_id = await insert_text_selection(
        session_id=session_id,
        selected_text="free shipping on orders over $500",
        page_url="/products/sofa-123",
        embedding=axis(4)  # Optional
    )
    selections = await get_session_selections(
        session_id=session_id,
        limit=10
    )

    assert session is not None and session["metadata"] == {"source": "widget"}
    assert [m["message_id"] for m in messages] == [message_id]
    assert lines == ["Content: Vintage leather sofa... Similarity: 0.95", "Content: Description... Similarity: 0.80"]
    assert [r["embedding_id"] for r in results] == [embedding_id, *embedding_ids]
    assert count == 0
    assert [s["selection_id"] for s in selections] == [selection_id]
    final = await get_chat_session(session_id)
    assert final is not None and final["metadata"] == {"source": "widget", "last_question": "shipping info"}
    # The default pool wrote to the same database as the test's own Database.
    assert counts(db) == {"chat_sessions": 1, "chat_messages": 1, "document_embeddings": 2,
                          "user_text_selections": 1}
    assert await prune_chat_sessions(older_than="1d") == 0
    assert await delete_chat_session(session_id) is True


async def test_init_db_and_close_db(default_database: Database, database_url: str) -> None:
    assert get_db() is default_database
    assert init_db() is default_database  # one default per process
    assert get_db(default_database) is default_database
    session_id = await create_chat_session()
    assert (await get_chat_session(session_id, db=default_database)) is not None

    await close_db()
    with pytest.raises(DatabaseUnavailableError, match="closed"):
        await get_chat_session(session_id, db=default_database)
    # A later call opens a new default.
    reopened = init_db(database_url)
    assert reopened is not default_database
    assert (await get_chat_session(session_id)) is not None
    await close_db()
    await close_db()  # closing twice is harmless


def test_default_pool_survives_separate_event_loops(database_url: str, db: Database, no_default: None) -> None:
    import asyncio

    async def create() -> UUID:
        return await create_chat_session(metadata={"loop": "first"})

    async def read(session_id: UUID) -> Any:
        return await get_chat_session(session_id)

    init_db(database_url)
    try:
        session_id = asyncio.run(create())
        session = asyncio.run(read(session_id))  # a second loop: the pool of the first must not be reused
        assert session is not None and session["metadata"] == {"loop": "first"}
    finally:
        asyncio.run(close_db())


def test_every_documented_function_is_exported_from_the_package() -> None:
    for name in ("create_chat_session", "get_chat_session", "update_chat_session", "insert_chat_message",
                 "get_chat_history", "insert_embedding", "batch_insert_embeddings", "search_similar_embeddings",
                 "delete_embeddings_by_source", "insert_text_selection", "get_session_selections",
                 "delete_chat_session", "prune_chat_sessions", "init_db", "close_db"):
        assert getattr(sony_rag, name) is getattr(api, name)
        assert name in sony_rag.__all__


def test_unreachable_server_error_does_not_reveal_the_password() -> None:
    from helpers import test_settings

    db = Database("postgresql://app:hunter2-secret@127.0.0.1:1/shop", settings=test_settings(connect_retries=1))
    with pytest.raises(DatabaseUnavailableError) as raised:
        db.connect()
    message = str(raised.value)
    assert "hunter2" not in message
    assert "127.0.0.1" in message
    db.close()
