"""Spherical k-means for the prefilter's centroids, in numpy, seeded.

Token vectors are unit length and compared by inner product, so the centroids are unit
vectors too (spherical k-means): assign each vector to the centroid of largest inner
product, then set each centroid to the normalized mean of its members.
"""

from __future__ import annotations

import logging
import math

import numpy as np
import numpy.typing as npt

from edge_colbert.errors import InvalidInputError

__all__ = ["MAX_CENTROIDS", "MIN_CENTROIDS", "assign_nearest", "kmeans", "num_centroids"]

logger = logging.getLogger(__name__)

MIN_CENTROIDS = 8
MAX_CENTROIDS = 65536

# Similarity entries computed per matmul chunk (4 MiB of float32): bounds memory for any
# sample size and number of centroids, and keeps the chunk in cache for the argmax that
# reads it back. Measured on 200k tokens x 4,096 centroids (2 cores): 64 MiB chunks 0.82 s,
# 16 MiB 0.57 s, 4 MiB 0.49 s, 1 MiB 0.56 s.
_CHUNK_ENTRIES = 1 << 20

# k-means++ seeds from a pool of max(4k, 4096) rows, and only up to 256 centroids:
# beyond that its k sequential numpy passes cost more than the Lloyd iterations.
_POOL_FACTOR = 4
_POOL_MIN = 4096
_PLUSPLUS_MAX = 256


def num_centroids(n_tokens: int) -> int:
    """How many centroids to train for a collection of ``n_tokens`` token vectors.

    The power of two nearest ``4 * sqrt(n_tokens)``, clamped to ``[8, 65536]`` and never
    above ``n_tokens``. Why: ``C ~ sqrt(n)`` balances the two costs of a search, the probe
    and ranking of centroids (grow with ``C``) and the postings gathered per probed
    centroid (grow with ``n / C``). The factor was measured with
    ``benchmarks/prefilter_sweep.py``: the centroid-interaction pruning ranks documents
    by their centroids, and with ``2 * sqrt(n)`` centroids it kept the exhaustive top 10
    markedly worse (overlap 0.87 vs 0.93 at the same ``keep`` on 1,000 documents) while
    ``16 * sqrt(n)`` (ColBERTv2's choice) gained nothing more and made k-means 4x slower.
    A power of two keeps the count stable as a collection grows, so retraining is rare.
    Examples: 1.3M tokens (SciFact) -> 4096; 100k tokens -> 1024; 1k tokens -> 128.

    Raises:
        InvalidInputError: ``n_tokens < 1``.
    """
    if n_tokens < 1:
        raise InvalidInputError(
            f"cannot size centroids for {n_tokens} tokens; add documents before training."
        )
    target = 4.0 * math.sqrt(n_tokens)
    count = 2 ** round(math.log2(target))
    return int(min(max(count, MIN_CENTROIDS), MAX_CENTROIDS, n_tokens))


