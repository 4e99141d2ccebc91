"""Run every benchmark side by side in one process against one embedded server, on the same data.

    python -m benchmarks                 # default sizes (a few minutes on 2 cores)
    python -m benchmarks --smoke         # tiny sizes for CI; asserts nothing about speed
    python -m benchmarks --only search chat

Each benchmark prints its table and writes benchmarks/results/<name>.json; all the tables together, as
Markdown with the machine they ran on, go to benchmarks/results/summary.md.
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import sys
import time
import traceback
from collections.abc import Callable, Sequence

import psycopg
from psycopg.conninfo import make_conninfo

from benchmarks import chat, checkpointer, concurrency, embeddings, ingest, overhead, search, selectivity
from benchmarks.common import RESULTS, Bench, Report, add_arguments, options_from

CONCERNS: dict[str, Callable[[Bench], Report]] = {
    "ingest": ingest.run, "search": search.run, "overhead": overhead.run, "concurrency": concurrency.run,
    "chat": chat.run, "checkpointer": checkpointer.run, "embeddings": embeddings.run,
    # Last of the shared-server ones: it loads rows of its own (and leaves the table empty).
    "selectivity": selectivity.run,
}
RELEVANCE_DATABASE = "sony_rag_relevance"


def run_relevance(bench: Bench, smoke: bool) -> tuple[int, str]:
    """Run benchmarks/relevance.py on a database of its own; return its exit code and what it printed."""
    from benchmarks import relevance  # type: ignore[attr-defined]

    with psycopg.connect(bench.server_url, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{RELEVANCE_DATABASE}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{RELEVANCE_DATABASE}"')
    url = make_conninfo(bench.server_url, dbname=RELEVANCE_DATABASE)
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed):
        code = int(relevance.main([*(["--smoke"] if smoke else []), "--database-url", url]))
    print(printed.getvalue(), end="")
    return code, printed.getvalue()


def main(argv: Sequence[str] | None = None) -> int:
    """Run the chosen benchmarks and return the exit code (1 if any of them crashed)."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks", description=__doc__.splitlines()[0])
    add_arguments(parser)
    choices = [*CONCERNS, "relevance"]
    parser.add_argument("--only", nargs="+", choices=choices, help="run only these benchmarks")
    args = parser.parse_args(argv)
    options = options_from(args)
    chosen = args.only or choices
    started = time.perf_counter()
    bench = Bench(options, args.database_url)
    failures: list[str] = []
    sections: list[str] = []
    try:
        for name in chosen:
            if name == "relevance":
                if importlib.util.find_spec("benchmarks.relevance") is None:
                    print("relevance: benchmarks/relevance.py is not there; skipped")
                    continue
                try:
                    code, printed = run_relevance(bench, options.smoke)
                    if code != 0:
                        failures.append(name)
                    sections.append("### Relevance on the labelled questions (benchmarks/relevance.py)\n\n"
                                    + printed)
                except Exception:
                    traceback.print_exc()
                    failures.append(name)
                continue
            concern_started = time.perf_counter()
            try:
                report = CONCERNS[name](bench)
            except Exception:
                traceback.print_exc()
                failures.append(name)
                continue
            report.notes.append(f"({name} took {time.perf_counter() - concern_started:.0f} s)")
            report.print()
            report.write(bench)
            sections.append(report.markdown())
    finally:
        bench.close()
    total = time.perf_counter() - started
    machine = bench.machine
    header = (f"Measured on {machine['cpus']} CPU cores ({machine['cpu']}), {machine['system']}, Python "
              f"{machine['python']}, PostgreSQL {machine['postgres']} with pgvector {machine['pgvector']} "
              f"(embedded, pgserver), one process, {options.rows:,} rows of {options.data} random 384-d unit "
              f"vectors (seed {options.seed}){', smoke sizes' if options.smoke else ''}; total {total:.0f} s.\n")
    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "summary.md").write_text(header + "\n" + "\n".join(sections))
    print(f"\n{header}wrote {RESULTS / 'summary.md'}")
    if failures:
        print(f"FAILED: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
