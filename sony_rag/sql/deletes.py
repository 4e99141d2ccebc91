"""SQL for deleting from document_embeddings: one statement whose conditions all hold (ids AND filter AND source)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any
from uuid import UUID

from psycopg import sql

from sony_rag.sql import Params, Query
from sony_rag.sql.filters import compile_filter


def delete_embeddings(ids: Sequence[UUID] | None, filter: Mapping[str, Any] | None,
                      source: tuple[str, str | None] | None) -> Query:
    """Return one DELETE of the rows that match every selector given; raises ValueError when none is given.

    ``source`` is ``(source_type, source_id)``; a None source_id means every source of that type.
    """
    p = Params()
    conditions: list[sql.Composable] = []
    if ids is not None:
        conditions.append(sql.SQL("embedding_id = ANY({})").format(p.add(list(ids), "uuid[]")))
    if filter is not None:
        conditions.append(sql.SQL("({})").format(compile_filter(filter, p)))
    if source is not None:
        source_type, source_id = source
        conditions.append(sql.SQL("source_type = {}").format(p.add(source_type)))
        if source_id is not None:
            conditions.append(sql.SQL("source_id = {}").format(p.add(source_id)))
    if not conditions:
        # A DELETE without WHERE would empty the table: never composed, whatever the caller passed.
        raise ValueError("a delete needs at least one selector")
    return sql.SQL("DELETE FROM document_embeddings WHERE {}").format(sql.SQL(" AND ").join(conditions)), p.values
