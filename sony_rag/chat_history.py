"""``SonyChatMessageHistory``: LangChain conversation memory on the documented chat tables."""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from langchain_core.chat_history import BaseChatMessageHistory
from langchain_core.messages import BaseMessage

from sony_rag import plans
from sony_rag import validation as check
from sony_rag.database import Database
from sony_rag.errors import InvalidInputError, SessionNotFoundError
from sony_rag.executor import Plan, PlanGenerator, plan
from sony_rag.json_values import loads_exact
from sony_rag.message_cache import MessageCache, detached_copy
from sony_rag.message_codec import decode_message, encode_message
from sony_rag.operations import get_db
from sony_rag.replicas import observe_position, write_position


class SonyChatMessageHistory(BaseChatMessageHistory):
    """Chat message history of one ``chat_sessions`` row, stored in ``chat_messages``.

    Setup:
        ``pip install sony-rag`` and ``sony-rag migrate`` (or ``sony_rag.migrate.migrate(db)``).

    Instantiate:
        .. code-block:: python

            from sony_rag import Database, SonyChatMessageHistory
            history = SonyChatMessageHistory(session_id, Database(), current_page="/products/sofa-123")

        ``session_id`` is a UUID (or its string). Construction checks the arguments but does no I/O.

    Missing sessions:
        Every read, write and clear needs the session row. When it is missing, ``create_session=True``
        (the default) creates it, with ``user_agent``, ``current_page`` and ``metadata`` in those columns,
        and carries on; ``create_session=False`` raises ``SessionNotFoundError``. This is decided on each
        call, sync or async alike, so a session deleted meanwhile is noticed (or re-created) too. An
        existing session keeps its columns, except that every write moves ``updated_at`` to now and
        ``current_page`` to the batch's page context (when there is one).

    Add:
        ``history.add_messages([HumanMessage("Hi"), AIMessage("Hello!")])`` writes the batch in one
        transaction, in list order; ``add_messages(msgs, page_context="/cart")`` overrides the page
        context of one batch. The ``page_context`` attribute (default: ``current_page``) is used otherwise.

    Read:
        ``history.messages`` returns the messages oldest first, in exactly the order they were added
        (also within one batch and across concurrent writers). With ``max_messages=N`` only the newest N
        rows are read from the database, however long the session is.

    Lossless:
        Every langchain-core message class comes back equal and of the same class (ids, names,
        ``additional_kwargs``, tool calls and usage included); ``role`` holds ``user``/``assistant``/
        ``system`` and ``token_usage`` the AI message's total tokens. See ``sony_rag.message_codec``.

    Clear:
        ``history.clear()`` deletes the session's messages (the session row stays).

    Read replicas:
        With ``read_urls`` on the Database, reads see every earlier write of the session through that
        Database; another process passes ``history.position`` on as ``min_position=`` (docs/scale.md).

    Async:
        ``aget_messages``, ``aadd_messages`` and ``aclear`` are native async (no thread pool).

    Use with ``RunnableWithMessageHistory``:
        .. code-block:: python

            chain_with_memory = RunnableWithMessageHistory(
                chain, lambda session_id: SonyChatMessageHistory(session_id, db),
                input_messages_key="question", history_messages_key="history",
            )
    """

    def __init__(self, session_id: str | UUID, db: Database | None = None, *, create_session: bool = True,
                 user_agent: str | None = None, current_page: str | None = None,
                 metadata: Mapping[str, Any] | None = None, max_messages: int | None = None,
                 page_context: str | None = None, min_position: str | None = None) -> None:
        """Create the history; raises InvalidInputError (or a subclass) for a bad argument, before any I/O.

        ``min_position``: reads see every write up to it (a ``position`` from another process), with replicas.
        """
        if not isinstance(create_session, bool):
            raise InvalidInputError(f"create_session must be True or False, got {create_session!r}")
        if max_messages is not None and (isinstance(max_messages, bool) or not isinstance(max_messages, int)
                                         or max_messages < 1):
            raise InvalidInputError(f"max_messages must be a positive integer or None, got {max_messages!r}")
        self._session_id = check.as_uuid(session_id, "session_id")
        self._db = get_db(db)
        self.create_session = create_session
        self.max_messages = max_messages
        self._new_session: dict[str, Any] = {
            "user_agent": check.text(user_agent, "user_agent", optional=True),
            "current_page": check.text(current_page, "current_page", optional=True),
            "metadata": check.metadata(metadata),
        }
        self.page_context = page_context if page_context is not None else self._new_session["current_page"]
        if min_position is not None:
            observe_position(self._db, self._session_id, min_position)

    @property
    def session_id(self) -> str:
        """Return the session's id as a string."""
        return str(self._session_id)

    @property
    def page_context(self) -> str | None:
        """Return the page URL recorded with each batch that names none (the session's current page)."""
        return self._page_context

    @page_context.setter
    def page_context(self, value: str | None) -> None:
        """Set the page context for later batches (e.g. per web request); raises InvalidTextError."""
        self._page_context = check.text(value, "page_context", optional=True)

    @property
    def position(self) -> str | None:
        """Return the WAL position a read must see to include this process's writes (None without replicas)."""
        return write_position(self._db, self._session_id)

    @property
    def db(self) -> Database:
        """Return the Database the history reads and writes."""
        return self._db

    # -- reading -------------------------------------------------------------------------------------

    @property
    def messages(self) -> list[BaseMessage]:  # type: ignore[override]
        """Return the messages (newest ``max_messages`` if set), oldest first; raises SessionNotFoundError."""
        messages = self._db.run(self._read_plan())
        if messages is None:
            self._db.run(self._missing_session_plan())
            return []
        return messages

    async def aget_messages(self) -> list[BaseMessage]:
        """Return the messages (newest ``max_messages`` if set), oldest first; raises SessionNotFoundError."""
        messages = await self._db.arun(self._read_plan())
        if messages is None:
            await self._db.arun(self._missing_session_plan())
            return []
        return messages

    def _read_plan(self) -> Plan[list[BaseMessage] | None]:
        return _read_messages(self._db.decoded_messages, self._session_id, self.max_messages)

    def _missing_session_plan(self) -> Plan[plans.Row | None]:
        if not self.create_session:
            raise SessionNotFoundError(f"chat session {self._session_id} does not exist")
        return plans.create_session(self._session_id, self._new_session["user_agent"],
                                    self._new_session["current_page"], self._new_session["metadata"],
                                    if_missing=True)

    # -- writing -------------------------------------------------------------------------------------

    def add_messages(self, messages: Sequence[BaseMessage], *, page_context: str | None = None) -> None:
        """Append ``messages`` in order in one transaction; raises InvalidInputError, SessionNotFoundError."""
        self._db.run(self._write_plan(messages, page_context))

    async def aadd_messages(self, messages: Sequence[BaseMessage], *,
                            page_context: str | None = None) -> None:
        """Append ``messages`` in order in one transaction; raises InvalidInputError, SessionNotFoundError."""
        await self._db.arun(self._write_plan(messages, page_context))

    def _write_plan(self, messages: Sequence[BaseMessage], page_context: str | None) -> Plan[None]:
        # Every message is encoded (and so checked) before the transaction starts: a bad one writes nothing.
        encoded = []
        for index, message in enumerate(messages):
            if not isinstance(message, BaseMessage):
                raise InvalidInputError(f"messages[{index}] is a {type(message).__name__}, not a BaseMessage")
            encoded.append(encode_message(message))
        page = check.text(page_context, "page_context", optional=True)
        return plans.add_messages(
            self._session_id, [uuid.uuid4() for _ in encoded], [row.role for row in encoded],
            [row.content for row in encoded], [row.token_usage for row in encoded],
            page if page is not None else self.page_context, [row.metadata for row in encoded],
            create_session=self._new_session if self.create_session else None,
        )

    # -- clearing ------------------------------------------------------------------------------------

    def clear(self) -> None:
        """Delete every message of the session (the session stays); raises SessionNotFoundError."""
        self._db.run(self._clear_plan())

    async def aclear(self) -> None:
        """Delete every message of the session (the session stays); raises SessionNotFoundError."""
        await self._db.arun(self._clear_plan())

    def _clear_plan(self) -> Plan[int]:
        return plans.clear_session_messages(self._session_id,
                                            create_session=self._new_session if self.create_session else None)

    def __repr__(self) -> str:
        return f"SonyChatMessageHistory(session_id={self.session_id!r}, max_messages={self.max_messages!r})"


