"""When to train the centroids, and training them.

A small collection is searched exhaustively: below :data:`TRAIN_TOKENS` stored tokens an
exact scan reads under 600 KB and costs a few milliseconds, less than probing centroids, and
k-means on so few tokens gives centroids too coarse to narrow anything. When the collection
first reaches it, centroids are trained on a sample of the stored vectors and every document
is posted under the centroids of its tokens. Later documents are posted under the existing
centroids; once the collection holds more than :data:`RETRAIN_FACTOR` times the tokens the
centroids were trained on, they are retrained and every document reposted, inside the
transaction of the batch that crossed the line.
"""

from __future__ import annotations

import sqlite3

import numpy as np
import numpy.typing as npt

from edge_colbert import schema
from edge_colbert.kmeans import kmeans, num_centroids
from edge_colbert.prefilter import Prefilter
from edge_colbert.quantize import dequantize_int8
from edge_colbert.store import Store

__all__ = ["RETRAIN_FACTOR", "SAMPLE_TOKENS", "TRAIN_TOKENS", "train_prefilter", "training_due"]

TRAIN_TOKENS = 8192
RETRAIN_FACTOR = 4
# k-means sample cap: 131k tokens x 64 dims x 4 bytes = 32 MiB, ample for <= 65k centroids.
SAMPLE_TOKENS = 1 << 17


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


def unique_per_document(
    labels: npt.NDArray[np.uint32], offsets: npt.NDArray[np.int64], n_centroids: int
) -> list[npt.NDArray[np.uint32]]:
    """Each document's sorted unique centroid ids, from the labels of its packed tokens."""
    lengths = np.diff(offsets)
    doc = np.repeat(np.arange(lengths.size, dtype=np.int64), lengths)
    keys = np.unique(doc * n_centroids + labels.astype(np.int64))
    owner = keys // n_centroids
    bounds = np.searchsorted(owner, np.arange(lengths.size + 1))
    values = (keys % n_centroids).astype(np.uint32)
    return [values[bounds[i] : bounds[i + 1]] for i in range(lengths.size)]


def train_prefilter(store: Store, conn: sqlite3.Connection, tokens: int, version: int) -> Prefilter:
    """Train centroids on the stored vectors and repost every document, in ``conn``'s
    open transaction.

    k-means runs on a seeded sample of at most :data:`SAMPLE_TOKENS` stored (dequantized)
    token vectors, with :func:`~edge_colbert.kmeans.num_centroids` centroids for ``tokens``.
    Returns the new prefilter with every document posted.
    """
    rng = np.random.default_rng(version)
    fraction = min(1.0, SAMPLE_TOKENS / max(tokens, 1))
    parts: list[npt.NDArray[np.float32]] = []
    for pack in store.iter_vectors():
        vectors = dequantize_int8(pack.codes)
        parts.append(vectors if fraction >= 1.0 else vectors[rng.random(len(vectors)) < fraction])
    prefilter = Prefilter(kmeans(np.concatenate(parts), num_centroids(tokens), seed=version))
    id_dtype = "uint16" if prefilter.num_centroids <= 1 << 16 else "uint32"
    rowids: list[int] = []
    lists: list[npt.NDArray[np.uint32]] = []
    for pack in store.iter_vectors():
        labels = prefilter.assign(dequantize_int8(pack.codes))
        lists.extend(unique_per_document(labels, pack.offsets, prefilter.num_centroids))
        rowids.extend(pack.rowids.tolist())
    store.set_doc_centroids(conn, rowids, lists, id_dtype)
    store.set_centroids(conn, version, prefilter.save_centroids())
    store.set_meta(
        conn,
        {
            schema.META_CENTROID_VERSION: str(version),
            schema.META_TRAINED_ON_TOKENS: str(tokens),
            schema.META_CENTROID_IDS: id_dtype,
        },
    )
    prefilter.set_postings(np.asarray(rowids, dtype=np.int64), lists)
    return prefilter
