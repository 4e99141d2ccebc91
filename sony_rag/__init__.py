"""sony-rag: conversation memory and filtered similarity retrieval for LangChain agents on Postgres + pgvector.

Every name below is imported on first use (PEP 562), so ``import sony_rag`` costs almost nothing and a
library user or the ``sony-rag`` command loads only what it touches: psycopg with ``Database``, LangChain
with ``SonyVectorStore``, never the agent or the embedding model unless asked for.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# Where each public name lives.
_EXPORTS: dict[str, str] = {
    "SonyChatMessageHistory": "sony_rag.chat_history",
    "SonyCheckpointer": "sony_rag.checkpointer",
    "Database": "sony_rag.database",
    **dict.fromkeys([
        "batch_insert_embeddings", "close_db", "create_chat_session", "delete_chat_session",
        "delete_embeddings_by_source", "get_chat_history", "get_chat_session", "get_db", "get_session_selections",
        "get_write_position", "init_db", "insert_chat_message", "insert_embedding", "insert_text_selection",
        "prune_chat_sessions",
        "search_similar_embeddings", "update_chat_session",
    ], "sony_rag.operations"),
    **dict.fromkeys([
        "ChecksumMismatchError", "ConfigurationError", "DatabaseError", "DatabaseUnavailableError",
        "InvalidEmbeddingError", "InvalidFilterError", "InvalidIdentifierError", "InvalidInputError",
        "InvalidMetadataError", "InvalidRoleError", "InvalidSourceTypeError", "InvalidTextError", "MigrationError",
        "NotFoundError", "QueryTimeoutError", "SchemaNotReadyError", "SessionNotFoundError", "SonyRagError",
    ], "sony_rag.errors"),
    **dict.fromkeys(["SelectionAwareRetriever", "arecord_selection", "record_selection"], "sony_rag.selections"),
    **dict.fromkeys(["Settings", "get_settings"], "sony_rag.settings"),
    "SonyVectorStore": "sony_rag.vectorstore",
}

if TYPE_CHECKING:
    from sony_rag.chat_history import SonyChatMessageHistory
    from sony_rag.checkpointer import SonyCheckpointer
    from sony_rag.database import Database
    from sony_rag.errors import (
        ChecksumMismatchError,
        ConfigurationError,
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
        MigrationError,
        NotFoundError,
        QueryTimeoutError,
        SchemaNotReadyError,
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
        get_write_position,
        init_db,
        insert_chat_message,
        insert_embedding,
        insert_text_selection,
        prune_chat_sessions,
        search_similar_embeddings,
        update_chat_session,
    )
    from sony_rag.selections import SelectionAwareRetriever, arecord_selection, record_selection
    from sony_rag.settings import Settings, get_settings
    from sony_rag.vectorstore import SonyVectorStore


def __getattr__(name: str) -> Any:
    """Return the public attribute ``name``, importing its module on first use; raises AttributeError."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sony_rag' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__() -> list[str]:
    """Return the module's attributes, the lazily imported ones included."""
    return sorted({*globals(), *_EXPORTS})


__all__ = [
    "ChecksumMismatchError",
    "ConfigurationError",
    "Database",
    "DatabaseError",
    "DatabaseUnavailableError",
    "InvalidEmbeddingError",
    "InvalidFilterError",
    "InvalidIdentifierError",
    "InvalidInputError",
    "InvalidMetadataError",
    "InvalidRoleError",
    "InvalidSourceTypeError",
    "InvalidTextError",
    "MigrationError",
    "NotFoundError",
    "QueryTimeoutError",
    "SchemaNotReadyError",
    "SelectionAwareRetriever",
    "SessionNotFoundError",
    "Settings",
    "SonyChatMessageHistory",
    "SonyCheckpointer",
    "SonyRagError",
    "SonyVectorStore",
    "arecord_selection",
    "batch_insert_embeddings",
    "close_db",
    "create_chat_session",
    "delete_chat_session",
    "delete_embeddings_by_source",
    "get_chat_history",
    "get_chat_session",
    "get_db",
    "get_session_selections",
    "get_settings",
    "get_write_position",
    "init_db",
    "insert_chat_message",
    "insert_embedding",
    "insert_text_selection",
    "prune_chat_sessions",
    "record_selection",
    "search_similar_embeddings",
    "update_chat_session",
]
