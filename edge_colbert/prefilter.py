"""Candidate generation for search: centroids in usearch, postings, centroid-interaction pruning.

Each document is *posted* under the centroids nearest to its tokens (exact assignment).
A search probes, per query token, the ``nprobe`` nearest centroids (usearch HNSW over the
centroids), takes the union of the documents posted under them, and, when that union is
larger than ``keep``, ranks it by an approximate MaxSim computed from the documents'
centroids alone (PLAID's centroid interaction: per query token, the best ``q . c`` over the
document's centroids, summed) and keeps the best ``keep``. Exact MaxSim over the int8
vectors (:mod:`edge_colbert.maxsim`) then ranks the survivors.

Postings live in memory as two views of one list of ``(rowid, centroid)`` pairs: by document
(for pruning) and by centroid (for probing). Adds and discards update the document view at
once; the centroid view is rebuilt lazily, on the next probe, so a batch of adds costs one
rebuild.

``DEFAULT_NPROBE`` and ``DEFAULT_KEEP`` were chosen by measurement. On real token vectors
(SciFact, 5,183 abstracts, 1.1M tokens, 4,096 centroids, the bundled MiniLM-64 model, 100
queries) top-10 overlap with exhaustive MaxSim is 0.95 at keep 64, 0.98 at 128, 0.994 at
256 and 0.999 at 512, for a search p50 of 8, 10, 14 and 21 ms. Pruning, not probing, limits
fidelity: nprobe 4 already gathers most documents, since every document shares its [CLS]
token. ``benchmarks/prefilter_sweep.py`` shows the same on a synthetic clustered collection,
which is harder (0.87 at 256, 0.94 at 1024). With fewer documents than ``keep`` the search
is exhaustive and exact.
"""

from __future__ import annotations

import logging
import threading

import numpy as np
import numpy.typing as npt

# onnxruntime must be loaded before usearch: with onnxruntime 1.31 and usearch 2.26 on Linux,
# importing usearch's native module first makes the later onnxruntime import crash the
# process (SIGSEGV). Loading it here keeps every import order of edge_colbert safe.
import onnxruntime  # noqa: F401
from usearch.index import Index as UsearchIndex

from edge_colbert.errors import InvalidInputError
from edge_colbert.kmeans import assign_nearest

__all__ = ["DEFAULT_DEPTH", "DEFAULT_KEEP", "DEFAULT_NPROBE", "Prefilter", "default_keep"]

logger = logging.getLogger(__name__)

DEFAULT_NPROBE = 4
DEFAULT_KEEP = 256
DEFAULT_DEPTH = 32

# usearch HNSW search breadth ("ef") over the centroids.
_EXPANSION_SEARCH = 128


def default_keep(k: int) -> int:
    """How many candidates survive pruning for a top-``k`` search: ``max(DEFAULT_KEEP, 32k)``.

    Deep result lists need proportionally more survivors for their tail to stay exact.
    """
    return max(DEFAULT_KEEP, 32 * k)


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


