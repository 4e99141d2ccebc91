"""The metadata filter compiler against a real Postgres: a table of expected matches, plus a property test
that compares random filters with a pure-Python reading of the same grammar."""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from typing import Any
from uuid import UUID

import psycopg
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from psycopg import sql
from psycopg.types.json import Jsonb

from sony_rag.errors import InvalidFilterError
from sony_rag.sql import Params
from sony_rag.sql.filters import compile_filter

HOSTILE_KEY = "a'); DROP TABLE canary;--"


@pytest.fixture(scope="session")
def pg_conninfo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """Return the URI of a throwaway embedded Postgres (started once per run)."""
    import pgserver

    srv = pgserver.get_server(tmp_path_factory.mktemp("pg"), cleanup_mode="delete")  # type: ignore[attr-defined]
    yield srv.get_uri()


def ts(day: int, hour: int = 0) -> datetime:
    return datetime(2024, 1, day, hour, tzinfo=UTC)


# id -> (source_type, source_id, created_at, metadata)
ROWS: dict[int, tuple[str, str | None, datetime, dict[str, Any]]] = {
    1: ("product", "sku-001", ts(1), {
        "price": 100, "name": "Bravia TV", "in_stock": True, "rating": 4.5,
        "dimensions": {"width_cm": 120.5, "height_cm": 70}, "tags": ["4k", "hdr"]}),
    2: ("product", "sku-002", ts(2), {
        "price": 49.99, "name": "WH-1000XM5", "in_stock": False, "tags": ["audio"], "color": None}),
    3: ("product", "SKU-003", ts(3), {
        "price": "100", "name": "bravia accessories", "dimensions": {"width_cm": "120"}}),
    4: ("faq", None, ts(4), {"price": 0, "in_stock": True, "tags": [], "dimensions": None}),
    5: ("policy", "refund", ts(5), {"price": -5, "name": "Refund policy", "category": "policy", "rating": 3}),
    6: ("page_content", None, ts(6), {}),
    7: ("page_content", "/café", ts(7), {
        "name": "Ünïcode Café", "tags": ["café", ["nested"]], "nested": {"a": {"b": {"c": 1}}}}),
    8: ("product", "sku-008", ts(8), {
        "price": 1000.0, "name": "PlayStation 5", "rating": 5, "tags": "single"}),
    9: ("faq", "faq-9", ts(9), {"price": True, "name": 'It\'s "quoted" 100% _real_', "flag": "true"}),
    10: ("product", "sku-010", ts(10), {
        "price": 100.0, "dimensions": {"width_cm": [100, 130]}, "tags": [1, "1", True, None]}),
    11: ("policy", "weird", ts(11), {HOSTILE_KEY: "x", "with space": 1, "weird-key_1": "y"}),
    12: ("product", "sku-012", ts(12), {"price": 10**20, "name": "big"}),
    13: ("faq", "faq-13", ts(13), {"nested": {"a": [{"b": 1}]}, "name": None}),
    14: ("product", "sku-014", ts(14), {"price": 100, "name": "ZZZ", "dimensions": {"width_cm": 55}}),
    15: ("product", "sku-015", ts(15, 12), {"price": 150, "name": "bravia XR", "rating": [4, 5]}),
}
ALL = frozenset(ROWS)


def row_uuid(row_id: int) -> UUID:
    return UUID(int=row_id)


@pytest.fixture(scope="module")
def conn(pg_conninfo: str) -> Iterator[psycopg.Connection[Any]]:
    """One autocommit connection holding the TEMP table (temp tables live as long as their session)."""
    with psycopg.connect(pg_conninfo, autocommit=True) as connection:
        connection.execute("SET statement_timeout = '5s'")
        connection.execute("DROP TABLE IF EXISTS canary")
        connection.execute("CREATE TABLE canary (x int)")
        connection.execute(
            "CREATE TEMP TABLE document_embeddings ("
            " embedding_id UUID PRIMARY KEY,"
            " source_type VARCHAR(50) NOT NULL"
            "   CHECK (source_type IN ('product', 'page_content', 'faq', 'policy')),"
            " source_id TEXT,"
            " content_chunk TEXT NOT NULL DEFAULT '',"
            " metadata JSONB NOT NULL DEFAULT '{}',"
            " created_at TIMESTAMPTZ NOT NULL DEFAULT now(),"
            " updated_at TIMESTAMPTZ NOT NULL DEFAULT now())"
        )
        with connection.cursor() as cur:
            cur.executemany(
                "INSERT INTO document_embeddings (embedding_id, source_type, source_id, created_at, metadata)"
                " VALUES (%s, %s, %s, %s, %s)",
                [(row_uuid(i), kind, sid, created, Jsonb(meta))
                 for i, (kind, sid, created, meta) in ROWS.items()],
            )
        yield connection
        assert canary_exists(connection)


