"""The command's plain-text output: tables laid out in the width, user text printed as typed, styles on terminals."""

from __future__ import annotations

import io

import pytest

from sony_rag.console import Console, ProgressLine, Table


class Terminal(io.StringIO):
    """A captured stream that says it is a terminal."""

    def isatty(self) -> bool:
        """Return True."""
        return True


def test_a_table_aligns_its_columns_and_wraps_the_last_within_the_width() -> None:
    table = Table(title="2 match(es)")
    table.add_column("#", justify="right")
    table.add_column("similarity", justify="right")
    table.add_column("source and text", max_width=90)
    table.add_row("1", "0.912", "product:hallwyl\n" + "a generous three-seater in cream boucle " * 4)
    table.add_row("10", "0.5", "faq:x\nshort")
    lines = table.lines(width=60)
    assert lines[:3] == ["2 match(es)", " #  similarity  source and text", "--  ----------  " + "-" * 44]
    assert lines[3] == " 1       0.912  product:hallwyl"
    assert all(len(line) <= 60 for line in lines)
    assert all(line.startswith(" " * 16) for line in lines[4:-2])  # wrapped text stays in its column
    assert " ".join(" ".join(line.split()) for line in lines[4:-2]) == " ".join(("a generous three-seater in cream "
                                                                                  "boucle " * 4).split())
    assert lines[-2:] == ["10         0.5  faq:x", "                short"]


def test_a_narrow_last_column_keeps_its_own_width() -> None:
    table = Table()
    table.add_column("index")
    table.add_column("size", justify="right")
    table.add_row("idx_document_embeddings_source", "16.0 kB")
    assert table.lines(width=80)[-1] == "idx_document_embeddings_source  16.0 kB"


def test_a_row_must_fill_every_column() -> None:
    table = Table()
    table.add_column("a")
    with pytest.raises(ValueError, match="1 column"):
        table.add_row("x", "y")


def test_user_text_is_printed_as_typed_and_unstyled_off_a_terminal(monkeypatch: pytest.MonkeyPatch) -> None:
    piped = io.StringIO()
    monkeypatch.setattr("sys.stdout", piped)
    Console().print(("error: ", "bold red"), "sofa [/] [bold]x[/bold] :sofa:")
    assert piped.getvalue() == "error: sofa [/] [bold]x[/bold] :sofa:\n"


def test_styles_are_ansi_codes_on_a_terminal_unless_no_color(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.delenv("NO_COLOR", raising=False)
    monkeypatch.setenv("TERM", "xterm")
    Console(stderr=True).print(("error: ", "bold red"), "[red]plain[/red]")
    assert terminal.getvalue() == "\x1b[1;31merror: \x1b[0m[red]plain[/red]\n"
    monkeypatch.setenv("NO_COLOR", "1")
    assert Console(stderr=True).render(("error: ", "bold red")) == "error: "


def test_status_shows_on_a_terminal_only(monkeypatch: pytest.MonkeyPatch) -> None:
    piped = io.StringIO()
    monkeypatch.setattr("sys.stderr", piped)
    with Console(stderr=True).status("loading the embedding model"):
        pass
    assert piped.getvalue() == ""
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    monkeypatch.setenv("NO_COLOR", "1")
    with Console(stderr=True).status("loading the embedding model"):
        assert terminal.getvalue() == "loading the embedding model..."
    assert terminal.getvalue().endswith("\r\x1b[K")


def test_progress_counts_rows_and_ends_its_line(monkeypatch: pytest.MonkeyPatch) -> None:
    terminal = Terminal()
    monkeypatch.setattr("sys.stderr", terminal)
    with ProgressLine(Console(stderr=True), interval=0.0) as progress:
        progress.start(128)
        progress.advance(64)
        assert "[###############...............] 64/128" in progress.text()
        progress.advance(64)
    last = terminal.getvalue().rsplit("\r\x1b[K", 1)[1]
    assert last.startswith("embedding + writing [" + "#" * 30 + "] 128/128 ") and "rows/s" in last
    assert last.endswith("\n")


def test_input_prints_the_prompt_then_reads_a_line(monkeypatch: pytest.MonkeyPatch) -> None:
    piped = io.StringIO()
    monkeypatch.setattr("sys.stdout", piped)
    monkeypatch.setattr("sys.stdin", io.StringIO("y\n"))
    assert Console().input("delete these 1 session(s)? [y/N] ") == "y"
    assert piped.getvalue() == "delete these 1 session(s)? [y/N] "
