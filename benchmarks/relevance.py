"""Relevance of vector, keyword and hybrid retrieval on the shop's own labelled questions.

Ingests ``examples/data`` with the real all-MiniLM-L6-v2 embeddings (the ``local`` extra) into a fresh
database, asks every question of ``benchmarks/relevance_questions.jsonl`` in each mode, and reports recall@5
and MRR@10 per question class and overall, counting a source (product, FAQ entry, policy, page) once at the
rank of its best chunk. Prints a table and writes ``benchmarks/results/relevance.json``.

    python benchmarks/relevance.py            # real embeddings; skipped with a message without the extra
    python benchmarks/relevance.py --smoke    # CI: fake embeddings, a few questions, asserts nothing
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections import defaultdict
from pathlib import Path
from typing import Any

from langchain_core.embeddings import Embeddings

from sony_rag import Database, SonyVectorStore
from sony_rag.errors import ConfigurationError
from sony_rag.ingest import ingest_paths
from sony_rag.migrate import migrate
from sony_rag.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
QUESTIONS = ROOT / "benchmarks" / "relevance_questions.jsonl"
DATA = ROOT / "examples" / "data"
RESULTS = ROOT / "benchmarks" / "results"
MODES = ("vector", "keyword", "hybrid")
CHUNKS_FETCHED = 40  # enough chunks to see at least 10 distinct sources in every mode


def load_questions(limit: int | None = None) -> list[dict[str, Any]]:
    """Return the labelled questions (the first ``limit`` of each class when a limit is given)."""
    questions = [json.loads(line) for line in QUESTIONS.read_text(encoding="utf-8").splitlines() if line.strip()]
    if limit is None:
        return questions
    per_class: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for question in questions:
        if len(per_class[question["class"]]) < limit:
            per_class[question["class"]].append(question)
    return [q for group in per_class.values() for q in group]


def ranked_sources(store: SonyVectorStore, question: str, mode: str) -> list[str]:
    """Return the distinct source ids that ``mode`` retrieves for ``question``, best first."""
    documents = store.similarity_search(question, k=CHUNKS_FETCHED, search_mode=mode)
    seen: list[str] = []
    for document in documents:
        source_id = document.metadata.get("source_id")
        if source_id is not None and source_id not in seen:
            seen.append(source_id)
    return seen


def score(ranking: list[str], relevant: set[str]) -> tuple[float, float]:
    """Return (recall@5, reciprocal rank within the top 10) of one ranking."""
    recall = len(relevant & set(ranking[:5])) / len(relevant)
    reciprocal = next((1.0 / (rank + 1) for rank, source in enumerate(ranking[:10]) if source in relevant), 0.0)
    return recall, reciprocal


def evaluate(store: SonyVectorStore, questions: list[dict[str, Any]]) -> dict[str, dict[str, dict[str, float]]]:
    """Return ``{class: {mode: {"recall@5", "mrr@10", "questions"}}}`` including an ``overall`` class."""
    per: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for question in questions:
        relevant = set(question["relevant"])
        for mode in MODES:
            result = score(ranked_sources(store, question["question"], mode), relevant)
            per[(question["class"], mode)].append(result)
            per[("overall", mode)].append(result)
    table: dict[str, dict[str, dict[str, float]]] = defaultdict(dict)
    for (klass, mode), results in per.items():
        table[klass][mode] = {
            "recall@5": round(statistics.fmean(r for r, _ in results), 3),
            "mrr@10": round(statistics.fmean(m for _, m in results), 3),
            "questions": len(results),
        }
    return dict(table)


def print_table(table: dict[str, dict[str, dict[str, float]]]) -> None:
    """Print the table as Markdown (pasted into the README)."""
    print("| class | questions | " + " | ".join(f"{m} R@5 | {m} MRR@10" for m in MODES) + " |")
    print("|---|---:|" + "---:|" * (2 * len(MODES)))
    order = [*sorted(k for k in table if k != "overall"), "overall"]
    for klass in order:
        cells = [f"{table[klass][m]['recall@5']:.3f} | {table[klass][m]['mrr@10']:.3f}" for m in MODES]
        print(f"| {klass} | {table[klass]['vector']['questions']} | " + " | ".join(cells) + " |")


def choose_embeddings(kind: str) -> Embeddings | None:
    """Return the embeddings to evaluate with, or None (after saying why) when the real model is missing."""
    from sony_rag.embeddings import fake_embeddings, local_embeddings

    if kind == "fake":
        return fake_embeddings()
    try:
        return local_embeddings()
    except ConfigurationError as error:
        print(f"relevance: skipped, the real embeddings are not available: {error}")
        return None


def main(argv: list[str] | None = None) -> int:
    """Run the relevance evaluation and return the exit code."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="fake embeddings, 3 questions per class")
    parser.add_argument("--embeddings", choices=["local", "fake"], default=None)
    parser.add_argument("--database-url", default=None, help="default: a new embedded server in a temp dir")
    args = parser.parse_args(argv)
    embeddings = choose_embeddings(args.embeddings or ("fake" if args.smoke else "local"))
    if embeddings is None:
        return 0
    questions = load_questions(3 if args.smoke else None)
    with tempfile.TemporaryDirectory() as folder:
        settings = Settings(data_dir=Path(folder) / "pgdata", pool_min_size=1)
        with Database(args.database_url, settings=settings) as db:
            migrate(db)
            if args.database_url:
                with db.pool().connection() as conn:
                    conn.execute("TRUNCATE document_embeddings")
            ingest_paths(db, [DATA], embeddings)
            store = SonyVectorStore(embeddings, db)
            table = evaluate(store, questions)
    print_table(table)
    RESULTS.mkdir(parents=True, exist_ok=True)
    output = {"embeddings": type(embeddings).__name__, "smoke": args.smoke, "table": table}
    (RESULTS / "relevance.json").write_text(json.dumps(output, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
