"""LangChain ``Document``s built from values already of the types a Document holds, without validating them again.

A search returns ten or more Documents, and pydantic's validation of each (three ``__init__`` frames, then the
validator) was the largest single part of a search's client work: about 18 us per Document between round trips
(cold caches), 5 us in a loop. Values read from ``document_embeddings`` (a ``str`` id, ``str`` content, a
``dict`` of metadata) need no validation, so the object is set up as ``BaseModel.model_construct`` sets it up
(its ``__dict__`` and the three pydantic slots), by hand: about half the time, hot or cold.

That relies on how pydantic v2 lays out a model instance. So at import the shortcut builds a Document and checks
it against the validated one (equality, fields set, dump, serialisation, copy); if pydantic or langchain-core
ever lay it out otherwise, every Document is built by its constructor, as before. Values of any other type
always are (metadata that is not a dict then fails validation as it would anyway).
"""

from __future__ import annotations

from typing import Any, Final

from langchain_core.documents import Document
from langchain_core.load import dumpd

_FIELDS_SET: Final = frozenset({"id", "page_content", "metadata"})
_new = object.__new__
_set = object.__setattr__


def document(id: str, page_content: str, metadata: dict[str, Any]) -> Document:
    """Return ``Document(id=id, page_content=page_content, metadata=metadata)``, unvalidated when the types allow.

    Raises pydantic's ValidationError (a ValueError) for values a Document refuses, as its constructor does.
    """
    if _SHORTCUT and type(id) is str and type(page_content) is str and type(metadata) is dict:
        return _unvalidated(id, page_content, metadata)
    return Document(id=id, page_content=page_content, metadata=metadata)


def _unvalidated(id: str, page_content: str, metadata: dict[str, Any]) -> Document:
    built: Document = _new(Document)
    # The field order of the validated model's __dict__ (its repr and dumps follow it); metadata copied as
    # validation copies a dict, so no two Documents share one.
    _set(built, "__dict__", {"id": id, "metadata": dict(metadata), "page_content": page_content, "type": "Document"})
    _set(built, "__pydantic_fields_set__", set(_FIELDS_SET))
    _set(built, "__pydantic_extra__", None)
    _set(built, "__pydantic_private__", None)
    return built


def _shortcut_matches_validation() -> bool:
    values: dict[str, Any] = {"id": "d-1", "page_content": "Oak sideboard", "metadata": {"price": 1.5, "tags": ["oak"]}}
    validated = Document(**values)
    try:
        built = _unvalidated(**values)
        return bool(
            built == validated and validated == built and repr(built) == repr(validated)
            and built.model_fields_set == validated.model_fields_set
            and built.model_dump() == validated.model_dump()
            and built.model_dump(exclude_unset=True) == validated.model_dump(exclude_unset=True)
            and list(vars(built)) == list(vars(validated))
            and dumpd(built) == dumpd(validated) and built.model_copy() == validated
        )
    except Exception:  # any layout this module does not know: use the constructor
        return False


_SHORTCUT: Final = _shortcut_matches_validation()

__all__ = ["document"]
