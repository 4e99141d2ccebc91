"""Database URLs: accept the spellings users already have, refuse the rest clearly, and never echo a secret.

A URL usually carries a password, so nothing here puts the URL, or any part of it that could hold the
password, into a message: errors say what is wrong in our own words and name at most ``user@host:port/db``.
Each error is raised outside the ``except`` block that detected it, so psycopg's message (which quotes the
whole URL) is neither the ``__cause__`` nor the ``__context__`` of what the caller sees.
"""

from __future__ import annotations

import re
from typing import Final

from sony_rag.errors import ConfigurationError

# SQLAlchemy's spellings (langchain-postgres users have these in DATABASE_URL) and libpq's short form.
_SCHEMES: Final = {
    "postgresql": "postgresql", "postgres": "postgresql",
    "postgresql+psycopg": "postgresql", "postgresql+psycopg2": "postgresql",
    "postgres+psycopg": "postgresql", "postgres+psycopg2": "postgresql",
}
# "scheme:" at the start: key=value strings never match, as "=" is not a scheme character.
_SCHEME = re.compile(r"([A-Za-z][A-Za-z0-9+.\-]*):")
_PLAIN_SCHEME = re.compile(r"[a-z][a-z0-9+.\-]{0,29}")
EXAMPLE: Final = "postgresql://USER:PASSWORD@HOST:PORT/DBNAME"

# libpq checks these values only when it connects, with errors reported as a failed connection: check them
# first, so that a typo is a configuration error (exit 2), not an outage (exit 3).
_CHOICES: Final = {
    "sslmode": ("disable", "allow", "prefer", "require", "verify-ca", "verify-full"),
    "channel_binding": ("disable", "prefer", "require"),
    "gssencmode": ("disable", "prefer", "require"),
    "target_session_attrs": ("any", "read-write", "read-only", "primary", "standby", "prefer-standby"),
    "load_balance_hosts": ("disable", "random"),
    "sslnegotiation": ("postgres", "direct"),
}
_INTEGERS: Final = ("connect_timeout", "keepalives", "keepalives_idle", "keepalives_interval", "keepalives_count",
                    "tcp_user_timeout")


def normalize_url(url: str, *, source: str = "the database URL") -> str:
    """Return ``url`` as a libpq connection string psycopg accepts; raises ConfigurationError (never quoting it).

    Accepts ``postgresql://`` and ``postgres://`` URLs, SQLAlchemy's ``postgresql+psycopg://`` and
    ``postgresql+psycopg2://``, and libpq ``key=value`` strings; surrounding whitespace is dropped.
    ``source`` names where the URL came from (``DATABASE_URL``, ``--database-url``) in messages.
    """
    if not isinstance(url, str):
        raise ConfigurationError(f"{source} must be a string, got {type(url).__name__}")
    text = url.strip()
    if not text:
        raise ConfigurationError(f"{source} is empty: give a URL such as {EXAMPLE}, or leave it unset for the "
                                 "embedded server")
    scheme = _SCHEME.match(text)
    if scheme is not None:
        text = _normalize_scheme(text, scheme.group(1), source)
    elif "=" not in text:
        raise ConfigurationError(f"{source} is not a PostgreSQL URL: expected {EXAMPLE} (or libpq's "
                                 "'host=... dbname=...' form)")
    parts = _parse(text)
    if parts is None:
        raise ConfigurationError(f"{source} cannot be parsed: {_why_unparseable(text)}; expected {EXAMPLE} with "
                                 "reserved characters in the user name or password percent-encoded (@ as %40)")
    _check_values(parts, source, describe_parts(parts))
    return text


def _normalize_scheme(text: str, scheme: str, source: str) -> str:
    rest = text[len(scheme) + 1:]
    lowered = scheme.lower()
    known = _SCHEMES.get(lowered)
    if known is None:
        # Only a real scheme (followed by //) is named: in "user:secret@host" the part before ":" is a user name.
        if not (rest.startswith("//") and _PLAIN_SCHEME.fullmatch(lowered)):
            raise ConfigurationError(f"{source} is not a PostgreSQL URL: expected {EXAMPLE}")
        hint = " (asyncpg's spelling: sony-rag connects with psycopg)" if lowered.endswith("+asyncpg") else ""
        raise ConfigurationError(f"{source} has the scheme '{lowered}'{hint}: sony-rag needs a PostgreSQL URL, "
                                 f"{EXAMPLE}")
    if not rest.startswith("//"):
        raise ConfigurationError(f"{source} is missing '//' after '{lowered}:': expected {EXAMPLE}")
    _check_authority(rest[2:], source)
    return known + ":" + rest


