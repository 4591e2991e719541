"""Hypothesis strategies that generate valid records of any Avro record schema.

Exposed as a session fixture (``records``) so property tests use them with
``st.data()``: ``data.draw(records(schema))``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import strategies as st

_INT = st.integers(-(2**31), 2**31 - 1)
_LONG = st.one_of(st.integers(-(2**63), 2**63 - 1), st.integers(-300, 300))
_TEXT = st.text(max_size=30)


def strategy_for(avro_type: Any) -> st.SearchStrategy[Any]:
    """Values of ``avro_type`` as fastavro takes them (timestamps as int ms)."""
    if isinstance(avro_type, list):
        return st.one_of([strategy_for(t) for t in avro_type])
    if isinstance(avro_type, dict):
        kind = avro_type["type"]
        if kind == "record":
            return st.fixed_dictionaries(
                {f["name"]: strategy_for(f["type"]) for f in avro_type["fields"]}
            )
        if kind == "map":
            return st.dictionaries(_TEXT, strategy_for(avro_type["values"]), max_size=5)
        if kind == "array":
            return st.lists(strategy_for(avro_type["items"]), max_size=5)
        return strategy_for(kind)
    return {
        "null": st.none(),
        "boolean": st.booleans(),
        "int": _INT,
        "long": _LONG,
        "float": st.floats(width=32, allow_nan=False),
        "double": st.floats(allow_nan=False),
        "string": _TEXT,
        "bytes": st.binary(max_size=30),
    }[avro_type]


@pytest.fixture(scope="session")
def records() -> Callable[[dict[str, Any]], st.SearchStrategy[dict[str, Any]]]:
    """``records(schema)``: a strategy of valid records of a record schema (JSON data)."""
    return strategy_for
