"""Messages decoded from ``chat_messages`` rows, kept so that reading a conversation again decodes only new rows.

Both readers of the rows keep one: the checkpointer per saver, the chat history per ``Database`` (a history object
usually lives for one request, the conversation for many). A row is known by its session and ``seq`` and trusted
only at the version (``xmin``) it was decoded from: every UPDATE of the row, a correction made in SQL included,
changes it, so the row is read and decoded again.
"""

from __future__ import annotations

import copy
import threading
from collections import OrderedDict
from typing import Any, Final
from uuid import UUID

from langchain_core.messages import BaseMessage

# Far more than a chat widget's open conversations hold in their last turns; about 20 MB of small messages.
DEFAULT_LIMIT: Final = 20_000


class MessageCache:
    """Decoded messages of recently read sessions, by (session, seq) at one row version; thread-safe and bounded.

    The least recently read sessions go first once more than ``limit`` messages are kept.
    """

    def __init__(self, limit: int = DEFAULT_LIMIT) -> None:
        self._limit = limit
        self._threads: OrderedDict[UUID, dict[int, tuple[int, str | None, BaseMessage]]] = OrderedDict()
        self._size = 0
        self._lock = threading.Lock()

    def known(self, session_id: UUID) -> tuple[list[int], list[int]]:
        """Return the seqs and row versions of the session's cached rows."""
        with self._lock:
            rows = self._threads.get(session_id)
            if rows is None:
                return [], []
            self._threads.move_to_end(session_id)
            return list(rows), [entry[0] for entry in rows.values()]

    def get(self, session_id: UUID, seq: int, version: int) -> tuple[str | None, BaseMessage] | None:
        """Return the cached message key and message of a row at this version, or None."""
        entry = self._threads.get(session_id, {}).get(seq)
        return (entry[1], entry[2]) if entry is not None and entry[0] == version else None

    def put(self, session_id: UUID, seq: int, version: int, key: str | None, message: BaseMessage) -> None:
        """Keep the decoded message of a row (evicting the least recently read sessions when over the limit)."""
        with self._lock:
            rows = self._threads.setdefault(session_id, {})
            self._size += seq not in rows
            rows[seq] = (version, key, message)
            while self._size > self._limit and self._threads:
                _, evicted = self._threads.popitem(last=False)
                self._size -= len(evicted)


def shallow_copy(message: BaseMessage) -> BaseMessage:
    """Return a shallow copy of a message (what pydantic's ``model_copy`` makes, without its overhead)."""
    copied = object.__new__(type(message))
    object.__setattr__(copied, "__dict__", dict(message.__dict__))
    object.__setattr__(copied, "__pydantic_fields_set__", set(message.__pydantic_fields_set__))
    extra = message.__pydantic_extra__
    object.__setattr__(copied, "__pydantic_extra__", None if extra is None else dict(extra))
    private = message.__pydantic_private__
    object.__setattr__(copied, "__pydantic_private__", None if private is None else dict(private))
    return copied


def detached_copy(message: BaseMessage) -> BaseMessage:
    """Return a copy of a message that shares no mutable value with it (its dicts and lists are copied too)."""
    copied = shallow_copy(message)
    fields = copied.__dict__
    for name, value in fields.items():
        if type(value) in _CONTAINERS and value:
            fields[name] = _copied(value)
    extra = copied.__pydantic_extra__
    if extra:
        for name, value in extra.items():
            extra[name] = _copied(value)
    return copied


_CONTAINERS: Final = frozenset({dict, list})


def _copied(value: Any) -> Any:
    # A decoded row's values are JSON's (dicts, lists, str, numbers, None): copied directly, far cheaper than
    # deepcopy; anything else a message class made of them goes to deepcopy.
    kind = type(value)
    if kind is dict:
        return {key: _copied(item) for key, item in value.items()}
    if kind is list:
        return [_copied(item) for item in value]
    if value is None or kind is str or kind is int or kind is float or kind is bool:
        return value
    return copy.deepcopy(value)


__all__ = ["DEFAULT_LIMIT", "MessageCache", "detached_copy", "shallow_copy"]
