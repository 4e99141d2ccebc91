"""The ``sony-rag`` command: parsing and printing only; the work is in ``sony_rag.commands``.

Human output by default (rich tables, a progress bar on a terminal), ``--json`` for scripts. Every
``SonyRagError`` becomes a one-line message on stderr and an exit code (see ``EXIT_CODES_HELP``).
"""

from __future__ import annotations

import argparse
import json
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import date, datetime
from decimal import Decimal
from pathlib import Path
from typing import IO, Any, Final
from uuid import UUID

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, ProgressColumn, Task, TextColumn, TimeElapsedColumn
from rich.table import Table
from rich.text import Text

from sony_rag import commands
from sony_rag.errors import (
    ConfigurationError,
    DatabaseError,
    IndexBuildError,
    MigrationError,
    NotFoundError,
    SchemaNotReadyError,
    SonyRagError,
)
from sony_rag.types import SOURCE_TYPES

EXIT_OK: Final = 0
EXIT_FAILED: Final = 1
EXIT_USAGE: Final = 2
EXIT_DATABASE: Final = 3
EXIT_INTERRUPTED: Final = 130

EXIT_CODES_HELP: Final = """\
exit codes:
  0  success
  1  a check failed or something was not found (migrate --test failures, an unknown session,
     tables missing: run `sony-rag migrate`, an inconsistent migration history)
  2  usage or input error (bad option, missing file, bad record, bad configuration)
  3  the database is unavailable or failed (cannot connect, timed out, refused the operation)

environment: DATABASE_URL (unset: an embedded PostgreSQL in SONY_RAG_DATA_DIR),
SONY_RAG_EMBEDDINGS=local|fake, SONY_RAG_CHAT_MODEL=provider:model (unset: the offline answerer)"""

_SOURCE_TYPES: Final = sorted(SOURCE_TYPES)


