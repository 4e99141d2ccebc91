"""Database URLs (``sony_rag.conninfo``) and prune ages (``sony_rag.durations``): no database needed."""

from __future__ import annotations

import traceback
from datetime import timedelta

import pytest

from sony_rag.conninfo import describe_conninfo, normalize_url
from sony_rag.durations import parse_age
from sony_rag.errors import ConfigurationError, InvalidInputError

SECRET = "Zq9-s3cretpw"


@pytest.mark.parametrize("given, expected", [
    (f"postgresql://u:{SECRET}@db.example.com:5432/shop", f"postgresql://u:{SECRET}@db.example.com:5432/shop"),
    (f"postgres://u:{SECRET}@db.example.com/shop", f"postgresql://u:{SECRET}@db.example.com/shop"),
    (f"postgresql+psycopg://u:{SECRET}@db.example.com/shop", f"postgresql://u:{SECRET}@db.example.com/shop"),
    (f"postgresql+psycopg2://u:{SECRET}@db.example.com/shop", f"postgresql://u:{SECRET}@db.example.com/shop"),
    (f"  postgresql://u:{SECRET}@h/shop\n", f"postgresql://u:{SECRET}@h/shop"),
    (f"POSTGRESQL://u:{SECRET}@h/shop", f"postgresql://u:{SECRET}@h/shop"),
    ("postgresql://u:pa%40ss%2Fword@h/shop?sslmode=require&channel_binding=require",
     "postgresql://u:pa%40ss%2Fword@h/shop?sslmode=require&channel_binding=require"),
    ("postgresql://postgres:@/postgres?host=/tmp/pgdata", "postgresql://postgres:@/postgres?host=/tmp/pgdata"),
    (f"host=h port=5433 dbname=shop password={SECRET}", f"host=h port=5433 dbname=shop password={SECRET}"),
])
def test_accepted_spellings_are_normalised_for_psycopg(given: str, expected: str) -> None:
    assert normalize_url(given) == expected


@pytest.mark.parametrize("url, reason", [
    (f"mysql://u:{SECRET}@localhost/x", "the scheme 'mysql'"),
    (f"postgresql+asyncpg://u:{SECRET}@localhost/x", "asyncpg"),
    (f"postgres:/u:{SECRET}@localhost/x", "missing '//'"),
    (f"u:{SECRET}@localhost/x", "not a PostgreSQL URL"),
    ("notaurl", "not a PostgreSQL URL"),
    ("   ", "is empty"),
    (f"postgresql://u:{SECRET}@localhost:abc/x", "port"),
    (f"postgresql://u:{SECRET}@localhost:99999/x", "port"),
    (f"postgresql://u:{SECRET}/x", "port"),  # the password read as a port: the message must not describe it
    (f"postgresql://u:{SECRET}@h/x?sslmode=bogus", "sslmode"),
    (f"postgresql://u:{SECRET}@h/x?connect_timeout=soon", "connect_timeout"),
    (f"postgresql://u:{SECRET}@h/x?sslmod=require", "unknown connection parameter 'sslmod'"),
    (f"postgresql://u:{SECRET}%zz@h/x", "'%'"),
    (f"postgresql://u:{SECRET}@extra@h/x", "percent-encoded"),
    (f"postgresql://u:ab/{SECRET}@h/x", "percent-encoded"),
    (f"host=h password='{SECRET}", "unterminated"),
    (f"host=h password={SECRET} colour=blue", "key=value"),
    (f"host=h1,h2 port=1,2,3 password={SECRET}", "3 ports for 2 hosts"),
])
def test_malformed_urls_are_refused_without_the_password(url: str, reason: str) -> None:
    with pytest.raises(ConfigurationError) as caught:
        normalize_url(url, source="DATABASE_URL")
    error = caught.value
    assert reason in str(error) and str(error).startswith("DATABASE_URL")
    # Neither psycopg's message (which quotes the URL) nor anything else rides along with the error.
    assert error.__cause__ is None and error.__context__ is None
    assert SECRET not in "".join(traceback.format_exception(error))


@pytest.mark.parametrize("conninfo, described", [
    (f"postgresql://shop:{SECRET}@ep-cool-1-pooler.eu.aws.neon.tech/neondb?sslmode=require",
     "shop@ep-cool-1-pooler.eu.aws.neon.tech/neondb"),
    (f"postgresql://shop:{SECRET}@h1:5432,h2:5433/db", "shop@h1,h2:5432,5433/db"),
    ("postgresql://postgres:@/postgres?host=/tmp/pgdata", "postgres@socket /tmp/pgdata/postgres"),
    (f"host=h password={SECRET}", "h/postgres"),
    ("postgresql://postgres:postgres@localhost/postgres", "postgres@localhost/postgres"),
    ("notaurl", "<unparseable database URL>"),
])
def test_description_is_user_host_port_db_only(conninfo: str, described: str) -> None:
    assert describe_conninfo(conninfo) == described


def test_a_description_that_would_hold_the_password_is_withheld() -> None:
    # libpq reads "postgresql://u:pw@h/db" with an unencoded "/" in a key=value string's host as given.
    assert SECRET not in describe_conninfo(f"host=x{SECRET}y password={SECRET}")


# -- prune ages ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("text, expected", [
    ("45s", timedelta(seconds=45)), ("90min", timedelta(minutes=90)), ("12h", timedelta(hours=12)),
    ("30d", timedelta(days=30)), ("2w", timedelta(weeks=2)), (" 1.5 h ", timedelta(hours=1.5)),
    (timedelta(days=3), timedelta(days=3)),
])
def test_ages_with_spelled_out_units(text: str | timedelta, expected: timedelta) -> None:
    assert parse_age(text) == expected


@pytest.mark.parametrize("text, reason", [
    ("1m", "'m' is ambiguous"), ("-5d", "must be positive"), ("0d", "greater than zero"), ("0min", "greater than zero"),
    ("30", "no unit"), ("3mo", "unknown unit 'mo'"), ("soon", "must be a number and a unit"), ("", "a number"),
    ("99999999999w", "too large"), ("2000000d", "1000 years"), (timedelta(0), "greater than zero"),
    (timedelta(days=-1), "greater than zero"),
])
def test_bad_ages_say_what_is_wrong(text: str | timedelta, reason: str) -> None:
    with pytest.raises(InvalidInputError, match=reason):
        parse_age(text)
