"""When to train the centroids, and training them outside the write lock.

A small collection is searched exhaustively: below :data:`TRAIN_TOKENS` stored tokens an
exact scan reads under 600 KB and costs a few milliseconds, less than probing centroids, and
k-means on so few tokens gives centroids too coarse to narrow anything. When the collection
first reaches it, centroids are trained on a sample of the stored vectors and every document
is posted under the centroids of its tokens. Later documents are posted under the existing
centroids; once the collection holds more than :data:`RETRAIN_FACTOR` times the tokens the
centroids were trained on, they are retrained and every document reposted.

Training never holds the write lock while it computes (:func:`retrain`):

1. after the batch that crossed the line has committed, the stored vectors are read in
   short keyset pages (no long read transaction pins the WAL), a seeded sample is drawn,
   k-means trains the new centroids and every document stored so far (rowid up to the
   highest seen, ``high``) is assigned to them;
2. one short write transaction swaps them in: it checks that nobody else retrained
   meanwhile (the centroid version is still the one seen; otherwise the work is dropped and
   the other trainer's centroids stay), assigns the documents added meanwhile (rowids above
   ``high``: upserts get new rowids, so changed documents are among them), and writes the
   postings, the centroids and the meta keys together.

In a residual file (:mod:`edge_colbert.codec`) step 1 also learns the bucket cut-offs and
values from the sample's residuals and codes every document against the new centroids
(:class:`Recoder`: staged in a TEMP table, never in the file), and step 2 codes the late
documents too and writes every document's new codes in the same transaction: a reader sees
the old centroids with the old codes or the new with the new.

A training killed before the swap has written nothing: the old centroids and postings stay
in service, every other writer went on meanwhile, and the next ``add`` trains again (k-means
on a sample capped at :data:`SAMPLE_TOKENS` plus one assignment pass, nothing under a lock).

Threads: numpy's BLAS decides its thread count when it is loaded (``OPENBLAS_NUM_THREADS``
or ``OMP_NUM_THREADS`` in the environment before ``import numpy``); a library cannot change
it honestly afterwards without threadpoolctl, which is not a dependency. What this module
controls is the work per call: assignment multiplies in chunks of
``kmeans._CHUNK_ENTRIES`` similarities (4 MiB, measured fastest on two cores), so memory
stays bounded and a BLAS call never outgrows the cache. Set the environment variable to
the index's thread budget when the process starts to keep BLAS within it.
"""

from __future__ import annotations

import logging
import sqlite3
import zlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from edge_colbert import schema
from edge_colbert.codec import RESIDUAL_BITS, ResidualCodec
from edge_colbert.kmeans import kmeans, num_centroids
from edge_colbert.prefilter import Prefilter
from edge_colbert.records import PackedVectors
from edge_colbert.store import Store

__all__ = [
    "RETRAIN_FACTOR",
    "SAMPLE_TOKENS",
    "TRAIN_TOKENS",
    "Postings",
    "Recoder",
    "assign_documents",
    "retrain",
    "sample_vectors",
    "swap_in",
    "training_due",
    "unique_per_document",
    "unique_per_document_flat",
]

logger = logging.getLogger(__name__)

TRAIN_TOKENS = 8192
RETRAIN_FACTOR = 4
# k-means sample cap: 131k tokens x 64 dims x 4 bytes = 32 MiB, ample for <= 65k centroids.
SAMPLE_TOKENS = 1 << 17


@dataclass(frozen=True)
class Postings:
    """Documents' sorted unique centroid ids in CSR form: ``lengths[i]`` ids of ``flat``
    belong to ``rowids[i]`` (rowids rising)."""

    rowids: npt.NDArray[np.int64]
    lengths: npt.NDArray[np.int64]
    flat: npt.NDArray[np.uint32]

    def select(self, wanted: npt.NDArray[np.int64]) -> Postings:
        """The postings of the rowids in ``wanted`` (sorted), others dropped."""
        keep = np.isin(self.rowids, wanted)
        return Postings(
            self.rowids[keep], self.lengths[keep], self.flat[np.repeat(keep, self.lengths)]
        )

    @staticmethod
    def join(parts: list[Postings]) -> Postings:
        """Concatenate postings whose rowids follow each other."""
        if not parts:
            return Postings(np.zeros(0, np.int64), np.zeros(0, np.int64), np.zeros(0, np.uint32))
        return Postings(
            np.concatenate([p.rowids for p in parts]),
            np.concatenate([p.lengths for p in parts]),
            np.concatenate([p.flat for p in parts]),
        )


