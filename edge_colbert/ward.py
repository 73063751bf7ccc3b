"""Ward's agglomerative clustering of many small point sets at once, in numpy.

Token pooling clusters each document's token vectors on its own: a few hundred points per
document, thousands of documents. A merge loop per document spends its time on numpy's
per-call overhead (36.3 ms per SciFact abstract, a quarter of the time to encode it), so
this module runs the loops of a whole batch of documents in lockstep: step ``t`` performs
the ``t``-th merge of every document that still has one, each numpy call working on the
batch's arrays. A document's merges are exactly those of a loop over that document alone
(the same float64 arithmetic, the same first-index tie-breaking), so the partitions equal
SciPy's ``linkage(method="ward")`` cut by ``fcluster`` up to ties.

The merge cost of clusters ``A`` and ``B`` is Ward's ``|A||B|/(|A|+|B|) ||mean A - mean
B||^2``; after a merge the costs to the new cluster follow from the Lance-Williams update,
and each cluster's nearest neighbour is cached, so a step costs ``O(n)`` per document
rather than a scan of the ``n x n`` matrix. Memory: ``8 n^2`` bytes per document of the
batch (``batch_ward_labels`` takes batches the caller sizes).

Pure functions; thread-safe.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt

__all__ = ["batch_ward_labels"]


def _first_appearance(owner: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Cluster ids renumbered 0.. by their first point, so pooled vectors keep the order."""
    _, first_seen, labels = np.unique(owner, return_index=True, return_inverse=True)
    rank = np.empty(first_seen.size, dtype=np.int64)
    rank[np.argsort(first_seen, kind="stable")] = np.arange(first_seen.size)
    out: npt.NDArray[np.int64] = rank[labels.reshape(-1)]
    return out


def batch_ward_labels(
    point_sets: Sequence[npt.NDArray[np.floating]], clusters: Sequence[int]
) -> list[npt.NDArray[np.int64]]:
    """Ward's clustering of each ``point_sets[b]`` (``[n_b, d]``) into ``clusters[b]``
    groups (clamped to ``1..n_b``).

    Returns:
        one int64 ``[n_b]`` array of labels in ``[0, clusters[b])`` per set, numbered by
        first appearance (fewer distinct labels only where merge costs tie).
    """
    sizes_n = np.array([p.shape[0] for p in point_sets], dtype=np.int64)
    targets = np.clip(np.asarray(clusters, dtype=np.int64), 1, np.maximum(sizes_n, 1))
    merges = sizes_n - targets
    out: list[npt.NDArray[np.int64]] = [np.arange(n, dtype=np.int64) for n in sizes_n]
    todo = np.flatnonzero(merges > 0)
    if todo.size == 0:
        return out
    n = int(sizes_n[todo].max())
    width = todo.size
    # Cost matrices padded with +inf: a padded point is never anyone's nearest and never
    # merged (its size is 0, so the update keeps its costs infinite).
    cost = np.full((width, n, n), np.inf)
    sizes = np.zeros((width, n))
    for row, b in enumerate(todo.tolist()):
        x = np.asarray(point_sets[b], dtype=np.float64)
        m = x.shape[0]
        sq = np.einsum("ij,ij->i", x, x)
        block = 0.5 * np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
        np.fill_diagonal(block, np.inf)
        cost[row, :m, :m] = block
        sizes[row, :m] = 1.0
    owner = np.tile(np.arange(n, dtype=np.int64), (width, 1))
    nearest = np.argmin(cost, axis=2)
    nearest_cost = np.take_along_axis(cost, nearest[:, :, None], axis=2)[:, :, 0]
    left = merges[todo].copy()
    for _ in range(int(left.max())):
        act = np.flatnonzero(left > 0)
        left[act] -= 1
        i = np.argmin(nearest_cost[act], axis=1)
        j = nearest[act, i]
        i, j = np.minimum(i, j), np.maximum(i, j)
        si, sj = sizes[act, i][:, None], sizes[act, j][:, None]
        s = sizes[act]
        merged = (
            (si + s) * cost[act, i] + (sj + s) * cost[act, j] - s * cost[act, i, j][:, None]
        ) / (si + sj + s)
        merged[np.arange(act.size), i] = np.inf
        merged[np.arange(act.size), j] = np.inf
        cost[act, i, :] = merged
        cost[act, :, i] = merged
        cost[act, j, :] = np.inf
        cost[act, :, j] = np.inf
        sizes[act, i] = (si + sj)[:, 0]
        sizes[act, j] = 0.0
        own = owner[act]
        owner[act] = np.where(own == j[:, None], i[:, None], own)
        nearest_cost[act, j] = np.inf
        near = nearest[act]
        stale = (near == i[:, None]) | (near == j[:, None])
        stale[np.arange(act.size), j] = False
        stale[np.arange(act.size), i] = True
        best_cost = nearest_cost[act]
        closer = merged < best_cost
        near = np.where(closer, i[:, None], near)
        best_cost = np.where(closer, merged, best_cost)
        rows, points = np.nonzero(stale)
        fresh = np.argmin(cost[act[rows], points], axis=1)
        near[rows, points] = fresh
        best_cost[rows, points] = cost[act[rows], points, fresh]
        nearest[act] = near
        nearest_cost[act] = best_cost
    for row, b in enumerate(todo.tolist()):
        out[b] = _first_appearance(owner[row, : sizes_n[b]])
    return out
