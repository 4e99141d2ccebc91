"""Ingestion of catalog files into ``document_embeddings``: read, chunk, embed, and replace by source.

Formats:

* **JSONL**, one record per line. The library reads the generic form ``{"source_id": ..., "text" | "content":
  ..., "metadata": {...}}`` (``id`` may stand for ``source_id``; a record may carry its own ``source_type``;
  other keys are kept in the metadata). Other forms are record shapes (``RecordShape``) that installed packages
  register under the entry-point group ``sony_rag.record_shapes``: the shop application registers a product
  (``name``, ``description``, ...) and an FAQ entry (``question``, ``answer``), the layout of
  ``examples/data/`` (``sony_shop.records``). Blank lines are ignored.
* **CSV** with a header row: each row is read as a record of the same forms (a ``metadata`` column holds a
  JSON object; a shape may convert its own columns, such as a product's ``price``).
* **Markdown** (``.md``) and **text** (``.txt``) files: one source each, its id the file stem; Markdown
  is split at ``#``/``##``/``###`` headings first.

Source type: ``--source-type`` if given, else the record's ``source_type``, else inferred from the path
(a file named ``products*`` -> ``product``, ``faq*`` -> ``faq``, or a folder named ``policies`` ->
``policy``, ``pages`` -> ``page_content``, ``products`` -> ``product``, ``faq``/``faqs`` -> ``faq``),
else from the record's shape (``RecordShape.source_type``); a generic record or a Markdown/text file that none
of these place is a bad record.

Chunks: ``RecursiveCharacterTextSplitter`` (800 characters, 100 overlap; MiniLM reads about 256 tokens).
Each chunk's metadata is the record's metadata plus ``source_type``, ``source_id``, ``title``, ``chunk``,
``chunks``, ``source_file``, ``embedding_model`` and ``content_hash`` (these names are reserved).

Idempotence: a source is ``(source_type, source_id)``. Its ``content_hash`` covers its chunks' text and
metadata and the embedding model's name. A source whose stored chunks all carry that hash (and are as many)
is skipped without embedding anything, decided before any model is loaded (``get_embeddings()`` loads the
real model on first use only), so an ingest that changes nothing takes well under a second. Any other is
replaced: its old chunks are deleted and the new ones written by binary COPY in one transaction, so a
reader never sees it half-replaced. Running the same files
twice therefore changes nothing, and editing one record replaces that record's chunks only. Sources that
disappeared from a file are not deleted (use ``delete_embeddings_by_source``).

One model per table: when something is to be written and the table holds chunks whose ``embedding_model``
is another model's, ``EmbeddingModelMismatchError`` is raised before anything is embedded or written, with
the command that re-embeds everything (``sony-rag ingest --reembed PATH...``; ``reembed=True`` here).
``reembed`` re-embeds every source of the given files and replaces other models' chunks of those sources;
it still refuses when other models' chunks of sources outside these files would remain, since it never
deletes a source it was not given.

Bad records (invalid JSON, a missing field, a duplicate id, an unknown source type): every file is read and
checked before anything is written. With ``on_error="stop"`` (the default) any bad record raises
``BadRecordError`` listing each as ``file:line: reason`` and nothing at all is written; with
``on_error="skip"`` the bad records are left out, reported in ``IngestReport.errors``, and the rest is
written. Either way a record is written whole or not at all.
"""

from __future__ import annotations

import csv
import functools
import hashlib
import json
import shlex
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Literal, Protocol

from langchain_core.embeddings import Embeddings
from langchain_text_splitters import MarkdownHeaderTextSplitter, RecursiveCharacterTextSplitter
from psycopg.types.json import Jsonb

from sony_rag import plans
from sony_rag import validation as check
from sony_rag.database import Database
from sony_rag.embeddings import FAKE_MODEL_NAME, LOCAL_MODEL_NAME, embeddings_name
from sony_rag.errors import (
    BadRecordError,
    ConfigurationError,
    EmbeddingModelMismatchError,
    InvalidEmbeddingError,
    InvalidInputError,
)
from sony_rag.types import SOURCE_TYPES

OnError = Literal["skip", "stop"]

