"""``SonyCheckpointer``: a LangGraph checkpointer whose conversation lives in the chat tables.

A thread is a ``chat_sessions`` row (``thread_id`` is its ``session_id``; any other string maps to a UUIDv5 of
it, kept in the session's metadata as ``langgraph_thread_id``). Each message of the root namespace's
``messages`` channel is one ``chat_messages`` row, written once through the lossless ``message_codec``; a
checkpoint keeps only *runs* of row numbers (``seq``), pairs (first, last) of rows that follow one another in the
session, so a growing conversation costs one pair per stored version instead of the whole list again, and a
checkpoint restores exactly its own list after a removal, a summary, time travel or a fork. Other channels,
versions and pending writes go to ``chat_checkpoints``, ``chat_checkpoint_blobs`` and ``chat_checkpoint_writes``
(migrations 004 and 005), keyed to the session with ``ON DELETE CASCADE``.

Every operation is a plan (no I/O) run by ``Database.run`` (sync) or ``Database.arun`` (async): one code path,
native on both sides, and safe behind transaction poolers.
"""

from __future__ import annotations

import hashlib
import json
import math
import secrets
import threading
import uuid
import weakref
from bisect import bisect_left, bisect_right
from collections import OrderedDict
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, Final
from uuid import UUID

from langchain_core.messages import BaseMessage
from langchain_core.runnables import RunnableConfig
from langgraph.checkpoint.base import (
    WRITES_IDX_MAP,
    BaseCheckpointSaver,
    ChannelVersions,
    Checkpoint,
    CheckpointMetadata,
    CheckpointTuple,
    get_checkpoint_id,
    get_serializable_checkpoint_metadata,
)
from langgraph.checkpoint.serde.base import SerializerProtocol

from sony_rag.database import Database
from sony_rag.errors import InvalidInputError
from sony_rag.executor import Plan, PlanGenerator, Together, execute, fetch, plan
from sony_rag.json_values import loads_exact
from sony_rag.message_cache import MessageCache, shallow_copy
from sony_rag.message_codec import EncodedMessage, decode_message, encode_message
from sony_rag.operations import get_db
from sony_rag.sql import checkpoints as checkpoint_sql

__all__ = ["MESSAGES_CHANNEL", "SonyCheckpointer", "message_from_row", "session_id_for_thread"]

MESSAGES_CHANNEL: Final = "messages"
# The stored type of a channel value or write kept as chat_messages rows (its blob column is NULL).
_ROWS_TYPE: Final = "sony-rag/messages"
# Where a checkpoint's body keeps the runs of its row-backed lists: {channel: [first seq, last seq, ...]}.
_RUNS_KEY: Final = "sony_rag_message_runs"
# Thread ids that are not UUIDs map to a UUIDv5 in this namespace (stable across processes and versions).
_THREAD_NAMESPACE: Final = uuid.UUID("5d0a1f0e-7c1b-4a57-9b0e-2f6f0c8b4a11")
_PRUNE_STRATEGIES: Final = ("keep_latest", "delete")

Row = dict[str, Any]


def session_id_for_thread(thread_id: object) -> UUID:
    """Return the ``chat_sessions.session_id`` of a LangGraph ``thread_id`` (itself when it is a UUID string)."""
    return _thread(thread_id)[0]


def _thread(thread_id: object) -> tuple[UUID, str | None]:
    """Return the session id of a thread and the name to remember (None when the id is the UUID's own text)."""
    if isinstance(thread_id, UUID):
        return thread_id, None
    if not isinstance(thread_id, str | int) or isinstance(thread_id, bool) or thread_id == "":
        raise InvalidInputError(f"thread_id must be a non-empty string or UUID, got {thread_id!r}")
    text = str(thread_id)
    try:
        parsed = UUID(text)
    except ValueError:
        return uuid.uuid5(_THREAD_NAMESPACE, text), text
    return (parsed, None) if str(parsed) == text else (uuid.uuid5(_THREAD_NAMESPACE, text), text)


def _thread_of(config: RunnableConfig) -> tuple[UUID, str | None, str]:
    configurable = config.get("configurable") or {}
    if "thread_id" not in configurable:
        raise InvalidInputError("the config needs configurable.thread_id (the chat session of the conversation)")
    thread_id = configurable["thread_id"]
    session_id, name = _thread(thread_id)
    return session_id, name, str(thread_id)


def _namespace(config: RunnableConfig) -> str:
    namespace = (config.get("configurable") or {}).get("checkpoint_ns", "")
    if not isinstance(namespace, str):
        raise InvalidInputError(f"checkpoint_ns must be a string, got {namespace!r}")
    return namespace


def _page_context(config: RunnableConfig) -> str | None:
    """Return the page the user is on: configurable.page_context, else the run's metadata page_context."""
    value = (config.get("configurable") or {}).get("page_context")
    if value is None:
        value = (config.get("metadata") or {}).get("page_context")
    if value is not None and not isinstance(value, str):
        raise InvalidInputError(f"page_context must be a string, got {type(value).__name__}")
    return value


# -- messages as rows: which lists qualify, their keys, and runs -----------------------------------------


def message_key(message: BaseMessage) -> str:
    """Return the row key of a message: a digest of its fields, id included (a replaced message gets a new key).

    The digest is of the fields as JSON with sorted keys, so a message read back from its row (where jsonb has
    reordered keys and artifacts are plain dicts) digests the same as the message that was written.
    (Migration 004 wrote ``<id>:<digest>``; 005 keeps the digest alone, which is the same function's value.)
    """
    fields = json.dumps([message.type, message.model_dump()], sort_keys=True, default=repr, ensure_ascii=False)
    return hashlib.blake2b(fields.encode("utf-8", "surrogatepass"), digest_size=8).hexdigest()


