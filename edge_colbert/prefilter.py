"""Candidate generation for search: centroids, postings, PLAID-like centroid interaction.

Each document is *posted* under the centroids nearest to its tokens (exact assignment).
A search narrows the collection in two stages before exact MaxSim over the int8 vectors
(:mod:`edge_colbert.maxsim`) ranks the survivors:

1. :meth:`Prefilter.candidates`: every query token scores all centroids exactly
   (``q @ C.T``, one small matmul) and probes its ``nprobe`` best. A document posted under
   a probed centroid earns the centroid's score above the token's *floor* (the best score
   among the centroids not probed); its stage-1 score is the sum over the (token, probed
   centroid) pairs it is posted under. Centroids posted by more than
   :data:`COMMON_FRACTION` of all documents (the [CLS]/[D] markers, punctuation) say
   nothing about which document to pick: their score raises the floor for everyone
   instead of touching every document. The ``limit``
   best documents are the candidates.
2. :meth:`Prefilter.prune`: PLAID's centroid interaction, ``sum_i max_{c in doc} q_i . c``
   (MaxSim with every document token replaced by its centroid), computed exactly from each
   candidate's full centroid set, keeps the best ``keep``.

Why an exact probe and not an HNSW graph over the centroids: stage 2 needs the query's
score against the centroids of every candidate, i.e. nearly all of ``q @ C.T`` anyway, and
computing it is cheaper than a graph search (0.85 against 3.06 ms CPU per 32-token query at
4,096 centroids); it also means nothing is built when an index opens.

Postings live in memory in two CSR views of one list of ``(document, centroid)`` pairs: by
document (rowids sorted, each document's centroids sorted unique; for stage 2) and by
centroid (for stage 1). Adds and discards update the document view at once; the centroid
view is rebuilt lazily, on the next search, so a batch of adds costs one rebuild (a stable
counting sort in blocks of the centroid ids: about a second at 23.8M postings).

The defaults were chosen with ``benchmarks/prefilter_sweep.py`` on real SciFact token
vectors (see ``docs/benchmarks.md``). With fewer documents than ``keep`` the search is
exhaustive and exact.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_colbert.errors import InvalidInputError
from edge_colbert.kmeans import assign_nearest

__all__ = [
    "COMMON_FRACTION",
    "DEFAULT_CANDIDATES",
    "DEFAULT_KEEP",
    "DEFAULT_NPROBE",
    "Prefilter",
    "SearchSettings",
    "default_keep",
    "search_settings",
]

logger = logging.getLogger(__name__)

DEFAULT_NPROBE = 4
DEFAULT_KEEP = 256
DEFAULT_CANDIDATES = 2048
# A centroid posted by more than this share of the documents is treated as posted by all.
COMMON_FRACTION = 0.25
# Below this many documents no centroid is treated as common (too few to tell).
_COMMON_MIN_DOCS = 64


def default_keep(k: int) -> int:
    """How many candidates survive pruning for a top-``k`` search: ``max(DEFAULT_KEEP, 32k)``.

    Deep result lists need proportionally more survivors for their tail to stay exact.
    """
    return max(DEFAULT_KEEP, 32 * k)


@dataclass(frozen=True)
class SearchSettings:
    """The prefilter's knobs for one search, semantic and hybrid: centroids probed per
    query token, stage-1 candidates, and candidates kept after pruning (scored by exact
    MaxSim). A hybrid search prunes fewer stage-1 candidates and keeps fewer, as the
    keyword hits are candidates too."""

    nprobe: int
    candidates: int
    keep: int
    hybrid_candidates: int
    hybrid_keep: int


# Up to this many documents a semantic search prunes SMALL_CANDIDATES stage-1 candidates
# (see search_settings).
SMALL_COLLECTION = 30_000
SMALL_CANDIDATES = 1024
# Up to this many documents the knobs are the ones chosen on SciFact (see search_settings).
LARGE_COLLECTION = 200_000
# Above LARGE_COLLECTION and up to MID_COLLECTION documents: twice the candidates, at
# least 512 kept; beyond, four times and at least 768 (see search_settings).
MID_COLLECTION = 500_000
# Hybrid search keeps 1/HYBRID_KEEP_SHARE of semantic search's pruning survivors. On the
# tune half of scifact-dev (``benchmarks/hybrid.py --knobs``, k=10) a quarter, a half and
# all of 320 kept nDCG@10 0.7326, 0.7332 and 0.7334; a quarter kept 0.959 of the exhaustive
# top 10 there but 0.949 on the held-out half, under issue 15's 0.95, so a half is used
# (0.984 on the tune half; docs/hybrid.md).
HYBRID_KEEP_SHARE = 2
# ... and prunes 1/HYBRID_CANDIDATE_SHARE of the stage-1 candidates a collection of its
# size gets from DEFAULT_CANDIDATES (256 of 2,048 up to 200,000 documents, also where
# semantic search prunes SMALL_CANDIDATES). On the tune half of scifact-dev, 2,048 down to
# 256 kept nDCG@10 at 0.7332 and the top-10 overlap with exhaustive hybrid at 0.984-0.983
# (128: 0.967, re-measured 0.963) while pruning, the prefilter's main cost, did an eighth
# of the work; measured at SciFact scale only.
HYBRID_CANDIDATE_SHARE = 8


def search_settings(documents: int, k: int) -> SearchSettings:
    """The default knobs for a top-``k`` search over ``documents`` posted documents.

    Up to :data:`LARGE_COLLECTION` documents: nprobe :data:`DEFAULT_NPROBE` (4),
    :data:`DEFAULT_CANDIDATES` (2,048) stage-1 candidates and :func:`default_keep` kept,
    as chosen on SciFact (5k documents); at 100k replicated documents these keep the
    top-10 overlap with exhaustive at 0.97-0.99 in about 14 CPU-ms. Up to
    :data:`SMALL_COLLECTION` documents a semantic search prunes only
    :data:`SMALL_CANDIDATES` (1,024): on scifact-dev's tune half the same nDCG@10
    (0.6834) and top-10 overlap with exhaustive (0.993) as 2,048 at 0.8x the wall time
    (held-out: 0.6907 and 0.991 both ways), and on replicated collections of 10k and 30k
    documents the same tuning overlap (0.974 against 0.972, 0.970 against 0.972), where at
    100k it fell to 0.952 against 0.972 (``benchmarks/prefilter_sweep.py --index``).

    Beyond :data:`LARGE_COLLECTION`, more documents score close to the true top ten, and
    the candidates (not the probes) are what runs short: up to 500,000 documents twice the
    stage-1 candidates and at least 512 kept, beyond four times (8,192) and at least 768
    kept. At 1M documents this lifted the overlap from 0.82 to 0.94 on 50 tuning queries
    and from 0.86 to 0.98 on the 30 held-out ones that ``benchmarks/scaling.py`` reports
    (0.927 with the SciFact knobs and the earlier per-token-maximum stage 1), at 1.5-1.7x
    the search CPU; nprobe 6, 8 or 12 did not help at equal candidates, and 1,024 kept
    gained 0.006 for a third more exact scoring (``benchmarks/prefilter_sweep.py
    --index``, docs/benchmarks.md "Scaling"). Beyond 1M documents the values are the 1M
    ones, not measured.

    Hybrid search prunes 1/:data:`HYBRID_CANDIDATE_SHARE` of the 2,048, 4,096 or 8,192
    and keeps 1/:data:`HYBRID_KEEP_SHARE` of ``keep``.
    """
    keep = default_keep(k)
    if documents <= LARGE_COLLECTION:
        candidates, grown = DEFAULT_CANDIDATES, DEFAULT_CANDIDATES
        if documents <= SMALL_COLLECTION:
            candidates = SMALL_CANDIDATES
    else:
        factor, kept = (2, 512) if documents <= MID_COLLECTION else (4, 768)
        grown = factor * DEFAULT_CANDIDATES
        candidates, keep = grown, max(keep, kept)
    return SearchSettings(
        nprobe=DEFAULT_NPROBE,
        candidates=candidates,
        keep=keep,
        hybrid_candidates=max(1, grown // HYBRID_CANDIDATE_SHARE),
        hybrid_keep=max(1, keep // HYBRID_KEEP_SHARE),
    )


def _gather_segments(
    indptr: npt.NDArray[np.int64], which: npt.NDArray[np.int64]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Positions covered by segments ``which`` of a CSR ``indptr``, and their lengths."""
    starts = indptr[which]
    lengths = indptr[which + 1] - starts
    total = int(lengths.sum())
    if total == 0:
        return np.zeros(0, dtype=np.int64), lengths
    # Position p of segment s is starts[s] + (p - first position of s in the output).
    shift = starts - (np.cumsum(lengths) - lengths)
    return np.repeat(shift, lengths) + np.arange(total, dtype=np.int64), lengths


