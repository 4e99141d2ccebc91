"""What every benchmark shares: options, one embedded server, the data set, timing, tables and JSON output.

The data set is random 384-d unit vectors from a fixed seed. By default they are drawn around random
cluster centres (``--data clustered``, about 100 rows per cluster, noise 1.0 per dimension: neighbours
within a cluster have cosine ~0.5, unrelated rows ~0), because text embeddings have that kind of structure;
``--data uniform`` draws them uniformly on the sphere, where no approximate index can be both fast and
accurate (every row is about equally far from every query). 1 % of rows have ``source_type = 'policy'``.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import psycopg
from langchain_core.embeddings import Embeddings
from psycopg.conninfo import make_conninfo
from psycopg.types.json import Jsonb

from sony_rag.database import Database
from sony_rag.indexes import IndexReport, rebuild_vector_index
from sony_rag.migrate import migrate
from sony_rag.settings import Settings

RESULTS = Path(__file__).resolve().parent / "results"
DIMENSIONS = 384
K = 10
FILTER_TYPE = "policy"  # 1 % of rows
OTHER_TYPES = ("product", "page_content", "faq")
BENCH_DATABASE = "sony_rag_bench"
COPY_COLUMNS = ("embedding_id", "source_type", "source_id", "content_chunk", "embedding", "metadata")
COPY_TYPES = ("uuid", "varchar", "text", "text", "vector", "jsonb")

Vectors = npt.NDArray[np.float32]


# -- options -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Options:
    """Sizes and switches of a run; the defaults finish in a few minutes on 2 cores."""

    rows: int = 100_000
    queries: int = 200
    seconds: float = 20.0
    clients: int = 16
    lc_rows: int = 10_000
    chat_ops: int = 1_000
    seed: int = 42
    data: str = "clustered"
    smoke: bool = False
    langchain: bool = True


SMOKE = Options(rows=3_000, queries=20, seconds=1.0, clients=4, lc_rows=300, chat_ops=30, smoke=True)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the options every benchmark script takes."""
    defaults = Options()
    parser.add_argument("--smoke", action="store_true",
                        help="tiny sizes for CI (under a minute in all); asserts nothing about speed")
    parser.add_argument("--rows", type=int, help=f"rows in the table (default {defaults.rows:,})")
    parser.add_argument("--queries", type=int, help=f"queries per measurement (default {defaults.queries})")
    parser.add_argument("--seconds", type=float,
                        help=f"duration of each concurrency run (default {defaults.seconds:g})")
    parser.add_argument("--clients", type=int, help=f"concurrent async clients (default {defaults.clients})")
    parser.add_argument("--lc-rows", type=int,
                        help=f"rows for langchain-postgres's row-by-row ingest (default {defaults.lc_rows:,})")
    parser.add_argument("--chat-ops", type=int, help=f"appends and reads per chat measurement "
                                                     f"(default {defaults.chat_ops:,})")
    parser.add_argument("--seed", type=int, help=f"random seed (default {defaults.seed})")
    parser.add_argument("--data", choices=["clustered", "uniform"], help="vector distribution (default clustered)")
    parser.add_argument("--no-langchain", action="store_true", help="skip the langchain-postgres comparisons")
    parser.add_argument("--database-url", help="an existing server's URL instead of a new embedded one "
                                               "(a database named sony_rag_bench is dropped and re-created)")


def options_from(args: argparse.Namespace) -> Options:
    """Return the Options the parsed arguments ask for (smoke sizes under explicit flags)."""
    base = SMOKE if args.smoke else Options()
    values = {name: getattr(args, name) for name in ("rows", "queries", "seconds", "clients", "lc_rows",
                                                     "chat_ops", "seed", "data")
              if getattr(args, name, None) is not None}
    if getattr(args, "no_langchain", False):
        values["langchain"] = False
    return Options(**{**asdict(base), **values})


# -- data ----------------------------------------------------------------------------------------------


