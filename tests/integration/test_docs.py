"""The README and docs/ cannot drift from the code: every code block runs, every CLI command and option is named."""

from __future__ import annotations

import argparse
import os
import re
import shlex
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from sony_rag.cli import build_parser
from sony_rag.database import Database

ROOT = Path(__file__).resolve().parents[2]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
RUNNABLE = {"python", "bash", "sh", "console"}
LISTING = {"text", "json", "sql", "toml", "ini", ""}


def code_blocks(path: Path) -> list[tuple[str, str, int]]:
    """Return (language, code, line number) for each fenced block of a Markdown file."""
    text = path.read_text(encoding="utf-8")
    return [(match.group(1), match.group(2), text.count("\n", 0, match.start()) + 1)
            for match in FENCE.finditer(text)]


def block_ids(kind: set[str]) -> list[tuple[Path, str, int]]:
    """Return every (file, code, line) whose language is in ``kind``."""
    return [(path, code, line) for path in DOCUMENTS for language, code, line in code_blocks(path)
            if language in kind]


def _environment(database_url: str) -> dict[str, str]:
    env = {**os.environ, "DATABASE_URL": database_url, "SONY_RAG_EMBEDDINGS": "fake"}
    env.pop("SONY_RAG_CHAT_MODEL", None)
    return env


def test_every_block_is_marked_runnable_or_a_listing() -> None:
    unknown = [f"{path.name}:{line} ```{language}" for path in DOCUMENTS
               for language, _, line in code_blocks(path) if language not in RUNNABLE | LISTING]
    assert not unknown, f"blocks in a language this test cannot run or recognise as a listing: {unknown}"


PYTHON_DOCUMENTS = [path for path in DOCUMENTS if any(language == "python" for language, _, _ in code_blocks(path))]


@pytest.mark.parametrize("path", PYTHON_DOCUMENTS, ids=lambda path: path.name)
def test_python_blocks_run(db: Database, database_url: str, path: Path) -> None:
    # A page is read top to bottom, so its blocks run in order as one program: a later block may use what an
    # earlier one made, as a reader would.
    program = "\n".join(f"# --- {path.name}, the block at line {line}\n{code}"
                         for language, code, line in code_blocks(path) if language == "python")
    done = subprocess.run([sys.executable, "-c", program], capture_output=True, text=True, timeout=600,
                          env=_environment(database_url), cwd=ROOT, check=False)
    assert done.returncode == 0, f"{path.name} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr, done.stderr


def _extras() -> set[str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    return set(project.get("optional-dependencies", {}))


def _check_command(command: str, database_url: str) -> None:
    words = shlex.split(command)
    if not words or words[0] in {".", "source"} or words[:3] == ["python3", "-m", "venv"]:
        return
    if words[:2] == ["pip", "install"]:
        for word in words[2:]:
            extras = re.fullmatch(r"\.\[([\w,-]+)\]", word)
            if extras:
                missing = set(extras.group(1).split(",")) - _extras()
                assert not missing, f"`{command}` names extras pyproject.toml lacks: {missing}"
        return
    if words[0] in {"python", "python3"} and len(words) > 1 and words[1].startswith("examples/"):
        assert (ROOT / words[1]).is_file(), f"`{command}`: no such example"   # run by test_examples.py
        return
    if words[0] in {"python", "python3"} and words[1:3] == ["-m", "pytest"]:
        return   # the test command itself: CI runs exactly this line
    if words[0] == "bash" and len(words) > 1:
        assert (ROOT / words[1]).is_file(), f"`{command}`: no such script"   # run by .ci/run
        return
    if words[0] == "sony-rag":
        done = subprocess.run(words, capture_output=True, text=True, timeout=300, input="",
                              env=_environment(database_url), cwd=ROOT, check=False)
        assert done.returncode == 0, f"`{command}` exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
        return
    raise AssertionError(f"`{command}` in the docs is neither run nor checked here: teach test_docs.py about it")


@pytest.mark.parametrize(("path", "code", "line"), block_ids({"bash", "sh", "console"}),
                         ids=lambda value: value.name if isinstance(value, Path) else
                         (str(value) if isinstance(value, int) else ""))
def test_shell_block_commands_exist_and_run(db: Database, database_url: str, path: Path, code: str,
                                            line: int) -> None:
    for raw in code.splitlines():
        text = raw.strip().removeprefix("$ ")
        if not text or text.startswith("#"):
            continue
        for command in text.split("&&"):
            _check_command(command.strip(), database_url)


def _cli_words(parser: argparse.ArgumentParser, prefix: str = "") -> list[str]:
    """Return every subcommand path ('sessions list') and long option ('--k') the CLI accepts."""
    words: list[str] = []
    for action in parser._actions:
        words.extend(option for option in action.option_strings if option.startswith("--") and option != "--help")
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                words.append(f"{prefix}{name}".strip())
                words.extend(_cli_words(sub, f"{prefix}{name} "))
    return words


def test_every_cli_command_and_option_is_in_the_readme() -> None:
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    missing = sorted({word for word in _cli_words(build_parser()) if word not in readme})
    assert not missing, f"README.md does not mention: {missing}"