def _sorted_unique_within(flat: npt.NDArray[np.integer], lengths: npt.NDArray[np.int64]) -> bool:
    """Whether every segment of ``flat`` (CSR by ``lengths``) is strictly increasing.

    A linear check in ``flat``'s own dtype (no int64 copy: at a million documents the ids
    are 48 MB as uint16, 190 MB as int64): what the store and the training write is
    already sorted and unique, so the sort that would otherwise order the entries is
    skipped.
    """
    if flat.size < 2:
        return True
    rising = flat[1:] > flat[:-1]
    # A segment boundary may fall anywhere; only steps inside a segment must rise.
    boundary = np.cumsum(lengths)[:-1] - 1
    boundary = boundary[(boundary >= 0) & (boundary < rising.size)]
    rising[boundary] = True
    return bool(rising.all())


def _by_centroid(
    doc_indptr: npt.NDArray[np.int64], doc_cents: npt.NDArray[np.unsignedinteger], count: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int32]]:
    """The centroid view of a document view: ``(indptr [count + 1], document slots)``, each
    centroid's slots rising.

    A counting sort in blocks: within a block each entry becomes one uint32 key (centroid
    id in the high bits, position in the block in the low ones), sorted by numpy's
    vectorized sort, and each block's run of a centroid lands after the earlier blocks'
    runs of it. At 1M documents (23.8M postings) this took 0.8-1.3 CPU-s where a stable
    ``argsort`` of the ids (int64 positions, then two gathers) took 2.4-2.8, load ~4.5.
    """
    entries = doc_cents.size
    counts = np.bincount(doc_cents, minlength=count)
    indptr = np.zeros(count + 1, dtype=np.int64)
    np.cumsum(counts, out=indptr[1:])
    if entries == 0:
        return indptr, np.zeros(0, dtype=np.int32)
    # Entry e belongs to the document whose start is the last one <= e: mark each start
    # and count the marks. Documents in the view are never empty (so starts differ and a
    # plain assignment marks them); an empty one would share its start with the next.
    starts = np.zeros(entries + 1, dtype=np.int32)
    if np.any(doc_indptr[1:] == doc_indptr[:-1]):
        np.add.at(starts, doc_indptr[1:-1], 1)
    else:
        starts[doc_indptr[1:-1]] = 1
    slot_of_entry = np.cumsum(starts[:entries], dtype=np.int32)
    pos_bits = 32 - max(1, (count - 1).bit_length())
    mask = np.uint32((1 << pos_bits) - 1)
    free = indptr[:-1].copy()  # where each centroid's next run goes
    slots = np.empty(entries, dtype=np.int32)
    for first in range(0, entries, 1 << pos_bits):
        block = doc_cents[first : first + (1 << pos_bits)]
        keys = (block.astype(np.uint32) << np.uint32(pos_bits)) | np.arange(
            block.size, dtype=np.uint32
        )
        keys.sort()
        cents = keys >> np.uint32(pos_bits)
        in_block = np.bincount(block, minlength=count)
        run_start = np.cumsum(in_block) - in_block
        slots[free[cents] + (np.arange(block.size) - run_start[cents])] = slot_of_entry[
            first + (keys & mask)
        ]
        free += in_block
    return indptr, slots