# -- parsing ---------------------------------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``sony-rag`` with every subcommand."""
    common = argparse.ArgumentParser(add_help=False)
    # SUPPRESS: a global option given before the subcommand is not reset by the subcommand's default.
    common.add_argument("--database-url", default=argparse.SUPPRESS, metavar="URL",
                        help="Postgres URL (default: DATABASE_URL, else the embedded server)")
    common.add_argument("--embeddings", choices=["local", "fake"], default=argparse.SUPPRESS,
                        help="embedding model (default: SONY_RAG_EMBEDDINGS, else local)")

    def command(subparsers: Any, name: str, help_text: str, description: str | None = None) -> Any:
        # Raw formatting keeps the exit-code table's layout, so the description is wrapped here.
        return subparsers.add_parser(name, parents=[common], help=help_text,
                                     description=textwrap.fill(description or help_text, 88),
                                     epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)

    parser = argparse.ArgumentParser(
        prog="sony-rag", parents=[common], epilog=EXIT_CODES_HELP,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        description=textwrap.fill("Conversation memory and filtered similarity retrieval for LangChain agents on "
                                  "Postgres + pgvector.", 88)
        + "\n\ntry: sony-rag migrate && sony-rag ingest examples/data && sony-rag chat",
    )
    from sony_rag import __version__

    parser.add_argument("--version", action="version", version=f"sony-rag {__version__}")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    sub = command(subparsers, "migrate", "create or update the tables (run first)",
                  "Apply pending migrations; --test then checks the live schema and a rolled-back round trip.")
    sub.add_argument("--test", action="store_true", help="check the database against the schema afterwards")
    sub.add_argument("--json", action="store_true", help="print the result as JSON")

    sub = command(subparsers, "ingest", "load JSONL, CSV, Markdown or text files",
                  "Chunk, embed and store files. Re-running on the same files changes nothing; a changed record "
                  "replaces that record's chunks only, in one transaction. Folders are read recursively "
                  "(README files skipped).")
    sub.add_argument("paths", nargs="+", metavar="PATH", help="files or folders (.jsonl, .csv, .md, .txt)")
    sub.add_argument("--source-type", choices=_SOURCE_TYPES,
                     help="source type of every record (default: the record's, else from the path)")
    sub.add_argument("--on-error", choices=["stop", "skip"], default="stop",
                     help="bad record: stop (default; nothing is written) or skip it and write the rest")
    sub.add_argument("--json", action="store_true", help="print the report as JSON")

    sub = command(subparsers, "search", "similarity search over the ingested chunks")
    sub.add_argument("query", help="the text to search for")
    sub.add_argument("--source-type", choices=_SOURCE_TYPES, help="only this source type")
    sub.add_argument("--k", type=int, default=5, help="how many results (default 5)")
    sub.add_argument("--threshold", type=float, default=None,
                     help="minimum cosine similarity, e.g. 0.6 (default: none)")
    sub.add_argument("--mode", choices=["vector", "keyword", "hybrid"], default="hybrid",
                     help="ranking: vector, keyword (full text) or hybrid, both fused (default; best measured)")
    sub.add_argument("--json", action="store_true", help="print the results as JSON")

    sub = command(subparsers, "chat", "talk with the shop agent (reads lines until EOF or /quit)",
                  "An interactive conversation with the agent; its memory is stored in the database. The session "
                  "id is printed: resume with --session ID.")
    sub.add_argument("--session", metavar="ID", help="resume this session (default: start a new one)")
    sub.add_argument("--page", metavar="URL", help="the page the shopper is on (stored with the session)")
    sub.add_argument("--model", metavar="PROVIDER:MODEL",
                     help="chat model for init_chat_model (default: SONY_RAG_CHAT_MODEL, else offline)")
    sub.add_argument("--json", action="store_true", help="print each turn as one JSON line")

    sub = command(subparsers, "sessions", "list chat sessions or show one")
    session_commands = sub.add_subparsers(dest="sessions_command", required=True, metavar="ACTION")
    listing = command(session_commands, "list", "the most recently active sessions")
    listing.add_argument("--limit", type=int, default=20, help="how many (default 20)")
    listing.add_argument("--json", action="store_true", help="print as JSON")
    showing = command(session_commands, "show", "one session's messages")
    showing.add_argument("session_id", metavar="ID", help="the session id")
    showing.add_argument("--limit", type=int, default=None, help="only the newest N messages")
    showing.add_argument("--json", action="store_true", help="print as JSON")

    sub = command(subparsers, "prune", "delete sessions idle for longer than an age")
    sub.add_argument("--older-than", required=True, metavar="AGE", help="e.g. 30d, 12h, 90m, 2w")
    sub.add_argument("--json", action="store_true", help="print as JSON")

    sub = command(subparsers, "stats", "rows per table and source type, index sizes and scans, pgvector version")
    sub.add_argument("--json", action="store_true", help="print as JSON")

    sub = command(subparsers, "index", "manage the vector index")
    index_commands = sub.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    rebuild = command(index_commands, "rebuild", "rebuild the vector index sized to the table",
                      "Rebuild idx_document_embeddings_vector: IVFFlat with lists from the row count (rows/1000 "
                      "up to 1M rows, sqrt(rows) beyond) or a number, or HNSW; then ANALYZE.")
    rebuild.add_argument("--lists", default="auto", metavar="auto|N", help="IVFFlat lists (default auto)")
    rebuild.add_argument("--hnsw", action="store_true", help="build HNSW instead of IVFFlat")
    rebuild.add_argument("--concurrently", action="store_true",
                         help="CREATE INDEX CONCURRENTLY: writes continue during the build")
    rebuild.add_argument("--json", action="store_true", help="print as JSON")
    return parser


# -- running ---------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``sony-rag`` with ``argv`` (default: the process arguments) and return the exit code."""
    # pgserver asks platformdirs for a runtime folder at import; the fallback it warns about is harmless.
    warnings.filterwarnings("ignore", message="XDG_RUNTIME_DIR is not set")
    out = Console(soft_wrap=True)
    err = Console(stderr=True, soft_wrap=True)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    try:
        return _dispatch(args, out, err)
    except SonyRagError as error:
        err.print(f"[bold red]error:[/] {escape(str(error))}", highlight=False)
        return exit_code_for(error)
    except KeyboardInterrupt:
        err.print("interrupted")
        return EXIT_INTERRUPTED


def exit_code_for(error: SonyRagError) -> int:
    """Return the exit code of an error: 1 check failed / not found, 2 usage or input, 3 database."""
    if isinstance(error, DatabaseError | IndexBuildError):
        return EXIT_DATABASE
    if isinstance(error, NotFoundError | SchemaNotReadyError | MigrationError):
        return EXIT_FAILED
    return EXIT_USAGE


