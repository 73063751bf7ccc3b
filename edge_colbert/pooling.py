"""Token pooling at index time: fewer stored vectors per document, nearly the same ranking.

Clavié et al. (answer.ai, 2024), as PyLate's and Stanford ColBERT's ``pool_factor``: the
token vectors of each document are clustered by Ward's hierarchical clustering into
``ceil((n - 1) / pool_factor)`` groups, each group is replaced by its mean, re-normalised to
unit length, and the first token ([CLS]) is kept apart, unpooled. Queries are not pooled.

Ward's clustering runs in numpy (an exact agglomerative loop over the Lance-Williams update
of the merge costs, each cluster's nearest neighbour cached) or, when SciPy is installed,
through SciPy's ``linkage(method="ward")``: the same partitions, measured on SciFact
abstracts (``benchmarks/size_quality.py``) at 36.3 ms (numpy) against 4.0 ms (SciPy) per
abstract, next to 142.6 ms to encode it. Pooling with numpy alone slows indexing by about
25%, with SciPy by about 3%: SciPy (about 40 MB) is worth installing where pooling is used,
and is not a dependency of the runtime.

The pool factor is recorded in the index file when it is created (meta ``pool_factor``) and
applied to every later add; :func:`settle_pool_factor` reconciles what a caller asks for with
what the file records.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from edge_colbert import schema
from edge_colbert.errors import IndexFileError, InvalidInputError

if TYPE_CHECKING:
    from edge_colbert.store import Store

__all__ = [
    "DEFAULT_POOL_FACTOR",
    "MAX_POOL_FACTOR",
    "check_pool_factor",
    "pool_document",
    "pool_documents",
    "settle_pool_factor",
    "stored_pool_factor",
    "ward_labels",
]

logger = logging.getLogger(__name__)

# 1 (no pooling) unless a caller asks: see docs/benchmarks.md for the measured trade-off.
DEFAULT_POOL_FACTOR = 1
# Beyond this a document keeps so few vectors that MaxSim degenerates to a bag of means.
MAX_POOL_FACTOR = 16


def check_pool_factor(value: object, what: str = "pool_factor") -> int:
    """``value`` as a pool factor: an integer from 1 (no pooling) to :data:`MAX_POOL_FACTOR`.

    Raises:
        InvalidInputError: anything else, with the allowed range.
    """
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise InvalidInputError(
            f"{what} must be an integer from 1 (no pooling) to {MAX_POOL_FACTOR}; got "
            f"{value!r} ({type(value).__name__})."
        )
    factor = int(value)
    if not 1 <= factor <= MAX_POOL_FACTOR:
        raise InvalidInputError(
            f"{what} must be from 1 (no pooling) to {MAX_POOL_FACTOR}; got {factor}. "
            "2 halves the stored tokens at nearly the same ranking."
        )
    return factor


def _scipy_hierarchy() -> Any:
    """SciPy's ``cluster.hierarchy`` when SciPy is installed, else None (it is optional)."""
    try:
        from scipy.cluster import hierarchy  # type: ignore[import-untyped,unused-ignore]
    except ImportError:
        return None
    return hierarchy


def _first_appearance(owner: npt.NDArray[np.int64]) -> npt.NDArray[np.int64]:
    """Cluster ids renumbered 0.. by their first token, so pooled vectors keep the order."""
    _, first_seen, labels = np.unique(owner, return_index=True, return_inverse=True)
    rank = np.empty(first_seen.size, dtype=np.int64)
    rank[np.argsort(first_seen, kind="stable")] = np.arange(first_seen.size)
    out: npt.NDArray[np.int64] = rank[labels.reshape(-1)]
    return out


