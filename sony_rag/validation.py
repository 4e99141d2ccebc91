"""Checks of user input, run before anything is written; each raises a documented InvalidInputError."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from decimal import Decimal
from typing import Any, cast
from uuid import UUID

import numpy as np
import numpy.typing as npt

from sony_rag.errors import (
    InvalidEmbeddingError,
    InvalidIdentifierError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidRoleError,
    InvalidSourceTypeError,
    InvalidTextError,
)
from sony_rag.types import EMBEDDING_DIMENSIONS, ROLES, SOURCE_TYPES

# Deeper documents than this are almost certainly hostile input, and jsonb refuses very deep nesting anyway.
MAX_METADATA_DEPTH = 64


def as_uuid(value: object, what: str = "id") -> UUID:
    """Return ``value`` as a UUID; raises InvalidIdentifierError when it is not one."""
    if isinstance(value, UUID):
        return value
    if isinstance(value, str):
        try:
            return UUID(value)
        except ValueError:
            pass
    raise InvalidIdentifierError(f"{what} must be a UUID, got {_preview(value)}")


def text(value: object, what: str, *, optional: bool = False) -> str | None:
    """Return ``value`` if it is storable text (a str without NUL bytes); raises InvalidTextError."""
    if value is None and optional:
        return None
    if not isinstance(value, str):
        raise InvalidTextError(f"{what} must be a string, got {type(value).__name__}")
    if "\x00" in value:
        raise InvalidTextError(f"{what} contains a NUL byte, which Postgres cannot store")
    if not _is_utf8(value):
        raise InvalidTextError(f"{what} contains a lone surrogate, which is not valid UTF-8")
    return value


def _is_utf8(value: str) -> bool:
    if value.isascii():  # a scan without the copy that encoding makes
        return True
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def required_text(value: object, what: str) -> str:
    """Return ``value`` if it is storable text; raises InvalidTextError (None is refused too)."""
    checked = text(value, what)
    assert checked is not None
    return checked


def role(value: object) -> str:
    """Return ``value`` if it is an allowed chat role; raises InvalidRoleError."""
    if not isinstance(value, str) or value not in ROLES:
        raise InvalidRoleError(f"role must be one of {sorted(ROLES)}, got {_preview(value)}")
    return value


def search_option(value: object, name: str, maximum: int) -> int | None:
    """Return ``value`` if it is None or an integer from 1 to ``maximum``; raises InvalidInputError."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= maximum:
        raise InvalidInputError(f"{name} must be an integer from 1 to {maximum}, got {_preview(value)}")
    return value


def source_type(value: object) -> str:
    """Return ``value`` if it is an allowed source type; raises InvalidSourceTypeError."""
    if not isinstance(value, str) or value not in SOURCE_TYPES:
        raise InvalidSourceTypeError(f"source_type must be one of {sorted(SOURCE_TYPES)}, got {_preview(value)}")
    return value


