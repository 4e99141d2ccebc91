"""The ``sony-rag`` command: parsing and printing only; the work is in ``sony_rag.commands``.

Human output by default (plain-text tables, a progress line on a terminal: ``sony_rag.console``), ``--json``
for scripts. Every
``SonyRagError`` becomes a one-line message on stderr and an exit code (see ``EXIT_CODES_HELP``).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import math
import os
import re
import sys
import textwrap
import warnings
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, nullcontext
from datetime import date, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, Final, NamedTuple
from uuid import UUID

# Only light modules here: `--help`, `--version` and every argument check run before psycopg, pydantic,
# LangChain or a model is imported (each command imports what it needs when it runs).
from sony_rag.durations import AGE_HELP, parse_age
from sony_rag.errors import (
    DatabaseError,
    IndexBuildError,
    InvalidInputError,
    MigrationError,
    NotFoundError,
    SchemaNotReadyError,
    SonyRagError,
)
from sony_rag.types import SOURCE_TYPES

if TYPE_CHECKING:
    from sony_rag.console import Console

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
  2  usage, input or configuration error (bad option, missing file, bad record, malformed
     DATABASE_URL or setting, a prune that needs --yes)
  3  the database is unavailable or failed (cannot connect, timed out, refused the operation)

environment: DATABASE_URL (unset: an embedded PostgreSQL in SONY_RAG_DATA_DIR),
SONY_RAG_EMBEDDINGS=local|fake, SONY_RAG_CHAT_MODEL=provider:model (unset: the offline answerer)"""

_SOURCE_TYPES: Final = sorted(SOURCE_TYPES)
MAX_K: Final = 1000
_URL_PASSWORD: Final = re.compile(r"(://[^:/@\s]*:)[^\s]*@")
MAX_LISTS: Final = 32_768  # pgvector's limit
SHOP_INSTALL: Final = "pip install 'sony-rag[shop]'"


# -- argument types: each refuses a bad value at parse time, with argparse's usage line and exit code 2 ----------


class Age(NamedTuple):
    """A prune age as typed and as a duration."""

    text: str
    delta: timedelta


def _integer(value: str, low: int, high: int | None) -> int:
    try:
        number = int(value)
    except ValueError:
        number = None
    if number is None or number < low or (high is not None and number > high):
        bounds = f"from {low} to {high}" if high is not None else f"of at least {low}"
        raise argparse.ArgumentTypeError(f"must be an integer {bounds}, got {value!r}")
    return number


def _k(value: str) -> int:
    return _integer(value, 1, MAX_K)


def _positive(value: str) -> int:
    return _integer(value, 1, None)


def _threshold(value: str) -> float:
    try:
        number = float(value)
    except ValueError:
        number = math.nan
    if not -1.0 <= number <= 1.0:  # NaN fails too
        raise argparse.ArgumentTypeError(f"must be a cosine similarity from -1 to 1, got {value!r}")
    return number


def _query(value: str) -> str:
    if not value.strip():
        raise argparse.ArgumentTypeError("the query is empty")
    if "\x00" in value:
        raise argparse.ArgumentTypeError("the query contains a NUL character")
    return value


def _age(value: str) -> Age:
    try:
        return Age(value, parse_age(value))
    except InvalidInputError as error:
        raise argparse.ArgumentTypeError(str(error)) from None


def _session_id(value: str) -> str:
    try:
        return str(UUID(value.strip()))
    except ValueError:
        raise argparse.ArgumentTypeError(f"a session id is a UUID such as 3f2b...-...; got {value!r}") from None


def _lists(value: str) -> str:
    return value if value == "auto" else str(_integer(value, 1, MAX_LISTS))


# -- parsing ---------------------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    """argparse's parser, but its error lines never show a password (a URL typed where an option was meant)."""

    def error(self, message: str) -> Any:  # -> NoReturn in typeshed; Any keeps mypy and argparse both happy
        """Print the usage and ``message`` (any URL's password masked) and exit with status 2."""
        super().error(_URL_PASSWORD.sub(r"\1***@", message))