CHUNK_SIZE: Final = 800
CHUNK_OVERLAP: Final = 100
# Rows embedded and written per transaction: COPY pays off from a few dozen rows, and with the real model
# (tens of rows per second on a laptop CPU) a batch this size moves the progress bar every second or two.
BATCH_ROWS: Final = 64
SUFFIXES: Final = frozenset({".jsonl", ".csv", ".md", ".markdown", ".txt"})
RESERVED_KEYS: Final = ("source_type", "source_id", "title", "chunk", "chunks", "source_file", "embedding_model",
                        "content_hash")

_FILE_PREFIXES: Final = (("product", "product"), ("faq", "faq"))
_FOLDERS: Final = {"policies": "policy", "policy": "policy", "pages": "page_content", "page_content": "page_content",
                   "products": "product", "faq": "faq", "faqs": "faq"}
SHAPES_GROUP: Final = "sony_rag.record_shapes"
_NO_SHAPES_HINT: Final = (f"no record shape is installed under the entry points {SHAPES_GROUP}, which an editable "
                          "install registers when `pip install -e .` runs")


@dataclass(frozen=True)
class RecordShape:
    """A kind of record that ingest recognises by its keys and turns into a text and its metadata.

    A record holding every one of ``keys`` has this shape; ``read(record)`` returns ``(text, metadata)`` or
    raises InvalidInputError (a bad record). ``from_csv(record)`` first converts a CSV row's text values (numbers,
    lists), raising InvalidInputError. ``source_type`` is the type implied when neither ``--source-type``, the
    record nor its path names one. Register one under the entry-point group ``sony_rag.record_shapes``.
    """

    name: str
    keys: tuple[str, ...]
    read: Callable[[Mapping[str, Any]], tuple[str, dict[str, Any]]]
    source_type: str | None = None
    from_csv: Callable[[dict[str, Any]], dict[str, Any]] | None = None

    def matches(self, record: Mapping[str, Any]) -> bool:
        """Return True when ``record`` holds every key of this shape."""
        return all(key in record for key in self.keys)

    def describe(self) -> str:
        """Return the shape as a reader names it, e.g. ``product (name, description)``."""
        return f"{self.name} ({', '.join(self.keys)})"


@functools.cache
def registered_shapes() -> tuple[RecordShape, ...]:
    """Return the record shapes that installed packages register, by name; raises ConfigurationError for a bad one."""
    from importlib.metadata import entry_points

    shapes: list[RecordShape] = []
    for point in entry_points(group=SHAPES_GROUP):
        shape = point.load()
        if not isinstance(shape, RecordShape):
            raise ConfigurationError(f"the entry point {point.name} = {point.value} of {SHAPES_GROUP} is not a "
                                     "RecordShape")
        shapes.append(shape)
    return tuple(sorted(shapes, key=lambda shape: shape.name.casefold()))


@dataclass(frozen=True)
class RecordError:
    """A record that could not be ingested: where it is (``line`` 0 means the whole file) and why."""

    path: str
    line: int
    message: str

    def __str__(self) -> str:
        return f"{self.path}:{self.line}: {self.message}" if self.line else f"{self.path}: {self.message}"

    def as_dict(self) -> dict[str, Any]:
        """Return the error as a JSON-ready dict."""
        return {"path": self.path, "line": self.line, "message": self.message}


@dataclass
class Source:
    """One source ready to embed: its chunks and their metadata (content hash included)."""

    source_type: str
    source_id: str
    chunks: list[str]
    metadatas: list[dict[str, Any]]
    content_hash: str
    location: str

    @property
    def key(self) -> tuple[str, str]:
        """Return ``(source_type, source_id)``."""
        return self.source_type, self.source_id


@dataclass
class IngestReport:
    """What an ingestion did: counts of sources and chunks, the records skipped, and its speed."""

    files: list[str] = field(default_factory=list)
    sources: int = 0
    written: int = 0
    unchanged: int = 0
    chunks_written: int = 0
    chunks_deleted: int = 0
    errors: list[RecordError] = field(default_factory=list)
    seconds: float = 0.0
    embedding_model: str = ""
    # What ingest did to the vector index, when it rebuilt one trained on far fewer rows than the table now holds.
    index_rebuilt: str | None = None

    @property
    def rows_per_second(self) -> float:
        """Return chunks written per second of the run (0 when nothing was written)."""
        return self.chunks_written / self.seconds if self.seconds > 0 else 0.0

    def as_dict(self) -> dict[str, Any]:
        """Return the report as a JSON-ready dict."""
        return {"files": self.files, "sources": self.sources, "written": self.written, "unchanged": self.unchanged,
                "chunks_written": self.chunks_written, "chunks_deleted": self.chunks_deleted,
                "skipped": [error.as_dict() for error in self.errors], "seconds": round(self.seconds, 3),
                "rows_per_second": round(self.rows_per_second, 1), "embedding_model": self.embedding_model,
                "index_rebuilt": self.index_rebuilt}


