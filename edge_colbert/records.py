"""The rows of an index as Python values, and the stored form of document text.

Plain data shared by :mod:`edge_colbert.store` (which reads and writes them) and
:mod:`edge_colbert.index` (which fills and consumes them); no SQL here.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_colbert.quantize import dequantize_int8

if TYPE_CHECKING:
    from edge_colbert.codec import ResidualCodec

__all__ = [
    "MAX_TEXT_BYTES",
    "NewDocument",
    "PackedVectors",
    "StoredDocument",
    "decode_text",
    "encode_text",
]

# Texts shorter than this stay plain TEXT; zlib gains nothing on them.
_COMPRESS_MIN_BYTES = 160
# Largest document text, in UTF-8 bytes, that is stored and read back; Index.add refuses
# longer texts. Reading a stored text inflates at most this much (see decode_text).
MAX_TEXT_BYTES = 64 << 20


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
    """A document ready to write: text, metadata JSON, its stored codes (int8 ``[T, dim]``,
    or residual records ``[T, record_bytes]``: see :mod:`edge_colbert.codec`), and its
    unique centroid ids."""

    id: str
    text: str
    metadata_json: str
    codes: npt.NDArray[np.int8] | npt.NDArray[np.uint8]
    centroids: npt.NDArray[np.uint32] | None


@dataclass(frozen=True)
class PackedVectors:
    """The stored vectors of several documents packed in one array, ordered by rowid.

    Document ``i`` owns rows ``offsets[i]:offsets[i + 1]`` of ``codes``: int8 codes when
    ``codec`` is None, else residual records of that :class:`~edge_colbert.codec.ResidualCodec`.
    :meth:`floats` gives the unit vectors either way.
    """

    rowids: npt.NDArray[np.int64]
    codes: npt.NDArray[np.int8] | npt.NDArray[np.uint8]
    offsets: npt.NDArray[np.int64]
    codec: ResidualCodec | None = None

    def floats(self) -> npt.NDArray[np.float32]:
        """Every token's unit vector, float32 ``[sum T, dim]``."""
        if self.codec is not None:
            return self.codec.decode(self.codes.view(np.uint8))
        return dequantize_int8(self.codes.view(np.int8))

    def document(self, i: int) -> npt.NDArray[np.float32]:
        """Document ``i``'s unit vectors, float32 ``[T, dim]``."""
        part = PackedVectors(
            self.rowids[i : i + 1],
            self.codes[self.offsets[i] : self.offsets[i + 1]],
            np.asarray([0, self.offsets[i + 1] - self.offsets[i]], dtype=np.int64),
            self.codec,
        )
        return part.floats()


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


def decode_text(value: str | bytes, *, max_bytes: int = MAX_TEXT_BYTES) -> str:
    """Inverse of :func:`encode_text`, inflating at most ``max_bytes``.

    A crafted file can hold a zlib bomb (7 MB stored, 4 GB inflated); the text was stored
    by :func:`encode_text`, so it was at most :data:`MAX_TEXT_BYTES` of UTF-8, and inflating
    stops one byte past that.

    Raises:
        ValueError: the value inflates past ``max_bytes``, is not zlib data, or is not
            UTF-8 (the store names the file and row, see :mod:`edge_colbert.readguard`).
    """
    if isinstance(value, str):
        return value
    if not isinstance(value, bytes):
        raise TypeError(f"a stored text is a {type(value).__name__}, not text or zlib bytes")
    inflater = zlib.decompressobj()
    try:
        raw = inflater.decompress(value, max_bytes + 1)
    except zlib.error as error:
        raise ValueError(f"the stored text is not zlib data ({error})") from error
    if len(raw) > max_bytes or inflater.unconsumed_tail:
        raise ValueError(
            f"the stored text inflates past {max_bytes:,} bytes, more than edge-colbert ever "
            "stores in one document (a zlib bomb, or damage)"
        )
    if not inflater.eof:
        raise ValueError("the stored text's zlib data is cut short")
    return raw.decode("utf-8")
