"""Filtered search by selectivity: sony-rag's plan choice beside a bare exact filtered scan and a bare ANN query,
IVFFlat and HNSW, filters on source_type and on a metadata key matching 0.1 % to 100 % of the rows.

The data is shaped like real embeddings: clusters in a 24-dimensional latent space lifted to 384-d by a fixed
random projection, plus a little isotropic noise (random 384-d vectors defeat every ANN index and measure
nothing). Run it once per pgvector version (each venv has its own embedded server, see docs/pgvector.md):

    python -m benchmarks.selectivity [--rows 100000] [--queries 50] [--smoke]

``python -m benchmarks`` runs it too (last: it loads data of its own, and leaves the table empty with the
migration's index). Each cell times at most ``MAX_QUERIES`` queries: 18 cells of three contenders each.
"""

from __future__ import annotations

import itertools
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from psycopg import sql
from psycopg.types.json import Jsonb

from benchmarks.common import (
    COPY_COLUMNS,
    COPY_TYPES,
    DIMENSIONS,
    Bench,
    Dataset,
    K,
    Report,
    VectorsOnly,
    percentiles,
    run_standalone,
)
from sony_rag import SonyVectorStore
from sony_rag.indexes import rebuild_vector_index
from sony_rag.sql import Params
from sony_rag.sql.filters import compile_filter
from sony_rag.vector_index import ann_settings

COLUMNS = ["pgvector", "index", "filter", "matching", "timed", "sony p50 ms", "exact p50 ms", "ann p50 ms",
           "its plan ms", "ann recall", "sony recall", "sony rows min", "x faster bare"]
LATENT = 24
MAX_QUERIES = 50
# After its first round, a cell's queries are timed again while the next round fits in this budget: the p50 of 30
# one-millisecond searches moved by 0.2-0.4 ms between runs of the same code on this machine, more than the
# targets' margin, and a round of them costs 0.1-0.4 s.
ROUND_BUDGET_S = 3.0
MAX_ROUNDS = 10
PLAN_QUERIES = 10  # EXPLAIN ANALYZE runs of the faster bare query, for the server's time of its plan
# source_type shares: policy 0.1 %, faq 0.9 %, page_content 9 %, product 90 % (the four allowed types), so
# $in over the rarest ones gives 0.1, 1, 10 and 100 %; 50 % has no source_type filter and is left out.
TYPE_FILTERS: dict[str, dict[str, Any]] = {
    "0.1 %": {"source_type": "policy"},
    "1 %": {"source_type": {"$in": ["policy", "faq"]}},
    "10 %": {"source_type": {"$in": ["policy", "faq", "page_content"]}},
    "100 %": {"source_type": {"$in": ["policy", "faq", "page_content", "product"]}},
}
# metadata "r" is a uniform integer in [0, 1000).
META_FILTERS: dict[str, dict[str, Any]] = {
    share: {"r": {"$lt": bound}} for share, bound in (("0.1 %", 1), ("1 %", 10), ("10 %", 100), ("50 %", 500),
                                                      ("100 %", 1000))
}


