"""all-MiniLM-L6-v2 in numpy: sentence-transformers' vectors without torch.

The model is a 6-layer BERT (hidden size 384, 12 heads, GELU, LayerNorm eps 1e-12) followed by mean pooling
over the real tokens and L2 normalisation, exactly the three modules of the sentence-transformers folder.
Texts are tokenised by Hugging Face ``tokenizers`` from the model's own ``tokenizer.json`` and truncated at
256 tokens (``max_seq_length`` in ``sentence_bert_config.json``), then sorted by length and padded per batch,
as sentence-transformers does, so short texts do not pay for long ones.

The weights are read straight from ``model.safetensors`` (an 8-byte header length, a JSON header, raw
little-endian tensors): nothing but numpy is needed to load them. The model is read-only once loaded, so
one instance serves any number of threads at once. Loading it sets OpenBLAS to one thread per call for the
whole process (with ``threadpoolctl``): the model runs its sub-batches on its own threads instead.
"""

from __future__ import annotations

import json
import math
import os
import struct
import threading
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import numpy as np
import numpy.typing as npt

MAX_SEQ_LENGTH: Final = 256
HIDDEN: Final = 384
HEADS: Final = 12
LAYERS: Final = 6
_LAYER_NORM_EPS: Final = 1e-12
_HEAD_SIZE: Final = HIDDEN // HEADS
# A masked (padding) key gets this added before the softmax, so its weight underflows to exactly 0.
_MASKED: Final = np.float32(-1e30)
_MAX_WORKERS: Final = 4

Matrix = npt.NDArray[np.float32]


def _single_threaded_blas() -> None:
    # OpenBLAS's own threads spin while they wait for each other: on a machine whose cores are busy with
    # other work they ran this model 3-4x slower than one thread (docs/embeddings.md). One BLAS thread per
    # call, and our worker threads across sub-batches, degrade gracefully instead. Process-wide, once.
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:
        return
    threadpool_limits(1, user_api="blas")


class ModelFilesError(Exception):
    """Raised when a model folder lacks a file or holds tensors of an unexpected name, type or shape."""


