"""The metadata ``where`` filter as SQL with bound parameters.

``{key: value}`` (a list or tuple value meaning "any of") becomes a ``WHERE`` condition on
the ``documents.metadata`` JSON. The SQL text is built only from the fixed fragments in this
module; every key (as a quoted JSON path) and every value is a ``?`` parameter, so nothing a
caller passes can change the query. Keys are validated so that the JSON path names exactly
that top-level key, and values so that the comparison keeps JSON's types (``1`` never
matches ``"1"`` or ``true``).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from edge_colbert.errors import InvalidInputError

__all__ = ["where_clause"]


def _json_path(key: Any) -> str:
    """A JSON path naming the top-level ``key``, quoted so that dots and brackets are literal.

    SQLite ends a quoted path label at the next double quote and has no escape for one, so
    such a key (and control characters or lone surrogates, which JSON text cannot carry
    raw) is refused rather than silently naming another key.
    """
    if not isinstance(key, str) or not key:
        raise InvalidInputError(f"where keys must be non-empty strings; got {key!r}.")
    if '"' in key or any(ord(ch) < 32 or 0xD800 <= ord(ch) < 0xE000 for ch in key):
        raise InvalidInputError(
            f"where key {key!r} holds a double quote or a control character, which a SQLite "
            "JSON path cannot name; rename that metadata key to filter on it."
        )
    return f'$."{key}"'


def _condition(path: str, value: Any) -> tuple[str, list[Any]]:
    """SQL (with ? placeholders) for metadata[path] equal to ``value``, type included."""
    if value is None:
        return "json_type(metadata, ?) = 'null'", [path]
    if isinstance(value, bool):
        return "json_type(metadata, ?) = ?", [path, "true" if value else "false"]
    if isinstance(value, (int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise InvalidInputError(
                f"where value {value!r} for {path[3:-1]!r} is not a finite number; JSON metadata "
                "never holds NaN or infinity."
            )
        if isinstance(value, int) and not -(2**63) <= value < 2**63:
            value = float(value)  # SQLite reads such JSON integers as reals too
        return (
            "(json_type(metadata, ?) IN ('integer', 'real') AND json_extract(metadata, ?) = ?)",
            [path, path, value],
        )
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise InvalidInputError(
                f"where value for {path[3:-1]!r} holds a lone surrogate; it is not valid text."
            ) from None
        return "(json_type(metadata, ?) = 'text' AND json_extract(metadata, ?) = ?)", [
            path,
            path,
            value,
        ]
    raise InvalidInputError(
        f"where value {value!r} for {path[3:-1]!r} is a {type(value).__name__}; use a string, "
        "number, bool, None, or a list of those (meaning any of them)."
    )


def where_clause(where: Mapping[str, Any]) -> tuple[str, list[Any]]:
    """Turn ``{key: value}`` (a list or tuple value means "any of") into SQL and parameters.

    Keys and values are always bound parameters; nothing the caller passes is pasted into
    the SQL text, so no key or value can change the query.

    Raises:
        InvalidInputError: ``where`` is not a dict, or holds a key or value it cannot match.
    """
    if not isinstance(where, Mapping):
        raise InvalidInputError(
            f"where must be a dict of metadata key -> value; got {type(where).__name__}."
        )
    parts: list[str] = []
    params: list[Any] = []
    for key, value in where.items():
        path = _json_path(key)
        if isinstance(value, (list, tuple)):
            if not value:
                parts.append("0")  # "any of nothing" matches nothing
                continue
            options = [_condition(path, item) for item in value]
            parts.append("(" + " OR ".join(sql for sql, _ in options) + ")")
            for _, option_params in options:
                params.extend(option_params)
        else:
            sql, option_params = _condition(path, value)
            parts.append(sql)
            params.extend(option_params)
    return (" AND ".join(parts) or "1"), params
