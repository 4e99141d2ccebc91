"""The only place SQL text lives: pure functions that return ``(query, params)`` and never do I/O.

Identifiers come from fixed sets in this package; every value is a bound parameter. Parameter names are
allocated in order (``p0``, ``p1``, ...), so one query shape always yields the same SQL text.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from psycopg import sql

__all__ = ["Params", "Query", "Statement"]

Statement = sql.SQL | sql.Composed
Query = tuple[Statement, dict[str, Any]]

# Casts that a placeholder may carry; a fixed set so that no caller can smuggle SQL in through a cast name.
_ALLOWED_CASTS = frozenset(
    {"uuid", "uuid[]", "text", "text[]", "jsonb", "jsonb[]", "jsonpath", "vector", "timestamptz", "int",
     "int[]", "bigint", "bigint[]", "float8", "boolean", "regconfig", "interval"}
)


@dataclass
class Params:
    """Collects bound values for one statement and hands out deterministic placeholder names."""

    values: dict[str, Any] = field(default_factory=dict)

    def add(self, value: Any, cast: str | None = None) -> sql.Composable:
        """Return a placeholder (optionally cast) bound to ``value``; raises ValueError for an unknown cast."""
        name = f"p{len(self.values)}"
        self.values[name] = value
        placeholder = sql.Placeholder(name)
        if cast is None:
            return placeholder
        if cast not in _ALLOWED_CASTS:
            raise ValueError(f"cast {cast!r} is not allowed")
        return sql.SQL("{}::{}").format(placeholder, sql.SQL(cast))
