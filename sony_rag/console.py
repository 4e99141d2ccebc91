"""Plain-text output of the ``sony-rag`` command: lines, tables, a progress line and a status line.

Nothing printed is ever read as markup: queries, chunks and messages are the user's text, and ``[/]`` or
``:sofa:`` in them print as typed. Styles (bold, colours) are ANSI codes on a terminal only, and never when
``NO_COLOR`` is set or ``TERM`` is ``dumb``; piped output is plain text. Standard library only, so the command
starts quickly and the library needs no formatting package.
"""

from __future__ import annotations

import os
import shutil
import sys
import textwrap
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import IO, Final, Literal

Part = str | tuple[str, str]
"""A piece of a line: plain text, or ``(text, style)`` with a style such as ``"bold red"``."""

_SGR: Final = {"bold": "1", "dim": "2", "red": "31", "green": "32", "yellow": "33", "cyan": "36"}
_DEFAULT_WIDTH: Final = 80  # when the output is not a terminal (as rich did)
_GAP: Final = "  "


class Console:
    """One output stream (stdout or stderr), resolved when printing so redirections made later still apply."""

    def __init__(self, *, stderr: bool = False) -> None:
        """Write to standard error when ``stderr``, else standard output."""
        self.stderr = stderr

    @property
    def stream(self) -> IO[str]:
        """Return the stream written to now."""
        return sys.stderr if self.stderr else sys.stdout

    @property
    def is_terminal(self) -> bool:
        """Return True when the stream is a terminal."""
        isatty = getattr(self.stream, "isatty", None)
        return bool(isatty and isatty())

    @property
    def color(self) -> bool:
        """Return True when styles are drawn (a terminal, no ``NO_COLOR``, not a dumb terminal)."""
        return self.is_terminal and "NO_COLOR" not in os.environ and os.environ.get("TERM") != "dumb"

    @property
    def width(self) -> int:
        """Return the width to lay tables out in: the terminal's, else 80 columns."""
        if not self.is_terminal:
            return _DEFAULT_WIDTH
        return shutil.get_terminal_size((_DEFAULT_WIDTH, 24)).columns

    def render(self, *parts: Part) -> str:
        """Return ``parts`` joined into one string, styled when the console draws styles."""
        pieces = []
        for part in parts:
            text, style = (part, "") if isinstance(part, str) else part
            codes = [_SGR[word] for word in style.split() if word in _SGR] if self.color else []
            pieces.append(f"\x1b[{';'.join(codes)}m{text}\x1b[0m" if codes and text else text)
        return "".join(pieces)

    def print(self, *parts: Part) -> None:
        """Print one line made of ``parts``."""
        stream = self.stream
        stream.write(self.render(*parts) + "\n")
        stream.flush()

    def input(self, *prompt: Part) -> str:
        """Print ``prompt`` (no newline), then return the line read from standard input; raises EOFError."""
        stream = self.stream
        stream.write(self.render(*prompt))
        stream.flush()
        return input()

    @contextmanager
    def status(self, message: str) -> Iterator[None]:
        """Show ``message`` on one line while the block runs (on a terminal; elsewhere nothing), then clear it."""
        if not self.is_terminal:
            yield
            return
        stream = self.stream
        stream.write(self.render((message + "...", "dim")))
        stream.flush()
        try:
            yield
        finally:
            stream.write("\r\x1b[K")
            stream.flush()


@dataclass
class Column:
    """A table column: its header, alignment, and the widest it may grow (wider cells are wrapped)."""

    header: str
    justify: Literal["left", "right"] = "left"
    max_width: int | None = None