class _KeyCache:
    """Row keys of the message objects alive in this process that were digested or read from rows.

    A conversation's messages are the same objects from step to step, so each is digested once, not at every
    checkpoint. Keyed by object identity (LangGraph replaces a message to change it, never edits it in place),
    through weak references, so the cache keeps nothing alive; entries of messages gone are swept out whenever
    the cache has doubled since the last sweep.
    """

    def __init__(self) -> None:
        self._keys: dict[int, tuple[weakref.ref[BaseMessage], str]] = {}
        self._sweep_at = 1024

    def key(self, message: BaseMessage) -> str:
        """Return the message's row key, digesting it only the first time."""
        hit = self._keys.get(id(message))
        if hit is not None and hit[0]() is message:
            return hit[1]
        key = message_key(message)
        self.remember(message, key)
        return key

    def remember(self, message: BaseMessage, key: str) -> None:
        """Record the key of a message (read from its row, or just digested)."""
        self._keys[id(message)] = (weakref.ref(message), key)
        if len(self._keys) > self._sweep_at:
            alive = {identity: entry for identity, entry in list(self._keys.items()) if entry[0]() is not None}
            self._keys = alive
            self._sweep_at = max(1024, 2 * len(alive))


def message_from_row(row: Mapping[str, Any]) -> BaseMessage:
    """Return the message of a ``chat_messages`` row; one stored without an id gets the row's ``message_id``.

    Every message of the agent's state needs an id (``add_messages`` matches on it), and the row's own id is
    what makes a row written by the history class recognisable when the checkpointer meets it again.
    """
    message = decode_message(row["role"], row["content"], row["metadata"], owned=True)
    if message.id is None:
        message.id = str(row["message_id"])
    return message


def _as_rows(channel: str, namespace: str, value: Any) -> list[BaseMessage] | None:
    """Return ``value`` as messages to keep as rows, or None when it goes to a blob instead."""
    if channel != MESSAGES_CHANNEL or namespace != "" or not isinstance(value, list) or not value:
        return None
    if not all(isinstance(item, BaseMessage) and isinstance(item.id, str) and item.id for item in value):
        return None
    return value


def runs_of(seqs: Sequence[int], order: Mapping[int, int]) -> list[int]:
    """Return ``seqs`` as flat pairs (first, last) of rows adjacent in the session's order ``{seq: position}``."""
    runs: list[int] = []
    previous = -2
    for seq in seqs:
        position = order[seq]
        if runs and position == previous + 1:
            runs[-1] = seq
        else:
            runs.extend((seq, seq))
        previous = position
    return runs


@dataclass
class _Rows:
    """The session's message rows as a put plan saw them: key -> seq, and seq -> position in writing order."""

    seq_of: dict[str, int]
    order: dict[int, int]


@dataclass
class _NewRows:
    """Messages a put writes as rows, in list order; before the INSERT they are known by references -1, -2, ..."""

    keys: list[str]
    encoded: list[EncodedMessage]


def _store_rows(session_id: UUID, found: list[Row], messages: Sequence[BaseMessage],
                keys: Sequence[str]) -> PlanGenerator[tuple[list[int], _Rows, _NewRows] | None]:
    """Plan the rows of a messages list: return its runs, the rows and the messages to write; None if one of
    them can't be encoded.

    A part of the put plan (used with ``yield from``). ``found``: the session's rows in order, read under its
    row lock (taken by the session upsert before), so the rows between a run's first and last are exactly the
    run's messages, and rows added later come after them. Rows to write get references -1, -2, ... in list
    order, placed after the session's last row: the INSERT that writes them (with the checkpoint) numbers them
    in that order, and replaces each reference by its row's seq.
    """
    if len(set(keys)) != len(keys):
        return None  # one message twice in a list: kept whole in a blob
    rows = _Rows({row["message_key"]: row["seq"] for row in found if row["message_key"] is not None},
                 {row["seq"]: position for position, row in enumerate(found)})
    # Rows written by the history class (no key) whose message is in the list are adopted, not written again:
    # a conversation begun through SonyChatMessageHistory continues in the checkpointer without duplicates.
    adoptable = {row["adoptable"]: row["seq"] for row in reversed(found) if row["adoptable"] is not None}
    adopted = [(adoptable.pop(message.id), key) for key, message in zip(keys, messages, strict=True)
               if key not in rows.seq_of and message.id in adoptable]
    if adopted:
        yield execute(checkpoint_sql.adopt_rows(session_id, [seq for seq, _ in adopted], [key for _, key in adopted]))
        rows.seq_of.update((key, seq) for seq, key in adopted)
    return _plan_rows(rows, messages, keys, frozenset())


def _plan_rows(rows: _Rows, messages: Sequence[BaseMessage], keys: Sequence[str],
               adoptable: frozenset[str]) -> tuple[list[int], _Rows, _NewRows] | None:
    """Return the runs of a list over ``rows`` plus the rows it needs written (referenced -1, -2, ...), the
    rows, and those messages encoded; None if one can't be encoded, or (with ``adoptable``) if a message to
    write has the id of a row written without a key (adopting it needs the full read of the session)."""
    missing = [(key, message) for key, message in zip(keys, messages, strict=True) if key not in rows.seq_of]
    if adoptable and any(message.id in adoptable for _, message in missing):
        return None
    try:
        new = _NewRows([key for key, _ in missing], [encode_message(message) for _, message in missing])
    except InvalidInputError:
        return None  # a message the codec cannot keep exactly: the whole list goes to a blob
    for reference, key in enumerate(new.keys, start=1):
        rows.seq_of[key] = -reference
        rows.order[-reference] = len(rows.order)
    return runs_of([rows.seq_of[key] for key in keys], rows.order), rows, new


# A pending write of messages not yet pointed at rows: (checkpoint_id, task_id, idx, the messages' row keys).
_Write = tuple[str, str, int, list[str]]


