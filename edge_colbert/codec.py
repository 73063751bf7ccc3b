"""How an index file codes its token vectors, and the check that refuses a coding this
version cannot read.

Every file records its codec in ``meta`` when it is created (schema 3); this version writes
and reads ``int8`` alone: each token's 64 codes are ``round(127 * v / max|v|)`` of its
unit vector (see :mod:`edge_colbert.quantize`). A file that records anything else was
written by a newer edge-colbert (residual codes: a centroid id plus a few bits per
dimension), or is damaged; it is refused before anything is read or written.
"""

from __future__ import annotations

from collections.abc import Mapping

from edge_colbert import schema
from edge_colbert.errors import IndexFileError

__all__ = ["CODECS", "DEFAULT_CODEC", "stored_codec"]

DEFAULT_CODEC = "int8"
CODECS: tuple[str, ...] = (DEFAULT_CODEC,)


def stored_codec(meta: Mapping[str, str], path: object) -> str:
    """The codec a file records (``int8`` when absent: files from before schema 3).

    Raises:
        IndexFileError: a codec this version does not read; the file is left untouched.
    """
    codec = meta.get(schema.META_CODEC, DEFAULT_CODEC)
    if codec not in CODECS:
        raise IndexFileError(
            f"{path} stores its vectors with the codec {codec!r}, which this edge-colbert "
            f"does not read (it reads {', '.join(CODECS)}); the file was left untouched. "
            "Upgrade edge-colbert (pip install -U edge-colbert) to open it."
        )
    return codec