def _dispatch(args: argparse.Namespace, out: Console, err: Console) -> int:
    from pydantic import ValidationError

    from sony_rag.connection import Database

    try:
        db = Database(getattr(args, "database_url", None))
    except ValidationError as error:
        raise ConfigurationError(f"invalid settings: {error.errors()[0].get('msg', error)} "
                                 f"({'.'.join(map(str, error.errors()[0].get('loc', ())))})") from error
    handler = _HANDLERS[args.command]
    try:
        return handler(args, db, out, err)
    finally:
        db.close()


def _embeddings(args: argparse.Namespace, err: Console) -> Any:
    from sony_rag.embeddings import get_embeddings

    kind = getattr(args, "embeddings", None)
    with _status(err, "loading the embedding model"):
        return get_embeddings(kind)


def _status(err: Console, message: str) -> AbstractContextManager[Any]:
    return err.status(message) if err.is_terminal else nullcontext()


def _print_json(value: Any, stream: IO[str] | None = None) -> None:
    print(json.dumps(value, default=_json_default, ensure_ascii=False, indent=2), file=stream or sys.stdout)


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime | date):
        return value.isoformat()
    if isinstance(value, UUID | Path):
        return str(value)
    if isinstance(value, Decimal):
        return float(value)
    if hasattr(value, "as_dict"):
        return value.as_dict()
    raise TypeError(f"cannot print {type(value).__name__} as JSON")


# -- migrate ---------------------------------------------------------------------------------------------