class Progress(Protocol):
    """Receives ingestion progress (the CLI draws a bar with rows per second from it)."""

    def start(self, total: int) -> None:
        """Called once with the number of chunks that will be embedded and written."""

    def advance(self, rows: int) -> None:
        """Called after each batch of ``rows`` chunks is committed."""


def bad_records_error(errors: Sequence[RecordError]) -> BadRecordError:
    """Return the BadRecordError listing ``errors`` (each as ``file:line: reason``), for ``on_error="stop"``."""
    shown = "\n".join(f"  {error}" for error in errors[:20])
    more = f"\n  ... and {len(errors) - 20} more" if len(errors) > 20 else ""
    return BadRecordError(f"{len(errors)} bad record(s), so nothing was written (--on-error skip writes the "
                          f"others):\n{shown}{more}", errors)


# -- reading ---------------------------------------------------------------------------------------------


def expand_paths(paths: Sequence[str | Path]) -> list[Path]:
    """Return the files to read: given files as they are, folders walked (README files skipped), sorted.

    Raises InvalidInputError for a missing path, a file of an unsupported kind, or nothing to read.
    """
    files: list[Path] = []
    for given in paths:
        path = Path(given)
        if path.is_dir():
            for found in sorted(path.rglob("*")):
                if (found.is_file() and found.suffix.lower() in SUFFIXES and not found.name.startswith(".")
                        and not found.stem.upper().startswith("README")):
                    files.append(found)
        elif path.is_file():
            if path.suffix.lower() not in SUFFIXES:
                raise InvalidInputError(f"{path}: unsupported file type (use {', '.join(sorted(SUFFIXES))})")
            files.append(path)
        else:
            raise InvalidInputError(f"{path}: no such file or directory")
    unique = list(dict.fromkeys(files))
    if not unique:
        raise InvalidInputError(f"no {', '.join(sorted(SUFFIXES))} files found in {', '.join(map(str, paths))}")
    return unique


def infer_source_type(path: Path) -> str | None:
    """Return the source type a path implies (file name, then folder names), or None."""
    stem = path.stem.lower()
    for prefix, source_type in _FILE_PREFIXES:
        if stem.startswith(prefix):
            return source_type
    for folder in reversed(path.parent.parts):
        if folder.lower() in _FOLDERS:
            return _FOLDERS[folder.lower()]
    return None


def read_sources(paths: Sequence[str | Path], embedding_model: str, *, source_type: str | None = None,
                 shapes: Sequence[RecordShape] | None = None) -> tuple[list[Source], list[RecordError], list[Path]]:
    """Return the sources in ``paths`` (chunked, hashed), the bad records found, and the files read.

    ``shapes`` are the record shapes besides the generic one, tried in order (default: ``registered_shapes()``).
    Raises InvalidInputError for a bad path or source type (not for bad records: those are returned).
    """
    if source_type is not None:
        check.source_type(source_type)
    known = registered_shapes() if shapes is None else tuple(shapes)
    files = expand_paths(paths)
    sources: list[Source] = []
    errors: list[RecordError] = []
    seen: dict[tuple[str, str], str] = {}
    for path in files:
        for item in _read_file(path, source_type, embedding_model, known):
            if isinstance(item, RecordError):
                errors.append(item)
                continue
            first = seen.get(item.key)
            if first is not None:
                line = int(item.location.rsplit(":", 1)[1])
                errors.append(RecordError(str(path), line, f"duplicate {item.source_type} source_id "
                                                           f"{item.source_id!r} (first at {first})"))
                continue
            seen[item.key] = item.location
            sources.append(item)
    return sources, errors, files


