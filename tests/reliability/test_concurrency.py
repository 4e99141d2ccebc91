"""Concurrency: many shoppers writing at once, overlapping ingests, migrations started side by side."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from uuid import UUID

import psycopg
import pytest
from helpers import test_settings
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.messages import AIMessage, BaseMessage, HumanMessage
from psycopg.conninfo import make_conninfo

from sony_rag.chat_history import SonyChatMessageHistory
from sony_rag.database import Database
from sony_rag.migrate import available_migrations
from sony_rag.operations import create_chat_session, get_chat_history, insert_chat_message
from sony_rag.schema_check import check_database
from sony_rag.vectorstore import SonyVectorStore

SESSIONS, MESSAGES = 50, 20


def _content(session: int, index: int) -> str:
    return f"session {session} message {index}"


def _count(db: Database, table: str) -> int:
    # Table names come from the fixed set below, never from input.
    assert table in {"chat_sessions", "chat_messages", "document_embeddings"}
    with db.pool().connection() as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    return int(row[0]) if row else -1


async def test_fifty_sessions_of_twenty_messages_through_the_async_api(db: Database) -> None:
    session_ids = await asyncio.gather(*(create_chat_session(db=db) for _ in range(SESSIONS)))

    async def write(number: int, session_id: UUID) -> list[UUID]:
        # One shopper's messages arrive one after another; the shoppers all type at once.
        return [await insert_chat_message(session_id, "user" if index % 2 == 0 else "assistant",
                                          _content(number, index), db=db) for index in range(MESSAGES)]

    written = await asyncio.gather(*(write(number, sid) for number, sid in enumerate(session_ids)))

    assert _count(db, "chat_messages") == SESSIONS * MESSAGES  # every message stored once
    for number, (session_id, message_ids) in enumerate(zip(session_ids, written, strict=True)):
        rows = await get_chat_history(session_id, limit=None, db=db)
        assert [row["content"] for row in rows] == [_content(number, index) for index in range(MESSAGES)]
        assert [row["message_id"] for row in rows] == message_ids


def _messages(number: int) -> list[BaseMessage]:
    return [HumanMessage(_content(number, index)) if index % 2 == 0 else AIMessage(_content(number, index))
            for index in range(MESSAGES)]


async def test_fifty_sessions_of_twenty_messages_through_the_chat_history(db: Database, mode: str) -> None:
    session_ids = [str(UUID(int=random.getrandbits(128), version=4)) for _ in range(SESSIONS)]

    if mode == "async":
        async def write(number: int) -> None:
            history = SonyChatMessageHistory(session_ids[number], db)
            for message in _messages(number):
                await history.aadd_messages([message])

        await asyncio.gather(*(write(number) for number in range(SESSIONS)))
    else:
        def write_sync(number: int) -> None:
            history = SonyChatMessageHistory(session_ids[number], db)
            for message in _messages(number):
                history.add_message(message)

        with ThreadPoolExecutor(max_workers=16) as threads:
            list(threads.map(write_sync, range(SESSIONS)))

    assert _count(db, "chat_sessions") == SESSIONS  # each history created its session exactly once
    assert _count(db, "chat_messages") == SESSIONS * MESSAGES
    for number, session_id in enumerate(session_ids):
        stored = await SonyChatMessageHistory(session_id, db).aget_messages()
        assert [(type(m), m.content) for m in stored] == [(type(m), m.content) for m in _messages(number)]


async def test_four_overlapping_ingests_leave_one_row_per_id_and_the_last_write(db: Database) -> None:
    store = SonyVectorStore(DeterministicFakeEmbedding(size=384), db, source_type="product")
    writers, window, step = 4, 100, 50  # writer w writes ids [50w, 50w + 100): neighbours share 50 ids
    all_ids = {f"doc-{n}" for n in range(step * (writers - 1) + window)}
    rng = random.Random(11)

    def batch(writer: int, round_: int) -> tuple[list[str], list[str], list[dict[str, int]]]:
        numbers = list(range(step * writer, step * writer + window))
        rng.shuffle(numbers)  # each batch locks its rows in its own order unless the store sorts them
        ids = [f"doc-{n}" for n in numbers]
        return ([f"{id_} written by {writer} in round {round_}" for id_ in ids], ids,
                [{"writer": writer, "round": round_} for _ in ids])

    for round_ in range(5):
        batches = [batch(writer, round_) for writer in range(writers)]
        # A deadlock would surface here as a DatabaseError.
        await asyncio.gather(*(store.aadd_texts(texts, metadatas=metas, ids=list(ids))
                               for texts, ids, metas in batches))

        documents = await store.aget_by_ids(sorted(all_ids))
        assert sorted(str(d.id) for d in documents) == sorted(all_ids)
        assert _count(db, "document_embeddings") == len(all_ids)  # no duplicates
        winner: dict[int, int] = {}
        for document in documents:
            writer, written_round = document.metadata["writer"], document.metadata["round"]
            assert written_round == round_
            assert document.page_content == f"{document.id} written by {writer} in round {round_}"
            winner[int(str(document.id).split("-")[1])] = writer
        for left in range(writers - 1):
            shared = range(step * (left + 1), step * left + window)
            # Each batch is one transaction: whichever committed last holds every shared id, not a mix.
            assert len({winner[n] for n in shared}) == 1, f"writers {left} and {left + 1} interleaved"

    # In sequence, the last write wins for every id.
    for writer in range(writers):
        texts, ids, metas = batch(writer, 99)
        await store.aadd_texts(texts, metadatas=metas, ids=ids)
    for document in await store.aget_by_ids(sorted(all_ids)):
        number = int(str(document.id).split("-")[1])
        assert document.metadata["writer"] == min(writers - 1, number // step)


def test_concurrent_migrate_runs_apply_each_migration_once(server_url: str) -> None:
    name = f"sony_rag_migrate_race_{os.getpid()}"
    try:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{name}"')
    except psycopg.errors.InsufficientPrivilege:
        pytest.skip("the server given by TEST_DATABASE_URL does not allow CREATE DATABASE")
    url = make_conninfo(server_url, dbname=name)
    try:
        command = [sys.executable, "-m", "sony_rag", "migrate", "--json", "--database-url", url]
        runs = [subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                for _ in range(4)]
        outputs = [run.communicate(timeout=120) for run in runs]
        for run, (_, err) in zip(runs, outputs, strict=True):
            assert run.returncode == 0, err
        applied = [applied for out, _ in outputs for applied in json.loads(out)["applied"]]
        expected = [migration.name for migration in available_migrations()]
        assert sorted(applied) == sorted(expected)  # every migration applied by exactly one of the runs

        with Database(url, settings=test_settings()) as migrated:
            assert all(check.passed for check in check_database(migrated))
            with migrated.connect() as conn:
                rows = conn.execute("SELECT version, count(*) FROM sony_rag_migrations GROUP BY version").fetchall()
        assert sorted(version for version, _ in rows) == sorted(m.version for m in available_migrations())
        assert all(count == 1 for _, count in rows)
    finally:
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
