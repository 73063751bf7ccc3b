"""How an index file codes its token vectors: int8 codes, or ColBERTv2's residual codes.

Every file records its codec in ``meta`` when it is created:

- ``int8``: each token's ``dim`` codes are ``round(127 * v / max|v|)`` of its unit vector
  (:mod:`edge_colbert.quantize`): ``dim`` bytes per token.
- ``residual4`` / ``residual2``: ColBERTv2's residual compression (Santhanam et al., 2022),
  as PLAID stores it: the token's nearest centroid (the prefilter's centroids, 2 bytes) and
  each dimension of the residual ``v - centroid`` quantized to ``nbits`` bits, with bucket
  cut-offs and bucket values learned per dimension from the residuals the centroids were
  trained on (ColBERTv2's quantiles, refined into Lloyd-Max quantizers). 2 +
  ``dim * nbits / 8`` bytes per token: 34 (4-bit) or 18 (2-bit) at 64 dimensions, against
  64 for int8. A token reads back as the unit vector along ``centroid + bucket values``.

Residual codes need centroids. Until a file's centroids are first trained (a collection
under ``train_tokens``) a residual file stores int8 codes like any other; the training
that creates the centroids re-codes every document in the transaction that stores them,
and every retraining re-codes them again (see :mod:`edge_colbert.training`): whether a
blob holds int8 or residual codes follows from the centroid version of the same commit
(0: int8), so it is never stored twice. :class:`ResidualCodec` is the coding of one
centroid version.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edge_colbert import schema
from edge_colbert.errors import IndexFileError, InvalidInputError

if TYPE_CHECKING:
    from edge_colbert.store import Store

__all__ = [
    "CODECS",
    "DEFAULT_CODEC",
    "RESIDUAL_BITS",
    "ResidualCodec",
    "check_codec",
    "settle_codec",
    "stored_codec",
]

logger = logging.getLogger(__name__)

DEFAULT_CODEC = "int8"
# Residual codecs and their bits per dimension.
RESIDUAL_BITS: dict[str, int] = {"residual4": 4, "residual2": 2}
CODECS: tuple[str, ...] = (DEFAULT_CODEC, *RESIDUAL_BITS)
# Centroid ids are stored in 2 bytes: kmeans.num_centroids never trains more than 65,536.
_ID_BYTES = 2
_MAX_CENTROIDS = 1 << 16
# Lloyd-Max rounds per dimension when training buckets: the decoded cosine on SciFact
# gained 0.0093 in 2 rounds, 0.0104 in 8 and nothing visible after (2-bit).
_LLOYD_ROUNDS = 8
# Tokens per step of encode(): bounds the [tokens, dim] temporaries to a few MiB.
_ENCODE_TOKENS = 1 << 15


def check_codec(value: object, dim: int | None = None) -> str:
    """``value`` as a codec name, checked against ``dim`` when given.

    Raises:
        InvalidInputError: not one of :data:`CODECS`, or a residual codec whose packed bits
            do not fill whole bytes at this dimension.
    """
    if not isinstance(value, str) or value not in CODECS:
        raise InvalidInputError(
            f"codec must be one of {', '.join(repr(c) for c in CODECS)}; got {value!r}."
        )
    if dim is not None and value in RESIDUAL_BITS and (dim * RESIDUAL_BITS[value]) % 8:
        raise InvalidInputError(
            f"codec {value!r} packs {RESIDUAL_BITS[value]} bits per dimension, which does not "
            f"fill whole bytes at {dim} dimensions; use codec='int8' for this model."
        )
    return value


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


def settle_codec(store: Store, requested: str | None) -> str:
    """The codec of ``store``'s vectors: ``None`` takes what the file records; a name is
    recorded in a file that holds no document yet, and must match a file with documents
    (``edge-colbert compact --codec`` converts one).

    Raises:
        InvalidInputError: an unknown codec, or one that differs from a non-empty file's.
        IndexFileError: the file records a codec this version does not read.
    """
    recorded = store.codec()
    if requested is None:
        return recorded
    codec = check_codec(requested, store.dim)
    if codec == recorded:
        return recorded
    if store.readonly or store.count() > 0 or store.centroid_version() > 0:
        raise InvalidInputError(
            f"{store.path} stores its vectors as {recorded!r}, recorded when it was created; "
            f"it cannot add {codec!r} codes. Open it without codec=, or convert it with "
            f"`edge-colbert compact {store.path} --codec {codec}`."
        )
    with store.transaction() as conn:
        store.set_meta(conn, {schema.META_CODEC: codec})
    logger.info("%s: codec %s recorded", store.path, codec)
    return codec


@dataclass(frozen=True, eq=False)
class ResidualCodec:
    """Residual coding of token vectors against one set of centroids.

    Immutable, so thread-safe: one instance is shared by every search of its centroid
    version.

    Args:
        centroids: float32 ``[C, dim]`` (at most 65,536).
        cutoffs: float32 ``[dim, 2**nbits - 1]``, rising: bucket ``b`` of dimension ``d``
            holds residuals between ``cutoffs[d, b - 1]`` and ``cutoffs[d, b]``.
        weights: float32 ``[dim, 2**nbits]``: the value each bucket decodes to.
        nbits: 2 or 4.
        version: the centroid version these were trained with.
    """

    centroids: npt.NDArray[np.float32]
    cutoffs: npt.NDArray[np.float32]
    weights: npt.NDArray[np.float32]
    nbits: int
    version: int = 0
    # Decoding table: for byte position j and byte value b, the residual values of the
    # dimensions that byte holds (filled in __post_init__).
    _table: npt.NDArray[np.float32] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        dim = self.centroids.shape[1]
        buckets = 1 << self.nbits
        if (
            self.nbits not in RESIDUAL_BITS.values()
            or self.centroids.ndim != 2
            or not 0 < self.centroids.shape[0] <= _MAX_CENTROIDS
            or (dim * self.nbits) % 8
            or self.cutoffs.shape != (dim, buckets - 1)
            or self.weights.shape != (dim, buckets)
        ):
            raise IndexFileError(
                f"residual codes of {self.nbits} bits for centroids of shape "
                f"{self.centroids.shape} need cut-offs [{dim}, {buckets - 1}] and weights "
                f"[{dim}, {buckets}]; got {self.cutoffs.shape} and {self.weights.shape}. The "
                "file is damaged: run `edge-colbert repair`."
            )
        per_byte = 8 // self.nbits
        values = np.arange(256)
        # codes[b, k]: the k-th code packed in byte value b (low bits first).
        codes = (values[:, None] >> (np.arange(per_byte) * self.nbits)) & (buckets - 1)
        positions = dim // per_byte
        dims = np.arange(dim).reshape(positions, per_byte)
        # table[j, b, k] = weights[dims[j, k], codes[b, k]]
        table = self.weights[dims[:, None, :], codes[None, :, :]]
        object.__setattr__(self, "_table", np.ascontiguousarray(table, dtype=np.float32))

    @property
    def dim(self) -> int:
        """Dimensions of a token vector."""
        return int(self.centroids.shape[1])

    @property
    def record_bytes(self) -> int:
        """Bytes per stored token: the centroid id and the packed residual."""
        return _ID_BYTES + self.dim * self.nbits // 8

    @classmethod
    def train(
        cls,
        sample: npt.NDArray[np.float32],
        labels: npt.NDArray[np.integer],
        centroids: npt.NDArray[np.float32],
        *,
        nbits: int,
        version: int = 0,
    ) -> ResidualCodec:
        """Learn bucket cut-offs and values per dimension from the residuals of ``sample``
        (unit vectors) to their nearest centroids ``labels``.

        Each dimension gets its own ``B = 2**nbits``-level Lloyd-Max quantizer: starting
        from ColBERTv2's rule (cut-offs at the quantiles ``1/B .. (B-1)/B``, values at
        ``(b + 0.5)/B``), each round sets every bucket's value to the mean of the sample
        residuals in it and every cut-off half-way between neighbouring values. Why not
        ColBERTv2's rule alone: its values are not the buckets' means, so it leaves error
        that costs nothing to remove. On SciFact (pool factor 2, 4,096 centroids) the
        decoded tokens' mean cosine with the stored ones rose from 0.964 to 0.974 at 2 bits
        (0.993 to 0.997 at 4); the stored form and decoding are unchanged.
        """
        residuals = sample - centroids[labels]
        if residuals.shape[0] == 0:
            residuals = np.zeros((1, centroids.shape[1]), dtype=np.float32)
        cutoffs, weights = _lloyd_max(residuals, 1 << nbits)
        return cls(
            np.ascontiguousarray(centroids, dtype=np.float32),
            np.ascontiguousarray(cutoffs),
            np.ascontiguousarray(weights),
            nbits,
            version,
        )

    def buckets_bytes(self) -> bytes:
        """The stored form of the cut-offs and weights (float32, cut-offs first)."""
        return self.cutoffs.astype("<f4").tobytes() + self.weights.astype("<f4").tobytes()

    @classmethod
    def from_stored(
        cls, vectors: object, buckets: object, *, dim: int, nbits: int, version: int
    ) -> ResidualCodec:
        """The codec of a ``centroids`` row: its float32 ``vectors`` blob and its
        ``buckets`` blob (:meth:`buckets_bytes`), as read from the file.

        Raises:
            IndexFileError: either blob is missing or has the wrong length.
        """
        if not isinstance(vectors, bytes) or not vectors or len(vectors) % (4 * dim):
            size = len(vectors) if isinstance(vectors, bytes) else type(vectors).__name__
            raise IndexFileError(
                f"the centroids blob has the wrong length ({size} bytes, not whole {dim}-d "
                "float32 rows): the file is damaged. Run `edge-colbert repair`."
            )
        if not isinstance(buckets, bytes):
            raise IndexFileError(
                f"the residual codes' buckets are missing from the centroids of version "
                f"{version}: the file is damaged. Run `edge-colbert repair`."
            )
        centroids = np.frombuffer(vectors, dtype="<f4").astype(np.float32).reshape(-1, dim)
        return cls.from_bytes(centroids, buckets, nbits=nbits, version=version)

    @classmethod
    def from_bytes(
        cls, centroids: npt.NDArray[np.float32], blob: bytes, *, nbits: int, version: int
    ) -> ResidualCodec:
        """The codec of stored centroids and :meth:`buckets_bytes`.

        Raises:
            IndexFileError: the blob does not hold the cut-offs and weights of ``nbits``
                bits at the centroids' dimension.
        """
        dim = int(centroids.shape[1])
        buckets = 1 << nbits
        expected = 4 * dim * (2 * buckets - 1)
        if len(blob) != expected:
            raise IndexFileError(
                f"the stored residual buckets hold {len(blob)} bytes, not the {expected} of "
                f"{nbits}-bit codes at {dim} dimensions: the file is damaged. Run "
                "`edge-colbert repair`."
            )
        values = np.frombuffer(blob, dtype="<f4").astype(np.float32)
        split = dim * (buckets - 1)
        return cls(
            centroids,
            values[:split].reshape(dim, buckets - 1),
            values[split:].reshape(dim, buckets),
            nbits,
            version,
        )

    def encode(
        self, vectors: npt.NDArray[np.float32], labels: npt.NDArray[np.integer]
    ) -> npt.NDArray[np.uint8]:
        """Records ``[n, record_bytes]`` of unit ``vectors`` whose nearest centroids are
        ``labels``: the id (uint16, little-endian), then the residual's bucket numbers
        packed low bits first."""
        n, dim = vectors.shape
        out = np.empty((n, self.record_bytes), dtype=np.uint8)
        out[:, :_ID_BYTES] = (
            np.asarray(labels, dtype="<u2").reshape(n, 1).view(np.uint8).reshape(n, _ID_BYTES)
        )
        per_byte = 8 // self.nbits
        shifts = (np.arange(per_byte) * self.nbits).astype(np.uint8)
        for start in range(0, n, _ENCODE_TOKENS):
            stop = min(n, start + _ENCODE_TOKENS)
            residual = vectors[start:stop] - self.centroids[labels[start:stop]]
            codes = np.empty(residual.shape, dtype=np.uint8)
            for d in range(dim):  # one searchsorted per dimension, over every token
                codes[:, d] = np.searchsorted(self.cutoffs[d], residual[:, d], side="right")
            packed = (codes.reshape(stop - start, dim // per_byte, per_byte) << shifts).sum(
                axis=2, dtype=np.uint8
            )
            out[start:stop, _ID_BYTES:] = packed
        return out

    def decode(self, records: npt.NDArray[np.uint8]) -> npt.NDArray[np.float32]:
        """Unit vectors ``[n, dim]`` of records made by :meth:`encode`."""
        n = records.shape[0]
        ids = _ids(records)
        if n and int(ids.max()) >= self.centroids.shape[0]:
            # A crafted blob (its crc32 made to match): refuse it rather than index past.
            raise IndexFileError(
                f"a stored residual code names centroid {int(ids.max())}, but there are "
                f"{self.centroids.shape[0]}: the file is damaged. Run `edge-colbert repair`."
            )
        packed = records[:, _ID_BYTES:]
        positions = packed.shape[1]
        # One gather of the residual values of every byte (table rows of 8 / nbits dims).
        flat = packed.astype(np.intp) + (np.arange(positions, dtype=np.intp) * 256)
        residual = self._table.reshape(positions * 256, -1)[flat].reshape(n, self.dim)
        vectors: npt.NDArray[np.float32] = self.centroids[ids] + residual
        norms = np.sqrt(np.einsum("ij,ij->i", vectors, vectors))
        vectors /= np.maximum(norms, np.float32(1e-12))[:, None]
        return vectors

    def labels(self, records: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint32]:
        """The centroid id of each record."""
        labels: npt.NDArray[np.uint32] = _ids(records).astype(np.uint32)
        return labels


def _lloyd_max(
    residuals: npt.NDArray[np.float32], buckets: int
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """Per-dimension ``buckets``-level Lloyd-Max quantizers of ``residuals`` ``[n, dim]``:
    cut-offs ``[dim, buckets - 1]`` (rising) and values ``[dim, buckets]`` (each the mean
    of the residuals :meth:`ResidualCodec.encode` puts in its bucket)."""
    dim = residuals.shape[1]
    cutoffs = np.empty((dim, buckets - 1), dtype=np.float32)
    weights = np.empty((dim, buckets), dtype=np.float32)
    cut_at = np.arange(1, buckets) / buckets
    value_at = (np.arange(buckets) + 0.5) / buckets
    for d in range(dim):  # one sort per dimension; each round is then O(buckets)
        column = np.sort(residuals[:, d])
        prefix = np.concatenate([[0.0], np.cumsum(column, dtype=np.float64)])
        # Cut-offs in float32, as stored and as encode() compares them.
        cut = np.quantile(column, cut_at).astype(np.float32)
        value = np.quantile(column, value_at).astype(np.float64)
        for round_ in range(_LLOYD_ROUNDS + 1):
            # encode() puts a residual equal to a cut-off in the upper bucket (side
            # "right"), so bucket b holds sorted positions [bounds[b], bounds[b + 1]).
            inner = np.searchsorted(column, cut, side="left")
            bounds = np.concatenate([[0], inner, [column.size]])
            counts = np.diff(bounds)
            sums = prefix[bounds[1:]] - prefix[bounds[:-1]]
            # An empty bucket keeps its value; the running maximum keeps values rising.
            value = np.maximum.accumulate(np.where(counts > 0, sums / np.maximum(counts, 1), value))
            new_cut = ((value[1:] + value[:-1]) / 2).astype(np.float32)
            if round_ == _LLOYD_ROUNDS or np.array_equal(new_cut, cut):
                break  # the values are the means of the buckets these cut-offs make
            cut = new_cut
        cutoffs[d] = cut
        weights[d] = value
    return cutoffs, weights


def _ids(records: npt.NDArray[np.uint8]) -> npt.NDArray[np.uint16]:
    """The centroid ids that open the records (uint16, little-endian)."""
    ids: npt.NDArray[np.uint16] = (
        np.ascontiguousarray(records[:, :_ID_BYTES]).view("<u2").reshape(records.shape[0])
    )
    return ids
