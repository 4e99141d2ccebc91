"""An LCEL RAG chain with memory (RunnableWithMessageHistory) and selection-aware retrieval, all async.

    python examples/rag_chain.py

A shopper on a sofa page highlights "Free shipping on orders over $500" and asks "Does this apply here?".
``SelectionAwareRetriever`` searches with the question blended with the session's newest selections, so
the shipping policy is found although the question names nothing; ``SonyChatMessageHistory`` keeps the
conversation, so the follow-up question sees the first exchange. The chat model comes from
SONY_RAG_CHAT_MODEL, else sony-rag's offline answerer, which quotes the passages in its prompt.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from pathlib import Path
from typing import Any

from langchain_core.output_parsers import StrOutputParser
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableConfig, RunnableLambda, RunnablePassthrough
from langchain_core.runnables.history import RunnableWithMessageHistory

from sony_rag import (
    Database,
    SelectionAwareRetriever,
    SonyChatMessageHistory,
    SonyVectorStore,
    arecord_selection,
    create_chat_session,
)
from sony_rag.agent import chat_model, format_documents
from sony_rag.embeddings import get_embeddings
from sony_rag.ingest import ingest_paths
from sony_rag.migrate import migrate

DATA = Path(__file__).resolve().parent / "data"
PAGE = "/products/hallwyl-3-seat-sofa"
SELECTION = "Free shipping on orders over $500"
QUESTIONS = ("Does this apply here?", "And how long will delivery take?")

PROMPT = ChatPromptTemplate.from_messages([
    ("system", "You are Sony Interior's shopping assistant. Answer from these passages only and cite each "
               "fact as [source_type:source_id].\n\n{context}"),
    MessagesPlaceholder("history"),
    ("human", "{question}"),
])


async def main() -> None:
    """Record a selection, then ask two questions through the chain in one session."""
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # pgserver's harmless notice
    # LangChain now points to LangGraph persistence (examples/agent.py); this example shows the classic API.
    warnings.filterwarnings("ignore", message="RunnableWithMessageHistory is deprecated")
    embeddings = get_embeddings()
    async with Database() as db:
        migrate(db)
        ingest_paths(db, [DATA], embeddings)  # idempotent: a second run finds nothing to change
        store = SonyVectorStore(embeddings, db)

        async def retrieve(inputs: dict[str, Any], config: RunnableConfig) -> str:
            # One retriever per session: the session's selections steer the search.
            session_id = config["configurable"]["session_id"]
            retriever = SelectionAwareRetriever(vector_store=store, session_id=session_id, k=4)
            return format_documents(await retriever.ainvoke(inputs["question"], config))

        chain = (RunnablePassthrough.assign(context=RunnableLambda(retrieve))
                 | PROMPT | chat_model() | StrOutputParser())
        with_memory = RunnableWithMessageHistory(
            chain, lambda session_id: SonyChatMessageHistory(session_id, db, current_page=PAGE),
            input_messages_key="question", history_messages_key="history",
        )

        session_id = await create_chat_session(current_page=PAGE, session_id=uuid.uuid4(), db=db)
        await arecord_selection(store, db, session_id, SELECTION, page_url=PAGE)
        print(f"session {session_id} on {PAGE}; the shopper highlighted: {SELECTION!r}")
        config: RunnableConfig = {"configurable": {"session_id": str(session_id)}}
        for question in QUESTIONS:
            answer = await with_memory.ainvoke({"question": question}, config)
            print(f"\nyou> {question}\nassistant> {answer}")

        stored = await SonyChatMessageHistory(session_id, db).aget_messages()
        print(f"\n{len(stored)} messages stored in session {session_id}; the first: {stored[0].text!r}")
        print(f"first source cited: {first_citation(stored[1].text)}")


def first_citation(answer: str) -> str:
    """Return the first [source_type:source_id] citation in an answer."""
    start = answer.find("[")
    return answer[start: answer.find("]", start) + 1] if start >= 0 else "(none)"


if __name__ == "__main__":
    asyncio.run(main())