def _read_file(path: Path, source_type: str | None, model: str,
               shapes: tuple[RecordShape, ...]) -> Iterator[Source | RecordError]:
    suffix = path.suffix.lower()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except UnicodeDecodeError as error:
        yield RecordError(str(path), 0, f"not UTF-8 text ({error.reason} at byte {error.start})")
        return
    except OSError as error:
        yield RecordError(str(path), 0, f"cannot read: {error.strerror or error}")
        return
    if suffix in (".md", ".markdown", ".txt"):
        yield _document_source(path, text, source_type, model)
    elif suffix == ".jsonl":
        for line_number, line in enumerate(text.splitlines(), start=1):
            if line.strip():
                yield _jsonl_record(path, line_number, line, source_type, model, shapes)
    else:
        yield from _csv_records(path, text, source_type, model, shapes)


def _jsonl_record(path: Path, line: int, text: str, source_type: str | None, model: str,
                  shapes: tuple[RecordShape, ...]) -> Source | RecordError:
    try:
        record = json.loads(text)
    except json.JSONDecodeError as error:
        return RecordError(str(path), line, f"invalid JSON: {error.msg} (column {error.colno})")
    if not isinstance(record, dict):
        return RecordError(str(path), line, f"expected a JSON object, got {type(record).__name__}")
    return _record_source(path, line, record, source_type, model, shapes)


def _csv_records(path: Path, text: str, source_type: str | None, model: str,
                 shapes: tuple[RecordShape, ...]) -> Iterator[Source | RecordError]:
    reader = csv.DictReader(text.splitlines(keepends=True), strict=True)
    end_line = 1
    while True:
        start_line = end_line + 1
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as error:
            yield RecordError(str(path), reader.line_num, f"invalid CSV: {error}")
            return
        end_line = reader.line_num
        if None in row or any(value is None for value in row.values()):
            yield RecordError(str(path), start_line, f"expected {len(reader.fieldnames or [])} columns as in the "
                                                     "header")
            continue
        record, problem = _csv_values(row)
        if problem is not None:
            yield RecordError(str(path), start_line, problem)
            continue
        if any(value not in ("", None) for value in record.values()):
            yield _record_source(path, start_line, record, source_type, model, shapes, from_csv=True)


def _csv_values(row: Mapping[str, str]) -> tuple[dict[str, Any], str | None]:
    # Values stay text: a record shape converts its own columns (RecordShape.from_csv).
    record: dict[str, Any] = {}
    for key, value in row.items():
        key = key.strip()
        value = value.strip()
        if key == "metadata":
            if value:
                try:
                    record["metadata"] = json.loads(value)
                except json.JSONDecodeError as error:
                    return record, f"metadata column is not JSON: {error.msg}"
        elif value or key in ("text", "content"):
            record[key] = value
    return record, None


def _record_source(path: Path, line: int, record: dict[str, Any], source_type: str | None, model: str,
                   shapes: tuple[RecordShape, ...], *, from_csv: bool = False) -> Source | RecordError:
    try:
        shape = next((shape for shape in shapes if shape.matches(record)), None)
        if shape is not None:
            if from_csv and shape.from_csv is not None:
                record = shape.from_csv(record)
            text, metadata = shape.read(record)
        elif "text" in record or "content" in record:
            text, metadata = _generic(record)
        else:
            forms = [described.describe() for described in shapes] + ["generic record (text or content)"]
            # An editable install registers entry points only when `pip install -e .` runs again.
            hint = f"; {_NO_SHAPES_HINT}" if not shapes and not registered_shapes() else ""
            raise InvalidInputError(f"expected one of: {', '.join(forms)}{hint}")
        kind = (source_type or record.get("source_type") or infer_source_type(path)
                or (shape.source_type if shape is not None else None))
        if kind is None:
            raise InvalidInputError(f"cannot tell the source type from the path {path}: pass --source-type "
                                    f"({', '.join(sorted(SOURCE_TYPES))}) or give each record a source_type")
        kind = check.source_type(kind)
        source_id = _source_id(record)
        chunks = _splitter().split_text(text)
        return _source(kind, source_id, chunks, metadata, path, line, model)
    except InvalidInputError as error:
        return RecordError(str(path), line, str(error))


