"""The JSON name of a parsed value's type, for error messages ("an array", not Python's "list")."""

from __future__ import annotations

from typing import Any

_NAMES: dict[type, str] = {str: "a string", list: "an array", dict: "an object"}


def json_type(value: Any) -> str:
    """What kind of JSON value ``value`` (as a JSON parser returns it) is."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    return _NAMES.get(type(value), type(value).__name__)
