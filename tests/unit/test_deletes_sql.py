"""The DELETE of document_embeddings: every selector narrows it, and none at all is refused."""

from __future__ import annotations

from uuid import uuid4

import pytest

from sony_rag.sql.deletes import delete_embeddings


def test_no_selector_is_refused_rather_than_deleting_everything() -> None:
    with pytest.raises(ValueError, match="at least one selector"):
        delete_embeddings(None, None, None)


def test_every_selector_given_is_a_condition_joined_by_and() -> None:
    ids = [uuid4()]
    query, params = delete_embeddings(ids, {"price": {"$lt": 5}}, ("product", "sofa-1"))
    text = query.as_string(None)
    assert " OR " not in text and text.count(" AND ") >= 3
    assert list(params.values())[:1] == [ids] and "product" in params.values() and "sofa-1" in params.values()


def test_a_source_type_without_source_id_selects_the_whole_type_only() -> None:
    query, params = delete_embeddings(None, None, ("faq", None))
    assert query.as_string(None).endswith("WHERE source_type = %(p0)s")
    assert params == {"p0": "faq"}