def canary_exists(connection: psycopg.Connection[Any]) -> bool:
    return connection.execute("SELECT to_regclass('public.canary') IS NOT NULL").fetchone() == (True,)


def matching(connection: psycopg.Connection[Any], filter: Mapping[str, Any] | None) -> set[int]:
    params = Params()
    where = compile_filter(filter, params)
    query = sql.SQL("SELECT embedding_id FROM document_embeddings WHERE {}").format(where)
    rows = connection.execute(query, params.values).fetchall()
    return {row[0].int for row in rows}


# ---------------------------------------------------------------------------------------- expected table


CASES: list[tuple[Any, set[int] | frozenset[int]]] = [
    (None, ALL),
    ({}, ALL),
    # equality: typed, numbers numeric, arrays matched by element
    ({"price": 100}, {1, 10, 14}),
    ({"price": 100.0}, {1, 10, 14}),
    ({"price": "100"}, {3}),
    ({"price": True}, {9}),
    ({"price": 1}, set()),
    ({"price": {"$eq": 10**20}}, {12}),
    ({"in_stock": True}, {1, 4}),
    ({"in_stock": False}, {2}),
    ({"flag": True}, set()),
    ({"flag": "true"}, {9}),
    ({"color": None}, {2}),
    ({"name": None}, {13}),
    ({"dimensions": None}, {4}),
    ({"tags": "4k"}, {1}),
    ({"tags": "1"}, {10}),
    ({"tags": 1}, {10}),
    ({"tags": True}, {10}),
    ({"tags": None}, {10}),
    ({"tags": "nested"}, set()),  # nested arrays are not unwrapped twice
    ({"tags": "single"}, {8}),
    ({"rating": 5}, {8, 15}),
    # $ne: the key must be present; the complement of $eq among those rows
    ({"price": {"$ne": 100}}, {2, 3, 4, 5, 8, 9, 12, 15}),
    ({"price": {"$ne": "100"}}, {1, 2, 4, 5, 8, 9, 10, 12, 14, 15}),
    ({"name": {"$ne": None}}, {1, 2, 3, 5, 7, 8, 9, 12, 14, 15}),
    ({"tags": {"$ne": "4k"}}, {2, 4, 7, 8, 10}),
    ({"color": {"$ne": None}}, set()),
    ({"missing": {"$ne": 1}}, set()),
    # ordering: same JSON type only
    ({"price": {"$gt": 99}}, {1, 8, 10, 12, 14, 15}),
    ({"price": {"$gte": 100, "$lt": 1000}}, {1, 10, 14, 15}),
    ({"price": {"$lte": 0}}, {4, 5}),
    ({"price": {"$lt": 49.99}}, {4, 5}),
    ({"price": {"$lte": 49.99}}, {2, 4, 5}),
    ({"price": {"$gt": "0"}}, {3}),
    ({"name": {"$lt": "a"}}, {1, 2, 5, 8, 9, 14}),  # code-point order: upper case sorts first, 'Ü' last
    ({"name": {"$gt": "Z"}}, {3, 7, 12, 14, 15}),
    ({"name": {"$gte": "Ü"}}, {7}),
    ({"rating": {"$gt": 4.6}}, {8, 15}),  # 15 has [4, 5]: any element
    ({"rating": {"$lt": 4}}, {5}),
    ({"rating": {"$lte": 4}}, {5, 15}),
    ({"dimensions.width_cm": {"$gt": 110}}, {1, 10}),
    ({"dimensions.width_cm": {"$lt": 100}}, {14}),
    # $between: inclusive, one element must satisfy both bounds
    ({"price": {"$between": [0, 100]}}, {1, 2, 4, 10, 14}),
    ({"price": {"$between": [49.99, 49.99]}}, {2}),
    ({"price": {"$between": [100, 0]}}, set()),
    ({"dimensions.width_cm": {"$between": [110, 125]}}, {1}),  # 10 has [100, 130]: no single element
    ({"dimensions.width_cm": {"$between": [100, 100]}}, {10}),
    ({"name": {"$between": ["B", "C"]}}, {1}),
    ({"price": {"$between": ["0", "5"]}}, {3}),
    # $in / $nin
    ({"price": {"$in": [100, "100"]}}, {1, 3, 10, 14}),
    ({"price": {"$in": [0, -5, 49.99]}}, {2, 4, 5}),
    ({"price": {"$in": []}}, set()),
    ({"tags": {"$in": ["hdr", "audio"]}}, {1, 2}),
    ({"price": {"$nin": [100, 0]}}, {2, 3, 5, 8, 9, 12, 15}),
    ({"price": {"$nin": []}}, {1, 2, 3, 4, 5, 8, 9, 10, 12, 14, 15}),
    ({"tags": {"$nin": ["4k", "audio"]}}, {4, 7, 8, 10}),
    # $like / $ilike: strings only
    ({"name": {"$like": "Bravia%"}}, {1}),
    ({"name": {"$ilike": "bravia%"}}, {1, 3, 15}),
    ({"name": {"$ilike": "%café"}}, {7}),
    ({"name": {"$ilike": "ünïcode%"}}, {7}),
    ({"name": {"$like": "%100\\%%"}}, {9}),  # escaped %
    ({"name": {"$like": "%\\_real\\_"}}, {9}),
    ({"name": {"$like": "%\"quoted\"%"}}, {9}),
    ({"name": {"$like": "It's%"}}, {9}),
    ({"name": {"$like": "ZZ_"}}, {14}),
    ({"name": {"$like": "%"}}, {1, 2, 3, 5, 7, 8, 9, 12, 14, 15}),  # not the JSON null of row 13
    ({"price": {"$like": "100%"}}, {3}),  # numbers are not strings
    ({"tags": {"$like": "%d%"}}, {1, 2}),
    ({"tags": {"$like": "nested"}}, set()),
    # $exists: JSON null counts as present
    ({"color": {"$exists": True}}, {2}),
    ({"dimensions": {"$exists": True}}, {1, 3, 4, 10, 14}),
    ({"dimensions.width_cm": {"$exists": True}}, {1, 3, 10, 14}),
    ({"dimensions.width_cm": {"$exists": False}}, ALL - {1, 3, 10, 14}),
    ({"rating": {"$exists": False}}, ALL - {1, 5, 8, 15}),
    # dotted keys walk objects only
    ({"nested.a.b.c": 1}, {7}),
    ({"nested.a.b": 1}, set()),  # row 13 has an array on the way: not walked
    ({"nested.a.b": {"$exists": True}}, {7}),
    ({"dimensions.height_cm": 70}, {1}),
    ({"tags.0": "4k"}, set()),  # no array indexing
    # odd keys
    ({"with space": 1}, {11}),
    ({"weird-key_1": "y"}, {11}),
    # several keys / operators AND-ed
    ({"price": 100, "name": {"$exists": True}}, {1, 14}),
    ({"price": {"$gt": 0}, "in_stock": True}, {1}),
    # logic
    ({"$and": [{"price": 100}, {"dimensions.width_cm": {"$gt": 100}}]}, {1, 10}),
    ({"$or": [{"price": "100"}, {"name": "ZZZ"}, {"tags": "audio"}]}, {2, 3, 14}),
    ({"$not": {"price": 100}}, ALL - {1, 10, 14}),
    ({"$not": {"price": {"$gt": 99}}}, ALL - {1, 8, 10, 12, 14, 15}),
    ({"$not": [{"price": 100}, {"source_type": "faq"}]}, ALL - {1, 10, 14} - {4, 9, 13}),
    ({"$not": {"$not": {"price": 100}}}, {1, 10, 14}),
    ({"$or": [{"$and": [{"price": {"$gte": 100}}, {"$not": {"name": {"$ilike": "bravia%"}}}]},
              {"rating": 3}]}, {5, 8, 10, 12, 14}),
    ({"$and": [{"$or": [{"tags": "4k"}, {"tags": "audio"}]}, {"$not": {"in_stock": False}}]}, {1}),
    ({"$AND": [{"price": 100}], "$Or": [{"name": "ZZZ"}, {"name": "Bravia TV"}]}, {1, 14}),
    ({"source_type": "product", "$not": {"price": {"$exists": True}}}, set()),
    # columns
    ({"source_type": "faq"}, {4, 9, 13}),
    ({"source_type": {"$ne": "product"}}, {4, 5, 6, 7, 9, 11, 13}),
    ({"source_type": {"$in": ["faq", "policy"]}}, {4, 5, 9, 11, 13}),
    ({"source_type": {"$nin": ["product", "faq"]}}, {5, 6, 7, 11}),
    ({"source_type": {"$in": []}}, set()),
    ({"source_type": {"$nin": []}}, ALL),
    ({"source_id": "sku-001"}, {1}),
    ({"source_id": None}, {4, 6}),
    ({"source_id": {"$ne": None}}, ALL - {4, 6}),
    ({"source_id": {"$exists": False}}, {4, 6}),
    ({"source_id": {"$ne": "sku-001"}}, ALL - {1, 4, 6}),  # NULL behaves like a missing key
    ({"$not": {"source_id": "sku-001"}}, ALL - {1}),  # ... and $not is an exact complement
    ({"source_id": {"$in": ["sku-001", "refund", "nope"]}}, {1, 5}),
    ({"source_id": {"$nin": ["sku-001"]}}, ALL - {1, 4, 6}),
    ({"source_id": {"$like": "sku-%"}}, {1, 2, 8, 10, 12, 14, 15}),
    ({"source_id": {"$ilike": "sku-%"}}, {1, 2, 3, 8, 10, 12, 14, 15}),
    ({"source_id": {"$lt": "sku"}}, {3, 5, 7, 9, 13}),  # code-point order: '/' < 'S' < 'f' < 'r' < 's' < 'w'
    ({"source_id": {"$gte": "sku-010"}}, {10, 11, 12, 14, 15}),
    ({"source_id": {"$between": ["faq", "faq-99"]}}, {9, 13}),
    ({"created_at": {"$lt": "2024-01-03T00:00:00Z"}}, {1, 2}),
    ({"created_at": {"$gte": ts(14)}}, {14, 15}),
    ({"created_at": "2024-01-15T13:00:00+01:00"}, {15}),
    ({"created_at": {"$ne": ts(1)}}, ALL - {1}),
    ({"created_at": {"$between": ["2024-01-05T00:00:00+00:00", ts(6)]}}, {5, 6}),
    ({"created_at": {"$gt": datetime(2024, 1, 14, 20, tzinfo=timezone(timedelta(hours=-5)))}}, {15}),
    ({"source_type": "product", "price": {"$gte": 100}, "created_at": {"$lt": ts(13)}}, {1, 8, 10, 12}),
    # hostile strings are data, not SQL
    ({"name": HOSTILE_KEY}, set()),  # as a key it is refused (see below); as a value it is just data
    ({"name": {"$in": [HOSTILE_KEY, "ZZZ"]}}, {14}),
    ({"source_id": HOSTILE_KEY}, set()),
]


