"""Ages such as ``30d`` or ``90min``, as ``prune`` takes them (a module of its own: the CLI checks an age
before it imports anything heavy)."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Final

from sony_rag.errors import InvalidInputError

# A bare "m" is refused: minutes to some, months to others, and a prune must not guess.
UNITS: Final = {"s": "seconds", "min": "minutes", "h": "hours", "d": "days", "w": "weeks"}
MAX_AGE: Final = timedelta(days=365_250)
AGE_HELP: Final = "a number and a unit: s, min, h, d or w (e.g. 90min, 12h, 30d, 2w)"
_AGE = re.compile(r"\s*([+-]?)\s*(\d+(?:\.\d+)?|\.\d+)\s*([A-Za-z]*)\s*")


def parse_age(value: timedelta | str) -> timedelta:
    """Return ``value`` ("30d", "12h", "90min", "45s", "2w") as a positive timedelta; raises InvalidInputError."""
    if isinstance(value, timedelta):
        age = value
    elif not isinstance(value, str):
        raise InvalidInputError(f"age must be a string such as '30d' or a timedelta, got {type(value).__name__}")
    else:
        match = _AGE.fullmatch(value)
        if not match:
            raise InvalidInputError(f"age must be {AGE_HELP}; got {value!r}")
        sign, number, unit = match.groups()
        if sign == "-":
            raise InvalidInputError(f"age must be positive, got {value!r}: it is how long a session has been idle")
        if unit == "m":
            raise InvalidInputError(f"'m' is ambiguous in {value!r} (minutes or months?): write 'min' for minutes, "
                                    "or use d or w")
        if unit not in UNITS:
            what = f"unknown unit {unit!r}" if unit else "no unit"
            raise InvalidInputError(f"age {value!r} has {what}: it must be {AGE_HELP}")
        try:
            age = timedelta(**{UNITS[unit]: float(number)})
        except OverflowError:
            raise InvalidInputError(f"age {value!r} is too large") from None
    if age <= timedelta(0):
        raise InvalidInputError(f"age must be greater than zero, got {value!r}")
    if age > MAX_AGE:
        # Postgres would fail on NOW() minus an age beyond its timestamp range; no session is that old anyway.
        raise InvalidInputError(f"age {value!r} is more than 1000 years")
    return age


__all__ = ["AGE_HELP", "MAX_AGE", "UNITS", "parse_age"]
