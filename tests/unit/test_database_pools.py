"""Connection settings without a server: safe descriptions of URLs, pooler detection, connection keywords,
and the age strings that pruning takes."""

from __future__ import annotations

from datetime import timedelta

import pytest

from sony_rag.database import Database, describe_conninfo, is_transaction_pooler
from sony_rag.errors import InvalidInputError
from sony_rag.operations import parse_age
from sony_rag.settings import Settings

SECRET = "s3cr3t-P4ss"

NEON_POOLED = (f"postgresql://alex:{SECRET}@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb"
               "?sslmode=require&channel_binding=require")
NEON_DIRECT = f"postgresql://alex:{SECRET}@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb?sslmode=require"


def settings(**values: object) -> Settings:
    """Return Settings from explicit values only (they take precedence over the environment)."""
    base: dict[str, object] = {"transaction_pooler": None, "statement_timeout_ms": 30_000, "connect_timeout": 10.0}
    base.update(values)
    return Settings(**base)  # type: ignore[arg-type]


@pytest.mark.parametrize(("conninfo", "expected"), [
    (NEON_POOLED, "alex@ep-cool-darkness-123456-pooler.us-east-2.aws.neon.tech/neondb"),
    (NEON_DIRECT, "alex@ep-cool-darkness-123456.us-east-2.aws.neon.tech/neondb"),
    (f"postgresql://app:{SECRET}@localhost:5433/shop", "app@localhost:5433/shop"),
    (f"postgres://app:{SECRET}@db.internal/shop?application_name=x&connect_timeout=3", "app@db.internal/shop"),
    (f"postgresql://app@db.internal/shop?password={SECRET}&sslmode=verify-full", "app@db.internal/shop"),
    (f"host=db.internal port=6432 user=app password={SECRET} dbname=shop", "app@db.internal:6432/shop"),
    (f"postgresql://app:{SECRET.replace('-', '%2D')}%40x@[::1]:5432/shop", "app@::1:5432/shop"),
    ("postgresql://postgres:@/postgres?host=/tmp/pgdata", "postgres@socket /tmp/pgdata/postgres"),
    (f"postgresql://:{SECRET}@db.internal/shop", "db.internal/shop"),
    (f"postgresql://app:{SECRET}@db.internal", "app@db.internal/app"),
])
def test_describe_conninfo_names_the_server_but_never_the_password(conninfo: str, expected: str) -> None:
    described = describe_conninfo(conninfo)
    assert described == expected
    assert SECRET not in described
    assert "s3cr3t" not in described


@pytest.mark.parametrize("conninfo", [
    f"postgresql://app:{SECRET}@host:notaport/db?sslmode=require",
    f"host=db password='{SECRET}",
    f"nonsense {SECRET}",
])
def test_describe_conninfo_of_an_unparseable_url_reveals_nothing(conninfo: str) -> None:
    described = describe_conninfo(conninfo)
    assert SECRET not in described
    assert "s3cr3t" not in described


def test_database_description_and_repr_hide_the_password() -> None:
    db = Database(NEON_POOLED, settings=settings())
    assert SECRET not in db.description
    assert SECRET not in repr(db)
    assert "neon.tech" in db.description


@pytest.mark.parametrize(("conninfo", "expected"), [
    (NEON_POOLED, True),
    (NEON_DIRECT, False),
    ("postgresql://u:p@localhost:6432/db", False),
    ("host=ep-x-pooler.eu-central-1.aws.neon.tech user=u dbname=db", True),
    ("postgresql://u:p@primary.example:5432,ep-y-pooler.example:5432/db", True),
    ("postgresql://u:p@pooler.example/db", False),  # only Neon's '-pooler' suffix counts
    ("postgresql://postgres:@/postgres?host=/tmp/pgdata", False),
    ("not a conninfo ===", False),
])
def test_transaction_pooler_is_detected_from_neon_pooler_hosts(conninfo: str, expected: bool) -> None:
    assert is_transaction_pooler(conninfo, None) is expected


