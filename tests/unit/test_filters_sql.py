"""The metadata filter compiler without a database: SQL text shape, parameters, and every refusal."""

from __future__ import annotations

import enum
import math
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from psycopg.types.json import Jsonb

from sony_rag.errors import InvalidFilterError, InvalidInputError
from sony_rag.sql import Params
from sony_rag.sql.filters import MAX_FILTER_DEPTH, compile_filter, parse_filter, validate_filter


def compile_text(filter: Any) -> tuple[str, dict[str, Any]]:
    params = Params()
    return compile_filter(filter, params).as_string(None), params.values


def flat_params(values: dict[str, Any]) -> list[Any]:
    """Every bound scalar, with Jsonb wrappers and lists opened up."""
    out: list[Any] = []

    def walk(value: Any) -> None:
        if isinstance(value, Jsonb):
            walk(value.obj)
        elif isinstance(value, dict):
            for item in value.values():
                walk(item)
        elif isinstance(value, list | tuple):
            for item in value:
                walk(item)
        else:
            out.append(value)

    walk(values)
    return out


# --------------------------------------------------------------------------------------------- empty filters


@pytest.mark.parametrize("empty", [None, {}])
def test_empty_filter_is_true_and_binds_nothing(empty: Any) -> None:
    text, values = compile_text(empty)
    assert text == "TRUE"
    assert values == {}
    validate_filter(empty)


# ------------------------------------------------------------------------------------------ text stability


STABLE_SHAPES: list[tuple[dict[str, Any], dict[str, Any]]] = [
    ({"price": 5}, {"colour": "red"}),
    ({"price": {"$gt": 5}}, {"rating": {"$gt": "zzz"}}),
    ({"a.b": {"$in": [1, 2, 3]}}, {"x.y": {"$in": []}}),
    ({"a": {"$nin": ["x"]}}, {"b": {"$nin": [1, "y", True]}}),
    ({"a": {"$between": [1, 2]}}, {"b": {"$between": [3.5, 9]}}),
    ({"a": {"$like": "x%"}}, {"b": {"$like": "%'; DROP TABLE t;--"}}),
    ({"$or": [{"a": 1}, {"b": {"$ne": None}}]}, {"$or": [{"c": "z"}, {"d": {"$ne": 7}}]}),
    ({"$not": {"a": {"$exists": True}}}, {"$not": {"zz": {"$exists": True}}}),
    ({"source_type": "faq"}, {"source_type": "policy"}),
    ({"source_id": {"$in": ["a", "b"]}}, {"source_id": {"$in": []}}),
    ({"created_at": {"$gte": "2024-01-01T00:00:00Z"}},
     {"created_at": {"$gte": datetime(1999, 5, 6, 7, 8, 9, tzinfo=UTC)}}),
]


@pytest.mark.parametrize(("first", "second"), STABLE_SHAPES)
def test_same_shape_gives_same_text(first: dict[str, Any], second: dict[str, Any]) -> None:
    text_1, values_1 = compile_text(first)
    text_2, values_2 = compile_text(second)
    assert text_1 == text_2
    assert list(values_1) == list(values_2) == [f"p{i}" for i in range(len(values_1))]
    # Compiling twice gives byte-identical text (no random parameter names as in langchain-postgres v2).
    assert compile_text(first)[0] == text_1


def test_parameters_continue_after_callers_parameters() -> None:
    params = Params()
    params.add("query vector")
    text = compile_filter({"a": 1}, params).as_string(None)
    assert "%(p0)s" not in text
    assert "%(p1)s" in text and "%(p2)s" in text


def test_different_shapes_give_different_text() -> None:
    texts = {compile_text(f)[0] for f in [
        {"a": 1}, {"a": {"$ne": 1}}, {"a.b": 1}, {"a": {"$lt": 1}}, {"a": {"$lte": 1}},
        {"a": 1, "b": 1}, {"$or": [{"a": 1}, {"b": 1}]}, {"$not": {"a": 1}},
    ]}
    assert len(texts) == 8


def test_operators_in_one_dict_and_keys_in_one_dict_are_anded() -> None:
    text, _ = compile_text({"a": {"$gt": 1, "$lt": 5}, "b": "x"})
    assert text.count(" AND ") >= 2
    assert "$ > $v" in text and "$ < $v" in text


# ---------------------------------------------------------------------------------- values only in params


HOSTILE = "a'); DROP TABLE canary;--"


