"""Sony Interior's shop assistant, an application built on the ``sony_rag`` library.

``pip install 'sony-rag[shop]'`` brings what it needs beyond the library (``langchain``: ``create_agent`` and
``init_chat_model``). It holds the agent and its system prompt (``sony_shop.agent``), the offline answerer, the
conversation of ``sony-rag chat`` (``sony_shop.chat``) and the catalog's record shapes for ``sony-rag ingest``
(``sony_shop.records``). ``sony_rag`` never imports this package; importing it is light, each name loads its
module on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from sony_shop.agent import (
        INSTALL_HINT,
        SYSTEM_PROMPT,
        AgentReply,
        OfflineAnswerer,
        ShopAgent,
        chat_model,
        format_documents,
        search_tools,
    )
    from sony_shop.chat import Conversation, open_chat

_EXPORTS = {
    "INSTALL_HINT": "sony_shop.agent", "SYSTEM_PROMPT": "sony_shop.agent", "AgentReply": "sony_shop.agent",
    "OfflineAnswerer": "sony_shop.agent", "ShopAgent": "sony_shop.agent", "chat_model": "sony_shop.agent",
    "format_documents": "sony_shop.agent", "search_tools": "sony_shop.agent",
    "Conversation": "sony_shop.chat", "open_chat": "sony_shop.chat",
}


def __getattr__(name: str) -> Any:
    """Return an exported name, importing its module on first use; raises AttributeError for others."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'sony_shop' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


__all__ = ["INSTALL_HINT", "SYSTEM_PROMPT", "AgentReply", "Conversation", "OfflineAnswerer", "ShopAgent",
           "chat_model", "format_documents", "open_chat", "search_tools"]
