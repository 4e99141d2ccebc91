"""Row types returned by the documented operations (plain dicts, typed) and the allowed enum values."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final, Literal, TypedDict
from uuid import UUID

Role = Literal["user", "assistant", "system"]
SourceType = Literal["product", "page_content", "faq", "policy"]

ROLES: Final[frozenset[str]] = frozenset({"user", "assistant", "system"})
SOURCE_TYPES: Final[frozenset[str]] = frozenset({"product", "page_content", "faq", "policy"})
EMBEDDING_DIMENSIONS: Final[int] = 384


class ChatSession(TypedDict):
    """A row of chat_sessions."""

    session_id: UUID
    created_at: datetime
    updated_at: datetime
    user_agent: str | None
    current_page: str | None
    metadata: dict[str, Any]


class ChatMessage(TypedDict):
    """A row of chat_messages (``seq`` is the insertion order within the database)."""

    message_id: UUID
    session_id: UUID
    role: Role
    content: str
    created_at: datetime
    token_usage: int | None
    page_context: str | None
    metadata: dict[str, Any]
    seq: int


class EmbeddingMatch(TypedDict):
    """A row of document_embeddings returned by a search, with its cosine ``similarity`` (1 - distance)."""

    embedding_id: UUID
    source_type: SourceType
    source_id: str | None
    content_chunk: str
    metadata: dict[str, Any]
    created_at: datetime
    updated_at: datetime
    similarity: float


class EmbeddingInput(TypedDict, total=False):
    """One item of ``batch_insert_embeddings``: source_type, content_chunk and embedding are required."""

    source_type: str
    source_id: str | None
    content_chunk: str
    embedding: Any
    metadata: dict[str, Any] | None


class TextSelection(TypedDict):
    """A row of user_text_selections (``embedding`` as a list of floats, or None)."""

    selection_id: UUID
    session_id: UUID
    selected_text: str
    page_url: str | None
    created_at: datetime
    embedding: list[float] | None
    metadata: dict[str, Any]