@pytest.mark.parametrize("filter", [
    {"name": HOSTILE},
    {"name": {"$ne": HOSTILE}},
    {"name": {"$in": ["ok", HOSTILE]}},
    {"name": {"$like": HOSTILE}},
    {"name": {"$ilike": HOSTILE}},
    {"name": {"$between": [HOSTILE, HOSTILE + "z"]}},
    {HOSTILE.replace("'", "").replace("(", "").replace(")", "").replace(";", ""): 1},
    {"source_id": HOSTILE},
    {"source_id": {"$like": HOSTILE}},
    {"$or": [{"name": {"$gt": HOSTILE}}, {"$not": {"name": HOSTILE}}]},
])
def test_hostile_strings_are_bound_not_pasted(filter: dict[str, Any]) -> None:
    text, values = compile_text(filter)
    assert "DROP" not in text
    assert "canary" not in text
    assert any("canary" in str(v) for v in flat_params(values))


def test_numbers_and_keys_appear_only_in_params() -> None:
    text, values = compile_text({"dimensions.width_cm": {"$gte": 123456.75}, "sku_code": 987654321})
    for needle in ("123456", "987654321", "dimensions", "width_cm", "sku_code"):
        assert needle not in text
    assert flat_params(values) == ["dimensions", "width_cm", 123456.75, "sku_code", 987654321]


def test_value_types_are_preserved_in_the_bound_json() -> None:
    _, values = compile_text({"a": True, "b": 1, "c": 1.0, "d": "1", "e": None})
    assert flat_params(values) == ["a", True, "b", 1, "c", 1.0, "d", "1", "e", None]
    assert type(flat_params(values)[1]) is bool
    assert type(flat_params(values)[3]) is int


@pytest.mark.parametrize("value", [1, 1.0, True, 0.0, -0.0, "1", 2**70, [1, 1.0, True]])
def test_filters_equal_in_python_but_not_in_a_filter_are_never_mixed_up(value: Any) -> None:
    # Parsed filters are remembered per process: 1, 1.0 and True compare equal in Python, not in JSON.
    for first in ([1, 1.0, True, 0.0, -0.0, "1", 2**70, [1, 1.0, True]]):
        parse_filter({"a": {"$in": first} if isinstance(first, list) else first})
    wanted = {"a": {"$in": value}} if isinstance(value, list) else {"a": value}
    bound = flat_params(compile_text(parse_filter(wanted))[1])
    expected = value if isinstance(value, list) else [value]
    assert bound[1:] == expected
    assert [type(item) for item in bound[1:]] == [type(item) for item in expected]
    assert [math.copysign(1, item) for item in bound[1:] if isinstance(item, float)] == \
        [math.copysign(1, item) for item in expected if isinstance(item, float)]


def test_a_filter_changed_after_use_is_read_as_it_now_is() -> None:
    filter: dict[str, Any] = {"color": {"$in": ["oak", "walnut"]}}
    before = parse_filter(filter)
    filter["color"]["$in"].append("teak")
    after = parse_filter(filter)
    assert flat_params(compile_text(after)[1])[1:] == ["oak", "walnut", "teak"]
    assert flat_params(compile_text(before)[1])[1:] == ["oak", "walnut"]


def test_a_malformed_filter_is_refused_every_time() -> None:
    for _ in range(3):
        with pytest.raises(InvalidFilterError, match="unknown operator"):
            parse_filter({"price": {"$greater": 1}})


def test_int_enum_is_bound_as_plain_int() -> None:
    class Size(enum.IntEnum):
        LARGE = 3

    _, values = compile_text({"size": Size.LARGE})
    assert type(values["p1"].obj["v"]) is int


def test_dotted_key_becomes_one_text_parameter_per_segment() -> None:
    text, values = compile_text({"a.b.c": 1})
    assert "metadata -> %(p0)s::text -> %(p1)s::text -> %(p2)s::text" in text
    assert [values["p0"], values["p1"], values["p2"]] == ["a", "b", "c"]


def test_columns_are_compared_on_the_column() -> None:
    text, values = compile_text({"source_type": {"$in": ["faq", "policy"]}, "source_id": "sku-1",
                                 "created_at": {"$lt": "2024-02-03T04:05:06+01:00"}})
    assert '"source_type" = ANY(%(p0)s::text[])' in text
    assert '"source_id" = %(p1)s::text' in text
    assert '"created_at" < %(p2)s::timestamptz' in text
    assert "metadata" not in text
    assert values["p2"] == datetime(2024, 2, 3, 4, 5, 6, tzinfo=timezone(timedelta(hours=1)))


def test_source_id_none_means_null_column() -> None:
    assert compile_text({"source_id": None})[0] == '("source_id" IS NULL)'
    assert compile_text({"source_id": {"$ne": None}})[0] == '("source_id" IS NOT NULL)'
    assert compile_text({"source_id": {"$exists": False}})[0] == '("source_id" IS NULL)'


