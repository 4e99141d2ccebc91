"""Documents built from stored values without validation are the Documents the constructor builds."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from langchain_core.documents import Document
from langchain_core.load import dumpd
from pydantic import ValidationError

from sony_rag import langchain_documents
from sony_rag.langchain_documents import document

VALUES = [
    ("2b0c3f6e-1f4b-5c1e-9d6a-0e8f4d1c2a3b", "Oak sideboard, 160 cm", {"price": 1899, "tags": ["oak", "4k"]}),
    ("faq-12", "", {}),
    ("größe", "Größe: 220 × 95 cm, Bouclé", {"nested": {"deep": [1, 2.5, None, True]}, "ключ": "значение"}),
]


def test_the_shortcut_is_in_use_with_the_installed_pydantic_and_langchain_core() -> None:
    # Were a release to lay Documents out otherwise, the module falls back to the constructor; this shows it.
    assert langchain_documents._SHORTCUT


@pytest.mark.parametrize(("id", "content", "metadata"), VALUES)
def test_a_built_document_is_the_constructors_in_every_respect(id: str, content: str,
                                                               metadata: dict[str, Any]) -> None:
    built = document(id, content, metadata)
    validated = Document(id=id, page_content=content, metadata=metadata)
    assert type(built) is Document
    assert built == validated and validated == built
    assert repr(built) == repr(validated) and str(built) == str(validated)
    assert built.model_fields_set == validated.model_fields_set
    assert built.model_dump() == validated.model_dump()
    assert built.model_dump_json() == validated.model_dump_json()
    assert dumpd(built) == dumpd(validated)
    assert pickle.loads(pickle.dumps(built)) == validated
    assert copy.deepcopy(built) == validated and built.model_copy(update={"id": "x"}).id == "x"


def test_a_built_document_does_not_share_the_metadata_it_was_given() -> None:
    metadata: dict[str, Any] = {"price": 10}
    built = document("a", "text", metadata)
    metadata["price"] = 99
    assert built.metadata == {"price": 10}
    built.metadata["colour"] = "oak"  # a user's change to one Document stays there
    assert document("a", "text", metadata).metadata == {"price": 99}


def test_values_of_other_types_go_through_validation() -> None:
    with pytest.raises(ValidationError):
        document("a", "text", ["not", "a", "dict"])  # type: ignore[arg-type]
    assert document(12, "text", {}).id == "12"  # type: ignore[arg-type]  # the constructor's coercion