@dataclass
class Table:
    """A plain-text table: a title line, a header, a rule, and rows whose cells may span several lines."""

    title: str = ""
    columns: list[Column] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)

    def add_column(self, header: str, justify: Literal["left", "right"] = "left",
                   max_width: int | None = None) -> None:
        """Add a column."""
        self.columns.append(Column(header, justify, max_width))

    def add_row(self, *cells: str) -> None:
        """Add a row, one string per column (``\\n`` starts a new line within the cell)."""
        if len(cells) != len(self.columns):
            raise ValueError(f"a row of {len(cells)} cell(s) in a table of {len(self.columns)} column(s)")
        self.rows.append(list(cells))

    def lines(self, width: int = _DEFAULT_WIDTH) -> list[str]:
        """Return the table laid out in ``width`` columns (the last column wraps to fit, as narrow as 20)."""
        widths = [max([len(column.header)] + [len(line) for row in self.rows for line in row[index].split("\n")])
                  for index, column in enumerate(self.columns)]
        for index, column in enumerate(self.columns):
            if column.max_width is not None:
                widths[index] = min(widths[index], max(column.max_width, len(column.header)))
        if widths:
            others = sum(widths[:-1]) + len(_GAP) * (len(widths) - 1)
            widths[-1] = max(min(widths[-1], width - others), min(widths[-1], 20), len(self.columns[-1].header))
        out = [self.title] if self.title else []
        out.append(self._line([column.header for column in self.columns], widths))
        out.append(_GAP.join("-" * size for size in widths).rstrip())
        for row in self.rows:
            cells = [_wrap(cell, size) for cell, size in zip(row, widths, strict=True)]
            for number in range(max(len(cell) for cell in cells)):
                out.append(self._line([cell[number] if number < len(cell) else "" for cell in cells], widths))
        return out

    def _line(self, cells: Sequence[str], widths: Sequence[int]) -> str:
        padded = [cell.rjust(size) if column.justify == "right" else cell.ljust(size)
                  for cell, size, column in zip(cells, widths, self.columns, strict=True)]
        return _GAP.join(padded).rstrip()

    def print(self, console: Console) -> None:
        """Print the table on ``console`` at its width."""
        for line in self.lines(console.width):
            console.print(line)


def _wrap(cell: str, width: int) -> list[str]:
    lines: list[str] = []
    for line in cell.split("\n"):
        # Long words (ids, URLs) are folded rather than overflowing the column.
        lines.extend(textwrap.wrap(line, width, break_long_words=True, break_on_hyphens=False) or [""])
    return lines


class ProgressLine:
    """Ingestion progress redrawn on one terminal line: a bar, rows done of the total, rows per second, time."""

    def __init__(self, console: Console, description: str = "embedding + writing", *,
                 interval: float = 0.1) -> None:
        """Draw on ``console`` (a terminal), at most every ``interval`` seconds."""
        self.console = console
        self.description = description
        self.interval = interval
        self.total = 0
        self.completed = 0
        self._started = time.monotonic()
        self._drawn = 0.0

    def __enter__(self) -> ProgressLine:
        self._started = time.monotonic()
        return self

    def __exit__(self, *exc: object) -> None:
        if self.total:
            self._draw(final=True)

    def start(self, total: int) -> None:
        """Start the bar for ``total`` rows."""
        self.total = total
        self._started = time.monotonic()
        if total:
            self._draw()

    def advance(self, rows: int) -> None:
        """Advance the bar by ``rows``."""
        self.completed += rows
        if time.monotonic() - self._drawn >= self.interval or self.completed >= self.total:
            self._draw()

    def text(self) -> str:
        """Return the progress line as text (without the carriage return)."""
        elapsed = max(time.monotonic() - self._started, 1e-9)
        share = min(self.completed / self.total, 1.0) if self.total else 1.0
        filled = int(share * 30)
        rate = f"{self.completed / elapsed:,.0f} rows/s" if self.completed else "- rows/s"
        minutes, seconds = divmod(int(elapsed), 60)
        return (f"{self.description} [{'#' * filled}{'.' * (30 - filled)}] {self.completed}/{self.total} "
                f"{rate} {minutes // 60}:{minutes % 60:02d}:{seconds:02d}")

    def _draw(self, final: bool = False) -> None:
        self._drawn = time.monotonic()
        stream = self.console.stream
        stream.write("\r\x1b[K" + self.text() + ("\n" if final else ""))
        stream.flush()


__all__ = ["Column", "Console", "Part", "ProgressLine", "Table"]