def ward_labels(
    vectors: npt.NDArray[np.float32], clusters: int, *, engine: str = "auto"
) -> npt.NDArray[np.int64]:
    """Ward's agglomerative clustering of ``vectors`` ``[n, d]`` into ``clusters`` groups.

    Exact: the same partition as SciPy's ``linkage(method="ward")`` cut by ``fcluster``
    into ``clusters`` (up to ties). Merges the pair of clusters of least Ward cost
    ``|A||B|/(|A|+|B|) * ||mean A - mean B||^2`` until ``clusters`` remain, updating the
    costs by Lance-Williams and caching each cluster's nearest neighbour, so a merge costs
    ``O(n)`` numpy work, not a scan of the ``n x n`` matrix.

    ``engine``: ``"auto"`` uses SciPy's ``linkage`` when SciPy is installed (the same
    partitions, 9x faster: 4.0 against 36.3 ms per SciFact abstract, against 142.6 ms to
    encode it), else this module's numpy loop; ``"numpy"`` forces the loop.

    Returns:
        int64 ``[n]`` labels in ``[0, clusters)``, numbered by first appearance (fewer
        than ``clusters`` distinct labels only where merge costs tie).
    """
    n = vectors.shape[0]
    clusters = max(1, min(int(clusters), n))
    if clusters == n:
        return np.arange(n, dtype=np.int64)
    hierarchy = _scipy_hierarchy() if engine == "auto" else None
    if hierarchy is not None:
        tree = hierarchy.linkage(vectors.astype(np.float64), "ward")
        found = hierarchy.fcluster(tree, clusters, "maxclust")
        return _first_appearance(np.asarray(found, dtype=np.int64))
    x = vectors.astype(np.float64)
    sq = np.einsum("ij,ij->i", x, x)
    cost = 0.5 * np.maximum(sq[:, None] + sq[None, :] - 2.0 * (x @ x.T), 0.0)
    np.fill_diagonal(cost, np.inf)
    sizes = np.ones(n, dtype=np.float64)
    owner = np.arange(n, dtype=np.int64)  # each vector's current cluster (a row of cost)
    nearest = np.argmin(cost, axis=1)
    nearest_cost = cost[np.arange(n), nearest]
    for _ in range(n - clusters):
        i = int(np.argmin(nearest_cost))
        j = int(nearest[i])
        if j < i:
            i, j = j, i
        si, sj = sizes[i], sizes[j]
        merged = ((si + sizes) * cost[i] + (sj + sizes) * cost[j] - sizes * cost[i, j]) / (
            si + sj + sizes
        )
        merged[i] = np.inf
        merged[j] = np.inf
        cost[i, :] = merged
        cost[:, i] = merged
        cost[j, :] = np.inf
        cost[:, j] = np.inf
        sizes[i] = si + sj
        sizes[j] = 0.0
        owner[owner == j] = i
        nearest_cost[j] = np.inf
        stale = (nearest == i) | (nearest == j)
        stale[j] = False
        stale[i] = True
        closer = merged < nearest_cost
        nearest[closer] = i
        nearest_cost[closer] = merged[closer]
        rows = np.flatnonzero(stale)
        best = np.argmin(cost[rows], axis=1)
        nearest[rows] = best
        nearest_cost[rows] = cost[rows, best]
    return _first_appearance(owner)


def pool_document(vectors: npt.NDArray[np.float32], pool_factor: int) -> npt.NDArray[np.float32]:
    """One document's token vectors ``[n, d]`` pooled by ``pool_factor`` (see the module
    docstring)."""
    return pool_documents([vectors], pool_factor)[0]


def pool_documents(
    documents: Sequence[npt.NDArray[np.float32]], pool_factor: int
) -> list[npt.NDArray[np.float32]]:
    """Each document pooled by ``pool_factor``: the first token kept, the others clustered
    by Ward into ``ceil((n - 1) / pool_factor)`` groups, each replaced by its unit-length
    mean. ``pool_factor`` 1, or a document of two tokens or fewer, is left as it is."""
    out: list[npt.NDArray[np.float32]] = []
    for doc in documents:
        vectors = np.asarray(doc, dtype=np.float32)
        if pool_factor <= 1 or vectors.shape[0] <= 2:
            out.append(vectors)
            continue
        rest = vectors[1:]
        labels = ward_labels(rest, math.ceil(rest.shape[0] / pool_factor))
        sums = np.zeros((int(labels.max()) + 1, rest.shape[1]), dtype=np.float64)
        np.add.at(sums, labels, rest)
        norms = np.linalg.norm(sums, axis=1, keepdims=True)
        pooled = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
        out.append(np.vstack([vectors[:1], pooled.astype(np.float32)]))
    return out


def stored_pool_factor(meta: dict[str, str], path: object) -> int:
    """The pool factor a file records (1 when absent: files from before pooling).

    Raises:
        IndexFileError: the recorded value is not a pool factor this version knows.
    """
    raw = meta.get(schema.META_POOL_FACTOR, "1")
    try:
        return check_pool_factor(int(raw))
    except (ValueError, InvalidInputError):
        raise IndexFileError(
            f"{path} records the pool factor {raw!r}, which this edge-colbert does not know "
            f"(1 to {MAX_POOL_FACTOR}); the file is damaged or from a newer version: upgrade "
            "edge-colbert (pip install -U edge-colbert)."
        ) from None


def settle_pool_factor(store: Store, requested: int | None) -> int:
    """The pool factor to apply to ``store``'s adds.

    ``None`` takes what the file records. A number is recorded in a file that holds no
    document yet (a new index), and must match what a file with documents records: every
    document of one index is pooled alike.

    Raises:
        InvalidInputError: a bad number, or one that differs from a non-empty file's.
        IndexFileError: the file records a value this version does not know.
    """
    factor = None if requested is None else check_pool_factor(requested)
    recorded = stored_pool_factor(store.meta(), store.path)
    if factor is None or factor == recorded:
        return recorded
    if store.readonly or store.count() > 0:
        raise InvalidInputError(
            f"{store.path} pools tokens by {recorded}, recorded when it was created; it "
            f"cannot add documents pooled by {factor}. Open it without pool_factor, or "
            f"index into a new file with pool_factor={factor}."
        )
    with store.transaction() as conn:
        store.set_meta(conn, {schema.META_POOL_FACTOR: str(factor)})
    logger.info("%s: pool factor %d recorded", store.path, factor)
    return factor
