"""JSON text to Python values and back, as the stdlib's json reads and writes them, at orjson's speed.

Rows' json and jsonb columns are read with ``loads_exact`` (every connection a ``Database`` opens), and values
already checked as JSON (``validation.metadata``, a message's encoded metadata) are written with
``dumps_checked``: stdlib json cost a tenth of a search's client time and a few percent of bulk ingest.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any, Final

from psycopg.types.json import Jsonb

try:  # orjson (a dependency of langsmith, so nearly always there) parses the rows' metadata several times faster
    import orjson

    _fast_loads: Callable[[str | bytes], Any] = orjson.loads
    _fast_dumps: Callable[[Any], bytes | str] = orjson.dumps
except ImportError:  # pragma: no cover
    _fast_loads = json.loads
    _fast_dumps = json.dumps

# orjson reads an integer outside 64 bits (below -2**63 or above 2**64 - 1) as a float, so a value read with a
# float that large may have been such an integer: that text is read again with json, which keeps it exact. Looking
# at the value costs about half of scanning the text for long runs of digits.
_LARGE_FLOAT: Final = float(2**63)


def loads_exact(text: str | bytes) -> Any:
    """Return the value of JSON text exactly as json.loads does (integers of any size too); raises ValueError."""
    try:
        value = _fast_loads(text)
    except ValueError:
        return json.loads(text)  # 1e400 (json reads inf), or the error as json words it
    return json.loads(text) if _holds_large_float(value) else value


def _holds_large_float(value: Any) -> bool:
    kind = type(value)
    if kind is float:
        return not -_LARGE_FLOAT < value < _LARGE_FLOAT
    if kind is dict:
        value = value.values()
    elif kind is not list:
        return False
    for item in value:  # noqa: SIM110 - a loop: any() over a generator costs more per item, on every row read
        if type(item) in _NESTED and _holds_large_float(item):
            return True
    return False


_NESTED: Final = frozenset({dict, list, float})


def dumps_checked(value: Any) -> bytes | str:
    """Return JSON text of ``value``, equal as JSON to json.dumps's; raises TypeError or ValueError as json.dumps does.

    For values checked as JSON already (string keys, finite floats): orjson writes NaN as null where json writes
    NaN, which jsonb refuses. What orjson cannot write (integers beyond 64 bits, float and Mapping subclasses,
    lone surrogates) json writes, as before.
    """
    try:
        return _fast_dumps(value)
    except TypeError:
        return json.dumps(value)


def checked_jsonb(value: Any) -> Jsonb:
    """Return ``value``, checked as JSON already (``validation.metadata``), wrapped to be sent as jsonb."""
    return Jsonb(value, dumps=dumps_checked)


__all__ = ["checked_jsonb", "dumps_checked", "loads_exact"]