def training_due(tokens: int, trained_on: int, *, trained: bool, train_tokens: int) -> bool:
    """Whether a collection of ``tokens`` stored tokens needs (re)training now.

    Args:
        tokens: tokens stored, the batch being written included.
        trained_on: tokens the current centroids were trained on.
        trained: whether centroids exist.
        train_tokens: the first-training threshold (the ``Index``'s ``train_tokens``).
    """
    if not trained:
        return tokens >= train_tokens
    return tokens > RETRAIN_FACTOR * trained_on


def unique_per_document_flat(
    labels: npt.NDArray[np.uint32], offsets: npt.NDArray[np.int64], n_centroids: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.uint32]]:
    """Each document's sorted unique centroid ids as ``(lengths, flat)``, from the labels
    of its packed tokens (document ``i`` owns ``labels[offsets[i]:offsets[i + 1]]``)."""
    lengths = np.diff(offsets)
    doc = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    keys = np.unique(doc * n_centroids + labels.astype(np.int64))
    owner = keys // n_centroids
    counts = np.bincount(owner, minlength=lengths.size).astype(np.int64)
    return counts, (keys % n_centroids).astype(np.uint32)


def unique_per_document(
    labels: npt.NDArray[np.uint32], offsets: npt.NDArray[np.int64], n_centroids: int
) -> list[npt.NDArray[np.uint32]]:
    """Each document's sorted unique centroid ids, from the labels of its packed tokens."""
    counts, values = unique_per_document_flat(labels, offsets, n_centroids)
    bounds = np.concatenate([[0], np.cumsum(counts)])
    return [values[bounds[i] : bounds[i + 1]] for i in range(counts.size)]


def sample_vectors(store: Store, tokens: int, seed: int) -> npt.NDArray[np.float32]:
    """A seeded sample of at most :data:`SAMPLE_TOKENS` stored token vectors (decoded).

    Reads the vectors in keyset pages, each its own short read: no transaction is held.
    """
    rng = np.random.default_rng(seed)
    fraction = min(1.0, SAMPLE_TOKENS / max(tokens, 1))
    parts: list[npt.NDArray[np.float32]] = []
    for pack in store.iter_vectors():
        vectors = pack.floats()
        parts.append(vectors if fraction >= 1.0 else vectors[rng.random(len(vectors)) < fraction])
    return np.concatenate(parts) if parts else np.zeros((0, store.dim), np.float32)


class Recoder:
    """Residual codes of the stored documents against new centroids, made outside the
    write lock and written in the swap transaction.

    The codes are staged in a TEMP table of the calling thread's connection (SQLite's
    temporary storage: nothing in the index file, gone if the process dies), so memory
    stays near one page of vectors however large the collection. Not thread-safe: one
    retraining, in one thread, owns it. A no-op for int8 files (``residual`` None).
    """

    _TABLE = "temp.edge_colbert_recoded"

    def __init__(self, store: Store, residual: ResidualCodec | None) -> None:
        self._store = store
        self.residual = residual
        if residual is not None:
            conn = store.connection
            conn.execute(f"DROP TABLE IF EXISTS {self._TABLE}")
            conn.execute(
                f"CREATE TABLE {self._TABLE} (doc INTEGER PRIMARY KEY, codes BLOB, crc INTEGER)"
            )

    def stage(
        self,
        rowids: npt.NDArray[np.int64],
        offsets: npt.NDArray[np.int64],
        vectors: npt.NDArray[np.float32],
        labels: npt.NDArray[np.uint32],
    ) -> None:
        """Code one page of documents (their decoded vectors and nearest centroids)."""
        if self.residual is None or rowids.size == 0:
            return
        data = self.residual.encode(vectors, labels).tobytes()
        width = self.residual.record_bytes
        bounds = (offsets * width).tolist()
        blobs = [data[bounds[i] : bounds[i + 1]] for i in range(rowids.size)]
        self._store.connection.executemany(
            f"INSERT OR REPLACE INTO {self._TABLE}(doc, codes, crc) VALUES (?, ?, ?)",
            zip(rowids.tolist(), blobs, (zlib.crc32(b) for b in blobs), strict=True),
        )

    def apply(self, conn: sqlite3.Connection) -> None:
        """Write every staged code over the stored one, inside the swap transaction
        (documents deleted meanwhile have no row to update)."""
        if self.residual is None:
            return
        conn.execute(
            "UPDATE vectors SET (codes, crc) = (SELECT codes, crc FROM "
            f"{self._TABLE} AS r WHERE r.doc = vectors.doc) "
            f"WHERE doc IN (SELECT doc FROM {self._TABLE})"
        )

    def close(self) -> None:
        """Drop the staged codes."""
        if self.residual is not None and not self._store.closed:
            self._store.connection.execute(f"DROP TABLE IF EXISTS {self._TABLE}")


