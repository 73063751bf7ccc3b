"""The rows of an index as Python values, and the stored form of document text.

Plain data shared by :mod:`edge_colbert.store` (which reads and writes them) and
:mod:`edge_colbert.index` (which fills and consumes them); no SQL here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["NewDocument", "PackedVectors", "StoredDocument", "decode_text", "encode_text"]

# Texts shorter than this stay plain TEXT; zlib gains nothing on them.
_COMPRESS_MIN_BYTES = 160


@dataclass(frozen=True)
class StoredDocument:
    """One document row as stored: its rowid, id, text, metadata and token count."""

    rowid: int
    id: str
    text: str
    metadata: dict[str, Any]
    n_tokens: int


@dataclass(frozen=True)
class NewDocument:
    """A document ready to write: text, metadata JSON, int8 codes, centroid ids."""

    id: str
    text: str
    metadata_json: str
    codes: npt.NDArray[np.int8]
    centroids: npt.NDArray[np.uint32] | None


@dataclass(frozen=True)
class PackedVectors:
    """The int8 vectors of several documents packed in one array, ordered by rowid.

    Document ``i`` owns rows ``offsets[i]:offsets[i + 1]`` of ``codes``.
    """

    rowids: npt.NDArray[np.int64]
    codes: npt.NDArray[np.int8]
    offsets: npt.NDArray[np.int64]


def encode_text(text: str) -> str | bytes:
    """The stored form of a text: zlib-compressed bytes when that is smaller, else itself.

    Text is the second largest thing per token after the int8 codes; compressing it keeps
    the file near the bytes-per-token target. A BLOB in the TEXT column marks compression.
    """
    raw = text.encode("utf-8")
    if len(raw) < _COMPRESS_MIN_BYTES:
        return text
    packed = zlib.compress(raw, 6)
    return packed if len(packed) < len(raw) else text


def decode_text(value: str | bytes) -> str:
    """Inverse of :func:`encode_text`."""
    if isinstance(value, bytes):
        return zlib.decompress(value).decode("utf-8")
    return value
