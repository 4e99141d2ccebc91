"""CLI startup: how long `sony-rag --help`, `--version`, `import sony_rag` and refusing a bad argument or URL take,
each a fresh process (median of N runs), beside `import langchain_postgres` (the peer's import) where installed.

    python -m benchmarks.startup [--runs 7] [--smoke]

No database is needed: every command measured answers before connecting. Targets (issue #19): `--help` and
`--version` within 0.3 s; an argument refused "at once" (the same bound is used here).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path

from benchmarks.common import RESULTS, Report

TARGET_SECONDS = 0.3
COLUMNS = ["contender", "what", "runs", "median s", "max s", "exit"]


def timed_process(arguments: Sequence[str], env: dict[str, str]) -> tuple[float, int]:
    """Return (seconds, exit code) of one fresh interpreter running ``arguments``."""
    started = time.perf_counter()
    done = subprocess.run([sys.executable, *arguments], capture_output=True, env=env, check=False,
                          stdin=subprocess.DEVNULL, timeout=300)
    return time.perf_counter() - started, done.returncode


def measure(report: Report, contender: str, what: str, arguments: Sequence[str], env: dict[str, str],
            runs: int) -> float:
    """Add a row for ``runs`` runs of ``arguments`` (after one warm-up) and return the median in seconds."""
    timed_process(arguments, env)  # warm the file cache: what a user sees from the second run on
    results = [timed_process(arguments, env) for _ in range(runs)]
    seconds = [duration for duration, _ in results]
    median = statistics.median(seconds)
    report.add(contender=contender, what=what, runs=runs, **{"median s": median, "max s": max(seconds),
                                                              "exit": results[-1][1]})
    return median


def run(runs: int) -> Report:
    """Measure every startup path and return the report."""
    report = Report("startup", "CLI startup, a fresh process each run (no database needed)", COLUMNS)
    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "SONY_RAG_EMBEDDINGS": "fake", "SONY_RAG_DATA_DIR": str(Path(folder) / "pgdata")}
        env.pop("DATABASE_URL", None)
        cli = ["-m", "sony_rag"]
        cases = [
            ("sony-rag --version", [*cli, "--version"], "--version"),
            ("sony-rag --help", [*cli, "--help"], "--help"),
            ("import sony_rag", ["-c", "import sony_rag"], None),
            ("search --k 0 (refused)", [*cli, "search", "sofa", "--k", "0"], "a bad argument"),
            ("ingest a missing file (refused)", [*cli, "ingest", "/nonexistent.jsonl"], "a missing file"),
            ("prune --older-than 1m (refused)", [*cli, "prune", "--older-than", "1m"], "an ambiguous age"),
        ]
        for what, arguments, target in cases:
            median = measure(report, "sony-rag", what, arguments, env, runs)
            if target is not None:
                report.target(f"{target} answered", median, f"<= {TARGET_SECONDS} s", median <= TARGET_SECONDS)
        bad_url = {**env, "DATABASE_URL": "mysql://u:secret@localhost/shop"}
        measure(report, "sony-rag", "stats with a malformed DATABASE_URL (refused, exit 2)", [*cli, "stats"], bad_url,
                runs)
        try:
            import importlib.util

            if importlib.util.find_spec("langchain_postgres") is None:
                raise ImportError("langchain-postgres is not installed (pip install -e '.[bench]')")
            measure(report, "langchain-postgres", "import langchain_postgres", ["-c", "import langchain_postgres"],
                    env, runs)
        except ImportError as error:
            report.notes.append(f"peer not measured: {error}")
    report.notes.append("a malformed URL is checked after the settings and psycopg's parser load (about 0.4 s of "
                        "imports); the argument checks come before either")
    return report


def main(argv: Sequence[str] | None = None) -> int:
    """Run the startup benchmark, print its table and write benchmarks/results/startup.json."""
    parser = argparse.ArgumentParser(prog="python -m benchmarks.startup", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=7, help="runs per measurement (default 7)")
    parser.add_argument("--smoke", action="store_true", help="2 runs each; asserts nothing about speed")
    args = parser.parse_args(argv)
    report = run(2 if args.smoke else max(1, args.runs))
    report.print()
    RESULTS.mkdir(parents=True, exist_ok=True)
    path = RESULTS / "startup.json"
    machine = {"cpus": os.cpu_count(), "cpu": platform.processor() or platform.machine(),
               "system": platform.platform(), "python": platform.python_version(),
               "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None}
    path.write_text(json.dumps({"name": report.name, "title": report.title, "machine": machine,
                                "columns": report.columns, "rows": report.rows, "targets": report.targets,
                                "notes": report.notes}, indent=2, default=str) + "\n")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