def test_logical_operators_are_case_insensitive_like_langchain() -> None:
    assert compile_text({"$AND": [{"a": 1}, {"b": 2}]})[0] == compile_text({"$and": [{"a": 1}, {"b": 2}]})[0]
    assert compile_text({"$Not": {"a": 1}})[0] == compile_text({"$not": {"a": 1}})[0]


def test_not_list_means_none_of_them() -> None:
    text, _ = compile_text({"$not": [{"a": 1}, {"b": 2}]})
    assert text.startswith("((NOT ") and " AND (NOT " in text


def test_single_item_logical_lists_collapse() -> None:
    assert compile_text({"$and": [{"a": 1}]})[0] == compile_text({"a": 1})[0]
    assert compile_text({"$or": [{"a": 1}]})[0] == compile_text({"a": 1})[0]


def test_depth_limit_allows_the_limit_itself() -> None:
    def nest(levels: int) -> dict[str, Any]:
        filter: dict[str, Any] = {"a": 1}
        for _ in range(levels - 1):
            filter = {"$not": filter}
        return filter

    validate_filter(nest(MAX_FILTER_DEPTH))
    with pytest.raises(InvalidFilterError, match="nested deeper than 32"):
        validate_filter(nest(MAX_FILTER_DEPTH + 1))
    with pytest.raises(InvalidFilterError, match="nested deeper than 32"):
        validate_filter(nest(1000))  # no RecursionError on absurd input


def test_self_referencing_filter_is_refused_not_recursed_forever() -> None:
    filter: dict[str, Any] = {}
    filter["$and"] = [filter]
    with pytest.raises(InvalidFilterError, match="nested deeper"):
        validate_filter(filter)


def test_accepted_keys() -> None:
    for key in ["a", "A_b-c", "with space", "x.y.z", "größe", "価格", "a1.2", "_", "-"]:
        validate_filter({key: 1})


def test_error_is_an_invalid_input_and_value_error() -> None:
    with pytest.raises(InvalidInputError):
        validate_filter({"a": {"$foo": 1}})
    with pytest.raises(ValueError):
        validate_filter({"a": {"$foo": 1}})


# --------------------------------------------------------------------------------------------- refusals


