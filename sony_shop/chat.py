"""The conversation behind ``sony-rag chat``: the shop agent on a new or resumed session."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING
from uuid import UUID

from sony_rag import plans
from sony_rag import validation as check
from sony_rag.database import Database
from sony_rag.errors import SessionNotFoundError

if TYPE_CHECKING:
    from langchain_core.embeddings import Embeddings
    from langchain_core.language_models import BaseChatModel

    from sony_shop.agent import AgentReply, ShopAgent


@dataclass
class Conversation:
    """An open chat: the agent with its session; ``ask`` runs one turn and stores it."""

    session_id: str
    resumed: bool
    earlier_messages: int
    agent: ShopAgent

    @property
    def offline(self) -> bool:
        """Return True when the offline answerer writes the replies."""
        return self.agent.offline

    def ask(self, question: str) -> AgentReply:
        """Answer ``question`` and store the turn; return the ``AgentReply``."""
        return self.agent.ask(question)


def open_chat(db: Database, *, embeddings: Embeddings, session_id: str | None = None, page: str | None = None,
              model: BaseChatModel | None = None, k: int = 4) -> Conversation:
    """Return a conversation with the shop agent: a new session, or ``session_id`` resumed.

    Raises InvalidIdentifierError for a malformed id, SessionNotFoundError for an unknown one, and
    ConfigurationError when the shop extra (langchain) is not installed.
    """
    from sony_rag.vectorstore import SonyVectorStore
    from sony_shop.agent import ShopAgent

    page = check.text(page, "page", optional=True)
    earlier = 0
    if session_id is not None:
        existing = check.as_uuid(session_id, "session id")
        if db.run(plans.get_session(existing)) is None:
            raise SessionNotFoundError(f"chat session {existing} does not exist (omit --session to start one)")
        earlier = len(db.run(plans.history(existing, None)))
        chosen: UUID = existing
    else:
        chosen = uuid.uuid4()
    agent = ShopAgent(SonyVectorStore(embeddings, db), chosen, model=model, k=k, page_context=page,
                      user_agent="sony-rag chat")
    return Conversation(session_id=str(chosen), resumed=session_id is not None, earlier_messages=earlier,
                        agent=agent)


__all__ = ["Conversation", "open_chat"]
