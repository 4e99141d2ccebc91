"""A shop assistant agent with memory: catalog, FAQ and policy search tools, history in Postgres.

    pip install -e '.[embedded,local,shop]'      # the shop application's extra brings langchain's create_agent
    python examples/agent.py                      # a new conversation; prints its session id
    python examples/agent.py --session ID         # continue it: the agent remembers the first run
    python examples/agent.py --session ID "Is there a cheaper one?"

The agent is LangChain's ``create_agent`` with three tools, each ``SonyVectorStore.as_retriever()`` with a
``source_type`` filter, and ``SonyCheckpointer`` as its memory (``checkpointer=``; the session id is the
``thread_id``, and every message becomes a row of ``chat_messages``). The chat model comes from
SONY_RAG_CHAT_MODEL (e.g. ``openai:gpt-4o-mini`` with OPENAI_API_KEY set and langchain-openai installed);
with none configured, sony-rag's offline answerer replies from the retrieved passages, citing them.
"""

from __future__ import annotations

import argparse
import uuid
import warnings
from pathlib import Path

from sony_rag import Database, SonyVectorStore
from sony_rag.cli import exit_without_shop_extra
from sony_rag.embeddings import get_embeddings
from sony_rag.ingest import ingest_paths
from sony_rag.migrate import migrate
from sony_shop import ShopAgent

DATA = Path(__file__).resolve().parent / "data"
FIRST_QUESTION = "Do you have a solid oak dining table that seats six?"
FOLLOW_UP = "What warranty does it come with?"


def main() -> None:
    """Run one turn of the agent in a new or resumed session and print the answer."""
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # pgserver's harmless notice
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--session", help="continue this session (printed by an earlier run)")
    parser.add_argument("question", nargs="*", help="what to ask (default: a sample question)")
    args = parser.parse_args()
    exit_without_shop_extra("examples/agent.py")  # as `sony-rag chat` does: one line naming the extra, exit 2

    embeddings = get_embeddings()
    with Database() as db:
        migrate(db)
        ingest_paths(db, [DATA], embeddings)  # idempotent: a second run finds nothing to change

        session_id = args.session or str(uuid.uuid4())
        agent = ShopAgent(SonyVectorStore(embeddings, db), session_id, page_context="/examples/agent")
        # The conversation so far is the agent's state at the thread's newest checkpoint.
        state = agent.graph.get_state(agent.config).values
        earlier = [message.text for message in state.get("messages", []) if message.type == "human"]
        if earlier:
            print(f"session {session_id}: {len(earlier)} earlier question(s), the last: {earlier[-1]!r}")
        else:
            print(f"session {session_id}: a new conversation")

        question = " ".join(args.question) or (FOLLOW_UP if earlier else FIRST_QUESTION)
        print(f"\nyou> {question}")
        reply = agent.ask(question)
        print(f"assistant> {reply.text}")
        print(f"\nretrieved: {', '.join(source['source'] for source in reply.sources[:6])}")
        print(f"\ncontinue this conversation: python examples/agent.py --session {session_id}")


if __name__ == "__main__":
    main()