def build_parser() -> argparse.ArgumentParser:
    """Return the argument parser of ``sony-rag`` with every subcommand."""
    common = _Parser(add_help=False)
    # SUPPRESS: a global option given before the subcommand is not reset by the subcommand's default.
    common.add_argument("--database-url", default=argparse.SUPPRESS, metavar="URL",
                        help="Postgres URL: postgresql://, postgres:// or SQLAlchemy's postgresql+psycopg:// "
                             "(default: DATABASE_URL, else the embedded server)")
    common.add_argument("--embeddings", choices=["local", "st", "fake"], default=argparse.SUPPRESS,
                        help="embedding model (default: SONY_RAG_EMBEDDINGS, else local)")

    def command(subparsers: Any, name: str, help_text: str, description: str | None = None) -> Any:
        # Raw formatting keeps the exit-code table's layout, so the description is wrapped here.
        sub = subparsers.add_parser(name, parents=[common], help=help_text,
                                    description=textwrap.fill(description or help_text, 88),
                                    epilog=EXIT_CODES_HELP, formatter_class=argparse.RawDescriptionHelpFormatter)
        sub.set_defaults(parser_=sub)  # for errors found after parsing, with this command's usage line
        return sub

    parser = _Parser(
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
    sub.add_argument("--reembed", action="store_true", help="re-embed every source of these files, replacing "
                     "chunks of another embedding model (which ingest otherwise refuses)")
    sub.add_argument("--json", action="store_true", help="print the report as JSON")

    sub = command(subparsers, "search", "similarity search over the ingested chunks",
                  "Search the ingested chunks. The table shows the score that ranks the results (the fused score "
                  "in hybrid mode, the full-text score in keyword mode, the similarity in vector mode) and the "
                  "cosine similarity as its own column; --json carries both.")
    sub.add_argument("query", type=_query, help="the text to search for")
    sub.add_argument("--source-type", choices=_SOURCE_TYPES, help="only this source type")
    sub.add_argument("--k", type=_k, default=5, metavar="N", help=f"how many results, 1-{MAX_K} (default 5)")
    sub.add_argument("--threshold", type=_threshold, default=None, metavar="S",
                     help="minimum cosine similarity, -1 to 1, e.g. 0.6 (default: none)")
    sub.add_argument("--mode", choices=["vector", "keyword", "hybrid"], default="hybrid",
                     help="ranking: vector, keyword (full text) or hybrid, both fused (default; best measured)")
    sub.add_argument("--json", action="store_true", help="print the results as JSON")

    sub = command(subparsers, "chat", "talk with the shop agent (reads lines until EOF or /quit)",
                  "An interactive conversation with the shop agent (pip install 'sony-rag[shop]'); its memory is "
                  "stored in the database. The session id is printed: resume with --session ID.")
    sub.add_argument("--session", type=_session_id, metavar="ID",
                     help="resume this session (default: start a new one)")
    sub.add_argument("--page", metavar="URL", help="the page the shopper is on (stored with the session)")
    sub.add_argument("--model", metavar="PROVIDER:MODEL",
                     help="chat model for init_chat_model (default: SONY_RAG_CHAT_MODEL, else offline)")
    sub.add_argument("--json", action="store_true", help="print each turn as one JSON line")

    sub = command(subparsers, "sessions", "list chat sessions or show one")
    session_commands = sub.add_subparsers(dest="sessions_command", required=True, metavar="ACTION")
    listing = command(session_commands, "list", "the most recently active sessions")
    listing.add_argument("--limit", type=_positive, default=20, help="how many (default 20)")
    listing.add_argument("--json", action="store_true", help="print as JSON")
    showing = command(session_commands, "show", "one session's messages")
    showing.add_argument("session_id", type=_session_id, metavar="ID", help="the session id")
    showing.add_argument("--limit", type=_positive, default=None, help="only the newest N messages")
    showing.add_argument("--json", action="store_true", help="print as JSON")

    sub = command(subparsers, "prune", "delete sessions idle for longer than an age",
                  "Delete chat sessions with no activity for longer than AGE, with their messages and text "
                  "selections. On a terminal it lists what would go and asks first; without a terminal it "
                  "needs --yes. --dry-run only shows what would go.")
    sub.add_argument("--older-than", required=True, type=_age, metavar="AGE", help=AGE_HELP)
    choice = sub.add_mutually_exclusive_group()
    choice.add_argument("--dry-run", action="store_true",
                        help="show the sessions that would go, with their message and selection counts")
    choice.add_argument("--yes", action="store_true", help="delete without asking (scripts, cron)")
    sub.add_argument("--json", action="store_true", help="print as JSON")

    sub = command(subparsers, "stats", "rows per table and source type, index sizes and scans, pgvector version")
    sub.add_argument("--json", action="store_true", help="print as JSON")

    sub = command(subparsers, "index", "manage the vector index")
    index_commands = sub.add_subparsers(dest="index_command", required=True, metavar="ACTION")
    rebuild = command(index_commands, "rebuild", "rebuild the vector index sized to the table",
                      "Rebuild idx_document_embeddings_vector: IVFFlat with lists from the row count (rows/1000 "
                      "up to 1M rows, sqrt(rows) beyond) or a number, or HNSW; then ANALYZE.")
    rebuild.add_argument("--lists", type=_lists, default="auto", metavar="auto|N",
                         help=f"IVFFlat lists, 1-{MAX_LISTS:,} (default auto)")
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
    try:
        args = build_parser().parse_args(_attach_negative_ages(sys.argv[1:] if argv is None else argv))
        _check_arguments(args)
        if args.command == "chat":
            # The agent is the shop application, not the library: say what to install before anything starts.
            exit_without_shop_extra("sony-rag chat")
    except SystemExit as exit_:
        return exit_.code if isinstance(exit_.code, int) else EXIT_USAGE
    out, err = consoles()
    try:
        return _dispatch(args, out, err)
    except SonyRagError as error:
        say(err, ("error: ", "bold red"), str(error))
        return exit_code_for(error)
    except KeyboardInterrupt:
        say(err, "interrupted")
        return EXIT_INTERRUPTED
    except BrokenPipeError:
        # `sony-rag ... | head`: the reader left; Python's own flush at exit must not complain either.
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK


def exit_without_shop_extra(needed_by: str) -> None:
    """Return when the shop extra is installed; else print a one-line error naming it and raise SystemExit(2).

    ``needed_by`` names what needs it (``sony-rag chat``, an example): scripts that run the shop's agent exit as
    the command does, without a traceback.
    """
    try:
        installed = importlib.util.find_spec("langchain") is not None
    except (ImportError, ValueError):  # an import hook refusing the name, a module without a spec in sys.modules
        installed = False
    if not installed:
        print(f"error: {needed_by} needs the shop application's extra: {SHOP_INSTALL}", file=sys.stderr)
        raise SystemExit(EXIT_USAGE)


def _attach_negative_ages(argv: Sequence[str]) -> list[str]:
    # argparse reads "--older-than -5d" as a missing value followed by an unknown option "-5d"; attached, the
    # age reaches its check, which says what is wrong with it.
    arguments = list(argv)
    for index, argument in enumerate(arguments[:-1]):
        value = arguments[index + 1]
        if argument == "--older-than" and value.startswith("-") and value[1:2].isdigit():
            arguments[index: index + 2] = [f"--older-than={value}"]
            break
    return arguments


def consoles() -> tuple[Console, Console]:
    """Return the stdout and stderr consoles: plain text, nothing in it read as markup or emoji codes."""
    from sony_rag.console import Console

    # Queries, chunks, messages, ids and file names are the user's text: "[/]" or ":sofa:" in them is text.
    # Our own styling goes through (text, style) pairs (see ``say``), never through markup.
    return Console(), Console(stderr=True)


def say(console: Console, *parts: str | tuple[str, str]) -> None:
    """Print one line made of plain strings and (text, style) pairs; nothing in them is read as markup."""
    console.print(*parts)


def exit_code_for(error: SonyRagError) -> int:
    """Return the exit code of an error: 1 check failed / not found, 2 usage or input, 3 database."""
    if isinstance(error, DatabaseError | IndexBuildError):
        return EXIT_DATABASE
    if isinstance(error, NotFoundError | SchemaNotReadyError | MigrationError):
        return EXIT_FAILED
    return EXIT_USAGE


def _check_arguments(args: argparse.Namespace) -> None:
    # What argparse's types cannot see alone, checked before the database or a model is touched.
    fail: Callable[[str], Any] = args.parser_.error
    if args.command == "ingest":
        for path in args.paths:
            if not Path(path).exists():
                fail(f"no such file or directory: {path}")
    elif args.command == "prune" and not (args.dry_run or args.yes) and not sys.stdin.isatty():
        fail("refusing to delete without confirmation: there is no terminal to ask on; pass --yes to delete, "
             "or --dry-run to see what would go")
    elif args.command == "index" and args.hnsw and args.lists != "auto":
        fail("--lists applies to IVFFlat only; leave it out with --hnsw")


def _dispatch(args: argparse.Namespace, out: Console, err: Console) -> int:
    from sony_rag.conninfo import normalize_url
    from sony_rag.database import Database

    url = getattr(args, "database_url", None)
    # Settings and the URL are checked (ConfigurationError, exit 2) before any model loads or server starts.
    db = Database(None if url is None else normalize_url(url, source="--database-url"))
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
    return err.status(message)


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
    from sony_rag import commands

    log: Callable[[str], None] = (lambda line: None) if args.json else (lambda line: say(out, line))
    if not args.json:
        say(out, f"database: {db.description}")
    outcome = commands.migrate(db, test=args.test, log=log)
    if args.json:
        _print_json(outcome.as_dict())
    else:
        if not outcome.applied:
            say(out, "up to date: no migration to apply")
        if args.test:
            for result in outcome.checks:
                mark = ("PASS", "green") if result.passed else ("FAIL", "bold red")
                say(out, mark, f"  {result.name}", f": {result.detail}" if result.detail else "")
            say(out, f"{len(outcome.checks) - len(outcome.failed)} passed, {len(outcome.failed)} failed")
    return EXIT_FAILED if outcome.failed else EXIT_OK


# -- ingest ----------------------------------------------------------------------------------------------


def _progress_bar(console: Console) -> Any:
    """Return a context manager drawing ingestion progress on one line, with rows per second."""
    from sony_rag.console import ProgressLine

    return ProgressLine(console)


def _ingest(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    from sony_rag import commands

    embeddings = _embeddings(args, err)
    show_bar = err.is_terminal and not args.json
    progress = _progress_bar(err) if show_bar else None
    with progress if progress is not None else nullcontext():
        report = commands.ingest(db, args.paths, embeddings=embeddings, source_type=args.source_type,
                                 on_error=args.on_error, progress=progress, reembed=args.reembed)
    for error in report.errors:
        say(err, ("skipped ", "yellow"), str(error))
    if args.json:
        _print_json(report.as_dict())
        return EXIT_OK
    say(out,
        f"ingested {len(report.files)} file(s) with {report.embedding_model}: {report.sources} sources, "
        f"{report.written} written, {report.unchanged} unchanged"
        + (f", {len(report.errors)} bad record(s) skipped" if report.errors else "")
        + f"; {report.chunks_written} chunks written, {report.chunks_deleted} replaced, in {report.seconds:.2f} s"
        + (f" ({report.rows_per_second:,.0f} rows/s)" if report.chunks_written else ""))
    if report.index_rebuilt:
        say(out, report.index_rebuilt)
    return EXIT_OK


# -- search ----------------------------------------------------------------------------------------------

_SCORE_COLUMN: Final = {"similarity": "similarity", "text": "text score", "fused": "fused score"}


def _search(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    from sony_rag import commands
    from sony_rag.console import Table

    embeddings = _embeddings(args, err)
    hits = commands.search(db, args.query, embeddings=embeddings, source_type=args.source_type, k=args.k,
                           threshold=args.threshold, mode=args.mode)
    warning = commands.model_mismatch(hits, embeddings)
    if warning:
        say(err, ("warning: ", "yellow"), warning)
    if args.json:
        _print_json([hit.as_dict() for hit in hits])
        return EXIT_OK
    if not hits:
        say(out, "no matches" + (f" at or above similarity {args.threshold}" if args.threshold is not None else ""))
        return EXIT_OK
    ranked_by = hits[0].ranked_by
    table = Table(title=f"{len(hits)} match(es) for {args.query!r}, ranked by {_SCORE_COLUMN[ranked_by]}")
    table.add_column("#", justify="right")
    keyword = args.mode == "keyword"
    if keyword:
        # Keyword results rank by the share of the query's words a chunk holds, then by the text score.
        table.add_column("words", justify="right")
    if ranked_by != "similarity":
        table.add_column(_SCORE_COLUMN[ranked_by], justify="right")
    table.add_column("similarity", justify="right")
    # The source heads its text in one column: a column of its own left the text a letter wide at 80 columns.
    table.add_column("source and text", max_width=90)
    for hit in hits:
        match = hit.match
        cells = [str(hit.rank)]
        if keyword:
            cells.append(f"{(hit.word_coverage or 0.0):.0%}")
        if ranked_by != "similarity":
            cells.append(f"{hit.score:.4f}")
        cells.append(f"{hit.similarity:.3f}")
        text = " ".join(match["content_chunk"].split())
        table.add_row(*cells, f"{match['source_type']}:{match['source_id']}\n{_clip(text, 240)}")
    table.print(out)
    return EXIT_OK


def _clip(text: str, size: int) -> str:
    return text if len(text) <= size else text[: size - 1].rstrip() + "…"


# -- chat ------------------------------------------------------------------------------------------------


def _chat(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    from sony_shop.agent import chat_model
    from sony_shop.chat import open_chat

    embeddings = _embeddings(args, err)
    model = chat_model(args.model) if args.model else None
    conversation = open_chat(db, embeddings=embeddings, session_id=args.session, page=args.page, model=model)
    if not args.json:
        state = f"resumed, {conversation.earlier_messages} earlier messages" if conversation.resumed else "new"
        say(out, f"session {conversation.session_id} ({state}); resume with: sony-rag chat --session "
                 f"{conversation.session_id}")
        if conversation.offline:
            say(out, ("no chat model configured: the offline answerer quotes the retrieved passages "
                      "(set SONY_RAG_CHAT_MODEL to use a language model)", "dim"))
        say(out, ("type a question; /quit or end of input to stop", "dim"))
    for question in _questions(out, interactive=sys.stdin.isatty() and not args.json):
        if question in ("/quit", "/exit"):
            break
        reply = conversation.ask(question)
        if args.json:
            print(json.dumps({"session_id": conversation.session_id, "question": question, **reply.as_dict()},
                             default=_json_default, ensure_ascii=False), flush=True)
            continue
        out.print(("assistant> ", "bold cyan"), reply.text)
    if not args.json:
        say(out, f"session {conversation.session_id} saved; resume with: sony-rag chat --session "
                 f"{conversation.session_id}")
    return EXIT_OK


def _questions(out: Console, *, interactive: bool) -> Iterator[str]:
    while True:
        try:
            line = out.input(("you> ", "bold")) if interactive else sys.stdin.readline()
        except EOFError:
            return
        if not interactive and line == "":
            return
        question = line.strip()
        if question:
            yield question


# -- sessions and prune ----------------------------------------------------------------------------------


def _sessions(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    from sony_rag import commands
    from sony_rag.console import Table

    if args.sessions_command == "list":
        rows = commands.list_sessions(db, limit=args.limit)
        if args.json:
            _print_json(rows)
            return EXIT_OK
        if not rows:
            say(out, "no sessions")
            return EXIT_OK
        table = Table(title="chat sessions, most recently active first")
        table.add_column("session_id")
        table.add_column("updated_at")
        table.add_column("messages", justify="right")
        table.add_column("current_page")
        for row in rows:
            table.add_row(str(row["session_id"]), _when(row["updated_at"]), str(row["message_count"]),
                          row["current_page"] or "")
        table.print(out)
        return EXIT_OK
    transcript = commands.show_session(db, args.session_id, limit=args.limit)
    if args.json:
        _print_json(transcript.as_dict())
        return EXIT_OK
    session = transcript.session
    say(out, f"session {session['session_id']}: created {_when(session['created_at'])}, last active "
             f"{_when(session['updated_at'])}, page {session['current_page'] or '-'}, "
             f"{len(transcript.messages)} message(s)")
    for message in transcript.messages:
        style = {"human": "bold", "ai": "cyan", "tool": "dim"}.get(message["type"], "")
        label = {"human": "you", "ai": "assistant", "tool": "tool"}.get(message["type"], message["type"])
        out.print((f"[{_when(message['created_at'])}] {label}> ", style), message["text"])
    return EXIT_OK


def _when(value: datetime) -> str:
    return value.astimezone().strftime("%Y-%m-%d %H:%M:%S")


def _prune(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    from sony_rag import commands

    age: Age = args.older_than
    if args.yes:
        deleted = commands.prune(db, age.delta)
    else:
        candidates = commands.prune_preview(db, age.delta)
        if args.dry_run:
            return _print_prune_preview(args, out, candidates)
        if not candidates:
            say(out, f"no session has been idle for more than {age.text}: nothing to delete")
            return EXIT_OK
        _print_prune_preview(args, out, candidates, heading="would delete")
        answer = out.input(f"delete these {len(candidates)} session(s)? [y/N] ").strip().lower()
        if answer not in ("y", "yes"):
            say(out, "cancelled: nothing was deleted")
            return EXIT_OK
        # Only the sessions shown, and only if still idle: one that became active meanwhile stays.
        deleted = commands.prune(db, age.delta, only=[row["session_id"] for row in candidates])
    if args.json:
        _print_json({"deleted": deleted, "older_than": age.text})
    else:
        say(out, f"deleted {deleted} session(s) idle for more than {age.text} (with their messages and selections)")
    return EXIT_OK


def _print_prune_preview(args: argparse.Namespace, out: Console, candidates: list[dict[str, Any]],
                         heading: str = "would delete") -> int:
    age: Age = args.older_than
    messages = sum(int(row["message_count"]) for row in candidates)
    selections = sum(int(row["selection_count"]) for row in candidates)
    summary = (f"{heading} {len(candidates)} session(s) idle for more than {age.text}, with {messages} "
               f"message(s) and {selections} text selection(s)")
    if args.json and args.dry_run:
        _print_json({"dry_run": True, "older_than": age.text, "sessions": candidates,
                     "would_delete": {"sessions": len(candidates), "messages": messages, "selections": selections}})
        return EXIT_OK
    say(out, summary)
    for row in candidates:  # lines, not a table: ids stay whole on an 80-column terminal
        say(out, f"  {row['session_id']}  last active {_when(row['updated_at'])}, {row['message_count']} "
                 f"message(s), {row['selection_count']} selection(s)")
    return EXIT_OK


# -- stats and index -------------------------------------------------------------------------------------


def _stats(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    from sony_rag import commands
    from sony_rag.console import Table

    data = commands.stats(db)
    if args.json:
        _print_json(data)
        return EXIT_OK
    say(out, f"database: {db.description}; pgvector {data.get('pgvector_version') or 'not installed'}")
    tables = Table(title="rows")
    tables.add_column("table")
    tables.add_column("rows", justify="right")
    for name, count in data.get("tables", {}).items():
        tables.add_row(name, f"{count:,}")
    for source_type, count in data.get("document_embeddings_by_source_type", {}).items():
        tables.add_row(f"  document_embeddings / {source_type}", f"{count:,}")
    tables.print(out)
    index = data.get("vector_index")
    if index:
        options = ", ".join(f"{key}={value}" for key, value in index.items()
                            if key not in ("name", "method", "size_bytes") and value is not None)
        say(out, f"vector index: {index['method']} ({options})")
    else:
        say(out, "vector index: none (searches scan exactly)")
    for problem in data.get("index_problems", []):
        say(out, f"warning: {problem['message']}; fix: {problem['fix']}")
    indexes = Table(title="indexes (the spec's monitoring query: scans since statistics were reset)")
    indexes.add_column("table")
    indexes.add_column("index")
    indexes.add_column("scans", justify="right")
    indexes.add_column("size", justify="right")
    for row in data.get("indexes", []):
        indexes.add_row(row["table"], row["index"], f"{row['idx_scan']:,}", _size(row["size_bytes"]))
    indexes.print(out)
    return EXIT_OK


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "kB", "MB", "GB"):
        if value < 1024 or unit == "GB":
            return f"{value:,.0f} {unit}" if unit == "B" else f"{value:,.1f} {unit}"
        value /= 1024
    return f"{value:,.1f} GB"


def _index(args: argparse.Namespace, db: Any, out: Console, err: Console) -> int:
    from sony_rag import commands

    with _status(err, "rebuilding the vector index"):
        report = commands.rebuild_index(db, lists=args.lists, hnsw=args.hnsw, concurrently=args.concurrently)
    if args.json:
        _print_json(report)
        return EXIT_OK
    shape = (f"lists={report['lists']} (probes {report['default_probes']} by default)"
             if report["method"] == "ivfflat" else f"m={report['m']}, ef_construction={report['ef_construction']}")
    say(out, f"rebuilt {report['index_name']}: {report['method']} {shape} on {report['rows']:,} rows, "
             f"{_size(report['size_bytes'])}, in {report['seconds']:.2f} s"
             + (" (concurrently)" if report["concurrently"] else ""))
    for note in report.get("notes", []):
        say(err, ("note: ", "yellow"), note)
    return EXIT_OK


_HANDLERS: Final[dict[str, Callable[[argparse.Namespace, Any, Console, Console], int]]] = {
    "migrate": _migrate, "ingest": _ingest, "search": _search, "chat": _chat, "sessions": _sessions,
    "prune": _prune, "stats": _stats, "index": _index,
}

__all__ = ["EXIT_CODES_HELP", "EXIT_DATABASE", "EXIT_FAILED", "EXIT_OK", "EXIT_USAGE", "MAX_K", "Age",
           "build_parser", "consoles", "exit_code_for", "exit_without_shop_extra", "main", "say"]