@pytest.mark.parametrize("conninfo", [NEON_POOLED, NEON_DIRECT, "postgresql://u@localhost/db"])
@pytest.mark.parametrize("explicit", [True, False])
def test_an_explicit_pooler_setting_wins_over_the_host_name(conninfo: str, explicit: bool) -> None:
    assert is_transaction_pooler(conninfo, explicit) is explicit


def test_behind_a_pooler_no_prepared_statements_and_no_startup_settings() -> None:
    kwargs = Database(NEON_POOLED, settings=settings()).connection_kwargs()
    assert "prepare_threshold" in kwargs
    assert kwargs["prepare_threshold"] is None
    assert "options" not in kwargs  # a session-level setting would leak between pooled transactions
    assert kwargs["autocommit"] is True


def test_explicit_pooler_setting_applies_the_pooler_rules_on_any_host() -> None:
    db = Database("postgresql://u@localhost:6432/db", settings=settings(transaction_pooler=True))
    assert db.transaction_pooler
    kwargs = db.connection_kwargs()
    assert kwargs["prepare_threshold"] is None
    assert "options" not in kwargs


def test_direct_connection_sends_the_statement_timeout_as_a_startup_option() -> None:
    db = Database(NEON_DIRECT, settings=settings(statement_timeout_ms=1234))
    assert not db.transaction_pooler
    kwargs = db.connection_kwargs()
    assert kwargs["options"] == "-c statement_timeout=1234"
    assert "prepare_threshold" not in kwargs  # psycopg's default: prepare statements that repeat
    assert kwargs["autocommit"] is True


def test_explicit_no_pooler_on_a_pooler_host_keeps_prepared_statements() -> None:
    db = Database(NEON_POOLED, settings=settings(transaction_pooler=False))
    kwargs = db.connection_kwargs()
    assert "prepare_threshold" not in kwargs
    assert kwargs["options"] == "-c statement_timeout=30000"


def test_the_urls_own_startup_options_and_application_name_are_kept() -> None:
    url = f"{NEON_DIRECT}&options=endpoint%3Dep-cool-darkness-123456&application_name=widget"
    kwargs = Database(url, settings=settings(statement_timeout_ms=1234)).connection_kwargs()
    assert kwargs["options"] == "endpoint=ep-cool-darkness-123456 -c statement_timeout=1234"
    assert "application_name" not in kwargs  # the URL's "widget" stands
    assert Database(NEON_DIRECT, settings=settings()).connection_kwargs()["application_name"] == "sony-rag"


def test_zero_statement_timeout_sends_no_option() -> None:
    kwargs = Database(NEON_DIRECT, settings=settings(statement_timeout_ms=0)).connection_kwargs()
    assert "options" not in kwargs


@pytest.mark.parametrize(("seconds", "expected"), [(0.2, 1), (2.6, 3), (10.0, 10)])
def test_connect_timeout_is_whole_seconds_and_at_least_one(seconds: float, expected: int) -> None:
    kwargs = Database(NEON_DIRECT, settings=settings(connect_timeout=seconds)).connection_kwargs()
    assert kwargs["connect_timeout"] == expected


def test_connection_kwargs_never_carry_the_password() -> None:
    kwargs = Database(NEON_POOLED, settings=settings()).connection_kwargs()
    assert SECRET not in repr(kwargs)


@pytest.mark.parametrize(("text", "expected"), [
    ("30d", timedelta(days=30)),
    ("12h", timedelta(hours=12)),
    ("45min", timedelta(minutes=45)),
    ("90s", timedelta(seconds=90)),
    ("2w", timedelta(weeks=2)),
    (" 1.5h ", timedelta(minutes=90)),
    (timedelta(days=3), timedelta(days=3)),
])
def test_parse_age_accepts_numbers_with_a_unit(text: str | timedelta, expected: timedelta) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize("text", ["", "30", "d", "30x", "30 days", "-5d", "0d", "1d2h", "1e3s", "30D",
                                  timedelta(0), timedelta(days=-1)])
def test_parse_age_refuses_anything_else(text: str | timedelta) -> None:
    with pytest.raises(InvalidInputError):
        parse_age(text)