def read_safetensors(path: Path) -> dict[str, Matrix]:
    """Return the float32 tensors of a ``.safetensors`` file by name; raises ModelFilesError for anything else."""
    data = path.read_bytes()
    if len(data) < 8:
        raise ModelFilesError(f"{path} is not a safetensors file")
    (header_size,) = struct.unpack("<Q", data[:8])
    try:
        header = json.loads(data[8:8 + header_size])
    except ValueError as error:
        raise ModelFilesError(f"{path} has an unreadable header") from error
    start = 8 + header_size
    tensors: dict[str, Matrix] = {}
    for name, info in header.items():
        if name == "__metadata__" or info.get("dtype") != "F32":
            continue  # position_ids (I64) is a constant range; nothing else is needed
        begin, end = info["data_offsets"]
        tensor = np.frombuffer(data, dtype="<f4", count=(end - begin) // 4, offset=start + begin)
        tensors[name] = tensor.reshape(info["shape"])
    return tensors


def _gelu_(x: Matrix) -> Matrix:
    """Apply BERT's exact GELU, x * Phi(x), to ``x`` in place and return it.

    numpy has no erf: Abramowitz & Stegun 7.1.26 gives it within 1.5e-7, below float32's own rounding
    here. In place and in few passes because this (tokens x 1536) array is the largest of the model.
    """
    negative = x < 0
    z = np.abs(x)
    z *= np.float32(1 / math.sqrt(2))
    t = z * np.float32(0.3275911)
    t += np.float32(1.0)
    np.reciprocal(t, out=t)
    poly = t * np.float32(1.061405429)
    for coefficient in (-1.453152027, 1.421413741, -0.284496736, 0.254829592):
        poly += np.float32(coefficient)
        poly *= t
    np.square(z, out=z)
    np.negative(z, out=z)
    np.exp(z, out=z)
    poly *= z  # = 1 - erf(|x| / sqrt 2)
    poly *= x
    poly *= np.float32(0.5)  # x * Phi(-|x|) for x < 0; x - x * Phi(-|x|) = x * Phi(x) for x >= 0
    np.subtract(x, poly, out=x)
    np.copyto(x, poly, where=negative)
    return x


def _layer_norm(x: Matrix, weight: Matrix, bias: Matrix) -> Matrix:
    centred = x - x.mean(axis=-1, keepdims=True)
    variance = np.mean(np.square(centred), axis=-1, keepdims=True)
    variance += np.float32(_LAYER_NORM_EPS)
    centred /= np.sqrt(variance)
    centred *= weight
    centred += bias
    return centred  # type: ignore[no-any-return]


class _Layer:
    """One encoder layer's weights, transposed for ``x @ w`` and with query, key and value fused."""

    def __init__(self, tensors: dict[str, Matrix], prefix: str) -> None:
        attention = prefix + "attention."
        names = [attention + f"self.{part}" for part in ("query", "key", "value")]
        weights = [tensors[name + ".weight"] for name in names]
        biases = [tensors[name + ".bias"] for name in names]
        # The 1/sqrt(head size) of the attention scores is folded into the query's weights: one pass less.
        scale = np.float32(1 / math.sqrt(_HEAD_SIZE))
        weights[0], biases[0] = weights[0] * scale, biases[0] * scale
        self.qkv = np.ascontiguousarray(np.concatenate(weights).T)
        self.qkv_bias = np.concatenate(biases)
        self.out = np.ascontiguousarray(tensors[attention + "output.dense.weight"].T)
        self.out_bias = tensors[attention + "output.dense.bias"]
        self.norm1 = (tensors[attention + "output.LayerNorm.weight"], tensors[attention + "output.LayerNorm.bias"])
        self.up = np.ascontiguousarray(tensors[prefix + "intermediate.dense.weight"].T)
        self.up_bias = tensors[prefix + "intermediate.dense.bias"]
        self.down = np.ascontiguousarray(tensors[prefix + "output.dense.weight"].T)
        self.down_bias = tensors[prefix + "output.dense.bias"]
        self.norm2 = (tensors[prefix + "output.LayerNorm.weight"], tensors[prefix + "output.LayerNorm.bias"])

    def __call__(self, x: Matrix, mask: Matrix) -> Matrix:
        """Return the layer's output for ``x`` (batch, length, 384); ``mask`` is 0 or -1e30 per key."""
        batch, length, _ = x.shape
        flat = x.reshape(batch * length, HIDDEN)
        qkv = flat @ self.qkv
        qkv += self.qkv_bias
        # (3, batch, heads, length, head size), each contiguous: BLAS then runs one GEMM per head.
        qkv = np.ascontiguousarray(qkv.reshape(batch, length, 3, HEADS, _HEAD_SIZE).transpose(2, 0, 3, 1, 4))
        query, key, value = qkv[0], qkv[1], qkv[2]
        scores = query @ key.transpose(0, 1, 3, 2)
        scores += mask
        scores -= scores.max(axis=-1, keepdims=True)
        np.exp(scores, out=scores)
        scores /= scores.sum(axis=-1, keepdims=True)
        context = (scores @ value).transpose(0, 2, 1, 3).reshape(batch * length, HIDDEN)
        attended = context @ self.out
        attended += self.out_bias
        attended += flat
        hidden = _layer_norm(attended, *self.norm1)
        inner = hidden @ self.up
        inner += self.up_bias
        output = _gelu_(inner) @ self.down
        output += self.down_bias
        output += hidden
        return _layer_norm(output, *self.norm2).reshape(batch, length, HIDDEN)


class MiniLM:
    """all-MiniLM-L6-v2 loaded from a sentence-transformers folder; ``encode`` returns unit 384-d vectors."""

    def __init__(self, folder: str | Path) -> None:
        """Load ``model.safetensors`` and ``tokenizer.json`` from ``folder``; raises ModelFilesError if unusable."""
        folder = Path(folder)
        for name in ("model.safetensors", "tokenizer.json"):
            if not (folder / name).is_file():
                raise ModelFilesError(f"{folder} has no {name}")
        os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")  # no rayon pool to trip over a later fork()
        from tokenizers import Tokenizer

        tokenizer = Tokenizer.from_file(str(folder / "tokenizer.json"))
        tokenizer.no_padding()  # padding is done per batch below; the file pads to a fixed 128
        tokenizer.enable_truncation(MAX_SEQ_LENGTH)
        self._tokenizer = tokenizer
        tensors = read_safetensors(folder / "model.safetensors")
        try:
            self._words = tensors["embeddings.word_embeddings.weight"]
            self._positions = tensors["embeddings.position_embeddings.weight"][:MAX_SEQ_LENGTH]
            self._type0 = tensors["embeddings.token_type_embeddings.weight"][0]
            self._norm = (tensors["embeddings.LayerNorm.weight"], tensors["embeddings.LayerNorm.bias"])
            self._layers = [_Layer(tensors, f"encoder.layer.{index}.") for index in range(LAYERS)]
        except KeyError as error:
            raise ModelFilesError(f"{folder}/model.safetensors lacks the tensor {error.args[0]}") from None
        if self._words.shape[1:] != (HIDDEN,) or self._layers[0].qkv.shape != (HIDDEN, 3 * HIDDEN):
            raise ModelFilesError(f"{folder}/model.safetensors is not a {HIDDEN}-d MiniLM")
        _single_threaded_blas()
        self._workers = min(os.cpu_count() or 1, _MAX_WORKERS)
        self._executor: ThreadPoolExecutor | None = None
        self._pool_lock = threading.Lock()

    def tokenize(self, texts: Sequence[str]) -> list[list[int]]:
        """Return each text's token ids ([CLS] ... [SEP]), truncated at 256 tokens."""
        return [encoding.ids for encoding in self._tokenizer.encode_batch(list(texts), add_special_tokens=True)]

    def encode(self, texts: Sequence[str], batch_size: int = 64) -> Matrix:
        """Return an (n, 384) float32 array of unit vectors, one per text, in the order given.

        Each batch of ``batch_size`` texts is split among the worker threads (one per core, BLAS on one
        thread each); a text's vector does not depend on the batch it is computed in.
        """
        ids = self.tokenize(texts)
        result = np.empty((len(ids), HIDDEN), dtype=np.float32)
        order = sorted(range(len(ids)), key=lambda index: -len(ids[index]))  # longest first, as ST does
        step = max(1, -(-batch_size // self._workers))
        groups = [order[start:start + step] for start in range(0, len(order), step)]
        if len(groups) == 1:
            result[groups[0]] = self._encode_batch([ids[index] for index in groups[0]])
            return result
        batches = self._pool().map(lambda group: self._encode_batch([ids[index] for index in group]), groups)
        for group, vectors in zip(groups, batches, strict=True):
            result[group] = vectors
        return result

    def _pool(self) -> ThreadPoolExecutor:
        with self._pool_lock:
            if self._executor is None:
                self._executor = ThreadPoolExecutor(self._workers, thread_name_prefix="sony-rag-minilm")
            return self._executor

    def _encode_batch(self, batch: list[list[int]]) -> Matrix:
        length = max(len(ids) for ids in batch)
        tokens = np.zeros((len(batch), length), dtype=np.int64)
        present = np.zeros((len(batch), length), dtype=np.float32)
        for row, ids in enumerate(batch):
            tokens[row, :len(ids)] = ids
            present[row, :len(ids)] = 1.0
        x = self._words[tokens] + self._positions[:length] + self._type0
        x = _layer_norm(x, *self._norm)
        mask = ((1.0 - present) * _MASKED)[:, None, None, :].astype(np.float32)
        for layer in self._layers:
            x = layer(x, mask)
        summed = np.einsum("bld,bl->bd", x, present)
        pooled = summed / np.maximum(present.sum(axis=1, keepdims=True), np.float32(1e-9))
        norms = np.linalg.norm(pooled, axis=1, keepdims=True)
        return (pooled / np.maximum(norms, np.float32(1e-12))).astype(np.float32)  # type: ignore[no-any-return]