class Prefilter:
    """Centroids, their usearch index and the in-memory postings of one collection.

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
        self._usearch = UsearchIndex(
            ndim=self.dim, metric="ip", dtype="f32", expansion_search=_EXPANSION_SEARCH
        )
        self._usearch.add(np.arange(self.num_centroids, dtype=np.uint64), self._centroids)
        self._lock = threading.Lock()
        # Document view: entries sorted by rowid, each document's centroids sorted unique.
        self._e_rowid = np.zeros(0, dtype=np.int64)
        self._e_cent = np.zeros(0, dtype=np.uint32)
        # Centroid view, rebuilt from the document view when stale.
        self._stale = True
        self._doc_rowids = np.zeros(0, dtype=np.int64)
        self._doc_indptr = np.zeros(1, dtype=np.int64)
        self._post_indptr = np.zeros(self.num_centroids + 1, dtype=np.int64)
        self._post_rowids = np.zeros(0, dtype=np.int64)
        self._post_slots = np.zeros(0, dtype=np.int64)

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
        """The ``nprobe`` nearest centroids of each query token (usearch): uint32 ``[Tq, nprobe]``.

        ``nprobe`` larger than the number of centroids is clamped to it.

        Raises:
            InvalidInputError: ``nprobe < 1`` or the query dimension differs.
        """
        q = self._vectors(query, "query vectors")
        if nprobe < 1:
            raise InvalidInputError(f"nprobe must be >= 1; got {nprobe}.")
        count = min(nprobe, self.num_centroids)
        if q.shape[0] == 0:
            return np.zeros((0, count), dtype=np.uint32)
        # HNSW is approximate; its search breadth stays at least 4x the count (misses are
        # rare), and past that an exact scan of the centroids is as cheap.
        found = self._usearch.search(q, count, exact=4 * count > _EXPANSION_SEARCH)
        keys = np.asarray(found.keys).reshape(q.shape[0], -1)[:, :count]
        counts = np.asarray(getattr(found, "counts", [keys.shape[1]])).reshape(-1)
        out = keys.astype(np.uint32)
        for row in np.flatnonzero(counts < count):
            # usearch pads short rows with a sentinel; repeat a real key instead.
            filled = int(counts[row])
            out[row, filled:] = out[row, 0] if filled else 0
        return out

    # -- postings --------------------------------------------------------------------------

    def _entries(
        self, rowids: npt.ArrayLike, doc_centroids: list[npt.NDArray[np.uint32]]
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64], npt.NDArray[np.uint32]]:
        """Validate a batch and return (sorted rowids, entry rowids, entry centroids)."""
        r = np.asarray(rowids)
        if r.ndim != 1 or (r.size and not np.issubdtype(r.dtype, np.integer)):
            raise InvalidInputError(
                f"rowids must be a 1-D integer array; got dtype {r.dtype}, shape {r.shape}."
            )
        r = r.astype(np.int64)
        if r.shape[0] != len(doc_centroids):
            raise InvalidInputError(
                f"{r.shape[0]} rowids but {len(doc_centroids)} centroid arrays; pass one "
                "array of centroid ids per document."
            )
        if np.unique(r).shape[0] != r.shape[0]:
            raise InvalidInputError("rowids repeat within one batch; post each document once.")
        lengths = np.array([np.asarray(c).size for c in doc_centroids], dtype=np.int64)
        flat = (
            np.concatenate([np.asarray(c).reshape(-1) for c in doc_centroids]).astype(np.int64)
            if lengths.sum()
            else np.zeros(0, dtype=np.int64)
        )
        if flat.size and (int(flat.min()) < 0 or int(flat.max()) >= self.num_centroids):
            raise InvalidInputError(
                f"centroid ids must lie in [0, {self.num_centroids}); got "
                f"{int(flat.min())}..{int(flat.max())}. The postings come from other centroids."
            )
        # One sort orders entries by rowid, then centroid, and drops repeats.
        keys = np.unique(np.repeat(r, lengths) * self.num_centroids + flat)
        return np.sort(r), keys // self.num_centroids, (keys % self.num_centroids).astype(np.uint32)

    def set_postings(
        self, rowids: npt.ArrayLike, doc_centroids: list[npt.NDArray[np.uint32]]
    ) -> None:
        """Replace all postings: document ``rowids[i]`` is posted under ``doc_centroids[i]``."""
        _, e_rowid, e_cent = self._entries(rowids, doc_centroids)
        with self._lock:
            self._e_rowid, self._e_cent = e_rowid, e_cent
            self._stale = True

    def add_postings(
        self, rowids: npt.ArrayLike, doc_centroids: list[npt.NDArray[np.uint32]]
    ) -> None:
        """Post more documents; a rowid already posted is replaced (an update)."""
        new_rowids, e_rowid, e_cent = self._entries(rowids, doc_centroids)
        if new_rowids.size == 0:
            return
        with self._lock:
            old_rowid, old_cent = self._e_rowid, self._e_cent
            if old_rowid.size and int(new_rowids[0]) <= int(old_rowid[-1]):
                keep = ~np.isin(old_rowid, new_rowids)
                merged_rowid = np.concatenate([old_rowid[keep], e_rowid])
                merged_cent = np.concatenate([old_cent[keep], e_cent])
                order = np.argsort(merged_rowid, kind="stable")
                self._e_rowid, self._e_cent = merged_rowid[order], merged_cent[order]
            else:
                # Rowids only grow in SQLite's usual case: a plain append stays sorted.
                self._e_rowid = np.concatenate([old_rowid, e_rowid])
                self._e_cent = np.concatenate([old_cent, e_cent])
            self._stale = True

    def discard(self, rowids: npt.ArrayLike) -> None:
        """Remove documents from the postings; rowids not posted are ignored."""
        r = np.asarray(rowids, dtype=np.int64).reshape(-1)
        if r.size == 0:
            return
        with self._lock:
            keep = ~np.isin(self._e_rowid, r)
            self._e_rowid, self._e_cent = self._e_rowid[keep], self._e_cent[keep]
            self._stale = True

    @property
    def num_postings(self) -> int:
        """Number of (document, centroid) pairs posted."""
        return int(self._e_rowid.shape[0])

    @property
    def num_documents(self) -> int:
        """Number of documents posted."""
        self._refresh()
        return int(self._doc_rowids.shape[0])

    def _refresh(self) -> None:
        """Rebuild both CSR views from the entry list if adds or discards made them stale."""
        with self._lock:
            if not self._stale:
                return
            e_rowid, e_cent = self._e_rowid, self._e_cent
            starts = np.flatnonzero(np.diff(e_rowid, prepend=-1)) if e_rowid.size else e_rowid
            self._doc_rowids = e_rowid[starts]
            self._doc_indptr = np.append(starts, e_rowid.shape[0]).astype(np.int64)
            # Stable sort by centroid keeps rowids ascending inside each posting list.
            order = np.argsort(e_cent, kind="stable")
            self._post_rowids = e_rowid[order]
            entry_slot = np.repeat(
                np.arange(starts.shape[0], dtype=np.int64), np.diff(self._doc_indptr)
            )
            self._post_slots = entry_slot[order]
            counts = np.bincount(e_cent, minlength=self.num_centroids)
            self._post_indptr = np.concatenate([[0], np.cumsum(counts)]).astype(np.int64)
            self._stale = False

    def postings(self, centroid: int) -> npt.NDArray[np.int64]:
        """Sorted rowids posted under one centroid."""
        self._refresh()
        return self._post_rowids[self._post_indptr[centroid] : self._post_indptr[centroid + 1]]

    def candidates(
        self, query: npt.ArrayLike, *, nprobe: int = DEFAULT_NPROBE
    ) -> npt.NDArray[np.int64]:
        """Sorted rowids posted under any query token's ``nprobe`` nearest centroids."""
        probes = np.unique(self.probe(query, nprobe)).astype(np.int64)
        self._refresh()
        positions, _ = _gather_segments(self._post_indptr, probes)
        return np.unique(self._post_rowids[positions])

    def prune(
        self,
        query: npt.ArrayLike,
        candidates: npt.ArrayLike,
        *,
        keep: int = DEFAULT_KEEP,
        depth: int = DEFAULT_DEPTH,
    ) -> npt.NDArray[np.int64]:
        """Keep the ``keep`` candidates of best centroid-interaction score, sorted by rowid.

        The score is PLAID's centroid interaction, ``sum_i max_{c in doc} q_i . c``: MaxSim
        with every document token replaced by its centroid. It is computed through the
        postings of each query token's ``depth`` best centroids (ranked exactly, in numpy);
        a document holding none of them gets the next best value, an upper bound of its true
        term, so it is never ranked below what it deserves. With ``depth`` at least the
        number of centroids the score is exact. Candidates not posted at all rank last.
        With ``len(candidates) <= keep`` all are returned.

        Raises:
            InvalidInputError: ``keep < 1``, ``depth < 1`` or the query dimension differs.
        """
        q = self._vectors(query, "query vectors")
        if keep < 1 or depth < 1:
            raise InvalidInputError(f"keep and depth must be >= 1; got keep={keep}, depth={depth}.")
        cand = np.unique(np.asarray(candidates, dtype=np.int64).reshape(-1))
        if cand.shape[0] <= keep:
            return cand
        self._refresh()
        scores = self.centroid_scores(q, cand, depth=depth)
        best = np.argpartition(-scores, keep - 1)[:keep]
        return np.sort(cand[best])

    def centroid_scores(
        self, query: npt.ArrayLike, rowids: npt.ArrayLike, *, depth: int = DEFAULT_DEPTH
    ) -> npt.NDArray[np.float32]:
        """Centroid-interaction scores of documents (see :meth:`prune`); -inf if not posted."""
        q = self._vectors(query, "query vectors")
        cand = np.asarray(rowids, dtype=np.int64).reshape(-1)
        self._refresh()
        n_docs = self._doc_rowids.shape[0]
        scores = np.full(cand.shape[0], -np.inf, dtype=np.float32)
        if n_docs == 0 or cand.shape[0] == 0:
            return scores
        slot = np.minimum(np.searchsorted(self._doc_rowids, cand), n_docs - 1)
        posted = self._doc_rowids[slot] == cand
        # Dense map from document slot to its place among the candidates (-1: not asked).
        slot_to_cand = np.full(n_docs, -1, dtype=np.int64)
        slot_to_cand[slot[posted]] = np.flatnonzero(posted)
        qc = q @ self._centroids.T  # [Tq, C]: every centroid scored once, cheap
        n_cents = self.num_centroids
        if depth < n_cents:
            part = np.argpartition(-qc, depth, axis=1)
            top = part[:, :depth]
            floor = np.take_along_axis(qc, part[:, depth : depth + 1], axis=1)[:, 0]
        else:
            top = np.broadcast_to(np.arange(n_cents), qc.shape)
            floor = np.full(q.shape[0], -np.inf, dtype=np.float32)
        n_cand = cand.shape[0]
        total = np.zeros(n_cand, dtype=np.float32)
        for i in range(q.shape[0]):
            positions, lengths = _gather_segments(self._post_indptr, top[i].astype(np.int64))
            where = slot_to_cand[self._post_slots[positions]]
            values = np.repeat(qc[i, top[i]], lengths)
            asked = where >= 0
            best = np.full(n_cand, floor[i], dtype=np.float32)
            np.maximum.at(best, where[asked], values[asked])
            total += best
        scores[posted] = total[posted]
        return scores
