"""Token pooling at index time: fewer stored vectors per document, nearly the same ranking.

Clavié et al. (answer.ai, 2024), as PyLate's and Stanford ColBERT's ``pool_factor``: the
token vectors of each document are clustered by Ward's hierarchical clustering into
``ceil((n - 1) / pool_factor)`` groups, each group is replaced by its mean, re-normalised to
unit length, and the first token ([CLS]) is kept apart, unpooled. Queries are not pooled.

Ward's clustering runs in numpy (:mod:`edge_colbert.ward`): an exact agglomerative loop
over the Lance-Williams update of the merge costs, run for a batch of documents in lockstep
so that numpy's per-call overhead is paid once per batch, not per document. On 200 SciFact
abstracts (211 tokens on average, one core, side by side under load): 2.5 ms per abstract,
against 6.4 ms for one loop per document and 4.8 ms for SciPy's ``linkage(method="ward")``
(quiet: 2.1 against SciPy's 2.1), with the same partitions. SciPy is therefore not needed,
and is only the tests' reference.

The pool factor is recorded in the index file when it is created (meta ``pool_factor``) and
applied to every later add; :func:`settle_pool_factor` reconciles what a caller asks for with
what the file records.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from edge_colbert import schema
from edge_colbert.errors import IndexFileError, InvalidInputError
from edge_colbert.ward import batch_ward_labels

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
# Float64 cost-matrix entries of one batch of documents clustered together (32 MiB).
WARD_BATCH_ENTRIES = 1 << 22


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


def ward_labels(vectors: npt.NDArray[np.float32], clusters: int) -> npt.NDArray[np.int64]:
    """Ward's agglomerative clustering of ``vectors`` ``[n, d]`` into ``clusters`` groups:
    the same partition as SciPy's ``linkage(method="ward")`` cut by ``fcluster`` into
    ``clusters`` (up to ties). See :func:`edge_colbert.ward.batch_ward_labels`.

    Returns:
        int64 ``[n]`` labels in ``[0, clusters)``, numbered by first appearance (fewer
        than ``clusters`` distinct labels only where merge costs tie).
    """
    return batch_ward_labels([vectors], [clusters])[0]


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
    arrays = [np.asarray(doc, dtype=np.float32) for doc in documents]
    if pool_factor <= 1:
        return arrays
    out = list(arrays)
    # Documents of similar length share a batch (little padding); a batch's cost matrices
    # stay under WARD_BATCH_ENTRIES float64 numbers.
    order = sorted(
        (b for b, v in enumerate(arrays) if v.shape[0] > 2), key=lambda b: arrays[b].shape[0]
    )
    start = 0
    while start < len(order):
        end = start + 1
        while end < len(order) and (end + 1 - start) * arrays[order[end]].shape[0] ** 2 <= (
            WARD_BATCH_ENTRIES
        ):
            end += 1
        batch = order[start:end]
        rests = [arrays[b][1:] for b in batch]
        labels = batch_ward_labels(rests, [math.ceil(r.shape[0] / pool_factor) for r in rests])
        for b, rest, owner in zip(batch, rests, labels, strict=True):
            # Each cluster's sum: its tokens gathered together, one segment sum per cluster.
            grouped = np.argsort(owner, kind="stable")
            starts = np.searchsorted(owner[grouped], np.arange(int(owner.max()) + 1))
            sums = np.add.reduceat(rest[grouped].astype(np.float64), starts, axis=0)
            norms = np.linalg.norm(sums, axis=1, keepdims=True)
            pooled = np.divide(sums, norms, out=np.zeros_like(sums), where=norms > 0)
            out[b] = np.vstack([arrays[b][:1], pooled.astype(np.float32)])
        start = end
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