def _pending_writes(serde: SerializerProtocol, keys: _KeyCache, pending: Sequence[Row]) -> list[_Write]:
    """Return the root-namespace writes of messages (read as blobs) that rows can stand for, with their keys."""
    found = []
    for write in pending:
        if write["checkpoint_id"] is None:
            continue
        messages = _as_rows(MESSAGES_CHANNEL, "", serde.loads_typed((write["type"], write["blob"])))
        if messages is not None:
            found.append((write["checkpoint_id"], write["task_id"], write["idx"], [keys.key(m) for m in messages]))
    return found


def _compactable(writes: Sequence[_Write], rows: _Rows) -> tuple[list[tuple[str, str, int, list[int]]],
                                                                  list[_Write]]:
    """Return the pending writes of messages that now have rows, with their runs (their blobs can go), and the
    writes that must wait.

    Writes arrive from LangGraph's background tasks in any order, so they are stored as blobs (rows are written
    by puts only, in the conversation's order); each put then points the writes whose messages it has stored at
    their rows. A write whose messages are not all rows yet stays a blob until a later put.
    """
    compacted: list[tuple[str, str, int, list[int]]] = []
    waiting: list[_Write] = []
    for write in writes:
        if all(key in rows.seq_of for key in write[3]):
            compacted.append((*write[:3], runs_of([rows.seq_of[key] for key in write[3]], rows.order)))
        elif write not in waiting:
            waiting.append(write)
    return compacted, waiting


@dataclass
class _Known:
    """A session's rows as this process's last put left them, valid while its ``updated_at`` is unchanged."""

    updated_at: Any
    rows: _Rows
    max_seq: int
    adoptable: frozenset[str]  # ids of rows written without a key (by the history class)


class _Sessions:
    """The ``_Known`` state of the sessions this process put to recently, and the pending writes of messages it
    made or saw there that no put has pointed at rows yet (bounded: the least recent sessions are dropped)."""

    def __init__(self, limit: int = 1024) -> None:
        self._limit = limit
        self._known: OrderedDict[UUID, _Known] = OrderedDict()
        self._writes: OrderedDict[UUID, list[_Write]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, session_id: UUID) -> tuple[_Known | None, list[_Write]]:
        """Return a copy of what is known of the session (or None), and its writes waiting for rows."""
        with self._lock:
            writes = list(self._writes.get(session_id, []))
            known = self._known.get(session_id)
            if known is None:
                return None, writes
            self._known.move_to_end(session_id)
            return _Known(known.updated_at, _Rows(dict(known.rows.seq_of), dict(known.rows.order)), known.max_seq,
                          known.adoptable), writes

    def set(self, session_id: UUID, known: _Known | None, waiting: Sequence[_Write], done: Sequence[_Write]) -> None:
        """Record the session's state after a put (None: forget it), the writes still waiting, and those done."""
        with self._lock:
            if known is None:
                self._known.pop(session_id, None)
            else:
                self._known[session_id] = known
                self._known.move_to_end(session_id)
            finished = {write[:3] for write in done}
            writes = [write for write in self._writes.get(session_id, []) if write[:3] not in finished]
            writes.extend(write for write in waiting if write not in writes)
            self._writes[session_id] = writes
            self._writes.move_to_end(session_id)
            for cache in (self._known, self._writes):
                while len(cache) > self._limit:
                    cache.popitem(last=False)  # type: ignore[arg-type]

    def set_writes_done(self, session_id: UUID, done: Sequence[_Write]) -> None:
        """Forget writes of the session (pointed at rows, or never stored)."""
        with self._lock:
            finished = {write[:3] for write in done}
            if session_id in self._writes:
                self._writes[session_id] = [w for w in self._writes[session_id] if w[:3] not in finished]

    def add_write(self, session_id: UUID, write: _Write) -> None:
        """Remember a pending write of messages this process makes, for the session's next put."""
        with self._lock:
            self._writes.setdefault(session_id, []).append(write)
            self._writes.move_to_end(session_id)
            while len(self._writes) > self._limit:
                self._writes.popitem(last=False)


def _settle(known: _Known, rows: _Rows, new_seqs: Sequence[int]) -> _Known:
    """Return ``known`` with the rows written by a put: references -1, -2, ... replaced by their seqs."""
    for reference, seq in enumerate(new_seqs, start=1):
        position = rows.order.pop(-reference)
        rows.order[seq] = position
    rows.seq_of = {key: (new_seqs[-seq - 1] if seq < 0 else seq) for key, seq in rows.seq_of.items()}
    known.rows = rows
    known.max_seq = max(known.max_seq, *new_seqs) if new_seqs else known.max_seq
    return known


def _outcome(result: Row, writes: Sequence[_Write]) -> tuple[list[_Write], list[_Write]]:
    """Return which of ``writes`` a put's statement pointed at rows, and which still wait (not compactable yet,
    or not committed when it ran: LangGraph stores a step's writes beside the next put)."""
    done = {(checkpoint_id, task_id, idx) for checkpoint_id, task_id, idx in result["compacted"] or []}
    return [w for w in writes if w[:3] in done], [w for w in writes if w[:3] not in done]


@dataclass
class _Stored:
    """What a put plan did: the session's rows after it (None: not known), the writes it pointed at rows, and
    the writes of messages still waiting for rows."""

    known: _Known | None
    done: list[_Write]
    waiting: list[_Write]


# -- plans -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Put:
    """What ``put`` stores, computed before any I/O."""

    session_id: UUID
    thread_name: str | None
    namespace: str
    checkpoint_id: str
    parent_id: str | None
    body: dict[str, Any]  # the checkpoint without channel values, plus the small values inline
    metadata: dict[str, Any]
    page_context: str | None
    blobs: list[tuple[str, str, str, bytes | None]]  # channel, version, type, blob
    rows: dict[str, tuple[list[BaseMessage], list[str]]]  # channel -> messages kept as rows, and their keys


def _new_messages(new: _NewRows, page_context: str | None) -> checkpoint_sql.NewMessages:
    return checkpoint_sql.NewMessages(new.keys, [e.role for e in new.encoded], [e.content for e in new.encoded],
                                      [e.token_usage for e in new.encoded], page_context,
                                      [e.metadata for e in new.encoded])


