"""Embeddings: model load, throughput at batch 64 and one-query latency of sony-rag's numpy runtime
(``SONY_RAG_EMBEDDINGS=local``) beside sentence-transformers on the same machine, and how close the vectors are.

    python -m benchmarks.embeddings [--rounds 5] [--smoke]

The texts are the sample catalog's chunks (examples/data, as ingest makes them), repeated to fill the
batches. The two runtimes take turns, round after round, so that a busy machine slows both alike; the
table gives each one's median and best rate, and the ratio of the medians. sentence-transformers is
measured only where it is installed (``pip install 'sony-rag[st]'``); without it its rows say why.
Needs no database. Writes benchmarks/results/embeddings.json.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.common import RESULTS, Bench, Report, why_not

COLUMNS = ["runtime", "load s", "fresh process s", "texts/s median", "texts/s best", "query p50 ms", "vs ST"]
DATA = Path(__file__).resolve().parents[1] / "examples" / "data"
BATCH = 64
LOAD_TARGET_S = 1.0
THROUGHPUT_TARGET = 0.9

_FRESH = """
import sys, time
started = time.perf_counter()
from sony_rag import embeddings
model = getattr(embeddings, sys.argv[1])()
model.embed_query("warm")
print(time.perf_counter() - started)
"""


@dataclass(frozen=True)
class Sizes:
    """How much work one run does."""

    texts: int = 512
    rounds: int = 5
    queries: int = 30


SMOKE = Sizes(texts=64, rounds=1, queries=5)


def catalog_texts(count: int) -> list[str]:
    """Return ``count`` texts: the sample catalog's chunks, repeated as needed."""
    from sony_rag.ingest import read_sources

    sources, _, _ = read_sources([DATA], "benchmark")
    chunks = [chunk for source in sources for chunk in source.chunks]
    return (chunks * (count // len(chunks) + 1))[:count]


def fresh_process_seconds(loader: str) -> float:
    """Return the seconds a new Python process takes to import sony-rag, load the model and embed one text."""
    result = subprocess.run([sys.executable, "-c", _FRESH, loader], capture_output=True, text=True, timeout=300,
                            check=True)
    return float(result.stdout.strip().splitlines()[-1])


def query_p50_ms(embed: Callable[[str], Any], count: int) -> float:
    """Return the median milliseconds to embed one short query."""
    durations = []
    for index in range(count):
        started = time.perf_counter()
        embed(f"a walnut sideboard with brass handles, size {index}")
        durations.append(time.perf_counter() - started)
    return statistics.median(durations) * 1000


def measure(sizes: Sizes, smoke: bool) -> Report:
    """Run every measurement and return the report (rows, targets and notes)."""
    report = Report("embeddings", f"Embeddings, all-MiniLM-L6-v2 on CPU, batch {BATCH}, {sizes.texts} catalog "
                                  f"chunks, {sizes.rounds} alternating round(s)", list(COLUMNS))
    try:
        from sony_rag.embeddings import local_model_path
        from sony_rag.minilm import MiniLM

        path = local_model_path()
    except Exception as error:
        report.notes.append(f"local runtime not installed, nothing measured: {why_not(error)}")
        return report
    texts = catalog_texts(sizes.texts)
    started = time.perf_counter()
    ours = MiniLM(path)
    ours_load = time.perf_counter() - started
    runtimes: dict[str, Callable[[list[str]], np.ndarray[Any, Any]]] = {
        "sony-rag local (numpy)": lambda batch: ours.encode(batch, batch_size=BATCH)}
    loads = {"sony-rag local (numpy)": ours_load}
    fresh = {"sony-rag local (numpy)": fresh_process_seconds("local_embeddings")}
    st_name = "sentence-transformers (torch)"
    try:
        os.environ.setdefault("HF_HUB_OFFLINE", "1")
        started = time.perf_counter()
        from sentence_transformers import SentenceTransformer

        st = SentenceTransformer(path, device="cpu", local_files_only=True)
        loads[st_name] = time.perf_counter() - started
        runtimes[st_name] = lambda batch: st.encode(batch, batch_size=BATCH, normalize_embeddings=True,
                                                     convert_to_numpy=True, show_progress_bar=False)
        fresh[st_name] = fresh_process_seconds("sentence_transformer_embeddings")
    except Exception as error:
        report.notes.append(f"sentence-transformers not measured: {why_not(error)}")
    rates: dict[str, list[float]] = {name: [] for name in runtimes}
    vectors: dict[str, Any] = {}
    for name, encode in runtimes.items():
        vectors[name] = encode(texts[:BATCH])  # warm-up
    for _ in range(sizes.rounds):
        for name, encode in runtimes.items():
            started = time.perf_counter()
            vectors[name] = encode(texts)
            rates[name].append(len(texts) / (time.perf_counter() - started))
    medians = {name: statistics.median(values) for name, values in rates.items()}
    for name, encode in runtimes.items():
        report.add(**{"runtime": name, "load s": loads[name], "fresh process s": fresh.get(name),
                      "texts/s median": medians[name], "texts/s best": max(rates[name]),
                      "query p50 ms": query_p50_ms(lambda text, encode=encode: encode([text]), sizes.queries),
                      "vs ST": medians[name] / medians[st_name] if st_name in medians else None})
    report.target("model load (numpy runtime)", ours_load, f"<= {LOAD_TARGET_S:g} s", ours_load <= LOAD_TARGET_S)
    if st_name in medians:
        ratio = medians["sony-rag local (numpy)"] / medians[st_name]
        report.target("throughput vs sentence-transformers at batch 64", ratio, f">= {THROUGHPUT_TARGET:g}x",
                      None if smoke else ratio >= THROUGHPUT_TARGET, "smoke sizes" if smoke else "")
        ours_vectors, st_vectors = vectors["sony-rag local (numpy)"], vectors[st_name]
        cosines = np.sum(ours_vectors * st_vectors, axis=1)
        report.notes.append(f"vectors: minimum cosine between the two runtimes over the {len(texts)} texts: "
                            f"{float(cosines.min()):.7f}")
    report.notes.append("load s: the model object alone, in this process; fresh process s: a new interpreter "
                        "importing sony_rag, loading the model and embedding one text")
    report.notes.append(f"OpenBLAS/torch threads as they come; {os.cpu_count()} CPU cores shared with whatever "
                        "else runs on the machine (rounds alternate so both see the same load)")
    return report


def run(bench: Bench) -> Report:
    """Run the embeddings benchmark at the sizes ``bench`` asks for (it needs no database)."""
    return measure(SMOKE if bench.options.smoke else Sizes(), bench.options.smoke)


def machine() -> dict[str, Any]:
    """Return the machine the numbers come from (no database here)."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError, StopIteration):
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    return {"cpus": os.cpu_count(), "cpu": cpu, "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "load_average": os.getloadavg()}


def main(argv: Sequence[str] | None = None) -> int:
    """Measure, print the table and write benchmarks/results/embeddings.json; return an exit code."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.embeddings", description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="tiny sizes for CI; asserts nothing about speed")
    parser.add_argument("--rounds", type=int, help=f"alternating rounds (default {Sizes().rounds})")
    parser.add_argument("--texts", type=int, help=f"texts per round (default {Sizes().texts})")
    args = parser.parse_args(argv)
    base = SMOKE if args.smoke else Sizes()
    sizes = Sizes(texts=args.texts or base.texts, rounds=args.rounds or base.rounds, queries=base.queries)
    report = measure(sizes, args.smoke)
    report.print()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "embeddings.json"
    path.write_text(json.dumps({"name": report.name, "title": report.title, "machine": machine(),
                                "sizes": sizes.__dict__, "columns": report.columns, "rows": report.rows,
                                "targets": report.targets, "notes": report.notes}, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