def _source_id(record: Mapping[str, Any]) -> str:
    value = record.get("source_id", record.get("id"))
    if isinstance(value, int) and not isinstance(value, bool):
        value = str(value)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError("missing id: give each record a non-empty string \"id\" or \"source_id\"")
    return check.required_text(value.strip(), "id")


def required_field(record: Mapping[str, Any], key: str) -> str:
    """Return the record's ``key`` stripped; raises InvalidInputError unless it is a non-empty string without NUL."""
    value = record.get(key)
    if not isinstance(value, str) or not value.strip():
        raise InvalidInputError(f"{key!r} must be a non-empty string")
    return check.required_text(value.strip(), key)


def record_metadata(record: Mapping[str, Any], used: Sequence[str]) -> dict[str, Any]:
    """Return a record's metadata: its keys but ``used`` and the ids, merged with its ``metadata`` object.

    Raises InvalidInputError when ``metadata`` is not an object.
    """
    metadata = {key: value for key, value in record.items()
                if key not in used and key not in ("id", "source_id", "source_type", "metadata")}
    nested = record.get("metadata")
    if nested is not None:
        if not isinstance(nested, dict):
            raise InvalidInputError(f"metadata must be a JSON object, got {type(nested).__name__}")
        metadata.update(nested)
    return metadata