@plan(read_only=False)
def _put(serde: SerializerProtocol, keys: _KeyCache, put: _Put, writes: Sequence[_Write]) -> PlanGenerator[_Stored]:
    """Store a checkpoint: the thread's session, new message rows, new channel versions and the checkpoint;
    return what it did (the session's rows are known after it when the checkpoint has rows).

    ``writes``: pending writes of messages this process knows of; the put also reads the session's others."""
    touch = fetch(checkpoint_sql.touch_session(put.session_id, put.thread_name, put.page_context, MESSAGES_CHANNEL))
    found: list[Row] = []
    if put.rows:
        # One round trip; the second statement runs after the first took the session's row lock, with a
        # snapshot of its own (READ COMMITTED), so it sees every row a put that held the lock before wrote.
        pending, found = yield Together([touch, fetch(checkpoint_sql.message_keys(put.session_id))])
    else:
        pending = yield touch
    runs: tuple[str, list[int]] | None = None
    new = _NewRows([], [])
    rows: _Rows | None = None
    compacted: list[tuple[str, str, int, list[int]]] = []
    every: dict[tuple[str, str, int], _Write] = {}
    for channel, (messages, message_keys) in put.rows.items():  # only the root "messages" channel qualifies
        stored = yield from _store_rows(put.session_id, found, messages, message_keys)
        if stored is None:
            raise _NotRows(channel)
        runs, rows, new = (channel, stored[0]), stored[1], stored[2]
        every = {write[:3]: write for write in (*_pending_writes(serde, keys, pending), *writes)}
        compacted, _ = _compactable(list(every.values()), rows)
    result: list[Row] = yield fetch(checkpoint_sql.insert_checkpoint(
        put.session_id, put.namespace, put.checkpoint_id, put.parent_id, put.body, put.metadata, put.blobs,
        compacted, _ROWS_TYPE, _RUNS_KEY, runs, _new_messages(new, put.page_context)))
    if rows is None:
        return _Stored(None, [], list(writes))
    done, waiting = _outcome(result[0], list(every.values()))
    adopted = set(rows.seq_of.values())
    adoptable = frozenset(row["adoptable"] for row in found if row["adoptable"] is not None
                          and row["seq"] not in adopted)
    known = _Known(pending[0]["updated_at"], rows, max((row["seq"] for row in found), default=0), adoptable)
    return _Stored(_settle(known, rows, result[0]["seqs"] or []), done, waiting)


@plan(read_only=False, single_statement=True)
def _put_known(put: _Put, known: _Known, writes: Sequence[_Write]) -> PlanGenerator[_Stored | None]:
    """Store a checkpoint in one statement, trusting what this process knows of the session's rows; return the
    rows as the put left them, or None when the session changed since (then nothing was written)."""
    messages, message_keys = put.rows[MESSAGES_CHANNEL]
    guard = checkpoint_sql.Guard(put.thread_name, put.page_context, known.updated_at, len(known.rows.order),
                                 known.max_seq)
    planned = _plan_rows(known.rows, messages, message_keys, known.adoptable)
    if planned is None:
        return None
    runs, rows, new = planned
    compacted, _ = _compactable(writes, rows)
    result: list[Row] = yield fetch(checkpoint_sql.insert_checkpoint(
        put.session_id, put.namespace, put.checkpoint_id, put.parent_id, put.body, put.metadata, put.blobs,
        compacted, _ROWS_TYPE, _RUNS_KEY, (MESSAGES_CHANNEL, runs), _new_messages(new, put.page_context), guard))
    if not result[0]["ok"]:
        return None
    known.updated_at = result[0]["updated_at"]
    return _Stored(_settle(known, rows, result[0]["seqs"] or []), *_outcome(result[0], writes))


class _NotRows(Exception):
    """A messages list that cannot be kept as rows: the put is planned again with it as a blob."""

    def __init__(self, channel: str) -> None:
        super().__init__(channel)
        self.channel = channel


@plan(read_only=False, single_statement=True)
def _put_writes(session_id: UUID, thread_name: str | None, namespace: str, checkpoint_id: str, task_id: str,
                task_path: str, writes: list[tuple[int, str, str, bytes | None, list[int] | None]],
                replace: bool) -> PlanGenerator[None]:
    """Store the pending writes of a task (as blobs: the next put points those of messages at their rows)."""
    yield execute(checkpoint_sql.insert_writes(session_id, thread_name, namespace, checkpoint_id, task_id,
                                               task_path, writes, replace=replace))