def make_rows(rows: int, queries: int, seed: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32],
                                                           list[str], npt.NDArray[np.int64]]:
    """Return vectors, queries, source types and the metadata key ``r`` for ``rows`` rows."""
    rng = np.random.default_rng(seed)
    lift = rng.standard_normal((LATENT, DIMENSIONS)).astype(np.float32)
    centres = rng.standard_normal((max(8, rows // 500), LATENT)).astype(np.float32) * 3

    def sample(count: int) -> npt.NDArray[np.float32]:
        latent = centres[rng.integers(0, len(centres), count)] + rng.standard_normal((count, LATENT)).astype(
            np.float32)
        vectors = latent @ lift + 0.5 * rng.standard_normal((count, DIMENSIONS)).astype(np.float32)
        return (vectors / np.linalg.norm(vectors, axis=1, keepdims=True)).astype(np.float32)

    draw = rng.random(rows)
    types = ["policy" if u < 0.001 else "faq" if u < 0.01 else "page_content" if u < 0.1 else "product"
             for u in draw]
    return sample(rows), sample(queries), types, rng.integers(0, 1000, rows)


def matches(flt: dict[str, Any], types: list[str], r: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Return the row indexes ``flt`` matches (the two filter shapes this benchmark uses)."""
    if "r" in flt:
        return np.flatnonzero(r < flt["r"]["$lt"])
    wanted = flt["source_type"]
    allowed = {wanted} if isinstance(wanted, str) else set(wanted["$in"])
    return np.asarray([i for i, kind in enumerate(types) if kind in allowed], dtype=np.int64)


def balanced_orders(names: Sequence[str]) -> list[list[str]]:
    """Return the turns' orders: every permutation of ``names``, so each contender runs a query first as often
    as any other, and right after each other one as often as after any other.

    What ran just before a query changes its time. Above all, the same query just run by another contender:
    the HNSW graph walk it repeats is then in the CPU caches (an index search 1.4x faster second than first).
    Then a heavy one: an exact scan of the whole table evicts what the next query's code runs from. A plain
    rotation of three contenders had sony-rag run right after the bare ANN query in 2 of 3 turns.
    """
    return [list(order) for order in itertools.permutations(names)]


def timed_runs(contenders: dict[str, Callable[[npt.NDArray[np.float32]], list[int]]],
               queries: npt.NDArray[np.float32], truth: list[list[int]], *,
               budget_s: float = ROUND_BUDGET_S) -> dict[str, tuple[float, float, int, int]]:
    """Return each contender's p50 ms, mean recall@10, fewest rows returned and searches timed.

    The contenders take turns query by query (the load of a shared machine falls on all of them alike), in
    ``balanced_orders``: each goes first, and after each other one, equally often. The queries are timed in
    rounds: after the first, more while the next fits in ``budget_s`` (at most ``MAX_ROUNDS`` in all), so a cell
    of millisecond searches gets the samples a stable p50 needs. Every round has every contender: what runs
    between two searches (a 200 ms exact scan evicts the CPU caches) is part of what is measured.
    """
    names = list(contenders)
    orders = balanced_orders(names)
    for name in names:
        contenders[name](queries[0])
    durations: dict[str, list[float]] = {name: [] for name in names}
    recalls: dict[str, list[float]] = {name: [] for name in names}
    fewest = dict.fromkeys(names, K)
    extra, rounds = 0.0, 0
    while rounds < MAX_ROUNDS:
        began_round = time.perf_counter()
        for turn, (query, expected) in enumerate(zip(queries, truth, strict=True)):
            for name in orders[(rounds * len(queries) + turn) % len(orders)]:
                begun = time.perf_counter()
                found = contenders[name](query)
                durations[name].append(time.perf_counter() - begun)
                recalls[name].append(len(set(found) & set(expected)) / max(1, min(K, len(expected))))
                fewest[name] = min(fewest[name], len(found))
        took = time.perf_counter() - began_round
        extra += took if rounds else 0.0
        rounds += 1
        if extra + took > budget_s:
            break
    return {name: (percentiles(durations[name])[0], float(np.mean(recalls[name])), fewest[name],
                   len(durations[name])) for name in names}


class BareQuery:
    """A bare psycopg search with sony-rag's filter SQL on a dedicated connection: a fenced exact scan, or the
    ANN query with ``settings``. Called with a query vector, it returns the row indexes found."""

    def __init__(self, bench: Bench, flt: dict[str, Any], exact: bool, settings: dict[str, str]) -> None:
        """Open the connection and compose the statement (nothing is timed here)."""
        self.conn = bench.connect()
        for name, value in settings.items():
            self.conn.execute("SELECT set_config(%s, %s, false)", (name, value))
        p = Params()
        q = p.add(None)
        where = compile_filter(flt, p)
        # The columns a search answer is made of (a LangChain Document's), as the other benchmarks' bare
        # queries return whole rows: a bare query of ids alone would not answer the question.
        if exact:
            query = sql.SQL("SELECT embedding_id, document_id, content_chunk, metadata, distance FROM ("
                            "SELECT embedding_id, document_id, content_chunk, metadata, embedding <=> {q} AS distance "
                            "FROM document_embeddings WHERE {where} OFFSET 0) AS d ORDER BY distance LIMIT {k}")
        else:
            query = sql.SQL("SELECT embedding_id, document_id, content_chunk, metadata, embedding <=> {q} AS distance "
                            "FROM document_embeddings WHERE {where} ORDER BY embedding <=> {q} LIMIT {k}")
        self.statement = query.format(q=q, where=where, k=sql.Literal(K))
        self.params = p.values
        self.vector_name = next(iter(p.values))

    def __call__(self, vector: npt.NDArray[np.float32]) -> list[int]:
        """Return the row indexes the statement finds for ``vector``, nearest first."""
        return [Dataset.index_of(row[0]) for row in
                self.conn.execute(self.statement, {**self.params, self.vector_name: vector}).fetchall()]

    def server_ms(self, vectors: npt.NDArray[np.float32]) -> float:
        """Return the median time the server takes to plan and run the statement (EXPLAIN ANALYZE), in ms.

        What the issue calls the time a plan takes: a 0.2 ms plan's round trip measures 0.6-1.4 ms from the
        client, by what ran just before it.
        """
        explain = sql.SQL("EXPLAIN (ANALYZE, TIMING OFF, SUMMARY, FORMAT JSON) ") + self.statement
        times = []
        for vector in vectors:
            row = self.conn.execute(explain, {**self.params, self.vector_name: vector}).fetchone()
            assert row is not None
            summary = row[0][0]  # FORMAT JSON: a list of one plan
            times.append(float(summary["Planning Time"]) + float(summary["Execution Time"]))
        return float(np.median(times))


def run(bench: Bench) -> Report:
    """Measure every (index, filter) pair and return the report; leave the table empty with the migration's index."""
    try:
        return measure(bench)
    finally:
        # The data here is not the shared data set: the next benchmark must load its own.
        bench.truncate()
        rebuild_vector_index(bench.db, method="ivfflat", lists=100)
        bench.index, bench.index_reports = "migration", {}


def measure(bench: Bench) -> Report:
    """Load this benchmark's rows, measure every (index, filter) pair and return the report."""
    options = bench.options
    query_count = min(options.queries, MAX_QUERIES)
    vectors, queries, types, r = make_rows(options.rows, query_count, options.seed)
    bench.truncate()
    with bench.connect() as conn, conn.cursor() as cursor:
        with cursor.copy(f"COPY document_embeddings ({', '.join(COPY_COLUMNS)}) FROM STDIN WITH (FORMAT BINARY)"
                         ) as copy:
            copy.set_types(list(COPY_TYPES))
            for i in range(options.rows):
                copy.write_row((Dataset.row_id(i), types[i], f"src-{i}", f"chunk {i}", vectors[i],
                                Jsonb({"r": int(r[i])})))
        conn.execute("VACUUM ANALYZE document_embeddings")
    bench.loaded = True
    version = ".".join(map(str, bench.db.capabilities().pgvector_version))
    report = Report("selectivity", f"Filtered search by selectivity, k=10, {options.rows:,} rows (clustered, "
                                   f"{LATENT}-d latent), {query_count} queries, pgvector {version}", COLUMNS)
    store = SonyVectorStore(VectorsOnly(), bench.db)
    filters = [("source_type", share, flt) for share, flt in TYPE_FILTERS.items()]
    filters += [("metadata r", share, flt) for share, flt in META_FILTERS.items()]
    for method in ("ivfflat", "hnsw"):
        bench.index = None
        build = bench.ensure_index(method)
        settings = ann_settings(bench.db.capabilities(), K)
        report.notes.append(f"{method}: lists={build.lists} m={build.m} built in {build.seconds:.1f} s; "
                            f"settings {settings}")
        for kind, share, flt in filters:
            among = matches(flt, types, r)
            truth = [list(among[np.argsort(1.0 - vectors[among] @ query, kind="stable")[:K]]) for query in queries]

            def sony(query: npt.NDArray[np.float32], flt: dict[str, Any] = flt) -> list[int]:
                return [Dataset.index_of(str(d.id)) for d, _ in store.similarity_search_with_score_by_vector(
                    query, k=K, filter=flt)]

            exact, ann = BareQuery(bench, flt, True, {}), BareQuery(bench, flt, False, settings)
            timings = timed_runs({"sony": sony, "exact": exact, "ann": ann}, queries, truth,
                                 budget_s=0.0 if options.smoke else ROUND_BUDGET_S)  # smoke: one round
            sony_p50, sony_recall, sony_rows, timed = timings["sony"]
            exact_p50 = timings["exact"][0]
            ann_p50, ann_recall, ann_rows, _ = timings["ann"]
            ann_ok = ann_rows == min(K, len(among)) and ann_recall >= 0.95
            faster = ann if ann_ok and ann_p50 < exact_p50 else exact
            best = ann_p50 if faster is ann else exact_p50
            plan_ms = faster.server_ms(queries[:PLAN_QUERIES])
            ratio = sony_p50 / best
            report.add(**{"pgvector": version, "index": method, "filter": f"{share} {kind}",
                          "matching": len(among), "timed": timed, "sony p50 ms": sony_p50, "exact p50 ms": exact_p50,
                          "ann p50 ms": ann_p50 if ann_ok else None, "its plan ms": plan_ms,
                          "ann recall": ann_recall, "sony recall": sony_recall, "sony rows min": sony_rows,
                          "x faster bare": ratio})
            label = f"{method} {share} {kind}"
            report.target(f"{label} recall@10", sony_recall, ">= 0.95", sony_recall >= 0.95)
            # The target: 1.2x the faster bare query, plus at most 0.5 ms of client cost where that
            # query's plan takes under a millisecond (on the server).
            met = sony_p50 <= 1.2 * best + (0.5 if plan_ms < 1.0 else 0.0)
            report.target(f"{label} p50 vs faster bare", ratio, "<= 1.2x (+0.5 ms where its plan < 1 ms)", met)
    report.notes.append(f"'timed': searches timed per contender: one round of the queries, then more while the next "
                        f"fits in {ROUND_BUDGET_S:g} s (at most {MAX_ROUNDS} in all).")
    report.notes.append("'its plan ms': the server's planning and execution time (EXPLAIN ANALYZE, median of "
                        f"{PLAN_QUERIES} queries) of the faster bare query, which decides the +0.5 ms allowance. "
                        "The contenders take turns in every order in turn, so each runs a query first, and "
                        "right after each other one, equally often.")
    report.notes.append("'ann p50' is blank where the bare ANN query returned fewer than 10 rows or recall "
                        "< 0.95 (it does not count then). The bare queries use sony-rag's own filter SQL and, "
                        "for ANN, the settings sony-rag sets; they return the columns a Document is made of "
                        "(id, document id, content, metadata) and the distance, one dedicated connection each. "
                        "The machine is shared by other jobs: treat "
                        "ratios as noisy.")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the selectivity benchmark alone; return the exit code."""
    return run_standalone("selectivity", run, (__doc__ or "").splitlines()[0], argv)


if __name__ == "__main__":
    sys.exit(main())
