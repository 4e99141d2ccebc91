"""The shop's record shapes for ``sony-rag ingest``: a furniture product and an FAQ entry (``examples/data/``).

Registered under the entry-point group ``sony_rag.record_shapes`` (see ``sony_rag.ingest.RecordShape``), so the
library's ingest reads them without knowing the shop. Only the library is imported here: no langchain.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any, Final

from sony_rag.errors import InvalidInputError
from sony_rag.ingest import RecordShape, record_metadata, required_field


def product_text(record: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return a product's text (name, SKU, category, materials, dimensions, price, description) and metadata.

    Raises InvalidInputError for a missing name or description, or a malformed price, materials or dimensions.
    """
    name = required_field(record, "name")
    description = required_field(record, "description")
    price = record.get("price")
    if price is not None and (isinstance(price, bool) or not isinstance(price, int | float)
                              or not math.isfinite(price)):
        raise InvalidInputError(f"price must be a number, got {price!r}")
    materials = record.get("materials")
    if materials is not None and (not isinstance(materials, list)
                                  or not all(isinstance(m, str) for m in materials)):
        raise InvalidInputError("materials must be a list of strings")
    dimensions = record.get("dimensions")
    if dimensions is not None and not isinstance(dimensions, dict):
        raise InvalidInputError("dimensions must be an object such as {\"width_cm\": 220}")
    header = name + (f" ({record['sku']})" if record.get("sku") else "")
    if record.get("category"):
        header += f", {record['category']}"
    lines = [header + "."]
    if materials:
        lines.append("Materials: " + ", ".join(materials) + ".")
    if dimensions:
        parts = [f"{key.removesuffix('_cm').replace('_', ' ')} {value:g} cm" for key, value in dimensions.items()
                 if isinstance(value, int | float) and not isinstance(value, bool)]
        if parts:
            lines.append("Dimensions: " + ", ".join(parts) + ".")
    if price is not None:
        lines.append(f"Price: {price:,.2f} {record.get('currency') or ''}".rstrip() + ".")
    lines.append(description)
    metadata = record_metadata(record, ("description",))
    metadata["title"] = name
    return "\n".join(lines), metadata


def product_from_csv(record: dict[str, Any]) -> dict[str, Any]:
    """Return a product CSV row with ``price`` and ``*_cm`` columns as numbers and ``materials`` split at ``;``.

    Raises InvalidInputError for a price or dimension that is not a number.
    """
    converted: dict[str, Any] = {}
    dimensions: dict[str, float] = {}
    for key, value in record.items():
        if key == "materials" and isinstance(value, str):
            converted[key] = [part.strip() for part in value.split(";") if part.strip()]
        elif (key == "price" or key.endswith("_cm")) and isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                raise InvalidInputError(f"{key} must be a number, got {value!r}") from None
            if key == "price":
                converted[key] = number
            else:
                dimensions[key] = number
        else:
            converted[key] = value
    if dimensions:
        converted["dimensions"] = dimensions
    return converted


def faq_text(record: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """Return an FAQ entry's text (``Q: ...`` / ``A: ...``) and metadata; raises InvalidInputError."""
    question = required_field(record, "question")
    answer = required_field(record, "answer")
    metadata = record_metadata(record, ("answer",))
    metadata["title"] = question
    return f"Q: {question}\nA: {answer}", metadata


PRODUCT: Final = RecordShape("product", ("name", "description"), product_text, source_type="product",
                             from_csv=product_from_csv)
FAQ: Final = RecordShape("FAQ entry", ("question", "answer"), faq_text, source_type="faq")

__all__ = ["FAQ", "PRODUCT", "faq_text", "product_from_csv", "product_text"]
