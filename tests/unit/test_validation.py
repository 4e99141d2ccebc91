"""Input checks that run before anything is written: each bad value raises its documented exception."""

from __future__ import annotations

import math
from collections import OrderedDict
from datetime import datetime
from decimal import Decimal
from fractions import Fraction
from typing import Any
from uuid import UUID, uuid4

import numpy as np
import pytest
from pgvector.utils import Vector

from sony_rag import validation as check
from sony_rag.errors import (
    InvalidEmbeddingError,
    InvalidIdentifierError,
    InvalidInputError,
    InvalidMetadataError,
    InvalidRoleError,
    InvalidSourceTypeError,
    InvalidTextError,
)

DIM = 384


def unit(i: int = 0) -> list[float]:
    """Return the 384-d one-hot vector on axis ``i``."""
    values = [0.0] * DIM
    values[i] = 1.0
    return values


# -- identifiers ----------------------------------------------------------------------------------------


def test_as_uuid_accepts_uuids_and_their_text_forms() -> None:
    value = uuid4()
    assert check.as_uuid(value) is value
    assert check.as_uuid(str(value)) == value
    assert check.as_uuid(str(value).upper()) == value
    assert check.as_uuid(value.hex) == value
    assert check.as_uuid("{" + str(value) + "}") == value


@pytest.mark.parametrize("value", ["", "not-a-uuid", "1234", str(uuid4())[:-1], str(uuid4()) + "0", None, 42,
                                   uuid4().bytes, ["x"], "g" * 32])
def test_as_uuid_refuses_anything_else_naming_the_argument(value: object) -> None:
    with pytest.raises(InvalidIdentifierError, match="session_id"):
        check.as_uuid(value, "session_id")


def test_identifier_errors_are_value_errors_and_sony_rag_errors() -> None:
    with pytest.raises(ValueError):
        check.as_uuid("nope")
    with pytest.raises(InvalidInputError):
        check.as_uuid("nope")


# -- text -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["", "plain", "ünïcödé ✓", "emoji 🛋️", "line\nbreak\ttab", "x" * 100_000])
def test_text_accepts_any_string_postgres_can_store(value: str) -> None:
    assert check.text(value, "content") == value
    assert check.required_text(value, "content") == value


@pytest.mark.parametrize("value", ["\x00", "before\x00after", "trailing\x00"])
def test_text_refuses_nul_bytes(value: str) -> None:
    with pytest.raises(InvalidTextError, match="content contains a NUL byte"):
        check.text(value, "content")


def test_text_refuses_lone_surrogates() -> None:
    with pytest.raises(InvalidTextError, match="surrogate"):
        check.text("broken \ud800 pair", "content")


@pytest.mark.parametrize("value", [b"bytes", 42, 4.2, ["list"], {"a": 1}])
def test_text_refuses_non_strings(value: object) -> None:
    with pytest.raises(InvalidTextError, match="must be a string"):
        check.text(value, "content")


def test_none_is_text_only_where_optional() -> None:
    assert check.text(None, "page_url", optional=True) is None
    with pytest.raises(InvalidTextError):
        check.text(None, "page_url")
    with pytest.raises(InvalidTextError):
        check.required_text(None, "content")


# -- roles and source types -----------------------------------------------------------------------------


@pytest.mark.parametrize("value", ["user", "assistant", "system"])
def test_role_accepts_the_three_documented_roles(value: str) -> None:
    assert check.role(value) == value


@pytest.mark.parametrize("value", ["User", "USER", " user", "human", "ai", "tool", "", None, 1])
def test_role_refuses_anything_else(value: object) -> None:
    with pytest.raises(InvalidRoleError, match="role must be one of"):
        check.role(value)


@pytest.mark.parametrize("value", ["product", "page_content", "faq", "policy"])
def test_source_type_accepts_the_four_documented_types(value: str) -> None:
    assert check.source_type(value) == value


@pytest.mark.parametrize("value", ["Product", "products", "page-content", "blog", "", None, 0])
def test_source_type_refuses_anything_else(value: object) -> None:
    with pytest.raises(InvalidSourceTypeError, match="source_type must be one of"):
        check.source_type(value)


# -- metadata -------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    {},
    {"source": "widget"},
    {"n": 1, "f": 0.5, "b": True, "z": None, "list": [1, "two", [3.0]], "nested": {"a": {"b": {"c": "d"}}}},
    {"unicode ✓": "café", "": "empty key"},
    {"big": 10**30, "small": -(10**30), "exact_float": 9007199254740992.0, "tiny": 5e-324},
])
def test_metadata_accepts_json_objects(value: dict[str, Any]) -> None:
    assert check.metadata(value) == value


def test_metadata_none_is_an_empty_object_and_mappings_become_dicts() -> None:
    assert check.metadata(None) == {}
    result = check.metadata(OrderedDict(a=1))
    assert result == {"a": 1}
    assert type(result) is dict


