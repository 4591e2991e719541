"""Mapping helpers several API modules share: property bags and user-data blocks."""

from __future__ import annotations

from typing import Any

from producers.parsing import Invalid, JsonObject
from schemas.canonical import stringify_properties


def string_map(value: Any, field: str) -> dict[str, str]:
    """A JSON object as RawEvent's ``map<string>``: values as strings, nested as JSON.

    ``null`` values are left out: "no value" is not the string "null".
    """
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise Invalid(field, "must be an object")
    return stringify_properties(value)


def string_list(value: Any, field: str) -> tuple[str, ...]:
    """A JSON array of strings (property names)."""
    if value is None:
        return ()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise Invalid(field, "must be an array of strings")
    return tuple(value)


def user_data(value: Any, field: str) -> tuple[dict[str, str], dict[str, str], tuple[str, ...]]:
    """A ``{set, setOnce, unset}`` block (Vemetric's userData) as RawEvent's three fields."""
    if value is None:
        return {}, {}, ()
    if not isinstance(value, dict):
        raise Invalid(field, "must be an object")
    block: JsonObject = value
    return (
        string_map(block.get("set"), f"{field}.set"),
        string_map(block.get("setOnce"), f"{field}.setOnce"),
        string_list(block.get("unset"), f"{field}.unset"),
    )