def _normalize(x: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
    """Scale rows to unit length; zero rows stay zero."""
    norms = np.linalg.norm(x, axis=1, keepdims=True)
    out = np.zeros_like(x)
    np.divide(x, norms, out=out, where=norms > 0)
    return out


def assign_nearest(
    vectors: npt.NDArray[np.float32], centroids: npt.NDArray[np.float32]
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
    """Exact nearest centroid (largest inner product) of each vector, chunked.

    Returns:
        ``(labels, best)``: int64 ``[N]`` centroid index (ties: lowest index) and float32
        ``[N]`` the inner product with it.
    """
    n = vectors.shape[0]
    labels = np.empty(n, dtype=np.int64)
    best = np.empty(n, dtype=np.float32)
    rows = max(1, _CHUNK_ENTRIES // max(1, centroids.shape[0]))
    cent_t = np.ascontiguousarray(centroids.T)
    for start in range(0, n, rows):
        sim = vectors[start : start + rows] @ cent_t
        arg = np.argmax(sim, axis=1)
        labels[start : start + rows] = arg
        best[start : start + rows] = np.take_along_axis(sim, arg[:, None], axis=1)[:, 0]
    return labels, best


def _initial_centroids(
    data: npt.NDArray[np.float32],
    k: int,
    rng: np.random.Generator,
    *,
    pool_factor: int = _POOL_FACTOR,
) -> npt.NDArray[np.float32] | None:
    """Seed ``k`` centroids from a random pool of ``max(pool_factor * k, 4096)`` rows.

    k-means++ (each next seed drawn with probability proportional to its cosine distance
    ``1 - max q.c`` to the seeds so far) for ``k <= _PLUSPLUS_MAX``; above that its ``k``
    sequential passes cost too much in numpy, and distinct random rows are used. Returns
    None when the pool holds fewer than ``k`` distinct directions.
    """
    n = data.shape[0]
    size = min(n, max(pool_factor * k, _POOL_MIN))
    pool = data if size == n else data[np.sort(rng.choice(n, size=size, replace=False))]
    if k > _PLUSPLUS_MAX:
        seeds = pool[np.sort(rng.choice(size, size=k, replace=False))] if size >= k else pool
        return seeds if np.unique(seeds, axis=0).shape[0] == k else None
    # Greedy k-means++ (as scikit-learn): try 2 + ln(k) draws per step and keep the one
    # that lowers the total distance most; plain k-means++ often seeds one cluster twice.
    trials = 2 + int(math.log(k)) if k > 1 else 1
    chosen = np.empty(k, dtype=np.int64)
    chosen[0] = rng.integers(size)
    best = pool @ pool[chosen[0]]
    for i in range(1, k):
        cumulative = np.cumsum(np.maximum(1.0 - best, 0.0), dtype=np.float64)
        if cumulative[-1] <= 1e-9:
            return None
        draws = np.searchsorted(cumulative, rng.random(trials) * cumulative[-1], side="right")
        draws = np.minimum(draws, size - 1)
        merged = np.maximum(best[:, None], pool @ pool[draws].T)
        winner = int(np.argmax(merged.sum(axis=0)))
        chosen[i] = draws[winner]
        best = merged[:, winner].copy()
    return pool[chosen]


def kmeans(
    sample: npt.ArrayLike,
    k: int,
    *,
    iterations: int = 10,
    seed: int = 0,
) -> npt.NDArray[np.float32]:
    """Train ``k`` unit-norm centroids on ``sample`` by spherical k-means.

    Initialization is greedy k-means++ over a random pool of ``max(4k, 4096)`` sample rows
    (seeded), so well-separated clusters each get a seed; the pool bounds its ``k``
    sequential passes. Above 256 centroids, where those passes would dominate the
    training time, the seeds are distinct random rows instead. A cluster that
    ends an iteration empty is re-seeded at the sample rows worst served by their current
    centroid, so no centroid is wasted. Same sample, ``k`` and ``seed`` give the same
    centroids.

    When the sample has fewer than ``k`` distinct directions, every direction gets a
    centroid and the rest repeat existing ones (harmless: a repeated centroid receives no
    postings, since exact assignment picks the lowest index).

    Args:
        sample: float ``[N, d]`` training vectors (normalized here; zero rows are ignored).
        k: number of centroids, ``>= 1``.
        iterations: Lloyd iterations after initialization.
        seed: seed of the random initialization.

    Returns:
        float32 ``[k, d]`` unit-norm centroids.

    Raises:
        InvalidInputError: the sample is not 2-D float, has no non-zero row, or ``k < 1``.
    """
    x = np.asarray(sample)
    if x.ndim != 2 or not np.issubdtype(x.dtype, np.floating):
        raise InvalidInputError(
            f"the k-means sample must be a float array [N, dim]; got dtype {x.dtype}, "
            f"shape {x.shape}."
        )
    if k < 1:
        raise InvalidInputError(f"k-means needs k >= 1 centroids; got k={k}.")
    if iterations < 0:
        raise InvalidInputError(f"iterations must be >= 0; got {iterations}.")
    data = _normalize(np.ascontiguousarray(x, dtype=np.float32))
    data = data[np.any(data != 0, axis=1)]
    if data.shape[0] == 0:
        raise InvalidInputError(
            f"the k-means sample has no non-zero vector ({x.shape[0]} rows); add documents "
            "before training centroids."
        )
    rng = np.random.default_rng(seed)
    centroids = _initial_centroids(data, k, rng)
    if centroids is None:
        # Fewer distinct directions than k were met: seed from the distinct rows only.
        distinct = np.unique(data, axis=0)
        if distinct.shape[0] <= k:
            logger.info(
                "k-means: %d distinct vectors for %d centroids; using them all",
                distinct.shape[0],
                k,
            )
            return np.ascontiguousarray(distinct[np.resize(np.arange(distinct.shape[0]), k)])
        centroids = _initial_centroids(distinct, k, rng, pool_factor=distinct.shape[0])
        if centroids is None:  # pragma: no cover - distinct rows always give k seeds
            raise InvalidInputError(f"k-means could not seed {k} distinct centroids.")
    for iteration in range(iterations):
        labels, best = assign_nearest(data, centroids)
        sums = np.stack(
            [np.bincount(labels, weights=data[:, j], minlength=k) for j in range(data.shape[1])],
            axis=1,
        )
        counts = np.bincount(labels, minlength=k)
        updated = _normalize(sums.astype(np.float32))
        empty = np.flatnonzero((counts == 0) | ~np.any(updated != 0, axis=1))
        if empty.size:
            # Worst-served rows first; stable sort keeps the choice deterministic.
            worst = np.argsort(best, kind="stable")[: empty.size]
            updated[empty] = data[worst]
            logger.debug("k-means iteration %d: re-seeded %d empty clusters", iteration, empty.size)
        centroids = updated
    return np.ascontiguousarray(centroids, dtype=np.float32)