def _check_authority(rest: str, source: str) -> None:
    # libpq takes the user information up to the FIRST "@" (and none if a "/" comes first), while a password
    # generator's "@" or "/" belongs to the password: such a URL would connect as the wrong user to a host
    # made of the password's tail, and print that host in its errors.
    first_at = rest.find("@")
    if first_at < 0:
        return
    before = rest[:first_at]
    after = rest[first_at + 1:]
    host_part = re.split(r"[/?]", after, maxsplit=1)[0]
    if "@" in host_part or ("/" in before and "?" not in before):
        raise ConfigurationError(f"{source} has an '@' or '/' in its user name or password that is not "
                                 "percent-encoded: write @ as %40 and / as %2F (urllib.parse.quote(password, "
                                 "safe=''))")


def _parse(text: str) -> dict[str, str] | None:
    from psycopg import ProgrammingError
    from psycopg.conninfo import conninfo_to_dict

    try:
        return {key: str(value) for key, value in conninfo_to_dict(text).items() if value is not None}
    except ProgrammingError:
        return None  # the message quotes the whole string: dropped here, and raised outside this block


def _why_unparseable(text: str) -> str:
    # Our own reading of what libpq refused; its message would quote the string, password included.
    if "://" in text:
        if re.search(r"%(?![0-9A-Fa-f]{2})", text):
            return "a '%' that is not followed by two hex digits (write % itself as %25)"
        query = text.split("?", 1)[1] if "?" in text else ""
        from psycopg.conninfo import conninfo_to_dict

        for pair in filter(None, query.split("&")):
            name = pair.split("=", 1)[0]
            if re.fullmatch(r"[a-z_]{1,40}", name):
                try:
                    conninfo_to_dict(f"{name}=x")
                except Exception:
                    return f"unknown connection parameter {name!r} in the query string"
            else:
                return "a query-string parameter that is not name=value"
        return "libpq rejects its syntax"
    if text.count("'") % 2:
        return "an unterminated quoted value"
    return "libpq rejects the 'key=value' syntax (unknown keyword or missing '=')"


def _check_values(parts: dict[str, str], source: str, where: str) -> None:
    hosts = parts.get("host", "").split(",")
    ports = parts.get("port", "").split(",") if parts.get("port") else []
    for port in ports:
        if port and not (port.isdigit() and 1 <= int(port) <= 65535):
            # Not described: in "postgresql://user:secret/db" libpq reads the password as the port.
            raise ConfigurationError(f"{source} has a port that is not a number from 1 to 65535")
    if len(ports) > 1 and len(ports) != len(hosts):
        raise ConfigurationError(f"{source} ({where}) has {len(ports)} ports for {len(hosts)} hosts")
    for key, allowed in _CHOICES.items():
        if key in parts and parts[key] not in allowed:
            raise ConfigurationError(f"{source} ({where}) has an invalid {key}: use one of {', '.join(allowed)}")
    for key in _INTEGERS:
        if key in parts and not re.fullmatch(r"-?\d{1,9}", parts[key]):
            raise ConfigurationError(f"{source} ({where}) has a {key} that is not an integer")


def describe_conninfo(conninfo: str) -> str:
    """Return ``user@host:port/dbname`` for logs and errors: never the password or other parameters."""
    parts = _parse(conninfo)
    if parts is None:
        return "<unparseable database URL>"
    return describe_parts(parts)


def describe_parts(parts: dict[str, str]) -> str:
    """Return ``user@host:port/dbname`` from parsed connection parameters (the password left out)."""
    host = parts.get("host") or parts.get("hostaddr") or "localhost"
    if host.startswith("/"):
        host = f"socket {host}"
    user = parts.get("user")
    port = parts.get("port")
    where = f"{host}:{port}" if port else host
    dbname = parts.get("dbname") or user or "postgres"
    password = parts.get("password")
    # A host never holds the password, nor does a database name merely contain it: the URL was mis-split.
    if password and len(password) >= 4 and (password in where or (password in dbname and password != dbname)):
        return "<the database URL (its parts are unclear)>"
    return f"{user + '@' if user else ''}{where}/{dbname}"


__all__ = ["EXAMPLE", "describe_conninfo", "describe_parts", "normalize_url"]