class Prefilter:
    """Centroids and the in-memory postings of one collection.

    Thread-safe: searches may run in several threads while one thread adds or discards
    postings (updates swap whole arrays under a lock; readers take a consistent view).

    Args:
        centroids: float32 ``[C, d]`` unit-norm centroids (from :func:`edge_colbert.kmeans.kmeans`).

    Raises:
        InvalidInputError: ``centroids`` is not a non-empty finite float ``[C, d]`` array.
    """

    def __init__(self, centroids: npt.ArrayLike) -> None:
        c = np.asarray(centroids)
        if (
            c.ndim != 2
            or c.shape[0] < 1
            or c.shape[1] < 1
            or not np.issubdtype(c.dtype, np.floating)
        ):
            raise InvalidInputError(
                f"centroids must be a non-empty float array [C, dim]; got dtype {c.dtype}, "
                f"shape {c.shape}. Retrain the centroids."
            )
        if not np.isfinite(c).all():
            raise InvalidInputError("centroids hold NaN or infinity; retrain the centroids.")
        self._centroids = np.ascontiguousarray(c, dtype=np.float32)
        self._centroids.setflags(write=False)
        # Centroid ids fit 16 bits up to 65,536 centroids (kmeans.MAX_CENTROIDS): half the
        # memory per posting, and two of them fit a uint32 sort key (see _by_centroid).
        self._id_dtype: type[np.unsignedinteger] = (
            np.uint16 if self.num_centroids <= 1 << 16 else np.uint32
        )
        self._lock = threading.Lock()
        # Document view: rowids sorted; each document's centroids sorted unique.
        self._doc_rowids = np.zeros(0, dtype=np.int64)
        self._doc_indptr = np.zeros(1, dtype=np.int64)
        self._doc_cents = np.zeros(0, dtype=self._id_dtype)
        # Centroid view (slots into the document view), rebuilt when stale.
        self._stale = True
        self._post_indptr = np.zeros(self.num_centroids + 1, dtype=np.int64)
        self._post_slots = np.zeros(0, dtype=np.int32)

    # -- centroids -------------------------------------------------------------------------

    @property
    def centroids(self) -> npt.NDArray[np.float32]:
        """The float32 ``[C, d]`` centroids (read-only)."""
        return self._centroids

    @property
    def num_centroids(self) -> int:
        """Number of centroids ``C``."""
        return int(self._centroids.shape[0])

    @property
    def dim(self) -> int:
        """Vector dimension ``d``."""
        return int(self._centroids.shape[1])

    def save_centroids(self) -> bytes:
        """The centroids as raw little-endian float32 bytes, for the store."""
        return self._centroids.astype("<f4", copy=False).tobytes()

    @classmethod
    def from_bytes(cls, blob: bytes, dim: int) -> Prefilter:
        """Rebuild a prefilter (without postings) from :meth:`save_centroids` bytes.

        Raises:
            InvalidInputError: ``dim < 1`` or the blob is not a whole number of
                ``dim``-dimensional float32 vectors.
        """
        row = 4 * dim
        if dim < 1 or len(blob) == 0 or len(blob) % row:
            raise InvalidInputError(
                f"the centroid blob has {len(blob)} bytes, not a whole number of {dim}-dim "
                f"float32 vectors ({max(row, 0)} bytes each); the index file is damaged or "
                "was written for another dimension. Rebuild the index."
            )
        return cls(np.frombuffer(blob, dtype="<f4").reshape(-1, dim).astype(np.float32))

    def _vectors(self, vectors: npt.ArrayLike, what: str) -> npt.NDArray[np.float32]:
        """Validate a ``[T, d]`` float array against this prefilter's dimension."""
        v = np.asarray(vectors)
        if v.ndim != 2 or not np.issubdtype(v.dtype, np.floating):
            raise InvalidInputError(
                f"{what} must be a float array [tokens, dim]; got dtype {v.dtype}, shape {v.shape}."
            )
        if v.shape[1] != self.dim:
            raise InvalidInputError(
                f"{what} have {v.shape[1]} dimensions but the index centroids have {self.dim}; "
                "use the model the index was built with, or rebuild the index."
            )
        return np.ascontiguousarray(v, dtype=np.float32)

    def assign(self, vectors: npt.ArrayLike) -> npt.NDArray[np.uint32]:
        """Exact nearest centroid (largest inner product) of each token: uint32 ``[T]``."""
        v = self._vectors(vectors, "token vectors")
        labels, _ = assign_nearest(v, self._centroids)
        return labels.astype(np.uint32)

    def probe(self, query: npt.ArrayLike, nprobe: int) -> npt.NDArray[np.uint32]:
        """The ``nprobe`` nearest centroids of each query token, best first (exact):
        uint32 ``[Tq, nprobe]``. ``nprobe`` larger than the number of centroids is clamped.

        Raises:
            InvalidInputError: ``nprobe < 1`` or the query dimension differs.
        """
        q = self._vectors(query, "query vectors")
        if nprobe < 1:
            raise InvalidInputError(f"nprobe must be >= 1; got {nprobe}.")
        count = min(nprobe, self.num_centroids)
        qc = q @ self._centroids.T
        top = self._top_centroids(qc, count)
        order = np.argsort(-np.take_along_axis(qc, top, axis=1), axis=1, kind="stable")
        return np.take_along_axis(top, order, axis=1).astype(np.uint32)

    @staticmethod
    def _top_centroids(qc: npt.NDArray[np.float32], count: int) -> npt.NDArray[np.int64]:
        """The ``count`` best centroid indices of each row of ``qc`` (unordered)."""
        if count >= qc.shape[1]:
            every: npt.NDArray[np.int64] = np.tile(
                np.arange(qc.shape[1], dtype=np.int64), (qc.shape[0], 1)
            )
            return every
        top: npt.NDArray[np.int64] = np.argpartition(-qc, count - 1, axis=1)[:, :count]
        return top

    # -- postings --------------------------------------------------------------------------

    def _checked(
        self, rowids: npt.ArrayLike, lengths: npt.ArrayLike, flat: npt.ArrayLike
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.unsignedinteger]]:
        """Validate a batch in CSR form; return it as a document view sorted by rowid.

        Documents with no centroid are left out (they cannot be found by any probe).
        """
        r = np.asarray(rowids)
        if r.ndim != 1 or (r.size and not np.issubdtype(r.dtype, np.integer)):
            raise InvalidInputError(
                f"rowids must be a 1-D integer array; got dtype {r.dtype}, shape {r.shape}."
            )
        r = r.astype(np.int64)
        n = np.asarray(lengths, dtype=np.int64).reshape(-1)
        f = np.asarray(flat).reshape(-1)
        if f.size and not np.issubdtype(f.dtype, np.integer):
            raise InvalidInputError(
                f"centroid ids must be integers; got dtype {f.dtype}. Pass the ids "
                "Prefilter.assign returned."
            )
        if not f.size:
            f = f.astype(np.int64)
        if r.shape[0] != n.shape[0]:
            raise InvalidInputError(
                f"{r.shape[0]} rowids but {n.shape[0]} centroid arrays; pass one "
                "array of centroid ids per document."
            )
        if int(n.sum()) != f.size or (n.size and int(n.min()) < 0):
            raise InvalidInputError(
                f"the centroid lengths add up to {int(n.sum())} but {f.size} ids were given."
            )
        if f.size and (int(f.min()) < 0 or int(f.max()) >= self.num_centroids):
            raise InvalidInputError(
                f"centroid ids must lie in [0, {self.num_centroids}); got "
                f"{int(f.min())}..{int(f.max())}. The postings come from other centroids."
            )
        in_order = r.size < 2 or bool(np.all(np.diff(r) > 0))
        if not in_order and np.unique(r).shape[0] != r.shape[0]:
            raise InvalidInputError("rowids repeat within one batch; post each document once.")
        if in_order and _sorted_unique_within(f, n):
            keep = n > 0
            indptr = np.zeros(int(keep.sum()) + 1, dtype=np.int64)
            np.cumsum(n[keep], out=indptr[1:])
            # copy=False: ids read from the file already have the compact dtype.
            return r[keep], indptr, f.astype(self._id_dtype, copy=False)
        f = f.astype(np.int64)
        # Unsorted input (callers outside this package): one sort orders entries by
        # document, then centroid, and drops repeats.
        slot = np.argsort(r, kind="stable")
        rank = np.empty_like(slot)
        rank[slot] = np.arange(slot.size)
        keys = np.unique(np.repeat(rank, n) * self.num_centroids + f)
        owner = keys // self.num_centroids
        sorted_r = r[slot]
        present = np.unique(owner)
        indptr = np.searchsorted(owner, np.append(present, slot.size)).astype(np.int64)
        return (
            sorted_r[present],
            indptr,
            (keys % self.num_centroids).astype(self._id_dtype),
        )

    @staticmethod
    def _flatten(
        doc_centroids: list[npt.NDArray[np.uint32]],
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
        """A list of per-document id arrays as (lengths, flat ids)."""
        lengths = np.fromiter(
            (np.asarray(c).size for c in doc_centroids), dtype=np.int64, count=len(doc_centroids)
        )
        if not lengths.sum():
            return lengths, np.zeros(0, dtype=np.int64)
        return lengths, np.concatenate([np.asarray(c).reshape(-1) for c in doc_centroids])

    def set_postings(
        self, rowids: npt.ArrayLike, doc_centroids: list[npt.NDArray[np.uint32]]
    ) -> None:
        """Replace all postings: document ``rowids[i]`` is posted under ``doc_centroids[i]``."""
        self.set_postings_flat(rowids, *self._flatten(doc_centroids))

    def set_postings_flat(
        self, rowids: npt.ArrayLike, lengths: npt.ArrayLike, flat: npt.ArrayLike
    ) -> None:
        """:meth:`set_postings` in CSR form: document ``rowids[i]`` is posted under the next
        ``lengths[i]`` ids of ``flat`` (sorted unique per document, rowids rising: checked
        in linear time; anything else is sorted)."""
        doc_rowids, indptr, cents = self._checked(rowids, lengths, flat)
        with self._lock:
            self._doc_rowids, self._doc_indptr, self._doc_cents = doc_rowids, indptr, cents
            self._stale = True

    def add_postings(
        self, rowids: npt.ArrayLike, doc_centroids: list[npt.NDArray[np.uint32]]
    ) -> None:
        """Post more documents; a rowid already posted is replaced (an update)."""
        self.add_postings_flat(rowids, *self._flatten(doc_centroids))

    def add_postings_flat(
        self, rowids: npt.ArrayLike, lengths: npt.ArrayLike, flat: npt.ArrayLike
    ) -> None:
        """:meth:`add_postings` in CSR form (see :meth:`set_postings_flat`)."""
        new_rowids, new_indptr, new_cents = self._checked(rowids, lengths, flat)
        given = np.asarray(rowids, dtype=np.int64).reshape(-1)
        if given.size == 0:
            return
        with self._lock:
            # Re-posting a rowid replaces it: the old entries go first.
            if self._doc_rowids.size:
                self._discard_locked(given)
            self._stale = True
            if new_rowids.size == 0:
                return
            if not self._doc_rowids.size or int(new_rowids[0]) > int(self._doc_rowids[-1]):
                # Rowids only grow in SQLite's usual case: a plain append stays sorted.
                self._doc_rowids = np.concatenate([self._doc_rowids, new_rowids])
                self._doc_indptr = np.concatenate(
                    [self._doc_indptr, new_indptr[1:] + self._doc_indptr[-1]]
                )
                self._doc_cents = np.concatenate([self._doc_cents, new_cents])
                return
            # Out-of-order rowids: merge both document views by rowid.
            rowids_all = np.concatenate([self._doc_rowids, new_rowids])
            lengths_all = np.concatenate([np.diff(self._doc_indptr), np.diff(new_indptr)])
            starts_all = np.concatenate(
                [self._doc_indptr[:-1], new_indptr[:-1] + self._doc_cents.size]
            )
            cents_all = np.concatenate([self._doc_cents, new_cents])
            order = np.argsort(rowids_all, kind="stable")
            indptr = np.zeros(order.size + 1, dtype=np.int64)
            np.cumsum(lengths_all[order], out=indptr[1:])
            positions = np.repeat(starts_all[order], lengths_all[order]) + (
                np.arange(int(indptr[-1]), dtype=np.int64)
                - np.repeat(indptr[:-1], lengths_all[order])
            )
            self._doc_rowids = rowids_all[order]
            self._doc_indptr = indptr
            self._doc_cents = cents_all[positions]

    def discard(self, rowids: npt.ArrayLike) -> None:
        """Remove documents from the postings; rowids not posted are ignored."""
        r = np.asarray(rowids, dtype=np.int64).reshape(-1)
        if r.size == 0:
            return
        with self._lock:
            self._discard_locked(r)

    def _discard_locked(self, rowids: npt.NDArray[np.int64]) -> None:
        keep = ~np.isin(self._doc_rowids, rowids)
        if keep.all():
            return
        lengths = np.diff(self._doc_indptr)
        self._doc_cents = self._doc_cents[np.repeat(keep, lengths)]
        self._doc_rowids = self._doc_rowids[keep]
        indptr = np.zeros(self._doc_rowids.size + 1, dtype=np.int64)
        np.cumsum(lengths[keep], out=indptr[1:])
        self._doc_indptr = indptr
        self._stale = True

    @property
    def num_postings(self) -> int:
        """Number of (document, centroid) pairs posted."""
        return int(self._doc_cents.shape[0])

    @property
    def num_documents(self) -> int:
        """Number of documents posted."""
        return int(self._doc_rowids.shape[0])

    @property
    def nbytes(self) -> int:
        """Bytes of memory the postings and centroids take."""
        with self._lock:
            parts = (
                self._centroids,
                self._doc_rowids,
                self._doc_indptr,
                self._doc_cents,
                self._post_indptr,
                self._post_slots,
            )
            return int(sum(p.nbytes for p in parts))

    def _views(
        self,
    ) -> tuple[
        npt.NDArray[np.int64],
        npt.NDArray[np.int64],
        npt.NDArray[np.unsignedinteger],
        npt.NDArray[np.int64],
        npt.NDArray[np.int32],
    ]:
        """A consistent (doc rowids, doc indptr, doc centroids, post indptr, post slots),
        rebuilding the centroid view first if adds or discards made it stale."""
        with self._lock:
            if self._stale:
                self._post_indptr, self._post_slots = _by_centroid(
                    self._doc_indptr, self._doc_cents, self.num_centroids
                )
                self._stale = False
            return (
                self._doc_rowids,
                self._doc_indptr,
                self._doc_cents,
                self._post_indptr,
                self._post_slots,
            )

    def postings(self, centroid: int) -> npt.NDArray[np.int64]:
        """Sorted rowids posted under one centroid."""
        doc_rowids, _, _, post_indptr, post_slots = self._views()
        return doc_rowids[post_slots[post_indptr[centroid] : post_indptr[centroid + 1]]]

    # -- search ----------------------------------------------------------------------------

    def candidates(
        self,
        query: npt.ArrayLike,
        *,
        nprobe: int = DEFAULT_NPROBE,
        limit: int = DEFAULT_CANDIDATES,
    ) -> npt.NDArray[np.int64]:
        """The ``limit`` documents of best stage-1 score (see the module docstring), as
        sorted rowids; documents that hold none of the probed (not common) centroids are
        never candidates.

        Raises:
            InvalidInputError: ``nprobe < 1``, ``limit < 1`` or the query dimension differs.
        """
        q = self._vectors(query, "query vectors")
        if nprobe < 1 or limit < 1:
            raise InvalidInputError(f"nprobe and limit must be >= 1; got {nprobe}, {limit}.")
        doc_rowids, _, _, post_indptr, post_slots = self._views()
        n_docs = doc_rowids.size
        if n_docs == 0 or q.shape[0] == 0:
            return np.zeros(0, dtype=np.int64)
        qc = q @ self._centroids.T
        count = min(nprobe, self.num_centroids)
        if count < self.num_centroids:
            part = np.argpartition(-qc, count, axis=1)
            top = part[:, :count]
            floor = np.take_along_axis(qc, part[:, count : count + 1], axis=1)[:, 0]
        else:
            top = self._top_centroids(qc, count)
            floor = qc.min(axis=1) - 1.0
        df = np.diff(post_indptr)
        common = (
            df > COMMON_FRACTION * n_docs
            if n_docs >= _COMMON_MIN_DOCS
            else np.zeros(self.num_centroids, dtype=bool)
        )
        values = np.take_along_axis(qc, top, axis=1)
        # A common centroid counts as held by every document: it raises the floor.
        common_best = np.where(common[top], values, -np.inf).max(axis=1)
        floor = np.maximum(floor, common_best)
        gain = values - floor[:, None]
        useful = (gain > 0) & ~common[top]
        # Every (token, probed centroid) pair adds its gain to each document posted under
        # it, in one weighted count over all the pairs' postings: no Python step per token
        # or centroid. A per-token maximum (each document counted once per token) took 3x
        # the CPU at 1M documents (40 against 13 ms at nprobe 8) and picks a better 2,048
        # there (held-out overlap 0.957 against 0.913 at keep 512), but the sum with twice
        # the candidates does better at the same CPU (search_settings); equal at 100k.
        positions, lengths = _gather_segments(post_indptr, top[useful].astype(np.int64))
        bonus = np.bincount(
            post_slots[positions],
            weights=np.repeat(gain[useful].astype(np.float64), lengths),
            minlength=n_docs,
        )
        found = np.flatnonzero(bonus > 0)
        if found.size > limit:
            found = found[np.argpartition(-bonus[found], limit - 1)[:limit]]
            found.sort()
        return doc_rowids[found]

    def prune(
        self,
        query: npt.ArrayLike,
        candidates: npt.ArrayLike,
        *,
        keep: int = DEFAULT_KEEP,
    ) -> npt.NDArray[np.int64]:
        """Keep the ``keep`` candidates of best centroid-interaction score, sorted by rowid.

        The score is PLAID's centroid interaction, ``sum_i max_{c in doc} q_i . c``: MaxSim
        with every document token replaced by its centroid, computed exactly from each
        candidate's centroids. Candidates not posted at all rank last. With
        ``len(candidates) <= keep`` all are returned.

        Raises:
            InvalidInputError: ``keep < 1`` or the query dimension differs.
        """
        q = self._vectors(query, "query vectors")
        if keep < 1:
            raise InvalidInputError(f"keep must be >= 1; got keep={keep}.")
        cand = np.unique(np.asarray(candidates, dtype=np.int64).reshape(-1))
        if cand.shape[0] <= keep:
            return cand
        return self.best_scored(cand, self.centroid_scores(q, cand), keep=keep)

    @staticmethod
    def best_scored(
        candidates: npt.NDArray[np.int64], scores: npt.NDArray[np.float32], *, keep: int
    ) -> npt.NDArray[np.int64]:
        """The ``keep`` rowids of ``candidates`` (unique, more than ``keep``) with the best
        ``scores``, sorted by rowid: :meth:`prune`'s selection, for scores computed
        elsewhere (in parts, on several threads)."""
        best = np.argpartition(-scores, keep - 1)[:keep]
        return np.sort(candidates[best])

    def centroid_scores(
        self, query: npt.ArrayLike, rowids: npt.ArrayLike
    ) -> npt.NDArray[np.float32]:
        """Exact centroid-interaction scores of documents (see :meth:`prune`); -inf for a
        rowid not posted."""
        q = self._vectors(query, "query vectors")
        cand = np.asarray(rowids, dtype=np.int64).reshape(-1)
        doc_rowids, doc_indptr, doc_cents, _, _ = self._views()
        scores = np.full(cand.shape[0], -np.inf, dtype=np.float32)
        n_docs = doc_rowids.shape[0]
        if n_docs == 0 or cand.shape[0] == 0 or q.shape[0] == 0:
            return scores
        slot = np.minimum(np.searchsorted(doc_rowids, cand), n_docs - 1)
        posted = doc_rowids[slot] == cand
        if not posted.any():
            return scores
        positions, lengths = _gather_segments(doc_indptr, slot[posted])
        qc = q @ self._centroids.T  # [Tq, C]
        # [Tq, entries], each document's entries contiguous along the last axis: reduceat
        # along a contiguous axis is 4x faster than gathering [entries, Tq] rows.
        values = np.take(qc, doc_cents[positions], axis=1)
        starts = np.cumsum(lengths) - lengths
        scores[posted] = np.maximum.reduceat(values, starts, axis=1).sum(axis=0)
        return scores
