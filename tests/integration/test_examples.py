"""Each example runs as ``python examples/NAME.py`` on the test database with the fake embeddings."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from helpers import env_without_shop_extra

from sony_rag.cli import EXIT_USAGE
from sony_rag.database import Database

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def run_example(name: str, database_url: str, *args: str) -> str:
    """Run one example and return its standard output; fails the test on a non-zero exit."""
    env = {**os.environ, "DATABASE_URL": database_url, "SONY_RAG_EMBEDDINGS": "fake"}
    env.pop("SONY_RAG_CHAT_MODEL", None)
    done = subprocess.run([sys.executable, str(EXAMPLES / name), *args], capture_output=True, text=True,
                          timeout=180, env=env, check=False, cwd=EXAMPLES.parent)
    assert done.returncode == 0, f"{name} failed:\n{done.stdout}\n{done.stderr}"
    assert "Traceback" not in done.stderr
    return done.stdout


def test_quickstart(db: Database, database_url: str) -> None:
    out = run_example("quickstart.py", database_url)
    assert "catalog: 82 products, 82 written, 0 unchanged" in out
    assert "Ekeby Oak Dining Table (TB-2040), $1,150" in out.split("products under $1500", 1)[1]
    prices = [float(price.replace(",", "")) for price in re.findall(r"\$([\d,]+), ", out)]
    assert len(prices) == 3 and all(price < 1500 for price in prices)
    again = run_example("quickstart.py", database_url)
    assert "82 written" not in again and "82 unchanged" in again


def test_agent_remembers_the_first_run(db: Database, database_url: str) -> None:
    first = run_example("agent.py", database_url)
    session_id = re.search(r"session ([0-9a-f-]{36}): a new conversation", first)
    assert session_id is not None, first
    assert "offline answerer" in first and "[product:ekeby-oak-dining-table]" in first
    second = run_example("agent.py", database_url, "--session", session_id.group(1))
    assert "1 earlier question(s), the last: 'Do you have a solid oak dining table that seats six?'" in second
    assert 'earlier you asked "Do you have a solid oak dining table that seats six?"' in second
    assert "[policy:warranty]" in second


def test_rag_chain(db: Database, database_url: str) -> None:
    out = run_example("rag_chain.py", database_url)
    assert "the shopper highlighted: 'Free shipping on orders over $500'" in out
    assert out.count("assistant> ") == 2
    assert "4 messages stored in session" in out and "the first: 'Does this apply here?'" in out
    assert re.search(r"first source cited: \[[a-z_]+:[a-z0-9-]+\]", out)


def test_demo(db: Database, database_url: str) -> None:
    out = run_example("demo.py", database_url)
    assert "2. ingest" in out and "0 unchanged" in out
    assert out.count("you> ") == 3 and out.count("Sources: ") == 3
    assert "the offline answerer" in out
    assert "[product:solvik-loveseat]" in out and "[faq:faq-shipping-cost]" in out and "[policy:returns]" in out
    assert re.search(r"sony-rag chat --session\s+[0-9a-f-]{36}", out)


@pytest.mark.parametrize("name", ["agent.py", "rag_chain.py", "demo.py"])
def test_an_example_of_the_shop_says_what_to_install_without_its_extra(tmp_path: Path, name: str) -> None:
    """Without langchain (the shop extra) the example exits as ``sony-rag chat`` does: one line naming the extra."""
    env = env_without_shop_extra(tmp_path, DATABASE_URL="postgresql://nobody@127.0.0.1:9/none",
                                 SONY_RAG_EMBEDDINGS="fake")
    done = subprocess.run([sys.executable, str(EXAMPLES / name)], capture_output=True, text=True, timeout=120,
                          env=env, check=False, cwd=EXAMPLES.parent)
    assert done.returncode == EXIT_USAGE, done.stderr
    assert "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines() == [
        f"error: examples/{name} needs the shop application's extra: pip install 'sony-rag[shop]'"]
    assert done.stdout == ""


@pytest.mark.parametrize("name", ["quickstart.py", "agent.py", "rag_chain.py", "demo.py"])
def test_examples_document_how_to_run_them(name: str) -> None:
    text = (EXAMPLES / name).read_text(encoding="utf-8")
    assert f"python examples/{name}" in text
