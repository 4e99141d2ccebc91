"""The ``sony-rag`` command end to end on the test database: every subcommand, its output and exit codes."""

from __future__ import annotations

import argparse
import ast
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
from helpers import HIDE_LANGCHAIN, env_without_shop_extra, restore_migration_vector_index

from sony_rag.cli import EXIT_DATABASE, EXIT_FAILED, EXIT_OK, EXIT_USAGE, build_parser, main
from sony_rag.database import Database

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"

SUBCOMMANDS = [["migrate"], ["ingest"], ["search"], ["chat"], ["sessions"], ["sessions", "list"],
               ["sessions", "show"], ["prune"], ["stats"], ["index"], ["index", "rebuild"]]


class Cli:
    """Runs ``sony-rag`` in this process against the test database and captures its output."""

    def __init__(self, url: str, capsys: pytest.CaptureFixture[str]) -> None:
        self.url = url
        self.capsys = capsys

    def __call__(self, *args: str, stdin: str | None = None) -> tuple[int, str, str]:
        """Return (exit code, stdout, stderr) of one run."""
        self.capsys.readouterr()
        saved = sys.stdin
        if stdin is not None:
            sys.stdin = io.StringIO(stdin)
        try:
            code = main(["--database-url", self.url, "--embeddings", "fake", *args])
        finally:
            sys.stdin = saved
        out, err = self.capsys.readouterr()
        return code, out, err

    def json(self, *args: str, stdin: str | None = None) -> Any:
        """Return the parsed JSON output of a successful run."""
        code, out, err = self(*args, "--json", stdin=stdin)
        assert code == EXIT_OK, err
        return json.loads(out)


@pytest.fixture
def cli(db: Database, database_url: str, capsys: pytest.CaptureFixture[str]) -> Cli:
    """Return a runner of the command on empty tables."""
    return Cli(database_url, capsys)


@pytest.fixture
def loaded(cli: Cli) -> Cli:
    """Return a runner after the sample catalog was ingested."""
    cli.json("ingest", str(DATA))
    return cli


def count_rows(db: Database, table: str) -> int:
    """Return the number of rows in one of the four tables."""
    assert table in ("chat_sessions", "chat_messages", "document_embeddings", "user_text_selections")
    with db.pool().connection() as conn:
        row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