def assign_documents(
    store: Store,
    prefilter: Prefilter,
    *,
    after: int = -1,
    upto: int | None = None,
    recoder: Recoder | None = None,
) -> Postings:
    """Post the stored documents with ``after < rowid <= upto`` under ``prefilter``'s
    centroids (exact nearest centroid of every token), reading in keyset pages; with a
    ``recoder``, also code them against those centroids."""
    parts: list[Postings] = []
    for pack in store.iter_vectors(after=after):
        rowids, offsets, codes = pack.rowids, pack.offsets, pack.codes
        if upto is not None and rowids.size and int(rowids[-1]) > upto:
            count = int(np.searchsorted(rowids, upto, side="right"))
            rowids, offsets = rowids[:count], offsets[: count + 1]
            codes = codes[: int(offsets[-1])]
        if rowids.size:
            vectors = PackedVectors(rowids, codes, offsets, pack.codec).floats()
            labels = prefilter.assign(vectors)
            lengths, flat = unique_per_document_flat(labels, offsets, prefilter.num_centroids)
            parts.append(Postings(rowids, lengths, flat))
            if recoder is not None:
                recoder.stage(rowids, offsets, vectors, labels)
        if upto is not None and pack.rowids.size and int(pack.rowids[-1]) >= upto:
            break
    return Postings.join(parts)


def swap_in(
    store: Store,
    conn: sqlite3.Connection,
    prefilter: Prefilter,
    postings: Postings,
    *,
    version: int,
    trained_on: int,
    residual: ResidualCodec | None = None,
) -> None:
    """Write new centroids (with a residual file's buckets), every document's postings and
    the meta keys, inside ``conn``'s open transaction; ``prefilter`` then holds the same
    postings in memory."""
    id_dtype = "uint16" if prefilter.num_centroids <= 1 << 16 else "uint32"
    store.set_doc_centroids_flat(conn, postings.rowids, postings.lengths, postings.flat, id_dtype)
    buckets = None if residual is None else residual.buckets_bytes()
    store.set_centroids(conn, version, prefilter.save_centroids(), buckets)
    store.set_meta(
        conn,
        {
            # The version lives in the centroids row alone (schema 3).
            schema.META_TRAINED_ON_TOKENS: str(trained_on),
            schema.META_CENTROID_IDS: id_dtype,
        },
    )
    prefilter.set_postings_flat(postings.rowids, postings.lengths, postings.flat)


def retrain(store: Store, *, seen_version: int) -> tuple[Prefilter, int, Postings] | None:
    """Train new centroids outside any lock, then swap them in with one short write
    transaction (see the module docstring).

    Args:
        store: the index file, writable.
        seen_version: the centroid version this training replaces; when the file holds
            another by the swap, someone else retrained first and nothing is written.

    Returns:
        ``(prefilter, version, postings)`` as committed, or None when another trainer won.
    """
    with store.snapshot():
        tokens = store.token_count()
        high = store.rowid_high()
        nbits = RESIDUAL_BITS.get(store.codec())
        if store.centroid_version() != seen_version:
            return None
    version = seen_version + 1
    sample = sample_vectors(store, tokens, seed=version)
    prefilter = Prefilter(kmeans(sample, num_centroids(max(tokens, 1)), seed=version))
    residual = None
    if nbits is not None:
        residual = ResidualCodec.train(
            sample, prefilter.assign(sample), prefilter.centroids, nbits=nbits, version=version
        )
    del sample
    recoder = Recoder(store, residual)
    try:
        known = assign_documents(store, prefilter, upto=high, recoder=recoder)
        with store.transaction() as conn:
            if store.centroid_version() != seen_version:
                logger.info(
                    "%s: another writer retrained first; dropping this training", store.path
                )
                return None
            # Added (or replaced: new rowids) while training ran; deleted ones drop out.
            late = assign_documents(store, prefilter, after=high, recoder=recoder)
            postings = Postings.join([known.select(store.rowids()), late])
            recoder.apply(conn)
            swap_in(
                store,
                conn,
                prefilter,
                postings,
                version=version,
                trained_on=tokens,
                residual=residual,
            )
    finally:
        recoder.close()
    logger.info(
        "trained %d centroids on %d tokens (version %d; %d documents posted meanwhile)",
        prefilter.num_centroids,
        tokens,
        version,
        late.rowids.size,
    )
    return prefilter, version, postings