@plan(read_only=True)
def _load(serde: SerializerProtocol, keys: _KeyCache, session_id: UUID | None, thread_id: str | None,
          namespace: str | None, checkpoint_id: str | None, metadata_filter: Mapping[str, Any] | None,
          before: str | None, limit: int | None) -> PlanGenerator[list[CheckpointTuple]]:
    """Return the matching checkpoints, newest first, each with its channel values and pending writes."""
    found: list[Row] = yield fetch(checkpoint_sql.select_checkpoints(session_id, namespace, checkpoint_id,
                                                                     metadata_filter, before, limit))
    if not found:
        return []
    blob_keys = [(row["session_id"], row["checkpoint_ns"], channel, str(version)) for row in found
                 for channel, version in row["checkpoint"].get("channel_versions", {}).items()
                 if channel not in row["checkpoint"].get("channel_values", {})
                 and channel not in row["checkpoint"].get(_RUNS_KEY, {})]
    blob_rows: list[Row] = (yield fetch(checkpoint_sql.select_blobs(blob_keys))) if blob_keys else []
    write_rows: list[Row] = yield fetch(checkpoint_sql.select_writes(
        [(row["session_id"], row["checkpoint_ns"], row["checkpoint_id"]) for row in found]))
    # Every run of every row-backed value, in one query.
    sessions: list[UUID] = []
    starts: list[int] = []
    ends: list[int] = []
    lists = [{"session_id": row["session_id"], "message_runs": runs, "channel": channel, "type": _ROWS_TYPE}
             for row in found
             for channel, runs in row["checkpoint"].get(_RUNS_KEY, {}).items()]
    for item in (*lists, *write_rows):
        runs = item["message_runs"]
        if runs is not None and item["type"] == _ROWS_TYPE:
            item["first_run"] = len(starts)
            for start, end in zip(runs[::2], runs[1::2], strict=True):
                sessions.append(item["session_id"])
                starts.append(start)
                ends.append(end)
    by_run: dict[int, list[Row]] = {}
    if starts:
        for message_row in (yield fetch(checkpoint_sql.select_runs(sessions, starts, ends))):
            by_run.setdefault(message_row["run"] - 1, []).append(message_row)
    decoded: dict[tuple[UUID, int], BaseMessage] = {}

    def value_of(item: Row) -> Any:
        if item["type"] != _ROWS_TYPE:
            return serde.loads_typed((item["type"], item["blob"]))
        messages: list[BaseMessage] = []
        first = item["first_run"]
        for run in range(first, first + len(item["message_runs"]) // 2):
            for message_row in by_run.get(run, []):
                key = (item["session_id"], message_row["seq"])
                if key not in decoded:
                    decoded[key] = message_from_row(message_row)
                    if message_row["message_key"] is not None:
                        keys.remember(decoded[key], message_row["message_key"])
                messages.append(decoded[key])
        return messages

    blobs = {(b["session_id"], b["checkpoint_ns"], b["channel"], b["version"]): b for b in blob_rows}
    writes: dict[tuple[UUID, str, str], list[tuple[str, str, Any]]] = {}
    for w in write_rows:
        writes.setdefault((w["session_id"], w["checkpoint_ns"], w["checkpoint_id"]), []).append(
            (w["task_id"], w["channel"], value_of(w)))
    tuples = []
    listed = iter(lists)
    for row in found:
        body = row["checkpoint"]
        values = dict(body.get("channel_values", {}))
        for channel in body.pop(_RUNS_KEY, {}):
            values[channel] = value_of(next(listed))
        for channel, version in body.get("channel_versions", {}).items():
            if channel in values:
                continue
            blob = blobs.get((row["session_id"], row["checkpoint_ns"], channel, str(version)))
            if blob is not None and blob["type"] != "empty":
                values[channel] = value_of(blob)
        thread = thread_id if thread_id is not None else (row["thread_name"] or str(row["session_id"]))
        configurable = {"thread_id": thread, "checkpoint_ns": row["checkpoint_ns"]}
        parent = row["parent_checkpoint_id"]
        tuples.append(CheckpointTuple(
            config={"configurable": {**configurable, "checkpoint_id": row["checkpoint_id"]}},
            checkpoint={**body, "id": row["checkpoint_id"], "channel_values": values},  # type: ignore[typeddict-item]
            metadata=row["metadata"],
            parent_config={"configurable": {**configurable, "checkpoint_id": parent}} if parent else None,
            pending_writes=writes.get((row["session_id"], row["checkpoint_ns"], row["checkpoint_id"]), []),
        ))
    return tuples


@plan(read_only=True)
def _load_one(serde: SerializerProtocol, keys: _KeyCache, cache: MessageCache, session_id: UUID, thread_id: str,
              namespace: str, checkpoint_id: str | None) -> PlanGenerator[CheckpointTuple | None]:
    """Return a thread's checkpoint (its newest when no id) with its values and pending writes, or None.

    One statement brings the checkpoint, its blobs, its writes and the message rows its runs cover; rows whose
    decoded message is cached come without their content.
    """
    known_seqs, known_versions = cache.known(session_id)
    found: list[Row] = yield fetch(checkpoint_sql.select_checkpoint_whole(
        session_id, namespace, checkpoint_id, _RUNS_KEY, known_seqs, known_versions))
    if not found or found[0]["part"] != 0:
        return None
    head = found[0]
    body = head["body"]
    runs_of_lists: dict[str, list[int]] = body.pop(_RUNS_KEY, {})
    blobs = {row["name"]: row for row in found if row["part"] == 1}
    write_rows = [row for row in found if row["part"] == 2]
    message_rows = [row for row in found if row["part"] == 3]
    entries: dict[int, tuple[str | None, BaseMessage]] = {}
    evicted: list[int] = []
    for row in message_rows:
        if row["fields"] is not None:
            message = message_from_row({"role": row["type"], "content": row["path"],
                                        "metadata": loads_exact(row["fields"]), "message_id": row["detail"]})
            entries[row["position"]] = (row["name"], message)
            cache.put(session_id, row["position"], row["number"], row["name"], message)
        else:
            entry = cache.get(session_id, row["position"], row["number"])
            if entry is None:
                evicted.append(row["position"])
            else:
                entries[row["position"]] = entry
    if evicted:  # dropped from the cache by other loads since the statement was planned (rare): read again
        for row in (yield fetch(checkpoint_sql.select_message_rows(session_id, evicted))):
            entries[row["seq"]] = (row["message_key"], message_from_row(row))
    seqs = sorted(entries)
    messages = [entries[seq] for seq in seqs]

    def listed(runs: Sequence[int]) -> list[BaseMessage]:
        out: list[BaseMessage] = []
        for first, last in zip(runs[::2], runs[1::2], strict=True):
            for position in range(bisect_left(seqs, first), bisect_right(seqs, last)):
                key, message = messages[position]
                copy = shallow_copy(message)
                if key is not None:
                    keys.remember(copy, key)
                out.append(copy)
        return out

    values = dict(body.get("channel_values", {}))
    for channel, runs in runs_of_lists.items():
        values[channel] = listed(runs)
    missing = []
    for channel, version in body.get("channel_versions", {}).items():
        if channel in values:
            continue
        blob = blobs.get(channel)
        if blob is not None and blob["detail"] == str(version):
            if blob["type"] != "empty":
                values[channel] = serde.loads_typed((blob["type"], blob["blob"]))
        elif isinstance(version, float) and "e" in repr(version):
            missing.append((session_id, namespace, channel, str(version)))
        # else: no value stored for this version (a channel emptied at this step), as in the checkpoint itself
    if missing:  # jsonb spells a float with an exponent differently from str(): looked up exactly (rare)
        for blob in (yield fetch(checkpoint_sql.select_blobs(missing))):
            if blob["type"] != "empty":
                values[blob["channel"]] = serde.loads_typed((blob["type"], blob["blob"]))
    pending = [(row["name"], row["detail"], listed(row["runs"]) if row["type"] == _ROWS_TYPE
                else serde.loads_typed((row["type"], row["blob"]))) for row in write_rows]
    configurable = {"thread_id": thread_id, "checkpoint_ns": namespace}
    parent = head["detail"]
    return CheckpointTuple(
        config={"configurable": {**configurable, "checkpoint_id": head["name"]}},
        checkpoint={**body, "id": head["name"], "channel_values": values},  # type: ignore[typeddict-item]
        metadata=head["metadata"],
        parent_config={"configurable": {**configurable, "checkpoint_id": parent}} if parent else None,
        pending_writes=pending,
    )


@plan(read_only=False)
def _delete_threads(session_ids: Sequence[UUID]) -> PlanGenerator[None]:
    """Delete threads' sessions: their messages, checkpoints, channel versions and writes cascade."""
    if session_ids:
        yield execute(checkpoint_sql.delete_sessions(session_ids))


@plan(read_only=False)
def _delete_runs(run_ids: Sequence[str]) -> PlanGenerator[None]:
    """Delete the checkpoints the given runs made, with their pending writes."""
    if run_ids:
        yield execute(checkpoint_sql.delete_runs(run_ids))


@plan(read_only=False)
def _keep_latest(session_ids: Sequence[UUID]) -> PlanGenerator[None]:
    """Keep only each namespace's newest checkpoint of the threads (with its writes and channel versions)."""
    if session_ids:
        for statement in checkpoint_sql.keep_latest(session_ids):
            yield execute(statement)


@plan(read_only=False)
def _copy_thread(source: UUID, target: UUID, target_name: str | None) -> PlanGenerator[None]:
    """Copy a thread's message rows (renumbered, in order), checkpoints, channel versions and writes."""
    yield execute(checkpoint_sql.upsert_session(target, target_name, None))
    old: list[Row] = yield fetch(checkpoint_sql.message_keys(source))
    new: list[Row] = (yield fetch(checkpoint_sql.copy_messages(source, target))) if old else []
    renumber = dict(zip((row["seq"] for row in old), sorted(row["seq"] for row in new), strict=True))
    checkpoints: list[Row] = yield fetch(checkpoint_sql.source_checkpoints(source))
    for row in checkpoints:
        lists = row["checkpoint"].get(_RUNS_KEY)
        if lists:
            row["checkpoint"][_RUNS_KEY] = {channel: [renumber[seq] for seq in runs] for channel, runs in lists.items()}
    if checkpoints:
        yield execute(checkpoint_sql.insert_checkpoints(target, checkpoints))
    for statement in checkpoint_sql.copy_blobs_and_writes(source, target, list(renumber), list(renumber.values())):
        yield execute(statement)


# -- the saver -----------------------------------------------------------------------------------------------


def _inline(value: Any) -> bool:
    """Return True for a value that jsonb keeps exactly (None, bool, int, finite float, text without NUL)."""
    if value is None or type(value) in (bool, int):
        return True
    if type(value) is float:
        return math.isfinite(value)
    return type(value) is str and "\x00" not in value


def _dumps_metadata(value: Any) -> str:
    # jsonb cannot hold NUL characters; LangGraph's own Postgres saver drops them the same way.
    return json.dumps(value, default=str).replace("\\u0000", "")


class SonyCheckpointer(BaseCheckpointSaver[float]):
    """LangGraph checkpointer (sync and async) on the chat tables; the conversation stays readable in SQL.

    Setup:
        ``sony-rag migrate`` (migrations 004 and 005 add the checkpoint tables).

    Use with an agent:
        .. code-block:: python

            from langchain.agents import create_agent
            from sony_rag import Database, SonyCheckpointer

            agent = create_agent(model, tools, checkpointer=SonyCheckpointer(Database()))
            agent.invoke({"messages": [("user", "Hi")]},
                         {"configurable": {"thread_id": session_id, "page_context": "/products/sofa"}})

    Threads:
        ``thread_id`` is the ``chat_sessions.session_id`` (a new thread creates its session). A thread id that
        is not a UUID maps to a UUIDv5 of it (``session_id_for_thread``). ``page_context`` (configurable or
        run metadata) fills the rows' ``page_context`` and the session's ``current_page``.

    Messages:
        Each message of the root ``messages`` channel is one ``chat_messages`` row, written once, in order,
        with ``token_usage`` from the AI message's ``usage_metadata``. A checkpoint restores exactly the list it
        had, also after ``RemoveMessage``, a summary, time travel or a fork. ``delete_thread`` and
        ``prune(strategy="delete")`` delete the session, so everything of the thread goes (cascades).

    Async:
        ``aput``, ``aput_writes``, ``aget_tuple``, ``alist`` and the rest run natively on the async pool.
    """

    def __init__(self, db: Database | None = None, *, serde: SerializerProtocol | None = None) -> None:
        """Create the saver on ``db`` (the process-wide default when None); does no I/O."""
        if db is not None and not isinstance(db, Database):
            raise InvalidInputError(f"db must be a sony_rag.Database, got {type(db).__name__}")
        super().__init__(serde=serde)
        self.db = get_db(db)
        self._keys = _KeyCache()
        self._messages = MessageCache()
        self._sessions = _Sessions()

    # -- versions ---------------------------------------------------------------------------------------

    def get_next_version(self, current: float | None, channel: None = None) -> float:
        """Return the version after ``current``: the next whole number plus a random fraction (unique per fork)."""
        number = 0 if current is None else int(float(str(current).split(".", 1)[0]))
        # A fork (time travel, then a new step) reaches the same whole number again: the fraction keeps its
        # versions apart from the original timeline's, which stay stored. Short, unlike zero-padded strings.
        return round(number + 1 + (secrets.randbelow(999_999) + 1) / 1_000_000, 6)

    # -- planning (no I/O) ------------------------------------------------------------------------------

    def _plan_put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                  new_versions: ChannelVersions, as_blob: set[str]) -> _Put:
        session_id, name, _ = _thread_of(config)
        namespace = _namespace(config)
        values = checkpoint["channel_values"]
        rows: dict[str, tuple[list[BaseMessage], list[str]]] = {}
        inline: dict[str, Any] = {}
        for channel, value in values.items():
            messages = None if channel in as_blob else _as_rows(channel, namespace, value)
            if messages is not None:
                rows[channel] = (messages, [self._keys.key(message) for message in messages])
            elif _inline(value):
                inline[channel] = value  # small values ride in the checkpoint's own row, as PostgresSaver does
        blobs: list[tuple[str, str, str, bytes | None]] = []
        for channel, version in new_versions.items():
            # A channel without a value at this version gets no row: a load finds none and leaves it out.
            if channel in values and channel not in rows and channel not in inline:
                blobs.append((channel, str(version), *self.serde.dumps_typed(values[channel])))
        # The id is the row's checkpoint_id column already: not kept twice.
        body = {key: value for key, value in checkpoint.items() if key not in ("channel_values", "id")}
        body["channel_values"] = inline
        stored_metadata = json.loads(_dumps_metadata(get_serializable_checkpoint_metadata(config, metadata)))
        return _Put(session_id, name, namespace, checkpoint["id"], get_checkpoint_id(config), body, stored_metadata,
                    _page_context(config), blobs, rows)

    def _plan_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                     task_path: str) -> tuple[Plan[None], list[_Write]]:
        """Return the plan storing a task's writes and the writes of messages the next put may point at rows."""
        session_id, name, _ = _thread_of(config)
        checkpoint_id = get_checkpoint_id(config)
        if checkpoint_id is None:
            raise InvalidInputError("put_writes needs configurable.checkpoint_id (the checkpoint the writes follow)")
        namespace = _namespace(config)
        # A write of messages that a put can later point at rows stays a blob until then (message_runs NULL);
        # any other write of the root messages channel (messages without ids) is marked at once (empty runs),
        # so puts do not read it again and again.
        stored: list[tuple[int, str, str, bytes | None, list[int] | None]] = [
            (WRITES_IDX_MAP.get(channel, idx), channel, *self.serde.dumps_typed(value),
             [] if channel == MESSAGES_CHANNEL and namespace == "" and _as_rows(channel, namespace, value) is None
             else None)
            for idx, (channel, value) in enumerate(writes)]
        replace = all(channel in WRITES_IDX_MAP for channel, _ in writes)
        _page_context(config)  # refused here like in put, so a bad one fails the run at its first write
        made: list[_Write] = []
        if namespace == "":
            for (idx, channel, *_), (_, value) in zip(stored, writes, strict=True):
                messages = _as_rows(channel, namespace, value)
                if messages is not None:
                    made.append((checkpoint_id, task_id, idx, [self._keys.key(message) for message in messages]))
        return _put_writes(session_id, name, namespace, checkpoint_id, task_id, task_path, stored, replace), made

    def _plan_get(self, config: RunnableConfig) -> Plan[CheckpointTuple | None]:
        session_id, _, thread = _thread_of(config)
        return _load_one(self.serde, self._keys, self._messages, session_id, thread, _namespace(config),
                         get_checkpoint_id(config))

    def _plan_load(self, config: RunnableConfig | None, *, filter: Mapping[str, Any] | None = None,
                   before: RunnableConfig | None = None, limit: int | None = None, latest: bool = False) -> Any:
        configurable = (config or {}).get("configurable") or {}
        session_id = thread = None
        if "thread_id" in configurable or latest:
            session_id, _, thread = _thread_of(config)  # type: ignore[arg-type]
        namespace = _namespace(config) if "checkpoint_ns" in configurable or latest else None  # type: ignore[arg-type]
        checkpoint_id = get_checkpoint_id(config) if config else None
        if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 0):
            raise InvalidInputError(f"limit must be a non-negative integer, got {limit!r}")
        return _load(self.serde, self._keys, session_id, thread, namespace, checkpoint_id, filter,
                     get_checkpoint_id(before) if before else None, 1 if latest else limit)

    # -- sync -------------------------------------------------------------------------------------------

    def get_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Return the checkpoint of ``config`` (its newest when no checkpoint_id), or None if there is none."""
        return self.db.run(self._plan_get(config))

    def list(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
             before: RunnableConfig | None = None, limit: int | None = None) -> Iterator[CheckpointTuple]:
        """Return the matching checkpoints, newest first (metadata ``filter`` matches key by key)."""
        yield from self.db.run(self._plan_load(config, filter=filter, before=before, limit=limit))

    def put(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
            new_versions: ChannelVersions) -> RunnableConfig:
        """Store a checkpoint and return its config; raises InvalidInputError for a bad config, before writing."""
        as_blob: set[str] = set()
        while True:
            put = self._plan_put(config, checkpoint, metadata, new_versions, as_blob)
            try:
                known, writes = self._sessions.get(put.session_id)
                fast = known is not None and set(put.rows) == {MESSAGES_CHANNEL}
                stored = self.db.run(_put_known(put, known, writes)) if fast else None  # type: ignore[arg-type]
                if stored is None:
                    stored = self.db.run(_put(self.serde, self._keys, put, writes))
                self._sessions.set(put.session_id, stored.known, stored.waiting, stored.done)
            except _NotRows as refused:
                as_blob.add(refused.channel)  # rolled back: nothing of the first attempt stays
                continue
            return self._stored_config(config, put)

    def put_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                   task_path: str = "") -> None:
        """Store the pending writes of a task of the checkpoint in ``config``."""
        if writes:
            planned, made = self._plan_writes(config, writes, task_id, task_path)
            with self._writes_recorded(config, made):
                self.db.run(planned)

    def delete_thread(self, thread_id: str) -> None:
        """Delete a thread: its session, messages, checkpoints and writes (a missing thread is no error)."""
        self.db.run(_delete_threads([session_id_for_thread(thread_id)]))

    def delete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints (and their writes) made by the given runs; message rows stay."""
        self.db.run(_delete_runs(_run_ids(run_ids)))

    def copy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread (messages, checkpoints, writes) to another thread id."""
        self.db.run(_copy_thread(session_id_for_thread(source_thread_id), *_thread(target_thread_id)))

    def prune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Keep each namespace's newest checkpoint (``keep_latest``) or delete the threads (``delete``)."""
        self.db.run(_prune_plan(thread_ids, strategy))

    # -- async ------------------------------------------------------------------------------------------

    async def aget_tuple(self, config: RunnableConfig) -> CheckpointTuple | None:
        """Return the checkpoint of ``config`` (see ``get_tuple``), on the async pool."""
        return await self.db.arun(self._plan_get(config))

    async def alist(self, config: RunnableConfig | None, *, filter: dict[str, Any] | None = None,
                    before: RunnableConfig | None = None, limit: int | None = None) -> AsyncIterator[CheckpointTuple]:
        """Return the matching checkpoints, newest first (see ``list``), on the async pool."""
        for item in await self.db.arun(self._plan_load(config, filter=filter, before=before, limit=limit)):
            yield item

    async def aput(self, config: RunnableConfig, checkpoint: Checkpoint, metadata: CheckpointMetadata,
                   new_versions: ChannelVersions) -> RunnableConfig:
        """Store a checkpoint and return its config (see ``put``), on the async pool."""
        as_blob: set[str] = set()
        while True:
            put = self._plan_put(config, checkpoint, metadata, new_versions, as_blob)
            try:
                known, writes = self._sessions.get(put.session_id)
                fast = known is not None and set(put.rows) == {MESSAGES_CHANNEL}
                stored = await self.db.arun(_put_known(put, known, writes)) if fast else None  # type: ignore[arg-type]
                if stored is None:
                    stored = await self.db.arun(_put(self.serde, self._keys, put, writes))
                self._sessions.set(put.session_id, stored.known, stored.waiting, stored.done)
            except _NotRows as refused:
                as_blob.add(refused.channel)
                continue
            return self._stored_config(config, put)

    async def aput_writes(self, config: RunnableConfig, writes: Sequence[tuple[str, Any]], task_id: str,
                          task_path: str = "") -> None:
        """Store the pending writes of a task (see ``put_writes``), on the async pool."""
        if writes:
            planned, made = self._plan_writes(config, writes, task_id, task_path)
            with self._writes_recorded(config, made):
                await self.db.arun(planned)

    async def adelete_thread(self, thread_id: str) -> None:
        """Delete a thread completely (see ``delete_thread``), on the async pool."""
        await self.db.arun(_delete_threads([session_id_for_thread(thread_id)]))

    async def adelete_for_runs(self, run_ids: Sequence[str]) -> None:
        """Delete the checkpoints made by the given runs (see ``delete_for_runs``), on the async pool."""
        await self.db.arun(_delete_runs(_run_ids(run_ids)))

    async def acopy_thread(self, source_thread_id: str, target_thread_id: str) -> None:
        """Copy a thread to another thread id (see ``copy_thread``), on the async pool."""
        await self.db.arun(_copy_thread(session_id_for_thread(source_thread_id), *_thread(target_thread_id)))

    async def aprune(self, thread_ids: Sequence[str], *, strategy: str = "keep_latest") -> None:
        """Prune threads (see ``prune``), on the async pool."""
        await self.db.arun(_prune_plan(thread_ids, strategy))

    # -- helpers ----------------------------------------------------------------------------------------

    @contextmanager
    def _writes_recorded(self, config: RunnableConfig, made: Sequence[_Write]) -> Iterator[None]:
        """Record writes of messages for the thread's next put before they are stored (a put running beside
        the INSERT then tries them too), and forget them if storing fails."""
        session_id = session_id_for_thread((config.get("configurable") or {})["thread_id"])
        for write in made:
            self._sessions.add_write(session_id, write)
        try:
            yield
        except BaseException:
            self._sessions.set_writes_done(session_id, made)
            raise

    @staticmethod
    def _stored_config(config: RunnableConfig, put: _Put) -> RunnableConfig:
        thread_id = (config.get("configurable") or {})["thread_id"]
        return {"configurable": {"thread_id": thread_id, "checkpoint_ns": put.namespace,
                                 "checkpoint_id": put.checkpoint_id}}


def _run_ids(run_ids: Sequence[str]) -> list[str]:
    if isinstance(run_ids, str):
        raise InvalidInputError("run_ids must be a list of run ids, not one string")
    return [str(run_id) for run_id in run_ids]


def _prune_plan(thread_ids: Sequence[str], strategy: str) -> Any:
    if isinstance(thread_ids, str):
        raise InvalidInputError("thread_ids must be a list of thread ids, not one string")
    if strategy not in _PRUNE_STRATEGIES:
        raise InvalidInputError(f"strategy must be one of {_PRUNE_STRATEGIES}, got {strategy!r}")
    session_ids = sorted({session_id_for_thread(thread_id) for thread_id in thread_ids})
    return _keep_latest(session_ids) if strategy == "keep_latest" else _delete_threads(session_ids)