def metadata(value: object, what: str = "metadata") -> dict[str, Any]:
    """Return ``value`` (None -> {}) if it is a JSON object that round-trips exactly; raises InvalidMetadataError."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise InvalidMetadataError(f"{what} must be a dict, got {type(value).__name__}")
    _check_json(value, what, 0)
    return dict(value)


def _check_json(value: object, path: str, depth: int) -> None:
    if depth > MAX_METADATA_DEPTH:
        raise InvalidMetadataError(f"{path} is nested deeper than {MAX_METADATA_DEPTH} levels")
    if value is None or isinstance(value, bool | int):
        return
    if isinstance(value, float):
        if not math.isfinite(value):
            raise InvalidMetadataError(f"{path} is {value}, which JSON cannot hold")
        # jsonb keeps the decimal digits of repr(); a huge whole float like 1e308 would read back as the
        # integer 10**308, which is not equal to it.
        if abs(value) >= 2**53 and value.is_integer() and Decimal(repr(value)) != Decimal(value):
            raise InvalidMetadataError(f"{path} is {value!r}, too large to read back exactly; store it as a string")
        return
    if isinstance(value, str):
        if "\x00" in value:
            raise InvalidMetadataError(f"{path} contains a NUL byte, which jsonb cannot store")
        if not _is_utf8(value):
            raise InvalidMetadataError(f"{path} contains a lone surrogate, which is not valid UTF-8")
        return
    if isinstance(value, Mapping):
        # Bulk ingest checks a document per row: valid plain values are passed here, without the recursive call
        # and the path string it would be given; anything else (and any error) goes through that call.
        plain_below = depth < MAX_METADATA_DEPTH
        for key, item in value.items():
            if not isinstance(key, str):
                raise InvalidMetadataError(f"{path} has a non-string key {_preview(key)}")
            if "\x00" in key or not _is_utf8(key):
                raise InvalidMetadataError(f"{path} has a key with a NUL byte or a lone surrogate")
            kind = type(item)
            if plain_below and (kind is int or kind is bool or item is None
                                or (kind is str and "\x00" not in item and _is_utf8(item))):
                continue
            _check_json(item, f"{path}.{key}", depth + 1)
        return
    if isinstance(value, list):
        for index, item in enumerate(value):
            _check_json(item, f"{path}[{index}]", depth + 1)
        return
    raise InvalidMetadataError(
        f"{path} is a {type(value).__name__}, which would not read back as stored: use str, int, float, "
        "bool, None, list or dict"
    )


_FLOAT32 = np.dtype(np.float32)
_SHAPE = (EMBEDDING_DIMENSIONS,)


def vector(value: object, what: str = "embedding") -> npt.NDArray[np.float32]:
    """Return ``value`` as a float32 array of 384 finite numbers with non-zero norm; raises InvalidEmbeddingError."""
    # Already what is stored (an embedding model's numpy output): nothing to convert or inspect but the values.
    # Exact type, dtype and shape; anything else takes the long way, which refuses or converts it.
    if type(value) is np.ndarray and value.dtype is _FLOAT32 and value.shape == _SHAPE:
        return _finite_not_zero(value, what)
    return _finite_not_zero(_as_float32(value, what), what)


def _as_float32(value: object, what: str) -> npt.NDArray[np.float32]:
    if value is None or isinstance(value, str | bytes | Mapping):
        raise InvalidEmbeddingError(f"{what} must be a sequence of {EMBEDDING_DIMENSIONS} floats, got "
                                    f"{type(value).__name__}")
    if hasattr(value, "to_numpy"):  # pgvector.Vector
        value = value.to_numpy()
    try:
        raw = np.asarray(value)
    except (TypeError, ValueError) as error:
        raise InvalidEmbeddingError(f"{what} must contain only numbers: {error}") from None
    # Converting straight to float32 would turn "0.5" into 0.5, True into 1.0 and drop imaginary parts.
    if raw.dtype.kind == "O":
        if not all(isinstance(x, numbers.Real | Decimal) and not isinstance(x, bool) for x in raw.ravel()):
            raise InvalidEmbeddingError(f"{what} must contain only numbers")
    elif raw.dtype.kind not in "iuf":
        raise InvalidEmbeddingError(f"{what} must contain only numbers, got {raw.dtype} values")
    if raw.dtype == np.float32:
        # Already what is stored: no conversion, and no errstate, whose per-call cost shows in bulk ingest.
        array = raw
    else:
        try:
            with np.errstate(over="ignore"):  # an overflow becomes inf, refused just below
                array = raw.astype(np.float32)
        except (TypeError, ValueError, OverflowError) as error:
            raise InvalidEmbeddingError(f"{what} must contain only numbers: {error}") from None
    if array.ndim != 1 or array.shape[0] != EMBEDDING_DIMENSIONS:
        raise InvalidEmbeddingError(f"{what} must have {EMBEDDING_DIMENSIONS} dimensions, got shape {array.shape}")
    return array


def _finite_not_zero(array: npt.NDArray[np.float32], what: str) -> npt.NDArray[np.float32]:
    # One reduction settles the usual vector: its squared norm is finite and positive only if every element is
    # finite and one is not zero. Squares that overflow (elements beyond about 1e19) or underflow (below about
    # 1e-23) are told apart by the element-wise checks. Per search, the two checks cost five times the one.
    if not 0.0 < float(np.dot(array, array)) < math.inf:
        if not np.isfinite(array).all():
            raise InvalidEmbeddingError(f"{what} contains NaN or infinity (or a number too large for float32)")
        if not array.any():
            raise InvalidEmbeddingError(f"{what} is all zeros, which has no cosine similarity to anything")
    return array


# Vectors are checked together a chunk at a time: per vector, numpy's call overhead outweighs the work on 384
# numbers, and bulk ingest checks one per row.
_BULK_CHUNK = 2048


def vectors_pass_in_bulk(vectors: Sequence[object]) -> bool:
    """Return True when every vector passes ``vector`` unchanged (float32 array, 384 finite numbers, not 0).

    False when any is another type or fails: rows then go through ``vector`` one by one, which accepts or
    refuses each exactly as before and names the bad one.
    """
    shape = (EMBEDDING_DIMENSIONS,)
    for start in range(0, len(vectors), _BULK_CHUNK):
        chunk = vectors[start:start + _BULK_CHUNK]
        # Exact type and dtype: subclasses and byte-swapped arrays take the row-by-row path.
        if not all(type(item) is np.ndarray and item.dtype is _FLOAT32 and item.shape == shape for item in chunk):
            return False
        matrix = np.stack(cast("list[npt.NDArray[np.float32]]", chunk))
        if not (np.isfinite(matrix).all() and matrix.any(axis=1).all()):
            return False
    return True


def vectors(values: Iterable[object], what: str = "embedding") -> list[npt.NDArray[np.float32]]:
    """Return each of ``values`` checked as by ``vector``; raises InvalidEmbeddingError naming the index."""
    checked = []
    for index, value in enumerate(values):
        checked.append(vector(value, f"{what}[{index}]"))
    return checked


def dimensions_of(sample: Sequence[float], source: str) -> None:
    """Raise InvalidEmbeddingError unless ``sample`` has 384 dimensions (checks an embedding model's output)."""
    if len(sample) != EMBEDDING_DIMENSIONS:
        raise InvalidEmbeddingError(
            f"{source} produces {len(sample)}-dimensional vectors; document_embeddings holds "
            f"vector({EMBEDDING_DIMENSIONS})"
        )


def _preview(value: object) -> str:
    shown = repr(value)
    return shown if len(shown) <= 60 else shown[:57] + "..."