def _generic(record: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    key = "text" if "text" in record else "content"
    text = required_field(record, key)
    metadata = record_metadata(record, ("text", "content"))
    metadata.setdefault("title", _first_line(text))
    return text, metadata


def _document_source(path: Path, text: str, source_type: str | None, model: str) -> Source | RecordError:
    try:
        kind = source_type or infer_source_type(path)
        if kind is None:
            raise InvalidInputError(f"cannot tell the source type from the path: pass --source-type "
                                    f"({', '.join(sorted(SOURCE_TYPES))}) or put it in a pages/ or policies/ "
                                    "folder")
        kind = check.source_type(kind)
        check.required_text(text, str(path))
        if not text.strip():
            raise InvalidInputError("the file is empty")
        if path.suffix.lower() == ".txt":
            title = _first_line(text)
            chunks = _splitter().split_text(text)
            sections: list[str | None] = [None] * len(chunks)
        else:
            title, chunks, sections = _markdown_chunks(text, path.stem)
        extras = [{"section": section} if section else {} for section in sections]
        return _source(kind, path.stem, chunks, {"title": title}, path, 1, model, extras)
    except InvalidInputError as error:
        return RecordError(str(path), 0, str(error))


def _markdown_chunks(text: str, fallback_title: str) -> tuple[str, list[str], list[str | None]]:
    headers = [("#", "h1"), ("##", "h2"), ("###", "h3")]
    sections = MarkdownHeaderTextSplitter(headers, strip_headers=False).split_text(text)
    title = next((str(doc.metadata["h1"]) for doc in sections if doc.metadata.get("h1")), fallback_title)
    chunks: list[str] = []
    names: list[str | None] = []
    splitter = _splitter()
    for section in sections:
        # The splitter joins a section's lines with "  \n" (a Markdown hard break); plain newlines read better.
        body = section.page_content.replace("  \n", "\n").strip()
        if not body:
            continue
        name = " > ".join(str(section.metadata[key]) for key in ("h2", "h3") if section.metadata.get(key))
        # The page title goes in front of each section so that a chunk alone still says what it is about.
        prefix = f"{title}\n" if name else ""
        for piece in splitter.split_text(body):
            chunks.append(prefix + piece)
            names.append(name or None)
    if not chunks:
        raise InvalidInputError("the file has no text")
    return title, chunks, names


def _first_line(text: str) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line.lstrip("#").strip()[:120]


@functools.cache
def _splitter() -> RecursiveCharacterTextSplitter:
    return RecursiveCharacterTextSplitter(chunk_size=CHUNK_SIZE, chunk_overlap=CHUNK_OVERLAP)


def _source(source_type: str, source_id: str, chunks: list[str], metadata: dict[str, Any], path: Path, line: int,
            model: str, extras: Sequence[Mapping[str, Any]] | None = None) -> Source:
    if not chunks:
        raise InvalidInputError("the record has no text")
    metadatas = []
    for index, chunk in enumerate(chunks):
        check.required_text(chunk, "text")
        chunk_metadata = {**metadata, **(extras[index] if extras else {}), "source_type": source_type,
                          "source_id": source_id, "chunk": index, "chunks": len(chunks), "source_file": path.name,
                          "embedding_model": model}
        metadatas.append(check.metadata(chunk_metadata))
    source = Source(source_type, source_id, chunks, metadatas, "", f"{path}:{line}")
    source.content_hash = _content_hash(source, model)
    for chunk_metadata in metadatas:
        chunk_metadata["content_hash"] = source.content_hash
    return source


def _content_hash(source: Source, model: str) -> str:
    content = [[chunk, {k: v for k, v in meta.items() if k != "content_hash"}]
               for chunk, meta in zip(source.chunks, source.metadatas, strict=True)]
    payload = json.dumps({"model": model, "source_type": source.source_type, "source_id": source.source_id,
                          "chunks": content}, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()[:32]


# -- writing ---------------------------------------------------------------------------------------------


def ingest_paths(db: Database, paths: Sequence[str | Path], embeddings: Embeddings, *,
                 source_type: str | None = None, on_error: OnError = "stop", batch_rows: int = BATCH_ROWS,
                 progress: Progress | None = None, reembed: bool = False, rebuild_stale_index: bool = False,
                 shapes: Sequence[RecordShape] | None = None) -> IngestReport:
    """Ingest files into ``document_embeddings`` (see the module docstring) and return what was done.

    ``embeddings`` is only asked for vectors when some source changed: pass ``get_embeddings()`` (loaded
    on first use) and an ingest that changes nothing never loads a model. ``reembed`` re-embeds every
    source of these files whatever its stored hash, and allows replacing chunks of another model.
    ``rebuild_stale_index`` (``sony-rag ingest`` sets it): after writing, rebuild an IVFFlat index trained on
    far fewer rows than the table then holds (the migration's, built on an empty table), sized for the data;
    ``report.index_rebuilt`` says so. ``shapes``: as for ``read_sources``.

    Raises BadRecordError (``on_error="stop"``), InvalidInputError for bad paths or options,
    EmbeddingModelMismatchError when the table holds another model's chunks (nothing is written),
    InvalidEmbeddingError when the model's vectors are not 384-d, and DatabaseError subclasses.
    """
    if on_error not in ("skip", "stop"):
        raise InvalidInputError(f"on_error must be 'skip' or 'stop', got {on_error!r}")
    if isinstance(batch_rows, bool) or not isinstance(batch_rows, int) or batch_rows < 1:
        raise InvalidInputError(f"batch_rows must be a positive integer, got {batch_rows!r}")
    started = time.perf_counter()
    model = embeddings_name(embeddings)
    sources, errors, files = read_sources(paths, model, source_type=source_type, shapes=shapes)
    if errors and on_error == "stop":
        raise bad_records_error(errors)
    report = IngestReport(files=[str(path) for path in files], sources=len(sources), errors=errors,
                          embedding_model=model)
    states = db.run(plans.source_states([source.key for source in sources])) if sources else {}
    changed = [source for source in sources if reembed or not _unchanged(source, states.get(source.key))]
    report.unchanged = len(sources) - len(changed)
    if changed:
        # Before any vector is computed or written: one model per table, or similarities mean nothing.
        _refuse_other_models(db.run(plans.sources_of_other_models(model)), model, sources, paths, reembed)
    if progress is not None:
        progress.start(sum(len(source.chunks) for source in changed))
    for batch in _batches(changed, batch_rows):
        rows = _embedded_rows(batch, embeddings)
        report.chunks_deleted += db.run(plans.replace_sources([source.key for source in batch], rows))
        report.chunks_written += len(rows)
        report.written += len(batch)
        if progress is not None:
            progress.advance(len(rows))
    if report.chunks_written and rebuild_stale_index:
        # The migration builds the IVFFlat index on an empty table, so its centroids mean nothing until the
        # data is in: the first ingest (and one that grows the table far past its training) retrains it.
        from sony_rag.indexes import rebuild_if_stale

        def note(line: str) -> None:
            report.index_rebuilt = line

        rebuild_if_stale(db, log=note)
    report.seconds = time.perf_counter() - started
    return report


def _refuse_other_models(others: list[dict[str, Any]], model: str, sources: Sequence[Source],
                         paths: Sequence[str | Path], reembed: bool) -> None:
    if not others:
        return
    stored = sorted({str(row["model"]) for row in others})
    chunks = sum(int(row["chunks"]) for row in others)
    names = ", ".join(stored)
    command = "sony-rag ingest --reembed " + " ".join(shlex.quote(str(path)) for path in paths)
    if not reembed:
        raise EmbeddingModelMismatchError(
            f"document_embeddings holds {chunks} chunk(s) embedded with {names}; writing {model} vectors beside "
            f"them would make every similarity between the two meaningless, so nothing was written. To re-embed "
            f"everything with {model}, run `{command}` over the files of every source (ingest_paths(..., "
            f"reembed=True) in Python); to keep {names}, ingest with the embeddings that made them"
            f"{_kind_hint(stored)}.", stored)
    keys = {source.key for source in sources}
    left = [row for row in others if (row["source_type"], row["source_id"]) not in keys]
    if left:
        shown = ", ".join(f"{row['source_type']}:{row['source_id']}" for row in left[:10])
        more = f" and {len(left) - 10} more" if len(left) > 10 else ""
        raise EmbeddingModelMismatchError(
            f"--reembed would leave {sum(int(row['chunks']) for row in left)} chunk(s) of {names} from sources "
            f"that are not in these files ({shown}{more}); nothing was written. Add their files to `{command}`, "
            "or delete those sources first (delete_embeddings_by_source).", stored)


def _kind_hint(models: Sequence[str]) -> str:
    kinds = {LOCAL_MODEL_NAME: "SONY_RAG_EMBEDDINGS=local", FAKE_MODEL_NAME: "SONY_RAG_EMBEDDINGS=fake"}
    known = [kinds[name] for name in models if name in kinds]
    return f" ({', '.join(known)})" if known else ""


def _unchanged(source: Source, state: Mapping[str, Any] | None) -> bool:
    return (state is not None and int(state["chunks"]) == len(source.chunks)
            and list(state["content_hashes"]) == [source.content_hash])


def _batches(sources: Sequence[Source], batch_rows: int) -> Iterator[list[Source]]:
    # A source never straddles two batches: each batch is one transaction.
    batch: list[Source] = []
    rows = 0
    for source in sources:
        if batch and rows + len(source.chunks) > batch_rows:
            yield batch
            batch, rows = [], 0
        batch.append(source)
        rows += len(source.chunks)
    if batch:
        yield batch


CHUNK_ID_NAMESPACE = uuid.UUID("3b0f6e52-55a4-5b1c-8c0e-69e6f6e5c0d1")


def _embedded_rows(batch: Sequence[Source], embeddings: Embeddings) -> list[plans.EmbeddingRow]:
    texts = [chunk for source in batch for chunk in source.chunks]
    vectors = embeddings.embed_documents(texts)
    if len(vectors) != len(texts):
        raise InvalidEmbeddingError(f"{type(embeddings).__name__} returned {len(vectors)} vectors for "
                                    f"{len(texts)} texts")
    check.dimensions_of(vectors[0], type(embeddings).__name__)
    rows: list[plans.EmbeddingRow] = []
    position = 0
    for source in batch:
        for index, (chunk, metadata) in enumerate(zip(source.chunks, source.metadatas, strict=True)):
            # Ids from the content, so a rerun of the same files gives the same rows and the same tie order.
            row_id = uuid.uuid5(CHUNK_ID_NAMESPACE, f"{source.source_type}\x1f{source.source_id}\x1f{index}\x1f{chunk}")
            rows.append((row_id, source.source_type, source.source_id, chunk,
                         check.vector(vectors[position], f"embedding of {source.location}"), Jsonb(metadata), None))
            position += 1
    return rows


__all__ = ["BATCH_ROWS", "CHUNK_OVERLAP", "CHUNK_SIZE", "SHAPES_GROUP", "BadRecordError", "IngestReport", "Progress",
           "RecordError", "RecordShape", "Source", "bad_records_error", "expand_paths", "infer_source_type",
           "ingest_paths", "read_sources", "record_metadata", "registered_shapes", "required_field"]