@plan(read_only=True, replica=True, session="session_id")
def _read_messages(cache: MessageCache, session_id: UUID, limit: int | None) -> PlanGenerator[list[BaseMessage] | None]:
    """Return a session's newest ``limit`` messages, oldest first, decoding only rows ``cache`` lacks; None if the
    session is missing. A row the cache named but lost meanwhile (other reads evicted it) makes it read all again.
    """
    seqs, versions = cache.known(session_id)
    rows = yield from plans.history_if_session(session_id, limit, seqs, versions).start()
    messages = None if rows is None else _messages(cache, session_id, rows)
    if rows is not None and messages is None:
        rows = yield from plans.history_if_session(session_id, limit).start()
        messages = None if rows is None else _messages(cache, session_id, rows)
    return messages


def _messages(cache: MessageCache, session_id: UUID, rows: Sequence[Mapping[str, Any]]) -> list[BaseMessage] | None:
    """Return the rows' messages, decoding the rows that came with their columns; None if a known row was evicted.

    Callers get copies that share nothing with the cache, so changing a message changes no later read.
    """
    messages = []
    for row in rows:
        role = row["role"]
        if role is not None:
            # The metadata arrives as JSON text, parsed here (orjson: a third of json's cost per row); held by
            # nothing else, it becomes the message's fields.
            metadata = row["metadata"]
            message = decode_message(role, row["content"], None if metadata is None else loads_exact(metadata),
                                     owned=True)
            cache.put(session_id, row["seq"], row["version"], None, message)
        else:
            entry = cache.get(session_id, row["seq"], row["version"])
            if entry is None:  # dropped by other reads since this one named it as known (rare): read again
                return None
            message = entry[1]
        messages.append(detached_copy(message))
    return messages


__all__ = ["SonyChatMessageHistory"]