@dataclass
class Dataset:
    """The rows and queries every contender gets, and the exact answers to score them with."""

    vectors: Vectors
    queries: Vectors
    source_types: list[str]
    texts: list[str]

    @property
    def rows(self) -> int:
        """Return the number of rows."""
        return len(self.vectors)

    @staticmethod
    def row_id(index: int) -> uuid.UUID:
        """Return the embedding_id row ``index`` is stored under (deterministic, so results map back)."""
        return uuid.UUID(int=index + 1)

    @staticmethod
    def index_of(row_id: str | uuid.UUID) -> int:
        """Return the row index of an embedding_id made by ``row_id``."""
        return uuid.UUID(str(row_id)).int - 1

    def metadata(self, index: int) -> dict[str, Any]:
        """Return the metadata stored with row ``index``."""
        return {"i": index, "category": OTHER_TYPES[index % 3]}

    @cached_property
    def filtered_rows(self) -> npt.NDArray[np.int64]:
        """Return the indexes of the rows the 1 % filter matches."""
        return np.asarray([i for i, kind in enumerate(self.source_types) if kind == FILTER_TYPE], dtype=np.int64)

    @cached_property
    def truth(self) -> list[list[int]]:
        """Return each query's exact top-k row indexes by cosine distance."""
        return _top_k(self.vectors, self.queries, np.arange(self.rows))

    @cached_property
    def filtered_truth(self) -> list[list[int]]:
        """Return each query's exact top-k among the rows the filter matches."""
        return _top_k(self.vectors, self.queries, self.filtered_rows)

    def copy_rows(self) -> Iterable[tuple[Any, ...]]:
        """Yield the rows in COPY_COLUMNS order."""
        for i in range(self.rows):
            yield (self.row_id(i), self.source_types[i], f"src-{i // 4}", self.texts[i], self.vectors[i],
                   Jsonb(self.metadata(i)))


def _top_k(vectors: Vectors, queries: Vectors, among: npt.NDArray[np.int64]) -> list[list[int]]:
    answers = []
    candidates = vectors[among]
    for query in queries:
        distances = 1.0 - candidates @ query
        best = np.argpartition(distances, min(K, len(among) - 1))[:K]
        best = best[np.argsort(distances[best], kind="stable")]
        answers.append([int(among[j]) for j in best])
    return answers