BAD_FILTERS: list[tuple[Any, str]] = [
    # shape
    ([{"a": 1}], "must be a dict, got list"),
    ("a = 1", "must be a dict, got str"),
    ({1: "a"}, "keys must be strings"),
    ({"$and": []}, r"\$and needs at least one filter"),
    ({"$or": []}, r"\$or needs at least one filter"),
    ({"$not": []}, r"\$not needs at least one filter"),
    ({"$and": {"a": 1}}, r"\$and expects a list of filters"),
    ({"$or": "a"}, r"\$or expects a list of filters"),
    ({"$not": 5}, r"\$not expects a filter dict or a list"),
    ({"$and": [{"a": 1}, {}]}, r"empty filter dict at \$and\[1\]"),
    ({"$and": [{"a": 1}, 5]}, r"expected a filter dict at \$and\[1\], got int"),
    ({"$or": [{"$and": [{"a": {"$foo": 1}}]}]},
     r"unknown operator '\$foo' at key 'a' \(in \$or\[0\]\.\$and\[0\]\)"),
    # operators
    ({"price": {"$foo": 1}}, r"unknown operator '\$foo' at key 'price'"),
    ({"$foo": 1}, r"unknown operator '\$foo'"),
    ({"$eq": 1}, r"unknown operator '\$eq'.*field operators go inside a key"),
    ({"$regex": "x"}, r"unknown operator '\$regex'"),
    ({"price": {"$EQ": 1}}, r"unknown operator '\$EQ' at key 'price'"),
    ({"price": {}}, "empty operator dict at key 'price'"),
    ({"dimensions": {"width_cm": 5}}, r"expected an operator such as '\$eq'.*'dimensions\.width_cm'"),
    ({"price": {"$gt": 1, "lt": 5}}, r"expected an operator such as '\$eq' at key 'price', got 'lt'"),
    # keys
    ({"": 1}, "empty segment"),
    ({"a..b": 1}, "empty segment"),
    ({".a": 1}, "empty segment"),
    ({"a.": 1}, "empty segment"),
    ({"a\x00b": 1}, "NUL byte"),
    ({"a'b": 1}, "invalid key"),
    ({'a"b': 1}, "invalid key"),
    ({"a;b": 1}, "invalid key"),
    ({"a$b": 1}, "invalid key"),
    ({"a\\b": 1}, "invalid key"),
    ({" a": 1}, "invalid key"),
    ({"a ": 1}, "invalid key"),
    ({"a  b": 1}, "invalid key"),
    ({"a\tb": 1}, "invalid key"),
    ({"a\nb": 1}, "invalid key"),
    ({"x" * 65: 1}, "longer than 64"),
    ({".".join(["a"] * 17): 1}, "more than 16 dotted segments"),
    # values
    ({"a": [1, 2]}, r"type list.*use \$in"),
    ({"a": {"b": 1}}, r"expected an operator such as '\$eq'"),
    ({"a": {"$eq": {"b": 1}}}, "type dict"),
    ({"a": {"$eq": [1]}}, r"type list.*use \$in"),
    ({"a": float("nan")}, "non-finite number nan"),
    ({"a": {"$gt": float("inf")}}, "non-finite number inf"),
    ({"a": {"$in": [1, -math.inf]}}, r"non-finite number -inf for '\$in' at key 'a' \(item 1\)"),
    ({"a": b"bytes"}, "type bytes"),
    ({"a": 10**400}, r"integer too large \(over 1000 bits\)"),
    ({"a": {"$in": [1, -(2**1001)]}}, "integer too large"),
    ({"a": datetime(2024, 1, 1, tzinfo=UTC)}, "type datetime"),
    ({"a": {"$gt": True}}, r"booleans cannot be ordered for '\$gt'"),
    ({"a": {"$lte": None}}, r"None \(JSON null\) is only allowed with \$eq and \$ne"),
    ({"a": {"$in": [None]}}, r"None \(JSON null\) is only allowed"),
    ({"a": {"$nin": [[1]]}}, "type list"),
    ({"a": {"$in": "abc"}}, r"expected a list of values for '\$in' at key 'a', got str"),
    ({"a": {"$in": {1, 2}}}, "expected a list of values"),
    ({"a": "x\x00y"}, "NUL byte"),
    ({"a": {"$in": ["ok", "x\x00"]}}, "NUL byte"),
    ({"a": "\ud800"}, "not valid Unicode"),
    ({"a": {"$between": [1]}}, r"expected a \[low, high\] pair"),
    ({"a": {"$between": [1, 2, 3]}}, r"expected a \[low, high\] pair"),
    ({"a": {"$between": 5}}, r"expected a \[low, high\] pair"),
    ({"a": {"$between": [1, "2"]}}, r"\$between needs two numbers or two strings"),
    ({"a": {"$between": [True, False]}}, r"\$between needs two numbers or two strings"),
    ({"a": {"$between": [None, 1]}}, r"None \(JSON null\) is only allowed"),
    ({"a": {"$like": 5}}, r"expected a string pattern for '\$like' at key 'a', got int"),
    ({"a": {"$ilike": None}}, "expected a string pattern"),
    ({"a": {"$like": "abc\\"}}, "lone backslash"),
    ({"a": {"$exists": 1}}, r"expected True or False for '\$exists'"),
    ({"a": {"$exists": "yes"}}, "expected True or False"),
    # columns
    ({"source_type": "video"}, r"source_type must be one of \['faq', 'page_content', 'policy', 'product'\]"),
    ({"source_type": {"$in": ["faq", "blog"]}}, r"source_type must be one of .*\(item 1\).*'blog'"),
    ({"source_type": {"$like": "f%"}}, r"operator '\$like' is not supported at column 'source_type'"),
    ({"source_type": None}, "source_type must be one of"),
    ({"source_id": 5}, "expected a string"),
    ({"source_id": {"$in": ["a", 1]}}, "expected a string"),
    ({"source_id": {"$gt": None}}, "expected a string"),
    ({"created_at": "yesterday"}, "not an ISO-8601 timestamp"),
    ({"created_at": "2024-01-01T00:00:00"}, "timestamp must carry a timezone"),
    ({"created_at": datetime(2024, 1, 1)}, "timestamp must carry a timezone"),
    ({"created_at": 1700000000}, "expected a datetime or an ISO-8601 string"),
    ({"created_at": {"$in": ["2024-01-01T00:00:00Z"]}}, r"operator '\$in' is not supported at column"),
    ({"created_at": {"$exists": True}}, r"operator '\$exists' is not supported at column"),
    ({"created_at": {"$between": ["2024-01-01T00:00:00Z"]}}, r"expected a \[low, high\] pair"),
    ({"created_at": {"$between": ["2024-01-01T00:00:00Z", "2024-01-02"]}}, "must carry a timezone"),
]


@pytest.mark.parametrize(("filter", "message"), BAD_FILTERS)
def test_malformed_filter_is_refused_with_a_helpful_message(filter: Any, message: str) -> None:
    with pytest.raises(InvalidFilterError, match=message):
        validate_filter(filter)
    with pytest.raises(InvalidFilterError, match=message):
        compile_filter(filter, Params())