def _migrate(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    log: Callable[[str], None] = (lambda line: None) if args.json else (lambda line: out.print(line))
    if not args.json:
        out.print(f"database: {db.description}", highlight=False)
    outcome = commands.migrate(db, test=args.test, log=log)
    if args.json:
        _print_json(outcome.as_dict())
    else:
        if not outcome.applied:
            out.print("up to date: no migration to apply")
        if args.test:
            for result in outcome.checks:
                mark = "[green]PASS[/]" if result.passed else "[bold red]FAIL[/]"
                detail = f": {escape(result.detail)}" if result.detail else ""
                out.print(f"{mark}  {escape(result.name)}{detail}", highlight=False)
            out.print(f"{len(outcome.checks) - len(outcome.failed)} passed, {len(outcome.failed)} failed")
    return EXIT_FAILED if outcome.failed else EXIT_OK


# -- ingest ----------------------------------------------------------------------------------------------


class _RateColumn(ProgressColumn):
    """Rows per second of a task."""

    def render(self, task: Task) -> Text:
        """Return the task's speed as text."""
        speed = task.finished_speed or task.speed
        if not speed and task.completed and task.elapsed:
            speed = task.completed / task.elapsed  # rich needs two samples for its own estimate
        return Text(f"{speed:,.0f} rows/s" if speed else "- rows/s", style="progress.data.speed")


class _RichProgress:
    """Draws ingestion progress as a rich bar with rows per second (on a terminal only)."""

    def __init__(self, console: Console) -> None:
        self._progress = Progress(TextColumn("[progress.description]{task.description}"), BarColumn(),
                                  MofNCompleteColumn(), _RateColumn(), TimeElapsedColumn(), console=console,
                                  transient=False)
        self._task: Any = None

    def __enter__(self) -> _RichProgress:
        self._progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._progress.stop()

    def start(self, total: int) -> None:
        """Start the bar for ``total`` rows."""
        self._task = self._progress.add_task("embedding + writing", total=total)

    def advance(self, rows: int) -> None:
        """Advance the bar by ``rows``."""
        if self._task is not None:
            self._progress.advance(self._task, rows)


def _ingest(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    embeddings = _embeddings(args, err)
    show_bar = err.is_terminal and not args.json
    progress = _RichProgress(err) if show_bar else None
    with progress if progress is not None else nullcontext():
        report = commands.ingest(db, args.paths, embeddings=embeddings, source_type=args.source_type,
                                 on_error=args.on_error, progress=progress)
    for error in report.errors:
        err.print(f"[yellow]skipped[/] {escape(str(error))}", highlight=False)
    if args.json:
        _print_json(report.as_dict())
        return EXIT_OK
    out.print(
        f"ingested {len(report.files)} file(s) with {report.embedding_model}: {report.sources} sources, "
        f"{report.written} written, {report.unchanged} unchanged"
        + (f", {len(report.errors)} bad record(s) skipped" if report.errors else "")
        + f"; {report.chunks_written} chunks written, {report.chunks_deleted} replaced, in {report.seconds:.2f} s"
        + (f" ({report.rows_per_second:,.0f} rows/s)" if report.chunks_written else ""),
        highlight=False,
    )
    return EXIT_OK


# -- search ----------------------------------------------------------------------------------------------


def _search(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    embeddings = _embeddings(args, err)
    matches = commands.search(db, args.query, embeddings=embeddings, source_type=args.source_type, k=args.k,
                              threshold=args.threshold, mode=args.mode)
    warning = commands.model_mismatch(matches, embeddings)
    if warning:
        err.print(f"[yellow]warning:[/] {escape(warning)}", highlight=False)
    if args.json:
        _print_json([{"similarity": round(match["similarity"], 6), "source_type": match["source_type"],
                      "source_id": match["source_id"], "title": match["metadata"].get("title"),
                      "content": match["content_chunk"], "metadata": match["metadata"],
                      "embedding_id": match["embedding_id"]} for match in matches])
        return EXIT_OK
    if not matches:
        out.print("no matches" + (f" at or above similarity {args.threshold}" if args.threshold is not None else ""))
        return EXIT_OK
    table = Table(title=f"{len(matches)} match(es) for {args.query!r}", title_justify="left", expand=False)
    table.add_column("similarity", justify="right", no_wrap=True)
    table.add_column("source", no_wrap=True)
    table.add_column("text", overflow="fold", max_width=90)
    for match in matches:
        text = " ".join(match["content_chunk"].split())
        table.add_row(f"{match['similarity']:.3f}", f"{match['source_type']}:{match['source_id']}",
                      escape(_clip(text, 240)))
    out.print(table)
    return EXIT_OK


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1].rstrip() + "…"


# -- chat ------------------------------------------------------------------------------------------------


def _chat(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    from sony_rag.agent import chat_model

    embeddings = _embeddings(args, err)
    model = chat_model(args.model) if args.model else None
    conversation = commands.open_chat(db, embeddings=embeddings, session_id=args.session, page=args.page,
                                      model=model)
    if not args.json:
        state = f"resumed, {conversation.earlier_messages} earlier messages" if conversation.resumed else "new"
        out.print(f"session {conversation.session_id} ({state}); resume with: sony-rag chat --session "
                  f"{conversation.session_id}", highlight=False)
        if conversation.offline:
            out.print("[dim]no chat model configured: the offline answerer quotes the retrieved passages "
                      "(set SONY_RAG_CHAT_MODEL to use a language model)[/]", highlight=False)
        out.print("[dim]type a question; /quit or end of input to stop[/]", highlight=False)
    for question in _questions(out, interactive=sys.stdin.isatty() and not args.json):
        if question in ("/quit", "/exit"):
            break
        reply = conversation.ask(question)
        if args.json:
            print(json.dumps({"session_id": conversation.session_id, "question": question, **reply.as_dict()},
                             default=_json_default, ensure_ascii=False), flush=True)
            continue
        out.print(Text.assemble(("assistant> ", "bold cyan"), reply.text))
    if not args.json:
        out.print(f"session {conversation.session_id} saved; resume with: sony-rag chat --session "
                  f"{conversation.session_id}", highlight=False)
    return EXIT_OK


def _questions(out: Console, *, interactive: bool) -> Iterator[str]:
    while True:
        try:
            line = out.input("[bold]you>[/] ") if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and line == "":
            return
        question = line.strip()
        if question:
            yield question


# -- sessions and prune ----------------------------------------------------------------------------------


def _sessions(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    if args.sessions_command == "list":
        rows = commands.list_sessions(db, limit=args.limit)
        if args.json:
            _print_json(rows)
            return EXIT_OK
        if not rows:
            out.print("no sessions")
            return EXIT_OK
        table = Table(title="chat sessions, most recently active first", title_justify="left")
        for name in ("session_id", "updated_at", "messages", "current_page"):
            table.add_column(name, no_wrap=name != "current_page")
        for row in rows:
            table.add_row(str(row["session_id"]), _when(row["updated_at"]), str(row["message_count"]),
                          escape(row["current_page"] or ""))
        out.print(table)
        return EXIT_OK
    transcript = commands.show_session(db, args.session_id, limit=args.limit)
    if args.json:
        _print_json(transcript.as_dict())
        return EXIT_OK
    session = transcript.session
    out.print(f"session {session['session_id']}: created {_when(session['created_at'])}, last active "
              f"{_when(session['updated_at'])}, page {session['current_page'] or '-'}, "
              f"{len(transcript.messages)} message(s)", highlight=False)
    for message in transcript.messages:
        style = {"human": "bold", "ai": "cyan", "tool": "dim"}.get(message["type"], "")
        label = {"human": "you", "ai": "assistant", "tool": "tool"}.get(message["type"], message["type"])
        out.print(Text.assemble((f"[{_when(message['created_at'])}] {label}> ", style), message["text"]))
    return EXIT_OK


def _when(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _prune(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    deleted = commands.prune(db, args.older_than)
    if args.json:
        _print_json({"deleted": deleted, "older_than": args.older_than})
    else:
        out.print(f"deleted {deleted} session(s) idle for more than {args.older_than} (with their messages and "
                  "selections)", highlight=False)
    return EXIT_OK


# -- stats and index -------------------------------------------------------------------------------------


def _stats(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    data = commands.stats(db)
    if args.json:
        _print_json(data)
        return EXIT_OK
    out.print(f"database: {db.description}; pgvector {data.get('pgvector_version') or 'not installed'}",
              highlight=False)
    tables = Table(title="rows", title_justify="left")
    tables.add_column("table")
    tables.add_column("rows", justify="right")
    for name, count in data.get("tables", {}).items():
        tables.add_row(name, f"{count:,}")
    for source_type, count in data.get("document_embeddings_by_source_type", {}).items():
        tables.add_row(f"  document_embeddings / {source_type}", f"{count:,}")
    out.print(tables)
    index = data.get("vector_index")
    if index:
        options = ", ".join(f"{key}={value}" for key, value in index.items()
                            if key not in ("name", "method", "size_bytes") and value is not None)
        out.print(f"vector index: {index['method']} ({options})", highlight=False)
    else:
        out.print("vector index: none (searches scan exactly)")
    for problem in data.get("index_problems", []):
        out.print(f"warning: {problem['message']}; fix: {problem['fix']}", highlight=False)
    indexes = Table(title="indexes (the spec's monitoring query: scans since statistics were reset)",
                    title_justify="left")
    for name, justify in (("table", "left"), ("index", "left"), ("scans", "right"), ("size", "right")):
        indexes.add_column(name, justify=justify)  # type: ignore[arg-type]
    for row in data.get("indexes", []):
        indexes.add_row(row["table"], row["index"], f"{row['idx_scan']:,}", _size(row["size_bytes"]))
    out.print(indexes)
    return EXIT_OK


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GB"


def _index(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    with _status(err, "rebuilding the vector index"):
        report = commands.rebuild_index(db, lists=args.lists, hnsw=args.hnsw, concurrently=args.concurrently)
    if args.json:
        _print_json(report)
        return EXIT_OK
    shape = (f"lists={report['lists']} (probes {report['default_probes']} by default)"
             if report["method"] == "ivfflat" else f"m={report['m']}, ef_construction={report['ef_construction']}")
    out.print(f"rebuilt {report['index_name']}: {report['method']} {shape} on {report['rows']:,} rows, "
              f"{_size(report['size_bytes'])}, in {report['seconds']:.2f} s"
              + (" (concurrently)" if report["concurrently"] else ""), highlight=False)
    for note in report.get("notes", []):
        err.print(f"[yellow]note:[/] {escape(note)}", highlight=False)
    return EXIT_OK


_HANDLERS: Final[dict[str, Callable[[argparse.Namespace, Any, Console, Console], int]]] = {
    "migrate": _migrate, "ingest": _ingest, "search": _search, "chat": _chat, "sessions": _sessions,
    "prune": _prune, "stats": _stats, "index": _index,
}

__all__ = ["EXIT_CODES_HELP", "EXIT_DATABASE", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "build_parser",
           "exit_code_for", "main"]