def make_dataset(options: Options) -> Dataset:
    """Return the data set for ``options`` (same seed, same vectors)."""
    rng = np.random.default_rng(options.seed)
    rows, count = options.rows, options.queries
    if options.data == "uniform":
        vectors = rng.standard_normal((rows, DIMENSIONS), dtype=np.float32)
        queries = rng.standard_normal((count, DIMENSIONS), dtype=np.float32)
    else:
        centres = rng.standard_normal((max(8, rows // 100), DIMENSIONS), dtype=np.float32)
        vectors = centres[rng.integers(0, len(centres), rows)]
        vectors += rng.standard_normal((rows, DIMENSIONS), dtype=np.float32)
        queries = centres[rng.integers(0, len(centres), count)]
        queries += rng.standard_normal((count, DIMENSIONS), dtype=np.float32)
    vectors /= np.linalg.norm(vectors, axis=1, keepdims=True)
    queries /= np.linalg.norm(queries, axis=1, keepdims=True)
    source_types = [FILTER_TYPE if i % 100 == 0 else OTHER_TYPES[i % 3] for i in range(rows)]
    words = ("oak", "walnut", "sofa", "lamp", "shelf", "linen", "velvet", "brass", "table", "chair", "rug",
             "mirror", "desk", "stool", "bench")
    texts = [f"Chunk {i}: a {words[i % 15]} {words[(i * 7) % 15]} piece in {words[(i * 11) % 15]} finish, "
             f"part of collection {i // 100}, with care notes and delivery details." for i in range(rows)]
    return Dataset(vectors, queries, source_types, texts)


# -- the server and the database -----------------------------------------------------------------------


class Bench:
    """One embedded server (or a given one), a freshly migrated database on it, and the loaded data."""

    def __init__(self, options: Options, database_url: str | None = None) -> None:
        """Start the server, create and migrate the benchmark database, and make the data set."""
        self.options = options
        self._folder: str | None = None
        self._server: Any = None
        if database_url is None:
            import pgserver

            self._folder = tempfile.mkdtemp(prefix="sony-rag-bench-")
            self._server = pgserver.get_server(  # type: ignore[attr-defined]
                Path(self._folder) / "pgdata", cleanup_mode="stop")
            server_url = str(self._server.get_uri())
        else:
            server_url = database_url
        with psycopg.connect(server_url, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{BENCH_DATABASE}" WITH (FORCE)')
            conn.execute(f'CREATE DATABASE "{BENCH_DATABASE}"')
        self.server_url = server_url
        self.url = make_conninfo(server_url, dbname=BENCH_DATABASE)
        self.db = self.database()
        migrate(self.db)
        self.data = make_dataset(options)
        self.loaded = False
        self.index: str | None = "migration"  # IVFFlat lists=100 built on the empty table
        self.index_reports: dict[str, IndexReport] = {}
        self.machine = machine(self.url)

    def database(self, **settings: Any) -> Database:
        """Return a new sony-rag Database on the benchmark database (pools sized for the clients)."""
        values: dict[str, Any] = {"pool_min_size": 1, "pool_max_size": max(4, self.options.clients),
                                  "embeddings": "fake", "data_dir": Path(tempfile.gettempdir()) / "unused"}
        values.update(settings)
        return Database(self.url, settings=Settings(**values))

    def connect(self, **kwargs: Any) -> psycopg.Connection[Any]:
        """Return a plain autocommit psycopg connection with pgvector's types registered."""
        from pgvector.psycopg import register_vector

        conn = psycopg.connect(self.url, autocommit=True, **kwargs)
        register_vector(conn)
        return conn

    def truncate(self) -> None:
        """Empty document_embeddings."""
        with psycopg.connect(self.url, autocommit=True) as conn:
            conn.execute("TRUNCATE document_embeddings")
        self.loaded = False

    def load(self) -> None:
        """Load the data set into document_embeddings with a bare binary COPY (ids from ``Dataset.row_id``)."""
        if self.loaded:
            return
        self.truncate()
        with self.connect() as conn, conn.cursor() as cursor:
            with cursor.copy(f"COPY document_embeddings ({', '.join(COPY_COLUMNS)}) FROM STDIN WITH (FORMAT BINARY)"
                             ) as copy:
                copy.set_types(list(COPY_TYPES))
                for row in self.data.copy_rows():
                    copy.write_row(row)
            conn.execute("VACUUM ANALYZE document_embeddings")
        self.loaded = True

    def ensure_index(self, method: str) -> IndexReport:
        """Load the data and give it an ``ivfflat`` (lists chosen automatically) or ``hnsw`` index (defaults)."""
        self.load()
        if self.index != method or method not in self.index_reports:
            report = rebuild_vector_index(self.db, method=method)  # type: ignore[arg-type]
            self.index_reports[method] = report
            self.index = method
        return self.index_reports[method]

    def close(self) -> None:
        """Close pools and stop and delete the embedded server, if this Bench started one."""
        self.db.close()
        if self._server is not None:
            try:
                self._server.cleanup()
            except Exception as error:  # a benchmark's result matters more than a tidy shutdown
                print(f"note: could not stop the embedded server cleanly: {error}", file=sys.stderr)
        if self._folder is not None:
            shutil.rmtree(self._folder, ignore_errors=True)


def sqlalchemy_url(bench: Bench, driver: str) -> str:
    """Return the benchmark database as a SQLAlchemy URL for ``driver`` (langchain-postgres takes those)."""
    from psycopg.conninfo import conninfo_to_dict
    from sqlalchemy.engine import URL

    parts = conninfo_to_dict(bench.url)
    host = str(parts.get("host") or "localhost")
    query = {"host": host} if host.startswith("/") else {}
    url = URL.create(f"postgresql+{driver}", username=str(parts.get("user") or "postgres"),
                     password=str(parts["password"]) if parts.get("password") else None,
                     host=None if host.startswith("/") else host,
                     port=int(str(parts["port"])) if parts.get("port") else None,
                     database=str(parts.get("dbname")), query=query)
    return url.render_as_string(hide_password=False)


def machine(url: str) -> dict[str, Any]:
    """Return a description of the machine and server the numbers come from."""
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    with psycopg.connect(url) as conn:
        server = conn.execute("SHOW server_version").fetchone()
        vector = conn.execute("SELECT extversion FROM pg_extension WHERE extname = 'vector'").fetchone()
    return {"cpus": os.cpu_count(), "cpu": cpu, "system": f"{platform.system()} {platform.release()}",
            "python": platform.python_version(), "postgres": server[0] if server else None,
            "pgvector": vector[0] if vector else None}


class VectorsOnly(Embeddings):
    """Embeddings for stores that are only given vectors here: embedding text would be a bug in a benchmark."""

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Refuse: benchmarks pass precomputed vectors."""
        raise AssertionError("benchmarks pass vectors; nothing should embed text")

    def embed_query(self, text: str) -> list[float]:
        """Refuse: benchmarks pass precomputed vectors."""
        raise AssertionError("benchmarks pass vectors; nothing should embed text")


# -- timing ----------------------------------------------------------------------------------------------


def percentiles(seconds: Sequence[float]) -> tuple[float, float]:
    """Return (p50, p95) of durations in seconds, in milliseconds."""
    if not seconds:
        return float("nan"), float("nan")
    ordered = sorted(seconds)
    p95 = ordered[min(len(ordered) - 1, max(0, round(0.95 * len(ordered)) - 1))]
    return statistics.median(ordered) * 1000, p95 * 1000


def timed(function: Callable[[], Any]) -> tuple[float, Any]:
    """Return (seconds, result) of one call."""
    started = time.perf_counter()
    result = function()
    return time.perf_counter() - started, result


# -- reports -----------------------------------------------------------------------------------------------


@dataclass
class Report:
    """A benchmark's table (rows of dicts over ``columns``), notes, and the targets it checks."""

    name: str
    title: str
    columns: list[str]
    rows: list[dict[str, Any]] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    targets: list[dict[str, Any]] = field(default_factory=list)

    def add(self, **row: Any) -> None:
        """Append a row."""
        self.rows.append(row)

    def target(self, name: str, value: float | None, goal: str, met: bool | None, why: str = "") -> None:
        """Record whether a target is met (None: could not be measured)."""
        self.targets.append({"target": name, "value": value, "goal": goal, "met": met, "why": why})

    def markdown(self) -> str:
        """Return the table, notes and targets as Markdown."""
        lines = [f"### {self.title}", "", "| " + " | ".join(self.columns) + " |",
                 "|" + "|".join("---" if i == 0 else "---:" for i in range(len(self.columns))) + "|"]
        for row in self.rows:
            lines.append("| " + " | ".join(_cell(row.get(column)) for column in self.columns) + " |")
        if self.targets:
            lines.append("")
            for target in self.targets:
                state = {True: "met", False: "MISSED", None: "not measured"}[target["met"]]
                lines.append(f"- target {target['target']} ({target['goal']}): {_cell(target['value'])} -> "
                             f"**{state}**" + (f" ({target['why']})" if target["why"] else ""))
        if self.notes:
            lines.append("")
            lines.extend(f"- {note}" for note in self.notes)
        return "\n".join(lines) + "\n"

    def print(self) -> None:
        """Print the table (rich when it is installed) with its notes and targets."""
        try:
            from rich.console import Console
            from rich.table import Table
        except ImportError:
            print(self.markdown())
            return
        table = Table(title=self.title, title_justify="left")
        for index, column in enumerate(self.columns):
            table.add_column(column, justify="left" if index == 0 else "right")
        for row in self.rows:
            table.add_row(*(_cell(row.get(column)) for column in self.columns))
        console = Console(width=max(120, shutil.get_terminal_size().columns))
        console.print(table)
        for target in self.targets:
            state = {True: "[green]met[/green]", False: "[red]MISSED[/red]", None: "not measured"}[target["met"]]
            console.print(f"  target {target['target']} ({target['goal']}): {_cell(target['value'])} -> {state}"
                          + (f" ({target['why']})" if target["why"] else ""), highlight=False)
        for note in self.notes:
            console.print(f"  note: {note}", highlight=False, markup=False)

    def write(self, bench: Bench) -> Path:
        """Write the report as JSON to benchmarks/results/<name>.json and return the path."""
        RESULTS.mkdir(parents=True, exist_ok=True)
        path = RESULTS / f"{self.name}.json"
        payload = {"name": self.name, "title": self.title, "machine": bench.machine,
                   "options": asdict(bench.options), "columns": self.columns, "rows": self.rows,
                   "targets": self.targets, "notes": self.notes}
        path.write_text(json.dumps(payload, indent=2, default=str) + "\n")
        return path


def _cell(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if value != value:  # NaN
            return "-"
        if abs(value) >= 1000:
            return f"{value:,.0f}"
        if abs(value) >= 10:
            return f"{value:.1f}"
        return f"{value:.3g}" if abs(value) < 1 else f"{value:.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def why_not(error: BaseException) -> str:
    """Return a one-line reason for a comparison that could not run."""
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0] if text else ''}"[:300]


def run_standalone(name: str, run: Callable[[Bench], Report], description: str,
                   argv: Sequence[str] | None = None) -> int:
    """Parse options, run one benchmark on a new server, print and write its report; return an exit code."""
    parser = argparse.ArgumentParser(prog=f"python -m benchmarks.{name}", description=description)
    add_arguments(parser)
    args = parser.parse_args(argv)
    bench = Bench(options_from(args), args.database_url)
    try:
        report = run(bench)
        report.print()
        print(f"wrote {report.write(bench)}")
    finally:
        bench.close()
    return 0