# -- help and usage -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("command", SUBCOMMANDS, ids=" ".join)
def test_every_subcommand_has_help_with_the_exit_codes(command: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main([*command, "--help"]) == EXIT_OK
    out = capsys.readouterr().out
    assert f"usage: sony-rag {' '.join(command)}" in out
    assert "exit codes:" in out and "3  the database is unavailable" in out


def test_the_parser_knows_exactly_the_documented_commands() -> None:
    commands = next(action for action in build_parser()._actions if isinstance(action, argparse._SubParsersAction))
    assert set(commands.choices) == {"migrate", "ingest", "search", "chat", "sessions", "prune", "stats", "index"}
    assert {" ".join(command) for command in SUBCOMMANDS} >= set(commands.choices)


def test_top_level_help_and_version(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--help"]) == EXIT_OK
    assert "exit codes:" in capsys.readouterr().out
    assert main(["--version"]) == EXIT_OK
    assert capsys.readouterr().out.startswith("sony-rag ")


@pytest.mark.parametrize("argv", [[], ["frobnicate"], ["search"], ["search", "x", "--k", "many"],
                                  ["ingest", "x", "--on-error", "ignore"], ["ingest", "x", "--source-type", "blog"],
                                  ["sessions"], ["index", "rebuild", "--bogus"]])
def test_usage_errors_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    assert main(argv) == EXIT_USAGE
    assert "usage:" in capsys.readouterr().err


def test_global_options_work_after_the_subcommand_too(cli: Cli) -> None:
    code = main(["stats", "--database-url", cli.url, "--json"])
    assert code == EXIT_OK
    assert "tables" in json.loads(cli.capsys.readouterr().out)


# -- migrate ------------------------------------------------------------------------------------------------


def test_migrate_is_up_to_date_and_its_checks_pass(cli: Cli) -> None:
    code, out, _ = cli("migrate", "--test")
    assert code == EXIT_OK
    assert "up to date" in out and " 0 failed" in out
    result = cli.json("migrate", "--test")
    assert result["applied"] == [] and result["ok"] is True
    assert all(check["passed"] for check in result["checks"]) and len(result["checks"]) > 10


# -- ingest -------------------------------------------------------------------------------------------------


def test_ingest_then_again_changes_nothing(cli: Cli, db: Database) -> None:
    first = cli.json("ingest", str(DATA))
    assert first["written"] == first["sources"] >= 100 and first["skipped"] == []
    assert first["embedding_model"] == "sony-rag/hashed-word-stems-384-v1"
    rows = count_rows(db, "document_embeddings")
    assert rows == first["chunks_written"]
    second = cli.json("ingest", str(DATA))
    assert (second["written"], second["unchanged"], second["chunks_written"]) == (0, first["sources"], 0)
    assert count_rows(db, "document_embeddings") == rows


def test_ingest_human_output(cli: Cli) -> None:
    code, out, err = cli("ingest", str(DATA / "faq.jsonl"))
    assert code == EXIT_OK, err
    assert "ingested 1 file(s)" in out and "25 sources, 25 written, 0 unchanged" in out and "rows/s" in out


def test_ingest_bad_record_stops_with_file_and_line(cli: Cli, db: Database, tmp_path: Path) -> None:
    folder = tmp_path / "faq"
    folder.mkdir()
    path = folder / "extra.jsonl"
    path.write_text('{"id": "a", "question": "Q?", "answer": "A."}\n{"id": "b", "question": "no answer"}\n',
                    encoding="utf-8")
    code, _, err = cli("ingest", str(DATA / "faq.jsonl"), str(path))
    assert code == EXIT_USAGE
    assert f"{path}:2:" in err and "nothing was written" in err
    assert count_rows(db, "document_embeddings") == 0

    report = cli.json("ingest", str(DATA / "faq.jsonl"), str(path), "--on-error", "skip")
    assert report["skipped"] == [{"path": str(path), "line": 2, "message": report["skipped"][0]["message"]}]
    assert report["written"] == 26
    code, _, err = cli("ingest", str(path), "--on-error", "skip")
    assert code == EXIT_OK and f"skipped {path}:2:" in err


def test_ingest_with_explicit_source_type(cli: Cli, tmp_path: Path) -> None:
    notes = tmp_path / "notes.md"
    notes.write_text("# Opening hours\n\nOur Brooklyn showroom opens at 10am.\n", encoding="utf-8")
    code, _, err = cli("ingest", str(notes))
    assert code == EXIT_USAGE and "--source-type" in err
    report = cli.json("ingest", str(notes), "--source-type", "page_content")
    assert report["written"] == 1
    hits = cli.json("search", "showroom opening hours", "--source-type", "page_content", "--k", "1")
    assert hits[0]["source_id"] == "notes"


def test_ingest_missing_path_is_a_usage_error(cli: Cli, tmp_path: Path) -> None:
    code, _, err = cli("ingest", str(tmp_path / "nope.jsonl"))
    assert code == EXIT_USAGE and "no such file or directory" in err


def test_ingest_a_changed_record_replaces_only_it(cli: Cli, tmp_path: Path) -> None:
    data = tmp_path / "data"
    shutil.copytree(DATA, data)
    cli.json("ingest", str(data))
    faq = data / "faq.jsonl"
    lines = faq.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[0])
    record["answer"] += " Tracking links also arrive by text message."
    lines[0] = json.dumps(record)
    faq.write_text("\n".join(lines) + "\n", encoding="utf-8")
    report = cli.json("ingest", str(data))
    assert (report["written"], report["chunks_written"], report["chunks_deleted"]) == (1, 1, 1)


# -- search -------------------------------------------------------------------------------------------------


def test_search_modes_find_codes(loaded: Cli) -> None:
    for mode in ("keyword", "hybrid"):
        hits = loaded.json("search", "SX-1123", "--mode", mode, "--k", "3")
        assert hits[0]["source_id"] == "hallwyl-3-seat-sofa", mode
    assert len(loaded.json("search", "SX-1123", "--mode", "vector", "--k", "3")) == 3


def test_search_json_shape_and_order(loaded: Cli) -> None:
    hits = loaded.json("search", "oak dining table", "--k", "4", "--mode", "vector")
    assert len(hits) == 4
    assert set(hits[0]) == {"rank", "score", "ranked_by", "similarity", "source_type", "source_id", "title",
                            "content", "metadata", "embedding_id"}
    similarities = [hit["similarity"] for hit in hits]
    assert similarities == sorted(similarities, reverse=True)
    assert hits[0]["source_id"] == "ekeby-oak-dining-table"
    assert hits[0]["metadata"]["source_id"] == "ekeby-oak-dining-table"


def test_search_filters_by_source_type_and_threshold(loaded: Cli) -> None:
    hits = loaded.json("search", "how long does delivery take", "--source-type", "faq", "--k", "3")
    assert len(hits) == 3 and {hit["source_type"] for hit in hits} == {"faq"}
    strict = loaded.json("search", "how long does delivery take", "--threshold", "0.3", "--k", "50")
    assert strict and all(hit["similarity"] >= 0.3 for hit in strict)
    assert len(strict) < 50
    assert loaded.json("search", "how long does delivery take", "--threshold", "0.99") == []


def test_search_human_table(loaded: Cli) -> None:
    code, out, _ = loaded("search", "walnut sideboard", "--source-type", "product", "--k", "2")
    assert code == EXIT_OK
    assert "similarity" in out and "product:mossby-sideboard" in out
    code, out, _ = loaded("search", "walnut sideboard", "--threshold", "0.999")
    assert code == EXIT_OK and "no matches" in out


@pytest.mark.parametrize("args", [["   "], ["x", "--k", "0"], ["x", "--threshold", "2"]])
def test_search_bad_input_exits_2(loaded: Cli, args: list[str]) -> None:
    code, _, err = loaded("search", *args)
    assert code == EXIT_USAGE and "error:" in err


def test_search_warns_when_the_chunks_came_from_another_model(loaded: Cli, db: Database) -> None:
    with db.pool().connection() as conn:
        conn.execute("UPDATE document_embeddings SET metadata = metadata || '{\"embedding_model\": \"other\"}'")
    code, _, err = loaded("search", "sofa")
    assert code == EXIT_OK and "embedded with other" in err


# -- chat and sessions --------------------------------------------------------------------------------------


def test_chat_answers_and_the_session_can_be_resumed(loaded: Cli, db: Database) -> None:
    code, out, err = loaded("chat", "--page", "/products/hallwyl",
                            stdin="How much does shipping cost?\n/quit\nignored\n")
    assert code == EXIT_OK, err
    assert "offline answerer" in out and "[faq:faq-shipping-cost]" in out
    session_id = out.split("session ", 1)[1].split(" ", 1)[0]
    assert f"sony-rag chat --session {session_id}" in out

    turns = [json.loads(line) for line in loaded("chat", "--session", session_id, "--json",
                                                 stdin="and what about returns?\n")[1].splitlines()]
    assert len(turns) == 1 and turns[0]["session_id"] == session_id and turns[0]["offline"] is True
    assert "How much does shipping cost?" in turns[0]["text"]  # the answerer remembers the first question
    assert any(source["source"].startswith("policy:returns") for source in turns[0]["sources"])

    listed = loaded.json("sessions", "list")
    assert [row["session_id"] for row in listed] == [session_id]
    assert listed[0]["message_count"] == 12 and listed[0]["current_page"] == "/products/hallwyl"
    shown = loaded.json("sessions", "show", session_id)
    assert [m["type"] for m in shown["messages"][:6]] == ["human", "ai", "tool", "tool", "tool", "ai"]
    assert shown["messages"][0]["text"] == "How much does shipping cost?"
    assert "search_products(query=" in shown["messages"][1]["text"]
    code, out, _ = loaded("sessions", "show", session_id, "--limit", "1")
    assert code == EXIT_OK and "1 message(s)" in out and "assistant>" in out


def test_chat_with_an_unknown_session_is_not_found(loaded: Cli) -> None:
    code, _, err = loaded("chat", "--session", "00000000-0000-4000-8000-000000000000", stdin="hi\n")
    assert code == EXIT_FAILED and "does not exist" in err
    code, _, err = loaded("chat", "--session", "not-a-uuid", stdin="hi\n")
    assert code == EXIT_USAGE


def test_sessions_show_errors(cli: Cli) -> None:
    assert cli("sessions", "show", "00000000-0000-4000-8000-000000000000")[0] == EXIT_FAILED
    assert cli("sessions", "show", "nope")[0] == EXIT_USAGE
    code, out, _ = cli("sessions", "list")
    assert code == EXIT_OK and "no sessions" in out


def test_prune_deletes_idle_sessions(loaded: Cli, db: Database) -> None:
    loaded("chat", stdin="hello\n")
    assert loaded.json("prune", "--older-than", "30d", "--yes") == {"deleted": 0, "older_than": "30d"}
    with db.pool().connection() as conn:
        conn.execute("ALTER TABLE chat_sessions DISABLE TRIGGER update_chat_sessions_updated_at")
        try:
            conn.execute("UPDATE chat_sessions SET updated_at = NOW() - interval '40 days'")
        finally:
            conn.execute("ALTER TABLE chat_sessions ENABLE TRIGGER update_chat_sessions_updated_at")
    code, out, _ = loaded("prune", "--older-than", "30d", "--yes")
    assert code == EXIT_OK and "deleted 1 session(s)" in out
    assert count_rows(db, "chat_messages") == 0
    assert loaded("prune", "--older-than", "soon")[0] == EXIT_USAGE


# -- stats and index ----------------------------------------------------------------------------------------


def test_stats(loaded: Cli) -> None:
    data = loaded.json("stats")
    assert data["tables"]["document_embeddings"] == sum(data["document_embeddings_by_source_type"].values())
    assert set(data["document_embeddings_by_source_type"]) == {"product", "faq", "policy", "page_content"}
    assert data["pgvector_version"]
    assert any(row["index"] == "idx_document_embeddings_vector" for row in data["indexes"])
    code, out, _ = loaded("stats")
    assert code == EXIT_OK and "document_embeddings / product" in out and "pgvector" in out
    # Index problems (a stale IVFFlat index, an invalid one) are printed with the command that fixes them.
    assert ("warning:" in out) == bool(data["index_problems"])
    assert all(problem["fix"] in out for problem in data["index_problems"])


def test_the_first_ingest_retrains_the_migrations_ivfflat_index(cli: Cli, db: Database) -> None:
    """The migration's IVFFlat index is built on an empty table; the first ingest retrains it for the data."""
    with db.pool().connection() as conn:   # the index exactly as migration 001 builds it: on an empty table
        conn.execute("DROP INDEX idx_document_embeddings_vector")
    restore_migration_vector_index(db)
    first = cli.json("ingest", str(DATA))
    assert first["index_rebuilt"] and "rebuilt the IVFFlat index" in first["index_rebuilt"]
    stats = cli.json("stats")
    assert stats["vector_index"]["method"] == "ivfflat" and stats["vector_index"]["lists"] < 100
    assert stats["index_problems"] == []
    again = cli.json("ingest", str(DATA))   # nothing changed: nothing written, nothing rebuilt
    assert again["written"] == 0 and again["index_rebuilt"] is None


def test_index_rebuild(loaded: Cli) -> None:
    report = loaded.json("index", "rebuild")
    assert report["method"] == "ivfflat" and report["lists"] >= 1 and report["rows"] > 100
    report = loaded.json("index", "rebuild", "--lists", "3")
    assert report["lists"] == 3
    code, out, _ = loaded("index", "rebuild", "--hnsw")
    assert code == EXIT_OK and "hnsw" in out
    assert loaded.json("stats")["vector_index"]["method"] == "hnsw"
    assert loaded("index", "rebuild", "--lists", "many")[0] == EXIT_USAGE
    assert loaded("index", "rebuild", "--hnsw", "--lists", "4")[0] == EXIT_USAGE
    assert loaded.json("index", "rebuild")["method"] == "ivfflat"  # leave the default shape behind


# -- as a process ------------------------------------------------------------------------------------------


def run_process(*args: str, env: dict[str, str] | None = None,
                input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sony_rag`` with ``args`` (and ``input_text`` on stdin) and return the finished process."""
    environment = {**os.environ, "SONY_RAG_EMBEDDINGS": "fake", **(env or {})}
    return subprocess.run([sys.executable, "-m", "sony_rag", *args], capture_output=True, text=True, timeout=120,
                          env=environment, check=False, input=input_text,
                          stdin=None if input_text is not None else subprocess.DEVNULL)


def test_unreachable_database_exits_3() -> None:
    done = run_process("--database-url", "postgresql://postgres@127.0.0.1:9/postgres?connect_timeout=2", "stats",
                       env={"SONY_RAG_CONNECT_RETRIES": "0"})
    assert done.returncode == EXIT_DATABASE
    assert "error: could not connect" in done.stderr and "Traceback" not in done.stderr


def test_missing_tables_exit_1(server_url: str, capsys: pytest.CaptureFixture[str]) -> None:
    if os.environ.get("TEST_DATABASE_URL"):
        pytest.skip("needs a server on which the tests may create a database")
    import psycopg
    from psycopg.conninfo import make_conninfo

    with psycopg.connect(server_url, autocommit=True) as conn:
        conn.execute('DROP DATABASE IF EXISTS "sony_rag_cli_empty" WITH (FORCE)')
        conn.execute('CREATE DATABASE "sony_rag_cli_empty"')
    cli = Cli(make_conninfo(server_url, dbname="sony_rag_cli_empty"), capsys)
    for command in (["search", "sofa"], ["stats"], ["ingest", str(DATA / "faq.jsonl")]):
        code, _, err = cli(*command)
        assert code == EXIT_FAILED, err
        assert "sony-rag migrate" in err


def test_invalid_settings_exit_2(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]) -> None:
    from sony_rag.settings import get_settings

    monkeypatch.setenv("SONY_RAG_POOL_MAX_SIZE", "zero")
    get_settings.cache_clear()
    try:
        assert main(["stats"]) == EXIT_USAGE
    finally:
        get_settings.cache_clear()
    err = capsys.readouterr().err
    assert "invalid settings" in err and "pool_max_size" in err


# -- startup: light imports, arguments checked before anything heavy ------------------------------------------

HEAVY = ["rich", "langchain", "langchain.agents", "langgraph", "sqlalchemy", "sentence_transformers", "torch",
         "transformers"]


def loaded_modules(code: str) -> list[str]:
    """Return which of HEAVY (and psycopg, pydantic, LangChain, numpy) a fresh interpreter holds after ``code``.

    ``langgraph`` counts only for modules outside the small ``langgraph-checkpoint`` package (its
    ``langgraph.checkpoint``, ``.store`` and ``.cache``): SonyCheckpointer is a ``BaseCheckpointSaver``, it never
    needs the graph runtime.
    """
    watched = [*HEAVY, "psycopg", "pydantic", "langchain_core", "numpy"]
    done = subprocess.run([sys.executable, "-c", f"import sys, json\n{code}\n"
                           "graph = [m for m in sys.modules if m.split('.')[0] == 'langgraph' and m != 'langgraph'\n"
                           "         and m.split('.')[1] not in ('checkpoint', 'store', 'cache')]\n"
                           f"print(json.dumps([m for m in {watched!r} if m in sys.modules and m != 'langgraph']\n"
                           "                 + (['langgraph'] if graph else [])))"],
                          capture_output=True, text=True, timeout=120, check=True)
    return json.loads(done.stdout.splitlines()[-1])  # type: ignore[no-any-return]


def test_import_sony_rag_loads_nothing_heavy() -> None:
    assert loaded_modules("import sony_rag") == []
    # The store and the memory bring the database driver, LangChain's core and langgraph-checkpoint: never the
    # agents package, LangGraph's runtime, rich, SQLAlchemy or a model.
    used = loaded_modules("import sony_rag\n"
                          "from sony_rag import Database, SonyVectorStore, SonyChatMessageHistory, SonyCheckpointer\n"
                          "from sony_rag import get_chat_history, insert_chat_message, search_similar_embeddings\n"
                          "from sony_rag.operations import batch_insert_embeddings, create_chat_session")
    assert "langchain_core" in used and "psycopg" in used  # the probe sees what was imported
    assert not set(used) & set(HEAVY), used


def test_the_shop_records_ingest_reads_need_no_agent() -> None:
    # A core install (no shop extra) still ingests the sample catalog: the shapes import only the library.
    used = loaded_modules("from sony_rag.ingest import registered_shapes\nimport sony_shop\n"
                          "assert [shape.name for shape in registered_shapes()] == ['FAQ entry', 'product']")
    assert not set(used) & set(HEAVY), used


def test_the_library_never_imports_the_shop() -> None:
    import sony_rag

    package = Path(sony_rag.__file__).parent
    offenders = []
    for path in package.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = ([alias.name for alias in node.names] if isinstance(node, ast.Import)
                     else [node.module or ""] if isinstance(node, ast.ImportFrom) else [])
            offenders += [f"{path.name}: {name}" for name in names
                          if name.split(".")[0] in ("sony_shop", "langchain", "rich")]
    # `sony-rag chat` is the one door into the shop, opened inside its handler after the extra was checked.
    assert sorted(offenders) == ["cli.py: sony_shop.agent", "cli.py: sony_shop.chat"]


def test_core_dependencies_leave_out_the_agent_and_rich() -> None:
    pyproject = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    names = {re.split(r"[\s\[<>=!~;]", requirement, maxsplit=1)[0].lower()
             for requirement in pyproject["project"]["dependencies"]}
    assert "langgraph-checkpoint" in names and "langchain-core" in names
    assert not names & {"langchain", "langgraph", "rich"}, names
    assert pyproject["project"]["optional-dependencies"]["shop"] == ["langchain>=1.0"]


@pytest.mark.parametrize("how", sorted(HIDE_LANGCHAIN))
def test_chat_without_the_shop_extra_says_what_to_install(tmp_path: Path, how: str) -> None:
    # langchain hidden from the interpreter stands in for an install without the extra.
    env = env_without_shop_extra(tmp_path, how, DATABASE_URL="postgresql://nobody@127.0.0.1:9/none")
    done = subprocess.run([sys.executable, "-m", "sony_rag", "chat"], capture_output=True, text=True, timeout=60,
                          env=env, input="hi\n", check=False)
    assert done.returncode == EXIT_USAGE
    assert done.stderr.strip().splitlines() == [
        "error: sony-rag chat needs the shop application's extra: pip install 'sony-rag[shop]'"]


def test_help_and_version_load_nothing_heavy() -> None:
    for argv in (["--help"], ["--version"], ["search", "--help"]):
        code = ("import contextlib, io\nfrom sony_rag.cli import main\n"
                f"with contextlib.redirect_stdout(io.StringIO()):\n    assert main({argv!r}) == 0")
        assert loaded_modules(code) == [], argv


def test_search_help_states_the_range_of_k() -> None:
    done = run_process("search", "--help")
    assert done.returncode == EXIT_OK and "how many results, 1-1000" in " ".join(done.stdout.split())


@pytest.mark.parametrize("argv, message", [
    (["search", "sofa", "--k", "0"], "argument --k: must be an integer from 1 to 1000, got '0'"),
    (["search", "sofa", "--k", "1001"], "argument --k: must be an integer from 1 to 1000"),
    (["search", "sofa", "--threshold", "2"], "argument --threshold: must be a cosine similarity from -1 to 1"),
    (["search", "sofa", "--threshold", "nan"], "argument --threshold: must be a cosine similarity"),
    (["search", "   "], "the query is empty"),
    (["ingest", "/nonexistent/catalog.jsonl"], "no such file or directory: /nonexistent/catalog.jsonl"),
    (["prune", "--older-than", "1m"], "'m' is ambiguous in '1m' (minutes or months?): write 'min'"),
    (["prune", "--older-than", "-5d"], "age must be positive, got '-5d'"),
    (["prune", "--older-than", "0d"], "age must be greater than zero"),
    (["prune", "--older-than", "30"], "has no unit"),
    (["prune", "--older-than", "30d"], "refusing to delete without confirmation"),
    (["sessions", "show", "nope"], "a session id is a UUID"),
    (["chat", "--session", "nope"], "a session id is a UUID"),
    (["sessions", "list", "--limit", "0"], "must be an integer of at least 1"),
    (["index", "rebuild", "--lists", "0"], "must be an integer from 1 to 32768"),
    (["index", "rebuild", "--hnsw", "--lists", "4"], "--lists applies to IVFFlat only"),
])
def test_arguments_are_refused_before_connecting_or_loading_a_model(argv: list[str], message: str) -> None:
    # Checked after connecting this would exit 3 (nothing listens on port 9); after loading the model, the
    # real model would load first or its absence be the complaint.
    done = run_process("--embeddings", "local", *argv,
                       env={"DATABASE_URL": "postgresql://u@127.0.0.1:9/x", "SONY_RAG_CONNECT_RETRIES": "0"})
    assert done.returncode == EXIT_USAGE, done.stderr
    assert message in " ".join(done.stderr.split()) and "Traceback" not in done.stderr


# -- user text is text, never markup -----------------------------------------------------------------------------


def test_markup_in_queries_chunks_and_messages_is_printed_as_typed(cli: Cli, database_url: str,
                                                                   tmp_path: Path) -> None:
    notes = tmp_path / "care [b].md"
    notes.write_text("# Sofa care\n\nBrush the [bold]velvet sofa[/bold] weekly :sofa: [/] and [link=x]air it[/link]."
                     "\n", encoding="utf-8")
    assert cli.json("ingest", str(notes), "--source-type", "page_content")["written"] == 1
    env = {"DATABASE_URL": database_url, "COLUMNS": "400"}  # one table row per line
    for mode in ("hybrid", "keyword", "vector"):
        done = run_process("search", "sofa [/] [bold]", "--mode", mode, env=env)
        assert done.returncode == EXIT_OK and "Traceback" not in done.stderr, done.stderr
        text = " ".join(done.stdout.split())
        assert "'sofa [/] [bold]'" in text, text
        assert "[bold]velvet sofa[/bold]" in text and ":sofa: [/]" in text and "[link=x]" in text, text
    chat = run_process("chat", "--page", "/p/[red]x[/red]", input_text="is the [/] sofa :sofa: in stock?\n", env=env)
    assert chat.returncode == EXIT_OK, chat.stderr
    session_id = chat.stdout.split("session ", 1)[1].split(" ", 1)[0]
    shown = run_process("sessions", "show", session_id, env=env)
    assert shown.returncode == EXIT_OK and "is the [/] sofa :sofa: in stock?" in shown.stdout
    assert "/p/[red]x[/red]" in shown.stdout
    listed = run_process("sessions", "list", env=env)
    assert "/p/[red]x[/red]" in listed.stdout


# -- search shows the score that ranks, and the similarity beside it ---------------------------------------------


def test_hybrid_and_keyword_results_show_their_ranking_score_and_similarity(loaded: Cli) -> None:
    by_vector = {hit["embedding_id"]: hit["similarity"]
                 for hit in loaded.json("search", "velvet sofa", "--mode", "vector", "--k", "200")}
    hybrid = loaded.json("search", "velvet sofa", "--mode", "hybrid", "--k", "8")
    assert {hit["ranked_by"] for hit in hybrid} == {"fused"}
    assert [hit["rank"] for hit in hybrid] == list(range(1, len(hybrid) + 1))
    scores = [hit["score"] for hit in hybrid]
    assert scores == sorted(scores, reverse=True) and scores[0] > 0
    for hit in hybrid:  # the similarity column is the chunk's cosine similarity, whatever ranked it
        assert hit["similarity"] == pytest.approx(by_vector[hit["embedding_id"]], abs=1e-6)

    keyword = loaded.json("search", "velvet sofa", "--mode", "keyword", "--k", "8")
    assert keyword and {hit["ranked_by"] for hit in keyword} == {"text"}
    order = [(hit["word_coverage"], hit["score"]) for hit in keyword]
    assert order == sorted(order, reverse=True)
    for hit in keyword:
        assert hit["similarity"] == pytest.approx(by_vector[hit["embedding_id"]], abs=1e-6)

    vector = loaded.json("search", "velvet sofa", "--mode", "vector", "--k", "3")
    assert all(hit["ranked_by"] == "similarity" and hit["score"] == hit["similarity"] for hit in vector)

    code, out, _ = loaded("search", "velvet sofa", "--mode", "hybrid", "--k", "3")
    assert code == EXIT_OK and "ranked by fused score" in out and "fused score" in out and "similarity" in out
    code, out, _ = loaded("search", "velvet sofa", "--mode", "keyword", "--k", "3")
    assert code == EXIT_OK and "ranked by text score" in out and "words" in out and "similarity" in out


# -- prune: units, dry run, confirmation -------------------------------------------------------------------------


def idle_for(db: Database, days: int, session_ids: list[str]) -> None:
    """Make the given sessions look idle for ``days`` days (the updated_at trigger paused meanwhile)."""
    with db.pool().connection() as conn:
        conn.execute("ALTER TABLE chat_sessions DISABLE TRIGGER update_chat_sessions_updated_at")
        try:
            conn.execute("UPDATE chat_sessions SET updated_at = NOW() - make_interval(days => %s) "
                         "WHERE session_id = ANY(%s::uuid[])", (days, session_ids))
        finally:
            conn.execute("ALTER TABLE chat_sessions ENABLE TRIGGER update_chat_sessions_updated_at")


def new_sessions(cli: Cli, count: int) -> list[str]:
    """Return the ids of ``count`` chat sessions with one question each."""
    ids = []
    for _ in range(count):
        code, out, err = cli("chat", stdin="hello\n")
        assert code == EXIT_OK, err
        ids.append(out.split("session ", 1)[1].split(" ", 1)[0])
    return ids


def test_prune_dry_run_lists_what_would_go_and_deletes_nothing(loaded: Cli, db: Database) -> None:
    old, recent = new_sessions(loaded, 2)
    with db.pool().connection() as conn:
        conn.execute("INSERT INTO user_text_selections (session_id, selected_text) VALUES (%s, 'oak'), (%s, 'ash')",
                     (old, old))
    idle_for(db, 40, [old])
    messages = count_rows(db, "chat_messages")
    preview = loaded.json("prune", "--older-than", "30d", "--dry-run")
    assert preview["dry_run"] is True and preview["older_than"] == "30d"
    assert [str(row["session_id"]) for row in preview["sessions"]] == [old]
    assert preview["sessions"][0]["message_count"] >= 2 and preview["sessions"][0]["selection_count"] == 2
    assert preview["would_delete"]["sessions"] == 1 and preview["would_delete"]["selections"] == 2
    code, out, _ = loaded("prune", "--older-than", "30d", "--dry-run")
    assert code == EXIT_OK and "would delete 1 session(s)" in " ".join(out.split()) and old in out
    assert recent not in out
    assert count_rows(db, "chat_sessions") == 2 and count_rows(db, "chat_messages") == messages


def test_prune_without_a_terminal_needs_yes(loaded: Cli, db: Database, database_url: str) -> None:
    (old,) = new_sessions(loaded, 1)
    idle_for(db, 40, [old])
    done = run_process("prune", "--older-than", "30d", env={"DATABASE_URL": database_url})
    assert done.returncode == EXIT_USAGE and "pass --yes" in done.stderr
    assert count_rows(db, "chat_sessions") == 1
    done = run_process("prune", "--older-than", "30d", "--yes", env={"DATABASE_URL": database_url})
    assert done.returncode == EXIT_OK and "deleted 1 session(s)" in done.stdout
    assert count_rows(db, "chat_sessions") == 0


@pytest.mark.skipif(not hasattr(os, "openpty"), reason="needs a pseudo-terminal")
def test_prune_on_a_terminal_asks_first(loaded: Cli, db: Database, database_url: str) -> None:
    old, recent = new_sessions(loaded, 2)
    idle_for(db, 40, [old])
    for answer, deleted in (("n", 0), ("", 0), ("y", 1)):
        done = run_on_terminal(["prune", "--older-than", "4w"], f"{answer}\n", database_url)
        assert done.returncode == EXIT_OK, done.stderr
        assert "delete these 1 session(s)? [y/N]" in done.stdout and old in done.stdout
        if deleted:
            assert "deleted 1 session(s)" in done.stdout
        else:
            assert "cancelled: nothing was deleted" in done.stdout
        assert count_rows(db, "chat_sessions") == 2 - deleted
    with db.pool().connection() as conn:
        assert [str(row[0]) for row in conn.execute("SELECT session_id FROM chat_sessions")] == [recent]


def run_on_terminal(args: list[str], typed: str, database_url: str) -> subprocess.CompletedProcess[str]:
    """Run ``sony-rag`` with a pseudo-terminal as its standard input, typing ``typed``."""
    leader, follower = os.openpty()
    env = {**os.environ, "SONY_RAG_EMBEDDINGS": "fake", "DATABASE_URL": database_url}
    try:
        process = subprocess.Popen([sys.executable, "-m", "sony_rag", *args], stdin=follower,
                                   stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        os.close(follower)
        os.write(leader, typed.encode())
        out, err = process.communicate(timeout=120)
    finally:
        os.close(leader)
    return subprocess.CompletedProcess(process.args, process.returncode, out, err)


def test_a_confirmed_prune_spares_sessions_active_since_the_preview(loaded: Cli, db: Database) -> None:
    from sony_rag import commands

    old, other = new_sessions(loaded, 2)
    idle_for(db, 40, [old, other])
    listed = commands.prune_preview(db, "30d")
    assert {str(row["session_id"]) for row in listed} == {old, other}
    loaded("chat", "--session", other, stdin="still there?\n")  # active again after the preview
    assert commands.prune(db, "30d", only=[row["session_id"] for row in listed]) == 1
    with db.pool().connection() as conn:
        assert [str(row[0]) for row in conn.execute("SELECT session_id FROM chat_sessions")] == [other]
