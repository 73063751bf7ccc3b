"""The metadata ``where`` filter as SQL with bound parameters.

``{key: value}`` (a list or tuple value meaning "any of") becomes a ``WHERE`` condition on
the ``documents.metadata`` JSON. The SQL text is built only from the fixed fragments in this
module; every key (as a quoted JSON path) and every value is a ``?`` parameter, so nothing a
caller passes can change the query. Keys are validated so that the JSON path names exactly
that top-level key, and values so that the comparison keeps JSON's types (``1`` never
matches ``"1"`` or ``true``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from typing import Any

from edge_colbert.errors import InvalidInputError

__all__ = ["LIST_AS_JSON_ABOVE", "MAX_WHERE_KEYS", "MAX_WHERE_VALUES", "where_clause"]


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


# SQLite parses ``a OR b OR c ...`` into a tree as deep as the list is long and refuses
# one deeper than 1000 ("Expression tree is too large"); every condition also costs bound
# parameters, and some builds allow only 999. A list of more than this many values is
# matched with one ``json_each`` over a JSON array instead (two parameters, any length).
LIST_AS_JSON_ABOVE = 32
# Keys of one filter: each costs up to three parameters; 256 stays far below 999.
MAX_WHERE_KEYS = 256
# Values of one list: the JSON array is one parameter, bounded by SQLite's length limit.
MAX_WHERE_VALUES = 100_000


def _balanced(parts: list[str], joiner: str) -> str:
    """``parts`` joined by ``joiner`` in balanced parentheses: depth log2(n), not n."""
    if len(parts) == 1:
        return parts[0]
    middle = len(parts) // 2
    return f"({_balanced(parts[:middle], joiner)} {joiner} {_balanced(parts[middle:], joiner)})"


def _any_of(path: str, values: Sequence[Any]) -> tuple[str, list[Any]]:
    """SQL for metadata[path] equal to any of ``values`` (each typed as in :func:`_condition`)."""
    options = [_condition(path, item) for item in values]  # the same checks and messages
    if len(values) <= LIST_AS_JSON_ABOVE:
        return "(" + " OR ".join(sql for sql, _ in options) + ")", [
            param for _, option_params in options for param in option_params
        ]
    # json_each types: integer, real, text, true, false, null; numbers compare by value.
    array = json.dumps(
        [float(v) if isinstance(v, int) and not -(2**63) <= v < 2**63 else v for v in values],
        ensure_ascii=False,
    )
    sql = (
        "EXISTS (SELECT 1 FROM json_each(?) AS o WHERE CASE "
        "WHEN o.type IN ('integer', 'real') THEN json_type(metadata, ?) IN ('integer', 'real') "
        "AND json_extract(metadata, ?) = o.value "
        "WHEN o.type = 'text' THEN json_type(metadata, ?) = 'text' "
        "AND json_extract(metadata, ?) = o.value "
        "ELSE json_type(metadata, ?) = o.type END)"
    )
    return sql, [array, path, path, path, path, path]


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
    if len(where) > MAX_WHERE_KEYS:
        raise InvalidInputError(
            f"where holds {len(where)} keys; at most {MAX_WHERE_KEYS} can be combined. Filter "
            "on fewer keys (a list value matches any of many values of one key)."
        )
    parts: list[str] = []
    params: list[Any] = []
    for key, value in where.items():
        path = _json_path(key)
        if isinstance(value, (list, tuple)):
            if not value:
                parts.append("0")  # "any of nothing" matches nothing
                continue
            if len(value) > MAX_WHERE_VALUES:
                raise InvalidInputError(
                    f"where value for {key!r} lists {len(value)} values; at most "
                    f"{MAX_WHERE_VALUES} are matched at once. Filter in several searches."
                )
            sql, option_params = _any_of(path, value)
            parts.append(sql)
            params.extend(option_params)
        else:
            sql, option_params = _condition(path, value)
            parts.append(sql)
            params.extend(option_params)
    return (_balanced(parts, "AND") if parts else "1"), params