@pytest.mark.parametrize(("value", "message"), [
    (["not", "a", "dict"], "must be a dict"),
    ("text", "must be a dict"),
    ({"when": datetime(2024, 1, 1)}, "metadata.when is a datetime"),
    ({"id": uuid4()}, "UUID"),
    ({"price": Decimal("1.5")}, "Decimal"),
    ({"tags": {"a", "b"}}, "set"),
    ({"pair": (1, 2)}, "tuple"),
    ({"raw": b"bytes"}, "bytes"),
    ({"ratio": Fraction(1, 3)}, "Fraction"),
    ({"x": math.nan}, "metadata.x is nan"),
    ({"x": math.inf}, "inf"),
    ({"deep": {"er": [1, {"x": -math.inf}]}}, r"metadata.deep.er\[1\].x"),
    ({1: "int key"}, "non-string key"),
    ({"nul": "a\x00b"}, "NUL"),
    ({"a\x00b": 1}, "NUL"),
    ({"s": "\udc80"}, "surrogate"),
    ({"huge": 1e308}, "too large to read back exactly"),
])
def test_metadata_refuses_values_that_would_not_read_back_as_stored(value: object, message: str) -> None:
    with pytest.raises(InvalidMetadataError, match=message):
        check.metadata(value)


def test_metadata_refuses_hostile_nesting() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(check.MAX_METADATA_DEPTH + 2):
        node["x"] = {}
        node = node["x"]
    with pytest.raises(InvalidMetadataError, match="nested deeper"):
        check.metadata(deep)


def test_metadata_error_names_the_argument() -> None:
    with pytest.raises(InvalidMetadataError, match="item 3 metadata"):
        check.metadata({"x": math.nan}, "item 3 metadata")


# -- vectors --------------------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [
    unit(0),
    [0.1] * DIM,
    list(range(1, DIM + 1)),
    np.full(DIM, 0.5, dtype=np.float32),
    np.full(DIM, 0.5, dtype=np.float64),
    np.full(DIM, 3, dtype=np.int64),
    tuple(unit(5)),
    [Decimal("0.25")] * DIM,
    [np.float32(0.5)] * (DIM - 1) + [1],
    Vector(unit(7)),
    [3.4e38] * DIM,  # the largest float32 values are still finite
    [1e-30] * DIM,  # squares that underflow to zero: not all zeros
    [0.0] * (DIM - 1) + [1e-40],  # one subnormal float32
])
def test_vector_accepts_384_finite_numbers(value: object) -> None:
    array = check.vector(value)
    assert array.dtype == np.float32
    assert array.shape == (DIM,)
    assert np.isfinite(array).all()


def test_vector_keeps_the_values() -> None:
    values = [float(i) / DIM for i in range(1, DIM + 1)]
    assert np.allclose(check.vector(values), values)


@pytest.mark.parametrize(("value", "message"), [
    (None, "sequence of 384 floats"),
    ("0.1, 0.2", "sequence of 384 floats"),
    (b"\x00" * DIM, "sequence of 384 floats"),
    ({"x": 1.0}, "sequence of 384 floats"),
    ([], "384 dimensions"),
    ([0.1] * 383, "384 dimensions"),
    ([0.1] * 385, "384 dimensions"),
    ([0.1] * 1536, "384 dimensions"),
    (0.5, "384 dimensions"),
    ([[0.1] * DIM], "384 dimensions"),
    (np.ones((2, DIM)), "384 dimensions"),
    ([0.1] * 383 + [math.nan], "NaN or infinity"),
    ([0.1] * 383 + [math.inf], "NaN or infinity"),
    ([-math.inf] + [0.1] * 383, "NaN or infinity"),
    ([0.1] * 383 + [1e39], "NaN or infinity"),  # overflows float32
    ([10**400] * DIM, "only numbers"),
    ([0.0] * DIM, "all zeros"),
    (np.zeros(DIM), "all zeros"),
    ([None] * DIM, "only numbers"),
    ([0.1] * 383 + [None], "only numbers"),
    (["0.5"] * DIM, "only numbers"),
    ([0.1] * 383 + ["0.1"], "only numbers"),
    ([b"1"] * DIM, "only numbers"),
    ([True] * DIM, "only numbers"),
    (np.ones(DIM, dtype=complex), "only numbers"),
    ([0.1] * 382 + [[0.1, 0.2]], "only numbers"),
    ({0.1, 0.2}, "only numbers"),
    (iter([0.1] * DIM), "only numbers"),
])
def test_vector_refuses_anything_but_384_finite_numbers(value: object, message: str) -> None:
    with pytest.raises(InvalidEmbeddingError, match=message):
        check.vector(value, "query_embedding")


def test_vector_error_names_the_argument() -> None:
    with pytest.raises(InvalidEmbeddingError, match=r"^query_embedding "):
        check.vector([0.0] * DIM, "query_embedding")


def test_vectors_names_the_failing_index() -> None:
    good = unit(1)
    assert len(check.vectors([good, good])) == 2
    with pytest.raises(InvalidEmbeddingError, match=r"embedding\[2\]"):
        check.vectors([good, good, [math.nan] * DIM, good])


def test_dimensions_of_checks_an_embedding_models_output() -> None:
    check.dimensions_of([0.0] * DIM, "model")
    with pytest.raises(InvalidEmbeddingError, match="fake-6d produces 6-dimensional vectors"):
        check.dimensions_of([0.0] * 6, "fake-6d")


def test_every_check_error_is_an_invalid_input_error() -> None:
    for call in (lambda: check.role("x"), lambda: check.source_type("x"), lambda: check.text(1, "t"),
                 lambda: check.metadata([]), lambda: check.vector([]), lambda: check.as_uuid("x")):
        with pytest.raises(InvalidInputError):
            call()


def test_uuid_round_trip_is_the_same_object_type() -> None:
    assert isinstance(check.as_uuid(str(uuid4())), UUID)
