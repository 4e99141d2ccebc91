"""A database password never leaks: not in output, logs, exception messages, causes, contexts or tracebacks.

A property test drives malformed and odd URLs carrying a known password through the library API (sync and
async, the URL given directly and through the settings); a fixed table of such URLs goes through every CLI
command in a subprocess. Each URL either works or fails with one of our errors: configuration errors exit 2,
an unreachable server exits 3, and nothing ends in a traceback.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import logging
import os
import subprocess
import sys
import traceback
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import quote

import pytest
from helpers import test_settings
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from sony_rag import plans
from sony_rag.database import Database
from sony_rag.errors import ConfigurationError, SonyRagError
from sony_rag.operations import get_chat_session

EXAMPLES = int(os.environ.get("RELIABILITY_EXAMPLES", "100"))
DATA = Path(__file__).resolve().parents[2] / "examples" / "data"

# Port 9 (discard) refuses at once on loopback: a well-formed URL fails fast with DatabaseUnavailableError.
HOSTS = ["127.0.0.1", "[::1]", "127.0.0.1,127.0.0.1", ""]
PORTS = [":9", ":9,9", ":abc", ":99999", ":0", ":9:9"]
SCHEMES = ["postgresql://", "postgres://", "postgresql+psycopg://", "postgresql+psycopg2://",
           "postgresql+asyncpg://", "mysql://", "postgres:/", "postgresql:", "http://", "", "Postgres://"]
PATHS = ["/db", "/", "", "/d%zzb", "/db#frag"]
QUERIES = ["", "?sslmode=disable", "?sslmode=bogus", "?bogus=1", "?connect_timeout=x", "?application_name=a&",
           "?", "?password={password}", "?host=/nonexistent"]
WHITESPACE = ["", " ", "\t", "\n "]
# Characters a password generator uses, reserved ones included: raw they break the URL in odd ways.
PASSWORD_CHARS = "abcXYZ0189-_.~!$&'()*+,;=:@/?#[]% "


def secret_forms(password: str) -> set[str]:
    """Return the password as typed and percent-encoded, each of which must stay hidden."""
    return {password, quote(password, safe=""), quote(password)}


@st.composite
def odd_urls(draw: st.DrawFn) -> tuple[str, str]:
    """Return (url, password): a URL or key=value string, often malformed, that carries the password."""
    password = "Zq9" + draw(st.text(alphabet=PASSWORD_CHARS, min_size=4, max_size=12))
    typed = draw(st.sampled_from([password, quote(password, safe="")]))
    if draw(st.integers(0, 4)) == 0:
        quoting = draw(st.sampled_from(["{}", "'{}'", "'{}", "{}'"]))
        body = f"host=127.0.0.1 port=9 user=u password={quoting.format(typed)} dbname=db"
    else:
        user = draw(st.sampled_from(["u", "", "shop"]))
        body = (draw(st.sampled_from(SCHEMES)) + user + ":" + typed + "@" + draw(st.sampled_from(HOSTS))
                + draw(st.sampled_from(PORTS)) + draw(st.sampled_from(PATHS))
                + draw(st.sampled_from(QUERIES)).format(password=typed))
    url = draw(st.sampled_from(WHITESPACE)) + body + draw(st.sampled_from(WHITESPACE))
    return url, password


@contextlib.contextmanager
def everything_captured() -> Iterator[list[str]]:
    """Collect stdout, stderr and every log record (with its traceback) into the yielded list, at the end."""
    texts: list[str] = []
    out, err = io.StringIO(), io.StringIO()
    records: list[logging.LogRecord] = []

    class Keep(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            records.append(record)

    handler = Keep(level=logging.DEBUG)
    root = logging.getLogger()
    saved = root.level
    root.addHandler(handler)
    root.setLevel(logging.DEBUG)
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            yield texts
    finally:
        root.removeHandler(handler)
        root.setLevel(saved)
        formatter = logging.Formatter()
        texts.extend([out.getvalue(), err.getvalue(), *(formatter.format(record) for record in records)])


def error_texts(error: BaseException) -> list[str]:
    """Return every text an exception can show: message, repr, args, the whole chain and the traceback."""
    texts = ["".join(traceback.format_exception(error))]
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        texts += [str(current), repr(current), *map(repr, current.args)]
        for linked in (current.__cause__, current.__context__):
            if linked is not None:
                texts += [str(linked), repr(linked), "".join(traceback.format_exception(linked))]
        current = current.__cause__ or current.__context__
    return texts


def assert_hidden(password: str, texts: list[str]) -> None:
    """Fail if any form of the password appears in any of the texts."""
    for text in texts:
        for form in secret_forms(password):
            assert form not in text, f"the password leaked: {text!r}"


async def _read_async(db: Database) -> None:
    try:
        await get_chat_session(uuid.uuid4(), db=db)
    finally:
        await db.aclose()


@settings(max_examples=EXAMPLES, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(case=odd_urls())
def test_the_library_api_never_shows_the_password(case: tuple[str, str]) -> None:
    url, password = case
    # One retry, so the retry's log line is among the texts checked.
    quick = {"connect_retries": 1, "connect_backoff": 0.01, "connect_timeout": 2.0}
    failures: list[BaseException] = []
    with everything_captured() as texts:
        for attempt in ("sync", "async"):
            try:
                if attempt == "sync":
                    db = Database(url, settings=test_settings(**quick))
                    with db:
                        db.run(plans.recent_sessions(1))
                else:
                    db = Database(settings=test_settings(database_url=url, **quick))
                    asyncio.run(_read_async(db))
            except SonyRagError as error:  # anything else escaping is a defect: the test fails with it
                failures.append(error)
    for error in failures:
        assert_hidden(password, error_texts(error))
    assert_hidden(password, texts)


def test_configuration_errors_carry_no_context() -> None:
    password = "Zq9-ctx-pw"
    for url in (f"postgresql+asyncpg://u:{password}@h/db", f"postgresql://u:{password}%zz@h/db",
                f"host=h password='{password}"):
        with pytest.raises(ConfigurationError) as caught:
            Database(url, settings=test_settings())
        assert caught.value.__cause__ is None and caught.value.__context__ is None
        assert_hidden(password, error_texts(caught.value))


# -- every CLI command, through a subprocess -----------------------------------------------------------------

SECRET = "Zq9-cli-s3cret"
# (URL, exit code): 2 a configuration error, 3 well-formed but nothing listens.
CLI_URLS = [
    (f"postgresql+psycopg://u:{SECRET}@127.0.0.1:9/x", 3),
    (f"mysql://u:{SECRET}@localhost/x", 2),
    (f"postgres:/u:{SECRET}@localhost/x", 2),
    (f" postgresql://u:{SECRET}@127.0.0.1:9/x", 3),
    (f"postgresql://u:{SECRET}@127.0.0.1:9/x?sslmode=bogus", 2),
    (f"postgresql://u:{SECRET}%zz@127.0.0.1:9/x", 2),
    (f"host=127.0.0.1 port=9 password='{SECRET}", 2),
    (f"postgresql://u:{SECRET}@127.0.0.1:abc/x", 2),
    (f"postgresql://u:{SECRET}@extra@127.0.0.1:9/x", 2),
    (f"u:{SECRET}@127.0.0.1:9/x", 2),
]
COMMANDS = [
    ["migrate"], ["migrate", "--test"], ["ingest", str(DATA / "faq.jsonl")], ["search", "sofa"], ["chat"],
    ["sessions", "list"], ["sessions", "show", str(uuid.UUID(int=1))], ["prune", "--older-than", "30d", "--yes"],
    ["prune", "--older-than", "30d", "--dry-run"], ["stats"], ["index", "rebuild"],
]


def cli_cases() -> list[tuple[list[str], str, int, bool]]:
    """Return (command, url, exit code, through the environment) for every run.

    Every command meets the well-formed unreachable URL and one malformed URL (taken in turn, so every
    malformed URL meets a command), half through DATABASE_URL and half through --database-url.
    """
    malformed = CLI_URLS[1:]
    cases = []
    for index, command in enumerate(COMMANDS):
        for url, code in (CLI_URLS[0], malformed[index % len(malformed)]):
            cases.append((["-m", "sony_rag", *command], url, code, len(cases) % 2 == 0))
    for url, code in CLI_URLS[len(COMMANDS) - 1:]:
        cases.append((["-m", "sony_rag", "stats"], url, code, len(cases) % 2 == 0))
    for url, code in (CLI_URLS[0], CLI_URLS[1], CLI_URLS[6]):
        # python -m sony_rag.migrate is `sony-rag migrate` under another name: the same exit codes.
        cases.append((["-m", "sony_rag.migrate", "--test"], url, code, len(cases) % 2 == 0))
    return cases


def run_cli(case: tuple[list[str], str, int, bool], data_dir: Path) -> tuple[tuple[list[str], str, int, bool],
                                                                          subprocess.CompletedProcess[str]]:
    """Run one case and return it with its finished process."""
    arguments, url, _, through_environment = case
    env = {**os.environ, "SONY_RAG_EMBEDDINGS": "fake", "SONY_RAG_CONNECT_RETRIES": "0",
           "SONY_RAG_DATA_DIR": str(data_dir)}
    env.pop("DATABASE_URL", None)
    env.pop("SONY_RAG_DATABASE_URL", None)
    if through_environment:
        env["DATABASE_URL"] = url
    else:
        arguments = [*arguments, "--database-url", url]
    done = subprocess.run([sys.executable, *arguments], capture_output=True, text=True, timeout=120, env=env,
                          input="what sofas do you have?\n", check=False)
    return case, done


def test_no_cli_command_shows_the_password(tmp_path: Path) -> None:
    cases = cli_cases()
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda case: run_cli(case, tmp_path / "pgdata"), cases))
    for (arguments, url, code, through_environment), done in results:
        where = f"{' '.join(arguments)} with {'DATABASE_URL' if through_environment else '--database-url'}={url!r}"
        assert SECRET not in done.stdout + done.stderr, where
        assert "Traceback" not in done.stderr, f"{where}:\n{done.stderr}"
        assert done.returncode == code, f"{where}: exit {done.returncode}\n{done.stderr}"
        assert "error:" in done.stderr, where
    assert not (tmp_path / "pgdata").exists()  # no URL fell back to the embedded server