@pytest.mark.parametrize(("filter", "expected"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_filter_matches_expected_rows(conn: psycopg.Connection[Any], filter: Any, expected: set[int]) -> None:
    assert matching(conn, filter) == set(expected)


@pytest.mark.parametrize(("filter", "expected"), CASES, ids=[str(i) for i in range(len(CASES))])
def test_reference_evaluator_agrees_with_expected_rows(filter: Any, expected: set[int]) -> None:
    assert reference_matches(filter) == set(expected)


def test_hostile_key_is_refused_and_canary_survives(conn: psycopg.Connection[Any]) -> None:
    with pytest.raises(InvalidFilterError, match="invalid key"):
        matching(conn, {HOSTILE_KEY: "x"})
    assert canary_exists(conn)


def test_filter_composes_with_other_parameters(conn: psycopg.Connection[Any]) -> None:
    params = Params()
    limit = params.add(2)
    where = compile_filter({"price": {"$gte": 100}}, params)
    query = sql.SQL(
        "SELECT embedding_id FROM document_embeddings WHERE {} ORDER BY embedding_id LIMIT {}"
    ).format(where, limit)
    assert [r[0].int for r in conn.execute(query, params.values).fetchall()] == [1, 8]


def test_column_filters_can_use_the_btree_index(conn: psycopg.Connection[Any]) -> None:
    conn.execute("CREATE INDEX IF NOT EXISTS de_source ON document_embeddings (source_type, source_id)")
    conn.execute("ANALYZE document_embeddings")
    conn.execute("SET enable_seqscan = off")
    try:
        params = Params()
        where = compile_filter({"source_type": "faq", "source_id": {"$in": ["faq-9"]}}, params)
        query = sql.SQL("EXPLAIN SELECT embedding_id FROM document_embeddings WHERE {}").format(where)
        plan = "\n".join(r[0] for r in conn.execute(query, params.values).fetchall())
        assert "de_source" in plan
    finally:
        conn.execute("RESET enable_seqscan")


# ------------------------------------------------------------------------------- pure-Python reference


MISSING = object()


def json_type(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int | float):
        return "number"
    if isinstance(value, str):
        return "string"
    return "array" if isinstance(value, list) else "object"


def as_key(value: Any) -> Any:
    # jsonb stores the decimal text json.dumps wrote (repr for floats); compare those decimals exactly.
    if json_type(value) == "number":
        return Decimal(repr(value)) if isinstance(value, float) else Decimal(value)
    return value


def resolve(metadata: dict[str, Any], path: list[str]) -> Any:
    value: Any = metadata
    for segment in path:
        if not isinstance(value, dict) or segment not in value:
            return MISSING
        value = value[segment]
    return value


def candidates(value: Any) -> list[Any]:
    """The stored value, or the elements of a stored array (one level); only scalars can match."""
    items = value if isinstance(value, list) else [value]
    return [item for item in items if json_type(item) not in ("array", "object")]


def same_type_compare(stored: Any, wanted: Any, op: str) -> bool:
    if json_type(stored) != json_type(wanted):
        return False
    a, b = as_key(stored), as_key(wanted)
    if op == "$eq":
        return bool(a == b)
    return bool({"$lt": a < b, "$lte": a <= b, "$gt": a > b, "$gte": a >= b}[op])


def fold(text: str) -> str:
    # Per-character simple lower-casing, as Postgres' ILIKE does through the ctype (no special casing).
    return "".join(ch.lower() if len(ch.lower()) == 1 else ch for ch in text)


def like(text: str, pattern: str, insensitive: bool) -> bool:
    if insensitive:
        text, pattern = fold(text), fold(pattern)
    regex, i = [], 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            regex.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        regex.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
        i += 1
    return re.fullmatch("".join(regex), text, flags=re.DOTALL) is not None


def meta_leaf(stored: Any, op: str, value: Any) -> bool:
    if op == "$exists":
        return (stored is not MISSING) is value
    if stored is MISSING:
        return False
    items = candidates(stored)
    if op == "$eq":
        return any(same_type_compare(c, value, "$eq") for c in items)
    if op == "$ne":
        return not meta_leaf(stored, "$eq", value)
    if op == "$in":
        return any(same_type_compare(c, v, "$eq") for c in items for v in value)
    if op == "$nin":
        return not meta_leaf(stored, "$in", value)
    if op in ("$lt", "$lte", "$gt", "$gte"):
        return any(same_type_compare(c, value, op) for c in items)
    if op == "$between":
        low, high = value
        return any(same_type_compare(c, low, "$gte") and same_type_compare(c, high, "$lte") for c in items)
    assert op in ("$like", "$ilike")
    return any(isinstance(c, str) and like(c, value, op == "$ilike") for c in items)


def parse_time(value: Any) -> datetime:
    return datetime.fromisoformat(value) if isinstance(value, str) else value


def column_leaf(stored: Any, op: str, value: Any) -> bool:
    if op == "$exists":
        return (stored is not None) is value
    if value is None:  # source_id {"$eq": None} / {"$ne": None}
        return (stored is None) == (op == "$eq")
    if stored is None:
        return False
    if isinstance(stored, datetime):
        value = [parse_time(v) for v in value] if op == "$between" else parse_time(value)
    if op == "$eq":
        return bool(stored == value)
    if op == "$ne":
        return bool(stored != value)
    if op == "$in":
        return stored in value
    if op == "$nin":
        return stored not in value
    if op == "$between":
        return bool(value[0] <= stored <= value[1])
    if op in ("$like", "$ilike"):
        return like(stored, value, op == "$ilike")
    return bool({"$lt": stored < value, "$lte": stored <= value, "$gt": stored > value,
                 "$gte": stored >= value}[op])


def evaluate(filter: Mapping[str, Any], row_id: int) -> bool:
    source_type, source_id, created_at, metadata = ROWS[row_id]
    columns = {"source_type": source_type, "source_id": source_id, "created_at": created_at}
    for key, value in filter.items():
        lowered = key.lower()
        if lowered == "$and":
            ok = all(evaluate(f, row_id) for f in value)
        elif lowered == "$or":
            ok = any(evaluate(f, row_id) for f in value)
        elif lowered == "$not":
            ok = not evaluate(value, row_id) if isinstance(value, Mapping) else \
                not any(evaluate(f, row_id) for f in value)
        else:
            ops = value if isinstance(value, Mapping) else {"$eq": value}
            if key in columns:
                ok = all(column_leaf(columns[key], op, v) for op, v in ops.items())
            else:
                stored = resolve(metadata, key.split("."))
                ok = all(meta_leaf(stored, op, v) for op, v in ops.items())
        if not ok:
            return False
    return True


def reference_matches(filter: Mapping[str, Any] | None) -> set[int]:
    if not filter:
        return set(ALL)
    return {row_id for row_id in ROWS if evaluate(filter, row_id)}


# ------------------------------------------------------------------------------------------ property test


def mostly(common: st.SearchStrategy[Any], rare: st.SearchStrategy[Any],
           one_in: int = 12) -> st.SearchStrategy[Any]:
    """Draw from ``rare`` about once in ``one_in`` draws: malformed parts compound over a nested filter."""
    # The rare branch sits in the middle of the range: Hypothesis favours small numbers and the bounds.
    return st.integers(0, one_in - 1).flatmap(lambda i: rare if i == one_in // 2 else common)


KEYS = mostly(
    st.sampled_from([
        "price", "name", "tags", "rating", "in_stock", "color", "flag", "dimensions", "dimensions.width_cm",
        "dimensions.height_cm", "nested.a.b.c", "nested.a.b", "nested.a", "with space", "weird-key_1",
        "missing", "tags.0", "source_type", "source_id", "created_at", "Price", "größe", "价格",
    ]),
    st.one_of(
        st.sampled_from([HOSTILE_KEY, "price ", "a.b", "", ".", "$and", "$eq", "$foo", 'x"y', "x'y", "x\\y",
                         "a\x00b"]),
        st.text(max_size=12),
        st.text(alphabet="abc_- .", min_size=1, max_size=8),
    ),
)

# Characters whose lower-casing agrees between Python and Postgres' ctype, so $ilike can be checked.
PATTERN_TEXT = st.text(alphabet="abrvBRVAZzaé%_\\'\" ÜüïÏCcx-1", max_size=8)
TEXTS = mostly(
    st.sampled_from(["Bravia TV", "bravia accessories", "ZZZ", "4k", "hdr", "audio", "café", "100", "1",
                     "single", "true", "x", "y", "Refund policy", "Ünïcode Café", "sku-001", "faq-9",
                     "product", "faq", "policy", "page_content", HOSTILE_KEY, "'", "\\", "%", "_", "",
                     "1; SELECT pg_sleep(10)", "$.a == 1", "\" || true || \"", "{}", "x\x00"]),
    st.text(max_size=10),
    one_in=3,
)
NUMBERS = mostly(
    st.sampled_from([0, 1, -5, 3, 4, 4.5, 5, 49.99, 55, 70, 100, 100.0, 120, 120.5, 130, 150, 1000, 10**20,
                     -0.0, 1e-300, 1e300]),
    st.one_of(st.integers(-200, 2000), st.floats(allow_nan=True, allow_infinity=True)),
    one_in=3,
)
SCALARS = st.one_of(TEXTS, NUMBERS, st.booleans(), st.none())
TIMES = st.one_of(
    st.datetimes(min_value=datetime(2023, 12, 30), max_value=datetime(2024, 1, 17),
                 timezones=st.sampled_from([UTC, timezone(timedelta(hours=5, minutes=30)),
                                            timezone(timedelta(hours=-8))])),
    st.sampled_from([ts(1), ts(15, 12), ts(7)]),
).flatmap(lambda d: st.sampled_from([d, d.isoformat()]))
OPERAND = st.one_of(
    SCALARS,
    st.lists(SCALARS, max_size=4),
    st.tuples(SCALARS, SCALARS).map(list),
    st.tuples(NUMBERS, NUMBERS).map(list),
    st.tuples(TEXTS, TEXTS).map(list),
    PATTERN_TEXT,
    TIMES,
    st.tuples(TIMES, TIMES).map(list),
    st.dictionaries(st.text(max_size=3), SCALARS, max_size=2),
)
OPERATORS = mostly(
    st.sampled_from(["$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$in", "$nin", "$between", "$like", "$ilike",
                     "$exists"]),
    st.sampled_from(["$foo", "$and", "eq", "$EQ"]),
)


@st.composite
def operand_for(draw: st.DrawFn, op: str) -> Any:
    # Steer most operands to the type the operator wants, so that most filters reach the database.
    if draw(st.integers(0, 19)) == 0:
        return draw(OPERAND)
    if op == "$exists":
        return draw(st.booleans())
    if op in ("$like", "$ilike"):
        return draw(PATTERN_TEXT)
    if op in ("$in", "$nin"):
        return draw(st.lists(st.one_of(TEXTS, NUMBERS, st.booleans()), max_size=4))
    if op == "$between":
        return draw(st.one_of(st.tuples(NUMBERS, NUMBERS).map(list), st.tuples(TEXTS, TEXTS).map(list)))
    if op in ("$lt", "$lte", "$gt", "$gte"):
        return draw(mostly(st.one_of(TEXTS, NUMBERS), st.one_of(st.booleans(), st.none())))
    return draw(st.one_of(TEXTS, NUMBERS, st.booleans(), st.none()))


@st.composite
def field_filter(draw: st.DrawFn) -> dict[str, Any]:
    key = draw(KEYS)
    if key == "source_type":
        values = st.sampled_from(["product", "faq", "policy", "page_content", "video"])
        op = draw(st.sampled_from(["$eq", "$ne", "$in", "$nin", "$like"]))
        operand: Any = draw(st.lists(values, max_size=3)) if op in ("$in", "$nin") else draw(values)
        return {key: {op: operand}}
    if key == "created_at":
        op = draw(st.sampled_from(["$eq", "$ne", "$lt", "$lte", "$gt", "$gte", "$between", "$in"]))
        operand = draw(st.tuples(TIMES, TIMES).map(list)) if op == "$between" else draw(TIMES)
        return {key: {op: operand}}
    if key == "source_id":
        texts = st.one_of(TEXTS, st.sampled_from(["sku-001", "sku-010", "SKU-003", "faq", "refund", "weird"]))
        op = draw(OPERATORS)
        if op in ("$in", "$nin"):
            return {key: {op: draw(st.lists(texts, max_size=3))}}
        if op == "$between":
            return {key: {op: draw(st.tuples(texts, texts).map(list))}}
        if op in ("$like", "$ilike"):
            return {key: {op: draw(st.one_of(PATTERN_TEXT, st.sampled_from(["sku%", "SKU-%", "%9"])))}}
        return {key: {op: draw(operand_for(op)) if draw(st.booleans()) else draw(texts)}}
    if draw(st.integers(0, 3)) == 0:
        return {key: draw(operand_for("$eq"))}
    ops = draw(st.lists(OPERATORS, min_size=1, max_size=2, unique=True))
    return {key: {op: draw(operand_for(op)) for op in ops}}


FILTERS = st.recursive(
    field_filter(),
    lambda children: st.one_of(
        st.lists(children, min_size=1, max_size=3).map(lambda fs: {"$and": fs}),
        st.lists(children, min_size=1, max_size=3).map(lambda fs: {"$or": fs}),
        children.map(lambda f: {"$not": f}),
        st.lists(children, min_size=1, max_size=2).map(lambda fs: {"$not": fs}),
        st.lists(children, min_size=2, max_size=3).map(lambda fs: {k: v for f in fs for k, v in f.items()}),
    ).flatmap(lambda f: mostly(st.just(f), st.just({"$or": []}), one_in=40)),
    max_leaves=6,
)


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture,
                                                                   HealthCheck.too_slow])
@given(filter=FILTERS)
def test_random_filters_agree_with_reference(conn: psycopg.Connection[Any], filter: dict[str, Any]) -> None:
    try:
        params = Params()
        where = compile_filter(filter, params)
    except InvalidFilterError:
        return
    query = sql.SQL("SELECT embedding_id FROM document_embeddings WHERE {}").format(where)
    got = {row[0].int for row in conn.execute(query, params.values).fetchall()}
    assert got == reference_matches(filter), filter
    assert canary_exists(conn)
