"""Checks on what callers pass to :class:`~edge_colbert.index.Index`: texts, ids, metadata, k.

Everything is checked before anything is encoded or written, and each refusal is an
:class:`~edge_colbert.errors.InvalidInputError` that names the position and the fix.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from edge_colbert.errors import InvalidInputError
from edge_colbert.records import MAX_TEXT_BYTES

__all__ = [
    "as_id",
    "check_k",
    "check_text",
    "check_unicode",
    "ids_for",
    "metadata_for",
    "metadata_json",
]


def as_id(value: Any, what: str) -> str:
    """A document id as stored: a non-empty string (an int becomes its decimal text)."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise InvalidInputError(
            f"{what} is a {type(value).__name__} ({value!r}); ids must be strings or integers."
        )
    text = str(value)
    if not text:
        raise InvalidInputError(f"{what} is an empty string; give every document a non-empty id.")
    check_unicode(text, what)
    return text


def check_unicode(text: str, what: str) -> None:
    """Refuse text holding a lone surrogate (it cannot be stored as UTF-8)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as error:
        raise InvalidInputError(
            f"{what} holds a lone surrogate at character {error.start}, which is not valid "
            "Unicode text; fix how the text was decoded."
        ) from None


def metadata_json(value: Any, position: int) -> str:
    """Metadata as compact JSON, or InvalidInputError naming the position."""
    if value is None:
        return "{}"
    if not isinstance(value, Mapping):
        raise InvalidInputError(
            f"metadata at position {position} is a {type(value).__name__}; it must be a dict "
            "(or None)."
        )
    bad_key = next((key for key in value if not isinstance(key, str)), None)
    if bad_key is not None:
        raise InvalidInputError(
            f"metadata at position {position} has the key {bad_key!r} "
            f"({type(bad_key).__name__}); metadata keys must be strings."
        )
    depth = _nesting(value)
    if depth > MAX_METADATA_DEPTH:
        raise InvalidInputError(
            f"metadata at position {position} is nested {depth} levels deep; at most "
            f"{MAX_METADATA_DEPTH} are stored (SQLite's JSON functions stop at 1000). Flatten it."
        )
    try:
        text = json.dumps(dict(value), ensure_ascii=False, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as error:
        raise InvalidInputError(
            f"metadata at position {position} is not JSON-serializable ({error}); use "
            "strings, finite numbers, bools, None, lists and dicts."
        ) from None
    check_unicode(text, f"metadata at position {position}")
    return text


# Nesting of one document's metadata (dicts and lists), checked without recursion: json
# would raise RecursionError at about 1,000 levels, SQLite's JSON functions stop at 1000.
MAX_METADATA_DEPTH = 64


def _nesting(value: Any) -> int:
    """How deep dicts and lists nest in ``value`` (1 for a flat dict), stopping early past
    :data:`MAX_METADATA_DEPTH`."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, Mapping):
            children: Any = item.values()
        elif isinstance(item, (list, tuple)):
            children = item
        else:
            continue
        deepest = max(deepest, depth)
        if deepest > MAX_METADATA_DEPTH:
            return deepest
        stack.extend((child, depth + 1) for child in children)
    return deepest


def check_k(k: Any) -> int:
    """``k`` as a positive int, or InvalidInputError."""
    if isinstance(k, bool) or not isinstance(k, int):
        raise InvalidInputError(f"k must be a positive integer; got {k!r}.")
    if k <= 0:
        raise InvalidInputError(f"k must be at least 1; got {k}.")
    return k


def check_text(text: Any, what: str) -> str:
    """A non-empty, non-blank, valid-Unicode string to encode, or InvalidInputError."""
    if not isinstance(text, str):
        raise InvalidInputError(f"{what} is a {type(text).__name__}; it must be a string.")
    if not text.strip():
        raise InvalidInputError(f"{what} is empty or only whitespace; there is nothing to encode.")
    check_unicode(text, what)
    # Reading a stored text inflates at most MAX_TEXT_BYTES (a zlib bomb stops there), so
    # nothing longer may be stored. Measured in UTF-8 only when it could be over.
    if len(text) > MAX_TEXT_BYTES // 4 and len(text.encode("utf-8")) > MAX_TEXT_BYTES:
        raise InvalidInputError(
            f"{what} is {len(text.encode('utf-8')):,} bytes of UTF-8, over the "
            f"{MAX_TEXT_BYTES:,} a document may hold; split it into smaller documents "
            "(only its first few hundred tokens are searched anyway)."
        )
    return text


def ids_for(ids: Sequence[str | int] | None, count: int) -> list[str]:
    """One id per text, checked (unique, non-empty); new uuid4 hex ids when ``ids`` is None."""
    if ids is None:
        return [uuid.uuid4().hex for _ in range(count)]
    if isinstance(ids, (str, bytes)) or not isinstance(ids, Sequence):
        raise InvalidInputError(f"ids must be a list; got a {type(ids).__name__}.")
    if len(ids) != count:
        raise InvalidInputError(f"{count} texts but {len(ids)} ids; pass one id per text.")
    for i, value in enumerate(ids):
        if isinstance(value, int) and not isinstance(value, bool):
            # Ids are text: 123 would silently be the same document as "123" and replace it.
            raise InvalidInputError(
                f"id at position {i} is the integer {value}; ids are text, and {value} would "
                f"be the same document as {str(value)!r}. Pass str(id) ({str(value)!r})."
            )
    doc_ids = [as_id(value, f"id at position {i}") for i, value in enumerate(ids)]
    seen: dict[str, int] = {}
    for i, doc_id in enumerate(doc_ids):
        if doc_id in seen:
            raise InvalidInputError(
                f"the id {doc_id!r} appears twice in one batch (positions {seen[doc_id]} and "
                f"{i}); give each document its own id."
            )
        seen[doc_id] = i
    return doc_ids


def metadata_for(metadata: Sequence[Mapping[str, Any] | None] | None, count: int) -> list[str]:
    """One compact JSON metadata text per text (``{}`` where None)."""
    if metadata is None:
        return ["{}"] * count
    if isinstance(metadata, (str, bytes, Mapping)) or not isinstance(metadata, Sequence):
        raise InvalidInputError(
            f"metadata must be a list with one dict per text; got a {type(metadata).__name__}."
        )
    if len(metadata) != count:
        raise InvalidInputError(
            f"{count} texts but {len(metadata)} metadata entries; pass one dict per text."
        )
    return [metadata_json(value, i) for i, value in enumerate(metadata)]
